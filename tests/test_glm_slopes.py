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


BINARY_SLOPE = "choicer1 ~ grit + male + raven + mathscore1 + (1 + mathscore1 | schoolid)"
EPI_SLOPE = "count ~ zAge + zBase * Trt + (1 + visitc | patient)"


def _reference(fixtures_dir, name):
    frame = pd.read_csv(fixtures_dir / "families" / f"{name}_draws.csv.gz").sort_values([".chain", ".iteration"])
    names = [c for c in frame.columns if not c.startswith(".")]
    return names, frame[names].to_numpy().reshape(4, -1, len(names))


def _slope_data(fixtures_dir, name):
    if name == "binary_slope":
        from engine.datasets import load_grit

        return load_grit()
    epi = pd.read_csv(fixtures_dir / "families" / "brms_epilepsy.csv",
                      dtype={"Trt": str, "patient": str, "visit": str, "obs": str})
    return epi.assign(visitc=epi["visit"].astype(float) - 2.5)  # as the R script


def _agree(ours, reference, names, factor=4.0):
    for j, parameter in enumerate(names):
        ref_sd = reference[:, :, j].std(ddof=1)
        tol_mean = factor * np.hypot(mcse_mean(ours[:, :, j]), mcse_mean(reference[:, :, j])) + 0.01 * ref_sd
        tol_sd = factor * np.hypot(mcse_sd(ours[:, :, j]), mcse_sd(reference[:, :, j])) + 0.01 * ref_sd
        assert abs(ours[:, :, j].mean() - reference[:, :, j].mean()) < tol_mean, parameter
        assert abs(ours[:, :, j].std(ddof=1) - ref_sd) < tol_sd, parameter


SLOPE_CASES = {
    "binary_slope-gibbs": ("binary_slope", BINARY_SLOPE, "bernoulli", "gibbs", 4000),
    "binary_slope-nuts": ("binary_slope", BINARY_SLOPE, "bernoulli", "nuts", 2000),
    "epi_slope-nuts": ("epi_slope", EPI_SLOPE, "poisson", "nuts", 2000),
}


# the poisson case (143 s) runs with ENGINE_LONG=1; CI keeps both bernoulli cases, the poisson slopes
# density check above and the poisson random-intercept comparison with brms (test_glm_samplers.py)
@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.long) if c == "epi_slope-nuts" else c
                                  for c in SLOPE_CASES])
def test_slopes_posterior_matches_brms(case, fixtures_dir):
    """Every b_, sd_ and cor_ against brms 2.18 (4 chains x 1000 draws each side; the Gibbs chains run
    4000 iterations, 1000 warm-up, as their draws are more autocorrelated -- the MCSEs account for it)."""
    name, formula, family, sampler, n_iter = SLOPE_CASES[case]
    if not (fixtures_dir / "families" / f"{name}_draws.csv.gz").exists():
        pytest.skip(f"no brms reference {name} (run tests/fixtures/families/brms_glm_slopes.R)")
    names, reference = _reference(fixtures_dir, name)
    fit = engine.brm(formula, _slope_data(fixtures_dir, name), family=family, sampler=sampler, iter=n_iter,
                     warmup=1000, seed=20261203, progress=False)
    assert fit.parameter_names == names
    _agree(fit.draws_values, reference, names)


def test_binomial_slopes_match_their_bernoulli_expansion():
    """A binomial model with slopes and the same data as 0/1 rows have one posterior: Pólya-Gamma Gibbs
    on the binomial rows (PG(n, eta) draws) against NUTS on the bernoulli rows, 4 combined MCSEs + 1%."""
    rng = np.random.default_rng(21)
    g = np.repeat(np.arange(10), 4)
    x = np.tile(np.array([-1.5, -0.5, 0.5, 1.5]), 10)
    size = rng.integers(3, 9, g.size)
    eta = -0.4 + 0.6 * x + 0.8 * rng.normal(size=10)[g] + 0.4 * rng.normal(size=10)[g] * x
    k = rng.binomial(size, 1 / (1 + np.exp(-eta)))
    binomial = pd.DataFrame({"k": k, "n": size, "x": x, "g": [f"g{i}" for i in g]})
    rows = np.repeat(np.arange(g.size), size)
    success = np.concatenate([np.arange(s) < kk for s, kk in zip(size, k)]).astype(int)
    bernoulli = pd.DataFrame({"y": success, "x": x[rows], "g": binomial["g"].to_numpy()[rows]})
    from engine.priors import prior as make_prior

    priors = [make_prior("normal(0, 2)", "b"), make_prior("normal(0, 1)", "sd")]
    gibbs = engine.brm("k | trials(n) ~ x + (1 + x | g)", binomial, family="binomial", sampler="gibbs", prior=priors,
                       iter=3000, warmup=500, seed=8, progress=False)
    nuts = engine.brm("y ~ x + (1 + x | g)", bernoulli, family="bernoulli", sampler="nuts", prior=priors,
                      iter=1500, warmup=500, seed=9, progress=False)
    assert gibbs.parameter_names == nuts.parameter_names == ["b_Intercept", "b_x", "sd_g__Intercept", "sd_g__x",
                                                             "cor_g__Intercept__x"]
    _agree(gibbs.draws_values, nuts.draws_values, gibbs.parameter_names)


def test_slopes_fit_prints_and_predicts_like_brms(fixtures_dir):
    """The printout's group-level block has brms' rows (sd, cor; no sigma) and the pointwise
    log-likelihood of a slopes fit is the family's density at the linear predictor with the slopes."""
    data = _simulated("poisson")
    fit = engine.brm("y ~ x + u + (1 + x | g)", data, family="poisson", sampler="nuts", chains=1, iter=300,
                     warmup=150, seed=1, progress=False)
    text = str(fit)
    assert "sd(Intercept)" in text and "sd(x)" in text and "cor(Intercept,x)" in text and "sigma" not in text
    fam = F.get_family("poisson")
    frame, trials = F.glm_model_frame("y ~ x + u + (1 + x | g)", data, fam)
    model = F.build_glm_model(frame, trials, None, fam)
    draws, ranef = fit.draws_values[0], fit.ranef_values[0]
    loglik = F.pointwise_log_lik(model, draws, ranef)
    j = np.arange(len(data))
    codes = model.base.group_codes[:, 0]
    J = int(model.base.n_levels[0])
    eta = draws[:, [0]] + draws[:, [1]] * data["x"].to_numpy() + draws[:, [2]] * data["u"].to_numpy() \
        + ranef[:, codes] + ranef[:, J + codes] * data["x"].to_numpy()
    np.testing.assert_allclose(loglik, stats.poisson.logpmf(data["y"].to_numpy()[j], np.exp(eta)), rtol=1e-10)


def test_slopes_gibbs_chain_options():
    data = _simulated("bernoulli")
    fam = F.get_family("bernoulli")
    frame, trials = F.glm_model_frame("y ~ x + (1 + x | g)", data, fam)
    model = F.build_glm_model(frame, trials, None, fam)
    a = gibbs_pg.sample_chain(model, 60, 20, 4, thin=2)
    b = gibbs_pg.sample_chain(model, 60, 20, 4, thin=2)
    assert a.draws.shape == (20, 5) and a.ranef.shape == (20, 16) and np.array_equal(a.draws, b.draws)
    with pytest.raises(engine.errors.ModelSpecError, match="init\\['sd'\\] must hold 2"):
        gibbs_pg.sample_chain(model, 60, 20, 4, init={"sd": [1.0]})
    with pytest.raises(engine.errors.EngineInputError, match="gibbs.*not available for the poisson"):
        engine.brm("y ~ x + (1 + x | g)", _simulated("poisson"), family="poisson", sampler="gibbs", progress=False)
