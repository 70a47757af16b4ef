"""The shipped study data and its preparation (mirrors R's prep.R in ../shared/reference)."""

import numpy as np
import pandas as pd
import pytest

from engine import datasets
from engine.errors import ColumnNotFoundError, DataError


def test_shape_and_nesting():
    data = datasets.load_grit()
    assert data.shape == (1499, 52)
    assert data["schoolid"].nunique() == 16
    assert data["classid"].nunique() == 42
    assert data["studentid"].is_unique
    # every class lies in exactly one school
    assert (data.groupby("classid", observed=True)["schoolid"].nunique() == 1).all()


def test_factor_preparation_matches_r():
    data = datasets.load_grit()
    assert list(data["grit"].cat.categories) == ["control", "intervention"]
    assert data["grit"].value_counts()["control"] == 816
    assert list(data["male"].cat.categories) == ["0", "1"]
    assert list(data["wealth"].cat.categories) == ["1", "2", "3", "4", "5"]
    assert data["wealth"].isna().sum() == 166
    for col in ["choicer1", "successr1", "payoffr1", "difficult_imposedr1", "bothpayoffs", "success"]:
        assert isinstance(data[col].dtype, pd.CategoricalDtype), col
    assert data["mathscore2"].dtype == np.float64
    assert data["mathscore2"].isna().sum() == 152
    assert data["csize"].min() == 17 and data["csize"].max() == 52


def test_stata_and_csv_agree():
    csv = datasets.load_grit()
    dta = datasets.load_grit(datasets.data_path("Sample2_Data.dta"))
    pd.testing.assert_frame_equal(csv, dta)


def test_raw_frame_is_untouched_by_preparation():
    raw = datasets.load_grit_raw()
    before = raw.copy()
    datasets.prepare_grit(raw)
    pd.testing.assert_frame_equal(raw, before)


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "mine.csv"
    datasets.load_grit_raw().drop(columns=["raven"]).to_csv(path, index=False)
    with pytest.raises(ColumnNotFoundError, match="raven"):
        datasets.load_grit(path)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="not found"):
        datasets.load_grit(tmp_path / "nope.csv")
    other = tmp_path / "x.parquet"
    other.write_text("x")
    with pytest.raises(DataError, match="unsupported"):
        datasets.load_grit(other)


def test_r_factor_labels():
    assert datasets.r_factor_label(1.0) == "1"
    assert datasets.r_factor_label(0.4000000059604645) == "0.400000005960464"
