"""R / Wilkinson model formulas over pandas DataFrames, written from scratch.

``parse_formula("y ~ a*b + I(x^2) + (1 | g1/g2)")`` reads the text into a small syntax tree and the
term structure R's ``terms.formula`` builds; ``model_frame(formula, data)`` evaluates it on a
DataFrame the way R's ``model.frame`` + ``model.matrix`` do for ``lm``:

* Term algebra (R's ``terms.formula``, src/library/stats/src/model.c): ``+`` union, ``-`` removal,
  ``a:b`` interaction, ``a*b = a + b + a:b``, ``a/b = a + a:b``, ``b %in% a``, ``(a + b)^2`` all
  terms up to order 2; ``1`` / ``0`` / ``-1`` intercept; ``.`` all other columns. Terms are
  sorted by order (main effects, then two-way, ...), within an order as first created. Variables
  (a column, ``I(expr)``, ``log(x)``) are numbered by first appearance, response first; a term's
  label lists its variables in that order (``y ~ b:a`` has the term ``b:a``).
* Coding (Chambers & Hastie 1992, *Statistical Models in S*, sec. 2.4.1; R's ``TermCode`` and
  ``modelmatrix``): in a term T a factor f is coded by contrasts when T without f is empty or is
  contained in a term that precedes T, and by one indicator per level otherwise. Without an
  intercept the first factor of the first term that has a factor is coded by indicators.
  Contrasts are treatment contrasts (first level is the reference) for unordered factors and
  orthonormal polynomial contrasts (``.L``, ``.Q``, ``.C``, ``^4`` ...) for ordered categoricals,
  as R's default ``contrasts`` option. A term's columns are the row-wise Kronecker product of its
  variables' columns, first variable varying fastest, named ``a:b`` from the pieces
  (``gritintervention:male1``).
* Data (R's ``lm``: ``na.omit``, ``drop.unused.levels = TRUE``): rows with a missing value in any
  variable of the formula (response, predictors, the columns inside ``I()``, grouping columns) are
  dropped; levels absent after deletion are dropped. Categorical columns keep their category
  order; string columns are factors with levels sorted as R's ``sort()`` sorts them in an English
  locale (case-insensitive first, lower case before upper case on ties); bool columns are R
  logicals: factor with levels ``FALSE``, ``TRUE`` (column ``xTRUE``).
* Random-effect bars (lme4's ``findbars`` / ``mkReTrms``): ``(1 + x | g)``, ``(x | g)`` (intercept
  implied), ``(0 + x | g)``, ``(x || g)`` (= ``(1 | g) + (0 + x | g)``, one term per term of the
  left side, as lme4's ``expandDoubleVerts``), ``(x | g1/g2)`` (= ``(x | g1) + (x | g1:g2)``)
  become :class:`RandomEffect` s: the grouping factor and the left side's ``model.matrix`` on the
  kept rows (factors by treatment contrasts, ``(0 + f | g)`` all levels). Grouping factors carry
  brms names (the levels of ``g1:g2`` are the labels ``"<g1>_<g2>"`` sorted as R sorts strings,
  as brms does); the random-intercept bars' ones are also listed as :class:`GroupingFactor` s.

``factor(x)`` / ``as.factor(x)`` use a column as a factor (numbers as levels in numeric order).
``I(...)`` and the functions ``log exp sqrt abs log2 log10 log1p expm1`` are evaluated by a small
arithmetic evaluator over numpy arrays (``+ - * / ^``, parentheses, numbers); nothing is passed
to ``eval``. Names inside ``I()`` are printed as R's ``deparse`` prints them (``I(x * 2)``,
``I(csize^2)``, ``I(x/2)``).

The design matrix is written once into its final C-contiguous float64 array (the layout
``engine.ols.least_squares`` reads without a copy) by one Numba kernel
(``engine.formula_kernels.fill_design``), block of rows by block of rows: numeric columns are read
in place (a view of the DataFrame's float64 block where the layout allows), factors and
interactions from integer codes and small coding tables. What depends only on the formula (the
term structure, the columns read, the kernel's column program) is cached per formula text. From
``_DEFER_SCAN_ROWS`` rows on, a float64 column used only as a plain variable of fixed-effect
terms is scanned for NaN/Inf by that fill, its one pass over the data (a NaN/Inf found there, or
an error, makes the frame again after a scan: same result). An Arrow-backed string column is
factorized once per (immutable) Arrow array. The design's layout (names, assign, codings, the
kernel's program) is cached per (terms, variables' kinds and levels). Below ``_DEFER_SCAN_ROWS``
rows, a formula of plain columns (float64, integer or Categorical; bars ``(1 | g)`` only) goes
from the columns' arrays to that layout in a few kernel calls (``_plain_frame``: the kept rows,
then every factor's kept codes and levels), without the general path's per-variable objects;
anything else, or anything unusual there (an Inf, one level left, an error), takes the general
path.
"""

from __future__ import annotations

import difflib
import functools
import math
import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from engine.errors import ColumnNotFoundError, DataError, EngineError, FormulaError, ModelSpecError
from engine.formula_kernels import (DesignProgram, any_non_finite, combined_codes, fill_design, integer_unique,
                              gather_columns, kept_codes, kept_codes_2d, nan_inf_scan, plain_rows)
from engine.rcompat.collate import r_sort_key
from engine.rcompat.language import Bar as _Bar
from engine.rcompat.language import BinOp as _BinOp
from engine.rcompat.language import Call as _Call
from engine.rcompat.language import Dot as _Dot
from engine.rcompat.language import Name as _Name
from engine.rcompat.language import Num as _Num
from engine.rcompat.language import Paren as _Paren
from engine.rcompat.language import Unary as _Unary
from engine.rcompat.language import deparse as _deparse
from engine.rcompat.language import DEEP_RECURSION_LIMIT, deep_recursion, deep_tree_walk
from engine.rcompat.language import r_number as _r_number
from engine.rcompat.language import read_formula
from engine.validate import warn_nans_produced

__all__ = [
    "Formula",
    "GroupingFactor",
    "ModelFrame",
    "RandomEffect",
    "RandomTerm",
    "Term",
    "model_frame",
    "parse_formula",
]

# ----------------------------------------------------------------------------------------------
# Syntax: the formula is read by engine.rcompat.language (the one R parser); its nodes are
# used below under the names this module has always used.
# ----------------------------------------------------------------------------------------------

#: Functions allowed as variables (``log(x)``) and inside ``I()``; all vectorised numpy ufuncs.
_FUNCTIONS = {
    "log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs, "log2": np.log2,
    "log10": np.log10, "log1p": np.log1p, "expm1": np.expm1,
}


#: ``factor(x)`` / ``as.factor(x)``: a column used as a factor (numbers sorted numerically).
_FACTOR_FUNCTIONS = ("factor", "as.factor")


class _Parser:
    """The formula's (lhs, rhs) trees: :func:`engine.rcompat.language.read_formula` with the
    functions this module evaluates."""

    def __init__(self, text: str):
        self.text = text

    def parse(self):
        return read_formula(self.text, _FUNCTIONS, _FACTOR_FUNCTIONS)


# ----------------------------------------------------------------------------------------------
# Term algebra (R's terms.formula)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One model term: its variables (indices into ``Formula.variables``) and R's label."""

    variables: tuple[int, ...]
    label: str

    @property
    def order(self) -> int:
        return len(self.variables)


@dataclass(frozen=True)
class RandomTerm:
    """A random-effect bar ``(lhs | groups)`` or ``(lhs || groups)``.

    ``groups`` are the expanded grouping factors (``(1 | a/b)`` -> ``("a", "a:b")``),
    ``group_columns`` the data columns of each (``(("a",), ("a", "b"))``).
    ``intercept_only`` is True for ``(1 | g)``. ``lhs`` holds the left side as one-sided
    formulas, one per independent block: ``(x | g)`` -> ``(~x,)``; ``(x || g)`` -> ``(~1, ~0+x)``
    as lme4's ``expandDoubleVerts`` expands it (one block per term of the left side, a factor's
    indicator columns staying together in one block); ``correlated`` is False for ``||``.
    """

    text: str
    groups: tuple[str, ...]
    group_columns: tuple[tuple[str, ...], ...]
    intercept_only: bool
    pos: int
    correlated: bool = True
    lhs: tuple = field(default=(), compare=False)


@dataclass(frozen=True)
class Formula:
    """A parsed formula: syntax only, no data.

    ``variables`` are the variable labels in order of first appearance (response first when
    there is one); ``terms`` the fixed-effect terms sorted as R sorts them; ``has_dot`` says the
    right-hand side uses ``.`` (the terms then depend on the data: see ``model_frame``).
    """

    text: str
    response: str | None
    variables: tuple[str, ...]
    terms: tuple[Term, ...]
    has_intercept: bool
    random_terms: tuple[RandomTerm, ...]
    has_dot: bool
    fixed_text: str  # the formula without its random-effect bars, as R would print it
    _lhs: object = field(repr=False, compare=False, default=None)
    _rhs: object = field(repr=False, compare=False, default=None)
    _variable_nodes: tuple = field(repr=False, compare=False, default=())

    @property
    def term_labels(self) -> list[str]:
        return [t.label for t in self.terms]


class _TermBuilder:
    """Evaluates the right-hand side into an ordered list of variable sets (R's EncodeVars)."""

    def __init__(self, text: str, dot_columns: tuple[str, ...] | None):
        self.text = text
        self.dot_columns = dot_columns
        self.labels: list[str] = []
        self.nodes: list[object] = []
        self.intercept = True
        self.has_dot = False

    def variable(self, node) -> int:
        label = _deparse(node)
        if label not in self.labels:
            self.labels.append(label)
            self.nodes.append(node)
        return self.labels.index(label)

    def extract(self, node, checkonly: bool = False):
        """R's ExtractVars: number the variables in order of appearance before expanding;
        plain names in a removed part (``- b``) are not numbered there (calls are)."""
        if isinstance(node, _Name):
            if not checkonly:
                self.variable(node)
        elif isinstance(node, _Call):
            self.variable(node)
        elif isinstance(node, _Dot):
            if not checkonly and self.dot_columns is not None:
                for c in self.dot_columns:
                    self.variable(_Name(c, node.pos))
        elif isinstance(node, _Paren):
            self.extract(node.expr, checkonly)
        elif isinstance(node, _Unary):
            self.extract(node.operand, checkonly or node.op == "-")
        elif isinstance(node, _BinOp):
            self.extract(node.left, checkonly)
            if node.op != "^":
                self.extract(node.right, checkonly or node.op == "-")

    def encode(self, node, sign: int = 1) -> list[frozenset]:
        if isinstance(node, (_Name, _Call)):
            return [frozenset([self.variable(node)])]
        if isinstance(node, _Num):
            if node.value in (0.0, 1.0):
                # "+1"/"-0" ask for the intercept, "+0"/"-1" remove it (the last one wins).
                self.intercept = (node.value == 1.0) == (sign == 1)
                return []
            raise FormulaError(
                f"invalid model term {node.text!r}: only 0 and 1 (intercept) may appear as numbers",
                self.text, node.pos)
        if isinstance(node, _Dot):
            self.has_dot = True
            if self.dot_columns is None:
                return []
            return [frozenset([self.variable(_Name(c, node.pos))]) for c in self.dot_columns]
        if isinstance(node, _Paren):
            return self.encode(node.expr, sign)
        if isinstance(node, _Bar):
            raise FormulaError(
                "a random-effect term (... | g) can only be added to the formula with '+'",
                self.text, node.pos)
        if isinstance(node, _Unary):
            if node.op == "+":
                return self.encode(node.operand, sign)
            self.encode(node.operand, -sign)  # removing from nothing leaves nothing
            return []
        if isinstance(node, _BinOp):
            op = node.op
            if op == "+":
                return _unique(self.encode(node.left, sign) + self.encode(node.right, sign))
            if op == "-":
                left = self.encode(node.left, sign)
                right = set(self.encode(node.right, -sign))
                return [t for t in left if t not in right]
            if op in (":", "*", "/", "%in%", "^"):
                left = self.product_operand(node.left, node)
                if op == "^":
                    power = self.power(node.right)
                    right = left
                    for _ in range(power - 1):
                        right = _unique([a | b for a in left for b in right])
                    return right
                right = self.product_operand(node.right, node)
                if op == ":":
                    return _unique([a | b for a in left for b in right])
                if op == "*":
                    return _unique(left + right + [a | b for a in left for b in right])
                if op == "/":
                    whole = frozenset().union(*left) if left else frozenset()
                    return _unique(left + [whole | b for b in right])
                whole = frozenset().union(*right) if right else frozenset()  # %in%
                return _unique([a | whole for a in left])
        raise FormulaError("invalid model term", self.text, getattr(node, "pos", 0))

    def product_operand(self, node, parent) -> list[frozenset]:
        inner = node.expr if isinstance(node, _Paren) else node
        if isinstance(inner, _Num):
            raise FormulaError(
                f"a number cannot be an operand of {parent.op!r}", self.text, inner.pos)
        terms = self.encode(node)
        return [t for t in terms if t]

    def power(self, node) -> int:
        inner = node.expr if isinstance(node, _Paren) else node
        if isinstance(inner, _Num) and inner.value >= 1 and inner.value == int(inner.value):
            return int(inner.value)
        raise FormulaError("the power of a formula term must be a positive integer",
                           self.text, getattr(inner, "pos", 0))


def _unique(terms: list[frozenset]) -> list[frozenset]:
    seen: set = set()
    out = []
    for t in terms:
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def _split_sum(node, sign: int = 1) -> list[tuple[int, object]]:
    """The top-level summands of ``node`` with their signs (to take random bars out)."""
    if isinstance(node, _BinOp) and node.op in ("+", "-"):
        right_sign = sign if node.op == "+" else -sign
        return _split_sum(node.left, sign) + _split_sum(node.right, right_sign)
    return [(sign, node)]


def _join_sum(parts: list[tuple[int, object]]):
    node = None
    for sign, part in parts:
        if node is None:
            node = part if sign == 1 else _Unary("-", part, 0)
        else:
            node = _BinOp("+" if sign == 1 else "-", node, part, 0)
    return node


def _group_columns(node, text: str) -> list[tuple[str, ...]]:
    """Expand the right side of a bar: a -> [a]; a/b -> [a, a:b]; a:b -> [a:b]."""
    if isinstance(node, _Paren):
        return _group_columns(node.expr, text)
    if isinstance(node, _Name):
        return [(node.name,)]
    if isinstance(node, _BinOp) and node.op == ":":
        left = _group_columns(node.left, text)
        right = _group_columns(node.right, text)
        if len(left) == 1 and len(right) == 1:
            return [left[0] + right[0]]
    if isinstance(node, _BinOp) and node.op == "/":
        left = _group_columns(node.left, text)
        right = _group_columns(node.right, text)
        if len(right) == 1:
            return left + [left[-1] + right[0]]
    raise FormulaError(
        "a grouping factor must be a column, 'g1:g2' or 'g1/g2'", text, getattr(node, "pos", 0))


def _bar_blocks(bar: _Bar, text: str) -> tuple:
    """The left side of a bar as one-sided formulas (lme4's ``mkReTrms`` evaluates
    ``model.matrix(~lhs, fr)``; ``findbars`` first expands ``||`` as ``expandDoubleVerts``:
    ``(a + b || g)`` -> ``(1 | g) + (0 + a | g) + (0 + b | g)``, one block per term label)."""
    whole = _build_formula(text, None, bar.lhs, None)
    if whole.has_dot:
        raise FormulaError("'.' cannot be used in a random-effect term", text, bar.pos)
    if whole.random_terms:
        raise FormulaError("a random-effect term cannot contain another one", text, bar.pos)
    if not whole.terms and not whole.has_intercept:
        raise FormulaError(
            f"random-effect term {bar.text or _deparse(bar)} has no coefficients", text, bar.pos)
    if not bar.double:
        return (whole,)
    blocks = []
    if whole.has_intercept:
        blocks.append(_build_formula(text, None, _Num(1.0, "1", bar.pos), None))
    for label in whole.term_labels:  # lme4 pastes "0+<label>" and parses it again
        block_text = "~0+" + label
        _, rhs = _Parser(block_text).parse()
        blocks.append(_build_formula(block_text, None, rhs, None))
    return tuple(blocks)


def _random_term(bar: _Bar, text: str) -> RandomTerm:
    groups = _group_columns(bar.rhs, text)
    blocks = _bar_blocks(bar, text)
    intercept_only = all(not b.terms and b.has_intercept for b in blocks)
    return RandomTerm(
        text=bar.text or _deparse(bar),
        groups=tuple(":".join(g) for g in groups),
        group_columns=tuple(groups),
        intercept_only=intercept_only,
        pos=bar.pos,
        correlated=not bar.double,
        lhs=blocks,
    )


def _build_formula(text: str, lhs, rhs, dot_columns: tuple[str, ...] | None) -> Formula:
    builder = _TermBuilder(text, dot_columns)
    response = None
    if lhs is not None:
        if isinstance(lhs, _Bar):
            raise FormulaError("a random-effect term cannot be the response", text, lhs.pos)
        inner = lhs.expr if isinstance(lhs, _Paren) else lhs
        if not isinstance(inner, (_Name, _Call)):
            raise FormulaError(
                "the response must be one column or I(expression)", text, getattr(inner, "pos", 0))
        builder.variable(inner)
        response = builder.labels[0]
    summands = _split_sum(rhs)
    random_terms = []
    fixed_parts = []
    for sign, part in summands:
        if isinstance(part, _Bar):
            if sign != 1:
                raise FormulaError("a random-effect term cannot be removed with '-'", text, part.pos)
            random_terms.append(_random_term(part, text))
        else:
            fixed_parts.append((sign, part))
    fixed_rhs = _join_sum(fixed_parts) if fixed_parts else _Num(1.0, "1", 0)
    builder.extract(fixed_rhs)
    raw_terms = builder.encode(fixed_rhs)
    if response is not None:
        for t in raw_terms:
            if t == frozenset([0]):
                raise FormulaError(
                    f"the response {response!r} also appears on the right-hand side", text, 0)
    # R: sort by order, stable; label a term by its variables in order of appearance.
    ordered = sorted(raw_terms, key=len)
    terms = tuple(
        Term(tuple(sorted(t)), ":".join(builder.labels[v] for v in sorted(t))) for t in ordered)
    fixed_text = (_deparse(lhs) + " ~ " if lhs is not None else "~") + _deparse(fixed_rhs)
    return Formula(
        text=text,
        response=response,
        variables=tuple(builder.labels),
        terms=terms,
        has_intercept=builder.intercept,
        random_terms=tuple(random_terms),
        has_dot=builder.has_dot,
        fixed_text=fixed_text,
        _lhs=lhs,
        _rhs=rhs,
        _variable_nodes=tuple(builder.nodes),
    )


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str) -> Formula:
    lhs, rhs = _Parser(text).parse()
    return _build_formula(text, lhs, rhs, None)


def parse_formula(formula: str) -> Formula:
    """Parse formula text (syntax and term structure only; no data).

    Raises FormulaError with the 0-based position of the problem on bad syntax.
    """
    if isinstance(formula, Formula):
        return formula
    if not isinstance(formula, str):
        raise FormulaError(f"a formula must be a string, not {type(formula).__name__}")
    try:
        with deep_recursion():  # the parser and the term algebra recurse once per operator
            return _parse_cached(formula)
    except RecursionError:
        raise _too_deep(formula) from None


# ----------------------------------------------------------------------------------------------
# Model frame
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupingFactor:
    """A random-intercept grouping factor on the kept rows (brms naming)."""

    name: str
    codes: np.ndarray  # (n,) int64, 0-based level index per kept row
    levels: list[str]
    n_levels: int
    columns: tuple[str, ...] = ()  # data columns combined ("schoolid", "classid")
    # per column of ``columns``: (codes (n,) int64, levels) of factor(column) on the kept rows
    # (R's factor(): numbers in numeric order), the pieces an interaction is combined from
    parts: tuple = ()


@dataclass(frozen=True)
class RandomEffect:
    """One random-effect term after expansion: coefficients ``coef_names`` vary by ``group``.

    lme4's ``mkReTrms`` block for one bar and one grouping factor: ``Z`` is
    ``model.matrix(~lhs, fr)`` on the kept rows (R's coding rules and column names, treatment
    contrasts; ``(0 + f | g)`` gives one column per level), so the block's random-effect design
    is the row-wise Kronecker product of the indicators of ``codes`` with ``Z``. ``||`` bars are
    expanded first as lme4's ``expandDoubleVerts`` does (one term per term of the left side),
    ``g1/g2`` into ``g1`` and ``g1:g2``. Terms come in the order written (bars left to right; for
    one bar, ``||`` blocks outer, nesting levels inner); lme4 then sorts them by number of levels.
    ``group`` and ``levels`` follow brms (``"g1:g2"``, levels ``"<g1>_<g2>"`` sorted as R sorts
    strings); lme4 names the same factor ``g2:g1`` with levels ``"<g1>:<g2>"``.
    """

    group: str                      # grouping factor name as brms writes it: "Subject", "schoolid:classid"
    group_columns: tuple[str, ...]  # data columns combined
    codes: np.ndarray               # (n,) int64, 0-based level per kept row
    levels: list[str]               # level labels (as GroupingFactor.levels)
    Z: np.ndarray                   # (n, q) float64, C-contiguous: the bar's left-side design on kept rows
    coef_names: list[str]           # R's column names of the left side: ["(Intercept)", "Days"]
    correlated: bool                # False when the term came from `||`
    bar_text: str                   # the bar as written, e.g. "(Days | Subject)"
    term_index: int                 # position of the bar in the formula (0-based), before expansion
    parts: tuple = ()               # GroupingFactor.parts: factor() of each of group_columns

    @property
    def n_levels(self) -> int:
        return len(self.levels)


@dataclass(frozen=True)
class FactorInfo:
    """How a factor variable entered the model (for printing, prediction)."""

    levels: list[str]
    ordered: bool
    logical: bool


@dataclass(frozen=True)
class ModelFrame:
    """The data of a model after listwise deletion: response, fixed design, random-effect terms.

    ``random_effects`` holds every random-effect term after expansion (:class:`RandomEffect`);
    ``groups`` the grouping factors: one per bar and level of nesting when every bar is
    ``(1 | g)``, else each distinct grouping factor once.

    See /work/notes/interfaces.md. ``X`` is (n, p) C-contiguous float64 with R's columns (a frame
    ``engine.ols`` fitted from the columns in place, ``numeric_frame``, gathers it on first access);
    ``assign[j]`` is the term index of column j (0 = intercept, terms numbered from 1).
    """

    formula: str
    response_name: str
    y: np.ndarray
    X: np.ndarray
    column_names: list[str]
    assign: np.ndarray
    term_labels: list[str]
    has_intercept: bool
    rows: np.ndarray
    n_dropped: int
    groups: list[GroupingFactor]
    fixed_formula: str = ""
    random_terms: tuple[RandomTerm, ...] = ()
    factors: dict = field(default_factory=dict)  # variable label -> FactorInfo
    n_original: int = 0
    random_effects: tuple[RandomEffect, ...] = ()  # every expanded random-effect term, as written

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])


@dataclass
class _Variable:
    """A variable evaluated on all rows of the data."""

    label: str
    kind: str  # "numeric" | "factor"
    values: np.ndarray | None = None  # float64 (numeric)
    codes: np.ndarray | None = None  # int64, -1 = missing (factor)
    levels: list[str] | None = None
    ordered: bool = False
    logical: bool = False
    missing: np.ndarray | None = None  # bool mask or None (no missing)
    sources: tuple[str, ...] = ()  # data columns it reads
    has_inf: bool = False  # numeric: holds +-Inf somewhere (on all rows)
    unscanned: bool = False  # numeric: NaN/Inf not looked for yet (the design fill does it)


def _close_matches(name: str, columns) -> str:
    names = [str(c) for c in columns]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if not close:
        lower = {c.lower(): c for c in names}
        if name.lower() in lower:
            close = [lower[name.lower()]]
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _plain_columns(data: pd.DataFrame, names) -> list | None:
    """Each of ``names``' values (numpy arrays or ExtensionArrays, never copied) when every name is one
    column of ``data``; None otherwise (the fast paths then leave the frame to the general path, whose
    ``_column`` raises the named error)."""
    columns_index = data.columns
    arrays = []
    for name in names:
        try:
            loc = columns_index.get_loc(name)
        except (KeyError, TypeError, pd.errors.InvalidIndexError):
            return None
        if type(loc) is not int:
            return None
        arrays.append(data._get_column_array(loc))
    return arrays


def _column(data: pd.DataFrame, name: str, formula: str, pos: int | None):
    """The values of column ``name`` (a numpy array or pandas ExtensionArray, never copied)."""
    try:
        loc = data.columns.get_loc(name)
    except (KeyError, TypeError, pd.errors.InvalidIndexError):
        loc = None
    if loc is None:
        raise ColumnNotFoundError(
            f"column {name!r} (in formula {formula!r}) is not in the data{_close_matches(name, data.columns)}")
    if not isinstance(loc, (int, np.integer)):
        raise DataError(f"the data has more than one column named {name!r}")
    getter = getattr(data, "_get_column_array", None)  # pandas >= 1.4: no Series is built
    return getter(loc) if getter is not None else data.iloc[:, loc].array


def _r_label(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _r_number(float(value))
    return str(value)


_CATEGORY_LABELS: dict[int, tuple] = {}  # id(dtype) -> (dtype, labels): a DataFrame keeps its dtypes


def _category_labels(dtype: pd.CategoricalDtype) -> list[str]:
    """R's labels of a categorical's levels, computed once per dtype object (keyed by identity:
    equal unordered CategoricalDtypes may list their categories in different orders)."""
    hit = _CATEGORY_LABELS.get(id(dtype))
    if hit is not None and hit[0] is dtype:
        return list(hit[1])
    labels = tuple(_r_label(c) for c in dtype.categories)
    if len(_CATEGORY_LABELS) > 4096:
        _CATEGORY_LABELS.clear()
    _CATEGORY_LABELS[id(dtype)] = (dtype, labels)
    return list(labels)


def _factor_from_codes(codes: np.ndarray, categories, ordered: bool, label: str,
                       dtype: pd.CategoricalDtype | None = None) -> _Variable:
    if dtype is not None:  # the labels of a categorical's levels, computed once per dtype
        levels = _category_labels(dtype)
    else:
        levels = [_r_label(c) for c in categories]
    codes = np.asarray(codes, dtype=np.int64)
    missing = codes < 0
    return _Variable(label, "factor", codes=codes, levels=levels, ordered=ordered,
                     missing=missing if missing.any() else None)


def _numeric_variable(name: str, values: np.ndarray, sources: tuple[str, ...]) -> _Variable:
    """A numeric variable; its NaN rows (missing) and whether it holds an Inf, in one pass."""
    has_nan, has_inf = nan_inf_scan(values)
    missing = np.isnan(values) if has_nan else None
    return _Variable(name, "numeric", values=values, missing=missing, sources=sources,
                     has_inf=bool(has_inf))


def _evaluate_column(column, name: str, scan: bool = True) -> _Variable:
    """A data column (numpy array, ExtensionArray or Series) as a model variable, on all rows.

    ``scan=False``: a float64 numpy column is not scanned for NaN/Inf here (``unscanned``): the
    caller's design fill reads it and reports them (see ``model_frame``)."""
    if isinstance(column, pd.Series):
        column = column.array
        if isinstance(column, pd.arrays.NumpyExtensionArray):
            column = column.to_numpy()
    dtype = column.dtype
    if type(column) is np.ndarray and dtype.kind in "fiu":  # the common case, without dtype tests
        values = column if dtype == np.float64 else column.astype(np.float64)
        if not scan and dtype == np.float64:
            return _Variable(name, "numeric", values=values, sources=(name,), unscanned=True)
        return _numeric_variable(name, values, (name,))
    if isinstance(dtype, pd.CategoricalDtype):
        variable = _factor_from_codes(column.codes, dtype.categories, bool(dtype.ordered), name,
                                      dtype)
        variable.sources = (name,)
        return variable
    if pd.api.types.is_bool_dtype(dtype):
        if isinstance(column, np.ndarray):  # numpy bool: no missing values
            return _Variable(name, "factor", codes=column.astype(np.int64), levels=["FALSE", "TRUE"],
                             logical=True, sources=(name,))
        missing = np.asarray(pd.isna(column), dtype=bool)
        values = column.to_numpy(dtype=object)
        codes = np.where(missing, -1, 0).astype(np.int64)
        codes[~missing] = np.asarray(values[~missing], dtype=bool).astype(np.int64)
        return _Variable(name, "factor", codes=codes, levels=["FALSE", "TRUE"], logical=True,
                         missing=missing if missing.any() else None, sources=(name,))
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        if isinstance(column, np.ndarray):
            values = column.astype(np.float64, copy=False)
        else:  # nullable extension dtypes: pd.NA -> NaN
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        return _numeric_variable(name, values, (name,))
    if pd.api.types.is_string_dtype(dtype) or dtype == object:
        # hashing (no sort; NaN/None/pd.NA -> -1). A pyarrow-backed string array (pandas' default
        # string dtype where pyarrow is installed) factorizes in Arrow (dictionary_encode), 2-4x
        # faster than through Python objects; a Python-backed one is faster as an object array.
        if isinstance(column, pd.arrays.ArrowStringArray) and hasattr(column, "_pa_array"):
            return _arrow_string_factor(column, name)
        objects = column if isinstance(column, np.ndarray) else column.to_numpy(dtype=object)
        codes, uniques = pd.factorize(objects, use_na_sentinel=True)
        codes = np.asarray(codes, dtype=np.int64)
        missing = codes < 0
        missing_or_none = missing if missing.any() else None
        values = list(uniques)
        kinds = {type(v) for v in values}
        if kinds and all(issubclass(k, (bool, np.bool_)) for k in kinds):
            truth = np.array([bool(v) for v in values] + [False], dtype=np.int64)
            return _Variable(name, "factor", codes=np.where(missing, -1, truth[codes]),
                             levels=["FALSE", "TRUE"], logical=True, missing=missing_or_none,
                             sources=(name,))
        if kinds and all(issubclass(k, (int, float, np.number)) for k in kinds):
            raise DataError(
                f"column {name!r} holds numbers as Python objects (dtype object, e.g. integers beyond "
                "int64's range); convert it with .astype(float)")
        if not all(issubclass(k, str) for k in kinds):
            raise DataError(
                f"column {name!r} mixes value types ({', '.join(sorted(k.__name__ for k in kinds))}); "
                "convert it to numbers, strings or a categorical")
        return _string_levels(codes, values, name)
    raise DataError(f"column {name!r} has type {dtype} which a formula cannot use; "
                    "convert it to numbers, strings, bool or a categorical")


#: id(pyarrow ChunkedArray) -> (weak reference to it, codes, levels, missing): the factor of an
#: Arrow-backed string column, which no one can modify in place (pandas' ``__setitem__`` gives the
#: column a new ChunkedArray), so a refit on the same column (or a copy of the frame, which shares
#: it) skips the hashing and the R sort of the levels. Entries leave when their array is freed.
_ARROW_FACTORS: dict[int, tuple] = {}


def _arrow_string_factor(column, name: str) -> _Variable:
    """An Arrow-backed string column as a factor (levels sorted as R sorts strings), factorized
    in Arrow (dictionary_encode, 2-4x faster than through Python objects) once per array."""
    chunked = column._pa_array
    key = id(chunked)
    hit = _ARROW_FACTORS.get(key)
    if hit is None or hit[0]() is not chunked:
        codes, uniques = column.factorize(use_na_sentinel=True)
        variable = _string_levels(np.asarray(codes, dtype=np.int64), list(uniques), name)
        for array in (variable.codes, variable.missing):
            if array is not None:
                array.flags.writeable = False  # shared by every model frame of this column
        try:
            ref = weakref.ref(chunked, lambda _, key=key: _ARROW_FACTORS.pop(key, None))
        except TypeError:  # pragma: no cover - a pyarrow without weak references
            return variable
        _ARROW_FACTORS[key] = hit = (ref, variable.codes, tuple(variable.levels), variable.missing)
    _, codes, levels, missing = hit
    return _Variable(name, "factor", codes=codes, levels=list(levels), missing=missing,
                     sources=(name,))


def _string_levels(codes: np.ndarray, values: list, name: str) -> _Variable:
    """A factor of strings from hash codes (-1 missing) and the unique values in order of first
    appearance: levels sorted as R's ``sort()`` sorts strings."""
    missing = codes < 0
    order = sorted(range(len(values)), key=lambda k: r_sort_key(values[k]))
    rank = np.empty(len(values) + 1, dtype=np.int64)
    rank[order] = np.arange(len(values))
    rank[-1] = -1  # codes of -1 (missing) stay -1
    return _Variable(name, "factor", codes=rank[codes], levels=[str(values[k]) for k in order],
                     missing=missing if missing.any() else None, sources=(name,))


def _as_factor(variable: _Variable, label: str) -> _Variable:
    """R's ``factor(x)``: a factor stays as it is; numbers become levels in numeric order,
    labelled as R's ``as.character`` prints them (``25``, ``0.5``)."""
    if variable.kind == "factor":
        return _Variable(**{**variable.__dict__, "label": label, "logical": False})
    missing = variable.missing if variable.missing is not None else np.zeros(len(variable.values), bool)
    uniques, inverse = np.unique(variable.values[~missing], return_inverse=True)
    codes = np.full(len(variable.values), -1, dtype=np.int64)
    codes[~missing] = inverse
    return _Variable(label, "factor", codes=codes, levels=_number_labels(uniques),
                     missing=variable.missing, sources=variable.sources)


def _number_labels(uniques: np.ndarray) -> list[str]:
    """R's labels of ``factor(numeric)``'s levels: ``as.character`` of each unique value (``25``,
    ``0.5``), (k,) numbers -> k strings; remembered by the values (a refit on the same grouping
    column asks again, and each label costs ~1 us) up to _REMEMBERED_LABELS levels: beyond, the
    labels are a small share of a fit and 32 remembered factors could hold a lot of memory."""
    if len(uniques) > _REMEMBERED_LABELS:
        return [_r_number(v) for v in np.asarray(uniques, dtype=np.float64).tolist()]
    return list(_number_labels_of(np.asarray(uniques, dtype=np.float64).tobytes()))


_REMEMBERED_LABELS = 10_000


@functools.lru_cache(maxsize=32)
def _number_labels_of(values: bytes) -> tuple[str, ...]:
    return tuple(_r_number(v) for v in np.frombuffer(values, dtype=np.float64).tolist())


def _arith_sources(node, out: list[tuple[str, int]]):
    if isinstance(node, _Name):
        out.append((node.name, node.pos))
    elif isinstance(node, _Call):
        for a in node.args:
            _arith_sources(a, out)
    elif isinstance(node, _Paren):
        _arith_sources(node.expr, out)
    elif isinstance(node, _Unary):
        _arith_sources(node.operand, out)
    elif isinstance(node, _BinOp):
        _arith_sources(node.left, out)
        _arith_sources(node.right, out)


def _evaluate_arith(node, columns: dict, label: str):
    """Evaluate an arithmetic tree; returns a float64 array or a Python float."""
    if isinstance(node, _Num):
        return node.value
    if isinstance(node, _Name):
        variable = columns[node.name]
        if variable.logical:  # R: TRUE/FALSE are 1/0 in arithmetic
            return np.where(variable.codes < 0, np.nan, variable.codes.astype(np.float64))
        if variable.kind != "numeric":
            raise DataError(f"column {node.name!r} in {label!r} is a factor, not numeric; "
                            "arithmetic in I() needs numbers")
        return variable.values
    if isinstance(node, _Paren):
        return _evaluate_arith(node.expr, columns, label)
    if isinstance(node, _Unary):
        value = _evaluate_arith(node.operand, columns, label)
        return -value if node.op == "-" else value
    if isinstance(node, _Call):
        if node.func in _FACTOR_FUNCTIONS:
            raise DataError(f"{_deparse(node)} is a factor; arithmetic in {label!r} needs numbers")
        value = _evaluate_arith(node.args[0], columns, label)
        if node.func == "I":
            return value
        result = _FUNCTIONS[node.func](np.asarray(value, dtype=np.float64))
        warn_nans_produced(_deparse(node), value, result)
        return result
    if isinstance(node, _BinOp):
        left = _evaluate_arith(node.left, columns, label)
        right = _evaluate_arith(node.right, columns, label)
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        if node.op == "/":
            return np.true_divide(left, right)
        if node.op == "^":
            if isinstance(right, float) and right == 2.0:
                return left * left
            return np.power(np.asarray(left, dtype=np.float64), right)
    raise DataError(f"cannot evaluate {label!r}")  # pragma: no cover


def _poly_contrasts(k: int) -> tuple[np.ndarray, list[str]]:
    """R's ``contr.poly(k)``: orthonormal polynomial contrasts on scores 1..k (QR of the
    Vandermonde matrix; the columns are the normalised Q columns 2..k, sign as in R)."""
    scores = np.arange(1, k + 1, dtype=np.float64)
    centred = scores - scores.mean()
    vander = np.vander(centred, k, increasing=True)
    q, r = np.linalg.qr(vander)
    z = q * np.diag(r)  # R: qr.qy(QR, diag(diag(QR$qr))), i.e. Q scaled by R's diagonal
    z = z / np.sqrt((z * z).sum(axis=0))
    names = [".L", ".Q", ".C"] + [f"^{d}" for d in range(4, k)]
    return np.ascontiguousarray(z[:, 1:]), names[: k - 1]


@dataclass
class _Piece:
    """A variable's columns within one term: numeric vector or factor coding matrix."""

    variable: _Variable
    coding: np.ndarray | None  # (levels, m) for factors
    names: list[str]


@functools.lru_cache(maxsize=256)
def _coding_matrix(k: int, full: bool, ordered: bool) -> np.ndarray:
    """A factor's coding matrix (k levels): indicators, polynomial or treatment contrasts;
    one read-only object per kind, so designs share it."""
    if full:
        matrix = np.eye(k)
    elif ordered:
        matrix = _poly_contrasts(k)[0]
    else:
        matrix = np.ascontiguousarray(np.eye(k)[:, 1:])
    matrix.flags.writeable = False
    return matrix


def _factor_piece(variable: _Variable, full: bool) -> _Piece:
    k = len(variable.levels)
    matrix = _coding_matrix(k, full, bool(variable.ordered) and not full)
    if full:
        return _Piece(variable, matrix, [variable.label + lev for lev in variable.levels])
    if variable.ordered:
        return _Piece(variable, matrix, [variable.label + s for s in _poly_contrasts(k)[1]])
    return _Piece(variable, matrix, [variable.label + lev for lev in variable.levels[1:]])


def _term_codes(terms: tuple[Term, ...], is_factor: list[bool], intercept: bool) -> list[dict]:
    """R's factors table: for each term, variable -> 1 (contrasts) or 2 (indicators)."""
    table = []
    for j, term in enumerate(terms):
        codes = {}
        for v in term.variables:
            rest = frozenset(term.variables) - {v}
            if not rest:
                codes[v] = 1
            elif any(rest <= frozenset(terms[i].variables) for i in range(j)):
                codes[v] = 1
            else:
                codes[v] = 2
        table.append(codes)
    if not intercept:
        done = False
        for j, term in enumerate(terms):
            for v in term.variables:
                if is_factor[v]:
                    table[j][v] = 2
                    done = True
                    break
            if done:
                break
    return table


@functools.lru_cache(maxsize=256)
def _formula_plan(text: str, dot_columns: tuple[str, ...] | None):
    """What a formula needs from the data, worked out once per formula (and, with ``.``, per
    set of other columns): the term structure, the columns read (with a position for errors),
    the variables only in the bars' left sides and the grouping columns."""
    parsed = _parse_cached(text)
    if dot_columns is not None:
        parsed = _build_formula(text, parsed._lhs, parsed._rhs, dot_columns)
    column_refs: list[tuple[str, int]] = []
    for node in parsed._variable_nodes:
        _arith_sources(node, column_refs)
    bar_variables: dict[str, object] = {}  # label -> node of the bars' left-side variables
    for bar in parsed.random_terms:
        for block in bar.lhs:
            for label, node in zip(block.variables, block._variable_nodes):
                if label not in bar_variables:
                    bar_variables[label] = node
                    refs: list[tuple[str, int]] = []
                    _arith_sources(node, refs)
                    column_refs.extend((c, bar.pos) for c, _ in refs)
    group_columns = []
    for bar in parsed.random_terms:
        for cols in bar.group_columns:
            for c in cols:
                if c not in group_columns:
                    group_columns.append(c)
                    column_refs.append((c, bar.pos))
    return parsed, tuple(column_refs), tuple(bar_variables.items()), tuple(group_columns)


#: From this many rows on, plain numeric columns are scanned by the design fill (below it the
#: separate scan costs less than the bookkeeping); a column whose first ``_PROBE_ROWS`` values
#: hold a NaN or Inf is scanned at once (its missing values would make the fill start again).
_DEFER_SCAN_ROWS = 65536
_PROBE_ROWS = 4096


@functools.lru_cache(maxsize=256)
def _fill_scanned_columns(text: str, dot_columns: tuple[str, ...] | None) -> frozenset:
    """The columns whose NaN/Inf scan the design fill can do: used only as a plain variable of a
    fixed-effect term (so the fill reads every kept row of them), nowhere else (not the response,
    not inside I(), log() or factor(), not in a bar or a grouping factor)."""
    parsed, column_refs, bar_items, group_columns = _formula_plan(text, dot_columns)
    in_terms = {v for term in parsed.terms for v in term.variables}
    plain = {node.name for index, node in enumerate(parsed._variable_nodes)
             if index > 0 and index in in_terms and isinstance(node, _Name)}
    elsewhere: list[tuple[str, int]] = []
    for index, node in enumerate(parsed._variable_nodes):
        if index == 0 or not isinstance(node, _Name):
            _arith_sources(node, elsewhere)
    for _, node in bar_items:
        _arith_sources(node, elsewhere)
    return frozenset(plain - {c for c, _ in elsewhere} - set(group_columns))


def _scan_deferred(variables) -> None:
    """Scan the ``unscanned`` numeric variables for NaN/Inf now (as ``_numeric_variable``)."""
    for variable in variables:
        if variable.unscanned:
            has_nan, has_inf = nan_inf_scan(variable.values)
            variable.missing = np.isnan(variable.values) if has_nan else None
            variable.has_inf = bool(has_inf)
            variable.unscanned = False


def _too_deep(formula) -> FormulaError:
    return FormulaError(
        f"the formula is nested too deeply to read ({len(str(formula))} characters; engine follows "
        f"chains of some 15,000 terms, {DEEP_RECURSION_LIMIT} Python frames)")


@deep_tree_walk  # the evaluation of I() and of the terms walks the trees recursively
def model_frame(formula: str, data: pd.DataFrame, allow_random: bool = False) -> ModelFrame:
    """Evaluate ``formula`` on ``data`` as R's ``lm`` does (model.frame + model.matrix).

    Returns a :class:`ModelFrame` with y (n,), X (n, p) C-contiguous float64, R's column names,
    ``assign``, term labels, the kept rows (0-based positions), the random-effect terms with
    their designs (``random_effects``, lme4's ``mkReTrms`` blocks) and, for the random-intercept
    bars, their grouping factors (``groups``). Rows with a missing value in any variable of the
    formula, the bars' left sides and grouping columns included, are dropped (R's ``model.frame``
    of the whole formula, as lme4's ``lFormula`` builds it). ``data`` is never modified.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    parsed = parse_formula(formula)
    text = parsed.text
    if parsed.response is None:
        raise FormulaError("the formula has no response (write 'y ~ ...')", text, 0)
    if parsed.random_terms and not allow_random:
        bar = parsed.random_terms[0]
        raise FormulaError(
            f"random-effect term {bar.text} is not allowed here (lm/ols fits fixed effects only; "
            "use engine.brm for multilevel models)", text, bar.pos)
    dot_columns = None
    if parsed.has_dot:
        lhs_columns: list[tuple[str, int]] = []
        _arith_sources(parsed._lhs, lhs_columns)
        used = {c for c, _ in lhs_columns}
        dot_columns = tuple(str(c) for c in data.columns if str(c) not in used)
    if dot_columns is None and len(data) < _DEFER_SCAN_ROWS:
        plan = _plain_plan(text)
        if plan is not None:
            frame = _plain_frame(plan, data)
            if frame is not None:
                return frame
    # 1. Every data column the formula reads, evaluated once on all rows.
    parsed, column_refs, bar_items, group_columns = _formula_plan(text, dot_columns)
    bar_variables = dict(bar_items)
    fill_scanned = _fill_scanned_columns(text, dot_columns) if len(data) >= _DEFER_SCAN_ROWS else ()
    columns: dict[str, _Variable] = {}
    for name, pos in column_refs:
        if name not in columns:
            columns[name] = _evaluate_column(_column(data, name, text, pos), name,
                                             scan=name not in fill_scanned)
            if columns[name].unscanned and any_non_finite(columns[name].values[:_PROBE_ROWS]):
                _scan_deferred([columns[name]])  # missing values seen early: scan it now

    # 2. The model's variables (response first), then those only in the bars.
    variables = [_evaluate_variable(label, node, columns, len(data))
                 for label, node in zip(parsed.variables, parsed._variable_nodes)]
    response = variables[0]
    if response.logical:  # R's lm uses a logical response as 0/1
        values = response.codes.astype(np.float64)
        values[response.codes < 0] = np.nan
        response = variables[0] = _Variable(response.label, "numeric", values=values,
                                            missing=response.missing, sources=response.sources)
    if response.kind != "numeric":
        raise ModelSpecError(
            f"the response {parsed.response!r} is a factor ({len(response.levels)} levels); "
            "only a numeric response is supported")
    by_label = {v.label: v for v in variables}
    extra = [_evaluate_variable(label, node, columns, len(data))
             for label, node in bar_variables.items() if label not in by_label]
    everything = variables + extra

    # 3.-7. The frame, first with the plain numeric columns' NaN/Inf scan left to the design
    # fill (their one pass over the data); if the fill finds one, or an error (which may depend
    # on their missing values) is raised, they are scanned and the frame made again.
    deferred = any(v.unscanned for v in columns.values())
    if deferred:
        try:
            frame = _assemble(text, parsed, data, variables, everything, columns, group_columns)
        except EngineError:
            frame = None
        if frame is not None:
            return frame
        _scan_deferred(everything + list(columns.values()))
    return _assemble(text, parsed, data, variables, everything, columns, group_columns)


class _PlainPlan(NamedTuple):
    """A formula whose variables are all plain columns, worked out once (see ``_plain_frame``)."""

    text: str
    parsed: Formula
    names: tuple[str, ...]          # the data column of each variable (response first)
    labels: tuple[str, ...]         # each variable's label
    group_columns: tuple[str, ...]  # the grouping columns (intercept-only bars)


@functools.lru_cache(maxsize=256)
def _plain_plan(text: str) -> _PlainPlan | None:
    """The plan of ``_plain_frame`` for a formula (without ``.``) whose variables are all plain
    columns and whose bars are all ``(1 | g)``; None for any other formula."""
    parsed, column_refs, bar_items, group_columns = _formula_plan(text, None)
    if bar_items or not all(bar.intercept_only for bar in parsed.random_terms):
        return None
    if not all(isinstance(node, _Name) for node in parsed._variable_nodes):
        return None
    names = tuple(node.name for node in parsed._variable_nodes)
    if len(set(names)) != len(names):
        return None
    return _PlainPlan(text, parsed, names, tuple(parsed.variables), tuple(group_columns))


class NumericDesign(NamedTuple):
    """A large model whose design is an optional intercept plus plain float64 columns of the
    data, each once, read in place (``numeric_design``): the columns are rows ``cols`` of the
    frame's (k, n) float64 block ``source``; ``response`` the response column's values."""

    parsed: Formula
    source: np.ndarray     # (k, n) strided view of the DataFrame's float64 block
    cols: np.ndarray       # (p - intercept,) int64: the block row of each design column
    response: np.ndarray   # (n,) float64, the data's own array (never written)
    intercept: bool
    column_names: tuple[str, ...]
    assign: np.ndarray


def numeric_design(formula: str, data: pd.DataFrame) -> NumericDesign | None:
    """The in-place description of ``model_frame(formula, data)``'s design for a frame of at
    least ``_DEFER_SCAN_ROWS`` rows whose formula is ``y ~ [1 +] a + b + ...`` over distinct
    plain float64 columns held in one pandas block (no factor, no product, no bar, no ``.``);
    None for anything else. Missing values are not looked for here: the caller's pass over the
    columns finds them (a non-finite triangle) and then falls back to ``model_frame``."""
    if not isinstance(data, pd.DataFrame) or len(data) < _DEFER_SCAN_ROWS:
        return None
    try:
        plan = _plain_plan(parse_formula(formula).text)
    except EngineError:
        return None
    if plan is None or plan.group_columns or plan.parsed.random_terms:
        return None
    parsed = plan.parsed
    if any(len(term.variables) != 1 for term in parsed.terms):
        return None
    if [term.variables[0] for term in parsed.terms] != list(range(1, len(plan.names))):
        return None
    arrays = _plain_columns(data, plan.names)
    if arrays is None or any(type(c) is not np.ndarray or c.dtype != np.float64 for c in arrays):
        return None
    n = len(data)
    if len(arrays) < 2:
        return None
    found = _column_block(arrays[1:], n)  # the response may lie in another block
    if found is None:
        return None
    source, picks = found
    names = (["(Intercept)"] if parsed.has_intercept else []) + list(plan.labels[1:])
    assign = np.asarray(([0] if parsed.has_intercept else []) + list(range(1, len(parsed.terms) + 1)),
                        dtype=np.int64)
    return NumericDesign(parsed, source, np.asarray(picks, dtype=np.int64), arrays[0],
                         bool(parsed.has_intercept), tuple(names), assign)


def _column_block(arrays: list[np.ndarray], n: int) -> tuple[np.ndarray, list[int]] | None:
    """The (n,) float64 columns as rows of one (k, n) strided view of the array they all view
    (a DataFrame's 2-D block, C-ordered as pandas makes it or the transposed rows of an array
    the frame was built from), and the row of each; None when they are not such views (the
    caller then copies nothing)."""
    owner = arrays[0].base
    if not isinstance(owner, np.ndarray) or n == 0:
        return None
    step = arrays[0].strides[0]
    if any(a.base is not owner or a.shape != (n,) or a.strides[0] != step for a in arrays):
        return None
    addresses = [a.__array_interface__["data"][0] for a in arrays]
    first = min(addresses)
    gaps = sorted({x - first for x in addresses} - {0})
    col = math.gcd(*gaps) if gaps else 8  # the distance between neighbouring columns
    if col % 8:
        return None
    k = (max(addresses) - first) // col + 1
    start = arrays[addresses.index(first)]
    view = np.lib.stride_tricks.as_strided(start, shape=(k, n), strides=(col, step), writeable=False)
    low, high = np.lib.array_utils.byte_bounds(owner)
    v_low, v_high = np.lib.array_utils.byte_bounds(view)
    if v_low < low or v_high > high:  # not inside the array the columns view
        return None
    return view, [(x - first) // col for x in addresses]


def numeric_frame(design: NumericDesign, y: np.ndarray, data: pd.DataFrame) -> ModelFrame:
    """The ModelFrame ``model_frame`` returns for ``design`` (no row dropped), from its y (n,);
    its X is not written here but gathered from the columns on first access (``_ColumnsFrame``),
    so a fit that reads the columns in place (``engine.ols``) never writes the n x p design."""
    n = y.shape[0]
    frame = _model_frame_of(design.parsed, y, None, list(design.column_names), design.assign.copy(),
                            np.arange(n, dtype=np.int64), 0, [], {}, n, (), kind=_ColumnsFrame)
    # a shallow copy: pandas (copy-on-write) then copies the block before any later in-place change
    # to ``data``, so the columns X is gathered from stay the ones the model was fitted to
    object.__setattr__(frame, "design", design)
    object.__setattr__(frame, "_data", data.copy(deep=False))
    if not _pandas_copy_on_write():
        # without copy-on-write (pandas 2 by default) the shallow copy shares the user's block and a
        # later ``data.loc[...] = ...`` would reach an X gathered afterwards: gather it now
        frame.X  # noqa: B018 - the cached property, computed while the columns are the fitted ones
        object.__setattr__(frame, "_data", None)
    return frame


def _pandas_copy_on_write() -> bool:
    """Whether pandas copies a shared block before writing to it (always from pandas 3; an option
    in pandas 2)."""
    if int(pd.__version__.split(".")[0]) >= 3:
        return True
    try:
        return pd.get_option("mode.copy_on_write") is True
    except (KeyError, ValueError):  # pandas 2.0 before the option existed
        return False


class _ColumnsFrame(ModelFrame):
    """A ModelFrame of a ``NumericDesign`` (``numeric_frame``): ``design`` holds the columns read
    in place; ``X`` ((n, p) C-contiguous float64, the same values as ``model_frame``'s) is
    gathered from them on first access and kept."""

    @functools.cached_property
    def X(self) -> np.ndarray:  # noqa: N802 - ModelFrame's field name
        design = self.design
        X = np.empty((self.y.shape[0], len(design.column_names)), dtype=np.float64)
        gather_columns(design.source, design.cols, design.intercept, X)
        return X


def _plain_factor(column, name: str):
    """(codes on all rows, levels, ordered) of a Categorical or Arrow-backed string column, as
    ``_evaluate_column`` makes its factor; None for any other column."""
    if type(column) is pd.Categorical:
        return column.codes, _category_labels(column.dtype), bool(column.dtype.ordered)
    if isinstance(column, pd.arrays.ArrowStringArray) and hasattr(column, "_pa_array"):
        variable = _arrow_string_factor(column, name)
        return variable.codes, variable.levels, False
    return None


def _plain_frame(plan: _PlainPlan, data: pd.DataFrame) -> ModelFrame | None:
    """``model_frame`` on a small frame for a formula of plain columns, each a float64 or integer
    numpy column, a pandas Categorical or an Arrow-backed string column: the same steps on the columns' arrays, without the
    per-variable objects of the general path (its bookkeeping was most of a small frame's time).
    None for anything else or anything unusual (another column type, a missing column, +-Inf, no
    rows left, a factor with one level), which the general path then handles, errors included."""
    n = len(data)
    arrays = _plain_columns(data, plan.names)
    if arrays is None:
        return None
    numeric: list = []   # the numeric variables' float64 values on all rows
    scan: list = []      # whether each may hold NaN or Inf (a float column)
    codes: list = []     # the factors' codes on all rows (-1: missing)
    levels_of: list = []  # their levels (None: a grouping column's missing-value marker)
    ordered_of: list = []
    slot: list = []      # per variable: its index in numeric or codes
    for index, column in enumerate(arrays):
        if type(column) is np.ndarray:
            kind = column.dtype.kind
            if kind == "f":
                column = column if column.dtype == np.float64 else column.astype(np.float64)
            elif kind in "iu":
                column = column.astype(np.float64)
            else:
                return None
            slot.append(len(numeric))
            numeric.append(column)
            scan.append(kind == "f")
        elif index > 0 and (factor := _plain_factor(column, plan.names[index])) is not None:
            slot.append(len(codes))
            codes.append(factor[0])
            levels_of.append(factor[1])
            ordered_of.append(factor[2])
        else:
            return None
    groups = {}
    for name in plan.group_columns:  # factor grouping columns join the factors' pass
        column = arrays[plan.names.index(name)] if name in plan.names else None
        if column is None:
            try:
                column = _column(data, name, plan.text, 0)
            except EngineError:
                return None
        factor = _plain_factor(column, name)
        if factor is not None:
            groups[name] = len(codes)
            codes.append(factor[0])
            levels_of.append(factor[1])
            ordered_of.append(factor[2])
            continue
        try:
            group = _evaluate_column(column, name)
        except EngineError:
            return None
        if group.missing is not None:  # a missing value there marks the row through a code
            codes.append(np.where(group.missing, -1, 0))
            levels_of.append(None)
            ordered_of.append(False)
        groups[name] = group
    numeric_2d, picks = _stack_rows(numeric, n)
    check = np.zeros(numeric_2d.shape[0], dtype=np.bool_)
    for row, flag in zip(picks, scan):
        check[row] = flag
    codes_2d = _stack(codes, n, np.int64)
    rows, has_inf = plain_rows(numeric_2d, check, codes_2d)
    if has_inf or rows.shape[0] == 0:
        return None
    n_dropped = n - rows.shape[0]
    # the factors on the kept rows, unused levels dropped (R's drop.unused.levels)
    labels = [levels if levels is not None else [] for levels in levels_of]
    n_levels = np.array([len(lv) if lv is not None else 1 for lv in levels_of], dtype=np.int64)
    kept_2d, present, complete = kept_codes_2d(codes_2d, rows, n_dropped > 0, n_levels)
    for j, levels in enumerate(labels):
        if not complete[j]:
            labels[j] = [lev for lev, keep in zip(levels, present[j]) if keep]
    signature = []
    factors: dict[str, FactorInfo] = {}
    for index in range(len(plan.names)):
        if type(arrays[index]) is np.ndarray:
            signature.append(None)
            continue
        j = slot[index]
        levels = labels[j]
        if len(levels) < 2:
            return None
        ordered = ordered_of[j]
        signature.append((tuple(levels), ordered))
        factors[plan.labels[index]] = FactorInfo(list(levels), ordered, False)
    parsed = plan.parsed

    def variables() -> list[_Variable]:  # only to build a new layout
        return [_Variable(label, "numeric", values=numeric[slot[i]]) if sig is None else
                _Variable(label, "factor", codes=kept_2d[slot[i]], levels=list(sig[0]),
                          ordered=sig[1])
                for i, (label, sig) in enumerate(zip(plan.labels, signature))]

    layout = _design_layout(parsed.terms, parsed.has_intercept, tuple(signature), variables)
    fill_picks = tuple(picks[slot[v]] for v in layout.numeric_vars)
    order = [slot[v] for v in layout.factor_vars]
    fill_codes = kept_2d if order == list(range(kept_2d.shape[0])) else kept_2d[order]
    X, _ = layout.fill_stacked(numeric_2d, fill_picks, n, fill_codes,
                               [False] * len(fill_picks), rows)
    response = numeric_2d[picks[0]]
    y = np.array(response[rows] if n_dropped else response, dtype=np.float64, copy=True)
    known = {}  # a categorical grouping column's kept codes and levels, from the factors' pass
    for name, group in list(groups.items()):
        if type(group) is int:
            known[name] = (kept_2d[group], labels[group])
            del groups[name]
    random_effects, group_factors = _random_part(plan.text, parsed, {}, groups, rows, n_dropped,
                                                 known)
    return _model_frame_of(parsed, y, X, list(layout.column_names), layout.assign.copy(), rows,
                           n_dropped, group_factors, factors, n, random_effects)


def _assemble(text: str, parsed: Formula, data: pd.DataFrame, variables: list[_Variable],
              everything: list[_Variable], columns: dict, group_columns: tuple) -> ModelFrame | None:
    """Steps 3-7 of ``model_frame``: listwise deletion, the kept rows, the designs and grouping
    factors. None when the fill found a NaN or Inf in an ``unscanned`` column (then scan it)."""
    # 3. Listwise deletion over every variable and grouping column.
    n_original = len(data)
    missing = np.zeros(n_original, dtype=bool)
    for variable in everything + [columns[c] for c in group_columns]:
        if variable.missing is not None:
            missing |= variable.missing
    n_dropped = int(missing.sum())
    if n_dropped == n_original:
        counts = sorted(
            ((int(v.missing.sum()), v.label) for v in everything + [columns[c] for c in group_columns]
             if v.missing is not None), reverse=True)
        detail = ", ".join(f"{label!r} ({count} missing)" for count, label in counts[:5])
        raise DataError(
            f"no rows left after removing rows with missing values (n = {n_original}); "
            f"columns with missing values: {detail or 'none'}")
    rows = np.flatnonzero(~missing) if n_dropped else np.arange(n_original, dtype=np.int64)
    rows = rows.astype(np.int64, copy=False)

    # 4. Non-finite numbers in kept rows.
    for variable in everything:
        if variable.kind == "numeric" and variable.has_inf:
            bad = np.isinf(variable.values)
            if bad.any() and bad[rows].any():
                first = int(rows[np.flatnonzero(bad[rows])[0]])
                what = (f"column {variable.label!r}" if variable.sources == (variable.label,)
                        else f"{variable.label!r} (from column(s) {', '.join(map(repr, variable.sources))})")
                raise DataError(
                    f"{what} has non-finite values (Inf) in the rows used, first at row "
                    f"{first} (0-based position); remove or recode them")

    # 5. Subset to the kept rows, drop unused factor levels.
    kept: list[_Variable] = []
    factors: dict[str, FactorInfo] = {}
    for index, variable in enumerate(everything):
        variable = _kept_variable(variable, rows, n_dropped, check_levels=index > 0)
        kept.append(variable)
        if variable.kind == "factor" and index < len(variables):
            factors[variable.label] = FactorInfo(list(variable.levels), variable.ordered,
                                                 variable.logical)
    kept_by_label = {v.label: v for v in kept}

    # 6. Columns of each term (R's factors table and model.matrix).
    terms = parsed.terms
    X, column_names, assign, clean = _design_matrix(terms, parsed.has_intercept, kept, rows,
                                                    n_dropped)
    if not clean:
        return None
    y = np.array(kept[0].values[rows] if n_dropped else kept[0].values, dtype=np.float64, copy=True)

    # 7. Random-effect terms (lme4's mkReTrms blocks) and grouping factors.
    random_effects, groups = _random_part(text, parsed, kept_by_label, columns, rows, n_dropped)

    return _model_frame_of(parsed, y, X, column_names, assign, rows, n_dropped, groups, factors,
                           n_original, random_effects)


def _model_frame_of(parsed: Formula, y, X, column_names, assign, rows, n_dropped, groups, factors,
                    n_original, random_effects, kind=None) -> ModelFrame:
    """The ModelFrame of ``parsed`` from the finished pieces (both paths of ``model_frame``);
    ``kind``: ``_ColumnsFrame`` for ``numeric_frame`` (X None: gathered on first access)."""
    frame = (kind or ModelFrame)(
        formula=parsed.text,
        response_name=parsed.response,
        y=y,
        X=X,
        column_names=column_names,
        assign=assign,
        term_labels=[t.label for t in parsed.terms],
        has_intercept=parsed.has_intercept,
        rows=rows,
        n_dropped=n_dropped,
        groups=groups,
        fixed_formula=parsed.fixed_text,
        random_terms=parsed.random_terms,
        factors=factors,
        n_original=n_original,
        random_effects=random_effects,
    )
    if X is None:  # the dataclass set the instance's X: let _ColumnsFrame's cached X take over
        del frame.__dict__["X"]
    return frame


def _random_part(text: str, parsed: Formula, kept_by_label: dict, columns: dict,
                 rows: np.ndarray, n_dropped: int, labels: dict | None = None):
    """Step 7 of the model frame: the random-effect terms (lme4's mkReTrms blocks, as a tuple)
    and the grouping factors (a list) on the kept rows; ``columns`` holds the grouping columns'
    variables on all rows, ``kept_by_label`` the bars' left-side variables on the kept rows;
    ``labels`` may hold grouping columns' ``_group_labels`` already known."""
    factor_cache: dict[str, GroupingFactor] = {}
    labels = {} if labels is None else labels  # column -> its codes and levels on the kept rows

    def grouping(name: str, cols: tuple[str, ...]) -> GroupingFactor:
        if name not in factor_cache:
            factor_cache[name] = _grouping_factor(name, cols, columns, rows, n_dropped, labels)
        return factor_cache[name]

    random_effects: list[RandomEffect] = []
    for term_index, bar in enumerate(parsed.random_terms):
        for block in bar.lhs:
            block_vars = [kept_by_label[label] for label in block.variables]
            Z, coef_names, _, _ = _design_matrix(block.terms, block.has_intercept, block_vars,
                                                 rows, n_dropped)
            for name, cols in zip(bar.groups, bar.group_columns):
                factor = grouping(name, cols)
                random_effects.append(RandomEffect(
                    group=name, group_columns=tuple(cols), codes=factor.codes,
                    levels=factor.levels, Z=Z, coef_names=coef_names, correlated=bar.correlated,
                    bar_text=bar.text, term_index=term_index, parts=factor.parts))
    groups: list[GroupingFactor] = []
    if all(bar.intercept_only for bar in parsed.random_terms):
        seen: set[str] = set()
        for bar in parsed.random_terms:
            for name, cols in zip(bar.groups, bar.group_columns):
                if name in seen:
                    raise FormulaError(f"grouping factor {name!r} appears twice", text, bar.pos)
                seen.add(name)
                groups.append(grouping(name, cols))
    else:  # with slopes: each grouping factor once (the terms are in random_effects)
        for bar in parsed.random_terms:
            for name, cols in zip(bar.groups, bar.group_columns):
                if name not in {g.name for g in groups}:
                    groups.append(grouping(name, cols))
    return tuple(random_effects), groups


def _evaluate_variable(label: str, node, columns: dict, n_rows: int) -> _Variable:
    """One variable of the formula (a column, ``factor(x)``, ``I(expr)``, ``log(x)``) on all rows."""
    if isinstance(node, _Name):
        variable = columns[node.name]
        if variable.label != label:
            variable = _Variable(**{**variable.__dict__, "label": label})
        return variable
    if isinstance(node, _Call) and node.func in _FACTOR_FUNCTIONS:
        return _as_factor(columns[node.args[0].name], label)
    refs: list[tuple[str, int]] = []
    _arith_sources(node, refs)
    with np.errstate(all="ignore"):
        value = _evaluate_arith(node, columns, label)
    values = np.broadcast_to(np.asarray(value, dtype=np.float64), (n_rows,))
    values = np.ascontiguousarray(values)
    return _numeric_variable(label, values, tuple(dict.fromkeys(r for r, _ in refs)))


def _kept_variable(variable: _Variable, rows: np.ndarray, n_dropped: int,
                   check_levels: bool) -> _Variable:
    """A variable on the kept rows: numeric values stay on all rows (``_fill_design`` selects
    the kept ones); factor codes are subset and unused levels dropped (R's drop.unused.levels)."""
    if variable.kind == "numeric":  # values stay on all rows
        return variable
    levels = variable.levels
    if variable.logical:
        codes = variable.codes if not n_dropped else variable.codes[rows]
    else:
        codes, levels = _kept_levels(variable.codes, levels, rows, n_dropped)
        if len(levels) < 2 and check_levels:
            raise ModelSpecError(
                f"factor {variable.label!r} has only one level ({levels[0]!r}) in the "
                f"{len(rows)} rows used{' after removing rows with missing values' if n_dropped else ''}; "
                "a factor needs at least two levels")
    return _Variable(variable.label, "factor", codes=np.ascontiguousarray(codes),
                     levels=list(levels), ordered=variable.ordered, logical=variable.logical)


class _DesignLayout:
    """What R's model.matrix for some terms makes of variables of given kinds and levels, worked
    out once per (terms, intercept, each variable's kind, levels and ordering): the column names,
    ``assign``, which variables the fill reads (numeric ones and factors, in slot order), the
    factors' coding matrices (concatenated) and the kernel's program per row layout of the
    numeric array (``picks``). Per call only the data's arrays go to the kernel."""

    __slots__ = ("terms", "intercept", "column_names", "assign", "numeric_vars", "factor_vars",
                 "shape", "sizes", "coding", "programs")

    def __init__(self, terms: tuple[Term, ...], intercept: bool, kept: list[_Variable]):
        is_factor = [v.kind == "factor" for v in kept]
        table = _term_codes(terms, is_factor, intercept)
        column_names: list[str] = []
        assign: list[int] = []
        if intercept:
            column_names.append("(Intercept)")
            assign.append(0)
        numeric_index: dict[int, int] = {}  # variable -> slot (numeric values read by the fill)
        factor_index: dict[int, int] = {}   # variable -> slot (factor codes)
        codings: list[np.ndarray] = []
        coding_index: dict[int, int] = {}
        shape = []
        for j, term in enumerate(terms, start=1):
            names = [""]
            slots = []
            for v in term.variables:
                variable = kept[v]
                if variable.kind == "numeric":
                    piece_names = [variable.label]
                    if v not in numeric_index:
                        numeric_index[v] = len(numeric_index)
                    slots.append((numeric_index[v], -1, 0, 0))
                else:
                    piece = _factor_piece(variable, table[j - 1][v] == 2)
                    piece_names = piece.names
                    if v not in factor_index:
                        factor_index[v] = len(factor_index)
                    ckey = id(piece.coding)
                    if ckey not in coding_index:
                        coding_index[ckey] = len(codings)
                        codings.append(piece.coding)
                    slots.append((factor_index[v], coding_index[ckey], *piece.coding.shape))
                # first variable varies fastest
                names = [f"{prefix}:{name}" if prefix else name for name in piece_names
                         for prefix in names]
            column_names.extend(names)
            assign.extend([j] * len(names))
            shape.append(tuple(slots))
        self.terms = terms
        self.intercept = intercept
        self.column_names = tuple(column_names)
        self.assign = np.asarray(assign, dtype=np.int64)
        self.assign.flags.writeable = False
        self.numeric_vars = tuple(numeric_index)
        self.factor_vars = tuple(factor_index)
        self.shape = tuple(shape)
        self.sizes = tuple(c.size for c in codings)
        self.coding = (np.concatenate([c.ravel() for c in codings]) if codings else np.zeros(0))
        self.programs: dict[tuple, DesignProgram] = {}

    def program(self, picks: tuple) -> DesignProgram:
        hit = self.programs.get(picks)
        if hit is None:
            hit = self.programs[picks] = _design_program(self.intercept, self.shape, picks,
                                                         self.sizes)
        return hit

    def fill(self, numeric: list[np.ndarray], codes: list[np.ndarray], unscanned: list[bool],
             rows: np.ndarray) -> tuple[np.ndarray, bool]:
        """X (len(rows), p) from the numeric variables' values on all rows and the factors'
        codes on the kept rows (in ``numeric_vars`` / ``factor_vars`` order), with one kernel
        call; and False when a variable flagged ``unscanned`` held a NaN or Inf on a kept row
        (X is then not the model's)."""
        n = rows.shape[0]
        n_all = numeric[0].shape[0] if numeric else 0
        numeric_2d, picks = _stack_rows(numeric, n_all)
        codes_2d = _stack(codes, n, np.int64)
        return self.fill_stacked(numeric_2d, tuple(picks), n_all, codes_2d, unscanned, rows)

    def fill_stacked(self, numeric_2d: np.ndarray, picks: tuple, n_all: int,
                     codes_2d: np.ndarray, unscanned: list[bool],
                     rows: np.ndarray) -> tuple[np.ndarray, bool]:
        """``fill`` from the numeric variables as rows ``picks`` of ``numeric_2d`` (k, n_all)
        and the factors' codes as the rows of ``codes_2d`` (f, n), in slot order."""
        n = rows.shape[0]
        X = np.empty((n, len(self.column_names)), dtype=np.float64)
        program = self.program(picks)
        # one thread: threads writing a fresh array contend for its page faults (measured slower)
        all_rows = n == n_all  # nothing dropped: rows is 0..n-1
        check = np.zeros(numeric_2d.shape[0], dtype=np.bool_)
        for slot, flag in enumerate(unscanned):
            if flag:
                check[picks[slot]] = True
        non_finite = np.zeros(numeric_2d.shape[0], dtype=np.bool_)
        fill_design(X, numeric_2d, rows, codes_2d, self.coding, program, 0, n, all_rows, check,
                    non_finite)
        return X, not non_finite.any()


_LAYOUTS: dict[tuple, _DesignLayout] = {}


def _layout_signature(kept: list[_Variable]) -> tuple:
    """What a design's layout depends on per variable: numeric (None) or a factor's levels and
    ordering."""
    return tuple(None if v.kind == "numeric" else (tuple(v.levels), v.ordered) for v in kept)


def _design_layout(terms: tuple[Term, ...], intercept: bool, signature: tuple,
                   kept) -> _DesignLayout:
    """The cached :class:`_DesignLayout` of ``terms`` over variables of ``signature``
    (``_layout_signature``; keyed by the terms' identity, checked, as the parsed formula is
    cached). ``kept``: the variables, or a function making them (called only to build a layout)."""
    key = (id(terms), intercept, signature)
    layout = _LAYOUTS.get(key)
    if layout is None or layout.terms is not terms:
        if len(_LAYOUTS) > 1024:
            _LAYOUTS.clear()
        layout = _LAYOUTS[key] = _DesignLayout(terms, intercept, kept() if callable(kept) else kept)
    return layout


def _kept_levels(codes: np.ndarray, levels: list[str], rows: np.ndarray,
                 n_dropped: int) -> tuple[np.ndarray, list[str]]:
    """A factor's codes (int64, all rows) on the kept rows and its levels present there (R's
    drop.unused.levels): new codes (int64, contiguous, a fresh array) and levels."""
    codes, present = kept_codes(codes, rows, n_dropped > 0, len(levels))
    if not present.all():
        levels = [lev for lev, keep in zip(levels, present) if keep]
    return codes, levels


def _design_matrix(terms: tuple[Term, ...], has_intercept: bool, kept: list[_Variable],
                   rows: np.ndarray, n_dropped: int):
    """R's model.matrix for ``terms`` over ``kept`` (indexed as the terms' variables):
    X (n, p) C-contiguous float64, column names, assign and whether every ``unscanned``
    variable's values read were finite."""
    if not terms:  # ~1 (a bar's intercept) or ~0: the kernel would write ones or nothing
        X = np.ones((rows.shape[0], 1)) if has_intercept else np.empty((rows.shape[0], 0))
        return X, ["(Intercept)"] if has_intercept else [], np.zeros(int(has_intercept),
                                                                      dtype=np.int64), True
    layout = _design_layout(terms, has_intercept, _layout_signature(kept), kept)
    numeric = [kept[v] for v in layout.numeric_vars]
    X, clean = layout.fill([v.values for v in numeric], [kept[v].codes for v in layout.factor_vars],
                           [v.unscanned for v in numeric], rows)
    return X, list(layout.column_names), layout.assign.copy(), clean


@functools.lru_cache(maxsize=512)
def _design_program(intercept: bool, shape: tuple, picks: tuple, sizes: tuple) -> DesignProgram:
    """The kernel's program for terms of the given shape (per term, per variable: numeric
    (slot, -1, 0, 0) or factor (slot, coding, levels, columns)); ``picks`` maps numeric slots to
    rows of the numeric array, ``sizes`` are the coding matrices' sizes (their offsets)."""
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]) if sizes else [0]
    start = [0]
    kind: list[int] = []
    source: list[int] = []
    offset: list[int] = []
    width: list[int] = []
    column: list[int] = []
    if intercept:
        start.append(0)
    for slots in shape:
        n_cols = 1
        for slot in slots:
            n_cols *= 1 if slot[1] < 0 else slot[3]
        for c in range(n_cols):  # first variable varies fastest
            rest = c
            for slot, coding, _, m in slots:
                if coding < 0:
                    kind.append(0)
                    source.append(picks[slot])
                    offset.append(0)
                    width.append(0)
                    column.append(0)
                else:
                    kind.append(1)
                    source.append(slot)
                    offset.append(int(offsets[coding]))
                    width.append(m)
                    column.append(rest % m)
                    rest //= m
            start.append(len(kind))
    as_int = functools.partial(np.asarray, dtype=np.int64)
    return DesignProgram(as_int(start), as_int(kind), as_int(source), as_int(offset),
                         as_int(width), as_int(column))


def _stack_rows(arrays: list[np.ndarray], n: int) -> tuple[np.ndarray, list[int]]:
    """The vectors as rows of one (k, n) C-contiguous float64 array, and the row of each: a view
    when they are rows of one array already (a DataFrame's float64 block: no copy), else a stack."""
    if not arrays:
        return np.zeros((0, n)), []
    owner = arrays[0].base
    if (isinstance(owner, np.ndarray) and owner.dtype == np.float64
            and (owner.flags.c_contiguous or owner.flags.f_contiguous)
            and all(a.base is owner and a.dtype == np.float64 and a.flags.c_contiguous
                    and a.shape == (n,) for a in arrays)):
        base = owner.ctypes.data
        offsets = [(a.ctypes.data - base) // 8 for a in arrays]
        first = min(offsets)
        if n > 0 and all((o - first) % n == 0 for o in offsets):
            k = (max(offsets) - first) // n + 1
            flat = (owner if owner.flags.c_contiguous else owner.T).reshape(-1)  # memory order
            view = flat[first:first + k * n].reshape(k, n)
            return view, [(o - first) // n for o in offsets]
    if len(arrays) == 1:
        return np.ascontiguousarray(arrays[0]).reshape(1, n), [0]
    return _stack(arrays, n, np.float64), list(range(len(arrays)))


def _stack(arrays: list[np.ndarray], n: int, dtype) -> np.ndarray:
    """The (n,) vectors as rows of a new (k, n) C-contiguous array of ``dtype`` (values cast as
    numpy's assignment casts them): ``np.stack`` (then ``astype``) without its generality, which
    costs more than the copy for a few short vectors."""
    out = np.empty((len(arrays), n), dtype=dtype)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def _group_labels(variable: _Variable, rows: np.ndarray, n_dropped: int):
    """Codes (on kept rows) and labels of one grouping column, as R's factor() makes them."""
    if variable.kind == "factor":
        codes, levels = _kept_levels(variable.codes, variable.levels, rows, n_dropped)
        return codes, list(levels)
    values = variable.values if not n_dropped else variable.values[rows]
    # factor(numeric): levels in numeric order; integer ids by counting (integer_unique), else a sort
    found, uniques, codes = integer_unique(np.ascontiguousarray(values, dtype=np.float64))
    if not found:
        uniques, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), _number_labels(uniques)


def _grouping_factor(name: str, cols: tuple[str, ...], columns: dict, rows: np.ndarray,
                     n_dropped: int, labels: dict | None = None) -> GroupingFactor:
    """One grouping factor on the kept rows; ``labels``: a column -> ``_group_labels`` memo
    shared by the factors of one frame (``g1`` of ``(1 | g1/g2)`` is read once)."""
    if labels is None:
        labels = {}

    def part(column: str):
        if column not in labels:
            labels[column] = _group_labels(columns[column], rows, n_dropped)
        return labels[column]

    codes, levels = part(cols[0])
    if len(cols) == 1:
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        return GroupingFactor(name, codes, list(levels), len(levels), cols, ((codes, levels),))
    # brms: paste(g1, g2, sep = "_") then factor(): levels sorted as strings.
    parts = ((codes, levels),) + tuple(part(c) for c in cols[1:])
    uniques, inverse = crossed_codes(parts)
    levels, rank = _pasted_levels(tuple(tuple(part_levels) for _, part_levels in parts),
                                  uniques.astype(np.int64).tobytes())
    return GroupingFactor(name, np.ascontiguousarray(rank[inverse], dtype=np.int64),
                          list(levels), len(levels), cols, parts)


def crossed_codes(parts) -> tuple[np.ndarray, np.ndarray]:
    """The interaction of the factors ``parts`` [(codes (n,), levels)] as one code per row, the
    mixed-radix number with the first factor varying slowest: the codes present (ascending) and
    each row's index among them, as np.unique(..., return_inverse=True) gives them (by counting,
    ``formula_kernels.combined_codes``, when the number of combinations is small)."""
    n = len(parts[0][0])
    size = 1
    for _, part_levels in parts:
        size *= len(part_levels)
    if size <= max(1 << 16, 4 * n):  # np.unique by counting (no sort): same result
        return combined_codes(_stack([c for c, _ in parts], n, np.int64),
                              np.array([len(lv) for _, lv in parts], dtype=np.int64), size)
    combined = np.zeros(n, dtype=np.int64)
    for part_codes, part_levels in parts:
        combined = combined * len(part_levels) + part_codes
    return np.unique(combined, return_inverse=True)


@functools.lru_cache(maxsize=256)  # every refit on the same groups pastes the same labels
def _pasted_levels(part_levels: tuple[tuple[str, ...], ...], uniques: bytes, sep: str = "_",
                   r_sorted: bool = True):
    """brms' ``paste(g1, g2, sep = "_")`` levels of the combined codes ``uniques`` (int64 bytes,
    mixed-radix over ``part_levels``), sorted as R sorts strings, and each code's rank in that
    order (a read-only int64 array). ``sep=":", r_sorted=False``: R's ``g1:g2`` interaction
    (lme4's), levels in the codes' order (the first factor varying slowest), rank 0, 1, ..."""
    labels = []
    for u in np.frombuffer(uniques, dtype=np.int64).tolist():
        pieces = []
        for part in reversed(part_levels):
            pieces.append(part[u % len(part)])
            u //= len(part)
        labels.append(sep.join(reversed(pieces)))
    order = (sorted(range(len(labels)), key=lambda k: r_sort_key(labels[k])) if r_sorted
             else range(len(labels)))
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels))
    rank.flags.writeable = False
    return tuple(labels[k] for k in order), rank
