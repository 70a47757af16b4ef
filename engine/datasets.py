"""The study's data, shipped with the package, and the preparation the analysis applies.

Source: Alan, S., Boneva, T. & Ertac, S. (2019). "Ever Failed, Try Again, Succeed Better:
Results from a Randomized Educational Intervention on Grit." Quarterly Journal of Economics
134(3), 1121-1162. Replication data: Harvard Dataverse, doi:10.7910/DVN/SAVGAL (Sample 2).
The copy shipped here is byte-identical to the blog series by E. Terlaak (2021) that re-ran the
analysis in R; see ``engine/data/README.md``.

``load_grit()`` returns the frame the analysis uses: the raw columns, with the columns the
analysis treats as factors as pandas categoricals whose labels are what R's ``factor()`` prints
(``"0"``, ``"1"``, ``"0.4"``...), levels in R's order (numeric order), and ``grit`` labelled
``control`` / ``intervention``.
"""

from __future__ import annotations

import os
import re
from importlib import resources

import numpy as np
import pandas as pd

from engine.errors import ColumnNotFoundError, DataError
from engine.validate import check_numeric_columns, read_data_file, checked_arguments

CITATION = (
    "Alan, S., Boneva, T. & Ertac, S. (2019). Ever Failed, Try Again, Succeed Better: Results from "
    "a Randomized Educational Intervention on Grit. Quarterly Journal of Economics 134(3), "
    "1121-1162. Data: Harvard Dataverse, doi:10.7910/DVN/SAVGAL (Sample 2)."
)

#: Columns the analysis makes factors besides those matching ``FACTOR_PATTERN`` (R's prep.R).
GRIT_FACTOR_COLUMNS = (
    "sample", "schoolid", "classid", "grit", "task_ability", "playedr1", "alldiff",
    "playedv2", "inconsistent", "male", "risk", "wealth",
)
#: Columns whose names match this pattern are factors too (choice, success, payoff, difficult).
FACTOR_PATTERN = re.compile(r"choice|success|payoff|difficult")
GRIT_LEVELS = ("control", "intervention")
#: The columns every analysis step needs; a user's own copy must have them.
REQUIRED_COLUMNS = (
    "schoolid", "classid", "studentid", "grit", "csize", "male", "raven", "age", "wealth",
    "mathscore1", "mathscore2", "mathscore3", "verbalscore1", "belief_survey1", "grit_survey1",
)


def data_path(name: str = "Sample2_Data.csv") -> str:
    """Path of a data file shipped inside the package."""
    return str(resources.files("engine").joinpath("data", name))


def _read(path: str | os.PathLike | None) -> pd.DataFrame:
    if path is None:
        path = data_path()
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path!r}")
    lower = path.lower()
    if lower.endswith(".dta"):
        frame = read_data_file(pd.read_stata, path, "Stata .dta", convert_categoricals=False)
        # Stata stores float32; upcast as R's haven does so numbers equal the CSV's.
        for col in frame.columns:
            if frame[col].dtype == np.float32:
                frame[col] = frame[col].astype(np.float64)
        # Whole-number columns as integers where nothing is missing, as in the CSV.
        for col in frame.columns:
            values = frame[col]
            if values.dtype.kind == "f" and values.notna().all() and np.all(values == np.round(values)):
                frame[col] = values.astype(np.int64)
        return frame
    if lower.endswith((".csv", ".txt", ".csv.gz")):
        return read_data_file(pd.read_csv, path, "CSV")
    raise DataError(f"unsupported data file type for {path!r}: expected .csv or .dta")


@checked_arguments
def load_grit_raw(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The study's data as stored: 1,499 students, 52 numeric columns, NaN for missing.

    ``path`` may point to a user's own copy (CSV or Stata ``.dta``); default: the shipped copy.
    """
    frame = _read(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ColumnNotFoundError(
            f"the grit data at {path or data_path()!r} lacks required column(s): {', '.join(missing)}"
        )
    check_numeric_columns(frame, REQUIRED_COLUMNS, os.fspath(path or data_path()))
    if len(frame) == 0:
        raise DataError(f"the grit data at {path!r} has no data rows")
    return frame


def r_factor_label(value: float) -> str:
    """The label R's ``factor()`` gives a number: ``as.character`` with 15 significant digits."""
    if float(value).is_integer():
        return str(int(value))
    return format(float(value), ".15g")


def as_r_factor(values: pd.Series, labels: tuple[str, ...] | None = None) -> pd.Series:
    """Turn a numeric column into a categorical as R's ``factor()`` does: sorted levels, R labels."""
    observed = np.sort(pd.unique(values.dropna().to_numpy(dtype=float)))
    level_labels = [r_factor_label(v) for v in observed]
    codes = np.full(len(values), -1, dtype=np.int64)
    present = values.notna().to_numpy()
    codes[present] = np.searchsorted(observed, values.to_numpy(dtype=float)[present])
    if labels is not None:
        if len(labels) != len(level_labels):
            raise DataError(
                f"column {values.name!r} has {len(level_labels)} levels, expected {len(labels)}"
            )
        level_labels = list(labels)
    return pd.Series(
        pd.Categorical.from_codes(codes, categories=level_labels), index=values.index, name=values.name
    )


def grit_factor_columns(columns) -> list[str]:
    """The columns the analysis treats as factors, in data order."""
    wanted = set(GRIT_FACTOR_COLUMNS)
    return [c for c in columns if c in wanted or FACTOR_PATTERN.search(c)]


def prepare_grit(raw: pd.DataFrame) -> pd.DataFrame:
    """Apply the analysis' preparation (R's prep.R) to a raw frame; ``raw`` is not modified."""
    frame = raw.copy()
    for col in grit_factor_columns(frame.columns):
        if isinstance(frame[col].dtype, pd.CategoricalDtype):
            continue
        frame[col] = as_r_factor(frame[col], GRIT_LEVELS if col == "grit" else None)
    return frame


@checked_arguments
def load_grit(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The prepared analysis frame of the grit study (see the module docstring)."""
    return prepare_grit(load_grit_raw(path))
