"""Random-effect terms of the model frame against lme4's ``lFormula(...)$reTrms``.

Reference: tests/fixtures/formula_random (lme4 1.1.31, R 4.2.2; script make_fixture.R beside it).
For each term lme4 gives the grouping factor (``flist``), the column names of the left side
(``cnms``) and the transposed design block ``Zt`` (``Ztlist``): row ``q * level + k`` of ``Zt``
holds column ``k`` of the left-side design for the rows in that level. Terms are compared in
lme4's order: the order as written, then lme4's sort by number of levels (``mkReTrms``:
``rev(order(nl))`` when the counts are not already non-increasing).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.errors import ColumnNotFoundError, FormulaError, ModelSpecError
from engine.formula import model_frame

FIXTURES = Path(__file__).parent / "fixtures" / "formula_random"
CASES = json.loads((FIXTURES / "retrms.json").read_text())
DATA = {
    "sleepstudy": pd.read_csv(FIXTURES / "sleepstudy.csv", dtype={"Subject": str}),
    "small": pd.read_csv(FIXTURES / "small.csv"),
}


def _lme4_name(effect) -> str:
    """lme4 names the factor g1:g2 of (1 | g1/g2) g2:g1 (brms: g1:g2); (1 | g1:g2) keeps g1:g2."""
    if "/" in effect.bar_text:
        return ":".join(reversed(effect.group.split(":")))
    return effect.group


def _lme4_order(effects) -> list:
    nl = [len(e.levels) for e in effects]
    if any(b > a for a, b in itertools.pairwise(nl)):
        order = sorted(range(len(nl)), key=lambda k: nl[k])  # R's order(): stable
        return [effects[k] for k in reversed(order)]
    return list(effects)


@pytest.mark.parametrize("case", CASES, ids=[c["formula"][0] for c in CASES])
def test_random_effects_match_lme4(case):
    data = DATA[case["data"][0]]
    mf = model_frame(case["formula"][0], data, allow_random=True)
    np.testing.assert_array_equal(mf.rows, case["rows"])
    ours = _lme4_order(mf.random_effects)
    assert len(ours) == len(case["terms"])
    for effect, ref in zip(ours, case["terms"]):
        assert _lme4_name(effect) == ref["group"][0]
        assert effect.coef_names == ref["cnms"]
        n, q = effect.Z.shape
        assert n == mf.nobs and q == len(effect.coef_names)
        assert effect.Z.flags.c_contiguous and effect.Z.dtype == np.float64
        assert effect.codes.dtype == np.int64 and effect.codes.shape == (n,)
        ref_codes = np.asarray(ref["codes"]) - 1
        # the same partition of the rows into levels (labels of g1:g2 differ: brms vs lme4)
        pairs = set(zip(effect.codes.tolist(), ref_codes.tolist()))
        assert len(pairs) == len(effect.levels) == len(ref["levels"])
        if ":" not in effect.group:
            assert effect.levels == ref["levels"]
            np.testing.assert_array_equal(effect.codes, ref_codes)
        to_ref = np.empty(len(effect.levels), dtype=np.int64)
        for ours_code, ref_code in pairs:
            to_ref[ours_code] = ref_code
        Zt = np.zeros((q * len(effect.levels), n))
        for k in range(q):
            Zt[to_ref[effect.codes] * q + k, np.arange(n)] = effect.Z[:, k]
        ref_Zt = np.asarray(ref["Zt"], dtype=float).reshape(ref["Zt_dim"])
        np.testing.assert_array_equal(Zt, ref_Zt)


def test_sleepstudy_slopes_by_hand():
    data = DATA["sleepstudy"]
    mf = model_frame("Reaction ~ Days + (Days | Subject)", data, allow_random=True)
    (effect,) = mf.random_effects
    assert effect.group == "Subject" and effect.group_columns == ("Subject",)
    assert effect.coef_names == ["(Intercept)", "Days"] and effect.correlated
    assert effect.bar_text == "(Days | Subject)" and effect.term_index == 0
    np.testing.assert_array_equal(effect.Z, np.column_stack([np.ones(180), data["Days"]]))
    assert len(effect.levels) == 18
    np.testing.assert_array_equal(np.asarray(effect.levels)[effect.codes], data["Subject"])
    assert [g.name for g in mf.groups] == ["Subject"]
    assert mf.column_names == ["(Intercept)", "Days"]


def test_double_bar_expansion_and_fields():
    data = DATA["small"]
    mf = model_frame("y ~ x + (1 | g2) + (x + f || g1)", data, allow_random=True)
    got = [(e.group, e.coef_names, e.correlated, e.term_index, e.bar_text) for e in mf.random_effects]
    assert got == [
        ("g2", ["(Intercept)"], True, 0, "(1 | g2)"),
        ("g1", ["(Intercept)"], False, 1, "(x + f || g1)"),
        ("g1", ["x"], False, 1, "(x + f || g1)"),
        ("g1", ["fa", "fb", "fc"], False, 1, "(x + f || g1)"),  # a factor's levels stay together
    ]
    assert [g.name for g in mf.groups] == ["g2", "g1"]
    (zero,) = model_frame("y ~ (0 + x || g1)", data, allow_random=True).random_effects
    assert zero.coef_names == ["x"]


def test_nested_slopes_and_several_bars_on_one_factor():
    data = DATA["small"]
    mf = model_frame("y ~ x + (1 + x | g1/g2) + (0 + z | g1)", data, allow_random=True)
    assert [(e.group, e.group_columns, e.coef_names, e.term_index) for e in mf.random_effects] == [
        ("g1", ("g1",), ["(Intercept)", "x"], 0),
        ("g1:g2", ("g1", "g2"), ["(Intercept)", "x"], 0),
        ("g1", ("g1",), ["z"], 1),
    ]
    kept = data.iloc[mf.rows]
    assert mf.rows.shape[0] == kept[["y", "x", "z", "g1", "g2"]].notna().all(axis=1).sum()
    labels = (kept["g1"] + "_" + kept["g2"]).to_numpy()
    nested = mf.random_effects[1]
    np.testing.assert_array_equal(np.asarray(nested.levels)[nested.codes], labels)
    assert nested.levels == sorted(set(labels))
    np.testing.assert_array_equal(mf.random_effects[2].Z[:, 0], kept["z"].to_numpy())
    # the grouping factor object is shared by the terms on g1
    assert mf.random_effects[0].codes is mf.random_effects[2].codes


def test_slope_rows_dropped_listwise_with_fixed_part():
    data = DATA["small"]
    fixed = model_frame("y ~ x", data)
    mf = model_frame("y ~ x + (z | g1)", data, allow_random=True)
    assert fixed.n_dropped == 2 and mf.n_dropped == 3  # z is missing in one more row
    assert 29 not in mf.rows and 29 in fixed.rows
    np.testing.assert_array_equal(mf.X, fixed.X[np.isin(fixed.rows, mf.rows)])


def test_intercept_only_groups_unchanged():
    data = DATA["small"]
    mf = model_frame("y ~ x + (1 | g1/g2)", data, allow_random=True)
    assert [g.name for g in mf.groups] == [e.group for e in mf.random_effects] == ["g1", "g1:g2"]
    for g, e in zip(mf.groups, mf.random_effects):
        np.testing.assert_array_equal(g.codes, e.codes)
        assert g.levels == e.levels and e.coef_names == ["(Intercept)"]
        np.testing.assert_array_equal(e.Z, np.ones((mf.nobs, 1)))
    with pytest.raises(FormulaError, match="appears twice"):
        model_frame("y ~ x + (1 | g1) + (1 | g1)", data, allow_random=True)


def test_random_slope_errors():
    data = DATA["small"]
    with pytest.raises(ColumnNotFoundError, match="'w'"):
        model_frame("y ~ x + (w | g1)", data, allow_random=True)
    with pytest.raises(FormulaError, match="random-effect"):
        model_frame("y ~ x + (x | g1)", data)  # ols: fixed effects only
    with pytest.raises(FormulaError, match="no coefficients"):
        model_frame("y ~ x + (0 | g1)", data, allow_random=True)
    with pytest.raises(FormulaError, match="'.'"):
        model_frame("y ~ x + (. | g1)", data, allow_random=True)
    one_level = data.assign(h=np.where(data["g1"] == "s1", "u", None))
    with pytest.raises(ModelSpecError, match="'h' has only one level"):
        model_frame("y ~ x + (h | g1)", one_level, allow_random=True)
