"""Classification and regression trees for ``method="cart"`` imputation (R mice's ``mice.impute.cart``).

mice fits ``rpart(y ~ ., minbucket = 5, cp = 1e-4)`` on the observed cases (method "anova" for a
numeric target, "class" for a factor) and imputes each missing case by a random observed donor
from the leaf the case falls in (for a factor: a class drawn with the leaf's class proportions,
which is the same as the class of a random donor of that leaf). Doove, van Buuren & Dusseldorp
(2014), *Comput. Stat. Data Anal.* 72, 92-104; Breiman et al. (1984) for the trees.

Growth rule, as rpart's defaults with mice's settings: a node is split when it has at least
``min_split`` (= 3 * min_bucket = 15) cases, at depth < 30, by the binary split ``x_j < c`` (c a
midpoint between consecutive distinct values) with both children >= ``min_bucket`` that most
reduces the node's loss (sum of squares; Gini impurity times cases for classes), provided the
reduction is at least ``cp`` times the root's loss. rpart additionally prunes back splits whose
cost-complexity falls below cp after growing and scales the class-tree cp by misclassification
risk; those refinements are not reproduced (the leaves differ at most in splits worth < cp).

Algorithm: a 0/1 feature (a dummy of a factor predictor: most of mice's design) has a single
candidate split, so its statistics come from one pass over the node's rows and each row's list of
ones; every other feature's case order is sorted once, a node owns a contiguous range of every
sorted list, and a split partitions the ranges stably. A tree costs O(n (p_cont + ones per row)
depth) after the initial O(p_cont n log n) sorts. Shapes: x (n, p) float64, y (n,) float64 (class
codes as floats).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles


class FeatureLayout(NamedTuple):
    """How the features of x (n, p) are scanned. ``is_binary`` (p,): all values 0 or 1; ``slot`` (p,):
    a feature's position among the binary or among the sorted ones; ``sorted_features`` (p_cont,):
    the feature of each sorted slot; each row's binary features equal to 1 in CSR form,
    ``ones_slot[ones_start[i]:ones_start[i + 1]]``."""

    is_binary: np.ndarray
    slot: np.ndarray
    sorted_features: np.ndarray
    ones_start: np.ndarray
    ones_slot: np.ndarray


class SortedLists(NamedTuple):
    """Each sorted feature's case order with the feature values and targets in that order
    (p_cont, n) each, so the scans read memory in sequence; a node owns ``[start, end)`` of every
    row, kept so by stable partitioning at each split."""

    order: np.ndarray
    xs: np.ndarray
    ys: np.ndarray


class NodeStatistics(NamedTuple):
    """A node's loss and the sums its split scans need: ``total`` (regression: sum of y) and
    ``sum_sq`` (classification: sum of squared class counts; the counts themselves are written
    into the caller's buffer)."""

    loss: float
    total: float
    sum_sq: float


class Split(NamedTuple):
    """The best split found so far: feature -1 for none; the gain must be strictly exceeded."""

    gain: float
    feature: int
    threshold: float


class Workspace(NamedTuple):
    """Scratch arrays of one tree's growth, allocated once: ``rows`` (n,) (a node owns
    rows[start:end]), ``y_codes`` (n,) class codes, class counts of the node and of a scan's left
    side (n_classes,), per binary feature the node's count, target sum and class counts of x = 1
    cases (n_bin,) / (n_bin, n_classes), and the partition buffers (n,)."""

    rows: np.ndarray
    y_codes: np.ndarray
    counts: np.ndarray
    left_counts: np.ndarray
    ones_count: np.ndarray
    ones_sum: np.ndarray
    ones_class: np.ndarray
    goes_left: np.ndarray
    buffer: np.ndarray
    buffer_x: np.ndarray
    buffer_y: np.ndarray


@numba.njit(cache=True, nogil=True)
def _feature_layout(x):
    n, p = x.shape
    is_binary = np.ones(p, dtype=np.bool_)
    for i in range(n):
        for j in range(p):
            v = x[i, j]
            if v != 0.0 and v != 1.0:
                is_binary[j] = False
    slot = np.empty(p, dtype=np.int64)
    n_bin = 0
    n_cont = 0
    for j in range(p):
        if is_binary[j]:
            slot[j] = n_bin
            n_bin += 1
        else:
            slot[j] = n_cont
            n_cont += 1
    sorted_features = np.empty(n_cont, dtype=np.int64)
    for j in range(p):
        if not is_binary[j]:
            sorted_features[slot[j]] = j
    ones_start = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        count = 0
        for j in range(p):
            if is_binary[j] and x[i, j] == 1.0:
                count += 1
        ones_start[i + 1] = ones_start[i] + count
    ones_slot = np.empty(ones_start[n], dtype=np.int64)
    for i in range(n):
        t = ones_start[i]
        for j in range(p):
            if is_binary[j] and x[i, j] == 1.0:
                ones_slot[t] = slot[j]
                t += 1
    return FeatureLayout(is_binary, slot, sorted_features, ones_start, ones_slot)


@numba.njit(cache=True, nogil=True)
def _sorted_lists(x, y, sorted_features):
    n = x.shape[0]
    n_cont = sorted_features.shape[0]
    order = np.empty((n_cont, n), dtype=np.int64)
    xs = np.empty((n_cont, n))
    ys = np.empty((n_cont, n))
    column = np.empty(n)
    for f in range(n_cont):
        j = sorted_features[f]
        for i in range(n):
            column[i] = x[i, j]
        order[f] = np.argsort(column, kind="mergesort")
        for t in range(n):
            xs[f, t] = column[order[f, t]]
            ys[f, t] = y[order[f, t]]
    return SortedLists(order, xs, ys)


@numba.njit(cache=True, nogil=True)
def _node_statistics(y, n_classes, work, s, e):
    """Loss of the node owning rows[s:e]: sum of squares (regression) or Gini impurity times cases
    (classification, filling ``work.counts``)."""
    rows, y_codes, counts = work.rows, work.y_codes, work.counts
    m = e - s
    if n_classes == 0:
        total = 0.0
        total_sq = 0.0
        for t in range(s, e):
            v = y[rows[t]]
            total += v
            total_sq += v * v
        return NodeStatistics(total_sq - total * total / m, total, 0.0)
    counts[:] = 0.0
    for t in range(s, e):
        counts[y_codes[rows[t]]] += 1.0
    sum_sq = 0.0
    for c in range(counts.shape[0]):
        sum_sq += counts[c] * counts[c]
    return NodeStatistics(m - sum_sq / m, 0.0, sum_sq)


@numba.njit(cache=True, nogil=True)
def _binary_feature_sums(y, n_classes, layout, work, s, e):
    """Per binary feature, the node's cases with x = 1: their count, target sum (regression) or class
    counts (classification), from each row's list of ones."""
    rows, y_codes = work.rows, work.y_codes
    ones_count, ones_sum, ones_class = work.ones_count, work.ones_sum, work.ones_class
    ones_count[:] = 0.0
    if n_classes == 0:
        ones_sum[:] = 0.0
    else:
        ones_class[:, :] = 0.0
    for t in range(s, e):
        i = rows[t]
        for u in range(layout.ones_start[i], layout.ones_start[i + 1]):
            b = layout.ones_slot[u]
            ones_count[b] += 1.0
            if n_classes == 0:
                ones_sum[b] += y[i]
            else:
                ones_class[b, y_codes[i]] += 1.0


@numba.njit(cache=True, nogil=True)
def _binary_gain(b, m, n_classes, stats, work, min_bucket):
    """Gain of the split x < 0.5 of binary feature slot b; -1 when a child is below min_bucket."""
    counts, ones_count, ones_sum, ones_class = work.counts, work.ones_count, work.ones_sum, work.ones_class
    nr = ones_count[b]
    nl = m - nr
    if nl < min_bucket or nr < min_bucket:
        return -1.0
    if n_classes == 0:
        right_sum = ones_sum[b]
        left_sum = stats.total - right_sum
        return left_sum * left_sum / nl + right_sum * right_sum / nr - stats.total * stats.total / m
    left_sq = 0.0
    right_sq = 0.0
    for c in range(counts.shape[0]):
        rc = ones_class[b, c]
        lc = counts[c] - rc
        left_sq += lc * lc
        right_sq += rc * rc
    return stats.loss - (nl - left_sq / nl) - (nr - right_sq / nr)


@numba.njit(cache=True, nogil=True)
def _split_after(xs, f, t, s, m, min_bucket):
    """Whether the node's sorted range [s, s + m) of feature slot f splits after position t:
    (state, nl, threshold) with nl = t - s + 1 cases left; state -1 when the right child is below
    min_bucket (and stays so for every later t: stop), 0 when the left child is below min_bucket
    or x ties across t (no split here), 1 for a split at the midpoint ``threshold``."""
    nl = t - s + 1
    if nl < min_bucket:
        return 0, nl, 0.0
    if m - nl < min_bucket:
        return -1, nl, 0.0
    xv = xs[f, t]
    xn = xs[f, t + 1]
    if xn <= xv:
        return 0, nl, 0.0
    return 1, nl, 0.5 * (xv + xn)


@numba.njit(cache=True, nogil=True)
def _scan_sorted_feature(j, f, s, e, n_classes, stats, work, lists, min_bucket, best):
    """Every midpoint split of sorted feature slot f (feature j) in the node's range [s, e), with both
    children >= min_bucket; returns the better of ``best`` and the best of these (strictly)."""
    counts, left_counts = work.counts, work.left_counts
    xs = lists.xs
    ys = lists.ys
    m = e - s
    if xs[f, s] == xs[f, e - 1]:
        return best  # constant in this node: no split
    if n_classes == 0:
        left_sum = 0.0
        for t in range(s, e - 1):
            left_sum += ys[f, t]
            state, nl, threshold = _split_after(xs, f, t, s, m, min_bucket)
            if state < 0:
                break
            if state == 0:
                continue
            right_sum = stats.total - left_sum
            gain = left_sum * left_sum / nl + right_sum * right_sum / (m - nl) - stats.total * stats.total / m
            if gain > best.gain:
                best = Split(gain, j, threshold)
        return best
    left_counts[:] = 0.0
    left_sq = 0.0
    right_sq = stats.sum_sq
    for t in range(s, e - 1):
        c = int(ys[f, t])
        left_sq += 2.0 * left_counts[c] + 1.0
        right_count = counts[c] - left_counts[c]
        right_sq -= 2.0 * right_count - 1.0
        left_counts[c] += 1.0
        state, nl, threshold = _split_after(xs, f, t, s, m, min_bucket)
        if state < 0:
            break
        if state == 0:
            continue
        nr = m - nl
        gain = stats.loss - (nl - left_sq / nl) - (nr - right_sq / nr)
        if gain > best.gain:
            best = Split(gain, j, threshold)
    return best


@numba.njit(cache=True, nogil=True)
def _partition(x, split, lists, work, s, e):
    """Partition the node's rows and every sorted list stably into left then right; returns the
    number of cases going left."""
    rows, goes_left = work.rows, work.goes_left
    buffer, buffer_x, buffer_y = work.buffer, work.buffer_x, work.buffer_y
    n_left = 0
    for t in range(s, e):
        i = rows[t]
        flag = x[i, split.feature] < split.threshold
        goes_left[i] = flag
        if flag:
            n_left += 1
    a = s
    b = 0
    for t in range(s, e):
        i = rows[t]
        if goes_left[i]:
            rows[a] = i
            a += 1
        else:
            buffer[b] = i
            b += 1
    for t in range(b):
        rows[a + t] = buffer[t]
    order, xs, ys = lists.order, lists.xs, lists.ys
    for f in range(order.shape[0]):
        a = s
        b = 0
        for t in range(s, e):
            i = order[f, t]
            if goes_left[i]:
                order[f, a] = i
                xs[f, a] = xs[f, t]
                ys[f, a] = ys[f, t]
                a += 1
            else:
                buffer[b] = i
                buffer_x[b] = xs[f, t]
                buffer_y[b] = ys[f, t]
                b += 1
        for t in range(b):
            order[f, a + t] = buffer[t]
            xs[f, a + t] = buffer_x[t]
            ys[f, a + t] = buffer_y[t]
    return n_left


@numba.njit(cache=True, nogil=True)
def grow_tree(x, y, n_classes, min_split, min_bucket, cp, max_depth):
    """Grow a tree; n_classes == 0 means a regression tree.

    Returns (feature, threshold, left, right, n_nodes, leaf_of_row): node arrays (feature -1 for a
    leaf; a case goes left when x[feature] < threshold) and the leaf of every training row.

    Features whose values are all 0 or 1 (the dummies of factor predictors: most of mice's design)
    have one candidate split, x < 0.5; their split statistics come from the node's rows and each
    row's list of ones (a dummy block has one 1 per row), and they need no sorted order. The other
    features keep sorted case lists, partitioned stably at every split. Candidates are compared in
    feature order and a later one must gain strictly more, so ties go to the first feature.
    Nodes are grown depth-first from a stack; each step is one of the kernels above.
    """
    n, p = x.shape
    layout = _feature_layout(x)
    lists = _sorted_lists(x, y, layout.sorted_features)
    n_bin = int(np.sum(layout.is_binary))
    max_nodes = 2 * n + 1
    feature = np.full(max_nodes, -1, dtype=np.int64)
    threshold = np.zeros(max_nodes)
    left = np.full(max_nodes, -1, dtype=np.int64)
    right = np.full(max_nodes, -1, dtype=np.int64)
    start = np.zeros(max_nodes, dtype=np.int64)
    end = np.zeros(max_nodes, dtype=np.int64)
    depth = np.zeros(max_nodes, dtype=np.int64)
    leaf_of_row = np.zeros(n, dtype=np.int64)
    y_codes = np.zeros(n, dtype=np.int64)
    n_cls = max(n_classes, 1)
    if n_classes > 0:
        for i in range(n):
            y_codes[i] = int(y[i])
    work = Workspace(np.arange(n), y_codes, np.zeros(n_cls), np.zeros(n_cls), np.zeros(n_bin),
                     np.zeros(n_bin), np.zeros((n_bin, n_cls)), np.zeros(n, dtype=np.bool_),
                     np.empty(n, dtype=np.int64), np.empty(n), np.empty(n))
    rows = work.rows

    end[0] = n
    n_nodes = 1
    stack = np.empty(max_nodes, dtype=np.int64)
    stack[0] = 0
    top = 1
    root_loss = -1.0
    while top > 0:
        top -= 1
        node = stack[top]
        s = start[node]
        e = end[node]
        m = e - s
        stats = _node_statistics(y, n_classes, work, s, e)
        if root_loss < 0.0:
            root_loss = stats.loss
        best = Split(0.0, -1, 0.0)
        if m >= min_split and depth[node] < max_depth and stats.loss > 1e-12 * max(root_loss, 1e-300):
            if n_bin > 0:
                _binary_feature_sums(y, n_classes, layout, work, s, e)
            for j in range(p):
                if layout.is_binary[j]:
                    gain = _binary_gain(layout.slot[j], m, n_classes, stats, work, min_bucket)
                    if gain > best.gain:
                        best = Split(gain, j, 0.5)
                else:
                    best = _scan_sorted_feature(j, layout.slot[j], s, e, n_classes, stats, work, lists,
                                                min_bucket, best)
        if best.feature < 0 or best.gain < cp * root_loss:
            for t in range(s, e):
                leaf_of_row[rows[t]] = node
            continue
        n_left = _partition(x, best, lists, work, s, e)
        feature[node] = best.feature
        threshold[node] = best.threshold
        for child, cs, ce in ((n_nodes, s, s + n_left), (n_nodes + 1, s + n_left, e)):
            start[child] = cs
            end[child] = ce
            depth[child] = depth[node] + 1
            stack[top] = child
            top += 1
        left[node] = n_nodes
        right[node] = n_nodes + 1
        n_nodes += 2
    return feature[:n_nodes], threshold[:n_nodes], left[:n_nodes], right[:n_nodes], n_nodes, leaf_of_row


@numba.njit(cache=True, nogil=True)
def predict_leaves(feature, threshold, left, right, x):
    """Leaf of every row of x (n, p) in the tree given by the node arrays."""
    out = np.empty(x.shape[0], dtype=np.int64)
    for i in range(x.shape[0]):
        node = 0
        while feature[node] >= 0:
            if x[i, feature[node]] < threshold[node]:
                node = left[node]
            else:
                node = right[node]
        out[i] = node
    return out


@numba.njit(cache=True, nogil=True)
def leaf_donors(leaf_of_row, n_nodes, leaf_of_target, u):
    """A random training row (index) from each target's leaf, chosen with one uniform per target."""
    n = leaf_of_row.shape[0]
    count = np.zeros(n_nodes + 1, dtype=np.int64)
    for i in range(n):
        count[leaf_of_row[i] + 1] += 1
    for k in range(n_nodes):
        count[k + 1] += count[k]
    rows = np.empty(n, dtype=np.int64)
    fill = count[:n_nodes].copy()
    for i in range(n):
        leaf = leaf_of_row[i]
        rows[fill[leaf]] = i
        fill[leaf] += 1
    out = np.empty(leaf_of_target.shape[0], dtype=np.int64)
    for t in range(leaf_of_target.shape[0]):
        leaf = leaf_of_target[t]
        size = count[leaf + 1] - count[leaf]
        j = int(u[t] * size)
        if j >= size:
            j = size - 1
        out[t] = rows[count[leaf] + j]
    return out
