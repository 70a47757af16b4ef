"""Blocked Gibbs sampler for multilevel models with random slopes, exact under brms's default priors.

Model (engine.multilevel.model): y_i = w_i'gamma + sum_g z_{g,i}' r_g[l_g(i)] + e_i, r_g[l] ~ N(0, Sigma_g),
Sigma_g block diagonal over the group's terms, term t: Sigma_t = diag(sd_t) R_t diag(sd_t) with
R_t ~ LKJ(eta_t) (correlated terms) and independent priors on every sd (brms default: half
student_t(3, 0, max(2.5, mad(y)))).

One iteration, every step an exact draw from (or an update leaving invariant) a full conditional:

0. (collapse, the default, where the groups form one block: nested or a single grouping factor)
   phi = (every term's log sds and CPCs, log sigma) by one independence Metropolis-Hastings step
   from p(phi | y, gamma's prior scales) with gamma and *every* random coefficient integrated out
   (engine.multilevel.blocks.block_factor: the leaves-up elimination gives log det P and b'P^{-1}b of
   their joint Gaussian, cost independent of N), then (gamma, r) drawn jointly and exactly from their
   Gaussian conditional given the new phi (steps 1 and 2 replaced). MH on the marginal followed by an
   exact draw of the integrated variables leaves p(phi, gamma, r | y) invariant (a partially
   collapsed Gibbs step, van Dyk & Park 2008, "Partially collapsed Gibbs samplers", JASA 103). The
   proposal is a multivariate t_5 whose location and scale are the mean and covariance of phi over
   warm-up windows ([w/4, w/2): fitted, step 0 starts; [w/2, w): refitted); it is fixed after warm-up,
   so the kept chain is a time-homogeneous Metropolis-Hastings kernel, and its t tails dominate the
   target's exponential ones in phi. Steps 3 and 4 still follow (conditional updates, for mixing in
   the target's tails). The step removes the coupling between Sigma and the random coefficients that
   slows steps 1 and 3 (sleepstudy's min bulk ESS 778 -> 2810 per 4000 draws).
1. gamma and every random coefficient jointly from their Gaussian conditional given (Sigma, sigma):
   engine.multilevel.blocks (q x q blocks eliminated leaves-up from the per-cell cross-products;
   cost independent of N); crossed blocks one after the other, each jointly with gamma.
2. Student-t priors on gamma through their normal scale mixture (as engine.gibbs).
3. (sd_t, R_t) | r for every term: coordinate-wise slice updates on (log sd, tanh^{-1} of the
   canonical partial correlations) with the log-Jacobian (engine.multilevel.covariance), which
   leave brms's own prior times the coefficients' Gaussian likelihood invariant.
4. sigma | rest: half-t by the inverse-gamma scale mixture (Wand et al. 2011), other priors by a slice
   update of log sigma (engine.gibbs._draw_scale); the residual sum of squares from the cells.

Draws in the canonical order of engine.multilevel.parameter_names (b..., sd..., cor..., sigma),
random coefficients in the order of ranef_names (per group: every level's first coefficient, then
every level's second, ..., as brms orders r_g[level,coef]).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.gibbs import _draw_scale, _inverse_gamma
from engine._linalg import cholesky_lower, inverse_from_cholesky
from engine.multilevel.blocks import (BlockData, BlockWork, block_draw, block_factor, block_location_step, block_sums,
                                      make_block_work)
from engine.multilevel.covariance import (CovarianceTarget, cholesky_from_cpc, covariance_step, log_scale_prior,
                                          log_term_prior)
from engine.multilevel.location import PriorArrays, store_location_draw
from engine.multilevel.priors import FLAT, NORMAL, STUDENT_T

__all__ = ["SlopesData", "slopes_data", "run_slopes_chain"]


class TermArrays(NamedTuple):
    """Random-effect terms (T): group (T,), offset (T,) of the term's coefficients in its group's
    vector, dim (T,), correlated (T,) bool, eta (T,) LKJ shape, sd_offset (T,) position of its first
    sd in the sd vector, cor_offset (T,) position of its first correlation in the cor vector."""

    group: np.ndarray
    offset: np.ndarray
    dim: np.ndarray
    correlated: np.ndarray
    eta: np.ndarray
    sd_offset: np.ndarray
    cor_offset: np.ndarray


class SlopesData(NamedTuple):
    """Everything the slopes chain reads: block (BlockData), terms (TermArrays), n_sd, n_cor, yty,
    n_obs, x_means (p,), has_intercept, n_blocks, gamma_prior (q_fix,), sd_prior (n_sd,) PriorArrays,
    sigma_prior (4,)."""

    block: BlockData
    terms: TermArrays
    n_sd: int
    n_cor: int
    yty: float
    n_obs: float
    x_means: np.ndarray
    has_intercept: bool
    n_blocks: int
    gamma_prior: PriorArrays
    sd_prior: PriorArrays
    sigma_prior: np.ndarray


def slopes_data(model) -> SlopesData:
    """The arrays of a MultilevelModel with slopes arranged for run_slopes_chain."""
    from engine.multilevel.location import location_inputs

    c = np.ascontiguousarray
    terms = model.terms
    dims = np.array([t.size for t in terms], dtype=np.int64)
    correlated = np.array([t.correlated and t.size > 1 for t in terms], dtype=np.bool_)
    n_cor_t = np.where(correlated, dims * (dims - 1) // 2, 0)
    term_arrays = TermArrays(
        np.array([t.group for t in terms], dtype=np.int64), np.array([t.offset for t in terms], dtype=np.int64),
        dims, correlated, c(model.cor_eta, dtype=np.float64),
        np.concatenate([[0], np.cumsum(dims)[:-1]]).astype(np.int64),
        np.concatenate([[0], np.cumsum(n_cor_t)[:-1]]).astype(np.int64))
    block = BlockData(c(model.cell_uu), c(model.cell_uy), c(model.cell_levels), int(model.has_intercept) + model.n_coef,
                      c(model.group_dims, dtype=np.int64), c(model.z_offsets, dtype=np.int64),
                      c(model.level_offsets), c(model.level_group), c(model.depth), c(model.ancestors),
                      c(model.block_of_group))
    inputs = location_inputs(model)
    return SlopesData(block, term_arrays, int(dims.sum()), int(n_cor_t.sum()), float(model.yty), float(model.n_obs),
                      c(model.x_means, dtype=np.float64), bool(model.has_intercept), int(model.n_blocks),
                      inputs.gamma_prior,
                      PriorArrays(c(model.sd_prior_family, dtype=np.int64), c(model.sd_prior_nu, dtype=np.float64),
                                  c(model.sd_prior_mu, dtype=np.float64), c(model.sd_prior_scale, dtype=np.float64)),
                      c(model.sigma_prior, dtype=np.float64))


@numba.njit(cache=True, nogil=True)
def _term_precision(theta, q, correlated, chol, out, offset):
    """out[offset:offset+q, offset:offset+q] <- Sigma_t^{-1} = D^{-1} L^{-T} L^{-1} D^{-1}."""
    if not correlated or q == 1:
        for a in range(q):
            for b in range(q):
                out[offset + a, offset + b] = 0.0
            out[offset + a, offset + a] = np.exp(-2.0 * theta[a])
        return
    inverse = np.empty((q, q))  # R^{-1} = L^{-T} L^{-1}
    inverse_from_cholesky(chol, q, inverse)
    for a in range(q):
        for b in range(q):
            out[offset + a, offset + b] = inverse[a, b] * np.exp(-theta[a] - theta[b])


@numba.njit(cache=True, nogil=True)
def _residual_ss(gamma, r, block, yty):
    """sum_i (y_i - u_i'theta)^2 = sum_k (yy_k - 2 theta_k'Uy_k + theta_k'UU_k theta_k) with theta_k the
    cell's (gamma, r of its levels); sum_k yy_k = y'y."""
    cell_uu, cell_uy, cell_levels, qf = block.cell_uu, block.cell_uy, block.cell_levels, block.q_fix
    n_cells, n_groups = cell_levels.shape
    n_u = cell_uy.shape[1]
    theta = np.empty(n_u)
    rss = yty
    for k in range(n_cells):
        for a in range(qf):
            theta[a] = gamma[a]
        for g in range(n_groups):
            v = cell_levels[k, g]
            col = qf + block.z_offsets[g]
            for c in range(block.group_dims[g]):
                theta[col + c] = r[v, c]
        for a in range(n_u):
            ta = theta[a]
            if ta == 0.0:
                continue
            rss -= 2.0 * ta * cell_uy[k, a]
            s = 0.0
            for b in range(n_u):
                s += cell_uu[k, a, b] * theta[b]
            rss += ta * s
    return max(rss, 0.0)


class CollapsedState(NamedTuple):
    """Work of the collapsed (Sigma, sigma) step (step 0 of the module doc) for d = n_phi coordinates:
    phi (d,) current point, phi_new (d,) proposal, theta_new (T, max_coord), chol_new (T, qm, qm),
    sigma_inv_new (G, qm, qm) and log_det_new (G,) the proposal's terms; log_det (G,) the current
    log det Sigma_g; sums (BlockWork, block_sums), work_new (BlockWork) the proposal's factorisation;
    mean (d,), chol_prop (d, d) the t proposal's location and scale factor; history (H, d) warm-up
    draws of phi; counts (2,) proposals and acceptances after warm-up."""

    phi: np.ndarray
    phi_new: np.ndarray
    theta_new: np.ndarray
    chol_new: np.ndarray
    sigma_inv_new: np.ndarray
    log_det: np.ndarray
    log_det_new: np.ndarray
    sums: object
    work_new: object
    mean: np.ndarray
    chol_prop: np.ndarray
    history: np.ndarray
    counts: np.ndarray


_T_DF = 5.0  # degrees of freedom of the independence proposal (tails heavier than the target's)


@numba.njit(cache=True, nogil=True)
def _n_phi(terms):
    n = 1
    for t in range(terms.group.shape[0]):
        q = terms.dim[t]
        n += q + (q * (q - 1) // 2 if terms.correlated[t] else 0)
    return n


@numba.njit(cache=True, nogil=True)
def _pack_phi(theta, sigma, terms, phi):
    """phi = (theta of every term: log sds then CPCs; log sigma)."""
    pos = 0
    for t in range(terms.group.shape[0]):
        q = terms.dim[t]
        for c in range(q + (q * (q - 1) // 2 if terms.correlated[t] else 0)):
            phi[pos] = theta[t, c]
            pos += 1
    phi[pos] = np.log(sigma)


@numba.njit(cache=True, nogil=True)
def _terms_from_phi(phi, theta, chol, sigma_inv, log_det, data):
    """theta, chol (Cholesky factor of each R), sigma_inv (Sigma_g^{-1}) and log_det (log det Sigma_g)
    from phi; returns the log prior density of phi (terms and sigma, with the log Jacobians)."""
    terms = data.terms
    sp = data.sd_prior
    log_det[:] = 0.0
    value = 0.0
    pos = 0
    for t in range(terms.group.shape[0]):
        q = terms.dim[t]
        correlated = terms.correlated[t] and q > 1
        n_coord = q + (q * (q - 1) // 2 if correlated else 0)
        for c in range(n_coord):
            theta[t, c] = phi[pos]
            pos += 1
        g = terms.group[t]
        for j in range(q):
            log_det[g] += 2.0 * theta[t, j]
        if correlated:
            cholesky_from_cpc(theta[t, q:], q, chol[t])
            for j in range(q):
                log_det[g] += 2.0 * np.log(chol[t, j, j])
        _term_precision(theta[t], q, correlated, chol[t], sigma_inv[g], terms.offset[t])
        so = terms.sd_offset[t]
        value += log_term_prior(theta[t], q, correlated, sp.family[so:so + q], sp.nu[so:so + q],
                                sp.mu[so:so + q], sp.scale[so:so + q], terms.eta[t])
    log_sigma = phi[pos]
    sgp = data.sigma_prior
    value += log_scale_prior(np.exp(log_sigma), int(sgp[0]), sgp[1], sgp[2], sgp[3]) + log_sigma
    return value


@numba.njit(cache=True, nogil=True)
def _collapsed_log_target(phi, theta, chol, sigma_inv, log_det, gamma_precision, gamma_prior_mean, data, sums, work):
    """log p(phi | y, gamma's prior scales) up to a constant, with gamma and r integrated out
    (blocks.block_factor), and ``work`` factored at phi for block_draw; -inf where not finite."""
    value = _terms_from_phi(phi, theta, chol, sigma_inv, log_det, data)
    sigma2 = np.exp(2.0 * phi[phi.shape[0] - 1])
    marginal, ok = block_factor(sigma_inv, log_det, sigma2, gamma_precision, gamma_prior_mean, data.yty,
                                data.n_obs, data.block, sums, work)
    value += marginal
    if not ok or not np.isfinite(value):
        return -np.inf
    return value


@numba.njit(cache=True, nogil=True)
def _fit_proposal(state, lo, hi):
    """The t proposal's location (mean) and scale factor (Cholesky of the covariance) from warm-up
    draws history[lo:hi]; False (keep the previous proposal) when too few or degenerate."""
    d = state.mean.shape[0]
    n = hi - lo
    if n < d + 5:
        return False
    mean = np.zeros(d)
    for i in range(lo, hi):
        for a in range(d):
            mean[a] += state.history[i, a]
    mean /= n
    cov = np.zeros((d, d))
    for i in range(lo, hi):
        for a in range(d):
            da = state.history[i, a] - mean[a]
            for b in range(a + 1):
                cov[a, b] += da * (state.history[i, b] - mean[b])
    for a in range(d):
        for b in range(a + 1):
            cov[a, b] /= n - 1
            cov[b, a] = cov[a, b]
        cov[a, a] += 1e-10
    chol, ok = cholesky_lower(cov)
    if not ok:
        return False
    state.mean[:] = mean
    state.chol_prop[:, :] = chol
    return True


@numba.njit(cache=True, nogil=True)
def _t_log_kernel(x, state):
    """log of the t_5(mean, chol chol') proposal density at x, up to its constant."""
    d = x.shape[0]
    chol = state.chol_prop
    u = np.empty(d)
    m2 = 0.0
    for i in range(d):
        s = x[i] - state.mean[i]
        for k in range(i):
            s -= chol[i, k] * u[k]
        u[i] = s / chol[i, i]
        m2 += u[i] * u[i]
    return -0.5 * (_T_DF + d) * np.log1p(m2 / _T_DF)


@numba.njit(cache=True, nogil=True)
def _collapsed_step(rng, gamma, r, theta, chol, sigma_inv, sigma, gamma_precision, gamma_prior_mean, data, work,
                    state, counting):
    """Step 0 (module doc): one independence Metropolis-Hastings update of phi = (Sigma, sigma) from
    p(phi | y) with gamma and every random coefficient integrated out, then (gamma, r) drawn exactly
    from their Gaussian conditional given the new phi. Returns sigma; theta, chol, sigma_inv, gamma
    and r are updated in place."""
    phi, phi_new = state.phi, state.phi_new
    d = phi.shape[0]
    _pack_phi(theta, sigma, data.terms, phi)
    current = _collapsed_log_target(phi, theta, chol, sigma_inv, state.log_det, gamma_precision, gamma_prior_mean,
                                    data, state.sums, work)
    scale = np.sqrt(_T_DF / (2.0 * rng.standard_gamma(0.5 * _T_DF)))
    z = np.empty(d)
    for a in range(d):
        z[a] = rng.standard_normal()
    for a in range(d):
        s = 0.0
        for k in range(a + 1):
            s += state.chol_prop[a, k] * z[k]
        phi_new[a] = state.mean[a] + scale * s
    proposed = _collapsed_log_target(phi_new, state.theta_new, state.chol_new, state.sigma_inv_new,
                                     state.log_det_new, gamma_precision, gamma_prior_mean, data, state.sums,
                                     state.work_new)
    log_ratio = proposed - current + _t_log_kernel(phi, state) - _t_log_kernel(phi_new, state)
    accept = np.log(rng.random()) < log_ratio  # False for a -inf proposal (and a nan ratio)
    if counting:
        state.counts[0] += 1
    if accept:
        if counting:
            state.counts[1] += 1
        theta[:, :] = state.theta_new
        chol[:, :, :] = state.chol_new
        sigma_inv[:, :, :] = state.sigma_inv_new
        sigma = np.exp(phi_new[d - 1])
        block_draw(rng, gamma, r, data.block, state.work_new)
    else:
        block_draw(rng, gamma, r, data.block, work)
    return sigma


@numba.njit(cache=True, nogil=True)
def make_collapsed_state(data, n_history):
    """A CollapsedState for ``data`` with room for n_history warm-up draws of phi."""
    block, terms = data.block, data.terms
    d = _n_phi(terms)
    qm = _max_dim(block)
    max_coord = _max_coord(terms)
    n_groups = block.group_dims.shape[0]
    return CollapsedState(np.zeros(d), np.zeros(d), np.zeros((terms.group.shape[0], max_coord)),
                          np.zeros((terms.group.shape[0], qm, qm)), np.zeros((n_groups, qm, qm)), np.zeros(n_groups),
                          np.zeros(n_groups), block_sums(block), make_block_work(block), np.zeros(d), np.eye(d),
                          np.zeros((max(n_history, 1), d)), np.zeros(2, dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def _max_dim(block):
    """qm = max_g q_g (at least 1): the width of r's rows and of the per-group blocks."""
    qm = 1
    for g in range(block.group_dims.shape[0]):
        qm = max(qm, block.group_dims[g])
    return qm


@numba.njit(cache=True, nogil=True)
def _max_coord(terms):
    """The longest theta row: q_t log sds + q_t (q_t - 1) / 2 CPCs of the largest term (at least 1)."""
    max_coord = 1
    for t in range(terms.group.shape[0]):
        max_coord = max(max_coord, terms.dim[t] + terms.dim[t] * (terms.dim[t] - 1) // 2)
    return max_coord


@numba.njit(cache=True, nogil=True)
def _n_ranef(block):
    """R = sum_g L_g q_g random coefficients (the ranef row length)."""
    n_ranef = 0
    for g in range(block.group_dims.shape[0]):
        n_ranef += (block.level_offsets[g + 1] - block.level_offsets[g]) * block.group_dims[g]
    return n_ranef


class SlopesChain(NamedTuple):
    """The current point and work arrays of a slopes chain (run_slopes_chain_counts, and the Pólya-Gamma
    slopes chain of engine.multilevel.gibbs_pg), updated in place (qm = _max_dim, T terms, G groups,
    L levels): gamma (q_fix,); r (L, qm), row v level v's coefficients; theta (T, max_coord) each
    term's (log sds, CPCs); chol (T, qm, qm) the Cholesky factor of each R_t; sigma_inv (G, qm, qm)
    Sigma_g^{-1}; mixing (q_fix,) the Student-t priors' scale-mixture weights; gamma_precision,
    gamma_prior_mean (q_fix,) gamma's diagonal prior given the mixing; work (BlockWork); scatter,
    cov_work (qm, qm) for _update_covariances."""

    gamma: np.ndarray
    r: np.ndarray
    theta: np.ndarray
    chol: np.ndarray
    sigma_inv: np.ndarray
    mixing: np.ndarray
    gamma_precision: np.ndarray
    gamma_prior_mean: np.ndarray
    work: BlockWork
    scatter: np.ndarray
    cov_work: np.ndarray


@numba.njit(cache=True, nogil=True)
def start_slopes_chain(data, init_sd):
    """A SlopesChain at its start: gamma = 0, r = 0, every term's sds init_sd (S,) and R = I, the
    mixing weights 1 (gamma's prior means set once; its precisions each sweep)."""
    block, terms, gp = data.block, data.terms, data.gamma_prior
    qf = block.q_fix
    n_groups = block.group_dims.shape[0]
    n_terms = terms.group.shape[0]
    qm = _max_dim(block)
    gamma_prior_mean = np.zeros(qf)
    for a in range(qf):
        if gp.family[a] != FLAT:
            gamma_prior_mean[a] = gp.mu[a]
    theta = np.zeros((n_terms, _max_coord(terms)))
    chol = np.zeros((n_terms, qm, qm))
    for t in range(n_terms):
        for j in range(terms.dim[t]):
            theta[t, j] = np.log(init_sd[terms.sd_offset[t] + j])
            chol[t, j, j] = 1.0
    sigma_inv = np.zeros((n_groups, qm, qm))
    for t in range(n_terms):
        _term_precision(theta[t], terms.dim[t], terms.correlated[t], chol[t], sigma_inv[terms.group[t]],
                        terms.offset[t])
    return SlopesChain(np.zeros(qf), np.zeros((block.level_group.shape[0], qm)), theta, chol, sigma_inv, np.ones(qf),
                       np.zeros(qf), gamma_prior_mean, make_block_work(block), np.zeros((qm, qm)), np.zeros((qm, qm)))


@numba.njit(cache=True, nogil=True)
def _gamma_prior_precision(gp, mixing, gamma_precision):
    """gamma's diagonal prior precision: 1 / scale^2 (normal), 1 / (scale^2 lambda) (Student-t as a
    scale mixture of normals, lambda = mixing), 0 (flat)."""
    for a in range(gamma_precision.shape[0]):
        if gp.family[a] == NORMAL:
            gamma_precision[a] = 1.0 / (gp.scale[a] * gp.scale[a])
        elif gp.family[a] == STUDENT_T:
            gamma_precision[a] = 1.0 / (gp.scale[a] * gp.scale[a] * mixing[a])


@numba.njit(cache=True, nogil=True)
def _location_blocks(rng, sigma2, chain, data):
    """Step 1: (gamma, r) block by block from their Gaussian conditional (engine.multilevel.blocks)."""
    for b in range(max(data.n_blocks, 1)):
        block_location_step(rng, b, True, chain.gamma, chain.r, chain.sigma_inv, sigma2, chain.gamma_precision,
                            chain.gamma_prior_mean, data.block, chain.work)


@numba.njit(cache=True, nogil=True)
def _draw_mixing(rng, gp, gamma, mixing):
    """Step 2: lambda_a | gamma_a ~ InvGamma((nu + 1) / 2, (nu + z^2) / 2), z = (gamma_a - mu) / scale,
    for every Student-t prior of gamma (in index order)."""
    for a in range(gamma.shape[0]):
        if gp.family[a] == STUDENT_T:
            z = (gamma[a] - gp.mu[a]) / gp.scale[a]
            mixing[a] = _inverse_gamma(rng, 0.5 * (gp.nu[a] + 1.0), 0.5 * (gp.nu[a] + z * z))


@numba.njit(cache=True, nogil=True)
def slopes_location_step(rng, sigma2, chain, data):
    """Steps 1-2 of one sweep given (Sigma, sigma^2 = sigma2): gamma's prior precisions from the
    mixing weights, (gamma, r) block by block, then the mixing weights (the slopes Gibbs chain's
    uncollapsed sweep; the Pólya-Gamma slopes chain with sigma2 = 1)."""
    _gamma_prior_precision(data.gamma_prior, chain.mixing, chain.gamma_precision)
    _location_blocks(rng, sigma2, chain, data)
    _draw_mixing(rng, data.gamma_prior, chain.gamma, chain.mixing)


@numba.njit(cache=True, nogil=True)
def run_slopes_chain_counts(rng, n_iter, n_warmup, thin, update_scales, save_ranef, data, init_sd, init_sigma,
                            collapse, conditional):
    """One chain; returns (draws (n_kept, n_params), ranef (n_kept, R or 0), counts (2,): proposals and
    acceptances of the collapsed step after warm-up).

    collapse: run step 0 (module doc) where it applies (one block of groups, update_scales, n_warmup >=
    40); conditional: steps 3-4 every iteration (always before step 0 starts)."""
    block, terms, gp = data.block, data.terms, data.gamma_prior
    n_kept = (n_iter - n_warmup + thin - 1) // thin
    draws = np.empty((n_kept, block.q_fix + data.n_sd + data.n_cor + 1))
    ranef = np.empty((n_kept, _n_ranef(block) if save_ranef else 0))
    chain = start_slopes_chain(data, init_sd)
    gamma, r, theta, chol, sigma_inv = chain.gamma, chain.r, chain.theta, chain.chol, chain.sigma_inv
    work = chain.work
    sigma = init_sigma
    sigma_aux = 1.0
    # step 0's warm-up schedule: collect phi over [w/4, w/2), fit the proposal and start; collect over
    # [w/2, w), refit; fixed after warm-up, so the kept chain is a time-homogeneous exact kernel
    use_collapse = collapse and update_scales and data.n_blocks <= 1 and n_warmup >= 40
    first_fit, second_fit = n_warmup // 2, n_warmup
    state = make_collapsed_state(data, n_warmup - n_warmup // 4 if use_collapse else 0)
    active = False

    kept = 0
    for iteration in range(n_iter):
        _gamma_prior_precision(gp, chain.mixing, chain.gamma_precision)
        if use_collapse and (iteration == first_fit or iteration == second_fit):
            lo = 0 if iteration == first_fit else first_fit - n_warmup // 4
            if _fit_proposal(state, lo, iteration - n_warmup // 4):
                active = True
        if active:
            sigma = _collapsed_step(rng, gamma, r, theta, chol, sigma_inv, sigma, chain.gamma_precision,
                                    chain.gamma_prior_mean, data, work, state, iteration >= n_warmup)
        else:
            _location_blocks(rng, sigma * sigma, chain, data)
        _draw_mixing(rng, gp, gamma, chain.mixing)
        if update_scales and (conditional or not active):
            _update_covariances(rng, r, theta, chol, sigma_inv, chain.scatter, chain.cov_work, data)
            rss = _residual_ss(gamma, r, block, data.yty)
            sp = data.sigma_prior
            sigma, sigma_aux = _draw_scale(rng, sigma, sigma_aux, data.n_obs, rss, int(sp[0]), sp[1], sp[2], sp[3])
        if use_collapse and n_warmup // 4 <= iteration < n_warmup:
            _pack_phi(theta, sigma, terms, state.history[iteration - n_warmup // 4])
        if iteration >= n_warmup and (iteration - n_warmup) % thin == 0:
            _store_draw(draws[kept], ranef[kept], gamma, theta, chol, sigma, r,
                        data, save_ranef)
            kept += 1
    return draws, ranef, state.counts


@numba.njit(cache=True, nogil=True)
def run_slopes_chain(rng, n_iter, n_warmup, thin, update_scales, save_ranef, data, init_sd, init_sigma):
    """One chain without the collapsed step (run_slopes_chain_counts' steps 1-4); returns (draws, ranef)."""
    # bool(): a literal argument would compile a second specialisation of the chain (issue 16)
    draws, ranef, _ = run_slopes_chain_counts(rng, n_iter, n_warmup, thin, update_scales, save_ranef, data,
                                              init_sd, init_sigma, bool(False), bool(True))
    return draws, ranef


@numba.njit(cache=True, nogil=True)
def _update_covariances(rng, r, theta, chol, sigma_inv, scatter, cov_work, data):
    """Step 3 for every term: its scatter of coefficients, the exact (sd, R) update, Sigma_t^{-1}."""
    terms, block = data.terms, data.block
    for t in range(terms.group.shape[0]):
        g = terms.group[t]
        q = terms.dim[t]
        off = terms.offset[t]
        for a in range(q):
            for b in range(q):
                scatter[a, b] = 0.0
        for v in range(block.level_offsets[g], block.level_offsets[g + 1]):
            for a in range(q):
                for b in range(q):
                    scatter[a, b] += r[v, off + a] * r[v, off + b]
        so = terms.sd_offset[t]
        n_levels = float(block.level_offsets[g + 1] - block.level_offsets[g])
        target = CovarianceTarget(q, terms.correlated[t], n_levels, scatter, data.sd_prior.family[so:so + q],
                                  data.sd_prior.nu[so:so + q], data.sd_prior.mu[so:so + q],
                                  data.sd_prior.scale[so:so + q], terms.eta[t])
        covariance_step(rng, theta[t], target, chol[t], cov_work)
        _term_precision(theta[t], q, terms.correlated[t], chol[t], sigma_inv[g], off)


@numba.njit(cache=True, nogil=True)
def _store_draw(row, ranef_row, gamma, theta, chol, sigma, r, data, save_ranef):
    """One kept draw in the canonical order (b_Intercept uncentred, b, sd, cor, sigma) and the ranef order."""
    terms, block = data.terms, data.block
    qf = gamma.shape[0]
    store_location_draw(row, gamma, data.x_means, data.has_intercept)
    for t in range(terms.group.shape[0]):
        q = terms.dim[t]
        for j in range(q):
            row[qf + terms.sd_offset[t] + j] = np.exp(theta[t, j])
        if terms.correlated[t]:
            pos = qf + data.n_sd + terms.cor_offset[t]
            L = chol[t]
            for i in range(1, q):  # brms order: (0,1), (0,2), (1,2), ...
                for j in range(i):
                    s = 0.0
                    for k in range(q):
                        s += L[i, k] * L[j, k]
                    row[pos] = s
                    pos += 1
    row[row.shape[0] - 1] = sigma
    if save_ranef:
        pos = 0
        for g in range(block.group_dims.shape[0]):
            for c in range(block.group_dims[g]):
                for v in range(block.level_offsets[g], block.level_offsets[g + 1]):
                    ranef_row[pos] = r[v, c]
                    pos += 1
