"""engine.brm (Gaussian, random intercepts) and engine.lmer on a Dask DataFrame or a Parquet
dataset equal the in-memory fits (engine.partitioned.cells / .brm / .lmer).

The data are split into uneven partitions whose boundaries cut classes in two (a cell split across
partitions), a fixed factor's level is absent from the first partitions, and some rows have
missing values. The in-memory fits are checked against brms and lme4 in test_brm*.py and
test_lmer*.py; here the reference is the in-memory fit on the same data with the same seed.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

import engine  # noqa: E402
from engine.errors import ColumnNotFoundError, EngineInputError, ModelSpecError  # noqa: E402

FORMULA = "y ~ x + f + (1 | school/classid)"
RUN = dict(chains=2, iter=300, warmup=150, seed=7)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def _frame(n=600, seed=3, scale=1.0):
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(12), n // 12)
    cls = school * 3 + rng.integers(0, 3, n)
    df = pd.DataFrame({"school": school, "classid": cls, "x": rng.normal(size=n) + 2.0,
                       "f": rng.choice(list("abc"), n)})
    df["y"] = scale * (1 + 0.5 * df.x + rng.normal(0, .5, 12)[school] + rng.normal(0, .3, 36)[cls]
                       + rng.normal(size=n)) + 20.0
    df.loc[:100, "f"] = "a"  # the first partitions hold level "a" only
    df.loc[[5, 77], "x"] = np.nan
    df.loc[[300], "y"] = np.nan
    df.loc[[420], "classid"] = np.nan
    return df


def _uneven(df):
    return dd.from_pandas(df, npartitions=1).repartition(divisions=[0, 41, 160, 161, 425, len(df) - 1])


def _fits(formula, df, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return engine.brm(formula, df, **RUN, **kwargs), engine.brm(formula, data, **RUN, **kwargs)


def _same_brm(a, b):
    assert a.parameter_names == b.parameter_names and a.ranef_names == b.ranef_names
    assert (a.nobs, a.n_dropped) == (b.nobs, b.n_dropped)
    np.testing.assert_allclose(b.draws_values, a.draws_values, rtol=0, atol=1e-8)
    np.testing.assert_allclose(b.ranef_values, a.ranef_values, rtol=0, atol=1e-8)
    pd.testing.assert_frame_equal(b.priors, a.priors)
    assert str(b.summary()) == str(a.summary())


def test_brm_dask_frame_equals_in_memory(client):
    df = _frame(scale=4.0)  # mad(y) > 2.5: the default priors' scale comes from the exact MAD
    a, b = _fits(FORMULA, df, _uneven(df))
    assert b.n_dropped == 4
    assert "student_t(3, 0, 2.5)" not in set(a.priors["prior"])
    _same_brm(a, b)


def test_brm_parquet_with_priors(client, tmp_path):
    df = _frame(seed=9)
    _uneven(df).to_parquet(tmp_path / "scores", write_index=False)
    prior = [engine.prior("normal(0, 2)", class_="b"), engine.prior("student_t(3, 0, 1)", class_="sd")]
    a, b = _fits("y ~ x + (1 | school)", df, str(tmp_path / "scores"), prior=prior)
    _same_brm(a, b)


def test_brm_bad_input(client):
    ddf = _uneven(_frame())
    with pytest.raises(ModelSpecError, match="random slopes"):
        engine.brm("y ~ x + (x | school)", ddf, **RUN)
    with pytest.raises(EngineInputError, match="gibbs"):
        engine.brm(FORMULA, ddf, sampler="nuts", **RUN)
    with pytest.raises(ColumnNotFoundError, match="w"):
        engine.brm("y ~ w + (1 | school)", ddf, **RUN)
    with pytest.raises(ModelSpecError, match="gaussian"):
        engine.brm(FORMULA, ddf, family="bernoulli", **RUN)


def _same_lmer(a, b):
    # the optimiser's own precision: the in-memory fit's theta moves by 1.4e-8 (REML) and 1.8e-8
    # (ML) relative when y is scaled by 1 + 2e-16 (measured on these data); the criterion is flat
    # there, to 1e-13
    np.testing.assert_allclose(b.theta, a.theta, rtol=5e-8, atol=1e-10)
    np.testing.assert_allclose(b.fixef, a.fixef, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(b.vcov, a.vcov, rtol=1e-7, atol=1e-12)
    assert b.sigma == pytest.approx(a.sigma, rel=1e-8)
    assert b.criterion == pytest.approx(a.criterion, rel=1e-10)
    assert (b.nobs, b.ngrps) == (a.nobs, a.ngrps)
    assert b.varcorr().equals(a.varcorr()) or np.allclose(b.varcorr()["vcov"], a.varcorr()["vcov"], rtol=1e-7)
    ra, rb = a.ranef(), b.ranef()
    for g in ra:
        np.testing.assert_allclose(rb[g].to_numpy(dtype=float), ra[g].to_numpy(dtype=float), rtol=1e-6, atol=1e-9)
    # exact quantiles of b's own residuals (engine.lmer's residuals at b's estimates agree to 1e-8)
    np.testing.assert_allclose(b.resid, np.quantile(a.resid, [0, .25, .5, .75, 1]), rtol=0, atol=1e-8)
    assert str(b.summary()) == str(a.summary())


@pytest.mark.parametrize("reml", [True, False])
def test_lmer_dask_frame_equals_in_memory(client, reml):
    df = _frame(seed=4)
    formula = "y ~ x + f + (1 | school/classid)"
    _same_lmer(engine.lmer(formula, df, REML=reml), engine.lmer(formula, _uneven(df), REML=reml))


def test_lmer_crossed_parquet(client, tmp_path):
    df = _frame(seed=6)
    df["rater"] = (np.arange(len(df)) * 7) % 9
    _uneven(df).to_parquet(tmp_path / "scores", write_index=False)
    formula = "y ~ x + (1 | school) + (1 | rater)"
    _same_lmer(engine.lmer(formula, df), engine.lmer(formula, str(tmp_path / "scores")))


def test_lmer_large_nested_parquet(client, tmp_path):
    """250 schools of 2 classes: the nested trailing block (per-school blocks, the exact-gradient
    path for 200 or more school effects) from the cell sums as in memory."""
    from engine import lmer as lmer_module

    rng = np.random.default_rng(11)
    n = 3000
    school = np.sort(rng.integers(0, 250, n))
    cls = school * 2 + rng.integers(0, 2, n)
    df = pd.DataFrame({"school": school, "classid": cls, "x": rng.normal(size=n)})
    df["y"] = 1 + 0.5 * df.x + rng.normal(0, .5, 250)[school] + rng.normal(0, .3, 500)[cls] + rng.normal(size=n)
    dd.from_pandas(df, npartitions=3).to_parquet(tmp_path / "scores", write_index=False)
    formula = "y ~ x + (1 | school/classid)"
    a, b = engine.lmer(formula, df), engine.lmer(formula, str(tmp_path / "scores"))
    assert a._stats.nested and b._stats.nested and b._stats.Q2 >= lmer_module._COBYQA_MIN_Q2
    _same_lmer(a, b)
