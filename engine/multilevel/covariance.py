"""The covariance step of a random-effect term under brms's own prior: (sd, R) | the random coefficients.

Term t of group g has q coefficients per level, r_l ~ N(0, Sigma), Sigma = D R D, D = diag(sd). brms's
prior: independent (half-)priors on each sd_j (default half student_t(3, 0, s)) and R ~ LKJ(eta)
(density proportional to det(R)^(eta - 1)); uncorrelated terms (q = 1, or ``||``) have no R.

Parametrisation (Lewandowski, Kurowicka & Joe 2009, "Generating random correlation matrices based
on vines and extended onion method", J. Multivariate Anal. 100(9), section 3.2; Stan's
``cholesky_corr_constrain``): theta = (log sd_1..q, y_ij for i > j), canonical partial correlations
z_ij = tanh(y_ij) and the Cholesky factor L of R row by row, L[i, j] = z_ij sqrt(1 - sum_{k<j} L[i,k]^2),
L[i, i] = sqrt(1 - sum_{k<i} L[i,k]^2). z_ij is the partial correlation of i and j given 0..j-1 (a
C-vine); under LKJ(eta) these are independent, z_ij ~ Beta(b_j, b_j) on (-1, 1), b_j = eta + (q - 2 - j)/2
(0-based column j): the marginal of a correlation is b_0 = eta - 1 + q/2, as LKJ state. With the tanh
Jacobian 1 - z^2 the log prior of y_ij is b_j log(1 - z_ij^2); with the log Jacobian the log prior of
log sd_j is log p(sd_j) + log sd_j.

Given the J levels' coefficients with scatter S = sum_l r_l r_l' (q x q), the log target is

    -J (sum_j log sd_j + sum_j log L_jj) - tr(Sigma^{-1} S) / 2 + log priors (above),

O(q^3) per evaluation whatever J. Every coordinate of theta takes one slice-sampling update (Neal 2003,
"Slice sampling", Ann. Statist. 31(3): stepping out, shrinkage) in turn. Each update leaves the
conditional p(theta | r) invariant, so the sweep leaves brms's prior times the Gaussian likelihood of
the coefficients invariant: the step is exact (no inverse-Wishart surrogate). With r drawn from its
prior (no data: ``sample_prior="only"``) the chain's stationary law is brms's prior itself, which
tests/test_slopes.py checks against the LKJ and half-t marginals.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.multilevel.priors import EXPONENTIAL, NORMAL, STUDENT_T

__all__ = ["CovarianceTarget", "covariance_step", "cholesky_from_cpc", "log_scale_prior", "log_term_prior"]


class CovarianceTarget(NamedTuple):
    """p(sd, R | r) of one term: q coefficients, correlated (an LKJ(eta) R), n_levels levels with
    scatter (q, q) = sum_l r_l r_l', and the sds' priors fam, nu, mu, scale (q,)."""

    q: int
    correlated: bool
    n_levels: float
    scatter: np.ndarray
    fam: np.ndarray
    nu: np.ndarray
    mu: np.ndarray
    scale: np.ndarray
    eta: float


@numba.njit(cache=True, nogil=True)
def log_scale_prior(tau, family, nu, mu, scale):
    """log prior density of a scale tau > 0, up to a constant (the truncation at 0 is a constant)."""
    if family == NORMAL:
        z = (tau - mu) / scale
        return -0.5 * z * z
    if family == STUDENT_T:
        z = (tau - mu) / scale
        return -0.5 * (nu + 1.0) * np.log1p(z * z / nu)
    if family == EXPONENTIAL:
        return -tau / scale
    return 0.0


@numba.njit(cache=True, nogil=True)
def cholesky_from_cpc(y, q, out):
    """out[:q, :q] <- the Cholesky factor of R from the unconstrained CPCs y (q (q - 1) / 2, row-major
    over the strict lower triangle: (1,0), (2,0), (2,1), ...)."""
    for i in range(q):
        for j in range(q):
            out[i, j] = 0.0
    out[0, 0] = 1.0
    pos = 0
    for i in range(1, q):
        total = 0.0
        for j in range(i):
            z = np.tanh(y[pos])
            pos += 1
            value = z * np.sqrt(max(1.0 - total, 0.0))
            out[i, j] = value
            total += value * value
        out[i, i] = np.sqrt(max(1.0 - total, 1e-300))


@numba.njit(cache=True, nogil=True)
def log_term_prior(theta, q, correlated, fam, nu, mu, scale, eta):
    """log prior density of theta = (log sd (q), CPCs y (q (q - 1) / 2 if correlated)) of one term, up to
    a constant: the sds' priors with the log Jacobian, LKJ(eta) through the CPCs with the tanh Jacobian
    (module doc)."""
    value = 0.0
    for j in range(q):
        value += log_scale_prior(np.exp(theta[j]), fam[j], nu[j], mu[j], scale[j]) + theta[j]
    if correlated and q > 1:
        pos = q
        for i in range(1, q):
            for j in range(i):
                z = np.tanh(theta[pos])
                pos += 1
                value += (eta + 0.5 * (q - 2 - j)) * np.log(max(1.0 - z * z, 1e-300))
    return value


@numba.njit(cache=True, nogil=True)
def _log_target(theta, target, chol, work):
    """log p(theta | r) up to a constant; theta = (log sd (q), CPCs y (q (q - 1) / 2 if correlated)).
    work: (q, q) scratch; with q > 1 and correlated, chol holds L on return."""
    q, correlated, n_levels, scatter = target.q, target.correlated, target.n_levels, target.scatter
    value = log_term_prior(theta, q, correlated, target.fam, target.nu, target.mu, target.scale, target.eta)
    for j in range(q):
        value -= n_levels * theta[j]
    if correlated and q > 1:
        cholesky_from_cpc(theta[q:], q, chol)
        for j in range(q):
            value -= n_levels * np.log(chol[j, j])
        # tr(Sigma^{-1} S) = ||L^{-1} D^{-1} S^{1/2}||_F^2 = tr(L^{-1} M L^{-T}), M = D^{-1} S D^{-1}:
        # work <- L^{-1} M (forward solves by column), then row c of L^{-1} work' solved in place
        for a in range(q):
            for b in range(q):
                work[a, b] = scatter[a, b] * np.exp(-theta[a] - theta[b])
        for c in range(q):
            for i in range(q):
                s = work[i, c]
                for k in range(i):
                    s -= chol[i, k] * work[k, c]
                work[i, c] = s / chol[i, i]
        trace = 0.0
        for c in range(q):  # (L^{-1} work')_cc, the solve of L x = work[c, :]' overwriting row c
            for i in range(c + 1):
                s = work[c, i]
                for k in range(i):
                    s -= chol[i, k] * work[c, k]
                work[c, i] = s / chol[i, i]
            trace += work[c, c]
        value -= 0.5 * trace
    else:
        for j in range(q):
            value -= 0.5 * scatter[j, j] * np.exp(-2.0 * theta[j])
    return value


@numba.njit(cache=True, nogil=True)
def covariance_step(rng, theta, target, chol, work):
    """One slice update of every coordinate of theta (in place): exact for p(sd, R | r) (module doc).

    target: CovarianceTarget; chol, work: (q, q) work arrays. On return chol holds L.
    """
    q, correlated = target.q, target.correlated
    n_coord = q + (q * (q - 1) // 2 if correlated else 0)
    # the log target at the current point: evaluated once, then carried from each accepted point (the
    # same theta gives the same value, so this only saves an evaluation per coordinate)
    current = _log_target(theta, target, chol, work)
    for c in range(n_coord):
        x0 = theta[c]
        log_level = current - rng.standard_exponential()
        left = x0 - rng.random()
        right = left + 1.0
        steps = 60
        theta[c] = left
        while steps > 0 and _log_target(theta, target, chol, work) > log_level:
            left -= 1.0
            theta[c] = left
            steps -= 1
        steps = 60
        theta[c] = right
        while steps > 0 and _log_target(theta, target, chol, work) > log_level:
            right += 1.0
            theta[c] = right
            steps -= 1
        accepted = False
        for _ in range(200):
            x = left + (right - left) * rng.random()
            theta[c] = x
            value = _log_target(theta, target, chol, work)
            if value > log_level:
                accepted = True
                current = value
                break
            if x < x0:
                left = x
            else:
                right = x
        if not accepted:
            theta[c] = x0
    if correlated and q > 1:
        cholesky_from_cpc(theta[q:], q, chol)
