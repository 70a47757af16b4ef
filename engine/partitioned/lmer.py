"""``engine.lmer`` (random intercepts) from partitions: lme4's profiled criterion from one cell pass.

engine.lmer's criterion, estimates and conditional modes read only the sufficient statistics
Z'Z, Z'[X y] and [X y]'[X y] (engine.lmer, ``_sufficient_stats``). With random intercepts every
row of a cell has the same Z row, so with one pseudo-row per cell k carrying Z = sqrt(n_k),
[X y] = (sum over the cell of [X y]) / sqrt(n_k), Z'Z and Z'[X y] are the data's exactly; the
cross-product [X y]'[X y] of the data (a total of the cell pass) replaces the pseudo-rows' one.
lme4's term order and level names come from engine.lmer itself, run on the template frame of the
cells (engine.partitioned.cells). Then the fit is engine.lmer's (``_fit_stats(..., stats=)``).

The residuals stay on the cluster: the scaled-residual quantiles of ``summary()`` are exact
(engine.partitioned.common.exact_quantiles, two more passes over the data), and ``resid``
holds those five quantiles (Min, 1Q, Median, 3Q, Max; type 7 of them returns them unchanged),
``fitted`` is None.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ModelSpecError
from engine.partitioned.cells import cell_pass, plan_cells, rows_of
from engine.partitioned.common import dask_modules, exact_quantiles

__all__ = ["lmer_partitioned"]


def _cell_terms(frame, template, formula, plan, sums):
    """engine.lmer's ReTerms (lme4's order and names) with one pseudo-row per sorted cell."""
    from engine.lmer import ReTerm, _lme4_order, _terms_from_frame

    k0 = len(plan.cell_of_template)
    template_row = np.empty(k0, dtype=np.int64)
    template_row[plan.cell_of_template] = np.arange(k0)  # sorted cell -> template row
    root = np.sqrt(sums.n)
    terms = []
    for t in _lme4_order(_terms_from_frame(frame, template, formula)):
        codes = np.ascontiguousarray(t.codes[:k0][template_row], dtype=np.int64)
        used = np.unique(codes)
        if len(used) != t.nlev:
            raise ModelSpecError(f"internal: grouping factor {t.group!r} has levels without cells")
        terms.append(ReTerm(t.group, codes, list(t.levels), root[:, None].copy(), list(t.cnms)))
    return terms


def lmer_partitioned(formula: str, data, REML: bool = True):  # noqa: N803 (lme4's name)
    """``engine.lmer(formula, data)`` where data is a Dask DataFrame or a Parquet path."""
    from engine.lmer import _check_grouping_levels, _fit_stats, _sufficient_stats, expand_double_verts
    from engine.validate import check_lmer_call, check_lmer_response

    REML = check_lmer_call(formula, REML)  # noqa: N806
    dask, _ = dask_modules()
    display_formula = expand_double_verts(formula, display=True)
    formula = expand_double_verts(formula)
    planned = plan_cells(dask, formula, data, centre=False)
    plan, frame, parts = planned.plan, planned.frame, planned.parts
    sums = cell_pass(dask, plan, parts)
    n = int(sums.n.sum())
    template = planned.template
    terms = _cell_terms(frame, template, formula, plan, sums)
    _check_grouping_levels(terms, n)
    names = list(frame.column_names)
    p = len(names)
    XaXa = np.empty((p + 1, p + 1))
    XaXa[:p, :p] = sums.uu
    XaXa[:p, p] = XaXa[p, :p] = sums.sum_uy.sum(axis=0)
    XaXa[p, p] = sums.sum_yy.sum()
    gram = sums.uu
    scale = np.sqrt(np.maximum(np.diag(gram), 1e-300))
    eig = np.linalg.eigvalsh(gram / np.outer(scale, scale))
    if eig.min() <= 1e-10 * eig.max():
        raise ModelSpecError(f"fixed-effect model matrix is rank deficient; drop the aliased terms among {names}")
    check_lmer_response(np.array([sums.y_min, sums.y_max]), frame.response_name)
    root = np.sqrt(sums.n)
    Xc = np.ascontiguousarray(sums.sum_u / root[:, None])
    yc = sums.sum_y / root
    stats = _sufficient_stats(terms, Xc, yc)
    stats.n = n
    stats.XaXa = XaXa
    stats.moments = stats.moments._replace(XaXa=np.ascontiguousarray(XaXa))
    args = (display_formula, frame.response_name, names, Xc, yc, terms)
    fit = _fit_stats(args, reml=bool(REML), stats=stats)
    _residual_quantiles(dask, plan, parts, fit, sums)
    return fit


def _residual_quantiles(dask, plan, parts, fit, sums) -> None:
    """fit.resid := the exact five quantiles of y - X beta - sum of the row's random intercepts."""
    beta = fit.fixef.to_numpy()
    per_cell = np.zeros(len(sums.n))
    for t, b in zip(fit.terms, fit._b()):
        per_cell += b[t.codes, 0]

    def residuals(part):
        X, y, cell, _ = rows_of(plan, part)
        return y - X @ beta - per_cell[cell]

    fit.resid = exact_quantiles(dask, parts, residuals, int(sums.n.sum()))
    fit.fitted = None
