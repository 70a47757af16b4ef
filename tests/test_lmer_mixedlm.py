"""engine.lmer vs statsmodels MixedLM (REML) on simulated designs drawn by hypothesis: random
intercepts, and correlated random slopes. Both maximise the same REML likelihood, so the
estimates agree to the optimisers' tolerance and engine's criterion is not above MixedLM's."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.lmer import _fit_stats, lmer

sm = pytest.importorskip("statsmodels.formula.api")


def _design(seed: int, n_groups: int, per: int, slope: bool):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    n = g.size
    x = rng.standard_normal(n)
    b0 = rng.standard_normal(n_groups) * 0.8
    b1 = rng.standard_normal(n_groups) * 0.5 if slope else np.zeros(n_groups)
    y = 1.0 + 0.5 * x + b0[g] + b1[g] * x + rng.standard_normal(n)
    return pd.DataFrame({"y": y, "x": x, "g": g})


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(8, 30), per=st.integers(4, 12),
       slope=st.booleans())
def test_reml_matches_mixedlm(seed, n_groups, per, slope):
    d = _design(seed, n_groups, per, slope)
    fit = lmer("y ~ x + (x | g)" if slope else "y ~ x + (1 | g)", d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sm.mixedlm("y ~ x", d, groups="g", re_formula="~x" if slope else None).fit(reml=True)
    # statsmodels' REML log-likelihood omits lme4's constant: compare at MixedLM's estimates
    # through engine's own criterion instead (theta = chol(cov_re) / scale, as lme4 scales).
    L = np.linalg.cholesky(np.asarray(ref.cov_re) / ref.scale + 1e-300 * np.eye(2 if slope else 1))
    theta_sm = L.T[np.triu_indices(L.shape[0])]  # lme4's order: lower triangle by columns
    at_sm = _fit_stats(fit._frame_args, reml=True, theta_fixed=theta_sm)
    assert fit.criterion <= at_sm.criterion + 1e-6
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref.fe_params.to_numpy(), rtol=2e-3, atol=2e-3)
    # statsmodels' bse_fe come from its Hessian; check engine's vcov (sigma^2 (R_X'R_X)^{-1}) at
    # MixedLM's estimates against the dense GLS formula (X'V^{-1}X)^{-1}, V = sigma^2 I + Z Psi Z'
    X = np.column_stack([np.ones(len(d)), d["x"]])
    Zg = np.zeros((len(d), d["g"].nunique()))
    Zg[np.arange(len(d)), d["g"]] = 1.0
    Z = np.hstack([Zg, Zg * d["x"].to_numpy()[:, None]]) if slope else Zg
    psi = np.kron(np.asarray(ref.cov_re), np.eye(Zg.shape[1]))
    sig2 = at_sm.sigma ** 2
    V = sig2 * np.eye(len(d)) + Z @ (psi / ref.scale * sig2) @ Z.T
    gls = np.linalg.inv(X.T @ np.linalg.solve(V, X))
    np.testing.assert_allclose(at_sm.vcov.to_numpy(), gls, rtol=1e-8, atol=1e-14)
    if at_sm.criterion - fit.criterion < 1e-4:  # MixedLM reached the optimum: the same sigma^2
        np.testing.assert_allclose(fit.sigma ** 2, ref.scale, rtol=1e-2)
    # when MixedLM reached the optimum its fixed effects at its theta are engine's at that theta
    np.testing.assert_allclose(at_sm.fixef.to_numpy(), ref.fe_params.to_numpy(), rtol=1e-6, atol=1e-8)
