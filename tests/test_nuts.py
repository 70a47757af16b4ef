"""engine.nuts.sample on targets with known answers: MCSE z-tests, adaptation, warnings, reproducibility."""

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest
from scipy import stats

from engine import diagnostics
from engine.errors import ConvergenceWarning, EngineInputError, SamplerError
from engine.nuts import sample
from engine.hmc.metric import EuclideanMetric
from engine.hmc.tree import make_workspace, nuts_transition
from nuts_targets import GAUSSIAN, correlated_covariance, gaussian_args

Z = 4.0  # z-score bound on MCSE-scaled errors (fixed seeds; every parameter and statistic tested)


def _check_gaussian_draws(result, mean, covariance):
    sd = np.sqrt(np.diag(covariance))
    for j in range(mean.size):
        x = result.draws[:, :, j]
        assert abs(x.mean() - mean[j]) < Z * diagnostics.mcse_mean(x), f"mean of x[{j}]"
        assert abs(x.std(ddof=1) - sd[j]) < Z * diagnostics.mcse_sd(x), f"sd of x[{j}]"
        for prob in (0.05, 0.5, 0.95):
            true_q = stats.norm.ppf(prob, mean[j], sd[j])
            assert abs(np.quantile(x, prob) - true_q) < Z * diagnostics.mcse_quantile(x, prob), f"q{prob} x[{j}]"
        assert diagnostics.rhat(x) < 1.01


@pytest.mark.parametrize("dimension, correlation, metric", [
    (2, 0.0, "diag"),
    (100, 0.0, "diag"),
    (2, 0.99, "diag"),     # strongly correlated, diagonal metric: long trajectories
    (10, 0.9, "dense"),    # strongly correlated, unequal scales, dense metric
])
def test_gaussian_moments_and_quantiles_within_monte_carlo_error(dimension, correlation, metric):
    mean = np.linspace(-3.0, 3.0, dimension)
    covariance = correlated_covariance(dimension, correlation)
    data, index = gaussian_args(mean, covariance)
    result = sample(GAUSSIAN, np.zeros(dimension), chains=4, iter=1500, warmup=500, seed=dimension,
                    metric=metric, data=data, index=index)
    assert result.draws.shape == (4, 1000, dimension)
    _check_gaussian_draws(result, mean, covariance)
    assert result.n_divergent == 0
    assert np.all((result.e_bfmi > 0.5) & (result.e_bfmi < 2.0))
    if metric == "dense":  # the adapted metric estimates the covariance
        np.testing.assert_allclose(result.inverse_metric.mean(0), covariance,
                                   atol=0.2 * np.sqrt(np.outer(np.diag(covariance), np.diag(covariance))).max())


@numba.njit
def _hierarchical_normal(theta):
    """Normal-normal hierarchy with known scales (8 groups, τ = 1, σ_j = 0.5): theta = (μ, η_1..η_8),
    group means θ_j = μ + η_j. Gaussian posterior, no funnel (the scales are fixed)."""
    y = np.array([2.8, 0.8, -0.3, 0.7, -0.1, 0.1, 1.8, 1.2])
    mu = theta[0]
    eta = theta[1:]
    resid = y - mu - eta
    logp = -0.5 * np.sum(resid ** 2) / 0.25 - 0.5 * np.sum(eta ** 2) - 0.5 * mu ** 2 / 100.0
    grad = np.empty(9)
    grad[0] = np.sum(resid) / 0.25 - mu / 100.0
    grad[1:] = resid / 0.25 - eta
    return logp, grad


def test_funnel_free_hierarchical_model_matches_its_gaussian_posterior():
    # exact posterior: precision P = design'design / 0.25 + prior precision
    design = np.hstack([np.ones((8, 1)), np.eye(8)])
    y = np.array([2.8, 0.8, -0.3, 0.7, -0.1, 0.1, 1.8, 1.2])
    precision = design.T @ design / 0.25 + np.diag([1 / 100.0] + [1.0] * 8)
    covariance = np.linalg.inv(precision)
    mean = covariance @ (design.T @ y / 0.25)
    result = sample(_hierarchical_normal, np.zeros(9), chains=4, iter=1500, warmup=500, seed=11)
    _check_gaussian_draws(result, mean, covariance)


def test_step_size_adapts_to_the_target_acceptance():
    data, index = gaussian_args(np.zeros(5), correlated_covariance(5, 0.5))
    step_sizes = []
    for delta in (0.8, 0.95):
        result = sample(GAUSSIAN, np.zeros(5), chains=2, iter=1500, warmup=1000, seed=3, adapt_delta=delta,
                        data=data, index=index)
        step_sizes.append(result.step_size.mean())
        # the last window's dual averaging (terminal buffer of 50 + restart) drives the mean acceptance to δ
        tail = result.warmup_stats["accept_stat"][:, -50:]
        assert abs(tail.mean() - delta) < 0.08
        assert result.stats["accept_stat"].mean() > delta - 0.05
        assert np.all(result.stats["stepsize"] == result.step_size[:, None])
    assert step_sizes[1] < 0.8 * step_sizes[0]  # a higher target acceptance needs smaller steps


def test_huge_step_size_diverges_every_time():
    data, index = gaussian_args(np.zeros(3), np.eye(3))
    metric = EuclideanMetric(np.ones(3), np.eye(3), np.eye(3), False)
    workspace = make_workspace(3, 10)
    rng = np.random.Generator(np.random.PCG64(1))
    x = np.array([0.5, -0.5, 1.0])
    logp, grad = GAUSSIAN(x, data, index)
    for _ in range(20):
        new_logp, accept, n_leapfrog, depth, divergent, energy = nuts_transition(
            GAUSSIAN, (data, index), rng, x, logp, grad, 1e3, metric, 10, workspace)
        assert divergent and depth == 0 and n_leapfrog == 1 and accept < 1e-10
        np.testing.assert_array_equal(workspace.sample_position, x)  # nothing from a diverging subtree


@numba.njit
def _funnel(theta):
    """Neal's funnel in 3-d: v ~ N(0, 3²), x_i | v ~ N(0, exp(v)) (centred: divergent)."""
    v = theta[0]
    x = theta[1:]
    logp = -v * v / 18.0 - 0.5 * x.size * v - 0.5 * np.sum(x * x) * np.exp(-v)
    grad = np.empty(theta.size)
    grad[0] = -v / 9.0 - 0.5 * x.size + 0.5 * np.sum(x * x) * np.exp(-v)
    grad[1:] = -x * np.exp(-v)
    return logp, grad


def test_divergences_and_tree_depth_hits_are_reported_as_warnings():
    with pytest.warns(ConvergenceWarning, match="divergent transitions after warmup"):
        result = sample(_funnel, np.zeros(3), chains=2, iter=1000, warmup=500, seed=2)
    assert result.n_divergent > 0
    assert result.stats["divergent"].dtype == bool
    data, index = gaussian_args(np.zeros(2), correlated_covariance(2, 0.99))
    with pytest.warns(ConvergenceWarning, match="maximum treedepth"):
        result = sample(GAUSSIAN, np.zeros(2), chains=1, iter=300, warmup=150, seed=2, max_treedepth=2,
                        data=data, index=index)
    assert result.stats["treedepth"].max() == 2
    assert np.all(result.stats["n_leapfrog"] <= 3)


def test_same_seed_same_draws_whatever_the_executor():
    data, index = gaussian_args(np.zeros(3), correlated_covariance(3, 0.5))
    kwargs = dict(chains=3, iter=300, warmup=150, seed=42, data=data, index=index)
    a = sample(GAUSSIAN, np.zeros(3), **kwargs)
    with ThreadPoolExecutor(max_workers=1) as pool:
        b = sample(GAUSSIAN, np.zeros(3), executor=pool, **kwargs)
    np.testing.assert_array_equal(a.draws, b.draws)
    np.testing.assert_array_equal(a.stats["energy"], b.stats["energy"])
    c = sample(GAUSSIAN, np.zeros(3), **{**kwargs, "seed": 43})
    assert not np.array_equal(a.draws, c.draws)


def test_sampler_statistics_are_consistent():
    data, index = gaussian_args(np.zeros(4), np.eye(4))
    result = sample(GAUSSIAN, np.zeros(4), chains=2, iter=400, warmup=200, seed=5, data=data, index=index)
    s = result.stats
    assert set(s) >= {"stepsize", "treedepth", "n_leapfrog", "divergent", "energy", "accept_stat"}
    # n_leapfrog is 2^depth - 1 ... 2^(depth+1) - 1 (a rejected last subtree adds up to 2^depth steps)
    assert np.all(s["n_leapfrog"] >= 2 ** s["treedepth"] - 1)
    assert np.all(s["n_leapfrog"] <= 2 ** (s["treedepth"] + 1) - 1)
    assert np.all((s["accept_stat"] >= 0) & (s["accept_stat"] <= 1))
    # energy = -lp + kinetic energy >= -lp
    assert np.all(s["energy"] >= -s["lp"])
    assert result.gradient_evaluations() == s["n_leapfrog"].sum() + result.warmup_stats["n_leapfrog"].sum()
    table = result.summary()
    assert list(table.index) == [f"x[{i}]" for i in range(4)]
    assert np.all(table["rhat"] < 1.05)


@numba.njit
def _wrong_gradient(x):
    return 0.0, np.zeros(x.size + 1)


def test_bad_input_raises_clear_errors():
    data, index = gaussian_args(np.zeros(2), np.eye(2))
    with pytest.raises(EngineInputError, match="warmup"):
        sample(GAUSSIAN, np.zeros(2), iter=100, warmup=100, data=data, index=index)
    with pytest.raises(EngineInputError, match="adapt_delta"):
        sample(GAUSSIAN, np.zeros(2), adapt_delta=1.0, data=data, index=index)
    with pytest.raises(EngineInputError, match="metric"):
        sample(GAUSSIAN, np.zeros(2), metric="unit", data=data, index=index)
    with pytest.raises(EngineInputError, match="numba"):
        sample(lambda x: (0.0, x), np.zeros(2))
    with pytest.raises(EngineInputError, match="initial_position"):
        sample(GAUSSIAN, np.zeros((3, 2)), chains=4, data=data, index=index)
    with pytest.raises(EngineInputError, match="gradient of shape"):
        sample(_wrong_gradient, np.zeros(3))
    with pytest.raises(EngineInputError, match="failed at the initial position"):
        sample(GAUSSIAN, np.zeros(3), data=data, index=index)
    with pytest.raises(SamplerError, match="not finite"):
        sample(_funnel, np.array([-1000.0, 0.0, 1.0]))


def test_log_density_survives_pickling_for_process_executors():
    import pickle

    from engine.nuts import log_density

    adapted = log_density(_hierarchical_normal, with_data=False)
    restored = pickle.loads(pickle.dumps(adapted))
    x = np.linspace(-1, 1, 9)
    expected_logp, expected_grad = _hierarchical_normal(x)
    logp, grad = restored(x, np.zeros(0), np.zeros(0, dtype=np.int64))
    assert logp == expected_logp
    np.testing.assert_array_equal(grad, expected_grad)
