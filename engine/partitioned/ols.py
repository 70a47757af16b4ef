"""``engine.ols`` from partitions: R's ``lm`` on a Dask DataFrame or a Parquet dataset.

Algorithm (Demmel, Grigori, Hoemmen & Langou 2012, "Communication-optimal parallel and sequential
QR", section 3 — the tall-skinny QR as a reduction tree):

1. pre-pass: per partition, the values each factor column takes on the rows complete in the
   formula's columns; their union gives R's levels (unused levels dropped, as ``model.frame``);
   a tiny template frame with every level fixes the design's columns and coding
   (:func:`engine.newdata.fitted_terms`), so every partition gets the same (p) columns.
2. pass 1: per partition, the design (:func:`engine.newdata.new_design`), rows with a missing
   value dropped and counted, and the triangle T_i ((p+1) x (p+1)) of [X_i | y_i] by
   :func:`engine.ols.tsqr_triangle`; the triangles are stacked pairwise and re-factored in a
   binary tree on the cluster; the root's triangle goes through R's pivoted QR
   (:func:`engine.ols.pivoted_qr`), which gives beta from the combined R and Q'y.
3. pass 2: per partition, residuals y - X beta: RSS, the model sum of squares about the mean,
   min and max; pass 3: counts of the residuals in B equal buckets over [min, max]; pass 4: the
   residuals in the few buckets that hold the order statistics type 7 needs, sorted locally. The
   quantiles are exact (the bucket of a value is computed by the same formula in both passes).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from ..errors import ColumnNotFoundError, DataError, EngineInputError, ModelSpecError

__all__ = ["PartitionedOLSResults", "ols_partitioned"]

N_BUCKETS = 1 << 16
PROBS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _dask():
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


def _load(data, needed: list[str]):
    """A Dask DataFrame of ``data``; every needed column checked before any work."""
    _, dd = _dask()
    if isinstance(data, (str, os.PathLike)):
        import pyarrow.parquet as pq

        files = _parquet_files(data)
        for f in files:  # a column missing from some files is an error, not silent NaN
            names = set(pq.read_schema(f).names)
            absent = [c for c in needed if c not in names]
            if absent:
                raise ColumnNotFoundError(
                    f"column(s) {', '.join(map(repr, absent))} of the formula missing from "
                    f"Parquet file {f!r}")
        _check_worker_memory(max(pq.ParquetFile(f).metadata.row_group(0).total_byte_size
                                 if pq.ParquetFile(f).metadata.num_row_groups else 0
                                 for f in files), path=os.fspath(data))
        return dd.read_parquet(files, columns=needed)
    absent = [c for c in needed if c not in data.columns]
    if absent:
        raise ColumnNotFoundError(
            f"column(s) {', '.join(map(repr, absent))} of the formula not in the data")
    return data[needed]


def _is_factor_dtype(dtype) -> bool:
    return (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


# ---------------------------------------------------------------- per-partition functions

def _prepass(part: pd.DataFrame, factor_cols: list[str]):
    complete = part.dropna()
    levels = {c: set(complete[c].unique().tolist()) for c in factor_cols}
    first = complete.iloc[:1]
    return levels, first


def _design(terms, response: str, part: pd.DataFrame):
    """(X, y, n_dropped) of one partition, rows with a missing value dropped (R's na.omit)."""
    from ..formula import model_frame
    from ..newdata import new_design

    n = len(part)
    if n == 0:
        return np.zeros((0, len(terms.column_names))), np.zeros(0), 0
    X = new_design(terms, part)
    yframe = model_frame(f"{response} ~ 1", part)
    keep = np.zeros(n, dtype=bool)
    keep[yframe.rows] = True
    y = np.full(n, np.nan)
    y[yframe.rows] = yframe.y
    keep &= ~np.isnan(X).any(axis=1)
    return np.ascontiguousarray(X[keep]), y[keep], int(n - keep.sum())


def _pass1(terms, response, part):
    from ..ols import tsqr_triangle

    X, y, dropped = _design(terms, response, part)
    p = X.shape[1]
    if X.shape[0] == 0:
        tri = np.zeros((p + 1, p + 1))
    else:
        tri = tsqr_triangle(X, y, parallel=False)
        if tri.shape[0] < p + 1:  # fewer rows than columns: pad with zero rows
            tri = np.vstack([tri, np.zeros((p + 1 - tri.shape[0], p + 1))])
    return tri, X.shape[0], dropped, float(y.sum())


def _merge(a, b):
    from ..ols import _merge_triangles

    return (_merge_triangles(np.stack([a[0], b[0]])), a[1] + b[1], a[2] + b[2], a[3] + b[3])


def _residuals(terms, response, coef, part):
    X, y, _ = _design(terms, response, part)
    fitted = X @ coef
    return fitted, y - fitted


def _pass2(terms, response, coef, centre, part):
    fitted, r = _residuals(terms, response, coef, part)
    if r.size == 0:
        return 0.0, 0.0, np.inf, -np.inf
    c = fitted - centre
    return float(r @ r), float(c @ c), float(r.min()), float(r.max())


def _bucket(r, lo, hi):
    width = (hi - lo) / N_BUCKETS
    if width <= 0:
        return np.zeros(r.shape, dtype=np.int64)
    return np.clip(((r - lo) / width).astype(np.int64), 0, N_BUCKETS - 1)


def _pass3(terms, response, coef, lo, hi, part):
    _, r = _residuals(terms, response, coef, part)
    return np.bincount(_bucket(r, lo, hi), minlength=N_BUCKETS)


def _pass4(terms, response, coef, lo, hi, wanted, part):
    _, r = _residuals(terms, response, coef, part)
    return r[np.isin(_bucket(r, lo, hi), wanted)]


def _tree(dask, items, combine):
    while len(items) > 1:
        nxt = [dask.delayed(combine)(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


# ---------------------------------------------------------------- the fit

class PartitionedOLSResults:
    """R's ``lm`` fitted from partitions: the numbers of :class:`engine.ols.OLSResults` (params,
    bse, tvalues, pvalues, vcov, sigma, df_resid, df_model, rank, rsquared, rsquared_adj, fvalue,
    f_pvalue, nobs, n_dropped, ssr, ess, resid_quantiles) without the per-row residuals, which
    stay on the cluster; ``summary()`` prints as R."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def summary(self):
        from ..ols import OLSSummary
        from ..rcompat.print_lm import summary_lm_text

        table = np.column_stack([self.params, self.bse, self.tvalues, self.pvalues])
        keep = ~np.asarray(self.aliased_mask)
        coefficients = pd.DataFrame(table[keep], index=self.params.index[keep],
                                    columns=["Estimate", "Std. Error", "t value", "Pr(>|t|)"])
        fstat = None if not np.isfinite(self.f_numdf) else (self.fvalue, self.f_numdf,
                                                            float(self.df_resid))
        # for df_resid > 5 R prints only quantile(resid); type 7 of the five exact quantiles
        # returns them unchanged, so the printer gets them in place of the residuals
        text = summary_lm_text(
            call_lines_=self.call_lines, residuals=self.resid_quantiles,
            residual_names=self.residual_names, rank=self.rank, df_resid=self.df_resid,
            n_coef=len(self.params), coef_names=list(self.params.index), coef_table=table,
            aliased=self.aliased_mask, sigma=self.sigma, n_deleted=self.n_dropped,
            r_squared=self.rsquared, adj_r_squared=self.rsquared_adj, fstatistic=fstat,
            f_pvalue=self.f_pvalue)
        return OLSSummary(self, coefficients, text)


def _exact_quantiles(dask, parts, terms, response, coef, n, lo, hi):
    """R's type-7 quantiles (PROBS) of the residuals, exact, by bucket counts then selection."""
    index = [1.0 + (n - 1) * p for p in PROBS]  # 1-based, as R
    orders = sorted({int(np.floor(i)) - 1 for i in index} | {int(np.ceil(i)) - 1 for i in index})
    counts = dask.compute(_tree(dask, [dask.delayed(_pass3)(terms, response, coef, lo, hi, p)
                                       for p in parts], np.add))[0]
    cum = np.cumsum(counts)
    buckets = np.searchsorted(cum, np.asarray(orders), side="right")
    wanted = np.unique(buckets)
    chunks = dask.compute(*[dask.delayed(_pass4)(terms, response, coef, lo, hi, wanted, p)
                            for p in parts])
    values = np.sort(np.concatenate(chunks))
    # position of order statistic o inside the concatenation of the wanted buckets
    before = {b: (cum[b - 1] if b else 0) for b in wanted}
    offset, start = {}, 0
    for b in wanted:
        offset[b] = start
        start += counts[b]
    stat = {o: values[offset[b] + o - before[b]] for o, b in zip(orders, buckets)}
    out = []
    for i in index:  # as engine.rcompat.quantile's type 7
        lo_i, hi_i = int(np.floor(i)), int(np.ceil(i))
        low = stat[lo_i - 1]
        if i > lo_i:
            high = stat[hi_i - 1]
            h = i - lo_i
            out.append((1.0 - h) * low + h * high if high != low else low)
        else:
            out.append(low)
    return np.array(out)


def ols_partitioned(formula: str, data, *, data_name: str = "data", tol: float | None = None,
                    vcov=None, cluster=None) -> PartitionedOLSResults:
    """``engine.ols(formula, data)`` where data is a Dask DataFrame or a Parquet path."""
    from ..formula import _formula_plan, model_frame, parse_formula
    from ..newdata import fitted_terms
    from ..ols import (QR_TOLERANCE, _back_substitute, _call_lines, _data_node, lm_statistics,
                       pivoted_qr)

    dask, dd = _dask()
    if vcov is not None or cluster is not None:
        raise ModelSpecError("vcov= and cluster= are not yet available for partitioned data")
    tol = QR_TOLERANCE if tol is None else tol
    _data_node(data_name)
    t0 = time.perf_counter()
    parsed = parse_formula(formula)
    if parsed.random_terms:
        raise ModelSpecError(f"ols fits fixed effects only: {formula!r} has random terms")
    if parsed.has_dot:
        raise ModelSpecError("'.' in the formula is not yet available for partitioned data")
    _, refs, _, _ = _formula_plan(parsed.text, None)
    needed = list(dict.fromkeys(c for c, _ in refs))
    ddf = _load(data, needed)
    from ..formula import _FACTOR_FUNCTIONS, _Call
    wrapped = {node.args[0].name for node in parsed._variable_nodes  # factor(x) of numbers
               if isinstance(node, _Call) and node.func in _FACTOR_FUNCTIONS}
    factor_cols = [c for c in needed if _is_factor_dtype(ddf.dtypes[c]) or c in wrapped]
    parts = ddf.to_delayed()
    # pre-pass: the levels in use, and one complete row for the template
    pre = dask.compute(*[dask.delayed(_prepass)(p, factor_cols) for p in parts])
    firsts = [f for _, f in pre if len(f)]
    if not firsts:
        raise DataError(f"no rows left after removing rows with missing values ({formula})")
    levels = {c: set().union(*(lv[c] for lv, _ in pre)) for c in factor_cols}
    width = max([len(v) for v in levels.values()] + [1])
    template = pd.concat([firsts[0]] * width, ignore_index=True)
    for c in factor_cols:
        vals = sorted(levels[c], key=str if c not in wrapped else None)
        col = [vals[i % len(vals)] for i in range(width)]
        dtype = ddf.dtypes[c]
        if isinstance(dtype, pd.CategoricalDtype):
            if not dtype.categories.isin(list(levels[c])).any() and dtype.categories.size:
                raise DataError(f"factor {c!r}: its categories do not match its values")
            template[c] = pd.Categorical(col, categories=dtype.categories,
                                         ordered=dtype.ordered)
        else:
            template[c] = pd.Series(col, dtype=dtype)
    mf_t = model_frame(parsed.text, template)
    terms = fitted_terms(mf_t, needed)
    names = list(mf_t.column_names)
    response = parsed.response
    p = len(names)
    t1 = time.perf_counter()

    # pass 1: triangles, merged in a tree
    leaves = [dask.delayed(_pass1)(terms, response, part) for part in parts]
    tri, n, n_dropped, sum_y = dask.compute(_tree(dask, leaves, _merge))[0]
    if n == 0:
        raise DataError(f"no rows left after removing rows with missing values ({formula})")
    if n < p:
        raise ModelSpecError(f"fewer rows ({n}) than model coefficients ({p}) in {formula!r}")
    qr = pivoted_qr(tri[:, :p], tri[:, p:], tol=tol, parallel=False)
    k = qr.rank
    kept = qr.pivot[:k]
    coef_piv = _back_substitute(qr.r[:k, :k], qr.qty[:k, 0]) if k else np.zeros(0)
    coef0 = np.zeros(p)
    coef0[kept] = coef_piv
    t2 = time.perf_counter()

    # pass 2: residual sums, then exact quantiles
    has_int = bool(mf_t.has_intercept)
    centre = sum_y / n if has_int else 0.0
    stats = dask.compute(*[dask.delayed(_pass2)(terms, response, coef0, centre, part)
                           for part in parts])
    rss = float(sum(s[0] for s in stats))
    mss = float(sum(s[1] for s in stats))
    lo = min(s[2] for s in stats)
    hi = max(s[3] for s in stats)
    rdf = n - k
    residual_names: list[str] = []
    if rdf > 5:
        quant = _exact_quantiles(dask, parts, terms, response, coef0, n, lo, hi)
    else:  # R prints every residual: few rows, gather them
        quant = np.concatenate(dask.compute(*[
            dask.delayed(lambda part: _residuals(terms, response, coef0, part)[1])(part)
            for part in parts]))
        residual_names = [str(i + 1) for i in range(quant.size)]
    t3 = time.perf_counter()

    st = lm_statistics(qr, coef_piv, n, p, rss, mss, has_int)  # summary.lm's statistics
    aliased = st["aliased"]
    idx = pd.Index(names)
    return PartitionedOLSResults(
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
        timings={"prepass": t1 - t0, "qr_pass": t2 - t1, "residual_passes": t3 - t2})
