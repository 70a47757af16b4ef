"""The shared pass of the multilevel fits from partitions: per-cell sufficient statistics.

A *cell* is one combination of the grouping columns' values on the complete rows (for nested
groups: a class). Everything ``engine.brm``'s Gaussian samplers and ``engine.lmer`` read is a sum
over the rows of each cell (engine.multilevel.model, "Sufficient statistics"; engine.lmer's
``_sufficient_stats``), so one pass over the partitions gives it:

1. pre-pass (common.prepass): the fixed part's factor levels and the distinct cells;
   a template frame with one row per cell (and the fixed factors' levels) goes through the
   in-memory formula layer, which gives the grouping factors' levels and codes exactly as for the
   whole data (R's orders, unused levels dropped) and the fixed design's columns;
2. the cell pass (:func:`cell_pass`): per partition, the design (engine.newdata.new_design), the
   rows with a missing value dropped and counted, each row's cell (a hash look-up of its group
   columns), and per cell n, sum y, sum y^2, sum u, sum u y for u = x - shift (the shift a data row,
   so that centring later loses no digits), with the totals U'U, sum (y - y0), sum (y - y0)^2, the
   extremes and the response's bucket counts (for exact quantiles); the partitions' results are
   merged by cell key in a tree (a class split across partitions is summed).

Shapes: k cells in a partition, K in all, p design columns (without the intercept for brm).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from engine.errors import DataError, ModelSpecError
from engine.multilevel.model import _cell_sums
from engine.partitioned.common import bucket_counts, formula_columns, load, prepass, template_frame, tree

__all__ = ["CellPlan", "CellSums", "cell_pass", "plan_cells"]


class CellPlan(NamedTuple):
    """What the cell pass needs: ``terms`` (engine.newdata fitted terms of the fixed part),
    ``response``, ``needed`` columns, ``group_cols``, ``index`` (pd.MultiIndex of the K0 template
    cells' group columns), ``cell_of_template`` (K0,) the sorted cell of each template cell,
    ``columns`` (p,) the design columns kept, ``shift`` (p,) subtracted from them, ``y_shift``."""

    terms: object
    response: str
    needed: list
    group_cols: list
    index: pd.MultiIndex
    cell_of_template: np.ndarray
    columns: np.ndarray
    shift: np.ndarray
    y_shift: float


class CellSums(NamedTuple):
    """Per cell (k,): ``cells`` ids, ``n``, ``sum_y``, ``sum_yy``, ``sum_u`` (k, p), ``sum_uy``
    (k, p); totals: ``uu`` (p, p), ``s1``, ``s2`` (sums of y - y_shift and its square), ``n_rows``,
    ``n_dropped``, ``y_counts`` (bucket counts), ``y_min``, ``y_max``, ``u_min``, ``u_max`` (p,)
    (of the unshifted columns)."""

    cells: np.ndarray
    n: np.ndarray
    sum_y: np.ndarray
    sum_yy: np.ndarray
    sum_u: np.ndarray
    sum_uy: np.ndarray
    uu: np.ndarray
    s1: float
    s2: float
    n_rows: int
    n_dropped: int
    y_counts: np.ndarray
    y_min: float
    y_max: float
    x_min: np.ndarray
    x_max: np.ndarray


def rows_of(plan: CellPlan, part: pd.DataFrame):
    """(X (m, p) kept columns, y (m,), cell (m,) sorted cell ids, n_dropped) of one partition's
    complete rows (R's na.omit over the formula's columns)."""
    from engine.newdata import new_design

    n = len(part)
    p = len(plan.columns)
    if n == 0:
        return np.zeros((0, p)), np.zeros(0), np.zeros(0, np.int64), 0
    keep = part[plan.needed].notna().all(axis=1).to_numpy()
    sub = part[keep]
    X = new_design(plan.terms, sub)[:, plan.columns] if len(sub) else np.zeros((0, p))
    y = pd.to_numeric(sub[plan.response], errors="coerce").to_numpy(dtype=np.float64)
    ok = ~np.isnan(y) & ~np.isnan(X).any(axis=1)
    X, y, sub = X[ok], y[ok], sub[ok]
    # +-Inf is not missing: an error naming the column, as in memory (it was dropped from y, and
    # in X it reached the sampler as "non-finite draws")
    if not np.isfinite(y).all():
        raise DataError(f"column {plan.response!r} has non-finite values (Inf) in the rows used; remove or recode them")
    if not np.isfinite(X).all():
        names = [plan.terms.column_names[j] for j in plan.columns]
        bad = [names[j] for j in np.flatnonzero(~np.isfinite(X).all(axis=0))]
        raise DataError(f"column(s) {', '.join(map(repr, bad))} have non-finite values (Inf) in the rows used; "
                        "remove or recode them")
    where = plan.index.get_indexer(pd.MultiIndex.from_frame(sub[plan.group_cols]))
    if np.any(where < 0):  # the pre-pass saw every complete row's cell
        raise DataError("a partition changed between the pre-pass and the cell pass")
    return np.ascontiguousarray(X), y, plan.cell_of_template[where], int(n - len(y))


def _cell_part(plan: CellPlan, part: pd.DataFrame) -> CellSums:
    X, y, cell, dropped = rows_of(plan, part)
    p = X.shape[1]
    cells, local = np.unique(cell, return_inverse=True)
    U = np.ascontiguousarray(X - plan.shift)
    cn, sy, syy, su, suy, _ = _cell_sums(y, U, local.astype(np.int64), len(cells), False)
    d = y - plan.y_shift
    big = np.inf
    return CellSums(cells, cn, sy, syy, su, suy, U.T @ U, float(d.sum()), float(d @ d), len(part),
                    dropped, bucket_counts(y), float(y.min(initial=big)), float(y.max(initial=-big)),
                    X.min(axis=0, initial=big) if p else np.zeros(0),
                    X.max(axis=0, initial=-big) if p else np.zeros(0))


def _merge(a: CellSums, b: CellSums) -> CellSums:
    cells, inverse = np.unique(np.concatenate([a.cells, b.cells]), return_inverse=True)

    def add(x, y):
        out = np.zeros((len(cells),) + x.shape[1:])
        np.add.at(out, inverse, np.concatenate([x, y]))
        return out

    return CellSums(cells, add(a.n, b.n), add(a.sum_y, b.sum_y), add(a.sum_yy, b.sum_yy),
                    add(a.sum_u, b.sum_u), add(a.sum_uy, b.sum_uy), a.uu + b.uu, a.s1 + b.s1,
                    a.s2 + b.s2, a.n_rows + b.n_rows, a.n_dropped + b.n_dropped,
                    a.y_counts + b.y_counts, min(a.y_min, b.y_min), max(a.y_max, b.y_max),
                    np.minimum(a.x_min, b.x_min), np.maximum(a.x_max, b.x_max))


class Plan(NamedTuple):
    """plan_cells' result: the ``plan``, the template's model frame ``frame`` (its groups' codes
    on the first K0 rows are the template cells'), ``parts`` (delayed partitions), ``parsed``,
    ``dtypes``, ``template`` (the frame the model frame was built on)."""

    plan: CellPlan
    frame: object
    parts: list
    parsed: object
    dtypes: object
    template: object


def plan_cells(dask, formula: str, data, *, centre: bool) -> Plan:
    """Pre-pass and template of a multilevel formula on partitioned data (random intercepts only).
    ``centre``: shift the design columns (without the intercept) by the first complete row's, as
    for brm's centred sums; else no shift and every column (lmer)."""
    from engine.formula import model_frame, parse_formula
    from engine.newdata import fitted_terms

    parsed = parse_formula(formula)
    if not parsed.random_terms:
        raise ModelSpecError(f"formula {formula!r} has no group-level term such as (1 | schoolid)")
    if parsed.has_dot:
        raise ModelSpecError("'.' in the formula is not yet available for partitioned data")
    slopes = [t.text for t in parsed.random_terms if not t.intercept_only]
    if slopes:
        raise ModelSpecError(f"random slopes ({', '.join(slopes)}) are not yet available for partitioned "
                             "data: group-level intercepts only, such as (1 | schoolid)")
    group_cols = list(dict.fromkeys(c for t in parsed.random_terms for cols in t.group_columns for c in cols))
    columns = formula_columns(parsed, None, group_cols)
    ddf = load(data, columns.needed)
    columns = formula_columns(parsed, ddf.dtypes, group_cols)
    parts = ddf.to_delayed()
    levels = prepass(dask, parts, columns.factors, group_cols, formula=formula)
    cells = levels.cells.reset_index(drop=True)
    rows = cells.copy()
    for c in columns.needed:
        if c not in group_cols:
            rows[c] = pd.Series(np.repeat(levels.first[c].to_numpy(), len(rows)), dtype=levels.first[c].dtype)
    rows = rows[columns.needed]
    template = template_frame(levels, ddf.dtypes, columns, rows=rows)
    frame = model_frame(parsed.text, template, allow_random=True)
    if len(frame.y) != len(template):
        raise DataError(f"formula {formula!r}: a transformation gives missing values on complete rows")
    terms = fitted_terms(frame, columns.needed)
    names = list(frame.column_names)
    keep = [j for j, c in enumerate(names) if not (centre and c == "(Intercept)")]
    X0 = np.asarray(frame.X)[0, keep] if centre else np.zeros(len(keep))
    y0 = float(frame.y[0]) if centre else 0.0
    from engine.multilevel.model import SimpleGroup, _cells, _group_structure

    k0 = len(cells)
    groups = [SimpleGroup(g.name, np.asarray(g.codes[:k0], dtype=np.int64), list(g.levels), int(g.n_levels))
              for g in frame.groups]
    structure = _group_structure(groups, k0)
    cell_of_template, _ = _cells(structure.group_codes, structure.n_levels)
    index = pd.MultiIndex.from_frame(cells[group_cols])
    plan = CellPlan(terms, parsed.response, columns.needed, group_cols, index,
                    np.ascontiguousarray(cell_of_template, dtype=np.int64), np.asarray(keep, dtype=np.int64),
                    np.ascontiguousarray(X0, dtype=np.float64), y0)
    return Plan(plan, frame, parts, parsed, ddf.dtypes, template)


def cell_pass(dask, plan: CellPlan, parts) -> CellSums:
    """The cell pass over every partition, merged by cell key in a tree."""
    leaves = [dask.delayed(_cell_part)(plan, p) for p in parts]
    return dask.compute(tree(dask, leaves, _merge))[0]
