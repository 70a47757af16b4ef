"""pp_check figures and the ArviZ export (az.loo agrees with engine.loo; skipped without ArviZ)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import engine
from engine.errors import EngineInputError

from test_predict_brm import FIX, fit as _fit_fixture  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def fit():
    data = pd.read_csv(FIX / "sim_data.csv")
    return _fit_fixture.__wrapped__(data)


def test_pp_check_kinds(fit):
    from matplotlib.figure import Figure

    fig = fit.pp_check("dens_overlay", ndraws=7, seed=1)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len([line for line in ax.get_lines() if line.get_xydata().size]) == 8  # 7 y_rep + y
    fig = fit.pp_check("hist", ndraws=3, seed=1)
    assert sum(ax.get_visible() for ax in fig.axes) == 4
    fig = fit.pp_check("stat", stat="sd", seed=1)
    ax = fig.axes[0]
    assert len(ax.patches) == 30  # a histogram of sd(y_rep) over every draw
    vline = ax.get_lines()[0].get_xdata()[0]
    assert vline == pytest.approx(np.std(fit.design.y, ddof=1))
    with pytest.raises(EngineInputError, match="kind"):
        fit.pp_check("violin")
    with pytest.raises(EngineInputError, match="stat"):
        fit.pp_check("stat", stat="kurtosis")


def test_arviz_loo_agrees_with_engine(fit):
    az = pytest.importorskip("arviz")
    idata = fit.to_arviz()
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 100
    np.testing.assert_array_equal(idata.posterior["sigma"].values, fit.draws_values[:, :, fit.parameter_names.index("sigma")])
    assert idata.posterior["r_school"].shape == (2, 100, 8)
    np.testing.assert_array_equal(idata.observed_data["y"].values, fit.design.y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = engine.loo(fit, r_eff=1.0)
        theirs = az.loo(idata, pointwise=True, reff=1.0)
        ours_default = engine.loo(fit)
        theirs_default = az.loo(idata)
    # the same PSIS given the same r_eff
    np.testing.assert_allclose(theirs.loo_i.values, ours.pointwise["elpd_loo"], rtol=1e-10)
    np.testing.assert_allclose(theirs.pareto_k.values, ours.pareto_k, rtol=1e-8)
    assert theirs.elpd_loo == pytest.approx(ours.elpd_loo, rel=1e-10)
    assert theirs.p_loo == pytest.approx(ours.p_loo, rel=1e-10)
    # ArviZ's default r_eff is one number from the posterior's ESS, loo's (and engine's) one per
    # observation from exp(log_lik): close, not equal
    assert theirs_default.elpd_loo == pytest.approx(ours_default.elpd_loo, abs=0.05)


def test_arviz_sample_stats_names():
    az = pytest.importorskip("arviz")
    from engine.multilevel.results import BrmFit, GroupInfo

    rng = np.random.default_rng(1)
    fit = BrmFit(
        formula="y ~ 1 + (1 | g)", parameter_names=["b_Intercept", "sd_g__Intercept", "sigma"],
        draws_values=rng.normal(size=(2, 5, 3)), ranef_names=["r_g[1,Intercept]", "r_g[2,Intercept]"],
        ranef_values=rng.normal(size=(2, 5, 2)),
        stats={"divergent": np.zeros((2, 5)), "treedepth": np.ones((2, 5)), "stepsize": np.full((2, 5), 0.3)},
        groups=[GroupInfo("g", ("1", "2"))], nobs=4, data_name="d", chains=2, iter=10, warmup=5, thin=1,
        sampler="nuts",
    )
    idata = fit.to_arviz()
    assert set(idata.sample_stats.data_vars) == {"diverging", "tree_depth", "step_size"}
    assert idata.sample_stats["diverging"].dtype == bool
    assert "log_likelihood" not in idata.groups()  # no stored design: no likelihood
