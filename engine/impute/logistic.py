"""The categorical imputation methods: ``logreg`` (logistic regression) and ``polyreg`` (multinomial
logit), with mice's augmentation, as R mice's ``mice.impute.logreg`` / ``mice.impute.polyreg``.

Sources: van Buuren (2018), sec. 3.5; White, Daniel & Royston (2010) for the augmented data; R's
``glm.fit`` IRLS; the multinomial MLE by Newton steps (mice uses nnet's BFGS: same optimum).
"""

from __future__ import annotations

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._linalg import row_nonzeros, solve_lower, solve_upper_t, cholesky_with_ridge



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
