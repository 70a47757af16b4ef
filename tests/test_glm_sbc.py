"""Simulation-based calibration (Talts et al. 2018, arXiv:1804.06788) of the non-Gaussian samplers.

For each replication the parameters are drawn from the prior, data from the model, and the rank of
the true value among L = 99 (thinned) posterior draws recorded; for a correct sampler the ranks are
uniform on 0..99. Ranks are binned into 10 bins and tested with a chi-square test at level 0.001
per parameter (200 replications: 20 expected per bin).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from engine.multilevel import families as F
from engine.multilevel import gibbs_pg, nuts_glm
from engine.multilevel import SimpleFrame, SimpleGroup
from engine.priors import prior

N_REPLICATIONS = 200
L_DRAWS = 99


def _frame(y, x, groups):
    return SimpleFrame(np.asarray(y, float), np.column_stack([np.ones(len(y)), x]), ["(Intercept)", "x"], True, groups)


def _rank_test(ranks: np.ndarray, names: list[str]) -> None:
    for j, name in enumerate(names):
        counts = np.bincount(ranks[:, j] // 10, minlength=10)
        p = stats.chisquare(counts).pvalue
        assert p > 1e-3, (name, counts, p)


@pytest.mark.slow
def test_sbc_nested_bernoulli_polya_gamma_gibbs():
    """y ~ x + (1 | school/class), bernoulli: 6 schools x 3 classes x 8 pupils, Pólya-Gamma Gibbs."""
    priors = [prior("normal(0, 1)", "Intercept"), prior("normal(0, 1)", "b"),
              prior("normal(0, 1)", "sd", group="school"), prior("student_t(3, 0, 1)", "sd", group="school:class")]
    school = np.repeat(np.arange(6), 24)
    klass = np.repeat(np.arange(18), 8)
    groups = [SimpleGroup("school", school, [str(i + 1) for i in range(6)], 6),
              SimpleGroup("school:class", klass, [str(i + 1) for i in range(18)], 18)]
    family = F.get_family("bernoulli")
    thin = 10
    ranks = np.empty((N_REPLICATIONS, 4), dtype=np.int64)
    for rep, seed in enumerate(np.random.SeedSequence(1302).spawn(N_REPLICATIONS)):
        data_seed, chain_seed = seed.spawn(2)
        rng = np.random.default_rng(data_seed)
        x = rng.normal(size=school.size)
        b0_c, beta = rng.normal(), rng.normal()
        tau_s, tau_c = abs(rng.normal()), abs(rng.standard_t(3))
        eta = b0_c + beta * (x - x.mean()) + tau_s * rng.normal(size=6)[school] + tau_c * rng.normal(size=18)[klass]
        y = (rng.random(school.size) < 1 / (1 + np.exp(-eta))).astype(float)
        model = F.build_glm_model(_frame(y, x, groups), np.ones(school.size), priors, family)
        truth = np.array([b0_c - x.mean() * beta, beta, tau_s, tau_c])
        result = gibbs_pg.sample_chain(model, 100 + L_DRAWS * thin, 100, chain_seed, thin=thin, save_ranef=False)
        assert result.draws.shape == (L_DRAWS, 4)
        ranks[rep] = (result.draws < truth).sum(axis=0)
    _rank_test(ranks, F.parameter_names(model))


@pytest.mark.slow
def test_sbc_poisson_nuts():
    """y ~ x + (1 | g), poisson: 10 groups x 5 observations, NUTS (non-centred)."""
    priors = [prior("normal(1, 0.5)", "Intercept"), prior("normal(0, 0.5)", "b"), prior("normal(0, 1)", "sd")]
    g = np.repeat(np.arange(10), 5)
    groups = [SimpleGroup("g", g, [str(i + 1) for i in range(10)], 10)]
    family = F.get_family("poisson")
    thin = 5
    ranks = np.empty((N_REPLICATIONS, 3), dtype=np.int64)
    for rep, seed in enumerate(np.random.SeedSequence(1303).spawn(N_REPLICATIONS)):
        data_seed, chain_seed = seed.spawn(2)
        rng = np.random.default_rng(data_seed)
        x = rng.normal(size=g.size)
        b0_c, beta, tau = rng.normal(1.0, 0.5), rng.normal(0.0, 0.5), abs(rng.normal())
        eta = b0_c + beta * (x - x.mean()) + tau * rng.normal(size=10)[g]
        y = rng.poisson(np.exp(eta)).astype(float)
        model = F.build_glm_model(_frame(y, x, groups), np.ones(g.size), priors, family)
        truth = np.array([b0_c - x.mean() * beta, beta, tau])
        result = nuts_glm.sample_chain(model, 200 + L_DRAWS * thin, 200, chain_seed, save_ranef=False)
        ranks[rep] = (result.draws[::thin] < truth).sum(axis=0)
    _rank_test(ranks, F.parameter_names(model))


def _slopes_frame(y, x, g, n_groups):
    """A ModelFrame-like record for y ~ x + (1 + x | g) (engine.formula's random-effect record)."""
    from engine.formula import model_frame

    import pandas as pd

    data = pd.DataFrame({"y": y, "x": x, "g": [f"g{i:02d}" for i in g]})
    return model_frame("y ~ x + (1 + x | g)", data, allow_random=True)


def _draw_slopes_truth(rng, n_groups):
    """gamma_c, beta ~ N(0, 1) (centred intercept), sd ~ half-N(0, 1), rho ~ LKJ(2) (2 rho' - 1, rho' ~ Beta(2, 2))."""
    b0_c, beta = rng.normal(), rng.normal()
    sd = np.abs(rng.normal(size=2))
    rho = 2.0 * rng.beta(2.0, 2.0) - 1.0
    chol = np.array([[1.0, 0.0], [rho, np.sqrt(1.0 - rho * rho)]])
    r = (sd[:, None] * (chol @ rng.normal(size=(2, n_groups))))
    return b0_c, beta, sd, rho, r


SLOPES_PRIORS = [prior("normal(0, 1)", "Intercept"), prior("normal(0, 1)", "b"), prior("normal(0, 1)", "sd"),
                 prior("lkj(2)", "cor")]


@pytest.mark.slow
@pytest.mark.parametrize("family_name", [
    "bernoulli",
    # NUTS on 200 poisson slope fits: ~25 min on two loaded cores; test_sbc_poisson_nuts (intercepts) runs in CI
    pytest.param("poisson", marks=pytest.mark.long)])
def test_sbc_random_slopes(family_name):
    """y ~ x + (1 + x | g), correlated: bernoulli by Pólya-Gamma Gibbs (8 groups x 12 rows), poisson by
    NUTS (8 groups x 6 rows); ranks of b_Intercept, b_x, both sds and the correlation."""
    n_groups, per = (8, 12) if family_name == "bernoulli" else (8, 6)
    g = np.repeat(np.arange(n_groups), per)
    family = F.get_family(family_name)
    ranks = np.empty((N_REPLICATIONS, 5), dtype=np.int64)
    for rep, seed in enumerate(np.random.SeedSequence(1304 + (family_name == "poisson")).spawn(N_REPLICATIONS)):
        data_seed, chain_seed = seed.spawn(2)
        rng = np.random.default_rng(data_seed)
        x = rng.normal(size=g.size)
        b0_c, beta, sd, rho, r = _draw_slopes_truth(rng, n_groups)
        eta = b0_c + beta * (x - x.mean()) + r[0, g] + r[1, g] * x
        if family_name == "bernoulli":
            y = (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(float)
        else:
            y = rng.poisson(np.exp(np.minimum(eta, 20.0))).astype(float)
        frame = _slopes_frame(y, x, g, n_groups)
        model = F.build_glm_model(frame, np.ones(g.size), SLOPES_PRIORS, family)
        truth = np.array([b0_c - x.mean() * beta, beta, sd[0], sd[1], rho])
        if family_name == "bernoulli":
            thin = 10
            result = gibbs_pg.sample_chain(model, 200 + L_DRAWS * thin, 200, chain_seed, thin=thin, save_ranef=False)
        else:
            thin = 5
            result = nuts_glm.sample_chain(model, 200 + L_DRAWS * thin, 200, chain_seed, save_ranef=False, thin=thin)
        assert result.draws.shape == (L_DRAWS, 5)
        ranks[rep] = (result.draws < truth).sum(axis=0)
    _rank_test(ranks, F.parameter_names(model))
