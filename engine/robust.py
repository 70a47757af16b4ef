"""Heteroskedasticity-consistent (HC0-HC3) and cluster-robust (CR0-CR2) covariances for OLS.

Model: y = X b + e with E(e) = 0 and Var(e) unknown (heteroskedastic, or correlated within
clusters). Every estimator here is the sandwich

    V = (X'X)^-1  M  (X'X)^-1,      M = sum_g s_g s_g',    s_g = X_g' w_g    (k,)

over clusters g (for HC: every row is its own cluster), with w_g the cluster's residuals, rescaled
or adjusted by the type:

* HC0  w_i = e_i (White 1980); HC1 V x n/(n-k); HC2 w_i = e_i / sqrt(1 - h_i); HC3
  w_i = e_i / (1 - h_i) (MacKinnon & White 1985). h_i: leverage. As sandwich 3.0-2's ``vcovHC``.
* CR0  w_g = e_g (Liang & Zeger 1986); CR1 V x G/(G-1) (n-1)/(n-k): Stata's and fixest's
  small-sample factor, sandwich's ``vcovCL(type = "HC1")``; CR2 w_g = (I - H_gg)^(-1/2) e_g, the
  bias-reduced linearisation of Bell & McCaffrey (2002, Survey Methodology 28(2), sec. 3), as
  clubSandwich's ``vcovCR(type = "CR2")`` (identical to sandwich's ``vcovCL(type = "HC2")``): the
  symmetric inverse square root, with eigenvalues of I - H_gg below 1e-12 given power 0 as
  clubSandwich does (clusters a fixed effect absorbs).
* Multiway clustering (Cameron, Gelbach & Miller 2011, J. Bus. Econ. Stat. 29(2), sec. 2.3), as
  sandwich's ``vcovCL`` with its defaults (``multi0 = FALSE``, ``cadjust = TRUE``): over every
  non-empty subset S of the clustering dimensions, with the clusters of S the combinations present
  in the data, M = sum_S (-1)^(|S|+1) c_S M_S with c_S = G_S/(G_S-1) for CR1 (then x (n-1)/(n-k)
  overall) and 1 for CR0 and CR2 (each M_S with its own CR2 adjustment). The result need not be
  positive semi-definite (sandwich's ``fix = FALSE``).

G counts the clusters present among the rows used (sandwich counts a factor's levels, used or not;
after dropping unused levels the two agree). Inference uses t on n - k degrees of freedom for HC
and on min_d G_d - 1 for CR (Stata's ``vce(cluster)``; clubSandwich's Satterthwaite degrees of
freedom for CR2 are not computed).

Computation (never forming or inverting X'X): with R the triangle of the pivoted QR of X restricted
to the rank k kept columns, (X'X)^-1 = R^-1 R^-T, the leverages are the squared row norms of
X R^-1, and with U the G x k matrix of scores s_g' and the meat M = U'U, V = R^-1 (R^-T M R^-1) R^-T
(k x k products only). The scores are a sum over rows (:func:`cluster_scores`), so a partitioned data set can add its
partitions' score matrices (or, when no cluster spans two partitions, their meats U'U).
For CR2 the cluster's block of X R^-1, Q_g, with Q_g'Q_g = Z diag(d^2) Z', gives
(I - Q_g Q_g')^(-1/2) e_g = e_g + Q_g Z diag(((1 - d^2)^(-1/2) - 1) / d^2) Z' Q_g' e_g at
O(n_g k^2 + k^3) per cluster (:func:`_cr2_adjust`), never an n_g x n_g matrix.

Shapes: X (n, k) kept columns in pivot order, resid (n,), codes (n,) int64 in 0..G-1.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numba
import numpy as np
import pandas as pd

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.errors import ColumnNotFoundError, DataError, DataWarning, ModelSpecError, warn_user

#: Covariance types ``ols(vcov=...)`` accepts.
HC_TYPES = ("HC0", "HC1", "HC2", "HC3")
CR_TYPES = ("CR0", "CR1", "CR2")
VCOV_TYPES = HC_TYPES + CR_TYPES
#: sandwich's threshold for "hat value close to 1" (1 - sqrt(.Machine$double.eps)).
LEVERAGE_ONE = 1.0 - math.sqrt(np.finfo(float).eps)
#: clubSandwich's matrix_power tolerance: eigenvalues of I - H_gg at or below it get power 0.
CR2_EIGEN_TOL = 1e-12

_DESCRIPTION = {
    "HC0": "heteroskedasticity-consistent HC0",
    "HC1": "heteroskedasticity-consistent HC1",
    "HC2": "heteroskedasticity-consistent HC2",
    "HC3": "heteroskedasticity-consistent HC3",
    "CR0": "cluster-robust CR0",
    "CR1": "cluster-robust CR1 (Stata's small-sample factor)",
    "CR2": "cluster-robust CR2 (Bell-McCaffrey)",
}


class Clusters(NamedTuple):
    """Clustering of the rows used in a fit: one code vector per dimension."""

    names: tuple[str, ...]          # the data columns
    codes: tuple[np.ndarray, ...]   # (n,) int64 each, 0..G-1 in order of first appearance
    counts: tuple[int, ...]         # G per dimension


class RobustCovariance(NamedTuple):
    """A robust covariance of the kept coefficients (pivot order) and what inference uses."""

    kind: str                  # one of VCOV_TYPES
    vcov: np.ndarray           # (k, k) in the kept (pivot) order
    df: int                    # degrees of freedom of t and F: n - k (HC) or min G - 1 (CR)
    clusters: Clusters | None

    def description(self) -> str:
        """One line for the printed summary."""
        text = f"Standard errors: {_DESCRIPTION[self.kind]}"
        if self.clusters is not None:
            dims = " and ".join(f"{name} ({count} clusters)"
                                for name, count in zip(self.clusters.names, self.clusters.counts))
            text += f", clustered by {dims}"
        return text + f"\nt tests, intervals and Wald F on {self.df} degrees of freedom"


# --------------------------------------------------------------------------------------------
# argument checks and cluster columns
# --------------------------------------------------------------------------------------------


def check_vcov_arguments(vcov, cluster) -> tuple[str | None, tuple[str, ...]]:
    """Validate ``ols(vcov=, cluster=)``; returns (type or None, cluster column names).

    ``cluster`` alone means CR1; a CR type needs ``cluster``; an HC type takes none.
    """
    if cluster is None:
        names: tuple[str, ...] = ()
    elif isinstance(cluster, str):
        names = (cluster,)
    elif isinstance(cluster, (list, tuple)) and cluster and all(isinstance(c, str) for c in cluster):
        names = tuple(cluster)
        if len(set(names)) != len(names):
            raise ModelSpecError(f"cluster= names a column twice: {list(cluster)!r}")
    else:
        raise ModelSpecError(
            f"cluster= must be a column name or a list of column names, not {cluster!r}")
    if vcov is None:
        return ("CR1" if names else None), names
    if not isinstance(vcov, str) or vcov.upper() not in VCOV_TYPES:
        raise ModelSpecError(
            f"vcov={vcov!r} is not a covariance type engine knows; use one of {', '.join(VCOV_TYPES)}")
    kind = vcov.upper()
    if kind in CR_TYPES and not names:
        raise ModelSpecError(f"vcov={vcov!r} is cluster-robust and needs cluster= (a column name)")
    if kind in HC_TYPES and names:
        raise ModelSpecError(
            f"vcov={vcov!r} is not clustered but cluster={cluster!r} was given; use vcov='CR0', "
            "'CR1' or 'CR2' for clustered standard errors")
    return kind, names


def check_cluster_columns(data: pd.DataFrame, names: Sequence[str]) -> None:
    """Every cluster column must be in the data (it may be outside the formula)."""
    from engine.formula import _close_matches

    for name in names:
        if name not in data.columns:
            raise ColumnNotFoundError(
                f"cluster column {name!r} is not in the data{_close_matches(name, data.columns)}")


def cluster_codes(data: pd.DataFrame, names: Sequence[str], rows: np.ndarray) -> Clusters:
    """Codes of the cluster columns on the rows the model kept (0-based positions ``rows``).

    Rows the model dropped for missing values are dropped from the clusters too; a missing value
    among the kept rows, or a single cluster, is a clear error naming the column.
    """
    codes = []
    counts = []
    for name in names:
        column = data[name]
        if isinstance(column, pd.DataFrame):
            raise DataError(f"the data has more than one column named {name!r}")
        values = column.iloc[rows]
        missing = values.isna().to_numpy()
        if missing.any():
            raise DataError(
                f"cluster column {name!r} has missing values in {int(missing.sum())} of the "
                f"{len(rows)} rows the model uses (first at row {int(rows[np.flatnonzero(missing)[0]])}, "
                "0-based position); drop or recode those rows")
        code, uniques = pd.factorize(values, use_na_sentinel=True)
        g = len(uniques)
        if g < 2:
            raise ModelSpecError(
                f"cluster column {name!r} has only one cluster in the {len(rows)} rows the model "
                "uses; clustered standard errors need at least two clusters")
        codes.append(np.ascontiguousarray(code, dtype=np.int64))
        counts.append(int(g))
    return Clusters(tuple(names), tuple(codes), tuple(counts))


# --------------------------------------------------------------------------------------------
# kernels: sums over rows
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _cluster_scores(X, w, codes, n_clusters):
    """U[g] = sum over rows i of cluster g of w[i] X[i]: X (n, k), w (n,), codes (n,) -> (G, k)."""
    n, k = X.shape
    U = np.zeros((n_clusters, k))
    for i in range(n):
        g = codes[i]
        wi = w[i]
        for j in range(k):
            U[g, j] += wi * X[i, j]
    return U


def cluster_scores(X: np.ndarray, w: np.ndarray, codes: np.ndarray | None,
                   n_clusters: int | None = None) -> np.ndarray:
    """Scores of each cluster, s_g = X_g' w_g: (G, k). ``codes=None``: every row its own cluster.

    A sum over rows: the score matrices of disjoint row partitions add up.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    if codes is None:
        return X * w[:, None]
    return _cluster_scores(X, w, np.ascontiguousarray(codes, dtype=np.int64), int(n_clusters))


@numba.njit(cache=True, nogil=True)
def _times_matrix(X, A):
    """X @ A for a tall X (n, k) and a small A (k, m), row by row (no BLAS threads for a
    k x k right factor, which are slower than this loop on a busy machine)."""
    n, k = X.shape
    m = A.shape[1]
    out = np.empty((n, m))
    for i in range(n):
        for j in range(m):
            s = 0.0
            for c in range(k):
                s += X[i, c] * A[c, j]
            out[i, j] = s
    return out


def _sandwich(scores: np.ndarray, rinv: np.ndarray) -> np.ndarray:
    """(X'X)^-1 M (X'X)^-1 with M = U'U (the meat, a sum over clusters of s_g s_g') and
    (X'X)^-1 = R^-1 R^-T: R^-1 (R^-T M R^-1) R^-T, k x k products only. scores U (G, k)."""
    return sandwich_meat(scores.T @ scores, rinv)


def sandwich_meat(meat: np.ndarray, rinv: np.ndarray) -> np.ndarray:
    """R^-1 (R^-T M R^-1) R^-T for a given meat M (k, k): a sum over row partitions when no
    cluster spans two (engine.partitioned.ols sums HC meats over partitions)."""
    inner = rinv.T @ meat @ rinv
    V = rinv @ inner @ rinv.T
    return (V + V.T) / 2.0


def leverages(Xk: np.ndarray, rinv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q = X R^-1 (n, k), whose orthonormal columns span X's, and the hat values h (n,)."""
    Q = _times_matrix(np.ascontiguousarray(Xk, dtype=np.float64),
                      np.ascontiguousarray(rinv, dtype=np.float64))
    return Q, np.einsum("ij,ij->i", Q, Q)


@numba.njit(cache=True, nogil=True)
def _cr2_adjust(Q, resid, order, starts, tol, out):
    """out[i] = ((I - Q_g Q_g')^(-1/2) e_g)_i for the clusters whose rows are
    order[starts[g]:starts[g + 1]].

    With Q_g'Q_g = Z diag(d2) Z' (k x k, eigh), (I - Q_g Q_g')^(-1/2) e = e + Q_g c with
    c = Z diag(f(d2) / d2) Z' Q_g'e and f(x) = (1 - x)^(-1/2) - 1 = expm1(-log1p(-x) / 2); where
    1 - d2 <= tol clubSandwich's power 0 gives f = -1; as d2 -> 0, f(d2) / d2 -> 1/2.
    O(n_g k^2 + k^3) per cluster, no n_g x n_g matrix.
    """
    k = Q.shape[1]
    C = np.empty((k, k))
    b = np.empty(k)
    for g in range(starts.shape[0] - 1):
        lo = starts[g]
        hi = starts[g + 1]
        C[:, :] = 0.0
        b[:] = 0.0
        for r in range(lo, hi):
            i = order[r]
            e = resid[i]
            for a in range(k):
                qa = Q[i, a]
                b[a] += qa * e
                for c in range(a, k):
                    C[a, c] += qa * Q[i, c]
        for a in range(k):
            for c in range(a):
                C[a, c] = C[c, a]
        d2, Z = np.linalg.eigh(C)
        zb = Z.T @ b
        for j in range(k):
            x = d2[j]
            if x <= 1e-12:
                ratio = 0.5
            elif 1.0 - x > tol:
                ratio = math.expm1(-0.5 * math.log1p(-x)) / x
            else:
                ratio = -1.0 / x
            zb[j] *= ratio
        coef = Z @ zb
        for r in range(lo, hi):
            i = order[r]
            s = 0.0
            for a in range(k):
                s += Q[i, a] * coef[a]
            out[i] = resid[i] + s


def _cr2_residuals(Q: np.ndarray, h: np.ndarray, resid: np.ndarray, codes: np.ndarray,
                   n_clusters: int) -> np.ndarray:
    """(I - H_gg)^(-1/2) e_g for every cluster, with H_gg = Q_g Q_g' (clubSandwich's power)."""
    out = np.empty_like(resid)
    sizes = np.bincount(codes, minlength=n_clusters)
    single = sizes[codes] == 1
    if single.any():  # one-row clusters: (1 - h)^(-1/2), or power 0 where 1 - h is ~0
        one_minus = 1.0 - h[single]
        ok = one_minus > CR2_EIGEN_TOL
        out[single] = np.where(ok, resid[single] / np.sqrt(np.where(ok, one_minus, 1.0)), 0.0)
    multi = np.flatnonzero(~single)
    if multi.size:
        order = np.ascontiguousarray(multi[np.argsort(codes[multi], kind="stable")], dtype=np.int64)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(codes[order])) + 1, [order.size]])
        _cr2_adjust(np.ascontiguousarray(Q), resid, order, starts.astype(np.int64),
                    CR2_EIGEN_TOL, out)
    return out


def _combined_codes(clusters: Clusters, dims: tuple[int, ...]) -> tuple[np.ndarray, int]:
    if len(dims) == 1:
        return clusters.codes[dims[0]], clusters.counts[dims[0]]
    combined = np.zeros(len(clusters.codes[0]), dtype=np.int64)
    for d in dims:
        combined = combined * clusters.counts[d] + clusters.codes[d]
    uniques, inverse = np.unique(combined, return_inverse=True)
    return np.ascontiguousarray(inverse.reshape(-1), dtype=np.int64), int(len(uniques))


def robust_covariance(kind: str, Xk: np.ndarray, resid: np.ndarray, r: np.ndarray,
                      clusters: Clusters | None = None,
                      row_index: pd.Index | None = None) -> RobustCovariance:
    """The robust covariance ``kind`` of the coefficients of the kept columns ``Xk`` (n, k).

    r: (k, k) upper triangular with Xk = Q r (the fit's pivoted QR, leading rank x rank block).
    resid: (n,) the fit's residuals. clusters: for CR types. row_index: the rows' index labels
    (R's row names in the hat-value warning).
    """
    from engine.ols import _back_substitute

    Xk = np.ascontiguousarray(Xk, dtype=np.float64)
    resid = np.ascontiguousarray(resid, dtype=np.float64)
    n, k = Xk.shape
    rinv = _back_substitute(r, np.eye(k)) if k else np.zeros((0, 0))
    if kind in HC_TYPES:
        w = resid
        if kind in ("HC2", "HC3"):
            _, h = leverages(Xk, rinv)
            near_one = np.flatnonzero(h > LEVERAGE_ONE)
            with np.errstate(divide="ignore", invalid="ignore"):
                w = resid / np.sqrt(1.0 - h) if kind == "HC2" else resid / (1.0 - h)
            if near_one.size:
                from engine.ols import _r_row_names

                names = _r_row_names(row_index if row_index is not None else pd.RangeIndex(n))
                ids = [names[i] for i in near_one[:10]]
                if near_one.size > 10:
                    ids.append("...")
                warn_user(
                    f"{kind} covariances become numerically unstable if hat values are close to 1 "
                    f"as for observations {', '.join(ids)} (R row names); the covariance is NaN, "
                    "as sandwich's where the hat value is exactly 1", DataWarning)
                w = w.copy()
                w[near_one] = np.nan
        V = _sandwich(cluster_scores(Xk, w, None), rinv)
        if kind == "HC1":
            V = V * (n / (n - k))
        return RobustCovariance(kind, V, int(n - k), None)

    if clusters is None:
        raise ModelSpecError(f"vcov={kind!r} needs cluster=")
    Q = h = None
    if kind == "CR2":
        Q, h = leverages(Xk, rinv)
    p = len(clusters.names)
    V = np.zeros((k, k))
    for size in range(1, p + 1):
        sign = 1.0 if size % 2 == 1 else -1.0
        for dims in _subsets(p, size):
            codes, g = _combined_codes(clusters, dims)
            w = _cr2_residuals(Q, h, resid, codes, g) if kind == "CR2" else resid
            Vs = _sandwich(cluster_scores(Xk, w, codes, g), rinv)
            adj = g / (g - 1.0) if kind == "CR1" else 1.0
            V += sign * adj * Vs
    if kind == "CR1":
        V *= (n - 1.0) / (n - k)
    return RobustCovariance(kind, V, int(min(clusters.counts) - 1), clusters)


def _subsets(p: int, size: int):
    """R's combn(1:p, size) order: lexicographic."""
    from itertools import combinations

    return combinations(range(p), size)


def wald_f(coef: np.ndarray, vcov: np.ndarray, test: np.ndarray) -> tuple[float, int]:
    """Wald F = b' V^-1 b / q over the coefficients ``test`` (bool mask); (F, q).

    NaN when V restricted to them is not positive definite (e.g. more coefficients than
    clusters), as Stata reports no F then.
    """
    from scipy import linalg

    idx = np.flatnonzero(test)
    q = int(idx.size)
    if q == 0:
        return float("nan"), 0
    b = coef[idx]
    Vs = vcov[np.ix_(idx, idx)]
    if not np.isfinite(Vs).all():
        return float("nan"), q
    try:
        c = linalg.cho_factor(Vs, lower=True)
    except linalg.LinAlgError:
        return float("nan"), q
    return float(b @ linalg.cho_solve(c, b)) / q, q
