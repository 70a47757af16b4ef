"""PSIS-LOO, WAIC and model comparison exactly as R's ``loo`` 2.5.1 computes them.

Sources: Vehtari, Gelman & Gabry (2017), "Practical Bayesian model evaluation using leave-one-out
cross-validation and WAIC", Statistics and Computing 27, 1413-1432 (sections 2.1-2.3, 4);
Vehtari, Simpson, Gelman, Yao & Gabry (2024), "Pareto smoothed importance sampling", JMLR 25(72)
(section 3: tail length, Pareto k diagnostics); Zhang & Stephens (2009), "A new and efficient
estimation method for the generalized Pareto distribution", Technometrics 51, section 4 (the
profile-likelihood grid estimator of the shape). The details follow loo 2.5.1's R code
(``R/psis.R``, ``R/gpdfit.R``, ``R/effective_sample_sizes.R``, ``R/loo.R``, ``R/loo_compare.R``,
``R/waic.R``), quirks included:

- relative efficiency ``r_eff`` of observation i: ``loo::relative_eff(exp(log_lik))``, the ESS of
  the likelihood draws by loo's own ``ess_rfun`` (Stan 2.18's ESS: no rank normalisation, no
  chain splitting; "biased" autocovariances as loo's FFT gives them, i.e. scaled by M/n where M is
  the next 2-3-5-smooth size >= n; Geyer's initial positive then monotone sequence; the positive
  even term of the stopping pair added; tau floored at 1/log10(S)), divided by S. The ESS is
  invariant to rescaling the draws, so ``exp(log_lik - max)`` is used (no overflow).
- tail length ``ceil(min(0.2 S, 3 sqrt(S / r_eff)))``; fewer than 5 tail draws: no smoothing and
  k = Inf (warning naming the observations);
- generalized Pareto fit to the tail exceedances ``exp(lw) - exp(cutoff)`` by Zhang & Stephens'
  grid (``M = 30 + floor(sqrt(n))`` points, prior 3), then loo's weakly informative adjustment
  ``k n / (n + 10) + 5 / (n + 10)``; the tail log weights are replaced by the GPD quantiles at
  ``(j - 1/2) / n`` plus the cutoff, and every log weight is truncated at the largest raw log
  weight (loo 2.5.1 truncates at the raw maximum; the S^(3/4) truncation belongs to TIS, not PSIS);
- pointwise ``elpd_loo = logsumexp(ll + lw_normalised)``, ``p_loo = lpd - elpd_loo``,
  ``looic = -2 elpd_loo``; estimates are column sums with ``SE = sqrt(N var)``; the Monte Carlo SE
  of each ``elpd_loo`` by loo's normal approximation with 1000 Blom scores, divided by r_eff;
  PSIS n_eff ``r_eff / sum(w^2)``;
- Pareto k thresholds of loo 2.5.1: k > 0.7 "too high", 0.5 < k <= 0.7 "slightly high" (a warning
  each, loo's text), the diagnostic table with loo's cut points (-Inf, 0.5], (0.5, 0.7], (0.7, 1],
  (1, Inf).

Shapes: a log-likelihood array is ``(chains, draws, observations)``; a 2-D ``(draws,
observations)`` matrix needs ``chain_id`` (as ``relative_eff``) or an explicit ``r_eff``.

The work is one Numba kernel (parallel over blocks of observations, each block copied into a
contiguous buffer once): r_eff, the tail (a threshold from a sample of the draws, then a bucket
sort of the draws above it only; loo sorts all S), the GPD fit (one renormalised running product
per grid point: a logarithm per candidate, not per candidate and tail draw), smoothing and the
pointwise sums, with a vectorisable exp on the usual path and the MCSE's 1000 logarithms replaced
by a series. Loops that should vectorise index arrays by their loop counter only (see
``_dot_lags``). ``tests/reference_loo.py`` is a slow line-by-line NumPy
transcription of loo's R code that the kernel is tested against, besides R's own output.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numba
import numpy as np
import pandas as pd
from scipy.special import ndtri

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._linalg import mean_and_sum_sq
from engine._vecmath import LN2_HI, LN2_LO, exp_value
from engine.errors import DataError, EngineInputError, ImportanceSamplingWarning, warn_user
from engine.validate import as_array, checked_arguments

__all__ = ["loo", "waic", "loo_compare", "loo_multiple", "relative_eff", "LooResult", "WaicResult", "LooMultipleResult", "K_HELP"]

K_HELP = "See help('pareto-k-diagnostic') for details."
K_GOOD, K_OK, K_BAD = 0.5, 0.7, 1.0  # loo 2.5.1: (-Inf, 0.5] good, (0.5, 0.7] ok, (0.7, 1] bad, >1 very bad
MCSE_SAMPLES = 1000  # loo's mcse_elpd(n_samples = 1000)
MIN_TAIL = 5  # loo's enough_tail_samples(min_len = 5)
MAX_DIRECT_LAG = 64  # autocovariance lags computed directly; a column needing more goes to the FFT path


# ----------------------------------------------------------------------------- kernels


class LooOutputs(NamedTuple):
    """Per-observation outputs of the PSIS-LOO kernel, each of shape (observations,)."""

    elpd_loo: np.ndarray
    mcse_elpd_loo: np.ndarray
    p_loo: np.ndarray
    pareto_k: np.ndarray
    n_eff: np.ndarray
    r_eff: np.ndarray
    tail_len: np.ndarray  # int64
    status: np.ndarray  # int64: 0 ok, 1 r_eff needs > MAX_DIRECT_LAG lags, 2 tail too short, 3 flat tail


def _outputs(n: int) -> LooOutputs:
    return LooOutputs(*(np.empty(n) for _ in range(6)), np.zeros(n, np.int64), np.zeros(n, np.int64))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fft_good_size(n):
    """loo's fft_next_good_size: the smallest 2-3-5-smooth integer >= n (2 for n <= 2)."""
    if n <= 2:
        return 2
    while True:
        m = n
        while m % 2 == 0:
            m //= 2
        while m % 3 == 0:
            m //= 3
        while m % 5 == 0:
            m //= 5
        if m <= 1:
            return n
        n += 1


# Sums over a column's draws: without reassociation each addition waits for the one before
# (latency-bound, not vectorised); allowing it (and nothing else of fastmath) lets LLVM use vector
# partial sums. The result differs from the left-to-right sum by rounding only.
SUMS = {"reassoc"}


@numba.njit(cache=True, nogil=True, fastmath=SUMS, error_model="numpy")
def _sum(x):
    total = 0.0
    for v in x:
        total += v
    return total


@numba.njit(cache=True, nogil=True, fastmath=SUMS, error_model="numpy")
def _dot_lags(row, lag, m):
    """sum_{t < m} row[t] row[t + lag] and sum_{t < m} row[t] row[t + lag + 1].

    Through views indexed by the loop counter alone: an index t + lag could be negative as far as
    Numba knows, so it would wrap it around, and that select keeps the loop from vectorising (5x)."""
    r0 = row[:m]
    r1 = row[lag : lag + m]
    r2 = row[lag + 1 : lag + 1 + m]
    even = 0.0
    odd = 0.0
    for t in range(m):
        a = r0[t]
        even += a * r1[t]
        odd += a * r2[t]
    return even, odd


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _mean_lag_pair(x, lag, scale):
    """Means over chains of loo's autocovariances at ``lag`` and ``lag + 1`` (x: chains x n,
    already centred per chain), including loo's FFT scale M/n; both lags from one pass."""
    n_chains, n = x.shape
    even = 0.0
    odd = 0.0
    for c in range(n_chains):
        row = x[c]
        m = n - lag - 1  # terms both lags have; the even lag has one more
        e0, o0 = _dot_lags(row, lag, m)
        e0 += row[m] * row[m + lag]
        even += e0 / n * scale
        odd += o0 / n * scale
    return even / n_chains, odd / n_chains


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _ess_rfun(x, rho):
    """loo 2.5.1's ess_rfun for one quantity (x: chains x n draws; centred in place). ``rho`` is
    a work vector of length n. Returns (ess, ok); ok is False when more than MAX_DIRECT_LAG lags
    would be needed (the caller then uses the FFT path)."""
    n_chains, n = x.shape
    scale = _fft_good_size(n) / n
    means = np.empty(n_chains)
    for c in range(n_chains):
        means[c] = _sum(x[c]) / n
        for t in range(n):
            x[c, t] -= means[c]
    if n < 2:
        return np.nan, True
    acov0, acov1 = _mean_lag_pair(x, np.int64(0), scale)  # np.int64: a literal 0 would compile a second specialisation
    mean_var = acov0 * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if n_chains > 1:
        v = mean_and_sum_sq(means)[1]  # between-chain variance of the chain means: v / (m - 1)
        var_plus += v / (n_chains - 1)
    for t in range(n):
        rho[t] = 0.0
    rho_even = 1.0
    rho[0] = rho_even
    rho_odd = 1.0 - (mean_var - acov1) / var_plus
    rho[1] = rho_odd
    t = 0
    while t < n - 5 and not np.isnan(rho_even + rho_odd) and rho_even + rho_odd > 0:
        t += 2
        if t + 1 > MAX_DIRECT_LAG:
            return np.nan, False
        acov_e, acov_o = _mean_lag_pair(x, t, scale)
        rho_even = 1.0 - (mean_var - acov_e) / var_plus
        rho_odd = 1.0 - (mean_var - acov_o) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t] = rho_even
            rho[t + 1] = rho_odd
    max_t = t
    if rho_even > 0:
        rho[max_t] = rho_even
    return _ess_from_rho(rho, max_t, n_chains * n), True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _ess_from_rho(rho, max_t, total):
    """The end of ess_rfun: Geyer's monotone sequence, the "improved" tau and its floor."""
    t = 0
    while t <= max_t - 4:
        t += 2
        if rho[t] + rho[t + 1] > rho[t - 2] + rho[t - 1]:
            rho[t] = (rho[t - 2] + rho[t - 1]) / 2
            rho[t + 1] = rho[t]
    if max_t == 0:
        s = rho[0]  # R's rho_hat_t[1:0] is rho_hat_t[1]
    else:
        s = 0.0
        for i in range(max_t):
            s += rho[i]
    tau = -1.0 + 2.0 * s + rho[max_t]
    floor = 1.0 / math.log10(total)
    if tau < floor:  # R's max(tau_hat, 1/log10(ess)); a NaN tau stays NaN, as max() keeps it
        tau = floor
    return total / tau


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _logsumexp(x):
    m = -np.inf
    for v in x:
        if v > m:
            m = v
    if not np.isfinite(m):
        return m
    s = 0.0
    for v in x:
        s += math.exp(v - m)
    return m + math.log(s)


GRID_GROUP = 8  # factors 1 - theta x multiplied together before a renormalisation (see _grid_mean_logs)
EXPONENT_BITS = 0x7FF0000000000000  # a double's exponent field
ONE_BITS = 0x3FF0000000000000  # the exponent field of 1.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _grid_mean_logs(x, theta, out, grouped):
    """out[j] = mean_i log(1 - theta[j] x_i) for ascending x >= 0 with every 1 - theta[j] x_i > 0.

    The grid's m x n logarithms dominated loo's time. With ``grouped`` each candidate's factors are
    multiplied together instead, the running product brought back to [1, 2) after every
    GRID_GROUP factors by moving its binary exponent into an integer count (exact: a power of two),
    so one logarithm per candidate remains: log(product) + count ln 2. The loops over candidates
    are innermost and branch-free, so they vectorise. The caller sets ``grouped`` only when every
    factor lies in [1e-30, 1e30], so GRID_GROUP of them cannot overflow or underflow; the result
    differs from the sum of logarithms by rounding alone (n products' rounding, ~n ulp of the
    product, i.e. ~n 1e-16 absolute on the sum). Otherwise one log(1 - theta x) per term (not
    log1p: 1 - theta x > 0 always, theta < 1 / max x, and the absolute error, ~1e-16 per term,
    moves k by ~1e-13 at most)."""
    n = x.shape[0]
    m = theta.shape[0]
    if not grouped:
        for j in range(m):
            a = -theta[j]
            total = 0.0
            for i in range(n):
                total += math.log(1.0 + a * x[i])
            out[j] = total / n
        return
    prod = np.ones(m)
    bits = prod.view(np.int64)
    count = np.zeros(m, np.int64)
    i = 0
    while i < n:
        if i + GRID_GROUP <= n:  # GRID_GROUP = 8 factors per candidate, kept in registers
            x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
            x4, x5, x6, x7 = x[i + 4], x[i + 5], x[i + 6], x[i + 7]
            for j in range(m):
                t = theta[j]
                p = prod[j] * (1.0 - t * x0)
                p *= 1.0 - t * x1
                p *= 1.0 - t * x2
                p *= 1.0 - t * x3
                p *= 1.0 - t * x4
                p *= 1.0 - t * x5
                p *= 1.0 - t * x6
                p *= 1.0 - t * x7
                prod[j] = p
            i += GRID_GROUP
        else:
            for r in range(i, n):
                xr = x[r]
                for j in range(m):
                    prod[j] *= 1.0 - theta[j] * xr
            i = n
        for j in range(m):  # prod[j] = 2^e f with f in [1, 2): keep f, count e
            b = bits[j]
            count[j] += ((b & EXPONENT_BITS) >> 52) - 1023
            bits[j] = (b & ~EXPONENT_BITS) | ONE_BITS
    for j in range(m):
        c = float(count[j])  # c ln 2 in two parts (LN2_HI c is exact for |c| < 2^20)
        out[j] = ((math.log(prod[j]) + c * LN2_LO) + c * LN2_HI) / n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gpdfit(x):
    """loo's gpdfit(x, wip = TRUE, min_grid_pts = 30, sort_x = FALSE) for ascending x:
    Zhang & Stephens (2009) section 4 with prior 3; returns (k adjusted, sigma)."""
    n = x.shape[0]
    m = 30 + int(math.floor(math.sqrt(n)))
    xstar = x[int(math.floor(n / 4 + 0.5)) - 1]
    theta = np.empty(m)
    ltheta = np.empty(m)
    for j in range(m):
        theta[j] = 1.0 / x[n - 1] + (1.0 - math.sqrt(m / (j + 1 - 0.5))) / 3.0 / xstar
    # every factor 1 - theta x lies between the values at x = 0 (1) and x = max x; a group of
    # GRID_GROUP of them stays far from overflow/underflow when those bounds are moderate
    lo = 1.0
    hi = 1.0
    for j in range(m):
        f = 1.0 - theta[j] * x[n - 1]
        if f < lo:
            lo = f
        if f > hi:
            hi = f
    grouped = x[0] >= 0.0 and lo > 1e-30 and hi < 1e30
    mean_log = np.empty(m)
    _grid_mean_logs(x, theta, mean_log, grouped)
    for j in range(m):
        k = mean_log[j]
        ltheta[j] = n * (math.log(-theta[j] / k) - k - 1.0)
    lse = _logsumexp(ltheta)
    theta_hat = 0.0
    for j in range(m):
        theta_hat += theta[j] * math.exp(ltheta[j] - lse)
    if grouped and np.isfinite(theta_hat):
        # theta_hat is a weighted mean of the grid, so its factors lie in the grid's bounds too
        one = np.empty(1)
        one[0] = theta_hat
        _grid_mean_logs(x, one, one, bool(True))  # bool(): a literal would compile a second specialisation
        k = one[0]
    else:
        k = 0.0
        for i in range(n):
            k += math.log1p(-theta_hat * x[i])
        k /= n
    sigma = -k / theta_hat
    k = k * n / (n + 10.0) + 10.0 * 0.5 / (n + 10.0)
    if np.isnan(k):
        k = np.inf
    return k, sigma


SAMPLE = 256  # draws sampled to place a threshold just below the tail (see _select_tail)
SIGN_BIT = -0x8000000000000000  # int64 with only the sign bit set


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sortable_keys(v, keys):
    """keys[i]: an int64 whose bytes, read as an unsigned number, order as the finite doubles v[i]
    (negative: every bit flipped; positive: the sign bit flipped; -0.0 becomes +0.0 first, as
    comparisons make them equal). ``keys`` may be ``v.view(np.int64)`` (in place)."""
    bits = v.view(np.int64)
    for i in range(v.shape[0]):
        v[i] = v[i] + 0.0
    for i in range(v.shape[0]):
        b = bits[i]
        keys[i] = b ^ ((b >> 63) | SIGN_BIT)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _radix_sort(keys, idx, kbuf, ibuf):
    """Stable LSD radix sort (bytes, least significant first) of the unsigned int64 ``keys`` with
    ``idx`` carried along; bytes equal in every key are skipped. Returns (keys, idx) sorted: the
    inputs or the work arrays kbuf, ibuf (same length), whichever the last pass wrote.

    Sorting the ~2 x tail_len tail candidates was the kernel's largest cost with NumPy's sorts
    (a selection, then a merge sort: comparisons whose branches the data decide); this has no
    data-dependent branches, about 8 passes of 2n + 256 simple operations."""
    n = keys.shape[0]
    if n < 2:
        return keys, idx
    k0 = keys[0]
    diff = np.int64(0)
    for i in range(n):
        diff |= keys[i] ^ k0
    counts = np.empty(256, np.int64)
    src_k, src_i, dst_k, dst_i = keys, idx, kbuf, ibuf
    for d in range(8):
        shift = 8 * d
        if (diff >> shift) & 0xFF == 0:
            continue
        counts[:] = 0
        for i in range(n):
            counts[(src_k[i] >> shift) & 0xFF] += 1
        total = 0
        for b in range(256):
            c = counts[b]
            counts[b] = total
            total += c
        for i in range(n):
            key = src_k[i]
            b = (key >> shift) & 0xFF
            p = counts[b]
            counts[b] = p + 1
            dst_k[p] = key
            dst_i[p] = src_i[i]
        src_k, src_i, dst_k, dst_i = dst_k, dst_i, src_k, src_i
    return src_k, src_i


BUCKET_WORK = 8  # insertion-sort moves per value the bucket pass may leave before radix is used instead


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sort_pairs(v, idx):
    """Stable ascending sort of the finite doubles v with idx carried along; returns new arrays
    (v sorted, idx in the same order). Equal values keep their input order, as R's sort.

    A counting pass into n buckets linear in the value (monotone: rounding of v - lo and of the
    product never reverses an order, so only values inside one bucket can be out of order), then
    an insertion sort that moves values within their bucket only. On the tail candidates (a few
    hundred log weights, spread out) this is a few passes of simple work; NumPy's selection and
    merge sort were the kernel's largest cost. When the buckets are crowded (an insertion sort
    would do more than BUCKET_WORK moves per value) a stable radix sort of the bits is used."""
    n = v.shape[0]
    out_v = np.empty(n)
    out_i = np.empty(n, np.int64)
    if n < 2:
        out_v[:] = v
        out_i[:] = idx
        return out_v, out_i
    hi, lo = _max_min(v)
    span = hi - lo
    if span == 0.0:  # all equal: input order is the stable order
        out_v[:] = v
        out_i[:] = idx
        return out_v, out_i
    bucket = np.empty(n, np.int64)
    counts = np.zeros(n + 1, np.int64)
    crowded = not np.isfinite(span)
    if not crowded:
        scale = (n - 1) / span
        for i in range(n):
            bucket[i] = min(int((v[i] - lo) * scale), n - 1)
        for i in range(n):
            counts[bucket[i] + 1] += 1
        moves = 0
        for b in range(1, n + 1):
            c = counts[b]
            moves += c * (c - 1) // 2
            counts[b] += counts[b - 1]
        crowded = moves > BUCKET_WORK * n
    if crowded:
        keys = v.copy().view(np.int64)
        _sortable_keys(keys.view(np.float64), keys)
        _, order = _radix_sort(keys, np.arange(n), np.empty(n, np.int64), np.empty(n, np.int64))
        for j in range(n):
            out_v[j] = v[order[j]]
            out_i[j] = idx[order[j]]
        return out_v, out_i
    for i in range(n):  # stable scatter by bucket
        p = counts[bucket[i]]
        counts[bucket[i]] = p + 1
        out_v[p] = v[i]
        out_i[p] = idx[i]
    for i in range(1, n):  # insertion sort: strictly greater values move, so ties keep their order
        x = out_v[i]
        if out_v[i - 1] > x:
            k = out_i[i]
            j = i - 1
            while j >= 0 and out_v[j] > x:
                out_v[j + 1] = out_v[j]
                out_i[j + 1] = out_i[j]
                j -= 1
            out_v[j + 1] = x
            out_i[j + 1] = k
    return out_v, out_i


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _select_tail(lw, tail_len, vbuf, cand):
    """Indices of the ``tail_len`` largest lw in ascending order (ties: as R's stable sort, the
    later index ranks higher) and the cutoff, the largest value below the tail.

    loo sorts all S log weights; only the tail's order matters. A systematic sample of SAMPLE
    draws places a threshold that the tail_len + 1 largest values exceed with high probability
    (the sample's count above the true cutoff is about Binomial(SAMPLE, (tail_len + 1) / S); the
    threshold is that many plus 3 sd and 3 ranks down), one branch-free pass collects the draws at
    or above it (typically under twice the tail), in index order, and a stable radix sort of those
    alone gives the tail's order (equal values keep index order, as R's sort). When fewer than
    tail_len + 1 draws reach the threshold every draw is a candidate (the result is the same, only
    slower). vbuf (float) and cand (int64): work arrays of length S."""
    s = lw.shape[0]
    need = tail_len + 1
    n_cand = -1
    stride = s // SAMPLE
    if stride >= 2:
        mean = need / s * SAMPLE
        r = int(mean + 3.0 * math.sqrt(mean) + 3.0)
        if r < SAMPLE:
            smp = np.empty(SAMPLE)
            for j in range(SAMPLE):
                smp[j] = lw[j * stride]
            thr = _sort_pairs(smp, np.arange(SAMPLE))[0][SAMPLE - r]
            c = 0
            for i in range(s):
                cand[c] = i
                vbuf[c] = lw[i]
                c += lw[i] >= thr
            if c >= need:
                n_cand = c
    if n_cand < 0:
        for i in range(s):
            cand[i] = i
            vbuf[i] = lw[i]
        n_cand = s
    sv, si = _sort_pairs(vbuf[:n_cand], cand[:n_cand])
    return si[n_cand - tail_len :].copy(), sv[n_cand - tail_len - 1]


class McseScores(NamedTuple):
    """loo's mcse_elpd inputs: ``z`` the MCSE_SAMPLES Blom scores (ascending); ``series`` the
    coefficients c_p (p = 0..2 SERIES_TERMS) of var_r log(1 + u z_r) = sum_p c_p u^p (ddof 1)."""

    z: np.ndarray
    series: np.ndarray


SERIES_TERMS = 30  # log(1 + x) to x^30 in the MCSE series
SERIES_MAX = 0.25  # the series is used while u max|z| <= this (truncation below 0.25^31 / 31)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _mcse_var(u, zn):
    """var(log(z[z > 0])) for z = 1 + u * Blom scores (loo's mcse_elpd with E_epd scaled to 1).

    For u max|z| <= SERIES_MAX every z is positive and, with log(1 + x) = sum_n (-1)^(n+1) x^n / n,
    the variance is a polynomial in u whose coefficients depend only on the scores' moments
    (precomputed in ``_blom_scores``): 2 SERIES_TERMS multiply-adds instead of MCSE_SAMPLES
    logarithms. Otherwise the logarithms, with Welford's update."""
    z = zn.z
    if u * max(-z[0], z[z.shape[0] - 1]) <= SERIES_MAX:
        c = zn.series
        v = 0.0
        for p in range(c.shape[0] - 1, 1, -1):  # Horner; c_0 = c_1 = 0
            v = v * u + c[p]
        return v * u * u
    count = 0
    mean = 0.0
    m2 = 0.0
    for r in range(z.shape[0]):
        x = 1.0 + u * z[r]
        if x > 0:
            count += 1
            v = math.log(x)
            delta = v - mean
            mean += delta / count
            m2 += delta * (v - mean)
    return m2 / (count - 1) if count > 1 else np.nan


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _exp_shifted(x, shift, out):
    """out = exp(x - shift), within one ulp of libm's exp: engine._vecmath's branch-free exp.

    A column's S exponentials were a fifth of the kernel's time and Numba calls libm one value at
    a time; _vecmath.exp_value has no calls or branches, so LLVM vectorises this loop. Callers
    use it for x - shift in [-FAST_SPREAD, 0] (math.exp otherwise)."""
    for i in range(x.shape[0]):
        out[i] = exp_value(x[i] - shift)


MAGNITUDE_BITS = 0x7FFFFFFFFFFFFFFF  # int64 with every bit but the sign set


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _max_min(x):
    """(max, min) of the finite doubles x (contiguous, length >= 1).

    On integer keys: a double's bits as int64, with the 63 lower bits flipped when negative, order
    as the doubles (finite ones; -0.0 just below +0.0). A running float max is a chain of
    compare-and-select that LLVM does not vectorise without function-wide no-NaN flags; the
    integer max/min reductions it does (5x faster)."""
    bits = x.view(np.int64)
    hi = bits[0] ^ ((bits[0] >> 63) & MAGNITUDE_BITS)
    lo = hi
    for i in range(x.shape[0]):
        b = bits[i]
        key = b ^ ((b >> 63) & MAGNITUDE_BITS)
        hi = key if key > hi else hi
        lo = key if key < lo else lo
    out = np.empty(2, np.int64)
    out[0] = hi ^ ((hi >> 63) & MAGNITUDE_BITS)  # the map is its own inverse
    out[1] = lo ^ ((lo >> 63) & MAGNITUDE_BITS)
    vals = out.view(np.float64)
    return vals[0], vals[1]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _loo_column(ll, n_chains, n_draws, r_eff_given, zn: McseScores, log_half, lw, work, work2, iwork, chains_buf, rho):
    """PSIS-LOO for one observation: ll has length S = chains * draws (chain-major); log_half[h] =
    log(h + 1/2) for h up to the longest tail. Returns (elpd_loo, mcse, p_loo, k, n_eff, r_eff,
    tail_len, status)."""
    s = ll.shape[0]
    max_ll, min_ll = _max_min(ll)
    status = 0
    # e = exp(ll - max): the likelihood up to a constant; r_eff, lpd and (on the fast path) every
    # weight are built from it, so a column costs S exponentials besides the GPD fit
    e = work2
    if max_ll - min_ll < FAST_SPREAD:
        _exp_shifted(ll, max_ll, e)
    else:
        for i in range(s):
            e[i] = math.exp(ll[i] - max_ll)
    sum_e = _sum(e)
    if np.isnan(r_eff_given):
        # relative efficiency of exp(ll) (the ESS is scale-free, so exp(ll - max) avoids overflow)
        for c in range(n_chains):
            chains_buf[c] = e[c * n_draws : (c + 1) * n_draws]
        ess, ok = _ess_rfun(chains_buf, rho)
        if not ok:
            return np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 0, 1
        r_eff = ess / s
    else:
        r_eff = r_eff_given
    # log ratios -ll shifted by their max (loo's do_psis_i)
    for i in range(s):
        lw[i] = min_ll - ll[i]
    tail_len = int(math.ceil(min(0.2 * s, 3.0 * math.sqrt(s / r_eff))))
    k = np.inf
    smoothed = False
    tail_idx = np.empty(0, np.int64)
    fast = max_ll - min_ll < FAST_SPREAD
    w_tail = np.empty(0)
    if tail_len >= MIN_TAIL:
        tail_idx, cutoff = _select_tail(lw, tail_len, work, iwork)
        tail = np.empty(tail_len)
        for j in range(tail_len):
            tail[j] = lw[tail_idx[j]]
        if abs(tail[tail_len - 1] - tail[0]) < 2.220446049250313e-16 / 100:
            status = 3
        else:
            x = np.empty(tail_len)
            if fast:  # tail and cutoff in [-spread, 0]: the vectorised exp, one for both
                ex = np.empty(tail_len + 1)
                tail_c = np.empty(tail_len + 1)
                tail_c[0] = cutoff
                tail_c[1:] = tail
                _exp_shifted(tail_c, 0.0, ex)
                exp_cutoff = ex[0]
                for j in range(tail_len):
                    x[j] = ex[j + 1] - exp_cutoff
            else:
                exp_cutoff = math.exp(cutoff)
                for j in range(tail_len):
                    x[j] = math.exp(tail[j]) - exp_cutoff
            k, sigma = _gpdfit(x)
            if np.isfinite(k):
                smoothed = True
                # the tail's smoothed weights: GPD quantiles at p = (j + 1/2) / n plus exp(cutoff);
                # log1p(-p) = log(n - j - 1/2) - log(n) from the table (absolute error ~1e-16)
                w_tail = np.empty(tail_len)
                log_n = math.log(tail_len)
                bad_sigma = np.isnan(sigma) or sigma <= 0
                for j in range(tail_len):
                    if bad_sigma:
                        q = np.nan
                    else:
                        q = sigma * math.expm1(-k * (log_half[tail_len - 1 - j] - log_n)) / k
                    w_tail[j] = q + exp_cutoff
                if not fast:
                    for j in range(tail_len):
                        lw[tail_idx[j]] = math.log(w_tail[j])
    else:
        status = 2
    lpd = max_ll + math.log(sum_e) - math.log(s)
    spread = max_ll - min_ll
    if smoothed and fast:
        elpd, var_rel, sum_w2 = _fast_sums(e, w_tail, tail_idx, spread, max_ll, work)
    else:
        elpd, var_rel, sum_w2 = _exact_sums(ll, lw, min_ll, work)
    # Monte Carlo SE (loo's mcse_elpd), relative to E_epd = exp(elpd) so nothing under/overflows
    sd_rel = math.sqrt(var_rel)
    var_elpd = _mcse_var(sd_rel, zn)
    mcse = math.sqrt(var_elpd / r_eff)
    n_eff = r_eff / sum_w2
    return elpd, mcse, lpd - elpd, k, n_eff, r_eff, tail_len, status


FAST_SPREAD = 600.0  # max(ll) - min(ll) below which exp(min - max) / e cannot underflow


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _exact_sums(ll, lw, min_ll, work):
    """elpd_loo, sum w^2 (lik/E - 1)^2 and sum w^2 as loo computes them (one exp per weight):
    truncate at the largest raw log weight, normalise, log-sum-exp of ll + lw."""
    s = ll.shape[0]
    shift = -min_ll
    for i in range(s):
        if lw[i] > 0:
            lw[i] = 0.0
        lw[i] += shift
    norm = _logsumexp(lw)
    for i in range(s):
        lw[i] -= norm
        work[i] = ll[i] + lw[i]
    elpd = _logsumexp(work)
    var_rel = 0.0
    sum_w2 = 0.0
    for i in range(s):
        w2 = math.exp(2.0 * lw[i])
        sum_w2 += w2
        d = math.exp(ll[i] - elpd) - 1.0
        var_rel += w2 * d * d
    return elpd, var_rel, sum_w2


@numba.njit(cache=True, nogil=True, fastmath=SUMS, error_model="numpy")
def _off_tail_sums(inv, scale):
    """sum (scale [inv != 0] - inv)^2 and sum inv^2 (inv = 1 / e off the tail, 0 on it)."""
    v = 0.0
    q = 0.0
    for i in range(inv.shape[0]):
        a = inv[i]
        d = scale * (a != 0.0) - a
        v += d * d
        q += a * a
    return v, q


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fast_sums(e, w_smooth, tail_idx, spread, max_ll, inv):
    """The same sums without an exp per draw. Off the tail the raw weight is
    exp(min - ll) = exp(-spread) / e and ll + log w is the same for every draw; on the tail the
    weights are the smoothed ones, ``w_smooth`` (not their logarithms: exp(log w) is w up to
    rounding), truncated at 1 (the largest raw weight). Equal to the exact path up to rounding.
    ``inv`` (work, length S) holds 1 / e off the tail and 0 on it, so the two passes over the
    draws have no branches (and are vectorised sums, see SUMS)."""
    s = e.shape[0]
    t_len = tail_idx.shape[0]
    for i in range(s):
        inv[i] = 1.0 / e[i]
    c0 = math.exp(-spread)
    w_tail = np.empty(t_len)
    sum_tail = 0.0
    for j in range(t_len):
        i = tail_idx[j]
        inv[i] = 0.0
        v = w_smooth[j]
        if v > 1.0:  # truncation at the largest raw weight
            v = 1.0
        w_tail[j] = v
        sum_tail += w_tail[j]
    total = c0 * _sum(inv) + sum_tail
    # elpd = max + log(sum w e): off the tail w e = c0 / total for every draw
    acc = (s - t_len) * c0 / total
    for j in range(t_len):
        acc += w_tail[j] / total * e[tail_idx[j]]
    elpd = max_ll + math.log(acc)
    scale = math.exp(max_ll - elpd)  # lik / E_epd = e * scale
    cw = c0 / total
    # off the tail: w = cw / e, so w^2 (e scale - 1)^2 = cw^2 (scale - inv)^2 and w^2 = cw^2 inv^2
    v, q = _off_tail_sums(inv, scale)
    cw2 = cw * cw
    var_rel = cw2 * v
    sum_w2 = cw2 * q
    for j in range(t_len):
        w = w_tail[j] / total
        w2 = w * w
        sum_w2 += w2
        d = e[tail_idx[j]] * scale - 1.0
        var_rel += w2 * d * d
    return elpd, var_rel, sum_w2


BLOCK = 16  # observations copied together out of the (S, N) array: contiguous reads of 16 doubles
TILE = 8  # draws per tile of that copy (8 doubles: a cache line of the buffer)


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _loo_kernel(ll, r_eff_in, zn, out_elpd, out_mcse, out_p, out_k, out_neff, out_reff, out_tail, out_status):
    """PSIS-LOO for every observation. ll: (chains, draws, N) C-contiguous float64; r_eff_in:
    (N,) with NaN where r_eff is to be computed from the chains; outputs (N,)."""
    n_chains, n_draws, n_obs = ll.shape
    s = n_chains * n_draws
    flat = ll.reshape(s, n_obs)
    n_blocks = (n_obs + BLOCK - 1) // BLOCK
    # log(h + 1/2) for every h a tail can need (tails are at most 0.2 S long; loo's r_eff > 0)
    log_half = np.empty(s + 1)
    for h in range(s + 1):
        log_half[h] = math.log(h + 0.5)
    for b in numba.prange(n_blocks):
        lo = b * BLOCK
        hi = min(lo + BLOCK, n_obs)
        width = hi - lo
        buf = np.empty((width, s))
        # transpose in tiles of TILE draws: each observation's TILE values go to one cache line
        # of buf together (stores one at a time to `width` lines per draw were a third slower)
        i0 = 0
        while i0 + TILE <= s:
            for j in range(width):
                for t in range(TILE):
                    buf[j, i0 + t] = flat[i0 + t, lo + j]
            i0 += TILE
        for i in range(i0, s):
            for j in range(width):
                buf[j, i] = flat[i, lo + j]
        lw = np.empty(s)
        work = np.empty(s)
        work2 = np.empty(s)
        iwork = np.empty(s, np.int64)
        chains_buf = np.empty((n_chains, n_draws))
        rho = np.empty(n_draws)
        for j in range(width):
            res = _loo_column(buf[j], n_chains, n_draws, r_eff_in[lo + j], zn, log_half, lw, work, work2, iwork, chains_buf, rho)
            out_elpd[lo + j] = res[0]
            out_mcse[lo + j] = res[1]
            out_p[lo + j] = res[2]
            out_k[lo + j] = res[3]
            out_neff[lo + j] = res[4]
            out_reff[lo + j] = res[5]
            out_tail[lo + j] = res[6]
            out_status[lo + j] = res[7]


@functools.lru_cache(maxsize=1)
def _blom_scores() -> McseScores:
    """loo's qnorm(ppoints(1000)) scores and the MCSE series' coefficients (see _mcse_var): with
    M_p the scores' p-th moment and a_n = (-1)^(n+1) / n, c_p = N / (N - 1) sum_{n+m=p} a_n a_m
    (M_p - M_n M_m)."""
    r = np.arange(1, MCSE_SAMPLES + 1)
    z = ndtri((r - 3 / 8) / (MCSE_SAMPLES - 2 * 3 / 8 + 1))
    k = SERIES_TERMS
    moments = [math.fsum(z**p) / z.size for p in range(2 * k + 1)]
    series = np.zeros(2 * k + 1)
    for n in range(1, k + 1):
        for m in range(1, k + 1):
            series[n + m] += (-1) ** (n + m) / (n * m) * (moments[n + m] - moments[n] * moments[m])
    return McseScores(z, series * z.size / (z.size - 1))


# ----------------------------------------------------------------------------- r_eff (FFT path)


def _ess_rfun_fft(x: np.ndarray) -> np.ndarray:
    """loo's ess_rfun for several quantities at once, autocovariances by FFT exactly as loo's
    ``autocovariance`` (x: (quantities, chains, n)). Used for columns whose Geyer sequence runs
    beyond MAX_DIRECT_LAG lags (strongly autocorrelated chains)."""
    q, n_chains, n = x.shape
    m = int(_fft_good_size(n))
    yc = x - x.mean(axis=2, keepdims=True)
    spec = np.fft.rfft(yc, n=2 * m, axis=2)
    # R: Re(fft(Conj(F) F, inverse = TRUE))[1:n] / (n^2 * 2); R's inverse FFT is unnormalised
    acov = np.fft.irfft(np.abs(spec) ** 2, n=2 * m, axis=2)[:, :, :n] * (2 * m) / (n * n * 2)
    acov_mean = acov.mean(axis=1)  # (q, n)
    chain_mean = x.mean(axis=2)
    mean_var = acov_mean[:, 0] * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if n_chains > 1:
        var_plus = var_plus + chain_mean.var(axis=1, ddof=1)
    out = np.empty(q)
    for j in range(q):
        rho = np.zeros(n)
        rho_even = 1.0
        rho[0] = rho_even
        rho_odd = 1 - (mean_var[j] - acov_mean[j, 1]) / var_plus[j]
        rho[1] = rho_odd
        t = 0
        while t < n - 5 and not np.isnan(rho_even + rho_odd) and rho_even + rho_odd > 0:
            t += 2
            rho_even = 1 - (mean_var[j] - acov_mean[j, t]) / var_plus[j]
            rho_odd = 1 - (mean_var[j] - acov_mean[j, t + 1]) / var_plus[j]
            if rho_even + rho_odd >= 0:
                rho[t] = rho_even
                rho[t + 1] = rho_odd
        if rho_even > 0:
            rho[t] = rho_even
        out[j] = _ess_from_rho(rho, t, n_chains * n)
    return out


# ----------------------------------------------------------------------------- validation


def _as_loglik_array(x: Any, chain_id=None, name: str = "log_lik") -> np.ndarray:
    """A (chains, draws, observations) float64 C array from an array, a matrix with chain_id, or a
    fit with ``log_lik``; raises before any work."""
    if hasattr(x, "log_lik") and callable(getattr(x, "log_lik")) and not isinstance(x, np.ndarray):
        try:
            arr = x.log_lik(as_array=True)
        except NotImplementedError as exc:
            raise EngineInputError(f"loo needs a log-likelihood: {exc}") from None
        return _as_loglik_array(arr, None, name)
    if isinstance(x, (pd.DataFrame, pd.Series)):
        x = x.to_numpy()
    if not isinstance(x, (np.ndarray, list, tuple, np.generic, float, int)):
        raise EngineInputError(
            f"{name}: an object of type {type(x).__name__} has no log-likelihood; pass an engine.brm / brm_multiple fit or "
            "an array of shape (chains, draws, observations)"
        )
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise EngineInputError(
            f"{name} must be a numeric array of shape (chains, draws, observations) or a fit with a "
            f"log-likelihood; got {type(x).__name__}"
        ) from None
    if arr.ndim == 2:
        if chain_id is None:
            raise EngineInputError(
                f"{name} is a matrix of shape {arr.shape}: give chain_id (one chain number per row, as "
                "loo's relative_eff) or pass an array of shape (chains, draws, observations)"
            )
        chain_id = np.asarray(chain_id)
        if chain_id.dtype.kind not in "iub" and not (chain_id.dtype.kind == "f" and np.all(chain_id == np.round(chain_id))):
            raise EngineInputError(f"chain_id must hold whole chain numbers, got dtype {chain_id.dtype}")
        if chain_id.shape != (arr.shape[0],):
            raise EngineInputError(f"chain_id has {chain_id.size} values for {arr.shape[0]} rows of {name}")
        chains, counts = np.unique(chain_id, return_counts=True)
        if np.any(counts != counts[0]):
            raise EngineInputError("chain_id: not all chains have the same number of draws")
        arr = np.stack([arr[chain_id == c] for c in chains])
    elif chain_id is not None:
        raise EngineInputError(f"chain_id applies to a 2-D matrix only; {name} has {arr.ndim} dimensions")
    if arr.ndim != 3:
        raise EngineInputError(
            f"{name} must have shape (chains, draws, observations); got {arr.ndim} dimension(s) {arr.shape}"
        )
    if min(arr.shape) == 0:
        raise EngineInputError(f"{name} is empty (shape {arr.shape})")
    if arr.shape[0] * arr.shape[1] < 2:
        raise EngineInputError(f"{name} has a single draw; PSIS-LOO needs many posterior draws")
    bad = ~np.isfinite(arr)
    if bad.any():
        obs = np.unique(np.nonzero(bad)[2]) + 1
        what = "NaN" if np.isnan(arr[bad]).any() else "infinite"
        listed = ", ".join(str(o) for o in obs[:10]) + (f", ... ({obs.size} in all)" if obs.size > 10 else "")
        raise DataError(f"{name} has {what} values (observations {listed}); loo needs finite log-likelihoods")
    return np.ascontiguousarray(arr)


def _r_eff_vector(r_eff, n_obs: int) -> np.ndarray:
    if r_eff is None:
        return np.full(n_obs, np.nan)
    values = as_array(r_eff, np.float64, "r_eff").reshape(np.shape(r_eff))  # a number stays 0-d
    if values.ndim == 0:
        values = np.full(n_obs, float(values))
    if values.shape != (n_obs,):
        raise EngineInputError(f"r_eff must have one value per observation ({n_obs}); got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise EngineInputError("r_eff must be positive and finite")
    return values


# ----------------------------------------------------------------------------- results


def _estimates(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """loo's table_of_estimates: column sums and sqrt(N * var)."""
    n = len(next(iter(columns.values())))
    with np.errstate(over="ignore"):  # pointwise values near 1e200: R's SE is Inf, without a warning
        rows = {
            key: [float(np.sum(v)), float(math.sqrt(n * np.var(v, ddof=1))) if n > 1 else np.nan]
            for key, v in columns.items()
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["Estimate", "SE"])


@dataclass(eq=False)
class LooResult:
    """PSIS-LOO of one model, as loo's ``psis_loo`` object.

    - ``estimates``: DataFrame indexed ``elpd_loo``, ``p_loo``, ``looic`` with ``Estimate``, ``SE``;
    - ``pointwise``: DataFrame, one row per observation: ``elpd_loo``, ``mcse_elpd_loo``, ``p_loo``,
      ``looic``, ``influence_pareto_k``;
    - ``pareto_k``, ``n_eff``, ``r_eff`` (observations,), ``tail_len`` (observations,) int;
    - ``dims``: (draws S, observations N); ``model_name``; ``mcse_loo()``; ``pareto_k_table()``.
    """

    estimates: pd.DataFrame
    pointwise: pd.DataFrame
    pareto_k: np.ndarray
    n_eff: np.ndarray
    r_eff: np.ndarray
    tail_len: np.ndarray
    dims: tuple[int, int]
    model_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def _estimate(self, row: str, column: str = "Estimate") -> float:
        return float(self.estimates.loc[row, column])

    elpd_loo = property(lambda self: self._estimate("elpd_loo"), doc="elpd_loo's estimate")
    se_elpd_loo = property(lambda self: self._estimate("elpd_loo", "SE"), doc="elpd_loo's SE")
    p_loo = property(lambda self: self._estimate("p_loo"), doc="p_loo's estimate")
    looic = property(lambda self: self._estimate("looic"), doc="looic's estimate")

    def mcse_loo(self) -> float:
        """Monte Carlo SE of elpd_loo (loo's ``mcse_loo``): NaN when any k > 0.7."""
        if np.any(self.pareto_k > K_OK):
            return float("nan")
        return float(math.sqrt(np.sum(self.pointwise["mcse_elpd_loo"].to_numpy() ** 2)))

    def pareto_k_table(self) -> pd.DataFrame:
        """loo's ``pareto_k_table``: Count, Proportion and Min. n_eff per k class."""
        labels = ["(-Inf, 0.5]", "(0.5, 0.7]", "(0.7, 1]", "(1, Inf)"]
        cls = np.digitize(self.pareto_k, [K_GOOD, K_OK, K_BAD], right=True)
        rows = []
        for c, label in enumerate(labels):
            sel = cls == c
            count = int(sel.sum())
            rows.append((label, count, count / len(self.pareto_k), float(np.min(self.n_eff[sel])) if count else np.nan))
        return pd.DataFrame(rows, columns=["k", "Count", "Proportion", "Min. n_eff"]).set_index("k")

    def __str__(self) -> str:
        from engine.rcompat.print_loo import loo_text

        return loo_text(self)

    __repr__ = __str__


@dataclass(eq=False)
class WaicResult:
    """WAIC of one model, as loo's ``waic`` object: ``estimates`` indexed ``elpd_waic``,
    ``p_waic``, ``waic``; ``pointwise`` with the same columns."""

    estimates: pd.DataFrame
    pointwise: pd.DataFrame
    dims: tuple[int, int]
    model_name: str | None = None

    def __str__(self) -> str:
        from engine.rcompat.print_loo import waic_text

        return waic_text(self)

    __repr__ = __str__


# ----------------------------------------------------------------------------- public API


@checked_arguments
def relative_eff(x, chain_id=None) -> np.ndarray:
    """loo's ``relative_eff`` of a quantity's draws: ESS / S per column. ``x``: (chains, draws,
    observations) or (draws, observations) with ``chain_id``; values on the natural scale
    (loo applies it to ``exp(log_lik)``)."""
    arr = _as_loglik_array(x, chain_id, name="x")
    q = np.ascontiguousarray(np.moveaxis(arr, 2, 0))
    return _ess_rfun_fft(q) / (arr.shape[0] * arr.shape[1])


def _compute_loo(arr: np.ndarray, r_eff_vec: np.ndarray) -> LooOutputs:
    n_obs = arr.shape[2]
    out = _outputs(n_obs)
    zn = _blom_scores()
    _loo_kernel(arr, r_eff_vec, zn, *out)
    redo = np.nonzero(out.status == 1)[0]
    if redo.size:
        # strongly autocorrelated columns: r_eff from FFT autocovariances, then PSIS on them alone
        sub = np.ascontiguousarray(arr[:, :, redo])
        r_sub = _ess_rfun_fft(np.ascontiguousarray(np.exp(np.moveaxis(sub, 2, 0) - sub.max(axis=(0, 1))[:, None, None])))
        r_sub = r_sub / (arr.shape[0] * arr.shape[1])
        part = _outputs(redo.size)
        _loo_kernel(sub, r_sub, zn, *part)
        for full, piece in zip(out, part):
            full[redo] = piece
    return out


@checked_arguments
def loo(x, r_eff=None, *, chain_id=None, model_name: str | None = None) -> LooResult:
    """PSIS-LOO as R's ``loo`` 2.5.1 (with brms' default of r_eff from the chains).

    ``x``: a fit with a log-likelihood (``engine.brm`` fits) or a log-likelihood array of shape
    (chains, draws, observations); a (draws, observations) matrix with ``chain_id``. ``r_eff``:
    None (the default: loo's ``relative_eff(exp(log_lik), chain_id)``), a number or one value per
    observation. Warns (``ImportanceSamplingWarning``, loo's text) when some k > 0.7 ("too high")
    or 0.5 < k <= 0.7 ("slightly high"), and when tails are too short to fit.
    """
    if getattr(x, "kind", None) == "brm_multiple":
        return loo_multiple(x, r_eff=r_eff)
    arr = _as_loglik_array(x, chain_id)
    n_chains, n_draws, n_obs = arr.shape
    r_eff_vec = _r_eff_vector(r_eff, n_obs)
    out = _compute_loo(arr, r_eff_vec)
    short = np.nonzero(out.status == 2)[0] + 1
    if short.size:
        listed = ", ".join(str(i) for i in short[:10]) + (f", ... [{short.size - 10} more not printed]" if short.size > 10 else "")
        if n_obs == 1:
            msg = "Not enough tail samples to fit the generalized Pareto distribution."
        else:
            msg = (
                "Not enough tail samples to fit the generalized Pareto distribution in some or all columns "
                f"of matrix of log importance ratios. Skipping the following columns: {listed}"
            )
        warn_user(msg, ImportanceSamplingWarning)
    flat = np.nonzero(out.status == 3)[0] + 1
    if flat.size:
        warn_user(
            "Can't fit generalized Pareto distribution because all tail values are the same "
            f"(observations {', '.join(str(i) for i in flat[:10])}).",
            ImportanceSamplingWarning,
        )
    k = out.pareto_k
    if np.any(k > K_OK):
        warn_user(f"Some Pareto k diagnostic values are too high. {K_HELP}", ImportanceSamplingWarning)
    elif np.any(k > K_GOOD):
        warn_user(f"Some Pareto k diagnostic values are slightly high. {K_HELP}", ImportanceSamplingWarning)
    looic = -2.0 * out.elpd_loo
    pointwise = pd.DataFrame(
        {
            "elpd_loo": out.elpd_loo,
            "mcse_elpd_loo": out.mcse_elpd_loo,
            "p_loo": out.p_loo,
            "looic": looic,
            "influence_pareto_k": k,
        }
    )
    estimates = _estimates({"elpd_loo": out.elpd_loo, "p_loo": out.p_loo, "looic": looic})
    if model_name is None:
        model_name = getattr(x, "model_name", None) if not isinstance(x, np.ndarray) else None
    return LooResult(
        estimates=estimates,
        pointwise=pointwise,
        pareto_k=k.copy(),
        n_eff=out.n_eff.copy(),
        r_eff=out.r_eff.copy(),
        tail_len=out.tail_len.copy(),
        dims=(n_chains * n_draws, n_obs),
        model_name=model_name,
    )


@checked_arguments
def waic(x, *, chain_id=None, model_name: str | None = None) -> WaicResult:
    """WAIC as R's ``loo::waic``: pointwise ``lpd - var(ll)``; warns when some p_waic > 0.4."""
    arr = _as_loglik_array(x, chain_id)
    s = arr.shape[0] * arr.shape[1]
    ll = arr.reshape(s, arr.shape[2])
    mx = ll.max(axis=0)
    lpd = mx + np.log(np.exp(ll - mx).sum(axis=0)) - math.log(s)
    p_waic = ll.var(axis=0, ddof=1)
    elpd = lpd - p_waic
    pointwise = pd.DataFrame({"elpd_waic": elpd, "p_waic": p_waic, "waic": -2 * elpd})
    from engine.rcompat.print_loo import pwaic_message

    msg = pwaic_message(p_waic)
    if msg:
        warn_user(msg, ImportanceSamplingWarning)
    return WaicResult(
        estimates=_estimates({c: pointwise[c].to_numpy() for c in pointwise.columns}),
        pointwise=pointwise,
        dims=(s, arr.shape[2]),
        model_name=model_name,
    )


@checked_arguments
def loo_compare(*models, names: list[str] | None = None) -> pd.DataFrame:
    """Compare models by elpd as R's ``loo_compare``: rows sorted best first, ``elpd_diff`` (sum of
    pointwise differences to the best model, 0 for it) and ``se_diff`` (``sqrt(N) sd(diffs)``),
    then every model's estimates and SEs (``elpd_loo``, ``se_elpd_loo``, ``p_loo``, ``se_p_loo``,
    ``looic``, ``se_looic``). ``models``: LooResult / WaicResult objects, fits with a
    log-likelihood or log-likelihood arrays (loo is computed), or one list or dict of them (a
    dict's keys name the models). Names: ``names``, a result's ``model_name``, else model1, ...
    """
    if len(models) == 1 and isinstance(models[0], dict):
        names = list(models[0]) if names is None else names
        models = tuple(models[0].values())
    elif len(models) == 1 and isinstance(models[0], (list, tuple)):
        models = tuple(models[0])
    if len(models) < 2:
        raise EngineInputError("'loo_compare' requires at least two models.")
    results = [m if isinstance(m, (LooResult, WaicResult)) else loo(m) for m in models]
    kinds = {type(r) for r in results}
    if len(kinds) > 1:
        raise EngineInputError("loo_compare: all models must be compared by the same criterion (all loo or all waic)")
    n_obs = {r.pointwise.shape[0] for r in results}
    if len(n_obs) > 1:
        raise EngineInputError("Not all models have the same number of data points.")
    if names is None:
        names = [r.model_name or f"model{i + 1}" for i, r in enumerate(results)]
    if len(names) != len(results) or len(set(names)) != len(names):
        raise EngineInputError(f"names must give {len(results)} distinct model names; got {names!r}")
    crit = "elpd_loo" if isinstance(results[0], LooResult) else "elpd_waic"
    elpd = np.array([r.estimates.loc[crit, "Estimate"] for r in results])
    order = np.argsort(-elpd, kind="stable")  # R's order(decreasing = TRUE) keeps ties in input order
    best = results[order[0]].pointwise[crit].to_numpy()
    rows = []
    for j in order:
        r = results[j]
        diffs = r.pointwise[crit].to_numpy() - best
        n = diffs.size
        row = {"elpd_diff": float(diffs.sum()), "se_diff": float(math.sqrt(n) * np.std(diffs, ddof=1)) if n > 1 else np.nan}
        for key in r.estimates.index:
            row[key] = float(r.estimates.loc[key, "Estimate"])
            row[f"se_{key}"] = float(r.estimates.loc[key, "SE"])
        rows.append(row)
    table = pd.DataFrame(rows, index=[names[j] for j in order])
    est = list(results[0].estimates.index)  # e.g. elpd_loo, p_loo, looic
    cols = ["elpd_diff", "se_diff"]
    for key in est:
        cols += [key, f"se_{key}"]
    return table[cols]



@dataclass(eq=False)
class LooMultipleResult:
    """PSIS-LOO of a ``brm_multiple`` fit: one LOO per imputed data set and their combination.

    - ``per_imputation``: list of LooResult (data set k's log-likelihood under data set k's chains);
    - ``table``: one row per imputation (1..m): elpd_loo, se_elpd_loo, p_loo, se_p_loo, looic,
      se_looic, and the number of Pareto k above 0.7;
    - ``estimates``: the combination, indexed elpd_loo, p_loo, looic with Estimate and SE:
      Estimate = mean over imputations; SE by Rubin's rules,
      ``SE^2 = mean(SE_k^2) + (1 + 1/m) var_k(Estimate_k)`` (within plus between imputations).

    brms has no LOO for brm_multiple fits (brms issue #997). Each data set's LOO is exact PSIS-LOO
    for that completed data set; pooling them by Rubin's rules treats elpd as the estimand of each
    completed-data analysis (as for any scalar estimate; Rubin 1987, ch. 3). The between-imputation
    part reflects that imputed values differ across data sets (and imputed responses enter the
    likelihood). Compare models fitted to the same imputations data set by data set
    (``loo_compare(a.per_imputation[k], b.per_imputation[k])``) or on ``estimates``.
    """

    per_imputation: list
    table: pd.DataFrame
    estimates: pd.DataFrame

    @property
    def m(self) -> int:
        return len(self.per_imputation)

    def __str__(self) -> str:
        from engine.rcompat.print_loo import loo_multiple_text

        return loo_multiple_text(self)

    __repr__ = __str__


def loo_multiple(fit, **kwargs) -> LooMultipleResult:
    """PSIS-LOO per imputed data set of an ``engine.brm_multiple`` fit and their combination
    (see ``LooMultipleResult``); ``kwargs`` go to ``loo`` (e.g. ``r_eff``)."""
    from engine.multilevel.predict import imputation_fit

    results = []
    for k in range(int(fit.m)):
        sub = imputation_fit(fit, k)
        results.append(loo(sub.log_lik(as_array=True), model_name=f"imputation {k + 1}", **kwargs))
    m = len(results)
    rows = []
    for r in results:
        row = {}
        for key in r.estimates.index:
            row[key] = float(r.estimates.loc[key, "Estimate"])
            row[f"se_{key}"] = float(r.estimates.loc[key, "SE"])
        row["n_k_above_0.7"] = int(np.sum(r.pareto_k > K_OK))
        rows.append(row)
    table = pd.DataFrame(rows, index=pd.RangeIndex(1, m + 1, name="imputation"))
    pooled = {}
    for key in results[0].estimates.index:
        est = table[key].to_numpy()
        se = table[f"se_{key}"].to_numpy()
        between = est.var(ddof=1) if m > 1 else 0.0
        pooled[key] = [float(est.mean()), float(math.sqrt(np.mean(se**2) + (1 + 1 / m) * between))]
    estimates = pd.DataFrame.from_dict(pooled, orient="index", columns=["Estimate", "SE"])
    return LooMultipleResult(per_imputation=results, table=table, estimates=estimates)


from engine._callable_module import make_module_callable  # noqa: E402

make_module_callable(__name__, "loo")
