"""Numba-callable LAPACK routines for a few eigenpairs of a symmetric matrix.

numpy's ``eigh``/``eigvalsh`` (and Numba's versions of them) compute every eigenvalue; a caller that
needs only the extreme ones, say lambda_min with its eigenvector and lambda_max, pays for all of them
(and for all eigenvectors). The routines below are the building blocks LAPACK's own expert driver
``dsyevx`` chains (Anderson et al. 1999, *LAPACK Users' Guide*, 3rd ed., sec. 2.4.4 and 3.4.3;
reference: https://www.netlib.org/lapack/explore-html/, routines of the same names):

- ``cholesky_info``: ``dpotrf``, Cholesky factorisation, here a test of positive definiteness;
- ``tridiagonalize``: ``dsytrd``, Householder reduction A = Q T Q' (4/3 m^3 flops, the only cubic
  step);
- ``tridiagonal_eigenvalue``: ``dstebz``, the i-th smallest eigenvalue of T by bisection (Sturm
  counts, O(m) per step), to within ulp * max|T| (LAPACK's default tolerance);
- ``tridiagonal_count_below``: the Sturm count itself (number of eigenvalues of T below x), in
  Numba, as LAPACK's ``dlaebz`` computes it;
- ``tridiagonal_eigenvector``: ``dstein``, its eigenvector of T by inverse iteration;
- ``apply_q``: ``dormtr``, back-transformation z -> Q z.

The routines come from the LAPACK that SciPy ships (``scipy.linalg.cython_lapack``, LP64: 32-bit
integers). Their addresses are registered with LLVM under stable names (``engine_dsytrd`` ...) when
this module is imported, and the kernels call them as ``numba.types.ExternalFunction`` by name, so
compiled code holds no raw address and ``cache=True`` works: a fresh process re-registers the names
on import and then loads the cached machine code, which links against them.

Arrays are passed as ``arr.ctypes``. A symmetric matrix is its own transpose, so a C-ordered array
can be handed to Fortran as is; the Householder vectors ``dsytrd`` leaves in it are only read back
by ``dormtr``, with the same ``uplo``. The calls need no Python object and run with the GIL
released; ``dsytrd`` and ``dpotrf`` call BLAS, so callers in threads should limit OpenBLAS to one
thread (``engine.mice`` does while it runs). Workspace is allocated per call at O(m) (O(m * 8)
for ``dsytrd``), never O(m^2).
"""

from __future__ import annotations

import llvmlite.binding as _llvm
import numba
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles

_F64P = types.CPointer(types.float64)
_I32P = types.CPointer(types.int32)
_CHARP = types.CPointer(types.uint8)

_SIGNATURES = {
    # DPOTRF(UPLO, N, A, LDA, INFO)
    "dpotrf": (_CHARP, _I32P, _F64P, _I32P, _I32P),
    # DSYTRD(UPLO, N, A, LDA, D, E, TAU, WORK, LWORK, INFO)
    "dsytrd": (_CHARP, _I32P, _F64P, _I32P, _F64P, _F64P, _F64P, _F64P, _I32P, _I32P),
    # DSTEBZ(RANGE, ORDER, N, VL, VU, IL, IU, ABSTOL, D, E, M, NSPLIT, W, IBLOCK, ISPLIT, WORK,
    #        IWORK, INFO)
    "dstebz": (_CHARP, _CHARP, _I32P, _F64P, _F64P, _I32P, _I32P, _F64P, _F64P, _F64P, _I32P,
               _I32P, _F64P, _I32P, _I32P, _F64P, _I32P, _I32P),
    # DSTEIN(N, D, E, M, W, IBLOCK, ISPLIT, Z, LDZ, WORK, IWORK, IFAIL, INFO)
    "dstein": (_I32P, _F64P, _F64P, _I32P, _F64P, _I32P, _I32P, _F64P, _I32P, _F64P, _I32P, _I32P,
               _I32P),
    # DORMTR(SIDE, UPLO, TRANS, M, N, A, LDA, TAU, C, LDC, WORK, LWORK, INFO)
    "dormtr": (_CHARP, _CHARP, _CHARP, _I32P, _I32P, _F64P, _I32P, _F64P, _F64P, _I32P, _F64P,
               _I32P, _I32P),
}


def _bind(name):
    symbol = "engine_" + name
    _llvm.add_symbol(symbol, get_cython_function_address("scipy.linalg.cython_lapack", name))
    return types.ExternalFunction(symbol, types.void(*_SIGNATURES[name]))


_dpotrf = _bind("dpotrf")
_dsytrd = _bind("dsytrd")
_dstebz = _bind("dstebz")
_dstein = _bind("dstein")
_dormtr = _bind("dormtr")

#: Block size of dsytrd, set through its workspace size (LAPACK's ilaenv default is 32; 8 is
#: about 20% faster for the 100-200 square matrices of mice's remove.lindep, measured with SciPy's
#: OpenBLAS).
_BLOCK = 8
#: dstebz's absolute tolerance: 0 selects LAPACK's default, ulp * max|T| (as dsyevx's default).
_ABSTOL = 0.0
#: LAPACK's safe minimum, DLAMCH('S').
_SAFE_MIN = np.finfo(np.float64).tiny

_CHAR_L, _CHAR_I, _CHAR_B, _CHAR_N = (ord(c) for c in "LIBN")


@numba.njit(cache=True, nogil=True)
def cholesky_info(a, m):
    """Cholesky factorisation in place of the leading m x m block of the flat buffer ``a``
    (symmetric, m*m values) (LAPACK ``dpotrf``, uplo 'L'). Returns LAPACK's info: 0 when the
    matrix is positive definite (to working precision), j > 0 when the j-th pivot is not positive.
    Used as a test: A - t I is positive definite exactly when every eigenvalue of A exceeds t."""
    chars = np.array([_CHAR_L], dtype=np.uint8)
    ints = np.array([m, max(m, 1), 0], dtype=np.int32)  # n, lda, info
    _dpotrf(chars.ctypes, ints[0:].ctypes, a.ctypes, ints[1:].ctypes, ints[2:].ctypes)
    return ints[2]


@numba.njit(cache=True, nogil=True)
def tridiagonalize(a, m):
    """Reduce the leading m x m block of ``a`` (stored contiguously, m*m values at the start of the
    flat buffer ``a``; symmetric) to tridiagonal form T = Q' A Q (LAPACK ``dsytrd``, uplo 'L').

    ``a`` is overwritten by the Householder vectors, which ``apply_q`` reads. Returns (d (m,),
    e (m-1,), tau (m-1,), info); info != 0 reports an illegal argument (LAPACK's convention)."""
    d = np.empty(m)
    e = np.empty(max(m - 1, 1))
    tau = np.empty(max(m - 1, 1))
    work = np.empty(max(m * _BLOCK, 1))
    chars = np.array([_CHAR_L], dtype=np.uint8)
    ints = np.array([m, max(m, 1), work.shape[0], 0], dtype=np.int32)  # n, lda, lwork, info
    _dsytrd(chars.ctypes, ints[0:].ctypes, a.ctypes, ints[1:].ctypes, d.ctypes, e.ctypes,
            tau.ctypes, work.ctypes, ints[2:].ctypes, ints[3:].ctypes)
    return d, e, tau, ints[3]


@numba.njit(cache=True, nogil=True)
def tridiagonal_eigenvalue(d, e, index):
    """The ``index``-th smallest (1-based) eigenvalue of the symmetric tridiagonal matrix with
    diagonal d (m,) and off-diagonal e (m-1,), by bisection to within ulp * max|T| (LAPACK
    ``dstebz``, RANGE='I', ORDER='B', ABSTOL = 0).

    Returns (value, iblock (1,), isplit (m,), info): the block bookkeeping ``tridiagonal_eigenvector``
    needs. info != 0: bisection did not converge or an illegal argument (LAPACK's convention)."""
    m = d.shape[0]
    chars = np.array([_CHAR_I, _CHAR_B], dtype=np.uint8)
    # n, il, iu, m_found, nsplit, info
    ints = np.array([m, index, index, 0, 0, 0], dtype=np.int32)
    reals = np.array([0.0, 0.0, _ABSTOL])  # vl, vu (unused for RANGE='I'), abstol
    w = np.zeros(m)
    iblock = np.zeros(m, dtype=np.int32)
    isplit = np.zeros(m, dtype=np.int32)
    work = np.empty(4 * m)
    iwork = np.empty(3 * m, dtype=np.int32)
    _dstebz(chars[0:].ctypes, chars[1:].ctypes, ints[0:].ctypes, reals[0:].ctypes, reals[1:].ctypes,
            ints[1:].ctypes, ints[2:].ctypes, reals[2:].ctypes, d.ctypes, e.ctypes, ints[3:].ctypes,
            ints[4:].ctypes, w.ctypes, iblock.ctypes, isplit.ctypes, work.ctypes, iwork.ctypes,
            ints[5:].ctypes)
    info = ints[5]
    if info == 0 and ints[3] != 1:
        info = -100  # not exactly one eigenvalue found
    return w[0], iblock[0:1].copy(), isplit, info


@numba.njit(cache=True, nogil=True)
def tridiagonal_count_below(d, e, x):
    """Number of eigenvalues below x of the symmetric tridiagonal matrix (d (m,), e (m-1,)): the
    negative pivots of the LDL' factorisation of T - x I (Sturm count; Sylvester's law of inertia).
    Backward stable (Kahan 1966; Demmel 1997, *Applied Numerical Linear Algebra*, sec. 5.3.4): the
    count is exact for a matrix within a few ulps of T. A pivot smaller in magnitude than pivmin is
    replaced by -pivmin, as LAPACK's dlaebz does (pivmin = safe minimum * max(1, max e^2))."""
    m = d.shape[0]
    pivmin = 1.0
    for i in range(m - 1):
        pivmin = max(pivmin, e[i] * e[i])
    pivmin *= _SAFE_MIN
    count = 0
    q = d[0] - x
    for i in range(m):
        if i > 0:
            q = d[i] - x - e[i - 1] * e[i - 1] / q
        if abs(q) < pivmin:
            q = -pivmin
        if q <= 0.0:
            count += 1
    return count


@numba.njit(cache=True, nogil=True)
def tridiagonal_eigenvector(d, e, value, iblock, isplit):
    """Unit eigenvector (m,) of the tridiagonal matrix (d, e) for the eigenvalue ``value`` found by
    ``tridiagonal_eigenvalue`` (with its iblock, isplit), by inverse iteration (LAPACK ``dstein``).
    Returns (vector, info); info > 0: the iteration did not converge."""
    m = d.shape[0]
    ints = np.array([m, 1, max(m, 1), 0, 0], dtype=np.int32)  # n, m_vectors, ldz, ifail, info
    w = np.array([value])
    z = np.zeros(m)
    work = np.empty(5 * m)
    iwork = np.empty(m, dtype=np.int32)
    _dstein(ints[0:].ctypes, d.ctypes, e.ctypes, ints[1:].ctypes, w.ctypes, iblock.ctypes,
            isplit.ctypes, z.ctypes, ints[2:].ctypes, work.ctypes, iwork.ctypes, ints[3:].ctypes,
            ints[4:].ctypes)
    return z, ints[4]


@numba.njit(cache=True, nogil=True)
def apply_q(a, tau, z):
    """Q z for the Q of ``tridiagonalize`` (``a`` and ``tau`` as it left them; z (m,) is
    overwritten and returned) (LAPACK ``dormtr``, SIDE='L', UPLO='L', TRANS='N').
    Returns (z, info)."""
    m = z.shape[0]
    chars = np.array([_CHAR_L, _CHAR_L, _CHAR_N], dtype=np.uint8)
    work = np.empty(max(_BLOCK, 1))
    ints = np.array([m, 1, max(m, 1), max(m, 1), work.shape[0], 0], dtype=np.int32)
    # m, n, lda, ldc, lwork, info
    _dormtr(chars[0:].ctypes, chars[1:].ctypes, chars[2:].ctypes, ints[0:].ctypes, ints[1:].ctypes,
            a.ctypes, ints[2:].ctypes, tau.ctypes, z.ctypes, ints[3:].ctypes, work.ctypes,
            ints[4:].ctypes, ints[5:].ctypes)
    return z, ints[5]
