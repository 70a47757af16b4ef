"""R's ``quantile(x, probs, type = 7)`` (stats/R/quantile.R), computed as R computes it.

With the sorted values x[1] <= ... <= x[n] (1-based) and index = 1 + (n - 1) p, lo = floor(index),
hi = ceiling(index), h = index - lo: the quantile is x[lo] when index is an integer or
x[hi] == x[lo], else (1 - h) x[lo] + h x[hi] -- the same floating-point operations as R, so the
results agree to the last bit.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["quantile7", "quantile7_rows", "type7_step"]


def type7_step(low, high, index: float):
    """R's type-7 step at the 1-based position ``index``: from the order statistics
    low = x[floor(index)] and high = x[ceiling(index)] (scalars or arrays of one shape), x[lo] when
    index is an integer (``low`` itself, not a copy) or x[hi] == x[lo], else (1 - h) x[lo] + h x[hi]
    with h = index - lo. The one home of this step (``quantile7`` here, the partitioned fits'
    order statistics in ``engine.partitioned.common``)."""
    lo = math.floor(index)
    if index > lo:
        h = index - lo
        return np.where(high != low, (1.0 - h) * low + h * high, low)
    return low


def _type7_sorted(ordered: np.ndarray, prob: float) -> np.ndarray:
    """Type-7 quantile of each row of a row-sorted (P, S) array, S >= 1."""
    s = ordered.shape[1]
    index = 1.0 + max(s - 1, 0) * prob  # 1-based, as in R
    lo = math.floor(index)
    hi = math.ceil(index)
    low = ordered[:, lo - 1]
    step = type7_step(low, ordered[:, hi - 1], index)
    return low.copy() if step is low else step


def quantile7_rows(flat: np.ndarray, prob: float) -> np.ndarray:
    """The type-7 quantile at ``prob`` of each row of a (P, S) array: shape (P,)."""
    return _type7_sorted(np.sort(flat, axis=1), prob)


def quantile7(x: np.ndarray, probs: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> np.ndarray:
    """R's ``quantile(x, probs, type = 7)`` of a vector: shape (len(probs),)."""
    ordered = np.sort(np.asarray(x, dtype=float).ravel())[None, :]
    return np.array([_type7_sorted(ordered, float(p))[0] for p in probs])
