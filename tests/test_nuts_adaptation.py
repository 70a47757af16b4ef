"""Stan's warm-up pieces: window schedule, dual averaging, regularised Welford, step-size heuristic."""

import math

import numpy as np
import pytest

from engine.hmc.adaptation import (
    adaptation_windows,
    dual_averaging_restart,
    dual_averaging_update,
    initial_step_size,
)
from engine.hmc.metric import EuclideanMetric, regularised_metric, welford_update
from nuts_targets import GAUSSIAN, gaussian_args


def test_window_schedule_for_1000_warmup_matches_stan():
    # Stan: init buffer 75, windows of 25, 50, 100, 200 then the last stretched to 950 - 1
    assert adaptation_windows(1000) == [(75, 99), (100, 149), (150, 249), (250, 449), (450, 949)]


def test_window_schedule_for_150_warmup_matches_stan():
    # 75 + 25 + 50 = 150 does not exceed the warm-up, so the default buffers stay: one window
    assert adaptation_windows(150) == [(75, 99)]


def test_window_schedule_for_15_warmup_matches_stan():
    # Stan: "No <metric> estimation is performed for num_warmup < 20" (step size still adapts)
    assert adaptation_windows(15) == []
    assert adaptation_windows(19) == []


def test_short_warmups_use_stans_15_75_10_split():
    # 100 < 150: init buffer 15% (15), term buffer 10% (10), one window of the remaining 75
    assert adaptation_windows(100) == [(15, 89)]
    # 20: 3 / 2 / 15
    assert adaptation_windows(20) == [(3, 17)]
    # 149: int(22.35) = 22, int(14.9) = 14, window 113
    assert adaptation_windows(149) == [(22, 134)]


def test_window_schedule_for_2000_and_500_warmup():
    assert adaptation_windows(2000) == [(75, 99), (100, 149), (150, 249), (250, 449), (450, 849), (850, 1949)]
    assert adaptation_windows(500) == [(75, 99), (100, 149), (150, 249), (250, 449)]


def test_dual_averaging_finds_the_step_size_with_target_acceptance():
    """With a deterministic acceptance curve a(ε) = exp(-ε), x̄ converges to log ε*, a(ε*) = δ."""
    state = np.zeros(3)
    target = 0.8
    mu = math.log(10.0)
    epsilon = 1.0
    for _ in range(5000):
        epsilon = dual_averaging_update(state, math.exp(-epsilon), target, mu)
    assert math.exp(state[2]) == pytest.approx(-math.log(target), rel=0.01)
    dual_averaging_restart(state)
    assert np.all(state == 0.0)


def test_dual_averaging_first_steps_follow_stans_formulas():
    state = np.zeros(3)
    mu = math.log(10.0 * 0.5)
    epsilon = dual_averaging_update(state, 0.3, 0.8, mu)
    s_bar = (0.8 - 0.3) / 11.0
    x = mu - s_bar * 1.0 / 0.05
    assert epsilon == pytest.approx(math.exp(x))
    assert state[2] == pytest.approx(x)  # x̄_1 = x_1 (weight 1^-κ = 1)
    epsilon = dual_averaging_update(state, 1.7, 0.8, mu)  # acceptance capped at 1
    s_bar = (1 - 1 / 12) * s_bar + (0.8 - 1.0) / 12
    x2 = mu - s_bar * math.sqrt(2) / 0.05
    assert epsilon == pytest.approx(math.exp(x2))
    w = 2 ** -0.75
    assert state[2] == pytest.approx((1 - w) * x + w * x2)


@pytest.mark.parametrize("is_dense", [False, True])
def test_welford_regularised_variance_matches_stan_formula(is_dense):
    rng = np.random.default_rng(5)
    draws = rng.normal(size=(40, 3)) * np.array([1.0, 2.0, 0.1]) + np.array([5.0, -1.0, 0.0])
    mean = np.zeros(3)
    m2 = np.zeros((3, 3)) if is_dense else np.zeros((1, 3))
    count = 0
    for x in draws:
        count = welford_update(count, mean, m2, x, is_dense)
    metric = regularised_metric(count, m2, is_dense, 3)
    n = 40.0
    expected = (n / (n + 5)) * np.cov(draws.T) + 1e-3 * 5 / (n + 5) * np.eye(3)
    if is_dense:
        np.testing.assert_allclose(metric.inverse_dense, expected, rtol=1e-10)
        np.testing.assert_allclose(metric.inverse_dense_cholesky @ metric.inverse_dense_cholesky.T, expected,
                                   rtol=1e-10)
    else:
        np.testing.assert_allclose(metric.inverse_diagonal, np.diag(expected), rtol=1e-10)


def test_constant_window_gives_the_regularisation_floor_not_nan():
    mean, m2 = np.zeros(2), np.zeros((1, 2))
    count = 0
    for _ in range(25):
        count = welford_update(count, mean, m2, np.array([1.0, 1.0]), False)
    metric = regularised_metric(count, m2, False, 2)
    np.testing.assert_allclose(metric.inverse_diagonal, 1e-3 * 5 / 30)


def test_step_size_heuristic_brackets_acceptance_0_8():
    """On N(0, s²) with unit metric one leapfrog's acceptance crosses 0.8 between ε/2 and ε (or ε and 2ε)."""
    args = gaussian_args(np.zeros(1), np.array([[0.01]]))  # sd 0.1: the heuristic must shrink ε from 1
    metric = EuclideanMetric(np.ones(1), np.eye(1), np.eye(1), False)
    x = np.array([0.05])
    logp, grad = GAUSSIAN(x, *args)
    rng = np.random.Generator(np.random.PCG64(1))
    epsilon = initial_step_size(GAUSSIAN, args, rng, x, logp, grad, 1.0, metric)
    assert epsilon in [2.0 ** -k for k in range(1, 12)]
    assert 0.01 < epsilon < 0.5
