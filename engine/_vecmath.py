"""exp and log1p over arrays in a form LLVM vectorises: no calls, no branches in the loops.

Numba calls libm's ``exp`` / ``log1p`` one value at a time, and a branch per value (the sign of
eta in the logistic log-likelihood) keeps a loop scalar; in the GLM samplers' row passes those
calls were most of a gradient's time. These kernels do the same work with plain arithmetic and
bit moves between a double and its int64 bits (``float_from_bits`` / ``bits_from_float``, LLVM
bitcasts), every special case a select, so LLVM turns a loop over them into SIMD code.
Both are within one ulp of glibc's (tests/test_vecmath.py compares them with numpy over the whole
double range):

- ``exp_value(x)`` (``exp_into(x, out)`` over an array): fdlibm's reduction (``e_exp.c``): exp(x) = 2^k exp(r),
  k = round(x / ln 2), r = x - k ln 2 with ln 2 in two parts (k ln2_hi exact), |r| <= ln(2)/2;
  exp(r) its Taylor polynomial to r^13 (truncation below 4e-18 relative); 2^k built from its bits
  in two factors 2^(k >> 1) 2^(k - (k >> 1)), so results down in the subnormals and up to the
  overflow to inf come out right. x is clamped to [-746, 710] first (exp is 0 or inf beyond);
  NaN propagates.
- ``log1p_value(x)`` (``log1p_into(x, out)``): fdlibm / musl's ``log1p``: u = 1 + x = 2^k m with
  m in [sqrt(2)/2, sqrt(2)) from u's bits, f = m - 1, c = the rounding error of u over u
  (log(1 + x) = k ln 2 + log(1 + f) + c); for x in (-0.2929, 0.4142) k = 0, f = x, c = 0.
  log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f), R fdlibm's Lg1..Lg7 polynomial.
  -1 gives -inf, x < -1 NaN, +inf inf.

The ``_value`` forms are inlined by LLVM (their fast-math flags kept), so a caller's own loop (the GLM row pass) fuses them with its
arithmetic; ``out`` may be ``x``; ``exp`` and ``log1p`` return new arrays.
Fused multiply-adds are allowed (``contract``): as accurate, and faster. engine.loo's
``_exp_shifted`` (a column's exponentials, shifted by their max) is ``exp_value`` over the column.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles

LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts (fdlibm): k LN2_HI is exact for |k| < 2^20
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00
EXP_MAX = 710.0  # exp(710) > DBL_MAX: clamping there still overflows to inf
EXP_MIN = -746.0  # exp(-746) < half the smallest subnormal: rounds to 0

# fdlibm's s_log1p.c / musl's log1p.c coefficients of R(z) = Lg1 z + ... + Lg7 z^7
LG1 = 6.666666666666735130e-01
LG2 = 3.999999999940941908e-01
LG3 = 2.857142874366239149e-01
LG4 = 2.222219843214978396e-01
LG5 = 1.818357216161805012e-01
LG6 = 1.531383769920937332e-01
LG7 = 1.479819860511658591e-01
SQRT_HALF_BITS = 0x3FE6A09E667F3BCD  # the bits of sqrt(2)/2
MANTISSA_BITS = 0x000FFFFFFFFFFFFF


@intrinsic
def float_from_bits(typingctx, bits):
    """The double whose IEEE 754 bits are the int64 ``bits`` (a register move, as C's memcpy pun)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def bits_from_float(typingctx, value):
    """The IEEE 754 bits of the double ``value`` as an int64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def exp_value(x):
    """exp(x) for one double (module docstring): branch-free, so a loop of it vectorises."""
    v = EXP_MAX if x > EXP_MAX else x  # noqa: FURB136 - selects that NaN passes (min/max need not)
    v = EXP_MIN if v < EXP_MIN else v  # noqa: FURB136
    kf = math.floor(v * INV_LN2 + 0.5)
    r = (v - kf * LN2_HI) - kf * LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    kf = 0.0 if math.isnan(kf) else kf  # NaN (p is NaN already): no float-to-int conversion of a NaN
    k = np.int64(kf)
    half = k >> 1  # 2^k = 2^half 2^(k - half), both factors normal for k in [-1077, 1025]
    return (p * float_from_bits((half + 1023) << 52)) * float_from_bits((k - half + 1023) << 52)


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def log1p_and_reciprocal(x):
    """(log1p(x), 1 / (1 + x)) for one double (module docstring), branch-free: log1p needs the
    reciprocal for its correction term, and the logistic log-likelihood's derivative needs it too
    (x = exp(-|eta|)), so one division serves both."""
    u = 1.0 + x
    inverse = 1.0 / u
    shifted = bits_from_float(u) - SQRT_HALF_BITS
    k = shifted >> 52  # u = 2^k m, m in [sqrt(2)/2, sqrt(2))
    m = float_from_bits((shifted & MANTISSA_BITS) + SQRT_HALF_BITS)
    # the rounding error of u = 1 + x, relative to u (both differences exact: Sterbenz' lemma)
    c = (1.0 - (u - x)) if k >= 2 else (x - (u - 1.0))
    c = c * inverse  # c is below an ulp of the result: its own rounding does not show
    small = (x > -0.2928932188134524) & (x < 0.41421356237309503)  # 1 + x in (sqrt(2)/2, sqrt(2))
    f = x if small else m - 1.0
    c = 0.0 if small else c
    dk = 0.0 if small else float(k)
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (LG2 + w * (LG4 + w * LG6))
    t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)))
    result = s * (hfsq + (t2 + t1)) + (dk * LN2_LO + c) - hfsq + f + dk * LN2_HI
    result = x if x == 0.0 else result  # -0.0 stays -0.0
    result = np.inf if x == np.inf else result
    result = -np.inf if x == -1.0 else result
    result = np.nan if x < -1.0 else result
    return (x if math.isnan(x) else result), inverse


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def log1p_value(x):
    """log1p(x) for one double (module docstring): branch-free, so a loop of it vectorises."""
    return log1p_and_reciprocal(x)[0]


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def exp_into(x, out):
    """out[i] = exp(x[i]); out may be x."""
    for i in range(x.shape[0]):
        out[i] = exp_value(x[i])


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def log1p_into(x, out):
    """out[i] = log1p(x[i]); out may be x."""
    for i in range(x.shape[0]):
        out[i] = log1p_value(x[i])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def exp(x):
    """exp over a 1-d float64 array (a new array)."""
    out = np.empty(x.shape[0])
    exp_into(x, out)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def log1p(x):
    """log1p over a 1-d float64 array (a new array)."""
    out = np.empty(x.shape[0])
    log1p_into(x, out)
    return out


# Sums whose additions may be reassociated and contracted (nothing else of fastmath): a left-to-right
# sum waits on each addition (latency-bound, scalar); reassociated, LLVM keeps vector partial sums.
# The result differs from the left-to-right sum by rounding only (engine.loo's _sum is the same idea).
SUMS = {"reassoc", "contract"}


@numba.njit(cache=True, nogil=True, fastmath=SUMS, error_model="numpy")
def dot_reassoc(x, w):
    """sum_i x[i] w[i] of two 1-d arrays of one length, reassociated (vector partial sums, FMAs)."""
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i] * w[i]
    return total
