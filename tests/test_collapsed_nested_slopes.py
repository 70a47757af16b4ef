"""Collapsed NUTS (``marginalize=True``) with random slopes on two nested grouping factors: the marginal
density against the dense Gaussian marginal likelihood (the full N x N covariance) plus the priors, its
gradient against central differences, the exact draws of the random coefficients against the dense
conditional Gaussian, a short fit against engine's Gibbs sampler, and crossed factors refused."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.linalg import block_diag

import engine
from engine import diagnostics
from engine.errors import ModelSpecError
from engine.formula import model_frame
from engine.multilevel import build_model
from engine.multilevel.covariance import cholesky_from_cpc
from engine.multilevel.nuts_slopes import (collapsed_slopes_args, collapsed_slopes_log_density, draw_slopes_ranef,
                                           to_canonical)
from engine.priors import prior

FORMULAS = ["y ~ x + (1 + x | s/c)", "y ~ x + (1 + x || s) + (1 | s:c)",
            "y ~ x + (1 | s) + (0 + x | s) + (1 + x + z | s:c)", "y ~ x + (1 | s) + (1 + x | s:c)"]


def simulate(seed, n_outer=6, inner=(1, 5), rows=(1, 7)):
    """Unbalanced nested data: n_outer schools, 1-4 classes each, 1-6 pupils per class, random intercepts
    and slopes at both levels."""
    rng = np.random.default_rng(seed)
    cells = [(s, f"{s}_{c}") for s in range(n_outer) for c in range(rng.integers(*inner))]
    frame = pd.DataFrame([cell for cell in cells for _ in range(rng.integers(*rows))], columns=["s", "c"])
    n = len(frame)
    frame["x"], frame["z"] = rng.normal(size=n), rng.normal(size=n)
    u = rng.normal(size=(n_outer, 2)) * [1.0, 0.5]
    codes = pd.factorize(frame["c"])[0]
    v = rng.normal(size=(codes.max() + 1, 2)) * [0.7, 0.3]
    s = frame["s"].to_numpy()
    frame["y"] = (1 + 0.5 * frame["x"] + u[s, 0] + u[s, 1] * frame["x"] + v[codes, 0] + v[codes, 1] * frame["x"]
                  + 0.8 * rng.normal(size=n))
    frame["s"] = "s" + frame["s"].astype(str)
    return frame


def _covariance(model, theta):
    """Sigma (S x S, block-diagonal over the terms) from theta's log sds and CPCs, and the LKJ log prior of
    each correlated term (eta from the model) on the CPC scale: det(R)^(eta - 1) times the Jacobian of the
    CPC map (column j of q: (q - 2 - j) / 2 log(1 - z^2)) and of tanh."""
    qf, S = 2, model.n_sd
    sd = np.exp(theta[qf:qf + S])
    R = np.zeros((S, S))
    pos, log_prior = qf + S, 0.0
    for t, term in enumerate(model.terms):
        first, q = int(model.z_offsets[term.group]) + term.offset, term.size
        L = np.eye(q)
        if term.correlated and q > 1:
            y = theta[pos:pos + q * (q - 1) // 2]
            L = np.zeros((q, q))
            cholesky_from_cpc(y, q, L)
            z = np.tanh(y)
            cols = np.concatenate([np.arange(i) for i in range(1, q)])
            log_prior += (model.cor_eta[t] - 1.0) * np.log(np.linalg.det(L @ L.T))
            log_prior += np.sum(0.5 * (q - 2 - cols) * np.log1p(-z ** 2) + np.log1p(-z ** 2))
            pos += q * (q - 1) // 2
        R[first:first + q, first:first + q] = L @ L.T
    return np.diag(sd) @ R @ np.diag(sd), log_prior


def _dense_design(model):
    """Z of every random coefficient (n x R, ranef order: per group, per coefficient, per level) and the
    prior covariance of that vector given Sigma (a function)."""
    cols = []
    for g in range(model.n_groups):
        block = model.Z[:, model.z_offsets[g]:model.z_offsets[g + 1]]
        for c in range(block.shape[1]):
            for level in range(int(model.n_levels[g])):
                cols.append(block[:, c] * (model.group_codes[:, g] == level))

    def prior_cov(sigma):
        return block_diag(*[np.kron(sigma[a:b, a:b], np.eye(int(model.n_levels[g])))
                            for g, (a, b) in enumerate(zip(model.z_offsets[:-1], model.z_offsets[1:]))])

    return np.array(cols).T, prior_cov


def _dense_log_posterior(model, theta):
    """log N(y; W gamma, sigma^2 I + Z Sigma_b Z') with the N x N covariance, plus every prior (normal(0, 2) on
    b, brms's student_t defaults on the intercept, the sds and sigma with their log Jacobians, LKJ)."""
    gamma, log_sd, log_sigma = theta[:2], theta[2:2 + model.n_sd], theta[-1]
    sigma, log_lkj = _covariance(model, theta)
    Z, prior_cov = _dense_design(model)
    V = np.exp(2 * log_sigma) * np.eye(model.n_obs) + Z @ prior_cov(sigma) @ Z.T
    value = stats.multivariate_normal(gamma[0] + model.X_c[:, 0] * gamma[1], V).logpdf(model.y) + log_lkj
    value += stats.norm(0, 2).logpdf(gamma[1])
    value += stats.t(3, model.intercept_prior[2], model.intercept_prior[3]).logpdf(gamma[0])
    value += np.sum(stats.t(3, 0, model.sd_prior_scale).logpdf(np.exp(log_sd))) + np.sum(log_sd)
    value += stats.t(3, 0, model.sigma_prior[3]).logpdf(np.exp(log_sigma)) + log_sigma
    return value


def _model(formula, seed, priors=()):
    return build_model(model_frame(formula, simulate(seed), allow_random=True),
                       [prior("normal(0, 2)", class_="b"), *priors])


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("seed", [0, 1])
def test_density_is_the_dense_marginal_posterior(formula, seed):
    """Differences of log p between random thetas equal those of the dense marginal posterior (~1e-10), and
    the analytic gradient matches central differences (~1e-6 relative)."""
    lkj = seed == 1 and formula != FORMULAS[1]  # FORMULAS[1] has no correlated term
    model = _model(formula, seed, [prior("lkj(2)", class_="cor")] if lkj else [])
    assert list(model.nested) == [False, True]
    packed = collapsed_slopes_args(model)
    dim = 2 + model.n_sd + model.n_cor + 1
    rng = np.random.default_rng(10 + seed)
    thetas = rng.normal(size=(4, dim)) * 0.5
    ours = np.array([collapsed_slopes_log_density(t, *packed)[0] for t in thetas])
    dense = np.array([_dense_log_posterior(model, t) for t in thetas])
    assert np.max(np.abs((ours - ours[0]) - (dense - dense[0]))) < 1e-10 * np.max(np.abs(dense))
    for theta in thetas[:2]:
        _, grad = collapsed_slopes_log_density(theta, *packed)
        h = 1e-5
        numeric = np.array([(collapsed_slopes_log_density(theta + e, *packed)[0]
                             - collapsed_slopes_log_density(theta - e, *packed)[0]) / (2 * h) for e in np.eye(dim) * h])
        assert np.max(np.abs(numeric - grad)) < 1e-6 * max(1.0, np.max(np.abs(grad)))


@pytest.mark.parametrize("formula", [FORMULAS[0], FORMULAS[2]])
def test_ranef_draws_are_the_dense_conditional(formula):
    """Given one theta, the drawn random coefficients whitened by the dense conditional (precision
    Sigma_b^{-1} + Z'Z / sigma^2, mean P^{-1} Z'(y - W gamma) / sigma^2) are N(0, I): means within 4.5 SE,
    covariances within 5 SE of the identity (n = 4000 fixed-seed draws)."""
    model = _model(formula, 2)
    dim = 2 + model.n_sd + model.n_cor + 1
    theta = np.random.default_rng(3).normal(size=dim) * 0.5
    R = int(np.sum(np.diff(model.level_offsets) * model.group_dims))
    n = 4000
    canonical, _ = to_canonical(model, np.tile(np.concatenate([theta, np.zeros(R)]), (n, 1)))
    draws = draw_slopes_ranef(model, canonical, np.random.default_rng(4))
    sigma, _ = _covariance(model, theta)
    Z, prior_cov = _dense_design(model)
    v = np.exp(2 * theta[-1])
    precision = np.linalg.inv(prior_cov(sigma)) + Z.T @ Z / v
    mean = np.linalg.solve(precision, Z.T @ (model.y - theta[0] - model.X_c[:, 0] * theta[1])) / v
    white = (draws - mean) @ np.linalg.cholesky(precision)  # L'(r - m) ~ N(0, I) when P = L L'
    assert np.max(np.abs(white.mean(axis=0))) < 4.5 / np.sqrt(n)
    assert np.max(np.abs(np.cov(white.T) - np.eye(R))) < 5 * np.sqrt(2.0 / n)


def test_crossed_and_deeper_are_refused():
    data = simulate(5)
    data["h"] = np.arange(len(data)) % 3
    for formula in ["y ~ x + (1 + x | s) + (1 | h)", "y ~ x + (1 + x | s/c) + (1 | h)"]:
        model = build_model(model_frame(formula, data, allow_random=True), [])
        with pytest.raises(ModelSpecError, match="no per-group factorisation"):
            collapsed_slopes_args(model)
    with pytest.raises(ModelSpecError, match="no per-group factorisation"):
        engine.brm("y ~ x + (1 + x | s) + (1 | h)", data, sampler="nuts", marginalize=True, chains=1, iter=20,
                   warmup=10)


def _fit_data():
    return simulate(11, n_outer=12, inner=(3, 7), rows=(3, 9))


def _agree(fit, reference, names=None):
    """Posterior means and SDs agree within 4 combined Monte Carlo SEs + 1% of the reference's posterior SD."""
    a, b = fit.draws_values, reference.draws_values
    for i, name in enumerate(fit.parameter_names):
        x, y = a[:, :, i], b[:, :, i]
        slack = 0.01 * y.std(ddof=1)
        assert abs(x.mean() - y.mean()) <= 4 * np.hypot(diagnostics.mcse_mean(x), diagnostics.mcse_mean(y)) + slack, name
        assert abs(x.std(ddof=1) - y.std(ddof=1)) <= 4 * np.hypot(diagnostics.mcse_sd(x), diagnostics.mcse_sd(y)) + slack, name


def _run(formula, data, iterations, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return engine.brm(formula, data, chains=2, iter=iterations, warmup=iterations // 2, **kwargs)


def test_collapsed_fit_matches_gibbs():
    """y ~ x + (1 + x | s/c) on simulated data (328 rows, 12 schools, 56 classes): every b_, sd_, cor_, sigma
    and every r_ of the collapsed NUTS (r_ drawn exactly afterwards) agrees with the Gibbs sampler."""
    data = _fit_data()
    collapsed = _run(FORMULAS[0], data, 1000, sampler="nuts", marginalize=True, seed=7)
    gibbs = _run(FORMULAS[0], data, 2000, sampler="gibbs", seed=8)
    assert collapsed.divergences == 0
    assert collapsed.parameter_names == gibbs.parameter_names and collapsed.ranef_names == gibbs.ranef_names
    _agree(collapsed, gibbs)
    a, b = collapsed.ranef_values, gibbs.ranef_values
    for i, name in enumerate(collapsed.ranef_names):
        x, y = a[:, :, i], b[:, :, i]
        assert abs(x.mean() - y.mean()) <= (4 * np.hypot(diagnostics.mcse_mean(x), diagnostics.mcse_mean(y))
                                            + 0.01 * y.std(ddof=1)), name


@pytest.mark.slow
@pytest.mark.parametrize("formula", [FORMULAS[0], FORMULAS[1]])
def test_collapsed_fit_matches_gibbs_and_noncentred_long(formula):
    data = _fit_data()
    collapsed = _run(formula, data, 4000, sampler="nuts", marginalize=True, seed=17)
    gibbs = _run(formula, data, 8000, sampler="gibbs", seed=18)
    noncentred = _run(formula, data, 4000, sampler="nuts", seed=19)
    _agree(collapsed, gibbs)
    _agree(collapsed, noncentred)
