"""MCMC convergence diagnostics exactly as R's ``posterior`` 1.4.0 computes them.

Source: Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis 16(2),
667-718, and the reference implementation in R package ``posterior`` (R/convergence.R), whose
details are reproduced on purpose, quirks included:

- split chains: each chain is cut into a first and a second half; for an odd number of draws the
  **middle draw is dropped** (``posterior:::.split_chains``);
- rank normalisation: average ranks for ties over all chains together, then
  ``qnorm((r - 3/8) / (S + 1/4))`` (Blom's fractional offset);
- folded tail R-hat uses ``|x - median(x)|`` with the median of all draws (before splitting);
- ESS: autocovariances by FFT ("biased" estimator, rescaled by the sample variance), Geyer's
  initial positive sequence over pairs of lags (the loop stops at the first non-positive pair or
  at lag N - 5), the positive even-lag term of the stopping pair added back ("improved estimate"
  for antithetic chains), Geyer's initial monotone sequence, and tau floored at 1 / log10(S);
- tail ESS = min of the ESS of the indicators ``x <= q05`` and ``x <= q95`` (quantile type 7);
- ESS of the SD = ESS of ``|x - mean(x)|``; MCSE of the SD by Kenney & Keeping (1951, p. 141)
  with the ESS of ``(x - mean(x))^2``; MCSE of quantiles from Beta quantiles of the order
  statistic positions;
- NaN where posterior returns NA: a missing draw, or all draws (of the quantity the statistic
  is computed on) equal to within machine epsilon; an infinite draw makes every statistic NaN
  except the rank-based ``rhat`` and ``ess_bulk``, which (as in posterior) stay finite because
  ranks are.

Every public function takes an array of shape ``(chains, draws)``; a 1-D array is one chain.
All computations are batched over a leading parameter axis internally (shape
``(params, chains, draws)``), so :func:`summarise_draws` vectorises across parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import fft as sp_fft
from scipy import special
from scipy.stats import rankdata

from engine.errors import EngineInputError
from engine.validate import checked_arguments
from engine.rcompat.language import r_number
from engine.rcompat.quantile import quantile7_rows as _quantile7

__all__ = [
    "rhat",
    "rhat_basic",
    "ess_bulk",
    "ess_tail",
    "ess_basic",
    "ess_mean",
    "ess_sd",
    "ess_quantile",
    "mcse_mean",
    "mcse_sd",
    "mcse_quantile",
    "quantile7",
    "split_chains",
    "rank_normalize",
    "summarise_draws",
]

# posterior's Blom offset for rank normalisation
_RANK_OFFSET = 3.0 / 8.0
# posterior's probabilities of +-1 standard normal SD, written with its 7 digits
_MCSE_QUANTILE_PROBS = (0.1586553, 0.8413447)
_EPS = np.finfo(float).eps


# --------------------------------------------------------------------------------------------
# input handling


def _as_chains(x, name: str = "x") -> np.ndarray:
    """Validate one variable's draws; return a float array (chains, draws)."""
    try:
        arr = np.asarray(x)
    except ValueError as error:  # ragged nested lists
        raise EngineInputError(f"{name} must be an array of draws (chains, draws): {error}") from None
    if arr.dtype == bool:
        arr = arr.astype(float)
    if not (np.issubdtype(arr.dtype, np.number)) or np.iscomplexobj(arr):
        raise EngineInputError(f"{name} must be real numeric draws, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise EngineInputError(
            f"{name} must have shape (chains, draws) or (draws,), got shape {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise EngineInputError(f"{name} must hold at least one chain and one draw, got {arr.shape}")
    return arr


def _check_prob(prob: float) -> float:
    prob = float(prob)
    if not 0.0 <= prob <= 1.0:
        raise EngineInputError(f"prob must lie in [0, 1], got {prob}")
    return prob


# --------------------------------------------------------------------------------------------
# batched building blocks: arrays of shape (params, chains, draws)


def _invalid(x: np.ndarray) -> np.ndarray:
    """posterior's should_return_NA per parameter: non-finite draws or all draws equal."""
    flat = x.reshape(x.shape[0], -1)
    nonfinite = ~np.isfinite(flat).all(axis=1)
    with np.errstate(invalid="ignore"):
        constant = np.abs(flat.max(axis=1) - flat.min(axis=1)) < _EPS
    return nonfinite | constant


def _split(x: np.ndarray) -> np.ndarray:
    """(P, C, N) -> (P, 2C, N // 2): halves of each chain; the middle draw of odd N is dropped."""
    n = x.shape[-1]
    if n == 1:
        return x
    half = n // 2
    return np.concatenate([x[..., :half], x[..., n - half :]], axis=-2)


def _rank_normalize(x: np.ndarray) -> np.ndarray:
    """Average ranks over all chains of each parameter, mapped through Blom's normal scores."""
    p, c, n = x.shape
    flat = x.reshape(p, c * n)
    ranks = rankdata(flat, method="average", axis=1)
    size = c * n
    u = (ranks - _RANK_OFFSET) / (size - 2.0 * _RANK_OFFSET + 1.0)
    return special.ndtri(u).reshape(p, c, n)


def _median(flat: np.ndarray) -> np.ndarray:
    return np.median(flat, axis=1)


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased autocovariances at every lag of each chain, (P, C, N) -> (P, C, N).

    FFT with zero padding to twice a fast length; rescaled so lag 0 equals the biased variance
    (posterior's ``autocovariance``); a constant chain has all autocovariances 0.
    """
    n = x.shape[-1]
    centred = x - x.mean(axis=-1, keepdims=True)
    nfft = 2 * sp_fft.next_fast_len(n, real=True)
    spectrum = sp_fft.rfft(centred, n=nfft, axis=-1)
    acov = sp_fft.irfft(spectrum.real**2 + spectrum.imag**2, n=nfft, axis=-1)[..., :n]
    variance = np.sum(centred * centred, axis=-1, keepdims=True) / n
    lag0 = acov[..., :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = acov / lag0 * variance
    return np.where(variance > 0.0, scaled, 0.0)


def _ess(x: np.ndarray) -> np.ndarray:
    """posterior's ``.ess`` for each parameter of (P, C, N) draws (chains already split).

    Geyer (1992) initial positive sequence over pairs (rho_2k + rho_2k+1), truncated at the first
    non-positive pair or at lag N - 5, made monotone (each pair sum at most the previous one),
    with the stopping pair's even term added when positive; tau >= 1 / log10(C N).
    """
    p, c, n = x.shape
    out = np.full(p, np.nan)
    valid = ~_invalid(x)
    if n < 3 or not valid.any():
        return out
    xv = x[valid]
    acov_mean = _autocovariance(xv).mean(axis=1)  # (Pv, N)
    mean_var = acov_mean[:, 0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if c > 1:
        var_plus = var_plus + np.var(xv.mean(axis=2), axis=1, ddof=1)
    rho = 1.0 - (mean_var[:, None] - acov_mean) / var_plus[:, None]
    rho[:, 0] = 1.0  # posterior starts the sequence at exactly 1

    n_pairs = n // 2
    even = rho[:, 0 : 2 * n_pairs : 2]
    odd = rho[:, 1 : 2 * n_pairs : 2]
    pair_sum = even + odd
    lag = 2 * np.arange(n_pairs)
    with np.errstate(invalid="ignore"):
        keep_going = (pair_sum > 0.0) & (lag < n - 5)[None, :]
    # the pair at which posterior's while-loop stops (one always exists: the lag bound)
    stop = np.argmin(keep_going, axis=1)
    rows = np.arange(len(stop))
    stop_even = even[rows, stop]
    stop_sum = pair_sum[rows, stop]
    with np.errstate(invalid="ignore"):
        stored = (stop == 0) | (stop_sum >= 0.0)
        last_term = np.where(stored | (stop_even > 0.0), stop_even, 0.0)
    monotone = np.minimum.accumulate(np.where(np.isnan(pair_sum), -np.inf, pair_sum), axis=1)
    before_stop = np.arange(n_pairs)[None, :] < stop[:, None]
    positive_sum = np.where(before_stop, monotone, 0.0).sum(axis=1)
    # R's rho_hat_t[1:0] when the loop never ran picks the leading 1
    positive_sum = np.where(stop == 0, 1.0, positive_sum)
    tau = -1.0 + 2.0 * positive_sum + last_term
    total = c * n
    tau = np.maximum(tau, 1.0 / math.log10(total))
    out[valid] = total / tau
    return out


def _rhat_core(x: np.ndarray) -> np.ndarray:
    """Gelman-Rubin potential scale reduction of (P, C, N) draws (posterior's ``.rhat``)."""
    p, c, n = x.shape
    out = np.full(p, np.nan)
    valid = ~_invalid(x)
    if not valid.any() or c < 2 or n < 2:
        return out
    xv = x[valid]
    chain_mean = xv.mean(axis=2)
    chain_var = xv.var(axis=2, ddof=1)
    var_between = n * np.var(chain_mean, axis=1, ddof=1)
    var_within = chain_var.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[valid] = np.sqrt((var_between / var_within + n - 1.0) / n)
    return out


def _fold(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    return np.abs(x - _median(flat)[:, None, None])


def _rhat_rank(x: np.ndarray) -> np.ndarray:
    bulk = _rhat_core(_rank_normalize(_split(x)))
    tail = _rhat_core(_rank_normalize(_split(_fold(x))))
    return np.maximum(bulk, tail)  # NaN if either is NaN, as R's max


def _ess_bulk(x: np.ndarray) -> np.ndarray:
    return _ess(_rank_normalize(_split(x)))


def _ess_quantile(x: np.ndarray, prob: float) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    if prob == 1.0:
        prob = (flat.shape[1] - 0.5) / flat.shape[1]
    invalid = _invalid(x)
    with np.errstate(invalid="ignore"):
        q = _quantile7(flat, prob)
    indicator = (x <= q[:, None, None]).astype(float)
    out = _ess(_split(indicator))
    out[invalid] = np.nan
    return out


def _ess_tail(x: np.ndarray) -> np.ndarray:
    # np.minimum propagates NaN, as R's min() propagates NA
    return np.minimum(_ess_quantile(x, 0.05), _ess_quantile(x, 0.95))


def _mcse_quantile(x: np.ndarray, prob: float) -> np.ndarray:
    ess = _ess_quantile(x, prob)
    flat = np.sort(x.reshape(x.shape[0], -1), axis=1)
    size = flat.shape[1]
    out = np.full(x.shape[0], np.nan)
    ok = np.isfinite(ess)
    if not ok.any():
        return out
    a_shape = ess[ok] * prob + 1.0
    b_shape = ess[ok] * (1.0 - prob) + 1.0
    lower = special.betaincinv(a_shape, b_shape, _MCSE_QUANTILE_PROBS[0])
    upper = special.betaincinv(a_shape, b_shape, _MCSE_QUANTILE_PROBS[1])
    i1 = np.maximum(np.floor(lower * size), 1).astype(np.int64) - 1
    i2 = np.minimum(np.ceil(upper * size), size).astype(np.int64) - 1
    rows = flat[ok]
    idx = np.arange(rows.shape[0])
    out[ok] = (rows[idx, i2] - rows[idx, i1]) / 2.0
    return out


def _ess_mean(x: np.ndarray) -> np.ndarray:
    return _ess(_split(x))


def _sd(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] < 2:
        return np.full(x.shape[0], np.nan)
    return flat.std(axis=1, ddof=1)


def _mcse_mean(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return _sd(x) / np.sqrt(_ess_mean(x))


def _mcse_sd(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    with np.errstate(invalid="ignore", over="ignore"):
        centred = x - flat.mean(axis=1)[:, None, None]
        squared = centred * centred
    ess = _ess_mean(squared)
    sq_flat = squared.reshape(x.shape[0], -1)
    expected_var = sq_flat.mean(axis=1)
    var_of_var = ((sq_flat * sq_flat).mean(axis=1) - expected_var**2) / ess
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(var_of_var / expected_var / 4.0)


# --------------------------------------------------------------------------------------------
# public: one variable, draws of shape (chains, draws)


def _one(batched, x, *args) -> float:
    return float(batched(_as_chains(x)[None, :, :], *args)[0])


def split_chains(x) -> np.ndarray:
    """Split each chain in halves, (C, N) -> (2C, N // 2); the middle draw of odd N is dropped."""
    return _split(_as_chains(x)[None])[0]


def rank_normalize(x) -> np.ndarray:
    """Rank-normalised draws (average ranks for ties, offset 3/8), same shape as (C, N) ``x``."""
    return _rank_normalize(_as_chains(x)[None])[0]


def quantile7(x, prob: float) -> float:
    """Quantile of all draws by R's default method (type 7)."""
    arr = _as_chains(x).reshape(1, -1)
    if np.isnan(arr).any():
        return math.nan
    return float(_quantile7(arr, _check_prob(prob))[0])


def rhat_basic(x, split: bool = True) -> float:
    """Classic (split) R-hat of Gelman et al. (2013, BDA3, sec. 11.4); ``posterior::rhat_basic``."""
    arr = _as_chains(x)[None]
    return float(_rhat_core(_split(arr) if split else arr)[0])


def ess_basic(x, split: bool = True) -> float:
    """ESS of the raw draws (split chains by default); ``posterior::ess_basic``."""
    arr = _as_chains(x)[None]
    return float(_ess(_split(arr) if split else arr)[0])


def rhat(x) -> float:
    """Max of rank-normalised split R-hat and folded (tail) split R-hat (Vehtari et al. 2021)."""
    return _one(_rhat_rank, x)


def ess_bulk(x) -> float:
    """ESS of the rank-normalised split chains (Vehtari et al. 2021, sec. 4.3)."""
    return _one(_ess_bulk, x)


def ess_quantile(x, prob: float) -> float:
    """ESS of the indicator ``x <= quantile(x, prob)`` over split chains."""
    return _one(_ess_quantile, x, _check_prob(prob))


def ess_tail(x) -> float:
    """Minimum of the 5% and 95% quantile ESS (Vehtari et al. 2021, sec. 4.3)."""
    return _one(_ess_tail, x)


def ess_mean(x) -> float:
    """ESS for the mean: split chains, raw draws (equals ``ess_basic``)."""
    return _one(_ess_mean, x)


def ess_sd(x) -> float:
    """ESS for the SD: ESS of ``|x - mean(x)|`` over split chains (posterior 1.4.0)."""
    arr = _as_chains(x)[None]
    with np.errstate(invalid="ignore"):
        deviation = np.abs(arr - arr.mean())
    return float(_ess_mean(deviation)[0])


def mcse_mean(x) -> float:
    """Monte Carlo SE of the mean: ``sd(x) / sqrt(ess_mean(x))``."""
    return _one(_mcse_mean, x)


def mcse_sd(x) -> float:
    """Monte Carlo SE of the SD (Kenney & Keeping 1951, first-order Taylor), posterior 1.4.0."""
    return _one(_mcse_sd, x)


def mcse_quantile(x, prob: float) -> float:
    """Monte Carlo SE of a quantile from Beta(ess p + 1, ess (1 - p) + 1) order-statistic bounds."""
    return _one(_mcse_quantile, x, _check_prob(prob))


# --------------------------------------------------------------------------------------------
# many parameters at once


@checked_arguments
def summarise_draws(
    draws,
    names: Sequence[str] | None = None,
    probs: tuple[float, float] = (0.025, 0.975),
) -> pd.DataFrame:
    """Summaries of every parameter at once, as ``posterior::summarise_draws`` computes them.

    Parameters
    ----------
    draws : array (chains, draws, params); a 2-D array is (chains, draws) of one parameter.
    names : parameter names (default ``p0, p1, ...``).
    probs : the two quantile probabilities (type 7), default the 95% interval.

    Returns
    -------
    DataFrame indexed by name with columns ``mean, sd, q2.5, q97.5, rhat, ess_bulk, ess_tail``
    (the quantile column names follow ``probs``).
    """
    if np.iscomplexobj(draws):
        raise EngineInputError("draws must be real numeric draws, got complex values")
    arr = np.asarray(draws, dtype=float)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise EngineInputError(f"draws must have shape (chains, draws, params), got {arr.shape}")
    chains, n_draws, n_params = arr.shape
    if chains < 1 or n_draws < 1:
        raise EngineInputError(f"draws must hold at least one chain and one draw, got {arr.shape}")
    if names is None:
        names = [f"p{i}" for i in range(n_params)]
    names = [str(name) for name in names]
    if len(names) != n_params:
        raise EngineInputError(f"names has {len(names)} entries but draws has {n_params} parameters")
    lo_prob, hi_prob = (_check_prob(p) for p in probs)
    batch = np.ascontiguousarray(np.moveaxis(arr, 2, 0))  # (P, C, N)
    flat = batch.reshape(n_params, -1)
    has_nan = np.isnan(flat).any(axis=1)  # R's quantile2 gives NA when any draw is NA
    with np.errstate(invalid="ignore"):
        q_lo = np.where(has_nan, np.nan, _quantile7(flat, lo_prob))
        q_hi = np.where(has_nan, np.nan, _quantile7(flat, hi_prob))
    table = {
        "mean": flat.mean(axis=1),
        "sd": _sd(batch),
        f"q{_percent(lo_prob)}": q_lo,
        f"q{_percent(hi_prob)}": q_hi,
        "rhat": _rhat_rank(batch),
        "ess_bulk": _ess_bulk(batch),
        "ess_tail": _ess_tail(batch),
    }
    return pd.DataFrame(table, index=pd.Index(names, name="variable"))


def _percent(prob: float) -> str:
    """posterior's quantile names, ``paste0("q", probs * 100)``: q2.5, q97.5, q5, ..."""
    return r_number(prob * 100)
