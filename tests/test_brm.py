"""engine.brm / engine.brm_multiple end to end: brms reference, seeds and executors, imputed data sets,
file=, bad input, print layout."""

from __future__ import annotations

import importlib.util
import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

import engine
from engine import diagnostics
from engine.brm import _imputed_datasets
from engine.errors import (
    ColumnNotFoundError,
    DataWarning,
    EngineInputError,
    FormulaError,
    ModelSpecError,
    PriorError,
)
from engine.parallel import child_seeds
from engine.multilevel.results import BrmMultipleFit, load_fit

SCHOOL = "mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit + (1 | schoolid)"
VARS = ["mathscore2", "male", "raven", "csize", "belief_survey1", "mathscore1", "grit", "schoolid", "classid"]


@pytest.fixture(scope="module")
def grit():
    return engine.load_grit()


@pytest.fixture(scope="module")
def complete_cases(grit):
    return grit[VARS].dropna().reset_index(drop=True)


@pytest.fixture(scope="module")
def school_fit(grit):
    """The reference analysis: 4 chains x 2000 (1000 warm-up), default priors, on the full data
    (brm drops the incomplete rows itself, as brms does)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = engine.brm(SCHOOL, grit, seed=20240601)
    return fit, caught


@pytest.fixture(scope="module")
def brms_draws(fixtures_dir):
    return pd.read_csv(fixtures_dir / "brms" / "brms_school_draws.csv")


def _by_chain(values: np.ndarray, chain: np.ndarray) -> np.ndarray:
    return np.stack([values[chain == c] for c in np.unique(chain)])


def test_school_model_agrees_with_brms(school_fit, brms_draws):
    fit, _ = school_fit
    names = [c for c in brms_draws.columns if not c.startswith(".")]
    assert fit.parameter_names == names
    ours = fit.draws_array()
    chain = brms_draws[".chain"].to_numpy()
    for j, name in enumerate(names):
        ref = _by_chain(brms_draws[name].to_numpy(), chain)
        x = ours[:, :, j]
        # means: 4 combined MCSEs + 1% of the reference value
        se_mean = np.hypot(diagnostics.mcse_mean(x), diagnostics.mcse_mean(ref))
        assert abs(x.mean() - ref.mean()) <= 4 * se_mean + 0.01 * abs(ref.mean()), name
        # SDs: the same with the MCSE of the SD
        se_sd = np.hypot(diagnostics.mcse_sd(x), diagnostics.mcse_sd(ref))
        assert abs(x.std(ddof=1) - ref.std(ddof=1)) <= 4 * se_sd + 0.01 * ref.std(ddof=1), name


def test_school_fit_bookkeeping(school_fit, complete_cases):
    fit, caught = school_fit
    dropped = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(dropped) == 1 and "319 of 1499 rows" in str(dropped[0].message)
    assert dropped[0].filename == __file__  # the warning points at the user's call
    assert fit.nobs == len(complete_cases) == 1180 and fit.n_dropped == 319
    assert fit.draws.shape == (4000, 9 + 3)
    assert fit.draws_array().shape == (4, 1000, 9)
    assert fit.ranef.shape == (4000, 16 + 3)
    assert fit.ranef.columns[0] == "r_schoolid[1,Intercept]"
    assert [g.name for g in fit.groups] == ["schoolid"] and fit.groups[0].n_levels == 16
    summary = fit.summary()
    assert list(summary.index) == fit.parameter_names
    assert summary["Rhat"].max() < 1.01 and summary["Bulk_ESS"].min() > 400
    # the Gibbs fit converges: no ConvergenceWarning
    assert not [w for w in caught if issubclass(w.category, engine.errors.ConvergenceWarning)]
    priors = fit.prior_summary()
    intercept = priors[priors["class"] == "Intercept"]
    assert intercept["prior"].tolist() == ["student_t(3, -0.1, 2.5)"]  # brms' default, as the reference
    assert list(fit.fixef().index) == [
        "Intercept", "male1", "raven", "csize", "belief_survey1", "mathscore1", "gritintervention"
    ]


def _structure(line: str) -> str:
    """A printed line with its numbers blanked out: what must match brms' layout."""
    return re.sub(r"-?\d+(\.\d+)?", "#", line).rstrip()


def test_print_layout_matches_brms(school_fit, fixtures_dir):
    pytest.importorskip("engine.rcompat.print_brms")
    fit, _ = school_fit
    ours = str(fit).splitlines()
    ref = (fixtures_dir / "brms" / "brms_school_print.txt").read_text().splitlines()
    assert len(ours) == len(ref)
    for mine, theirs in zip(ours, ref):
        if theirs.lstrip().startswith("Draws were sampled using"):
            assert mine.startswith("Draws were sampled using sampling(Gibbs).")
            continue
        # labels and headers identical; numbers may differ (Monte Carlo) and so may their widths
        assert _structure(mine).split() == _structure(theirs).split(), (mine, theirs)
    assert "Data: data (Number of observations: 1180)" in str(fit)


def test_same_seed_same_draws_whatever_the_executor(complete_cases):
    kwargs = dict(chains=3, iter=300, warmup=100, seed=99)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inline = engine.brm(SCHOOL, complete_cases, executor=ThreadPoolExecutor(max_workers=1), **kwargs)
        two = engine.brm(SCHOOL, complete_cases, executor=ThreadPoolExecutor(max_workers=2), **kwargs)
        default = engine.brm(SCHOOL, complete_cases, **kwargs)
        other = engine.brm(SCHOOL, complete_cases, **{**kwargs, "seed": 100})
    np.testing.assert_array_equal(inline.draws_array(), two.draws_array())
    np.testing.assert_array_equal(inline.draws_array(), default.draws_array())
    np.testing.assert_array_equal(inline.ranef_values, default.ranef_values)
    assert not np.array_equal(inline.draws_array(), other.draws_array())
    # each chain is its own stream: chain c of brm is sample_chain with child seed c
    from engine import gibbs
    from engine.multilevel import build_model
    from engine.formula import model_frame

    model = build_model(model_frame(SCHOOL, complete_cases, allow_random=True))
    chain1 = gibbs.sample_chain(model, 300, 100, child_seeds(99, 3)[1])
    np.testing.assert_array_equal(chain1.draws, inline.draws_array()[1])


class FakeMids:
    """What brm_multiple needs of an engine.mice result: m and complete(k), k = 1..m."""

    def __init__(self, frames):
        self.m = len(frames)
        self._frames = frames

    def complete(self, k):
        return self._frames[k - 1].copy()


def _imputed_like(frame: pd.DataFrame, m: int) -> list[pd.DataFrame]:
    rng = np.random.default_rng(5)
    frames = []
    for _ in range(m):
        copy = frame.copy()
        copy["mathscore2"] = copy["mathscore2"] + rng.normal(0, 0.3, len(copy))
        frames.append(copy)
    return frames


def test_brm_multiple_combines_chains_and_reports_within_rhat(complete_cases):
    frames = _imputed_like(complete_cases, 3)
    kwargs = dict(chains=2, iter=400, warmup=100, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm_multiple(SCHOOL, frames, **kwargs)
        via_mids = engine.brm_multiple(SCHOOL, FakeMids(frames), executor=ThreadPoolExecutor(2), **kwargs)
    assert isinstance(fit, BrmMultipleFit)
    assert fit.m == 3 and fit.chains == 2 and fit.n_chains_total == 6
    assert fit.draws_array().shape == (6, 300, 9)
    assert fit.draws[".chain"].max() == 6 and len(fit.draws) == 1800
    np.testing.assert_array_equal(fit.chain_imputation, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(fit.draws_array(), via_mids.draws_array())
    # within-imputation R-hats: one row per imputation, one column per parameter
    assert fit.rhats.shape == (3, 9) and list(fit.rhats.columns) == fit.parameter_names
    np.testing.assert_allclose(
        fit.rhats.loc[2, "b_raven"], diagnostics.rhat(fit.draws_array()[2:4, :, 2]), rtol=1e-12
    )
    assert (fit.rhat_within == fit.rhats.max(axis=0)).all()
    # seeds: data set k uses SeedSequence(seed).spawn(m)[k], its chain c that sequence's spawn(chains)[c]
    from engine import gibbs
    from engine.multilevel import build_model
    from engine.formula import model_frame

    model = build_model(model_frame(SCHOOL, frames[2], allow_random=True))
    chain = gibbs.sample_chain(model, 400, 100, child_seeds(7, 3)[2].spawn(2)[1])
    np.testing.assert_array_equal(chain.draws, fit.draws_array()[5])
    # the data sets differ in mathscore2 only: the combined posterior of raven spans them all
    assert fit.summary().loc["b_raven", "Estimate"] == pytest.approx(
        np.mean([fit.imputation_draws(k)[:, :, 2].mean() for k in range(3)]), rel=1e-12
    )


def test_imputed_datasets_input_checks(complete_cases):
    with pytest.raises(engine.errors.ImputationError, match="one DataFrame"):
        _imputed_datasets(complete_cases)
    with pytest.raises(engine.errors.ImputationError, match="at least one"):
        _imputed_datasets([])
    with pytest.raises(engine.errors.ImputationError, match="data set 2"):
        _imputed_datasets([complete_cases, "x"])


def test_file_saves_then_reloads_without_refitting(tmp_path, complete_cases, monkeypatch):
    path = tmp_path / "fits" / "school"
    kwargs = dict(chains=2, iter=300, warmup=100, seed=3, file=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm(SCHOOL, complete_cases, **kwargs)
    assert (tmp_path / "fits" / "school.npz").exists() and (tmp_path / "fits" / "school.json").exists()

    import engine.brm as brm_module

    def fail(*args, **kwargs):  # pragma: no cover - reached only if brm refits
        raise AssertionError("brm refitted instead of reloading")

    monkeypatch.setattr(brm_module, "_run_chain", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same data: no warning at all
        again = engine.brm(SCHOOL, complete_cases, **kwargs)
    np.testing.assert_array_equal(again.draws_array(), fit.draws_array())
    np.testing.assert_array_equal(again.ranef_values, fit.ranef_values)
    pd.testing.assert_frame_equal(again.summary(), fit.summary())
    pd.testing.assert_frame_equal(again.prior_summary(), fit.prior_summary())
    np.testing.assert_array_equal(load_fit(path).draws_array(), fit.draws_array())
    changed = complete_cases.copy()
    changed.loc[0, "mathscore2"] += 1.0
    with pytest.warns(DataWarning, match="data differ"):
        engine.brm(SCHOOL, changed, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(warmup=2000, iter=2000), EngineInputError, "warmup"),
        (dict(warmup=10, iter=5), EngineInputError, "warmup"),
        (dict(chains=0), EngineInputError, "chains"),
        (dict(sampler="metropolis"), EngineInputError, "unknown sampler"),
        (dict(thin=0), EngineInputError, "thin"),
        (dict(marginalize=True), EngineInputError, "marginalize"),
        (dict(seed=1.5), EngineInputError, "seed"),
        (dict(seed=-1), EngineInputError, "seed"),
        (dict(data_name=3), EngineInputError, "data_name"),
        (dict(adapt_delta=0.95), EngineInputError, "sampler 'gibbs' has no option 'adapt_delta'"),
    ],
)
def test_bad_run_arguments(complete_cases, kwargs, error, match):
    with pytest.raises(error, match=match):
        engine.brm(SCHOOL, complete_cases, **kwargs)


def test_bad_model_input(complete_cases):
    short = dict(chains=1, iter=20, warmup=10, seed=1)
    with pytest.raises(ColumnNotFoundError, match="school_id"):
        engine.brm("mathscore2 ~ raven + (1 | school_id)", complete_cases, **short)
    one_level = complete_cases.assign(site="A")
    with pytest.raises(ModelSpecError, match="site"):
        engine.brm("mathscore2 ~ raven + (1 | site)", one_level, **short)
    with pytest.raises(PriorError):
        engine.brm(SCHOOL, complete_cases, prior=engine.prior("normal(0, 1)", class_="slope"), **short)
    with pytest.raises(PriorError, match="classid"):
        engine.brm(SCHOOL, complete_cases, prior=engine.prior("cauchy(0, 1)", class_="sd", group="classid"), **short)
    with pytest.raises(PriorError):
        engine.brm(SCHOOL, complete_cases, prior=engine.prior("normal(0, -10)", class_="b"), **short)
    with pytest.raises(PriorError):
        engine.brm(SCHOOL, complete_cases, prior=engine.prior("cauchy(0, 0)", class_="sigma"), **short)
    with pytest.raises(EngineInputError, match="group-level"):
        engine.brm("mathscore2 ~ raven", complete_cases, **short)
    with pytest.raises(FormulaError):
        engine.brm("mathscore2 ~ raven + (1 | )", complete_cases, **short)


def test_chain_tasks_pickle_for_process_and_cluster_executors(complete_cases):
    """Every task brm submits is plain data (model arrays, a SeedSequence, options) plus a
    module-level function, so process pools and Dask workers can run it."""
    import pickle

    from engine.brm import _run_chain
    from engine.formula import model_frame
    from engine.multilevel import build_model

    model = build_model(model_frame(SCHOOL, complete_cases, allow_random=True))
    task = ("gibbs", model, 30, 10, 1, child_seeds(1, 1)[0], {})
    function, back = pickle.loads(pickle.dumps((_run_chain, task)))
    np.testing.assert_array_equal(function(*back)[0], _run_chain(*task)[0])


def test_dask_executor_gives_the_same_draws(complete_cases):
    distributed = pytest.importorskip("dask.distributed")
    frames = _imputed_like(complete_cases, 2)
    kwargs = dict(chains=2, iter=200, warmup=100, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = engine.brm_multiple(SCHOOL, frames, **kwargs)
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster, distributed.Client(cluster) as client:
            remote = engine.brm_multiple(SCHOOL, frames, executor=client.get_executor(), **kwargs)
    np.testing.assert_array_equal(local.draws_array(), remote.draws_array())
    np.testing.assert_array_equal(local.ranef_values, remote.ranef_values)


def test_prints_of_multiple_and_reloaded_fits(tmp_path, complete_cases):
    pytest.importorskip("engine.rcompat.print_brms")
    frames = _imputed_like(complete_cases, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm_multiple(
            SCHOOL, frames, chains=2, iter=300, warmup=100, seed=5, file=tmp_path / "multi", data_name="imp"
        )
        again = engine.brm_multiple(SCHOOL, frames, chains=2, iter=300, warmup=100, seed=5, file=tmp_path / "multi")
    text = str(fit)
    assert str(again) == text
    lines = text.splitlines()
    assert "   Data: imp (Number of observations: 1180) " in lines
    assert "  Draws: 6 chains, each with iter = 300; warmup = 100; thin = 1;" in lines
    assert "         total post-warmup draws = 1200" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("Within-imputation Rhat"))
    header = lines[start + 2].split()
    assert header == ["max", "imp1", "imp2", "imp3"]
    rows = [line.split()[0] for line in lines[start + 3:]]
    assert rows == ["b_Intercept", "b_male1", "b_raven", "b_csize", "b_belief_survey1", "b_mathscore1",
                    "b_gritintervention", "sd_schoolid__Intercept", "sigma"]


def test_nuts_sampler_through_brm(complete_cases):
    """sampler="nuts" (collapsed): same names and layout, Stan's per-draw statistics, same seed ->
    same draws on any executor, and agreement with the brms reference's posterior means in the
    loose sense a short run allows (within 5 posterior SDs / sqrt(ESS) + 1%)."""
    pytest.importorskip("engine.multilevel.nuts_target")
    kwargs = dict(sampler="nuts", marginalize=True, chains=2, iter=300, warmup=150, seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm(SCHOOL, complete_cases, **kwargs)
        pooled = engine.brm(SCHOOL, complete_cases, executor=ThreadPoolExecutor(2), **kwargs)
    np.testing.assert_array_equal(fit.draws_array(), pooled.draws_array())
    assert fit.draws_array().shape == (2, 150, 9) and fit.ranef_values.shape == (2, 150, 16)
    stats = fit.sampler_stats
    for name in ("stepsize", "treedepth", "n_leapfrog", "divergent", "energy", "accept_stat"):
        assert name in stats.columns
    assert len(stats) == 300 and isinstance(fit.divergences, int)
    assert fit.ebfmi().shape == (2,)
    assert fit.sampler_options["marginalize"] is True
    gibbs_fit = engine.brm(SCHOOL, complete_cases, chains=2, iter=1000, warmup=200, seed=8)
    ours, ref = fit.summary(), gibbs_fit.summary()
    for name in fit.parameter_names:
        se = np.hypot(ours.loc[name, "Est.Error"] / np.sqrt(ours.loc[name, "Bulk_ESS"]),
                      ref.loc[name, "Est.Error"] / np.sqrt(ref.loc[name, "Bulk_ESS"]))
        assert abs(ours.loc[name, "Estimate"] - ref.loc[name, "Estimate"]) <= 5 * se + 0.01 * abs(ref.loc[name, "Estimate"]), name


def test_nested_model_with_the_study_priors(complete_cases):
    priors = [
        engine.prior("normal(0, 10)", class_="Intercept"),
        engine.prior("normal(0, 10)", class_="b"),
        engine.prior("cauchy(0, 10)", class_="sd"),
        engine.prior("cauchy(0, 10)", class_="sigma"),
    ]
    nested = SCHOOL.replace("(1 | schoolid)", "(1 | schoolid/classid)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm(nested, complete_cases, prior=priors, chains=2, iter=600, warmup=200, seed=4)
    assert fit.parameter_names[-3:] == ["sd_schoolid__Intercept", "sd_schoolid:classid__Intercept", "sigma"]
    assert [(g.name, g.n_levels) for g in fit.groups] == [("schoolid", 16), ("schoolid:classid", 41)]
    assert fit.ranef_values.shape == (2, 400, 16 + 41)
    assert any(name.startswith("r_schoolid:classid[") for name in fit.ranef_names)
    table = fit.prior_summary()
    by_class = table.groupby("class")["prior"].agg(set)
    assert by_class["b"] == {"normal(0, 10)"} and by_class["Intercept"] == {"normal(0, 10)"}
    assert by_class["sd"] == {"cauchy(0, 10)"} and by_class["sigma"] == {"cauchy(0, 10)"}
    assert (fit.draws["sd_schoolid:classid__Intercept"] > 0).all()
    if importlib.util.find_spec("engine.rcompat.print_brms") is not None:
        text = str(fit)
        assert text.index("~schoolid (Number of levels: 16)") < text.index("~schoolid:classid (Number of levels: 41)")


def test_thin_keeps_every_thin_th_post_warmup_draw(complete_cases):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = engine.brm(SCHOOL, complete_cases, chains=2, iter=310, warmup=10, seed=12)
        thinned = engine.brm(SCHOOL, complete_cases, chains=2, iter=310, warmup=10, thin=3, seed=12)
    assert thinned.draws_array().shape == (2, 100, 9)
    np.testing.assert_array_equal(thinned.draws_array(), full.draws_array()[:, ::3])
    np.testing.assert_array_equal(thinned.ranef_values, full.ranef_values[:, ::3])
    assert thinned.thin == 3


def test_progress_callback_counts_finished_chains(complete_cases):
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm(SCHOOL, complete_cases, chains=3, iter=60, warmup=20, seed=2,
                         progress=lambda done, total: calls.append((done, total)))
        silent = engine.brm(SCHOOL, complete_cases, chains=3, iter=60, warmup=20, seed=2, progress=False)
    assert sorted(calls) == [(1, 3), (2, 3), (3, 3)]
    np.testing.assert_array_equal(fit.draws_array(), silent.draws_array())


def test_brm_multiple_on_an_engine_mice_result(grit):
    imp = engine.mice(grit[VARS], m=2, maxit=2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm_multiple(SCHOOL, imp, chains=2, iter=300, warmup=100, seed=3)
        by_list = engine.brm_multiple(SCHOOL, [imp.complete(1), imp.complete(2)], chains=2, iter=300, warmup=100, seed=3)
    assert fit.m == 2 and fit.nobs == 1499 and fit.n_dropped == 0  # every row kept once imputed
    np.testing.assert_array_equal(fit.draws_array(), by_list.draws_array())


def _assert_nuts_agree_with_gibbs_per_imputation(fits, names):
    """Within each imputed data set, every mean and SD of the NUTS and collapsed-NUTS fits lies
    within 4 combined Monte Carlo SEs of the Gibbs fit's."""
    for k in range(fits["gibbs"].m):
        reference = fits["gibbs"].imputation_draws(k)
        for label in ("nuts", "collapsed"):
            ours = fits[label].imputation_draws(k)
            for j, name in enumerate(names):
                a, b = ours[:, :, j], reference[:, :, j]
                tol = 4.0 * np.hypot(diagnostics.mcse_mean(a), diagnostics.mcse_mean(b))
                assert abs(a.mean() - b.mean()) < tol, f"{label} imputation {k + 1} {name}: mean"
                tol = 4.0 * np.hypot(diagnostics.mcse_sd(a), diagnostics.mcse_sd(b))
                assert abs(a.std(ddof=1) - b.std(ddof=1)) < tol, f"{label} imputation {k + 1} {name}: sd"


def test_brm_multiple_samplers_agree_on_r_imputations(fixtures_dir):
    """On the five data sets R's mice completed, NUTS, collapsed NUTS and Gibbs agree within each
    imputation (4 combined Monte Carlo SEs on every mean and SD); the draws are combined as brms'
    brm_multiple does (chains x m)."""
    from engine.datasets import as_r_factor

    long = pd.read_csv(fixtures_dir / "mice" / "mice_pmm_completed_long.csv")
    datasets = []
    for k in range(1, 6):
        d = long[long[".imp"] == k].drop(columns=[".imp", ".id"]).reset_index(drop=True)
        for col in ("male", "schoolid"):
            d[col] = as_r_factor(d[col])
        d["grit"] = pd.Categorical(d["grit"], categories=["control", "intervention"])
        datasets.append(d)
    formula = "mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit + (1 | schoolid)"
    fits = {
        "gibbs": engine.brm_multiple(formula, datasets, sampler="gibbs", chains=2, seed=31),
        "nuts": engine.brm_multiple(formula, datasets, sampler="nuts", chains=2, seed=32),
        "collapsed": engine.brm_multiple(formula, datasets, sampler="nuts", marginalize=True, chains=2, seed=33),
    }
    for fit in fits.values():
        assert fit.m == 5 and fit.draws_array().shape[0] == 10
        assert fit.nobs == 1499
    names = fits["gibbs"].parameter_names
    _assert_nuts_agree_with_gibbs_per_imputation(fits, names)


def test_nested_model_samplers_agree_over_engine_imputations():
    """The nested model (schoolid/classid, the analysis' priors) over five data sets imputed by
    engine.mice: NUTS and collapsed NUTS agree with Gibbs within each imputation."""
    from engine.datasets import load_grit

    columns = ["mathscore1", "mathscore2", "male", "raven", "csize", "belief_survey1", "grit",
               "schoolid", "classid"]
    imp = engine.mice(load_grit()[columns], m=5, maxit=3, seed=5, progress=False)
    formula = ("mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit"
               " + (1 | schoolid/classid)")
    priors = [engine.prior("normal(0, 10)", class_="Intercept"), engine.prior("normal(0, 10)", class_="b"),
              engine.prior("cauchy(0, 10)", class_="sd"), engine.prior("cauchy(0, 10)", class_="sigma")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", engine.errors.ConvergenceWarning)
        fits = {
            "gibbs": engine.brm_multiple(formula, imp, prior=priors, chains=2, seed=41),
            "nuts": engine.brm_multiple(formula, imp, prior=priors, sampler="nuts", chains=2, seed=42,
                                        adapt_delta=0.95),
            "collapsed": engine.brm_multiple(formula, imp, prior=priors, sampler="nuts", marginalize=True,
                                             chains=2, seed=43, adapt_delta=0.95),
        }
    names = fits["gibbs"].parameter_names
    assert "sd_schoolid:classid__Intercept" in names
    _assert_nuts_agree_with_gibbs_per_imputation(fits, names)
