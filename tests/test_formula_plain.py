"""The plain-column path of the model frame (engine.formula._plain_frame: every variable a float64,
integer or Categorical column, bars (1 | g) only, small frames) against the general path it
shortcuts: the same frame bit for bit, and None (the general path's turn) for what it leaves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine import formula as F


def _frame(seed: int, n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"y": rng.normal(size=n), "x1": rng.normal(size=n),
                          "x2": rng.normal(size=n).astype(np.float32)})
    frame["k"] = rng.integers(0, 5, n)
    frame["f"] = pd.Categorical(rng.choice(["c", "a", "b"], n), categories=["c", "a", "b", "z"])
    frame["o"] = pd.Categorical(rng.choice(["s", "m", "l"], n), categories=["s", "m", "l"],
                                ordered=True)
    frame["g"] = pd.Categorical(rng.choice(["s1", "s2", "s3", "s4"], n))
    frame["h"] = pd.Categorical(rng.choice(["u", "v"], n))
    frame["gn"] = rng.integers(1, 4, n).astype(float)
    frame["s"] = pd.Series(rng.choice(["lo", "Hi", "hi", "mid"], n), dtype="string[pyarrow]")
    frame["sg"] = pd.Series(rng.choice(["p", "q", "r"], n), dtype="string[pyarrow]")
    for col, rate in (("x1", 0.05), ("f", 0.03), ("g", 0.02), ("h", 0.02), ("gn", 0.02),
                      ("s", 0.02), ("sg", 0.02)):
        frame.loc[rng.random(n) < rate, col] = np.nan
    return frame


FORMULAS = [
    "y ~ x1 + x2 + k",
    "y ~ f * x1 + o - 1",
    "y ~ 0 + f:o + x2",
    "k ~ x1 + f",
    "y ~ x1 + f + (1 | g)",
    "y ~ x1 + (1 | g/h) + (1 | gn)",
    "y ~ g + x1 + (1 | g)",
    "y ~ 1 + (1 | h)",
    "y ~ s * x1 + f + (1 | sg/g) + (1 | s)",
]


def _general(formula, data):
    """The general path's frame (the plain plan switched off)."""
    original = F._plain_plan
    F._plain_plan = lambda text: None
    try:
        return F.model_frame(formula, data, allow_random=True)
    finally:
        F._plain_plan = original


def _same(a, b):
    for name in ("formula", "response_name", "column_names", "term_labels", "has_intercept",
                 "n_dropped", "fixed_formula", "n_original", "factors"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("y", "X", "assign", "rows"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.flags.c_contiguous == y.flags.c_contiguous, name
        assert np.array_equal(x, y), name
    assert [(g.name, g.levels, g.n_levels, g.columns) for g in a.groups] == \
           [(g.name, g.levels, g.n_levels, g.columns) for g in b.groups]
    for g, h in zip(a.groups, b.groups):
        assert np.array_equal(g.codes, h.codes) and g.codes.dtype == h.codes.dtype
    assert len(a.random_effects) == len(b.random_effects)
    for r, s in zip(a.random_effects, b.random_effects):
        assert (r.group, r.group_columns, r.levels, r.coef_names, r.bar_text, r.term_index) == \
               (s.group, s.group_columns, s.levels, s.coef_names, s.bar_text, s.term_index)
        assert np.array_equal(r.codes, s.codes) and np.array_equal(r.Z, s.Z)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("formula", FORMULAS)
def test_plain_path_equals_general_path(formula, seed):
    data = _frame(seed)
    plan = F._plain_plan(formula)
    assert plan is not None  # these formulas take the plain path
    fast = F._plain_frame(plan, data)
    assert fast is not None
    _same(fast, _general(formula, data))


def test_plain_path_leaves_the_unusual_to_the_general_path():
    data = _frame(4)
    assert F._plain_plan("y ~ log(x1)") is None and F._plain_plan("y ~ x1 + (x1 | g)") is None
    inf = data.assign(x1=np.where(np.arange(len(data)) == 5, np.inf, data.x1))
    one_level = data.assign(f=pd.Categorical(["a"] * len(data)))
    strings = data.assign(f=data.f.astype(object))  # Python strings: the general path
    for frame, formula in ((inf, "y ~ x1"), (one_level, "y ~ f"), (strings, "y ~ f"),
                           (data, "y ~ nosuch"), (data, "f ~ x1"),
                           (data.iloc[:0], "y ~ x1")):
        assert F._plain_frame(F._plain_plan(formula), frame) is None, formula
