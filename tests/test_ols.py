"""engine.ols against R 4.2.2's lm (fixtures), statsmodels (property tests), and LINPACK's dqrdc2
run directly on X (the slow reference for the one-pass QR)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.datasets import load_grit
from engine.errors import DataError, EngineInputError, FormulaError, ModelSpecError
from engine.ols import _dqrdc2, least_squares, pivoted_qr
from engine.rcompat.quantile import quantile7

MODELS = {
    "model1": "mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit",
    "model2": "mathscore2 ~ mathscore1 + grit",
}
RTOL_R = 1e-10


@pytest.fixture(scope="module")
def grit():
    return load_grit()


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return json.loads((fixtures_dir / "lm" / "lm_reference.json").read_text())


def _rel(a, b):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


# ---------------------------------------------------------------------------------------------
# R's lm on the study data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_number_matches_r(grit, reference, name):
    ref = reference[name]
    fit = engine.ols(MODELS[name], grit, data_name="data2")
    assert list(fit.params.index) == ref["terms"]
    assert _rel(fit.params, ref["estimate"]) < RTOL_R
    assert _rel(fit.bse, ref["std_error"]) < RTOL_R
    assert _rel(fit.tvalues, ref["t_value"]) < RTOL_R
    assert _rel(fit.pvalues, ref["p_value"]) < RTOL_R
    assert _rel(fit.sigma, ref["sigma"]) < RTOL_R
    assert fit.df_resid == ref["df_residual"]
    assert _rel(fit.rsquared, ref["r_squared"]) < RTOL_R
    assert _rel(fit.rsquared_adj, ref["adj_r_squared"]) < RTOL_R
    assert _rel(fit.fvalue, ref["fstatistic"]) < RTOL_R
    assert fit.df_model == ref["f_df1"] and fit.df_resid == ref["f_df2"]
    assert _rel(fit.f_pvalue, ref["f_p_value"]) < RTOL_R
    assert fit.n_dropped == ref["n_deleted"]
    assert fit.nobs == ref["nobs"]
    assert _rel(quantile7(fit.resid.to_numpy()), ref["residual_quantiles"]) < RTOL_R
    assert fit.aliased == []


def _split_call(text: str):
    """(call as one whitespace-normalised string, the remaining lines)."""
    lines = text.split("\n")
    start = lines.index("Call:") + 1
    stop = lines.index("", start)
    call = " ".join(" ".join(lines[start:stop]).split())
    return call, lines[:start] + lines[stop:]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_summary_prints_as_r(grit, fixtures_dir, name):
    expected = (fixtures_dir / "lm" / f"{name}_summary.txt").read_text(encoding="utf-8")
    fit = engine.ols(MODELS[name], grit, data_name="data2")
    text = str(fit.summary()) + "\n"          # print() adds the final newline
    call, rest = _split_call(text)
    call_r, rest_r = _split_call(expected)
    assert call == call_r
    assert rest == rest_r                      # every other line to the character
    assert text == expected                    # and the call wraps where R wraps it


@pytest.fixture(scope="module")
def more_reference(fixtures_dir):
    return json.loads((fixtures_dir / "lm" / "lm_more_reference.json").read_text())


def _more_data(grit, name):
    data2 = grit.assign(raven_twice=2.0 * grit["raven"])
    if name == "data2":
        return data2
    cc = data2[data2[["mathscore2", "raven", "grit"]].notna().all(axis=1)]
    if name == "small":  # first four complete rows of each arm, row names reset (lm_more_ref.R)
        parts = [cc[cc["grit"] == "control"].head(4), cc[cc["grit"] == "intervention"].head(4)]
        return pd.concat(parts).reset_index(drop=True)
    return cc.head(3).reset_index(drop=True)


def _as_list(value):
    return value if isinstance(value, list) else [value]


MORE_MODELS = ["model3", "model4", "model1_m3", "model2_m3", "model3_m3", "model4_m3",
               "interaction", "factor_by_factor", "no_marginal", "aliased", "long",
               "intercept_only", "small", "tiny"]


@pytest.mark.parametrize("name", MORE_MODELS)
def test_further_models_match_r(grit, more_reference, fixtures_dir, name):
    """The analysis' other models, the second outcome, interactions, I(), no intercept, an
    aliased column, small samples: numbers to 1e-10 and the printed summary to the character."""
    ref = more_reference[name]
    fit = engine.ols(ref["formula"], _more_data(grit, ref["data"]), data_name=ref["data"])
    assert list(fit.params.index) == _as_list(ref["terms"])
    assert fit.aliased == _as_list(ref["aliased"])
    assert fit.rank == ref["rank"] and fit.df_resid == ref["df_residual"]
    assert fit.nobs == ref["nobs"] and fit.n_dropped == ref["n_deleted"]

    def check(ours, theirs, floor):
        theirs = np.array([np.nan if v is None else v for v in _as_list(theirs)], dtype=float)
        ours = np.asarray(ours, dtype=float)
        assert np.array_equal(np.isnan(ours), np.isnan(theirs))
        ok = ~np.isnan(theirs)
        err = np.abs(ours[ok] - theirs[ok])
        floor = np.broadcast_to(np.asarray(floor, dtype=float), theirs.shape)[ok]
        assert np.all(err <= RTOL_R * np.maximum(np.abs(theirs[ok]), floor)), (ours, theirs)

    se = np.array([np.nan if v is None else v for v in _as_list(ref["std_error"])], dtype=float)
    check(fit.params, ref["estimate"], np.nan_to_num(se))   # an estimate near 0: relative to SE
    check(fit.bse, ref["std_error"], 0.0)
    check(fit.tvalues, ref["t_value"], 1.0)
    check(fit.pvalues, ref["p_value"], 0.0)
    check([fit.sigma, fit.rsquared, fit.rsquared_adj], [ref["sigma"], ref["r_squared"],
                                                        ref["adj_r_squared"]], 0.0)
    if ref["fstatistic"] is None:
        assert np.isnan(fit.fvalue)
    else:
        check([fit.fvalue, fit.f_pvalue], [ref["fstatistic"], ref["f_p_value"]], 0.0)
        assert fit.df_model == ref["f_df1"]
    check(quantile7(fit.resid.to_numpy()), ref["residual_quantiles"], 1.0)
    expected = (fixtures_dir / "lm" / f"more_{name}_summary.txt").read_text(encoding="utf-8")
    assert str(fit.summary()) + "\n" == expected


def test_results_are_labelled_by_the_data_index(grit):
    data = grit.set_index(grit.index + 1000)
    fit = engine.ols(MODELS["model2"], data)
    assert fit.resid.index.equals(fit.fitted.index)
    assert fit.resid.index.min() >= 1000
    assert len(fit.resid) == fit.nobs
    kept = data.loc[fit.resid.index]
    assert kept[["mathscore2", "mathscore1", "grit"]].notna().all().all()
    np.testing.assert_allclose(fit.fitted + fit.resid, kept["mathscore2"], rtol=1e-12)
    assert fit.call == "lm(formula = mathscore2 ~ mathscore1 + grit, data = data)"


def test_data_frame_is_not_modified(grit):
    data = grit.copy()
    engine.ols(MODELS["model1"], data)
    pd.testing.assert_frame_equal(data, grit)


# ---------------------------------------------------------------------------------------------
# the one-pass QR against LINPACK dqrdc2 applied to X itself (R's own computation)
# ---------------------------------------------------------------------------------------------


def _dqrdc2_direct(X, y, tol=1e-7):
    cols = np.ascontiguousarray(X.T)
    rhs = np.ascontiguousarray(y.reshape(1, -1))
    rank, pivot, _ = _dqrdc2(cols, rhs, tol)
    return rank, pivot, np.triu(cols.T[: X.shape[1]]), rhs[0, : X.shape[1]]


def _collinear_design(rng, n=300):
    a, b, c = rng.standard_normal((3, n))
    X = np.column_stack([np.ones(n), a, 2.0 * a - 3.0, b, a + b, c, np.zeros(n), c * 1e3])
    return X


def test_pivoting_matches_dqrdc2_on_x():
    rng = np.random.default_rng(11)
    X = _collinear_design(rng)
    y = X[:, 1] - X[:, 3] + rng.standard_normal(X.shape[0])
    qr = pivoted_qr(X, y, block_rows=64, chunk_rows=128)
    rank, pivot, r, qty = _dqrdc2_direct(X, y)
    # columns 2 = 2a - 3 (intercept, a), 4 = a + b, 6 = 0, 7 = 1000 c are aliased, moved last
    assert qr.rank == rank == 4
    assert list(qr.pivot) == list(pivot) == [0, 1, 3, 5, 2, 4, 6, 7]
    k = qr.rank
    signs = np.sign(np.diag(qr.r)[:k]) * np.sign(np.diag(r)[:k])
    np.testing.assert_allclose(qr.r[:k, :] * signs[:, None], r[:k, :], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(qr.qty[:k, 0] * signs, qty[:k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m, rows", [(51, 256), (7, 100), (9, 3), (4, 10), (5, 1), (6, 0)])
def test_panel_kernel_matches_one_reflector_at_a_time(m, rows):
    """The compact-WY kernel (four reflectors per pass) against the plain Householder loop, and
    both against LAPACK's R of the stacked matrix (up to row signs)."""
    from engine.ols import _stack_householder, _stack_householder_panel4

    rng = np.random.default_rng(m * 100 + rows)
    tri0 = np.triu(rng.standard_normal((m, m)))
    block = rng.standard_normal((m, rows + 8))
    t1, b1 = tri0.copy(), block.copy()
    _stack_householder(t1, b1, rows)
    t2, b2 = tri0.copy(), block.copy()
    _stack_householder_panel4(t2, b2, rows)
    np.testing.assert_allclose(t2, t1, atol=1e-13)
    r = np.linalg.qr(np.vstack([tri0, block[:, :rows].T]), mode="r")
    signs = np.sign(np.diag(r)) * np.sign(np.diag(t2))
    np.testing.assert_allclose(t2 * signs[:, None], r, atol=1e-13)


def test_r_tolerance_rule_decides_aliasing():
    """A column is aliased when its norm after projecting out the earlier columns is below
    1e-7 of its original norm (dqrdc2), whatever its scale; the others keep their order."""
    rng = np.random.default_rng(5)
    n = 500
    x1, x2, noise = rng.standard_normal((3, n))
    noise -= np.polyfit(x1, noise, 1)[0] * x1  # keep the perturbation roughly orthogonal
    for eps, aliased in [(1e-9, True), (1e-8, True), (1e-6, False), (1e-5, False)]:
        for scale in (1e-6, 1.0, 1e6):
            x3 = scale * (x1 + eps * noise / np.linalg.norm(noise) * np.linalg.norm(x1))
            X = np.column_stack([np.ones(n), x1, x3, x2])
            qr = pivoted_qr(X, None)
            rank, pivot, _, _ = _dqrdc2_direct(X, np.zeros(n))
            assert (qr.rank, list(qr.pivot)) == (rank, list(pivot))
            if aliased:
                assert qr.rank == 3 and list(qr.pivot) == [0, 1, 3, 2]
            else:
                assert qr.rank == 4 and list(qr.pivot) == [0, 1, 2, 3]


def test_qr_invariants_q_orthonormal_and_qr_equals_xp():
    """Q is reconstructed with the same code path: Q'I_n is carried as right-hand sides."""
    rng = np.random.default_rng(3)
    n = 40
    X = _collinear_design(rng, n)
    qr = pivoted_qr(X, np.eye(n), block_rows=7, chunk_rows=16)
    k = qr.rank
    Q = qr.qty[:k, :].T                   # (n, k): Q'I = Q'
    np.testing.assert_allclose(Q.T @ Q, np.eye(k), atol=1e-12)
    XP = X[:, qr.pivot]
    np.testing.assert_allclose(Q @ qr.r[:k, :], XP, atol=1e-10 * np.abs(X).max())
    # full-rank design: Q spans X exactly and QR = X (no pivoting)
    X2 = rng.standard_normal((n, 6))
    qr2 = pivoted_qr(X2, np.eye(n), block_rows=5)
    Q2 = qr2.qty[:6, :].T
    assert qr2.rank == 6 and list(qr2.pivot) == list(range(6))
    np.testing.assert_allclose(Q2.T @ Q2, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(Q2 @ qr2.r, X2, atol=1e-12)


def test_blocking_and_threads_do_not_change_the_fit():
    rng = np.random.default_rng(8)
    n, p = 5000, 9
    X = rng.standard_normal((n, p)) * 10.0 ** rng.uniform(-2, 2, p)
    y = X @ rng.standard_normal(p) + rng.standard_normal(n)
    base = least_squares(X, y, block_rows=5000, chunk_rows=10_000, parallel=False)
    for block_rows, chunk_rows, parallel in [(1, 3000, True), (64, 700, True), (333, 1000, False)]:
        fit = least_squares(X, y, block_rows=block_rows, chunk_rows=chunk_rows, parallel=parallel)
        np.testing.assert_allclose(fit.coef, base.coef, rtol=1e-11)
        np.testing.assert_allclose(fit.std_error, base.std_error, rtol=1e-11)
    # threads: bit-for-bit the same on repeated runs and as the serial run of the same chunks
    a = least_squares(X, y, block_rows=128, chunk_rows=1000, parallel=True)
    b = least_squares(X, y, block_rows=128, chunk_rows=1000, parallel=True)
    c = least_squares(X, y, block_rows=128, chunk_rows=1000, parallel=False)
    assert np.array_equal(a.coef, b.coef) and np.array_equal(a.qr.r, b.qr.r)
    assert np.array_equal(a.coef, c.coef) and np.array_equal(a.std_error, c.std_error)


def test_exactly_collinear_column_is_na_and_the_fit_goes_on(grit):
    data = grit.assign(double_raven=2.0 * grit["raven"])
    fit = engine.ols("mathscore2 ~ raven + double_raven + grit", data)
    ref = engine.ols("mathscore2 ~ raven + grit", data)
    assert fit.aliased == ["double_raven"]
    assert np.isnan(fit.params["double_raven"]) and np.isnan(fit.bse["double_raven"])
    assert np.isnan(fit.vcov.loc["double_raven"]).all()
    for name in ["(Intercept)", "raven", "gritintervention"]:
        assert fit.params[name] == pytest.approx(ref.params[name], rel=1e-10)
        assert fit.bse[name] == pytest.approx(ref.bse[name], rel=1e-10)
    assert fit.df_resid == ref.df_resid and fit.fvalue == pytest.approx(ref.fvalue, rel=1e-10)
    text = str(fit.summary())
    assert "Coefficients: (1 not defined because of singularities)" in text
    row = [line for line in text.split("\n") if line.startswith("double_raven")][0]
    assert row.split() == ["double_raven", "NA", "NA", "NA", "NA"]


# ---------------------------------------------------------------------------------------------
# property tests against statsmodels
# ---------------------------------------------------------------------------------------------


@st.composite
def designs(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_num = draw(st.integers(1, 5))
    n_levels = draw(st.sampled_from([0, 2, 3, 5]))
    n_collinear = draw(st.integers(0, 2))
    intercept = draw(st.booleans())
    n = draw(st.integers(12, 150))
    cols = [rng.standard_normal(n) * 10.0 ** rng.uniform(-2, 2) + rng.uniform(-5, 5)
            for _ in range(n_num)]
    if n_levels:
        codes = np.concatenate([np.arange(n_levels), rng.integers(0, n_levels, n - n_levels)])
        rng.shuffle(codes)
        first = 0 if intercept else -1  # treatment coding against level 0 (all levels w/o intercept)
        cols += [(codes == lev).astype(float) for lev in range(n_levels) if lev > first]
    if intercept:
        cols.insert(0, np.ones(n))
    X = np.column_stack(cols)
    for _ in range(n_collinear):  # an exact linear combination of existing columns
        w = rng.integers(-3, 4, X.shape[1]).astype(float)
        position = int(rng.integers(0, X.shape[1] + 1))
        X = np.insert(X, position, X @ w, axis=1)
    if X.shape[1] >= n:
        X = X[:, : n - 2]
    y = X @ rng.standard_normal(X.shape[1]) + rng.standard_normal(n) * 10.0 ** rng.uniform(-1, 1)
    return X, y, intercept


def _close(a, b, rtol):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    scale = np.max(np.abs(b)) if b.size else 0.0
    assert np.all(np.abs(a - b) <= rtol * np.maximum(np.abs(b), 1e-3 * scale)), (a, b)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(designs())
def test_against_statsmodels(design):
    sm = pytest.importorskip("statsmodels.api")
    X, y, intercept = design
    fit = least_squares(X, y, has_intercept=intercept, block_rows=16, chunk_rows=64)
    kept = ~fit.aliased
    assert fit.rank == np.linalg.matrix_rank(X)
    assert np.linalg.matrix_rank(X[:, kept]) == kept.sum() == fit.rank
    ref = sm.OLS(y, X[:, kept], hasconst=intercept).fit()
    _close(fit.coef[kept], ref.params, 1e-8)
    _close(fit.std_error[kept], ref.bse, 1e-8)
    _close(fit.resid, ref.resid, 1e-6)
    assert fit.df_resid == ref.df_resid
    if fit.rank > (1 if intercept else 0):
        _close(fit.r_squared, ref.rsquared, 1e-8)
        _close(fit.adj_r_squared, ref.rsquared_adj, 1e-8)
        _close(fit.fvalue, ref.fvalue, 1e-8)
        _close(fit.f_pvalue, ref.f_pvalue, 1e-6)
    _close(fit.vcov[np.ix_(kept, kept)], ref.cov_params(), 1e-8)


def test_no_intercept_uses_uncentred_r2_and_f(grit):
    sm = pytest.importorskip("statsmodels.api")
    data = grit.assign(shifted=grit["mathscore2"] + 5.0)  # far from zero mean
    fit = engine.ols("shifted ~ mathscore1 + grit - 1", data)
    assert list(fit.params.index) == ["mathscore1", "gritcontrol", "gritintervention"]
    mf = fit.model_frame
    ref = sm.OLS(mf.y, mf.X, hasconst=False).fit()
    np.testing.assert_allclose(fit.params, ref.params, rtol=1e-10)
    assert fit.rsquared == pytest.approx(ref.rsquared, rel=1e-10)  # 1 - RSS / sum(y^2)
    assert fit.fvalue == pytest.approx(ref.fvalue, rel=1e-10)
    assert fit.df_model == 3
    centred = 1 - fit.ssr / np.sum((mf.y - mf.y.mean()) ** 2)
    assert fit.rsquared > centred + 0.5


def test_conf_int_and_vcov_match_statsmodels(grit):
    sm = pytest.importorskip("statsmodels.api")
    fit = engine.ols(MODELS["model1"], grit)
    ref = sm.OLS(fit.model_frame.y, fit.model_frame.X).fit()
    np.testing.assert_allclose(fit.vcov.to_numpy(), ref.cov_params(), rtol=1e-10)
    for level in (0.9, 0.95, 0.99):
        ci = fit.conf_int(level)
        np.testing.assert_allclose(ci.to_numpy(), ref.conf_int(alpha=1 - level), rtol=1e-10)
    assert list(fit.conf_int().columns) == ["2.5 %", "97.5 %"]
    assert list(fit.conf_int(0.9).columns) == ["5 %", "95 %"]
    assert list(fit.conf_int(0.999).columns) == ["0.05 %", "99.95 %"]  # R's confint labels


# ---------------------------------------------------------------------------------------------
# small samples, printing corner cases, errors
# ---------------------------------------------------------------------------------------------


def test_few_residual_df_prints_every_residual():
    data = pd.DataFrame({"y": [1.0, 3.0, 2.0, 5.0, 4.0, 6.5], "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    fit = engine.ols("y ~ x", data)
    lines = str(fit.summary()).split("\n")
    at = lines.index("Residuals:")
    assert lines[at + 1].split() == ["1", "2", "3", "4", "5", "6"]  # R's row names 1..n
    values = [float(v) for v in lines[at + 2].split()]
    np.testing.assert_allclose(values, fit.resid, atol=5e-5)
    assert fit.df_resid == 4


def test_intercept_only_model_prints_no_r2_line(grit):
    fit = engine.ols("mathscore2 ~ 1", grit)
    text = str(fit.summary())
    assert "Multiple R-squared" not in text and "F-statistic" not in text
    assert fit.params["(Intercept)"] == pytest.approx(grit["mathscore2"].mean(), rel=1e-12)
    assert fit.rsquared == 0.0 and np.isnan(fit.fvalue)


def test_print_lm_layout(grit):
    text = repr(engine.ols(MODELS["model2"], grit, data_name="data2"))
    lines = text.split("\n")
    assert lines[:4] == ["", "Call:", "lm(formula = mathscore2 ~ mathscore1 + grit, data = data2)", ""]
    assert lines[4] == "Coefficients:"
    assert lines[5].split() == ["(Intercept)", "mathscore1", "gritintervention"]
    assert lines[6].split() == ["-0.05896", "0.46595", "0.17631"]


def test_errors_name_the_culprit(grit):
    small = pd.DataFrame({"y": [1.0, 2.0], "a": [1.0, 2.0], "b": [3.0, 1.0]})
    with pytest.raises(ModelSpecError, match=r"fewer rows \(2\) than model coefficients \(3\)"):
        engine.ols("y ~ a + b", small)
    with pytest.raises(EngineInputError, match="nosuchcolumn"):
        engine.ols("mathscore2 ~ nosuchcolumn", grit)
    with pytest.raises(FormulaError):
        engine.ols("mathscore2 ~ raven + (1 | schoolid)", grit)
    bad = grit.assign(raven=grit["raven"].replace(grit["raven"].dropna().iloc[0], np.inf))
    with pytest.raises(DataError, match="raven"):
        engine.ols("mathscore2 ~ raven", bad)
    with pytest.raises(ModelSpecError, match="n >= p"):
        least_squares(np.ones((2, 3)), np.ones(2))
    with pytest.raises(DataError, match="non-finite"):
        least_squares(np.array([[1.0, np.nan], [1.0, 2.0], [1.0, 3.0]]), np.ones(3))


# ---------------------------------------------------------------------------------------------
# printing corner cases against R (tests/fixtures/lm/lm_edge_ref.R)
# ---------------------------------------------------------------------------------------------


def _edge_data():
    i = np.arange(1, 31, dtype=float)
    j = np.arange(1, 21, dtype=float)
    many = pd.DataFrame({"y": np.sin(j) + j / 10})
    for k in range(1, 16):
        many[f"x{k}"] = np.sin(k * j + k)
    long_a = "a_rather_long_predictor_name_for_column_blocks"
    long_b = "another_quite_long_predictor_name_here"
    return {
        "scales": pd.DataFrame({"y": 1e6 * np.sin(i) + 3e9 * i / 1e4, "x": i / 1e4,
                                "z": np.cos(i)}),
        "long_names": pd.DataFrame({"y": np.sin(i) + np.cos(2 * i) / 2, long_a: np.cos(i),
                                    long_b: np.sin(3 * i)}),
        "many": many,
        "nostars": pd.DataFrame({"y": np.sin(i), "x": np.cos(7 * i)}),
        "fac": pd.DataFrame({"y": np.sin(i) + np.tile([0.0, 1.0, 3.0], 10),
                             "f": np.tile(["b", "a", "c"], 10), "x": np.cos(i)}),
        "perfect": pd.DataFrame({"y": [1.0, 2.0, 4.0], "x": [1.0, 2.0, 3.0],
                                 "z": [0.0, 1.0, 5.0]}),
        "alias": pd.DataFrame({"y": [1.0, 2.0, 4.0, 3.0], "x": [1.0, 2.0, 3.0, 4.0]}),
    }


EDGE_CASES = {
    "scales": ("y ~ x + z", "scales"),                       # scientific notation in the table
    "long_names": ("y ~ a_rather_long_predictor_name_for_column_blocks"
                   " + another_quite_long_predictor_name_here", "long_names"),  # column blocks
    "many_residuals": ("y ~ .", "many"),                     # rdf 4: 20 residuals, wrapped
    "no_stars": ("y ~ x", "nostars"),                        # no p < 0.1: no stars, no legend
    "factor_no_intercept": ("y ~ 0 + f + x", "fac"),         # all levels, string sorted
    "factor_sorted": ("y ~ f * x", "fac"),
    "perfect": ("y ~ x + z", "perfect"),                     # no residual df: NaN, not NA
    "alias_small": ("y ~ x + I(2 * x)", "alias"),           # NA row, print.lm with NA
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_printing_corner_cases_match_r(fixtures_dir, name):
    formula, data_name = EDGE_CASES[name]
    fit = engine.ols(formula, _edge_data()[data_name], data_name=data_name)
    summary = (fixtures_dir / "lm" / f"edge_{name}_summary.txt").read_text(encoding="utf-8")
    printed = (fixtures_dir / "lm" / f"edge_{name}_print.txt").read_text(encoding="utf-8")
    assert str(fit.summary()) + "\n" == summary
    assert repr(fit) + "\n" == printed


def test_rank_decisions_match_r_on_nearly_collinear_designs(fixtures_dir):
    """R's lm.fit on designs with a column collinear up to a relative perturbation eps
    (0 ... 1e-3): the same rank, pivot and NA pattern; coefficients and standard errors agree to
    the accuracy the conditioning allows (1e-13 x cond)."""
    cases = json.loads((fixtures_dir / "lm" / "alias_reference.json").read_text())
    for case in cases:
        cs, n, p = case["case"], case["n"], case["p"]
        i = np.arange(1, n + 1, dtype=float)
        X = np.column_stack([np.ones(n)] + [np.sin(0.7 * k * i + cs) for k in range(1, p + 1)])
        xw = X @ np.asarray(case["w"], dtype=float)
        wave = np.cos(3 * i + cs)
        extra = xw + case["eps"] * np.sqrt(np.sum(xw ** 2)) * wave / np.sqrt(np.sum(wave ** 2))
        X = np.insert(X, case["pos"] - 1, extra, axis=1)
        y = np.sin(1.3 * i) + np.cos(cs * i)
        fit = least_squares(X, y)
        assert fit.rank == case["rank"], case
        assert list(fit.pivot + 1) == case["pivot"], case
        coef = np.array([np.nan if v is None else v for v in case["coef"]])
        se = np.array([np.nan if v is None else v for v in case["se"]])
        assert np.array_equal(np.isnan(fit.coef), np.isnan(coef)), case
        kept = ~np.isnan(coef)
        tol = 1e-13 * np.linalg.cond(X[:, kept])
        assert np.all(np.abs(fit.coef[kept] - coef[kept]) <= tol * np.abs(coef[kept])), case
        assert np.all(np.abs(fit.std_error[kept] - se[kept]) <= tol * se[kept]), case


def test_column_max_abs_matches_numpy_reductions():
    """The one-pass column magnitudes behind the extreme-column scaling equal numpy's
    max(max, -min) per column, NaN (any NaN in the column), +-Inf, -0.0 and 1e+-300 included."""
    from engine.ols import _column_max_abs

    rng = np.random.default_rng(11)
    for _ in range(50):
        n, p = int(rng.integers(1, 30)), int(rng.integers(1, 6))
        a = rng.standard_normal((n, p)) * 10.0 ** rng.integers(-300, 300, p)
        u = rng.random((n, p))
        a[u < 0.05] = np.nan
        a[(u > 0.05) & (u < 0.1)] = np.inf
        a[(u > 0.1) & (u < 0.15)] = -np.inf
        a[(u > 0.15) & (u < 0.2)] = -0.0
        with np.errstate(invalid="ignore"):
            expected = np.maximum(np.max(a, axis=0), -np.min(a, axis=0))
        np.testing.assert_array_equal(_column_max_abs(a), expected)


def test_any_extreme_matches_column_scales():
    """The one-call extreme-column check says "scale" exactly when ``_column_scales`` would scale a
    column of X or of Y (NaN, +-Inf, zero columns and magnitudes near 2^+-200 included)."""
    from engine.ols import _any_extreme, _column_scales

    rng = np.random.default_rng(12)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        arrays = []
        for k in (int(rng.integers(0, 5)), int(rng.integers(0, 3))):
            a = rng.standard_normal((n, k)) * 2.0 ** rng.choice([-250, -201, -199, 0, 199, 201, 250], k)
            u = rng.random((n, k))
            a[u < 0.05] = np.nan
            a[(u > 0.05) & (u < 0.1)] = np.inf
            a[(u > 0.1) & (u < 0.2)] = 0.0
            arrays.append(np.ascontiguousarray(a))
        X, Y = arrays
        expected = _column_scales(X) is not None or _column_scales(Y) is not None
        assert _any_extreme(X, Y) == expected


def test_pairwise_sum_has_numpy_bits():
    """The kernel's sums of squares (the residual part of Q'Y) add in numpy's pairwise order, so
    they equal ``np.sum`` bit for bit: short, blocked and split lengths, at an offset too."""
    from engine.ols import _pairwise_sum

    rng = np.random.default_rng(13)
    for n in list(range(0, 300)) + [1000, 4097, 65537]:
        a = rng.standard_normal(n + 7) * 10.0 ** rng.uniform(-8, 8, n + 7)
        assert _pairwise_sum(a, 0, n) == np.sum(a[:n])
        assert _pairwise_sum(a, 5, n + 5) == np.sum(a[5:n + 5])
