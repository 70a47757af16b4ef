"""The linear imputation methods: ``norm`` (Bayesian linear regression draw) and ``pmm``
(predictive mean matching), as R mice's ``mice.impute.norm`` / ``mice.impute.pmm``.

Sources: Rubin (1987, p. 167) and mice 3.15's ``.norm.draw`` for the draw; van Buuren (2018), *Flexible
Imputation of Missing Data*, 2nd ed., sec. 3.4, and mice's ``matchindex`` for type-1 matching with 5
donors and random tie-breaking. Random numbers are drawn by the caller and passed in, so a slow
reference given the same numbers makes the same choices (the tests check this).
"""

from __future__ import annotations

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._linalg import cholesky_with_ridge, crossprod, crossprod_xy, solve_lower, solve_upper_t

#: mice's ridge: added as ``ridge * diag(X'X)`` when X'X cannot be factored (estimice).
RIDGE = 1e-5



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
#
# The sort is NumPy's (outside Numba) and the search a plain loop, rather than
# np.argsort(kind="mergesort") and np.searchsorted inside the kernel: Numba's implementations of
# those two (a generic merge sort with its comparison functions, the searchsorted variants) cost
# ~2 CPU s to compile in every fresh environment, more than the rest of pmm_match (issue 16). A
# stable sort's permutation is unique and the search returns the same position, so the donors
# are the same.


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
    order = np.argsort(yhat_obs, kind="stable")
    return _pmm_match_sorted(yhat_obs[order], order, yhat_mis, donors, u_pick, u_tie)


@numba.njit(cache=True, nogil=True)
def _pmm_match_sorted(sorted_vals, order, yhat_mis, donors, u_pick, u_tie):
    """``pmm_match`` given order = np.argsort(yhat_obs, kind="stable") and sorted_vals =
    yhat_obs[order] (n_obs,)."""
    n_obs = sorted_vals.shape[0]
    k = min(donors, n_obs)
    out = np.empty(yhat_mis.shape[0], dtype=np.int64)
    for i in range(yhat_mis.shape[0]):
        t = yhat_mis[i]
        # hi = np.searchsorted(sorted_vals, t): the first position not before t (NaN last)
        lo = 0
        hi = n_obs
        while lo < hi:
            mid = (lo + hi) >> 1
            v = sorted_vals[mid]
            if v < t or (t != t and v == v):
                lo = mid + 1
            else:
                hi = mid
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
