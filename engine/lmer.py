"""Linear mixed models fitted as lme4's ``lmer`` (REML or ML).

Model: y = X beta + Z b + e, b ~ N(0, sigma^2 Lambda_theta Lambda_theta'), e ~ N(0, sigma^2 I),
with Lambda_theta block diagonal: one lower-triangular ``q_k x q_k`` factor T_k per random-effect
term k, repeated over the term's levels; theta holds the lower triangles of the T_k column by column
(lme4's order), bounded below by 0 on the diagonals.

Algorithm: Bates, Maechler, Bolker & Walker (2015), "Fitting linear mixed-effects models using lme4",
J. Stat. Softw. 67(1), section 3: penalised least squares with the sparse Cholesky factor

    L_theta L_theta' = Lambda' Z'Z Lambda + I,

then R_ZX = L^{-1} Lambda' Z'X, R_X'R_X = X'X - R_ZX'R_ZX, and the profiled criteria

    ML:   -2 l(theta) = log|L|^2 + n (1 + log(2 pi r^2 / n))
    REML: log|L|^2 + log|R_X|^2 + (n - p) (1 + log(2 pi r^2 / (n - p)))

with r^2 the penalised residual sum of squares (eq. 30-34, 41-42 there). Everything comes from the
sufficient statistics Z'Z, Z'[X y], [X y]'[X y], computed once: an evaluation costs nothing in N.
``y`` is carried as the last column of ``[X y]``, so one Cholesky of the Gram matrix's Schur
complement gives R_X, c_beta and r (its last diagonal element).

Blocking (as MixedModels.jl): terms are ordered as lme4 orders them (decreasing number of levels,
``lme4:::mkReTrms``); the first term gives a block-diagonal leading block (one ``q1 x q1`` Cholesky
per level); all later terms form one trailing Schur block (size = their total number of random
effects), updated from the sparse Z1'Z_rest blocks (``engine.lmer_kernels``). For crossed designs
(InstEval's students x lecturers) fill-in makes it dense: it is held and factored as one dense
matrix. For nested ones (pupils in classes in schools: one later term, every level of the first in
one level of it, read from the codes, ``_NESTED_BLOCKS``) it stays block diagonal, one q2 x q2
block per level of the later term: it is held and factored per level, so an evaluation costs
O(levels q^3 + p^3) however many levels there are (10^6 students in 13,000 schools: milliseconds,
where the dense block was 13,000^2).

theta is optimised under lme4's bounds from lme4's start (diagonals 1, off-diagonals 0): by a
compiled projected BFGS (finite-difference gradients) then Newton steps on a central-difference
Hessian when one evaluation is cheap; with one vector-valued random-effect term (no trailing
block), the same BFGS on the exact gradient (``lmer_kernels.leading_criterion_gradient``), without
the Newton steps. When the dense trailing block has 200 or more random effects (evaluations cost a
dense Cholesky each) and every term is scalar (random intercepts, InstEval), by BFGS on the exact
gradient of the profiled criterion (``_criterion_and_gradient``) from a one-way ANOVA moment start
(``_moment_start``), its Hessian started at the moment estimate of its diagonal
(``_moment_curvature``); with larger terms there, by scipy's COBYQA (derivative-free quadratic
models). The choice depends on the design only, so results do not depend on timing. Singular
(boundary) fits are flagged as ``lme4::isSingular`` (a bounded theta below 1e-4).
"""

from __future__ import annotations

import math
import functools
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize

from engine import formula as _formula
from engine._linalg import solve_upper_t_blocks
from engine.validate import check_lmer_call, check_lmer_response, check_lmer_scales, checked_arguments
from engine.errors import (ColumnNotFoundError, ConvergenceWarning, DataError, DataWarning, FormulaError,
                           ModelSpecError, warn_user)
from engine.lmer_kernels import (CriterionProblem, CrossBlocks, Layout, Moments, back_solve_t, cross_quadratic,
                                 _scalar_gradient, cross_times, forward_solve, leading_and_nested_schur,
                                 leading_and_schur, minimize_bounded, minimize_criterion, nested_back_solve,
                                 nested_cross_quadratic, nested_forward_solve, nested_schur_update, newton_polish,
                                 profiled_criterion, scaled_cross, schur_update, sufficient_moments)

SINGULAR_TOL = 1e-4
# The finite-difference BFGS stage before ``newton_polish`` stops once its predicted remaining
# decrease g'Hg / 2 is below this (criterion units): the polish's Newton steps take theta from there
# to the optimum, so the BFGS tail (half or more of a small model's evaluations: Dyestuff 61 of 71,
# Penicillin 147 of 175) is not needed. 3e-5: the fewest evaluations among 1e-8 .. 1e-2 with the
# replication's lmer numbers within ~1.2e-10 of the full BFGS's (theta is only defined to ~1e-9
# there: the criterion is flat to rounding that close to its optimum).
_BFGS_TOL = 3e-5
# The exact-gradient BFGS of the small models stops at its gradient test (1e-6) or once its
# predicted remaining decrease is below this (criterion units): there the criterion's own rounding
# (~1e-10 where pwrss comes from a cancelling downdate: Pastes) hides the decrease from the line
# search, whose halvings then cost 10-30 evaluations for nothing (Pastes ML 46 -> 19, sleepstudy ML
# 79 -> 48, Exam 52 -> 29); ``newton_polish`` on the exact gradient finishes where the gradient test
# was not met.
_EXACT_BFGS_TOL = 1e-11
_NO_GRADIENT = np.zeros(0)  # newton_polish's "no gradient known"
_COBYQA_MIN_Q2 = 200  # dense trailing block size from which evaluations are costly enough for COBYQA


# ------------------------------------------------------------------------------------------------
# random-effect terms in lme4's order
# ------------------------------------------------------------------------------------------------


@dataclass
class ReTerm:
    """One random-effect term (lme4's ``blist`` entry).

    group: lme4's name of the grouping factor ("Batch", "cask:batch"); codes (n,) int64 level of
    each kept row; levels: level labels as R's factor() orders them; Z (n, q) float64 the term's
    raw model-matrix columns; cnms: their names ("(Intercept)", "Days").
    """

    group: str
    codes: np.ndarray
    levels: list
    Z: np.ndarray
    cnms: list

    @property
    def q(self) -> int:
        return self.Z.shape[1]

    @property
    def nlev(self) -> int:
        return len(self.levels)


def _interaction(parts):
    """R's ``f1:f2`` (then ``factor()``): levels ``a:b`` with f1 varying slowest, unused dropped.
    ``parts``: [(codes (n,), levels)] per factor; the combined code is their mixed-radix number."""
    uniques, inverse = _formula.crossed_codes(parts)
    labels, _rank = _formula._pasted_levels(tuple(tuple(levels) for _, levels in parts),
                                            uniques.astype(np.int64).tobytes(), ":", False)
    return inverse.astype(np.int64), list(labels)


def _factor_codes(data: pd.DataFrame, column: str, rows: np.ndarray, formula: str):
    """factor(column) on the kept rows: codes and R's level labels (numbers in numeric order)."""
    if column not in data.columns:
        raise ColumnNotFoundError(f"grouping column {column!r} (in formula {formula!r}) is not in the data")
    variable = _formula._evaluate_column(_formula._column(data, column, formula, None), column)
    return _formula._group_labels(variable, rows, len(data) - len(rows) if len(rows) != len(data) else 0)


def _bar_groups(bar) -> list[tuple[str, tuple[str, ...]]]:
    """lme4's grouping factors of one bar: ``a/b`` -> [("a", (a,)), ("b:a", (b, a))] (expandSlash);
    ``a:b`` -> [("a:b", (a, b))]. Returns (name, columns in the order the name lists them)."""
    rhs = bar.text.split("|", 1)[1] if "|" in bar.text else ""
    nested = "/" in rhs
    out = []
    for cols in bar.group_columns:
        cols = tuple(cols)
        if nested and len(cols) > 1:
            cols = tuple(reversed(cols))
        out.append((":".join(cols), cols))
    return out


def _terms_from_frame(mf, data: pd.DataFrame, formula: str) -> list[ReTerm]:
    """Random-effect terms of a model frame (``ModelFrame.random_effects``), before lme4's
    reordering, with lme4's names and levels of the grouping factors."""
    n = mf.nobs
    rows = np.asarray(mf.rows)
    cache: dict = {}

    # every grouping column's factor() as the formula layer made it (RandomEffect.parts), as
    # _factor_codes would make it again (the same _group_labels on the same rows)
    single = {c: part for re_ in mf.random_effects for c, part in zip(re_.group_columns, re_.parts)}

    def group_codes(cols):
        key = tuple(cols)
        if key not in cache:
            parts = [single[c] if c in single else _factor_codes(data, c, rows, formula) for c in cols]
            if len(parts) == 1:
                codes, levels = parts[0]
                cache[key] = (np.ascontiguousarray(codes, dtype=np.int64), list(levels))
            else:
                cache[key] = _interaction(parts)
        return cache[key]

    bars = {}
    for bar in mf.random_terms:
        for name, cols in _bar_groups(bar):
            bars[(bar.text, tuple(sorted(cols)))] = (name, cols)
    terms: list[ReTerm] = []
    for re_ in mf.random_effects:
        cols = tuple(re_.group_columns)
        name, cols_ordered = bars.get((re_.bar_text, tuple(sorted(cols))), (":".join(cols), cols))
        if len(cols) == 1:  # one column: the formula layer's factor() is R's (and lme4's)
            codes, levels = np.ascontiguousarray(re_.codes, dtype=np.int64), list(re_.levels)
        else:
            codes, levels = group_codes(cols_ordered)
        Z = np.ascontiguousarray(np.asarray(re_.Z, dtype=np.float64).reshape(n, -1))
        # (x || g) arrives expanded (expandDoubleVerts): one term per term of the left side,
        # correlated within itself (a factor's columns), as lme4
        terms.append(ReTerm(name, codes, levels, Z, list(re_.coef_names)))
    return terms


def _matching_paren(text: str, i: int, step: int):
    """Index of the unmatched ``(`` (step -1, scanning left from i) or ``)`` (step +1, scanning
    right) that encloses position i; None when there is none."""
    opening, closing = ("(", ")") if step > 0 else (")", "(")
    depth = 0
    while 0 <= i < len(text):
        if text[i] == opening:
            depth += 1
        elif text[i] == closing:
            if depth == 0:
                return i
            depth -= 1
        i += step
    return None


def expand_double_verts(formula: str, display: bool = False) -> str:
    """lme4's ``expandDoubleVerts``: ``(x || g)`` -> ``((1 | g) + (0 + x | g))``, one
    uncorrelated term per column of the left side (its intercept first, if it has one).
    ``display=True`` keeps lme4's outer parentheses (as its summary prints the formula); without
    them the text is what the formula parser reads."""
    while "||" in formula:
        k = formula.index("||")
        start = _matching_paren(formula, k - 1, -1)
        if start is None:
            raise FormulaError("'||' must be inside parentheses: (x || g)", formula, k)
        end = _matching_paren(formula, k + 2, 1)
        if end is None:
            raise FormulaError("unbalanced parentheses", formula, k)
        lhs = formula[start + 1:k].strip()
        grp = formula[k + 2:end].strip()
        parsed = _formula.parse_formula(f"~ {lhs}")
        parts = (["(1 | " + grp + ")"] if parsed.has_intercept else []) + [
            f"(0 + {lab} | {grp})" for lab in parsed.term_labels]
        text = " + ".join(parts)
        formula = formula[:start] + ("(" + text + ")" if display else text) + formula[end + 1:]
    return formula


def _lme4_order(terms: list[ReTerm]) -> list[ReTerm]:
    """``mkReTrms(reorder.terms = TRUE)``: if any later term has more levels, rev(order(nl))."""
    nl = [t.nlev for t in terms]
    if any(b > a for a, b in zip(nl, nl[1:])):
        order = sorted(range(len(nl)), key=lambda k: nl[k])  # R's order(): stable ascending
        return [terms[k] for k in reversed(order)]
    return terms


# ------------------------------------------------------------------------------------------------
# sufficient statistics and the profiled criterion
# ------------------------------------------------------------------------------------------------


def _theta_layout(qs):
    """Per term: (start, count) in theta; lower bounds (0 on diagonals, -inf elsewhere)."""
    layout, lower = [], []
    start = 0
    for q in qs:
        cnt = q * (q + 1) // 2
        layout.append((start, cnt))
        for c in range(q):  # column-major lower triangle
            for r in range(c, q):
                lower.append(0.0 if r == c else -np.inf)
        start += cnt
    return layout, np.array(lower)


def _tri(theta_part, q):
    T = np.zeros((q, q))
    k = 0
    for c in range(q):
        for r in range(c, q):
            T[r, c] = theta_part[k]
            k += 1
    return T


@dataclass
class _Stats:
    """Sufficient statistics of one model (computed once; no N-sized arrays kept)."""

    n: int
    p: int
    q1: int
    n1: int
    A1: np.ndarray  # (n1, q1, q1) Z1_j'Z1_j
    ZXa1: np.ndarray  # (n1, q1, p+1) Z1_j'[X y]
    Q2: int
    A22: np.ndarray  # (Q2, Q2) Z2'Z2 (dense); None when nested (A22_blocks)
    ZXa2: np.ndarray  # (Q2, p+1)
    cross: CrossBlocks
    XaXa: np.ndarray  # (p+1, p+1)
    rest_terms: list  # (term index, column offset, q, nlev) of later terms
    qmax: int
    moments: Moments = None
    layout: Layout = None
    # (theta, _Factor) of the last exact-gradient evaluation: the factor at the optimum, which
    # _fit_stats would otherwise compute again (a dense Cholesky of the trailing block)
    last_factor: tuple = None
    # nested trailing block (``_NESTED_BLOCKS``): A22 is None and A22_blocks (n2, q2, q2) holds
    # Z2'Z2's diagonal blocks; the factor's L2 is then (n2, q2, q2) too
    nested: bool = False
    A22_blocks: np.ndarray = None


def _sufficient_stats(terms: list[ReTerm], X: np.ndarray, y: np.ndarray) -> _Stats:
    """Z'Z, Z'[X y] and [X y]'[X y] of the terms (lme4's order) on X (n, p), y (n,), in the blocks
    ``_factorize`` and the kernels read: one compiled pass over the rows
    (``lmer_kernels.sufficient_moments``), then [X y]'[X y] by BLAS."""
    n, p = X.shape
    t1 = terms[0]
    q1, n1 = t1.q, t1.nlev
    rest = []
    off = 0
    for k, t in enumerate(terms[1:], start=1):
        rest.append((k, off, t.q, t.nlev))
        off += t.q * t.nlev
    Q2 = off
    qmax = max([t.q for t in terms[1:]], default=1)
    later = terms[1:]
    if len(later) == 1:
        rcodes, Zr = later[0].codes.reshape(1, n), later[0].Z
    elif later:
        rcodes, Zr = np.stack([t.codes for t in later]), np.concatenate([t.Z for t in later], axis=1)
    else:
        rcodes, Zr = np.zeros((0, n), dtype=np.int64), np.zeros((n, 0))
    rq = np.array([t.q for t in later], dtype=np.int64)
    roff = np.array([o for (_k, o, _q, _nl) in rest], dtype=np.int64)
    rnl = np.array([t.nlev for t in later], dtype=np.int64)
    (Xa, A1, ZXa1, pairs, nested, A22, A22_blocks, ZXa2, nz_i, nz_j, nz_v, col_term,
     col_start) = sufficient_moments(X, y, t1.codes, t1.Z, n1, rcodes, Zr, rq, roff, rnl, _NESTED_BLOCKS)
    cross = CrossBlocks(*pairs)
    if nested:
        A22 = None
    else:
        A22_blocks = None
    qs = [t.q for t in terms]
    theta_start = np.zeros(len(qs), dtype=np.int64)
    for k in range(1, len(qs)):
        theta_start[k] = theta_start[k - 1] + qs[k - 1] * (qs[k - 1] + 1) // 2
    XaXa = Xa.T @ Xa
    moments = Moments(A1, ZXa1, nz_i, nz_j, nz_v, ZXa2, XaXa)
    layout = Layout(theta_start, np.asarray(qs, dtype=np.int64), col_term, col_start, nested)
    return _Stats(n, p, q1, n1, A1, ZXa1, Q2, A22, ZXa2, cross, XaXa, rest, qmax, moments, layout,
                  nested=nested, A22_blocks=A22_blocks)


# The nested trailing block (``sufficient_moments`` decides it from the grouping codes): one later
# term, and every level j of the leading term in exactly one pair (j, l), i.e. all rows of j in one
# level l (classes in schools: ``(1 | school/class)``, a class in one school; also ``(1 | g) +
# (0 + x | g)``). Then Z2'Z2 is block diagonal (one term) and W_j'W_j falls in level l's block, so
# S = Lambda2'Z2'Z2 Lambda2 + I - sum_j W_j'W_j is block diagonal: it is held as (levels, q2, q2)
# and factored per level. Crossed designs (Penicillin, InstEval: a level j meets several levels l)
# keep the dense block. False forces the dense block (tests compare the two).
_NESTED_BLOCKS = True


@dataclass
class _Factor:
    """The blocked factor at one theta (enough for the criterion and every conditional estimate)."""

    T: list
    L1: np.ndarray  # (n1, q1, q1)
    R1: np.ndarray  # (n1, q1, p+1) L1^{-1} T1' Z1'[X y]
    W: np.ndarray  # flat, CrossBlocks layout: L1^{-1} T1' B T_k
    L2: np.ndarray  # (Q2, Q2) lower
    R2: np.ndarray  # (Q2, p+1)
    R: np.ndarray  # (p+1, p+1) upper: chol of [X y]'[X y] - R_ZXa'R_ZXa
    ldL2: float
    ok: bool


def _lambda2_apply_left(stats: _Stats, Tk, M):
    """Lambda2' M for a (Q2, m) array M (Lambda2 = blockdiag of T_k over each term's levels)."""
    out = np.empty_like(M)
    for ti, (k, o, q, nl) in enumerate(stats.rest_terms):
        blk = M[o:o + q * nl].reshape(nl, q, -1)
        out[o:o + q * nl] = np.einsum("ba,lbm->lam", Tk[ti][:q, :q], blk).reshape(q * nl, -1)
    return out


def _factorize(stats: _Stats, theta: np.ndarray, layout) -> _Factor:
    T = [_tri(theta[s:s + c], q) for (s, c), q in zip(layout, [stats.q1] + [r[2] for r in stats.rest_terms])]
    T1 = T[0]
    q1 = stats.q1
    if q1 == 1:
        t = T1[0, 0]
        L1 = np.sqrt(t * t * stats.A1 + 1.0)
        R1 = (t * stats.ZXa1) / L1
    else:
        M = np.einsum("ba,jbc,cd->jad", T1, stats.A1, T1)
        M[:, np.arange(q1), np.arange(q1)] += 1.0
        L1 = np.linalg.cholesky(M)
        rhs = np.einsum("ba,jbm->jam", T1, stats.ZXa1)
        R1 = np.linalg.solve(L1, rhs)
    ldL2 = 2.0 * float(np.sum(np.log(np.diagonal(L1, axis1=1, axis2=2))))
    m = stats.p + 1
    gram = stats.XaXa - np.einsum("jam,jak->mk", R1, R1)
    if stats.Q2:
        Tk = np.zeros((len(stats.rest_terms), stats.qmax, stats.qmax))
        for ti, (k, o, q, nl) in enumerate(stats.rest_terms):
            Tk[ti, :q, :q] = T[k]
        L1c = np.ascontiguousarray(L1)
        W = scaled_cross(stats.cross, np.ascontiguousarray(T1), Tk, L1c)
        if stats.nested:
            return _factorize_nested(stats, T, Tk, L1, R1, W, gram, ldL2)
        S = _lambda2_apply_left(stats, Tk, _lambda2_apply_left(stats, Tk, stats.A22).T.copy())
        S.flat[::S.shape[0] + 1] += 1.0  # + I (np.diag_indices_from's index arrays cost ~4x more)
        R2 = _lambda2_apply_left(stats, Tk, stats.ZXa2)
        schur_update(stats.cross, W, S, np.ascontiguousarray(R1), R2)
        try:
            L2 = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            return _Factor(T, L1, R1, W, np.zeros((0, 0)), R2, np.zeros((m, m)), np.inf, False)
        ldL2 += 2.0 * float(np.sum(np.log(np.diag(L2))))
        R2 = forward_solve(L2, np.ascontiguousarray(R2))
        gram -= R2.T @ R2
    else:
        W = np.zeros(0)
        L2 = np.zeros((0, 0))
        R2 = np.zeros((0, m))
    try:
        R = np.linalg.cholesky(gram).T
    except np.linalg.LinAlgError:
        # r^2 can underflow to <= 0 at an exact fit; the X part must still be positive definite
        return _Factor(T, L1, R1, W, L2, R2, np.zeros((m, m)), ldL2, False)
    return _Factor(T, L1, R1, W, L2, R2, R, ldL2, True)


def _factorize_nested(stats: _Stats, T, Tk, L1, R1, W, gram, ldL2) -> _Factor:
    """``_factorize``'s trailing part for a nested trailing block (``_NESTED_BLOCKS``): the
    dense path's operations on each level's q2 x q2 block (the dense matrices are zero outside
    them), L2 (n2, q2, q2) the blocks' lower Cholesky factors."""
    m = stats.p + 1
    T2 = Tk[0]  # one later term: Tk (1, q2, q2)
    A = stats.A22_blocks  # Lambda2' Z2'Z2 Lambda2 per block, as _lambda2_apply_left twice
    S = np.einsum("ba,lbm->lam", T2, np.einsum("ba,lbm->lam", T2, A).transpose(0, 2, 1).copy())
    S[:, np.arange(S.shape[1]), np.arange(S.shape[1])] += 1.0
    R2 = _lambda2_apply_left(stats, Tk, stats.ZXa2)
    nested_schur_update(stats.cross, W, S, np.ascontiguousarray(R1), R2)
    try:
        L2 = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        return _Factor(T, L1, R1, W, np.zeros((0, 0, 0)), R2, np.zeros((m, m)), np.inf, False)
    ldL2 += 2.0 * float(np.sum(np.log(np.diagonal(L2, axis1=1, axis2=2).ravel())))
    R2 = nested_forward_solve(L2, np.ascontiguousarray(R2))
    gram -= R2.T @ R2
    try:
        R = np.linalg.cholesky(gram).T
    except np.linalg.LinAlgError:
        return _Factor(T, L1, R1, W, L2, R2, np.zeros((m, m)), ldL2, False)
    return _Factor(T, L1, R1, W, L2, R2, R, ldL2, True)


def _trailing_inverse(stats: _Stats, L2: np.ndarray) -> np.ndarray:
    """S^{-1} from the trailing factor L2 (S = L2 L2'): (Q2, Q2) dense, or for a nested block
    its diagonal blocks (n2, q2, q2) (S^{-1} is zero elsewhere)."""
    if stats.nested:
        q2 = L2.shape[1]
        L2inv = np.stack([forward_solve(L2[lv], np.eye(q2)) for lv in range(L2.shape[0])]) if q2 > 1 \
            else 1.0 / L2  # forward_solve's 1 / L of a 1 x 1 block
        return L2inv.transpose(0, 2, 1) @ L2inv
    L2inv = forward_solve(L2, np.eye(stats.Q2))
    return L2inv.T @ L2inv


def _criterion_from(stats: _Stats, f: _Factor, reml: bool) -> float:
    if not f.ok:
        return np.inf
    p, n = stats.p, stats.n
    pwrss = f.R[p, p] ** 2
    if reml:
        nmp = n - p
        ldRX2 = 2.0 * float(np.sum(np.log(np.abs(np.diag(f.R)[:p]))))
        return f.ldL2 + ldRX2 + nmp * (1.0 + math.log(2.0 * math.pi * pwrss / nmp))
    return f.ldL2 + n * (1.0 + math.log(2.0 * math.pi * pwrss / n))


def _criterion_and_gradient(stats: _Stats, theta: np.ndarray, reml: bool, keep: bool = False):
    """The profiled criterion and its exact gradient in theta, for models whose terms are all
    scalar (random intercepts: Lambda = diag(theta_k over term k's levels)).

    With A = [[Lambda'Z'Z Lambda + I, Lambda'Z'X], [X'Z Lambda, X'X]] and C = [Z Lambda, X]
    (A = C'C + diag(I, 0)), dC/dtheta_k = C D_k / theta_k for D_k the indicator of term k's
    columns, so d log|A| / dtheta_k = (2 / theta_k) (n_k - tr_k((A^{-1})_uu)) (n_k levels;
    tr_k sums the diagonal over term k's columns). log|A| is log|L|^2 + log|R_X|^2 (REML's
    determinants); ML's log|L|^2 alone is the same with M^{-1} for (A^{-1})_uu. The penalised
    residual sum of squares is a minimum over (u, beta), so (envelope theorem, and
    Lambda'Z'r = u at the minimum) d pwrss / dtheta_k = -2 ||u_k||^2 / theta_k. Hence

        grad_k = (2 / theta_k) (n_k - tr_k - nu ||u_k||^2 / pwrss),  nu = n (ML) or n - p (REML),

    and 0 at theta_k = 0 (the criterion depends on theta_k^2 there). The diagonal of
    (A^{-1})_uu comes from the blocked factor: the trailing block's is diag(S^{-1}) (S^{-1} from
    LAPACK's dpotri); the leading block's is (1 + w_j'S^{-1}w_j) / L1_j^2, w_j row j of W, whose
    sum is sum_j 1 / L1_j^2 + sum_j w_j'S^{-1}w_j / L1_j^2 (``cross_trace``);
    REML adds the row norms of L^{-T} R_ZX R_X^{-1}. Cost: about two dense Cholesky factors of
    the trailing block (dpotrf + dpotri), against 2K + 1 criterion evaluations for central
    differences. The factor here (LAPACK for a large trailing block), the gradient from it in
    ``lmer_kernels._scalar_gradient`` (also the small models' ``scalar_criterion_gradient``).
    Returns (criterion, gradient (K,)); (inf, zeros) where a factor fails. With
    ``keep``, the blocked factor at theta goes to ``stats.last_factor`` (for ``_fit_stats``).
    A nested trailing block (``stats.nested``) is diagonal here (scalar terms): its factor is the
    square roots of S's diagonal, diag(S^{-1}) their reciprocals squared, and w_j'S^{-1}w_j has one
    term (O(levels), no LAPACK call).
    """
    from scipy.linalg import lapack, solve_triangular

    K = len(theta)
    schur = leading_and_nested_schur if stats.nested else leading_and_schur
    ok, ld, gram, L1, R1, W, S, R2, _T = schur(theta, stats.moments, stats.cross, stats.layout)
    if not ok:
        return np.inf, np.zeros(K)
    n, p = stats.n, stats.p
    if stats.nested:
        # S (n2, 1, 1): the trailing factor is the square roots, S^{-1} the reciprocals
        s2 = S[:, 0, 0]
        if not np.all(s2 > 0.0) or not np.all(np.isfinite(s2)):
            return np.inf, np.zeros(K)
        U = np.sqrt(s2)
        ld += 2.0 * float(np.sum(np.log(U)))
        R2s = R2 / U[:, None]
        gram = gram - R2s.T @ R2s
    elif stats.Q2:
        # S holds its lower triangle in C order: S.T is the same memory as a Fortran upper triangle
        U, info = lapack.dpotrf(S.T, lower=0, clean=1, overwrite_a=1)  # U'U = S, U = L2'
        if info != 0:
            return np.inf, np.zeros(K)
        ld += 2.0 * float(np.sum(np.log(np.diag(U))))
        Sinv, info = lapack.dpotri(U, lower=0)  # upper triangle of S^{-1} (Fortran order)
        if info != 0:
            return np.inf, np.zeros(K)
        Sinv = Sinv.T  # C order, lower triangle valid
        R2s = solve_triangular(U, R2, trans="T", lower=False, check_finite=False)  # L2^{-1} R2
        gram = gram - R2s.T @ R2s
    try:
        Lg = np.linalg.cholesky(np.triu(gram) + np.triu(gram, 1).T)
    except np.linalg.LinAlgError:
        return np.inf, np.zeros(K)
    pwrss = Lg[p, p] ** 2
    nu = n - p if reml else n
    crit = ld + nu * (1.0 + math.log(2.0 * math.pi * pwrss / nu))
    if reml:
        crit += 2.0 * float(np.sum(np.log(np.diag(Lg)[:p])))
    # the gradient from the factor: lmer_kernels' compiled algebra, S^{-1} from LAPACK here
    Lg = np.ascontiguousarray(Lg)
    none2, none3 = np.zeros((0, 0)), np.zeros((0, 1, 1))
    if stats.nested:
        L2 = np.ascontiguousarray(U[:, None, None])
        grad = _scalar_gradient(theta, stats.cross, stats.layout, n, reml, L1, R1, W, R2s, Lg, True, L2,
                                none2, none2)
    elif stats.Q2:
        L2 = np.ascontiguousarray(U.T)
        R2s = np.ascontiguousarray(R2s)
        grad = _scalar_gradient(theta, stats.cross, stats.layout, n, reml, L1, R1, W, R2s, Lg, False, none3,
                                L2, np.ascontiguousarray(Sinv))
    else:
        L2 = none2
        grad = _scalar_gradient(theta, stats.cross, stats.layout, n, reml, L1, R1, W, np.zeros((0, p + 1)), Lg,
                                False, none3, none2, none2)
    if keep:  # the blocked factor at theta, as _factorize gives it
        m = p + 1
        R2f = R2s if stats.Q2 else np.zeros((0, m))
        stats.last_factor = (np.array(theta, dtype=float), _Factor(
            [np.array([[t]]) for t in theta], L1, R1, W, L2, R2f, np.ascontiguousarray(Lg.T), ld, True))
    return crit, grad


class _MomentEstimates(NamedTuple):
    """``_moment_components``' one-way ANOVA estimates: comps (K,) sigma_k^2, levels (K,) J per
    term, n0 (K,) the effective level size, sigma2 the residual variance, n the rows."""

    comps: np.ndarray
    levels: np.ndarray
    n0: np.ndarray
    sigma2: float
    n: int


def _moment_components(stats: _Stats) -> _MomentEstimates:
    """One-way ANOVA moment estimates per scalar term from the OLS residuals (Searle, Casella &
    McCulloch 1992, "Variance Components", sec. 3.6: sigma_k^2 = (MSB - MSW) / n0, n0 = (sum a -
    sum a^2 / sum a) / (J - 1), with a_j = z_j'z_j the term's weight in level j; counts for
    intercepts), each term taken alone. Returns ``_MomentEstimates`` (comps (K,), J (K,), n0 (K,),
    sigma2 the residual variance left after all terms, n); computed once per fit, read by
    ``_moment_start`` and ``_moment_curvature``."""
    p = stats.p
    XaXa = stats.XaXa
    beta = np.linalg.solve(XaXa[:p, :p], XaXa[:p, p])
    rss = float(XaXa[p, p] - XaXa[:p, p] @ beta)
    n = stats.n
    parts = [(stats.A1[:, 0, 0], stats.ZXa1[:, 0, p] - stats.ZXa1[:, 0, :p] @ beta)]
    diag2 = np.zeros(stats.Q2)
    mo = stats.moments
    on_diag = mo.A22_i == mo.A22_j
    diag2[mo.A22_i[on_diag]] = mo.A22_v[on_diag]
    s2 = stats.ZXa2[:, p] - stats.ZXa2[:, :p] @ beta if stats.Q2 else np.zeros(0)
    for (k, o, q, nl) in stats.rest_terms:
        parts.append((diag2[o:o + nl], s2[o:o + nl]))
    comps, levels, n0s = [], [], []
    for a, s in parts:
        keep = a > 0
        a, s = a[keep], s[keep]
        J = len(a)
        ssb = float(np.sum(s * s / a))
        msb = ssb / max(J - 1, 1)
        msw = max(rss - ssb, 0.0) / max(n - J - p, 1)
        n0 = (a.sum() - np.sum(a * a) / a.sum()) / max(J - 1, 1)
        comps.append(max(msb - msw, 0.0) / n0 if n0 > 0 else 0.0)
        levels.append(J)
        n0s.append(n0)
    sigma2 = max(rss / max(n - p, 1) - sum(comps), 0.05 * rss / max(n - p, 1))
    return _MomentEstimates(np.array(comps), np.array(levels, dtype=float), np.array(n0s), sigma2, n)


def _moment_start(est: _MomentEstimates) -> np.ndarray:
    """A start for theta when every term is scalar: theta_k = sigma_k / sigma from the moment
    estimates of ``_moment_components``. Crossed factors bias each such estimate, but the start
    is only a start: it lands within a few percent of InstEval's optimum where lme4's start
    (all 1) is 3x too large."""
    # a component estimated at 0 starts at a small interior value (theta = 0 is stationary)
    return np.maximum(np.sqrt(est.comps / est.sigma2), 0.05)


def _moment_curvature(est: _MomentEstimates, theta: np.ndarray) -> np.ndarray:
    """Diagonal of the profiled criterion's Hessian in theta predicted from the one-way ANOVA
    sampling variance (Searle et al. 1992, sec. 3.6: var(sigma_b^2) ~ (2 / n0^2) (MSB^2 / (J - 1)
    + MSW^2 / (N - J)), MSB = sigma^2 (1 + n0 theta^2)): the criterion is -2 log L, so its
    curvature is 2 / var(theta) = 4 theta^2 n0^2 / ((1 + n0 theta^2)^2 / (J - 1) + 1 / (N - J)).
    It scales the quasi-Newton start (``lmer_kernels.minimize_bounded``'s h0); within a factor ~1.5 of InstEval's
    (crossing correlates the terms, which BFGS learns). theta is floored at 0.1 (at 0 the
    criterion is flat to first order in theta)."""
    J = est.levels
    th = np.maximum(np.asarray(theta, dtype=float), 0.1)
    n0 = np.maximum(est.n0, 1.0)
    return 4.0 * th * th * n0 * n0 / ((1.0 + n0 * th * th) ** 2 / np.maximum(J - 1, 1)
                                      + 1.0 / max(est.n - J.max(), 1))


def _optimize(stats: _Stats, layout, lower, reml: bool, theta0=None):
    """Minimise the profiled criterion over theta under lme4's bounds: projected BFGS
    (``lmer_kernels.minimize_bounded``) on compiled finite-difference gradients from lme4's start,
    then ``newton_polish`` (every term scalar, or one term of any size: on the exact gradient,
    ``criterion_gradient``, the polish only where BFGS stopped short); for a large dense trailing block, the
    same BFGS on the exact gradient from the moment start (scalar terms) or COBYQA from lme4's
    start (others). ``theta0`` (a refit's start) replaces either start.
    Returns (theta, criterion, evaluations, converged)."""
    start_default = theta0 is None
    if start_default:
        theta0 = np.where(np.isfinite(lower), 1.0, 0.0)
    nfev = [0]

    def fun(th):
        nfev[0] += 1
        return profiled_criterion(np.asarray(th, dtype=float), stats.moments, stats.cross, stats.layout,
                                  stats.n, reml)

    theta0 = np.asarray(theta0, dtype=float)
    lo = np.where(np.isfinite(lower), lower, -np.inf)
    # minimize_bounded on the compiled exact gradient (below, ``lmer_kernels.criterion_gradient``):
    # every term scalar, or one term of any size
    exact = bool(np.all(stats.layout.term_q == 1)) or stats.Q2 == 0
    if stats.Q2 >= _COBYQA_MIN_Q2 and not bool(np.all(stats.layout.term_q == 1)):
        # Expensive evaluations (large crossed designs): COBYQA's quadratic models (Powell's
        # successor to lme4's bobyqa) need 2-3x fewer evaluations than finite-difference
        # L-BFGS-B; its own overhead (~ms per step) does not matter there.
        res = scipy.optimize.minimize(
            fun, theta0, method="COBYQA",
            bounds=scipy.optimize.Bounds(np.where(np.isfinite(lower), lower, -np.inf), np.full(len(lower), np.inf)),
            options={"initial_tr_radius": 0.5, "final_tr_radius": 1e-7, "maxfev": 100 * (len(lower) + 1) ** 2})
        x = np.where(np.isfinite(lower), np.maximum(res.x, lower), res.x)
        return x, fun(x), nfev[0], bool(res.success)
    if stats.Q2 >= _COBYQA_MIN_Q2:
        # Large crossed random intercepts (InstEval): each evaluation is a dense Cholesky of the
        # trailing block, so evaluations are what counts: BFGS on the exact gradient
        # (``_criterion_and_gradient``, about 2 evaluations' cost) from the moment start, its
        # Hessian started at the moment estimate of its diagonal (``_moment_curvature``), so that
        # the first step is a Newton step (L-BFGS-B's first step, of length 1 along -g, took
        # InstEval past its optimum and back: 12 evaluations where this takes 7).
        est = _moment_components(stats)
        if start_default:
            theta0 = _moment_start(est)
        h0 = _moment_curvature(est, theta0)

        last_gradient = [None]

        def fun_exact(th):  # the gradient comes with the criterion: kept for grad_exact
            nfev[0] += 1
            f, last_gradient[0] = _criterion_and_gradient(stats, np.asarray(th, dtype=float), reml,
                                                          keep=True)
            return f

        def grad_exact(th, f):  # minimize_bounded asks for it at the point it has just evaluated
            return last_gradient[0]

        def run(start):
            x, fx, _conv = minimize_bounded(fun_exact, grad_exact, start, lower, h0, maxit=80, tol=1e-9)
            return np.maximum(x, lower), float(fx)
    else:
        # every term scalar (Dyestuff, Penicillin, Pastes, classes in schools) or one term of any
        # size (sleepstudy, Exam's slopes): BFGS on the exact gradient (``criterion_gradient``,
        # computed with the criterion at each line search's first trial, 1.5-3 times an
        # evaluation's cost against 2K evaluations for central differences); it meets its gradient
        # test (1e-6) at the optimum, so the Newton polish below acts only where it did not (on the
        # exact gradient's differences). Other layouts: central differences, then the polish.
        # minimize_bounded's iterations compiled with the criterion (minimize_criterion): the same
        # steps without a Python call of a kernel per evaluation.
        k = len(lower)
        problem = CriterionProblem(stats.moments, stats.cross, stats.layout, stats.n, bool(reml), lo, exact,
                                   np.zeros(1, dtype=np.int64), np.full(k, np.nan), np.zeros(k))

        def run(start):
            problem.nfev[0] = 0
            tol = _EXACT_BFGS_TOL if exact else _BFGS_TOL
            x, fx, _conv = minimize_criterion(np.asarray(start, dtype=float), problem, 500, tol)
            nfev[0] += int(problem.nfev[0])
            return x, fx

    x, fx = run(theta0)
    # theta_i = 0 is a stationary point of the criterion (it depends on T T'), so a step onto
    # the bound can stall there: probe the interior and restart if it is lower.
    for _round in range(3):
        at_zero = [i for i in range(len(x)) if lower[i] == 0 and x[i] < SINGULAR_TOL]
        best = None
        for i in at_zero:
            for v in (1e-2, 1e-1, 0.5, 1.0):
                xt = x.copy()
                xt[i] = v
                ft = fun(xt)
                if ft < fx - 1e-10 and (best is None or ft < best[1]):
                    best = (xt, ft)
        if best is None:
            break
        x, fx = run(best[0])
    if stats.Q2 >= _COBYQA_MIN_Q2:  # the exact gradient took BFGS to the optimum
        return x, fx, nfev[0], bool(np.isfinite(fx))
    # exact: Newton on the exact gradient only where BFGS stopped short of its gradient test (the
    # gradient at x is at hand where BFGS's last accepted point was a first trial)
    if exact:
        x, fx, k = newton_polish(x, fx, lo, stats.moments, stats.cross, stats.layout, stats.n, reml, 3, True,
                                 problem.grad_at, problem.grad)
    else:
        x, fx, k = newton_polish(x, fx, lo, stats.moments, stats.cross, stats.layout, stats.n, reml, 3, False,
                                 _NO_GRADIENT, _NO_GRADIENT)
    nfev[0] += k
    # The polish's Newton step can end a coordinate just off its bound, where it then holds it (its
    # difference step would cross the bound) and the criterion is flat (theta_i = 0 is stationary):
    # the bound itself is tried, as a full BFGS's projected steps reach it, and the rest polished.
    # The exact gradient vanishes linearly there, so its BFGS stops ~1e-8 off the bound, where the
    # criterion equals its value on the bound to rounding: the bound is taken within 1e-13 |f|.
    near = np.flatnonzero((lower == 0) & (x > 0) & (x < SINGULAR_TOL))
    if near.size:
        xt = x.copy()
        xt[near] = 0.0
        ft = fun(xt)
        if ft <= fx + (1e-13 * (1.0 + abs(fx)) if exact else 0.0):
            x, fx, k = newton_polish(xt, ft, lo, stats.moments, stats.cross, stats.layout, stats.n, reml, 3, exact,
                                     _NO_GRADIENT, _NO_GRADIENT)
            nfev[0] += k
    return x, fx, nfev[0], bool(np.isfinite(fx))


# ------------------------------------------------------------------------------------------------
# the results object
# ------------------------------------------------------------------------------------------------


@dataclass
class LmerFit:
    """A fitted linear mixed model (lme4's ``lmerMod``)."""

    formula: str
    reml: bool
    _beta: np.ndarray = field(repr=False)  # (p,) the fixed effects; ``fixef`` labels them
    _vcov_matrix: np.ndarray = field(repr=False)  # (p, p); ``vcov`` labels it
    _names: list = field(repr=False)  # the p fixed-effect column names
    theta: np.ndarray
    sigma: float
    criterion: float
    nobs: int
    terms: list = field(repr=False)
    response_name: str = ""
    lower: np.ndarray = field(repr=False, default=None)
    n_evaluations: int = 0
    converged: bool = True
    _stats: _Stats = field(repr=False, default=None)
    _factor: _Factor = field(repr=False, default=None)
    _layout: list = field(repr=False, default=None)
    _frame_args: tuple = field(repr=False, default=None)
    # engine.newdata.FittedTerms of the fixed part, or (model frame, data columns) to build it from on
    # first use (predict with newdata): listing pandas 3's Arrow string columns alone costs ~80 us
    _fixed_terms_of: object = field(repr=False, default=None)
    _assign: tuple = field(repr=False, default=None)  # (term index, term label) per fixed column (R's assign)
    _bars: list = field(repr=False, default=None)  # the formula's random-effect bars, "(Days | Subject)"

    # The pandas labels are built on first access: a Series and a DataFrame over a string index
    # cost ~0.25 and ~0.45 ms (pandas 3's Arrow-backed strings), a sizeable share of a small fit.
    @functools.cached_property
    def fixef(self) -> pd.Series:
        """The fixed effects, (p,) Series over the column names."""
        return pd.Series(self._beta, index=self._names)

    @functools.cached_property
    def vcov(self) -> pd.DataFrame:
        """The fixed effects' covariance, (p, p) DataFrame over the column names."""
        return pd.DataFrame(self._vcov_matrix, index=self._names, columns=self._names)

    # The conditional modes and the fitted values are computed on first use too (a small fit's
    # back substitution and its n-row fitted values, ~30-90 us, which anova, pool and
    # refit_ml never read); each is the same arithmetic on the same arrays whenever it runs.
    @functools.cached_property
    def _u(self) -> list[np.ndarray]:
        """Spherical conditional modes per term, (nlev, q): back substitution through the blocked
        factor at the optimum (u = L^{-T}(R_Zy - R_ZX beta))."""
        stats, f, beta = self._stats, self._factor, self._beta
        p = stats.p
        rhs1 = f.R1[:, :, p] - f.R1[:, :, :p] @ beta
        us = []
        if stats.Q2:
            rhs2 = f.R2[:, p] - f.R2[:, :p] @ beta
            u2 = (nested_back_solve if stats.nested else back_solve_t)(f.L2, np.ascontiguousarray(rhs2))
            rhs1 = rhs1 - cross_times(stats.cross, f.W, u2, stats.n1, stats.q1)
        else:
            u2 = np.zeros(0)
        if stats.q1 == 1:
            u1 = rhs1 / f.L1[:, :, 0]
        else:
            u1 = solve_upper_t_blocks(np.ascontiguousarray(f.L1), np.ascontiguousarray(rhs1))
        us.append(u1)
        for (k, o, q, nl) in stats.rest_terms:
            us.append(u2[o:o + q * nl].reshape(nl, q))
        return us

    @functools.cached_property
    def fitted(self) -> np.ndarray:
        """Fitted values X beta + Z b, (n,) float64 (engine.partitioned.lmer sets None)."""
        X = self._frame_args[3]
        fitted = X @ self._beta
        for t, u, T in zip(self.terms, self._u, self._factor.T):
            b = u @ T.T
            fitted = fitted + np.einsum("iq,iq->i", t.Z, b[t.codes])
        return fitted

    @functools.cached_property
    def resid(self) -> np.ndarray:
        """Residuals y - fitted, (n,) float64 (engine.partitioned.lmer sets its five quantiles)."""
        return self._frame_args[4] - self.fitted

    def __repr__(self) -> str:  # the dataclass's own repr, with fixef and vcov in their places
        shown = [("formula", self.formula), ("reml", self.reml), ("fixef", self.fixef), ("vcov", self.vcov)]
        shown += [(f.name, getattr(self, f.name)) for f in fields(self)
                  if f.repr and f.name not in ("formula", "reml")]
        return f"{type(self).__qualname__}(" + ", ".join(f"{k}={v!r}" for k, v in shown) + ")"

    @property
    def _fixed_terms(self):
        """engine.newdata.FittedTerms of the fixed part (None when the fit does not keep them)."""
        if isinstance(self._fixed_terms_of, tuple):
            from engine.newdata import fitted_terms

            mf, columns = self._fixed_terms_of
            self._fixed_terms_of = fitted_terms(mf, list(columns))
        return self._fixed_terms_of

    # -- numbers ---------------------------------------------------------------------------------
    @property
    def params(self) -> pd.Series:
        return self.fixef

    @property
    def bse(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef.index)

    @property
    def tvalues(self) -> pd.Series:
        return self.fixef / self.bse

    @property
    def n_theta(self) -> int:
        return len(self.theta)

    @property
    def n_params(self) -> int:
        """lme4's logLik df: fixed effects + theta + sigma."""
        return len(self.fixef) + self.n_theta + 1

    @property
    def df_resid(self) -> int:
        """lme4's ``df.residual``: nobs - (p + length(theta) + 1); mice's dfcom for lmer fits."""
        return self.nobs - self.n_params

    @property
    def reml_criterion(self) -> float:
        if not self.reml:
            raise AttributeError("an ML fit has no REML criterion (lme4's REMLcrit refits); see deviance")
        return self.criterion

    def deviance(self, REML=None) -> float:
        """lme4 1.1-31's ``deviance.merMod(object, REML = NULL)``: on an ML fit (any ``REML``)
        -2 log-likelihood; on a REML fit with ``REML=None`` the REML criterion and lme4's
        deprecation warning; on a REML fit with any other ``REML`` the ML deviance at the REML
        estimates (lme4's ``devCrit(fit, REML = FALSE)``: ldL2 + n (1 + log(2 pi pwrss / n)))."""
        if not self.reml:
            return self.criterion
        if REML is None:
            warn_user("deviance() is deprecated for REML fits; use REMLcrit for the REML "
                      "criterion or deviance(.,REML=FALSE) for deviance calculated at the "
                      "REML fit", FutureWarning)
            return self.criterion
        st = self._stats
        f = self._factor
        pwrss = f.R[st.p, st.p] ** 2
        return f.ldL2 + st.n * (1.0 + math.log(2.0 * math.pi * pwrss / st.n))

    @property
    def loglik(self) -> float:
        return -0.5 * self.criterion

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + math.log(self.nobs) * self.n_params

    @property
    def is_singular(self) -> bool:
        """``lme4::isSingular(fit, tol = 1e-4)``: a theta with lower bound 0 below 1e-4."""
        return bool(np.any(self.theta[self.lower == 0] < SINGULAR_TOL))

    @property
    def ngrps(self) -> dict:
        """Levels per grouping factor (lme4's ``ngrps``: unique factors in term order)."""
        out = {}
        for t in self.terms:
            out.setdefault(t.group, t.nlev)
        return out

    def _group_names(self) -> list[str]:
        """VarCorr's names: the grouping factor per term, repeats made unique (g, g.1)."""
        seen: dict = {}
        out = []
        for t in self.terms:
            k = seen.get(t.group, 0)
            out.append(t.group if k == 0 else f"{t.group}.{k}")
            seen[t.group] = k + 1
        return out

    def _term_covs(self):
        """sigma^2 T_k T_k' per term."""
        return [self.sigma ** 2 * (T @ T.T) for T in self._factor.T]

    def varcorr(self) -> pd.DataFrame:
        """R's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor (variances and SDs,
        then covariances and correlations of each term, then the residual)."""
        rows = []
        for name, t, C in zip(self._group_names(), self.terms, self._term_covs()):
            sd = np.sqrt(np.diag(C))
            for i, cn in enumerate(t.cnms):
                rows.append((name, cn, None, C[i, i], sd[i]))
            for i in range(t.q):
                for j in range(i + 1, t.q):
                    cor = C[j, i] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else np.nan
                    rows.append((name, t.cnms[i], t.cnms[j], C[j, i], cor))
        rows.append(("Residual", None, None, self.sigma ** 2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def _b(self) -> list[np.ndarray]:
        """Conditional modes b = Lambda u per term, (nlev, q)."""
        return [u @ T.T for u, T in zip(self._u, self._factor.T)]

    def _cond_var(self) -> list[np.ndarray]:
        """sigma^2 T diag-block((Lambda'Z'Z Lambda + I)^{-1}) T' per term: (nlev, q, q)."""
        st, f = self._stats, self._factor
        Linv1 = np.linalg.inv(f.L1) if st.q1 > 1 else 1.0 / f.L1
        if st.Q2:
            Sinv = _trailing_inverse(st, f.L2)
            quadratic = nested_cross_quadratic if st.nested else cross_quadratic
            inner = np.eye(st.q1)[None] + quadratic(st.cross, f.W, Sinv, st.n1, st.q1)
        else:
            Sinv = np.zeros((0, 0))
            inner = np.broadcast_to(np.eye(st.q1), (st.n1, st.q1, st.q1))
        V1 = np.einsum("jba,jbc,jcd->jad", Linv1, inner, Linv1)
        out = [V1]
        for (k, o, q, nl) in st.rest_terms:
            if st.nested:  # the blocks themselves
                out.append(Sinv)
                continue
            blk = Sinv[o:o + q * nl, o:o + q * nl].reshape(nl, q, nl, q)
            out.append(np.stack([blk[l, :, l, :] for l in range(nl)]) if nl else np.zeros((0, q, q)))
        s2 = self.sigma ** 2
        return [s2 * np.einsum("ab,lbc,dc->lad", T, V, T) for T, V in zip(f.T, out)]

    def ranef(self, condvar: bool = True) -> dict:
        """Conditional modes per grouping factor (lme4's ``ranef``): a DataFrame (levels x
        coefficient names; terms of the same factor side by side) per factor; with ``condvar``
        its ``attrs["condvar"]`` holds the conditional variances, (nlev, q, q) per term."""
        bs = self._b()
        cvs = self._cond_var() if condvar else [None] * len(bs)
        out: dict = {}
        for t, b, cv in zip(self.terms, bs, cvs):
            frame = pd.DataFrame(b, index=pd.Index(t.levels, dtype=object), columns=t.cnms)
            if t.group in out:
                prev = out[t.group]
                merged = pd.concat([prev, frame], axis=1)
                merged.attrs["condvar"] = prev.attrs.get("condvar", []) + [cv]
                out[t.group] = merged
            else:
                frame.attrs["condvar"] = [cv]
                out[t.group] = frame
        return out

    def coef(self) -> dict:
        """lme4's ``coef``: fixed effects plus conditional modes, per grouping factor."""
        out = {}
        for g, frame in self.ranef(condvar=False).items():
            full = pd.DataFrame(np.tile(self.fixef.to_numpy(), (len(frame), 1)), index=frame.index,
                                columns=self.fixef.index)
            for c in frame.columns:
                if c in full.columns:
                    full[c] = full[c] + frame[c].to_numpy()
                else:
                    full[c] = frame[c].to_numpy()
            out[g] = full  # fixed-effect columns first, then random-only ones (lme4's union)
        return out

    def predict(self, newdata: pd.DataFrame | None = None, re_form=None,
                allow_new_levels: bool = False) -> np.ndarray:
        """lme4's ``predict.merMod(fit, newdata, re.form, allow.new.levels)``: X beta plus the
        conditional modes Z b of the selected terms, (len(newdata),) float64.

        re_form: None (every term, lme4's ``NULL``); ``"~0"``, ``"NA"`` or ``np.nan`` (none:
        population level, lme4's ``NA``/``~0``); or a formula of bars, ``"~ (1 | plate)"``,
        whose terms (matched by grouping factor and left side) are kept. A level of a grouping
        factor the fit never saw is an error (:class:`~engine.errors.NewFactorLevelError`)
        unless ``allow_new_levels``, where its b is 0 (lme4's population-level value); so is a
        missing grouping value (lme4: an error, or with ``allow.new.levels`` a new level). A row
        with another missing variable gets NaN (lme4's ``na.action = na.pass``). Without newdata:
        the fitted values of the selected terms.
        """
        from engine.errors import NewFactorLevelError
        from engine.newdata import new_design

        keep = self._selected_terms(re_form)
        if newdata is None:
            X = self._frame_args[3]
            out = X @ self.fixef.to_numpy()
            for t, b in zip(self.terms, self._b()):
                if (t.group, tuple(t.cnms)) in keep:
                    out = out + np.einsum("iq,iq->i", t.Z, b[t.codes])
            return out
        if self._fixed_terms is None:
            raise ModelSpecError("predict(newdata=): this fit does not keep its model terms (refit with engine.lmer)")
        X_new = new_design(self._fixed_terms, newdata)
        if X_new.shape[1] != len(self.fixef):  # columns dropped as aliased at the fit (lme4's drop.cols)
            position = {name: j for j, name in enumerate(self._fixed_terms.column_names)}
            X_new = X_new[:, [position[name] for name in self.fixef.index]]
        out = X_new @ self.fixef.to_numpy()
        if not keep:
            return out
        bars = self._bars
        parsed_bars = _formula.parse_formula("engine_y_ ~ 1 + " + " + ".join(bars)).random_terms
        group_columns = [c for c in dict.fromkeys(c for bar in parsed_bars for cols in bar.group_columns for c in cols)
                         if c in newdata.columns and newdata[c].isna().any()]
        if group_columns and not allow_new_levels:
            # lme4's mkNewReTrms: "NAs are not allowed in prediction data for grouping variables
            # unless allow.new.levels is TRUE" (engine used to return NaN for such rows)
            raise DataError(
                f"newdata: the grouping column {group_columns[0]!r} has missing values; lme4 does not allow NAs "
                "in prediction data for grouping variables unless allow_new_levels=True")
        nd = newdata.copy()  # the user's data is never modified
        if group_columns:  # lme4: a missing grouping value is a new level (b = 0 for the terms it groups)
            taken = {str(level) for t in self.terms for level in t.levels}
            for column in group_columns:
                nd[column] = _missing_as_new_level(nd[column], taken)
        resp = "engine_predict_response_"
        nd[resp] = 0.0
        mf = _formula.model_frame(f"{resp} ~ 1 + " + " + ".join(bars), nd, allow_random=True)
        new_terms = _terms_from_frame(mf, nd, f"{resp} ~ 1 + " + " + ".join(bars))
        rows = np.asarray(mf.rows)
        re_part = np.zeros(len(rows))
        for t, b in zip(self.terms, self._b()):
            key = (t.group, tuple(t.cnms))
            if key not in keep:
                continue
            nt = next(x for x in new_terms if (x.group, tuple(x.cnms)) == key)
            index = {lab: k for k, lab in enumerate(t.levels)}
            codes = np.array([index.get(lab, -1) for lab in nt.levels], dtype=np.int64)[nt.codes]
            if np.any(codes < 0) and not allow_new_levels:
                new = sorted({nt.levels[c] for c, k in zip(nt.codes, codes) if k < 0})
                raise NewFactorLevelError(
                    f"new levels detected in newdata: grouping factor {t.group!r} has level(s) "
                    f"{', '.join(map(repr, new))} the fit never saw (allow_new_levels=True predicts "
                    "them at the population level)")
            bk = np.where(codes[:, None] >= 0, b[np.maximum(codes, 0)], 0.0)
            re_part += np.einsum("iq,iq->i", nt.Z, bk)
        full = np.full(len(newdata), np.nan)
        full[rows] = re_part
        return out + full

    def _selected_terms(self, re_form) -> set:
        """(group, coefficient names) of the terms ``re_form`` keeps (see ``predict``)."""
        every = {(t.group, tuple(t.cnms)) for t in self.terms}
        if re_form is None:
            return every
        if isinstance(re_form, float) and math.isnan(re_form):
            return set()
        text = str(re_form).strip()
        if text.replace(" ", "") in ("NA", "~0", "~-1", "0"):
            return set()
        rhs = text[1:] if text.startswith("~") else text
        mf_terms = _formula.parse_formula(expand_double_verts(f"engine_y_ ~ 1 + {rhs}"))
        bars = mf_terms.random_terms
        if not bars:
            raise ModelSpecError(f"re_form {re_form!r}: give None, '~0' or a formula of random-effect bars")
        wanted = set()
        for bar in bars:  # lme4 keeps the terms of the named grouping factors
            for name, _cols in _bar_groups(bar):
                wanted.add(name)
        keep = {k for k in every if k[0] in wanted}
        if not keep:
            raise ModelSpecError(f"re_form {re_form!r} names no random-effect term of the fit "
                                 f"({', '.join(sorted({g for g, _ in every}))})")
        return keep

    def summary(self):
        from engine.rcompat.print_lme4 import LmerSummary

        return LmerSummary(self)

    def __str__(self) -> str:
        return str(self.summary())

    def refit_ml(self) -> "LmerFit":
        """lme4's ``refitML``: the same model by maximum likelihood (starting from this theta)."""
        if not self.reml:
            return self
        fit = _fit_stats(self._frame_args, reml=False, theta0=self.theta)
        fit._fixed_terms_of, fit._bars, fit._assign = self._fixed_terms_of, self._bars, self._assign
        return fit


# ------------------------------------------------------------------------------------------------
# the user-facing function
# ------------------------------------------------------------------------------------------------


@checked_arguments
def lmer(formula: str, data: pd.DataFrame, REML: bool = True) -> LmerFit:  # noqa: N803 (lme4's name)
    """Fit a linear mixed model as ``lme4::lmer(formula, data, REML)``.

    formula: R syntax with random-effect bars, ``(1 | g)``, ``(1 | a/b)``, ``(1 | a) + (1 | b)``
    (crossed), ``(x | g)`` and ``(x || g)`` (random slopes, correlated or not). Rows with missing
    values in any variable are dropped (na.omit). Returns an ``LmerFit``.
    """
    from engine.partitioned import is_partitioned

    if is_partitioned(data):  # a Dask DataFrame or a Parquet path: engine.partitioned.lmer
        from engine.partitioned.lmer import lmer_partitioned

        return lmer_partitioned(formula, data, REML)
    REML = check_lmer_call(formula, REML)  # noqa: N806
    if not isinstance(data, pd.DataFrame):
        raise ModelSpecError("lmer(): data must be a pandas DataFrame")
    display_formula = expand_double_verts(formula, display=True)
    formula = expand_double_verts(formula)
    mf = _formula.model_frame(formula, data, allow_random=True)
    if not mf.random_effects:
        raise ModelSpecError(f"no random effects terms specified in formula {formula!r}")
    terms = _lme4_order(_terms_from_frame(mf, data, formula))
    _check_grouping_levels(terms, mf.nobs)
    X = np.ascontiguousarray(mf.X)
    names = list(mf.column_names)
    y = np.asarray(mf.y, dtype=float)
    check_lmer_scales(X, y, names, mf.response_name)
    X, names = _drop_aliased_columns(X, names)
    check_lmer_response(y, mf.response_name)
    frame_args = (display_formula, mf.response_name, names, X, y, terms)
    fit = _fit_stats(frame_args, reml=bool(REML))
    fit._fixed_terms_of = (mf, data.columns)  # data.columns: an immutable Index
    term_of = dict(zip(mf.column_names, mf.assign.tolist()))
    fit._assign = tuple((term_of[c], "(Intercept)" if term_of[c] == 0 else mf.term_labels[term_of[c] - 1]) for c in names)
    fit._bars = [bar.text for bar in mf.random_terms]
    return fit


def _check_grouping_levels(terms: list, n: int) -> None:
    """lme4's checks of the grouping factors (lFormula's checkNlevels and checkNobsRE, as errors)
    on the ReTerms of n rows: every factor needs 2 <= levels < n, and a term with q > 1 coefficients
    fewer than n random effects. Shared by engine.lmer and engine.partitioned.lmer."""
    for t in terms:
        if t.nlev < 2:
            raise ModelSpecError(f"grouping factors must have > 1 sampled level (grouping factor {t.group!r} "
                                 f"has {t.nlev} level in the {n} rows used)")
        if t.nlev >= n:
            raise ModelSpecError(
                f"number of levels of each grouping factor must be < number of observations "
                f"(grouping factor {t.group!r} has {t.nlev} levels for {n} observations)")
        if t.q > 1 and t.q * t.nlev >= n:
            raise ModelSpecError(
                f"number of observations (={n}) <= number of random effects (={t.q * t.nlev}) for term "
                f"({' + '.join(t.cnms)} | {t.group}); the random-effects parameters and the residual "
                "variance (or scale parameter) are probably unidentifiable")


def _drop_aliased_columns(X: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """lme4's default ``check.rankX = "message+drop.cols"`` (lme4:::chkRank.drop.cols): R's
    ``qr(X, tol = 1e-7)`` (engine.ols.pivoted_qr, the same LINPACK dqrdc2 pivoting) keeps its
    first ``rank`` pivot columns, in their original order; the message is lme4's."""
    from engine.ols import pivoted_qr

    if X.shape[1] == 0:
        return X, names
    if _clearly_full_rank(X):
        return X, names
    qr = pivoted_qr(X)
    dropped = X.shape[1] - qr.rank
    if dropped == 0:
        return X, names
    warn_user("fixed-effect model matrix is rank deficient so dropping "
              + (f"{dropped} column / coefficient" if dropped == 1 else f"{dropped} columns / coefficients"),
              DataWarning)
    keep = np.sort(qr.pivot[:qr.rank])
    return np.ascontiguousarray(X[:, keep]), [names[j] for j in keep]


def _clearly_full_rank(X: np.ndarray) -> bool:
    """True when R's ``qr(X, tol = 1e-7)`` certainly keeps every column, decided without the QR:
    dqrdc2 moves column j aside when the norm of what is left of it after the earlier columns is
    below 1e-7 of its own norm; the squared ratio is the pivot of the Cholesky factor of X'X scaled
    to a unit diagonal, so pivots all above 1e-6 (against dqrdc2's 1e-14, far beyond the rounding
    of either) mean full rank. Otherwise (near-aliased, a zero or overflowing column, n < p) False:
    the caller runs the QR."""
    from engine._linalg import unit_scaled_cholesky_ok

    n, p = X.shape
    if n < p:
        return False
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        G = X.T @ X  # an extreme column over- or underflows here: then the QR decides
    return bool(unit_scaled_cholesky_ok(np.ascontiguousarray(G), 1e-6))


def _missing_as_new_level(column: pd.Series, taken: set) -> pd.Series:
    """A grouping column of new data with its missing values replaced by a level no fitted term has
    (lme4's predict with ``allow.new.levels = TRUE`` treats NA as a new level: its b is 0). The
    column keeps its kind, so the other levels keep their labels."""
    missing = column.isna()
    if isinstance(column.dtype, pd.CategoricalDtype):
        label = next(f"<NA:{k}>" for k in range(len(taken) + 1) if f"<NA:{k}>" not in taken)
        return column.cat.add_categories([label]).fillna(label)
    if pd.api.types.is_bool_dtype(column.dtype):
        column = column.map({True: "TRUE", False: "FALSE"})
    elif pd.api.types.is_numeric_dtype(column.dtype):
        from engine.rcompat import r_number

        seen = set(column[~missing].astype(float))
        value = next(-float(k) for k in range(1, len(taken) + len(seen) + 2)
                     if r_number(-float(k)) not in taken and -float(k) not in seen)
        return column.astype(float).fillna(value)
    label = next(f"<NA:{k}>" for k in range(len(taken) + 1) if f"<NA:{k}>" not in taken)
    return column.astype(object).where(~missing, label)


def _fit_stats(frame_args, reml: bool, theta0=None, theta_fixed=None, stats=None) -> LmerFit:
    """Fit (or, with ``theta_fixed``, evaluate every estimate at that theta, as lme4's
    ``devFunOnly`` path does: used to check the algebra against lme4 at lme4's own theta).
    ``stats``: the sufficient statistics when given (engine.partitioned.lmer: from the cell sums)."""
    formula, response_name, names, X, y, terms = frame_args
    stats = _sufficient_stats(terms, X, y) if stats is None else stats
    layout, lower = _theta_layout([t.q for t in terms])
    from engine._linalg import SingleThreadedBlas  # one home for the OpenBLAS thread limit

    # Many tiny BLAS calls (the optimisers', the small factors'): a threaded OpenBLAS spends more time
    # waking threads than computing on a shared machine.
    with SingleThreadedBlas():
        if theta_fixed is None:
            theta, crit, nfev, ok = _optimize(stats, layout, lower, reml, theta0)
        else:
            theta = np.asarray(theta_fixed, dtype=float)
            crit = float(profiled_criterion(theta, stats.moments, stats.cross, stats.layout, stats.n, reml))
            nfev, ok = 1, True
        cached = stats.last_factor
        stats.last_factor = None
        if cached is not None and np.array_equal(cached[0], theta):
            f = cached[1]  # the optimiser's last evaluation was at theta
        else:
            f = _factorize(stats, theta, layout)
    p, n = stats.p, stats.n
    R = f.R
    RX = R[:p, :p]
    RXinv = forward_solve(np.ascontiguousarray(RX.T), np.eye(p)).T  # R_X^{-1} (upper)
    beta = RXinv @ R[:p, p]
    pwrss = R[p, p] ** 2
    sigma = math.sqrt(pwrss / (n - p if reml else n))
    vcov = sigma ** 2 * (RXinv @ RXinv.T)
    fit = LmerFit(formula=formula, reml=reml, _beta=beta, _vcov_matrix=vcov, _names=list(names), theta=theta,
                  sigma=sigma, criterion=crit, nobs=n, terms=terms, response_name=response_name, lower=lower,
                  n_evaluations=nfev, converged=ok, _stats=stats, _factor=f, _layout=layout,
                  _frame_args=frame_args)
    if not ok:
        warn_user("lmer: the optimiser did not report convergence", ConvergenceWarning)
    return fit


# ------------------------------------------------------------------------------------------------
# likelihood-ratio tests (lme4's anova.merMod)
# ------------------------------------------------------------------------------------------------


class AnovaTable(pd.DataFrame):
    """lme4's ``anova(m1, m2, ...)`` table; prints as R does (``heading`` lines first)."""

    _metadata = ["heading"]

    @property
    def _constructor(self):
        return AnovaTable

    def __str__(self) -> str:
        from engine.rcompat.print_lme4 import anova_text

        return anova_text(self, self.heading)

    def __repr__(self) -> str:
        return str(self)


class TermsAnovaTable(AnovaTable):
    """lme4's ``anova(m)`` of one fit: the sequential F table (npar, Sum Sq, Mean Sq, F value)."""

    @property
    def _constructor(self):
        return TermsAnovaTable

    def __str__(self) -> str:
        from engine.rcompat.print_lme4 import terms_anova_text

        return terms_anova_text(self, self.heading)


def _anova_terms(fit: LmerFit) -> TermsAnovaTable:
    """lme4 1.1-31's ``anova(m)`` for one model (anovaLmer): with RX the upper Cholesky factor of
    the fixed-effects block (RX'RX = sigma^2 vcov^-1, the top-left p x p block of the factor at the
    optimum), each column's Sum Sq is (RX beta)^2, summed per term of R's ``assign``; Mean Sq =
    Sum Sq / npar, F value = Mean Sq / sigma^2; the intercept's row is dropped. Sequential (type I)
    in the formula's term order, no denominator df or p value (as lme4)."""
    p = len(fit.fixef)
    if fit._assign is None or fit._factor is None:
        raise ModelSpecError("anova(): this lmer fit does not keep its model matrix terms (refit it)")
    ss_col = (fit._factor.R[:p, :p] @ fit.fixef.to_numpy()) ** 2
    order, labels = [], {}
    for k, label in fit._assign:
        if k not in labels:
            order.append(k)
            labels[k] = label
    keys = np.array([k for k, _ in fit._assign])
    rows = [k for k in order if k != 0]
    npar = np.array([np.sum(keys == k) for k in rows], dtype=float)
    ss = np.array([ss_col[keys == k].sum() for k in rows])
    ms = ss / npar if rows else ss
    table = TermsAnovaTable({"npar": npar, "Sum Sq": ss, "Mean Sq": ms, "F value": ms / fit.sigma ** 2},
                            index=[labels[k] for k in rows])
    table.heading = ["Analysis of Variance Table"]
    return table


@checked_arguments
def anova(*fits: LmerFit, names: list[str] | None = None, refit: bool = True) -> AnovaTable:
    """Likelihood-ratio comparison of nested lmer fits, as ``lme4::anova(m1, m2, ...)``; of one
    fit, lme4's sequential F table of its fixed-effect terms (:func:`_anova_terms`).

    REML fits are refitted by ML first (with lme4's message "refitting model(s) with ML (instead
    of REML)"); models are sorted by their number of parameters; Chisq = 2 * max(0, diff(logLik)),
    Df = diff(npar), Pr(>Chisq) from the chi-squared upper tail. Returns the table (columns npar,
    AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq)), one row per model (``names`` or MODEL1...).
    """
    import scipy.stats

    if len(fits) == 1 and isinstance(fits[0], LmerFit):
        if names is not None:
            raise ModelSpecError("anova(): names is for comparing two or more lmer fits")
        return _anova_terms(fits[0])
    if len(fits) < 2:
        raise ModelSpecError("anova() needs an lmer fit, or two or more to compare")
    for k, f in enumerate(fits):
        if not isinstance(f, LmerFit):
            raise ModelSpecError(f"anova(): argument {k + 1} is not an lmer fit")
    if len({f.nobs for f in fits}) > 1:
        raise ModelSpecError("models were not all fitted to the same size of dataset")
    names = list(names) if names is not None else [f"MODEL{k + 1}" for k in range(len(fits))]
    if len(names) != len(fits):
        raise ModelSpecError(f"anova(): names has {len(names)} entries for {len(fits)} models")
    mods = list(fits)
    if refit and any(f.reml for f in mods):
        import sys

        print("refitting model(s) with ML (instead of REML)", file=sys.stderr)
        mods = [f.refit_ml() for f in mods]
    order = sorted(range(len(mods)), key=lambda k: mods[k].n_params)  # R's order(): stable
    mods = [mods[k] for k in order]
    names = [names[k] for k in order]
    ll = np.array([m.loglik for m in mods])
    npar = np.array([m.n_params for m in mods], dtype=float)
    chisq = np.concatenate([[np.nan], 2 * np.maximum(0, np.diff(ll))])
    dfc = np.concatenate([[np.nan], np.diff(npar)])
    with np.errstate(invalid="ignore"):
        pv = np.where(dfc == 0, np.nan, scipy.stats.chi2.sf(chisq, dfc))
    table = AnovaTable({"npar": npar, "AIC": [m.aic for m in mods], "BIC": [m.bic for m in mods],
                        "logLik": ll, "deviance": -2 * ll, "Chisq": chisq, "Df": dfc, "Pr(>Chisq)": pv},
                       index=names)
    table.heading = ["Data: data", "Models:"] + [f"{n}: {m.formula}" for n, m in zip(names, mods)]
    return table


from engine._callable_module import make_module_callable  # noqa: E402

make_module_callable(__name__, "lmer")
