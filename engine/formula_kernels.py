"""Numba kernels of the model frame (engine.formula): missing-value scan and design fill.

The design matrix X (n, p), C-contiguous float64 (the layout ``engine.ols.least_squares`` reads
without a copy), is written once, block of rows by block of rows, from

* ``numeric`` (k, N): the numeric variables on *all* N rows of the data, one per row of the
  array (a view of the DataFrame's own float64 block when the layout allows, else a stack);
  ``rows`` (n,) selects the kept rows;
* ``codes`` (f, n): the factors' 0-based level codes on the kept rows;
* ``coding``: the factors' coding matrices (contrasts or indicators, R's ``contr.treatment``
  / ``contr.poly``), flattened row-major one after another;
* a :class:`DesignProgram`: column j of X is the product of the factors
  ``start[j]:start[j + 1]`` of the program, each a numeric variable (``kind`` 0: the value
  ``numeric[source, rows[i]]``) or one column of a factor's coding (``kind`` 1: the value
  ``coding[offset + codes[source, i] * width + column]``). An empty product is the intercept.

This is R's ``model.matrix`` (src/library/stats/src/model.c, ``modelmatrix``): a term's columns
are the row-wise Kronecker product of its variables' columns, first variable varying fastest;
the program lists that product column by column, so the kernel has no per-term logic.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles

#: Rows per block of X written together (each block's columns stay in cache while written).
FILL_BLOCK_ROWS = 512


class DesignProgram(NamedTuple):
    """Column j of X = prod over t in start[j]:start[j + 1] of factor t (see module docstring)."""

    start: np.ndarray   # (p + 1,) int64
    kind: np.ndarray    # (m,) int64: 0 numeric, 1 coded factor
    source: np.ndarray  # (m,) int64: row of `numeric` (kind 0) or of `codes` (kind 1)
    offset: np.ndarray  # (m,) int64: start of the factor's coding matrix in `coding`
    width: np.ndarray   # (m,) int64: columns of that coding matrix
    column: np.ndarray  # (m,) int64: which of its columns


@numba.njit(cache=True, nogil=True)
def any_non_finite(values):
    """Whether a float64 vector holds a NaN or an Inf: ``v - v`` is NaN exactly for those, and an
    OR over the comparisons has no early exit, so LLVM vectorises the loop (about twice as fast
    as testing NaN and Inf apart, which does not vectorise)."""
    bad = False
    for i in range(values.shape[0]):
        v = values[i]
        bad |= (v - v) != 0.0
    return bad


@numba.njit(cache=True, nogil=True)
def nan_inf_scan(values):
    """(any NaN, any +-Inf) of a float64 vector without temporaries: one vectorised pass, and a
    second, exact one only when the first found a non-finite value."""
    if not any_non_finite(values):
        return False, False
    has_nan = False
    has_inf = False
    for i in range(values.shape[0]):
        v = values[i]
        if np.isnan(v):
            has_nan = True
        elif np.isinf(v):
            has_inf = True
    return has_nan, has_inf


@numba.njit(cache=True, nogil=True)
def fill_design(X, numeric, rows, codes, coding, program, start_row, stop_row, all_rows,
                non_finite_check, non_finite):
    """Write rows start_row:stop_row of X from the program (see the module docstring).

    ``all_rows``: ``rows`` is 0..n-1 (no row dropped), so numeric values are read directly.
    ``non_finite`` (k,) bool: set True for each numeric variable with ``non_finite_check`` (k,)
    of which a value read (on a kept row) is NaN or Inf (``v - v != 0``: vectorised, no branch),
    so that a column whose scan was left to this pass is read once (engine.formula makes the
    frame again when one is set). The fill then stops after that block of rows: X is discarded.
    Column by column within a block of rows: the first factor of a column's product writes it,
    the others multiply into it (``a * b`` as ``1.0 * a * b``: the same bits), so every inner
    loop is one gather or table lookup with its operands in registers.
    """
    p = X.shape[1]
    start = program.start  # locals: the loops then keep them in registers
    kind = program.kind
    source = program.source
    offset = program.offset
    width = program.width
    column = program.column
    block = FILL_BLOCK_ROWS
    found = False
    b0 = start_row
    while b0 < stop_row and not found:
        b1 = min(stop_row, b0 + block)
        for j in range(p):
            t0 = start[j]
            t1 = start[j + 1]
            if t1 == t0:  # intercept
                for i in range(b0, b1):
                    X[i, j] = 1.0
                continue
            for t in range(t0, t1):
                if kind[t] == 0 and non_finite_check[source[t]]:  # gather and look for NaN/Inf
                    src = numeric[source[t]]
                    bad = False
                    if t == t0 and all_rows:
                        for i in range(b0, b1):
                            v = src[i]
                            bad |= (v - v) != 0.0
                            X[i, j] = v
                    elif t == t0:
                        for i in range(b0, b1):
                            v = src[rows[i]]
                            bad |= (v - v) != 0.0
                            X[i, j] = v
                    elif all_rows:
                        for i in range(b0, b1):
                            v = src[i]
                            bad |= (v - v) != 0.0
                            X[i, j] *= v
                    else:
                        for i in range(b0, b1):
                            v = src[rows[i]]
                            bad |= (v - v) != 0.0
                            X[i, j] *= v
                    if bad:
                        non_finite[source[t]] = True
                        found = True
                elif kind[t] == 0:  # a numeric variable: gather through rows
                    src = numeric[source[t]]
                    if t == t0 and all_rows:
                        for i in range(b0, b1):
                            X[i, j] = src[i]
                    elif t == t0:
                        for i in range(b0, b1):
                            X[i, j] = src[rows[i]]
                    elif all_rows:
                        for i in range(b0, b1):
                            X[i, j] *= src[i]
                    else:
                        for i in range(b0, b1):
                            X[i, j] *= src[rows[i]]
                else:  # one column of a factor's coding: table lookup by code
                    cod = codes[source[t]]
                    base = offset[t] + column[t]
                    w = width[t]
                    if t == t0:
                        for i in range(b0, b1):
                            X[i, j] = coding[base + cod[i] * w]
                    else:
                        for i in range(b0, b1):
                            X[i, j] *= coding[base + cod[i] * w]
        b0 = b1


@numba.njit(cache=True, nogil=True)
def kept_codes(codes, rows, subset, n_levels):
    """A factor's codes on the kept rows with its unused levels dropped (R's
    ``drop.unused.levels``), in one pass: (codes (n,) int64 renumbered over the levels present,
    present (n_levels,) bool). ``codes`` (N,) int64 on all rows, read through ``rows`` (n,) when
    ``subset`` (rows were dropped), else directly; every code read is in 0..n_levels-1.
    The renumbering is numpy's ``(np.cumsum(present) - 1)[codes]``: a level's new code is the
    number of present levels before it."""
    n = rows.shape[0] if subset else codes.shape[0]
    out = np.empty(n, dtype=np.int64)
    present = np.zeros(n_levels, dtype=np.bool_)
    bad = False
    for i in range(n):
        c = codes[rows[i]] if subset else codes[i]
        out[i] = c
        bad |= c < 0 or c >= n_levels
        if not bad:
            present[c] = True
    if bad:  # a missing code on a kept row: the caller's bug, never a write out of bounds
        raise ValueError("kept_codes: a code outside 0..n_levels-1 on a kept row")
    remap = np.empty(n_levels, dtype=np.int64)
    k = 0
    for j in range(n_levels):
        remap[j] = k
        if present[j]:
            k += 1
    if k < n_levels:
        for i in range(n):
            out[i] = remap[out[i]]
    return out, present


@numba.njit(cache=True, nogil=True)
def combined_codes(parts, radix, size):
    """The levels present and each row's level of the crossed factor of ``parts`` (k, n) int64
    (part j's codes in 0..radix[j]-1): combined code = mixed-radix number over the parts, first
    part most significant, < ``size`` = prod(radix). Returns (uniques: the combined codes present,
    ascending; inverse (n,): each row's index into uniques), numpy's ``np.unique(combined,
    return_inverse=True)`` by counting instead of sorting."""
    k, n = parts.shape
    combined = np.zeros(n, dtype=np.int64)
    for j in range(k):
        r = radix[j]
        for i in range(n):
            combined[i] = combined[i] * r + parts[j, i]
    present = np.zeros(size, dtype=np.bool_)
    for i in range(n):
        present[combined[i]] = True
    rank = np.empty(size, dtype=np.int64)
    count = 0
    for u in range(size):
        rank[u] = count
        if present[u]:
            count += 1
    uniques = np.empty(count, dtype=np.int64)
    for u in range(size):
        if present[u]:
            uniques[rank[u]] = u
    inverse = np.empty(n, dtype=np.int64)
    for i in range(n):
        inverse[i] = rank[combined[i]]
    return uniques, inverse


@numba.njit(cache=True, nogil=True)
def integer_unique(values):
    """``np.unique(values, return_inverse=True)`` of float64 values (n,) that are all integers of
    magnitude below 2^52 spanning at most max(2^16, 4 n) values (numeric grouping ids), by
    counting instead of sorting. Returns (True, uniques (k,) float64 ascending, inverse (n,)
    int64); (False, empty, empty) for anything else (a fraction, NaN, Inf, a wide range), which
    np.unique then handles."""
    n = values.shape[0]
    if n == 0:
        return False, np.zeros(0), np.zeros(0, dtype=np.int64)
    lo = values[0]
    hi = values[0]
    for i in range(n):
        v = values[i]
        if not (abs(v) < 4503599627370496.0 and v == np.floor(v)):  # 2^52; False for NaN
            return False, np.zeros(0), np.zeros(0, dtype=np.int64)
        lo = min(lo, v)
        hi = max(hi, v)
    size = int(hi - lo) + 1
    if size > max(1 << 16, 4 * n):
        return False, np.zeros(0), np.zeros(0, dtype=np.int64)
    slot = np.empty(n, dtype=np.int64)
    present = np.zeros(size, dtype=np.bool_)
    for i in range(n):
        s = int(values[i] - lo)
        slot[i] = s
        present[s] = True
    rank = np.empty(size, dtype=np.int64)
    count = 0
    for u in range(size):
        rank[u] = count
        if present[u]:
            count += 1
    uniques = np.empty(count)
    for u in range(size):
        if present[u]:
            uniques[rank[u]] = lo + u
    inverse = np.empty(n, dtype=np.int64)
    for i in range(n):
        inverse[i] = rank[slot[i]]
    return True, uniques, inverse


@numba.njit(cache=True, nogil=True)
def plain_rows(numeric, scan, codes):
    """The kept rows of a frame of plain columns, in one pass over each: a row is dropped where a
    ``numeric`` (k, N) row flagged in ``scan`` (k,) holds a NaN, or a factor's ``codes`` (f, N)
    is -1 (missing). Returns (kept rows (n,) int64 ascending, whether a scanned value is +-Inf
    anywhere)."""
    k, N = numeric.shape
    drop = np.zeros(N, dtype=np.bool_)
    inf = False
    for j in range(k):
        if scan[j]:
            src = numeric[j]
            for i in range(N):
                v = src[i]
                nan = v != v
                drop[i] |= nan
                inf |= (v - v != 0.0) and not nan
    for j in range(codes.shape[0]):
        src = codes[j]
        for i in range(N):
            drop[i] |= src[i] < 0
    n = 0
    for i in range(N):
        n += not drop[i]
    rows = np.empty(n, dtype=np.int64)
    r = 0
    for i in range(N):
        if not drop[i]:
            rows[r] = i
            r += 1
    return rows, inf


@numba.njit(cache=True, nogil=True)
def kept_codes_2d(codes, rows, subset, n_levels):
    """``kept_codes`` for each row of ``codes`` (f, N) with ``n_levels`` (f,): (kept codes (f, n),
    present (f, max levels) bool, every level present (f,) bool)."""
    f = codes.shape[0]
    n = rows.shape[0] if subset else codes.shape[1]
    width = 0
    for j in range(f):
        width = max(width, n_levels[j])
    out = np.empty((f, n), dtype=np.int64)
    present = np.zeros((f, width), dtype=np.bool_)
    complete = np.ones(f, dtype=np.bool_)
    for j in range(f):
        kept, here = kept_codes(codes[j], rows, subset, n_levels[j])
        out[j] = kept
        for c in range(n_levels[j]):
            present[j, c] = here[c]
            complete[j] &= here[c]
    return out, present, complete


@numba.njit(cache=True, nogil=True)
def gather_columns(source, cols, intercept, X):
    """Write the design X (n, p) = [1 | source[cols].T] (the intercept column only where
    ``intercept``) from the columns in place: source (k, n) float64, any strides (a DataFrame's
    float64 block, ``engine.formula.numeric_design``), cols (p - intercept,) int64 rows of it.
    A copy, so the values are bit for bit the columns'; row by row, so X's rows are written in
    order and each source cache line is read once (its 8 rows' values in neighbouring rows)."""
    n = X.shape[0]
    off = 1 if intercept else 0
    k = cols.shape[0]
    for i in range(n):
        if intercept:
            X[i, 0] = 1.0
        for c in range(k):
            X[i, off + c] = source[cols[c], i]
