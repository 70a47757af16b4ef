"""engine.ols on a Dask DataFrame / Parquet dataset equals the in-memory fit (engine.partitioned).

Data split into uneven partitions, a factor level absent from some partitions, missing values;
the cluster is a LocalCluster with 2 single-threaded workers. The in-memory fit is itself
checked against R and statsmodels in test_ols.py; here the reference is the in-memory fit.
"""

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

import engine  # noqa: E402
from engine.errors import ColumnNotFoundError, DataError, ModelSpecError  # noqa: E402
from engine.rcompat.quantile import quantile7  # noqa: E402

FORMULA = "y ~ x + f + log(abs(z)) + x:z"


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def _frame(n=700, seed=11):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n),
                       "f": rng.choice(list("abcde"), n)})
    df["y"] = 1 + 0.5 * df.x - 0.3 * (df.f == "c") + rng.normal(size=n)
    df.loc[:150, "f"] = "a"          # after sorting, the first partitions hold level "a" only
    df = df.sort_values("f", kind="stable").reset_index(drop=True)
    df.loc[[3, n // 3, 2 * n // 3], "x"] = np.nan
    df.loc[[20, n - 10], "y"] = np.nan
    df.loc[[n // 2], "f"] = None
    return df


def _uneven(df):
    n = len(df)
    return dd.from_pandas(df, npartitions=1).repartition(
        divisions=[0, 41, 160, 161, 420, n - 1])


def _same(a, b):
    np.testing.assert_allclose(b.params, a.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.bse, a.bse, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(b.vcov), np.asarray(a.vcov), rtol=1e-10, atol=1e-14)
    for name in ("sigma", "rsquared", "rsquared_adj", "fvalue", "ssr", "ess"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-10, nan_ok=True), name
    assert (b.nobs, b.n_dropped, b.df_resid, b.rank) == (a.nobs, a.n_dropped, a.df_resid,
                                                           a.rank)
    assert str(b.summary()) == str(a.summary())


def test_dask_frame_equals_in_memory(client):
    df = _frame()
    ddf = _uneven(df)
    assert ddf.npartitions == 5
    a = engine.ols(FORMULA, df)
    b = engine.ols(FORMULA, ddf)
    _same(a, b)
    assert b.n_dropped == 6
    # the quantiles are exact order statistics (R's type 7: (1 - h) x[lo] + h x[hi], as R computes
    # it; numpy 2.4's quantile interpolates in another order, one ulp apart) of b's own residuals, not
    # approximations (an approximate quantile of 700 values misses by ~1e-3 of the spread)
    mf = a.model_frame
    r = mf.y - mf.X @ b.params.to_numpy()
    np.testing.assert_array_equal(b.resid_quantiles, quantile7(r))
    assert b.n_passes == 2  # the quantiles came with the residual pass (their brackets held)


def test_residual_quantiles_exact_when_a_bracket_misses(client, monkeypatch):
    """A bracket that cannot hold its order statistic sends the fit to the bucket pass: same numbers."""
    from engine.partitioned import common
    from engine.partitioned import ols as partitioned_ols

    df = _frame(seed=3)
    a = engine.ols(FORMULA, df)

    def missing_brackets(sample, weights, n, orders):
        return common.Brackets(np.array([1e300]), np.array([np.inf]), (tuple(orders),))

    monkeypatch.setattr(partitioned_ols, "bracket_orders", missing_brackets)
    b = engine.ols(FORMULA, _uneven(df))
    _same(a, b)
    assert b.n_passes == 3
    r = a.model_frame.y - a.model_frame.X @ b.params.to_numpy()
    np.testing.assert_array_equal(b.resid_quantiles, quantile7(r))


@pytest.mark.parametrize("kind", ["normal", "cauchy", "ties", "sorted"])
def test_bracketed_order_statistics_are_exact(kind):
    """The sample-bracket route (common.bracket_orders / bracket_part / bracketed_quantiles) on
    200,000 values in 37 uneven chunks, sampled as the partitions are: the type-7 quantiles equal
    those of the sorted values exactly, and the gathered values are a small share of n."""
    from engine.partitioned import common

    rng = np.random.default_rng(20261203)
    n = 200_000
    v = {"normal": rng.normal(size=n), "cauchy": rng.standard_cauchy(size=n),
         "ties": rng.integers(0, 7, size=n).astype(float), "sorted": np.sort(rng.normal(size=n))}[kind]
    cuts = np.sort(rng.choice(np.arange(1, n), size=36, replace=False))
    chunks = np.split(v, cuts)
    sample = np.zeros((0, 2))  # value, weight
    for c in chunks:
        rows = common.sample_index(c.size)
        sample = common.merge_samples(sample, np.column_stack([c[rows], common.sample_weights(c.size, rows.size)]))
    assert sample.shape[0] <= common.SAMPLE_CAP and sample[:, 1].sum() == pytest.approx(n)
    probs = (0.0, 0.25, 0.5, 0.75, 1.0)
    index, orders = common.quantile_orders(n, probs)
    brackets = common.bracket_orders(sample[:, 0], sample[:, 1], n, orders)
    share = None
    for c in chunks:
        part = common.bracket_part(c, brackets)
        share = part if share is None else common.merge_bracket_parts(share, part)
    got = common.bracketed_quantiles(brackets, share, n, probs)
    assert got is not None
    ordered = np.sort(v)
    np.testing.assert_array_equal(got, common.type7(index, {o: ordered[o] for o in orders}))
    np.testing.assert_allclose(got, np.quantile(v, probs), rtol=1e-15)
    if kind != "ties":  # with 7 distinct values a bracket is a whole value's rows
        # each quartile's bracket spans 2 x 6 SDs of the sample CDF at the sample's effective size
        # (tens of thousands of rows here, the cap thinning it): a few % of n each, 11% in all
        assert sum(x.size for x in share[1]) < 0.12 * n


def test_parquet_dataset_equals_in_memory(client, tmp_path):
    df = _frame(seed=5)
    _uneven(df).to_parquet(tmp_path / "scores", write_index=False)
    a = engine.ols(FORMULA, df)
    b = engine.ols(FORMULA, str(tmp_path / "scores"))
    _same(a, b)


def test_categorical_with_known_categories(client):
    df = _frame(seed=3)
    df["f"] = pd.Categorical(df["f"], categories=list("edcbaq"))  # q unused: dropped as R
    a = engine.ols(FORMULA, df)
    b = engine.ols(FORMULA, _uneven(df))
    _same(a, b)


def test_factor_of_a_numeric_column(client):
    df = _frame(seed=8)
    df["school"] = np.repeat(np.arange(14), 50)[::-1].astype(float)  # 10 < 9 as numbers
    a = engine.ols("y ~ x + factor(school)", df)
    b = engine.ols("y ~ x + factor(school)", _uneven(df))
    _same(a, b)


def test_few_residual_df_prints_every_residual(client):
    df = _frame(n=40, seed=2).dropna().iloc[:8].reset_index(drop=True)
    a = engine.ols("y ~ x + z", df)
    b = engine.ols("y ~ x + z", dd.from_pandas(df, npartitions=3))
    _same(a, b)


def test_bad_input(client, tmp_path):
    df = _frame()
    with pytest.raises(ColumnNotFoundError, match="w"):
        engine.ols("y ~ x + w", _uneven(df))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Parquet files"):
        engine.ols("y ~ x", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="does not exist"):
        engine.ols("y ~ x", str(tmp_path / "nowhere"))
    # a column missing from some files of the dataset
    (tmp_path / "mixed").mkdir()
    df.iloc[:300].to_parquet(tmp_path / "mixed" / "part.0.parquet")
    df.iloc[300:].drop(columns="z").to_parquet(tmp_path / "mixed" / "part.1.parquet")
    with pytest.raises(ColumnNotFoundError, match="part.1.parquet"):
        engine.ols(FORMULA, str(tmp_path / "mixed"))


def test_worker_memory_below_one_partition(tmp_path):
    df = _frame(n=20000, seed=4)
    df.to_parquet(tmp_path / "big.parquet", row_group_size=20000)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  memory_limit="100KiB", dashboard_address=None) as cluster:
        with distributed.Client(cluster):
            with pytest.raises(DataError, match="memory limit"):
                engine.ols(FORMULA, str(tmp_path / "big.parquet"))


@pytest.mark.parametrize("vcov,cluster", [("HC0", None), ("HC1", None), ("HC3", None),
                                          ("CR0", "g"), ("CR1", "g"), ("CR1", ["g", "h"])])
def test_robust_covariance_equals_in_memory(client, vcov, cluster):
    df = _frame(seed=12)
    df["g"] = np.arange(len(df)) // 23          # clusters cut by the partition boundaries
    df["h"] = np.arange(len(df)) % 7
    a = engine.ols(FORMULA, df, vcov=vcov, cluster=cluster)
    b = engine.ols(FORMULA, _uneven(df), vcov=vcov, cluster=cluster)
    _same(a, b)
    assert (b.cov_type, b.df_inference) == (a.cov_type, a.df_inference)
    assert b.fvalue == pytest.approx(a.fvalue, rel=1e-10, nan_ok=True)


def test_robust_bad_input(client):
    df = _frame(seed=12)
    df["g"] = np.arange(len(df)) // 23
    with pytest.raises(ModelSpecError, match="CR2"):
        engine.ols(FORMULA, _uneven(df), vcov="CR2", cluster="g")
    with pytest.raises(ColumnNotFoundError, match="cluster column 'k'"):
        engine.ols(FORMULA, _uneven(df), cluster="k")
    df.loc[400, "g"] = np.nan
    with pytest.raises(DataError, match="cluster column 'g' has missing"):
        engine.ols(FORMULA, _uneven(df), cluster="g")
