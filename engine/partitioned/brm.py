"""``engine.brm`` (Gaussian, random intercepts) from partitions: the MultilevelModel from one cell pass.

The Gibbs sampler (engine.gibbs) reads only per-cell and per-level sums and totals of the centred
design (engine.multilevel.model, "Sufficient statistics"), so the model is assembled from the
cell pass (engine.partitioned.cells) and sampled locally, exactly as in memory:

- centring: the pass sums u = x - x0 (x0 the first complete row's design); with d = mean(u) the
  centred sums are sum x_c = sum u - n_k d, sum x_c y = sum u y - d sum y and
  X_c'X_c = U'U - n d d' (no digits lost: x0 is a data row, so d is of the data's spread);
- brms' default priors need the response's median and MAD (engine.multilevel.priors.default_priors):
  both exact, by engine.partitioned.common.exact_quantiles (the median's bucket counts come with
  the cell pass; the MAD's take one more pass), handed to the prior layer as the three values
  (m - mad, m, m + mad), which have that median and MAD;
- the samplers' starting values read the response's SD: handed over as the two values (-s, s).

So the model carries no N-sized arrays (y is that two-value stand-in, X_c, group_codes and
cell_of_row are empty, cell_sum_xx is not kept): fits from partitions have no ``design`` (no
predictions or log_lik), and only ``sampler="gibbs"`` reads such a model.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np

from engine.errors import DataWarning, EngineInputError, ModelSpecError, warn_user
from engine.partitioned.cells import cell_pass, plan_cells, rows_of
from engine.partitioned.common import dask_modules, exact_quantiles

__all__ = ["prepare"]


def _model_from_sums(plan, frame, sums, prior, median_mad):
    """The MultilevelModel (engine.multilevel.model) of the cell sums; the priors resolved."""
    from engine.multilevel.model import (MultilevelModel, RandomTerm, SimpleGroup, _check_identified, _cells,
                                    _group_structure, _prior_arrays)
    from engine.multilevel.priors import resolve_priors

    names = list(frame.column_names)
    has_intercept = bool(frame.has_intercept)
    coef_names = tuple(names[j] for j in plan.columns)
    p = len(coef_names)
    n = float(sums.n.sum())
    K = int(plan.cell_of_template.max()) + 1
    if len(sums.cells) != K:
        raise ModelSpecError("internal: cells without rows after the pre-pass")
    k0 = len(plan.cell_of_template)
    groups = [SimpleGroup(g.name, np.asarray(g.codes[:k0], dtype=np.int64), list(g.levels), int(g.n_levels))
              for g in frame.groups]
    structure = _group_structure(groups, k0)
    _, cell_codes = _cells(structure.group_codes, structure.n_levels)
    cell_levels = np.ascontiguousarray(cell_codes + structure.level_offsets[:-1][None, :])
    su_tot = sums.sum_u.sum(axis=0)
    if has_intercept:
        d = su_tot / n
        x_means = plan.shift + d
        cell_sum_x = sums.sum_u - sums.n[:, None] * d
        cell_sum_xy = sums.sum_uy - sums.sum_y[:, None] * d
        xtx = sums.uu - np.outer(su_tot, d)
    else:  # nothing centred, and no shift was applied
        x_means = np.zeros(p)
        cell_sum_x, cell_sum_xy, xtx = sums.sum_u, sums.sum_uy, sums.uu
    xtx = 0.5 * (xtx + xtx.T)
    n_total = int(structure.level_offsets[-1])
    level_n = np.zeros(n_total)
    level_sum_y = np.zeros(n_total)
    level_sum_x = np.zeros((n_total, p))
    for g in range(len(groups)):
        idx = cell_levels[:, g]
        np.add.at(level_n, idx, sums.n)
        np.add.at(level_sum_y, idx, sums.sum_y)
        np.add.at(level_sum_x, idx, cell_sum_x)
    stats = dict(n_cells=K, cell_of_row=np.zeros(0, np.int64), cell_levels=cell_levels, cell_n=sums.n,
                 cell_sum_y=sums.sum_y, cell_sum_yy=sums.sum_yy, cell_sum_x=np.ascontiguousarray(cell_sum_x),
                 cell_sum_xy=np.ascontiguousarray(cell_sum_xy), cell_sum_xx=np.zeros((0, p, p)),
                 level_n=level_n, level_sum_y=level_sum_y, level_sum_x=level_sum_x, xtx=xtx,
                 xty=cell_sum_xy.sum(axis=0), sum_x=cell_sum_x.sum(axis=0), sum_y=float(sums.sum_y.sum()),
                 yty=float(sums.sum_yy.sum()))
    median, mad = median_mad
    resolved = resolve_priors(prior, np.array([median - mad, median, median + mad]), coef_names,
                              structure.group_names, has_intercept)
    prior_arrays = _prior_arrays(resolved)
    _check_identified(stats, prior_arrays["b_prior_family"], has_intercept, int(n))
    mean = sums.s1 / n
    sd = float(np.sqrt(max(sums.s2 / n - mean * mean, 0.0)))
    G = len(groups)
    return MultilevelModel(
        response_name=str(frame.response_name), coef_names=coef_names, has_intercept=has_intercept,
        group_names=structure.group_names, group_levels=tuple(tuple(str(v) for v in g.levels) for g in groups),
        n_obs=int(n), y=np.array([-sd, sd]), X_c=np.zeros((0, p)), x_means=np.ascontiguousarray(x_means),
        group_codes=np.zeros((0, G), np.int64), n_levels=structure.n_levels, level_offsets=structure.level_offsets,
        level_group=structure.level_group, nested=structure.nested, block_of_group=structure.block_of_group,
        n_blocks=structure.n_blocks, parent=structure.parent, depth=structure.depth, ancestors=structure.ancestors,
        **stats, **prior_arrays, priors=resolved,
        terms=tuple(RandomTerm(g, ("Intercept",), False, 0, 1) for g in range(G)),
        group_dims=np.ones(G, dtype=np.int64), group_coef_names=tuple(("Intercept",) for _ in groups),
        has_slopes=False, z_offsets=np.arange(G + 1, dtype=np.int64), Z=np.zeros((0, G)),
        cell_uu=np.zeros((K, 0, 0)), cell_uy=np.zeros((K, 0)), cor_eta=np.full(G, np.nan))


def _median_mad(dask, plan, parts, sums):
    """The response's exact median and median absolute deviation (unscaled) on the complete rows."""
    n = int(sums.n.sum())

    def response(part):
        return rows_of(plan, part)[1]

    median = float(exact_quantiles(dask, parts, response, n, (0.5,), counts=sums.y_counts)[0])

    def deviation(part):
        return np.abs(rows_of(plan, part)[1] - median)

    mad = float(exact_quantiles(dask, parts, deviation, n, (0.5,))[0])
    return median, mad


def _fingerprint(formula, sums) -> str:
    digest = hashlib.sha256(formula.encode())
    for a in (sums.cells, sums.n, sums.sum_y, sums.sum_yy, sums.sum_u, sums.sum_uy, sums.uu):
        digest.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return digest.hexdigest()


class Prepared(SimpleNamespace):
    """What engine.brm's front end reads of one data set (as engine.brm._Prepared)."""


def prepare(formula: str, data, prior, *, sampler: str, family, sample_prior: str = "no") -> Prepared:
    """engine.brm's model for a Dask DataFrame or a Parquet path (Gaussian, random intercepts)."""
    from engine.multilevel.model import parameter_names, ranef_names
    from engine.multilevel.priors import prior_summary_table
    from engine.multilevel.results import GroupInfo
    from engine.validate import check_brm_frame

    if getattr(family, "name", family) != "gaussian":
        raise ModelSpecError(f"brm on partitioned data fits the gaussian family only, not {family.name!r}")
    if sampler != "gibbs":
        raise EngineInputError(f"brm on partitioned data samples with sampler='gibbs' only, not {sampler!r}")
    if sample_prior != "no":
        raise EngineInputError("sample_prior='only' needs no data: pass the data in memory")
    dask, _ = dask_modules()
    planned = plan_cells(dask, formula, data, centre=True)
    plan, frame, parts = planned.plan, planned.frame, planned.parts
    sums = cell_pass(dask, plan, planned.parts)
    n = int(sums.n.sum())
    stub = SimpleNamespace(column_names=[frame.column_names[j] for j in plan.columns],
                           response_name=frame.response_name, y=np.array([sums.y_min, sums.y_max]),
                           X=np.vstack([sums.x_min, sums.x_max]))
    check_brm_frame(stub, n_rows=n)  # stub: the columns' extremes only
    if sums.n_dropped:
        warn_user(
            f"Rows containing NAs were excluded from the model: {sums.n_dropped} of "
            f"{sums.n_dropped + n} rows dropped (missing values in the variables the formula uses).",
            DataWarning)
    model = _model_from_sums(plan, frame, sums, prior, _median_mad(dask, plan, parts, sums))
    groups = [GroupInfo(name, tuple(str(level) for level in levels))
              for name, levels in zip(model.group_names, model.group_levels)]
    return Prepared(model=model, parameter_names=list(parameter_names(model)),
                    ranef_names=list(ranef_names(model)), groups=groups, priors=prior_summary_table(model),
                    nobs=n, n_dropped=int(sums.n_dropped), data_hash=_fingerprint(formula, sums), design=None,
                    frame=None, n_partitions=len(parts))
