"""NUTS for the Gaussian multilevel model of engine.multilevel: non-centred and collapsed densities.

Both densities use only the per-cell sufficient statistics of the model layer (DESIGN.md), so an
evaluation costs O(K q + q² + L) (K cells, q = intercept + p coefficients, L random effects), not
O(N p). gamma = (b0_c, beta) is the centred intercept and the coefficients (as brms centres);
scales are sampled on the log scale with the Jacobian log τ added to the log prior.

**Non-centred** (``marginalize=False``): θ = (gamma, log τ_1..log τ_G, log σ, z_1..z_L), random
effect r_l = τ_{g(l)} z_l, z ~ N(0, 1) (Papaspiliopoulos, Roberts & Sköld 2007). With c_k the sum of
the random effects of cell k and S_k = Σ_cell (y − wᵀgamma),

    RSS = yᵀy − 2 gammaᵀWᵀy + gammaᵀWᵀW gamma + Σ_k (n_k c_k² − 2 c_k S_k),
    log p = −N log σ − RSS / (2σ²) − ½ zᵀz + log priors + Σ log τ + log σ.

**Collapsed** (``marginalize=True``): the random intercepts integrated out. For one grouping factor
(cells = its levels) or two nested ones (cells = the inner levels, e.g. classes in schools), within a
top-level group j the marginal covariance is V_j = M + τ_top² 11ᵀ, M = blockdiag_k(σ² I + τ_low² 11ᵀ).
With a_k = σ² + n_k τ_low², s_k = Σ_cell residual, the determinant lemma and Sherman–Morrison give
(DESIGN.md, "Collapsed likelihood for NUTS")

    log|M_k| = (n_k − 1) log σ² + log a_k,   rᵀM_k⁻¹r = Σr²/σ² − τ_low² s_k² / (σ² a_k),
    A_j = Σ_k n_k / a_k,  B_j = Σ_k s_k / a_k,  D_j = 1 + τ_top² A_j,
    log|V_j| = Σ log|M_k| + log D_j,   rᵀV_j⁻¹r = Σ rᵀM_k⁻¹r − τ_top² B_j² / D_j,

and the analytic gradient follows by the chain rule through (s_k, a_k, A_j, B_j). NUTS runs on
θ = (gamma, log τ, log σ) only (q + G + 1 dimensions, no funnel); afterwards the random intercepts
are drawn exactly, per kept draw, from their Gaussian conditional p(r | gamma, τ, σ, y)
(``engine.multilevel.location.draw_ranef``, the leaves-up elimination of the location block). Deeper
nesting or crossed factors raise ModelSpecError with ``marginalize=True``.

Priors are the model layer's (engine.priors family codes: flat, normal, student_t (cauchy: ν = 1),
exponential; sd and sigma priors truncated to (0, ∞), whose normalising constants do not depend on
the parameters). Both densities take engine.nuts' fixed signature (theta, data, index), so the
cached sampler kernel serves them without recompiling.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from typing import NamedTuple

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.errors import EngineInputError, ModelSpecError, SamplerError
from engine.multilevel.location import PriorArrays, draw_ranef, location_inputs
from engine.multilevel.model import MultilevelModel
from engine.multilevel.priors import EXPONENTIAL, NORMAL, STUDENT_T
from engine.multilevel.sampler import ChainResult, register_sampler, thin_stats
from engine.nuts import STAT_NAMES, STEP_SIZE_SEARCH_FAILED, LogDensity, run_chain, validate_options
from engine.hmc.adaptation import adaptation_windows
from engine.hmc.tree import make_workspace

__all__ = ["NUTS", "NutsSampler", "sample_chain", "noncentred_logp_and_grad", "collapsed_logp_and_grad",
           "noncentred_args", "collapsed_args", "DensityData", "unpack_priors"]


class DensityData(NamedTuple):
    """The sufficient statistics and priors both densities read (K cells, q = len(gamma), G groups).

    cell_n, cell_sum_y: (K,); cell_w: (K, q); wtw: (q, q); wty: (q,); yty, n_obs: floats;
    gamma_prior: PriorArrays (q,); sd_prior: PriorArrays (G,); sigma_prior: (4,) [family, nu, mu, scale].
    """

    cell_n: np.ndarray
    cell_sum_y: np.ndarray
    cell_w: np.ndarray
    wtw: np.ndarray
    wty: np.ndarray
    yty: float
    n_obs: float
    gamma_prior: PriorArrays
    sd_prior: PriorArrays
    sigma_prior: np.ndarray


@numba.njit(cache=True, nogil=True, error_model="numpy")
def log_prior(x, family, nu, mu, scale):
    """(log density up to a constant, derivative in x) of one prior of the model layer."""
    if family == NORMAL:
        z = (x - mu) / scale
        return -0.5 * z * z, -z / scale
    if family == STUDENT_T:
        z = (x - mu) / scale
        return -0.5 * (nu + 1.0) * math.log1p(z * z / nu), -(nu + 1.0) * z / (nu + z * z) / scale
    if family == EXPONENTIAL:
        return -x / scale, -1.0 / scale
    return 0.0, 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _add_location_and_scale_priors(theta, grad, q, n_groups, dens):
    """Log priors of gamma, τ (on log τ, with Jacobian) and σ; gradient added into ``grad`` (dens: DensityData)."""
    gamma_family, gamma_nu, gamma_mu, gamma_scale = (dens.gamma_prior.family, dens.gamma_prior.nu,
                                                     dens.gamma_prior.mu, dens.gamma_prior.scale)
    sd_family, sd_nu, sd_mu, sd_scale = dens.sd_prior.family, dens.sd_prior.nu, dens.sd_prior.mu, dens.sd_prior.scale
    sigma_prior = dens.sigma_prior
    total = 0.0
    for j in range(q):
        lp, d = log_prior(theta[j], gamma_family[j], gamma_nu[j], gamma_mu[j], gamma_scale[j])
        total += lp
        grad[j] += d
    for g in range(n_groups + 1):
        eta = theta[q + g]
        value = math.exp(eta)
        if g < n_groups:
            lp, d = log_prior(value, sd_family[g], sd_nu[g], sd_mu[g], sd_scale[g])
        else:
            lp, d = log_prior(value, int(sigma_prior[0]), sigma_prior[1], sigma_prior[2], sigma_prior[3])
        total += lp + eta
        grad[q + g] += d * value + 1.0
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _quadratic_terms(gamma, wtw, wty, yty):
    """(Σ r², WᵀW γ) with r = y − Wγ over all rows: yᵀy − 2γᵀWᵀy + γᵀWᵀWγ (plain loops: q is small,
    and a BLAS call per evaluation costs more than the arithmetic)."""
    q = gamma.shape[0]
    wtw_gamma = np.zeros(q)
    total = yty
    for i in range(q):
        acc = 0.0
        for j in range(q):
            acc += wtw[i, j] * gamma[j]
        wtw_gamma[i] = acc
        total += gamma[i] * (acc - 2.0 * wty[i])
    return total, wtw_gamma


@numba.njit(cache=True, nogil=True, error_model="numpy")
def noncentred_logp_and_grad(theta, q, n_groups, cell_levels, level_group, dens):
    """Log posterior (up to a constant) and gradient in θ = (gamma (q), log τ (G), log σ, z (L));
    cell_levels (K, G), level_group (L,), dens: DensityData."""
    cell_n, cell_sum_y, cell_w, wtw, wty = dens.cell_n, dens.cell_sum_y, dens.cell_w, dens.wtw, dens.wty
    yty, n_obs = dens.yty, dens.n_obs
    n_levels = level_group.shape[0]
    n_cells = cell_n.shape[0]
    gamma = theta[:q]
    log_sigma = theta[q + n_groups]
    z = theta[q + n_groups + 1:]
    tau = np.exp(theta[q:q + n_groups])
    sigma2 = math.exp(2.0 * log_sigma)
    r = np.empty(n_levels)
    for l in range(n_levels):
        r[l] = tau[level_group[l]] * z[l]
    rss, wtw_gamma = _quadratic_terms(gamma, wtw, wty, yty)
    grad_rss_gamma = 2.0 * (wtw_gamma - wty)
    grad_rss_r = np.zeros(n_levels)
    for k in range(n_cells):
        c = 0.0
        for g in range(n_groups):
            c += r[cell_levels[k, g]]
        residual_sum = cell_sum_y[k]
        for j in range(q):
            residual_sum -= cell_w[k, j] * gamma[j]
        rss += cell_n[k] * c * c - 2.0 * c * residual_sum
        for j in range(q):
            grad_rss_gamma[j] += 2.0 * c * cell_w[k, j]
        d_c = 2.0 * (cell_n[k] * c - residual_sum)
        for g in range(n_groups):
            grad_rss_r[cell_levels[k, g]] += d_c
    grad = np.zeros(theta.shape[0])
    inv_2s2 = 0.5 / sigma2
    logp = -n_obs * log_sigma - rss * inv_2s2
    for j in range(q):
        grad[j] = -grad_rss_gamma[j] * inv_2s2
    grad[q + n_groups] = -n_obs + rss / sigma2
    for l in range(n_levels):
        g = level_group[l]
        d_r = -grad_rss_r[l] * inv_2s2
        grad[q + n_groups + 1 + l] = d_r * tau[g] - z[l]
        grad[q + g] += d_r * r[l]
        logp -= 0.5 * z[l] * z[l]
    logp += _add_location_and_scale_priors(theta, grad, q, n_groups, dens)
    return logp, grad


@numba.njit(cache=True, nogil=True, error_model="numpy")
def collapsed_logp_and_grad(theta, q, n_groups, cell_top, n_top, dens):
    """Marginal log posterior (random intercepts integrated out) and gradient in θ = (gamma, log τ, log σ).

    n_groups is 1 (cells = that factor's levels, τ_low = τ_1) or 2 (nested: cells = inner levels,
    cell_top[k] the outer level of cell k, τ_top = τ_1, τ_low = τ_2); dens: DensityData.
    """
    cell_n, cell_sum_y, cell_w, wtw, wty, yty = dens.cell_n, dens.cell_sum_y, dens.cell_w, dens.wtw, dens.wty, dens.yty
    n_cells = cell_n.shape[0]
    gamma = theta[:q]
    two_levels = n_groups == 2
    v = math.exp(2.0 * theta[q + n_groups])  # σ²
    t = math.exp(2.0 * theta[q + n_groups - 1])  # τ_low²
    u = math.exp(2.0 * theta[q]) if two_levels else 0.0  # τ_top²
    total_ss, wtw_gamma = _quadratic_terms(gamma, wtw, wty, yty)  # Σ r² over all rows
    # minus twice the log likelihood: F = Σ_k f_k + Σ_j g_j (+ N log 2π)
    F = total_ss / v
    dF_dgamma = 2.0 * (wtw_gamma - wty) / v
    dF_dv = -total_ss / (v * v)
    dF_dt = 0.0
    dF_du = 0.0
    s = np.empty(n_cells)
    a = np.empty(n_cells)
    A = np.zeros(n_top)
    B = np.zeros(n_top)
    for k in range(n_cells):
        residual_sum = cell_sum_y[k]
        for j in range(q):
            residual_sum -= cell_w[k, j] * gamma[j]
        s[k] = residual_sum
        n = cell_n[k]
        a[k] = v + n * t
        F += (n - 1.0) * math.log(v) + math.log(a[k]) - t * residual_sum * residual_sum / (v * a[k])
        if two_levels:
            A[cell_top[k]] += n / a[k]
            B[cell_top[k]] += residual_sum / a[k]
    D = np.ones(n_top)
    dF_dA = np.zeros(n_top)
    dF_dB = np.zeros(n_top)
    if two_levels:
        for j in range(n_top):
            D[j] = 1.0 + u * A[j]
            F += math.log(D[j]) - u * B[j] * B[j] / D[j]
            dF_dA[j] = u / D[j] + (u * B[j] / D[j]) ** 2
            dF_dB[j] = -2.0 * u * B[j] / D[j]
            dF_du += A[j] / D[j] - (B[j] / D[j]) ** 2
    for k in range(n_cells):
        n = cell_n[k]
        ak = a[k]
        sk = s[k]
        # through f_k directly
        dF_ds = -2.0 * t * sk / (v * ak)
        dF_dv += (n - 1.0) / v + 1.0 / ak + t * sk * sk * (ak + v) / (v * ak) ** 2
        dF_dt += n / ak - sk * sk / (v * ak) + t * sk * sk * n / (v * ak * ak)
        if two_levels:
            j = cell_top[k]
            dF_ds += dF_dB[j] / ak
            dF_da = -(dF_dA[j] * n + dF_dB[j] * sk) / (ak * ak)
            dF_dv += dF_da
            dF_dt += dF_da * n
        for i in range(q):
            dF_dgamma[i] -= dF_ds * cell_w[k, i]
    logp = -0.5 * F
    grad = np.zeros(theta.shape[0])
    for i in range(q):
        grad[i] = -0.5 * dF_dgamma[i]
    # ∂/∂log σ = 2v ∂/∂v, likewise for the τ's
    grad[q + n_groups] = -0.5 * dF_dv * 2.0 * v
    grad[q + n_groups - 1] = -0.5 * dF_dt * 2.0 * t
    if two_levels:
        grad[q] = -0.5 * dF_du * 2.0 * u
    logp += _add_location_and_scale_priors(theta, grad, q, n_groups, dens)
    return logp, grad


# ------------------------------------------------------------- packing into (data, index)
# The sampler kernels take every log density with one signature (engine.nuts.LOGP_SIGNATURE):
# (theta, data float64[:], index int64[:]). The model's arrays are packed into those two here and
# unpacked (as views, no copies) at the top of each evaluation.
#   index: [q, G, K, L or n_top, cell integers (K*G cell_levels or K cell_top), level_group (L;
#           non-centred only), gamma_family (q), sd_family (G)]
#   data:  [yty, n_obs, cell_n (K), cell_sum_y (K), cell_w (K*q), wtw (q*q), wty (q),
#           gamma_nu, gamma_mu, gamma_scale (q each), sd_nu, sd_mu, sd_scale (G each), sigma_prior (4)]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def unpack_priors(data, o, gamma_family, sd_family):
    """The priors of gamma (q = len(gamma_family)) and of the G = len(sd_family) group SDs viewed in
    the packed ``data`` from offset o: [gamma nu, mu, scale (q each), sd nu, mu, scale (G each)], the
    layout every packed NUTS target uses. Returns (gamma_prior, sd_prior: PriorArrays, offset after)."""
    q = gamma_family.shape[0]
    n_groups = sd_family.shape[0]
    gamma_prior = PriorArrays(gamma_family, data[o:o + q], data[o + q:o + 2 * q], data[o + 2 * q:o + 3 * q])
    o += 3 * q
    sd_prior = PriorArrays(sd_family, data[o:o + n_groups], data[o + n_groups:o + 2 * n_groups],
                           data[o + 2 * n_groups:o + 3 * n_groups])
    return gamma_prior, sd_prior, o + 3 * n_groups


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _unpack_data(data, q, n_groups, n_cells, gamma_family, sd_family):
    """The DensityData viewed in the packed ``data`` (no copies)."""
    o = 2
    cell_n = data[o:o + n_cells]
    o += n_cells
    cell_sum_y = data[o:o + n_cells]
    o += n_cells
    cell_w = data[o:o + n_cells * q].reshape((n_cells, q))
    o += n_cells * q
    wtw = data[o:o + q * q].reshape((q, q))
    o += q * q
    wty = data[o:o + q]
    o += q
    gamma_prior, sd_prior, o = unpack_priors(data, o, gamma_family, sd_family)
    sigma_prior = data[o:o + 4]
    return DensityData(cell_n, cell_sum_y, cell_w, wtw, wty, data[0], data[1], gamma_prior, sd_prior, sigma_prior)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def noncentred_log_density(theta, data, index):
    """noncentred_logp_and_grad on packed (data, index) (engine.nuts.LOGP_SIGNATURE)."""
    q, n_groups, n_cells, n_levels = index[0], index[1], index[2], index[3]
    o = 4
    cell_levels = index[o:o + n_cells * n_groups].reshape((n_cells, n_groups))
    o += n_cells * n_groups
    level_group = index[o:o + n_levels]
    o += n_levels
    gamma_family = index[o:o + q]
    sd_family = index[o + q:o + q + n_groups]
    dens = _unpack_data(data, q, n_groups, n_cells, gamma_family, sd_family)
    return noncentred_logp_and_grad(theta, q, n_groups, cell_levels, level_group, dens)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def collapsed_log_density(theta, data, index):
    """collapsed_logp_and_grad on packed (data, index) (engine.nuts.LOGP_SIGNATURE)."""
    q, n_groups, n_cells, n_top = index[0], index[1], index[2], index[3]
    o = 4
    cell_top = index[o:o + n_cells]
    o += n_cells
    gamma_family = index[o:o + q]
    sd_family = index[o + q:o + q + n_groups]
    dens = _unpack_data(data, q, n_groups, n_cells, gamma_family, sd_family)
    return collapsed_logp_and_grad(theta, q, n_groups, cell_top, n_top, dens)


_LOG_DENSITIES = {}


def _log_density(marginalize: bool) -> LogDensity:
    """The (cached, process-wide) first-class function value of a density."""
    if marginalize not in _LOG_DENSITIES:
        _LOG_DENSITIES[marginalize] = LogDensity(collapsed_log_density if marginalize else noncentred_log_density)
    return _LOG_DENSITIES[marginalize]


def _packed_data(model: MultilevelModel, inputs) -> np.ndarray:
    parts = [np.array([float(model.yty), float(model.n_obs)]), model.cell_n, model.cell_sum_y,
             inputs.cell_w.reshape(-1), inputs.wtw.reshape(-1), inputs.wty, inputs.gamma_prior.nu,
             inputs.gamma_prior.mu, inputs.gamma_prior.scale, model.sd_prior_nu, model.sd_prior_mu, model.sd_prior_scale, model.sigma_prior]
    return np.ascontiguousarray(np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts]))


def noncentred_args(model: MultilevelModel) -> tuple:
    """(data, index) of noncentred_log_density for ``model``."""
    inputs = location_inputs(model)
    q = int(model.has_intercept) + model.n_coef
    header = [q, model.n_groups, model.n_cells, model.n_levels_total]
    index = np.concatenate([np.array(header), np.asarray(model.cell_levels).reshape(-1),
                            np.asarray(model.level_group).reshape(-1), inputs.gamma_prior.family,
                            np.asarray(model.sd_prior_family).reshape(-1)]).astype(np.int64)
    return _packed_data(model, inputs), np.ascontiguousarray(index)


def check_collapsible(model: MultilevelModel) -> None:
    """marginalize=True handles one grouping factor or two nested ones."""
    if model.n_groups > 2 or model.n_blocks > 1 or (model.n_groups == 2 and not model.nested[1]):
        raise ModelSpecError(
            f"random intercepts for {', '.join(model.group_names)} are not supported with marginalize=True "
            "(only one grouping factor or two nested ones, as (1 | school/class)); use marginalize=False")


def collapsed_args(model: MultilevelModel) -> tuple:
    """(data, index) of collapsed_log_density for ``model`` (one factor or two nested)."""
    check_collapsible(model)
    inputs = location_inputs(model)
    q = int(model.has_intercept) + model.n_coef
    header = [q, model.n_groups, model.n_cells, int(model.n_levels[0])]
    index = np.concatenate([np.array(header), np.asarray(model.cell_levels)[:, 0], inputs.gamma_prior.family,
                            np.asarray(model.sd_prior_family).reshape(-1)]).astype(np.int64)
    return _packed_data(model, inputs), np.ascontiguousarray(index)


def unconstrained_dimension(model: MultilevelModel, marginalize: bool) -> int:
    q = int(model.has_intercept) + model.n_coef
    return q + model.n_groups + 1 + (0 if marginalize else model.n_levels_total)


def initial_values(model: MultilevelModel, rng: np.random.Generator, marginalize: bool) -> np.ndarray:
    """Stan's uniform(−2, 2) initialisation on the unconstrained scale, centred on the data's scale
    (b0_c at mean(y), log σ and log τ at log sd(y)) so that it works for responses in any units."""
    q = int(model.has_intercept) + model.n_coef
    dimension = unconstrained_dimension(model, marginalize)
    theta = rng.uniform(-2.0, 2.0, size=dimension)
    spread = float(np.std(model.y)) or 1.0
    if model.has_intercept:
        theta[0] = float(np.mean(model.y)) + spread * theta[0]
    theta[1 if model.has_intercept else 0:q] *= 0.1  # coefficients near 0, in the response's units / x
    theta[q:q + model.n_groups + 1] = math.log(spread) + 0.5 * theta[q:q + model.n_groups + 1]
    return theta


def to_canonical(model: MultilevelModel, theta_draws: np.ndarray) -> np.ndarray:
    """Unconstrained draws (n, dim) -> canonical draws (b_Intercept uncentred, b, sd, sigma)."""
    q = int(model.has_intercept) + model.n_coef
    G = model.n_groups
    out = np.empty((theta_draws.shape[0], model.n_params))
    out[:, :q] = theta_draws[:, :q]
    if model.has_intercept:
        out[:, 0] = theta_draws[:, 0] - theta_draws[:, 1:q] @ np.asarray(model.x_means, dtype=float)
    out[:, q:q + G + 1] = np.exp(theta_draws[:, q:q + G + 1])
    return out


SEARCH_FAILED_MESSAGE = "NUTS step-size search failed (the posterior may be improper: check flat priors)"


def drive_chain(target: LogDensity, args: tuple, rng: np.random.Generator, theta0: np.ndarray, n_iter: int,
                n_warmup: int, adapt_delta: float, max_treedepth: int, metric: str,
                search_failed: str = SEARCH_FAILED_MESSAGE) -> tuple:
    """The one NUTS chain driver of the model layer (non-centred, collapsed, slopes and GLM targets).

    ``target(theta, *args)`` is a LogDensity (engine.nuts) over packed arrays; ``theta0`` (d,) the
    unconstrained start, drawn by the caller from ``rng`` before this call (the stream's order fixes
    the draws). Checks the start is finite, runs engine.nuts.run_chain with Stan's windowed
    adaptation (engine.hmc.adaptation), and returns (post-warm-up positions (n_iter - n_warmup, d),
    stats {STAT_NAMES: (n_iter - n_warmup,), n_leapfrog_warmup (1,), final_stepsize (1,)}).
    """
    logp0, grad0 = target(theta0, *args)
    if not (np.isfinite(logp0) and np.all(np.isfinite(grad0))):
        raise SamplerError("the log posterior is not finite at the initial values")
    windows = adaptation_windows(n_warmup)
    first = np.array([w[0] for w in windows], dtype=np.int64)
    last = np.array([w[1] for w in windows], dtype=np.int64)
    workspace = make_workspace(theta0.shape[0], max_treedepth)
    status, positions, stats, step_size, _ = run_chain(
        target, args, rng, theta0, int(n_iter), int(n_warmup), float(adapt_delta), int(max_treedepth),
        metric == "dense", first, last, 1.0, workspace)
    if status == STEP_SIZE_SEARCH_FAILED:
        raise SamplerError(search_failed)
    out_stats = {name: stats[n_warmup:, i].copy() for i, name in enumerate(STAT_NAMES)}
    out_stats["treedepth"] = out_stats["treedepth"].astype(np.int64)
    out_stats["n_leapfrog"] = out_stats["n_leapfrog"].astype(np.int64)
    out_stats["divergent"] = out_stats["divergent"].astype(bool)
    out_stats["n_leapfrog_warmup"] = np.array([int(stats[:n_warmup, 2].sum())])
    out_stats["final_stepsize"] = np.array([step_size])
    return positions[n_warmup:], out_stats


def finite_draws(draws: np.ndarray) -> np.ndarray:
    """``draws`` (canonical, (n, p)) unchanged, or a SamplerError when any is not finite."""
    if not np.all(np.isfinite(draws)):
        raise SamplerError("NUTS produced non-finite draws")
    return draws


def chain_result(draws: np.ndarray, ranef: np.ndarray, stats: dict, thin: int) -> ChainResult:
    """ChainResult of canonical draws (n, p), ranef (n, L) and per-draw stats, keeping rows 0, thin, ..."""
    keep = slice(None, None, int(thin))
    return ChainResult(draws[keep], ranef[keep], thin_stats(stats, draws.shape[0], keep))


def sample_chain(model: MultilevelModel, n_iter: int, n_warmup: int, seed=None, marginalize: bool = False,
                 adapt_delta: float = 0.8, max_treedepth: int = 10, metric: str = "diag", init=None,
                 save_ranef: bool = True, thin: int = 1) -> ChainResult:
    """One NUTS chain for the multilevel model (the contract of interfaces.md).

    Returns ChainResult(draws (n_iter − n_warmup, n_params) canonical, ranef (n_iter − n_warmup, L),
    stats {name: (n_iter − n_warmup,)} with Stan's names plus ``n_leapfrog_warmup`` (a length-1 array:
    gradient evaluations spent in warm-up)). ``init``: optional unconstrained start θ.
    Sampler warnings (divergences, tree depth) are the caller's to raise from the stats. ``thin``:
    keep post-warm-up iterations 0, thin, 2 thin, ... (the per-draw statistics with them).
    """
    if not isinstance(model, MultilevelModel):
        raise ModelSpecError("sample_chain needs a MultilevelModel (engine.multilevel.build_model)")
    try:
        validate_options(n_iter, n_warmup, adapt_delta, max_treedepth, metric)
    except EngineInputError as error:  # the model layer's samplers raise ModelSpecError (as engine.gibbs)
        raise ModelSpecError(str(error)) from None
    if model.has_slopes:  # brms' non-centred parametrisation, or collapsed (one grouping factor or two nested ones)
        from engine.multilevel.nuts_slopes import slopes_sample_chain

        return slopes_sample_chain(model, n_iter, n_warmup, seed, adapt_delta, max_treedepth, metric, init,
                                   save_ranef, thin, marginalize=bool(marginalize))
    if marginalize and model.n_groups == 0:
        marginalize = False  # nothing to integrate out: both densities coincide
    args = collapsed_args(model) if marginalize else noncentred_args(model)
    target = _log_density(marginalize)
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    nuts_seed, ranef_seed = sequence.spawn(2)
    rng = np.random.Generator(np.random.PCG64(nuts_seed))
    if init is None:
        theta0 = initial_values(model, rng, marginalize)
    else:
        theta0 = np.asarray(init, dtype=np.float64).reshape(-1)
        if theta0.shape != (unconstrained_dimension(model, marginalize),):
            raise ModelSpecError(f"init must have length {unconstrained_dimension(model, marginalize)}")
    kept, out_stats = drive_chain(target, args, rng, theta0, n_iter, n_warmup, adapt_delta, max_treedepth, metric)
    draws = finite_draws(to_canonical(model, kept))
    if not save_ranef:
        ranef = np.empty((draws.shape[0], 0))
    elif marginalize:
        ranef = draw_ranef(model, draws, seed=ranef_seed)
    else:
        q = int(model.has_intercept) + model.n_coef
        tau = np.exp(kept[:, q:q + model.n_groups])
        ranef = tau[:, np.asarray(model.level_group)] * kept[:, q + model.n_groups + 1:]
    return chain_result(draws, ranef, out_stats, thin)


class NutsSampler:
    """NUTS on the multilevel model as an engine.multilevel.sampler.Sampler (``sampler="nuts"``)."""

    name = "nuts"
    options = {"marginalize": False, "adapt_delta": 0.8, "max_treedepth": 10, "metric": "diag", "init": None,
               "save_ranef": True}

    def run_chain(self, model, n_iter, n_warmup, seed, thin=1, **options) -> ChainResult:
        return sample_chain(model, n_iter, n_warmup, seed, thin=thin, **options)


NUTS = register_sampler(NutsSampler())
