"""The iterative Numba tree builder against the recursive plain-Python reference (tests/reference_nuts.py)."""

import numpy as np
import pytest

from engine.hmc.metric import EuclideanMetric, kinetic_energy, velocity, draw_momentum
from engine.hmc.integrator import leapfrog_step
from engine.hmc.tree import make_workspace, nuts_transition, log_sum_exp
from nuts_targets import GAUSSIAN as gaussian_logp_and_grad, correlated_covariance, gaussian_args
from reference_nuts import transition as reference_transition


def _setup(dimension, correlation):
    cov = correlated_covariance(dimension, correlation)
    mean = np.arange(dimension, dtype=float)
    metric = EuclideanMetric(np.linspace(0.5, 3.0, dimension), np.eye(dimension), np.eye(dimension), False)
    return gaussian_args(mean, cov), metric


CASES = [  # (dimension, correlation, step size, max depth, seed)
    (3, 0.5, 0.3, 10, 1),
    (3, 0.5, 0.3, 10, 2),
    (5, 0.9, 0.05, 6, 3),   # small step: hits max tree depth
    (5, 0.9, 2.5, 10, 4),   # large step: unstable, divergences
    (8, 0.0, 1.0, 10, 5),
    (8, 0.95, 0.8, 10, 6),
    (2, 0.99, 0.5, 10, 7),
]


@pytest.mark.parametrize("dimension, correlation, step_size, max_depth, seed", CASES)
def test_iterative_builder_matches_recursive_reference(dimension, correlation, step_size, max_depth, seed):
    args, metric = _setup(dimension, correlation)
    init_rng = np.random.default_rng(100 + seed)
    for repeat in range(5):
        q0 = np.arange(dimension, dtype=float) + 3.0 * init_rng.standard_normal(dimension)
        logp0, grad0 = gaussian_logp_and_grad(q0, *args)
        ws = make_workspace(dimension, max_depth, trace_capacity=2 ** max_depth)
        rng_fast = np.random.Generator(np.random.PCG64([seed, repeat]))
        rng_slow = np.random.Generator(np.random.PCG64([seed, repeat]))
        logp, accept, n_leapfrog, depth, divergent, energy = nuts_transition(
            gaussian_logp_and_grad, args, rng_fast, q0, logp0, grad0, step_size, metric, max_depth, ws)
        chosen, rec, ref_depth, ref_n = reference_transition(
            gaussian_logp_and_grad, args, rng_slow, q0, metric, step_size, max_depth)
        assert n_leapfrog == ref_n and depth == ref_depth
        assert divergent == rec.divergent
        np.testing.assert_array_equal(ws.trace_position[:n_leapfrog], np.array(rec.positions))
        np.testing.assert_array_equal(ws.trace_log_weight[:n_leapfrog], np.array(rec.log_weights))
        np.testing.assert_array_equal(ws.sample_position, chosen.q)
        assert logp == chosen.logp
        assert accept == pytest.approx(rec.sum_metropolis / ref_n, rel=1e-14)
        assert energy == pytest.approx(-chosen.logp + kinetic_energy(chosen.p, metric), rel=1e-14)
        # both consumed exactly the same random numbers
        assert rng_fast.random() == rng_slow.random()


def test_cases_exercise_divergence_max_depth_and_uturns():
    """The parametrised cases above are informative: they include divergent, max-depth and U-turn stops."""
    seen = set()
    for dimension, correlation, step_size, max_depth, seed in CASES:
        args, metric = _setup(dimension, correlation)
        ws = make_workspace(dimension, max_depth)
        rng = np.random.Generator(np.random.PCG64(seed))
        q0 = np.arange(dimension, dtype=float) + 1.0
        logp0, grad0 = gaussian_logp_and_grad(q0, *args)
        for _ in range(5):
            _, _, n, depth, divergent, _ = nuts_transition(
                gaussian_logp_and_grad, args, rng, q0, logp0, grad0, step_size, metric, max_depth, ws)
            seen.add("divergent" if divergent else ("max_depth" if depth == max_depth else "u_turn"))
    assert seen == {"divergent", "max_depth", "u_turn"}


def test_leapfrog_matches_analytic_harmonic_oscillator():
    """Standard normal, unit metric: the leapfrog map is linear with a known matrix per step."""
    args = gaussian_args(np.zeros(1), np.eye(1))
    metric = EuclideanMetric(np.ones(1), np.eye(1), np.eye(1), False)
    q, p = np.array([1.0]), np.array([0.5])
    eps = 0.1
    _, grad = gaussian_logp_and_grad(q, *args)
    q_expected, p_expected = 1.0, 0.5
    for _ in range(50):
        q, p, _, grad = leapfrog_step(gaussian_logp_and_grad, args, q, p, grad, eps, metric)
        p_half = p_expected - 0.5 * eps * q_expected
        q_expected = q_expected + eps * p_half
        p_expected = p_half - 0.5 * eps * q_expected
    assert q[0] == pytest.approx(q_expected, rel=1e-12) and p[0] == pytest.approx(p_expected, rel=1e-12)
    # the leapfrog's modified energy keeps H close to its start
    assert 0.5 * q[0] ** 2 + 0.5 * p[0] ** 2 == pytest.approx(0.625, abs=0.01)


def test_dense_momentum_has_the_metric_covariance():
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    metric = EuclideanMetric(np.diag(cov).copy(), cov, np.linalg.cholesky(cov), True)
    rng = np.random.Generator(np.random.PCG64(3))
    draws = np.array([draw_momentum(rng, metric, 2) for _ in range(20000)])
    # Cov(p) = M = cov⁻¹; check Cov(p) @ cov ≈ I within sampling error
    np.testing.assert_allclose(np.cov(draws.T) @ cov, np.eye(2), atol=0.05)
    np.testing.assert_allclose(velocity(np.array([1.0, 2.0]), metric), cov @ np.array([1.0, 2.0]))


def test_log_sum_exp_handles_infinities():
    assert log_sum_exp(-np.inf, 1.0) == 1.0
    assert log_sum_exp(2.0, -np.inf) == 2.0
    assert log_sum_exp(1000.0, 1000.0) == pytest.approx(1000.0 + np.log(2))
