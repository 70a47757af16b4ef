"""The fitted model's design on new data: R's ``model.frame(delete.response(terms(fit)), newdata,
na.action = na.pass, xlev = fit$xlevels)`` followed by ``model.matrix(..., contrasts = fit$contrasts)``.

What R does there (stats/R/models.R, ``model.frame.default`` and ``.checkMFClasses``), and so
what this module does:

* The response is not needed (``delete.response``); every data column a predictor reads must be
  in ``newdata`` (else :class:`~engine.errors.ColumnNotFoundError`, naming it).
* A variable keeps the type it had in the fit: a numeric variable given as strings or a factor
  given as numbers is an error with R's wording ("variable 'x' was fitted with type "numeric" but
  type "character" was supplied").
* A factor is re-coded on the levels it had in the fit (after the fit dropped its unused levels),
  by label; levels unused in ``newdata`` are ignored; a level the fit never saw is R's error
  "factor f has new level z" (R's ``ngettext(length(m), ...)`` says "levels" whenever newdata
  has more than one level), raised as :class:`~engine.errors.NewFactorLevelError`.
* The coding is the fit's: the same contrasts (treatment, or ``contr.poly`` for ordered factors on
  the fit's number of levels), the same indicator-or-contrast decision per term (R's factors
  table), the same column names (checked against the fit's).
* ``na.action = na.pass``: a row with a missing predictor keeps its place and gets NaN in the
  columns of the terms that read it, hence a NaN prediction.

The formula layer's parser and evaluators (``engine.formula``) are reused; only the mapping to
the fit's levels and coding is new. Written for ``ols`` and meant for ``brm``'s predictions too
(the fixed-effect design; grouping factors are left to the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.errors import ColumnNotFoundError, DataError, NewFactorLevelError
from engine.rcompat.language import deep_tree_walk

__all__ = ["FittedTerms", "fitted_terms", "new_design", "NewRandomTerm", "NewRows", "multilevel_rows"]


@dataclass(frozen=True)
class FittedTerms:
    """R's ``terms`` + ``xlevels`` + ``contrasts`` of a fitted model: what a new design needs.

    formula: the parsed formula (``.`` expanded over the fit's data columns); factors: variable
    label -> FactorInfo (levels as fitted); column_names: the fit's design columns.
    """

    formula: object
    factors: dict
    column_names: tuple[str, ...]
    has_intercept: bool
    coding: tuple[dict, ...]      # per term: variable index -> 1 (contrasts) or 2 (indicators)
    predictor_columns: tuple[str, ...]


@deep_tree_walk
def fitted_terms(model_frame, data_columns=None) -> FittedTerms:
    """The terms of a fitted :class:`~engine.formula.ModelFrame` (``data_columns``: the fit's data
    columns, needed only to expand ``.`` as the fit did)."""
    from engine.formula import _arith_sources, _build_formula, _term_codes, parse_formula

    parsed = parse_formula(model_frame.formula)
    if parsed.has_dot:
        lhs_columns: list = []
        _arith_sources(parsed._lhs, lhs_columns)
        used = {c for c, _ in lhs_columns}
        dot_columns = tuple(str(c) for c in (data_columns or ()) if str(c) not in used)
        parsed = _build_formula(parsed.text, parsed._lhs, parsed._rhs, dot_columns)
    is_factor = [label in model_frame.factors for label in parsed.variables]
    coding = _term_codes(parsed.terms, is_factor, parsed.has_intercept)
    first = 0 if parsed.response is None else 1
    columns: list = []
    for node in parsed._variable_nodes[first:]:
        refs: list = []
        _arith_sources(node, refs)
        columns.extend(c for c, _ in refs if c not in columns)
    return FittedTerms(parsed, dict(model_frame.factors), tuple(model_frame.column_names),
                       bool(parsed.has_intercept), tuple(coding), tuple(columns))


def _r_type(variable) -> str:
    """R's class name of an evaluated variable, for the messages of ``.checkMFClasses``."""
    if variable.kind == "numeric":
        return "numeric"
    if variable.logical:
        return "logical"
    return "factor"


def _check_new_levels(label: str, new_levels: list[str], codes: np.ndarray, fit_levels: list[str]):
    present = np.zeros(len(new_levels), dtype=bool)
    valid = codes[codes >= 0]
    present[np.unique(valid)] = True
    used = [lev for lev, p in zip(new_levels, present) if p]
    unseen = [lev for lev in used if lev not in fit_levels]
    if unseen:
        word = "level" if len(used) == 1 else "levels"  # R: ngettext(length(m), ...)
        raise NewFactorLevelError(f"factor {label} has new {word} {', '.join(unseen)}")


def _factor_codes(label: str, variable, info) -> np.ndarray:
    """Codes of a factor variable evaluated on new data, on the fit's levels (-1: missing)."""
    if variable.kind != "factor" or variable.logical != info.logical:
        fitted = "logical" if info.logical else "factor"
        raise DataError(f"variable {label!r} was fitted with type \"{fitted}\" but type "
                        f"\"{_r_type(variable)}\" was supplied")
    if info.logical:
        return variable.codes
    _check_new_levels(label, variable.levels, variable.codes, info.levels)
    position = {lev: i for i, lev in enumerate(info.levels)}
    remap = np.array([position.get(lev, -1) for lev in variable.levels] + [-1], dtype=np.int64)
    return remap[variable.codes]  # code -1 (missing) picks the trailing -1


def _coding_matrix(info, full: bool) -> np.ndarray:
    from engine.formula import _poly_contrasts

    k = len(info.levels)
    if full:
        return np.eye(k)
    if info.ordered:
        return _poly_contrasts(k)[0]
    return np.eye(k)[:, 1:]


@deep_tree_walk
def new_design(terms: FittedTerms, newdata: pd.DataFrame) -> np.ndarray:
    """The fitted model's design matrix on ``newdata``: (len(newdata), p) float64, R's columns.

    Rows with a missing predictor hold NaN in the columns of the terms that read it.
    ``newdata`` is never modified.
    """
    from engine.formula import (_FACTOR_FUNCTIONS, _as_factor, _Call, _evaluate_arith,
                          _column, _evaluate_column, _Name)

    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, not {type(newdata).__name__}")
    missing_columns = [c for c in terms.predictor_columns if c not in newdata.columns]
    if missing_columns:
        raise ColumnNotFoundError(
            f"newdata lacks column(s) {', '.join(map(repr, missing_columns))} that the fitted "
            f"model {terms.formula.text!r} uses")
    parsed = terms.formula
    m = len(newdata)
    columns = {}
    for name in terms.predictor_columns:
        columns[name] = _evaluate_column(_column(newdata, name, parsed.text, None), name)

    # every variable a term uses: numeric values (m,) or codes on the fit's levels (m,)
    used = sorted({v for term in parsed.terms for v in term.variables})
    values: dict[int, np.ndarray] = {}
    for v in used:
        label = parsed.variables[v]
        node = parsed._variable_nodes[v]
        info = terms.factors.get(label)
        if isinstance(node, _Name):
            variable = columns[node.name]
        elif isinstance(node, _Call) and node.func in _FACTOR_FUNCTIONS:
            variable = _as_factor(columns[node.args[0].name], label)
        else:
            with np.errstate(all="ignore"):
                value = _evaluate_arith(node, columns, label)
            values[v] = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=np.float64), (m,)))
            continue
        if info is not None:
            values[v] = _factor_codes(label, variable, info)
        elif variable.kind != "numeric" or variable.logical:
            raise DataError(f"variable {label!r} was fitted with type \"numeric\" but type "
                            f"\"{_r_type(variable)}\" was supplied")
        else:
            values[v] = variable.values

    # one (m, p) array filled term by term: a partition's design is the largest array of a
    # partitioned fit's pass, and per-term blocks concatenated at the end doubled its memory traffic
    X = np.empty((m, len(terms.column_names)))
    names: list[str] = []
    if terms.has_intercept:
        X[:, 0] = 1.0
        names.append("(Intercept)")
    for j, term in enumerate(parsed.terms):
        block = None  # None: the empty product (1)
        term_names = [""]
        for v in term.variables:
            label = parsed.variables[v]
            info = terms.factors.get(label)
            if info is None:
                cols = values[v][:, None]
                piece_names = [label]
            else:
                full = terms.coding[j][v] == 2
                matrix = _coding_matrix(info, full)
                codes = values[v]
                cols = matrix[np.where(codes < 0, 0, codes)]
                cols[codes < 0] = np.nan  # na.pass: a missing factor value gives NaN columns
                if full:
                    piece_names = [label + lev for lev in info.levels]
                elif info.ordered:
                    from engine.formula import _poly_contrasts

                    piece_names = [label + s for s in _poly_contrasts(len(info.levels))[1]]
                else:
                    piece_names = [label + lev for lev in info.levels[1:]]
            # first variable varies fastest, as model_frame and R's model.matrix
            block = cols if block is None else (cols[:, :, None] * block[:, None, :]).reshape(m, -1)
            term_names = [f"{prefix}:{name}" if prefix else name
                          for name in piece_names for prefix in term_names]
        start = len(names)
        names.extend(term_names)
        if len(names) <= X.shape[1]:
            X[:, start:len(names)] = 1.0 if block is None else block
    if tuple(names) != terms.column_names:  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"new design columns {names} differ from the fit's {list(terms.column_names)}")
    return X


# ----------------------------------------------------------------------------- multilevel models


@dataclass(frozen=True)
class NewRandomTerm:
    """One expanded random-effect term evaluated on new rows: ``group`` (brms name, e.g.
    ``"school:class"``), ``coef_names`` (brms names: ``Intercept``, ``Days``), ``Z`` (m, q) the
    term's varying-effect design on the new rows, ``labels`` (m,) each row's level label."""

    group: str
    coef_names: tuple[str, ...]
    Z: np.ndarray
    labels: tuple[str, ...]


@dataclass(frozen=True)
class NewRows:
    """A multilevel model's design on new rows: fixed design ``X`` (m, p) and the random terms."""

    X: np.ndarray
    terms: tuple[NewRandomTerm, ...]


def brms_coef_name(r_name: str) -> str:
    """brms' name of a varying coefficient from R's column name: ``(Intercept)`` -> ``Intercept``."""
    return "Intercept" if r_name == "(Intercept)" else r_name


def multilevel_rows(formula: str, train: pd.DataFrame, train_X: np.ndarray, column_names, newdata: pd.DataFrame,
                    group_columns, needed_groups, placeholder_columns=()) -> NewRows:
    """The fitted multilevel model's design on ``newdata``: the fixed design and each random
    term's Z columns and level labels for the new rows (brms' ``standata(fit, newdata)``).

    ``formula`` is the right-hand side's formula with any response (``"~ x + (x | g)"`` also
    works, the left side is replaced); ``train`` the model columns of the rows used in fitting and
    ``train_X`` their fixed design (the check that the stacked evaluation reproduces it);
    ``group_columns`` the data columns of each fitted grouping factor (tuples, in order) and
    ``needed_groups`` the indices of those whose levels the caller needs (the others, and
    ``placeholder_columns`` such as the response, may be absent from ``newdata``).

    The rows are put through the formula by stacking them under the training rows and
    evaluating the formula once (engine.formula.model_frame): factor codings, contrasts,
    interactions and the bars' left-side designs are then exactly the fitted ones. Errors:
    a predictor absent from ``newdata`` (ColumnNotFoundError, named), a predictor with a missing
    value (DataError, named), a factor level unseen in fitting (NewFactorLevelError, named);
    grouping columns may bring new levels (the caller decides what they mean). ``newdata`` is
    never modified.
    """
    from engine.formula import model_frame

    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    if len(newdata) == 0:
        raise DataError("newdata has no rows")
    all_group_cols = {c for cols in group_columns for c in cols}
    needed_group_cols = {c for g in needed_groups for c in group_columns[g]}
    placeholder_columns = set(placeholder_columns)
    train = train.copy()
    pieces = {}
    for col in train.columns:
        if col in newdata.columns and col not in placeholder_columns:
            values = newdata[col].reset_index(drop=True)
        elif col in placeholder_columns or (col in all_group_cols and col not in needed_group_cols):
            values = pd.Series([train[col].iloc[0]] * len(newdata))  # a placeholder that is never used
        else:
            raise ColumnNotFoundError(f"newdata lacks column {col!r}, which the model's formula {formula!r} uses")
        missing = pd.isna(values).to_numpy()
        if missing.any() and (col not in all_group_cols or col in needed_group_cols):
            rows = ", ".join(str(i) for i in np.flatnonzero(missing)[:5])
            raise DataError(f"newdata column {col!r} has missing values (rows {rows}); predictions need every predictor")
        if isinstance(train[col].dtype, pd.CategoricalDtype):
            # keep the fitted levels and their order; grouping columns may bring new levels
            cats = list(train[col].cat.categories)
            seen = set(cats)
            unseen = [v for v in pd.unique(values) if v not in seen]
            if unseen and col not in all_group_cols:
                _raise_unseen(col, unseen)
            cats = cats + unseen
            train[col] = train[col].cat.set_categories(cats)
            values = pd.Categorical(values, categories=cats, ordered=train[col].cat.ordered)
        elif col not in all_group_cols and not pd.api.types.is_numeric_dtype(train[col].dtype):
            seen = set(train[col].astype(str))
            unseen = [v for v in pd.unique(pd.Series(values).astype(str)) if v not in seen]
            if unseen:
                _raise_unseen(col, unseen)
        pieces[col] = values
    stacked = pd.concat([train, pd.DataFrame(pieces)], ignore_index=True)
    n = len(train)
    response = "engine_newdata_response__"
    while response in stacked.columns:
        response += "_"
    rhs = _right_side(formula)
    stacked[response] = 0.0
    frame = model_frame(f"{response} ~ {rhs}", stacked, allow_random=True)
    if frame.n_dropped:  # pragma: no cover - missing values were rejected above
        raise DataError("newdata has rows the formula cannot use (missing values)")
    if list(frame.column_names) != list(column_names):  # pragma: no cover - unseen levels were rejected above
        raise DataError(f"newdata gives design columns the fitted model does not have: {frame.column_names}")
    if not np.allclose(frame.X[:n], train_X, rtol=1e-10, atol=1e-12):
        raise DataError(
            f"the formula {formula!r} uses a transformation that depends on the data (e.g. scale() "
            "or poly()); predictions on newdata are not available for it")
    terms = []
    for effect in frame.random_effects:
        codes = np.asarray(effect.codes)[n:]
        terms.append(NewRandomTerm(
            group=effect.group, coef_names=tuple(brms_coef_name(c) for c in effect.coef_names),
            Z=np.ascontiguousarray(effect.Z[n:]), labels=tuple(str(effect.levels[c]) for c in codes)))
    return NewRows(np.ascontiguousarray(frame.X[n:]), tuple(terms))


def _raise_unseen(col: str, unseen) -> None:
    raise NewFactorLevelError(
        f"newdata column {col!r} has level(s) not seen in fitting: {', '.join(map(repr, unseen[:5]))}")


def _right_side(formula: str) -> str:
    """The right-hand side of a (brms) formula, the left side (``y | trials(n)``) dropped."""
    depth = 0
    for i, ch in enumerate(formula):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "~" and depth == 0:
            return formula[i + 1:]
    return formula
