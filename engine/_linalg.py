"""Small dense linear algebra shared by the kernels (p <= a few hundred), and BLAS thread control.

Cholesky with a failure flag, triangular solves, cross-products that skip the zero entries of
dummy-heavy designs, a vector's mean and sum of squares, a CSR view of a design, and a context manager that runs OpenBLAS single-threaded.
Plain Numba functions over arrays (shapes in each docstring); one home for these helpers, so that
a sampler, an imputation method and a fit never write their own.
"""

from __future__ import annotations

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles


@numba.njit(cache=True, nogil=True)
def _cholesky(a, out, d, rel_tol, require_finite, floor):
    """The one Cholesky loop (cholesky_into's arithmetic and pivot rule). Returns the number of
    floored pivots (floor > 0), or -1 when a pivot failed (floor = 0: ``out`` is then incomplete)."""
    n_floored = 0
    for j in range(d):
        ajj = a[j, j]
        s = ajj
        for k in range(j):
            s -= out[j, k] * out[j, k]
        if floor > 0.0:
            if not s > 0.0:
                s = floor
                n_floored += 1
        elif not (s > 0.0) or (rel_tol > 0.0 and not (s > rel_tol * abs(ajj))) or (
                require_finite and not np.isfinite(s)):
            return -1
        djj = np.sqrt(s)
        out[j, j] = djj
        for i in range(j + 1, d):
            t = a[i, j]
            for k in range(j):
                t -= out[i, k] * out[j, k]
            out[i, j] = t / djj
        for i in range(j):
            out[i, j] = 0.0
    return n_floored


@numba.njit(cache=True, nogil=True)
def cholesky_into(a, out, d, rel_tol, require_finite, floor):
    """Lower Cholesky factor of the leading d x d block of the symmetric ``a`` into ``out`` (both at
    least d x d; ``out`` may be ``a`` itself: the factor then overwrites its lower triangle, the
    upper triangle of out[:d, :d] is set to 0). Returns ok.

    The pivot rule is the caller's: a pivot s fails when not s > 0, when rel_tol > 0 and not
    s > rel_tol * |a_jj| (nearly singular relative to the diagonal), or when require_finite and s
    is not finite; with floor > 0 a pivot that is not > 0 (nan included) is replaced by ``floor``
    instead (the factor of a numerically singular block stays finite; ok stays True, see
    cholesky_log_det_into for the flag). Left-looking (Cholesky-Banachiewicz by columns), the
    arithmetic order of every caller's former copy, so their results are bit-identical."""
    return _cholesky(a, out, d, rel_tol, require_finite, floor) >= 0


@numba.njit(cache=True, nogil=True)
def unit_scaled_cholesky_ok(G, rel_tol):
    """Whether the symmetric G (p, p) (a Gram matrix X'X), scaled to a unit diagonal (G_ij /
    sqrt(G_ii G_jj)), has a Cholesky factor with every pivot above ``rel_tol``: False when G holds
    a non-finite entry, a diagonal entry is not > 0 or its reciprocal overflows
    (``engine.lmer._clearly_full_rank``)."""
    p = G.shape[0]
    for i in range(p):
        for j in range(p):
            if not np.isfinite(G[i, j]):
                return False
    scale = np.empty(p)
    for i in range(p):
        d = G[i, i]
        if not (d > 0.0 and np.isfinite(1.0 / d)):
            return False
        scale[i] = 1.0 / np.sqrt(d)
    C = np.empty((p, p))
    for i in range(p):
        for j in range(p):
            C[i, j] = G[i, j] * scale[i] * scale[j]
    return cholesky_into(C, np.empty_like(C), p, rel_tol, True, 0.0)


@numba.njit(cache=True, nogil=True)
def cholesky_log_det_into(a, out, d, floor, log_det):
    """cholesky_into(a, out, d, 0, False, floor) that also gives log det L = sum_j log L_jj (half the
    log determinant of a[:d, :d]) and whether every pivot was positive. Returns (exact, log_det +
    log L_00 + ... + log L_{d-1,d-1}): the terms are added one by one to the caller's running sum
    ``log_det``, so a sum over many factors (a leaves-up elimination) keeps one order of addition.
    exact is False when a pivot was not > 0 (floored, floor > 0; with floor = 0 the factor stopped
    there and the log det is not returned: log_det unchanged)."""
    status = _cholesky(a, out, d, 0.0, False, floor)
    if status < 0:
        return False, log_det
    for j in range(d):
        log_det += np.log(out[j, j])
    return status == 0, log_det


@numba.njit(cache=True, nogil=True)
def cholesky_lower(a):
    """Lower Cholesky factor of the symmetric matrix ``a`` (p x p); ok=False when a pivot is not
    clearly positive (relative to the diagonal entry), i.e. the matrix is (nearly) singular."""
    p = a.shape[0]
    chol = np.zeros((p, p))
    ok = cholesky_into(a, chol, p, 1e-12, False, 0.0)
    return chol, ok


@numba.njit(cache=True, nogil=True)
def cholesky_with_ridge(a, ridge):
    """Cholesky of ``a``; if it fails, of ``a + ridge * diag(a)`` (mice's fallback). Returns (L, ridged)."""
    chol, ok = cholesky_lower(a)
    if ok:
        return chol, False
    b = a.copy()
    for j in range(a.shape[0]):
        b[j, j] += ridge * a[j, j] + 1e-300
    chol, ok = cholesky_lower(b)
    if not ok:  # a zero column: lift its diagonal so that its coefficient is 0
        for j in range(a.shape[0]):
            if b[j, j] <= 0.0:
                b[j, j] = 1.0
        chol, ok = cholesky_lower(b)
    return chol, True


@numba.njit(cache=True, nogil=True)
def solve_lower(chol, b):
    """Solve L x = b (forward substitution)."""
    p = chol.shape[0]
    x = np.empty(p)
    for i in range(p):
        s = b[i]
        for k in range(i):
            s -= chol[i, k] * x[k]
        x[i] = s / chol[i, i]
    return x


@numba.njit(cache=True, nogil=True)
def solve_upper_t(chol, b):
    """Solve L' x = b (back substitution with the transpose of the lower factor)."""
    p = chol.shape[0]
    x = np.empty(p)
    for i in range(p - 1, -1, -1):
        s = b[i]
        for k in range(i + 1, p):
            s -= chol[k, i] * x[k]
        x[i] = s / chol[i, i]
    return x


@numba.njit(cache=True, nogil=True)
def solve_upper_t_blocks(chol, b):
    """``solve_upper_t`` for each of m blocks: x[j] solves chol[j]' x[j] = b[j], for chol
    (m, q, q) lower factors and b (m, q); x (m, q). One call for all the blocks (a Python call
    per block costs more than the solve)."""
    m, q = b.shape
    x = np.empty((m, q))
    for j in range(m):
        x[j, :] = solve_upper_t(chol[j], b[j])
    return x


@numba.njit(cache=True, nogil=True)
def mean_and_sum_sq(v):
    """(mean, sum of squared deviations from it) of a vector v (n,), n >= 1: two passes in index
    order, as R's ``var`` (ss / (n - 1)) computes them."""
    n = v.shape[0]
    mean = 0.0
    for i in range(n):
        mean += v[i]
    mean /= n
    ss = 0.0
    for i in range(n):
        ss += (v[i] - mean) ** 2
    return mean, ss


@numba.njit(cache=True, nogil=True)
def inverse_from_cholesky(chol, q, inverse):
    """inverse[:q, :q] <- (L L')^{-1} = L^{-T} L^{-1} from the lower factor L = chol[:q, :q]: the
    columns of L^{-1} by forward substitution, then their cross-products (q small: a covariance
    block). Shapes: chol, inverse at least (q, q)."""
    linv = np.zeros((q, q))
    for c in range(q):
        for i in range(q):
            s = 1.0 if i == c else 0.0
            for k in range(i):
                s -= chol[i, k] * linv[k, c]
            linv[i, c] = s / chol[i, i]
    for a in range(q):
        for b in range(q):
            s = 0.0
            for k in range(q):
                s += linv[k, a] * linv[k, b]
            inverse[a, b] = s


@numba.njit(cache=True, nogil=True)
def draw_from_precision(rng, chol, rhs, out):
    """out ~ N(S^{-1} rhs, S^{-1}) given the lower Cholesky factor L of the precision S = L L'
    (never an inverse): u = L^{-1} rhs, then out = L^{-T} (u + z) with z ~ N(0, I) drawn from
    ``rng`` in index order (p draws). Shapes: chol (p, p), rhs (p,), out (p,) written in place."""
    u = solve_lower(chol, rhs)
    for a in range(u.shape[0]):
        u[a] += rng.standard_normal()
    out[:] = solve_upper_t(chol, u)


@numba.njit(cache=True, nogil=True)
def gather(source, rows, cols, out):
    """out[a, b] = source[rows[a], cols[b]] into a preallocated (len(rows), len(cols)) array."""
    for a in range(rows.shape[0]):
        r = rows[a]
        for b in range(cols.shape[0]):
            out[a, b] = source[r, cols[b]]


@numba.njit(cache=True, nogil=True)
def crossprod(x):
    """X'X (p x p) by rows, skipping zero entries: imputation designs are mostly factor dummies,
    so this beats a dense (and, on a busy machine, thread-contended) BLAS call."""
    n, p = x.shape
    out = np.zeros((p, p))
    for i in range(n):
        for a in range(p):
            va = x[i, a]
            if va != 0.0:
                for b in range(a + 1):
                    out[a, b] += va * x[i, b]
    for a in range(p):
        for b in range(a):
            out[b, a] = out[a, b]
    return out


@numba.njit(cache=True, nogil=True)
def crossprod_xy(x, y):
    """X'y (p,) for x (n, p), y (n,)."""
    n, p = x.shape
    out = np.zeros(p)
    for i in range(n):
        yi = y[i]
        for a in range(p):
            out[a] += x[i, a] * yi
    return out


@numba.njit(cache=True, nogil=True)
def row_nonzeros(x):
    """The nonzero entries of x (n, p) row by row (CSR): (start (n + 1,), col (nnz,), val (nnz,)),
    row i's entries at start[i]:start[i + 1]. Imputation designs are mostly zero dummies, so the
    Newton kernels (multinomial, proportional odds) accumulate their Hessians over these only."""
    n, p = x.shape
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        count = 0
        for j in range(p):
            if x[i, j] != 0.0:
                count += 1
        start[i + 1] = start[i] + count
    col = np.empty(start[n], dtype=np.int64)
    val = np.empty(start[n])
    for i in range(n):
        t = start[i]
        for j in range(p):
            if x[i, j] != 0.0:
                col[t] = j
                val[t] = x[i, j]
                t += 1
    return start, col, val


# --------------------------------------------------------------------------------------------
# BLAS threads: engine's parallel tasks (imputations, chains) already run in parallel, and the matrices are small (p <= a few
# hundred), where a multithreaded OpenBLAS spends far more time synchronising than computing
# (measured: 0.9 s instead of 0.02 s for one 150 x 150 eigh on a busy 2-core machine). Limit the
# loaded OpenBLAS libraries (NumPy's and SciPy's, which Numba's linalg uses) to one thread while
# mice runs, and restore them afterwards (what threadpoolctl does, with ctypes only).

_BLAS_NAMES = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
               ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
               ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
               ("openblas_get_num_threads", "openblas_set_num_threads"))


_BLAS_CONTROLS: list | None = None


def _blas_controls() -> list:
    """(get, set) thread-count functions of every OpenBLAS library loaded (found once)."""
    global _BLAS_CONTROLS
    if _BLAS_CONTROLS is None:
        controls = []
        try:
            import ctypes

            # Load every BLAS the imputation may touch (numpy's and scipy's) before looking, since
            # the controls are found once per process: one loaded later would keep its threads.
            import numpy.linalg  # noqa: F401
            import scipy.linalg  # noqa: F401

            with open("/proc/self/maps") as maps:
                paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
            for path in sorted(paths):
                lib = ctypes.CDLL(path)
                for get_name, set_name in _BLAS_NAMES:
                    if hasattr(lib, get_name) and hasattr(lib, set_name):
                        controls.append((getattr(lib, get_name), getattr(lib, set_name)))
                        break
        except Exception:  # pragma: no cover - no /proc or no OpenBLAS: leave BLAS as it is
            controls = []
        _BLAS_CONTROLS = controls
    return _BLAS_CONTROLS


class SingleThreadedBlas:
    """Context manager: OpenBLAS libraries loaded in this process use one thread inside."""

    def __enter__(self):
        self._saved = []
        for getter, setter in _blas_controls():
            try:
                before = int(getter())
                setter(1)
                self._saved.append((setter, before))
            except Exception:  # pragma: no cover
                pass
        return self

    def __exit__(self, *exc):
        for setter, before in self._saved:
            try:
                setter(before)
            except Exception:  # pragma: no cover
                pass
        return False
