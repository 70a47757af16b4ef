"""Numba kernels of the univariate imputation methods (R mice's ``mice.impute.*``).

Each kernel is a pure function of arrays: the design of the observed rows (``x_obs``, n_obs x p,
intercept column included where the method has one), the observed target values, the design of
the rows to impute, and the random numbers it needs, drawn beforehand by the caller from the
imputation's own ``numpy.random.Generator`` (so a slow reference given the same numbers must make
the same choices, which the tests check). Sources: van Buuren (2018), *Flexible Imputation of
Missing Data*, 2nd ed., sec. 3.2 (Bayesian linear regression, Rubin 1987 p. 167), 3.4 (predictive
mean matching, type-1 matching, 5 donors), 3.5 (logistic/multinomial with augmentation, White,
Daniel & Royston 2010); the behaviour of mice 3.15's ``norm.draw``, ``matchindex``,
``mice.impute.logreg``, ``mice.impute.polyreg`` and MASS's ``predict.lda(method = "debiased")``.
"""

from __future__ import annotations

import numba
import numpy as np

from .lapack import (apply_q, cholesky_info, tridiagonal_count_below, tridiagonal_eigenvalue,
                     tridiagonal_eigenvector, tridiagonalize)

#: mice's ridge: added as ``ridge * diag(X'X)`` when X'X cannot be factored (estimice).
RIDGE = 1e-5


# --------------------------------------------------------------------------------------------
# Small dense linear algebra (p <= a few hundred): Cholesky with a failure flag, triangular solves


@numba.njit(cache=True, nogil=True)
def cholesky_lower(a):
    """Lower Cholesky factor of the symmetric matrix ``a`` (p x p); ok=False when a pivot is not
    clearly positive (relative to the diagonal entry), i.e. the matrix is (nearly) singular."""
    p = a.shape[0]
    chol = np.zeros((p, p))
    for j in range(p):
        s = a[j, j]
        for k in range(j):
            s -= chol[j, k] * chol[j, k]
        if not (s > 1e-12 * abs(a[j, j])) or not (s > 0.0):
            return chol, False
        d = np.sqrt(s)
        chol[j, j] = d
        for i in range(j + 1, p):
            t = a[i, j]
            for k in range(j):
                t -= chol[i, k] * chol[j, k]
            chol[i, j] = t / d
    return chol, True


@numba.njit(cache=True, nogil=True)
def cholesky_with_ridge(a, ridge):
    """Cholesky of ``a``; if it fails, of ``a + ridge * diag(a)`` (mice's fallback). Returns (L, ridged)."""
    chol, ok = cholesky_lower(a)
    if ok:
        return chol, False
    b = a.copy()
    for j in range(a.shape[0]):
        b[j, j] += ridge * a[j, j] + 1e-300
    chol, ok = cholesky_lower(b)
    if not ok:  # a zero column: lift its diagonal so that its coefficient is 0
        for j in range(a.shape[0]):
            if b[j, j] <= 0.0:
                b[j, j] = 1.0
        chol, ok = cholesky_lower(b)
    return chol, True


@numba.njit(cache=True, nogil=True)
def solve_lower(chol, b):
    """Solve L x = b (forward substitution)."""
    p = chol.shape[0]
    x = np.empty(p)
    for i in range(p):
        s = b[i]
        for k in range(i):
            s -= chol[i, k] * x[k]
        x[i] = s / chol[i, i]
    return x


@numba.njit(cache=True, nogil=True)
def solve_upper_t(chol, b):
    """Solve L' x = b (back substitution with the transpose of the lower factor)."""
    p = chol.shape[0]
    x = np.empty(p)
    for i in range(p - 1, -1, -1):
        s = b[i]
        for k in range(i + 1, p):
            s -= chol[k, i] * x[k]
        x[i] = s / chol[i, i]
    return x


@numba.njit(cache=True, nogil=True)
def gather(source, rows, cols, out):
    """out[a, b] = source[rows[a], cols[b]] into a preallocated (len(rows), len(cols)) array."""
    for a in range(rows.shape[0]):
        r = rows[a]
        for b in range(cols.shape[0]):
            out[a, b] = source[r, cols[b]]


@numba.njit(cache=True, nogil=True)
def crossprod(x):
    """X'X (p x p) by rows, skipping zero entries: imputation designs are mostly factor dummies,
    so this beats a dense (and, on a busy machine, thread-contended) BLAS call."""
    n, p = x.shape
    out = np.zeros((p, p))
    for i in range(n):
        for a in range(p):
            va = x[i, a]
            if va != 0.0:
                for b in range(a + 1):
                    out[a, b] += va * x[i, b]
    for a in range(p):
        for b in range(a):
            out[b, a] = out[a, b]
    return out


@numba.njit(cache=True, nogil=True)
def crossprod_xy(x, y):
    """X'y (p,) for x (n, p), y (n,)."""
    n, p = x.shape
    out = np.zeros(p)
    for i in range(n):
        yi = y[i]
        for a in range(p):
            out[a] += x[i, a] * yi
    return out


@numba.njit(cache=True, nogil=True)
def row_nonzeros(x):
    """The nonzero entries of x (n, p) row by row (CSR): (start (n + 1,), col (nnz,), val (nnz,)),
    row i's entries at start[i]:start[i + 1]. Imputation designs are mostly zero dummies, so the
    Newton kernels (multinomial, proportional odds) accumulate their Hessians over these only."""
    n, p = x.shape
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        count = 0
        for j in range(p):
            if x[i, j] != 0.0:
                count += 1
        start[i + 1] = start[i] + count
    col = np.empty(start[n], dtype=np.int64)
    val = np.empty(start[n])
    for i in range(n):
        t = start[i]
        for j in range(p):
            if x[i, j] != 0.0:
                col[t] = j
                val[t] = x[i, j]
                t += 1
    return start, col, val


# --------------------------------------------------------------------------------------------
# mice's remove.lindep


@numba.njit(cache=True, nogil=True)
def lindep_keep(x, y, eps, maxcor):
    """Predictors of x (n, p) to keep for target y (n,), as mice's ``remove.lindep``. Returns
    keep (p,) bool.

    None when var(y) < eps; else predictors with var > eps and cor(x, y) < maxcor. Exactly dependent
    predictors are then removed by a Cholesky pass in column order (see below); then, while the
    smallest/largest eigenvalue ratio of the kept predictors' correlation matrix is below eps, the
    predictor with the largest weight in the smallest eigenvector is dropped, as mice does.

    Steps: correlations from sparse/dense cross-products (``_lindep_correlations``), the Cholesky
    pass (``_lindep_cholesky_pass``), then the eigenvalue rule with only the extreme eigenpairs
    computed (``_lindep_eigen_drops``, LAPACK through ``engine.lapack``). Each kernel does its work
    in the same arithmetic order as a plain implementation, and the eigenvalue decisions are those
    of exact eigenvalues of a matrix within a few ulps (as numpy's eigh), so only ties at rounding
    level could be decided differently."""
    n, p = x.shape
    keep = np.zeros(p, dtype=np.bool_)
    if n < 2:
        return keep
    ym = 0.0
    for i in range(n):
        ym += y[i]
    ym /= n
    yss = 0.0
    for i in range(n):
        yss += (y[i] - ym) ** 2
    if yss / (n - 1) < eps:
        return keep
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
        return keep
    idx = np.flatnonzero(keep)
    k = idx.shape[0]
    if k < 2:
        return keep
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
    _lindep_eigen_drops(corr, live_flag, eps)
    for a in range(k):
        keep[idx[a]] = live_flag[a]
    return keep


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
    vec = np.ones(k) / np.sqrt(k)
    lam_max = 1.0
    for _ in range(30):
        # w = corr vec as a sum of rows (corr is symmetric): contiguous, vectorised loops; explicit
        # loops, as a BLAS call here would take OpenBLAS's lock
        w_vec = np.zeros(k)
        for b in range(k):
            vb = vec[b]
            for a in range(k):
                w_vec[a] += corr[b, a] * vb
        norm = np.sqrt(np.sum(w_vec * w_vec))
        if norm == 0.0:
            break
        new_lam = np.sum(vec * w_vec)
        vec = w_vec / norm
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
def _lindep_eigen_drops(corr, live_flag, eps):
    """mice's eigenvalue rule on the principal submatrix of corr (k, k) over live_flag (k,), which
    it updates: while lambda_min / lambda_max < eps, the column with the largest |component| of the
    eigenvector of lambda_min is dropped.

    Only these two eigenvalues and one eigenvector are needed, so a round is one tridiagonal
    reduction T = Q' A Q (engine.lapack), Sturm counts on T to decide the ratio
    (``_lindep_ratio_below``), and only when a column goes, lambda_min by bisection and its
    eigenvector by inverse iteration on T (the steps of LAPACK's dsyevx). After a drop, lambda_max
    of the smaller matrix is at most the previous one (Cauchy interlacing), so a Cholesky
    factorisation of A - eps * (previous bound) I that succeeds proves the ratio is now >= eps
    without a reduction; the usual last round costs a third of one."""
    live = np.flatnonzero(live_flag)
    m0 = live.shape[0]
    buf = np.empty(m0 * m0)
    lam_max_bound = -1.0  # an upper bound on lambda_max of the current matrix, once known
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
        if info != 0 or not np.all(np.isfinite(d)) or not np.all(np.isfinite(e[:m - 1])):
            # (non-finite correlations, from overflowing data: eigh raises, as numpy's does)
            drop = _lindep_drop_by_eigh(corr, live, eps)
        else:
            below, lam_max_bound = _lindep_ratio_below(d, e, eps)
            if not below:
                break
            lam_min, iblock, isplit, info_min = tridiagonal_eigenvalue(d, e, 1)
            z, info_vec = tridiagonal_eigenvector(d, e, lam_min, iblock, isplit)
            vec, info_q = apply_q(buf, tau, z)
            if info_min != 0 or info_vec != 0 or info_q != 0:
                drop = _lindep_drop_by_eigh(corr, live, eps)
            else:
                drop = np.argmax(np.abs(vec))
        if drop < 0:
            break
        live_flag[live[drop]] = False
        live = np.concatenate((live[:drop], live[drop + 1:]))
    return live_flag


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


@numba.njit(cache=True, nogil=True)
def _lindep_drop_by_eigh(corr, live, eps):
    """One round of the eigenvalue rule by a full eigen-decomposition (fallback should LAPACK's
    bisection or inverse iteration report a failure): position in live to drop, or -1."""
    m = live.shape[0]
    sub = np.empty((m, m))
    for a in range(m):
        for b in range(m):
            sub[a, b] = corr[live[a], live[b]]
    evals, evecs = np.linalg.eigh(sub)
    if evals[0] / evals[-1] >= eps:
        return -1
    return np.argmax(np.abs(evecs[:, 0]))


# --------------------------------------------------------------------------------------------
# Bayesian linear regression draw (norm, pmm)


@numba.njit(cache=True, nogil=True)
def bayes_linear_draw(x_obs, y_obs, z, chisq, ridge):
    """One draw of (beta*, sigma*) from the posterior of y = X beta + e under a flat prior.

    Rubin (1987, p. 167), as mice's ``.norm.draw``: beta_hat = (X'X)^-1 X'y (ridge only if X'X is
    singular), sigma*^2 = RSS / chisq with chisq ~ chi2(max(n - p, 1)), beta* = beta_hat +
    sigma* L^-T z where X'X = L L' (so cov(beta*) = sigma*^2 (X'X)^-1), z ~ N(0, I_p).
    Shapes: x_obs (n, p), y_obs (n,), z (p,). Returns (beta_hat, beta_star, sigma_star, ridged).
    """
    chol, ridged = cholesky_with_ridge(crossprod(x_obs), ridge)
    beta_hat, beta_star, sigma_star = bayes_linear_draw_given_cholesky(x_obs, y_obs, chol, z, chisq)
    return beta_hat, beta_star, sigma_star, ridged


@numba.njit(cache=True, nogil=True)
def bayes_linear_draw_given_cholesky(x_obs, y_obs, chol, z, chisq):
    """``bayes_linear_draw`` with the (ridged) Cholesky factor L of X'X already at hand (pmm on a
    factor needs it for ``quantify`` too). Returns (beta_hat, beta_star, sigma_star)."""
    xty = crossprod_xy(x_obs, y_obs)
    beta_hat = solve_upper_t(chol, solve_lower(chol, xty))
    resid = y_obs - x_obs @ beta_hat
    rss = 0.0
    for i in range(resid.shape[0]):
        rss += resid[i] * resid[i]
    sigma_star = np.sqrt(rss / chisq)
    beta_star = beta_hat + sigma_star * solve_upper_t(chol, z)
    return beta_hat, beta_star, sigma_star


# --------------------------------------------------------------------------------------------
# Predictive mean matching: sort once, binary search, k nearest with random tie-breaking


@numba.njit(cache=True, nogil=True)
def pmm_match(yhat_obs, yhat_mis, donors, u_pick, u_tie):
    """Donor (index into the observed cases) for every case to impute.

    The donor pool of a target t is the ``donors`` observed cases whose predictions are closest to
    t; when the k-th smallest distance d_k is shared by several cases, which of them enter the pool
    is random (per target). Drawing one of the pool uniformly is then: j = floor(u_pick * k); the
    j-th of the n_less cases with distance < d_k if j < n_less, else a uniform pick
    (``u_tie``) among the n_tie cases at distance exactly d_k. Cost O((n_obs + n_mis) log n_obs + n_mis k):
    one stable sort of yhat_obs, a binary search and a local expansion per target.
    Shapes: yhat_obs (n_obs,), yhat_mis (n_mis,), u_pick, u_tie (n_mis,) uniforms in [0, 1).
    """
    n_obs = yhat_obs.shape[0]
    k = min(donors, n_obs)
    order = np.argsort(yhat_obs, kind="mergesort")
    sorted_vals = yhat_obs[order]
    out = np.empty(yhat_mis.shape[0], dtype=np.int64)
    for i in range(yhat_mis.shape[0]):
        t = yhat_mis[i]
        hi = np.searchsorted(sorted_vals, t)
        lo = hi - 1
        d_k = 0.0
        for _ in range(k):  # take the k nearest by merging outward from t
            if lo < 0:
                d_k = abs(sorted_vals[hi] - t)
                hi += 1
            elif hi >= n_obs:
                d_k = abs(sorted_vals[lo] - t)
                lo -= 1
            else:
                d_lo = abs(sorted_vals[lo] - t)
                d_hi = abs(sorted_vals[hi] - t)
                if d_lo <= d_hi:
                    d_k = d_lo
                    lo -= 1
                else:
                    d_k = d_hi
                    hi += 1
        # window of all cases with distance <= d_k
        a = lo + 1
        while a > 0 and abs(sorted_vals[a - 1] - t) <= d_k:
            a -= 1
        b = hi - 1
        while b < n_obs - 1 and abs(sorted_vals[b + 1] - t) <= d_k:
            b += 1
        # the strictly closer cases form a contiguous sub-window [a2, b2]
        a2 = a
        while a2 <= b and abs(sorted_vals[a2] - t) == d_k:
            a2 += 1
        b2 = b
        while b2 >= a2 and abs(sorted_vals[b2] - t) == d_k:
            b2 -= 1
        n_less = b2 - a2 + 1 if b2 >= a2 else 0
        n_tie = (b - a + 1) - n_less
        j = int(u_pick[i] * k)
        if j >= k:
            j = k - 1
        if j < n_less:
            pos = a2 + j
        else:
            m = int(u_tie[i] * n_tie)
            if m >= n_tie:
                m = n_tie - 1
            n_left_ties = a2 - a  # ties below t come first, then those above
            pos = a + m if m < n_left_ties else b2 + 1 + (m - n_left_ties)
        out[i] = order[pos]
    return out


# --------------------------------------------------------------------------------------------
# Logistic regression (logreg) and multinomial logit (polyreg)


@numba.njit(cache=True, nogil=True)
def logistic_irls(x, y, w, maxit, tol):
    """Weighted logistic regression by IRLS (R's ``glm.fit``: start mu = (w y + 1/2)/(w + 1),
    stop when |dev - dev_old| / (|dev| + 0.1) < tol). Shapes: x (n, p), y (n,) in {0, 1}, w (n,).
    Returns (beta (p,), L (p, p) lower Cholesky factor of X'WX at the estimate, converged)."""
    n, p = x.shape
    eta = np.empty(n)
    for i in range(n):
        mu0 = (w[i] * y[i] + 0.5) / (w[i] + 1.0)
        eta[i] = np.log(mu0 / (1.0 - mu0))
    beta = np.zeros(p)
    dev_old = np.inf
    converged = False
    chol = np.eye(p)
    for _ in range(maxit):
        mu = 1.0 / (1.0 + np.exp(-eta))
        wx = np.empty((n, p))
        zw = np.empty(n)
        for i in range(n):
            var = max(mu[i] * (1.0 - mu[i]), 1e-12)
            wi = w[i] * var
            z = eta[i] + (y[i] - mu[i]) / var
            sw = np.sqrt(wi)
            for j in range(p):
                wx[i, j] = sw * x[i, j]
            zw[i] = sw * z
        xtwx = wx.T @ wx
        chol, _ = cholesky_with_ridge(xtwx, 1e-10)
        beta = solve_upper_t(chol, solve_lower(chol, wx.T @ zw))
        eta = x @ beta
        dev = 0.0
        for i in range(n):
            mu_i = 1.0 / (1.0 + np.exp(-eta[i]))
            mu_i = min(max(mu_i, 1e-300), 1.0 - 1e-16)
            if y[i] > 0.5:
                dev -= 2.0 * w[i] * np.log(mu_i)
            else:
                dev -= 2.0 * w[i] * np.log(1.0 - mu_i)
        if abs(dev - dev_old) / (abs(dev) + 0.1) < tol:
            converged = True
            break
        dev_old = dev
    # information matrix at the final estimate
    mu = 1.0 / (1.0 + np.exp(-eta))
    wx = np.empty((n, p))
    for i in range(n):
        sw = np.sqrt(w[i] * max(mu[i] * (1.0 - mu[i]), 1e-12))
        for j in range(p):
            wx[i, j] = sw * x[i, j]
    chol, _ = cholesky_with_ridge(wx.T @ wx, 1e-10)
    return beta, chol, converged


@numba.njit(cache=True, nogil=True)
def _multinom_probs(x, beta):
    """Softmax probabilities (n, K) of the linear predictors x @ beta (beta (p, K), column 0 zero)."""
    eta = x @ beta
    n, k = eta.shape
    probs = np.empty((n, k))
    for i in range(n):
        mx = eta[i, 0]
        for c in range(1, k):
            mx = max(mx, eta[i, c])
        s = 0.0
        for c in range(k):
            probs[i, c] = np.exp(eta[i, c] - mx)
            s += probs[i, c]
        for c in range(k):
            probs[i, c] /= s
    return probs


@numba.njit(cache=True, nogil=True)
def _multinom_loglik(probs, y, w):
    ll = 0.0
    for i in range(y.shape[0]):
        ll += w[i] * np.log(max(probs[i, y[i]], 1e-300))
    return ll


@numba.njit(cache=True, nogil=True)
def multinom_newton(x, y, w, n_classes, beta0, maxit, tol):
    """Weighted multinomial logit by Newton-Raphson with step halving (the MLE that R's
    ``nnet::multinom`` approaches by BFGS; same relative tolerance 1e-8 on the log likelihood).
    Class 0 is the reference (its coefficients are 0).

    The Hessian block of classes (a, b) is X' diag(w_i p_ia (d_ab - p_ib)) X, accumulated row by
    row over the row's nonzero entries only (imputation designs are mostly zero dummies), for all
    class pairs at once, into the lower triangle (p(p+1)/2 entries) of each block.
    Shapes: x (n, p), y (n,) int codes in [0, K), w (n,), beta0 (p, K) start. Returns beta (p, K)."""
    n, p = x.shape
    k1 = n_classes - 1
    n_tri = p * (p + 1) // 2
    nz_count, nz_col, nz_val = row_nonzeros(x)
    n_pairs = k1 * (k1 + 1) // 2
    beta = beta0.copy()
    probs = _multinom_probs(x, beta)
    ll = _multinom_loglik(probs, y, w)
    q_dim = p * k1
    weights = np.empty((n, n_pairs))
    for _ in range(maxit):
        grad = np.zeros(q_dim)
        for i in range(n):
            for a in range(k1):
                r = w[i] * ((1.0 if y[i] == a + 1 else 0.0) - probs[i, a + 1])
                for j in range(p):
                    grad[a * p + j] += r * x[i, j]
        for i in range(n):
            pair = 0
            for a in range(k1):
                for b in range(a + 1):
                    weights[i, pair] = w[i] * probs[i, a + 1] * ((1.0 if a == b else 0.0) - probs[i, b + 1])
                    pair += 1
        blocks = np.zeros((n_tri, n_pairs))
        for i in range(n):
            for u in range(nz_count[i], nz_count[i + 1]):
                j = nz_col[u]
                base = j * (j + 1) // 2
                xj = nz_val[u]
                for v in range(nz_count[i], u + 1):
                    prod = xj * nz_val[v]
                    q = base + nz_col[v]
                    for pair in range(n_pairs):
                        blocks[q, pair] += prod * weights[i, pair]
        hess = np.zeros((q_dim, q_dim))
        pair = 0
        for a in range(k1):
            for b in range(a + 1):
                q = 0
                for j in range(p):
                    for l in range(j + 1):
                        v = blocks[q, pair]
                        hess[a * p + j, b * p + l] = v
                        hess[a * p + l, b * p + j] = v
                        hess[b * p + l, a * p + j] = v
                        hess[b * p + j, a * p + l] = v
                        q += 1
                pair += 1
        chol, _ = cholesky_with_ridge(hess, 1e-8)
        step = solve_upper_t(chol, solve_lower(chol, grad))
        # Newton decrement: the predicted gain of this step; when it is below the tolerance the
        # step is taken and the iteration stops (saves the confirming extra step)
        decrement = 0.0
        for q in range(q_dim):
            decrement += grad[q] * step[q]
        scale = 1.0
        improved = False
        new_beta = beta.copy()
        new_probs = probs
        new_ll = ll
        for _h in range(30):
            for a in range(k1):
                for j in range(p):
                    new_beta[j, a + 1] = beta[j, a + 1] + scale * step[a * p + j]
            new_probs = _multinom_probs(x, new_beta)
            new_ll = _multinom_loglik(new_probs, y, w)
            if new_ll >= ll - 1e-12 * abs(ll):
                improved = True
                break
            scale *= 0.5
        if not improved:
            break
        change = new_ll - ll
        beta = new_beta
        probs = new_probs
        ll = new_ll
        if abs(change) < tol * (abs(ll) + tol) or 0.5 * decrement < tol * (abs(ll) + tol):
            break
    return beta


@numba.njit(cache=True, nogil=True)
def draw_categories(probs, u):
    """Class per row drawn from the row's probabilities with one uniform each (mice's
    ``1 + sum(u > cumsum(p))``). Shapes: probs (n, K), u (n,). Returns int codes (n,)."""
    n, k = probs.shape
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        c = 0
        acc = probs[i, 0]
        while c < k - 1 and u[i] > acc:
            c += 1
            acc += probs[i, c]
        out[i] = c
    return out


# --------------------------------------------------------------------------------------------
# Plain numpy pieces (small p x p problems; LAPACK does the work)


def augment(x: np.ndarray, y_codes: np.ndarray, n_classes: int,
            x_other: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mice's ``augment()`` (White, Daniel & Royston 2010) against perfect prediction.

    For every predictor j and class c, two pseudo-rows with predictor j at mean +- sd/2 (the other
    predictors at their means, all clipped to the predictor's range), target c, each with weight
    (p + 1) / (2 p K). ``x``: observed rows without intercept (n, p); ``x_other``: the predictors of
    the rows whose target is missing (m, p): as in mice, the means, sds and ranges come from all
    n + m rows. Returns (x_aug, y_aug, w_aug) for the observed plus 2pK pseudo rows.
    """
    n, p = x.shape
    if p == 0:
        return x, y_codes, np.ones(n)
    classes = np.unique(y_codes)
    k = classes.shape[0]
    rows = x if x_other is None or x_other.shape[0] == 0 else np.vstack([x, x_other])
    mean = rows.mean(axis=0)
    sd = rows.std(axis=0, ddof=1) if rows.shape[0] > 1 else np.zeros(p)
    lo, hi = rows.min(axis=0), rows.max(axis=0)
    n_rows = 2 * p * k
    pseudo = np.tile(mean, (n_rows, 1))
    row = 0
    for j in range(p):
        for _c in range(k):
            pseudo[row, j] += 0.5 * sd[j]
            pseudo[row + 1, j] -= 0.5 * sd[j]
            row += 2
    pseudo = np.clip(pseudo, lo, hi)
    y_pseudo = np.tile(np.repeat(classes, 2), p)
    x_aug = np.vstack([x, pseudo])
    y_aug = np.concatenate([y_codes, y_pseudo.astype(y_codes.dtype)])
    w_aug = np.concatenate([np.ones(n), np.full(n_rows, (p + 1) / n_rows)])
    return x_aug, y_aug, w_aug
