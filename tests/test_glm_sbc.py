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
