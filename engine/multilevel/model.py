"""The Gaussian multilevel model as plain arrays: the one input of every multilevel sampler.

Random slopes (``(1 + x | g)``, ``(x || g)``, several terms on one factor) generalise the model below
to a coefficient vector per level, r_g[l] ~ N(0, Sigma_g) with design Z (fields ``terms``,
``group_dims``, ``Z``, per-cell cross-products ``cell_uu``/``cell_uy``; see MultilevelModel and
engine.multilevel.blocks); ``has_slopes`` marks that general representation. With random intercepts
only, for observation i in levels l_1(i), ..., l_G(i) of the G grouping factors::

    y_i = b0_c + x_c,i' beta + sum_g r_g[l_g(i)] + e_i,   e_i ~ N(0, sigma^2),
    r_g[l] ~ N(0, tau_g^2),   x_c = x - xbar  (centred as brms centres; intercept column excluded)

with priors on b (beta), Intercept (b0_c, the centred intercept), sd (tau_g) and sigma as engine.priors
resolves them. The reported intercept is brms' ``b_Intercept = b0_c - xbar' beta``. Without an
intercept in the formula nothing is centred (xbar = 0) and there is no Intercept class, as in brms.

Group structure. Grouping factors keep the ModelFrame's order. Group g (g > 0) is *nested* in group
g - 1 when every level of g occurs with exactly one level of g - 1 (classes within schools:
``(1 | schoolid/classid)`` expands to schoolid, schoolid:classid). Maximal runs of successively
nested groups form *blocks*; different blocks are crossed. Random effects of all groups are stacked
in one vector of length L = sum_g n_levels[g]; group g owns entries level_offsets[g] to
level_offsets[g + 1] - 1 ("global level index").

Sufficient statistics. A *cell* is one combination of the levels of all groups that occurs in the
data (for purely nested groups: a level of the deepest group, e.g. a class). Everything a sampler
needs is a function of the per-cell sums, computed once in one O(N p^2) pass (DESIGN.md): per cell k
the count n_k, sum y, sum y^2, sum x_c (p), sum x_c y (p), sum x_c x_c' (p x p); per level the count,
sum y, sum x_c; and the totals X_c'X_c, X_c'y, y'y. After that pass an iteration of the samplers
costs O(L p^2 + p^3), independent of N.

Parameter names are brms': ``parameter_names(model)`` lists the canonical draw vector
(b_Intercept on the original scale, b_<column>..., sd_<group>__Intercept..., sigma) and
``ranef_names(model)`` the random effects r_<group>[<level>,Intercept].
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.errors import ModelSpecError, PriorError
from engine.multilevel.priors import ResolvedPriors, resolve_priors

__all__ = ["MultilevelModel", "RandomTerm", "build_model", "parameter_names", "ranef_names", "SimpleFrame",
           "SimpleGroup", "nested_frame"]


class MultilevelModel(NamedTuple):
    """Everything a sampler needs, as plain arrays (n rows, p = non-intercept columns, G groups,
    L = total levels, K = cells, D = deepest nesting depth, at least 1).

    Names and layout
        response_name: str
        coef_names: tuple[str, ...] (p,)     design columns other than "(Intercept)", in design order
        has_intercept: bool
        group_names: tuple[str, ...] (G,)    brms names: "schoolid", "schoolid:classid"
        group_levels: tuple[tuple[str, ...], ...] (G,)  level labels per group
        n_obs: int                           n
    Data (after listwise deletion)
        y: (n,) float64
        X_c: (n, p) float64                  centred non-intercept columns (uncentred if no intercept)
        x_means: (p,) float64                column means removed from X (zeros if no intercept)
        group_codes: (n, G) int64            0-based level index of each row within each group
    Group structure
        n_levels: (G,) int64
        level_offsets: (G + 1,) int64        group g owns global levels level_offsets[g]:level_offsets[g+1]
        level_group: (L,) int64              the group of each global level
        nested: (G,) bool                    nested[g]: group g is nested in group g - 1 (False for g = 0)
        block_of_group: (G,) int64           nested run (block) each group belongs to; blocks are crossed
        n_blocks: int
        parent: (L,) int64                   global index of the level's parent (in group g - 1), -1 at a block top
        depth: (L,) int64                    depth of the level within its block (0 at the block top)
        ancestors: (L, D) int64              ancestors[l, j] = global index of l's ancestor at depth j < depth[l]; -1 padding
    Cells (combinations of all group levels present; one cell when G = 0)
        n_cells: int                         K
        cell_of_row: (n,) int64
        cell_levels: (K, G) int64            global level index of each cell in each group
        cell_n: (K,) float64
        cell_sum_y: (K,) float64
        cell_sum_yy: (K,) float64
        cell_sum_x: (K, p) float64           sums of centred x
        cell_sum_xy: (K, p) float64
        cell_sum_xx: (K, p, p) float64
    Per level and totals
        level_n: (L,) float64
        level_sum_y: (L,) float64
        level_sum_x: (L, p) float64
        xtx: (p, p) float64                  X_c'X_c
        xty: (p,) float64                    X_c'y
        sum_x: (p,) float64                  column sums of X_c (zero up to rounding when centred)
        sum_y: float
        yty: float
    Priors (family codes engine.priors.FLAT/NORMAL/STUDENT_T/EXPONENTIAL; cauchy = student_t, nu = 1;
    sd and sigma priors are truncated to (0, inf) as brms' lb = 0; exponential: scale = 1 / rate)
        b_prior_family: (p,) int64, b_prior_nu, b_prior_mu, b_prior_scale: (p,) float64
        intercept_prior: (4,) float64        [family, nu, mu, scale] of the centred intercept (family FLAT if no intercept)
        sd_prior_family: (G,) int64, sd_prior_nu, sd_prior_mu, sd_prior_scale: (G,) float64
        sigma_prior: (4,) float64            [family, nu, mu, scale]
        priors: engine.priors.ResolvedPriors (for prior_summary)
    Random-effect terms (random intercepts and slopes; S = sum_g q_g coefficient SDs, T terms)
        terms: tuple[RandomTerm, ...] (T,)   group index, brms coefficient names, correlated, offset, size
        group_dims: (G,) int64               q_g coefficients per level of group g (1: random intercept)
        group_coef_names: tuple (G,)         each group's coefficient names ("Intercept", "Days")
        has_slopes: bool                     some group has q_g > 1 (then the sd priors are per coefficient,
                                             sd_prior_* of length S, and the cell cross-products below exist)
        z_offsets: (G + 1,) int64            group g's columns in Z (and in u after the q_fix fixed columns)
        Z: (n, sum q_g) float64              random design (R's model.matrix of each bar's left side)
        cell_uu: (K, Q, Q), cell_uy: (K, Q)  cross-products of u = (1, x_c, Z) per cell (Q = q_fix + sum q_g;
                                             (K, 0, 0) and (K, 0) without slopes)
        cor_eta: (T,) float64                LKJ shape of each correlated term (nan for uncorrelated ones)
        family, link: str                    response family and link ("gaussian", "identity")
    """

    response_name: str
    coef_names: tuple
    has_intercept: bool
    group_names: tuple
    group_levels: tuple
    n_obs: int
    y: np.ndarray
    X_c: np.ndarray
    x_means: np.ndarray
    group_codes: np.ndarray
    n_levels: np.ndarray
    level_offsets: np.ndarray
    level_group: np.ndarray
    nested: np.ndarray
    block_of_group: np.ndarray
    n_blocks: int
    parent: np.ndarray
    depth: np.ndarray
    ancestors: np.ndarray
    n_cells: int
    cell_of_row: np.ndarray
    cell_levels: np.ndarray
    cell_n: np.ndarray
    cell_sum_y: np.ndarray
    cell_sum_yy: np.ndarray
    cell_sum_x: np.ndarray
    cell_sum_xy: np.ndarray
    cell_sum_xx: np.ndarray
    level_n: np.ndarray
    level_sum_y: np.ndarray
    level_sum_x: np.ndarray
    xtx: np.ndarray
    xty: np.ndarray
    sum_x: np.ndarray
    sum_y: float
    yty: float
    b_prior_family: np.ndarray
    b_prior_nu: np.ndarray
    b_prior_mu: np.ndarray
    b_prior_scale: np.ndarray
    intercept_prior: np.ndarray
    sd_prior_family: np.ndarray
    sd_prior_nu: np.ndarray
    sd_prior_mu: np.ndarray
    sd_prior_scale: np.ndarray
    sigma_prior: np.ndarray
    priors: ResolvedPriors
    terms: tuple = ()
    group_dims: np.ndarray | None = None
    group_coef_names: tuple = ()
    has_slopes: bool = False
    z_offsets: np.ndarray | None = None
    Z: np.ndarray | None = None
    cell_uu: np.ndarray | None = None
    cell_uy: np.ndarray | None = None
    cor_eta: np.ndarray | None = None
    family: str = "gaussian"
    link: str = "identity"

    @property
    def n_coef(self) -> int:
        """p: non-intercept population-level columns."""
        return len(self.coef_names)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    @property
    def n_levels_total(self) -> int:
        return int(self.level_offsets[-1])

    @property
    def n_sd(self) -> int:
        """S: group-level standard deviations (one per coefficient of every group)."""
        return sum(t.size for t in self.terms) if self.terms else self.n_groups

    @property
    def n_cor(self) -> int:
        """Correlations of the correlated terms (q (q - 1) / 2 each)."""
        return sum(t.size * (t.size - 1) // 2 for t in self.terms if t.correlated and t.size > 1)

    @property
    def n_params(self) -> int:
        """Length of the canonical draw vector (see parameter_names)."""
        return int(self.has_intercept) + self.n_coef + self.n_sd + self.n_cor + 1


class RandomTerm(NamedTuple):
    """One group-level term in the model layer: ``group`` (index into group_names), ``coef_names``
    (brms' names: "Intercept", "Days"), ``correlated`` (an LKJ-distributed correlation matrix; False
    for ``||`` terms and single coefficients), ``offset`` (its first coefficient in the group's
    vector) and ``size`` (q_t)."""

    group: int
    coef_names: tuple
    correlated: bool
    offset: int
    size: int


# ----------------------------------------------------------------------------------- names


def _group_coefs(model: MultilevelModel) -> tuple:
    return model.group_coef_names or tuple(("Intercept",) for _ in model.group_names)


def parameter_names(model: MultilevelModel) -> list[str]:
    """brms names of the canonical draw vector: b_Intercept, b_<col>..., sd_<g>__<coef>... (every
    group, its coefficients in order), cor_<g>__<a>__<b>... (pairs (0,1), (0,2), (1,2), ... of each
    correlated term, as brms), sigma."""
    names = ["b_Intercept"] if model.has_intercept else []
    names += [f"b_{c}" for c in model.coef_names]
    names += [f"sd_{g}__{c}" for g, coefs in zip(model.group_names, _group_coefs(model)) for c in coefs]
    for term in model.terms:
        if term.correlated and term.size > 1:
            g = model.group_names[term.group]
            c = term.coef_names
            names += [f"cor_{g}__{c[j]}__{c[i]}" for i in range(1, term.size) for j in range(i)]
    names.append("sigma")
    return names


def ranef_names(model: MultilevelModel) -> list[str]:
    """brms names of the random effects: per group, per coefficient, per level (r_Subject[308,Intercept],
    r_Subject[309,Intercept], ..., r_Subject[308,Days], ...); random intercepts in global level order."""
    return [f"r_{g}[{level},{c}]" for g, levels, coefs in zip(model.group_names, model.group_levels, _group_coefs(model))
            for c in coefs for level in levels]


# ------------------------------------------------------------------------- sufficient statistics


@numba.njit(cache=True)
def _cell_sums(y, X, cell_of_row, n_cells, with_xx):
    """One pass over the rows: per-cell n, sum y, sum y^2, sum x, sum xy and (with_xx) sum xx'
    (O(N p^2); without it O(N p) and sum_xx is (K, 0, 0)). Shapes: y (N,), X (N, p), cell_of_row
    (N,) in 0..n_cells-1. Also the per-partition pass of engine.partitioned.cells."""
    n, p = X.shape
    cell_n = np.zeros(n_cells)
    sum_y = np.zeros(n_cells)
    sum_yy = np.zeros(n_cells)
    sum_x = np.zeros((n_cells, p))
    sum_xy = np.zeros((n_cells, p))
    p_xx = p if with_xx else 0
    sum_xx = np.zeros((n_cells, p_xx, p_xx))
    for i in range(n):
        k = cell_of_row[i]
        yi = y[i]
        cell_n[k] += 1.0
        sum_y[k] += yi
        sum_yy[k] += yi * yi
        for a in range(p):
            xa = X[i, a]
            sum_x[k, a] += xa
            sum_xy[k, a] += xa * yi
            if with_xx:
                for b in range(a + 1):
                    sum_xx[k, a, b] += xa * X[i, b]
    for k in range(n_cells):
        for a in range(p_xx):
            for b in range(a):
                sum_xx[k, b, a] = sum_xx[k, a, b]
    return cell_n, sum_y, sum_yy, sum_x, sum_xy, sum_xx


def _cells(group_codes: np.ndarray, n_levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell index per row and the (within-group) level codes of each cell, cells in sorted order."""
    n, n_groups = group_codes.shape
    if n_groups == 0:
        return np.zeros(n, dtype=np.int64), np.zeros((1, 0), dtype=np.int64)
    if float(np.prod(n_levels.astype(float))) < 2.0**62:
        key = np.zeros(n, dtype=np.int64)
        for g in range(n_groups):
            key = key * int(n_levels[g]) + group_codes[:, g]
        unique_keys, cell_of_row = np.unique(key, return_inverse=True)
        first = np.zeros(len(unique_keys), dtype=np.int64)
        first[cell_of_row[::-1]] = np.arange(n - 1, -1, -1)
        return cell_of_row.astype(np.int64), group_codes[first].astype(np.int64)
    unique_rows, cell_of_row = np.unique(group_codes, axis=0, return_inverse=True)
    return cell_of_row.reshape(-1).astype(np.int64), unique_rows.astype(np.int64)


def _is_nested(inner: np.ndarray, outer: np.ndarray, n_inner: int) -> tuple[bool, np.ndarray]:
    """Whether each level of ``inner`` occurs with exactly one level of ``outer``; the parent map."""
    parent = np.full(n_inner, -1, dtype=np.int64)
    parent[inner] = outer
    return bool(np.all(parent[inner] == outer)), parent


# ------------------------------------------------------------------------------------- build


class _FixedDesign(NamedTuple):
    y: np.ndarray
    X_c: np.ndarray
    x_means: np.ndarray
    coef_names: tuple
    has_intercept: bool


class _GroupStructure(NamedTuple):
    group_names: tuple
    group_codes: np.ndarray
    n_levels: np.ndarray
    level_offsets: np.ndarray
    level_group: np.ndarray
    nested: np.ndarray
    block_of_group: np.ndarray
    n_blocks: int
    parent: np.ndarray
    depth: np.ndarray
    ancestors: np.ndarray


def _fixed_design(model_frame) -> _FixedDesign:
    """Response and centred non-intercept columns (brms centres them when there is an intercept)."""
    y = np.ascontiguousarray(model_frame.y, dtype=np.float64)
    X = np.asarray(model_frame.X, dtype=np.float64)
    n = y.shape[0]
    column_names = list(model_frame.column_names)
    has_intercept = bool(model_frame.has_intercept)
    if has_intercept:
        if "(Intercept)" not in column_names:
            raise ModelSpecError("has_intercept is set but the design has no '(Intercept)' column")
        keep = [j for j, c in enumerate(column_names) if c != "(Intercept)"]
    else:
        keep = list(range(len(column_names)))
    coef_names = tuple(column_names[j] for j in keep)
    X_raw = np.ascontiguousarray(X[:, keep]) if keep else np.zeros((n, 0))
    x_means = X_raw.mean(axis=0) if (has_intercept and n) else np.zeros(X_raw.shape[1])
    X_c = np.ascontiguousarray(X_raw - x_means)
    if n < 2:
        raise ModelSpecError(f"the model needs at least 2 observations, got {n}")
    return _FixedDesign(y, X_c, x_means, coef_names, has_intercept)


def _group_codes(groups: list, n: int) -> tuple[tuple, np.ndarray, np.ndarray]:
    """(names, codes (n, G), n_levels (G,)) of the grouping factors, checked."""
    group_names = tuple(g.name for g in groups)
    if len(set(group_names)) != len(group_names):
        raise ModelSpecError(f"grouping factors appear twice: {', '.join(group_names)}")
    n_groups = len(groups)
    n_levels = np.array([int(g.n_levels) for g in groups], dtype=np.int64)
    for g, k in zip(groups, n_levels):
        if k < 2:
            raise ModelSpecError(f"grouping factor {g.name!r} has {k} level(s); a random intercept needs at least 2")
    group_codes = np.zeros((n, n_groups), dtype=np.int64)
    for j, g in enumerate(groups):
        codes = np.asarray(g.codes, dtype=np.int64)
        if codes.shape != (n,) or codes.min(initial=0) < 0 or codes.max(initial=0) >= n_levels[j]:
            raise ModelSpecError(f"grouping factor {g.name!r}: codes must be {n} integers in 0..{n_levels[j] - 1}")
        group_codes[:, j] = codes
        used = np.bincount(codes, minlength=n_levels[j])
        if np.any(used == 0):
            raise ModelSpecError(f"grouping factor {g.name!r} has levels without observations "
                                 f"(e.g. {g.levels[int(np.argmin(used))]!r}); drop unused levels first")
    return group_names, group_codes, n_levels


def _group_structure(groups: list, n: int) -> _GroupStructure:
    """Levels, nesting (group g nested in g - 1 -> same block, parent map), depths and ancestors."""
    group_names, group_codes, n_levels = _group_codes(groups, n)
    n_groups = len(groups)
    level_offsets = np.zeros(n_groups + 1, dtype=np.int64)
    level_offsets[1:] = np.cumsum(n_levels)
    n_total = int(level_offsets[-1])
    level_group = np.repeat(np.arange(n_groups, dtype=np.int64), n_levels)
    nested = np.zeros(n_groups, dtype=bool)
    block_of_group = np.zeros(n_groups, dtype=np.int64)
    parent = np.full(n_total, -1, dtype=np.int64)
    depth = np.zeros(n_total, dtype=np.int64)
    block = -1
    for g in range(n_groups):
        if g > 0:
            is_nested, parent_local = _is_nested(group_codes[:, g], group_codes[:, g - 1], int(n_levels[g]))
        else:
            is_nested = False
        if is_nested:
            nested[g] = True
            lo, hi = level_offsets[g], level_offsets[g + 1]
            parent[lo:hi] = parent_local + level_offsets[g - 1]
            depth[lo:hi] = depth[parent[lo:hi]] + 1
        else:
            block += 1
        block_of_group[g] = block
    max_depth = max(1, int(depth.max(initial=0)))
    ancestors = np.full((n_total, max_depth), -1, dtype=np.int64)
    for level in range(n_total):
        a = parent[level]
        while a >= 0:
            ancestors[level, depth[a]] = a
            a = parent[a]
    return _GroupStructure(group_names, group_codes, n_levels, level_offsets, level_group, nested, block_of_group,
                           block + 1, parent, depth, ancestors)


def _sufficient_statistics(design: _FixedDesign, structure: _GroupStructure) -> dict:
    """Cells and every per-cell, per-level and total sum (the one pass over the rows)."""
    n_groups = len(structure.group_names)
    n_total = int(structure.level_offsets[-1])
    p = design.X_c.shape[1]
    cell_of_row, cell_codes = _cells(structure.group_codes, structure.n_levels)
    n_cells = cell_codes.shape[0]
    cell_levels = (np.ascontiguousarray(cell_codes + structure.level_offsets[:-1][None, :]) if n_groups
                   else cell_codes)
    cell_n, cell_sum_y, cell_sum_yy, cell_sum_x, cell_sum_xy, cell_sum_xx = _cell_sums(
        design.y, design.X_c, cell_of_row, n_cells, True)
    level_n = np.zeros(n_total)
    level_sum_y = np.zeros(n_total)
    level_sum_x = np.zeros((n_total, p))
    for g in range(n_groups):
        idx = cell_levels[:, g]
        np.add.at(level_n, idx, cell_n)
        np.add.at(level_sum_y, idx, cell_sum_y)
        np.add.at(level_sum_x, idx, cell_sum_x)
    return dict(
        n_cells=n_cells, cell_of_row=cell_of_row, cell_levels=cell_levels, cell_n=cell_n, cell_sum_y=cell_sum_y,
        cell_sum_yy=cell_sum_yy, cell_sum_x=cell_sum_x, cell_sum_xy=cell_sum_xy, cell_sum_xx=cell_sum_xx,
        level_n=level_n, level_sum_y=level_sum_y, level_sum_x=level_sum_x, xtx=cell_sum_xx.sum(axis=0),
        xty=cell_sum_xy.sum(axis=0), sum_x=cell_sum_x.sum(axis=0), sum_y=float(cell_sum_y.sum()),
        yty=float(cell_sum_yy.sum()),
    )


class _RandomDesign(NamedTuple):
    groups: list
    terms: tuple
    group_dims: np.ndarray
    group_coef_names: tuple
    z_offsets: np.ndarray
    Z: np.ndarray
    cor_groups: tuple


def _brms_coef_name(name: str) -> str:
    return "Intercept" if name == "(Intercept)" else name


class _InterceptEffect(NamedTuple):
    """A random intercept (1 | g) in the form of engine.formula.RandomEffect (frames without random_effects)."""

    group: str
    codes: np.ndarray
    levels: list
    Z: np.ndarray
    coef_names: list
    correlated: bool
    bar_text: str


def _random_design(model_frame, n: int, general: bool = False) -> _RandomDesign | None:
    """The group-level terms with slopes (ModelFrame.random_effects), one group per distinct grouping
    factor with the coefficients of all its terms; None when every term is a random intercept of
    its own grouping factor (then ModelFrame.groups, as before) unless ``general``."""
    effects = list(getattr(model_frame, "random_effects", ()) or ())
    if not effects and general:
        effects = [_InterceptEffect(g.name, np.asarray(g.codes), list(g.levels), np.ones((n, 1)), ["(Intercept)"], True,
                                    f"(1 | {g.name})") for g in (getattr(model_frame, "groups", []) or [])]
    names = [e.group for e in effects]
    intercepts_only = all(list(e.coef_names) == ["(Intercept)"] for e in effects) and len(set(names)) == len(names)
    if not effects or (intercepts_only and not general):
        return None
    order = list(dict.fromkeys(names))
    groups, terms, dims, coef_names, blocks, cor_groups = [], [], [], [], [], []
    for g, name in enumerate(order):
        mine = [e for e in effects if e.group == name]
        first = mine[0]
        groups.append(SimpleGroup(name, np.asarray(first.codes, dtype=np.int64), list(first.levels), len(first.levels)))
        offset, coefs = 0, []
        for e in mine:
            if not np.array_equal(np.asarray(e.codes), np.asarray(first.codes)):
                raise ModelSpecError(f"terms {first.bar_text} and {e.bar_text} give grouping factor {name!r} different levels")
            Z = np.asarray(e.Z, dtype=np.float64)
            if Z.ndim != 2 or Z.shape != (n, len(e.coef_names)):
                raise ModelSpecError(f"term {e.bar_text}: its design must have {n} rows and one column per coefficient")
            term_coefs = tuple(_brms_coef_name(c) for c in e.coef_names)
            for c in term_coefs:
                if c in coefs:
                    raise ModelSpecError(f"grouping factor {name!r} has coefficient {c!r} in more than one term "
                                         f"({e.bar_text}); duplicated group-level effects are not allowed (as in brms)")
            correlated = bool(e.correlated) and len(term_coefs) > 1
            terms.append(RandomTerm(g, term_coefs, correlated, offset, len(term_coefs)))
            if correlated and name not in cor_groups:
                cor_groups.append(name)
            coefs.extend(term_coefs)
            blocks.append(Z)
            offset += len(term_coefs)
        dims.append(offset)
        coef_names.append(tuple(coefs))
    z_offsets = np.concatenate([[0], np.cumsum(dims)]).astype(np.int64)
    return _RandomDesign(groups, tuple(terms), np.array(dims, dtype=np.int64), tuple(coef_names), z_offsets,
                         np.ascontiguousarray(np.column_stack(blocks)), tuple(cor_groups))


def _check_random_design(random: _RandomDesign) -> None:
    """Identification of the slopes: enough rows per level for q_g coefficients; no slope column that
    is constant within every level of a group with a random intercept (it would alias the intercept)."""
    for g, group in enumerate(random.groups):
        q = int(random.group_dims[g])
        counts = np.bincount(group.codes, minlength=group.n_levels)
        if q > 1 and np.all(counts < q):
            raise ModelSpecError(f"grouping factor {group.name!r}: {q} coefficients per level "
                                 f"({', '.join(random.group_coef_names[g])}) but no level has {q} observations")
        if "Intercept" not in random.group_coef_names[g]:
            continue
        block = random.Z[:, random.z_offsets[g]:random.z_offsets[g + 1]]
        for j, name in enumerate(random.group_coef_names[g]):
            if name == "Intercept":
                continue
            column = block[:, j]
            low = np.full(group.n_levels, np.inf)
            high = np.full(group.n_levels, -np.inf)
            np.minimum.at(low, group.codes, column)
            np.maximum.at(high, group.codes, column)
            spread = np.abs(column).max(initial=0.0)
            if np.all(high - low <= 1e-12 * max(spread, 1.0)):
                raise ModelSpecError(f"random slope {name!r} is constant within every level of {group.name!r}: it is "
                                     f"not identified beside the random intercept; drop it from the term")


@numba.njit(cache=True)
def _cell_cross_products(U, y, cell_of_row, n_cells):
    """Per cell sum u u' (K, Q, Q) and sum u y (K, Q) in one pass (O(N Q^2))."""
    n, m = U.shape
    uu = np.zeros((n_cells, m, m))
    uy = np.zeros((n_cells, m))
    for i in range(n):
        k = cell_of_row[i]
        for a in range(m):
            ua = U[i, a]
            uy[k, a] += ua * y[i]
            for b in range(a + 1):
                uu[k, a, b] += ua * U[i, b]
    for k in range(n_cells):
        for a in range(m):
            for b in range(a):
                uu[k, b, a] = uu[k, a, b]
    return uu, uy


def _slope_statistics(design: _FixedDesign, random: _RandomDesign, cell_of_row: np.ndarray, n_cells: int) -> dict:
    n = design.y.shape[0]
    columns = ([np.ones((n, 1))] if design.has_intercept else []) + [design.X_c, random.Z]
    U = np.ascontiguousarray(np.column_stack(columns))
    cell_uu, cell_uy = _cell_cross_products(U, design.y, cell_of_row, n_cells)
    return dict(cell_uu=cell_uu, cell_uy=cell_uy)


def _prior_arrays(resolved: ResolvedPriors) -> dict:
    """The resolved priors as the arrays of MultilevelModel (family codes, nu, mu, scale)."""
    def arrays(rows, prefix):
        return {f"{prefix}_family": np.array([pr.family for pr in rows], dtype=np.int64),
                f"{prefix}_nu": np.array([pr.nu for pr in rows], dtype=np.float64),
                f"{prefix}_mu": np.array([pr.mu for pr in rows], dtype=np.float64),
                f"{prefix}_scale": np.array([pr.scale for pr in rows], dtype=np.float64)}

    out = {**arrays(resolved.b, "b_prior"), **arrays(resolved.sd, "sd_prior")}
    if resolved.intercept is not None:
        ip = resolved.intercept
        out["intercept_prior"] = np.array([ip.family, ip.nu, ip.mu, ip.scale], dtype=np.float64)
    else:
        out["intercept_prior"] = np.array([0.0, np.inf, 0.0, np.inf])
    sp = resolved.sigma
    out["sigma_prior"] = np.array([sp.family, sp.nu, sp.mu, sp.scale], dtype=np.float64)
    return out


def _check_identified(stats: dict, b_prior_family: np.ndarray, has_intercept: bool, n: int) -> None:
    """A flat prior on b needs a full-rank design (with the intercept when there is one)."""
    xtx, sum_x = stats["xtx"], stats["sum_x"]
    if xtx.shape[0] and np.any(b_prior_family == 0):
        gram = xtx.copy()
        if has_intercept:
            gram = np.block([[np.array([[float(n)]]), sum_x[None, :]], [sum_x[:, None], xtx]])
        scale = np.sqrt(np.maximum(np.diag(gram), 1e-300))
        eig = np.linalg.eigvalsh(gram / np.outer(scale, scale))
        if eig.min() <= 1e-10 * eig.max():
            raise ModelSpecError("the population-level design is rank deficient (aliased columns); "
                                 "with flat priors on b the posterior is improper: remove the aliased terms")


def _prior_only(model: MultilevelModel) -> MultilevelModel:
    """The model without its likelihood (brms' ``sample_prior = "only"``): every data statistic the
    samplers of the general (slopes) representation read is zero, so they draw from the prior."""
    flat = [name for name, family in zip(model.coef_names, model.b_prior_family) if family == 0]
    if flat or model.sigma_prior[0] == 0 or np.any(model.sd_prior_family == 0) \
            or (model.has_intercept and model.intercept_prior[0] == 0):
        what = f"class 'b' ({', '.join(flat)})" if flat else "a flat prior"
        raise PriorError(f"sample_prior='only' needs proper priors on every parameter, but {what} has a flat "
                         "prior (as brms: set e.g. prior('normal(0, 10)', class_='b'))")
    return model._replace(cell_uu=np.zeros_like(model.cell_uu), cell_uy=np.zeros_like(model.cell_uy), yty=0.0,
                          n_obs=0)


def build_model(model_frame, priors=None, sample_prior: str = "no") -> MultilevelModel:
    """A MultilevelModel from a ModelFrame (engine.formula.model_frame(..., allow_random=True)) and priors.

    ``model_frame`` needs the fields y, X, column_names, has_intercept, response_name and groups
    (each with name, codes, levels, n_levels); ``priors``: engine.prior(...) objects (a list), or None
    for brms' defaults. Raises ModelSpecError for a grouping factor with fewer than two levels or a
    rank-deficient fixed-effects design under a flat prior; PriorError for a prior on a class, group or
    coefficient the model does not have.

    Steps: the fixed design (_fixed_design), the grouping structure (_group_structure), the
    sufficient statistics (_sufficient_statistics), the priors (resolve_priors, _prior_arrays) and
    the identification check (_check_identified). ``sample_prior="only"``: the prior alone (brms'
    option of that name; needs proper priors): the model in its general representation with zero
    data statistics (_prior_only).
    """
    if sample_prior not in ("no", "only"):
        raise ModelSpecError(f"sample_prior must be 'no' or 'only', got {sample_prior!r}")
    design = _fixed_design(model_frame)
    n = design.y.shape[0]
    random = _random_design(model_frame, n, general=sample_prior == "only")
    groups = list(getattr(model_frame, "groups", []) or []) if random is None else random.groups
    structure = _group_structure(groups, n)
    stats = _sufficient_statistics(design, structure)
    if random is None:
        resolved = resolve_priors(priors, design.y, design.coef_names, structure.group_names, design.has_intercept)
        slopes = dict(terms=tuple(RandomTerm(g, ("Intercept",), False, 0, 1) for g in range(len(groups))),
                      group_dims=np.ones(len(groups), dtype=np.int64),
                      group_coef_names=tuple(("Intercept",) for _ in groups), has_slopes=False,
                      z_offsets=np.arange(len(groups) + 1, dtype=np.int64), Z=np.ones((n, len(groups))),
                      cell_uu=np.zeros((stats["n_cells"], 0, 0)), cell_uy=np.zeros((stats["n_cells"], 0)),
                      cor_eta=np.full(len(groups), np.nan))
    else:
        _check_random_design(random)
        resolved = resolve_priors(priors, design.y, design.coef_names, structure.group_names, design.has_intercept,
                                  random.group_coef_names, random.cor_groups)
        cor_eta = {p.group: p.nu for p in resolved.cor}
        slopes = dict(terms=random.terms, group_dims=random.group_dims, group_coef_names=random.group_coef_names,
                      has_slopes=True, z_offsets=random.z_offsets, Z=random.Z,
                      cor_eta=np.array([cor_eta[structure.group_names[t.group]] if t.correlated else np.nan
                                        for t in random.terms]),
                      **_slope_statistics(design, random, stats["cell_of_row"], stats["n_cells"]))
    prior_arrays = _prior_arrays(resolved)
    _check_identified(stats, prior_arrays["b_prior_family"], design.has_intercept, n)
    model = MultilevelModel(
        response_name=str(getattr(model_frame, "response_name", "y")),
        coef_names=design.coef_names,
        has_intercept=design.has_intercept,
        group_names=structure.group_names,
        group_levels=tuple(tuple(str(v) for v in g.levels) for g in groups),
        n_obs=n,
        y=design.y,
        X_c=design.X_c,
        x_means=design.x_means,
        group_codes=structure.group_codes,
        n_levels=structure.n_levels,
        level_offsets=structure.level_offsets,
        level_group=structure.level_group,
        nested=structure.nested,
        block_of_group=structure.block_of_group,
        n_blocks=structure.n_blocks,
        parent=structure.parent,
        depth=structure.depth,
        ancestors=structure.ancestors,
        **stats,
        **prior_arrays,
        priors=resolved,
        **slopes,
    )
    return _prior_only(model) if sample_prior == "only" else model


# ------------------------------------------------------------------- building inputs by hand


class SimpleGroup(NamedTuple):
    """A GroupingFactor-like record (name, codes, levels, n_levels) for tests and simulations."""

    name: str
    codes: np.ndarray
    levels: list
    n_levels: int


class SimpleFrame(NamedTuple):
    """A ModelFrame-like record for build_model when no formula is involved (simulations, tests)."""

    y: np.ndarray
    X: np.ndarray
    column_names: list
    has_intercept: bool
    groups: list
    response_name: str = "y"


def nested_frame(y: np.ndarray, X: np.ndarray, column_names: Sequence[str], school: np.ndarray,
                 class_in_school: np.ndarray | None = None, has_intercept: bool = True,
                 school_name: str = "schoolid", class_name: str = "classid") -> SimpleFrame:
    """A ModelFrame-like record for ``y ~ X + (1 | school/class)`` from integer codes.

    ``school``: (n,) codes 0..J-1; ``class_in_school``: (n,) codes of the class (unique across
    schools or within school; the combination defines the class), or None for a school-only model.
    Level labels follow brms: schools "1".."J", classes "<school>_<class>".
    """
    school = np.asarray(school, dtype=np.int64)
    school_levels, school_codes = np.unique(school, return_inverse=True)
    groups = [SimpleGroup(school_name, school_codes.astype(np.int64), [str(s + 1) for s in school_levels], len(school_levels))]
    if class_in_school is not None:
        pairs = np.stack([school, np.asarray(class_in_school, dtype=np.int64)], axis=1)
        unique_pairs, class_codes = np.unique(pairs, axis=0, return_inverse=True)
        labels = [f"{a + 1}_{b + 1}" for a, b in unique_pairs]
        groups.append(SimpleGroup(f"{school_name}:{class_name}", class_codes.reshape(-1).astype(np.int64), labels, len(labels)))
    return SimpleFrame(np.asarray(y, float), np.asarray(X, float), list(column_names), has_intercept, groups)
