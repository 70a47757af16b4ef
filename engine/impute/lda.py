"""Linear discriminant analysis posteriors for ``method="lda"`` imputation (mice's ``mice.impute.lda``).

mice fits ``MASS::lda(x, y, subset = ry)`` on the observed cases and draws each missing case's
class from ``predict(fit, x[wy, ], method = "debiased")$posterior``. The model (Ripley 1996,
*Pattern Recognition and Neural Networks*, sec. 2.4; Venables & Ripley 2002, MASS 4th ed., sec.
12.1): classes share the within-class covariance S = W / (N - g), W the pooled within-class
scatter; priors are the observed class proportions; the debiased discriminant score of class c at
x is f (x - m_c)' S^-1 (x - m_c) / 2 - log(prior_c) - d / n_c with f = (N - g - d - 1) / (N - g)
and d the discriminant space's dimension (rank of S, at most g - 1), and the posterior is the
softmax of minus the scores.

As MASS, predictors are scaled to unit within-class standard deviation (divisor N - 1) and the
directions of the scaled covariance whose eigenvalue is at most tol^2 = 1e-8 are dropped (MASS:
singular values of the scaled, centred data at most 1e-4, "variables are collinear"). MASS stops
when a predictor is constant within every class; here such a predictor only loses its direction.

Shapes: x_obs (N, p) float64, classes (N,) int64 codes 0..n_classes-1, x_new (n, p).
"""

from __future__ import annotations

import numba

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
import numpy as np

#: MASS::lda's ``tol``: singular values of the scaled within-class data at or below it are dropped.
LDA_TOL = 1e-4


@numba.njit(cache=True, nogil=True)
def class_moments(x, classes, n_classes):
    """Class counts (g,), class means (g, p) and the pooled within-class scatter
    W = sum_i (x_i - m_{c_i})(x_i - m_{c_i})' (p, p).

    W = sum_i z_i z_i' - sum_c n_c mz_c mz_c' with z = x - shift, where shift is a column's overall
    mean for columns with values other than 0/1 (the shift cancels in W and keeps the subtraction
    well conditioned) and 0 for 0/1 columns, whose zeros are skipped: a design of factor dummies
    is mostly zeros.
    """
    n, p = x.shape
    shift = np.zeros(p)
    for j in range(p):
        binary = True
        total = 0.0
        for i in range(n):
            v = x[i, j]
            total += v
            if v != 0.0 and v != 1.0:
                binary = False
        if not binary:
            shift[j] = total / n
    counts = np.zeros(n_classes)
    sums = np.zeros((n_classes, p))
    scatter = np.zeros((p, p))
    nz = np.empty(p, dtype=np.int64)
    nz_val = np.empty(p)
    for i in range(n):
        c = classes[i]
        counts[c] += 1.0
        cnt = 0
        for a in range(p):
            v = x[i, a] - shift[a]
            if v != 0.0:
                nz[cnt] = a
                nz_val[cnt] = v
                cnt += 1
                sums[c, a] += v
        for u in range(cnt):
            a = nz[u]
            va = nz_val[u]
            for w in range(u + 1):
                scatter[a, nz[w]] += va * nz_val[w]
    means = np.zeros((n_classes, p))
    for c in range(n_classes):
        if counts[c] > 0:
            for a in range(p):
                means[c, a] = sums[c, a] / counts[c]
    for a in range(p):
        for b in range(a + 1):
            s = scatter[a, b]
            for c in range(n_classes):
                s -= counts[c] * means[c, a] * means[c, b]
            scatter[a, b] = s
            scatter[b, a] = s
    for c in range(n_classes):
        for a in range(p):
            means[c, a] += shift[a]
    return counts, means, scatter


def lda_posterior(x_obs: np.ndarray, classes: np.ndarray, n_classes: int, x_new: np.ndarray) -> np.ndarray:
    """Posterior class probabilities (n, n_classes) of ``MASS::lda`` + ``predict(method =
    "debiased")`` for the rows of x_new. Classes absent among the observed get probability 0;
    with one observed class (or no predictors) every row gets the observed class proportions."""
    classes = np.ascontiguousarray(classes, dtype=np.int64)
    n_obs, p = x_obs.shape
    counts_all = np.bincount(classes, minlength=n_classes).astype(float)
    present = np.flatnonzero(counts_all > 0)
    g = present.shape[0]
    out = np.zeros((x_new.shape[0], n_classes))
    if g == 1 or p == 0:
        out[:] = counts_all / counts_all.sum()
        return out
    counts, means, scatter = class_moments(np.ascontiguousarray(x_obs, dtype=float), classes, n_classes)
    counts, means = counts[present], means[present]
    within_sd = np.sqrt(np.maximum(np.diag(scatter), 0.0) / max(n_obs - 1, 1))  # MASS's f1
    usable = within_sd > 0.0  # constant within every class: no direction to keep
    scale = np.where(usable, within_sd, 1.0)
    # scaled within-class covariance with MASS's divisor: X'X of X = (x - m) diag(1/f1) / sqrt(N - g)
    scaled_cov = scatter / np.outer(scale, scale) / max(n_obs - g, 1)
    scaled_cov[~usable, :] = 0.0
    scaled_cov[:, ~usable] = 0.0
    evals, evecs = np.linalg.eigh(scaled_cov)
    keep = evals > LDA_TOL**2
    if not keep.any():
        out[:] = counts_all / counts_all.sum()
        return out
    sphere = (evecs[:, keep] / np.sqrt(evals[keep])) / scale[:, None]  # S^-1/2 on kept directions
    zm = means @ sphere
    zx = x_new @ sphere
    d = min(int(keep.sum()), g - 1)
    factor = (n_obs - g - d - 1) / (n_obs - g) if n_obs - g > 0 else 1.0
    prior = counts / counts.sum()
    score = 0.5 * (zm**2).sum(axis=1)[None, :] - zx @ zm.T  # class-dependent part of |zx - zm|^2 / 2
    score = factor * score - (np.log(prior) - d / counts)[None, :]
    score -= score.min(axis=1, keepdims=True)
    post = np.exp(-score)
    post /= post.sum(axis=1, keepdims=True)
    out[:, present] = post
    return out
