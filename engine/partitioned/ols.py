"""``engine.ols`` from partitions: R's ``lm`` on a Dask DataFrame or a Parquet dataset.

Algorithm (Demmel, Grigori, Hoemmen & Langou 2012, "Communication-optimal parallel and sequential
QR", section 3 — the tall-skinny QR as a reduction tree):

1. pre-pass (engine.partitioned.common): per partition, the values each factor column takes on
   the rows complete in the formula's columns; their union gives R's levels (unused levels
   dropped, as ``model.frame``); a tiny template frame with every level fixes the design's columns
   and coding (:func:`engine.newdata.fitted_terms`), so every partition gets the same (p)
   columns. Without factor columns only one complete row is read.
2. pass 1: per partition, the design (:func:`engine.newdata.new_design`), rows with a missing
   value dropped and counted, and the triangle T_i ((p+1) x (p+1)) of [X_i | y_i] by
   :func:`engine.ols.tsqr_triangle`; the triangles are stacked pairwise and re-factored in a
   binary tree on the cluster; the root's triangle goes through R's pivoted QR
   (:func:`engine.ols.pivoted_qr`), which gives beta from the combined R and Q'y.
3. pass 2: per partition, residuals y - X beta: RSS, the model sum of squares about the mean, the
   residuals below and inside brackets of the order statistics type 7 needs (the brackets from the
   residuals of a sample of rows that pass 1 kept: common.bracket_orders), and the residuals' counts
   in 2^18 buckets monotone in the value (common.float_buckets). The counts prove each order
   statistic is among the gathered residuals (then two passes in all); only where a bracket missed,
   pass 3: the residuals in the few buckets that hold the order statistics, sorted locally. The
   quantiles are exact either way (the bucket of a value is computed by the same formula in both
   passes).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pandas as pd

from engine.errors import DataError, ModelSpecError
from engine.partitioned.common import (bracket_orders, bracket_part, bracketed_quantiles, bucket_counts, dask_modules,
                     exact_quantiles, first_complete, formula_columns, load, merge_bracket_parts, merge_samples,
                     prepass, quantile_orders, sample_index, sample_weights, template_frame, tree)

__all__ = ["PartitionedOLSResults", "ols_partitioned"]

PROBS = (0.0, 0.25, 0.5, 0.75, 1.0)


# ---------------------------------------------------------------- per-partition functions

def _design(terms, response: str, part: pd.DataFrame, with_keep: bool = False):
    """(X, y, n_dropped) of one partition, rows with a missing value dropped (R's na.omit);
    ``with_keep``: and the (n,) mask of the rows kept."""
    from engine.formula import model_frame
    from engine.newdata import new_design

    n = len(part)
    if n == 0:
        out = np.zeros((0, len(terms.column_names))), np.zeros(0), 0
        return out + (np.zeros(0, dtype=bool),) if with_keep else out
    X = new_design(terms, part)
    yframe = model_frame(f"{response} ~ 1", part)
    keep = np.zeros(n, dtype=bool)
    keep[yframe.rows] = True
    y = np.full(n, np.nan)
    y[yframe.rows] = yframe.y
    if np.isnan(X.sum()):  # one reduction, no (n, p) temporary, when nothing is missing
        keep &= ~np.isnan(X).any(axis=1)
    if keep.all():  # no copy of the design
        out = np.ascontiguousarray(X), y, 0
    else:
        out = np.ascontiguousarray(X[keep]), y[keep], int(n - keep.sum())
    return out + (keep,) if with_keep else out


def _pass1(terms, response, part):
    from engine.ols import tsqr_triangle

    X, y, dropped = _design(terms, response, part)
    p = X.shape[1]
    if not (np.isfinite(X).all() and np.isfinite(y).all()):  # +-Inf: named, as in memory
        bad = [c for j, c in enumerate(terms.column_names) if not np.isfinite(X[:, j]).all()]
        bad += [response] if not np.isfinite(y).all() else []
        raise DataError(f"column(s) {', '.join(map(repr, bad))} have non-finite values (Inf) in the rows used; "
                        "remove or recode them")
    if X.shape[0] == 0:
        tri = np.zeros((p + 1, p + 1))
        largest = np.zeros(p + 1)
    else:
        largest = np.concatenate([np.abs(X).max(axis=0), [np.abs(y).max()]])
        _check_scales(largest, terms.column_names, response, upper_only=True)  # before it overflows
        tri = tsqr_triangle(X, y, parallel=False)
        if tri.shape[0] < p + 1:  # fewer rows than columns: pad with zero rows
            tri = np.vstack([tri, np.zeros((p + 1 - tri.shape[0], p + 1))])
    rows = sample_index(X.shape[0])  # [X | y | weight] of a few rows: they bracket the residual quantiles
    sample = np.column_stack([X[rows], y[rows], sample_weights(X.shape[0], rows.size)])
    return tri, X.shape[0], dropped, float(y.sum()), largest, sample


def _merge(a, b):
    from engine.ols import _merge_triangles

    return (_merge_triangles(np.stack([a[0], b[0]])), a[1] + b[1], a[2] + b[2], a[3] + b[3],
            np.maximum(a[4], b[4]), merge_samples(a[5], b[5]))


#: the partitions' triangles are formed unscaled (the in-memory fit scales its columns first, which
#: needs every row): beyond these magnitudes their cross-products under- or overflow, so a column
#: there is refused by name (a slope on x * 1e-200 came back NaN, x * 1e200 "overflowed")
PARTITIONED_MIN_ABS, PARTITIONED_MAX_ABS = 1e-150, 1e150


def _check_scales(largest: np.ndarray, names, response: str, upper_only: bool = False) -> None:
    """``largest``: (p + 1,) the largest |value| of each design column and of the response (of one
    partition with ``upper_only``, which can only tell a column too large)."""
    low = 0.0 if upper_only else PARTITIONED_MIN_ABS
    for name, big in zip(list(names) + [response], largest):
        if name != "(Intercept)" and big != 0.0 and not low <= big <= PARTITIONED_MAX_ABS:
            raise DataError(
                f"column {name!r} has largest magnitude {big:.3g}, outside [{PARTITIONED_MIN_ABS:g}, "
                f"{PARTITIONED_MAX_ABS:g}] where the partitioned fit's cross-products neither under- nor "
                "overflow; rescale it (or fit the data in memory, which scales its columns)")


def _residuals(terms, response, coef, part):
    X, y, _ = _design(terms, response, part)
    fitted = X @ coef
    return fitted, y - fitted


class _Robust(NamedTuple):
    """What pass 2 needs for ``vcov=``: the type, the kept columns (pivot order), R^-1 (k, k),
    the cluster columns and their subsets (engine.robust's inclusion-exclusion order)."""

    kind: str
    kept: np.ndarray
    rinv: np.ndarray
    cluster: tuple
    subsets: tuple


def _robust_part(spec: _Robust, X, r, keys):
    """The partition's share of the meat: HC, sum of w_i^2 x_i x_i' (k, k); CR, per subset of the
    cluster columns the scores sum x_i e_i by cluster value (a DataFrame indexed by the values:
    a cluster may span partitions, so the scores, not their squares, are summed)."""
    from engine.robust import HC_TYPES, LEVERAGE_ONE, leverages

    Xk = np.ascontiguousarray(X[:, spec.kept])
    if spec.kind in HC_TYPES:
        w = r
        if spec.kind in ("HC2", "HC3"):
            _, h = leverages(Xk, spec.rinv)
            with np.errstate(divide="ignore", invalid="ignore"):
                w = r / np.sqrt(1.0 - h) if spec.kind == "HC2" else r / (1.0 - h)
            w = np.where(h > LEVERAGE_ONE, np.nan, w)
        S = Xk * w[:, None]
        return S.T @ S
    scores = pd.DataFrame(Xk * r[:, None])
    out = []
    for dims in spec.subsets:
        by = [keys[spec.cluster[d]].to_numpy() for d in dims]
        out.append(scores.groupby(by, sort=False).sum())
    return out


def _pass2(terms, response, coef, centre, robust, brackets, part):
    """RSS, the model sum of squares about ``centre``, the residuals' bucket counts, their share of
    the quantile ``brackets`` (common.bracket_part) and, for ``vcov=``, the partition's share of the
    meat (_robust_part)."""
    X, y, _, keep = _design(terms, response, part, with_keep=True)
    fitted = X @ coef
    r = y - fitted
    c = fitted - centre
    meat = None
    if robust is not None:
        keys = part[list(robust.cluster)][keep].reset_index(drop=True)
        for name in robust.cluster:
            missing = int(keys[name].isna().sum())
            if missing:
                raise DataError(f"cluster column {name!r} has missing values in {missing} of the rows "
                                "the model uses; drop or recode those rows")
        meat = _robust_part(robust, X, r, keys)
    return float(r @ r), float(c @ c), bucket_counts(r), meat, bracket_part(r, brackets)


def _merge_meat(a, b):
    if a is None or isinstance(a, np.ndarray):
        return None if a is None else a + b
    return [pd.concat([x, y]).groupby(level=list(range(x.index.nlevels)), sort=False).sum()
            for x, y in zip(a, b)]


def _merge2(a, b):
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], _merge_meat(a[3], b[3]), merge_bracket_parts(a[4], b[4])


# ---------------------------------------------------------------- the fit

class PartitionedOLSResults:
    """R's ``lm`` fitted from partitions: the numbers of :class:`engine.ols.OLSResults` (params,
    bse, tvalues, pvalues, vcov, sigma, df_resid, df_model, rank, rsquared, rsquared_adj, fvalue,
    f_pvalue, nobs, n_dropped, ssr, ess, resid_quantiles) without the per-row residuals, which
    stay on the cluster; ``summary()`` prints as R. ``n_passes``: full passes over the rows (2, or
    3 where a quantile bracket missed); ``timings``: seconds per phase."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def summary(self):
        from engine.ols import OLSSummary
        from engine.rcompat.print_lm import summary_lm_text

        table = np.column_stack([self.params, self.bse, self.tvalues, self.pvalues])
        keep = ~np.asarray(self.aliased_mask)
        coefficients = pd.DataFrame(table[keep], index=self.params.index[keep],
                                    columns=["Estimate", "Std. Error", "t value", "Pr(>|t|)"])
        fstat = None if not np.isfinite(self.f_numdf) else (self.fvalue, self.f_numdf,
                                                            float(self.df_inference))
        # for df_resid > 5 R prints only quantile(resid); type 7 of the five exact quantiles
        # returns them unchanged, so the printer gets them in place of the residuals
        text = summary_lm_text(
            call_lines_=self.call_lines, residuals=self.resid_quantiles,
            residual_names=self.residual_names, rank=self.rank, df_resid=self.df_resid,
            n_coef=len(self.params), coef_names=list(self.params.index), coef_table=table,
            aliased=self.aliased_mask, sigma=self.sigma, n_deleted=self.n_dropped,
            r_squared=self.rsquared, adj_r_squared=self.rsquared_adj, fstatistic=fstat,
            f_pvalue=self.f_pvalue,
            vcov_note=None if self.robust is None else self.robust.description())
        return OLSSummary(self, coefficients, text)


def _robust_covariance(spec: _Robust, meat, n: int, k: int):
    """engine.robust.robust_covariance's result from the summed meat (HC) or the scores summed by
    cluster (CR0, CR1, multiway by inclusion-exclusion, as there)."""
    from engine.robust import HC_TYPES, Clusters, RobustCovariance, _sandwich, sandwich_meat

    if spec.kind in HC_TYPES:
        V = sandwich_meat(meat, spec.rinv)
        if spec.kind == "HC1":
            V = V * (n / (n - k))
        return RobustCovariance(spec.kind, V, int(n - k), None)
    counts = []
    V = np.zeros((k, k))
    for dims, scores in zip(spec.subsets, meat):
        g = len(scores)
        if len(dims) == 1:
            if g < 2:
                raise ModelSpecError(
                    f"cluster column {spec.cluster[dims[0]]!r} has only one cluster in the {n} rows the "
                    "model uses; clustered standard errors need at least two clusters")
            counts.append(g)
        sign = 1.0 if len(dims) % 2 == 1 else -1.0
        adj = g / (g - 1.0) if spec.kind == "CR1" else 1.0
        V += sign * adj * _sandwich(np.ascontiguousarray(scores.to_numpy(dtype=np.float64)), spec.rinv)
    if spec.kind == "CR1":
        V *= (n - 1.0) / (n - k)
    return RobustCovariance(spec.kind, V, int(min(counts) - 1), Clusters(spec.cluster, (), tuple(counts)))


def ols_partitioned(formula: str, data, *, data_name: str = "data", tol: float | None = None,
                    vcov=None, cluster=None) -> PartitionedOLSResults:
    """``engine.ols(formula, data)`` where data is a Dask DataFrame or a Parquet path."""
    from engine.formula import model_frame, parse_formula
    from engine.newdata import fitted_terms
    from engine.ols import (QR_TOLERANCE, _back_substitute, _call_lines, _data_node, lm_statistics,
                       pivoted_qr)

    from engine.robust import check_vcov_arguments

    dask, _ = dask_modules()
    kind, cluster_names = check_vcov_arguments(vcov, cluster)
    if kind == "CR2":
        raise ModelSpecError("vcov='CR2' is not yet available for partitioned data (its adjustment "
                             "needs each cluster's rows together); use 'CR0' or 'CR1'")
    tol = QR_TOLERANCE if tol is None else tol
    _data_node(data_name)
    t0 = time.perf_counter()
    parsed = parse_formula(formula)
    if parsed.random_terms:
        raise ModelSpecError(f"ols fits fixed effects only: {formula!r} has random terms")
    if parsed.has_dot:
        raise ModelSpecError("'.' in the formula is not yet available for partitioned data")
    columns = formula_columns(parsed, None)
    extra = [c for c in cluster_names if c not in columns.needed]
    ddf = load(data, columns.needed + extra, what={c: "cluster column" for c in extra})
    columns = formula_columns(parsed, ddf.dtypes)
    parts = ddf.to_delayed()
    # pre-pass: the levels in use and one complete row for the template (only that row when no
    # column is a factor), on the formula's columns (a cluster column's missing values are an
    # error, not dropped rows, as in memory)
    model_parts = ddf[columns.needed].to_delayed() if extra else parts
    levels = (prepass(dask, model_parts, columns.factors, formula=formula) if columns.factors
              else first_complete(dask, model_parts, formula))
    mf_t = model_frame(parsed.text, template_frame(levels, ddf.dtypes, columns))
    terms = fitted_terms(mf_t, columns.needed)
    names = list(mf_t.column_names)
    response = parsed.response
    p = len(names)
    t1 = time.perf_counter()

    # pass 1: triangles, merged in a tree
    leaves = [dask.delayed(_pass1)(terms, response, part) for part in parts]
    tri, n, n_dropped, sum_y, largest, sample = dask.compute(tree(dask, leaves, _merge))[0]
    if n == 0:
        raise DataError(f"no rows left after removing rows with missing values ({formula})")
    _check_scales(largest, names, response)
    if n < p:
        raise ModelSpecError(f"fewer rows ({n}) than model coefficients ({p}) in {formula!r}")
    qr = pivoted_qr(tri[:, :p], tri[:, p:], tol=tol, parallel=False)
    k = qr.rank
    kept = qr.pivot[:k]
    coef_piv = _back_substitute(qr.r[:k, :k], qr.qty[:k, 0]) if k else np.zeros(0)
    coef0 = np.zeros(p)
    coef0[kept] = coef_piv
    t2 = time.perf_counter()

    # pass 2: residual sums, bracket shares and bucket counts; the exact quantiles from the brackets,
    # or, where one missed, from one more pass
    has_int = bool(mf_t.has_intercept)
    rdf = n - k
    brackets = None
    if rdf > 5:
        brackets = bracket_orders(sample[:, p] - sample[:, :p] @ coef0, sample[:, p + 1], n,
                                  quantile_orders(n, PROBS)[1])
    centre = sum_y / n if has_int else 0.0
    spec = None
    if kind is not None:
        from itertools import chain, combinations

        rinv = _back_substitute(qr.r[:k, :k], np.eye(k)) if k else np.zeros((0, 0))
        dims = range(len(cluster_names))
        subsets = tuple(chain.from_iterable(combinations(dims, m) for m in range(1, len(cluster_names) + 1)))
        spec = _Robust(kind, np.ascontiguousarray(kept), rinv, tuple(cluster_names), subsets)
    leaves = [dask.delayed(_pass2)(terms, response, coef0, centre, spec, brackets, part) for part in parts]
    rss, mss, counts, meat, share = dask.compute(tree(dask, leaves, _merge2))[0]
    rss, mss = float(rss), float(mss)
    n_passes = 2
    robust = None if spec is None else _robust_covariance(spec, meat, n, k)

    def residuals(part):
        return _residuals(terms, response, coef0, part)[1]

    residual_names: list[str] = []
    if rdf > 5:
        quant = bracketed_quantiles(brackets, share, n, PROBS)
        if quant is None:
            quant = exact_quantiles(dask, parts, residuals, n, PROBS, counts=counts)
            n_passes = 3
    else:  # R prints every residual: few rows, gather them
        quant = np.concatenate(dask.compute(*[dask.delayed(residuals)(part) for part in parts]))
        residual_names = [str(i + 1) for i in range(quant.size)]
    t3 = time.perf_counter()

    st = lm_statistics(qr, coef_piv, n, p, rss, mss, has_int)  # summary.lm's statistics
    aliased = st["aliased"]
    idx = pd.Index(names)
    fit = PartitionedOLSResults(
        params=pd.Series(st["coef"], index=idx),
        bse=pd.Series(st["std_error"], index=idx, name="Std. Error"),
        tvalues=pd.Series(st["t_value"], index=idx, name="t value"),
        pvalues=pd.Series(st["p_value"], index=idx, name="Pr(>|t|)"),
        vcov=pd.DataFrame(st["vcov"], index=idx, columns=idx), sigma=st["sigma"],
        df_resid=int(rdf), df_model=k - (1 if has_int else 0), rank=int(k),
        rsquared=st["r_squared"], rsquared_adj=st["adj_r_squared"], fvalue=st["fvalue"],
        f_numdf=st["f_numdf"], f_pvalue=st["f_pvalue"],
        nobs=int(n), n_dropped=int(n_dropped), ssr=rss, ess=mss, aliased_mask=aliased,
        aliased=[nm for nm, a in zip(names, aliased) if a], has_intercept=has_int,
        resid_quantiles=quant, residual_names=residual_names, formula=parsed.text,
        call_lines=list(_call_lines(parsed.text, data_name)), n_partitions=len(parts),
        timings={"prepass": t1 - t0, "qr_pass": t2 - t1, "residual_passes": t3 - t2}, n_passes=n_passes,
        robust=robust, cov_type="nonrobust" if robust is None else robust.kind,
        df_inference=int(rdf) if robust is None else robust.df,
        column_names=names, _ls=SimpleNamespace(pivot=qr.pivot, rank=int(k), coef=st["coef"],
                                                aliased=np.asarray(aliased), has_intercept=has_int))
    if robust is not None:  # engine.ols's own step: bse, t, p, vcov and the Wald F from it
        from engine.ols import OLSResults

        OLSResults._use_robust(fit, robust, idx)
    return fit
