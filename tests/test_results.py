"""Results objects of brm / brm_multiple: layout, summaries, warnings, save/load (no sampler needed)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from engine import diagnostics
from engine.errors import ConvergenceWarning, DataError
from engine.multilevel.results import BrmFit, BrmMultipleFit, GroupInfo, fit_paths, load_fit

NAMES = ["b_Intercept", "b_x", "sd_g__Intercept", "sigma"]


def make_fit(draws: np.ndarray, cls=BrmFit, **extra) -> BrmFit:
    n_chains, n_draws, _ = draws.shape
    rng = np.random.default_rng(1)
    ranef = rng.normal(size=(n_chains, n_draws, 3))
    stats = extra.pop("stats", {})
    priors = pd.DataFrame(
        {"prior": ["(flat)", "student_t(3, 0, 2.5)"], "class": ["b", "sigma"], "lb": ["", "0"]}
    )
    return cls(
        formula="y ~ x + (1 | g)",
        parameter_names=list(NAMES),
        draws_values=draws,
        ranef_names=[f"r_g[{k},Intercept]" for k in ("a", "b", "c")],
        ranef_values=ranef,
        stats=stats,
        groups=[GroupInfo("g", ("a", "b", "c"))],
        nobs=120,
        data_name="data",
        chains=extra.pop("chains", n_chains),
        iter=2 * n_draws,
        warmup=n_draws,
        thin=1,
        sampler="gibbs",
        priors=priors,
        seed_info={"entropy": 5, "chain_spawn_keys": [[c] for c in range(n_chains)]},
        data_hash="abc",
        **extra,
    )


@pytest.fixture
def iid_draws():
    rng = np.random.default_rng(20240601)
    scale = np.array([1.0, 0.5, 0.2, 0.8])
    loc = np.array([0.1, -0.3, 0.5, 1.0])
    return loc + scale * rng.normal(size=(4, 500, 4))


def test_draws_frame_layout(iid_draws):
    fit = make_fit(iid_draws)
    frame = fit.draws
    assert list(frame.columns) == NAMES + [".chain", ".iteration", ".draw"]
    assert len(frame) == 2000
    # chain-major, as posterior's as_draws_df
    np.testing.assert_array_equal(frame[".chain"].to_numpy()[[0, 499, 500, 1999]], [1, 1, 2, 4])
    np.testing.assert_array_equal(frame[".iteration"].to_numpy()[[0, 499, 500]], [1, 500, 1])
    np.testing.assert_array_equal(frame[".draw"].to_numpy(), np.arange(1, 2001))
    np.testing.assert_array_equal(frame["b_x"].to_numpy()[500:1000], iid_draws[1, :, 1])
    np.testing.assert_array_equal(fit.draws_array(), iid_draws)
    assert fit.ranef.shape == (2000, 3 + 3)
    assert fit.ndraws == 2000


def test_summary_matches_definitions(iid_draws):
    fit = make_fit(iid_draws)
    table = fit.summary()
    assert list(table.columns) == ["Estimate", "Est.Error", "l-95% CI", "u-95% CI", "Rhat", "Bulk_ESS", "Tail_ESS"]
    assert list(table.index) == NAMES
    for j, name in enumerate(NAMES):
        x = iid_draws[:, :, j]
        assert table.loc[name, "Estimate"] == pytest.approx(x.mean(), rel=1e-12)
        assert table.loc[name, "Est.Error"] == pytest.approx(x.std(ddof=1), rel=1e-12)
        assert table.loc[name, "l-95% CI"] == pytest.approx(np.quantile(x, 0.025), rel=1e-12)
        assert table.loc[name, "u-95% CI"] == pytest.approx(np.quantile(x, 0.975), rel=1e-12)
        assert table.loc[name, "Rhat"] == pytest.approx(diagnostics.rhat(x), rel=1e-12)
        assert table.loc[name, "Bulk_ESS"] == pytest.approx(diagnostics.ess_bulk(x), rel=1e-12)
        assert table.loc[name, "Tail_ESS"] == pytest.approx(diagnostics.ess_tail(x), rel=1e-12)
    fixef = fit.fixef()
    assert list(fixef.index) == ["Intercept", "x"]
    assert list(fixef.columns) == ["Estimate", "Est.Error", "Q2.5", "Q97.5"]
    assert fit.summary(prob=0.9).columns[2] == "l-90% CI"


def test_no_warning_for_iid_and_warnings_for_stuck_chains(iid_draws):
    fit = make_fit(iid_draws)
    assert fit.diagnostics_warnings() == []
    stuck = iid_draws.copy()
    stuck[0, :, 1] += 3.0  # one chain elsewhere: R-hat far above 1.01
    messages = make_fit(stuck).diagnostics_warnings()
    assert any(m.startswith("The largest R-hat is") for m in messages)
    sticky = np.repeat(iid_draws[:, :50, :], 10, axis=1)  # each value repeated 10 times: ESS ~ 200
    messages = make_fit(sticky).diagnostics_warnings()
    assert any(m.startswith("Bulk Effective Samples Size (ESS) is too low") for m in messages)
    assert any(m.startswith("Tail Effective Samples Size (ESS) is too low") for m in messages)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_fit(stuck).warn_convergence()
    assert caught and all(w.category is ConvergenceWarning for w in caught)
    assert any("The largest R-hat is" in str(w.message) for w in caught)


def test_divergences_reported_from_nuts_stats(iid_draws):
    divergent = np.zeros((4, 500))
    divergent[2, 10] = 1
    treedepth = np.full((4, 500), 3)
    fit = make_fit(iid_draws, stats={"divergent": divergent, "treedepth": treedepth})
    assert fit.divergences == 1
    assert "There were 1 divergent transitions after warmup" in fit.diagnostics_warnings()[0]
    stats = fit.sampler_stats
    assert list(stats.columns) == ["divergent", "treedepth", ".chain", ".iteration", ".draw"]
    assert make_fit(iid_draws).divergences is None


def test_save_load_roundtrip(tmp_path, iid_draws):
    stats = {"stepsize": np.full((4, 500), 0.3), "divergent": np.zeros((4, 500), dtype=np.int64)}
    fit = make_fit(iid_draws, stats=stats)
    npz_path, json_path = fit.save(tmp_path / "fits" / "model")
    assert (npz_path, json_path) == fit_paths(tmp_path / "fits" / "model.npz")
    meta = json.loads(open(json_path, encoding="utf-8").read())
    assert meta["format"] == "engine-brmfit" and meta["parameter_names"] == NAMES
    with np.load(npz_path, allow_pickle=False) as arrays:  # portable: plain arrays only
        assert set(arrays.files) == {"draws", "ranef", "chain_imputation", "stat__stepsize", "stat__divergent"}
    back = load_fit(tmp_path / "fits" / "model")
    assert type(back) is BrmFit
    np.testing.assert_array_equal(back.draws_values, fit.draws_values)
    np.testing.assert_array_equal(back.ranef_values, fit.ranef_values)
    pd.testing.assert_frame_equal(back.draws, fit.draws)
    pd.testing.assert_frame_equal(back.summary(), fit.summary())
    pd.testing.assert_frame_equal(back.prior_summary(), fit.prior_summary())
    for key in stats:
        np.testing.assert_array_equal(back.stats[key], stats[key])
    assert back.groups == fit.groups and back.formula == fit.formula and back.seed_info == fit.seed_info
    assert (back.chains, back.iter, back.warmup, back.thin, back.nobs) == (4, 1000, 500, 1, 120)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="no saved fit"):
        load_fit(tmp_path / "absent")
    (tmp_path / "x.npz").write_bytes(b"")
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    with pytest.raises(DataError, match="not an engine fit file"):
        load_fit(tmp_path / "x")


def test_multiple_fit_reports_within_imputation_rhat(tmp_path):
    rng = np.random.default_rng(7)
    m, chains = 3, 2
    # each imputation has its own posterior location: combined R-hat inflated, within R-hat ~ 1
    shifts = np.array([0.0, 1.0, 2.0])[:, None, None, None]
    draws = (shifts + rng.normal(size=(m, chains, 400, 4))).reshape(m * chains, 400, 4)
    fit = make_fit(
        draws, cls=BrmMultipleFit, chains=chains, m=m,
        chain_imputation=np.repeat(np.arange(m), chains), nobs_per_imputation=[120] * m,
    )
    combined = fit.summary()["Rhat"]
    assert (combined > 1.2).all()
    rhats = fit.rhats
    assert list(rhats.index) == [1, 2, 3] and list(rhats.columns) == NAMES
    assert (rhats.to_numpy() < 1.02).all()
    for k in range(m):
        np.testing.assert_allclose(
            rhats.loc[k + 1].to_numpy(),
            [diagnostics.rhat(draws[2 * k:2 * k + 2, :, j]) for j in range(4)], rtol=1e-12,
        )
    assert fit.rhat_within.max() < 1.02
    # the warnings judge convergence within imputations: none here despite the combined R-hat
    assert fit.diagnostics_warnings() == []
    table = fit.imputation_summary()
    assert list(table.columns) == ["imputation", "parameter", "Rhat", "Bulk_ESS", "Tail_ESS"]
    assert len(table) == m * 4
    fit.save(tmp_path / "multi")
    back = load_fit(tmp_path / "multi")
    assert type(back) is BrmMultipleFit and back.m == m
    pd.testing.assert_frame_equal(back.rhats, fit.rhats)
    np.testing.assert_array_equal(back.imputation_draws(1), draws[2:4])
