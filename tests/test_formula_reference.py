"""The model frame against the previous implementation (tests/reference_model_frame.py, the
model_frame of main at 03d5d32, before issue 18's rewrite): value for value, name for name,
error for error, on random frames and formulas (hypothesis, derandomized)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import reference_model_frame as reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import EngineInputError
from engine.formula import model_frame

VARIABLES = ["x1", "x2", "n1", "m1", "f1", "f2", "o1", "b1", "c1", "I(x1^2)", "log(x2)",
             "factor(n1)", "I(x1 * x2 - 1)", "l1"]


def _frame(seed: int, n: int, missing: float, one_block: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    numbers = rng.normal(size=(n, 2)).round(3)
    frame = pd.DataFrame(numbers if one_block else numbers.copy(), columns=["x1", "x2"])
    frame.insert(0, "y", rng.normal(size=n))
    frame["x2"] = np.abs(frame["x2"]) + 0.5 * rng.integers(0, 2)  # log(x2) may be -Inf at 0
    frame["n1"] = rng.integers(0, 4, n)
    frame["m1"] = pd.array(rng.integers(-2, 3, n), dtype="Int64")
    frame["f1"] = pd.Categorical(rng.choice(["c", "a", "b", "d"], n), categories=["c", "a", "b", "d", "z"])
    frame["f2"] = pd.Series(rng.choice(["lo", "Hi", "hi", "mid"], n), dtype=object)
    frame["o1"] = pd.Categorical(rng.choice(["s", "m", "l"], n), categories=["s", "m", "l"], ordered=True)
    frame["b1"] = rng.random(n) < 0.5
    frame["c1"] = pd.Series(rng.choice(["u", "v", "w"], n), dtype="str")
    frame["l1"] = pd.array(rng.random(n) < 0.4, dtype="boolean")
    frame["g"] = rng.choice(["s1", "s2", "s3"], n)
    frame["h"] = rng.integers(1, 4, n)
    for col in frame.columns:
        hit = rng.random(n) < missing
        if hit.any():
            if col in ("b1",):
                continue
            frame.loc[hit, col] = None if frame[col].dtype != np.float64 else np.nan
    if rng.random() < 0.1:
        frame.loc[int(rng.integers(0, n)), "x1"] = np.inf
    return frame


@st.composite
def formulas(draw):
    terms = []
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.integers(1, 3))
        picks = draw(st.lists(st.sampled_from(VARIABLES), min_size=k, max_size=k))
        terms.append(draw(st.sampled_from([":", "*"])).join(picks))
    rhs = " + ".join(terms)
    rhs = draw(st.sampled_from(["", "0 + ", "-1 + ", "1 + "])) + rhs
    rhs += draw(st.sampled_from(["", "", " - 1", " - x1", " + (1 | g)", " + (1 | g/h)"]))
    response = draw(st.sampled_from(["y", "y", "x1", "I(y + x1)", "b1"]))
    return f"{response} ~ {rhs}"


def _outcome(fn, formula, frame):
    try:
        return fn(formula, frame, allow_random=True), None
    except EngineInputError as exc:
        return None, exc


def assert_same_frame(formula: str, frame: pd.DataFrame):
    ours, our_error = _outcome(model_frame, formula, frame)
    theirs, their_error = _outcome(reference.model_frame, formula, frame)
    if their_error is not None or our_error is not None:
        assert type(our_error).__name__ == type(their_error).__name__, (our_error, their_error)
        assert str(our_error) == str(their_error)
        return
    for name in ("formula", "response_name", "column_names", "term_labels", "has_intercept",
                 "n_dropped", "fixed_formula", "n_original"):
        assert getattr(ours, name) == getattr(theirs, name), name
    np.testing.assert_array_equal(ours.rows, theirs.rows)
    np.testing.assert_array_equal(ours.assign, theirs.assign)
    assert ours.X.shape == theirs.X.shape and ours.X.flags.c_contiguous
    assert ours.X.dtype == theirs.X.dtype == np.float64
    # bit for bit (NaN nowhere: rows with NaN are dropped)
    assert ours.X.tobytes() == theirs.X.tobytes()
    assert ours.y.tobytes() == theirs.y.tobytes()
    assert {k: (v.levels, v.ordered, v.logical) for k, v in ours.factors.items()} == \
        {k: (v.levels, v.ordered, v.logical) for k, v in theirs.factors.items()}
    assert [(g.name, g.levels, g.n_levels, g.columns) for g in ours.groups] == \
        [(g.name, g.levels, g.n_levels, g.columns) for g in theirs.groups]
    for a, b in zip(ours.groups, theirs.groups):
        np.testing.assert_array_equal(a.codes, b.codes)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(formula=formulas(), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40),
       missing=st.sampled_from([0.0, 0.0, 0.05, 0.2]), one_block=st.booleans())
def test_model_frame_matches_reference(formula, seed, n, missing, one_block):
    assert_same_frame(formula, _frame(seed, n, missing, one_block))


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(formula=formulas(), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40),
       missing=st.sampled_from([0.0, 0.05, 0.2]), probe=st.sampled_from([0, 3]))
def test_model_frame_matches_reference_with_the_scan_in_the_fill(formula, seed, n, missing, probe):
    """The same comparison with the plain numeric columns' NaN/Inf scan left to the design fill
    (engine.formula does so from _DEFER_SCAN_ROWS rows on; here at every size)."""
    import engine.formula

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine.formula, "_DEFER_SCAN_ROWS", 0)
        patch.setattr(engine.formula, "_PROBE_ROWS", probe)
        assert_same_frame(formula, _frame(seed, n, missing, one_block=seed % 2 == 0))


@pytest.mark.parametrize("formula", [
    "y ~ .", "y ~ . - f1", "y ~ (x1 + f1 + c1)^2", "y ~ x1*f1*o1 - 1", "y ~ f1:x1 + o1:b1",
    "y ~ 0 + f2:c1 + l1", "y ~ x1 + (1 | g/h) + (1 | h)",
])
def test_listed_formulas_match_reference(formula):
    for seed in range(5):
        frame = _frame(seed, 60, 0.05 * seed, seed % 2 == 0).drop(columns=["g", "h"]
                                                                   if formula.startswith("y ~ .") else [])
        assert_same_frame(formula, frame)


def test_columns_of_one_block_read_in_place():
    """Numeric columns stored in one 2-D block (a DataFrame built from an array) are read
    through a view of the block, in any order and subset; values still match the reference."""
    from engine.formula import _column, _stack_rows

    rng = np.random.default_rng(3)
    numbers = rng.normal(size=(50, 5))
    numbers[7, 2] = np.nan
    frame = pd.DataFrame(numbers, columns=list("abcde")).assign(y=rng.normal(size=50))
    arrays = [_column(frame, c, "", 0) for c in "ecb"]
    view, picks = _stack_rows(arrays, 50)
    assert np.shares_memory(view, arrays[0])
    for pick, array in zip(picks, arrays):
        np.testing.assert_array_equal(view[pick], array)
    for formula in ["y ~ e + c + b", "y ~ c:e + a + d:b:e", "y ~ I(a * 2) + e"]:
        assert_same_frame(formula, frame)


@pytest.mark.parametrize("formula", [
    "y ~ a + b", "y ~ a:f + b", "y ~ a * f", "y ~ b + a - b", "y ~ a + I(b^0)", "y ~ 0 + f:a",
    "y ~ a + f2",
])
@pytest.mark.parametrize("probe", [0, 8])
def test_scan_left_to_the_fill_matches_reference(formula, probe, monkeypatch):
    """Plain numeric columns are scanned for NaN/Inf by the design fill (one pass); a NaN on a
    kept row, one only on rows dropped anyway, an Inf, a column left with no rows, a factor left
    with one level, a variable in no term: all as the reference (which scans first). (From
    engine.formula._DEFER_SCAN_ROWS rows on; here from 0, the probe of the first rows off or
    on.)"""
    import engine.formula

    monkeypatch.setattr(engine.formula, "_DEFER_SCAN_ROWS", 0)
    monkeypatch.setattr(engine.formula, "_PROBE_ROWS", probe)
    rng = np.random.default_rng(5)
    n = 40
    base = pd.DataFrame({"y": rng.normal(size=n), "a": rng.normal(size=n), "b": rng.normal(size=n),
                         "f": rng.choice(["u", "v", "w"], n),
                         "f2": np.where(np.arange(n) < 3, "rare", "common")})
    frames = [base.copy() for _ in range(6)]
    frames[1].loc[[4, 9], "a"] = np.nan             # NaN on rows otherwise kept
    frames[1].loc[[2], "b"] = np.nan                # (and one the probe sees)
    frames[2].loc[[4], "y"] = np.nan                # the response drops row 4 ...
    frames[2].loc[[4], "a"] = np.nan                # ... where a's NaN lies too
    frames[3].loc[[11], "b"] = np.inf               # Inf on a kept row
    frames[4]["a"] = np.nan                         # no rows left
    frames[5].loc[[0, 1, 2], "b"] = np.nan          # f2 left with one level ("common")
    for frame in frames:
        assert_same_frame(formula, frame)
