"""Multiple imputation by chained equations, as R's ``mice`` 3.x does it (van Buuren &
Groothuis-Oudshoorn 2011, J. Stat. Softw. 45(3); van Buuren 2018, *Flexible Imputation of Missing
Data*, 2nd ed., ch. 4).

``imp = mice(data, m=5, maxit=5, seed=1)`` imputes every column with missing values from the
other columns (factors enter as treatment dummies), sweeping the columns in ``visit_sequence``
``maxit`` times per imputation, each of the ``m`` imputations in its own random stream
(``engine.parallel.child_seeds``) and run through ``engine.parallel.run_tasks`` so the results do
not depend on the executor or the number of workers. Then ``imp.complete(k)``, ``imp.fit(fn)`` and
``engine.pool(fits)``.

As mice does: starting values are random draws from each column's observed values
(``initialize.imp``); before sampling, constant columns and collinear columns (|r| >= 0.999,
``find.collinear``, the one with more missing values goes) are removed as predictors and not
imputed (``edit.setup``); before every univariate fit, predictors that are constant (var < 1e-4),
nearly identical to the target (r >= 0.99) or linearly dependent (eigenvalue ratio < 1e-4 of their
correlation matrix) are dropped (``remove.lindep``). Everything removed is listed in
``imp.logged_events``. The method kernels live in ``engine.impute`` (one module per method family:
``linear`` for norm/pmm, ``logistic`` for logreg/polyreg, ``polr``, ``lda``, ``cart``, and ``lindep``).

Known differences from R: random numbers differ (NumPy PCG64 streams); ``pmm`` on a factor scales
the categories by the first canonical variate of the centred dummies against the predictors, the
same scores up to sign and scale as mice >= 3.16's ``quantify`` (second uncentred variate; pmm's
matching does not change under either), while mice <= 3.15 matched on the integer codes
(``quantify=False``); ``polyreg`` fits the multinomial MLE by Newton
steps rather than ``nnet``'s BFGS; ``cart`` trees are pre-pruned at cp (see ``engine.impute.cart``);
``polr`` (``engine.impute.polr``) fits the proportional-odds MLE by Newton steps rather than MASS's BFGS,
keeps the factor's level order (mice 3.15's ``augment`` re-sorts the labels alphabetically) and
always logs its fall-backs to ``polyreg`` (mice's ``polr.to.loggedEvents = TRUE``);
``remove.lindep`` first drops, in column order, predictors whose residual variance given the
earlier kept ones is below max(1e-8, 1e-4 * largest eigenvalue) (mice would drop one of them too,
by its eigenvector rule; the fitted column space is the same for exact dependencies), and exact
dependencies among complete predictors are found once before sampling (logged as "dependent").
When the eigenvalue rule drops two or more predictors, engine recomputes the eigenvectors of the
remaining ones each time, as ``remove.lindep`` intends; mice 3.15 indexes the reduced matrix with a
logical vector one element short (``cx[keep[keep], keep[keep]]``), which R recycles, so after the
first drop R can pick a different predictor. ``augment`` (logreg, polyreg, polr) takes the
predictor means, sds and ranges over all rows, as mice does.
"""

from __future__ import annotations

import itertools
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from engine.impute import cart as _cart
from engine.impute import lda as _lda
from engine.impute import lindep as _lindep
from engine.impute import linear as _linear
from engine.impute import logistic as _logistic
from engine.impute import polr as _polr
from engine._linalg import SingleThreadedBlas, cholesky_with_ridge, crossprod, gather, solve_lower, solve_upper_t
from engine.errors import DataWarning, ImputationError, warn_user
from engine.parallel import child_seeds, default_workers, run_tasks
from engine.progress import progress_reporter
from engine.validate import check_mice_values, check_seed, checked_arguments

#: Every method name engine knows (mice's names); "" leaves a column as it is.
KNOWN_METHODS = ("pmm", "norm", "logreg", "polyreg", "lda", "cart", "mean", "sample", "polr", "")
NUMERIC_ONLY = ("norm", "mean")
FACTOR_ONLY = ("logreg", "polyreg", "lda", "polr")
DEFAULT_METHOD = ("pmm", "logreg", "polyreg", "polr")
DONORS = 5
LINDEP_EPS = 1e-4
LINDEP_MAXCOR = 0.99
COLLINEAR_THRESHOLD = 0.999
CART_MIN_BUCKET = 5
CART_CP = 1e-4



# --------------------------------------------------------------------------------------------
# Column description and the picklable setup shared by the imputation tasks


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    is_factor: bool
    levels: tuple  # factor levels (labels, original objects); () for numerics
    ordered: bool
    kind: str  # "numeric", "categorical", "bool", "object"
    dtype: Any


@dataclass
class _Setup:
    """Arrays every imputation task needs (plain numpy, picklable for remote executors)."""

    values: np.ndarray  # (n, ncol) float64: numerics, or factor codes 0..L-1; NaN where missing
    missing: np.ndarray  # (n, ncol) bool
    is_factor: np.ndarray  # (ncol,) bool
    n_levels: np.ndarray  # (ncol,) int
    design_start: np.ndarray  # (ncol,) first design column of each data column
    design_stop: np.ndarray
    design_names: list
    column_names: list
    methods: list  # per column
    predictor_design_cols: list  # per column: int array of design columns of its predictors
    visit: list  # column indices in visiting order (only imputed ones)
    maxit: int
    quantify: bool = True  # pmm on a factor: optimal scaling (True) or the integer codes


def _column_info(name: str, series: pd.Series) -> ColumnInfo:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return ColumnInfo(name, True, tuple(dtype.categories), bool(dtype.ordered), "categorical", dtype)
    if pd.api.types.is_bool_dtype(dtype):
        return ColumnInfo(name, True, (False, True), False, "bool", dtype)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return ColumnInfo(name, False, (), False, "numeric", dtype)
    if pd.api.types.is_string_dtype(dtype) or dtype == object:
        observed = series.dropna()
        try:
            levels = tuple(sorted(pd.unique(observed)))
        except TypeError as exc:
            raise ImputationError(f"column {name!r} mixes value types that cannot be ordered as levels") from exc
        return ColumnInfo(name, True, levels, False, "object", dtype)
    raise ImputationError(f"column {name!r} has dtype {dtype}, which mice cannot impute "
                          "(use numeric, categorical, bool or string columns)")


def _column_values(info: ColumnInfo, series: pd.Series) -> np.ndarray:
    if not info.is_factor:
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if info.kind == "categorical":
        codes = series.cat.codes.to_numpy().astype(float)
        codes[codes < 0] = np.nan
        return codes
    lookup = {level: i for i, level in enumerate(info.levels)}
    return np.array([np.nan if pd.isna(v) else float(lookup[v]) for v in series.to_numpy(dtype=object)])


def _default_method(info: ColumnInfo, default_method: Sequence[str]) -> str:
    """mice's ``make.method``: numeric, binary factor, unordered factor, ordered factor."""
    if not info.is_factor:
        return default_method[0]
    if len(info.levels) == 2:
        return default_method[1]
    if info.ordered:
        return default_method[3]
    return default_method[2]


def _check_method(info: ColumnInfo, method: str) -> None:
    if method not in KNOWN_METHODS:
        raise ImputationError(
            f"unknown imputation method {method!r} for column {info.name!r}; "
            f"known methods: {', '.join(repr(m) for m in KNOWN_METHODS)}"
        )
    if method in NUMERIC_ONLY and info.is_factor:
        raise ImputationError(f"method {method!r} needs a numeric column, but {info.name!r} is a factor "
                              f"({len(info.levels)} levels); use 'pmm', 'cart', 'polyreg' or 'lda'")
    if method in FACTOR_ONLY and not info.is_factor:
        raise ImputationError(f"method {method!r} needs a factor column, but {info.name!r} is numeric; "
                              "use 'pmm', 'norm' or 'cart' (or make the column categorical)")
    if method == "logreg" and len(info.levels) != 2:
        raise ImputationError(f"method 'logreg' needs a two-level factor, but {info.name!r} has "
                              f"{len(info.levels)} levels; use 'polyreg' or 'lda'")


def _find_collinear(values: np.ndarray, nmis: np.ndarray, threshold: float) -> list[int]:
    """mice's ``find.collinear``: order columns by number missing, drop any column whose pairwise
    correlation with an earlier one is >= threshold in absolute value. Returns column positions."""
    order = np.argsort(nmis, kind="stable")
    frame = pd.DataFrame(values[:, order])
    with np.errstate(all="ignore"):
        corr = frame.corr(min_periods=2).to_numpy()
    hit = np.triu(np.abs(np.nan_to_num(corr)) >= threshold, k=1)
    return [int(order[j]) for j in range(len(order)) if hit[:, j].any()]


def remove_lindep(x_obs: np.ndarray, y_obs: np.ndarray, eps: float = LINDEP_EPS,
                  maxcor: float = LINDEP_MAXCOR) -> np.ndarray:
    """mice's ``remove.lindep``: which predictors (columns of x_obs) to keep. Shapes (n, p), (n,).

    Drops all when var(y) < eps; else predictors with var <= eps or cor(x, y) >= maxcor, then, while
    the smallest/largest eigenvalue of the kept predictors' correlation matrix is < eps, the one
    with the largest weight in the smallest eigenvector (kernel ``_lindep.lindep_keep``)."""
    if x_obs.shape[1] == 0:
        return np.zeros(0, dtype=bool)
    return _lindep.lindep_keep(np.ascontiguousarray(x_obs, dtype=float), np.ascontiguousarray(y_obs, dtype=float),
                           eps, maxcor)


# --------------------------------------------------------------------------------------------
# One univariate imputation step per method (Python layer around the kernels)


@dataclass
class _StepState:
    """What a univariate method may keep between sweeps or report for one column: ``warm``, the
    column's previous estimates (Newton starts); ``notes``, messages for the logged events (the
    caller adds them); ``quantify``, mice()'s option for pmm on a factor."""

    warm: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    quantify: bool = True


def _with_intercept(x: np.ndarray) -> np.ndarray:
    out = np.empty((x.shape[0], x.shape[1] + 1))
    out[:, 0] = 1.0
    out[:, 1:] = x
    return out


def quantify(y_codes: np.ndarray, x1: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """Numeric scores for factor codes (for pmm on a factor): optimal scaling by the first
    canonical variate of the centred class dummies against the predictors, standardised.

    With X1 = [1, x] (n, p + 1) and centred dummies Yc, the canonical weights a maximise
    a'Yc'P Yc a / a'Yc'Yc a (P the projection on X1): a generalized eigenproblem of size
    (classes - 1), solved through ``chol``, the (ridged) Cholesky factor of X1'X1 (the one pmm's
    regression draw uses), and Yc'Yc."""
    from scipy.linalg import eigh as _eigh

    classes, inverse = np.unique(y_codes.astype(np.int64), return_inverse=True)
    if classes.size < 2 or x1.shape[1] <= 1:
        return y_codes.astype(float)
    n = y_codes.shape[0]
    dummies = np.zeros((n, classes.size - 1))
    rows = inverse > 0
    dummies[np.flatnonzero(rows), inverse[rows] - 1] = 1.0
    yc = dummies - dummies.mean(axis=0)
    cross = x1.T @ yc  # (p + 1, classes - 1)
    b = np.column_stack([solve_lower(chol, np.ascontiguousarray(cross[:, c])) for c in range(cross.shape[1])])
    explained = b.T @ b
    total = yc.T @ yc
    evals, evecs = _eigh(explained, total)
    scores = yc @ evecs[:, -1]
    sd = scores.std(ddof=1)
    if not np.isfinite(sd) or sd <= 0:
        return y_codes.astype(float)
    return (scores - scores.mean()) / sd


def _impute_pmm(y_obs, x_obs, x_mis, rng, is_factor, step=None):
    """Predictive mean matching (type 1, ``DONORS`` donors). A factor target is matched on its
    optimally scaled categories (``quantify``; mice >= 3.16, ``quantify = TRUE``) or, with
    ``step.quantify`` False, on its integer codes 1..L (mice <= 3.15)."""
    xo = _with_intercept(x_obs)
    xm = _with_intercept(x_mis)
    chol, _ = cholesky_with_ridge(crossprod(xo), _linear.RIDGE)
    if not is_factor:
        ynum = y_obs
    elif step is None or step.quantify:
        ynum = quantify(y_obs, xo, chol)
    else:
        ynum = y_obs + 1.0  # R's as.integer(y): codes 1..L
    p = xo.shape[1]
    z = rng.standard_normal(p)
    chisq = rng.chisquare(max(xo.shape[0] - p, 1))
    beta_hat, beta_star, _ = _linear.bayes_linear_draw_given_cholesky(xo, ynum, chol, z, chisq)
    yhat_obs = xo @ beta_hat
    yhat_mis = xm @ beta_star
    n_mis = xm.shape[0]
    idx = _linear.pmm_match(yhat_obs, yhat_mis, DONORS, rng.random(n_mis), rng.random(n_mis))
    return y_obs[idx]


def _impute_norm(y_obs, x_obs, x_mis, rng, is_factor, step=None):
    xo = _with_intercept(x_obs)
    xm = _with_intercept(x_mis)
    p = xo.shape[1]
    z = rng.standard_normal(p)
    chisq = rng.chisquare(max(xo.shape[0] - p, 1))
    _, beta_star, sigma_star, _ = _linear.bayes_linear_draw(xo, y_obs, z, chisq, _linear.RIDGE)
    return xm @ beta_star + rng.standard_normal(xm.shape[0]) * sigma_star


def _impute_mean(y_obs, x_obs, x_mis, rng, is_factor, step=None):
    return np.full(x_mis.shape[0], y_obs.mean())


def _impute_sample(y_obs, x_obs, x_mis, rng, is_factor, step=None):
    return y_obs[rng.integers(0, y_obs.shape[0], size=x_mis.shape[0])]


def _impute_logreg(y_obs, x_obs, x_mis, rng, is_factor, step=None):
    codes = y_obs.astype(np.int64)
    present = np.unique(codes)
    if present.size == 1:
        return np.full(x_mis.shape[0], float(present[0]))
    x_aug, y_aug, w_aug = _logistic.augment(x_obs, codes, 2, x_mis)
    xa = _with_intercept(x_aug)
    beta, chol, _ = _logistic.logistic_irls(xa, y_aug.astype(float), w_aug, 25, 1e-8)
    beta_star = beta + solve_upper_t(chol, rng.standard_normal(xa.shape[1]))
    eta = _with_intercept(x_mis) @ beta_star
    prob = 1.0 / (1.0 + np.exp(-eta))
    return (rng.random(x_mis.shape[0]) <= prob).astype(float)


def _present_classes(y_obs):
    codes = y_obs.astype(np.int64)
    present, local = np.unique(codes, return_inverse=True)
    return present, local.astype(np.int64)


def _impute_polyreg(y_obs, x_obs, x_mis, rng, is_factor, step=None):
    """Multinomial logit on the augmented observed cases; classes drawn from the fitted
    probabilities (mice does not draw the parameters here). ``step.warm`` holds the previous
    sweep's estimate, used as the Newton start when the design has the same shape (same MLE,
    fewer steps)."""
    warm = step.warm if step is not None else {}
    present, local = _present_classes(y_obs)
    if present.size == 1:
        return np.full(x_mis.shape[0], float(present[0]))
    x_aug, y_aug, w_aug = _logistic.augment(x_obs, local, present.size, x_mis)
    xa = _with_intercept(x_aug)
    beta0 = np.zeros((xa.shape[1], present.size))
    if warm.get("beta") is not None and warm["beta"].shape == beta0.shape:
        beta0 = warm["beta"]
    beta = _logistic.multinom_newton(xa, y_aug.astype(np.int64), w_aug, present.size, beta0, 100, 1e-8)
    warm["beta"] = beta
    probs = _logistic._multinom_probs(_with_intercept(x_mis), beta)
    drawn = _logistic.draw_categories(probs, rng.random(x_mis.shape[0]))
    return present[drawn].astype(float)


def _impute_polr(y_obs, x_obs, x_mis, rng, is_factor, step=None):
    """Proportional-odds logit (``engine.impute.polr``) on the augmented observed cases, classes drawn
    from the fitted probabilities with one uniform each (mice does not draw the parameters here).
    As mice 3.15, where MASS::polr fails (fewer than 3 observed classes, no convergence) the
    multinomial logit of ``polyreg`` is used instead; each fall-back adds mice's message to
    ``step.notes``. ``step.warm`` holds the previous sweep's estimates (Newton start)."""
    step = step if step is not None else _StepState()
    warm = step.warm
    present, local = _present_classes(y_obs)
    if present.size == 1:
        return np.full(x_mis.shape[0], float(present[0]))
    fit = None
    if present.size >= 3:
        x_aug, y_aug, w_aug = _logistic.augment(x_obs, local, present.size, x_mis)
        y_aug = y_aug.astype(np.int64)
        beta0 = zeta0 = None
        previous = warm.get("polr")
        if previous is not None and previous[0].shape == (x_aug.shape[1],) and previous[1].shape == (present.size - 1,):
            beta0, zeta0 = previous
        fit = _polr.fit_polr(x_aug, y_aug, w_aug, present.size, beta0, zeta0, maxit=100, tol=1e-10)
        if not fit.converged:
            fit = None
        else:
            warm["polr"] = (fit.beta, fit.zeta)
    if fit is None:
        step.notes.append("polr falls back to multinom")
        return _impute_polyreg(y_obs, x_obs, x_mis, rng, is_factor, _StepState(warm=warm.setdefault("multinom", {})))
    probs = _polr.predict_probabilities(x_mis, fit.beta, fit.zeta)
    drawn = _logistic.draw_categories(probs, rng.random(x_mis.shape[0]))
    return present[drawn].astype(float)


def _impute_lda(y_obs, x_obs, x_mis, rng, is_factor, step=None):
    present, local = _present_classes(y_obs)
    if present.size == 1:
        return np.full(x_mis.shape[0], float(present[0]))
    post = _lda.lda_posterior(x_obs, local, present.size, x_mis)
    drawn = _logistic.draw_categories(np.ascontiguousarray(post), rng.random(x_mis.shape[0]))
    return present[drawn].astype(float)


def _impute_cart(y_obs, x_obs, x_mis, rng, is_factor, step=None):
    n_classes = 0
    target = y_obs
    if is_factor:
        present, local = _present_classes(y_obs)
        if present.size == 1:
            return np.full(x_mis.shape[0], float(present[0]))
        n_classes = present.size
        target = local.astype(float)
    if x_obs.shape[1] == 0:
        x_obs = np.ones((x_obs.shape[0], 1))
        x_mis = np.ones((x_mis.shape[0], 1))
    feature, threshold, left, right, n_nodes, leaf_of_row = _cart.grow_tree(
        x_obs, target, n_classes, 3 * CART_MIN_BUCKET, CART_MIN_BUCKET, CART_CP, 30)
    leaves = _cart.predict_leaves(feature, threshold, left, right, x_mis)
    donors = _cart.leaf_donors(leaf_of_row, n_nodes, leaves, rng.random(x_mis.shape[0]))
    return y_obs[donors]


_IMPUTERS: dict[str, Callable] = {
    "pmm": _impute_pmm, "norm": _impute_norm, "mean": _impute_mean, "sample": _impute_sample,
    "logreg": _impute_logreg, "polyreg": _impute_polyreg, "lda": _impute_lda, "cart": _impute_cart,
    "polr": _impute_polr,
}


# --------------------------------------------------------------------------------------------
# The chained-equations sampler for one imputation


def _build_design_from(values, design_start, design_stop, infos, width) -> np.ndarray:
    """The design (n x width) of complete data columns (incomplete entries left 0)."""
    design = np.zeros((values.shape[0], width))
    for j, info in enumerate(infos):
        a, b = design_start[j], design_stop[j]
        if a == b:
            continue
        v = values[:, j]
        if not info.is_factor:
            design[:, a] = np.nan_to_num(v)
            continue
        codes = np.where(np.isnan(v), -1, v).astype(np.int64)
        hit = codes >= 1
        design[np.flatnonzero(hit), a + codes[hit] - 1] = 1.0
    return design


def _exactly_dependent(x: np.ndarray, columns: tuple) -> set:
    """Columns (their labels in ``columns``) of x that are exact linear combinations of earlier
    columns and the intercept: in-order Cholesky of the correlation matrix, residual variance
    below 1e-8 (the first pass of ``engine.impute.lindep.lindep_keep``). Constant columns count too."""
    if x.shape[1] == 0:
        return set()
    xc = x - x.mean(axis=0)
    ss = np.sqrt((xc**2).sum(axis=0))
    constant = ss <= 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0)))
    ss[constant] = 1.0
    xs = xc / ss
    corr = xs.T @ xs
    k = corr.shape[0]
    chol = np.zeros((k, k))
    dependent = set()
    for a in range(k):
        if constant[a]:
            dependent.add(columns[a])
            continue
        s = corr[a, a] - chol[a, :a] @ chol[a, :a]
        if s < 1e-8:
            dependent.add(columns[a])
            continue
        d = np.sqrt(s)
        chol[a, a] = d
        chol[a + 1:, a] = (corr[a + 1:, a] - chol[a + 1:, :a] @ chol[a, :a]) / d
    return dependent


def _build_design(setup: _Setup, values: np.ndarray) -> np.ndarray:
    n = values.shape[0]
    design = np.zeros((n, len(setup.design_names)))
    for j in range(values.shape[1]):
        _write_design(setup, design, values, j, slice(None))
    return design


def _write_design(setup: _Setup, design: np.ndarray, values: np.ndarray, j: int, rows) -> None:
    a, b = setup.design_start[j], setup.design_stop[j]
    if a == b:
        return
    v = values[rows, j]
    if not setup.is_factor[j]:
        design[rows, a] = v
        return
    codes = np.where(np.isnan(v), -1, v).astype(np.int64)
    block = np.zeros((codes.shape[0], b - a))
    hit = codes >= 1
    block[np.flatnonzero(hit), codes[hit] - 1] = 1.0
    design[rows, a:b] = block


def _run_imputation(setup: _Setup, seed: np.random.SeedSequence, sweep_done=None):
    """Initial draws then ``maxit`` sweeps for one imputation; returns (imputed values per visited
    column, chain means (ncol_visit, maxit), chain variances, logged removals). ``sweep_done()``, if
    given, is called after every sweep (progress reporting; it never affects the draws)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    values = setup.values.copy()
    for j in setup.visit:  # initialize.imp: random draws from the observed values
        mis = setup.missing[:, j]
        observed = values[~mis, j]
        values[mis, j] = observed[rng.integers(0, observed.shape[0], size=int(mis.sum()))]
    design = _build_design(setup, values)
    n_visit = len(setup.visit)
    chain_mean = np.full((n_visit, setup.maxit), np.nan)
    chain_var = np.full((n_visit, setup.maxit), np.nan)
    events = []
    warm: dict[int, dict] = {}
    buffers: dict[int, tuple] = {}
    for iteration in range(setup.maxit):
        for v, j in enumerate(setup.visit):
            mis = setup.missing[:, j]
            obs = ~mis
            cols = setup.predictor_design_cols[j]
            if j not in buffers:  # per-column buffers, reused every sweep (no big allocations)
                obs_rows, mis_rows = np.flatnonzero(obs), np.flatnonzero(mis)
                buffers[j] = (obs_rows, mis_rows, np.empty((obs_rows.size, cols.size)),
                              np.empty((mis_rows.size, cols.size)), np.ascontiguousarray(values[obs, j]))
            obs_rows, mis_rows, x_obs, x_mis, y_obs = buffers[j]
            gather(design, obs_rows, cols, x_obs)
            gather(design, mis_rows, cols, x_mis)
            keep = remove_lindep(x_obs, y_obs)
            if not keep.all():
                dropped = [setup.design_names[c] for c in np.asarray(cols)[~keep]]
                events.append((iteration + 1, setup.column_names[j], setup.methods[j], ", ".join(dropped)))
                x_obs = np.ascontiguousarray(x_obs[:, keep])
                x_mis = np.ascontiguousarray(x_mis[:, keep])
            step = _StepState(warm=warm.setdefault(j, {}), quantify=setup.quantify)
            imputed = _IMPUTERS[setup.methods[j]](y_obs, x_obs, x_mis, rng, bool(setup.is_factor[j]), step)
            events.extend((iteration + 1, setup.column_names[j], setup.methods[j], note) for note in step.notes)
            values[mis, j] = imputed
            _write_design(setup, design, values, j, mis)
            shown = imputed + 1.0 if setup.is_factor[j] else imputed  # R's as.integer of a factor
            chain_mean[v, iteration] = shown.mean()
            chain_var[v, iteration] = shown.var(ddof=1) if shown.shape[0] > 1 else np.nan
        if sweep_done is not None:
            sweep_done()
    imputations = [values[setup.missing[:, j], j].copy() for j in setup.visit]
    return imputations, chain_mean, chain_var, events


def _imputation_task(setup: _Setup, seed: np.random.SeedSequence, sweep_done=None):
    """``_run_imputation`` with single-threaded BLAS in whichever process runs it: a worker process
    of a remote executor must not use multi-threaded BLAS, whose summation order differs and
    would change the draws (same seed, same imputations, whatever the executor)."""
    with SingleThreadedBlas():
        return _run_imputation(setup, seed, sweep_done)


# --------------------------------------------------------------------------------------------
# User layer


class MiceFits(list):
    """The m complete-data fits of ``MiceResult.fit`` (a list); ``.pool()`` applies Rubin's rules."""

    def pool(self, dfcom: float | None = None):
        from engine.pool import pool

        return pool(self, dfcom=dfcom)


@dataclass
class MiceResult:
    """Multiply imputed data (R's ``mids``).

    ``imp[col]``: (n_missing, m) array of the imputed values of a column (factor level labels for
    factors); ``where``: missing-value mask (DataFrame of bool); ``chain_means[col]`` /
    ``chain_vars[col]``: DataFrames (iterations x imputations) of the mean / variance of the imputed
    values after each sweep (factor codes counted from 1, as R's ``as.integer``); ``method``,
    ``predictor_matrix``, ``visit_sequence`` as used; ``logged_events``: what was removed and why.
    """

    data: pd.DataFrame
    m: int
    maxit: int
    method: dict
    predictor_matrix: pd.DataFrame
    visit_sequence: list
    where: pd.DataFrame
    imp: dict
    chain_means: dict
    chain_vars: dict
    logged_events: pd.DataFrame
    seed: Any = None
    _columns: dict = field(default_factory=dict, repr=False)
    _codes: dict = field(default_factory=dict, repr=False)

    def complete(self, action: int | str = 1, include: bool = False) -> pd.DataFrame:
        """The k-th completed data set (``k = 0``: the original data), or ``"long"``: all of them
        stacked with ``.imp`` (imputation number) and ``.id`` (row, 1-based unless the data has
        its own index) in front, as mice's ``complete(imp, "long", include)``."""
        if isinstance(action, str):
            if action != "long":
                raise ImputationError(f"complete(): action must be an imputation number or 'long', got {action!r}")
            ks = range(0 if include else 1, self.m + 1)
            ids = (np.arange(1, len(self.data) + 1) if isinstance(self.data.index, pd.RangeIndex)
                   else self.data.index.to_numpy())
            frames = []
            for k in ks:
                frame = self.complete(k).reset_index(drop=True)
                frame.insert(0, ".id", ids)
                frame.insert(0, ".imp", k)
                frames.append(frame)
            return pd.concat(frames, ignore_index=True)
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise ImputationError(f"complete(): action must be an imputation number or 'long', got {action!r}")
        k = int(action)
        if not 0 <= k <= self.m:
            raise ImputationError(f"complete(): imputation number must be in 0..{self.m}, got {k}")
        out = self.data.copy()
        if k == 0:
            return out
        for name, codes in self._codes.items():
            info = self._columns[name]
            mask = self.where[name].to_numpy()
            filled = codes[:, k - 1]
            if info.is_factor:
                if info.kind == "categorical":
                    all_codes = out[name].cat.codes.to_numpy().copy()
                    all_codes[mask] = filled.astype(np.int64)
                    out[name] = pd.Categorical.from_codes(all_codes, dtype=info.dtype)
                else:
                    col = out[name].to_numpy(dtype=object).copy()
                    col[mask] = [info.levels[int(c)] for c in filled]
                    out[name] = pd.Series(col, index=out.index).astype(info.dtype) if info.kind == "bool" \
                        else pd.Series(col, index=out.index, dtype=info.dtype)
            else:
                col = out[name].to_numpy(dtype=float, na_value=np.nan).copy()
                col[mask] = filled
                series = pd.Series(col, index=out.index, name=name)
                if pd.api.types.is_integer_dtype(info.dtype) and np.all(np.isfinite(col)) and np.all(col == np.round(col)):
                    series = series.astype(info.dtype)
                out[name] = series
        return out

    def fit(self, function: Callable[[pd.DataFrame], Any], executor: Executor | None = None) -> MiceFits:
        """Apply ``function`` (e.g. ``lambda d: engine.ols(formula, d)``) to each completed data set
        (R's ``with(imp, ...)``); returns the m fits as a list with ``.pool()``."""
        fits = run_tasks(lambda k: function(self.complete(k)), [(k,) for k in range(1, self.m + 1)], executor)
        return MiceFits(fits)

    def __repr__(self) -> str:
        methods = " ".join(f"{k}={v!r}" for k, v in self.method.items())
        return (f"Class: mids (engine)\nNumber of multiple imputations: {self.m}\n"
                f"Iterations: {self.maxit}\nImputation methods: {methods}\n"
                f"Logged events: {len(self.logged_events)}")


def _normalise_methods(method, infos: list[ColumnInfo], nmis: np.ndarray, default_method) -> list[str]:
    names = [i.name for i in infos]
    result = [_default_method(i, default_method) if nmis[j] > 0 else "" for j, i in enumerate(infos)]
    given: dict[int, str] = {}
    if method is None:
        pass
    elif isinstance(method, str):
        given = {j: method for j in range(len(infos)) if nmis[j] > 0}
    elif isinstance(method, (dict, pd.Series)):
        for name, meth in dict(method).items():
            if name not in names:
                raise ImputationError(f"method given for column {name!r}, which is not in the data")
            given[names.index(name)] = meth
    elif isinstance(method, (list, tuple)):
        if len(method) != len(infos):
            raise ImputationError(f"method has {len(method)} entries but the data has {len(infos)} columns")
        given = dict(enumerate(method))
    else:
        raise ImputationError(f"method must be None, a string, a dict or a list, got {type(method).__name__}")
    for j, meth in given.items():
        if not isinstance(meth, str):
            raise ImputationError(f"method for column {names[j]!r} must be a string, got {meth!r}")
        if meth:
            _check_method(infos[j], meth)
        result[j] = meth if nmis[j] > 0 else ""
    for j, info in enumerate(infos):
        if result[j]:
            _check_method(info, result[j])
    return result


def _normalise_predictor_matrix(predictor_matrix, names: list[str]) -> np.ndarray:
    ncol = len(names)
    if predictor_matrix is None:
        pred = np.ones((ncol, ncol), dtype=np.int64)
        np.fill_diagonal(pred, 0)
        return pred
    if isinstance(predictor_matrix, pd.DataFrame):
        if set(predictor_matrix.index) != set(names) or set(predictor_matrix.columns) != set(names) \
                or predictor_matrix.shape != (ncol, ncol):
            raise ImputationError(
                f"predictor_matrix must have the data's {ncol} columns as both rows and columns; "
                f"got shape {predictor_matrix.shape}"
            )
        matrix = predictor_matrix.loc[names, names].to_numpy()
    else:
        matrix = np.asarray(predictor_matrix)
        if matrix.shape != (ncol, ncol):
            raise ImputationError(
                f"predictor_matrix has shape {matrix.shape}, expected ({ncol}, {ncol}) for the data's columns"
            )
    if not np.isin(matrix, (0, 1)).all():
        raise ImputationError("predictor_matrix entries must be 0 or 1")
    pred = matrix.astype(np.int64).copy()
    np.fill_diagonal(pred, 0)
    return pred


def _imputation_threads(m: int) -> int:
    """Local threads for the m imputations (when no executor is given): one per imputation while
    that stays within 8 per core, so that the cores share all of them evenly: five imputations on
    two cores take 2.5 imputation-times instead of the 3 of one thread per core (measured: 3.1-3.5 s
    against 3.7-3.9 s on the study's 52 columns). One thread per core beyond that, inline on one
    core. The draws do not depend on it (every imputation has its own stream)."""
    cores = default_workers()
    if cores <= 1:
        return 1
    return m if m <= 8 * cores else cores


@checked_arguments
def mice(
    data: pd.DataFrame,
    m: int = 5,
    maxit: int = 5,
    method: str | dict | Sequence[str] | None = None,
    default_method: Sequence[str] = DEFAULT_METHOD,
    predictor_matrix: pd.DataFrame | np.ndarray | None = None,
    visit_sequence: Sequence[str] | None = None,
    seed: int | np.random.SeedSequence | None = None,
    executor: Executor | None = None,
    progress=None,
    quantify: bool = True,
) -> MiceResult:
    """Multivariate imputation by chained equations (R's ``mice()``); see the module docstring.

    ``method``: one name for every incomplete column, a dict column -> name, or a list per column
    (``""`` leaves a column as it is); unset columns get ``default_method`` = (numeric, two-level
    factor, unordered factor, ordered factor) methods. ``predictor_matrix``: (ncol x ncol) 0/1, row
    = target, column = predictor (default: all others). ``visit_sequence``: column names in visiting
    order (default: left to right). ``seed``: the m imputations use independent streams spawned
    from it. ``executor``: any ``concurrent.futures.Executor`` (default: local threads).
    ``progress``: a line with the sweeps done and an ETA on stderr (``None``: only when stderr is a
    terminal; ``True``; ``False``) or a callable ``f(done, total)``. ``quantify``: ``pmm`` on a factor
    matches on its categories scaled by the first canonical variate against the predictors (mice
    >= 3.16's ``quantify = TRUE``, the default) or, with ``False``, on its integer codes (mice <= 3.15,
    the version of this project's R references).
    """
    if not isinstance(data, pd.DataFrame):
        raise ImputationError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ImputationError(f"m (the number of imputations) must be an integer >= 1, got {m!r}")
    if isinstance(maxit, (bool, np.bool_)) or not isinstance(maxit, (int, np.integer)) or maxit < 0:
        raise ImputationError(f"maxit must be an integer >= 0, got {maxit!r}")
    if not isinstance(quantify, (bool, np.bool_)):
        raise ImputationError(f"quantify must be True or False, got {quantify!r}")
    check_seed(seed, where="mice")
    if isinstance(default_method, str) or len(default_method) != 4:
        raise ImputationError("default_method must give 4 methods: numeric, two-level factor, "
                              f"unordered factor, ordered factor; got {default_method!r}")
    if len(set(map(str, data.columns))) != data.shape[1]:
        raise ImputationError("data has duplicated column names")
    data = data.copy()
    names = [str(c) for c in data.columns]
    data.columns = names
    n, ncol = data.shape
    if n == 0 or ncol == 0:
        raise ImputationError("data has no rows or no columns")
    infos = [_column_info(name, data[name]) for name in names]
    values = np.column_stack([_column_values(info, data[info.name]) for info in infos])
    check_mice_values(values, names)
    missing = np.isnan(values)
    nmis = missing.sum(axis=0)
    methods = _normalise_methods(method, infos, nmis, default_method)
    for j, info in enumerate(infos):
        if nmis[j] == n and methods[j]:
            raise ImputationError(f"column {info.name!r} is entirely missing; it cannot be imputed "
                                  "(drop it or set its method to '')")
    pred = _normalise_predictor_matrix(predictor_matrix, names)
    if visit_sequence is None:
        visit_names = names
    else:
        if isinstance(visit_sequence, str):
            visit_sequence = [visit_sequence]
        unknown = [v for v in visit_sequence if v not in names]
        if unknown:
            raise ImputationError(f"visit_sequence names column(s) not in the data: {unknown}")
        visit_names = list(visit_sequence)

    events = _edit_setup(values, missing, nmis, infos, methods, pred)
    if events:
        removed = ", ".join(f"{e[1]} ({e[2]})" for e in events)
        warn_user(f"mice removed these columns as predictors (and left them unimputed if "
                  f"incomplete): {removed}; see logged_events", DataWarning)
    design_start, design_stop, design_names = _design_layout(infos)
    visit = [names.index(v) for v in visit_names if methods[names.index(v)] and nmis[names.index(v)] > 0]
    predictor_design_cols = _predictor_design_columns(values, nmis, infos, methods, pred, design_start,
                                                      design_stop, design_names, events)

    setup = _Setup(values=values, missing=missing, is_factor=np.array([i.is_factor for i in infos]),
                   n_levels=np.array([len(i.levels) for i in infos]), design_start=design_start,
                   design_stop=design_stop, design_names=design_names, column_names=names,
                   methods=methods, predictor_design_cols=predictor_design_cols, visit=visit,
                   maxit=int(maxit), quantify=bool(quantify))
    results = _run_imputations(setup, child_seeds(seed, int(m)), executor, progress)
    imp, chain_means, chain_vars, codes = _collect_imputations(results, setup, infos, data.index)
    for i, res in enumerate(results):
        for it, dep, meth, out in res[3]:
            events.append((it, dep, meth, out, i + 1))
    logged = pd.DataFrame(
        [(e[0], e[4] if len(e) > 4 else 0, e[1], e[2], e[3]) for e in events],
        columns=["it", "im", "dep", "meth", "out"],
    )
    return MiceResult(
        data=data, m=int(m), maxit=int(maxit), method=dict(zip(names, methods)),
        predictor_matrix=pd.DataFrame(pred, index=names, columns=names),
        visit_sequence=[names[j] for j in visit], where=pd.DataFrame(missing, index=data.index, columns=names),
        imp=imp, chain_means=chain_means, chain_vars=chain_vars, logged_events=logged, seed=seed,
        _columns={i.name: i for i in infos}, _codes=codes,
    )


def _edit_setup(values, missing, nmis, infos, methods, pred) -> list[tuple]:
    """mice's ``edit.setup``: constant columns, then collinear ones, then incomplete columns that are
    not imputed, stop being predictors (and targets). Edits ``methods`` and ``pred`` in place and
    returns the logged events ``(0, dep, meth, out)``."""
    names = [info.name for info in infos]
    events: list[tuple] = []
    for j, info in enumerate(infos):
        observed = values[~missing[:, j], j]
        constant = observed.size > 1 and np.var(observed, ddof=1) < 1000 * np.finfo(float).eps
        if observed.size == 1:
            constant = True
        if constant and (pred[:, j].any() or methods[j]):
            pred[:, j] = 0
            if methods[j]:
                pred[j, :] = 0
                methods[j] = ""
            events.append((0, info.name, "constant", info.name))
    is_predictor = pred.any(axis=0)
    if is_predictor.any():
        cols = np.flatnonzero(is_predictor)
        for pos in _find_collinear(values[:, cols], nmis[cols], COLLINEAR_THRESHOLD):
            j = int(cols[pos])
            pred[:, j] = 0
            if methods[j]:
                pred[j, :] = 0
                methods[j] = ""
            events.append((0, names[j], "collinear", names[j]))
    # a column with missing values that is not imputed cannot be a predictor
    for j in range(len(infos)):
        if nmis[j] > 0 and not methods[j] and pred[:, j].any():
            pred[:, j] = 0
            events.append((0, names[j], "not imputed", names[j]))
    return events


def _design_layout(infos) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Where each column's design columns lie: numerics 1, factors L - 1 treatment dummies.
    Returns (start (ncol,), stop (ncol,), design column names)."""
    ncol = len(infos)
    design_start = np.zeros(ncol, dtype=np.int64)
    design_stop = np.zeros(ncol, dtype=np.int64)
    design_names: list[str] = []
    for j, info in enumerate(infos):
        design_start[j] = len(design_names)
        if info.is_factor:
            design_names.extend(f"{info.name}{lev}" for lev in info.levels[1:])
        else:
            design_names.append(info.name)
        design_stop[j] = len(design_names)
    return design_start, design_stop, design_names


def _predictor_design_columns(values, nmis, infos, methods, pred, design_start, design_stop,
                              design_names, events) -> list[np.ndarray]:
    """The design columns each target's model uses, without the exactly dependent complete ones.

    Exact linear dependencies among the complete predictors (class dummies against school dummies,
    treatment and class size, ...) hold in every sweep and on every subset of rows, so remove.lindep
    would find them at every visit; find them once (same in-order rule as the kernel's first pass)
    and leave those design columns out, per distinct set of predictors. Appends a ``dependent``
    event to ``events`` for each column left out."""
    ncol = len(infos)
    complete_design = np.zeros(len(design_names), dtype=bool)
    for k in range(ncol):
        if nmis[k] == 0:
            complete_design[design_start[k]:design_stop[k]] = True
    full_design = None
    redundant_cache: dict[tuple, set] = {}
    predictor_design_cols = []
    for j in range(ncol):
        cols = [np.arange(design_start[k], design_stop[k]) for k in range(ncol) if pred[j, k]]
        cols = np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64)
        if methods[j] and nmis[j] > 0 and cols.size > 1:
            complete_cols = tuple(int(c) for c in cols if complete_design[c])
            if complete_cols not in redundant_cache:
                if full_design is None:
                    full_design = _build_design_from(values, design_start, design_stop, infos, len(design_names))
                redundant_cache[complete_cols] = _exactly_dependent(full_design[:, list(complete_cols)], complete_cols)
                for c in sorted(redundant_cache[complete_cols]):
                    events.append((0, "(all)", "dependent", design_names[c]))
            redundant = redundant_cache[complete_cols]
            if redundant:
                cols = np.array([c for c in cols if int(c) not in redundant], dtype=np.int64)
        predictor_design_cols.append(cols)
    return predictor_design_cols


def _run_imputations(setup, seeds, executor, progress) -> list:
    """The m imputation tasks, one per seed, on ``executor`` (default: local threads), with progress
    per finished sweep where the sweeps run in this process (a remote executor reports at the end)."""
    m = len(seeds)
    total_sweeps = m * max(setup.maxit, 1)
    report, close_progress = progress_reporter(progress, "mice", total_sweeps)
    sweep_done = None
    if report is not None and (executor is None or isinstance(executor, ThreadPoolExecutor)):
        finished = itertools.count(1)
        sweep_done = lambda: report(next(finished), total_sweeps)  # noqa: E731 - count() is thread-safe under the GIL
    try:
        with SingleThreadedBlas():
            results = run_tasks(_imputation_task, [(setup, s, sweep_done) for s in seeds], executor,
                                max_workers=_imputation_threads(m))
        if report is not None:
            report(total_sweeps, total_sweeps)
    finally:
        close_progress()
    return results


def _collect_imputations(results, setup, infos, index) -> tuple[dict, dict, dict, dict]:
    """Per visited column: the imputed values (labels for factors) as a (missing rows x m) frame,
    the chain means and variances per iteration, and the raw codes."""
    codes, imp, chain_means, chain_vars = {}, {}, {}, {}
    m = len(results)
    iterations = pd.Index(np.arange(1, setup.maxit + 1), name="iteration")
    imputations = pd.Index(np.arange(1, m + 1), name="imputation")
    for v, j in enumerate(setup.visit):
        name = setup.column_names[j]
        stacked = np.column_stack([res[0][v] for res in results])
        codes[name] = stacked
        rows = index[setup.missing[:, j]]
        if infos[j].is_factor:
            labels = np.array(infos[j].levels, dtype=object)[stacked.astype(np.int64)]
            imp[name] = pd.DataFrame(labels, index=rows, columns=imputations)
        else:
            imp[name] = pd.DataFrame(stacked, index=rows, columns=imputations)
        chain_means[name] = pd.DataFrame(np.column_stack([res[1][v] for res in results]),
                                         index=iterations, columns=imputations)
        chain_vars[name] = pd.DataFrame(np.column_stack([res[2][v] for res in results]),
                                        index=iterations, columns=imputations)
    return imp, chain_means, chain_vars, codes


from engine._callable_module import make_module_callable  # noqa: E402

make_module_callable(__name__, "mice")
