"""Fits from partitions: ``engine.ols``, ``engine.lmer`` and Gaussian ``engine.brm`` (random
intercepts, Gibbs) on a Dask DataFrame or a Parquet dataset (ols.py, lmer.py, brm.py; the
multilevel fits share the cell pass of cells.py, everything the loading, pre-pass, template,
reduction tree and exact quantiles of common.py).

Every statistic of the fast paths is a sum over rows (docs/DESIGN.md, "partitions"): the model
frame is built per partition with the levels of one pre-pass, the tall-skinny QR's triangle of
[X | y] is computed per partition and the triangles are stacked and re-factored in a tree; a
second look at the data gives the residual statistics and the exact residual quantiles.
dask[distributed] and pyarrow are the optional extra ``engine[dask]``, imported lazily.
"""

from __future__ import annotations

__all__ = ["is_partitioned", "ols_partitioned"]


def is_partitioned(data) -> bool:
    """True for a Dask DataFrame or a path (str / os.PathLike) to a Parquet dataset."""
    import os

    if isinstance(data, (str, os.PathLike)):
        return True
    return type(data).__module__.split(".")[0] in ("dask", "dask_expr")


def ols_partitioned(formula, data, **kwargs):
    from engine.partitioned.ols import ols_partitioned as fit

    return fit(formula, data, **kwargs)
