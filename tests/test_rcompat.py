"""engine.rcompat's shared pieces against R 4.2.2 (tests/fixtures/rcompat/rcompat_ref.R).

The parser and deparser, R's names and numbers as deparse/as.character write them, format()
edge cases, abbreviate() and print.data.frame, each compared character for character with R's
output; plus round trips of the parser and the formula grammar's errors.
"""

from __future__ import annotations

import json
import math

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings

from engine import rcompat
from engine.errors import FormulaError, PrintError, RSyntaxError
from engine.rcompat import language


def _double(text: str) -> float:
    """A double written by the R script (``sprintf("%.17g")``; "NA" is R's NA)."""
    return math.nan if text == "NA" else float(text)


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return json.loads((fixtures_dir / "rcompat" / "rcompat_reference.json").read_text())


# --- the parser and deparser ------------------------------------------------------------------------


def test_deparse_matches_r_one_line_and_wrapped(reference):
    for case in reference["deparse"]:
        node = language.parse(case["text"][0])
        assert language.deparse(node) == case["one"][0], case
        assert language.deparse_lines(node) == case["lines"], case


def test_deparse_is_a_fixed_point_of_parse(reference):
    # R's deparsed text parses back to the same tree (positions aside) and deparses unchanged
    for case in reference["deparse"]:
        text = case["one"][0]
        assert language.deparse(language.parse(text)) == text


def test_names_backquoted_and_escaped_as_r(reference):
    for case in reference["names"]:
        assert language.r_name(case["name"][0]) == case["deparsed"][0], case


def test_numbers_as_deparse_and_as_character_write_them(reference):
    numbers = reference["numbers"]
    for text, as_character, deparsed in zip(numbers["x"], numbers["as_character"], numbers["deparse"]):
        assert language.r_number(_double(text)) == as_character == deparsed


# factor() labels of integer grouping ids as R 4.2.2 writes them (levels(factor(x)), checked with
# Rscript on this machine when the fast path was written)
_R_INTEGER_LABELS = {0: "0", -1: "-1", 10000: "10000", 99999: "99999", 100000: "1e+05", -100000: "-1e+05",
                     120000: "120000", 1200000: "1200000", 1000000: "1e+06", 2 * 10 ** 12: "2e+12",
                     25 * 10 ** 11: "2.5e+12", 10 ** 15 - 1: "999999999999999", 123456789012345: "123456789012345"}


def test_integer_numbers_take_the_fast_path_with_the_same_text():
    """language._integer_r_number (integer-valued doubles below 1e15: grouping ids) against the
    general formatter, format_number(x, 15), over every id up to 2 10^5, round numbers of every
    magnitude and random 15-digit ones, and against R's own labels."""
    from engine.rcompat.numbers import format_number

    rng = np.random.default_rng(5)
    values = set(range(-2000, 200_001)) | {m * 10 ** k for k in range(15) for m in (1, 2, 12, 25, 999)}
    values |= {int(v) for v in rng.integers(-10 ** 15 + 1, 10 ** 15, 3000)}
    values = {v for v in values if abs(v) < 10 ** 15} | {-v for v in values if abs(v) < 10 ** 15}
    for v in sorted(values):
        assert language._integer_r_number(float(v)) == format_number(float(v), 15), v
    for v, text in _R_INTEGER_LABELS.items():
        assert language.r_number(float(v)) == text


_atoms = st.sampled_from(["x", "y1", "`a b`", "1", "2.5", "1e-08", "3L", "TRUE", '"s"', "f(z)"])
_operators = st.sampled_from(["+", "-", "*", "/", "^", ":", "%in%", "==", "&", "|", "~", "$"])


@st.composite
def _expressions(draw, depth=3):
    if depth == 0 or draw(st.booleans()):
        return draw(_atoms)
    kind = draw(st.sampled_from(["binary", "paren", "unary", "call"]))
    if kind == "binary":
        return f"{draw(_expressions(depth - 1))} {draw(_operators)} {draw(_expressions(depth - 1))}"
    if kind == "paren":
        return f"({draw(_expressions(depth - 1))})"
    if kind == "unary":
        return f"-{draw(_expressions(depth - 1))}"
    return f"g({draw(_expressions(depth - 1))}, k = {draw(_expressions(depth - 1))})"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_expressions())
def test_parse_deparse_round_trip(text):
    once = language.deparse(language.parse(text))
    assert language.deparse(language.parse(once)) == once
    # the wrapped form is the same text cut after operators and commas
    lines = language.deparse_lines(language.parse(once), width_cutoff=20)
    assert " ".join(" ".join(lines).split()) == " ".join(once.split())


def test_syntax_errors_are_formula_errors_with_positions():
    with pytest.raises(RSyntaxError) as info:
        language.parse("f(x, y")
    assert info.value.position == 6 and isinstance(info.value, FormulaError)
    with pytest.raises(RSyntaxError, match="unterminated string"):
        language.parse('x == "a')
    with pytest.raises(RSyntaxError, match="unexpected 'y'"):
        language.parse("x y")
    with pytest.raises(RSyntaxError, match="must be a string"):
        language.parse(3)
    with pytest.raises(PrintError, match="not an R expression"):
        language.deparse(3.5)


def test_read_formula_builds_bars_and_dots():
    lhs, rhs = language.read_formula("y ~ . + (1 | g/h)")
    assert lhs == language.Name("y", 0)
    assert isinstance(rhs.left, language.Dot)
    bar = rhs.right
    assert isinstance(bar, language.Bar) and bar.text == "(1 | g/h)" and bar.pos == 8
    assert language.deparse(language.formula_node(lhs, rhs)) == "y ~ . + (1 | g/h)"


@pytest.mark.parametrize("text, message, position", [
    ("y ~ log(x, 2)", "takes one argument", 9),
    ("y ~ a | b | c", "unexpected '|'", 10),
    ("y ~ x %o% z", "only %in%", 6),
    ("y ~", "nothing on the right", 3),
    ("y ~ I(a:b)", "in arithmetic expression", 7),
])
def test_formula_grammar_errors(text, message, position):
    with pytest.raises(FormulaError, match=message) as info:
        language.read_formula(text, functions=("log",))
    assert info.value.position == position


def test_call_lines_takes_nodes_or_text():
    node = language.parse("y ~ x")
    assert rcompat.call_lines("lm", [("formula", node), ("data", "d")]) == \
        rcompat.call_lines("lm", [("formula", "y ~ x"), ("data", "d")]) == ["lm(formula = y ~ x, data = d)"]


# --- format() ----------------------------------------------------------------------------------------


def test_format_edge_cases_match_r(reference):
    for case in reference["format"]:
        values = [_double(v) for v in case["x"]]
        assert rcompat.format_real(values, case["digits"][0]) == case["format"], case
    for case in reference["nsmall"]:
        values = [_double(v) for v in case["x"]]
        assert rcompat.format_real(values, nsmall=case["nsmall"][0]) == case["format"], case


def test_sprintf_fixed():
    assert [rcompat.sprintf_fixed(v, 2) for v in (1.005, -0.5, math.nan, None, math.inf)] == [
        "1.00", "-0.50", "NA", "NA", "Inf"]


# --- abbreviate() -----------------------------------------------------------------------------------


def test_abbreviate_matches_r(reference):
    for case in reference["abbreviate"]:
        names, minlength, use_classes = case["names"], case["minlength"][0], case["use_classes"][0]
        assert rcompat.abbreviate(names, minlength, use_classes) == case["abbreviated"], case
        assert rcompat.abbreviate(names, minlength, use_classes, strict=True) == case["strict"], case
        assert rcompat.abbreviate(names, minlength, use_classes, dot=True) == case["dot"], case


def test_abbreviate_lme4_correlation_labels(reference):
    # lme4's print.summary.merMod labels the correlation of fixed effects by
    # abbreviate(rn, minlength = 11) (rows) and abbreviate(rn, minlength = 6) (columns)
    names = ["(Intercept)", "male1", "raven", "csize", "belief_survey1", "mathscore1", "gritintervention"]
    for minlength in (6, 11):
        (case,) = [c for c in reference["abbreviate"]
                   if c["names"] == names and c["minlength"] == [minlength] and c["use_classes"] == [True]]
        assert rcompat.abbreviate(names, minlength) == case["abbreviated"]


# --- print.data.frame and the matrix printer ---------------------------------------------------------


def _frame(case) -> pd.DataFrame:
    columns = {}
    for name, kind in zip(case["names"], case["types"]):
        values = case["columns"][name]
        if kind == "numeric":
            columns[name] = pd.Series([_double(v) for v in values], dtype=float)
        elif kind == "integer":
            columns[name] = pd.Series(values, dtype="Int64")
        elif kind == "logical":
            columns[name] = pd.Series([None if v == "NA" else v for v in values], dtype="boolean")
        else:
            columns[name] = pd.Series([None if v == "NA" else v for v in values], dtype=object)
    return pd.DataFrame(columns)


def test_data_frame_printing_matches_r(reference):
    # includes the 79- and 80-character cases: a block stays shorter than the width
    for case in reference["frames"]:
        assert rcompat.data_frame_text(_frame(case)) == case["printed"][0]
        assert rcompat.data_frame_text(_frame(case), row_names=False) == case["printed_no_row_names"][0]


def test_confint_labels_match_r(reference):
    for case in reference["percent"]:
        level = _double(case["level"][0])
        assert rcompat.format_percent([(1 - level) / 2, 1 - (1 - level) / 2]) == case["labels"], case


def test_matrix_blocks_stay_below_width():
    cells = [["x" * 9] * 20]
    text = rcompat.matrix_text(cells, ["row"], [f"c{j}" for j in range(20)])
    assert max(len(line) for line in text.splitlines()) < 80
    assert text.count("row") == 3  # 20 columns of width 9 + 1: 7, 7 and 6 per block


# --- quantile(type = 7) -------------------------------------------------------------------------------


def test_quantile_rows_and_vector_agree_to_the_bit():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 11))
    for prob in (0.0, 0.05, 0.25, 0.5, 0.975, 1.0):
        rows = rcompat.quantile7_rows(x, prob)
        for i in range(3):
            assert rows[i] == rcompat.quantile7(x[i], [prob])[0]
            assert rows[i] == pytest.approx(np.quantile(x[i], prob), rel=1e-15, abs=1e-15)


# --- the printed call of ols, from the formula layer's own parse ----------------------------------------


def test_ols_call_deparsed_from_the_formula_parse():
    import engine
    from engine.errors import EngineInputError

    frame = pd.DataFrame({"my y": [1.0, 2.0, 4.0, 3.0], "x": [0.5, 1.0, 2.0, 4.0]})
    fit = engine.ols("`my y`~I(x^2)+log(x)", frame, data_name="frames[[1]]")
    assert fit.call_lines == ["lm(formula = `my y` ~ I(x^2) + log(x), data = frames[[1]])"]
    frame_before = frame.copy()
    with pytest.raises(EngineInputError, match="data_name"):
        engine.ols("`my y` ~ x", frame, data_name="my data")
    pd.testing.assert_frame_equal(frame, frame_before)
