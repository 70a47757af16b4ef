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

Algorithm: each feature's case order is sorted once; a node owns a contiguous range of every
sorted list, and a split partitions the ranges stably, so a tree costs O(n p depth) after the
initial O(p n log n) sorts. Shapes: x (n, p) float64, y (n,) float64 (class codes as floats).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def grow_tree(x, y, n_classes, min_split, min_bucket, cp, max_depth):
    """Grow a tree; n_classes == 0 means a regression tree.

    Returns (feature, threshold, left, right, n_nodes, leaf_of_row): node arrays (feature -1 for a
    leaf; a case goes left when x[feature] < threshold) and the leaf of every training row.
    """
    n, p = x.shape
    order = np.empty((p, n), dtype=np.int64)
    xs = np.empty((p, n))  # feature values in each feature's order: the scans read memory in sequence
    ys = np.empty((p, n))  # target in each feature's order
    column = np.empty(n)
    for j in range(p):
        for i in range(n):
            column[i] = x[i, j]
        order[j] = np.argsort(column, kind="mergesort")
        for t in range(n):
            xs[j, t] = column[order[j, t]]
            ys[j, t] = y[order[j, t]]
    buffer_x = np.empty(n)
    buffer_y = np.empty(n)
    max_nodes = 2 * n + 1
    feature = np.full(max_nodes, -1, dtype=np.int64)
    threshold = np.zeros(max_nodes)
    left = np.full(max_nodes, -1, dtype=np.int64)
    right = np.full(max_nodes, -1, dtype=np.int64)
    start = np.zeros(max_nodes, dtype=np.int64)
    end = np.zeros(max_nodes, dtype=np.int64)
    depth = np.zeros(max_nodes, dtype=np.int64)
    leaf_of_row = np.zeros(n, dtype=np.int64)
    goes_left = np.zeros(n, dtype=np.bool_)
    buffer = np.empty(n, dtype=np.int64)
    y_codes = np.zeros(n, dtype=np.int64)
    n_cls = max(n_classes, 1)
    if n_classes > 0:
        for i in range(n):
            y_codes[i] = int(y[i])
    counts = np.zeros(n_cls)
    left_counts = np.zeros(n_cls)

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
        # loss of the node
        if n_classes == 0:
            total = 0.0
            total_sq = 0.0
            for t in range(s, e):
                v = y[order[0, t]]
                total += v
                total_sq += v * v
            loss = total_sq - total * total / m
        else:
            counts[:] = 0.0
            for t in range(s, e):
                counts[y_codes[order[0, t]]] += 1.0
            sum_sq = 0.0
            for c in range(n_cls):
                sum_sq += counts[c] * counts[c]
            loss = m - sum_sq / m
            total = 0.0
        if root_loss < 0.0:
            root_loss = loss
        best_gain = 0.0
        best_j = -1
        best_thr = 0.0
        if m >= min_split and depth[node] < max_depth and loss > 1e-12 * max(root_loss, 1e-300):
            for j in range(p):
                if xs[j, s] == xs[j, e - 1]:
                    continue  # constant in this node (often a dummy deep in the tree): no split
                if n_classes == 0:
                    left_sum = 0.0
                    for t in range(s, e - 1):
                        left_sum += ys[j, t]
                        nl = t - s + 1
                        if nl < min_bucket:
                            continue
                        if m - nl < min_bucket:
                            break
                        xv = xs[j, t]
                        xn = xs[j, t + 1]
                        if xn <= xv:
                            continue
                        right_sum = total - left_sum
                        gain = left_sum * left_sum / nl + right_sum * right_sum / (m - nl) - total * total / m
                        if gain > best_gain:
                            best_gain = gain
                            best_j = j
                            best_thr = 0.5 * (xv + xn)
                else:
                    left_counts[:] = 0.0
                    left_sq = 0.0
                    right_sq = sum_sq
                    for t in range(s, e - 1):
                        c = int(ys[j, t])
                        left_sq += 2.0 * left_counts[c] + 1.0
                        right_count = counts[c] - left_counts[c]
                        right_sq -= 2.0 * right_count - 1.0
                        left_counts[c] += 1.0
                        nl = t - s + 1
                        if nl < min_bucket:
                            continue
                        if m - nl < min_bucket:
                            break
                        xv = xs[j, t]
                        xn = xs[j, t + 1]
                        if xn <= xv:
                            continue
                        nr = m - nl
                        gain = loss - (nl - left_sq / nl) - (nr - right_sq / nr)
                        if gain > best_gain:
                            best_gain = gain
                            best_j = j
                            best_thr = 0.5 * (xv + xn)
        if best_j < 0 or best_gain < cp * root_loss:
            for t in range(s, e):
                leaf_of_row[order[0, t]] = node
            continue
        # split: partition every feature's range stably into left then right
        n_left = 0
        for t in range(s, e):
            i = order[best_j, t]
            flag = x[i, best_j] < best_thr
            goes_left[i] = flag
            if flag:
                n_left += 1
        for j in range(p):
            a = s
            b = 0
            for t in range(s, e):
                i = order[j, t]
                if goes_left[i]:
                    order[j, a] = i
                    xs[j, a] = xs[j, t]
                    ys[j, a] = ys[j, t]
                    a += 1
                else:
                    buffer[b] = i
                    buffer_x[b] = xs[j, t]
                    buffer_y[b] = ys[j, t]
                    b += 1
            for t in range(b):
                order[j, a + t] = buffer[t]
                xs[j, a + t] = buffer_x[t]
                ys[j, a + t] = buffer_y[t]
        feature[node] = best_j
        threshold[node] = best_thr
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
