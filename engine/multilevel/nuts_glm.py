"""NUTS for the bernoulli, binomial and poisson multilevel models (non-centred, as brms parametrises them).

Model (engine.multilevel.families.GLMModel; arrays of engine.multilevel.MultilevelModel): for row i with
design row w_i = (1, x_c,i) (centred as brms centres) and levels l_g(i),

    eta_i = w_i' gamma + sum_g tau_g z_{l_g(i)},   z_l ~ N(0, 1),
    bernoulli / binomial: y_i ~ Binomial(n_i, logit^-1(eta_i));   poisson: y_i ~ Poisson(exp(eta_i)),

with gamma = (b0_c, beta) under the model's priors (Intercept on b0_c, b on beta) and tau_g under its
sd prior (truncated to (0, inf)), sampled as log tau_g with the Jacobian. Unconstrained parameters
theta = (gamma (q), log tau (G), z (L)): the non-centred parametrisation of brms' Stan program
(r = sd * z; Papaspiliopoulos, Roberts & Sköld 2007), with the same priors, so the posterior is
brms'. No likelihood reduces to cell sums here, but rows that share their design row and levels
share eta and are merged first (aggregate_rows; exact up to a constant). An evaluation then costs
O(M (q + G) + L) for the M <= N distinct rows, in four passes over them (the row passes below:
eta, the log-likelihood with its derivative d_i = y_i - n_i logistic(eta_i) or y_i - m_i exp(eta_i)
from rows_log_lik, W'd, and the level sums of d).

The density has engine.nuts' fixed signature (theta, data, index), so the cached NUTS kernel
(Stan's adaptation, multinomial NUTS, engine.nuts.run_chain) serves it without recompiling.

Random slopes (``(1 + x | g)``): glm_slopes_log_density, the same row passes on
engine.multilevel.nuts_slopes' term kernels (r = diag(sd) L z, CPCs with the LKJ prior).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._vecmath import dot_reassoc, exp_value, log1p_and_reciprocal
from engine.errors import EngineInputError, ModelSpecError
from engine.multilevel.families import POISSON, GLMModel, design_matrix
from engine.multilevel.location import location_inputs
from engine.multilevel.nuts_slopes import (add_priors, backprop_terms, coefficients, group_sds, layout,
                                          max_group_dim, term_factors, z_starts)
from engine.multilevel.nuts_target import chain_result, drive_chain, finite_draws, log_prior
from engine.multilevel.sampler import ChainResult, register_sampler
from engine.nuts import LogDensity, validate_options

__all__ = ["NUTS_GLM", "GLMNutsSampler", "sample_chain"]


# ------------------------------------------------------------------------------- the row passes
# Both likelihoods (random intercepts, random slopes) run the same four passes over the M merged rows,
# stored column by column (W', codes' as (q, M), (G, M)): the linear predictor (fixed part, then each
# level's contribution), the per-row log-likelihood and its derivative d_i, the fixed effects' gradient
# W'd and the levels' sums of d. They are faster than one fused loop over the rows because each sum
# then lives in a register (a fused loop accumulated q + G sums through memory, one store-to-load wait
# per row and sum) and the fixed part, the exponentials and logarithms (engine._vecmath) and the
# per-row terms vectorise across rows. The log density sums its terms in row order (as libm's exp and
# log1p would give it, to an ulp of theirs); W'd is reassociated (vector partial sums), so the
# gradient differs from a left-to-right sum by rounding only.


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def logistic_terms(y, trials, eta, e):
    """(log-likelihood up to a constant, its derivative in eta) of one merged bernoulli / binomial row,
    given e = exp(-|eta|): y log p + (n - y) log(1 - p) = y eta - n log(1 + e^eta)
    = y eta - n (max(eta, 0) + log1p(e)), derivative y - n logistic(eta) = y - n (1 or e) / (1 + e)
    (eta > 0 or not). Selects, no branch; 1 / (1 + e) is log1p's own reciprocal (one division)."""
    positive = eta > 0.0
    log1p_e, inverse = log1p_and_reciprocal(e)
    softplus = (eta if positive else 0.0) + log1p_e
    return y * eta - trials * softplus, y - trials * (1.0 if positive else e) * inverse


@numba.njit(cache=True, nogil=True, error_model="numpy")
def fixed_predictor(Wt, theta, q):
    """eta (M,) = W gamma, gamma = theta[:q], Wt (>= q, M): each row's sum in coefficient order."""
    n = Wt.shape[1]
    eta = np.zeros(n)
    for a in range(q):
        coefficient = theta[a]
        column = Wt[a]
        for i in range(n):
            eta[i] += column[i] * coefficient
    return eta


@numba.njit(cache=True, nogil=True, error_model="numpy")
def rows_log_lik(family, y, trials, eta, d):
    """Sum over the merged rows of the log-likelihood (up to a constant); d (M,) <- each row's
    derivative in eta: logistic_terms, or for poisson with multiplicity m (``trials``)
    y eta - m e^eta, derivative y - m e^eta.

    engine._vecmath's exp and log1p (within an ulp of libm's) with selects for branches, in loops
    that carry no sum, so LLVM vectorises them: the exponentials (into d), then the terms and
    derivatives, then the sum of the terms in row order (kept: reassociated it saved ~0.7 of ~8 us
    per gradient on the binary model but moved the log density by up to 2.5e-15 relative).
    """
    n = eta.shape[0]
    terms = np.empty(n)
    if family == POISSON:
        for i in range(n):
            d[i] = exp_value(eta[i])
        for i in range(n):
            mean = trials[i] * d[i]  # trials: how many identical rows this one stands for
            terms[i] = y[i] * eta[i] - mean
            d[i] = y[i] - mean
    else:  # bernoulli and binomial
        for i in range(n):
            d[i] = exp_value(-abs(eta[i]))
        for i in range(n):
            terms[i], d[i] = logistic_terms(y[i], trials[i], eta[i], d[i])
    total = 0.0
    for i in range(n):
        total += terms[i]
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def fixed_gradient(Wt, d, q, grad):
    """grad[a] <- sum_i d_i W[i, a] for a < q: one reassociated (vectorised) dot product per column."""
    for a in range(q):
        grad[a] = dot_reassoc(d, Wt[a])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def add_by_level(levels, values, out, c):
    """out[levels[i], c] += values[i] in row order. A run of rows at one level (the rows are sorted
    by their levels, so the outer factor's and nested factors' levels come in runs) is summed in a
    register, carried on from out[level, c]: the same additions in the same order as one at a time."""
    n = levels.shape[0]
    if n == 0:
        return
    level = levels[0]
    total = out[level, c]
    for i in range(n):
        if levels[i] != level:
            out[level, c] = total
            level = levels[i]
            total = out[level, c]
        total += values[i]
    out[level, c] = total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def glm_logp_and_grad(theta, family, y, trials, Wt, codes, level_group, gamma_family, gamma_nu, gamma_mu,
                      gamma_scale, sd_family, sd_nu, sd_mu, sd_scale):
    """Log posterior (up to a constant) and gradient in theta = (gamma (q), log tau (G), z (L)).

    y, trials: (N,) (trials: binomial trials, or for poisson how many identical rows a row stands for);
    Wt: (q, N) the design by columns; codes: (G, N) global level indices; level_group: (L,).
    """
    q = Wt.shape[0]
    n_groups = codes.shape[0]
    n_levels = level_group.shape[0]
    grad = np.zeros(theta.shape[0])
    tau = np.empty(n_groups)  # one exponential per group, not two per level
    for g in range(n_groups):
        tau[g] = math.exp(theta[q + g])
    r = np.empty(n_levels)
    for l in range(n_levels):
        r[l] = tau[level_group[l]] * theta[q + n_groups + l]
    eta = fixed_predictor(Wt, theta, q)
    for g in range(n_groups):
        levels = codes[g]
        for i in range(eta.shape[0]):
            eta[i] += r[levels[i]]
    d = np.empty(eta.shape[0])
    logp = rows_log_lik(family, y, trials, eta, d)
    fixed_gradient(Wt, d, q, grad)
    grad_r = np.zeros((n_levels, 1))
    for g in range(n_groups):
        add_by_level(codes[g], d, grad_r, 0)
    for l in range(n_levels):
        g = level_group[l]
        z = theta[q + n_groups + l]
        grad[q + n_groups + l] = grad_r[l, 0] * tau[g] - z
        grad[q + g] += grad_r[l, 0] * r[l]
        logp -= 0.5 * z * z
    for a in range(q):
        lp, d_prior = log_prior(theta[a], gamma_family[a], gamma_nu[a], gamma_mu[a], gamma_scale[a])
        logp += lp
        grad[a] += d_prior
    for g in range(n_groups):
        lp, d_prior = log_prior(tau[g], sd_family[g], sd_nu[g], sd_mu[g], sd_scale[g])
        logp += lp + theta[q + g]
        grad[q + g] += d_prior * tau[g] + 1.0
    return logp, grad


@numba.njit(cache=True, nogil=True, error_model="numpy")
def glm_log_density(theta, data, index):
    """glm_logp_and_grad on packed (data, index) (engine.nuts.LOGP_SIGNATURE).

    index = [N, q, G, L, family, codes (G N), level_group (L), gamma_family (q), sd_family (G)];
    data = [y (N), trials (N), W' (q N), gamma nu, mu, scale (q each), sd nu, mu, scale (G each)].
    """
    n, q, n_groups, n_levels, family = index[0], index[1], index[2], index[3], index[4]
    o = 5
    codes = index[o:o + n * n_groups].reshape((n_groups, n))
    o += n * n_groups
    level_group = index[o:o + n_levels]
    o += n_levels
    gamma_family = index[o:o + q]
    sd_family = index[o + q:o + q + n_groups]
    y = data[:n]
    trials = data[n:2 * n]
    o = 2 * n
    Wt = data[o:o + n * q].reshape((q, n))
    o += n * q
    gamma_nu, gamma_mu, gamma_scale = data[o:o + q], data[o + q:o + 2 * q], data[o + 2 * q:o + 3 * q]
    o += 3 * q
    sd_nu, sd_mu = data[o:o + n_groups], data[o + n_groups:o + 2 * n_groups]
    sd_scale = data[o + 2 * n_groups:o + 3 * n_groups]
    return glm_logp_and_grad(theta, family, y, trials, Wt, codes, level_group, gamma_family, gamma_nu, gamma_mu,
                             gamma_scale, sd_family, sd_nu, sd_mu, sd_scale)


_TARGET = []


def _target() -> LogDensity:
    """The (process-wide) first-class function value of the density."""
    if not _TARGET:
        _TARGET.append(LogDensity(glm_log_density))
    return _TARGET[0]


def aggregate_rows(model: GLMModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows with the same design row and levels share eta, so they merge without changing the
    likelihood beyond a constant: binomial/bernoulli rows into one binomial row (sum y of sum n
    trials), poisson rows into one row with sum y and multiplicity m (y eta - m exp(eta)).

    Returns (y (M,), trials or multiplicity (M,), W (M, q), codes (M, G) global levels), M <= N.
    """
    base = model.base
    W = design_matrix(base)
    codes = base.group_codes + base.level_offsets[:-1][None, :]
    weight = np.ones(base.n_obs) if model.family.code == POISSON else np.asarray(model.trials, dtype=float)
    keys = np.column_stack([codes.astype(np.float64), W])
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    y = np.bincount(inverse, weights=base.y, minlength=unique.shape[0])
    trials = np.bincount(inverse, weights=weight, minlength=unique.shape[0])
    G = codes.shape[1]
    return (np.ascontiguousarray(y), np.ascontiguousarray(trials), np.ascontiguousarray(unique[:, G:]),
            np.ascontiguousarray(unique[:, :G].astype(np.int64)))


def glm_args(model: GLMModel) -> tuple[np.ndarray, np.ndarray]:
    """(data, index) of glm_log_density for ``model`` (on the aggregated rows of aggregate_rows)."""
    base = model.base
    gamma_prior = location_inputs(base).gamma_prior
    q = int(base.has_intercept) + base.n_coef
    y, trials, W, codes = aggregate_rows(model)
    header = [y.shape[0], q, base.n_groups, base.n_levels_total, model.family.code]
    index = np.concatenate([np.array(header), codes.T.reshape(-1), np.asarray(base.level_group).reshape(-1),
                            gamma_prior.family, np.asarray(base.sd_prior_family).reshape(-1)]).astype(np.int64)
    parts = [y, trials, W.T.reshape(-1), gamma_prior.nu, gamma_prior.mu,
             gamma_prior.scale, base.sd_prior_nu, base.sd_prior_mu, base.sd_prior_scale]
    data = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])
    return np.ascontiguousarray(data), np.ascontiguousarray(index)


def unconstrained_dimension(model: GLMModel) -> int:
    base = model.base
    return int(base.has_intercept) + base.n_coef + base.n_groups + base.n_levels_total


def initial_values(model: GLMModel, rng: np.random.Generator) -> np.ndarray:
    """Stan's uniform(-2, 2) on the unconstrained scale, with the intercept about the location of its
    default prior (the link of the response's median) and coefficients scaled by 0.1 / sd(x), so that
    eta starts within a few units whatever the covariates' units."""
    base = model.base
    q = int(base.has_intercept) + base.n_coef
    theta = rng.uniform(-2.0, 2.0, size=unconstrained_dimension(model))
    first = 0
    if base.has_intercept:
        first = 1
        ip = base.intercept_prior
        if int(ip[0]) != 0:
            theta[0] += ip[2]
    spread = base.X_c.std(axis=0) if base.n_coef else np.zeros(0)
    theta[first:q] *= 0.1 / np.where(spread > 0, spread, 1.0)
    return theta


def to_canonical(model: GLMModel, theta_draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unconstrained draws (S, dim) -> (canonical draws (S, n_params), random effects (S, L))."""
    base = model.base
    q = int(base.has_intercept) + base.n_coef
    G = base.n_groups
    out = np.empty((theta_draws.shape[0], q + G))
    out[:, :q] = theta_draws[:, :q]
    if base.has_intercept:
        out[:, 0] = theta_draws[:, 0] - theta_draws[:, 1:q] @ np.asarray(base.x_means, dtype=float)
    tau = np.exp(theta_draws[:, q:q + G])
    out[:, q:] = tau
    ranef = tau[:, np.asarray(base.level_group)] * theta_draws[:, q + G:]
    return out, ranef


# ------------------------------------------------------------------------------- random slopes
# theta = (gamma (q_fix), log sd (S), CPCs (C), z (R)): brms' non-centred parametrisation of
# engine.multilevel.nuts_slopes without sigma; level l of term t has r_l = diag(sd_t) L_t z_l. The
# term structure, r = D L z and its chain rule (LKJ prior included) are nuts_slopes' kernels, run on
# the same packed layout (slopes_args, read through its layout from a slice); only the likelihood differs:
# it is over the (aggregated) rows, eta_i = w_i' gamma + sum_g z_{g,i}' r_g[l_g(i)], with
# d log p / d eta_i (rows_log_lik) summed into gamma and the levels' coefficients by the row passes.


@numba.njit(cache=True, nogil=True, error_model="numpy")
def glm_slopes_log_density(theta, data, index):
    """Log posterior and gradient of a GLM with random slopes on packed (data, index) (engine.nuts'
    signature). index = [N, Q, family, data start of the slopes layout, its index start, codes (G N),
    slopes index]; data = [y (N), trials (N), U' (Q N), U = [w, Z], slopes data] (glm_slopes_args)."""
    n, m, family, data_start, index_start = index[0], index[1], index[2], index[3], index[4]
    s_data, s_index = data[data_start:], index[index_start:]  # the slopes layout (views)
    lay = layout(s_index)
    n_groups = lay.G
    codes = index[5:5 + n * n_groups].reshape((n_groups, n))
    y = data[:n]
    trials = data[n:2 * n]
    Ut = data[2 * n:2 * n + n * m].reshape((m, n))
    qf = lay.qf
    dims, z_off = lay.dims, lay.z_off
    qm = max_group_dim(s_index, lay)
    first_z = qf + lay.S + lay.C
    zg = z_starts(s_index, lay, first_z)
    grad = np.zeros(theta.shape[0])
    chol, cpc_pos = term_factors(theta, s_index, lay, qm)
    sd = group_sds(theta, lay)
    r = coefficients(theta, s_index, lay, chol, zg, sd, qm)
    eta = fixed_predictor(Ut, theta, qf)
    for g in range(n_groups):
        levels = codes[g]
        col = qf + s_index[z_off + g]
        for c in range(s_index[dims + g]):
            column = Ut[col + c]
            for i in range(n):
                eta[i] += column[i] * r[levels[i], c]
    d = np.empty(n)
    logp = rows_log_lik(family, y, trials, eta, d)
    fixed_gradient(Ut, d, qf, grad)
    grad_r = np.zeros((lay.L, qm))
    weighted = np.empty(n)
    for g in range(n_groups):
        col = qf + s_index[z_off + g]
        for c in range(s_index[dims + g]):
            column = Ut[col + c]
            for i in range(n):
                weighted[i] = d[i] * column[i]
            add_by_level(codes[g], weighted, grad_r, c)
    logp += backprop_terms(theta, grad, s_data, s_index, lay, chol, cpc_pos, zg, sd, r, grad_r)
    for i in range(first_z, theta.shape[0]):
        logp -= 0.5 * theta[i] * theta[i]
        grad[i] -= theta[i]
    return logp + add_priors(theta, grad, s_data, s_index, lay, -1), grad


def _aggregate_slopes_rows(model: GLMModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """aggregate_rows with the random design: rows sharing (levels, w, z) merge. Returns (y (M,),
    trials or multiplicity (M,), U (M, Q) = [w, Z], codes (M, G) global levels)."""
    base = model.base
    U = np.column_stack([design_matrix(base), base.Z])
    codes = base.group_codes + base.level_offsets[:-1][None, :]
    weight = np.ones(base.n_obs) if model.family.code == POISSON else np.asarray(model.trials, dtype=float)
    unique, inverse = np.unique(np.column_stack([codes.astype(np.float64), U]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    y = np.bincount(inverse, weights=base.y, minlength=unique.shape[0])
    trials = np.bincount(inverse, weights=weight, minlength=unique.shape[0])
    G = codes.shape[1]
    return (np.ascontiguousarray(y), np.ascontiguousarray(trials), np.ascontiguousarray(unique[:, G:]),
            np.ascontiguousarray(unique[:, :G].astype(np.int64)))


def glm_slopes_args(model: GLMModel) -> tuple[np.ndarray, np.ndarray]:
    """(data, index) of glm_slopes_log_density (the layout in its docstring)."""
    from engine.multilevel.nuts_slopes import slopes_args

    y, trials, U, codes = _aggregate_slopes_rows(model)
    slopes_data, slopes_index = slopes_args(model.base)
    n, m = U.shape
    rows = np.concatenate([y, trials, U.T.reshape(-1)])
    header = np.array([n, m, model.family.code, rows.shape[0], 5 + codes.size], dtype=np.int64)
    index = np.concatenate([header, codes.T.reshape(-1), slopes_index]).astype(np.int64)
    data = np.concatenate([rows, slopes_data]).astype(np.float64)
    return np.ascontiguousarray(data), np.ascontiguousarray(index)


def _slopes_dimension(model: GLMModel) -> int:
    from engine.multilevel.nuts_slopes import slopes_unconstrained_dimension

    return slopes_unconstrained_dimension(model.base) - 1  # no log sigma


def _slopes_initial_values(model: GLMModel, rng: np.random.Generator) -> np.ndarray:
    """Stan's uniform(-2, 2), the intercept about its prior's location, coefficients scaled by
    0.1 / sd(x) and each log sd shifted by -log sd(z) (a slope's sd on the scale of its column)."""
    base = model.base
    q = int(base.has_intercept) + base.n_coef
    theta = rng.uniform(-2.0, 2.0, size=_slopes_dimension(model))
    first = 0
    if base.has_intercept:
        first = 1
        ip = base.intercept_prior
        if int(ip[0]) != 0:
            theta[0] += ip[2]
    spread = base.X_c.std(axis=0) if base.n_coef else np.zeros(0)
    theta[first:q] *= 0.1 / np.where(spread > 0, spread, 1.0)
    column_sd = np.std(base.Z, axis=0)
    theta[q:q + base.n_sd] -= np.log(np.where(column_sd > 0, column_sd, 1.0))
    return theta


def _slopes_to_canonical(model: GLMModel, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """nuts_slopes' canonical map with a zero log sigma slotted in (and its sigma column dropped)."""
    from engine.multilevel.nuts_slopes import to_canonical as slopes_to_canonical

    base = model.base
    at = int(base.has_intercept) + base.n_coef + base.n_sd + base.n_cor
    widened = np.concatenate([kept[:, :at], np.zeros((kept.shape[0], 1)), kept[:, at:]], axis=1)
    draws, ranef = slopes_to_canonical(base, widened)
    return np.ascontiguousarray(draws[:, :-1]), ranef


_SLOPES_TARGET = []


def _slopes_target() -> LogDensity:
    if not _SLOPES_TARGET:
        _SLOPES_TARGET.append(LogDensity(glm_slopes_log_density))
    return _SLOPES_TARGET[0]


def sample_chain(model: GLMModel, n_iter: int, n_warmup: int, seed=None, marginalize: bool = False,
                 adapt_delta: float = 0.8, max_treedepth: int = 10, metric: str = "diag", init=None,
                 save_ranef: bool = True, thin: int = 1) -> ChainResult:
    """One NUTS chain of a GLMModel (bernoulli, binomial, poisson).

    Returns ChainResult(draws (n_iter - n_warmup, n_params) canonical (b_Intercept, b..., sd...),
    ranef (n_iter - n_warmup, L), stats {Stan's names: (n_iter - n_warmup,), n_leapfrog_warmup,
    final_stepsize}). ``marginalize=True`` is refused: the random effects of a non-Gaussian model
    have no closed-form integral. ``init``: optional unconstrained start theta. ``thin``: keep
    post-warm-up iterations 0, thin, 2 thin, ... (the per-draw statistics with them).
    """
    if not isinstance(model, GLMModel):
        raise ModelSpecError("nuts_glm.sample_chain needs a GLMModel (engine.multilevel.families.build_glm_model)")
    if marginalize:
        raise ModelSpecError(f"marginalize=True is not available for the {model.family.name} family: its random "
                             "effects cannot be integrated out in closed form (use marginalize=False)")
    try:
        validate_options(n_iter, n_warmup, adapt_delta, max_treedepth, metric)
    except EngineInputError as error:
        raise ModelSpecError(str(error)) from None
    slopes = bool(model.base.has_slopes)
    args = glm_slopes_args(model) if slopes else glm_args(model)
    target = _slopes_target() if slopes else _target()
    dimension = _slopes_dimension(model) if slopes else unconstrained_dimension(model)
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.Generator(np.random.PCG64(sequence))
    if init is None:
        theta0 = _slopes_initial_values(model, rng) if slopes else initial_values(model, rng)
    else:
        theta0 = np.asarray(init, dtype=np.float64).reshape(-1)
        if theta0.shape != (dimension,):
            raise ModelSpecError(f"init must have length {dimension}")
    kept, out_stats = drive_chain(target, args, rng, theta0, n_iter, n_warmup, adapt_delta, max_treedepth, metric,
                                  search_failed="NUTS step-size search failed (the posterior may be improper: "
                                                "check flat priors and whether a predictor separates the outcomes)")
    draws, ranef = _slopes_to_canonical(model, kept) if slopes else to_canonical(model, kept)
    finite_draws(draws)
    if not save_ranef:
        ranef = np.empty((draws.shape[0], 0))
    return chain_result(draws, ranef, out_stats, thin)


class GLMNutsSampler:
    """Non-centred NUTS as the engine.multilevel.sampler.Sampler ``"nuts"`` of the bernoulli, binomial and
    poisson families (no ``marginalize``: their random effects have no closed-form integral)."""

    name = "nuts"
    families = ("bernoulli", "binomial", "poisson")
    options = {"adapt_delta": 0.8, "max_treedepth": 10, "metric": "diag", "init": None, "save_ranef": True}
    unavailable_options = {"marginalize": "marginalize=True is not available for the {family} family: its random "
                                          "effects have no closed-form integral (use marginalize=False)"}

    def run_chain(self, model, n_iter, n_warmup, seed, thin=1, **options) -> ChainResult:
        return sample_chain(model, n_iter, n_warmup, seed, thin=thin, **options)


NUTS_GLM = register_sampler(GLMNutsSampler())
