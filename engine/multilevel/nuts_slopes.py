"""NUTS for multilevel models with random slopes: brms's non-centred parametrisation (below) and the
collapsed density with the random coefficients integrated out (``marginalize=True``: one grouping factor
or two nested ones; the section "collapsed" further down).

theta = (gamma (q_fix), log sd (S), y (C), log sigma, z (R)): gamma = (b0_c, beta) the centred intercept
and coefficients, one log sd per group-level coefficient (term order), the unconstrained canonical
partial correlations y of every correlated term (engine.multilevel.covariance: z_ij = tanh y_ij, L
row by row), and the standardised coefficients z ~ N(0, 1) (ranef order: per group, per coefficient,
per level). Level l of term t has coefficients r_l = diag(sd_t) L_t z_l (brms's ``r_1 = (diag(sd_1)
* L_1 * z_1)'``). From the per-cell cross-products UU_k, Uy_k of u = (w, z_1, ..., z_G),

    RSS = y'y + sum_k (theta_k' UU_k theta_k - 2 theta_k' Uy_k),   theta_k = (gamma, r of cell k's levels),
    log p = -N log sigma - RSS / (2 sigma^2) - z'z / 2 + log priors + log-Jacobians,

with brms's priors: LKJ(eta) through the CPCs' independent Betas b_j log(1 - z_ij^2) (tanh Jacobian
included), sd and sigma priors with the Jacobian log sd. The gradient is analytic: d RSS / d theta_k =
2 (UU_k theta_k - Uy_k), then the chain rule through r = D L z and the CPC recursion (reverse mode,
row by row). Cost per evaluation O(K Q^2 + R q): independent of N.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._linalg import cholesky_into, inverse_from_cholesky, solve_upper_t
from engine.multilevel.location import location_inputs
from engine.multilevel.nuts_target import log_prior

# The small interface engine.multilevel.nuts_glm builds its random-slopes likelihoods on: the packed
# layout (slopes_args, layout), the term kernels (term_factors, group_sds, coefficients, backprop_terms),
# the priors (add_priors), the z layout (z_starts, max_group_dim) and the canonical map (to_canonical).
__all__ = ["slopes_args", "slopes_log_density", "slopes_unconstrained_dimension", "slopes_sample_chain",
           "SlopesLayout", "layout", "term_factors", "group_sds", "coefficients", "backprop_terms",
           "add_priors", "z_starts", "max_group_dim", "to_canonical"]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _cpc_forward(theta, pos, q, out):
    """out[:q, :q] <- L from the CPCs theta[pos:pos + q (q - 1) / 2] (row by row, as the module doc)."""
    for i in range(q):
        for j in range(q):
            out[i, j] = 0.0
    out[0, 0] = 1.0
    for i in range(1, q):
        total = 0.0
        for j in range(i):
            w = math.sqrt(max(1.0 - total, 1e-300))
            value = math.tanh(theta[pos]) * w
            pos += 1
            out[i, j] = value
            total += value * value
        out[i, i] = math.sqrt(max(1.0 - total, 1e-300))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _cpc_backward(theta, grad, pos, q, eta, chol, dL):
    """Reverse pass of the CPC recursion: adds d f / d y to grad[pos:] given dL = d f / d L (lower
    triangle, diagonal included); returns the LKJ(eta) log prior of the CPCs (tanh Jacobian included)
    and adds its gradient."""
    logp = 0.0
    for i in range(1, q):
        base = pos + i * (i - 1) // 2
        total = 0.0
        for j in range(i):
            total += chol[i, j] * chol[i, j]
        g_s = dL[i, i] * (-0.5 / max(chol[i, i], 1e-300))  # d L_ii / d s_i
        for j in range(i - 1, -1, -1):
            l_ij = chol[i, j]
            total -= l_ij * l_ij  # s_j
            g_l = dL[i, j] + g_s * 2.0 * l_ij
            w = math.sqrt(max(1.0 - total, 1e-300))
            tj = math.tanh(theta[base + j])
            g_t = g_l * w
            g_s = g_s + g_l * tj * (-0.5 / w)
            beta = eta + 0.5 * (q - 2 - j)
            one_minus = max(1.0 - tj * tj, 1e-300)
            logp += beta * math.log(one_minus)
            grad[base + j] += g_t * one_minus - 2.0 * beta * tj
    return logp


class SlopesLayout(NamedTuple):
    """Sizes and offsets of slopes_args' packed (data, index), integers only: the kernels read the arrays
    through them (a NamedTuple of array views passed to a kernel costs a reference-count update per
    array per call, which made the gradient several times slower than its arithmetic; integers cost
    none). Sizes qf, G, K, n_u, T, L, S (sds), C (CPCs). Offsets into index: cell_levels (K, G), dims
    (G,), z_off and level_offsets (G + 1,), the terms' t_group, t_off, t_dim, t_cor (T,), gamma_family
    (qf,), sd_family (S,). Offsets into data (data[0] = y'y, data[1] = N): uu (K, n_u, n_u), uy
    (K, n_u), g_nu, g_mu, g_scale (qf,), s_nu, s_mu, s_scale (S,), eta (T,), sigma_prior (4,), cell_n
    (K,; collapsed only)."""

    qf: int
    G: int
    K: int
    n_u: int
    T: int
    L: int
    S: int
    C: int
    cell_levels: int
    dims: int
    z_off: int
    level_offsets: int
    t_group: int
    t_off: int
    t_dim: int
    t_cor: int
    gamma_family: int
    sd_family: int
    uu: int
    uy: int
    g_nu: int
    g_mu: int
    g_scale: int
    s_nu: int
    s_mu: int
    s_scale: int
    eta: int
    sigma_prior: int
    cell_n: int


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def layout(index):
    """The SlopesLayout of slopes_args' packed (data, index) (its sizes are read from ``index``)."""
    qf, G, K, n_u, T, L = index[0], index[1], index[2], index[3], index[4], index[5]
    cell_levels = 6
    dims = cell_levels + K * G
    z_off = dims + G
    level_offsets = z_off + G + 1
    t_group = level_offsets + G + 1
    t_off, t_dim, t_cor = t_group + T, t_group + 2 * T, t_group + 3 * T
    gamma_family = t_group + 4 * T
    sd_family = gamma_family + qf
    S = 0
    C = 0
    for t in range(T):
        q = index[t_dim + t]
        S += q
        if index[t_cor + t] == 1:
            C += q * (q - 1) // 2
    uu = 2
    uy = uu + K * n_u * n_u
    g_nu = uy + K * n_u
    s_nu = g_nu + 3 * qf
    eta = s_nu + 3 * S
    return SlopesLayout(qf, G, K, n_u, T, L, S, C, cell_levels, dims, z_off, level_offsets, t_group, t_off, t_dim,
                        t_cor, gamma_family, sd_family, uu, uy, g_nu, g_nu + qf, g_nu + 2 * qf, s_nu, s_nu + S,
                        s_nu + 2 * S, eta, eta + T, eta + T + 4)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def add_priors(theta, grad, data, index, lay, log_sigma_pos):
    """Log priors of gamma, the sds (on log sd, with the Jacobian) and, when ``log_sigma_pos`` >= 0,
    sigma (on log sigma, at that position); gradient added into grad."""
    logp = 0.0
    for a in range(lay.qf):
        lp, g = log_prior(theta[a], index[lay.gamma_family + a], data[lay.g_nu + a], data[lay.g_mu + a],
                          data[lay.g_scale + a])
        logp += lp
        grad[a] += g
    for s in range(lay.S):
        e = theta[lay.qf + s]
        value = math.exp(e)
        lp, g = log_prior(value, index[lay.sd_family + s], data[lay.s_nu + s], data[lay.s_mu + s],
                          data[lay.s_scale + s])
        logp += lp + e
        grad[lay.qf + s] += g * value + 1.0
    if log_sigma_pos < 0:
        return logp
    e = theta[log_sigma_pos]
    value = math.exp(e)
    sp = lay.sigma_prior
    lp, g = log_prior(value, int(data[sp]), data[sp + 1], data[sp + 2], data[sp + 3])
    grad[log_sigma_pos] += g * value + 1.0
    return logp + lp + e


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def term_factors(theta, index, lay, qm):
    """(chol (T, qm, qm) of every term's R, each term's first CPC position in theta)."""
    chol = np.zeros((lay.T, qm, qm))
    cpc_pos = np.empty(lay.T, dtype=np.int64)
    pos = lay.qf + lay.S
    for t in range(lay.T):
        q = index[lay.t_dim + t]
        cpc_pos[t] = pos
        if index[lay.t_cor + t] == 1:
            _cpc_forward(theta, pos, q, chol[t])
            pos += q * (q - 1) // 2
        else:
            for i in range(q):
                chol[t, i, i] = 1.0
    return chol, cpc_pos


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def z_starts(index, lay, first_z):
    """(G,) position in theta of each group's first z (theta's z block starts at ``first_z``)."""
    zg = np.empty(lay.G, dtype=np.int64)
    acc = first_z
    for g in range(lay.G):
        zg[g] = acc
        acc += (index[lay.level_offsets + g + 1] - index[lay.level_offsets + g]) * index[lay.dims + g]
    return zg


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def max_group_dim(index, lay):
    qm = 1
    for g in range(lay.G):
        qm = max(qm, index[lay.dims + g])
    return qm


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def group_sds(theta, lay):
    """(S,) the sds exp(log sd) in term order."""
    sd = np.empty(lay.S)
    for s in range(lay.S):
        sd[s] = math.exp(theta[lay.qf + s])
    return sd


# z of coefficient j of term t at level v (0-based in its group) sits at zg[g] + (t_off + j) * n_levels_g + v.


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def coefficients(theta, index, lay, chol, zg, sd, qm):
    """r (L, qm) = D L z for every term and level (sd: group_sds)."""
    r = np.zeros((lay.L, qm))
    sd_start = 0
    for t in range(lay.T):
        g, q, off = index[lay.t_group + t], index[lay.t_dim + t], index[lay.t_off + t]
        lo = index[lay.level_offsets + g]
        n_lev = index[lay.level_offsets + g + 1] - lo
        base = zg[g] + off * n_lev
        for v in range(n_lev):
            for i in range(q):
                s = 0.0
                for j in range(i + 1):
                    s += chol[t, i, j] * theta[base + j * n_lev + v]
                r[lo + v, off + i] = sd[sd_start + i] * s
        sd_start += q
    return r


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _cell_likelihood(theta, r, data, index, lay, sigma2, grad, grad_r):
    """RSS from the cells; adds d log-likelihood / d gamma into grad and d / d r into grad_r."""
    qf, n_u, G = lay.qf, lay.n_u, lay.G
    uu, uy, cell_levels, dims, z_off = lay.uu, lay.uy, lay.cell_levels, lay.dims, lay.z_off
    rss = data[0]
    th = np.empty(n_u)
    gr = np.empty(n_u)
    half_inv = 0.5 / sigma2
    for a in range(qf):
        th[a] = theta[a]
    for k in range(lay.K):
        for g in range(G):
            v = index[cell_levels + k * G + g]
            col = qf + index[z_off + g]
            for c in range(index[dims + g]):
                th[col + c] = r[v, c]
        for a in range(n_u):
            row = uu + (k * n_u + a) * n_u
            s = 0.0
            for b in range(n_u):
                s += data[row + b] * th[b]
            y_a = data[uy + k * n_u + a]
            rss += th[a] * (s - 2.0 * y_a)
            gr[a] = 2.0 * (s - y_a)
        for a in range(qf):
            grad[a] -= gr[a] * half_inv
        for g in range(G):
            v = index[cell_levels + k * G + g]
            col = qf + index[z_off + g]
            for c in range(index[dims + g]):
                grad_r[v, c] -= gr[col + c] * half_inv
    return rss


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def backprop_terms(theta, grad, data, index, lay, chol, cpc_pos, zg, sd, r, grad_r):
    """Chain rule through r = D L z (into z, log sd and the CPCs) plus the LKJ log prior; returns it.
    grad_r (L, qm): d f / d r; sd: group_sds."""
    logp = 0.0
    sd_start = 0
    for t in range(lay.T):
        g, q, off = index[lay.t_group + t], index[lay.t_dim + t], index[lay.t_off + t]
        lo = index[lay.level_offsets + g]
        n_lev = index[lay.level_offsets + g + 1] - lo
        base = zg[g] + off * n_lev
        sd0 = lay.qf + sd_start
        dL = np.zeros((q, q))
        for v in range(n_lev):
            for i in range(q):
                sd_i = sd[sd_start + i]
                gi = grad_r[lo + v, off + i]
                lz = r[lo + v, off + i] / sd_i if sd_i > 0 else 0.0
                grad[sd0 + i] += gi * sd_i * lz
                dg = gi * sd_i
                for j in range(i + 1):
                    zi = base + j * n_lev + v
                    dL[i, j] += dg * theta[zi]
                    grad[zi] += chol[t, i, j] * dg
        if index[lay.t_cor + t] == 1:
            logp += _cpc_backward(theta, grad, cpc_pos[t], q, data[lay.eta + t], chol[t], dL)
        sd_start += q
    return logp


@numba.njit(cache=True, nogil=True, error_model="numpy")
def slopes_log_density(theta, data, index):
    """Log posterior and gradient on packed (data, index) (engine.nuts.LOGP_SIGNATURE); see slopes_args.

    Steps: the terms' Cholesky factors from the CPCs, r = D L z, the likelihood from the cells, the
    chain rule back through r (LKJ prior included), the N(0, 1) prior of z, the other priors."""
    lay = layout(index)
    qm = max_group_dim(index, lay)
    log_sigma_pos = lay.qf + lay.S + lay.C
    zg = z_starts(index, lay, log_sigma_pos + 1)
    grad = np.zeros(theta.shape[0])
    chol, cpc_pos = term_factors(theta, index, lay, qm)
    sd = group_sds(theta, lay)
    r = coefficients(theta, index, lay, chol, zg, sd, qm)
    sigma2 = math.exp(2.0 * theta[log_sigma_pos])
    grad_r = np.zeros((lay.L, qm))
    rss = _cell_likelihood(theta, r, data, index, lay, sigma2, grad, grad_r)
    logp = -data[1] * theta[log_sigma_pos] - 0.5 * rss / sigma2
    grad[log_sigma_pos] += -data[1] + rss / sigma2
    logp += backprop_terms(theta, grad, data, index, lay, chol, cpc_pos, zg, sd, r, grad_r)
    for i in range(log_sigma_pos + 1, theta.shape[0]):
        logp -= 0.5 * theta[i] * theta[i]
        grad[i] -= theta[i]
    return logp + add_priors(theta, grad, data, index, lay, log_sigma_pos), grad


def _layout(model):
    terms = model.terms
    dims = np.array([t.size for t in terms], dtype=np.int64)
    cor = np.array([1 if (t.correlated and t.size > 1) else 0 for t in terms], dtype=np.int64)
    S = int(dims.sum())
    C = int(np.sum(cor * dims * (dims - 1) // 2))
    R = int(np.sum(np.diff(model.level_offsets) * model.group_dims))
    return dims, cor, S, C, R


def slopes_unconstrained_dimension(model) -> int:
    _, _, S, C, R = _layout(model)
    return int(model.has_intercept) + model.n_coef + S + C + 1 + R


def slopes_args(model) -> tuple[np.ndarray, np.ndarray]:
    """(data, index) of slopes_log_density for ``model`` (offsets: SlopesLayout)."""
    dims, cor, S, C, R = _layout(model)
    inputs = location_inputs(model)
    qf = int(model.has_intercept) + model.n_coef
    K, n_u = model.cell_uu.shape[0], model.cell_uu.shape[1]
    index = np.concatenate([
        [qf, model.n_groups, K, n_u, len(model.terms), model.n_levels_total],
        np.asarray(model.cell_levels).reshape(-1), model.group_dims, model.z_offsets, model.level_offsets,
        [t.group for t in model.terms], [t.offset for t in model.terms], dims, cor,
        inputs.gamma_prior.family, model.sd_prior_family]).astype(np.int64)
    eta = np.where(np.isnan(model.cor_eta), 1.0, model.cor_eta)
    data = np.concatenate([
        [float(model.yty), float(model.n_obs)], model.cell_uu.reshape(-1), model.cell_uy.reshape(-1),
        inputs.gamma_prior.nu, inputs.gamma_prior.mu, inputs.gamma_prior.scale,
        model.sd_prior_nu, model.sd_prior_mu, model.sd_prior_scale, eta, model.sigma_prior]).astype(np.float64)
    return np.ascontiguousarray(data), np.ascontiguousarray(index)


def _initial_values(model, rng) -> np.ndarray:
    """Stan's uniform(-2, 2) on the unconstrained scale, gamma and the log scales centred on the data's scale."""
    dims, cor, S, C, R = _layout(model)
    qf = int(model.has_intercept) + model.n_coef
    theta = rng.uniform(-2.0, 2.0, size=slopes_unconstrained_dimension(model))
    spread = float(np.std(model.y)) or 1.0
    if model.has_intercept:
        theta[0] = float(np.mean(model.y)) + spread * theta[0]
    theta[1 if model.has_intercept else 0:qf] *= 0.1
    column_sd = np.std(model.Z, axis=0)
    column_sd = np.where(column_sd > 0, column_sd, 1.0)
    theta[qf:qf + S] = np.log(spread / column_sd) + 0.5 * theta[qf:qf + S]
    theta[qf + S + C] = math.log(spread) + 0.5 * theta[qf + S + C]
    return theta


def to_canonical(model, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unconstrained draws -> (canonical draws (b, sd, cor, sigma), ranef in ranef_names order)."""
    from engine.multilevel.covariance import cholesky_from_cpc

    dims, cor, S, C, R = _layout(model)
    qf = int(model.has_intercept) + model.n_coef
    n = kept.shape[0]
    out = np.empty((n, model.n_params))
    out[:, :qf] = kept[:, :qf]
    if model.has_intercept:
        out[:, 0] = kept[:, 0] - kept[:, 1:qf] @ np.asarray(model.x_means, dtype=float)
    out[:, qf:qf + S] = np.exp(kept[:, qf:qf + S])
    out[:, -1] = np.exp(kept[:, qf + S + C])
    ranef = np.empty((n, R))
    z0 = qf + S + C + 1
    sd_pos, cpc_pos, cor_out = qf, qf + S, qf + S
    zg = np.concatenate([[0], np.cumsum(np.diff(model.level_offsets) * model.group_dims)]).astype(int)
    for t, term in enumerate(model.terms):
        q, g = term.size, term.group
        n_lev = int(model.level_offsets[g + 1] - model.level_offsets[g])
        Ls = np.empty((n, q, q))
        for i in range(n):
            if cor[t]:
                cholesky_from_cpc(kept[i, cpc_pos:cpc_pos + q * (q - 1) // 2], q, Ls[i])
            else:
                Ls[i] = np.eye(q)
        if cor[t]:
            Rm = Ls @ np.transpose(Ls, (0, 2, 1))
            for a in range(1, q):
                for b in range(a):
                    out[:, cor_out] = Rm[:, b, a]
                    cor_out += 1
            cpc_pos += q * (q - 1) // 2
        z = np.stack([kept[:, z0 + zg[g] + (term.offset + j) * n_lev:z0 + zg[g] + (term.offset + j + 1) * n_lev]
                      for j in range(q)], axis=1)  # (n, q, levels)
        r = np.exp(kept[:, sd_pos:sd_pos + q])[:, :, None] * (Ls @ z)
        for j in range(q):
            start = zg[g] + (term.offset + j) * n_lev
            ranef[:, start:start + n_lev] = r[:, j, :]
        sd_pos += q
    return out, ranef


def slopes_sample_chain(model, n_iter, n_warmup, seed, adapt_delta, max_treedepth, metric, init, save_ranef, thin,
                        marginalize=False):
    """One NUTS chain of the slopes model, non-centred or collapsed (``marginalize``: one grouping factor or
    two nested ones; then the random coefficients are drawn exactly afterwards); called by engine.multilevel.nuts_target.sample_chain."""
    from engine.nuts import LogDensity
    from engine.multilevel.nuts_target import chain_result, drive_chain, finite_draws

    args = collapsed_slopes_args(model) if marginalize else slopes_args(model)
    target = LogDensity(collapsed_slopes_log_density if marginalize else slopes_log_density)
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    nuts_seed, ranef_seed = sequence.spawn(2)
    rng = np.random.Generator(np.random.PCG64(nuts_seed))
    _, _, S, C, R = _layout(model)
    if init is not None:
        theta0 = np.asarray(init, dtype=np.float64).reshape(-1)
    else:
        theta0 = _initial_values(model, rng)
        if marginalize:
            theta0 = theta0[:theta0.shape[0] - R]
    kept, out_stats = drive_chain(target, args, rng, theta0, n_iter, n_warmup, adapt_delta, max_treedepth, metric)
    if marginalize:  # append zero z's so that the canonical map applies, then draw r exactly
        kept = np.concatenate([kept, np.zeros((kept.shape[0], R))], axis=1)
    draws, ranef = to_canonical(model, kept)
    finite_draws(draws)
    if not save_ranef:
        ranef = np.empty((draws.shape[0], 0))
    elif marginalize:
        ranef = draw_slopes_ranef(model, draws, np.random.Generator(np.random.PCG64(ranef_seed)))
    return chain_result(draws, ranef, out_stats, thin)


# ------------------------------------------------------------------ collapsed (marginalize=True)
# One grouping factor or two nested ones (the second below); crossed factors are refused
# (collapsed_slopes_args): their coefficients couple across levels of both factors, so there is no
# per-group factorisation of the marginal covariance to eliminate.
# One grouping factor (cells = its levels): the random coefficients integrated out per level j with
# the determinant lemma and Woodbury's identity, A_j = Z_j'Z_j, c_j = Z_j'(y - W gamma),
# M_j = Sigma^{-1} + A_j / sigma^2, u_j = M_j^{-1} c_j:
#     log|V_j| = n_j log sigma^2 + log|Sigma| + log|M_j|,  e_j'V_j^{-1}e_j = e_j'e_j / sigma^2 - c_j'u_j / sigma^4,
# F = sum_j (log|V_j| + e_j'V_j^{-1}e_j) = -2 log-likelihood (+ const). Gradients (P = Sigma^{-1}, v = sigma^2):
#     dF/dgamma = 2 (W'W gamma - W'y) / v + 2 sum_j (Z_j'W)'u_j / v^2,
#     dF/dP = sum_j (M_j^{-1} + u_j u_j' / v^2 - Sigma),  dF/dSigma = -P (dF/dP) P,
#     dF/dv = N / v - e'e / v^2 + sum_j (-tr(M_j^{-1} A_j) / v^2 - u_j'A_j u_j / v^4 + 2 c_j'u_j / v^3),
#     dF/dlog sd_i = 2 (Sigma_t dF/dSigma_tt)_ii,  dF/dL_t = 2 D_t (dF/dSigma_tt) D_t L_t   (Sigma_t = D_t L_t L_t' D_t),
# then the CPC recursion in reverse. theta = (gamma, log sd, CPCs, log sigma): q_fix + S + C + 1 dimensions.


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _spd_inverse(M, q, chol, inverse):
    """chol <- lower Cholesky factor of M, inverse <- M^{-1}; False (no exception: the kernel runs in
    nogil threads) when M is not numerically positive definite or not finite."""
    if not cholesky_into(M, chol, q, 0.0, True, 0.0):
        return False
    inverse_from_cholesky(chol, q, inverse)
    return True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _group_covariance(theta, index, lay, q):
    """(Sigma, Sigma^{-1} (q, q), the terms' Cholesky factors of R, log|Sigma_g| per group (G,)): Sigma is
    block-diagonal over the terms, term t of group g in rows z_off[g] + t_off (= its first sd's position
    after the gammas: terms are ordered by group), q = sum_g q_g."""
    sigma_m = np.zeros((q, q))
    prec = np.zeros((q, q))
    chol, _ = term_factors(theta, index, lay, q)
    log_det_sigma = np.zeros(lay.G)
    for t in range(lay.T):
        g = index[lay.t_group + t]
        qt, off = index[lay.t_dim + t], index[lay.z_off + g] + index[lay.t_off + t]
        sd = np.empty(qt)
        for i in range(qt):
            sd[i] = math.exp(theta[lay.qf + off + i])
            log_det_sigma[g] += 2.0 * theta[lay.qf + off + i] + 2.0 * math.log(chol[t, i, i])
        inv = np.zeros((qt, qt))  # L^{-1}
        for c in range(qt):
            for i in range(qt):
                s = 1.0 if i == c else 0.0
                for k in range(i):
                    s -= chol[t, i, k] * inv[k, c]
                inv[i, c] = s / chol[t, i, i]
        for a in range(qt):
            for b in range(qt):
                s = 0.0
                for k in range(qt):
                    s += chol[t, a, k] * chol[t, b, k]
                sigma_m[off + a, off + b] = sd[a] * sd[b] * s
                s = 0.0
                for k in range(qt):
                    s += inv[k, a] * inv[k, b]
                prec[off + a, off + b] = s / (sd[a] * sd[b])
    return sigma_m, prec, chol, log_det_sigma


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fixed_part(gamma, data, lay, v, dF_dgamma):
    """e'e = y'y - 2 gamma'W'y + gamma'W'W gamma; sets dF/dgamma = 2 (W'W gamma - W'y) / v."""
    ee = data[0]
    for a in range(lay.qf):
        wy = 0.0
        wwg = 0.0
        for k in range(lay.K):
            wy += data[lay.uy + k * lay.n_u + a]
            for b in range(lay.qf):
                wwg += data[lay.uu + (k * lay.n_u + a) * lay.n_u + b] * gamma[b]
        ee += gamma[a] * (wwg - 2.0 * wy)
        dF_dgamma[a] = 2.0 * (wwg - wy) / v
    return ee


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _level_terms(gamma, data, lay, q, v, sigma_m, prec, log_det_sigma, dF_dgamma, dF_dP):
    """sum_j (log|Sigma| + log|M_j| - c_j'u_j / v^2) and its dF/dv part; adds into dF_dgamma and dF_dP.
    Returns (F part, dF/dv part, ok) with ok False when some M_j is not numerically positive definite."""
    qf = lay.qf
    c = np.empty(q)
    M = np.empty((q, q))
    LM = np.empty((q, q))
    u = np.empty(q)
    minv = np.empty((q, q))
    F = 0.0
    dF_dv = 0.0
    for k in range(lay.K):
        for a in range(q):
            s = data[lay.uy + k * lay.n_u + qf + a]
            for b in range(qf):
                s -= data[lay.uu + (k * lay.n_u + qf + a) * lay.n_u + b] * gamma[b]
            c[a] = s
            for b in range(q):
                M[a, b] = prec[a, b] + data[lay.uu + (k * lay.n_u + qf + a) * lay.n_u + qf + b] / v
        if not _spd_inverse(M, q, LM, minv):
            return 0.0, 0.0, False
        log_det_m = 0.0
        for a in range(q):
            log_det_m += 2.0 * math.log(LM[a, a])
        for a in range(q):
            s = 0.0
            for b in range(q):
                s += minv[a, b] * c[b]
            u[a] = s
        cu = 0.0
        uau = 0.0
        tr_ma = 0.0
        for a in range(q):
            cu += c[a] * u[a]
            for b in range(q):
                uau += u[a] * data[lay.uu + (k * lay.n_u + qf + a) * lay.n_u + qf + b] * u[b]
                tr_ma += minv[a, b] * data[lay.uu + (k * lay.n_u + qf + b) * lay.n_u + qf + a]
        F += log_det_sigma + log_det_m - cu / (v * v)
        dF_dv += -tr_ma / (v * v) - uau / (v * v * v * v) + 2.0 * cu / (v * v * v)
        for a in range(q):
            for b in range(q):
                dF_dP[a, b] += minv[a, b] + u[a] * u[b] / (v * v) - sigma_m[a, b]
        for b in range(qf):
            s = 0.0
            for a in range(q):
                s += data[lay.uu + (k * lay.n_u + qf + a) * lay.n_u + b] * u[a]
            dF_dgamma[b] += 2.0 * s / (v * v)
    return F, dF_dv, True


# Two nested grouping factors (outer g1 with q1 coefficients u_j, inner g2 within g1 with q2, v_k; cells = the
# inner levels, contiguous per outer level as model._cells sorts them). Per outer level j the coefficients
# b_j = (u_j, v_k for k in j) have the arrow-shaped precision P_j = blockdiag(Sigma_1^{-1}, Sigma_2^{-1}, ...) +
# A_j / sigma^2 (A_j = Z_j'Z_j: A_uu = sum_k Z1_k'Z1_k, A_uv_k = Z1_k'Z2_k, A_vv_k = Z2_k'Z2_k, no v_k-v_l block:
# cells share no rows). The one-factor formulas above hold with M_j = P_j, log|Sigma| = log|Sigma_1| + m_j log|Sigma_2|
# and u_j = P_j^{-1} c_j (x_j below); P_j is eliminated leaves-up: D_k = Sigma_2^{-1} + A_vv_k / v, B_k = A_uv_k / v,
# H_k = D_k^{-1} B_k', the Schur complement S_j = Sigma_1^{-1} + A_uu / v - sum_k B_k H_k, so
#     log|P_j| = log|S_j| + sum_k log|D_k|,   x_u = S_j^{-1} (c_u - sum_k H_k'c_k),   x_k = D_k^{-1} c_k - H_k x_u,
# and the blocks of P_j^{-1} that the gradient needs: (uu) S_j^{-1}, (k u) -H_k S_j^{-1}, (kk) D_k^{-1} + H_k S_j^{-1} H_k'.
# dF/dP_1 sums (P^{-1})_uu + x_u x_u'/v^2 - Sigma_1 over outer levels, dF/dP_2 the (kk) terms over cells (Fisher's
# identity: the expected complete-data gradient), and tr(P^{-1} A), x'A x, (Z'W)'x take the (uu), (k u), (kk)
# blocks. Cost per evaluation O(K (q2^3 + q1 q2^2 + q1^2 q2) + J q1^3), independent of N.


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _uu(data, lay, k, a, b):
    """Entry (a, b) of cell k's cross-product u'u, u = (w, z_1, z_2)."""
    return data[lay.uu + (k * lay.n_u + a) * lay.n_u + b]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _arrow_eliminate(gamma, data, lay, k0, k1, q1, q2, v, prec, c_u, S, LS, Sinv, x_u, c_v, LD, Dinv, H, x_v):
    """Eliminates the inner blocks of the outer level whose cells are k0..k1 - 1, then its Schur complement
    (formulas above): fills c_u, S (its Cholesky factor LS, inverse Sinv), x_u and per cell k c_v[k], LD[k],
    Dinv[k], H[k], x_v[k]. Returns (log|P_j|, ok); ok False when a block is not numerically positive definite.
    Shapes: prec (q1 + q2, q1 + q2) = blockdiag(Sigma_1^{-1}, Sigma_2^{-1}); scratch (K, ...) per cell."""
    qf = lay.qf
    o1, o2 = qf, qf + q1
    D = np.empty((q2, q2))
    h = np.zeros(q1)  # c_u - sum_k H_k'c_k
    log_det = 0.0
    for a in range(q1):
        c_u[a] = 0.0
        for b in range(q1):
            S[a, b] = prec[a, b]
    for k in range(k0, k1):
        for a in range(q1):
            s = data[lay.uy + k * lay.n_u + o1 + a]
            for b in range(qf):
                s -= _uu(data, lay, k, o1 + a, b) * gamma[b]
            c_u[a] += s
            h[a] += s
            for b in range(q1):
                S[a, b] += _uu(data, lay, k, o1 + a, o1 + b) / v
        for a in range(q2):
            s = data[lay.uy + k * lay.n_u + o2 + a]
            for b in range(qf):
                s -= _uu(data, lay, k, o2 + a, b) * gamma[b]
            c_v[k, a] = s
            for b in range(q2):
                D[a, b] = prec[q1 + a, q1 + b] + _uu(data, lay, k, o2 + a, o2 + b) / v
        if not _spd_inverse(D, q2, LD[k], Dinv[k]):
            return 0.0, False
        for a in range(q2):
            log_det += 2.0 * math.log(LD[k, a, a])
            s = 0.0
            for b in range(q2):
                s += Dinv[k, a, b] * c_v[k, b]
            x_v[k, a] = s  # D_k^{-1} c_k; x_k once x_u is known
            for b in range(q1):
                s = 0.0
                for e in range(q2):
                    s += Dinv[k, a, e] * _uu(data, lay, k, o1 + b, o2 + e)
                H[k, a, b] = s / v
        for a in range(q1):
            s = 0.0
            for e in range(q2):
                s += H[k, e, a] * c_v[k, e]
            h[a] -= s
            for b in range(q1):
                s = 0.0
                for e in range(q2):
                    s += _uu(data, lay, k, o1 + a, o2 + e) * H[k, e, b]
                S[a, b] -= s / v
    if not _spd_inverse(S, q1, LS, Sinv):
        return 0.0, False
    for a in range(q1):
        log_det += 2.0 * math.log(LS[a, a])
        s = 0.0
        for b in range(q1):
            s += Sinv[a, b] * h[b]
        x_u[a] = s
    for k in range(k0, k1):
        for a in range(q2):
            s = 0.0
            for b in range(q1):
                s += H[k, a, b] * x_u[b]
            x_v[k, a] -= s
    return log_det, True


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _outer_run(index, lay, k0):
    """(outer level of cell k0, end of its run of cells): cells are sorted by the outer level."""
    outer = index[lay.cell_levels + k0 * lay.G]
    k1 = k0 + 1
    while k1 < lay.K and index[lay.cell_levels + k1 * lay.G] == outer:
        k1 += 1
    return outer, k1


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _arrow_scratch(K, q1, q2):
    """_arrow_eliminate's outputs: c_u, x_u (q1,), S, LS, Sinv (q1, q1), c_v, x_v (K, q2), LD, Dinv (K, q2, q2),
    H (K, q2, q1)."""
    return (np.empty(q1), np.empty(q1), np.empty((q1, q1)), np.empty((q1, q1)), np.empty((q1, q1)),
            np.empty((K, q2)), np.empty((K, q2)), np.empty((K, q2, q2)), np.empty((K, q2, q2)), np.empty((K, q2, q1)))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _nested_level_terms(gamma, data, index, lay, v, sigma_m, prec, log_det_sigma, dF_dgamma, dF_dP):
    """The nested counterpart of _level_terms (same returns): per outer level, log|Sigma_1| + m_j log|Sigma_2|
    + log|P_j| - c_j'x_j / v^2 and its dF/dv part; adds into dF_dgamma and dF_dP (blocks (:q1, :q1), (q1:, q1:))."""
    qf, K = lay.qf, lay.K
    q1, q2 = index[lay.dims], index[lay.dims + 1]
    o1, o2 = qf, qf + q1
    c_u, x_u, S, LS, Sinv, c_v, x_v, LD, Dinv, H = _arrow_scratch(K, q1, q2)
    HS = np.empty((q2, q1))  # H_k S^{-1} = -(P^{-1})_{k u}
    v2 = v * v
    F = 0.0
    dF_dv = 0.0
    k0 = 0
    while k0 < K:
        _, k1 = _outer_run(index, lay, k0)
        log_det_p, ok = _arrow_eliminate(gamma, data, lay, k0, k1, q1, q2, v, prec, c_u, S, LS, Sinv, x_u, c_v, LD,
                                         Dinv, H, x_v)
        if not ok:
            return 0.0, 0.0, False
        cx = 0.0
        tr = 0.0
        xax = 0.0
        for a in range(q1):
            cx += c_u[a] * x_u[a]
            for b in range(q1):
                dF_dP[a, b] += Sinv[a, b] + x_u[a] * x_u[b] / v2 - sigma_m[a, b]
        for k in range(k0, k1):
            for a in range(q2):
                cx += c_v[k, a] * x_v[k, a]
                for b in range(q1):
                    s = 0.0
                    for e in range(q1):
                        s += H[k, a, e] * Sinv[e, b]
                    HS[a, b] = s
            for a in range(q1):
                for b in range(q1):
                    A_ab = _uu(data, lay, k, o1 + a, o1 + b)
                    tr += Sinv[a, b] * A_ab
                    xax += x_u[a] * A_ab * x_u[b]
                for e in range(q2):
                    A_ae = _uu(data, lay, k, o1 + a, o2 + e)
                    tr -= 2.0 * HS[e, a] * A_ae
                    xax += 2.0 * x_u[a] * A_ae * x_v[k, e]
            for a in range(q2):
                for b in range(q2):
                    s = Dinv[k, a, b]
                    for e in range(q1):
                        s += HS[a, e] * H[k, b, e]
                    A_ab = _uu(data, lay, k, o2 + a, o2 + b)
                    tr += s * A_ab
                    xax += x_v[k, a] * A_ab * x_v[k, b]
                    dF_dP[q1 + a, q1 + b] += s + x_v[k, a] * x_v[k, b] / v2 - sigma_m[q1 + a, q1 + b]
            for b in range(qf):
                s = 0.0
                for a in range(q1):
                    s += _uu(data, lay, k, o1 + a, b) * x_u[a]
                for a in range(q2):
                    s += _uu(data, lay, k, o2 + a, b) * x_v[k, a]
                dF_dgamma[b] += 2.0 * s / v2
        F += log_det_sigma[0] + (k1 - k0) * log_det_sigma[1] + log_det_p - cx / v2
        dF_dv += -tr / v2 - xax / (v2 * v2) + 2.0 * cx / (v2 * v)
        k0 = k1
    return F, dF_dv, True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _covariance_backprop(theta, grad, data, index, lay, sigma_m, prec, chol, dF_dP):
    """d log p / d (log sd, CPCs) from dF/dP (log p = -F / 2), plus the LKJ log prior; returns it."""
    dF_dS = -((prec @ dF_dP) @ prec)
    logp = 0.0
    cpc = lay.qf + lay.S
    for t in range(lay.T):
        qt, off = index[lay.t_dim + t], index[lay.z_off + index[lay.t_group + t]] + index[lay.t_off + t]
        block = dF_dS[off:off + qt, off:off + qt]
        sig = sigma_m[off:off + qt, off:off + qt]
        for i in range(qt):
            s = 0.0
            for k in range(qt):
                s += sig[i, k] * block[k, i]
            grad[lay.qf + off + i] -= s  # -0.5 * 2 (Sigma_t dF/dSigma_tt)_ii
        if index[lay.t_cor + t] == 1:
            sd = np.empty(qt)
            for i in range(qt):
                sd[i] = math.exp(theta[lay.qf + off + i])
            dL = np.zeros((qt, qt))  # d log p / d L = -0.5 * 2 D block D L
            for i in range(qt):
                for j in range(i + 1):
                    s = 0.0
                    for k in range(qt):
                        s += sd[i] * block[i, k] * sd[k] * chol[t, k, j]
                    dL[i, j] = -s
            logp += _cpc_backward(theta, grad, cpc, qt, data[lay.eta + t], chol[t], dL)
            cpc += qt * (qt - 1) // 2
    return logp


@numba.njit(cache=True, nogil=True, error_model="numpy")
def collapsed_slopes_log_density(theta, data, index):
    """Marginal log posterior and gradient (random coefficients integrated out) on packed (data, index):
    one grouping factor, or two nested ones (G = 2: _nested_level_terms; crossed are refused by
    collapsed_slopes_args).

    Steps (formulas above): the groups' Sigma and P, the fixed part e'e, the per-level Woodbury and
    determinant terms, log sigma, the chain rule from dF/dP to (log sd, CPCs) with the LKJ prior, the
    other priors."""
    lay = layout(index)
    q = lay.n_u - lay.qf  # the random coefficients of one level of each group (q_1, or q_1 + q_2 nested)
    log_sigma_pos = lay.qf + lay.S + lay.C
    grad = np.zeros(theta.shape[0])
    v = math.exp(2.0 * theta[log_sigma_pos])
    sigma_m, prec, chol, log_det_sigma = _group_covariance(theta, index, lay, q)
    gamma = theta[:lay.qf]
    dF_dgamma = np.zeros(lay.qf)
    ee = _fixed_part(gamma, data, lay, v, dF_dgamma)
    dF_dP = np.zeros((q, q))
    if lay.G == 2:  # nested: outer levels with their inner ones (arrow-shaped precision)
        F_levels, dF_dv_levels, ok = _nested_level_terms(gamma, data, index, lay, v, sigma_m, prec, log_det_sigma,
                                                          dF_dgamma, dF_dP)
    else:
        F_levels, dF_dv_levels, ok = _level_terms(gamma, data, lay, q, v, sigma_m, prec, log_det_sigma[0],
                                                  dF_dgamma, dF_dP)
    if not ok:  # an extreme theta (step-size search): no exception in nogil threads
        return -np.inf, np.zeros(theta.shape[0])
    F = data[1] * math.log(v) + ee / v + F_levels
    dF_dv = data[1] / v - ee / (v * v) + dF_dv_levels
    logp = -0.5 * F
    for a in range(lay.qf):
        grad[a] -= 0.5 * dF_dgamma[a]
    grad[log_sigma_pos] -= 0.5 * dF_dv * 2.0 * v
    logp += _covariance_backprop(theta, grad, data, index, lay, sigma_m, prec, chol, dF_dP)
    return logp + add_priors(theta, grad, data, index, lay, log_sigma_pos), grad


def collapsed_slopes_args(model) -> tuple[np.ndarray, np.ndarray]:
    """(data, index) of collapsed_slopes_log_density: slopes_args plus the cell counts. One grouping factor or
    two nested ones (``(1 + x | s/c)``: the inner in the outer); crossed factors (or more than two) raise
    ModelSpecError: their random coefficients do not factor into independent per-level blocks, so the
    marginal covariance has no per-group factorisation to eliminate."""
    if model.n_groups > 2 or (model.n_groups == 2 and not model.nested[1]):
        from engine.errors import ModelSpecError

        raise ModelSpecError(f"marginalize=True with random slopes handles one grouping factor or two nested ones "
                             f"(as (1 + x | s/c)), not {', '.join(model.group_names)}: crossed (or more) factors "
                             "have no per-group factorisation of the marginal covariance; use marginalize=False "
                             "or sampler='gibbs'")
    data, index = slopes_args(model)
    return np.ascontiguousarray(np.concatenate([data, model.cell_n])), index


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _draw_nested_ranef(gamma, v, prec, data, index, lay, rng, out):
    """One exact draw of the nested random coefficients given (gamma, Sigma_1, Sigma_2, sigma^2 = v): per outer
    level, _arrow_eliminate's factors, then top-down u_j ~ N(x_u / v, S_j^{-1}) and v_k | u_j ~
    N(D_k^{-1} (c_k / v - B_k'u_j), D_k^{-1}) = N(x_k / v - H_k (u_j - x_u / v), D_k^{-1}); normals from ``rng``
    (q1, then q2 per cell, in cell order). out (R,) in ranef order: per group, per coefficient, per level."""
    K, G = lay.K, lay.G
    q1, q2 = index[lay.dims], index[lay.dims + 1]
    lo1, lo2 = index[lay.level_offsets], index[lay.level_offsets + 1]
    J, M = lo2 - lo1, index[lay.level_offsets + 2] - lo2
    c_u, x_u, S, LS, Sinv, c_v, x_v, LD, Dinv, H = _arrow_scratch(K, q1, q2)
    z1, z2, d_u = np.empty(q1), np.empty(q2), np.empty(q1)
    k0 = 0
    while k0 < K:
        outer, k1 = _outer_run(index, lay, k0)
        _, ok = _arrow_eliminate(gamma, data, lay, k0, k1, q1, q2, v, prec, c_u, S, LS, Sinv, x_u, c_v, LD, Dinv,
                                 H, x_v)
        if not ok:
            return False
        for a in range(q1):
            z1[a] = rng.standard_normal()
        e1 = solve_upper_t(LS, z1)
        for a in range(q1):
            d_u[a] = e1[a]  # u_j - x_u / v
            out[a * J + outer - lo1] = x_u[a] / v + e1[a]
        for k in range(k0, k1):
            for a in range(q2):
                z2[a] = rng.standard_normal()
            e2 = solve_upper_t(LD[k], z2)
            inner = index[lay.cell_levels + k * G + 1] - lo2
            for a in range(q2):
                s = x_v[k, a] / v + e2[a]
                for b in range(q1):
                    s -= H[k, a, b] * d_u[b]
                out[q1 * J + a * M + inner] = s
        k0 = k1
    return True


def _canonical_covariances(model, draws: np.ndarray):
    """(centred gamma (n, q_fix), Sigma (n, S, S) block-diagonal over the terms, sigma^2 (n,)) of canonical draws."""
    qf = int(model.has_intercept) + model.n_coef
    n, S = draws.shape[0], model.n_sd
    gamma = draws[:, :qf].copy()
    if model.has_intercept:
        gamma[:, 0] = draws[:, 0] + draws[:, 1:qf] @ model.x_means
    sd = draws[:, qf:qf + S]
    corr = np.repeat(np.eye(S)[None], n, axis=0)
    pos = qf + model.n_sd
    for term in model.terms:
        if term.correlated and term.size > 1:
            first = int(model.z_offsets[term.group]) + term.offset
            for i in range(1, term.size):
                for j in range(i):
                    a, b = first + j, first + i
                    corr[:, a, b] = corr[:, b, a] = draws[:, pos]
                    pos += 1
    return gamma, sd[:, :, None] * corr * sd[:, None, :], draws[:, -1] ** 2


def draw_slopes_ranef(model, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random coefficients drawn exactly from p(r | gamma, Sigma, sigma, y) for each canonical draw. One grouping
    factor: r_j ~ N(M_j^{-1} c_j / sigma^2, M_j^{-1}); two nested: _draw_nested_ranef (leaves-up elimination,
    top-down draws). Returns (n, R) in ranef order."""
    qf = int(model.has_intercept) + model.n_coef
    gamma, sigma_m, v = _canonical_covariances(model, draws)
    n = draws.shape[0]
    if model.n_groups == 2:
        data, index = collapsed_slopes_args(model)
        lay = layout(index)
        q1 = int(model.group_dims[0])
        precision = np.zeros_like(sigma_m)
        precision[:, :q1, :q1] = np.linalg.inv(sigma_m[:, :q1, :q1])
        precision[:, q1:, q1:] = np.linalg.inv(sigma_m[:, q1:, q1:])
        R = int(np.sum(np.diff(model.level_offsets) * model.group_dims))
        out = np.empty((n, R))
        for i in range(n):
            if not _draw_nested_ranef(gamma[i], float(v[i]), precision[i], data, index, lay, rng, out[i]):
                from engine.errors import SamplerError

                raise SamplerError("a random-coefficient precision is not numerically positive definite")
        return out
    J, q = int(model.n_levels[0]), int(model.group_dims[0])
    precision = np.linalg.inv(sigma_m)
    A = model.cell_uu[:, qf:, qf:]  # (J, q, q); cells are the levels
    c = model.cell_uy[None, :, qf:] - np.einsum("jab,nb->nja", model.cell_uu[:, qf:, :qf], gamma)  # (n, J, q)
    M = precision[:, None] + A[None] / v[:, None, None, None]
    LM = np.linalg.cholesky(M)
    mean = np.linalg.solve(M, c[..., None])[..., 0] / v[:, None, None]
    noise = rng.standard_normal((n, J, q))
    # r = mean + L_M^{-T} noise
    r = mean + np.linalg.solve(np.transpose(LM, (0, 1, 3, 2)), noise[..., None])[..., 0]
    return np.ascontiguousarray(np.transpose(r, (0, 2, 1)).reshape(n, q * J))
