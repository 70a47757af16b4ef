"""engine.impute.lda: MASS::lda + predict(method = "debiased") posteriors, as mice.impute.lda uses them.

Reference: tests/fixtures/lda (R 4.2.2, MASS 7.3-58.2; see its PROVENANCE.md). R writes 15
significant digits, and MASS works through an SVD where engine uses a symmetric eigen-decomposition
of the same scaled covariance, so posteriors agree to ~1e-12; the tolerance is 1e-10 absolute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.impute import lda

FIXTURES = Path(__file__).parent / "fixtures" / "lda"
CASES = {
    "full": ["x1", "x2", "x3", "d1", "d2", "x4"],
    "collinear": ["x1", "x2", "x3", "d1", "d2", "x4", "x5"],
    "two_class": ["x1", "x3", "d1", "x4"],
}


@pytest.fixture(scope="module")
def data():
    return pd.read_csv(FIXTURES / "lda_data.csv")


@pytest.fixture(scope="module")
def reference():
    return pd.read_csv(FIXTURES / "lda_posterior.csv")


@pytest.mark.parametrize("case", list(CASES))
def test_posteriors_match_mass(case, data, reference):
    train = data["train"].to_numpy() == 1
    x = data[CASES[case]].to_numpy(dtype=float)
    y = data["y"].to_numpy()
    if case == "two_class":
        y = (y == 0).astype(np.int64)  # R: factor(y == 0), levels FALSE, TRUE
    n_classes = int(y.max()) + 1
    post = lda.lda_posterior(x[train], y[train], n_classes, x[~train])
    expected = reference[reference["case"] == case][[f"p{c}" for c in range(n_classes)]].to_numpy()
    np.testing.assert_allclose(post, expected, rtol=0, atol=1e-10)


def test_class_moments_match_dense_computation():
    """The sparse, shifted accumulation equals the textbook centred product, also for a column far
    from zero (where the unshifted formula would cancel) and for dummies."""
    rng = np.random.default_rng(5)
    n = 400
    classes = rng.integers(0, 3, n)
    x = np.column_stack([
        rng.normal(size=n) + classes,
        1e6 + rng.normal(scale=0.01, size=n),
        (rng.random(n) < 0.3).astype(float),
        (classes == 1).astype(float),
    ])
    counts, means, scatter = lda.class_moments(x, classes, 3)
    dense_means = np.vstack([x[classes == c].mean(axis=0) for c in range(3)])
    centred = x - dense_means[classes]
    np.testing.assert_array_equal(counts, np.bincount(classes, minlength=3))
    np.testing.assert_allclose(means, dense_means, rtol=1e-13)
    np.testing.assert_allclose(scatter, centred.T @ centred, rtol=1e-9, atol=1e-9 * np.abs(centred.T @ centred).max())


def test_absent_class_single_class_and_constant_predictor():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] > 0).astype(np.int64) * 2  # classes 0 and 2 observed, 1 absent
    post = lda.lda_posterior(x, y, 3, rng.normal(size=(5, 2)))
    assert post.shape == (5, 3) and np.all(post[:, 1] == 0) and np.allclose(post.sum(axis=1), 1)
    only = lda.lda_posterior(x, np.zeros(60, dtype=np.int64), 2, x[:4])
    np.testing.assert_array_equal(only, np.tile([1.0, 0.0], (4, 1)))
    # a predictor constant within both classes loses its direction instead of breaking the fit
    with_constant = np.column_stack([x, np.full(60, 3.0)])
    post_c = lda.lda_posterior(with_constant, y, 3, np.column_stack([x[:5], np.full(5, 3.0)]))
    np.testing.assert_allclose(post_c, lda.lda_posterior(x, y, 3, x[:5]), atol=1e-12)
    assert np.all(np.isfinite(post_c))


def test_lda_posterior_matches_normal_theory():
    rng = np.random.default_rng(8)
    n = 4000
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 2)) + np.where(y[:, None] == 1, 1.0, 0.0)
    post = lda.lda_posterior(x, y, 2, np.array([[0.5, 0.5], [2.0, 2.0]]))
    # true posterior with equal priors, unit covariance: logit = (x - 0.5)'(1, 1)
    prior = np.bincount(y) / n
    true_logit = np.array([0.0, 3.0]) + np.log(prior[1] / prior[0])
    np.testing.assert_allclose(np.log(post[:, 1] / post[:, 0]), true_logit, atol=0.15)
