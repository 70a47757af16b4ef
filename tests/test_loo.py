"""engine.loo / waic / loo_compare against R loo 2.5.1 (fixtures in tests/fixtures/loo, made by
make_loo_refs.R there) and against the slow transcription in tests/reference_loo.py."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import engine
from engine.errors import DataError, EngineInputError, ImportanceSamplingWarning
from engine.loo import loo, loo_compare, relative_eff, waic

import reference_loo

FIX = Path(__file__).parent / "fixtures" / "loo"
BRMS = ["cbpp_binom", "sleep_slope", "epi_pois"]
SYNTH = ["heavy_tails", "moderate_k", "short_tail", "ar1"]
ROWS = ["elpd_loo", "p_loo", "looic"]


def load(name):
    frame = pd.read_csv(FIX / f"{name}_loglik.csv.gz")
    chain = frame[".chain"].to_numpy().astype(int)
    ll = frame.drop(columns=".chain").to_numpy()
    arr = np.stack([ll[chain == c] for c in np.unique(chain)])
    with open(FIX / f"{name}.json") as handle:
        ref = json.load(handle)
    return arr, ll, chain, ref


def texts(value):
    """R's character vector as jsonlite wrote it (auto_unbox makes a length-1 vector a string)."""
    value = [value] if isinstance(value, str) else list(value)
    return [m.strip() for m in value]


def nums(values):
    return np.array([np.inf if v is None else v for v in values], dtype=float)


def assert_rel(actual, expected, rtol):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(actual), finite)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=0)


def run_loo(arr, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = loo(arr, **kw)
    return result, [str(w.message) for w in caught if issubclass(w.category, ImportanceSamplingWarning)]


@pytest.mark.parametrize("name", BRMS + SYNTH)
def test_loo_matches_r(name):
    arr, _, _, ref = load(name)
    result, messages = run_loo(arr)
    assert result.dims == tuple(ref["dims"])
    assert_rel(result.r_eff, ref["r_eff"], 1e-8)
    assert_rel(result.pareto_k, nums(ref["pareto_k"]), 1e-6)
    for column in ["elpd_loo", "mcse_elpd_loo", "p_loo", "looic"]:
        assert_rel(result.pointwise[column], nums(ref["pointwise"][column]), 1e-8)
    assert_rel(result.n_eff, ref["n_eff"], 1e-8)
    assert list(result.estimates.index) == ROWS and list(result.estimates.columns) == ["Estimate", "SE"]
    assert_rel(result.estimates["Estimate"], ref["estimates"]["Estimate"], 1e-8)
    assert_rel(result.estimates["SE"], ref["estimates"]["SE"], 1e-8)
    if ref["mcse_loo"] is None:
        assert np.isnan(result.mcse_loo())
    else:
        assert result.mcse_loo() == pytest.approx(ref["mcse_loo"], rel=1e-8)
    # the same warnings as R, in the same words (R adds a trailing newline)
    assert messages == texts(ref["warnings"])


@pytest.mark.parametrize("name", BRMS + ["heavy_tails", "short_tail"])
def test_print_matches_r(name):
    arr, _, _, ref = load(name)
    result, _ = run_loo(arr)
    assert str(result).rstrip("\n").split("\n") == ref["print"]


@pytest.mark.parametrize("name", BRMS + ["heavy_tails", "short_tail"])
def test_waic_matches_r(name):
    arr, _, _, ref = load(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = waic(arr)
    assert list(result.estimates.index) == ["elpd_waic", "p_waic", "waic"]
    assert_rel(result.estimates["Estimate"], ref["waic"]["Estimate"], 1e-8)
    assert_rel(result.estimates["SE"], ref["waic"]["SE"], 1e-8)
    for column in ["elpd_waic", "p_waic", "waic"]:
        assert_rel(result.pointwise[column], ref["waic"]["pointwise"][column], 1e-8)
    assert [str(w.message).strip() for w in caught] == texts(ref["waic"]["warnings"])


@pytest.mark.parametrize("name", ["sleep_slope", "ar1", "heavy_tails"])
def test_kernel_matches_slow_transcription(name):
    arr, _, _, _ = load(name)
    result, _ = run_loo(arr)
    slow = reference_loo.loo(arr)
    assert_rel(result.r_eff, slow["r_eff"], 1e-12)
    assert np.array_equal(result.tail_len, slow["tail_len"])
    assert_rel(result.pareto_k, slow["pareto_k"], 1e-11)
    assert_rel(result.pointwise["elpd_loo"], slow["elpd_loo"], 1e-12)
    assert_rel(result.pointwise["mcse_elpd_loo"], slow["mcse_elpd_loo"], 1e-11)
    assert_rel(result.n_eff, slow["n_eff"], 1e-11)


def test_ties_and_given_r_eff():
    """Tied log-likelihoods (a discrete outcome) and a user r_eff: the kernel's partial selection of
    the tail must give the full sort's answer."""
    rng = np.random.default_rng(3)
    arr = np.round(rng.normal(-2, 0.7, size=(4, 200, 30)), 1)  # many ties
    result, _ = run_loo(arr, r_eff=0.8)
    slow = reference_loo.loo(arr, r_eff=np.full(30, 0.8))
    assert_rel(result.pareto_k, slow["pareto_k"], 1e-11)
    assert_rel(result.pointwise["elpd_loo"], slow["elpd_loo"], 1e-12)
    assert np.all(result.r_eff == 0.8)


@pytest.mark.parametrize("case", ["ties", "ascending", "descending", "sampled_high", "normal"])
def test_select_tail_is_the_stable_sorts_tail(case):
    """The kernel's tail selection (a sampled threshold, then a sort of the candidates only, or
    every draw when the threshold misses) against the stable full sort loo does: the same tail
    indices in the same order and the same cutoff, ties included."""
    from engine.loo import SAMPLE, _select_tail

    rng = np.random.default_rng(11)
    s = 4000
    lw = {
        "ties": np.round(rng.normal(size=s), 1),
        "ascending": np.sort(rng.normal(size=s)),
        "descending": -np.sort(rng.normal(size=s)),
        "normal": rng.normal(size=s),
        "sampled_high": rng.normal(size=s),
    }[case]
    if case == "sampled_high":  # every sampled draw is large: the threshold misses, all draws are candidates
        lw[:: s // SAMPLE] += 50.0
    for tail_len in (5, 120, 269, 800):
        idx, cutoff = _select_tail(lw, tail_len, np.empty(s), np.empty(s, np.int64))
        order = np.argsort(lw, kind="stable")
        np.testing.assert_array_equal(idx, order[s - tail_len:])
        assert cutoff == lw[order[s - tail_len - 1]]


def test_kernel_exp_within_an_ulp_of_libm():
    """The kernel's vectorisable exp on its domain [-FAST_SPREAD, 0] (shifted log-likelihoods)."""
    from engine.loo import FAST_SPREAD, _exp_shifted

    rng = np.random.default_rng(5)
    v = np.concatenate([-rng.exponential(4.0, 20_000), -rng.uniform(0, FAST_SPREAD, 20_000),
                        [0.0, -0.0, -5e-324, -1e-17, -0.34657359, -0.3465736, -np.log(2), -FAST_SPREAD]])
    out = np.empty_like(v)
    _exp_shifted(v + 3.5, 3.5, out)
    expected = np.exp((v + 3.5) - 3.5)
    assert np.max(np.abs(out - expected) / expected) <= 2.3e-16


def test_mcse_series_matches_the_logarithms():
    """loo's MCSE variance var(log(1 + u z)) over the Blom scores: the kernel's series (used for
    u max|z| <= SERIES_MAX) against accurate logarithms (log1p: for u below ~1e-4, log(1 + u z)
    itself loses digits, in R as here), and the logarithms beyond."""
    from engine.loo import SERIES_MAX, _blom_scores, _mcse_var

    scores = _blom_scores()
    z = scores.z
    u_max = SERIES_MAX / np.max(np.abs(z))
    for u in [1e-9, 1e-5, 1e-3, 0.01, 0.05, u_max * 0.999, u_max * 1.001, 0.2, 0.5]:
        x = u * z
        expected = np.var(np.log1p(x[x > -1]), ddof=1)
        assert abs(_mcse_var(u, scores) - expected) <= 1e-12 * expected, u


def test_matrix_with_chain_id_and_relative_eff():
    arr, ll, chain, ref = load("cbpp_binom")
    result, _ = run_loo(ll, chain_id=chain)
    assert_rel(result.pointwise["elpd_loo"], ref["pointwise"]["elpd_loo"], 1e-8)
    assert_rel(relative_eff(np.exp(arr)), ref["r_eff"], 1e-8)


def test_loo_compare_as_r():
    a, _, _, _ = load("heavy_tails")
    la, _ = run_loo(a[:, :, :6])
    lb, _ = run_loo(a[:, :, 6:12])
    lc, _ = run_loo(a[:, :, 1:7])
    table = loo_compare(la, lb, lc)
    elpd = {"model1": la.elpd_loo, "model2": lb.elpd_loo, "model3": lc.elpd_loo}
    order = sorted(elpd, key=lambda k: -elpd[k])
    assert list(table.index) == order
    assert list(table.columns) == ["elpd_diff", "se_diff", "elpd_loo", "se_elpd_loo", "p_loo", "se_p_loo", "looic", "se_looic"]
    best = {"model1": la, "model2": lb, "model3": lc}[order[0]].pointwise["elpd_loo"].to_numpy()
    for name, res in zip(["model1", "model2", "model3"], [la, lb, lc]):
        d = res.pointwise["elpd_loo"].to_numpy() - best
        assert table.loc[name, "elpd_diff"] == pytest.approx(d.sum(), rel=1e-12, abs=1e-12)
        assert table.loc[name, "se_diff"] == pytest.approx(np.sqrt(d.size) * d.std(ddof=1), rel=1e-12, abs=1e-12)
        assert table.loc[name, "elpd_loo"] == res.elpd_loo
    assert table.iloc[0]["elpd_diff"] == 0 and table.iloc[0]["se_diff"] == 0
    named = loo_compare({"a": la, "b": lb})
    assert set(named.index) == {"a", "b"}


def test_engine_namespace():
    assert callable(engine.loo) and callable(engine.waic) and callable(engine.loo_compare)
    arr, _, _, ref = load("moderate_k")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert engine.loo(arr).elpd_loo == pytest.approx(ref["estimates"]["Estimate"][0], rel=1e-8)


def test_bad_input():
    good = np.random.default_rng(1).normal(-1, 0.3, size=(2, 50, 4))
    with pytest.raises(EngineInputError, match="chain_id"):
        loo(good[0])
    with pytest.raises(EngineInputError, match=r"\(chains, draws, observations\)"):
        loo(good[None])
    with pytest.raises(EngineInputError, match="shape"):
        loo(np.zeros(5))
    bad = good.copy()
    bad[1, 3, 2] = np.nan
    with pytest.raises(DataError, match="NaN.*observations 3"):
        loo(bad)
    bad[1, 3, 2] = np.inf
    with pytest.raises(DataError, match="infinite"):
        waic(bad)
    with pytest.raises(EngineInputError, match="r_eff"):
        loo(good, r_eff=[1.0, 2.0])
    with pytest.raises(EngineInputError, match="r_eff"):
        loo(good, r_eff=-1)
    with pytest.raises(EngineInputError, match="at least two"):
        loo_compare(loo(good, r_eff=1))
    with pytest.raises(EngineInputError, match="same number of data points"):
        loo_compare(loo(good, r_eff=1), loo(good[:, :, :3], r_eff=1))
    with pytest.raises(EngineInputError, match="str has no log-likelihood"):
        loo("not an array")
    with pytest.raises(EngineInputError, match="numeric array"):
        loo([["a", "b"], ["c", "d"]])
    original = good.copy()
    loo(good)
    assert np.array_equal(good, original)  # the user's array is never modified


def test_wide_spread_uses_exact_path():
    """A column whose log-likelihood spans more than FAST_SPREAD goes through the exact sums; both
    paths agree with the slow transcription (r_eff given: R's exp(ll) would underflow here)."""
    arr, _, _, _ = load("heavy_tails")
    wide = 40.0 * arr
    assert np.ptp(wide[:, :, -1]) > 600 and np.ptp(wide[:, :, 0]) < 600
    result, _ = run_loo(wide, r_eff=0.9)
    slow = reference_loo.loo(wide, r_eff=np.full(wide.shape[2], 0.9))
    assert_rel(result.pareto_k, slow["pareto_k"], 1e-10)
    assert_rel(result.pointwise["elpd_loo"], slow["elpd_loo"], 1e-12)
    assert_rel(result.n_eff, slow["n_eff"], 1e-10)


@pytest.mark.parametrize("case", ["spread", "ties", "crowded", "huge_span", "signed_zeros", "two"])
def test_sort_pairs_is_a_stable_sort(case):
    """The kernel's sort of tail candidates (buckets then insertion; radix sort of the bits when the
    buckets are crowded) against NumPy's stable argsort: same values, same index order on ties."""
    from engine.loo import _sort_pairs

    rng = np.random.default_rng(7)
    v = {
        "spread": -rng.exponential(1.0, 500),
        "ties": np.round(rng.normal(size=500), 1),  # crowded buckets: the radix path
        "crowded": np.concatenate([[-1e6], rng.normal(size=499) * 1e-3]),  # one bucket holds nearly all
        "huge_span": np.concatenate([[-1e308, 1e308], rng.normal(size=98)]),  # hi - lo overflows
        "signed_zeros": np.array([0.0, -0.0, -1.0, 0.0, -0.0, -2.5, -0.0]),
        "two": np.array([1.0, -1.0]),
    }[case]
    idx = np.arange(v.size) * 3 + 1
    sv, si = _sort_pairs(v.copy(), idx)
    order = np.argsort(v, kind="stable")
    np.testing.assert_array_equal(si, idx[order])
    np.testing.assert_array_equal(sv, v[order])


def test_max_min_on_integer_keys():
    """The kernel's max/min by integer keys against NumPy: signs, zeros, subnormals, one value."""
    from engine.loo import _max_min

    rng = np.random.default_rng(11)
    cases = [
        rng.normal(size=4001) * 50,
        -rng.exponential(size=999) - 3.0,  # all negative
        rng.exponential(size=17) + 1e-300,  # all positive
        np.array([-0.0, 5e-324, -5e-324, 0.0, -1e308, 1e308]),
        np.array([-2.5]),
    ]
    for v in cases:
        hi, lo = _max_min(v)
        assert hi == v.max() and lo == v.min()


@pytest.mark.parametrize("spread", [1.0, 1e3, 1e12])
def test_grid_mean_logs_products_match_the_logarithms(spread):
    """The GPD grid's mean log(1 - theta x) by renormalised running products (one log per
    candidate) against the sum of log1p per term, on a loo-like grid and tail."""
    from engine.loo import _grid_mean_logs

    rng = np.random.default_rng(3)
    x = np.sort(rng.pareto(2.0, 269)) * spread
    n = x.size
    m = 30 + int(np.sqrt(n))
    theta = 1 / x[-1] + (1 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))) / 3 / x[int(n / 4 + 0.5) - 1]
    expected = np.array([np.mean(np.log1p(-t * x)) for t in theta])
    out = np.empty(m)
    _grid_mean_logs(x, theta, out, True)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)
    _grid_mean_logs(x, theta, out, False)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)
