"""Tests of engine.formula: R's terms / model.frame / model.matrix semantics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine import datasets
from engine.errors import ColumnNotFoundError, DataError, FormulaError, ModelSpecError
from engine.formula import model_frame, parse_formula

MODEL1 = "mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit"


@pytest.fixture(scope="module")
def grit():
    return datasets.load_grit()


def test_model1_columns_rows_and_values(grit):
    mf = model_frame(MODEL1, grit)
    assert mf.column_names == ["(Intercept)", "male1", "raven", "csize", "belief_survey1",
                               "mathscore1", "gritintervention"]
    assert mf.term_labels == ["male", "raven", "csize", "belief_survey1", "mathscore1", "grit"]
    assert mf.assign.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert mf.has_intercept and mf.response_name == "mathscore2"
    assert mf.X.shape == (1180, 7) and mf.n_dropped == 319
    assert mf.X.flags.c_contiguous and mf.X.dtype == np.float64
    used = ["mathscore2", "male", "raven", "csize", "belief_survey1", "mathscore1", "grit"]
    complete = grit[used].notna().all(axis=1).to_numpy()
    np.testing.assert_array_equal(mf.rows, np.flatnonzero(complete))
    kept = grit.iloc[mf.rows]
    np.testing.assert_array_equal(mf.y, kept["mathscore2"].to_numpy(float))
    np.testing.assert_array_equal(mf.X[:, 1], (kept["male"] == "1").to_numpy(float))
    np.testing.assert_array_equal(mf.X[:, 2], kept["raven"].to_numpy(float))
    np.testing.assert_array_equal(mf.X[:, 6], (kept["grit"] == "intervention").to_numpy(float))
    assert mf.groups == []


def test_bars_nested_grouping(grit):
    mf = model_frame("raven ~ male + (1 | schoolid/classid)", grit, allow_random=True)
    assert [g.name for g in mf.groups] == ["schoolid", "schoolid:classid"]
    school, klass = mf.groups
    kept = grit.iloc[mf.rows]
    assert school.n_levels == len(school.levels) == kept["schoolid"].nunique()
    assert klass.n_levels == kept["classid"].nunique()
    np.testing.assert_array_equal(np.asarray(school.levels)[school.codes],
                                  kept["schoolid"].astype(str).to_numpy())
    expected = (kept["schoolid"].astype(str) + "_" + kept["classid"].astype(str)).to_numpy()
    np.testing.assert_array_equal(np.asarray(klass.levels)[klass.codes], expected)
    assert klass.codes.dtype == np.int64 and school.codes.dtype == np.int64


def test_bars_rejected_without_allow_random(grit):
    with pytest.raises(FormulaError, match="random-effect"):
        model_frame("mathscore2 ~ male + (1 | schoolid)", grit)


def test_bars_level_counts_on_full_data(grit):
    mf = model_frame("csize ~ male + (1 | schoolid/classid)", grit, allow_random=True)
    assert mf.n_dropped == 0
    assert [g.n_levels for g in mf.groups] == [16, 42]


# ---------------------------------------------------------------------------------------------
# R's names, term order and coding rule, derived by hand from R's terms.formula / model.matrix
# (src/library/stats/src/model.c: TermCode and the no-intercept adjustment).
# ---------------------------------------------------------------------------------------------

R_CASES = [
    # (formula, term labels, column names)
    ("mathscore2 ~ male - 1", ["male"], ["male0", "male1"]),
    ("mathscore2 ~ 0 + male + grit", ["male", "grit"], ["male0", "male1", "gritintervention"]),
    ("mathscore2 ~ raven + 0 + male", ["raven", "male"], ["raven", "male0", "male1"]),
    ("mathscore2 ~ -1 + wealth", ["wealth"], ["wealth1", "wealth2", "wealth3", "wealth4", "wealth5"]),
    ("mathscore2 ~ male + 1", ["male"], ["(Intercept)", "male1"]),
    ("mathscore2 ~ raven + raven:grit", ["raven", "raven:grit"],
     ["(Intercept)", "raven", "raven:gritintervention"]),
    ("mathscore2 ~ raven:grit", ["raven:grit"],
     ["(Intercept)", "raven:gritcontrol", "raven:gritintervention"]),
    ("mathscore2 ~ grit/raven", ["grit", "grit:raven"],
     ["(Intercept)", "gritintervention", "gritcontrol:raven", "gritintervention:raven"]),
    ("mathscore2 ~ grit:male", ["grit:male"],
     ["(Intercept)", "gritcontrol:male0", "gritintervention:male0", "gritcontrol:male1",
      "gritintervention:male1"]),
    ("mathscore2 ~ grit*male", ["grit", "male", "grit:male"],
     ["(Intercept)", "gritintervention", "male1", "gritintervention:male1"]),
    ("mathscore2 ~ male + grit:male", ["male", "male:grit"],
     ["(Intercept)", "male1", "male0:gritintervention", "male1:gritintervention"]),
    ("mathscore2 ~ grit*male - grit", ["male", "grit:male"],
     ["(Intercept)", "male1", "gritintervention:male0", "gritintervention:male1"]),
    ("mathscore2 ~ raven*csize", ["raven", "csize", "raven:csize"],
     ["(Intercept)", "raven", "csize", "raven:csize"]),
    ("mathscore2 ~ raven*grit", ["raven", "grit", "raven:grit"],
     ["(Intercept)", "raven", "gritintervention", "raven:gritintervention"]),
    ("mathscore2 ~ csize + I(csize^2) + I(raven*2) + I(raven/2) + I((raven - 1)^2)",
     ["csize", "I(csize^2)", "I(raven * 2)", "I(raven/2)", "I((raven - 1)^2)"],
     ["(Intercept)", "csize", "I(csize^2)", "I(raven * 2)", "I(raven/2)", "I((raven - 1)^2)"]),
    ("mathscore2 ~ grit*male*wealth",
     ["grit", "male", "wealth", "grit:male", "grit:wealth", "male:wealth", "grit:male:wealth"],
     ["(Intercept)", "gritintervention", "male1", "wealth2", "wealth3", "wealth4", "wealth5",
      "gritintervention:male1",
      "gritintervention:wealth2", "gritintervention:wealth3", "gritintervention:wealth4",
      "gritintervention:wealth5",
      "male1:wealth2", "male1:wealth3", "male1:wealth4", "male1:wealth5",
      "gritintervention:male1:wealth2", "gritintervention:male1:wealth3",
      "gritintervention:male1:wealth4", "gritintervention:male1:wealth5"]),
    ("mathscore2 ~ (raven + csize + grit)^2 - raven:csize",
     ["raven", "csize", "grit", "raven:grit", "csize:grit"],
     ["(Intercept)", "raven", "csize", "gritintervention", "raven:gritintervention",
      "csize:gritintervention"]),
    ("mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit + grit_survey1 "
     "+ age + wealth - 1",
     ["male", "raven", "csize", "belief_survey1", "mathscore1", "grit", "grit_survey1", "age",
      "wealth"],
     ["male0", "male1", "raven", "csize", "belief_survey1", "mathscore1", "gritintervention",
      "grit_survey1", "age", "wealth2", "wealth3", "wealth4", "wealth5"]),
    ("mathscore2 ~ raven %in% grit", ["raven:grit"],
     ["(Intercept)", "raven:gritcontrol", "raven:gritintervention"]),
]


@pytest.mark.parametrize("formula, labels, names", R_CASES, ids=[c[0] for c in R_CASES])
def test_r_term_labels_and_column_names(grit, formula, labels, names):
    mf = model_frame(formula, grit)
    assert mf.term_labels == labels
    assert mf.column_names == names
    assert mf.X.shape == (mf.y.shape[0], len(names))
    # assign: 0 for the intercept, then the term each column belongs to (the label whose
    # variables are the longest prefixes of the column's pieces)
    expected_assign = [0] if mf.has_intercept else []
    for name in names[len(expected_assign):]:
        pieces = name.split(":")
        scores = [sum(map(len, label.split(":")))
                  if len(label.split(":")) == len(pieces)
                  and all(p.startswith(v) for p, v in zip(pieces, label.split(":"))) else -1
                  for label in labels]
        expected_assign.append(1 + int(np.argmax(scores)))
    assert mf.assign.tolist() == expected_assign


def test_interaction_values_first_factor_fastest(grit):
    mf = model_frame("mathscore2 ~ grit:male + raven:wealth", grit)
    kept = grit.iloc[mf.rows]
    g = (kept["grit"] == "intervention").to_numpy(float)
    m = (kept["male"] == "1").to_numpy(float)
    col = {name: mf.X[:, j] for j, name in enumerate(mf.column_names)}
    np.testing.assert_array_equal(col["gritcontrol:male0"], (1 - g) * (1 - m))
    np.testing.assert_array_equal(col["gritintervention:male1"], g * m)
    raven = kept["raven"].to_numpy(float)
    for level in ["1", "2", "3", "4", "5"]:
        np.testing.assert_array_equal(col[f"raven:wealth{level}"],
                                      raven * (kept["wealth"] == level).to_numpy(float))


def test_i_expressions_evaluated(grit):
    mf = model_frame("mathscore2 ~ I(csize^2) + I(-raven + 2*csize) + I(2^-1*raven) + "
                     "I(log(csize) - sqrt(csize)/3)", grit)
    kept = grit.iloc[mf.rows]
    csize, raven = kept["csize"].to_numpy(float), kept["raven"].to_numpy(float)
    assert mf.column_names[1:] == ["I(csize^2)", "I(-raven + 2 * csize)", "I(2^-1 * raven)",
                                   "I(log(csize) - sqrt(csize)/3)"]
    np.testing.assert_allclose(mf.X[:, 1], csize ** 2, rtol=1e-15)
    np.testing.assert_allclose(mf.X[:, 2], -raven + 2 * csize, rtol=1e-15)
    np.testing.assert_allclose(mf.X[:, 3], 0.5 * raven, rtol=1e-15)
    np.testing.assert_allclose(mf.X[:, 4], np.log(csize) - np.sqrt(csize) / 3, rtol=1e-15)


@pytest.mark.parametrize("text, name", [
    ("I(x * 1e6)", "I(x * 1e+06)"), ("I(x + 100000)", "I(x + 1e+05)"), ("I(x + 10000)", "I(x + 10000)"),
    ("I(x/0.5)", "I(x/0.5)"), ("I(x*0.001)", "I(x * 0.001)"), ("I(x - 2.50)", "I(x - 2.5)"),
    ("I(x^2L)", "I(x^2L)"), ("I((x))", "I((x))"), ("log(x)", "log(x)"), ("`x`", "x"),
])
def test_deparse_names_as_r(text, name):
    frame = pd.DataFrame({"y": [1.0, 2.0, 3.0], "x": [1.0, 2.0, 4.0]})
    mf = model_frame(f"y ~ {text}", frame)
    assert mf.column_names == ["(Intercept)", name]


def test_response_expression_and_backquoted_names():
    frame = pd.DataFrame({"my y": [1.0, 2.0, 3.0, 5.0], "a b": [1.0, 0.0, 4.0, 2.0]})
    mf = model_frame("log(`my y`) ~ `a b`", frame)
    assert mf.response_name == "log(`my y`)"
    assert mf.column_names == ["(Intercept)", "`a b`"]
    np.testing.assert_allclose(mf.y, np.log([1.0, 2.0, 3.0, 5.0]))


def test_string_and_bool_factors_r_levels():
    frame = pd.DataFrame({
        "y": np.arange(8.0),
        "s": ["b", "B", "a", "A", "b", "a", "c", "B"],
        "flag": [True, False, True, True, False, False, True, True],
        "obj": pd.Series(["z", "y", "z", "y", "z", "y", "z", "y"], dtype=object),
    })
    mf = model_frame("y ~ s + flag + obj", frame)
    # R sorts strings in an English locale: a < A < b < B < c
    assert mf.column_names == ["(Intercept)", "sA", "sb", "sB", "sc", "flagTRUE", "objz"]
    assert mf.factors["s"].levels == ["a", "A", "b", "B", "c"]
    np.testing.assert_array_equal(mf.X[:, 5], frame["flag"].to_numpy(float))
    mf = model_frame("y ~ flag - 1", frame)
    assert mf.column_names == ["flagFALSE", "flagTRUE"]


def test_r_string_collation():
    from engine.rcompat.collate import r_sort_key as _r_sort_key
    assert sorted(["10_24", "1_2", "1_10", "B", "b", "a_b", "ab", "a1", "A"], key=_r_sort_key) == [
        "1_10", "1_2", "10_24", "A", "a_b", "a1", "ab", "b", "B"]


def test_categorical_order_kept_and_unused_levels_dropped():
    frame = pd.DataFrame({
        "y": [1.0, 2.0, 3.0, 4.0, np.nan],
        "f": pd.Categorical(["lo", "hi", "mid", "hi", "none"], categories=["none", "lo", "mid", "hi"]),
    })
    mf = model_frame("y ~ f", frame)
    assert mf.column_names == ["(Intercept)", "fmid", "fhi"]  # "none" only in the dropped row
    assert mf.factors["f"].levels == ["lo", "mid", "hi"]
    assert mf.n_dropped == 1 and mf.rows.tolist() == [0, 1, 2, 3]


def test_ordered_factor_polynomial_contrasts():
    # R: contr.poly(4) -> .L, .Q, .C; values from R's contr.poly(4)
    frame = pd.DataFrame({"y": np.arange(8.0),
                          "o": pd.Categorical(list("abcdabcd"), categories=list("abcd"), ordered=True)})
    mf = model_frame("y ~ o", frame)
    assert mf.column_names == ["(Intercept)", "o.L", "o.Q", "o.C"]
    linear = np.array([-3, -1, 1, 3]) / np.sqrt(20)
    quadratic = np.array([1, -1, -1, 1]) / 2.0
    cubic = np.array([-1, 3, -3, 1]) / np.sqrt(20)
    np.testing.assert_allclose(mf.X[:4, 1:], np.column_stack([linear, quadratic, cubic]), atol=1e-15)
    frame5 = pd.DataFrame({"y": np.arange(5.0),
                           "o": pd.Categorical(list("abcde"), categories=list("abcde"), ordered=True)})
    mf = model_frame("y ~ o", frame5)
    assert mf.column_names == ["(Intercept)", "o.L", "o.Q", "o.C", "o^4"]
    np.testing.assert_allclose(mf.X[:, 4], np.array([1, -4, 6, -4, 1]) / np.sqrt(70), atol=1e-15)


def test_factor_inside_i_rejected_logical_allowed(grit):
    with pytest.raises(DataError, match="'wealth' in 'I\\(wealth\\^2\\)' is a factor"):
        model_frame("mathscore2 ~ I(wealth^2)", grit)
    frame = pd.DataFrame({"y": [1.0, 2.0, 3.0], "flag": [True, False, True]})
    np.testing.assert_array_equal(model_frame("y ~ I(flag*2)", frame).X[:, 1], [2.0, 0.0, 2.0])


def test_logical_response_is_zero_one():
    frame = pd.DataFrame({"ok": [True, False, True, True], "x": [1.0, 2.0, 3.0, 4.0]})
    np.testing.assert_array_equal(model_frame("ok ~ x", frame).y, [1.0, 0.0, 1.0, 1.0])


def test_dot_expands_to_other_columns():
    frame = pd.DataFrame({"y": [1.0, 2, 3, 4], "a": [1.0, 0, 2, 5], "g": ["u", "v", "u", "v"]})
    mf = model_frame("y ~ .", frame)
    assert mf.term_labels == ["a", "g"] and mf.column_names == ["(Intercept)", "a", "gv"]
    mf = model_frame("y ~ . - a", frame)
    assert mf.term_labels == ["g"]


def test_fixed_formula_text_and_random_terms():
    parsed = parse_formula("mathscore2 ~ male + raven + (1 | schoolid) + grit + (1|schoolid/classid)")
    assert parsed.fixed_text == "mathscore2 ~ male + raven + grit"
    assert [r.text for r in parsed.random_terms] == ["(1 | schoolid)", "(1|schoolid/classid)"]
    assert parsed.random_terms[1].groups == ("schoolid", "schoolid:classid")
    assert parse_formula("y ~ (1 | g)").fixed_text == "y ~ 1"
    assert parse_formula("y ~ x - 1 + (1 | g)").fixed_text == "y ~ x - 1"


def test_listwise_deletion_counts_grouping_and_i_columns():
    frame = pd.DataFrame({
        "y": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0],
        "x": [1.0, 2.0, 3.0, np.nan, 5.0, 6.0, 7.0],
        "z": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan],
        "g": pd.Categorical(["a", "a", "b", "b", None, "c", "c"]),
    })
    mf = model_frame("y ~ I(x^2) + (1 | g)", frame, allow_random=True)
    assert mf.rows.tolist() == [0, 1, 5, 6] and mf.n_dropped == 3
    assert mf.groups[0].levels == ["a", "c"] and mf.groups[0].codes.tolist() == [0, 0, 1, 1]
    mf = model_frame("y ~ z - z + x", frame)  # as R: every variable of the formula counts
    assert mf.rows.tolist() == [0, 1, 4, 5]
    # NaN made by I() is missing, as in R's model.frame
    frame2 = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "x": [1.0, -1.0, 4.0, 9.0]})
    mf = model_frame("y ~ sqrt(x)", frame2)
    assert mf.rows.tolist() == [0, 2, 3] and mf.n_dropped == 1


def test_nullable_and_integer_dtypes():
    frame = pd.DataFrame({
        "y": pd.array([1.0, 2.0, None, 4.0, 5.0], dtype="Float64"),
        "k": pd.array([1, 2, 3, None, 5], dtype="Int64"),
        "b": pd.array([True, False, True, True, None], dtype="boolean"),
    })
    mf = model_frame("y ~ k + b", frame)
    assert mf.rows.tolist() == [0, 1] and mf.n_dropped == 3
    np.testing.assert_array_equal(mf.X, [[1.0, 1.0, 1.0], [1.0, 2.0, 0.0]])


def test_data_frame_not_modified(grit):
    before = grit.copy(deep=True)
    model_frame("mathscore2 ~ grit*male + I(csize^2) + wealth + (1 | schoolid/classid)", grit,
                allow_random=True)
    model_frame("mathscore2 ~ . - studentid", grit[["mathscore2", "male", "raven", "studentid"]])
    pd.testing.assert_frame_equal(grit, before)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_unknown_column_named_with_suggestion(grit):
    with pytest.raises(ColumnNotFoundError, match=r"'ravn'.*did you mean 'raven'"):
        model_frame("mathscore2 ~ ravn + male", grit)
    with pytest.raises(ColumnNotFoundError, match="'school'"):
        model_frame("mathscore2 ~ male + (1 | school)", grit, allow_random=True)
    with pytest.raises(ColumnNotFoundError, match="'csz'"):
        model_frame("mathscore2 ~ I(csz^2)", grit)


@pytest.mark.parametrize("text, position", [
    ("y ~ x +", 7), ("y ~ (x + z", 10), ("y ~ x $ z", 6), ("y ~ x + + ", 10), ("y x", 2),
    ("y ~ x ~ z", 6), ("y ~ x + 2", 8), ("y ~ foo(x)", 4), ("y ~ x + 1 | g", 4), ("", 0),
    ("y ~ `x", 4), ("y ~ x:(1 | g)", 6), ("y ~ x^z", 6),
])
def test_syntax_errors_with_position(text, position):
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert info.value.position == position
    assert info.value.formula == text
    assert f"position {position}" in str(info.value)


def test_factor_response_rejected(grit):
    with pytest.raises(ModelSpecError, match="response 'grit' is a factor"):
        model_frame("grit ~ raven", grit)


def test_one_level_factor_after_deletion():
    frame = pd.DataFrame({"y": [1.0, 2.0, np.nan], "f": ["a", "a", "b"], "x": [1.0, 2.0, 3.0]})
    with pytest.raises(ModelSpecError, match="factor 'f' has only one level"):
        model_frame("y ~ x + f", frame)


def test_no_rows_left():
    frame = pd.DataFrame({"y": [1.0, np.nan], "x": [np.nan, 2.0]})
    with pytest.raises(DataError, match="no rows left"):
        model_frame("y ~ x", frame)


def test_infinite_values_named():
    frame = pd.DataFrame({"y": [1.0, 2.0, 3.0], "x": [1.0, np.inf, 3.0], "z": [0.0, 1.0, 2.0]})
    with pytest.raises(DataError, match="column 'x' has non-finite values"):
        model_frame("y ~ x", frame)
    with pytest.raises(DataError, match=r"'I\(1/z\)'.*'z'"):
        model_frame("y ~ I(1/z)", frame)
    # an Inf only in a row dropped for a missing value is no error (R: na.omit first)
    frame.loc[1, "y"] = np.nan
    assert model_frame("y ~ x", frame).n_dropped == 1


def test_random_terms_rules(grit):
    with pytest.raises(FormulaError, match="no response"):
        model_frame("~ raven", grit)


# ---------------------------------------------------------------------------------------------
# Against patsy (test-time reference) where its semantics equal R's: hierarchical formulas
# (every margin of an interaction present), levels present after deletion, lower-case strings.
# ---------------------------------------------------------------------------------------------

patsy = pytest.importorskip("patsy")

#: patsy prints I() with Python operators; R's deparse of the same expression
PATSY_TO_R = {"I(x1 ** 2)": "I(x1^2)", "I(x1 * x2 + 1)": "I(x1 * x2 + 1)",
              "I((x1 - x2) / 2)": "I((x1 - x2)/2)"}
R_TO_PY = {"I(x1^2)": "I(x1**2)", "I(x1 * x2 + 1)": "I(x1*x2 + 1)", "I((x1 - x2)/2)": "I((x1 - x2)/2)"}


def _patsy_key(name: str) -> frozenset:
    if name == "Intercept":
        return frozenset(["(Intercept)"])
    name = PATSY_TO_R.get(name, name)
    pieces = []
    for piece in name.split(":") if not name.startswith("I(") else [name]:
        if piece.endswith("]"):
            var, level = piece[:-1].split("[", 1)
            level = level[2:] if level.startswith("T.") else level
            level = {"True": "TRUE", "False": "FALSE"}.get(level, level)
            piece = var + level
        pieces.append(piece)
    return frozenset(pieces)


def assert_matches_patsy(r_formula: str, py_formula: str, frame: pd.DataFrame):
    mf = model_frame(r_formula, frame)
    y_ref, x_ref = patsy.dmatrices(py_formula, frame, return_type="dataframe", NA_action="drop")
    np.testing.assert_array_equal(mf.rows, frame.index.get_indexer(x_ref.index))
    np.testing.assert_array_equal(mf.y, y_ref.iloc[:, 0].to_numpy())
    ours = {frozenset(n.split(":")) if not n.startswith("I(") else frozenset([n]): mf.X[:, j]
            for j, n in enumerate(mf.column_names)}
    theirs = {_patsy_key(n): x_ref[n].to_numpy() for n in x_ref.columns}
    assert set(ours) == set(theirs), (mf.column_names, list(x_ref.columns))
    for key, values in ours.items():
        np.testing.assert_allclose(values, theirs[key], rtol=1e-14, atol=0, err_msg=str(key))
    assert mf.X.flags.c_contiguous
    assert len(set(mf.assign.tolist()) - {0}) == len(mf.term_labels)


def _frame(seed: int, n: int = 60, missing: float = 0.05) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "y": rng.normal(size=n),
        "x1": rng.normal(size=n),
        "x2": rng.uniform(1, 3, size=n),
        "f1": pd.Categorical(rng.choice(["c", "a", "b"], n), categories=["c", "a", "b"]),
        "f2": pd.Series(rng.choice(["lo", "hi"], n), dtype="str"),
        "f3": rng.random(n) < 0.5,
    })
    for col in ["y", "x1", "x2", "f1", "f2"]:
        frame.loc[rng.random(n) < missing, col] = None if col.startswith("f") else np.nan
    return frame


PATSY_FORMULAS = [
    "y ~ x1 + x2", "y ~ f1", "y ~ f1 + f2 + x1", "y ~ f1*f2", "y ~ x1*f1", "y ~ x1*x2",
    "y ~ f1*f2*f3", "y ~ x1*f1*f2", "y ~ 0 + f1", "y ~ 0 + f1 + f2", "y ~ 0 + x1 + f1*f2",
    "y ~ (x1 + f1 + f2)^2", "y ~ f1 + f2 + f1:f2 + x1 + x1:f2", "y ~ I(x1^2) + f3*x2",
    "y ~ I(x1 * x2 + 1) + I((x1 - x2)/2)", "y ~ -1 + f3 + x1:x2 + x1 + x2",
]


@pytest.mark.parametrize("formula", PATSY_FORMULAS)
def test_matches_patsy(formula):
    frame = _frame(7)
    py = formula
    for r_text, py_text in R_TO_PY.items():
        py = py.replace(r_text, py_text)
    py = py.replace("^2", "**2") if "I(" not in py else py
    assert_matches_patsy(formula, py, frame)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def frames_and_formulas(draw):
    """A random data frame (numeric, categorical, string, bool columns, missing values) and a
    random hierarchical formula over some of its columns."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(12, 80))
    n_numeric = draw(st.integers(0, 3))
    kinds = draw(st.lists(st.sampled_from(["categorical", "string", "bool"]), min_size=0, max_size=3))
    if n_numeric + len(kinds) == 0:
        n_numeric = 1
    columns = {"y": rng.normal(size=n) * draw(st.sampled_from([1e-3, 1.0, 1e4]))}
    names = []
    for j in range(n_numeric):
        columns[f"x{j}"] = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4)
        names.append(f"x{j}")
    for j, kind in enumerate(kinds):
        name = f"f{j}"
        k = int(rng.integers(2, 5))
        if kind == "bool":
            values = rng.random(n) < 0.5
            values[:2] = [False, True]
        else:
            levels = list(rng.permutation(["a", "b", "c", "d", "e"])[:k])
            codes = rng.integers(0, k, size=n)
            codes[:k] = np.arange(k)  # every level in the first rows, which stay complete
            raw = np.asarray(levels, dtype=object)[codes]
            values = (pd.Categorical(raw, categories=levels) if kind == "categorical"
                      else pd.Series(raw, dtype="str"))
        columns[name] = values
        names.append(name)
    frame = pd.DataFrame(columns)
    missing_rate = draw(st.sampled_from([0.0, 0.1]))
    for col in ["y"] + [c for c in names if frame[c].dtype != bool]:
        mask = rng.random(n) < missing_rate
        mask[:6] = False
        if mask.any():
            frame.loc[mask, col] = np.nan if frame[col].dtype == float else None
    # hierarchical formula: chosen interactions and all their margins
    chosen = draw(st.lists(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True),
                           min_size=1, max_size=3))
    import itertools
    terms = []
    for combo in chosen:
        for order in range(1, len(combo) + 1):
            for sub in itertools.combinations(combo, order):
                key = tuple(sorted(sub, key=names.index))
                if key not in terms:
                    terms.append(key)
    terms.sort(key=len)
    intercept = draw(st.booleans())
    rhs = " + ".join(":".join(t) for t in terms)
    return frame, ("y ~ " if intercept else "y ~ 0 + ") + rhs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_and_formulas())
def test_property_random_frames_match_patsy(case):
    frame, formula = case
    before = frame.copy(deep=True)
    assert_matches_patsy(formula, formula, frame)
    pd.testing.assert_frame_equal(frame, before)


def test_factor_function_on_numbers_and_factors(grit):
    mf = model_frame("mathscore2 ~ factor(csize) + as.factor(male)", grit)
    kept = grit.iloc[mf.rows]
    sizes = np.unique(kept["csize"].to_numpy())  # numeric order, as R's factor() of numbers
    assert mf.column_names == (["(Intercept)"] + [f"factor(csize){s}" for s in sizes[1:]]
                               + ["as.factor(male)1"])
    assert mf.term_labels == ["factor(csize)", "as.factor(male)"]
    np.testing.assert_array_equal(mf.X[:, 1], (kept["csize"] == sizes[1]).to_numpy(float))
    frame = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "d": [0.5, 10.0, 2.0, 0.5]})
    assert model_frame("y ~ factor(d)", frame).column_names == ["(Intercept)", "factor(d)2", "factor(d)10"]
    with pytest.raises(FormulaError, match="one column name"):
        parse_formula("y ~ factor(d + 1)")
    with pytest.raises(DataError, match="is a factor"):
        model_frame("y ~ I(factor(d) * 2)", frame)


def test_brms_reference_formula(grit):
    # the formula of /work/shared/reference/brms/brms_ref.R (brms printed 1180 observations, 16 schools)
    formula = ("mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit "
               "+ (1 | schoolid)")
    mf = model_frame(formula, grit, allow_random=True)
    assert mf.nobs == 1180 and mf.n_dropped == 319
    assert mf.column_names == ["(Intercept)", "male1", "raven", "csize", "belief_survey1",
                               "mathscore1", "gritintervention"]
    (school,) = mf.groups
    assert school.name == "schoolid" and school.n_levels == 16
    assert school.levels == [str(k) for k in range(1, 17)]
    assert mf.fixed_formula == ("mathscore2 ~ 1 + male + raven + csize + belief_survey1 + "
                                "mathscore1 + grit")
    assert [r.text for r in mf.random_terms] == ["(1 | schoolid)"]


@pytest.mark.parametrize("formula, names", [
    ("y ~ 1", ["(Intercept)"]), ("y ~ 0", []), ("y ~ -1", []), ("y ~ x - 1 + 1", ["(Intercept)", "x"]),
    ("y ~ x + x", ["(Intercept)", "x"]), ("y ~ (x)", ["(Intercept)", "x"]), ("y ~ x - x", ["(Intercept)"]),
])
def test_intercept_and_duplicate_terms(formula, names):
    frame = pd.DataFrame({"y": [1.0, 2.0, 3.0], "x": [1.0, 5.0, 2.0]})
    mf = model_frame(formula, frame)
    assert mf.column_names == names and mf.X.shape == (3, len(names))
    assert mf.has_intercept == ("(Intercept)" in names)


def test_arrow_string_factor_reused_until_the_column_changes():
    """An Arrow-backed string column is factorized once per (immutable) Arrow array: a refit gives
    the same frame, a changed column (pandas gives it a new array) is factorized afresh, and the
    shared codes are read-only (no model frame can change another's)."""
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"y": rng.standard_normal(60),
                          "g": pd.array(rng.choice(["b", "a", "C", None], 60), dtype="string[pyarrow]")})
    first = model_frame("y ~ g", frame)
    again = model_frame("y ~ g", frame.copy())
    np.testing.assert_array_equal(first.X, again.X)
    assert first.column_names == again.column_names == ["(Intercept)", "gb", "gC"]
    assert first.n_dropped == int(frame["g"].isna().sum())
    frame.loc[frame["g"] == "C", "g"] = "d"  # a new Arrow array: new levels
    changed = model_frame("y ~ g", frame)
    assert changed.column_names == ["(Intercept)", "gb", "gd"]
    np.testing.assert_array_equal(changed.X[:, 2], first.X[:, 2])
    from engine.formula import _evaluate_column

    codes = _evaluate_column(frame["g"].array, "g").codes
    assert not codes.flags.writeable
