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
