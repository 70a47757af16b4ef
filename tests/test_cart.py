"""engine.impute.cart's tree growth against a literal, exhaustive reference.

The reference (plain Python, O(n^2 p) per node) tries every feature and every midpoint between
consecutive distinct values of the node's cases, computes each side's loss directly (sum of squared
deviations; Gini impurity times cases for classes), and applies the same growth rule as the kernel:
split when the node has >= min_split cases, depth < max_depth, both children >= min_bucket, and the
best loss reduction (first feature wins ties) is at least cp times the root's loss. The kernel must
grow the same tree: same splits and the same training rows in every leaf. The designs mix 0/1
dummies (the kernel's sparse path) with continuous and tied features (its sorted path).
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.impute import cart


def _loss(y, n_classes):
    if y.size == 0:
        return 0.0
    if n_classes == 0:
        return float(((y - y.mean()) ** 2).sum())
    counts = np.bincount(y.astype(np.int64), minlength=n_classes).astype(float)
    return float(y.size - (counts**2).sum() / y.size)


def _reference_tree(x, y, n_classes, min_split, min_bucket, cp, max_depth):
    """Nested tuples: ("leaf", frozenset(rows)) or (feature, threshold, left, right)."""
    root_loss = _loss(y, n_classes)

    def grow(rows, depth):
        node_loss = _loss(y[rows], n_classes)
        best = (0.0, -1, 0.0)
        if rows.size >= min_split and depth < max_depth and node_loss > 1e-12 * max(root_loss, 1e-300):
            for j in range(x.shape[1]):
                values = np.unique(x[rows, j])
                for lo, hi in zip(values[:-1], values[1:]):
                    cut = 0.5 * (lo + hi)
                    goes_left = x[rows, j] < cut
                    n_left = int(goes_left.sum())
                    if n_left < min_bucket or rows.size - n_left < min_bucket:
                        continue
                    gain = node_loss - _loss(y[rows[goes_left]], n_classes) - _loss(y[rows[~goes_left]], n_classes)
                    if gain > best[0] * (1 + 1e-12) + 1e-12 * root_loss:
                        best = (gain, j, cut)
        gain, j, cut = best
        if j < 0 or gain < cp * root_loss:
            return ("leaf", frozenset(rows.tolist()))
        goes_left = x[rows, j] < cut
        return (j, cut, grow(rows[goes_left], depth + 1), grow(rows[~goes_left], depth + 1))

    return grow(np.arange(x.shape[0]), 0)


def _kernel_tree(x, y, n_classes, min_split, min_bucket, cp, max_depth):
    feature, threshold, left, right, n_nodes, leaf_of_row = cart.grow_tree(
        x, y, n_classes, min_split, min_bucket, cp, max_depth)

    def build(node):
        if feature[node] < 0:
            return ("leaf", frozenset(np.flatnonzero(leaf_of_row == node).tolist()))
        return (int(feature[node]), float(threshold[node]), build(left[node]), build(right[node]))

    return build(0)


def _design(rng, n):
    """Columns: 3 dummies of a 4-level factor, a 0/1 indicator, a continuous feature, a rounded
    (heavily tied) feature, a dummy that is constant in most of the data, a second continuous one."""
    group = rng.integers(0, 4, n)
    dummies = (group[:, None] == np.arange(1, 4)).astype(float)
    indicator = (rng.random(n) < 0.4).astype(float)
    z1 = rng.normal(size=n)
    tied = np.round(rng.normal(size=n) * 2) / 2
    rare = (rng.random(n) < 0.06).astype(float)
    z2 = rng.uniform(-1, 1, size=n)
    x = np.column_stack([dummies, indicator, z1, tied, rare, z2])
    signal = 1.5 * (group == 2) - 1.0 * indicator + np.where(z1 > 0.3, 1.2, 0.0) + 0.8 * tied * (z2 > 0)
    return x, signal


@pytest.mark.parametrize("seed", range(6))
def test_regression_tree_equals_exhaustive_reference(seed):
    rng = np.random.default_rng(seed)
    x, signal = _design(rng, 160)
    y = signal + rng.normal(scale=0.7, size=x.shape[0])
    args = (15, 5, 1e-4, 30)
    assert _kernel_tree(x, y, 0, *args) == _reference_tree(x, y, 0, *args)


@pytest.mark.parametrize("seed", range(6))
def test_classification_tree_equals_exhaustive_reference(seed):
    rng = np.random.default_rng(100 + seed)
    x, signal = _design(rng, 160)
    latent = signal + rng.normal(scale=0.8, size=x.shape[0])
    y = np.searchsorted(np.quantile(latent, [0.3, 0.7]), latent).astype(float)  # 3 classes
    args = (15, 5, 1e-4, 30)
    assert _kernel_tree(x, y, 3, *args) == _reference_tree(x, y, 3, *args)


def test_growth_limits_are_respected():
    """A large cp stops at the root; max_depth 1 gives a stump; min_bucket bounds every leaf."""
    rng = np.random.default_rng(7)
    x, signal = _design(rng, 200)
    y = signal + rng.normal(scale=0.5, size=200)
    feature, *_ = cart.grow_tree(x, y, 0, 15, 5, 10.0, 30)
    assert feature.tolist() == [-1]
    feature, _, _, _, n_nodes, _ = cart.grow_tree(x, y, 0, 15, 5, 1e-4, 1)
    assert n_nodes == 3 and feature[0] >= 0 and (feature[1:] == -1).all()
    stump = _kernel_tree(x, y, 0, 15, 5, 1e-4, 1)
    assert stump == _reference_tree(x, y, 0, 15, 5, 1e-4, 1)
    *_, leaf_of_row = cart.grow_tree(x, y, 0, 15, 12, 1e-4, 30)
    assert np.bincount(leaf_of_row)[np.bincount(leaf_of_row) > 0].min() >= 12


def test_predicted_leaves_of_training_rows_are_their_leaves():
    rng = np.random.default_rng(3)
    x, signal = _design(rng, 300)
    y = signal + rng.normal(scale=0.5, size=300)
    feature, threshold, left, right, n_nodes, leaf_of_row = cart.grow_tree(x, y, 0, 15, 5, 1e-4, 30)
    np.testing.assert_array_equal(cart.predict_leaves(feature, threshold, left, right, x), leaf_of_row)
    u = rng.random(50)
    targets = leaf_of_row[rng.integers(0, 300, 50)]
    donors = cart.leaf_donors(leaf_of_row, n_nodes, targets, u)
    np.testing.assert_array_equal(leaf_of_row[donors], targets)  # a donor from the target's own leaf
