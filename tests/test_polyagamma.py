"""engine.polyagamma: exact PG(b, z) draws against the exact CDF (series) and the exact moments.

Tolerances are Monte Carlo errors: a mean within 4 standard errors; a variance within 4 standard
errors of the sample variance (estimated from the draws' fourth central moment); Kolmogorov-Smirnov
at level 0.001 against the series CDF (so a correct sampler fails a given case with probability 1e-3).
"""

import math

import numpy as np
import pytest
from scipy import stats

from engine.errors import EngineInputError
from engine.polyagamma import pg1_cdf, pg_mean, pg_variance, random_polyagamma

Z_VALUES = [0.0, 1e-6, 0.5, 5.0, 50.0]
B_VALUES = [1, 2, 10, 100]


def test_series_cdf_is_a_cdf_with_the_right_mean():
    # the two series agree where they meet, and integral of 1 - F is the exact mean
    xs = np.linspace(0.0, 4.0, 40001)
    for z in Z_VALUES:
        left, right = pg1_cdf([0.25 - 1e-9, 0.25 + 1e-9], z)
        assert abs(left - right) < 1e-7
        F = pg1_cdf(xs, z)
        assert np.all(np.diff(F) >= -1e-12)
        assert np.trapezoid(1.0 - F, xs) == pytest.approx(float(pg_mean(1, z)), rel=1e-4)


@pytest.mark.parametrize("z", Z_VALUES)
def test_ks_against_exact_cdf(z):
    rng = np.random.default_rng(20261202 + int(1000 * z))
    draws = random_polyagamma(1, z, size=20000, rng=rng)
    result = stats.kstest(draws, lambda x: pg1_cdf(x, z))
    assert result.pvalue > 1e-3


@pytest.mark.parametrize("b", B_VALUES)
@pytest.mark.parametrize("z", Z_VALUES)
def test_mean_and_variance(b, z):
    n = 20000 if b < 100 else 4000
    rng = np.random.default_rng([b, int(1e6 * z)])
    draws = random_polyagamma(b, z, size=n, rng=rng)
    mean, variance = float(pg_mean(b, z)), float(pg_variance(b, z))
    assert abs(draws.mean() - mean) < 4.0 * np.sqrt(variance / n)
    centred = draws - draws.mean()
    m4 = np.mean(centred**4)
    se_var = np.sqrt(max(m4 - draws.var() ** 2, 0.0) / n)
    assert abs(draws.var() - variance) < 4.0 * se_var


def test_negative_z_is_symmetric_and_b_zero_is_zero():
    rng = np.random.default_rng(3)
    assert np.all(random_polyagamma(0, 2.0, size=5, rng=rng) == 0.0)
    draws = random_polyagamma(1, -5.0, size=20000, rng=rng)
    assert stats.kstest(draws, lambda x: pg1_cdf(x, 5.0)).pvalue > 1e-3


def test_same_generator_state_same_draws_and_broadcasting():
    a = random_polyagamma([1, 2, 3], [0.0, 1.0, 2.0], rng=np.random.default_rng(5))
    b = random_polyagamma([1, 2, 3], [0.0, 1.0, 2.0], rng=np.random.default_rng(5))
    assert a.shape == (3,) and np.array_equal(a, b)


def test_bad_input():
    with pytest.raises(EngineInputError, match="whole numbers"):
        random_polyagamma(1.5, 0.0)
    with pytest.raises(EngineInputError, match="whole numbers"):
        random_polyagamma(-1, 0.0)
    with pytest.raises(EngineInputError, match="finite"):
        random_polyagamma(1, np.inf)


def test_against_reference_package():
    """Two-sample KS against the PyPI ``polyagamma`` package (Devroye method), when it is installed."""
    reference = pytest.importorskip("polyagamma")
    for b, z in [(1, 0.5), (3, 5.0), (10, 50.0)]:
        ours = random_polyagamma(b, z, size=10000, rng=np.random.default_rng([b, 7]))
        theirs = reference.random_polyagamma(b, z, size=10000, method="devroye", random_state=np.random.default_rng([b, 8]))
        assert stats.ks_2samp(ours, theirs).pvalue > 1e-3


def _reference_pg1(rng, z):
    """PG(1, z) by the same algorithm with every probability evaluated exactly (no bounds): the draws the
    fast path must reproduce bit for bit (engine.polyagamma's pieces, run as Python)."""
    from engine import polyagamma as pg

    c = 0.5 * abs(z)
    k = np.pi**2 / 8.0 + 0.5 * c * c
    p = pg._exponential_part_probability.py_func(c, k)
    while True:
        if rng.random() < p:
            x = pg._T + rng.standard_exponential() / k
        elif c * pg._T < 1.0:
            while True:
                e1, e2 = rng.standard_exponential(), rng.standard_exponential()
                while e1 * e1 > 2.0 * e2 / pg._T:
                    e1, e2 = rng.standard_exponential(), rng.standard_exponential()
                x = pg._T / ((1.0 + pg._T * e1) * (1.0 + pg._T * e1))
                if rng.random() <= math.exp(-0.5 * c * c * x):
                    break
        else:
            mu = 1.0 / c
            while True:
                y = rng.standard_normal() ** 2
                x = mu + 0.5 * mu * mu * y - 0.5 * mu * math.sqrt(4.0 * mu * y + (mu * y) * (mu * y))
                if rng.random() > mu / (mu + x):
                    x = mu * mu / x
                if x <= pg._T:
                    break
        if pg._series_accepts.py_func(x, rng.random()):
            return 0.25 * x


def test_fast_path_reproduces_exact_evaluation():
    # the bounds decide comparisons only where exact evaluation decides them the same way, and the same
    # random numbers are consumed: identical draws over z in [0, 40] (both sides of c = 1/t and c = 16)
    z = np.concatenate([[0.0, 1e-6, 3.125, 32.0, -2.0], np.random.default_rng(1).uniform(0.0, 40.0, 3000)])
    fast = random_polyagamma(1, z, rng=np.random.default_rng(11))
    rng = np.random.default_rng(11)
    assert np.array_equal(fast, [_reference_pg1(rng, value) for value in z])


def test_fast_path_bounds_hold():
    from engine import polyagamma as pg

    # mixing probability: decreasing in c, and inside the tabulated bracket at random c (and beyond c = 16)
    c = np.concatenate([np.random.default_rng(2).uniform(0.0, 20.0, 20000), np.arange(0, 16.5, 1 / 128)])
    exact = np.array([pg._exponential_part_probability(v, np.pi**2 / 8 + 0.5 * v * v) for v in c])
    bounds = np.array([pg._mixing_bounds(v) for v in c])
    assert np.all(bounds[:, 0] <= exact) and np.all(exact <= bounds[:, 1])
    order = np.argsort(c)
    assert np.all(np.diff(exact[order]) <= 0.0)
    # the Lévy acceptance agrees with exp(-c^2 x / 2) for uniforms at, just below and above the threshold
    rng = np.random.default_rng(3)
    for cv, x in zip(rng.uniform(0.0, 1.0 / pg._T, 2000), rng.uniform(1e-3, pg._T, 2000)):
        threshold = math.exp(-0.5 * cv * cv * x)  # the kernel's exp (libm), not numpy's
        for u in (threshold, np.nextafter(threshold, 0.0), np.nextafter(threshold, 1.0), threshold - 1e-11,
                  threshold + 1e-11, rng.random()):
            assert pg._levy_accepts(u, cv, x) == (u <= threshold)
    # the first partial sum accepts every uniform below _ACCEPT_FIRST, at any x
    for x in np.concatenate([np.linspace(1e-3, 3.0, 3001), [pg._T]]):
        assert pg._series_accepts(x, pg._ACCEPT_FIRST)
