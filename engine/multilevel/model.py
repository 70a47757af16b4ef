"""The Gaussian multilevel model as plain arrays: the one input of every multilevel sampler.

Model (random intercepts only), for observation i in levels l_1(i), ..., l_G(i) of the G grouping
factors::

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

from engine.errors import ModelSpecError
from engine.multilevel.priors import ResolvedPriors, resolve_priors


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
    def n_params(self) -> int:
        """Length of the canonical draw vector (see parameter_names)."""
        return int(self.has_intercept) + self.n_coef + self.n_groups + 1


# ----------------------------------------------------------------------------------- names


def parameter_names(model: MultilevelModel) -> list[str]:
    """brms names of the canonical draw vector: b_Intercept, b_<col>..., sd_<g>__Intercept..., sigma."""
    names = ["b_Intercept"] if model.has_intercept else []
    names += [f"b_{c}" for c in model.coef_names]
    names += [f"sd_{g}__Intercept" for g in model.group_names]
    names.append("sigma")
    return names


def ranef_names(model: MultilevelModel) -> list[str]:
    """brms names of the random effects in global level order: r_schoolid[1,Intercept], r_schoolid:classid[1_1,Intercept]."""
    return [f"r_{g}[{level},Intercept]" for g, levels in zip(model.group_names, model.group_levels) for level in levels]


# ------------------------------------------------------------------------- sufficient statistics


@numba.njit(cache=True)
def _cell_sums(y, X, cell_of_row, n_cells):
    """One pass over the rows: per-cell n, sum y, sum y^2, sum x, sum xy, sum xx' (O(N p^2))."""
    n, p = X.shape
    cell_n = np.zeros(n_cells)
    sum_y = np.zeros(n_cells)
    sum_yy = np.zeros(n_cells)
    sum_x = np.zeros((n_cells, p))
    sum_xy = np.zeros((n_cells, p))
    sum_xx = np.zeros((n_cells, p, p))
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
            for b in range(a + 1):
                sum_xx[k, a, b] += xa * X[i, b]
    for k in range(n_cells):
        for a in range(p):
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
        design.y, design.X_c, cell_of_row, n_cells)
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


def build_model(model_frame, priors=None) -> MultilevelModel:
    """A MultilevelModel from a ModelFrame (engine.formula.model_frame(..., allow_random=True)) and priors.

    ``model_frame`` needs the fields y, X, column_names, has_intercept, response_name and groups
    (each with name, codes, levels, n_levels); ``priors``: engine.prior(...) objects (a list), or None
    for brms' defaults. Raises ModelSpecError for a grouping factor with fewer than two levels or a
    rank-deficient fixed-effects design under a flat prior; PriorError for a prior on a class, group or
    coefficient the model does not have.

    Steps: the fixed design (_fixed_design), the grouping structure (_group_structure), the
    sufficient statistics (_sufficient_statistics), the priors (resolve_priors, _prior_arrays) and
    the identification check (_check_identified).
    """
    design = _fixed_design(model_frame)
    n = design.y.shape[0]
    groups = list(getattr(model_frame, "groups", []) or [])
    structure = _group_structure(groups, n)
    stats = _sufficient_statistics(design, structure)
    resolved = resolve_priors(priors, design.y, design.coef_names, structure.group_names, design.has_intercept)
    prior_arrays = _prior_arrays(resolved)
    _check_identified(stats, prior_arrays["b_prior_family"], design.has_intercept, n)
    return MultilevelModel(
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
    )


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
