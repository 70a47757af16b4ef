"""Random slopes with the bernoulli, binomial and poisson families: Pólya-Gamma Gibbs and NUTS.

References: the NUTS density against the log posterior written out with scipy (and its gradient by
central differences); both samplers against brms 2.18 fits (tests/fixtures/families/brms_glm_slopes.R)
with the issue's criterion (posterior mean and SD of every b_, sd_ and cor_ within 4 combined Monte
Carlo SEs + 1% of brms' posterior SD); a binomial model against its bernoulli expansion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import engine
from engine.diagnostics import mcse_mean, mcse_sd
from engine.multilevel import families as F
from engine.multilevel import gibbs_pg, nuts_glm

pytestmark = [pytest.mark.filterwarnings("ignore::engine.errors.ConvergenceWarning"),
              pytest.mark.filterwarnings("ignore::engine.errors.DataWarning")]


def _simulated(family, n_groups=8, per_group=15, seed=3):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(size=g.size)
    u = rng.normal(size=g.size)
    r0, r1 = 0.7 * rng.normal(size=n_groups), 0.4 * rng.normal(size=n_groups)
    eta = -0.2 + 0.5 * x + 0.3 * u + r0[g] + r1[g] * x
    if family == "poisson":
        y = rng.poisson(np.exp(eta))
    else:
        y = (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "u": u, "g": [f"g{i}" for i in g]})


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_slopes_density_against_direct_computation(family):
    """glm_slopes_log_density for y ~ x + u + (1 + x | g) against scipy's densities (up to a constant,
    through differences) and its gradient against central differences of that direct computation."""
    from engine.priors import prior as make_prior

    data = _simulated(family, n_groups=5, per_group=12)
    priors = [make_prior("normal(0, 2)", "b"), make_prior("lkj(2)", "cor")]
    fam = F.get_family(family)
    frame, trials = F.glm_model_frame("y ~ x + u + (1 + x | g)", data, fam)
    model = F.build_glm_model(frame, trials, priors, fam)
    base = model.base
    assert base.has_slopes and model.n_params == 6
    assert F.parameter_names(model) == ["b_Intercept", "b_x", "b_u", "sd_g__Intercept", "sd_g__x",
                                        "cor_g__Intercept__x"]
    args = nuts_glm.glm_slopes_args(model)
    W = F.design_matrix(base)
    codes = base.group_codes[:, 0]
    J = int(base.n_levels[0])
    ip = base.intercept_prior
    sd_scale = base.sd_prior_scale

    def direct(theta):
        gamma, log_sd, y_cpc, z = theta[:3], theta[3:5], theta[5], theta[6:].reshape(2, J)
        rho = np.tanh(y_cpc)
        chol = np.array([[1.0, 0.0], [rho, np.sqrt(1 - rho * rho)]])
        r = np.exp(log_sd)[:, None] * (chol @ z)  # (2, J)
        eta = W @ gamma + r[0, codes] + r[1, codes] * base.Z[:, 1]
        if family == "bernoulli":
            ll = stats.bernoulli.logpmf(base.y, 1 / (1 + np.exp(-eta))).sum()
        else:
            ll = stats.poisson.logpmf(base.y, np.exp(eta)).sum()
        lp = stats.t.logpdf(gamma[0], ip[1], ip[2], ip[3]) + stats.norm.logpdf(gamma[1:], 0, 2).sum()
        lp += stats.t.logpdf(np.exp(log_sd), 3, 0, sd_scale).sum() + log_sd.sum()
        # LKJ(2) on a 2 x 2 correlation: density ∝ (1 - rho^2)^(eta - 1); Jacobian of rho = tanh(y): 1 - rho^2
        lp += 2.0 * np.log1p(-rho * rho)
        return ll + lp + stats.norm.logpdf(z).sum()

    rng = np.random.default_rng(4)
    thetas = [rng.normal(scale=0.5, size=6 + 2 * J) for _ in range(3)]
    ours = [nuts_glm.glm_slopes_log_density(t, *args)[0] for t in thetas]
    theirs = [direct(t) for t in thetas]
    np.testing.assert_allclose(np.diff(ours), np.diff(theirs), rtol=1e-9, atol=1e-9)
    gradient = nuts_glm.glm_slopes_log_density(thetas[0], *args)[1]
    step = 1e-6
    numeric = [(direct(thetas[0] + e) - direct(thetas[0] - e)) / (2 * step) for e in np.eye(thetas[0].size) * step]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-5)
