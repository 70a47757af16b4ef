"""Exact Pólya-Gamma draws PG(b, z) for integer b, in Numba.

The Pólya-Gamma distribution (Polson, Scott & Windle 2013, "Bayesian inference for logistic models
using Pólya-Gamma latent variables", JASA 108(504), 1339-1349) is

    PG(b, z) = (1 / (2 pi^2)) sum_{k >= 1} g_k / ((k - 1/2)^2 + z^2 / (4 pi^2)),   g_k ~ Gamma(b, 1),

with mean b / (2 z) tanh(z / 2) (b / 4 at z = 0). It is what makes the logistic likelihood
conditionally Gaussian: given omega_i ~ PG(n_i, eta_i) the binomial-logit likelihood of eta_i is
exp(kappa_i eta_i - omega_i eta_i^2 / 2), kappa_i = y_i - n_i / 2 (their Theorem 1).

Algorithm. PG(1, z) is drawn by Devroye's alternating-series method as Polson et al. give it in
their appendix (Algorithm 1) and Windle (2013, PhD thesis, University of Texas at Austin, ch. 2):
PG(1, z) = J*(1, c) / 4 with c = |z| / 2, and J*(1, c) is drawn by rejection from a proposal that
is an inverse Gaussian IG(1/c, 1) truncated to (0, t] glued to an exponential with rate
K = pi^2 / 8 + c^2 / 2 on (t, inf), t = 0.64; the acceptance test evaluates the density's
alternating series a_0 - a_1 + a_2 - ... only as far as needed to decide (partial sums bracket the
density alternately), so the draw is exact with an expected ~1.001 proposals per draw for every
z. Each accept/reject decision compares a uniform with a probability; cheap exact bounds on that
probability decide almost every comparison and the probability itself is evaluated only when the
uniform falls between them (see "the fast path" below), so the draws are those of evaluating every
probability exactly, bit for bit, at about half the cost. PG(b, z) for integer b >= 1 is the sum
of b independent PG(1, z) draws (exact, by the convolution property of the definition above);
PG(0, z) is 0. The cost is O(b) per draw: exact
methods faster for large b (Windle et al. 2014's "alternate" J*(h) sampler for real h) are not
implemented here; the normal and saddle-point approximations are deliberately not used.

Kernels take a ``numpy.random.Generator`` (Numba supports it in nopython mode), so a chain's
Pólya-Gamma draws come from the chain's own stream. ``random_polyagamma`` is the Python front end.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.errors import EngineInputError

_T = 0.64  # truncation point of Devroye's proposal (Polson et al. 2013, appendix)
_PI = math.pi
_LOG_2PI = math.log(2.0 * math.pi)


@numba.njit(cache=True, nogil=True)
def _log_normal_cdf(x):
    """log Phi(x), accurate in the far left tail (asymptotic series below -20)."""
    if x > -20.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    # Phi(x) = phi(x) / |x| * (1 - 1/x^2 + 3/x^4 - 15/x^6 + ...) for x -> -inf
    x2 = x * x
    series = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2)
    return -0.5 * x2 - math.log(-x) - 0.5 * _LOG_2PI + math.log(series)


@numba.njit(cache=True, nogil=True)
def _series_term(n, x, base):
    """a_n(x), the n-th coefficient of J*(1, 0)'s density sum_n (-1)^n a_n(x) (Devroye 2009), piecewise at t:
    x <= t: pi (n + 1/2) (2 / (pi x))^{3/2} exp(-2 (n + 1/2)^2 / x); x > t: pi (n + 1/2) exp(-(n + 1/2)^2 pi^2 x / 2).
    ``base`` = (2 / (pi x))^{3/2} when x <= t (computed once per proposal), unused above t."""
    h = n + 0.5
    if x > _T:
        return _PI * h * math.exp(-0.5 * h * h * _PI * _PI * x)
    return _PI * h * base * math.exp(-2.0 * h * h / x)


@numba.njit(cache=True, nogil=True)
def _exponential_part_probability(c, k):
    """P(proposal from the exponential tail) = p / (p + q) with p = (pi / (2 K)) exp(-K t) and
    q = 2 exp(-c) F_IG(t; 1/c, 1), the masses of the two proposal pieces; computed through logs
    (F_IG(t; mu, 1) = Phi((t/mu - 1)/sqrt t) + exp(2/mu) Phi(-(t/mu + 1)/sqrt t))."""
    root = 1.0 / math.sqrt(_T)
    b = root * (_T * c - 1.0)
    a = -root * (_T * c + 1.0)
    if c < 30.0:
        # direct: no overflow below c = 30 (exp(K t + c) < 1e130); Phi through erfc
        phi_b = 0.5 * math.erfc(-b / math.sqrt(2.0))
        phi_a = 0.5 * math.erfc(-a / math.sqrt(2.0))
        q_over_p = 4.0 / _PI * k * math.exp(k * _T) * (math.exp(-c) * phi_b + math.exp(c) * phi_a)
        return 1.0 / (1.0 + q_over_p)
    log_base = math.log(k) + k * _T
    # q / p = (4 / pi) (exp(log_base - c + log Phi(b)) + exp(log_base + c + log Phi(a)))
    q_over_p = 4.0 / _PI * (math.exp(log_base - c + _log_normal_cdf(b)) + math.exp(log_base + c + _log_normal_cdf(a)))
    return 1.0 / (1.0 + q_over_p)


# ------------------------------------------------------------------ the fast path, draws unchanged
# Every decision of the sampler is a comparison of a uniform draw with a probability: the mixing
# probability p(c), the truncated-Lévy acceptance exp(-c^2 x / 2) and the first partial sum of the
# alternating series. The fast path decides each comparison from cheap bounds on that probability and
# evaluates it exactly (the expressions above, unchanged) only when the uniform falls between the
# bounds, so it consumes the same random numbers and returns the same x, bit for bit, as evaluating
# every probability exactly. The bounds:
#
# - p(c) is strictly decreasing in c: with M(c) = exp(-c) F_IG(t; 1/c, 1) = int_0^t (2 pi x^3)^(-1/2)
#   exp(-1/(2x) - c^2 x / 2) dx, q/p = (8/pi) K exp(K t) M(c) has d log(q/p) / dc = c/K + c t -
#   c E[x] > 0 (E under the tilted density on (0, t], so E[x] <= t). Hence p(c_{j+1}) <= p(c) <= p(c_j)
#   on a grid c_j = j / 128 (tabulated from the same formula when the kernels compile, not at import),
#   widened by _GUARD for rounding (the exact formula's error is ~1e-14 relative at c <= 16); the
#   exact p is needed only when the uniform falls in that bracket (< 0.19% of proposals), and once per (b, z).
# - exp(-w), w >= 0, lies between the Taylor partial sums 1 - w + w^2/2 - w^3/6 and 1 - w + w^2/2.
# - The first partial sum accepts when U a_0 <= a_0 - a_1, i.e. U <= 1 - a_1/a_0 with a_1/a_0 =
#   3 exp(-4/x) (x <= t) or 3 exp(-pi^2 x) (x > t), at most 3 exp(-4/t) = 0.0058 (at x = t): every
#   U below 1 - 0.0058 accepts without evaluating a term; otherwise the series runs exactly.

_MIX_STEPS_PER_UNIT = 128.0  # grid spacing 1/128 in c (an exact binary fraction: j = floor(128 c) exactly)
_MIX_C_MAX = 16.0
_GUARD = 1e-10  # relative widening of every bound: far above the ~1e-14 rounding of the exact expressions
_ACCEPT_FIRST = 1.0 - 3.0 * math.exp(-4.0 / _T) - 1e-9  # U below this: the first partial sum accepts


def _mixing_table() -> np.ndarray:
    """p(c_j) at c_j = j / 128, j = 0..2048 (c in [0, 16]), from _exponential_part_probability's formula."""
    steps = int(_MIX_C_MAX * _MIX_STEPS_PER_UNIT)
    exact = _exponential_part_probability.py_func
    return np.array([exact(j / _MIX_STEPS_PER_UNIT, _PI * _PI / 8.0 + 0.5 * (j / _MIX_STEPS_PER_UNIT) ** 2)
                     for j in range(steps + 1)])


def _mix_table():
    """The mixing table inside a kernel (``_mixing_table``'s array as a compile-time constant)."""
    raise NotImplementedError("_mix_table is called from Numba kernels only")


@overload(_mix_table)
def _mix_table_constant():
    # Runs when a kernel that reads the table compiles (never at import, never on a warm cache):
    # the array is frozen into the compiled code as a constant, as a module-level global would be.
    table = _mixing_table()

    def impl():
        return table
    return impl


@numba.njit(cache=True, nogil=True)
def _mixing_bounds(c):
    """(lo, hi) with lo <= p(c) <= hi for the exactly computed p (module comment above); lo = 0 beyond c = 16."""
    table = _mix_table()
    if c < _MIX_C_MAX:
        j = int(c * _MIX_STEPS_PER_UNIT)
        return table[j + 1] * (1.0 - _GUARD), table[j] * (1.0 + _GUARD)
    return 0.0, table[table.shape[0] - 1] * (1.0 + _GUARD)  # also NaN c: every comparison falls to the exact p


@numba.njit(cache=True, nogil=True)
def _levy_accepts(uniform, c, x):
    """uniform <= exp(-c^2 x / 2), decided from the Taylor bounds of exp, exactly only between them."""
    w = 0.5 * c * c * x
    upper = 1.0 - w + 0.5 * w * w
    if uniform <= upper - w * w * w / 6.0 - _GUARD:
        return True
    if uniform > upper + _GUARD:
        return False
    return uniform <= math.exp(-0.5 * c * c * x)


@numba.njit(cache=True, nogil=True, inline="always")
def _truncated_inverse_gaussian(rng, c):
    """IG(mu = 1/c, shape 1) truncated to (0, t] (Polson et al. 2013, appendix).

    mu > t (c < 1/t, including c = 0): propose X = t / (1 + t E)^2 from the c = 0 case (a truncated
    Lévy law, via two exponentials), accept with probability exp(-c^2 X / 2). mu <= t: draw the
    untruncated IG by Michael, Schucany & Haas (1976) and repeat until X <= t.
    """
    if c * _T < 1.0:
        while True:
            e1 = rng.standard_exponential()
            e2 = rng.standard_exponential()
            while e1 * e1 > 2.0 * e2 / _T:
                e1 = rng.standard_exponential()
                e2 = rng.standard_exponential()
            x = _T / ((1.0 + _T * e1) * (1.0 + _T * e1))
            if _levy_accepts(rng.random(), c, x):
                return x
    mu = 1.0 / c
    while True:
        y = rng.standard_normal()
        y = y * y
        x = mu + 0.5 * mu * mu * y - 0.5 * mu * math.sqrt(4.0 * mu * y + (mu * y) * (mu * y))
        if rng.random() > mu / (mu + x):
            x = mu * mu / x
        if x <= _T:
            return x


@numba.njit(cache=True, nogil=True)
def _series_accepts(x, uniform):
    """The alternating-series test of a proposal x with u = uniform * a_0(x): partial sums bracket the
    density alternately, so the first one on the deciding side of u decides (Devroye 2009)."""
    ratio = 2.0 / (_PI * x)
    base = ratio * math.sqrt(ratio)  # (2 / (pi x))^{3/2} without a pow
    s = _series_term(np.int64(0), x, base)  # np.int64: a literal 0 would compile a second specialisation
    u = uniform * s
    n = 0
    while True:
        n += 1
        if n % 2 == 1:
            s -= _series_term(n, x, base)
            if u <= s:
                return True
        else:
            s += _series_term(n, x, base)
            if u > s:
                return False


@numba.njit(cache=True, nogil=True, inline="always")
def _draw_jstar(rng, c, k, p_exponential, lo, hi):
    """One exact draw of J*(1, c) = 4 PG(1, 2c), given K = pi^2/8 + c^2/2 and bounds lo <= p <= hi on
    the proposal's mixing probability p (_mixing_bounds); p itself is computed only if a uniform falls
    between them, and passed in/out as ``p_exponential`` (< 0: not computed yet). Returns (x, p)."""
    while True:
        v = rng.random()
        if v < lo:
            exponential = True
        elif v >= hi:
            exponential = False
        else:
            if p_exponential < 0.0:
                p_exponential = _exponential_part_probability(c, k)
            exponential = v < p_exponential
        if exponential:
            x = _T + rng.standard_exponential() / k
        else:
            x = _truncated_inverse_gaussian(rng, c)
        uniform = rng.random()
        if uniform < _ACCEPT_FIRST or _series_accepts(x, uniform):
            return x, p_exponential


@numba.njit(cache=True, nogil=True, inline="always")
def draw_pg1(rng, z):
    """One exact draw of PG(1, z) (Devroye's alternating-series rejection; see the module docstring)."""
    c = 0.5 * abs(z)
    k = _PI * _PI / 8.0 + 0.5 * c * c
    lo, hi = _mixing_bounds(c)
    x, _ = _draw_jstar(rng, c, k, -1.0, lo, hi)
    return 0.25 * x


@numba.njit(cache=True, nogil=True, inline="always")
def draw_pg(rng, b, z):
    """One exact draw of PG(b, z) for integer b >= 0: the sum of b independent PG(1, z) draws (the
    proposal's constants, which depend on z only, computed once)."""
    if b <= 0:
        return 0.0
    c = 0.5 * abs(z)
    k = _PI * _PI / 8.0 + 0.5 * c * c
    lo, hi = _mixing_bounds(c)
    p_exponential = -1.0
    total = 0.0
    for _ in range(b):
        x, p_exponential = _draw_jstar(rng, c, k, p_exponential, lo, hi)
        total += x
    return 0.25 * total


@numba.njit(cache=True, nogil=True)
def fill_pg(rng, b, z, out):
    """out[i] ~ PG(b[i], z[i]) independently; b: (n,) int64 >= 0, z: (n,) float64, out: (n,) float64."""
    for i in range(out.shape[0]):
        out[i] = draw_pg(rng, b[i], z[i])


def random_polyagamma(b=1, z=0.0, size=None, rng=None) -> np.ndarray:
    """Exact PG(b, z) draws (numpy broadcasting of ``b`` and ``z``; ``size`` as numpy's).

    ``b``: whole numbers >= 0; ``z``: finite reals; ``rng``: a numpy Generator, a seed or None.
    Returns a float64 array (a 0-d array for scalar input without ``size``).
    """
    b_array = np.asarray(b)
    z_array = np.asarray(z, dtype=np.float64)
    if b_array.dtype == bool or not np.all(np.isfinite(b_array.astype(float))) \
            or np.any(b_array.astype(float) != np.round(b_array.astype(float))) or np.any(b_array < 0):
        raise EngineInputError("random_polyagamma: b must hold whole numbers >= 0 (exact draws for integer b only)")
    if not np.all(np.isfinite(z_array)):
        raise EngineInputError("random_polyagamma: z must be finite")
    shape = np.broadcast_shapes(b_array.shape, z_array.shape) if size is None else tuple(np.atleast_1d(size))
    b_flat = np.ascontiguousarray(np.broadcast_to(b_array, shape).astype(np.int64).reshape(-1))
    z_flat = np.ascontiguousarray(np.broadcast_to(z_array, shape).reshape(-1))
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = np.empty(b_flat.shape[0])
    fill_pg(generator, b_flat, z_flat, out)
    return out.reshape(shape)


# ------------------------------------------------------------------------- exact moments and CDF


def pg_mean(b, z):
    """E PG(b, z) = b / (2 z) tanh(z / 2), with its limit b / 4 at z = 0 (Taylor for |z| < 1e-4)."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    small = z < 1e-4
    safe = np.where(small, 1.0, z)
    return np.asarray(b, dtype=np.float64) * np.where(small, 0.25 - z * z / 48.0, np.tanh(safe / 2.0) / (2.0 * safe))


def pg_variance(b, z):
    """Var PG(b, z) = b (sinh z - z) / (4 z^3 cosh^2(z/2)), limit b / 24 at z = 0 (Taylor for |z| < 1e-3)."""
    z = np.abs(np.asarray(z, dtype=np.float64))
    small = z < 1e-3
    safe = np.where(small, 1.0, z)
    exact = (np.sinh(safe) - safe) / (4.0 * safe**3 * np.cosh(safe / 2.0) ** 2)
    # Taylor of the same function: 1/24 - z^2/240 + O(z^4)
    return np.asarray(b, dtype=np.float64) * np.where(small, 1.0 / 24.0 - z * z / 240.0, exact)


def pg1_cdf(x, z, terms: int = 200) -> np.ndarray:
    """The exact CDF of PG(1, z) from its two series (used to test the sampler).

    The density is cosh(z/2) sum_n (-1)^n (2n + 1) / sqrt(2 pi x^3) exp(-(2n + 1)^2 / (8 x) - z^2 x / 2)
    (Polson et al. 2013, eq. for PG(b, z) with b = 1). Integrating term by term, each term is a tilted
    Lévy density: with h = n + 1/2, its integral is 2 exp(-h |z|) F_IG(x; h / |z|, h^2) (twice the Lévy
    CDF, 4 Phi(-h / sqrt x), when z = 0). For large x the sum of exponentials converges faster:
    F(x) = 1 - cosh(z/2) sum_n (-1)^n 4 pi h exp(-lambda_n x) / lambda_n, lambda_n = 2 pi^2 h^2 + z^2 / 2.
    The first series is used for x <= 0.25, the second above.
    """
    from scipy.special import log_ndtr

    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    z = abs(float(z))
    out = np.zeros_like(x)
    h = np.arange(terms) + 0.5
    sign = np.where(np.arange(terms) % 2 == 0, 1.0, -1.0)
    log_cosh = z / 2.0 + np.log1p(np.exp(-z)) - np.log(2.0)
    small = (x > 0.0) & (x <= 0.25)
    large = x > 0.25
    if np.any(small):
        root = np.sqrt(x[small])[:, None]
        if z == 0.0:
            log_terms = np.log(4.0) + log_ndtr(-h / root) + log_cosh
        else:
            # F_IG(x; mu, lam) = Phi(sqrt(lam/x)(x/mu - 1)) + exp(2 lam / mu) Phi(-sqrt(lam/x)(x/mu + 1)), lam = h^2, mu = h/z
            xs = x[small][:, None]
            log_ig = np.logaddexp(log_ndtr((z * xs - h) / root), 2.0 * h * z + log_ndtr(-(z * xs + h) / root))
            log_terms = np.log(2.0) - h * z + log_ig + log_cosh
        out[small] = np.sum(sign * np.exp(log_terms), axis=1)
    if np.any(large):
        lam = 2.0 * _PI**2 * h * h + z * z / 2.0
        log_terms = np.log(4.0 * _PI * h) - lam * x[large][:, None] - np.log(lam) + log_cosh
        out[large] = 1.0 - np.sum(sign * np.exp(log_terms), axis=1)
    return np.clip(out, 0.0, 1.0)
