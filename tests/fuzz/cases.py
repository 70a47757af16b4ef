"""Hand-written bad and edge-case inputs for the public API, in this process (see harness.py).

Each case names the engine error class it must raise, or checks R's answer (R outputs in
tests/fixtures/fuzz/, with the R script that made them).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

import engine
from engine import diagnostics, errors
from engine.multilevel.results import load_fit
from tests.fuzz.harness import Case

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fuzz"
TMP = Path(tempfile.mkdtemp(prefix="engine-fuzz-"))

E = errors


# ------------------------------------------------------------------ small data


def lm_data() -> tuple[np.ndarray, np.ndarray]:
    """The R script's data: i = 1..20, x = sin(i), y = x + cos(3 i)."""
    i = np.arange(1, 21, dtype=float)
    x = np.sin(i)
    return x, x + np.cos(3 * i)


def frame(**columns) -> pd.DataFrame:
    x, y = lm_data()
    base = {"y": y, "x": x}
    base.update(columns)
    return pd.DataFrame(base)


def mice_frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 30
    d = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.normal(size=n)})
    d.loc[[1, 4, 7], "a"] = np.nan
    d.loc[[2, 9], "b"] = np.nan
    return d


def ml_frame(n_groups: int = 6, per: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(size=g.size)
    y = 0.5 * x + rng.normal(size=n_groups)[g] + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "g": g})


BRM = dict(chains=1, iter=40, warmup=20, seed=1, progress=False)


def brm(formula="y ~ x + (1 | g)", data=None, **kwargs):
    options = dict(BRM)
    options.update(kwargs)
    return engine.brm(formula, ml_frame() if data is None else data, **options)


@lru_cache(maxsize=None)
def _r_lm() -> dict:
    return json.loads((FIXTURES / "lm_edge_cases.json").read_text())


def _num(v):
    return float({"Inf": "inf", "-Inf": "-inf", "NaN": "nan", "NA": "nan"}.get(v, v) if isinstance(v, str) else v)


def r_lm_check(key: str, exact_noise: bool = False):
    """engine.ols equals R's summary(lm) on the R script's case ``key``: estimates (rel 1e-9),
    standard errors and t values (same infinities; finite ones rel 1e-7) and R's warnings. For an
    exact fit R's standard errors are rounding noise (~1e-16): engine's must be that small too."""
    expected = _r_lm()[key]

    def check(fit, caught):
        summary = fit.summary()
        table = summary.coefficients
        est = table["Estimate"].to_numpy()
        np.testing.assert_allclose(est, [_num(v) for v in expected["estimate"]], rtol=1e-9, atol=1e-12)
        assert fit._ls.rank == expected["rank"]
        for column, name in (("Std. Error", "std_error"), ("t value", "t_value")):
            got = table[column].to_numpy()
            want = np.array([_num(v) for v in expected[name]])
            if exact_noise:
                if column == "Std. Error":
                    assert np.all(np.abs(got) < 1e-12), got
                continue
            assert np.array_equal(np.isinf(got), np.isinf(want)), (column, got, want)
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-7, atol=1e-12)
        messages = [str(w.message) for w in caught] + [str(w.message) for w in _summary_warnings(fit)]
        for message in expected["warnings"]:
            assert any(message in m for m in messages), (message, messages)
        str(summary)  # prints
    return check


def _summary_warnings(fit):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.summary()
    return caught


def r_log_check(fit, caught):
    expected = _r_lm()["log_negative"]
    np.testing.assert_allclose(fit.params.to_numpy(), expected["estimate"], rtol=1e-9)
    assert fit.nobs == expected["nobs"] if hasattr(fit, "nobs") else True
    assert any("NaNs produced" in str(w.message) for w in caught), [str(w.message) for w in caught]


# ------------------------------------------------------------------ ols


def ols_cases() -> list[Case]:
    x, y = lm_data()
    ok = frame()
    c = []
    add = lambda name, run, expect=None, match=None, check=None: c.append(  # noqa: E731
        Case(name, "ols", run, expect, match, check))
    add("formula_not_string", lambda: engine.ols(5, ok), E.FormulaError)
    add("formula_none", lambda: engine.ols(None, ok), E.FormulaError)
    add("formula_empty", lambda: engine.ols("", ok), E.FormulaError)
    add("formula_no_rhs", lambda: engine.ols("y ~", ok), E.FormulaError)
    add("formula_trailing_plus", lambda: engine.ols("y ~ x +", ok), E.FormulaError)
    add("formula_open_paren", lambda: engine.ols("y ~ (x", ok), E.FormulaError)
    add("formula_close_paren", lambda: engine.ols("y ~ x)", ok), E.FormulaError)
    add("formula_no_tilde", lambda: engine.ols("y x", ok), E.FormulaError)
    add("formula_unknown_function", lambda: engine.ols("y ~ foo(x)", ok), E.FormulaError)
    # deep formulas (R 4.2.2, tests/fixtures/fuzz/deep_formulas.R): brackets nested more than 50
    # deep are R's parser error "contextstack overflow"; a 5000-term sum and 5000 unary minus signs
    # are fitted (y ~ x, y ~ 1); engine used to raise RecursionError / FormulaError on them
    same_as = lambda formula: (lambda fit, w: np.testing.assert_allclose(  # noqa: E731
        fit.params.to_numpy(), engine.ols(formula, ok).params.to_numpy(), rtol=1e-12))
    add("formula_deep_parens_5000", lambda: engine.ols("y ~ " + "(" * 5000 + "x" + ")" * 5000, ok), E.RSyntaxError,
        "more than 50 deep.*contextstack")
    add("formula_deep_parens_51", lambda: engine.ols("y ~ " + "(" * 51 + "x" + ")" * 51, ok), E.RSyntaxError, "contextstack")
    add("formula_deep_calls_51", lambda: engine.ols("y ~ " + "I(" * 51 + "x" + ")" * 51, ok), E.RSyntaxError, "contextstack")
    add("formula_deep_parens_50", lambda: engine.ols("y ~ " + "(" * 50 + "x" + ")" * 50, ok), check=same_as("y ~ x"))
    # R: "evaluation nested too deeply" (its options(expressions = 5000) limit); engine evaluates it
    add("formula_deep_unary_5000", lambda: engine.ols("y ~ I(" + "-" * 5000 + "x)", ok), check=same_as("y ~ I(x)"))
    add("formula_unary_chain_5001", lambda: engine.ols("y ~ " + "-" * 5001 + "x", ok), check=same_as("y ~ 1"))
    add("formula_plus_chain_5000", lambda: engine.ols("y ~ " + " + ".join(["x"] * 5000), ok), check=same_as("y ~ x"))
    add("formula_plus_chain_5000_in_I_predict", lambda: engine.ols("y ~ I(" + " + ".join(["x"] * 5000) + ")", ok).predict(
        ok.iloc[:3]), check=lambda r, w: np.testing.assert_allclose(
            np.asarray(r, dtype=float), np.asarray(engine.ols("y ~ I(5000 * x)", ok).predict(ok.iloc[:3]), dtype=float), rtol=1e-9))
    add("formula_plus_chain_50000", lambda: engine.ols("y ~ " + " + ".join(["x"] * 50000), ok), E.FormulaError,
        "nested too deeply.*Python frames")
    add("formula_plus_chain_500", lambda: engine.ols("y ~ " + " + ".join(["x"] * 500), ok), None, None,
        lambda fit, w: np.testing.assert_allclose(fit.params.to_numpy(), engine.ols("y ~ x", ok).params.to_numpy()))
    add("formula_random_term", lambda: engine.ols("y ~ x + (1 | g)", frame(g=np.arange(20) % 4)), E.EngineInputError)
    add("column_missing", lambda: engine.ols("y ~ z", ok), E.ColumnNotFoundError, "z")
    add("response_missing", lambda: engine.ols("w ~ x", ok), E.ColumnNotFoundError, "w")
    add("data_not_frame", lambda: engine.ols("y ~ x", [[1, 2]]), E.DataError)
    add("data_dict", lambda: engine.ols("y ~ x", {"y": y, "x": x}), E.DataError)
    add("data_empty", lambda: engine.ols("y ~ x", pd.DataFrame({"y": [], "x": []})), E.DataError)
    add("response_all_nan", lambda: engine.ols("y ~ x", frame(y=np.full(20, np.nan))), E.DataError)
    add("x_inf", lambda: engine.ols("y ~ x", frame(x=np.where(np.arange(20) == 3, np.inf, x))), E.DataError, "x")
    add("y_inf", lambda: engine.ols("y ~ x", frame(y=np.where(np.arange(20) == 3, -np.inf, y))), E.DataError, "y")
    add("x_overflow_1e308_square", lambda: engine.ols("y ~ I(x^2)", frame(x=x * 1e308)), E.DataError, r"I\(x\^2\)")
    add("response_text", lambda: engine.ols("y ~ x", frame(y=["a"] * 20)), E.EngineInputError)
    add("fewer_rows_than_coefficients", lambda: engine.ols("y ~ x", frame().iloc[:1]), E.ModelSpecError)
    add("no_coefficients", lambda: engine.ols("y ~ 0", ok), E.ModelSpecError)
    add("conf_level_2", lambda: engine.ols("y ~ x", ok).conf_int(2.0), E.ModelSpecError)
    add("constant_response", lambda: engine.ols("y ~ x", frame(y=np.ones(20))), check=r_lm_check("constant_y", True))
    add("exact_fit", lambda: engine.ols("y ~ x", frame(y=1 + 2 * x)), check=r_lm_check("exact_fit", True))
    add("x_times_1e-160", lambda: engine.ols("y ~ x", frame(x=x * 1e-160)), check=r_lm_check("x_1e_160"))
    add("x_times_1e-200", lambda: engine.ols("y ~ x", frame(x=x * 1e-200)), check=r_lm_check("x_1e_200"))
    add("x_times_1e-300", lambda: engine.ols("y ~ x", frame(x=x * 1e-300)), check=r_lm_check("x_1e_300"))
    add("x_times_1e250", lambda: engine.ols("y ~ x", frame(x=x * 1e250)), check=r_lm_check("x_1e250"))
    add("y_times_1e200", lambda: engine.ols("y ~ x", frame(y=y * 1e200)), check=r_lm_check("y_1e200"))
    add("plain", lambda: engine.ols("y ~ x", ok), check=r_lm_check("plain"))
    add("y_one_value_1e308", lambda: engine.ols("y ~ x", frame(y=np.where(np.arange(20) == 0, 1e308, y))),
        check=r_lm_check("y_one_1e308"))
    add("log_of_negative", lambda: engine.ols("y ~ log(x)", ok), check=r_log_check)

    def unchanged():
        d = frame(x=x * 1e-200)
        before = d.copy()
        engine.ols("y ~ x", d)
        pd.testing.assert_frame_equal(d, before)
        return d
    add("data_not_modified", unchanged, check=lambda d, w: None)
    return c


# ------------------------------------------------------------------ mice


def _with(d: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    d = d.copy()
    d.loc[row, column] = value
    return d


def mice_cases() -> list[Case]:
    d = mice_frame()
    run = lambda data=None, **kw: engine.mice(d if data is None else data, **{"m": 2, "maxit": 1, "seed": 1, **kw})  # noqa: E731
    c = []
    add = lambda name, f, expect=None, match=None, check=None: c.append(Case(name, "mice", f, expect, match, check))  # noqa: E731
    add("data_not_frame", lambda: engine.mice(d.to_numpy()), E.ImputationError)
    add("m_zero", lambda: run(m=0), E.ImputationError, "m ")
    add("m_negative", lambda: run(m=-3), E.ImputationError)
    add("m_float", lambda: run(m=1.5), E.ImputationError)
    add("m_bool", lambda: run(m=True), E.ImputationError)
    add("maxit_negative", lambda: run(maxit=-1), E.ImputationError)
    add("seed_negative", lambda: run(seed=-1), E.EngineInputError, "seed")
    add("seed_text", lambda: run(seed="abc"), E.EngineInputError, "seed")
    add("seed_float", lambda: run(seed=1.5), E.EngineInputError, "seed")
    add("method_unknown", lambda: run(method="magic"), E.ImputationError)
    add("method_dict_unknown_column", lambda: run(method={"zz": "pmm"}), E.ImputationError)
    add("method_list_wrong_length", lambda: run(method=["pmm"]), E.ImputationError)
    add("predictor_matrix_wrong_shape", lambda: run(predictor_matrix=np.ones((2, 2))), E.ImputationError)
    add("visit_sequence_unknown", lambda: run(visit_sequence=["a", "nope"]), E.ImputationError)
    add("quantify_text", lambda: run(quantify="yes"), E.ImputationError)
    add("default_method_short", lambda: run(default_method=("pmm",)), E.ImputationError)
    add("empty_frame", lambda: engine.mice(pd.DataFrame()), E.ImputationError)
    add("duplicated_columns", lambda: engine.mice(pd.DataFrame([[1.0, np.nan], [2.0, 3.0]], columns=["a", "a"])), E.ImputationError)
    add("all_missing_column", lambda: run(_with(d, "c", slice(None), np.nan)), E.ImputationError, "c")
    add("inf_in_predictor", lambda: run(_with(d, "c", 3, np.inf)), E.DataError, "'c'")
    add("minus_inf_in_target", lambda: run(_with(d, "a", 3, -np.inf)), E.DataError, "'a'")
    add("inf_in_target_norm", lambda: run(_with(d, "a", 3, np.inf), method="norm"), E.DataError, "'a'")
    add("huge_1e300_predictor", lambda: run(_with(d, "c", 3, 1e300)), E.DataError, "'c'")
    add("huge_1e200_target", lambda: run(_with(d, "b", 0, -1e200)), E.DataError, "'b'")

    def same_draws():
        first = run(seed=7).complete(1)
        second = run(seed=7).complete(1)
        pd.testing.assert_frame_equal(first, second)
        return first
    add("same_seed_same_draws", same_draws, check=lambda r, w: None)

    def unchanged():
        data = _with(d, "c", 3, 1e-250)  # tiny but finite: used as given
        before = data.copy()
        result = run(data)
        pd.testing.assert_frame_equal(data, before)
        return result
    add("tiny_values_used_and_data_not_modified", unchanged,
        check=lambda r, w: np.testing.assert_equal(np.isfinite(r.complete(1).to_numpy()).all(), True))
    return c


# ------------------------------------------------------------------ pool


class _Fit:
    def __init__(self, est, se, df=20.0):
        self.params = pd.Series(est, index=[f"t{j}" for j in range(len(est))], dtype=float if not np.iscomplexobj(est) else complex)
        self.bse = pd.Series(se, index=self.params.index)
        self.df_resid = df


def pool_cases() -> list[Case]:
    good = [_Fit([1.0, 2.0], [0.1, 0.2]), _Fit([1.1, 2.1], [0.1, 0.2]), _Fit([0.9, 1.8], [0.12, 0.25])]
    c = []
    add = lambda name, f, expect=None, match=None, check=None: c.append(Case(name, "pool", f, expect, match, check))  # noqa: E731
    add("empty", lambda: engine.pool([]), E.EngineInputError)
    add("one_fit", lambda: engine.pool(good[:1]), E.EngineInputError)
    add("not_fits", lambda: engine.pool([1, 2, 3]), E.EngineInputError)
    add("negative_se", lambda: engine.pool(good[:2] + [_Fit([1.0, 2.0], [-0.1, 0.2])]), E.EngineInputError, "negative")
    add("mismatched_terms", lambda: engine.pool([good[0], _Fit([1.0], [0.1])]), E.EngineInputError)
    add("dfcom_zero", lambda: engine.pool(good, dfcom=0), E.EngineInputError)
    add("dfcom_negative", lambda: engine.pool(good, dfcom=-5), E.EngineInputError)
    add("dfcom_nan", lambda: engine.pool(good, dfcom=float("nan")), E.EngineInputError)
    add("complex_estimates", lambda: engine.pool([_Fit(np.array([1 + 1j]), [0.1])] * 3), E.EngineInputError)
    add("no_se_no_vcov", lambda: engine.pool([type("F", (), {"params": pd.Series([1.0])})()] * 2), E.EngineInputError)

    def rubin():
        return engine.pool(good)

    def check(result, caught):  # Rubin's rules by hand
        est = np.array([[1.0, 2.0], [1.1, 2.1], [0.9, 1.8]])
        se = np.array([[0.1, 0.2], [0.1, 0.2], [0.12, 0.25]])
        t = (se ** 2).mean(0) + (1 + 1 / 3) * est.var(0, ddof=1)
        np.testing.assert_allclose(result.t, t, rtol=1e-12)
    add("rubin_rules", rubin, check=check)
    return c


# ------------------------------------------------------------------ diagnostics


def diagnostics_cases() -> list[Case]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 100))
    c = []
    add = lambda name, f, expect=None, match=None, check=None: c.append(Case(name, "diagnostics", f, expect, match, check))  # noqa: E731
    for fname in ("rhat", "ess_bulk", "ess_tail", "mcse_mean", "mcse_sd", "rhat_basic", "ess_basic"):
        f = getattr(diagnostics, fname)
        add(f"{fname}_complex", lambda f=f: f(x + 1j), E.EngineInputError, "real")
        add(f"{fname}_text", lambda f=f: f(np.array([["a", "b"], ["c", "d"]])), E.EngineInputError)
        add(f"{fname}_3d", lambda f=f: f(np.zeros((2, 3, 4))), E.EngineInputError)
        add(f"{fname}_empty", lambda f=f: f(np.zeros((0, 5))), E.EngineInputError)
        # posterior's answer for draws with a non-finite value or all equal: NA
        add(f"{fname}_nan_gives_na", lambda f=f: f(np.where(np.arange(400).reshape(4, 100) == 5, np.nan, x)),
            check=lambda r, w: np.testing.assert_equal(np.isnan(r), True))
        add(f"{fname}_constant_gives_na", lambda f=f: f(np.ones((4, 100))),
            check=lambda r, w: np.testing.assert_equal(np.isnan(r), True))
    add("quantile_prob_1.5", lambda: diagnostics.ess_quantile(x, 1.5), E.EngineInputError)
    add("mcse_quantile_prob_negative", lambda: diagnostics.mcse_quantile(x, -0.1), E.EngineInputError)
    add("summarise_complex", lambda: diagnostics.summarise_draws(x[:, :, None] + 1j), E.EngineInputError)
    return c


# ------------------------------------------------------------------ datasets


def _mkdir(name: str) -> str:
    path = TMP / name
    path.mkdir(exist_ok=True)
    return str(path)


def _write(name: str, content: bytes) -> str:
    path = TMP / name
    path.write_bytes(content)
    return str(path)


def datasets_cases() -> list[Case]:
    load = engine.datasets.load_grit
    raw = engine.datasets.load_grit_raw()
    c = []
    add = lambda name, f, expect=None, match=None, check=None: c.append(Case(name, "datasets", f, expect, match, check))  # noqa: E731
    add("missing_file", lambda: load(str(TMP / "nope.csv")), E.DataError, "not found")
    add("directory", lambda: load(str(TMP)), E.DataError)
    add("unsupported_extension", lambda: load(_write("d.xlsx", b"abc")), E.DataError, "unsupported")
    add("garbage_csv_binary", lambda: load(_write("g.csv", b"\x00\x01\xff\xfe garbage,,,\n\xff")), E.DataError, "g.csv")
    add("garbage_csv_text", lambda: load(_write("t.csv", b"hello world\nthis is not, data\n")), E.ColumnNotFoundError)
    add("empty_csv", lambda: load(_write("e.csv", b"")), E.DataError)
    add("garbage_dta", lambda: load(_write("g.dta", b"\x00\x01\x02garbage,,,\n\xff\xfe")), E.DataError, "g.dta")
    add("truncated_dta", lambda: load(_write("tr.dta", Path(engine.datasets.data_path("Sample2_Data.dta")).read_bytes()[:3000])), E.DataError)
    add("garbage_gz", lambda: load(_write("g.csv.gz", b"\x1f\x8b\x08garbage")), E.DataError)

    def text_column():
        d = raw.astype({"raven": object})
        d.loc[3, "raven"] = "n/a-text"
        path = str(TMP / "text.csv")
        d.to_csv(path, index=False)
        return load(path)
    add("text_in_numeric_column", text_column, E.DataError, "raven")

    def missing_column():
        path = str(TMP / "short.csv")
        raw.drop(columns=["grit"]).to_csv(path, index=False)
        return load(path)
    add("missing_required_column", missing_column, E.ColumnNotFoundError, "grit")
    add("header_only", lambda: load(_write("h.csv", (",".join(raw.columns) + "\n").encode())), E.DataError, "no data rows")
    add("shipped_copy_loads", lambda: load(), check=lambda r, w: np.testing.assert_equal(r.shape, (1499, 52)))
    return c


# ------------------------------------------------------------------ brm


def _failed_fit_in_new_folders():
    top = TMP / "never-made"
    try:
        return brm(data=ml_frame().assign(x=np.inf), file=str(top / "deeper" / "fit"))
    finally:
        assert not top.exists(), f"{top} left behind by the file= check"


def brm_cases() -> list[Case]:
    d = ml_frame()
    c = []
    add = lambda name, f, expect=None, match=None, check=None: c.append(Case(name, "brm", f, expect, match, check))  # noqa: E731
    add("no_group_term", lambda: brm("y ~ x"), E.EngineInputError, "group")
    add("data_not_frame", lambda: brm(data=d.to_numpy()), E.DataError)
    add("sampler_unknown", lambda: brm(sampler="metropolis"), E.EngineInputError, "sampler")
    add("chains_zero", lambda: brm(chains=0), E.EngineInputError, "chains")
    add("iter_below_warmup", lambda: brm(iter=10, warmup=20), E.EngineInputError, "warmup")
    add("thin_zero", lambda: brm(thin=0), E.EngineInputError, "thin")
    add("thin_too_large", lambda: brm(thin=100), E.EngineInputError, "thin")
    add("seed_negative", lambda: brm(seed=-1), E.EngineInputError, "seed")
    add("seed_text", lambda: brm(seed="x"), E.EngineInputError, "seed")
    add("unknown_option", lambda: brm(colour="red"), E.EngineInputError, "colour")
    add("marginalize_gibbs", lambda: brm(marginalize=True), E.EngineInputError, "marginalize")
    add("data_name_number", lambda: brm(data_name=5), E.EngineInputError, "data_name")
    add("prior_garbage", lambda: brm(prior="abc"), E.PriorError)
    add("prior_unknown_family", lambda: brm(prior=engine.prior("banana(1)")), E.PriorError)
    add("group_column_missing", lambda: brm("y ~ x + (1 | h)"), E.ColumnNotFoundError, "h")
    add("response_missing", lambda: brm("w ~ x + (1 | g)"), E.ColumnNotFoundError, "w")
    add("predictor_named_Intercept", lambda: brm("y ~ Intercept + (1 | g)", d.rename(columns={"x": "Intercept"})),
        E.ModelSpecError, "Intercept")
    add("response_1e200", lambda: brm(data=d.assign(y=d.y * 1e200)), E.DataError, "'y'")
    add("predictor_1e-200", lambda: brm(data=d.assign(x=d.x * 1e-200)), E.DataError, "'x'")
    add("predictor_1e200", lambda: brm(data=d.assign(x=d.x * 1e200)), E.DataError, "'x'.*rescale")
    # y * 1e-200: its squares underflow; brm returned b ~ 1e-37 (neither 0 nor 1e-200 times the fit)
    add("response_1e-200", lambda: brm(data=d.assign(y=d.y * 1e-200)), E.DataError, "'y'.*rescale")
    add("response_1e-160", lambda: brm(data=d.assign(y=d.y * 1e-160)), E.DataError, "'y'.*rescale")
    # brms' default priors scale with the data (student_t(3, ., max(2.5, mad(y)))): rescaling x, or
    # y once mad(y) is past brms' floor of 2.5, gives the same posterior in the new units (same seed)
    def brm_scaled(column, scale, base=1.0):
        def check(fit, caught):
            ref = brm(data=d.assign(y=d.y * base)).fixef()["Estimate"].to_numpy()
            factor = np.array([1.0, 1.0 / scale]) if column == "x" else scale / base
            np.testing.assert_allclose(fit.fixef()["Estimate"].to_numpy(), ref * factor, rtol=1e-6)
        return check
    for column, power, base in (("x", 100, 1.0), ("x", -100, 1.0), ("y", 100, 1e10)):
        add(f"{column}_times_1e{power}_as_unscaled", lambda column=column, power=power: brm(
            data=d.assign(**{column: d[column] * 10.0 ** power})), check=brm_scaled(column, 10.0 ** power, base))
    def finite(fit, caught):  # below brms' prior floor the answer depends on it, as in brms; finite, no error
        assert np.isfinite(fit.fixef().to_numpy()).all()
    add("y_times_1e-100_finite", lambda: brm(data=d.assign(y=d.y * 1e-100)), check=finite)
    add("predictor_inf", lambda: brm(data=d.assign(x=np.where(np.arange(len(d)) == 2, np.inf, d.x))), E.DataError)
    add("deep_formula", lambda: brm("y ~ " + "(" * 5000 + "x" + ")" * 5000 + " + (1 | g)"), E.FormulaError)
    add("file_in_unwritable_place", lambda: brm(file="/proc/no-such-dir/fit"), E.OutputPathError, "file=")
    add("file_is_directory", lambda: brm(file=_mkdir("adir.npz")), E.OutputPathError, "directory")
    add("file_under_a_file", lambda: brm(file=_write("plain.txt", b"x") + "/fit"), E.OutputPathError)
    # the up-front check of file= must not leave the folders it made when the fit fails later
    # (it used to create them for its probe and leave them behind)
    add("file_in_new_folders_failed_fit_leaves_none", lambda: _failed_fit_in_new_folders(), E.DataError, "'x'")
    def folders_made_once_written(fit, caught):
        assert os.path.isfile(str(TMP / "new1" / "new2" / "fit.json")), os.listdir(TMP)
    add("file_in_new_folders_written", lambda: brm(file=str(TMP / "new1" / "new2" / "fit")), check=folders_made_once_written)
    add("nuts_seed_negative", lambda: brm(sampler="nuts", seed=-2), E.EngineInputError, "seed")

    add("constant_response", lambda: brm(data=d.assign(y=np.ones(len(d)))), E.ModelSpecError, "constant")
    add("constant_response_nuts", lambda: brm(data=d.assign(y=np.full(len(d), 2.5)), sampler="nuts"),
        E.ModelSpecError, "constant")
    # non-Gaussian families: only a response at the edge of its range everywhere is degenerate
    yb = lambda v: d.assign(yb=v)  # noqa: E731
    add("bernoulli_all_ones", lambda: brm("yb ~ x + (1 | g)", yb(1), family="bernoulli"), E.ModelSpecError,
        "bernoulli.*every outcome is 1.*separation")
    add("bernoulli_all_zeros", lambda: brm("yb ~ x + (1 | g)", yb(0), family="bernoulli"), E.ModelSpecError, "every outcome is 0")
    add("binomial_all_successes", lambda: brm("yb | trials(5) ~ x + (1 | g)", yb(5), family="binomial"),
        E.ModelSpecError, "every trial is a success")
    add("poisson_all_zero", lambda: brm("yb ~ x + (1 | g)", yb(0), family="poisson", sampler="nuts"), E.ModelSpecError,
        "every count is 0")

    def log3(fit, caught):  # a constant count of 3 is an ordinary model: the intercept near log 3
        intercept = fit.draws_array()[..., fit.parameter_names.index("b_Intercept")].mean()
        assert abs(intercept - np.log(3.0)) < 0.3, intercept
    add("poisson_constant_3_is_fitted", lambda: brm("yb ~ x + (1 | g)", yb(3), family="poisson", sampler="nuts",
                                                     iter=200, warmup=100), check=log3)
    add("nearly_constant_response_long_run", lambda: brm(data=d.assign(y=1.0 + 1e-13 * d.x), iter=400, warmup=200),
        check=lambda fit, w: np.testing.assert_equal(np.isfinite(fit.draws_array()).all(), True))

    def fits_ordinary():
        return brm(iter=200, warmup=100)
    add("ordinary_fit_runs", fits_ordinary,
        check=lambda fit, w: np.testing.assert_equal(np.isfinite(fit.draws_array()).all(), True))

    add("brm_multiple_frame", lambda: engine.brm_multiple("y ~ x + (1 | g)", d, **BRM), E.ImputationError)
    add("brm_multiple_empty", lambda: engine.brm_multiple("y ~ x + (1 | g)", [], **BRM), E.ImputationError)
    add("brm_multiple_not_frames", lambda: engine.brm_multiple("y ~ x + (1 | g)", [1, 2], **BRM), E.EngineInputError)
    add("brm_multiple_seed_negative", lambda: engine.brm_multiple("y ~ x + (1 | g)", [d, d], **{**BRM, "seed": -1}),
        E.EngineInputError, "seed")
    add("brm_multiple_file_unwritable", lambda: engine.brm_multiple("y ~ x + (1 | g)", [d, d], file="/proc/x/y", **BRM),
        E.OutputPathError)
    return c


# ------------------------------------------------------------------ the fit cache


@lru_cache(maxsize=None)
def saved_fit() -> str:
    """A small fit saved once; each tampering case works on its own copy."""
    path = str(TMP / "base_fit")
    brm(file=path)
    return path


def _copy_fit(name: str) -> tuple[str, str, str]:
    import shutil

    base = saved_fit()
    target = str(TMP / name)
    shutil.copyfile(base + ".npz", target + ".npz")
    shutil.copyfile(base + ".json", target + ".json")
    return target, target + ".npz", target + ".json"


def _edit_json(name: str, change) -> str:
    target, _, json_path = _copy_fit(name)
    meta = json.loads(Path(json_path).read_text())
    change(meta)
    Path(json_path).write_text(json.dumps(meta))
    return target


def _replace_array(name: str, key: str, transform) -> str:
    target, npz_path, _ = _copy_fit(name)
    with np.load(npz_path) as stored:
        arrays = {k: np.array(stored[k]) for k in stored.files}
    arrays[key] = transform(arrays[key])
    with open(npz_path, "wb") as handle:
        np.savez(handle, **arrays)
    return target


def cache_cases() -> list[Case]:
    load = load_fit
    c = []
    add = lambda name, f, expect=E.CacheError, match=None, check=None: c.append(Case(name, "cache", f, expect, match, check))  # noqa: E731
    add("json_garbage", lambda: load(_edit_text("jg", "{not json")), match="delete")
    add("json_list", lambda: load(_edit_text("jl", "[1, 2]")))
    add("json_empty", lambda: load(_edit_text("je", "")))
    add("json_binary", lambda: load(_edit_text("jb", b"\xff\xfe\x00")))
    add("format_wrong", lambda: load(_edit_json("fw", lambda m: m.update(format="other"))))
    add("version_future", lambda: load(_edit_json("vf", lambda m: m.update(format_version=99))), match="newer")
    add("version_text", lambda: load(_edit_json("vt", lambda m: m.update(format_version="two"))))
    add("iter_edited", lambda: load(_edit_json("ie", lambda m: m.update(iter=m["iter"] - 300))))
    add("iter_edited_consistent_shape", lambda: load(_edit_json("ic", lambda m: m.update(iter=m["iter"] + 20, warmup=m["warmup"] + 20))))
    add("chains_edited", lambda: load(_edit_json("ce", lambda m: m.update(chains=3))))
    add("thin_zero", lambda: load(_edit_json("tz", lambda m: m.update(thin=0))))
    add("names_dropped", lambda: load(_edit_json("nd", lambda m: m.update(parameter_names=m["parameter_names"][:-1]))))
    add("formula_missing", lambda: load(_edit_json("fm", lambda m: m.pop("formula"))))
    add("groups_malformed", lambda: load(_edit_json("gm", lambda m: m.update(groups=[5]))))
    add("checksum_removed", lambda: load(_edit_json("cr", lambda m: m.pop("arrays_sha256"))))
    add("prior_table_malformed", lambda: load(_edit_json("pm", lambda m: m.update(prior_summary=7))))
    add("npz_garbage", lambda: load(_edit_npz("ng", b"PK\x03\x04garbage")))
    add("npz_empty", lambda: load(_edit_npz("ne", b"")))
    add("npz_pickle", lambda: load(_edit_npz("np", _pickled_npz())))
    add("draws_nan", lambda: load(_replace_array("dn", "draws", lambda a: np.full_like(a, np.nan))), match="non-finite|checksum")
    add("draws_changed", lambda: load(_replace_array("dc", "draws", lambda a: a + 1.0)), match="checksum")
    add("draws_reshaped", lambda: load(_replace_array("dr", "draws", lambda a: a[:, :-1])))
    add("draws_key_missing", lambda: load(_replace_array_drop("dk", "draws")))
    add("reload_via_brm", lambda: brm(file=_edit_json("rb", lambda m: m.update(iter=m["iter"] - 300))))
    add("valid_cache_loads", lambda: load(saved_fit()), expect=None,
        check=lambda fit, w: np.testing.assert_equal(fit.ndraws, 20))
    add("npz_compression_method_unknown", lambda: load(_zip_header_edit("zm", 10, 99)), match="does not read")
    add("npz_encrypted_flag", lambda: load(_zip_header_edit("ze", 8, 1)), match="does not read")
    return c


def _zip_header_edit(name: str, offset: int, value: int) -> str:
    """A saved .npz whose first central-directory entry has a changed 2-byte field: offset 10 is the
    compression method (99: not supported), offset 8 the flags (bit 0: encrypted). One flipped byte
    there raised NotImplementedError / RuntimeError from zipfile (test_generated_cache_byte_flips)."""
    target, npz_path, _ = _copy_fit(name)
    content = bytearray(Path(npz_path).read_bytes())
    at = content.index(b"PK\x01\x02") + offset
    content[at:at + 2] = (int.from_bytes(content[at:at + 2], "little") | value).to_bytes(2, "little")
    Path(npz_path).write_bytes(bytes(content))
    return target


def _edit_text(name: str, content) -> str:
    target, _, json_path = _copy_fit(name)
    Path(json_path).write_bytes(content if isinstance(content, bytes) else content.encode())
    return target


def _edit_npz(name: str, content: bytes) -> str:
    target, npz_path, _ = _copy_fit(name)
    Path(npz_path).write_bytes(content)
    return target


def _replace_array_drop(name: str, key: str) -> str:
    target, npz_path, _ = _copy_fit(name)
    with np.load(npz_path) as stored:
        arrays = {k: np.array(stored[k]) for k in stored.files if k != key}
    with open(npz_path, "wb") as handle:
        np.savez(handle, **arrays)
    return target


def _pickled_npz() -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, draws=np.array([object()], dtype=object), ranef=np.zeros(1), chain_imputation=np.zeros(1))
    return buffer.getvalue()


def _normal():
    import numba

    @numba.njit
    def normal(x):
        return -0.5 * (x @ x), -x
    return normal


def argument_type_cases() -> list[Case]:
    """Arguments of the wrong type anywhere (these used to raise numpy's or Python's own errors)."""
    c = []
    add = lambda area, name, f, expect, match=None: c.append(Case(name, area, f, expect, match))  # noqa: E731
    add("nuts", "init_text", lambda: engine.nuts.sample(_normal(), ["a", "b"]), E.EngineInputError, "initial_position")
    add("nuts", "init_complex", lambda: engine.nuts.sample(_normal(), np.zeros(2) + 1j), E.EngineInputError, "initial_position")
    add("nuts", "data_text", lambda: engine.nuts.sample(_normal(), np.zeros(2), data=["a"]), E.EngineInputError, "data")
    add("nuts", "index_text", lambda: engine.nuts.sample(_normal(), np.zeros(2), index=["a"]), E.EngineInputError, "index")
    add("nuts", "index_fraction", lambda: engine.nuts.sample(_normal(), np.zeros(2), index=[0.5, 1.0]), E.EngineInputError, "index")
    add("nuts", "adapt_delta_text", lambda: engine.nuts.sample(_normal(), np.zeros(2), adapt_delta="x"), E.EngineInputError)
    add("nuts", "iter_float", lambda: engine.nuts.sample(_normal(), np.zeros(2), iter=100.0), E.EngineInputError, "iter")
    add("diagnostics", "ragged_lists", lambda: diagnostics.rhat([[1.0, 2.0], [1.0]]), E.EngineInputError)
    add("diagnostics", "none", lambda: diagnostics.ess_bulk(None), E.EngineInputError)
    add("pool", "not_a_list", lambda: engine.pool(5), E.EngineInputError)
    add("pool", "a_frame", lambda: engine.pool(pd.DataFrame({"a": [1]})), E.EngineInputError)
    add("pool", "nones", lambda: engine.pool([None, None]), E.EngineInputError)
    add("cache", "path_none", lambda: load_fit(None), E.DataError)
    add("cache", "path_missing", lambda: load_fit(str(TMP / "none")), E.DataError, "no saved fit")
    add("datasets", "path_number", lambda: engine.datasets.load_grit(123), E.DataError)
    add("ols", "data_name_number", lambda: engine.ols("y ~ x", frame(), data_name=5), E.ModelSpecError, "data_name")
    add("ols", "integers_beyond_int64", lambda: engine.ols("y ~ x", frame(x=[2 ** 70] * 10 + [1] * 10)), E.DataError,
        "'x' holds numbers as Python objects.*astype")
    add("ols", "complex_column", lambda: engine.ols("y ~ x", frame(x=np.zeros(20) + 1j)), E.DataError, "'x'")
    add("ols", "datetime_column", lambda: engine.ols("y ~ t", frame(t=pd.date_range("2020", periods=20))), E.DataError, "'t'")
    add("mice", "complex_column", lambda: engine.mice(mice_frame().assign(c=1 + 1j), m=1, maxit=1), E.ImputationError, "'c'")
    add("mice", "datetime_column", lambda: engine.mice(mice_frame().assign(c=pd.date_range("2020", periods=30)), m=1),
        E.ImputationError, "'c'")
    add("brm", "chains_float", lambda: brm(chains=1.5), E.EngineInputError, "chains")
    add("brm", "one_level_group", lambda: brm(data=ml_frame().assign(g=1)), E.ModelSpecError, "level")
    add("brm", "brm_multiple_text", lambda: engine.brm_multiple("y ~ x + (1 | g)", "abc", **BRM), E.ImputationError)
    add("brm", "prior_number", lambda: engine.prior(5), E.PriorError)

    def shut():
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1)
        pool.shutdown()
        return pool
    add("mice", "executor_number", lambda: engine.mice(mice_frame(), m=2, maxit=1, seed=1, executor=5), E.EngineInputError, "executor")
    add("mice", "executor_shut_down", lambda: engine.mice(mice_frame(), m=2, maxit=1, seed=1, executor=shut()),
        E.EngineInputError, "executor.*shutdown")
    add("nuts", "executor_text", lambda: engine.nuts.sample(_normal(), np.zeros(2), chains=2, iter=20, warmup=10, executor="threads"),
        E.EngineInputError, "executor")
    # keyword arguments a function does not take (R's names, typos): a TypeError that is an engine
    # error naming the argument and the ones there are
    K = E.KeywordArgumentError
    add("ols", "keyword_weights", lambda: engine.ols("y ~ x", frame(), weights=np.ones(20)), K, "'weights'.*formula")
    add("ols_predict", "keyword_se_fit", lambda: _ols_factor_fit().predict(se_fit=True), K, "'se_fit'.*interval")
    add("ols", "conf_int_keyword", lambda: _ols_factor_fit().conf_int(parm="x"), K, "'parm'")
    add("lmer", "keyword_control", lambda: engine.lmer("y ~ x + (1|g)", ml_frame(), control={}), K, "'control'.*REML")
    add("lmer", "anova_keyword", lambda: engine.anova(engine.lmer("y ~ x + (1|g)", ml_frame()), test="Chisq"), K, "'test'")
    add("mice", "keyword_printFlag", lambda: engine.mice(mice_frame(), printFlag=False), K, "'printFlag'")
    add("pool", "keyword_rule", lambda: engine.pool([], rule="reiter1999"), K, "'rule'")
    add("brm", "prior_keyword", lambda: engine.prior("normal(0, 1)", klass="b"), K, "'klass'.*class_")
    add("brm_predict", "keyword_resp", lambda: _brm_fit().predict(resp="y"), K, "'resp'.*re_formula")
    add("brm_predict", "fitted_keyword", lambda: _brm_fit().fitted(scale="response"), K, "'scale'")
    add("brm_predict", "epred_keyword", lambda: _brm_fit().posterior_epred(nsamples=10), K, "'nsamples'.*ndraws")
    add("brm_predict", "bayes_R2_keyword", lambda: _brm_fit().bayes_R2(resp="y"), K, "'resp'")
    add("nuts", "keyword_thin", lambda: engine.nuts.sample(_normal(), np.zeros(2), thin=2), K, "'thin'.*chains")
    add("nuts", "missing_initial_position", lambda: engine.nuts.sample(_normal()), K, "initial_position")
    add("diagnostics", "summarise_keyword", lambda: diagnostics.summarise_draws(np.zeros((2, 10, 1)), digits=2), K, "'digits'")
    add("datasets", "keyword_sep", lambda: engine.datasets.load_grit(sep=";"), K, "'sep'.*path")
    add("cache", "keyword", lambda: load_fit(str(TMP / "none"), mmap=True), K, "'mmap'")
    return c


@lru_cache(maxsize=None)
def _brm_fit():
    return brm()


@lru_cache(maxsize=None)
def _ols_factor_fit():
    return engine.ols("y ~ x + g", frame(g=list("ab") * 10))


def _loglik() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(2, 50, 30)) - 1


def _ml_with(column_values: dict, rows=(3,)):
    d = ml_frame()
    for column, value in column_values.items():
        d.loc[list(rows), column] = value
    return d


def lmer_cases() -> list[Case]:
    """engine.lmer: R-checked (lme4 1.1 in R 4.2.2: one-level groupings and REML='yes' are errors
    there too; REML=1 is TRUE)."""
    c = []
    add = lambda name, f, expect=None, match=None, check=None: c.append(Case(name, "lmer", f, expect, match, check))  # noqa: E731
    d = ml_frame()
    lm = lambda f, data=None, **k: (lambda: engine.lmer(f, d if data is None else data, **k))  # noqa: E731
    add("no_bar", lm("y ~ x"), E.ModelSpecError, "no random effects")
    add("garbage", lm("y ~ ~ (1|"), E.FormulaError)
    add("missing_column", lm("y ~ z + (1|g)"), E.ColumnNotFoundError, "'z'")
    add("missing_group", lm("y ~ x + (1|h)"), E.ColumnNotFoundError, "'h'")
    add("constant_response", lm("y ~ x + (1|g)", d.assign(y=1.0)), E.ModelSpecError, "'y' is constant")
    add("one_level_group", lm("y ~ x + (1|g)", d.assign(g=1)), E.ModelSpecError, "> 1 sampled level")
    add("inf", lm("y ~ x + (1|g)", _ml_with({"x": np.inf})), E.DataError, "'x'")
    add("text_response", lm("y ~ x + (1|g)", d.assign(y="a")), E.ModelSpecError, "'y'")
    add("reml_text", lm("y ~ x + (1|g)", REML="yes"), E.ModelSpecError, "REML")
    add("reml_none", lm("y ~ x + (1|g)", REML=None), E.ModelSpecError, "REML")
    add("too_many_levels", lm("y ~ x + (1|g)", d.assign(g=np.arange(30))), E.ModelSpecError, "levels")
    add("slope_unidentifiable", lm("y ~ x + (x|g)", d.assign(g=np.repeat(np.arange(15), 2))), E.ModelSpecError)
    add("data_none", lambda: engine.lmer("y ~ x + (1|g)", None), E.ModelSpecError, "data")
    add("formula_number", lambda: engine.lmer(5, d), E.ModelSpecError, "formula")
    add("all_missing", lm("y ~ x + (1|g)", d.assign(x=np.nan)), E.DataError, "'x'")
    add("no_response", lm("~ x + (1|g)"), E.FormulaError, "response")
    def same_as_complete(fit, caught):  # na.omit: the fit equals the fit to the complete rows
        ref = engine.lmer("y ~ x + (1|g)", d.drop(index=3))
        np.testing.assert_allclose(fit.params.to_numpy(), ref.params.to_numpy(), rtol=1e-10)
    add("nan_row_dropped", lm("y ~ x + (1|g)", _ml_with({"x": np.nan})), check=same_as_complete)
    def dropped_as_lme4(n_dropped):
        # lme4 1.1-31 (R 4.2.2) on lmer(y ~ x + x2 + (1|g)) with x2 = 2 x: the message below, x2
        # dropped, the fit of y ~ x + (1|g); chkRank.drop.cols keeps R's qr() pivot order
        def check(fit, caught):
            ref = engine.lmer("y ~ x + (1|g)", d)
            assert list(fit.params.index) == ["(Intercept)", "x"], list(fit.params.index)
            np.testing.assert_allclose(fit.params.to_numpy(), ref.params.to_numpy(), rtol=1e-8)
            np.testing.assert_allclose(fit.sigma, ref.sigma, rtol=1e-8)
            what = "1 column / coefficient" if n_dropped == 1 else f"{n_dropped} columns / coefficients"
            message = f"fixed-effect model matrix is rank deficient so dropping {what}"
            assert any(str(w.message) == message for w in caught), [str(w.message) for w in caught]
        return check
    add("rank_deficient_drops_as_lme4", lm("y ~ x + x2 + (1|g)", d.assign(x2=2 * d.x)), check=dropped_as_lme4(1))
    add("rank_deficient_two_columns", lm("y ~ x + x2 + x3 + (1|g)", d.assign(x2=-d.x, x3=3 * d.x)),
        check=dropped_as_lme4(2))
    for column in ("x", "y"):
        for power in (200, -200, 160, -160):
            # lme4 fails ("objective in x0 returns NA", "Downdated VtV is not positive definite") or
            # reports a variance of Inf / 0 there; engine says which column to rescale
            add(f"{column}_times_1e{power}", lm("y ~ x + (1|g)", d.assign(**{column: d[column] * 10.0 ** power})),
                E.DataError, f"'{column}'.*rescale")

    def scaled(column, scale):  # lmer is scale-equivariant: the same fit in the new units
        def check(fit, caught):
            ref = engine.lmer("y ~ x + (1|g)", d)
            factor = np.array([1.0, 1.0 / scale]) if column == "x" else scale
            np.testing.assert_allclose(fit.params.to_numpy(), ref.params.to_numpy() * factor, rtol=1e-6)
            np.testing.assert_allclose(fit.sigma, ref.sigma * (1.0 if column == "x" else scale), rtol=1e-6)
        return check
    for column in ("x", "y"):
        for power in (100, -100):
            add(f"{column}_times_1e{power}_as_unscaled", lm("y ~ x + (1|g)", d.assign(**{column: d[column] * 10.0 ** power})),
                check=scaled(column, 10.0 ** power))

    def reml_true(fit, caught):
        assert fit.reml
    add("reml_one_is_true", lm("y ~ x + (1|g)", REML=1), check=reml_true)
    from engine.lmer import anova
    m1 = lambda: engine.lmer("y ~ x + (1|g)", d)  # noqa: E731
    add("anova_not_a_fit", lambda: anova(m1(), 5), E.ModelSpecError, "argument 2")
    # anova(m) of one fit: lme4 1.1-31's sequential F table (lmer_anova_one.R/.json; R's numbers
    # to rel 1e-7, the lmer optimum's agreement with lme4 there is ~5e-9; the printed table exactly)
    reference = json.loads((FIXTURES / "lmer_anova_one.json").read_text())
    anova_data = pd.read_csv(FIXTURES / "lmer_anova_one.csv")
    def anova_as_lme4(form):
        def check(table, caught):
            want = reference[form]
            assert list(table.index) == want["rows"], list(table.index)
            for column, key in (("npar", "npar"), ("Sum Sq", "sumsq"), ("Mean Sq", "meansq"), ("F value", "F")):
                np.testing.assert_allclose(table[column].to_numpy(), want[key], rtol=1e-7, err_msg=column)
            assert str(table).rstrip("\n").split("\n") == want["printed"], str(table)
        return check
    for k, form in enumerate(reference):
        add(f"anova_one_model_as_lme4_{k}", lambda form=form: anova(engine.lmer(form, anova_data)), check=anova_as_lme4(form))
    # lme4 1.1-31 predict(m, newdata) on lmer(y ~ x + (1 | g), lmer_anova_one.csv): NA in x gives an
    # NA row (na.pass), the other row 0.451209515459964; NA in the grouping column is an error
    # unless allow.new.levels = TRUE
    m_anova = lambda: engine.lmer("y ~ x + (1 | g)", anova_data)  # noqa: E731
    def na_row_as_lme4(result, caught):
        assert np.isnan(result[0]), result
        np.testing.assert_allclose(result[1], 0.451209515459964, rtol=1e-7)
    add("predict_nan_predictor_gives_na", lambda: m_anova().predict(pd.DataFrame({"x": [np.nan, 1.0], "g": [1, 1]})),
        check=na_row_as_lme4)
    add("predict_nan_group", lambda: m_anova().predict(pd.DataFrame({"x": [1.0, 1.0], "g": [np.nan, 1]})),
        E.DataError, "'g'.*allow_new_levels")
    add("anova_one_model_names", lambda: anova(m1(), names=["a"]), E.ModelSpecError, "names")
    add("anova_no_model", lambda: anova(), E.ModelSpecError, "lmer fit")
    add("anova_different_n", lambda: anova(m1(), engine.lmer("y ~ x + (1|g)", d.iloc[:25])), E.ModelSpecError, "size")
    add("anova_names_length", lambda: anova(m1(), engine.lmer("y ~ 1 + (1|g)", d), names=["a"]), E.ModelSpecError, "names")
    return c


def loo_cases() -> list[Case]:
    import engine.loo as L

    c = []
    add = lambda name, f, expect=None, match=None, check=None: c.append(Case(name, "loo", f, expect, match, check))  # noqa: E731
    ll = _loglik()
    add("vector", lambda: L.loo(np.zeros(10)), E.EngineInputError, "shape")
    add("four_dims", lambda: L.loo(np.zeros((2, 2, 2, 2))), E.EngineInputError, "shape")
    add("nan", lambda: L.loo(np.where(ll > 2, np.nan, ll)), E.DataError, "NaN")
    add("inf", lambda: L.loo(np.where(ll > 2, np.inf, ll)), E.DataError, "infinite")
    add("minus_inf", lambda: L.loo(np.where(ll > 2, -np.inf, ll)), E.DataError, "infinite")
    add("text", lambda: L.loo([["a"]]), E.EngineInputError, "log_lik")
    add("none", lambda: L.loo(None), E.EngineInputError, "log_lik")
    add("chain_id_length", lambda: L.loo(ll.reshape(100, 30), chain_id=np.ones(50)), E.EngineInputError, "chain_id")
    add("chain_id_text", lambda: L.loo(ll.reshape(100, 30), chain_id=["a"] * 100), E.EngineInputError, "chain_id")
    add("chain_id_fraction", lambda: L.loo(ll.reshape(100, 30), chain_id=np.repeat([0.5, 1.5], 50)), E.EngineInputError, "chain_id")
    add("r_eff_length", lambda: L.loo(ll, r_eff=np.ones(5)), E.EngineInputError, "r_eff")
    add("r_eff_negative", lambda: L.loo(ll, r_eff=-1), E.EngineInputError, "r_eff")
    add("r_eff_nan", lambda: L.loo(ll, r_eff=np.nan), E.EngineInputError, "r_eff")
    add("r_eff_text", lambda: L.loo(ll, r_eff="a"), E.EngineInputError, "r_eff")
    add("empty", lambda: L.loo(np.zeros((2, 0, 3))), E.EngineInputError, "empty")
    add("one_draw", lambda: L.loo(np.zeros((1, 1, 3))), E.EngineInputError, "single draw")
    add("waic_vector", lambda: L.waic(np.zeros(10)), E.EngineInputError, "shape")
    add("waic_nan", lambda: L.waic(np.where(ll > 2, np.nan, ll)), E.DataError)
    add("waic_inf", lambda: L.waic(np.where(ll > 2, np.inf, ll)), E.DataError)
    add("relative_eff_vector", lambda: L.relative_eff(np.zeros(10)), E.EngineInputError, "shape")
    add("relative_eff_nan", lambda: L.relative_eff(np.where(ll > 0, np.nan, np.exp(ll))), E.DataError)
    add("relative_eff_chain_id", lambda: L.relative_eff(ll.reshape(100, 30), chain_id=[1, 2]), E.EngineInputError, "chain_id")
    add("compare_different_n", lambda: L.loo_compare(L.loo(ll), L.loo(ll[:, :, :20])), E.EngineInputError, "same number")
    add("compare_one", lambda: L.loo_compare(L.loo(ll)), E.EngineInputError, "two models")
    add("compare_none", lambda: L.loo_compare(), E.EngineInputError, "two models")
    add("compare_junk", lambda: L.loo_compare(5, "a"), E.EngineInputError)
    add("compare_names_length", lambda: L.loo_compare(L.loo(ll), L.loo(ll + 0.1), names=["a"]), E.EngineInputError, "names")
    add("compare_loo_waic", lambda: L.loo_compare(L.loo(ll), L.waic(ll + 0.1)), E.EngineInputError, "same criterion")
    add("cores_as_r", lambda: L.loo(ll, cores=2), E.KeywordArgumentError, "'cores'.*r_eff")
    add("waic_unknown_keyword", lambda: L.waic(ll, r_eff=1), E.KeywordArgumentError, "'r_eff'")
    for key in ("zeros", "x1e200", "x1e-200", "int", "onecol"):
        # degenerate arrays: loo's answer, k = Inf where the tail cannot be fitted (these used to
        # raise SystemError from a division by zero inside the kernel)
        add(f"degenerate_{key}", lambda key=key: L.loo(_loo_edge_array(key), r_eff=1.0), check=r_loo_check(key))
        add(f"degenerate_{key}_default_r_eff", lambda key=key: L.loo(_loo_edge_array(key)),
            check=lambda r, w: np.testing.assert_equal(np.isnan(r.pareto_k).any(), False))
    return c


def _loo_edge_array(key: str) -> np.ndarray:
    """loo_edge_cases.R's arrays as (chains, draws, observations)."""
    s = np.arange(1, 51)[:, None, None]
    ch = np.arange(1, 3)[None, :, None]
    i = np.arange(1, 31)[None, None, :]
    base = np.ascontiguousarray(np.moveaxis(-1 + np.sin(1.3 * (s + 50 * (ch - 1)) * i) + 0.1 * np.cos(i), 1, 0))
    if key == "onecol":
        base[:, :, 2] = -2.0
        return base
    return {"zeros": base * 0.0, "x1e200": base * 1e200, "x1e-200": base * 1e-200, "int": np.round(base * 10)}[key]


def r_loo_check(key: str):
    """engine.loo equals R's loo 2.5.1 (loo_edge_cases.json): estimates, SEs, Pareto k, pointwise
    elpd and MCSE (rel 1e-9; the same infinities and NAs) and R's warnings."""
    expected = json.loads((FIXTURES / "loo_edge_cases.json").read_text())[key]

    def same(got, want, what):
        want = np.array([_num(v) for v in want])
        got = np.asarray(got, dtype=float)
        assert np.array_equal(np.isnan(got), np.isnan(want)), (what, got, want)
        assert np.array_equal(np.isposinf(got), np.isposinf(want)), (what, got, want)
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-9, atol=1e-12, err_msg=what)

    def check(result, caught):
        same(result.estimates["Estimate"], expected["estimate"], "estimate")
        same(result.estimates["SE"], expected["se"], "se")
        same(result.pareto_k, expected["pareto_k"], "pareto_k")
        same(result.pointwise["elpd_loo"], expected["elpd_loo"], "elpd_loo")
        same(result.pointwise["mcse_elpd_loo"], expected["mcse_elpd_loo"], "mcse_elpd_loo")
        messages = [str(w.message) for w in caught]
        for message in expected["warnings"]:
            assert any(message.strip().rstrip(".") in m for m in messages), (message, messages)
        str(result)  # prints
    return check


def robust_predict_cases() -> list[Case]:
    """ols(vcov=, cluster=), predict on OLS fits (R's predict.lm) and on brm fits (brms' predict)."""
    c = []
    add = lambda area, name, f, expect=None, match=None, check=None: c.append(Case(name, area, f, expect, match, check))  # noqa: E731
    f = frame(c=np.repeat(np.arange(5), 4))
    add("ols", "vcov_unknown", lambda: engine.ols("y ~ x", f, vcov="HC9"), E.ModelSpecError, "HC9")
    add("ols", "vcov_number", lambda: engine.ols("y ~ x", f, vcov=3), E.ModelSpecError, "vcov")
    add("ols", "cluster_missing", lambda: engine.ols("y ~ x", f, vcov="CR1", cluster="zz"), E.ColumnNotFoundError, "'zz'")
    add("ols", "cluster_nan", lambda: engine.ols("y ~ x", f.assign(c=np.where(np.arange(20) == 2, np.nan, f.c)), cluster="c"),
        E.DataError, "'c'")
    add("ols", "cluster_one", lambda: engine.ols("y ~ x", f.assign(c=1), cluster="c"), E.ModelSpecError, "'c'")
    add("ols", "cluster_number", lambda: engine.ols("y ~ x", f, cluster=5), E.ModelSpecError, "cluster")
    add("ols", "cluster_array", lambda: engine.ols("y ~ x", f, cluster=np.arange(3)), E.ModelSpecError, "cluster")
    nd = lambda **k: pd.DataFrame({"x": [1.0], "g": ["a"], **k})  # noqa: E731
    fit = _ols_factor_fit
    add("ols_predict", "unseen_level", lambda: fit().predict(nd(g=["z"])), E.NewFactorLevelError, "z")
    add("ols_predict", "missing_column", lambda: fit().predict(pd.DataFrame({"x": [1.0]})), E.ColumnNotFoundError, "'g'")
    add("ols_predict", "text_for_number", lambda: fit().predict(nd(x=["a"])), E.DataError, "'x'")
    add("ols_predict", "interval_bogus", lambda: fit().predict(nd(), interval="bogus"), E.ModelSpecError, "interval")
    add("ols_predict", "level_2", lambda: fit().predict(nd(), interval="confidence", level=2), E.ModelSpecError, "level")
    add("ols_predict", "level_nan", lambda: fit().predict(nd(), interval="confidence", level=np.nan), E.ModelSpecError, "level")
    add("ols_predict", "level_text", lambda: fit().predict(nd(), interval="confidence", level="a"), E.ModelSpecError, "level")
    add("ols_predict", "newdata_list", lambda: fit().predict([1, 2]), E.DataError, "newdata")
    def na_row(result, caught):  # R's predict.lm (na.pass): NA for the row with NA, the others as usual
        assert np.isnan(result.iloc[0].to_numpy(dtype=float)).all()
        ref = fit().predict(nd(), interval="confidence")
        np.testing.assert_allclose(result.iloc[1].to_numpy(dtype=float), ref.iloc[0].to_numpy(dtype=float), rtol=1e-12)
    add("ols_predict", "nan_in_newdata_gives_na", lambda: fit().predict(
        pd.DataFrame({"x": [np.nan, 1.0], "g": ["a", "a"]}), interval="confidence"), check=na_row)
    add("ols_predict", "robust_without_vcov", lambda: fit().predict(nd(), robust=True), E.ModelSpecError, "robust")
    b = _brm_fit
    bd = lambda **k: pd.DataFrame({"x": [1.0], "g": [1], **k})  # noqa: E731
    add("brm_predict", "unseen_level", lambda: b().predict(bd(g=[99])), E.DataError, "allow_new_levels")
    add("brm_predict", "missing_column", lambda: b().predict(pd.DataFrame({"g": [1]})), E.ColumnNotFoundError, "'x'")
    add("brm_predict", "text_for_number", lambda: b().predict(bd(x=["a"])), E.DataError, "'x'")
    add("brm_predict", "nan_predictor", lambda: b().predict(bd(x=[np.nan])), E.DataError, "'x'")
    add("brm_predict", "re_formula_garbage", lambda: b().predict(bd(), re_formula="((("), E.FormulaError)
    add("brm_predict", "re_formula_number", lambda: b().predict(bd(), re_formula=5), E.EngineInputError, "re_formula")
    add("brm_predict", "re_formula_other_group", lambda: b().predict(bd(), re_formula="~(1|h)"), E.EngineInputError, "'h'")
    add("brm_predict", "allow_new_levels_text", lambda: b().predict(bd(g=[99]), allow_new_levels="yes"), E.EngineInputError,
        "allow_new_levels")
    add("brm_predict", "sample_new_levels_bad", lambda: b().predict(bd(g=[99]), allow_new_levels=True, sample_new_levels="xx"),
        E.EngineInputError, "sample_new_levels")
    add("brm_predict", "probs_out_of_range", lambda: b().predict(bd(), probs=(2, 3)), E.EngineInputError, "probs")
    add("brm_predict", "probs_text", lambda: b().predict(bd(), probs="a"), E.EngineInputError, "probs")
    add("brm_predict", "ndraws_too_many", lambda: b().predict(bd(), ndraws=10 ** 6), E.EngineInputError, "ndraws")
    add("brm_predict", "ndraws_negative", lambda: b().predict(bd(), ndraws=-1), E.EngineInputError, "ndraws")
    add("brm_predict", "draw_ids_out_of_range", lambda: b().predict(bd(), draw_ids=[10 ** 6]), E.EngineInputError, "draw_ids")
    # posterior's check_draw_ids (brms' draw_ids): duplicates dropped and sorted; engine's ids are
    # 0-based, and a non-whole number, a bool or text is an error (R's as.integer truncates 1.5)
    add("brm_predict", "draw_ids_negative", lambda: b().predict(bd(), draw_ids=[-1]), E.EngineInputError, "draw_ids.*-1")
    add("brm_predict", "draw_ids_fraction", lambda: b().predict(bd(), draw_ids=[1.5]), E.EngineInputError, "draw_ids.*whole")
    add("brm_predict", "draw_ids_text", lambda: b().predict(bd(), draw_ids=["a"]), E.EngineInputError, "draw_ids")
    add("brm_predict", "draw_ids_bool", lambda: b().predict(bd(), draw_ids=[True]), E.EngineInputError, "draw_ids")
    add("brm_predict", "draw_ids_empty", lambda: b().predict(bd(), draw_ids=[]), E.EngineInputError, "draw_ids")
    add("brm_predict", "draw_ids_nan", lambda: b().predict(bd(), draw_ids=[np.nan]), E.EngineInputError, "draw_ids")
    def unique_sorted(result, caught):  # subset_draws(draw = c(3, 1, 3)) keeps draws 1 and 3, in order
        fit = b()
        want = engine.multilevel.predict.posterior_epred(fit, bd(), draw_ids=[1, 3])
        assert result.shape == want.shape == (2, 1), (result.shape, want.shape)
        np.testing.assert_array_equal(result, want)
    add("brm_predict", "draw_ids_duplicates_as_posterior",
        lambda: engine.multilevel.predict.posterior_epred(b(), bd(), draw_ids=[3, 1, 3]), check=unique_sorted)
    add("brm_predict", "log_lik_as_array_with_draw_ids", lambda: b().log_lik(as_array=True, draw_ids=[1]),
        E.EngineInputError, "as_array")
    add("brm_predict", "newdata_list", lambda: b().predict([1, 2]), E.DataError, "newdata")
    add("brm_predict", "summary_text", lambda: b().predict(bd(), summary="no"), E.EngineInputError, "summary")
    add("brm_predict", "seed_negative", lambda: b().predict(bd(), seed=-1), E.EngineInputError, "seed")
    def new_level_draws(result, caught):  # brms: a new level draws its effect; finite, one row
        assert result.shape[0] == 1 and np.all(np.isfinite(result.to_numpy(dtype=float)))
    add("brm_predict", "new_level_allowed", lambda: b().predict(bd(g=[99]), allow_new_levels=True, seed=1), check=new_level_draws)
    return c


def _raising_progress(done, total):
    raise ZeroDivisionError("user's progress function")


def callback_cases() -> list[Case]:
    """A user's function that raises inside engine (progress= of mice and brm): a CallbackError
    naming the argument (it used to surface as the user's raw exception); a progress= that is
    neither a bool, None nor a function is an error (``"yes"`` was taken as True)."""
    c = []
    add = lambda area, name, f, expect=None, match=None: c.append(Case(name, area, f, expect, match))  # noqa: E731
    add("mice", "progress_raises", lambda: engine.mice(mice_frame(), m=2, maxit=2, seed=1, progress=_raising_progress),
        E.CallbackError, "progress.*ZeroDivisionError")
    add("mice", "progress_text", lambda: engine.mice(mice_frame(), m=2, maxit=2, seed=1, progress="yes"),
        E.EngineInputError, "progress")
    add("brm", "progress_raises", lambda: brm(progress=_raising_progress), E.CallbackError, "progress.*ZeroDivisionError")
    add("brm", "progress_number", lambda: brm(progress=3), E.EngineInputError, "progress")
    return c


def _dask(d: pd.DataFrame):
    import dask.dataframe as dd

    return dd.from_pandas(d, npartitions=3)


def partitioned_cases() -> list[Case]:
    """engine/partitioned (a Dask DataFrame): the in-memory errors, naming the column (a slope on
    x * 1e-200 came back NaN, x * 1e200 "the factorisation overflowed", Inf in a brm predictor
    reached the sampler as "non-finite draws" and Inf in its response was dropped as missing)."""
    c = []
    add = lambda name, f, expect=None, match=None, check=None: c.append(Case(name, "partitioned", f, expect, match, check))  # noqa: E731
    d = ml_frame(6, 10)
    inf_at = lambda column: d.assign(**{column: np.where(np.arange(len(d)) == 45, np.inf, d[column])})  # noqa: E731
    for column, power in (("x", -200), ("x", 200), ("y", -200), ("y", 200)):
        add(f"ols_{column}_times_1e{power}", lambda column=column, power=power: engine.ols(
            "y ~ x", _dask(d.assign(**{column: d[column] * 10.0 ** power}))), E.DataError, f"'{column}'.*rescale")
    for column in ("x", "y"):
        add(f"ols_inf_{column}", lambda column=column: engine.ols("y ~ x", _dask(inf_at(column))), E.DataError, f"'{column}'.*Inf")
        add(f"brm_inf_{column}", lambda column=column: brm(data=_dask(inf_at(column))), E.DataError, f"'{column}'.*Inf")
    def as_in_memory(fit, caught):  # scales inside the bounds: the in-memory (R's) answer
        ref = engine.ols("y ~ x", d.assign(x=d.x * 1e100))
        np.testing.assert_allclose(fit.params.to_numpy(), ref.params.to_numpy(), rtol=1e-9)
    add("ols_x_times_1e100_as_in_memory", lambda: engine.ols("y ~ x", _dask(d.assign(x=d.x * 1e100))), check=as_in_memory)
    add("ols_missing_column", lambda: engine.ols("y ~ z", _dask(d)), E.ColumnNotFoundError, "'z'")
    # the in-memory message, with the number of rows (it said "in all 2 rows": the extremes' stub)
    add("brm_constant_response", lambda: brm(data=_dask(d.assign(y=1.0))), E.ModelSpecError, "constant .1 in all 60 rows")
    return c


def all_cases() -> list[Case]:
    return (ols_cases() + mice_cases() + pool_cases() + diagnostics_cases() + datasets_cases()
            + brm_cases() + cache_cases() + argument_type_cases()
            + lmer_cases() + loo_cases() + robust_predict_cases() + callback_cases() + partitioned_cases())
