"""R's number formatting (engine.rcompat) against R's documented and printed output.

Expected strings are R 4.2's output for the call shown in each comment (examples from R's help
pages and the R sources' comments, and the lm fixtures printed by R 4.2.2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import rcompat as rp


# --- format() -----------------------------------------------------------------------------------


@pytest.mark.parametrize("values, digits, expected", [
    ([1234567.8, 12.12345], 7, ["1.234568e+06", "1.212345e+01"]),      # E narrower than F
    ([1234567.8, 123.12345], 7, ["1234567.8000", "    123.1235"]),      # tie: F wins
    ([np.pi], 7, ["3.141593"]),
    ([np.pi], 3, ["3.14"]),
    ([1e5], 7, ["1e+05"]),
    ([123456.0], 7, ["123456"]),
    ([1e-20], 7, ["1e-20"]),
    ([0.1 + 0.2], 17, ["0.30000000000000004"]),
    ([1.0, 10.0, 100.0], 7, ["  1", " 10", "100"]),
    ([9996.0], 3, ["9996"]),              # format.c: "9996 with 3 digits is ... 9996 in fixed"
    ([np.nan, 1.5], 7, [" NA", "1.5"]),
    ([-1.0, 1.0], 7, ["-1", " 1"]),
    ([0.0], 7, ["0"]),
    ([2.0 / 3.0], 3, ["0.667"]),
    ([0.001234, 123.4], 3, ["1.23e-03", "1.23e+02"]),
    ([100.0, 1e-10], 7, ["1e+02", "1e-10"]),
    ([0.0001], 7, ["1e-04"]),
    ([0.001], 7, ["0.001"]),
    ([100000.1], 7, ["100000.1"]),
    ([-0.0], 7, ["0"]),
    ([np.inf, -np.inf, 1.0], 7, [" Inf", "-Inf", "   1"]),
])
def test_format_real(values, digits, expected):
    assert rp.format_real(values, digits) == expected


def test_format_scientific_argument():
    # format(123456789, scientific = TRUE); format(1e-10, scientific = FALSE)
    assert rp.format_real([123456789.0], scientific=True) == ["1.234568e+08"]
    assert rp.format_real([1e-10], scientific=False) == ["0.0000000001"]


def test_scientific_digits_and_rounding_width():
    assert rp.scientific(123.456, 7) == (0, 2, 6, False)
    assert rp.scientific(-0.00120, 7) == (1, -3, 2, False)
    assert rp.scientific(9996.0, 3) == (0, 4, 1, True)   # 1.00e+04 but 9996 in fixed
    assert rp.scientific(99999.0, 3)[1:3] == (5, 1)


# --- signif(), round(), zapsmall() ----------------------------------------------------------------


@pytest.mark.parametrize("x, digits, expected", [
    (123456.0, 2, 120000.0),
    (-0.000123456, 3, -0.000123),
    (2.5, 1, 2.0),          # half to even (nearbyint)
    (0.7921676961, 4, 0.7922),
])
def test_signif(x, digits, expected):
    assert rp.signif(x, digits) == expected


def test_signif_tiny_numbers_print_rounded():
    assert rp.format_number(rp.signif(1.5e-300, 1)) == "2e-300"


@pytest.mark.parametrize("x, digits, expected", [
    # R >= 4.0.0 ("round to the nearest representable"): ?Round's examples
    (0.15, 1, 0.1), (0.25, 1, 0.2), (0.35, 1, 0.3),
    (2.5, 0, 2.0), (-1.5, 0, -2.0), (1234.5678, -2, 1200.0), (0.388611434537052, 6, 0.388611),
    (-2.7537788539855, 4.56, -2.75378),   # non-integer digits are rounded first
])
def test_round(x, digits, expected):
    assert rp.round_half(x, digits) == expected


def test_zapsmall():
    assert list(rp.zapsmall([1.0, 1e-20])) == [1.0, 0.0]
    # R 4.2: round to digits - log10(max) decimals, 5 - 0.44 -> 5 decimals here
    z = rp.zapsmall([-2.7537788539855, 0.0338176395405865], 5)
    assert list(z) == [-2.75378, 0.03382]


# --- formatC(), format.pval() -------------------------------------------------------------------


@pytest.mark.parametrize("x, digits, expected", [
    (0.365945091112092, 4, "0.3659"),
    (112.832917637834, 4, "112.8"),
    (0.5, 4, "  0.5"),         # width digits + 1
    (1.0, 4, "    1"),
    (123456789.0, 4, "1.235e+08"),
    (3.14159, 3, "3.14"),
])
def test_format_c(x, digits, expected):
    assert rp.format_c(x, digits=digits) == expected


def test_format_pval():
    # ?format.pval: format.pval(c(0.1, 0.0001, 1e-27)) -> "1e-01" "1e-04" "<2e-16"
    assert rp.format_pval([0.1, 0.0001, 1e-27]) == ["1e-01", "1e-04", "<2e-16"]
    assert rp.format_pval([2.06e-112], digits=4) == ["< 2.2e-16"]
    assert rp.format_pval([0.0033, 0.9021, 9.6e-05, 2.51e-11, 1e-45], digits=3) == [
        "0.0033", "0.9021", "9.60e-05", "2.51e-11", "< 2e-16"]
    assert rp.format_pval([np.nan, 0.5], digits=3) == ["NA", "0.5"]


# --- printCoefmat / print.summary.lm pieces ----------------------------------------------------


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return json.loads((fixtures_dir / "lm" / "lm_reference.json").read_text())


@pytest.mark.parametrize("name", ["model1", "model2"])
def test_coefmat_reproduces_r_table(reference, fixtures_dir, name):
    ref = reference[name]
    table = np.column_stack([ref["estimate"], ref["std_error"], ref["t_value"], ref["p_value"]])
    text = rp.coefmat_text(table, ref["terms"], ["Estimate", "Std. Error", "t value", "Pr(>|t|)"],
                           digits=4)
    printed = (fixtures_dir / "lm" / f"{name}_summary.txt").read_text(encoding="utf-8")
    lines = printed.split("\n")
    start = lines.index("Coefficients:") + 1
    stop = next(i for i in range(start, len(lines)) if lines[i].startswith("Signif. codes"))
    assert text == "\n".join(lines[start:stop + 1]) + "\n"


@pytest.mark.parametrize("name", ["model1", "model2"])
def test_residual_quantiles_line(reference, fixtures_dir, name):
    q = rp.zapsmall(reference[name]["residual_quantiles"], 5)
    text = rp.named_vector_text(q, ["Min", "1Q", "Median", "3Q", "Max"], digits=4)
    printed = (fixtures_dir / "lm" / f"{name}_summary.txt").read_text(encoding="utf-8")
    lines = printed.split("\n")
    at = lines.index("Residuals:")
    assert text == lines[at + 1] + "\n" + lines[at + 2] + "\n"


def test_coefmat_na_rows_and_no_stars():
    table = np.array([[1.5, 0.5, 3.0, 0.2], [np.nan] * 4, [-0.25, 0.125, -2.0, 0.5]])
    text = rp.coefmat_text(table, ["(Intercept)", "x2", "x3"],
                           ["Estimate", "Std. Error", "t value", "Pr(>|t|)"], digits=4)
    lines = text.split("\n")
    assert "Signif" not in text                # no p < 0.1: no stars column, no legend
    assert lines[0].endswith("Pr(>|t|)")
    assert lines[2].split() == ["x2", "NA", "NA", "NA", "NA"]
    # t values keep only the digits they need (R prints " 3" and "-2"), p-values by format.pval
    assert lines[1].split() == ["(Intercept)", "1.500", "0.500", "3", "0.2"]
    # with a star somewhere the NA row gets blank star padding
    table[0, 3] = 0.0001
    text = rp.coefmat_text(table, ["(Intercept)", "x2", "x3"],
                           ["Estimate", "Std. Error", "t value", "Pr(>|t|)"], digits=4)
    assert text.split("\n")[2].endswith("NA    ")
    assert text.split("\n")[1].endswith("1e-04 ***")  # format(c(1e-4, 0.5), digits = 3)


def test_signif_stars_cutpoints_closed_on_the_right():
    assert rp.signif_stars([0.001, 0.0010001, 0.01, 0.05, 0.1, 0.11, np.nan]) == [
        "***", "**", "**", "*", ".", " ", ""]


def test_matrix_wraps_columns_at_width_80():
    cells = [["x" * 30, "y" * 30, "z" * 30]]
    text = rp.matrix_text(cells, ["row"], ["a", "b", "c"])
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == 4                      # two blocks of (header, row)
    assert lines[1] == "row " + "x" * 30 + " " + "y" * 30
    assert lines[3] == "row " + "z" * 30


def test_named_vector_wraps_lines():
    text = rp.named_vector_text(np.arange(20, dtype=float), [str(i + 1) for i in range(20)])
    lines = text.split("\n")
    assert lines[0].split() == [str(i) for i in range(1, 21)]   # 20 fields of width 3 fit in 80
    text = rp.named_vector_text(np.arange(30, dtype=float) + 0.5, [f"n{i}" for i in range(30)])
    lines = text.split("\n")
    # printvector.c: groups follow each other without a blank line
    assert lines[0].split() == [f"n{i}" for i in range(16)]
    assert lines[2].split() == [f"n{i}" for i in range(16, 30)]
    assert len(lines[0]) <= 80


# --- quantile(type = 7) ---------------------------------------------------------------------------


def test_quantile7_matches_definition():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 10, 101):
        x = rng.standard_normal(n)
        np.testing.assert_allclose(rp.quantile7(x), np.quantile(x, [0, .25, .5, .75, 1]),
                                   rtol=1e-14, atol=1e-15)


# --- deparse ---------------------------------------------------------------------------------------


def test_deparse_normalises_spacing_like_r():
    assert rp.deparse_lines(rp.parse_r("y~a+b*c+I(x^2)+a:b-1")) == [
        "y ~ a + b * c + I(x^2) + a:b - 1"]
    assert rp.deparse_lines(rp.parse_r("y ~ log(x, base=2) + I(x/2) + (1|g)")) == [
        "y ~ log(x, base = 2) + I(x/2) + (1 | g)"]
    assert rp.deparse_lines(rp.parse_r("y ~ `my var` + x %in% z")) == ["y ~ `my var` + x %in% z"]
    assert rp.deparse_lines(rp.parse_r("y ~ -1 + x^-2")) == ["y ~ -1 + x^-2"]


def test_call_wraps_like_r_deparse():
    lines = rp.call_lines("lm", [
        ("formula", "mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit"),
        ("data", "data2")])
    assert lines == ["lm(formula = mathscore2 ~ male + raven + csize + belief_survey1 + ",
                     "    mathscore1 + grit, data = data2)"]
    terms = " + ".join(f"variable_{i}" for i in range(20))
    lines = rp.call_lines("lm", [("formula", "y ~ " + terms), ("data", "d")])
    for line in lines[:-1]:          # a break comes right after the first " + " past column 60
        assert line.endswith(" + ")
        assert len(line) > 60
        assert len(line[: line.rstrip(" +").rfind(" ")]) <= 60
    assert all(line.startswith("    ") for line in lines[1:])
    assert " ".join(" ".join(lines).split()) == "lm(formula = y ~ " + terms + ", data = d)"


# --- R's own output on random and tie-prone values (tests/fixtures/lm/format_ref.R) -----------


@pytest.fixture(scope="module")
def format_reference(fixtures_dir):
    return json.loads((fixtures_dir / "lm" / "format_reference.json").read_text())


def test_format_matches_r_on_random_vectors(format_reference):
    for case in format_reference["format"]:
        assert rp.format_real(case["x"], case["digits"][0]) == case["format"], case


def test_round_signif_formatc_match_r(format_reference):
    for case in format_reference["rounding"]:
        x, d = case["x"][0], case["digits"][0]
        assert rp.round_half(x, d) == case["round"][0], case
        assert rp.signif(x, max(d, 1)) == case["signif"][0], case
        assert rp.format_c(x, digits=max(d, 1)) == case["formatC"][0], case


def test_format_pval_matches_r(format_reference):
    for case in format_reference["pval"]:
        assert rp.format_pval(case["p"], case["digits"][0]) == case["format"], case


def test_call_deparse_matches_r(fixtures_dir):
    cases = json.loads((fixtures_dir / "lm" / "deparse_reference.json").read_text())
    for case in cases:
        lines = rp.call_lines("lm", [("formula", case["formula"][0]), ("data", case["data"][0])])
        assert lines == case["lines"], case
