"""Numba kernels of ``engine.lmer``: the blocked Cholesky factor's off-diagonal part.

The random effects are split as in MixedModels.jl (Bates et al., MixedModels.jl documentation,
"blocked Cholesky"): the first term (most levels) gives a block-diagonal leading block of
``n1`` blocks of ``q1 x q1``; every later term goes into one dense trailing block of size ``Q2``.
``Z1'Z2`` is stored as one small ``q1 x qk`` block per (level j of term 1, level l of term k)
pair that occurs in the data (``CrossBlocks``), grouped by j. Per evaluation of the criterion
the kernels below cost O(sum over j of (pairs of j * q)^2), independent of the number of rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np


class CrossBlocks(NamedTuple):
    """Z1'Z_rest in blocks: pairs ``jptr[j]:jptr[j+1]`` belong to level j of term 1.

    col0 (P,) int64: first column of the pair's level in the trailing block;
    q (P,) int64: its term's number of columns qk; term (P,) int64: index of that term's
    relative covariance factor in ``Tk``; off (P,) int64: offset of the pair's row-major
    ``q1 x qk`` block in vals (sum q1*qk,) float64.
    """

    jptr: np.ndarray
    col0: np.ndarray
    q: np.ndarray
    term: np.ndarray
    off: np.ndarray
    vals: np.ndarray


@numba.njit(cache=True)
def scaled_cross(cb, T1, Tk, L1):
    """W_p = L1_j^{-1} T1' B_p T_k for every pair p (same layout as cb.vals).

    T1 (q1, q1) lower triangular; Tk (K, qmax, qmax) the later terms' factors; L1 (n1, q1, q1)
    the Cholesky factors of the leading blocks T1' A_j T1 + I.
    """
    q1 = T1.shape[0]
    W = np.empty_like(cb.vals)
    n1 = cb.jptr.shape[0] - 1
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
    """S -= sum_j W_j' W_j and R2 -= sum_j W_j' R1_j (in place).

    S (Q2, Q2) the trailing block Lambda2' Z2'Z2 Lambda2 + I; R1 (n1, q1, m) the leading
    block's solved right-hand sides L1_j^{-1} T1' Z1_j'[X y]; R2 (Q2, m) Lambda2' Z2'[X y].
    """
    q1 = R1.shape[1]
    m = R1.shape[2]
    n1 = cb.jptr.shape[0] - 1
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
            for pb in range(lo, hi):
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


@numba.njit(cache=True)
def back_solve_t(L, b):
    """L'^{-1} b for lower-triangular L (Q, Q) and b (Q,)."""
    n = b.shape[0]
    x = b.copy()
    for i in range(n - 1, -1, -1):
        s = x[i]
        for j in range(i + 1, n):
            s -= L[j, i] * x[j]
        x[i] = s / L[i, i]
    return x
