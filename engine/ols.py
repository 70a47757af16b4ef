"""Ordinary least squares as R's ``lm`` computes it, at the speed of one pass over the data.

Model: y = X b + e, e ~ N(0, sigma^2 I), X of shape (n, p) with n >= p.

Algorithm (never forming Q, never forming or inverting X'X):

1. **Tall-skinny QR** (Demmel, Grigori, Hoemmen & Langou 2012, "Communication-optimal parallel and
   sequential QR and LU factorizations", SIAM J. Sci. Comput. 34(1)). The augmented matrix
   [X | Y] (Y = y, one column) is read once, in row blocks of ``BLOCK_ROWS`` rows that fit in the
   L2 cache. Each block is copied column-wise into a buffer and Householder-factored *stacked under
   the running triangular factor* (the structured "triangle on top of a block" step of LAPACK's
   ``dtpqrt``): reflector j touches row j of the triangle and the block's rows only. Reflectors
   are applied four at a time in the compact WY form (Schreiber & Van Loan 1989), so the block is
   streamed twice per four columns. The reflectors act on the Y columns as they go, so Q'y is
   accumulated without Q. Row chunks of
   ``CHUNK_ROWS`` rows are factored independently (in threads when there are several; the kernels
   release the GIL) and their triangles merged in chunk order, so results do not depend on the
   number of workers.
2. **R's rank decision on the small triangle.** The (p+1) x (p+1) triangle R0 of [X | y] satisfies
   [X | y] = Q0 R0 with orthonormal Q0, so every column norm and every norm of a column's residual
   after projecting out earlier columns is the same for R0 as for X. LINPACK ``dqrdc2`` as modified
   for R (R's src/appl/dqrdc2.f: Householder with *limited* column pivoting) is run on R0's leading
   p x p block: a column whose remaining norm falls below ``tol`` (1e-7) times its original norm is
   moved to the right-hand edge and counted aliased; the other columns keep their order. The rank,
   the pivot and the final triangle are those R's ``lm`` reports, up to rounding.
3. Coefficients by back substitution on the leading rank x rank triangle; residuals in one more
   pass (y - X b); the covariance sigma^2 R^-1 R^-T by triangular solves and the other statistics
   of ``summary.lm`` on first access (``LeastSquares``), so a fit nobody summarises skips them.

Numerical notes: the rank decision sees the same remaining norms as R's up to rounding, so only a
column within rounding of the 1e-7 threshold could be judged differently. Values are not rescaled:
columns beyond ~1e150 in magnitude overflow (reported as a DataError), as do NaN and Inf. Tests
compare the kernel with ``_dqrdc2`` run directly on X (R's own computation) and with statsmodels.

The user-facing ``ols(formula, data)`` builds the design with ``engine.formula.model_frame`` and
returns an ``OLSResults`` whose ``summary()`` prints exactly what R's ``print(summary(lm(...)))``
prints (see ``engine.rcompat``). A large frame whose formula is an intercept plus plain float64
columns of one pandas block (``engine.formula.numeric_design``) is fitted from the columns in
place and X is never written: one pass gathers each row block into the TSQR buffer (the same
blocks, so the same triangle, pivot and coefficients bit for bit), a second pass over the columns
makes the fitted values and residuals (``least_squares_columns``), and the model frame gathers X
only when asked (``fit.model_frame.X``, ``predict()``). That residual pass sums each row in the
design's column order where ``least_squares`` uses BLAS's X @ b, so the residuals and what sums
them (sigma, standard errors, R^2, F) agree with the other route to rounding (~1e-16 relative),
not to the last bit (a decision of issue 18: 400 MB not written at n = 1e6, p = 50).
"""

from __future__ import annotations

import functools
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numba
import numpy as np
import pandas as pd
from scipy import special

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.errors import DataError, DataWarning, EngineInputError, FormulaError, ModelSpecError, warn_user
from engine.formula import model_frame, numeric_design, numeric_frame, parse_formula
from engine.partitioned import is_partitioned
from engine.robust import check_cluster_columns, check_vcov_arguments
from engine.validate import checked_arguments

__all__ = ["LeastSquares", "OLSResults", "OLSSummary", "PivotedQR", "QR_TOLERANCE", "least_squares",
           "least_squares_columns", "ols", "pivoted_qr", "tsqr_triangle"]

#: R's ``lm`` tolerance for the rank decision (``lm.fit(tol = 1e-7)``).
QR_TOLERANCE = 1e-7
#: Rows per cache block: the block (p + 1) x BLOCK_ROWS stays in L2 and the five rows a panel
#: update streams (4 reflectors + 1 column, 2 KB each) stay in a 32 KB L1 cache.
BLOCK_ROWS = 256
#: Rows per independently factored chunk (the unit of thread parallelism). Chunk boundaries
#: depend on n only, never on the number of workers, so every run gives the same bits.
CHUNK_ROWS = 65536

# Reassociation lets LLVM vectorise the dot products; the order of summation is then fixed by the
# compiled code, so results are still reproducible run to run on one machine.
_FAST = {"reassoc", "contract"}


# --------------------------------------------------------------------------------------------
# Numba kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _dot(a, b, n):
    s = 0.0
    for i in range(n):
        s += a[i] * b[i]
    return s


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _axpy(alpha, x, y, n):
    for i in range(n):
        y[i] += alpha * x[i]


@numba.njit(cache=True, nogil=True)
def _apply_reflector(v, target, start, stop):
    """target[start:stop] -= (v'target / v[start]) v over start:stop: LINPACK dqrdc2's application of
    the Householder reflector stored in v (v[start] = 1 + |x|/norm), to a column or a right-hand side."""
    s = 0.0
    for i in range(start, stop):
        s += v[i] * target[i]
    t = -s / v[start]
    for i in range(start, stop):
        target[i] += t * v[i]


@numba.njit(cache=True, nogil=True)
def _norm2(x, start, stop):
    """Euclidean norm of x[start:stop], scaled against overflow as BLAS dnrm2."""
    scale = 0.0
    for i in range(start, stop):
        a = abs(x[i])
        if a > scale:
            scale = a
    if scale == 0.0:
        return 0.0
    s = 0.0
    for i in range(start, stop):
        t = x[i] / scale
        s += t * t
    return scale * math.sqrt(s)


@numba.njit(cache=True, nogil=True)
def _reflect_column(tri, block, j, n_rows):
    """Make reflector j of [tri; block] (column j below the diagonal -> 0); return tau (0: the
    column is already zero below the diagonal, nothing to reflect)."""
    vj = block[j]
    sx = _dot(vj, vj, n_rows)
    if sx == 0.0:
        return 0.0
    alpha = tri[j, j]
    norm = math.sqrt(alpha * alpha + sx)
    beta = -norm if alpha >= 0.0 else norm
    scale = 1.0 / (alpha - beta)
    for i in range(n_rows):
        vj[i] *= scale
    tri[j, j] = beta
    return (beta - alpha) / beta


@numba.njit(cache=True, nogil=True)
def _reflect_trailing(tri, block, j, tau, stop, n_rows):
    """Apply reflector j (tau, v = (e_j, block[j, :n_rows])) to the columns j + 1 .. stop - 1 of
    [tri; block], in place."""
    vj = block[j]
    for c in range(j + 1, stop):
        bc = block[c]
        w = tri[j, c] + _dot(vj, bc, n_rows)
        tw = tau * w
        tri[j, c] -= tw
        _axpy(-tw, vj, bc, n_rows)


@numba.njit(cache=True, nogil=True)
def _stack_householder(tri, block, n_rows):
    """Householder-factor the matrix [tri; block] in place (LAPACK dtpqrt2's structured step).

    tri:   (m, m) upper triangular, updated to the triangular factor of the stacked matrix.
    block: (m, b) the block's rows stored column-wise (block[j, i] = row i, column j); only the
           first ``n_rows`` entries of each column are used; overwritten by the reflectors.
    Reflector j is H = I - tau v v' with v = (e_j on the triangle, block[j, :] below).
    """
    m = tri.shape[0]
    for j in range(m):
        tau = _reflect_column(tri, block, j, n_rows)
        if tau != 0.0:
            _reflect_trailing(tri, block, j, tau, m, n_rows)


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _dot4(u0, u1, u2, u3, b, n):
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for i in range(n):
        bi = b[i]
        s0 += u0[i] * bi
        s1 += u1[i] * bi
        s2 += u2[i] * bi
        s3 += u3[i] * bi
    return s0, s1, s2, s3


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _axpy4(w0, w1, w2, w3, u0, u1, u2, u3, b, n):
    for i in range(n):
        b[i] -= w0 * u0[i] + w1 * u1[i] + w2 * u2[i] + w3 * u3[i]


@numba.njit(cache=True, nogil=True)
def _stack_householder_panel4(tri, block, n_rows):
    """Same result as ``_stack_householder`` (up to rounding), four reflectors per data pass.

    Columns are factored in panels of four; the panel's reflectors are combined in the compact WY
    form H1 H2 H3 H4 = I - V T V' (Schreiber & Van Loan 1989; LAPACK dlarft), so each trailing
    column is read twice per panel (four fused dot products, then one fused update) instead of
    twice per reflector. The triangle parts of the reflectors are distinct unit vectors, so
    V'V reduces to the block parts' dot products.
    """
    m = tri.shape[0]
    taus = np.zeros(4)
    T = np.zeros((4, 4))
    j0 = 0
    while j0 + 4 <= m:
        # factor the panel's four columns, updating only inside the panel
        for a in range(4):
            j = j0 + a
            tau = _reflect_column(tri, block, j, n_rows)
            taus[a] = tau
            if tau != 0.0:
                _reflect_trailing(tri, block, j, tau, j0 + 4, n_rows)
        if j0 + 4 < m:
            u0 = block[j0]
            u1 = block[j0 + 1]
            u2 = block[j0 + 2]
            u3 = block[j0 + 3]
            # T upper triangular: T[:i, i] = -tau_i T[:i, :i] (U[:, :i]' u_i), T[i, i] = tau_i
            T[:, :] = 0.0
            for i in range(4):
                T[i, i] = taus[i]
                for a in range(i):
                    acc = 0.0
                    for b in range(a, i):
                        acc += T[a, b] * _dot(block[j0 + b], block[j0 + i], n_rows)
                    T[a, i] = -taus[i] * acc
            for c in range(j0 + 4, m):
                bc = block[c]
                s0, s1, s2, s3 = _dot4(u0, u1, u2, u3, bc, n_rows)
                d0 = tri[j0, c] + s0
                d1 = tri[j0 + 1, c] + s1
                d2 = tri[j0 + 2, c] + s2
                d3 = tri[j0 + 3, c] + s3
                # w = T' d (applying H4 H3 H2 H1 = (I - V T V')')
                w0 = T[0, 0] * d0
                w1 = T[0, 1] * d0 + T[1, 1] * d1
                w2 = T[0, 2] * d0 + T[1, 2] * d1 + T[2, 2] * d2
                w3 = T[0, 3] * d0 + T[1, 3] * d1 + T[2, 3] * d2 + T[3, 3] * d3
                tri[j0, c] -= w0
                tri[j0 + 1, c] -= w1
                tri[j0 + 2, c] -= w2
                tri[j0 + 3, c] -= w3
                _axpy4(w0, w1, w2, w3, u0, u1, u2, u3, bc, n_rows)
        j0 += 4
    # the last m mod 4 columns one reflector at a time
    for j in range(j0, m):
        tau = _reflect_column(tri, block, j, n_rows)
        if tau != 0.0:
            _reflect_trailing(tri, block, j, tau, m, n_rows)


@numba.njit(cache=True, nogil=True)
def _tsqr_rows(X, Y, start, stop, block_rows):
    """Triangular factor (m, m), m = p + q, of [X | Y][start:stop], read in row blocks.

    X: (n, p), Y: (n, q), both C-contiguous. A NaN or Inf anywhere in the rows makes the returned
    triangle non-finite (it enters a dot product of every later reflector), which the caller
    checks; the hot copy loop stays free of tests.
    """
    p = X.shape[1]
    q = Y.shape[1]
    m = p + q
    tri = np.zeros((m, m))
    # pad the leading dimension: a power-of-two row stride makes the column-wise writes below
    # collide in the same L1 cache sets (4K aliasing)
    block = np.empty((m, block_rows + 8))
    i0 = start
    while i0 < stop:
        nb = min(block_rows, stop - i0)
        for r in range(nb):
            row = i0 + r
            for c in range(p):
                block[c, r] = X[row, c]
            for c in range(q):
                block[p + c, r] = Y[row, c]
        _stack_householder_panel4(tri, block, nb)
        i0 += nb
    return tri


@numba.njit(cache=True, nogil=True)
def _tsqr_columns_rows(source, cols, intercept, y, big, start, stop, block_rows):
    """``_tsqr_rows`` of [X | y][start:stop] with X = [1 | source[cols].T] (n, p) gathered from the
    columns in place (source: (k, n) strided, a DataFrame's float64 block; cols (p - intercept,)),
    block by block into the cache-resident buffer: the same blocks, hence the same triangle bit
    for bit, and X is never written. big (p + 1,) gets each column's largest magnitude over these
    rows (``_any_extreme``'s test, in this pass)."""
    p = cols.shape[0] + (1 if intercept else 0)
    m = p + 1
    off = 1 if intercept else 0
    by_rows = source.strides[0] < source.strides[1]
    tri = np.zeros((m, m))
    block = np.empty((m, block_rows + 8))  # padded as in _tsqr_rows
    i0 = start
    while i0 < stop:
        nb = min(block_rows, stop - i0)
        if intercept:
            big[0] = 1.0
            for r in range(nb):
                block[0, r] = 1.0
        if by_rows:  # rows of a row-major array: read each row's columns together
            for r in range(nb):
                for c in range(cols.shape[0]):
                    block[off + c, r] = source[cols[c], i0 + r]
            for c in range(off, p):
                b = big[c]
                for r in range(nb):
                    v = abs(block[c, r])
                    b = v if v > b else b
                big[c] = b
        else:  # each column's largest magnitude as it is copied (a separate sweep: +20% here)
            for c in range(cols.shape[0]):
                s = cols[c]
                b = big[off + c]
                for r in range(nb):
                    v = source[s, i0 + r]
                    block[off + c, r] = v
                    a = abs(v)
                    b = a if a > b else b
                big[off + c] = b
        b = big[p]
        for r in range(nb):
            v = y[i0 + r]
            block[p, r] = v
            a = abs(v)
            b = a if a > b else b
        big[p] = b
        _stack_householder_panel4(tri, block, nb)
        i0 += nb
    return tri


@numba.njit(cache=True, nogil=True)
def _columns_fitted_rows(source, cols, intercept, coef, y, fitted, resid, start, stop):
    """fitted = X coef and resid = y - fitted over rows [start, stop), X = [1 | source[cols].T]
    (n, p) read from the columns in place (source (k, n) strided, cols (p - intercept,), coef
    (p,), y, fitted, resid (n,)), X never formed. Each row's sum has one fixed order, the design's
    column order: coef[0] (the intercept), then + coef[j] x_ij for j = 1, ..., p - 1 left to
    right, one multiply and one add each (no reassociation, no fused multiply-add), whatever the
    layout, the row range or the number of threads; BLAS's X @ b (``least_squares``) sums in its
    own order, so the two agree to rounding (~1e-16 relative), not bit for bit. Eight rows at a
    time, each in its own register, the columns inner: eight independent sums hide the add
    latency, and the reads walk each column (or, row-major, each row) forwards; a running sum
    per row in memory instead (rows inner) took twice as long (10^6 x 49, loaded machine: 68-83
    ms -> 36-40 ms CPU, BLAS X @ b on a formed X 20-30 ms)."""
    off = 1 if intercept else 0
    k = cols.shape[0]
    b0 = coef[0] if intercept else 0.0
    acc = np.empty(8)
    i = start
    while i < stop:
        nb = min(8, stop - i)
        if nb == 8:
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = b0
            for c in range(k):
                s = cols[c]
                b = coef[off + c]
                a0 += b * source[s, i]
                a1 += b * source[s, i + 1]
                a2 += b * source[s, i + 2]
                a3 += b * source[s, i + 3]
                a4 += b * source[s, i + 4]
                a5 += b * source[s, i + 5]
                a6 += b * source[s, i + 6]
                a7 += b * source[s, i + 7]
            acc[0] = a0
            acc[1] = a1
            acc[2] = a2
            acc[3] = a3
            acc[4] = a4
            acc[5] = a5
            acc[6] = a6
            acc[7] = a7
        else:  # the last rows, one at a time, in the same order
            for r in range(nb):
                a = b0
                for c in range(k):
                    a += coef[off + c] * source[cols[c], i + r]
                acc[r] = a
        for r in range(nb):
            fitted[i + r] = acc[r]
            resid[i + r] = y[i + r] - acc[r]
        i += nb


@numba.njit(cache=True, nogil=True)
def _merge_triangles(tris):
    """Triangular factor of the stacked triangles tris[0], tris[1], ... (in that order)."""
    k, m, _ = tris.shape
    tri = tris[0].copy()
    block = np.empty((m, m))
    for t in range(1, k):
        for j in range(m):
            for i in range(m):
                block[j, i] = tris[t, i, j]
        _stack_householder_panel4(tri, block, m)
    return tri


@numba.njit(cache=True, nogil=True)
def _dqrdc2(cols, rhs, tol):
    """R's LINPACK dqrdc2 (Householder QR with limited column pivoting), on columns.

    cols: (p, n) the n x p matrix stored column-wise (cols[j, i] = x[i, j]); overwritten by R in
          its upper triangle (cols[j, i], i <= j) and the reflectors below, as LINPACK does.
    rhs:  (q, n) right-hand sides, stored the same way; receive every reflector (-> Q'y).
    tol:  a column is aliased when its remaining norm is < tol * its original norm.
    Returns (rank, pivot (0-based original column of each position), qraux).
    Translated from R's src/appl/dqrdc2.f (Ihaka 1995, Ripley 1999): columns judged negligible
    are cycled to the right-hand edge, the rest keep their order.
    """
    p, n = cols.shape
    q = rhs.shape[0]
    qraux = np.empty(p)
    work1 = np.empty(p)
    work2 = np.empty(p)
    pivot = np.empty(p, dtype=np.int64)
    for j in range(p):
        pivot[j] = j  # a loop, not np.arange: arange's implementation is a separate ~1 s compile
        qraux[j] = _norm2(cols[j], np.int64(0), n)  # np.int64: a literal 0 would compile a second specialisation
        work1[j] = qraux[j]
        work2[j] = qraux[j] if qraux[j] != 0.0 else 1.0
    lup = min(n, p)
    k = p + 1  # Fortran's 1-based k
    tmp = np.empty(n)
    for l in range(lup):
        # cycle negligible columns to the right-hand edge
        while not (l + 1 >= k or qraux[l] >= work2[l] * tol):
            tmp[:] = cols[l]
            for j in range(l + 1, p):
                cols[j - 1] = cols[j]
            cols[p - 1] = tmp
            pv = pivot[l]
            t1 = qraux[l]
            t2 = work1[l]
            t3 = work2[l]
            for j in range(l + 1, p):
                pivot[j - 1] = pivot[j]
                qraux[j - 1] = qraux[j]
                work1[j - 1] = work1[j]
                work2[j - 1] = work2[j]
            pivot[p - 1] = pv
            qraux[p - 1] = t1
            work1[p - 1] = t2
            work2[p - 1] = t3
            k -= 1
        if l == n - 1:
            continue
        xl = cols[l]
        nrmxl = _norm2(xl, l, n)
        if nrmxl == 0.0:
            continue
        if xl[l] != 0.0:
            nrmxl = math.copysign(nrmxl, xl[l])
        inv = 1.0 / nrmxl
        for i in range(l, n):
            xl[i] *= inv
        xl[l] = 1.0 + xl[l]
        for j in range(l + 1, p):
            xj = cols[j]
            _apply_reflector(xl, xj, l, n)
            if qraux[j] != 0.0:
                tt = 1.0 - (abs(xj[l]) / qraux[j]) ** 2
                tt = max(tt, 0.0)
                if abs(tt) >= 1e-6:
                    qraux[j] = qraux[j] * math.sqrt(tt)
                else:
                    qraux[j] = _norm2(xj, l + 1, n)
                    work1[j] = qraux[j]
        for r in range(q):
            _apply_reflector(xl, rhs[r], l, n)
        qraux[l] = xl[l]
        xl[l] = -nrmxl
    rank = min(k - 1, n)
    return rank, pivot, qraux


@numba.njit(cache=True, nogil=True)
def _pairwise_block(a, start, stop):
    """numpy's pairwise_sum (numpy/_core/src/umath/loops_utils.h.src) on at most 128 values:
    fewer than 8 one by one from -0.0, else eight accumulators and the rest one by one."""
    n = stop - start
    if n < 8:
        res = -0.0
        for i in range(start, stop):
            res += a[i]
        return res
    r0 = a[start]
    r1 = a[start + 1]
    r2 = a[start + 2]
    r3 = a[start + 3]
    r4 = a[start + 4]
    r5 = a[start + 5]
    r6 = a[start + 6]
    r7 = a[start + 7]
    i = start + 8
    end = stop - n % 8
    while i < end:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < stop:
        res += a[i]
        i += 1
    return res


@numba.njit(cache=True, nogil=True)
def _pairwise_sum(a, start, stop):
    """``np.sum(a[start:stop])`` with numpy's bits (0.0 plus numpy's pairwise_sum: blocks of at
    most 128 values, longer ranges split in two halves, the first a multiple of 8 long), so that a
    sum moved into a kernel keeps the bits of the ``np.sum`` it replaces. The halves are walked
    with an explicit stack: Numba's cache cannot load a recursive function (it crashes)."""
    if stop - start <= 128:
        return 0.0 + _pairwise_block(a, start, stop)
    lo = np.empty(64, dtype=np.int64)
    hi = np.empty(64, dtype=np.int64)
    stage = np.empty(64, dtype=np.int64)
    values = np.empty(64)
    top = 0
    lo[0] = start
    hi[0] = stop
    stage[0] = 0
    n_values = 0
    while top >= 0:
        n = hi[top] - lo[top]
        if n <= 128:
            values[n_values] = _pairwise_block(a, lo[top], hi[top])
            n_values += 1
            top -= 1
            continue
        half = n // 2
        half -= half % 8
        if stage[top] == 0:  # the first half
            stage[top] = 1
            lo[top + 1] = lo[top]
            hi[top + 1] = lo[top] + half
        elif stage[top] == 1:  # the second half
            stage[top] = 2
            lo[top + 1] = lo[top] + half
            hi[top + 1] = hi[top]
        else:  # both done: their sum, in numpy's order
            values[n_values - 2] = values[n_values - 2] + values[n_values - 1]
            n_values -= 1
            top -= 1
            continue
        top += 1
        stage[top] = 0
    return 0.0 + values[0]


@numba.njit(cache=True, nogil=True)
def _rank_triangle(tri, p, tol):
    """R's rank decision on the TSQR triangle ``tri`` ((p+q) x (p+q), [X | Y] = Q0 tri), in one
    call: ``_dqrdc2`` on the leading p x p block's columns with Q0'Y's first p rows as right-hand
    sides. Returns (r (p, p) upper triangular, qty (p, q) = Q'Y in the pivoted basis, rank,
    pivot, resid_ss (q,)): resid_ss[c] is the squared norm of Q'Y's rows beyond the rank plus the
    triangle's part outside X's span, each summed as numpy's ``np.sum`` sums them."""
    m = tri.shape[0]
    q = m - p
    cols = np.empty((p, p))
    for j in range(p):
        for i in range(p):
            cols[j, i] = tri[i, j]
    rhs = np.empty((q, p))
    for c in range(q):
        for i in range(p):
            rhs[c, i] = tri[i, p + c]
    rank, pivot, _ = _dqrdc2(cols, rhs, tol)
    r = np.zeros((p, p))
    for j in range(p):
        for i in range(j + 1):
            r[i, j] = cols[j, i]
    qty = np.empty((p, q))
    for i in range(p):
        for c in range(q):
            qty[i, c] = rhs[c, i]
    resid_ss = np.empty(q)
    squares = np.empty(max(p - rank, q))
    first = np.int64(0)  # not a literal 0: one compiled _pairwise_sum / _pairwise_block, not two
    for c in range(q):
        for i in range(rank, p):
            squares[i - rank] = rhs[c, i] * rhs[c, i]
        head = _pairwise_sum(squares, first, p - rank)
        for i in range(q):
            v = tri[p + i, p + c]
            squares[i] = v * v
        resid_ss[c] = head + _pairwise_sum(squares, first, q)
    return r, qty, rank, pivot, resid_ss


# --------------------------------------------------------------------------------------------
# Python layer over the kernels
# --------------------------------------------------------------------------------------------


class PivotedQR(NamedTuple):
    """R's pivoted QR of X, from the one-pass factorisation.

    r:      (p, p) upper triangular factor of X[:, pivot] (rows >= rank: what dqrdc2 leaves).
    qty:    (p, q) Q'Y in the pivoted basis (Q: the p orthonormal columns, never formed).
    rank:   number of columns judged linearly independent (R's ``qr()$rank``).
    pivot:  (p,) 0-based original column index at each position; the first ``rank`` are the
            non-aliased columns in their original order, the aliased ones follow.
    resid_ss: (q,) squared norm of the part of each Y column orthogonal to span(X's columns),
            from the factorisation (R's sum of squared ``effects`` beyond the rank).
    """

    r: np.ndarray
    qty: np.ndarray
    rank: int
    pivot: np.ndarray
    resid_ss: np.ndarray


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8)))
    return _POOL


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a.reshape(-1, 1) if a.ndim == 1 else a


def tsqr_triangle(X: np.ndarray, Y: np.ndarray, *, block_rows: int = BLOCK_ROWS,
                  chunk_rows: int = CHUNK_ROWS, parallel: bool = True) -> np.ndarray:
    """Upper triangular factor T ((p+q) x (p+q)) of [X | Y], read once in cache-sized blocks.

    [X | Y] = Q0 T with Q0 orthonormal (never formed). Raises DataError on a non-finite value.
    """
    X = _as_2d(X)
    Y = _as_2d(Y)
    spans = _chunk_spans(X.shape[0], chunk_rows)
    if len(spans) == 1 or not parallel:
        tris = [_tsqr_rows(X, Y, a, b, block_rows) for a, b in spans]
    else:
        tris = list(_pool().map(lambda s: _tsqr_rows(X, Y, s[0], s[1], block_rows), spans))
    for (a, b), tri in zip(spans, tris):
        if not np.isfinite(tri).all():
            _raise_non_finite(X, Y, a, b)
    if len(tris) == 1:
        return tris[0]
    return _merge_triangles(np.stack(tris))


def _chunk_spans(n: int, chunk_rows: int) -> list[tuple[int, int]]:
    bounds = list(range(0, n, chunk_rows)) + [n]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)] or [(0, 0)]


def tsqr_columns(source: np.ndarray, cols: np.ndarray, intercept: bool, y: np.ndarray, *,
                 block_rows: int = BLOCK_ROWS, chunk_rows: int = CHUNK_ROWS,
                 parallel: bool = True) -> tuple[bool, np.ndarray | None]:
    """``tsqr_triangle(X, y)`` for X = [1 | source[cols].T] (intercept optional), read from the
    columns in place (``_tsqr_columns_rows``), X never written; the same chunks and merge, so the
    same triangle. Returns (finite, triangle): finite False when the triangle is not finite (a NaN
    or Inf in the columns, or an overflow; the caller then takes the ordinary route); triangle
    None when a column needs ``pivoted_qr``'s scaling."""
    spans = _chunk_spans(y.shape[0], chunk_rows)
    p = cols.shape[0] + (1 if intercept else 0)
    big = np.zeros((len(spans), p + 1))

    def run(i):
        return _tsqr_columns_rows(source, cols, intercept, y, big[i], spans[i][0], spans[i][1],
                                  block_rows)

    chunks = range(len(spans))
    tris = [run(i) for i in chunks] if len(spans) == 1 or not parallel else list(_pool().map(run, chunks))
    if not all(np.isfinite(tri).all() for tri in tris):
        return False, None
    # every value finite: _any_extreme(X, y) is "a non-zero largest magnitude outside
    # [2^-200, 2^200]"; then pivoted_qr scales and factors X itself (the triangle is not used)
    top = big.max(axis=0)
    if ((top > 0) & ((top < 2.0 ** -200) | (top > 2.0 ** 200))).any():
        return True, None
    return True, tris[0] if len(tris) == 1 else _merge_triangles(np.stack(tris))


def columns_fitted(source: np.ndarray, cols: np.ndarray, intercept: bool, coef: np.ndarray,
                   y: np.ndarray, *, chunk_rows: int = CHUNK_ROWS,
                   parallel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(fitted, resid) (n,) of X = [1 | source[cols].T] and coef (p,), from the columns in place
    (``_columns_fitted_rows``: one fixed sum order per row, so the result does not depend on the
    chunks or threads), in the TSQR's row chunks."""
    n = y.shape[0]
    fitted = np.empty(n)
    resid = np.empty(n)
    spans = _chunk_spans(n, chunk_rows)
    coef = np.ascontiguousarray(coef, dtype=np.float64)

    def run(span):
        _columns_fitted_rows(source, cols, intercept, coef, y, fitted, resid, span[0], span[1])

    if len(spans) == 1 or not parallel:
        for span in spans:
            run(span)
    else:
        list(_pool().map(run, spans))
    return fitted, resid


def _raise_non_finite(X: np.ndarray, Y: np.ndarray, start: int, stop: int) -> None:
    for i in range(start, stop, 65536):
        j = min(stop, i + 65536)
        bad = ~(np.isfinite(X[i:j]).all(axis=1) & np.isfinite(Y[i:j]).all(axis=1))
        if bad.any():
            raise DataError(f"non-finite value (NaN or Inf) in the model matrix or response at "
                            f"row {i + int(np.argmax(bad))} (0-based position among the rows used)")
    raise DataError("the least-squares factorisation overflowed: values too large in magnitude "
                    "(rescale the columns)")


def pivoted_qr(X: np.ndarray, Y: np.ndarray | None = None, *, tol: float = QR_TOLERANCE,
               block_rows: int = BLOCK_ROWS, chunk_rows: int = CHUNK_ROWS,
               parallel: bool = True, triangle: np.ndarray | None = None) -> PivotedQR:
    """R's ``qr(X, tol = 1e-7)`` (LINPACK dqrdc2 pivoting) with Q'Y, in one pass over X.

    X: (n, p) with n >= p; Y: (n,) or (n, q) (default: no right-hand side). ``triangle``: the
    ``tsqr_triangle(X, Y)`` already made by a pass that found no column to scale (``tsqr_columns``).
    """
    X = _as_2d(X)
    n, p = X.shape
    Y = np.zeros((n, 0)) if Y is None else _as_2d(Y)
    # columns of extreme magnitude are scaled by powers of 4 first (exact), so that the cross
    # products inside the factorisation neither underflow nor overflow and the rank decision is
    # scale-invariant, as R's dnrm2-based dqrdc2 (a slope on x * 1e-200 is estimated, not aliased)
    x_scale = y_scale = None
    # (a given triangle: the caller found no column to scale in its pass)
    if triangle is None and _any_extreme(X, Y):  # one pass over both; the scales only where needed
        x_scale, y_scale = _column_scales(X), _column_scales(Y)
    if x_scale is not None:
        X = X / x_scale
    if y_scale is not None:
        Y = Y / y_scale
    if triangle is not None:
        tri = triangle
    else:
        tri = tsqr_triangle(X, Y, block_rows=block_rows, chunk_rows=chunk_rows, parallel=parallel)
    # R's rank rule on the triangle; residual part of Y: the rows of Q'Y beyond the rank plus
    # what lies outside Q0's span
    r, qty, rank, pivot, resid_ss = _rank_triangle(tri, p, float(tol))
    with np.errstate(over="ignore"):  # X P = Q (R_s D_P), Q'Y = (Q'Y_s) D_Y
        if x_scale is not None:
            r = r * x_scale[pivot][None, :]
        if y_scale is not None:
            qty = qty * y_scale[None, :]
            resid_ss = resid_ss * y_scale ** 2
    return PivotedQR(r, qty, int(rank), pivot.astype(np.int64), resid_ss)


@numba.njit(cache=True, nogil=True)
def _column_max_abs(a):
    """Per column of a (n, p) C-contiguous array: the largest magnitude, NaN where the column
    holds a NaN (``max(max(a), -min(a))`` as numpy computes it), in one row-major pass that
    vectorises across the columns (numpy's two reductions read the array twice)."""
    n, p = a.shape
    big = np.zeros(p)
    nan = np.zeros(p, dtype=np.bool_)
    for i in range(n):
        for j in range(p):
            v = abs(a[i, j])
            nan[j] |= v != v
            big[j] = v if v > big[j] else big[j]
    for j in range(p):
        if nan[j]:
            big[j] = np.nan
    return big


@numba.njit(cache=True, nogil=True)
def _has_extreme_column(a):
    """Whether ``_column_scales`` would scale a column of a (n, k) C-contiguous array (largest
    magnitude finite, non-zero and outside [2^-200, 2^200], no NaN), in one row-major pass."""
    big = _column_max_abs(a)
    for j in range(big.shape[0]):
        b = big[j]  # NaN (a NaN in the column) fails b > 0
        if b > 0.0 and b < np.inf and (b < 2.0 ** -200 or b > 2.0 ** 200):
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _any_extreme(X, Y):
    """Whether X or Y has a column ``_column_scales`` would scale: one kernel call for both
    (ordinary data then cost one call, not two plus numpy's tests)."""
    return _has_extreme_column(X) or _has_extreme_column(Y)


def _column_scales(a: np.ndarray) -> np.ndarray | None:
    """Per-column powers of 4 bringing each column's largest magnitude near 1 where it lies outside
    [2^-200, 2^200]; None when every column is inside (ordinary data are used as given, bit for bit)."""
    if a.shape[0] == 0 or a.shape[1] == 0:
        return None
    big = _column_max_abs(a)
    extreme = np.isfinite(big) & (big > 0) & ((big < 2.0 ** -200) | (big > 2.0 ** 200))
    if not extreme.any():
        return None
    scale = np.ones(a.shape[1])
    # floor, not round: 2^(2 floor(log2(big) / 2)) <= big stays finite even for big near 1.8e308
    scale[extreme] = np.ldexp(1.0, (2 * np.floor(np.log2(big[extreme]) / 2)).astype(np.int64))
    return scale


# --------------------------------------------------------------------------------------------
# least squares on arrays
# --------------------------------------------------------------------------------------------


#: The statistics of ``summary.lm`` a LeastSquares computes on first access (``lm_statistics``).
_LAZY_STATISTICS = ("std_error", "t_value", "p_value", "vcov", "sigma", "rss", "mss", "r_squared",
                    "adj_r_squared", "fvalue", "f_numdf", "f_pvalue")


def _statistic(name: str) -> property:
    def get(self):
        return self._statistics[name]
    get.__name__ = name
    return property(get, doc=f"``summary.lm``'s {name}, computed with the others on first access")


class LeastSquares:
    """Least-squares fit of y on X as R's ``lm.fit`` + ``summary.lm`` compute it (plain arrays).

    Coefficient arrays are (p,) in X's column order with NaN for aliased columns; ``vcov`` is
    (p, p) with NaN rows/columns for aliased columns. F-statistic fields are NaN when the model
    has no terms besides the intercept (R then prints no R-squared/F line).
    The fit holds coef, aliased, rank, pivot, df_resid, fitted, resid, has_intercept, qr and the
    timings; the statistics (std_error, t_value, p_value, vcov, sigma, rss, mss, r_squared,
    adj_r_squared, fvalue, f_numdf, f_pvalue) are computed together on the first access to any of
    them (``lm_statistics``: the same numbers), so a fit whose summary is not asked for skips them.
    """

    __slots__ = ("coef", "aliased", "rank", "pivot", "df_resid", "fitted", "resid",
                 "has_intercept", "qr", "seconds_qr", "seconds_resid", "_coef_piv", "_n", "_p",
                 "_stats")

    def __init__(self, qr: PivotedQR, coef_piv: np.ndarray, n: int, p: int, fitted: np.ndarray,
                 resid: np.ndarray, has_intercept: bool, seconds_qr: float, seconds_resid: float):
        self.coef, self.aliased = _coefficients(qr, coef_piv, p)
        self.rank = qr.rank
        self.pivot = qr.pivot
        self.df_resid = n - qr.rank
        self.fitted = fitted
        self.resid = resid
        self.has_intercept = has_intercept
        self.qr = qr
        self.seconds_qr = seconds_qr
        self.seconds_resid = seconds_resid
        self._coef_piv = coef_piv
        self._n = n
        self._p = p
        self._stats = None

    @property
    def _statistics(self) -> dict:
        if self._stats is None:
            with np.errstate(over="ignore", invalid="ignore"):  # R: Inf, no warning
                rss = float(self.resid @ self.resid)
                if self.has_intercept:
                    centred = self.fitted - self.fitted.mean()
                    mss = float(centred @ centred)
                else:
                    mss = float(self.fitted @ self.fitted)
            self._stats = lm_statistics(self.qr, self._coef_piv, self._n, self._p, rss, mss,
                                        self.has_intercept)
        return self._stats


for _name in _LAZY_STATISTICS:
    setattr(LeastSquares, _name, _statistic(_name))
del _name


@numba.njit(cache=True, nogil=True)
def _solve_upper(r, b):
    """Solve r x = b by back substitution; r (k, k) upper triangular, b (k, q)."""
    k, q = b.shape
    x = np.empty((k, q))
    for c in range(q):
        for i in range(k - 1, -1, -1):
            s = b[i, c]
            for j in range(i + 1, k):
                s -= r[i, j] * x[j, c]
            x[i, c] = s / r[i, i]
    return x


def _back_substitute(r: np.ndarray, b: np.ndarray) -> np.ndarray:
    b2 = np.ascontiguousarray(b, dtype=np.float64)
    out = _solve_upper(np.ascontiguousarray(r, dtype=np.float64), b2.reshape(b2.shape[0], -1))
    return out.reshape(b2.shape)


def least_squares(X: np.ndarray, y: np.ndarray, *, has_intercept: bool | None = None,
                  tol: float = QR_TOLERANCE, block_rows: int = BLOCK_ROWS,
                  chunk_rows: int = CHUNK_ROWS, parallel: bool = True,
                  triangle: np.ndarray | None = None) -> LeastSquares:
    """Fit y = X b by the one-pass pivoted QR; every statistic of R's ``summary.lm``.

    X: (n, p) float64 (C-contiguous avoids a copy), y: (n,). ``has_intercept`` decides R's
    centred (True) or uncentred (False) R-squared and F; None = "X has a column of ones".
    Raises ModelSpecError when n < p or p == 0, DataError on non-finite values. ``triangle``:
    [X | y]'s TSQR triangle already made (``tsqr_columns``; see ``pivoted_qr``).
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64).reshape(-1)
    if X.ndim != 2:
        raise ModelSpecError(f"X must be a 2-D array, got shape {X.shape}")
    n, p = X.shape
    if y.shape[0] != n:
        raise ModelSpecError(f"y has {y.shape[0]} rows but X has {n}")
    if p == 0:
        raise ModelSpecError("the model has no coefficients (no intercept and no terms)")
    if n == 0:
        raise DataError("no rows to fit")
    if n < p:
        raise ModelSpecError(
            f"fewer rows ({n}) than model coefficients ({p}): the coefficients are not "
            "identifiable (R's lm would report the excess as NA; engine requires n >= p)")
    if has_intercept is None:  # a column of ones (checked only where the first row is 1)
        has_intercept = any(bool(np.all(X[:, j] == 1.0)) for j in np.flatnonzero(X[0] == 1.0))
    t0 = time.perf_counter()
    qr = pivoted_qr(X, y, tol=tol, block_rows=block_rows, chunk_rows=chunk_rows,
                    parallel=parallel, triangle=triangle)

    def fitted_resid(coef0):
        fitted = X @ coef0
        return fitted, y - fitted

    return _finish(qr, y, p, bool(has_intercept), t0, fitted_resid)


def least_squares_columns(source: np.ndarray, cols: np.ndarray, intercept: bool, y: np.ndarray,
                          triangle: np.ndarray, *, has_intercept: bool,
                          tol: float = QR_TOLERANCE) -> LeastSquares:
    """``least_squares(X, y, triangle=triangle)`` for X = [1 | source[cols].T] (n, p) never formed:
    the columns' TSQR triangle (``tsqr_columns``, finite, no column to scale), then the residual
    pass over the columns in place (``columns_fitted``). Coefficients, the QR and every statistic
    that does not read the residuals are bit for bit ``least_squares``'s; fitted values and
    residuals (and sigma, R^2, F, which sum them) agree with its BLAS X @ b to rounding."""
    n = y.shape[0]
    p = cols.shape[0] + (1 if intercept else 0)
    t0 = time.perf_counter()
    r, qty, rank, pivot, resid_ss = _rank_triangle(triangle, p, float(tol))
    qr = PivotedQR(r, qty, int(rank), pivot.astype(np.int64), resid_ss)
    return _finish(qr, y, p, has_intercept, t0,
                   lambda coef0: columns_fitted(source, cols, intercept, coef0, y))


def _finish(qr: PivotedQR, y: np.ndarray, p: int, has_intercept: bool, t0: float,
            fitted_resid) -> LeastSquares:
    """The LeastSquares of a pivoted QR of X (n, p) and y (n,): coefficients by back substitution,
    then ``fitted_resid(coef0)`` -> (fitted, resid) for coef0 (p,) (zero where aliased)."""
    n = y.shape[0]
    k = qr.rank
    coef_piv = _back_substitute(qr.r[:k, :k], qr.qty[:k, 0]) if k else np.zeros(0)
    t1 = time.perf_counter()
    kept = qr.pivot[:k]
    coef0 = np.zeros(p)
    coef0[kept] = coef_piv
    if k == n:  # exact interpolation: R's residuals (Q2 Q2' y with Q2 empty) are exactly zero
        fitted = y.copy()
        resid = np.zeros(n)
    else:
        fitted, resid = fitted_resid(coef0)
    t2 = time.perf_counter()
    return LeastSquares(qr, coef_piv, n, p, fitted, resid, has_intercept, t1 - t0, t2 - t1)


def _coefficients(qr: PivotedQR, coef_piv: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(coef (p,) in X's column order, NaN where aliased; aliased (p,) bool) from the pivoted
    QR and the coefficients in pivoted order."""
    kept = qr.pivot[:qr.rank]
    aliased = np.ones(p, dtype=bool)
    aliased[kept] = False
    coef = np.full(p, np.nan)
    coef[kept] = coef_piv
    return coef, aliased


def lm_statistics(qr: PivotedQR, coef_piv: np.ndarray, n: int, p: int, rss: float, mss: float,
                  has_intercept: bool) -> dict:
    """``summary.lm``'s statistics from the pivoted QR, the coefficients in pivoted order (k,),
    the residual and model sums of squares: the LeastSquares fields other than fitted, resid,
    has_intercept, qr and the timings (also used by the fit from partitions)."""
    k = qr.rank
    kept = qr.pivot[:k]
    coef, aliased = _coefficients(qr, coef_piv, p)
    rdf = n - k
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # R: Inf, no warning
        resvar = rss / rdf if rdf > 0 else (np.nan if rss == 0 else np.inf)
        # covariance sigma^2 (R'R)^-1 = sigma^2 R^-1 R^-T, R^-1 by a triangular solve
        rinv = _back_substitute(qr.r[:k, :k], np.eye(k)) if k else np.zeros((0, 0))
        cov_piv = (rinv @ rinv.T) * resvar
        vcov = np.full((p, p), np.nan)
        vcov[np.ix_(kept, kept)] = cov_piv
        se = np.full(p, np.nan)
        se[kept] = np.sqrt(np.diag(cov_piv))
        tval = coef / se
        pval = np.full(p, np.nan)
        pval[kept] = 2.0 * special.stdtr(rdf, -np.abs(tval[kept])) if rdf > 0 else np.nan
        df_int = 1 if has_intercept else 0
        if k != df_int:  # numpy scalars: an exact fit (mss + rss = 0, resvar = 0) gives R's NaN
            mss, rss, resvar = np.float64(mss), np.float64(rss), np.float64(resvar)
            r2 = mss / (mss + rss)
            adj = 1.0 - (1.0 - r2) * ((n - df_int) / rdf) if rdf > 0 else np.nan
            numdf = float(k - df_int)
            fval = (mss / numdf) / resvar
            fp = float(special.fdtrc(numdf, rdf, fval)) if rdf > 0 else np.nan
        else:
            r2 = adj = 0.0
            numdf = fval = fp = np.nan
    return dict(
        coef=coef, std_error=se, t_value=tval, p_value=pval, vcov=vcov, aliased=aliased,
        rank=k, pivot=qr.pivot, df_resid=rdf, sigma=float(np.sqrt(resvar)), rss=rss, mss=mss,
        r_squared=float(r2), adj_r_squared=float(adj), fvalue=float(fval), f_numdf=float(numdf),
        f_pvalue=float(fp))


# --------------------------------------------------------------------------------------------
# the user-facing fit: ols(formula, data)
# --------------------------------------------------------------------------------------------


def _r_row_names(index: pd.Index) -> list[str]:
    """Row names as R shows them: a default 0..n-1 RangeIndex becomes R's 1..n."""
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return [str(i + 1) for i in range(len(index))]
    return [str(v) for v in index]


def _series_view(field: str, name: str, by_row: bool = False) -> functools.cached_property:
    """A cached ``pd.Series`` of ``self._ls.<field>``, indexed by the coefficient names (or by
    the data's rows, ``by_row``), built on first access: building pandas objects is most of a
    small fit's time, so an ``OLSResults`` builds only the ones asked for."""
    def view(self) -> pd.Series:
        return pd.Series(getattr(self._ls, field), index=self._index if by_row else self._names,
                         name=name)
    view.__name__ = field
    return functools.cached_property(view)


def _fit_view(field: str) -> functools.cached_property:
    """``self._ls.<field>``, read on first access (a LeastSquares computes its statistics then);
    a value assigned to the attribute (the robust Wald F) replaces it."""
    def view(self):
        return getattr(self._ls, field)
    view.__name__ = field
    return functools.cached_property(view)


@dataclass
class OLSSummary:
    """R's ``summary(lm(...))``: the coefficient table and fit statistics; prints as R does.

    ``str(summary)`` (and ``print``) is exactly R's ``print(summary(fit))`` output.
    """

    fit: "OLSResults"
    coefficients: pd.DataFrame      # Estimate, Std. Error, t value, Pr(>|t|); non-aliased rows
    text: str = field(repr=False, default="")

    def __str__(self) -> str:
        return self.text[:-1] if self.text.endswith("\n") else self.text

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))


class OLSResults:
    """A fitted linear model, R's ``lm`` object in Python.

    Attributes (pandas objects are indexed by R's coefficient names; aliased coefficients NaN):
    params, bse, tvalues, pvalues, vcov (DataFrame), sigma, df_resid, df_model, rank, rsquared,
    rsquared_adj, fvalue, f_pvalue, nobs, n_dropped, resid, fitted (Series over the kept rows'
    index labels), aliased (list of names), formula, call (R's call text), ssr, ess,
    timings (seconds: model_frame, qr, residuals), model_frame (the ModelFrame).
    With ``ols(vcov=, cluster=)``: cov_type, robust (engine.robust.RobustCovariance) and
    df_inference (the t and F degrees of freedom) describe the covariance bse, tvalues, pvalues,
    vcov, fvalue and conf_int() use. ``predict()`` as R's predict.lm.
    """

    def __init__(self, ls: LeastSquares, names: list[str], index: pd.Index, *, formula: str,
                 call: list[str], n_dropped: int, model_frame=None,
                 timings: dict | None = None, robust=None, data_columns=()):
        self._ls = ls
        self.column_names = list(names)
        self.formula = formula
        self.call_lines = list(call)
        self.call = "\n".join(call)
        self._index = index  # the pandas objects below are built on first access
        self.aliased = [nm for nm, a in zip(names, ls.aliased) if a]
        self.rank = ls.rank
        self.df_resid = ls.df_resid
        self.df_model = ls.rank - (1 if ls.has_intercept else 0)
        self.nobs = int(ls.resid.shape[0])
        self.n_dropped = int(n_dropped)
        self.has_intercept = ls.has_intercept
        self.model_frame = model_frame
        self.timings = dict(timings or {})
        # robust covariance (ols(vcov=, cluster=)): bse, t, p, vcov, F and intervals use it
        self.robust = robust
        self.cov_type = "nonrobust" if robust is None else robust.kind
        self.df_inference = ls.df_resid if robust is None else robust.df
        self._data_column_index = data_columns  # the data's column Index: as text on first use
        if robust is not None:
            self._use_robust(robust, self._names)

    def _use_robust(self, robust, idx: pd.Index) -> None:
        from engine.robust import wald_f

        ls = self._ls
        kept = ls.pivot[:ls.rank]
        p = len(self.column_names)
        V = np.full((p, p), np.nan)
        V[np.ix_(kept, kept)] = robust.vcov
        se = np.full(p, np.nan)
        diag = np.diag(robust.vcov)
        if (diag < 0).any():  # multiway inclusion-exclusion need not be positive semi-definite
            bad = [self.column_names[j] for j, d in zip(kept, diag) if d < 0]
            warn_user(f"the {robust.kind} multiway cluster-robust covariance has negative "
                      f"variances for {', '.join(bad)}: their standard errors are NaN",
                      DataWarning)
        with np.errstate(divide="ignore", invalid="ignore"):
            se[kept] = np.sqrt(diag)
            t = ls.coef / se
        pv = np.full(p, np.nan)
        pv[kept] = 2.0 * special.stdtr(robust.df, -np.abs(t[kept]))
        self.bse = pd.Series(se, index=idx, name="Std. Error")
        self.tvalues = pd.Series(t, index=idx, name="t value")
        self.pvalues = pd.Series(pv, index=idx, name="Pr(>|t|)")
        self.vcov = pd.DataFrame(V, index=idx, columns=idx)
        test = ~ls.aliased
        if ls.has_intercept:
            test &= np.asarray([nm != "(Intercept)" for nm in self.column_names])
        fval, q = wald_f(ls.coef, V, test)
        if robust.clusters is not None and q > robust.df:
            fval = float("nan")  # the clustered meat has rank < q: no Wald F (Stata reports none)
        self.fvalue = fval  # robust Wald F on (q, df_inference) degrees of freedom
        self.f_pvalue = float(special.fdtrc(q, robust.df, fval)) if q else float("nan")

    # summary.lm's statistics, read from the fit on first access (the fit computes them then);
    # ols(vcov=, cluster=) replaces fvalue and f_pvalue by the robust Wald test's
    sigma = _fit_view("sigma")
    rsquared = _fit_view("r_squared")
    rsquared_adj = _fit_view("adj_r_squared")
    fvalue = _fit_view("fvalue")
    f_pvalue = _fit_view("f_pvalue")
    ssr = _fit_view("rss")
    ess = _fit_view("mss")

    @functools.cached_property
    def _data_columns(self) -> tuple[str, ...]:
        """The fit's data columns as text (prediction expands ``.`` over them); an Arrow-backed
        Index iterates slowly, so only a prediction pays for it."""
        return tuple(str(c) for c in self._data_column_index)

    # pandas views of the fit, built on first access (building them is most of a small fit's time)
    @functools.cached_property
    def _names(self) -> pd.Index:
        return pd.Index(self.column_names)

    params = _series_view("coef", "Estimate")
    bse = _series_view("std_error", "Std. Error")
    tvalues = _series_view("t_value", "t value")
    pvalues = _series_view("p_value", "Pr(>|t|)")
    resid = _series_view("resid", "resid", by_row=True)
    fitted = _series_view("fitted", "fitted", by_row=True)

    @functools.cached_property
    def vcov(self) -> pd.DataFrame:
        return pd.DataFrame(self._ls.vcov, index=self._names, columns=self._names)

    # R-style aliases
    @property
    def coefficients(self) -> pd.Series:
        return self.params

    @property
    def residuals(self) -> pd.Series:
        return self.resid

    @property
    def fittedvalues(self) -> pd.Series:
        return self.fitted

    @checked_arguments
    def conf_int(self, level: float = 0.95) -> pd.DataFrame:
        """Confidence intervals for the coefficients, as R's ``confint(fit, level = level)``."""
        from scipy import stats

        from engine.rcompat.numbers import format_percent

        if not 0.0 < level < 1.0:
            raise ModelSpecError(f"level must lie strictly between 0 and 1, got {level!r}")
        a = (1.0 - level) / 2.0
        q = stats.t.ppf(1.0 - a, self.df_inference) if self.df_inference > 0 else np.nan
        lo = self.params - q * self.bse
        hi = self.params + q * self.bse
        cols = format_percent([a, 1 - a], 3)
        return pd.DataFrame({cols[0]: lo.to_numpy(), cols[1]: hi.to_numpy()},
                            index=self.params.index)

    @checked_arguments
    def predict(self, newdata: pd.DataFrame | None = None, interval: str | None = None,
                level: float = 0.95, robust: bool = False) -> pd.DataFrame:
        """R's ``predict(fit, newdata, se.fit = TRUE, interval, level)``: a DataFrame with
        ``fit``, ``se_fit`` (and ``lwr``, ``upr`` for ``interval="confidence"`` or
        ``"prediction"``); see :mod:`engine.ols_predict` (``robust``: use ``vcov=``'s covariance,
        which R's predict.lm ignores)."""
        from engine.ols_predict import predict_ols

        return predict_ols(self, newdata, interval=interval, level=level, robust=robust)

    def summary(self) -> OLSSummary:
        """R's ``summary(fit)``; ``print(fit.summary())`` prints what R prints."""
        from engine.rcompat.print_lm import summary_lm_text

        ls = self._ls
        keep = ~ls.aliased
        table = np.column_stack([ls.coef, self.bse, self.tvalues, self.pvalues])
        coefficients = pd.DataFrame(
            table[keep], index=[n for n, k in zip(self.column_names, keep) if k],
            columns=["Estimate", "Std. Error", "t value", "Pr(>|t|)"])
        fitted = ls.fitted
        if np.isfinite(ls.sigma) and ls.sigma ** 2 < (fitted.mean() ** 2 + (
                fitted.var(ddof=1) if fitted.size > 1 else 0.0)) * 1e-30:
            warn_user("essentially perfect fit: summary may be unreliable", DataWarning)
        fstat = None
        if np.isfinite(ls.f_numdf):
            fstat = (self.fvalue, ls.f_numdf, float(self.df_inference))
        text = summary_lm_text(
            call_lines_=self.call_lines, residuals=ls.resid,
            residual_names=_r_row_names(self.resid.index), rank=ls.rank,
            df_resid=ls.df_resid, n_coef=len(self.column_names), coef_names=self.column_names,
            coef_table=table, aliased=ls.aliased, sigma=ls.sigma, n_deleted=self.n_dropped,
            r_squared=ls.r_squared, adj_r_squared=ls.adj_r_squared, fstatistic=fstat,
            f_pvalue=self.f_pvalue,
            vcov_note=None if self.robust is None else self.robust.description())
        return OLSSummary(self, coefficients, text)

    def __repr__(self) -> str:
        from engine.rcompat.print_lm import print_lm_text

        return print_lm_text(self.call_lines, self.params.to_numpy(), self.column_names)[:-1]

    def __str__(self) -> str:
        return repr(self)


@functools.lru_cache(maxsize=256)
def _call_lines(formula: str, data_name: str) -> tuple[str, ...]:
    """``_call_text`` once per (formula, data_name): deparsing it is a good part of a small fit."""
    return tuple(_call_text(formula, _data_node(data_name)))


def _call_text(formula: str, data) -> list[str]:
    """R's printed call ``lm(formula = ..., data = ...)``, deparsed from the formula layer's own
    parse of the formula."""
    from engine.rcompat.language import call_lines, formula_node

    parsed = parse_formula(formula)
    return call_lines("lm", [("formula", formula_node(parsed._lhs, parsed._rhs)),
                             ("data", data)])


@functools.lru_cache(maxsize=256)
def _data_node(data_name: str):
    """``data_name`` as the R expression the printed call shows (parsed once per name)."""
    from engine.rcompat.language import parse

    try:
        return parse(data_name, what="data_name")
    except FormulaError as error:
        raise EngineInputError(
            f"data_name must be an R expression such as 'data2', got {data_name!r}: {error}"
        ) from None


@checked_arguments
def ols(formula: str, data, *, data_name: str = "data",
        tol: float = QR_TOLERANCE, vcov: str | None = None,
        cluster: str | list[str] | None = None) -> OLSResults:
    """Fit a linear model by least squares, as R's ``lm(formula, data)``.

    formula: an R formula (``"y ~ a + b"``, factors, ``a:b``, ``a*b``, ``I(x^2)``, ``- 1``).
    data: a pandas DataFrame (never modified), or a Dask DataFrame or a Parquet path (the fit
    from partitions, :mod:`engine.partitioned`, needs the extra ``engine[dask]``); rows with a missing value in any used column are
    dropped (counted in ``n_dropped``). ``data_name`` is the name shown in the printed call
    (R shows the data argument's expression, e.g. ``data = data2``).
    Aliased (linearly dependent) columns, judged as R's ``lm`` does with tolerance ``tol``
    (LINPACK dqrdc2's limited pivoting), get NaN coefficients and the fit goes on.

    vcov: None (R's ``summary.lm``), ``"HC0"``-``"HC3"`` or ``"CR0"``-``"CR2"``; cluster: a
    column name or a list of them (two-way and more as sandwich's ``vcovCL``), which may lie
    outside the formula; ``cluster=`` alone means CR1 (Stata's G/(G-1) (n-1)/(n-k)). Then
    ``bse``, ``tvalues``, ``pvalues``, ``vcov``, ``fvalue`` (a Wald F), ``conf_int()`` and
    ``summary()`` use the robust covariance, with t on ``df_inference`` degrees of freedom
    (n - k for HC, G - 1 for CR). See :mod:`engine.robust`.
    """
    if is_partitioned(data):  # a Dask DataFrame or a Parquet path: fit from partitions
        from engine.partitioned import ols_partitioned

        return ols_partitioned(formula, data, data_name=data_name, tol=tol, vcov=vcov,
                               cluster=cluster)
    if not isinstance(data_name, str):
        raise ModelSpecError(f"data_name must be a string, got {type(data_name).__name__}")
    _data_node(data_name)  # a bad data_name is an error before any work
    kind, cluster_names = check_vcov_arguments(vcov, cluster)
    if cluster_names:
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
        check_cluster_columns(data, cluster_names)
    t0 = time.perf_counter()
    mf, triangle, seconds_tsqr = _numeric_frame(formula, data) if kind is None else (None, None, 0.0)
    if mf is None:
        mf = model_frame(formula, data, allow_random=False)
    t1 = time.perf_counter()
    n, p = mf.y.shape[0], len(mf.column_names)  # mf.X: on the in-place route, built only on demand
    if n == 0:
        raise DataError(f"no rows left after removing rows with missing values ({formula})")
    if p == 0:
        raise ModelSpecError(f"the model {formula!r} has no coefficients (no intercept, no terms)")
    if n < p:
        raise ModelSpecError(
            f"fewer rows ({n}) than model coefficients ({p}) in {formula!r} after removing "
            f"{mf.n_dropped} rows with missing values")
    clusters = None
    if cluster_names:
        from engine.robust import cluster_codes

        clusters = cluster_codes(data, cluster_names, mf.rows)
    try:
        if triangle is not None:  # the in-place route: X is never written
            design = mf.design
            ls = least_squares_columns(design.source, design.cols, design.intercept, mf.y, triangle,
                                       has_intercept=mf.has_intercept, tol=tol)
        else:
            ls = least_squares(mf.X, mf.y, has_intercept=mf.has_intercept, tol=tol)
    except DataError:
        raise DataError(_non_finite_message(mf)) from None
    index = data.index[mf.rows] if mf.n_dropped else data.index
    # where the design was written by the factorisation's pass, that pass counts as QR
    timings = {"model_frame": t1 - t0 - seconds_tsqr, "qr": ls.seconds_qr + seconds_tsqr,
               "residuals": ls.seconds_resid}
    robust = None
    if kind is not None:
        from engine.robust import robust_covariance

        t2 = time.perf_counter()
        k = ls.rank
        kept = ls.pivot[:k]
        Xk = mf.X if k == p and np.array_equal(kept, np.arange(p)) else mf.X[:, kept]
        robust = robust_covariance(kind, Xk, ls.resid, ls.qr.r[:k, :k], clusters, row_index=index)
        timings["robust_vcov"] = time.perf_counter() - t2
    return OLSResults(ls, mf.column_names, index, formula=mf.formula,
                      call=list(_call_lines(mf.formula, data_name)), n_dropped=mf.n_dropped,
                      model_frame=mf, timings=timings, robust=robust,
                      data_columns=data.columns)


def _numeric_frame(formula: str, data) -> tuple:
    """(ModelFrame, TSQR triangle of [X | y], its seconds) for a large design of plain float64 columns
    (``engine.formula.numeric_design``): one pass reads the columns in place and factors them; X is
    not written (the frame gathers it on first access; the residual pass reads the columns too).
    Triangle None: a column to scale (``least_squares`` then factors the frame's X as usual).
    (None, None, 0.0) where that does not apply or the pass met a NaN or Inf (``model_frame`` then
    drops or reports the rows)."""
    design = numeric_design(formula, data)
    if design is None:
        return None, None, 0.0
    n = design.source.shape[1]
    p = len(design.column_names)
    if n < p:
        return None, None, 0.0  # model_frame's route reports it
    y = np.array(design.response, dtype=np.float64, copy=True)
    t0 = time.perf_counter()
    finite, triangle = tsqr_columns(design.source, design.cols, design.intercept, y)
    seconds = time.perf_counter() - t0
    if not finite:
        return None, None, 0.0
    if triangle is None:  # a column to scale: least_squares factors the frame's X as usual
        seconds = 0.0
    return numeric_frame(design, y, data), triangle, seconds


def _non_finite_message(mf) -> str:
    bad_y = ~np.isfinite(mf.y)
    if bad_y.any():
        return (f"the response {mf.response_name!r} has non-finite values (Inf or NaN) in "
                f"{int(bad_y.sum())} rows")
    bad = ~np.isfinite(mf.X).all(axis=0)
    cols = [c for c, b in zip(mf.column_names, bad) if b]
    if not cols:  # every value finite: the factorisation's sums overflowed
        return ("the least-squares factorisation overflowed: the model's values are too large in magnitude "
                "(rescale the response or the columns)")
    return f"non-finite values (Inf or NaN) in model column(s) {', '.join(cols)}"


from engine._callable_module import make_module_callable  # noqa: E402

make_module_callable(__name__, "ols")
