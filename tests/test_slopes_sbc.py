"""Simulation-based calibration (Talts et al. 2018) of the random-slopes Gibbs sampler, q = 2 and 3:
ranks of prior draws among thinned posterior draws are uniform for every b_, sd_, cor_, sigma and the
first level's r_."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from engine.formula import model_frame
from engine.gibbs import sample_chain
from engine.multilevel import build_model, parameter_names
from engine.multilevel.covariance import cholesky_from_cpc
from engine.priors import prior


def _lkj_correlation(rng, q, eta):
    """R ~ LKJ(eta) by the C-vine method of Lewandowski, Kurowicka & Joe (2009): independent partial
    correlations 2 Beta(b_j, b_j) - 1, b_j = eta + (q - 2 - j) / 2, in Stan's Cholesky construction."""
    cpc = []
    for i in range(1, q):
        for j in range(i):
            b = eta + 0.5 * (q - 2 - j)
            cpc.append(np.arctanh(2 * rng.beta(b, b) - 1))
    L = np.zeros((q, q))
    cholesky_from_cpc(np.array(cpc), q, L)
    return L @ L.T


@pytest.mark.slow
# q = 3 (141 s) runs with ENGINE_LONG=1; q = 2 (90 s) in every run, CI included
@pytest.mark.parametrize("q, eta", [(2, 2.0), pytest.param(3, 1.5, marks=pytest.mark.long)])
def test_simulation_based_calibration_random_slopes(q, eta):
    priors = [prior("student_t(5, 0, 1)", "Intercept"), prior("normal(0, 1)", "b"), prior("student_t(3, 0, 1)", "sd"),
              prior(f"lkj({eta:g})", "cor"), prior("student_t(3, 0, 1)", "sigma")]
    n_groups, per_group, n_reps = 6, 6, 200
    n = n_groups * per_group
    lhs = " + ".join(["1", "x", "z"][:q])
    formula = f"y ~ x + ({lhs} | g)"
    rng = np.random.default_rng(20181105 + q)
    seeds = np.random.SeedSequence(20181105 + q).spawn(n_reps)
    g = np.repeat(np.arange(n_groups), per_group)
    n_kept, thin, warmup = 99, 20, 300
    ranks, names = [], None
    for rep in range(n_reps):
        x, z = rng.normal(size=n), rng.normal(size=n)
        b0_c, beta = stats.t.rvs(5, random_state=rng), rng.normal()
        sd = np.abs(stats.t.rvs(3, size=q, random_state=rng))
        R = _lkj_correlation(rng, q, eta)
        sigma = abs(stats.t.rvs(3, random_state=rng))
        r = rng.multivariate_normal(np.zeros(q), np.diag(sd) @ R @ np.diag(sd), size=n_groups, method="cholesky")
        Z = np.column_stack([np.ones(n), x, z])[:, :q]
        y = b0_c + (x - x.mean()) * beta + np.sum(Z * r[g], axis=1) + sigma * rng.normal(size=n)
        data = pd.DataFrame({"y": y, "x": x, "z": z, "g": g})
        model = build_model(model_frame(formula, data, allow_random=True), priors)
        names = parameter_names(model)
        cors = [R[j, i] for i in range(1, q) for j in range(i)]
        truth = np.concatenate([[b0_c - x.mean() * beta, beta], sd, cors, [sigma], r[0]])
        result = sample_chain(model, warmup + n_kept * thin, warmup, seeds[rep], thin=thin)
        first_level = [c * n_groups for c in range(q)]  # r_g[0,coef] in ranef order (coefficient-major)
        draws = np.column_stack([result.draws, result.ranef[:, first_level]])
        assert draws.shape == (n_kept, truth.size)
        ranks.append((draws < truth).sum(axis=0))
    ranks = np.array(ranks)  # 0..99: 100 values, 10 equal bins
    labels = names + [f"r_g[1,{c}]" for c in range(q)]
    for j, name in enumerate(labels):
        counts = np.bincount(ranks[:, j] // 10, minlength=10)
        p_value = stats.chisquare(counts).pvalue
        assert p_value > 1e-3, f"{name}: ranks not uniform (chi-square p = {p_value:.2g}, counts {counts.tolist()})"
