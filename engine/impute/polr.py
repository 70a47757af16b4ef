"""Proportional-odds (cumulative logit) regression for ordered factors: the model of MASS's
``polr`` and of mice's ``mice.impute.polr``.

Model (McCullagh 1980, "Regression models for ordinal data", JRSS B 42, 109-142; Venables &
Ripley 2002, MASS 4th ed., sec. 7.3), MASS::polr's parameterisation: for classes 0..K-1 and
cutpoints zeta_0 < ... < zeta_{K-2},

    logit P(Y <= j | x) = zeta_j - x'beta,    j = 0..K-2,

no intercept in x (the cutpoints play its part). P(Y = j | x) = F(zeta_j - eta) - F(zeta_{j-1} - eta)
with F the logistic cdf, eta = x'beta, zeta_{-1} = -inf, zeta_{K-1} = +inf. statsmodels'
``OrderedModel(distr="logit")`` has the same signs; it reports the cutpoints as zeta_0 followed by
log(zeta_j - zeta_{j-1}).

Fit (``polr_newton``): weighted maximum likelihood by Newton-Raphson with the exact Hessian, in
(beta, zeta). The log likelihood is concave in (beta, zeta) for a log-concave F (Pratt 1981, JASA
76, 103-106), so the Newton direction is an ascent direction; each step is halved until the
cutpoints stay strictly increasing and the log likelihood does not decrease. The start is beta = 0
and zeta from the weighted marginal cumulative proportions (the MLE when beta = 0). MASS instead
runs BFGS (``optim``, reltol 1e-8) over (beta, zeta_0, log increments) from a logistic-regression
start: the same MLE, to optim's precision. Per-observation probabilities use
F(u) - F(l) = F(u) F(-l) (1 - exp(l - u)), which keeps full relative precision in the tails.

Imputation (van Buuren 2018, *Flexible Imputation of Missing Data*, 2nd ed., sec. 3.5-3.6; mice
3.15 ``mice.impute.polr``): fit on the observed cases plus ``augment()``'s weighted pseudo-rows,
without drawing the parameters, then one uniform per missing case picks the class
``1 + #{j : u > cumsum(p)_j}`` (``engine.impute.logistic.draw_categories``).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.errors import DataError
from engine._linalg import cholesky_with_ridge, row_nonzeros, solve_lower, solve_upper_t


class PolrFit(NamedTuple):
    """A fitted proportional-odds model: beta (p,), zeta (K-1,) increasing cutpoints, the weighted
    log likelihood, the Newton iterations taken and whether the iteration met its tolerance."""

    beta: np.ndarray
    zeta: np.ndarray
    loglik: float
    iterations: int
    converged: bool


# --------------------------------------------------------------------------------------------
# Scalar pieces of the logistic cdf, accurate in both tails


@numba.njit(cache=True, nogil=True)
def _logistic_cdf(z):
    """F(z) = 1 / (1 + exp(-z)); exact 0/1 at -inf/+inf."""
    if z >= 0.0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@numba.njit(cache=True, nogil=True)
def _interval_prob(lower, upper):
    """F(upper) - F(lower) for lower < upper (either may be infinite), as
    F(upper) F(-lower) (1 - exp(lower - upper)): no cancellation when both are in one tail."""
    if lower == -np.inf:
        return _logistic_cdf(upper)
    if upper == np.inf:
        return _logistic_cdf(-lower)
    return _logistic_cdf(upper) * _logistic_cdf(-lower) * (-np.expm1(lower - upper))


@numba.njit(cache=True, nogil=True)
def _cut(zeta, j):
    """Cutpoint j with the conventions zeta_{-1} = -inf, zeta_{K-1} = +inf."""
    if j < 0:
        return -np.inf
    if j >= zeta.shape[0]:
        return np.inf
    return zeta[j]


# --------------------------------------------------------------------------------------------
# Kernels


@numba.njit(cache=True, nogil=True)
def polr_loglik(x, y, w, beta, zeta):
    """Weighted log likelihood sum_i w_i log P(Y = y_i | x_i); -inf when the cutpoints are not
    strictly increasing or some weighted case has probability 0.
    Shapes: x (n, p), y (n,) int codes in [0, K), w (n,), beta (p,), zeta (K-1,)."""
    for j in range(1, zeta.shape[0]):
        if not zeta[j] > zeta[j - 1]:
            return -np.inf
    n, p = x.shape
    ll = 0.0
    for i in range(n):
        if w[i] == 0.0:
            continue
        eta = 0.0
        for j in range(p):
            eta += x[i, j] * beta[j]
        prob = _interval_prob(_cut(zeta, y[i] - 1) - eta, _cut(zeta, y[i]) - eta)
        if not prob > 0.0:
            return -np.inf
        ll += w[i] * np.log(prob)
    return ll


@numba.njit(cache=True, nogil=True)
def polr_probabilities(x, beta, zeta):
    """Class probabilities (n, K) of the rows of x (n, p) under beta (p,), zeta (K-1,)."""
    n, p = x.shape
    k = zeta.shape[0] + 1
    probs = np.empty((n, k))
    for i in range(n):
        eta = 0.0
        for j in range(p):
            eta += x[i, j] * beta[j]
        for c in range(k):
            probs[i, c] = _interval_prob(_cut(zeta, c - 1) - eta, _cut(zeta, c) - eta)
    return probs


@numba.njit(cache=True, nogil=True)
def _gradient_hessian(x, nz_start, nz_col, y, w, beta, zeta):
    """Gradient (p + q,) and Hessian (p + q, p + q) of the weighted log likelihood in
    (beta, zeta), q = K - 1. With u = zeta_y - eta, l = zeta_{y-1} - eta, P = F(u) - F(l),
    a = f(u)/P, b = f(l)/P (f = F(1 - F)): d log P / du = a, d log P / dl = -b,
    d2/du2 = a (1 - 2F(u)) - a^2, d2/dl2 = -b (1 - 2F(l)) - b^2, d2/du dl = a b; and
    du/dbeta = dl/dbeta = -x. The beta block X' diag(c) X runs over each row's nonzero entries
    (``nz_start``/``nz_col``: CSR pattern of x), imputation designs being mostly zero dummies."""
    n, p = x.shape
    q = zeta.shape[0]
    dim = p + q
    grad = np.zeros(dim)
    hess = np.zeros((dim, dim))
    for i in range(n):
        wi = w[i]
        if wi == 0.0:
            continue
        eta = 0.0
        for t in range(nz_start[i], nz_start[i + 1]):
            eta += x[i, nz_col[t]] * beta[nz_col[t]]
        yi = y[i]
        upper = _cut(zeta, yi) - eta
        lower = _cut(zeta, yi - 1) - eta
        prob = _interval_prob(lower, upper)
        a = 0.0
        huu = 0.0
        if yi < q:
            fu = _logistic_cdf(upper)
            a = fu * _logistic_cdf(-upper) / prob
            huu = a * (1.0 - 2.0 * fu) - a * a
        b = 0.0
        hll = 0.0
        if yi > 0:
            fl = _logistic_cdf(lower)
            b = fl * _logistic_cdf(-lower) / prob
            hll = -b * (1.0 - 2.0 * fl) - b * b
        hul = a * b
        # cutpoints
        if yi < q:
            grad[p + yi] += wi * a
            hess[p + yi, p + yi] += wi * huu
        if yi > 0:
            grad[p + yi - 1] -= wi * b
            hess[p + yi - 1, p + yi - 1] += wi * hll
        if 0 < yi < q:
            hess[p + yi, p + yi - 1] += wi * hul
            hess[p + yi - 1, p + yi] += wi * hul
        # coefficients
        g_eta = -(a - b) * wi
        c_bb = wi * (huu + 2.0 * hul + hll)
        c_bu = -wi * (huu + hul)
        c_bl = -wi * (hul + hll)
        for s in range(nz_start[i], nz_start[i + 1]):
            j = nz_col[s]
            xj = x[i, j]
            grad[j] += g_eta * xj
            for t in range(nz_start[i], s + 1):
                hess[j, nz_col[t]] += c_bb * xj * x[i, nz_col[t]]
            if yi < q:
                hess[j, p + yi] += c_bu * xj
            if yi > 0:
                hess[j, p + yi - 1] += c_bl * xj
    # mirror the beta-beta lower triangle and the beta-zeta block
    for j in range(p):
        for k in range(j):
            hess[k, j] = hess[j, k]
        for c in range(q):
            hess[p + c, j] = hess[j, p + c]
    return grad, hess


@numba.njit(cache=True, nogil=True)
def polr_newton(x, y, w, beta0, zeta0, maxit, tol):
    """Weighted proportional-odds MLE by Newton-Raphson with step halving (see the module
    docstring). Stops after the step whose Newton decrement g'(-H)^-1 g is below
    tol * (|loglik| + 1) (converged), when no halved step (30 halvings) improves the log
    likelihood (converged only if the decrement was already below 1e-6 times that bound), or
    after maxit steps (not converged).
    Shapes: x (n, p), y (n,) int codes in [0, K), w (n,), beta0 (p,), zeta0 (K-1,) strictly
    increasing. Returns (beta, zeta, loglik, iterations, converged)."""
    n, p = x.shape
    q = zeta0.shape[0]
    nz_start, nz_col, _ = row_nonzeros(x)
    beta = beta0.copy()
    zeta = zeta0.copy()
    ll = polr_loglik(x, y, w, beta, zeta)
    if not np.isfinite(ll):
        return beta, zeta, ll, 0, False
    new_beta = np.empty(p)
    new_zeta = np.empty(q)
    for iteration in range(1, maxit + 1):
        grad, hess = _gradient_hessian(x, nz_start, nz_col, y, w, beta, zeta)
        neg = -hess
        chol, _ = cholesky_with_ridge(neg, 1e-10)
        step = solve_upper_t(chol, solve_lower(chol, grad))
        decrement = 0.0
        for k in range(p + q):
            decrement += grad[k] * step[k]
        if not np.isfinite(decrement):
            return beta, zeta, ll, iteration, False
        bound = tol * (abs(ll) + 1.0)
        scale = 1.0
        improved = False
        new_ll = ll
        for _h in range(30):
            for j in range(p):
                new_beta[j] = beta[j] + scale * step[j]
            for c in range(q):
                new_zeta[c] = zeta[c] + scale * step[p + c]
            new_ll = polr_loglik(x, y, w, new_beta, new_zeta)
            if np.isfinite(new_ll) and new_ll >= ll - 1e-13 * abs(ll):
                improved = True
                break
            scale *= 0.5
        if not improved:
            return beta, zeta, ll, iteration, decrement < 1e-6 * bound
        beta[:] = new_beta
        zeta[:] = new_zeta
        ll = new_ll
        if decrement < bound:
            return beta, zeta, ll, iteration, True
    return beta, zeta, ll, maxit, False


# --------------------------------------------------------------------------------------------
# Python layer


def start_cutpoints(y: np.ndarray, w: np.ndarray, n_classes: int) -> np.ndarray:
    """zeta_j = logit of the weighted proportion of cases in classes <= j (the MLE at beta = 0)."""
    totals = np.bincount(y, weights=w, minlength=n_classes)[:n_classes]
    cumulative = np.cumsum(totals)[:-1] / totals.sum()
    return np.log(cumulative) - np.log1p(-cumulative)


def fit_polr(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, n_classes: int | None = None,
             beta0: np.ndarray | None = None, zeta0: np.ndarray | None = None, maxit: int = 100,
             tol: float = 1e-12) -> PolrFit:
    """Fit logit P(Y <= j | x) = zeta_j - x'beta by weighted maximum likelihood.

    ``x``: (n, p) design without intercept; ``y``: (n,) class codes 0..K-1; ``w``: (n,)
    non-negative case weights (default 1); ``n_classes``: K (default max(y) + 1). Every class needs
    positive total weight (else a cutpoint's MLE is infinite); K >= 2. ``beta0``/``zeta0``: a
    start (default beta = 0, ``start_cutpoints``). Returns a ``PolrFit``."""
    x = np.require(x, dtype=float, requirements=["C", "W"])  # one compiled signature for all callers
    if x.ndim != 2:
        raise DataError(f"x must be a 2-d design matrix, got shape {x.shape}")
    y = np.asarray(y)
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y must be {x.shape[0]} integer class codes, got shape {y.shape}, dtype {y.dtype}")
    y = np.require(y, dtype=np.int64, requirements=["C", "W"])
    w = np.ones(x.shape[0]) if w is None else np.require(w, dtype=float, requirements=["C", "W"])
    if w.shape != y.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise DataError("w must hold one finite, non-negative weight per case")
    if not np.all(np.isfinite(x)):
        raise DataError("x has missing or infinite values")
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if k < 2 or y.min() < 0 or y.max() >= k:
        raise DataError(f"y must hold class codes in 0..{k - 1} with at least 2 classes")
    totals = np.bincount(y, weights=w, minlength=k)
    if np.any(totals <= 0):
        empty = np.flatnonzero(totals <= 0).tolist()
        raise DataError(f"classes {empty} have no (weighted) cases; their cutpoints have no finite MLE")
    p = x.shape[1]
    beta0 = np.zeros(p) if beta0 is None else np.require(beta0, dtype=float, requirements=["C", "W"])
    zeta0 = start_cutpoints(y, w, k) if zeta0 is None else np.require(zeta0, dtype=float, requirements=["C", "W"])
    if beta0.shape != (p,) or zeta0.shape != (k - 1,) or np.any(np.diff(zeta0) <= 0):
        raise DataError(f"start values need beta0 of length {p} and {k - 1} strictly increasing cutpoints")
    beta, zeta, loglik, iterations, converged = polr_newton(x, y, w, beta0, zeta0, int(maxit), float(tol))
    converged = bool(converged) and np.all(np.isfinite(beta)) and np.all(np.isfinite(zeta)) and np.isfinite(loglik)
    return PolrFit(beta, zeta, float(loglik), int(iterations), bool(converged))


def predict_probabilities(x: np.ndarray, beta: np.ndarray, zeta: np.ndarray) -> np.ndarray:
    """Class probabilities (n, K) of the rows of x (n, p) under a fit's beta (p,) and zeta (K-1,)
    (MASS's ``predict(fit, newdata, type = "probs")``)."""
    x = np.require(x, dtype=float, requirements=["C", "W"])
    beta = np.require(beta, dtype=float, requirements=["C", "W"])
    zeta = np.require(zeta, dtype=float, requirements=["C", "W"])
    if x.ndim != 2 or x.shape[1] != beta.shape[0]:
        raise DataError(f"x must have {beta.shape[0]} columns (one per coefficient), got shape {x.shape}")
    return polr_probabilities(x, beta, zeta)
