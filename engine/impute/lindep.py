"""mice's ``remove.lindep``: which predictors an imputation model keeps (Numba kernel).

Source: mice 3.15 ``remove.lindep`` (van Buuren 2018, sec. 6.2). The eigenvalue rule runs on LAPACK's
tridiagonal routines (``engine._lapack``); see ``lindep_keep`` for the steps and where engine's rule
differs from R's indexing slip.
"""

from __future__ import annotations

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._linalg import mean_and_sum_sq
from engine._lapack import (apply_q, cholesky_info, tridiagonal_count_below, tridiagonal_eigenvalue,
                      tridiagonal_eigenvector, tridiagonalize)



def lindep_keep(x, y, eps, maxcor):
    """Predictors of x (n, p) to keep for target y (n,), as mice's ``remove.lindep``. Returns
    keep (p,) bool.

    None when var(y) < eps; else predictors with var > eps and cor(x, y) < maxcor. Exactly dependent
    predictors are then removed by a Cholesky pass in column order (see below); then, while the
    smallest/largest eigenvalue ratio of the kept predictors' correlation matrix is below eps, the
    predictor with the largest weight in the smallest eigenvector is dropped, as mice does.

    Steps: correlations from sparse/dense cross-products (``_lindep_correlations``), the Cholesky
    pass (``_lindep_cholesky_pass``), then the eigenvalue rule with only the extreme eigenpairs
    computed (``_lindep_eigen_drops``, LAPACK through ``engine._lapack``). Each kernel does its work
    in the same arithmetic order as a plain implementation, and the eigenvalue decisions are those
    of exact eigenvalues of a matrix within a few ulps (as numpy's eigh), so only ties at rounding
    level could be decided differently."""
    keep, idx, corr, live_flag, done = _lindep_start(x, y, eps, maxcor)
    if done:
        return keep
    # the eigenvalue rule; should LAPACK's bisection or inverse iteration fail, a round by a full
    # eigen-decomposition here, outside Numba (compiling np.linalg.eigh into the kernel for this
    # fallback cost ~2 CPU s of every cold mice; issue 16)
    bound = -1.0
    while True:
        fallback, bound = _lindep_eigen_drops(corr, live_flag, eps, bound)
        if not fallback:
            break
        live = np.flatnonzero(live_flag)
        drop = _lindep_drop_by_eigh(corr, live, eps)
        if drop < 0:
            break
        live_flag[live[drop]] = False
    keep[idx] = live_flag
    return keep


@numba.njit(cache=True, nogil=True)
def _lindep_start(x, y, eps, maxcor):
    """``lindep_keep`` up to the eigenvalue rule: the variance and correlation filter, the
    correlations of the kept predictors and the Cholesky pass. Returns (keep (p,), idx (k,) the
    kept predictors, corr (k, k), live_flag (k,) those the Cholesky pass kept, done: keep is final)."""
    n, p = x.shape
    keep = np.zeros(p, dtype=np.bool_)
    none = np.empty(0, dtype=np.int64)
    if n < 2:
        return keep, none, np.empty((0, 0)), np.empty(0, dtype=np.bool_), True
    ym, yss = mean_and_sum_sq(y)
    if yss / (n - 1) < eps:
        return keep, none, np.empty((0, 0)), np.empty(0, dtype=np.bool_), True
    means = np.zeros(p)
    nonzeros = np.zeros(p, dtype=np.int64)
    for i in range(n):
        for j in range(p):
            means[j] += x[i, j]
            nonzeros[j] += x[i, j] != 0.0
    means /= n
    # no n x p temporaries: large allocations page-fault under the process-wide memory lock,
    # which serialises the imputations' threads
    ss = np.zeros(p)
    sxy = np.zeros(p)
    for i in range(n):
        yi = y[i] - ym
        for j in range(p):
            d = x[i, j] - means[j]
            ss[j] += d * d
            sxy[j] += d * yi
    for j in range(p):
        if ss[j] / (n - 1) > eps:
            r = sxy[j] / np.sqrt(ss[j] * yss)
            keep[j] = r < maxcor
    if p == 1:
        keep[0] = True  # as mice
        return keep, none, np.empty((0, 0)), np.empty(0, dtype=np.bool_), True
    k = 0
    for j in range(p):
        k += keep[j]
    idx = np.empty(k, dtype=np.int64)  # np.flatnonzero(keep)
    k = 0
    for j in range(p):
        if keep[j]:
            idx[k] = j
            k += 1
    if k < 2:
        return keep, idx, np.empty((0, 0)), np.empty(0, dtype=np.bool_), True
    corr = _lindep_correlations(x, idx, means, ss, nonzeros)
    # exact (numerical) dependencies first: Cholesky in column order, skipping any column whose
    # residual variance given the kept earlier ones is below 1e-8. Dropping a member of an exact
    # dependency leaves the predictors' column space, hence every linear fit, unchanged; it avoids
    # one eigen-decomposition per dropped column (nested factors such as class within school give
    # dozens). mice's eigenvalue rule then handles the near-dependencies that remain.
    # A column whose residual variance given the kept earlier ones is below eps * lambda_max
    # certifies lambda_min / lambda_max < eps (mice would drop a column), so such columns go in
    # the same pass; lambda_max from a few power iterations (a slight underestimate is harmless:
    # the eigenvalue rule below still checks the rest).
    lam_max = _lindep_power_lambda_max(corr)
    live_flag = _lindep_cholesky_pass(corr, max(1e-8, eps * lam_max))
    return keep, idx, corr, live_flag, False


@numba.njit(cache=True, nogil=True)
def _lindep_correlations(x, idx, means, ss, nonzeros):
    """Correlation matrix (k, k) of the columns idx (k,) of x (n, p), given their means, centred
    sums of squares ss (p,) and numbers of nonzero entries (p,), from uncentred cross-products
    S_ab = sum_i x_ia x_ib - n m_a m_b.

    Dummies are mostly zero, so products with a zero are skipped: the columns that are nonzero in
    at least half of the rows ("dense") are handled as vectors (their cross-products with each
    other and with every nonzero entry of the others are contiguous, vectorised loops), the rest by
    a list of each row's nonzero entries. A skipped product is an exact 0.0, and every sum runs
    over the rows in order, so the result does not depend on this split."""
    n = x.shape[0]
    k = idx.shape[0]
    # local order: dense columns first
    cols = np.empty(k, dtype=np.int64)
    position = np.empty(k, dtype=np.int64)  # position[local] = index into idx
    n_dense = 0
    for a in range(k):
        if 2 * nonzeros[idx[a]] >= n:
            position[n_dense] = a
            n_dense += 1
    n_local = n_dense
    for a in range(k):
        if 2 * nonzeros[idx[a]] < n:
            position[n_local] = a
            n_local += 1
    for a in range(k):
        cols[a] = idx[position[a]]
    acc = np.zeros((k, k))  # lower triangle, local order
    row_dense = np.empty(n_dense)
    nz = np.empty(k, dtype=np.int64)
    nz_val = np.empty(k)
    for i in range(n):
        for a in range(n_dense):
            row_dense[a] = x[i, cols[a]]
        for a in range(n_dense):
            va = row_dense[a]
            for b in range(a + 1):
                acc[a, b] += va * row_dense[b]
        cnt = 0
        for a in range(n_dense, k):
            va = x[i, cols[a]]
            if va != 0.0:
                nz[cnt] = a
                nz_val[cnt] = va
                cnt += 1
                for b in range(n_dense):
                    acc[a, b] += va * row_dense[b]
                for u in range(cnt):
                    acc[a, nz[u]] += va * nz_val[u]
    corr = np.zeros((k, k))  # idx order, lower triangle first
    for a in range(k):
        for b in range(a + 1):
            pa = position[a]
            pb = position[b]
            if pa >= pb:
                corr[pa, pb] = acc[a, b]
            else:
                corr[pb, pa] = acc[a, b]
    for a in range(k):
        for b in range(a + 1):
            corr[a, b] = (corr[a, b] - n * means[idx[a]] * means[idx[b]]) / np.sqrt(ss[idx[a]] * ss[idx[b]])
            corr[b, a] = corr[a, b]
    return corr


@numba.njit(cache=True, nogil=True)
def _lindep_power_lambda_max(corr):
    """Largest eigenvalue of corr (k, k), roughly: Rayleigh quotient of at most 30 power
    iterations from the constant vector, stopped at a relative change below 1e-3 (a lower bound)."""
    k = corr.shape[0]
    # loops rather than array expressions and np.sum (the same sequential sums, fewer Numba
    # implementations to compile)
    vec = np.empty(k)
    for a in range(k):
        vec[a] = 1.0 / np.sqrt(k)
    lam_max = 1.0
    for _ in range(30):
        # w = corr vec as a sum of rows (corr is symmetric): contiguous, vectorised loops; explicit
        # loops, as a BLAS call here would take OpenBLAS's lock
        w_vec = np.zeros(k)
        for b in range(k):
            vb = vec[b]
            for a in range(k):
                w_vec[a] += corr[b, a] * vb
        ss = 0.0
        for a in range(k):
            ss += w_vec[a] * w_vec[a]
        norm = np.sqrt(ss)
        if norm == 0.0:
            break
        new_lam = 0.0
        for a in range(k):
            new_lam += vec[a] * w_vec[a]
        for a in range(k):
            vec[a] = w_vec[a] / norm
        if abs(new_lam - lam_max) < 1e-3 * new_lam:
            lam_max = new_lam
            break
        lam_max = new_lam
    return lam_max


@numba.njit(cache=True, nogil=True)
def _lindep_cholesky_pass(corr, drop_below):
    """Columns of corr (k, k) that survive a Cholesky factorisation in column order which skips
    every column whose residual variance given the surviving earlier ones is below drop_below.

    Right-looking: after column a is factored, its outer product is subtracted from the trailing
    lower triangle (contiguous rows, vectorised). Each entry receives the same subtractions in the
    same order as in the left-looking (dot product) form, so the pivots are identical to it; a
    skipped column contributes nothing to later ones. Returns live_flag (k,) bool."""
    k = corr.shape[0]
    work = corr.copy()  # lower triangle used: work[b, c] for c <= b
    col = np.zeros(k)
    live_flag = np.ones(k, dtype=np.bool_)
    for a in range(k):
        s = work[a, a]
        if s < drop_below:
            live_flag[a] = False
            continue
        d = np.sqrt(s)
        for b in range(a + 1, k):
            col[b] = work[b, a] / d
        first = np.uint64(a + 1)  # unsigned indices: no negative-index wraparound, so it vectorises
        for b in range(a + 1, k):
            lb = col[b]
            for c in range(first, np.uint64(b + 1)):
                work[b, c] -= lb * col[c]
    return live_flag


@numba.njit(cache=True, nogil=True)
def _lindep_eigen_drops(corr, live_flag, eps, lam_max_bound):
    """mice's eigenvalue rule on the principal submatrix of corr (k, k) over live_flag (k,), which
    it updates: while lambda_min / lambda_max < eps, the column with the largest |component| of the
    eigenvector of lambda_min is dropped.

    Only these two eigenvalues and one eigenvector are needed, so a round is one tridiagonal
    reduction T = Q' A Q (engine._lapack), Sturm counts on T to decide the ratio
    (``_lindep_ratio_below``), and only when a column goes, lambda_min by bisection and its
    eigenvector by inverse iteration on T (the steps of LAPACK's dsyevx). After a drop, lambda_max
    of the smaller matrix is at most the previous one (Cauchy interlacing), so a Cholesky
    factorisation of A - eps * (previous bound) I that succeeds proves the ratio is now >= eps
    without a reduction; the usual last round costs a third of one.

    lam_max_bound: an upper bound on lambda_max of the current matrix, once known (-1.0: not yet).
    Returns (fallback, lam_max_bound): fallback True when a round needs the full
    eigen-decomposition (LAPACK reported a failure, or non-finite correlations): the caller does
    that round (``_lindep_drop_by_eigh``) and calls again with the bound returned."""
    m0 = 0
    for a in range(live_flag.shape[0]):
        m0 += live_flag[a]
    live = np.empty(m0, dtype=np.int64)  # np.flatnonzero(live_flag)
    m0 = 0
    for a in range(live_flag.shape[0]):
        if live_flag[a]:
            live[m0] = a
            m0 += 1
    buf = np.empty(m0 * m0)
    while live.shape[0] > 1:
        m = live.shape[0]
        if lam_max_bound > 0.0:
            shift = eps * lam_max_bound
            for a in range(m):
                for b in range(m):
                    buf[a * m + b] = corr[live[a], live[b]]
                buf[a * m + a] -= shift
            if cholesky_info(buf, m) == 0:
                break  # lambda_min > eps * bound >= eps * lambda_max
        for a in range(m):
            for b in range(m):
                buf[a * m + b] = corr[live[a], live[b]]
        d, e, tau, info = tridiagonalize(buf, m)
        finite = info == 0
        for a in range(m):
            finite = finite and np.isfinite(d[a]) and (a == m - 1 or np.isfinite(e[a]))
        if not finite:
            # (non-finite correlations, from overflowing data: eigh raises, as numpy's does)
            return True, lam_max_bound
        below, lam_max_bound = _lindep_ratio_below(d, e, eps)
        if not below:
            break
        lam_min, iblock, isplit, info_min = tridiagonal_eigenvalue(d, e, 1)
        z, info_vec = tridiagonal_eigenvector(d, e, lam_min, iblock, isplit)
        vec, info_q = apply_q(buf, tau, z)
        if info_min != 0 or info_vec != 0 or info_q != 0:
            return True, lam_max_bound
        drop = 0  # np.argmax(np.abs(vec)): the first largest, or the first NaN
        for a in range(m):
            if np.isnan(vec[a]):
                drop = a
                break
            if abs(vec[a]) > abs(vec[drop]):
                drop = a
        live_flag[live[drop]] = False
        for a in range(drop, m - 1):  # live without its entry drop
            live[a] = live[a + 1]
        live = live[:m - 1]
    return False, lam_max_bound


@numba.njit(cache=True, nogil=True)
def _lindep_ratio_below(d, e, eps):
    """Whether lambda_min / lambda_max < eps for the symmetric tridiagonal T (d (m,), e (m-1,)),
    and an upper bound on lambda_max within 1e-3 of it.

    lambda_max is bracketed by [max d_i, Gershgorin bound] and the bracket halved by Sturm counts
    (lapack.tridiagonal_count_below) until the number of eigenvalues below eps * lo (>= 1: below)
    or below eps * hi (0: not below) settles the question; at full precision the count below
    eps * midpoint decides, so the answer is that of exact eigenvalues of a matrix within a few
    ulps of T, as LAPACK's eigenvalues are."""
    m = d.shape[0]
    lo = d[0]
    hi = d[0]
    for i in range(m):
        radius = 0.0
        if i > 0:
            radius += abs(e[i - 1])
        if i < m - 1:
            radius += abs(e[i])
        lo = max(lo, d[i])
        hi = max(hi, d[i] + radius)
    hi += 4.0 * np.finfo(np.float64).eps * abs(hi)
    below = False
    decided = False
    while True:
        if not decided:
            if tridiagonal_count_below(d, e, eps * lo) > 0:
                below = True
                decided = True
            elif tridiagonal_count_below(d, e, eps * hi) == 0:
                decided = True
        if hi - lo <= 4.0 * np.finfo(np.float64).eps * abs(hi):
            if not decided:
                below = tridiagonal_count_below(d, e, eps * 0.5 * (lo + hi)) > 0
            return below, hi
        if decided and hi - lo <= 1e-3 * abs(hi):
            return below, hi
        mid = 0.5 * (lo + hi)
        if tridiagonal_count_below(d, e, mid) == m:
            hi = mid
        else:
            lo = mid


def _lindep_drop_by_eigh(corr, live, eps):
    """One round of the eigenvalue rule by a full eigen-decomposition (fallback should LAPACK's
    bisection or inverse iteration report a failure): position in live (m,) to drop, or -1.
    Raises LinAlgError on non-finite correlations (as numpy's eigh)."""
    sub = corr[np.ix_(live, live)]
    if not np.isfinite(sub).all():
        raise np.linalg.LinAlgError("Array must not contain infs or NaNs")
    evals, evecs = np.linalg.eigh(sub)
    if evals[0] / evals[-1] >= eps:
        return -1
    return int(np.argmax(np.abs(evecs[:, 0])))
