"""Numba kernels of ``engine.lmer``: the blocked Cholesky factor's off-diagonal part.

The random effects are split as in MixedModels.jl (Bates et al., MixedModels.jl documentation,
"blocked Cholesky"): the first term (most levels) gives a block-diagonal leading block of
``n1`` blocks of ``q1 x q1``; every later term goes into one dense trailing block of size ``Q2``.
``Z1'Z2`` is stored as one small ``q1 x qk`` block per (level j of term 1, level l of term k)
pair that occurs in the data (``CrossBlocks``), grouped by j. Per evaluation of the criterion
the kernels below cost O(sum over j of (pairs of j * q)^2), independent of the number of rows.

Nested groupings (one later term, each level j of term 1 in a single level l of it: classes in
schools) keep the trailing block block diagonal: Z2'Z2 has one q2 x q2 block per level and W_j'W_j
falls in the block of j's level, so the Schur complement is held as (n2, q2, q2) and factored per
level (``leading_and_nested_schur``, ``nested_factor``; ``Layout.nested``), O(n2 q2^3) where the
dense block costs O(Q2^3). The nested kernels repeat the dense ones' arithmetic on the nonzero
entries, in the same order, so both give the same numbers (bit for bit where the dense block is
factored by ``_chol_inplace``, up to 48 effects; to rounding against LAPACK's factor beyond).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba.core import types
from numba.extending import overload, register_jitable

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._linalg import cholesky_into, solve_lower, solve_upper_t
from engine._linalg import solve_upper_t as back_solve_t  # noqa: F401  (engine.lmer's name: L'^{-1} b)


_NO_INDEX = np.zeros(0, dtype=np.int64)


class CrossBlocks(NamedTuple):
    """Z1'Z_rest in blocks: pairs ``jptr[j]:jptr[j+1]`` belong to level j of term 1.

    col0 (P,) int64: first column of the pair's level in the trailing block;
    q (P,) int64: its term's number of columns qk; term (P,) int64: index of that term's
    relative covariance factor in ``Tk``; off (P,) int64: offset of the pair's row-major
    ``q1 x qk`` block in vals (sum q1*qk,) float64. Pairs of one j are sorted by col0.

    Where every block is 1 x 1 (random intercepts), the same pairs by trailing column
    (``column_index``): cptr (Q2 + 1,) int64, cpair (P,) int64 the pairs of column c at
    ``cpair[cptr[c]:cptr[c+1]]``, pair_j (P,) int64 each pair's level j; empty otherwise.
    """

    jptr: np.ndarray
    col0: np.ndarray
    q: np.ndarray
    term: np.ndarray
    off: np.ndarray
    vals: np.ndarray
    cptr: np.ndarray = _NO_INDEX
    cpair: np.ndarray = _NO_INDEX
    pair_j: np.ndarray = _NO_INDEX


@numba.njit(cache=True)
def scaled_cross(cb, T1, Tk, L1):
    """W_p = L1_j^{-1} T1' B_p T_k for every pair p (same layout as cb.vals).

    T1 (q1, q1) lower triangular; Tk (K, qmax, qmax) the later terms' factors; L1 (n1, q1, q1)
    the Cholesky factors of the leading blocks T1' A_j T1 + I.
    """
    q1 = T1.shape[0]
    W = np.empty_like(cb.vals)
    n1 = cb.jptr.shape[0] - 1
    scalar = q1 == 1
    for p in range(cb.q.shape[0]):
        if cb.q[p] != 1:
            scalar = False
    if scalar:  # every block 1 x 1: the loops below for q1 = qk = 1, the same arithmetic in order
        t1 = T1[0, 0]
        for j in range(n1):
            lj = L1[j, 0, 0]
            for p in range(cb.jptr[j], cb.jptr[j + 1]):
                o = cb.off[p]
                W[o] = (0.0 + (0.0 + t1 * cb.vals[o]) * Tk[cb.term[p], 0, 0]) / lj
        return W
    tmp = np.empty((q1, 8))
    for j in range(n1):
        for p in range(cb.jptr[j], cb.jptr[j + 1]):
            qk = cb.q[p]
            o = cb.off[p]
            t = cb.term[p]
            if tmp.shape[1] < qk:
                tmp = np.empty((q1, qk))
            # tmp = T1' B T_k
            for a in range(q1):
                for c in range(qk):
                    s = 0.0
                    for d in range(qk):
                        u = 0.0
                        for b in range(a, q1):  # T1 lower: T1[b, a] = 0 for b < a
                            u += T1[b, a] * cb.vals[o + b * qk + d]
                        s += u * Tk[t, d, c]
                    tmp[a, c] = s
            # forward solve with L1_j (lower)
            for a in range(q1):
                for c in range(qk):
                    s = tmp[a, c]
                    for b in range(a):
                        s -= L1[j, a, b] * W[o + b * qk + c]
                    W[o + a * qk + c] = s / L1[j, a, a]
    return W


@numba.njit(cache=True)
def schur_update(cb, W, S, R1, R2):
    """S -= sum_j W_j' W_j (lower triangle only) and R2 -= sum_j W_j' R1_j (in place).

    S (Q2, Q2) the trailing block Lambda2' Z2'Z2 Lambda2 + I; R1 (n1, q1, m) the leading
    block's solved right-hand sides L1_j^{-1} T1' Z1_j'[X y]; R2 (Q2, m) Lambda2' Z2'[X y].
    """
    q1 = R1.shape[1]
    m = R1.shape[2]
    n1 = cb.jptr.shape[0] - 1
    scalar = q1 == 1
    for p in range(cb.q.shape[0]):
        if cb.q[p] != 1:
            scalar = False
    if scalar:  # every block 1 x 1 (random intercepts): W is a vector, a tight loop
        for j in range(n1):
            lo = cb.jptr[j]
            hi = cb.jptr[j + 1]
            for pa in range(lo, hi):
                wa = W[cb.off[pa]]
                ca = cb.col0[pa]
                for k in range(m):
                    R2[ca, k] -= wa * R1[j, 0, k]
                for pb in range(lo, pa + 1):
                    S[ca, cb.col0[pb]] -= wa * W[cb.off[pb]]
        return
    for j in range(n1):
        lo = cb.jptr[j]
        hi = cb.jptr[j + 1]
        for pa in range(lo, hi):
            qa = cb.q[pa]
            oa = cb.off[pa]
            ca = cb.col0[pa]
            for r in range(qa):
                for k in range(m):
                    s = 0.0
                    for t in range(q1):
                        s += W[oa + t * qa + r] * R1[j, t, k]
                    R2[ca + r, k] -= s
            for pb in range(lo, pa + 1):  # lower triangle (pairs of j are sorted by column)
                qb = cb.q[pb]
                ob = cb.off[pb]
                cbb = cb.col0[pb]
                for r in range(qa):
                    for c in range(qb):
                        s = 0.0
                        for t in range(q1):
                            s += W[oa + t * qa + r] * W[ob + t * qb + c]
                        S[ca + r, cbb + c] -= s


@numba.njit(cache=True)
def level_cross_sums(codes, left, right, nlev):
    """(nlev, a, b): the sums over rows i of left[i, r] right[i, c] by level codes[i] (codes (n,)
    int, left (n, a), right (n, b)): a term's Z_j'Z_j and Z_j'[X y]. One pass over the rows, each
    sum in row order, as ``np.bincount(codes, weights=left[:, r] * right[:, c])`` adds (the same
    sums, without a + a b weight arrays and passes for a small model's many tiny blocks)."""
    n, a = left.shape
    b = right.shape[1]
    out = np.zeros((nlev, a, b))
    for i in range(n):
        lv = codes[i]
        for r in range(a):
            u = left[i, r]
            for c in range(b):
                out[lv, r, c] += u * right[i, c]
    return out


@numba.njit(cache=True)
def trailing_moments(cols, vals, Xa, Q2):
    """Z2'Z2 (Q2, Q2) dense and Z2'[X y] (Q2, m) from Z2 by rows: row i holds vals[i, e] in column
    cols[i, e] (n, w) int64 / float64, one entry per column of each later term (a term's columns
    of one row are distinct). Every sum runs over the rows in order (as scipy.sparse's products
    of the same matrix did, so the sums are the same)."""
    n, w = cols.shape
    m = Xa.shape[1]
    A22 = np.zeros((Q2, Q2))
    ZXa2 = np.zeros((Q2, m))
    for i in range(n):
        for a in range(w):
            ca = cols[i, a]
            va = vals[i, a]
            for b in range(w):
                A22[ca, cols[i, b]] += va * vals[i, b]
            for k in range(m):
                ZXa2[ca, k] += va * Xa[i, k]
    return A22, ZXa2


@numba.njit(cache=True)
def cross_times(cb, W, u2, n1, q1):
    """(n1, q1) array whose row j is sum over pairs p of j of W_p u2[col0_p : col0_p + q_p]."""
    out = np.zeros((n1, q1))
    for j in range(n1):
        for p in range(cb.jptr[j], cb.jptr[j + 1]):
            qk = cb.q[p]
            o = cb.off[p]
            c0 = cb.col0[p]
            for a in range(q1):
                s = 0.0
                for c in range(qk):
                    s += W[o + a * qk + c] * u2[c0 + c]
                out[j, a] += s
    return out


@numba.njit(cache=True)
def cross_quadratic(cb, W, Sinv, n1, q1):
    """(n1, q1, q1): W_j Sinv W_j' for every level j of term 1 (conditional variances)."""
    out = np.zeros((n1, q1, q1))
    for j in range(n1):
        lo = cb.jptr[j]
        hi = cb.jptr[j + 1]
        for pa in range(lo, hi):
            qa = cb.q[pa]
            oa = cb.off[pa]
            ca = cb.col0[pa]
            for pb in range(lo, hi):
                qb = cb.q[pb]
                ob = cb.off[pb]
                cbb = cb.col0[pb]
                for r in range(qa):
                    for c in range(qb):
                        sv = Sinv[ca + r, cbb + c]
                        for a in range(q1):
                            wa = W[oa + a * qa + r] * sv
                            for b in range(q1):
                                out[j, a, b] += wa * W[ob + b * qb + c]
    return out


@numba.njit(cache=True)
def nested_cross_quadratic(cb, W, Sinv, n1, q1):
    """``cross_quadratic`` for a nested trailing block: W_j Sinv_l W_j' for every level j of
    term 1 and its one pair's level l, Sinv (n2, q2, q2) the blocks of S^{-1}."""
    q2 = Sinv.shape[1]
    out = np.zeros((n1, q1, q1))
    for j in range(n1):
        p = cb.jptr[j]
        o = cb.off[p]
        lv = cb.col0[p] // q2
        for r in range(q2):
            for c in range(q2):
                sv = Sinv[lv, r, c]
                for a in range(q1):
                    wa = W[o + a * q2 + r] * sv
                    for b in range(q1):
                        out[j, a, b] += wa * W[o + b * q2 + c]
    return out


@numba.njit(cache=True)
def nested_trailing_moments(codes, Z, Xa, n2):
    """Z2'Z2 as its diagonal blocks A (n2, q2, q2) and Z2'[X y] (n2 q2, m) for one trailing term
    (codes (n,) int64 its levels, Z (n, q2) its columns): ``trailing_moments``' sums in the same
    row order, without the dense Q2 x Q2 matrix (zero outside these blocks when nested)."""
    n, q2 = Z.shape
    m = Xa.shape[1]
    A = np.zeros((n2, q2, q2))
    ZXa2 = np.zeros((n2 * q2, m))
    for i in range(n):
        lv = codes[i]
        c0 = lv * q2
        for a in range(q2):
            va = Z[i, a]
            for b in range(q2):
                A[lv, a, b] += va * Z[i, b]
            for k in range(m):
                ZXa2[c0 + a, k] += va * Xa[i, k]
    return A, ZXa2


@numba.njit(cache=True)
def cross_pairs(codes1, Z1, n1, rcodes, Zr, rq, roff, rnl):
    """Z1'Z_rest in ``CrossBlocks``' layout from the rows: one q1 x qk block per (level j of term
    1, level l of later term t) pair present, grouped by j, within j by term, then by l (so by
    col0). codes1 (n,) int64 and Z1 (n, q1) term 1; rcodes (R, n) int64 the R later terms' codes,
    Zr (n, sum qk) their columns side by side, rq / roff / rnl (R,) their q, first trailing column
    and number of levels. Returns (jptr (n1+1,), col0, q, term, off (P,) int64, vals (sum q1 qk,)).
    Each block is the sum over its rows, in row order, of Z1[i, r] Zk[i, c], as
    ``level_cross_sums`` over the pair codes (np.unique of j nl + l) adds it: the same numbers,
    without the sort of the n keys (rows are bucketed by j, O(n + P log) for the pairs of each j)."""
    n, q1 = Z1.shape
    R = rcodes.shape[0]
    zc = np.zeros(R, np.int64)  # each later term's first column in Zr
    for t in range(1, R):
        zc[t] = zc[t - 1] + rq[t - 1]
    # rows by level j: a counting sort, stable, so each level's rows stay in row order
    start = np.zeros(n1 + 1, np.int64)
    for i in range(n):
        start[codes1[i] + 1] += 1
    widest = 0
    for j in range(n1):
        widest = max(widest, start[j + 1])
        start[j + 1] += start[j]
    rows = np.empty(n, np.int64)
    fill = start[:n1].copy()
    for i in range(n):
        j = codes1[i]
        rows[fill[j]] = i
        fill[j] += 1
    maxnl = 0
    for t in range(R):
        maxnl = max(maxnl, rnl[t])
    seen = np.full((R, maxnl), -1, np.int64)  # the last level j that met (t, l)
    npairs = 0
    for j in range(n1):
        for t in range(R):
            for k in range(start[j], start[j + 1]):
                lv = rcodes[t, rows[k]]
                if seen[t, lv] != j:
                    seen[t, lv] = j
                    npairs += 1
    jptr = np.zeros(n1 + 1, np.int64)
    col0 = np.empty(npairs, np.int64)
    qq = np.empty(npairs, np.int64)
    term = np.empty(npairs, np.int64)
    off = np.empty(npairs, np.int64)
    seen[:, :] = -1
    buf = np.empty(widest, np.int64)
    size = 0
    p = 0
    # first the layout (pairs and offsets), then the sums: vals' size is known after the layout
    for j in range(n1):
        jptr[j] = p
        for t in range(R):
            m = 0
            for k in range(start[j], start[j + 1]):
                lv = rcodes[t, rows[k]]
                if seen[t, lv] != j:
                    seen[t, lv] = j
                    buf[m] = lv
                    m += 1
            ls = np.sort(buf[:m])
            for e in range(m):
                col0[p] = roff[t] + ls[e] * rq[t]
                qq[p] = rq[t]
                term[p] = t
                off[p] = size
                size += q1 * rq[t]
                p += 1
    jptr[n1] = p
    slot = np.empty((R, maxnl), np.int64)  # the pair of (t, l) for the current j
    vals = np.zeros(size)
    for j in range(n1):
        for p in range(jptr[j], jptr[j + 1]):
            t = term[p]
            slot[t, (col0[p] - roff[t]) // rq[t]] = p
        for k in range(start[j], start[j + 1]):
            i = rows[k]
            for t in range(R):
                p = slot[t, rcodes[t, i]]
                qk = rq[t]
                o = off[p]
                z0 = zc[t]
                for r in range(q1):
                    u = Z1[i, r]
                    for c in range(qk):
                        vals[o + r * qk + c] += u * Zr[i, z0 + c]
    return jptr, col0, qq, term, off, vals


@numba.njit(cache=True)
def column_index(jptr, col0, Q2):
    """``CrossBlocks``' by-column index of the pairs, made where every block is 1 x 1: cptr
    (Q2 + 1,), cpair (P,) the pairs of column c at cpair[cptr[c]:cptr[c+1]] in pair order (a stable
    counting sort by col0: by column, then by j), pair_j (P,) each pair's level j. The index lets
    ``cross_trace`` build each row of W'DW in a dense accumulator (Gustavson's sparse product) and
    meet the same row of S^{-1}, where the by-level order needs the whole Q2 x Q2 product in memory
    first. (``schur_update`` gains nothing from it: its cost is the per-pair indirect loads; on
    InstEval 22 ms by column against 19 ms by level.)"""
    P = col0.shape[0]
    cptr = np.zeros(Q2 + 1, np.int64)
    for p in range(P):
        cptr[col0[p] + 1] += 1
    for c in range(Q2):
        cptr[c + 1] += cptr[c]
    fill = cptr[:Q2].copy()
    cpair = np.empty(P, np.int64)
    for p in range(P):
        c = col0[p]
        cpair[fill[c]] = p
        fill[c] += 1
    pair_j = np.empty(P, np.int64)
    for j in range(jptr.shape[0] - 1):
        for p in range(jptr[j], jptr[j + 1]):
            pair_j[p] = j
    return cptr, cpair, pair_j


@numba.njit(cache=True)
def rest_moments(rcodes, Zr, rq, roff, Xa, Q2):
    """Z2'Z2 (Q2, Q2) dense and Z2'[X y] (Q2, m) of the later terms (``cross_pairs``' rcodes, Zr,
    rq, roff): ``trailing_moments`` on Z2 by rows (row i: column roff_t + l q_t + c, value
    Zr[i, c] per term t and column c, terms in order), built here rather than as two (n, w)
    arrays in numpy."""
    n = Zr.shape[0]
    R = rcodes.shape[0]
    w = Zr.shape[1]
    cols = np.empty((n, w), np.int64)
    e = 0
    for t in range(R):
        qt = rq[t]
        for c in range(qt):
            for i in range(n):
                cols[i, e] = roff[t] + rcodes[t, i] * qt + c
            e += 1
    return trailing_moments(cols, np.ascontiguousarray(Zr), Xa, Q2)


@numba.njit(cache=True)
def sufficient_moments(X, y, codes1, Z1, n1, rcodes, Zr, rq, roff, rnl, nested_ok):
    """``engine.lmer._sufficient_stats``' pass over the rows, in one call: Xa = [X y] (n, m), term
    1's A1 (n1, q1, q1) and ZXa1 (n1, q1, m) (``level_cross_sums``), the Z1'Z_rest pairs
    (``cross_pairs``; rcodes (R, n), Zr (n, sum qk), rq / roff / rnl (R,) the R later terms),
    whether the trailing block is nested (``nested_ok`` and one later term whose every pair j has
    one level: ``engine.lmer._NESTED_BLOCKS``), then Z2'Z2 and Z2'[X y]: as diagonal blocks
    (``nested_trailing_moments``; A22 (0, 0)) or dense (``rest_moments``; blocks (0, 0, 0), and the
    by-column index where every block is 1 x 1, ``column_index``), Z2'Z2's nonzeros in row-major
    order (as np.nonzero lists them), and each trailing column's term (1 + t) and first column of
    its level. The kernels it calls make the same sums in the same order as when called alone."""
    n, p = X.shape
    m = p + 1
    Xa = np.empty((n, m))
    for i in range(n):
        for k in range(p):
            Xa[i, k] = X[i, k]
        Xa[i, p] = y[i]
    A1 = level_cross_sums(codes1, Z1, Z1, n1)
    ZXa1 = level_cross_sums(codes1, Z1, Xa, n1)
    R = rcodes.shape[0]
    Q2 = np.int64(0)  # not a literal 0: the calls below would first compile for Literal[int](0) too
    for t in range(R):
        Q2 += rq[t] * rnl[t]
    jptr, col0, qq, term, off, vals = cross_pairs(codes1, Z1, n1, rcodes, Zr, rq, roff, rnl)
    nested = nested_ok and R == 1
    if nested:
        for j in range(n1):
            if jptr[j + 1] - jptr[j] != 1:
                nested = False
                break
    cptr = np.zeros(0, np.int64)
    cpair = np.zeros(0, np.int64)
    pair_j = np.zeros(0, np.int64)
    if nested:
        q = rq[0]
        blocks, ZXa2 = nested_trailing_moments(rcodes[0], Zr, Xa, rnl[0])
        A22 = np.zeros((0, 0))
        nnz = 0
        for lv in range(blocks.shape[0]):
            for a in range(q):
                for b in range(q):
                    if blocks[lv, a, b] != 0.0:
                        nnz += 1
        nz_i = np.empty(nnz, np.int64)
        nz_j = np.empty(nnz, np.int64)
        nz_v = np.empty(nnz)
        e = 0
        for lv in range(blocks.shape[0]):
            for a in range(q):
                for b in range(q):
                    v = blocks[lv, a, b]
                    if v != 0.0:
                        nz_i[e] = lv * q + a
                        nz_j[e] = lv * q + b
                        nz_v[e] = v
                        e += 1
    else:
        blocks = np.zeros((0, 0, 0))
        if R:
            A22, ZXa2 = rest_moments(rcodes, Zr, rq, roff, Xa, Q2)
        else:
            A22 = np.zeros((0, 0))
            ZXa2 = np.zeros((0, m))
        scalar = Z1.shape[1] == 1 and Q2 > 0
        for e in range(qq.shape[0]):
            if qq[e] != 1:
                scalar = False
        if scalar:
            cptr, cpair, pair_j = column_index(jptr, col0, Q2)
        nnz = 0
        for r in range(Q2):
            for c in range(Q2):
                if A22[r, c] != 0.0:
                    nnz += 1
        nz_i = np.empty(nnz, np.int64)
        nz_j = np.empty(nnz, np.int64)
        nz_v = np.empty(nnz)
        e = 0
        for r in range(Q2):
            for c in range(Q2):
                v = A22[r, c]
                if v != 0.0:
                    nz_i[e] = r
                    nz_j[e] = c
                    nz_v[e] = v
                    e += 1
    col_term = np.zeros(Q2, np.int64)
    col_start = np.zeros(Q2, np.int64)
    for t in range(R):
        for lv in range(rnl[t]):
            c0 = roff[t] + lv * rq[t]
            for c in range(rq[t]):
                col_term[c0 + c] = t + 1
                col_start[c0 + c] = c0
    return (Xa, A1, ZXa1, (jptr, col0, qq, term, off, vals, cptr, cpair, pair_j), nested, A22, blocks, ZXa2,
            nz_i, nz_j, nz_v, col_term, col_start)


@numba.njit(cache=True)
def largest_magnitudes(X, y):
    """The largest finite |value| of y (n,) and of each column of X (n, p), 0 where there is none:
    (1 + p,) float64, y's first (``engine.validate.check_lmer_scales``; one pass, where numpy's
    abs, isfinite and masked max made four passes and as many temporaries)."""
    n, p = X.shape
    out = np.zeros(1 + p)
    for i in range(n):
        v = abs(y[i])
        if v > out[0] and np.isfinite(v):
            out[0] = v
        for j in range(p):
            v = abs(X[i, j])
            if v > out[1 + j] and np.isfinite(v):
                out[1 + j] = v
    return out


@numba.njit(cache=True)
def forward_solve(L, B):
    """L^{-1} B for lower-triangular L (Q, Q) and B (Q, m), by columns of B (no BLAS call:
    scipy's threaded trsm costs milliseconds of thread wake-up on small blocks)."""
    n, m = B.shape
    X = B.copy()
    for i in range(n):
        d = L[i, i]
        for k in range(m):
            s = X[i, k]
            for j in range(i):
                s -= L[i, j] * X[j, k]
            X[i, k] = s / d
    return X


class Layout(NamedTuple):
    """Where each term's factor lives: theta_start (K,), term_q (K,) for the K terms (term 0 is
    the leading block); for the trailing block's Q2 columns, col_term (Q2,) the term index
    (into the K terms), col_start (Q2,) the first column of the column's level block.

    nested: the trailing block is block diagonal, one q2 x q2 block per level of its one term
    (``engine.lmer._NESTED_BLOCKS``: every level of term 1 meets one level of term 2, as
    classes in schools), and is held and factored as (n2, q2, q2) blocks
    (``leading_and_nested_schur``, ``nested_factor``) instead of one dense Q2 x Q2 matrix."""

    theta_start: np.ndarray
    term_q: np.ndarray
    col_term: np.ndarray
    col_start: np.ndarray
    nested: bool = False


class Moments(NamedTuple):
    """Sufficient statistics: A1 (n1, q1, q1) = Z1_j'Z1_j, ZXa1 (n1, q1, m) = Z1_j'[X y],
    Z2'Z2 as its nonzeros (A22_i, A22_j, A22_v: (nnz,) each; it is sparse: the later terms'
    own blocks plus their crossings), ZXa2 (Q2, m) = Z2'[X y], XaXa (m, m) = [X y]'[X y]
    (m = p + 1)."""

    A1: np.ndarray
    ZXa1: np.ndarray
    A22_i: np.ndarray
    A22_j: np.ndarray
    A22_v: np.ndarray
    ZXa2: np.ndarray
    XaXa: np.ndarray


@numba.njit(cache=True)
def _chol_inplace(A):
    """Lower Cholesky of a small SPD matrix in place (upper triangle zeroed); False if a pivot is
    not positive."""
    return cholesky_into(A, A, A.shape[0], 0.0, False, 0.0)


@numba.njit(cache=True)
def term_factors(theta, lay):
    """(K, qmax, qmax) lower-triangular T_k from theta (lme4's column-major lower triangles)."""
    K = lay.term_q.shape[0]
    qmax = 1
    for k in range(K):
        qmax = max(qmax, lay.term_q[k])
    T = np.zeros((K, qmax, qmax))
    for k in range(K):
        q = lay.term_q[k]
        i = lay.theta_start[k]
        for c in range(q):
            for r in range(c, q):
                T[k, r, c] = theta[i]
                i += 1
    return T


@numba.njit(cache=True)
def _leading_blocks(T, A1, ZXa1, XaXa):
    """The leading blocks at theta (its factors T (K, qmax, qmax), ``term_factors``): L1 (n1, q1, q1) =
    chol(T1' A_j T1 + I), R1 (n1, q1, m) = L1_j^{-1} T1' Z1_j'[X y], gram (m, m, upper triangle)
    = [X y]'[X y] - R1'R1, ld = log|L1|^2. Returns (ok, ld, gram, L1, R1, T); ok False where a
    leading block is not positive definite (L1, R1 then incomplete). (Arrays, not the
    NamedTuples: each call level copies those.)"""
    n1, q1, m = ZXa1.shape
    T1 = np.ascontiguousarray(T[0, :q1, :q1])
    L1 = np.empty((n1, q1, q1))
    R1 = np.empty((n1, q1, m))
    gram = XaXa.copy()
    ld = 0.0
    if q1 == 1:
        # a scalar leading term (random intercepts): the general loops' arithmetic for q1 = 1, in
        # the same order (0.0 + x kept: it is what their sums start from), without their per-level
        # loop and Cholesky-call overhead (~60 ns a level: a third of Penicillin's evaluation)
        t = T1[0, 0]
        for j in range(n1):
            mj = (0.0 + t * A1[j, 0, 0] * t) + 1.0
            if not mj > 0.0:  # _chol_inplace's pivot test
                return False, ld, gram, L1, R1
            lj = np.sqrt(mj)
            ld += 2.0 * np.log(lj)
            L1[j, 0, 0] = lj
            for k in range(m):
                R1[j, 0, k] = (0.0 + t * ZXa1[j, 0, k]) / lj
            for k in range(m):
                rk = R1[j, 0, k]
                for l in range(k, m):
                    gram[k, l] -= 0.0 + rk * R1[j, 0, l]
        return True, ld, gram, L1, R1
    M = np.empty((q1, q1))
    for j in range(n1):
        # M = T1' A_j T1 + I
        for a in range(q1):
            for b in range(q1):
                s = 0.0
                for c in range(a, q1):
                    for d in range(b, q1):
                        s += T1[c, a] * A1[j, c, d] * T1[d, b]
                M[a, b] = s + (1.0 if a == b else 0.0)
        if not _chol_inplace(M):
            return False, ld, gram, L1, R1
        for a in range(q1):
            ld += 2.0 * np.log(M[a, a])
            for b in range(q1):
                L1[j, a, b] = M[a, b]
        # R1_j = L^{-1} T1' ZXa_j
        for k in range(m):
            for a in range(q1):
                s = 0.0
                for c in range(a, q1):
                    s += T1[c, a] * ZXa1[j, c, k]
                for b in range(a):
                    s -= M[a, b] * R1[j, b, k]
                R1[j, a, k] = s / M[a, a]
        for k in range(m):
            for l in range(k, m):
                s = 0.0
                for a in range(q1):
                    s += R1[j, a, k] * R1[j, a, l]
                gram[k, l] -= s
    return True, ld, gram, L1, R1


@numba.njit(cache=True)
def _trailing_rhs(ZXa2, col_term, col_start, term_q, T):
    """R2 (Q2, m) = Lambda2' Z2'[X y] (Lambda2 block diagonal: Lambda2[c0 + a, c0 + r] =
    T[a, r] for a >= r within a level's block; ``Layout``'s columns)."""
    Q2, m = ZXa2.shape
    R2 = np.empty((Q2, m))
    for c in range(Q2):
        t = col_term[c]
        c0 = col_start[c]
        r = c - c0
        q = term_q[t]
        for k in range(m):
            s = 0.0
            for a in range(r, q):
                s += T[t, a, r] * ZXa2[c0 + a, k]
            R2[c, k] = s
    return R2


@numba.njit(cache=True)
def leading_and_schur(theta, mo, cb, lay):
    """The blocked factor at theta up to the trailing block's Cholesky (shared by the criterion
    and its gradient): the leading blocks L1 (n1, q1, q1) = chol(T1' A_j T1 + I) and
    R1 (n1, q1, m) = L1_j^{-1} T1' Z1_j'[X y]; W (flat, CrossBlocks layout) = L1^{-1} T1' B T_k;
    the trailing Schur block S (Q2, Q2, lower triangle) = Lambda2' Z2'Z2 Lambda2 + I - W'W and
    R2 (Q2, m) = Lambda2' Z2'[X y] - W'R1; gram (m, m, upper triangle) = [X y]'[X y] - R1'R1;
    ld = log|L1|^2. Returns (ok, ld, gram, L1, R1, W, S, R2, T); ok False where a leading block
    is not positive definite. (``leading_and_nested_schur``: the same with S in blocks.)"""
    Q2, m = mo.ZXa2.shape
    W = np.zeros(0)
    S = np.zeros((Q2, Q2))
    T = term_factors(theta, lay)
    ok, ld, gram, L1, R1 = _leading_blocks(T, mo.A1, mo.ZXa1, mo.XaXa)
    if not ok:
        return False, ld, gram, L1, R1, W, S, np.empty((Q2, m)), T
    R2 = _trailing_rhs(mo.ZXa2, lay.col_term, lay.col_start, lay.term_q, T)
    if Q2 > 0:
        # S = Lambda2' Z2'Z2 Lambda2 + I from the nonzeros of Z2'Z2
        for c in range(Q2):
            S[c, c] = 1.0
        for e in range(mo.A22_v.shape[0]):
            i = mo.A22_i[e]
            jc = mo.A22_j[e]
            v = mo.A22_v[e]
            ti = lay.col_term[i]
            ci = lay.col_start[i]
            ai = i - ci
            tj = lay.col_term[jc]
            cj = lay.col_start[jc]
            aj = jc - cj
            for r in range(ai + 1):
                w = T[ti, ai, r] * v
                for rr in range(aj + 1):
                    S[ci + r, cj + rr] += w * T[tj, aj, rr]
        q1 = L1.shape[1]
        Tk = np.ascontiguousarray(T[1:])
        W = scaled_cross(cb, np.ascontiguousarray(T[0, :q1, :q1]), Tk, L1)
        schur_update(cb, W, S, R1, R2)
    return True, ld, gram, L1, R1, W, S, R2, T


@numba.njit(cache=True)
def leading_and_nested_schur(theta, mo, cb, lay):
    """``leading_and_schur`` for a nested trailing block (``Layout.nested``: one trailing term,
    each level j of term 1 paired with one level l of term 2, as classes in schools): Z2'Z2 and
    every W_j'W_j fall in the q2 x q2 diagonal block of one level, so the Schur block is
    S (n2, q2, q2) = per level l, T2' A22_l T2 + I - sum over j in l of W_j'W_j (the full
    blocks, the lower triangle read). The same operations in the same order as the dense S's
    entries in that block (the dense S is zero elsewhere), so the numbers are those of the dense
    block. Returns (ok, ld, gram, L1, R1, W, S, R2, T); W the same flat layout (one pair per j)."""
    Q2, m = mo.ZXa2.shape
    q2 = lay.term_q[1]
    n2 = Q2 // q2
    W = np.zeros(0)
    S = np.zeros((n2, q2, q2))
    T = term_factors(theta, lay)
    ok, ld, gram, L1, R1 = _leading_blocks(T, mo.A1, mo.ZXa1, mo.XaXa)
    if not ok:
        return False, ld, gram, L1, R1, W, S, np.empty((Q2, m)), T
    R2 = _trailing_rhs(mo.ZXa2, lay.col_term, lay.col_start, lay.term_q, T)
    for lv in range(n2):
        for a in range(q2):
            S[lv, a, a] = 1.0
    for e in range(mo.A22_v.shape[0]):
        i = mo.A22_i[e]
        jc = mo.A22_j[e]
        v = mo.A22_v[e]
        ci = lay.col_start[i]
        ai = i - ci
        aj = jc - lay.col_start[jc]  # the same level's block: col_start[jc] == ci
        lv = ci // q2
        for r in range(ai + 1):
            w = T[1, ai, r] * v
            for rr in range(aj + 1):
                S[lv, r, rr] += w * T[1, aj, rr]
    q1 = L1.shape[1]
    Tk = np.ascontiguousarray(T[1:])
    W = scaled_cross(cb, np.ascontiguousarray(T[0, :q1, :q1]), Tk, L1)
    nested_schur_update(cb, W, S, R1, R2)
    return True, ld, gram, L1, R1, W, S, R2, T


@numba.njit(cache=True)
def nested_schur_update(cb, W, S, R1, R2):
    """``schur_update`` for a nested trailing block S (n2, q2, q2): every level j of term 1 has
    one pair, so S_l -= W_j'W_j (the full q2 x q2 block) for the level l of j, R2 -= W'R1; the
    arithmetic of ``schur_update``'s pair (pa, pa)."""
    q2 = S.shape[1]
    q1 = R1.shape[1]
    m = R1.shape[2]
    n1 = cb.jptr.shape[0] - 1
    for j in range(n1):
        p = cb.jptr[j]
        o = cb.off[p]
        ca = cb.col0[p]
        lv = ca // q2
        for r in range(q2):
            for k in range(m):
                s = 0.0
                for t in range(q1):
                    s += W[o + t * q2 + r] * R1[j, t, k]
                R2[ca + r, k] -= s
        for r in range(q2):
            for c in range(q2):
                s = 0.0
                for t in range(q1):
                    s += W[o + t * q2 + r] * W[o + t * q2 + c]
                S[lv, r, c] -= s


@numba.njit(cache=True)
def nested_forward_solve(L2, B):
    """L2^{-1} B for the nested trailing factor L2 (n2, q2, q2, lower blocks) and B (Q2, m):
    ``forward_solve``'s arithmetic on the dense factor, whose other entries are zero."""
    n2, q2, _q = L2.shape
    m = B.shape[1]
    X = B.copy()
    for lv in range(n2):
        c0 = lv * q2
        for a in range(q2):
            d = L2[lv, a, a]
            for k in range(m):
                s = X[c0 + a, k]
                for b in range(a):
                    s -= L2[lv, a, b] * X[c0 + b, k]
                X[c0 + a, k] = s / d
    return X


@numba.njit(cache=True)
def nested_factor(S, R2, ld):
    """The nested trailing block's factor: S (n2, q2, q2) -> its blocks' lower Cholesky factors
    L2_l in place; ld += log|L2|^2 (added in column order, as for the dense factor); returns
    (ok, ld, L2^{-1} R2 (Q2, m)); ok False where a block is not positive definite."""
    n2, q2, _q = S.shape
    for lv in range(n2):
        if q2 == 1:  # _chol_inplace's arithmetic for 1 x 1, without a call per level
            s = S[lv, 0, 0]
            if not s > 0.0:
                return False, ld, R2
            S[lv, 0, 0] = np.sqrt(s)
            ld += 2.0 * np.log(S[lv, 0, 0])
            continue
        B = S[lv]
        if not _chol_inplace(B):
            return False, ld, R2
        for a in range(q2):
            ld += 2.0 * np.log(B[a, a])
    return True, ld, nested_forward_solve(S, R2)


@numba.njit(cache=True)
def nested_back_solve(L2, b):
    """L2^{-T} b for the nested trailing factor L2 (n2, q2, q2) and b (Q2,): the blocks' back
    substitutions (``back_solve_t`` on the dense factor, whose other entries are zero)."""
    n2, q2, _q = L2.shape
    x = np.empty(n2 * q2)
    for lv in range(n2):
        c0 = lv * q2
        for i in range(q2 - 1, -1, -1):
            s = b[c0 + i]
            for k in range(i + 1, q2):
                s -= L2[lv, k, i] * x[c0 + k]
            x[c0 + i] = s / L2[lv, i, i]
    return x


@numba.njit(cache=True)
def _gram_downdate(gram, R2s):
    """gram -= R2s'R2s (upper triangle; the sums over the trailing rows in order)."""
    m = gram.shape[0]
    Q2 = R2s.shape[0]
    for k in range(m):
        for l in range(k, m):
            s = 0.0
            for i in range(Q2):
                s += R2s[i, k] * R2s[i, l]
            gram[k, l] -= s


@numba.njit(cache=True)
def _dense_trailing_factor(S, ld):
    """The dense trailing block's lower Cholesky factor L2 (S (Q2, Q2), its lower triangle;
    ``_chol_inplace`` in place up to 48 effects, LAPACK's blocked dpotrf beyond) and
    ld + log|L2|^2. Returns (ok, ld, L2); ok False where S is not positive definite."""
    Q2 = S.shape[0]
    if Q2 <= 48:
        if not _chol_inplace(S):
            return False, ld, S
        L2 = S
    else:
        for i in range(Q2):  # LAPACK reads the lower triangle
            for jj in range(i + 1, Q2):
                S[i, jj] = S[jj, i]
        if not np.all(np.isfinite(S)):
            return False, ld, S
        # positive definite by construction (I + PSD); LAPACK's blocked dpotrf
        L2 = np.linalg.cholesky(S)
    for i in range(Q2):
        ld += 2.0 * np.log(L2[i, i])
    return True, ld, L2


@numba.njit(cache=True)
def _criterion_value(ld, gram, n, reml):
    """The profiled criterion from log|L|^2 (ld) and gram (m, m, upper triangle) = the Schur
    complement of the random effects in [X y]'[X y]: gram is factored in place (lower Cholesky,
    its last diagonal entry sqrt(pwrss)). Returns the criterion, inf where the factor fails."""
    m = gram.shape[0]
    p = m - 1
    for k in range(m):
        for l in range(k):
            gram[k, l] = gram[l, k]
    if not _chol_inplace(gram):
        return np.inf
    pwrss = gram[p, p] * gram[p, p]
    if reml:
        ldrx = 0.0
        for k in range(p):
            ldrx += 2.0 * np.log(gram[k, k])
        nmp = n - p
        return ld + ldrx + nmp * (1.0 + np.log(2.0 * np.pi * pwrss / nmp))
    return ld + n * (1.0 + np.log(2.0 * np.pi * pwrss / n))


@numba.njit(cache=True)
def profiled_criterion(theta, mo, cb, lay, n, reml):
    """lme4's profiled deviance (reml=False) or REML criterion at theta (Bates et al. 2015,
    eqs. 34 and 41), from the sufficient statistics alone; inf where a factor fails. A nested
    trailing block (``Layout.nested``) is factored per level (``nested_factor``): O(levels q^3)."""
    if lay.nested:
        ok, ld, gram, L1, R1, W, Sb, R2, T = leading_and_nested_schur(theta, mo, cb, lay)
        if not ok:
            return np.inf
        ok, ld, R2s = nested_factor(Sb, R2, ld)
        if not ok:
            return np.inf
        _gram_downdate(gram, R2s)
    else:
        ok, ld, gram, L1, R1, W, S, R2, T = leading_and_schur(theta, mo, cb, lay)
        if not ok:
            return np.inf
        if S.shape[0] > 0:
            ok, ld, L2 = _dense_trailing_factor(S, ld)
            if not ok:
                return np.inf
            _gram_downdate(gram, forward_solve(L2, R2))
    return _criterion_value(ld, gram, n, reml)


@numba.njit(cache=True)
def _fd_gradient(x, fx, lower, mo, cb, lay, n, reml):
    """Central differences (one-sided at a bound); h = 1e-6 * max(1, |x_i|)."""
    k = x.shape[0]
    g = np.zeros(k)
    xt = x.copy()
    for i in range(k):
        h = 1e-6 * max(1.0, abs(x[i]))
        if x[i] - h >= lower[i]:
            xt[i] = x[i] + h
            fp = profiled_criterion(xt, mo, cb, lay, n, reml)
            xt[i] = x[i] - h
            fm = profiled_criterion(xt, mo, cb, lay, n, reml)
            g[i] = (fp - fm) / (2.0 * h)
        else:
            xt[i] = x[i] + h
            fp = profiled_criterion(xt, mo, cb, lay, n, reml)
            g[i] = (fp - fx) / h
        xt[i] = x[i]
    return g


@numba.njit(cache=True)
def fd_gradient(x, fx, lower, mo, cb, lay, n, reml):
    """The profiled criterion's finite-difference gradient at x (criterion ``fx`` there):
    ``_fd_gradient``'s central differences, for ``minimize_bounded`` on small models."""
    return _fd_gradient(x, fx, lower, mo, cb, lay, n, reml)


@numba.njit(cache=True)
def _bfgs_direction(H, g, x, lower, cap):
    """The projected quasi-Newton direction d = -H g over the free coordinates (a coordinate on its
    bound whose gradient points outward is held), steepest descent where that is not downhill, at
    most ``cap`` long. Returns (d, g'd, |d| before the cap)."""
    k = x.shape[0]
    free = np.ones(k, dtype=np.bool_)
    for i in range(k):
        if x[i] <= lower[i] and g[i] > 0.0:
            free[i] = False
    d = np.zeros(k)
    for i in range(k):
        if free[i]:
            s = 0.0
            for j in range(k):
                if free[j]:
                    s -= H[i, j] * g[j]
            d[i] = s
    gd = 0.0
    for i in range(k):
        gd += g[i] * d[i]
    if not gd < 0.0:
        for i in range(k):
            d[i] = -g[i] if free[i] else 0.0
        gd = 0.0
        for i in range(k):
            gd += g[i] * d[i]
    dn = np.sqrt(np.sum(d * d))
    if dn > cap:
        d = d / dn
        gd = gd / dn
    return d, gd, dn


@numba.njit(cache=True)
def _projected_trial(x, d, t, lower, g):
    """The trial point max(x + t d, lower) and g'(trial - x) (Armijo's predicted decrease)."""
    k = x.shape[0]
    xn = x.copy()
    for i in range(k):
        xn[i] = max(x[i] + t * d[i], lower[i])
    dec = 0.0
    for i in range(k):
        dec += g[i] * (xn[i] - x[i])
    return xn, dec


@numba.njit(cache=True)
def _bfgs_update(H, x, xn, g, gn, rescale):
    """BFGS update of the inverse Hessian H (Nocedal & Wright 2006, eq. 6.17) for the step
    s = xn - x, y = gn - g, skipped where s'y <= 1e-14; with ``rescale`` (the first step from
    H = I), H is first set to (s'y / y'y) I (eq. 6.20). Returns (H, s)."""
    k = x.shape[0]
    s = xn - x
    y = gn - g
    sy = np.sum(s * y)
    if rescale and sy > 0.0:
        H = np.eye(k) * (sy / np.sum(y * y))
    if sy > 1e-14:
        Hy = H @ y
        yHy = np.sum(y * Hy)
        H = H + ((sy + yHy) / (sy * sy)) * np.outer(s, s) - (np.outer(Hy, s) + np.outer(s, Hy)) / sy
    return H, s


@numba.njit(cache=True)
def _bfgs_converged(x, g, lower, s, df, fx):
    """The projected gradient's largest entry below 1e-6, or a decrease below 1e-12 (1 + |f|)
    with a step below 1e-9."""
    k = x.shape[0]
    pg = 0.0
    for i in range(k):
        if not (x[i] <= lower[i] and g[i] > 0.0):
            pg = max(pg, abs(g[i]))
    return pg < 1e-6 or (df < 1e-12 * (1.0 + abs(fx)) and np.max(np.abs(s)) < 1e-9)


class Callables(NamedTuple):
    """``minimize_bounded``'s problem given as Python callables: ``fun(x)`` -> f (inf where
    undefined); ``grad(x, f)`` -> the gradient (k,) at a point just evaluated, f = fun(x)."""

    fun: object
    grad: object


class CriterionProblem(NamedTuple):
    """``minimize_bounded``'s problem as the compiled profiled criterion (``minimize_criterion``):
    the criterion's inputs, the gradient's kind (``exact``: ``criterion_gradient``; else
    ``fd_gradient`` over ``lower``, 2k evaluations) and nfev (1,) int64, the evaluations counted
    as ``engine.lmer._optimize`` counts them. With ``exact`` the evaluation of the criterion
    computes its gradient too (the blocked factor is shared: the gradient adds a fraction of an
    evaluation's cost, where a separate call repeats the factor) into ``grad_at`` (k,) and
    ``grad`` (k,) at the start and a line search's first trial (``_objective``'s likely_step),
    every evaluation there counted once: BFGS asks for the gradient at the point it has just
    accepted, mostly the first trial (an evaluation made from scratch for it counts once more)."""

    mo: Moments
    cb: CrossBlocks
    lay: Layout
    n: int
    reml: bool
    lower: np.ndarray
    exact: bool
    nfev: np.ndarray
    grad_at: np.ndarray = np.zeros(0)
    grad: np.ndarray = np.zeros(0)


def _objective(problem, x, likely_step):
    """f(x) of a ``minimize_bounded`` problem (Python: ``Callables``; compiled: the overload).
    ``likely_step``: x is the start or a line search's first trial after one whose first trial
    was taken, where the gradient is usually asked for next (``CriterionProblem`` computes it with f there, not at backtracks)."""
    return problem.fun(x)


def _gradient(problem, x, fx):
    """The gradient at x (f = fx there) of a ``minimize_bounded`` problem."""
    return problem.grad(x, fx)


@overload(_objective)
def _objective_compiled(problem, x, likely_step):
    if isinstance(problem, types.NamedTuple) and problem.instance_class is CriterionProblem:
        def impl(problem, x, likely_step):
            problem.nfev[0] += 1
            if problem.exact and likely_step:
                f, g = criterion_gradient(x, problem.mo, problem.cb, problem.lay, problem.n, problem.reml)
                problem.grad_at[:] = x
                problem.grad[:] = g
                return f
            return profiled_criterion(x, problem.mo, problem.cb, problem.lay, problem.n, problem.reml)
        return impl
    return None


@overload(_gradient)
def _gradient_compiled(problem, x, fx):
    if isinstance(problem, types.NamedTuple) and problem.instance_class is CriterionProblem:
        def impl(problem, x, fx):
            if problem.exact:
                if np.all(problem.grad_at == x):  # computed with the criterion at x
                    return problem.grad.copy()
                problem.nfev[0] += 1  # an exact gradient counts as one evaluation
                return criterion_gradient(x, problem.mo, problem.cb, problem.lay, problem.n, problem.reml)[1]
            problem.nfev[0] += 2 * x.shape[0]
            return fd_gradient(x, fx, problem.lower, problem.mo, problem.cb, problem.lay, problem.n,
                               problem.reml)
        return impl
    return None


@register_jitable
def _bfgs_loop(problem, x, lower, H, rescale, maxit, tol):
    """``minimize_bounded``'s iterations from x (already within the bounds) and the inverse
    Hessian H; the one body of both drivers (Python callables, or compiled in
    ``minimize_criterion``)."""
    fx = _objective(problem, x, True)
    g = _gradient(problem, x, fx)
    first = True
    full = False  # the last line search took its first trial (then the next one likely does too)
    for _it in range(maxit):
        cap = 1.0 if first and rescale else np.inf
        d, gd, dn = _bfgs_direction(H, g, x, lower, cap)
        if dn == 0.0 or -0.5 * gd < tol:  # tol: the predicted remaining decrease g'H g / 2 is small
            return x, fx, True
        t = 1.0
        accepted = False
        xn = x
        fn = fx
        for _ls in range(40):
            xn, dec = _projected_trial(x, d, t, lower, g)
            fn = _objective(problem, xn, _ls == 0 and full)
            if fn <= fx + 1e-4 * dec:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            return x, fx, False
        full = t == 1.0
        gn = _gradient(problem, xn, fn)
        H, s = _bfgs_update(H, x, xn, g, gn, first and rescale)
        first = False
        df = fx - fn
        x, fx, g = xn, fn, gn
        if _bfgs_converged(x, g, lower, s, df, fx):
            return x, fx, True
    return x, fx, False


def minimize_bounded(fun, grad, x0, lower, h0=None, maxit=500, tol=0.0):
    """Minimise a smooth function under lower bounds: lmer's one quasi-Newton optimiser.

    Projected BFGS on the inverse Hessian H (Nocedal & Wright 2006, "Numerical Optimization",
    sec. 6.1): a coordinate on its bound whose gradient points outward is held there (projected
    Newton, Bertsekas 1982), Armijo backtracking (halving, up to 40 times) along the projected
    path. ``h0`` None (small models, finite-difference gradients): H starts at I, the first step
    is at most 1 long (theta is on the scale of relative standard deviations: a long first step
    could land on a bound far away), then H is rescaled by eq. 6.20. ``h0`` given (the large
    crossed path, exact gradients): H starts at diag(1 / h0), so that the first step is a
    (diagonal) Newton step. Stops on ``_bfgs_converged``, when the predicted remaining decrease
    g'Hg / 2 over the free coordinates is below ``tol`` (absolute; for exact gradients, where
    1e-9 is far below the criterion's own tolerance of 1e-6), on a failed line search, or after
    ``maxit`` iterations. The algebra is compiled (``_bfgs_direction``, ``_projected_trial``,
    ``_bfgs_update``); the iterations (``_bfgs_loop``) run in Python here, calling fun and grad,
    and compiled in ``minimize_criterion`` when the function is the profiled criterion.

    ``fun(x)`` -> f (inf where undefined); ``grad(x, f)`` -> the gradient (k,) at a point just
    evaluated, f = fun(x): exact (``engine.lmer._criterion_and_gradient``) or ``fd_gradient``.
    Returns (x, f, converged)."""
    x = np.maximum(np.asarray(x0, dtype=np.float64), lower)
    k = x.shape[0]
    rescale = h0 is None
    H = np.eye(k) if rescale else np.diag(1.0 / np.maximum(np.asarray(h0, dtype=np.float64), 1e-8))
    return _bfgs_loop(Callables(fun, grad), x, lower, H, rescale, maxit, tol)


@numba.njit(cache=True)
def minimize_criterion(x0, problem, maxit, tol=0.0):
    """``minimize_bounded`` (H from I, first step capped, stop at ``tol``) of the profiled criterion
    (``CriterionProblem``), its iterations compiled: a Python call of a kernel costs ~3.6 us of
    argument typing (its NamedTuples of arrays), as much as a small model's evaluation.
    Returns (x, f, converged); the evaluations are added to problem.nfev."""
    lower = problem.lower
    x = np.maximum(x0, lower)
    return _bfgs_loop(problem, x, lower, np.eye(x.shape[0]), True, maxit, tol)


@numba.njit(cache=True)
def newton_polish(x0, fx0, lower, mo, cb, lay, n, reml, max_iter, exact, grad_at, grad):
    """Newton steps on the free coordinates with a central-difference Hessian (h = 1e-4 *
    max(1, |x|)), after ``minimize_bounded``: finite-difference BFGS meets its decrease test
    only roughly, the criterion is smooth in theta, so a Newton step or two takes theta to the
    optimum to ~1e-8. A coordinate on its bound whose slope away from it is upward stays there.
    A step is taken if it lowers the criterion, or if it is short (< 1e-4) and changes it only
    at rounding level (there the quadratic model is more accurate than f itself).
    ``exact`` (a layout with ``criterion_gradient``): the exact gradient, the Hessian from its
    forward differences (h = 1e-5 max(1, |x|), one evaluation a free coordinate), and no step
    once the free gradient is below 1e-6 (BFGS's own test): the finish of an exact-gradient BFGS
    stopped by the criterion's rounding (its line search cannot see a decrease of ~1e-10 where
    pwrss comes from a cancelling downdate), not by its gradient. ``grad_at``, ``grad`` (k,): a
    gradient already known (``CriterionProblem``'s), used where grad_at is x0 (empty: none).
    Returns (theta, criterion, evaluations)."""
    k = x0.shape[0]
    x = x0.copy()
    fx = fx0
    nfev = 0
    for _it in range(max_iter):
        h = np.empty(k)
        for i in range(k):
            h[i] = (1e-5 if exact else 1e-4) * max(1.0, abs(x[i]))
        free = np.zeros(k, dtype=np.int64)
        m = 0
        xt = x.copy()
        if exact:
            known = _it == 0 and grad_at.shape[0] == k and np.all(grad_at == x)
            if known:
                gx = grad.copy()
            else:
                _f, gx = criterion_gradient(x, mo, cb, lay, n, reml)
                nfev += 1
            pg = 0.0
            for i in range(k):
                if not (x[i] <= lower[i] and gx[i] >= 0.0):  # held: on its bound, slope not inward
                    free[m] = i
                    m += 1
                    pg = max(pg, abs(gx[i]))
            if m == 0 or pg < 1e-6:
                break
            g = np.empty(m)
            H = np.zeros((m, m))
            for a in range(m):
                g[a] = gx[free[a]]
            for b in range(m):
                i = free[b]
                xt[i] = x[i] + h[i]
                _f, gt = criterion_gradient(xt, mo, cb, lay, n, reml)
                nfev += 1
                xt[i] = x[i]
                for a in range(m):
                    H[a, b] = (gt[free[a]] - g[a]) / h[i]
            for a in range(m):
                for b in range(a + 1, m):
                    H[a, b] = 0.5 * (H[a, b] + H[b, a])
                    H[b, a] = H[a, b]
        else:
            for i in range(k):
                if x[i] - h[i] <= lower[i]:
                    xt[i] = x[i] + h[i]
                    fu = profiled_criterion(xt, mo, cb, lay, n, reml)
                    nfev += 1
                    xt[i] = x[i]
                    if fu >= fx or x[i] - h[i] < lower[i]:
                        continue
                free[m] = i
                m += 1
            if m == 0:
                break
            g = np.zeros(m)
            H = np.zeros((m, m))
            for a in range(m):
                i = free[a]
                xt[i] = x[i] + h[i]
                fp = profiled_criterion(xt, mo, cb, lay, n, reml)
                xt[i] = x[i] - h[i]
                fm = profiled_criterion(xt, mo, cb, lay, n, reml)
                xt[i] = x[i]
                nfev += 2
                g[a] = (fp - fm) / (2.0 * h[i])
                H[a, a] = (fp - 2.0 * fx + fm) / (h[i] * h[i])
            for a in range(m):
                for b in range(a + 1, m):
                    i = free[a]
                    j = free[b]
                    tot = 0.0
                    for si in (-1.0, 1.0):
                        for sj in (-1.0, 1.0):
                            xt[i] = x[i] + si * h[i]
                            xt[j] = x[j] + sj * h[j]
                            tot += si * sj * profiled_criterion(xt, mo, cb, lay, n, reml)
                    xt[i] = x[i]
                    xt[j] = x[j]
                    nfev += 4
                    H[a, b] = tot / (4.0 * h[i] * h[j])
                    H[b, a] = H[a, b]
        Lh = H.copy()
        if not _chol_inplace(Lh):
            break
        step = solve_upper_t(Lh, solve_lower(Lh, g))  # H^{-1} g through the Cholesky factor
        t = 1.0
        improved = False
        small = False
        for _ls in range(6):
            xn = x.copy()
            for a in range(m):
                i = free[a]
                xn[i] = max(x[i] - t * step[a], lower[i])
            fn = profiled_criterion(xn, mo, cb, lay, n, reml)
            nfev += 1
            small = np.max(np.abs(t * step)) < 1e-4
            if fn < fx or (small and fn <= fx + 1e-12 * (1.0 + abs(fx))):
                x = xn
                fx = fn
                improved = True
                break
            t *= 0.5
        if not improved or np.max(np.abs(t * step)) < 1e-9:
            break
    return x, fx, nfev


@numba.njit(cache=True)
def cross_trace(cb, W, wts, Sinv):
    """sum over levels j of the (scalar) leading term of wts[j] w_j' Sinv w_j, w_j (Q2,) row j
    of W at its pairs' columns (every block 1 x 1; ``cb`` indexed by column, see
    ``column_index``); Sinv (Q2, Q2) symmetric, its lower triangle read by rows. With
    wts = 1 / L1_j^2 and Sinv = S^{-1} it is the leading block's share of
    tr((Lambda'Z'Z Lambda + I)^{-1}) beyond sum 1 / L1_j^2. Row a of sum_j wts_j w_j w_j'
    (columns b <= a) gathers in a dense accumulator, then meets row a of Sinv."""
    Q2 = Sinv.shape[0]
    acc = np.zeros(Q2)
    tot = 0.0
    for a in range(Q2):
        for e in range(cb.cptr[a], cb.cptr[a + 1]):
            pa = cb.cpair[e]
            j = cb.pair_j[pa]
            wa = W[cb.off[pa]] * wts[j]
            for pb in range(cb.jptr[j], cb.jptr[j + 1]):
                c = cb.col0[pb]
                if c > a:  # pairs of j are sorted by column
                    break
                acc[c] += wa * W[cb.off[pb]]
        s = 0.0
        for b in range(a):
            s += acc[b] * Sinv[a, b]
            acc[b] = 0.0
        tot += 2.0 * s + acc[a] * Sinv[a, a]
        acc[a] = 0.0
    return tot


@numba.njit(cache=True)
def leading_criterion_gradient(theta, mo, cb, lay, n, reml):
    """The profiled criterion and its exact gradient in theta for a model with one random-effect
    term of any size q (no trailing block, Q2 = 0: sleepstudy's ``(Days | Subject)``, Exam's
    slopes), where Lambda = blockdiag(T) over the levels j and M_j = T'A_j T + I (A_j = Z_j'Z_j).

    With dT/dtheta_i = E = e_r e_c' (theta_i is T[r, c]) and C = [Z Lambda, X]: the REML
    determinant is log|A|, A = C'C + diag(I, 0), so d log|A| = tr(A^{-1} dA) =
    2 sum_j [(A_j T P_j)_rc + (B_j Q_j')_rc], with B_j = Z_j'X, P_j = (A^{-1})_{u_j u_j} =
    M_j^{-1} + G_j Sxx G_j', Q_j = (A^{-1})_{u_j x} = -G_j Sxx, G_j = M_j^{-1} T'B_j =
    L1_j^{-T} R1_j[:, :p], Sxx = (R_X'R_X)^{-1} (the partitioned inverse); ML's log|L|^2 = sum_j
    log|M_j| is the same with P_j = M_j^{-1} and no Q_j term. The penalised residual sum of squares
    is a minimum over (u, beta), so (envelope theorem) d pwrss = -2 r'Z dLambda u =
    -2 sum_j (Z_j'r_j)_r (u_j)_c, Z_j'r_j = Z_j'y - B_j beta - A_j T u_j. Then grad_i =
    d log-determinants + nu d pwrss / pwrss, nu = n - p (REML) or n (ML) (Bates et al. 2015,
    eqs. 34 and 41, differentiated; the scalar case is ``engine.lmer._criterion_and_gradient``).
    Cost: about one criterion evaluation (the leading blocks' factors) plus O(n1 q^2 p^2).
    Returns (criterion, gradient (K,)); (inf, zeros) where a factor fails."""
    K = theta.shape[0]
    grad = np.zeros(K)
    ok, ld, gram, L1, R1, W, S, R2, T = leading_and_schur(theta, mo, cb, lay)
    if not ok:
        return np.inf, grad
    m = gram.shape[0]
    p = m - 1
    n1, q, _m = R1.shape
    for k in range(m):
        for l in range(k):
            gram[k, l] = gram[l, k]
    if not _chol_inplace(gram):
        return np.inf, grad
    pwrss = gram[p, p] * gram[p, p]
    nu = n - p if reml else n
    crit = ld + nu * (1.0 + np.log(2.0 * np.pi * pwrss / nu))
    if reml:
        for k in range(p):
            crit += 2.0 * np.log(gram[k, k])
    Lx = np.ascontiguousarray(gram[:p, :p])
    beta = solve_upper_t(Lx, np.ascontiguousarray(gram[p, :p]))
    # Sxx = Lx^{-T} Lx^{-1}
    Linv = np.zeros((p, p))
    e = np.zeros(p)
    for c in range(p):
        e[c] = 1.0
        col = solve_lower(Lx, e)
        e[c] = 0.0
        for r in range(p):
            Linv[r, c] = col[r]
    Sxx = Linv.T @ Linv
    T1 = np.ascontiguousarray(T[0, :q, :q])
    dld = np.zeros((q, q))  # d log-determinants / dT[r, c]
    dpw = np.zeros((q, q))  # d pwrss / dT[r, c]
    Lj = np.empty((q, q))
    rhs = np.empty(q)
    P = np.empty((q, q))
    G = np.empty((q, p))
    GS = np.empty((q, p))
    Tu = np.empty(q)
    for j in range(n1):
        for a in range(q):
            for b in range(q):
                Lj[a, b] = L1[j, a, b]
        # u_j = L1_j^{-T} (R1_j[:, p] - R1_j[:, :p] beta)
        for a in range(q):
            s = R1[j, a, p]
            for k in range(p):
                s -= R1[j, a, k] * beta[k]
            rhs[a] = s
        u = solve_upper_t(Lj, rhs)
        # P_j = M_j^{-1} (+ G Sxx G' for REML), M_j^{-1} = L^{-T} L^{-1} by columns
        for c in range(q):
            for a in range(q):
                rhs[a] = 1.0 if a == c else 0.0
            col = solve_upper_t(Lj, solve_lower(Lj, rhs))
            for a in range(q):
                P[a, c] = col[a]
        if reml:
            for k in range(p):
                for a in range(q):
                    rhs[a] = R1[j, a, k]
                col = solve_upper_t(Lj, rhs)
                for a in range(q):
                    G[a, k] = col[a]
            for a in range(q):
                for k in range(p):
                    s = 0.0
                    for l in range(p):
                        s += G[a, l] * Sxx[l, k]
                    GS[a, k] = s
            for a in range(q):
                for b in range(q):
                    s = 0.0
                    for k in range(p):
                        s += GS[a, k] * G[b, k]
                    P[a, b] += s
        for a in range(q):  # Tu = T u
            s = 0.0
            for b in range(a + 1):
                s += T1[a, b] * u[b]
            Tu[a] = s
        for r in range(q):
            # (A_j T P_j)[r, c], (B_j Q_j')[r, c] = -(B_j GS')[r, c], Z_j'r_j[r]
            zr = mo.ZXa1[j, r, p]
            for k in range(p):
                zr -= mo.ZXa1[j, r, k] * beta[k]
            for b in range(q):
                zr -= mo.A1[j, r, b] * Tu[b]
            for c in range(q):
                s = 0.0
                for b in range(q):
                    atb = 0.0
                    for d in range(b, q):
                        atb += mo.A1[j, r, d] * T1[d, b]
                    s += atb * P[b, c]
                if reml:
                    for k in range(p):
                        s -= mo.ZXa1[j, r, k] * GS[c, k]
                dld[r, c] += 2.0 * s
                dpw[r, c] -= 2.0 * zr * u[c]
    i = 0
    for c in range(q):  # lme4's order: the lower triangle column by column
        for r in range(c, q):
            grad[i] = dld[r, c] + nu * dpw[r, c] / pwrss
            i += 1
    return crit, grad


@numba.njit(cache=True)
def _rows_lower_solve(L, B):
    """(r, p): row i is L^{-1} B[i] (L (p, p) lower, B (r, p)), i.e. B L^{-T}: ``forward_solve`` on
    B' (the same sums in the same order), returned C-contiguous."""
    return np.ascontiguousarray(forward_solve(L, np.ascontiguousarray(B.T)).T)


@numba.njit(cache=True)
def _trailing_back_solve(nested, Sb, L2, b):
    """L2^{-T} b for the trailing factor of scalar terms: nested, Sb (n2, 1, 1) its diagonal;
    dense, L2 (Q2, Q2) lower."""
    if nested:
        out = np.empty(b.shape[0])
        for c in range(b.shape[0]):
            out[c] = b[c] / Sb[c, 0, 0]
        return out
    return solve_upper_t(L2, b)


@numba.njit(cache=True)
def scalar_criterion_gradient(theta, mo, cb, lay, n, reml):
    """The profiled criterion and its exact gradient in theta where every term is scalar (random
    intercepts, Lambda = diag(theta_k over term k's levels)): a leading block alone (Dyestuff), a
    dense trailing block (crossed: Penicillin; ``cb`` indexed by column, ``column_index``) or
    a nested one (``Layout.nested``: Pastes, classes in schools; the dense block's arithmetic on
    its diagonal, in the same order, so both give the same numbers), compiled for the small
    models' BFGS (``CriterionProblem``'s ``exact``).

    The algebra is ``engine.lmer._criterion_and_gradient``'s (Bates et al. 2015, eqs. 34 and 41
    differentiated; see its docstring), grad_k = (2 / theta_k) (n_k - tr_k((A^{-1})_uu) -
    nu ||u_k||^2 / pwrss), with S^{-1} from the trailing factor L2 by substitution (there a
    LAPACK dpotri on a large block): diag(S^{-1}) for the trailing terms, the leading term's
    sum_j (1 + w_j'S^{-1}w_j) / L1_j^2 (``cross_trace``; one entry per j when nested), REML's
    row norms of V = L^{-T} R_ZX Lx^{-T} added. The criterion is ``profiled_criterion``'s, the
    same arithmetic. Cost: one evaluation plus O(Q2^3 / 3) for S^{-1} (dense; O(n2) nested) and
    O((n1 + pairs + Q2^2) p) for the modes and V. Returns (criterion, gradient (K,)); (inf,
    zeros) where a factor fails."""
    K = theta.shape[0]
    grad = np.zeros(K)
    Q2 = mo.ZXa2.shape[0]
    nested = lay.nested
    Sinv = np.zeros((0, 0))  # dense: S^{-1} (lower triangle)
    L2 = np.zeros((0, 0))
    Sb = np.zeros((0, 1, 1))
    if nested:
        ok, ld, gram, L1, R1, W, Sb, R2, _T = leading_and_nested_schur(theta, mo, cb, lay)
        if not ok:
            return np.inf, grad
        ok, ld, R2s = nested_factor(Sb, R2, ld)
        if not ok:
            return np.inf, grad
    else:
        ok, ld, gram, L1, R1, W, S, R2, _T = leading_and_schur(theta, mo, cb, lay)
        if not ok:
            return np.inf, grad
        R2s = R2
        if Q2 > 0:
            ok, ld, L2 = _dense_trailing_factor(S, ld)
            if not ok:
                return np.inf, grad
            R2s = forward_solve(L2, R2)
            L2inv = forward_solve(L2, np.eye(Q2))
            Sinv = np.empty((Q2, Q2))  # L2^{-T} L2^{-1}, lower triangle (L2^{-1} is lower)
            for a in range(Q2):
                for b in range(a + 1):
                    acc = 0.0
                    for c in range(a, Q2):
                        acc += L2inv[c, a] * L2inv[c, b]
                    Sinv[a, b] = acc
    if Q2 > 0:
        _gram_downdate(gram, R2s)
    crit = _criterion_value(ld, gram, n, reml)
    if not np.isfinite(crit):
        return np.inf, grad
    return crit, _scalar_gradient(theta, cb, lay, n, reml, L1, R1, W, R2s, gram, nested, Sb, L2, Sinv)


@numba.njit(cache=True)
def _scalar_gradient(theta, cb, lay, n, reml, L1, R1, W, R2s, gram, nested, Sb, L2, Sinv):
    """The exact gradient (every term scalar) from the blocked factor at theta: L1 (n1, 1, 1),
    R1 (n1, 1, m), W (pairs,), R2s (Q2, m) = L2^{-1} R2, gram (m, m) factored (lower, as
    ``_criterion_value`` leaves it); the trailing factor nested as Sb (n2, 1, 1) (L2 and Sinv
    unused), or dense as L2 (Q2, Q2) lower with Sinv (Q2, Q2) = S^{-1}, its lower triangle.
    ``scalar_criterion_gradient``'s algebra (see there) and ``engine.lmer._criterion_and_gradient``'s
    (S^{-1} from LAPACK for a large block). Returns the gradient (K,)."""
    K = theta.shape[0]
    grad = np.zeros(K)
    m = gram.shape[0]
    p = m - 1
    Q2 = R2s.shape[0]
    n1 = L1.shape[0]
    sinv = np.zeros(Q2)
    if nested:
        for c in range(Q2):  # the dense path's (L2^{-1})' L2^{-1} on a diagonal L2
            r = 1.0 / Sb[c, 0, 0]
            sinv[c] = r * r
    pwrss = gram[p, p] * gram[p, p]
    nu = n - p if reml else n
    Lx = np.ascontiguousarray(gram[:p, :p])
    beta = solve_upper_t(Lx, np.ascontiguousarray(gram[p, :p]))

    # conditional modes: u2 = L2^{-T}(R2s_y - R2s_X beta), u1 = (R1_y - R1_X beta - W u2) / L1
    u2 = np.zeros(Q2)
    wu = np.zeros((n1, 1))
    if Q2 > 0:
        r2 = np.empty(Q2)
        for c in range(Q2):
            s = R2s[c, p]
            for k in range(p):
                s -= R2s[c, k] * beta[k]
            r2[c] = s
        u2 = _trailing_back_solve(nested, Sb, L2, r2)
        wu = cross_times(cb, W, u2, n1, 1)
    d1 = np.empty(n1)
    d2 = np.zeros(Q2)
    uu1 = 0.0
    for j in range(n1):
        lj = L1[j, 0, 0]
        s = R1[j, 0, p]
        for k in range(p):
            s -= R1[j, 0, k] * beta[k]
        if Q2 > 0:
            s -= wu[j, 0]
        uj = s / lj
        uu1 += uj * uj
        d1[j] = 1.0 / (lj * lj)
    # the leading block's sum_j w_j'S^{-1}w_j / L1_j^2
    extra1 = 0.0
    if Q2 > 0:
        if nested:  # cross_trace's sums on a diagonal S^{-1}: by column, then by level j
            acc = np.zeros(Q2)
            for j in range(n1):
                o = cb.off[cb.jptr[j]]
                acc[cb.col0[cb.jptr[j]]] += W[o] * d1[j] * W[o]
            for c in range(Q2):
                extra1 += acc[c] * sinv[c]
                d2[c] = sinv[c]
        else:
            extra1 = cross_trace(cb, W, d1, Sinv)
            for c in range(Q2):
                d2[c] = Sinv[c, c]
    if reml:  # (A^{-1})_uu = M^{-1} + V V', V = L^{-T} R_ZX Lx^{-T} (rows: Lx^{-1} applied)
        Y1 = _rows_lower_solve(Lx, R1[:, 0, :p])
        if Q2 > 0:
            Y2 = _rows_lower_solve(Lx, R2s[:, :p])
            for k in range(p):
                v2 = _trailing_back_solve(nested, Sb, L2, np.ascontiguousarray(Y2[:, k]))
                wv = cross_times(cb, W, v2, n1, 1)
                for c in range(Q2):
                    d2[c] += v2[c] * v2[c]
                for j in range(n1):
                    Y1[j, k] -= wv[j, 0]
        for j in range(n1):
            lj = L1[j, 0, 0]
            s = 0.0
            for k in range(p):
                v = Y1[j, k] / lj
                s += v * v
            d1[j] += s
    # per term: levels n_k, tr_k and ||u_k||^2 (the leading term is term 0)
    cnt = np.zeros(K)
    tr = np.zeros(K)
    uu = np.zeros(K)
    cnt[0] = n1
    tr[0] = extra1
    for j in range(n1):
        tr[0] += d1[j]
    uu[0] = uu1
    for c in range(Q2):
        k = lay.col_term[c]
        cnt[k] += 1.0
        tr[k] += d2[c]
        uu[k] += u2[c] * u2[c]
    for k in range(K):
        i = lay.theta_start[k]
        if theta[i] != 0.0:  # 0 there: the criterion depends on theta_k^2
            grad[i] = 2.0 / theta[i] * (cnt[k] - tr[k] - nu * uu[k] / pwrss)
    return grad


@numba.njit(cache=True)
def criterion_gradient(theta, mo, cb, lay, n, reml):
    """The profiled criterion and its exact gradient for the layouts that have one compiled:
    every term scalar (``scalar_criterion_gradient``), or one term of any size
    (``leading_criterion_gradient``). Returns (criterion, gradient (K,))."""
    scalar = True
    for k in range(lay.term_q.shape[0]):
        if lay.term_q[k] != 1:
            scalar = False
    if scalar:
        return scalar_criterion_gradient(theta, mo, cb, lay, n, reml)
    return leading_criterion_gradient(theta, mo, cb, lay, n, reml)
