"""What every fit from partitions shares: loading and checking the data, the pre-pass of levels,
the template frame that fixes the design's columns, the reduction tree, exact order statistics.

A fit from partitions sees the data only through per-partition functions (``dask.delayed`` over
``ddf.to_delayed()``) whose small results are reduced on the cluster or on the client; no
N-sized array ever leaves a worker. dask[distributed] and pyarrow are the optional extra
``engine[dask]``, imported lazily (:func:`dask_modules`).
"""

from __future__ import annotations

import math
import os
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

from engine.errors import ColumnNotFoundError, DataError, EngineInputError
from engine.rcompat.quantile import type7_step

__all__ = ["Brackets", "FormulaColumns", "Levels", "bracket_orders", "bracket_part", "bracketed_quantiles",
           "bucket_counts", "dask_modules", "exact_quantiles", "first_complete", "float_buckets", "formula_columns",
           "load", "merge_bracket_parts", "merge_samples", "prepass", "sample_index", "sample_weights", "template_frame", "tree",
           "type7"]

def dask_modules():
    """(dask, dask.dataframe), or EngineInputError naming the optional extra."""
    try:
        import dask
        import dask.dataframe as dd
    except ImportError:
        raise EngineInputError(
            "fitting a Dask DataFrame or a Parquet dataset needs the optional extra: "
            "pip install 'engine[dask]' (dask[distributed], pyarrow)") from None
    return dask, dd


def _parquet_files(path) -> list[str]:
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(f"data path {path!r} does not exist")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                   if f.endswith((".parquet", ".parq")) and not f.startswith(("_", ".")))
    if not files:
        raise DataError(f"data path {path!r} holds no Parquet files (*.parquet)")
    return files


def _check_worker_memory(partition_bytes: int, path: str) -> None:
    """A worker whose memory limit is below one partition's uncompressed size would be killed
    mid-pass: an error before any work (only with a distributed client)."""
    try:
        from distributed import get_client
        workers = get_client().scheduler_info().get("workers", {})
    except (ImportError, ValueError):
        return
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    low = min((m for m in limits if m), default=0)
    if low and low < partition_bytes:
        raise DataError(
            f"a worker's memory limit ({low / 2**20:.0f} MiB) is below one partition of {path!r} "
            f"({partition_bytes / 2**20:.0f} MiB uncompressed): write smaller row groups "
            "or give the workers more memory")


def load(data, needed: list[str], what: dict | None = None):
    """A Dask DataFrame of the ``needed`` columns of ``data`` (a Dask DataFrame or a Parquet
    path); every needed column checked (in every file of a dataset) before any work. ``what``:
    how the error names a column that is not the formula's (``{"school": "cluster column"}``)."""
    what = what or {}

    def label(absent):
        return ", ".join(f"{what[c]} {c!r}" if c in what else repr(c) for c in absent)

    _, dd = dask_modules()
    if isinstance(data, (str, os.PathLike)):
        import pyarrow.parquet as pq

        files = _parquet_files(data)
        largest = 0
        for f in files:  # a column missing from some files is an error, not silent NaN
            meta = pq.ParquetFile(f)
            names = set(meta.schema_arrow.names)
            absent = [c for c in needed if c not in names]
            if absent:
                raise ColumnNotFoundError(
                    f"column(s) {label(absent)} of the formula missing from Parquet file {f!r}")
            if meta.metadata.num_row_groups:
                largest = max(largest, meta.metadata.row_group(0).total_byte_size)
        _check_worker_memory(largest, path=os.fspath(data))
        return dd.read_parquet(files, columns=needed)
    absent = [c for c in needed if c not in data.columns]
    if absent:
        raise ColumnNotFoundError(f"column(s) {label(absent)} of the formula not in the data")
    return data[needed]


def _is_factor_dtype(dtype) -> bool:
    return (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


class FormulaColumns(NamedTuple):
    """The data columns a formula reads (``needed``, formula order), those the fixed part codes as
    factors (``factors``: factor dtypes and ``factor(x)`` of numbers, the latter in ``wrapped``)."""

    needed: list
    factors: list
    wrapped: set


def formula_columns(parsed, dtypes, group_columns=()) -> FormulaColumns:
    """The columns of ``parsed`` (engine.formula.parse_formula) given the data's ``dtypes``;
    ``group_columns`` are left out of ``factors`` (their values travel as cells instead)."""
    from engine.formula import _FACTOR_FUNCTIONS, _Call, _formula_plan

    _, refs, _, _ = _formula_plan(parsed.text, None)
    needed = list(dict.fromkeys(c for c, _ in refs))
    wrapped = {node.args[0].name for node in parsed._variable_nodes
               if isinstance(node, _Call) and node.func in _FACTOR_FUNCTIONS}
    factors = [c for c in needed if c not in group_columns
               and (c in wrapped or (dtypes is not None and c in dtypes and _is_factor_dtype(dtypes[c])))]
    return FormulaColumns(needed, factors, wrapped)


# ---------------------------------------------------------------- the pre-pass and the template

class Levels(NamedTuple):
    """What the pre-pass found: per factor column the set of values on complete rows, one complete
    row (a one-row DataFrame, or None), the distinct combinations of the group columns on complete
    rows (DataFrame, or None without group columns), the complete and all rows."""

    levels: dict
    first: pd.DataFrame | None
    cells: pd.DataFrame | None
    n_complete: int
    n_rows: int


def _prepass_part(part: pd.DataFrame, factor_cols: list, group_cols: list) -> Levels:
    complete = part.dropna()
    levels = {c: set(complete[c].unique().tolist()) for c in factor_cols}
    cells = complete[group_cols].drop_duplicates() if group_cols else None
    return Levels(levels, complete.iloc[:1], cells, len(complete), len(part))


def _merge_levels(a: Levels, b: Levels) -> Levels:
    levels = {c: a.levels[c] | b.levels[c] for c in a.levels}
    first = a.first if len(a.first) else b.first
    cells = None if a.cells is None else pd.concat([a.cells, b.cells]).drop_duplicates()
    return Levels(levels, first, cells, a.n_complete + b.n_complete, a.n_rows + b.n_rows)


def prepass(dask, parts, factor_cols: list, group_cols: list = (), formula: str = "") -> Levels:
    """One look at every partition: the factor levels in use, one complete row and the group-column
    combinations (cells), merged in a tree; DataError when no complete row is left."""
    leaves = [dask.delayed(_prepass_part)(p, list(factor_cols), list(group_cols)) for p in parts]
    out = dask.compute(tree(dask, leaves, _merge_levels))[0]
    if out.n_complete == 0:
        raise DataError(f"no rows left after removing rows with missing values ({formula})")
    return out


def first_complete(dask, parts, formula: str = "") -> Levels:
    """The pre-pass when no column is a factor: one complete row only, from the first partitions
    (usually one partition read), so the pass over all the data is skipped."""
    for p in parts:
        first = dask.compute(dask.delayed(lambda part: part.dropna().iloc[:1])(p))[0]
        if len(first):
            return Levels({}, first, None, -1, -1)
    raise DataError(f"no rows left after removing rows with missing values ({formula})")


def template_frame(levels: Levels, dtypes, columns: FormulaColumns, rows: pd.DataFrame | None = None):
    """A small frame on which the in-memory formula layer gives the fitted design's columns and
    coding: ``rows`` (default: the complete row) repeated so that every factor column cycles through
    all its levels (R's order: numbers for ``factor(x)`` of numbers, else as str), with the data's
    dtypes (known categories kept, so unused ones drop as R's model.frame does)."""
    base = levels.first if rows is None else rows
    width = max([len(levels.levels[c]) for c in columns.factors] + [1])
    out = pd.concat([base.iloc[[0]]] * width, ignore_index=True)
    for c in columns.factors:
        vals = sorted(levels.levels[c], key=str if c not in columns.wrapped else None)
        col = [vals[i % len(vals)] for i in range(width)]
        dtype = dtypes[c]
        if isinstance(dtype, pd.CategoricalDtype):
            if dtype.categories.size and not dtype.categories.isin(list(levels.levels[c])).any():
                raise DataError(f"factor {c!r}: its categories do not match its values")
            out[c] = pd.Categorical(col, categories=dtype.categories, ordered=dtype.ordered)
        else:
            out[c] = pd.Series(col, dtype=dtype)
    return out if rows is None else pd.concat([rows, out], ignore_index=True)


def tree(dask, items, combine: Callable):
    """Pairwise reduction of delayed ``items`` by ``combine`` (depth log2 of the count)."""
    while len(items) > 1:
        nxt = [dask.delayed(combine)(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


# ---------------------------------------------------------------- exact order statistics

BUCKET_BITS = 18


def float_buckets(v: np.ndarray) -> np.ndarray:
    """The bucket of each float64: the top BUCKET_BITS bits of its order-preserving integer image
    (sign flipped for positives, every bit for negatives), so buckets are monotone in the value,
    cover the whole real line and need no range; a bucket spans 1/64 of a binade."""
    i = np.ascontiguousarray(v, dtype=np.float64).view(np.int64)
    key = (i ^ ((i >> 63) | np.int64(-2**63))).view(np.uint64)
    return (key >> np.uint64(64 - BUCKET_BITS)).astype(np.int64)


def bucket_counts(v: np.ndarray) -> np.ndarray:
    """(2^BUCKET_BITS,) counts of ``v`` by :func:`float_buckets` (summed over partitions)."""
    return np.bincount(float_buckets(v), minlength=1 << BUCKET_BITS)


def _counts_part(values: Callable, part):
    return bucket_counts(values(part))


def _select_part(values: Callable, wanted, part):
    v = values(part)
    return v[np.isin(float_buckets(v), wanted)]


def quantile_orders(n: int, probs) -> tuple[list, list]:
    """R's type-7 positions (1-based) of ``probs`` among n values and the 0-based order
    statistics they need."""
    index = [1.0 + (n - 1) * p for p in probs]
    orders = sorted({int(np.floor(i)) - 1 for i in index} | {int(np.ceil(i)) - 1 for i in index})
    return index, orders


def exact_quantiles(dask, parts, values: Callable, n: int, probs=(0.0, 0.25, 0.5, 0.75, 1.0),
                    counts: np.ndarray | None = None) -> np.ndarray:
    """R's type-7 quantiles at ``probs`` of the ``n`` values ``values(part)`` (1-D per partition),
    exact: the values' :func:`bucket_counts` (one pass, or ``counts`` from an earlier pass over
    the same values) locate each needed order statistic's bucket; a second pass gathers those few
    buckets, sorted locally (the bucket of a value is computed by the same formula in both passes,
    so the counts place each order statistic exactly)."""
    index, orders = quantile_orders(n, probs)
    if counts is None:
        counts = dask.compute(tree(dask, [dask.delayed(_counts_part)(values, p) for p in parts],
                                   np.add))[0]
    cum = np.cumsum(counts)
    if cum[-1] != n:
        raise DataError(f"internal: {cum[-1]} values counted, {n} expected")
    buckets = np.searchsorted(cum, np.asarray(orders), side="right")
    wanted = np.unique(buckets)
    chunks = dask.compute(*[dask.delayed(_select_part)(values, wanted, p) for p in parts])
    sorted_values = np.sort(np.concatenate(chunks))
    offset, start = {}, 0
    for b in wanted:  # where bucket b starts inside the sorted concatenation
        offset[b] = start
        start += counts[b]
    stat = {o: sorted_values[offset[b] + o - (cum[b - 1] if b else 0)] for o, b in zip(orders, buckets)}
    return type7(index, stat)


def type7(index, stat: dict) -> np.ndarray:
    """R's type-7 quantiles at 1-based positions ``index`` from the order statistics ``stat``
    (0-based order -> value): engine.rcompat.quantile's type-7 step at each position."""
    return np.array([type7_step(stat[math.floor(i) - 1], stat[math.ceil(i) - 1], i) for i in index])


# ------------------------------------------------- order statistics in the same pass as the sums
#
# exact_quantiles needs a pass of its own after the bucket counts. A fit that already makes a
# pass over the values (OLS's residual pass) can instead bracket each wanted order statistic from
# a small sample taken in an earlier pass: the values below each bracket are counted and those
# inside it gathered in that same pass, and the counts then prove (or not) that the order
# statistic is among the gathered values. The answer is exact either way: a bracket that misses
# (a sample unlike the data) only sends the fit to exact_quantiles' extra pass.

#: rows a partition contributes to the sample (evenly spaced), and the sample's cap after merging
SAMPLE_ROWS, SAMPLE_CAP = 2048, 1 << 16
#: a bracket reaches this many binomial standard deviations of the sample's CDF either side
BRACKET_SDS = 6.0


def sample_index(k: int, size: int = SAMPLE_ROWS) -> np.ndarray:
    """Evenly spaced row positions, at most ``size`` of k (deterministic: no random stream)."""
    if k <= size:
        return np.arange(k)
    return (np.arange(size) * k) // size


def sample_weights(k: int, taken: int) -> np.ndarray:
    """(taken,) rows of the k a partition's sampled rows stand for: a partition's share of the
    sample is then its share of the rows, whatever the partitions' sizes."""
    return np.full(taken, k / taken if taken else 0.0)


def merge_samples(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two partitions' sample rows stacked (last column: the weights, sample_weights), thinned to
    every other row beyond SAMPLE_CAP; a kept row then stands for twice as many rows (a and b are
    each thinned by half, being contiguous, so no partition's weight shifts)."""
    s = np.concatenate([a, b])
    if s.shape[0] <= SAMPLE_CAP:
        return s
    s = s[::2].copy()
    s[:, -1] *= 2.0
    return s


class Brackets(NamedTuple):
    """Intervals [lo[k], hi[k]] and the 0-based order statistics (among n values) each should hold."""

    lo: np.ndarray
    hi: np.ndarray
    orders: tuple


def bracket_orders(sample: np.ndarray, weights: np.ndarray, n: int, orders) -> Brackets | None:
    """Brackets for ``orders`` from a weighted ``sample`` of the n values: [lo, hi] reach
    BRACKET_SDS standard deviations (at the sample's effective size, Kish's sum(w)^2 / sum(w^2))
    of the weighted sample CDF either side of o / (n - 1); overlapping brackets merged. None when
    the sample is too small to narrow anything down (then exact_quantiles' pass)."""
    sample = np.asarray(sample, dtype=np.float64)
    order = np.argsort(sample, kind="stable")
    s, w = sample[order], np.asarray(weights, dtype=np.float64)[order]
    total = w.sum()
    m_eff = total * total / np.dot(w, w) if total > 0 else 0.0
    if m_eff < 64 or n < 2:
        return None
    cdf = (np.cumsum(w) - 0.5 * w) / total  # mid-point ranks
    spans = []
    for o in sorted(orders):
        p = o / (n - 1)
        delta = BRACKET_SDS * np.sqrt(p * (1.0 - p) / m_eff) + 2.0 / m_eff
        a = int(np.searchsorted(cdf, p - delta, side="right")) - 1  # last point at or below p - delta
        b = int(np.searchsorted(cdf, p + delta, side="left"))       # first point at or above p + delta
        lo = s[a] if a >= 0 else -np.inf
        hi = s[b] if b < s.size else np.inf
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(hi, spans[-1][1]), spans[-1][2] + (o,))
        else:
            spans.append((lo, hi, (o,)))
    return Brackets(np.array([x[0] for x in spans]), np.array([x[1] for x in spans]),
                    tuple(x[2] for x in spans))


def bracket_part(v: np.ndarray, brackets: Brackets | None):
    """A partition's share: per bracket the count of values below it (k,) and the values in it."""
    if brackets is None:
        return None
    below = np.array([np.count_nonzero(v < lo) for lo in brackets.lo], dtype=np.int64)
    inside = [v[(v >= lo) & (v <= hi)] for lo, hi in zip(brackets.lo, brackets.hi)]
    return below, inside


def merge_bracket_parts(a, b):
    if a is None:
        return None
    return a[0] + b[0], [np.concatenate([x, y]) for x, y in zip(a[1], b[1])]


def bracketed_quantiles(brackets: Brackets | None, share, n: int, probs) -> np.ndarray | None:
    """R's type-7 quantiles at ``probs`` from the merged bracket shares, or None where a wanted
    order statistic is not provably inside its bracket (then exact_quantiles' pass)."""
    if brackets is None:
        return None
    index = quantile_orders(n, probs)[0]
    below, inside = share
    stat = {}
    for k, group in enumerate(brackets.orders):
        values = None
        for o in group:
            r = o - int(below[k])
            if not 0 <= r < inside[k].size:
                return None
            if values is None:
                values = np.sort(inside[k])
            stat[o] = values[r]
    return type7(index, stat)  # bracket_orders put every wanted order in a group
