"""Pólya-Gamma Gibbs sampler for the bernoulli and binomial (logit) multilevel models.

Model (engine.multilevel.families.GLMModel): y_i ~ Binomial(n_i, logit^-1(eta_i)) (bernoulli: n_i = 1),
eta_i = w_i' gamma + sum_g r_g[l_g(i)], r_g ~ N(0, tau_g^2), with the model layer's priors.

Augmentation (Polson, Scott & Windle 2013, JASA 108(504), Theorem 1): with omega_i ~ PG(n_i, 0),

    binomial likelihood of eta_i  ∝  exp(kappa_i eta_i) E[exp(-omega_i eta_i^2 / 2)],   kappa_i = y_i - n_i / 2,

so given omega the likelihood is Gaussian in eta: the pseudo-response z_i = kappa_i / omega_i with
variance 1 / omega_i, and omega_i | eta_i ~ PG(n_i, eta_i). One sweep (every step exact):

1. omega_i ~ PG(n_i, eta_i) (engine.polyagamma: Devroye's alternating series, sums for n_i > 1),
   drawn in the same pass over the rows that accumulates the *weighted* cell statistics the Gaussian
   location block needs: sum omega, sum omega w, sum omega w w' per cell (and per level from the
   cells); the kappa sums (sum kappa, sum kappa w) do not depend on omega and are computed once.
   This is the O(N q^2) part of an iteration, inherent to the augmentation (DESIGN.md, "Binary and
   count outcomes"), with no N x q temporaries.
2. The location block (gamma and every random effect) jointly from its Gaussian conditional given
   omega: exactly the Gaussian model's block (engine.multilevel.location._location_block: leaves-up elimination
   of each nested block, one q x q Cholesky, crossed blocks in turn) with sigma^2 = 1 and the
   weighted statistics in place of the counts -- the Gaussian kernel is reused, not copied.
3. Student-t prior auxiliaries of gamma, then the SDs as in the Gaussian sampler
   (engine.gibbs._draw_scale: the half-t scale mixture of inverse gammas, slice steps otherwise),
   followed by the same partially collapsed steps (``collapse=True``): (tau_g, r_g) jointly with
   r_g integrated out of the omega-conditional Gaussian model, and for a nested block the top SD
   with the whole block integrated out (engine.gibbs._collapsed_scale_step, _collapsed_top_step).
   All are exact conditional draws of the augmented posterior p(gamma, r, tau, omega | y).

Random slopes (``(1 + x | g)``): the same augmentation with engine.multilevel.blocks' location block
(q_g x q_g level blocks) on omega-weighted cell cross-products and engine.gibbs_slopes' exact (sd, R)
updates; see ``_pg_slopes_chain``.

Draws come out in the canonical order of engine.multilevel.families.parameter_names (b_Intercept on the
original scale, b..., sd..., cor...). A Poisson model has no such augmentation: use NUTS.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.errors import ModelSpecError, SamplerError
from engine.gibbs import LevelSizes, _collapsed_scale_step, _collapsed_top_step, _draw_scale, _inverse_gamma, \
    _slice_log_scale
from engine.gibbs_slopes import (_n_ranef, _store_draw, _term_precision, _update_covariances, slopes_location_step,
                                 start_slopes_chain)
from engine.multilevel.families import BERNOULLI, BINOMIAL, GLMModel, design_matrix
from engine.multilevel.location import (LocationData, LocationWork, PriorArrays, _location_block, location_inputs,
                                        store_location_draw)
from engine.multilevel.sampler import ChainResult, register_sampler
from engine.polyagamma import draw_pg

__all__ = ["GIBBS_PG", "PolyaGammaGibbsSampler", "sample_chain"]

_FLAT, _NORMAL, _STUDENT_T = 0, 1, 2


class PGData(NamedTuple):
    """The kernel's arrays (N rows, q = intercept + p columns, G groups, L levels, K cells, D depth).

    W (N, q) design [1, x_c]; trials (N,) int64; kappa (N,) y - n/2; cell_of_row (N,); codes (N, G)
    global level of each row; cell_levels (K, G); cell_kappa (K,) sum kappa; cell_wkappa (K, q);
    wkappa (q,); level_offsets (G + 1,); depth (L,); ancestors (L, D); block_of_group (G,);
    x_means (p,); gamma priors (q,) family/nu/mu/scale; sd priors (G,) family/nu/mu/scale.
    """

    W: np.ndarray
    trials: np.ndarray
    kappa: np.ndarray
    cell_of_row: np.ndarray
    codes: np.ndarray
    cell_levels: np.ndarray
    cell_kappa: np.ndarray
    cell_wkappa: np.ndarray
    wkappa: np.ndarray
    level_offsets: np.ndarray
    depth: np.ndarray
    ancestors: np.ndarray
    block_of_group: np.ndarray
    x_means: np.ndarray
    gamma_family: np.ndarray
    gamma_nu: np.ndarray
    gamma_mu: np.ndarray
    gamma_scale: np.ndarray
    sd_family: np.ndarray
    sd_nu: np.ndarray
    sd_mu: np.ndarray
    sd_scale: np.ndarray


def pg_data(model: GLMModel) -> PGData:
    """Arrange a GLMModel for the kernel (the kappa sums once; the omega-weighted ones per sweep)."""
    base = model.base
    W = design_matrix(base)
    trials = np.asarray(model.trials)
    kappa = base.y - 0.5 * trials
    K = base.n_cells
    cell_kappa = np.bincount(base.cell_of_row, weights=kappa, minlength=K).astype(np.float64)
    cell_wkappa = np.zeros((K, W.shape[1]))
    np.add.at(cell_wkappa, base.cell_of_row, W * kappa[:, None])
    gamma_prior = location_inputs(base).gamma_prior
    c = np.ascontiguousarray
    return PGData(
        W=c(W, dtype=np.float64), trials=c(np.round(trials).astype(np.int64)), kappa=c(kappa, dtype=np.float64),
        cell_of_row=c(base.cell_of_row, dtype=np.int64),
        codes=c(base.group_codes + base.level_offsets[:-1][None, :], dtype=np.int64),
        cell_levels=c(base.cell_levels, dtype=np.int64), cell_kappa=c(cell_kappa), cell_wkappa=c(cell_wkappa),
        wkappa=c(W.T @ kappa, dtype=np.float64), level_offsets=c(base.level_offsets, dtype=np.int64),
        depth=c(base.depth, dtype=np.int64), ancestors=c(base.ancestors, dtype=np.int64),
        block_of_group=c(base.block_of_group, dtype=np.int64), x_means=c(base.x_means, dtype=np.float64),
        gamma_family=gamma_prior.family, gamma_nu=gamma_prior.nu, gamma_mu=gamma_prior.mu,
        gamma_scale=gamma_prior.scale, sd_family=c(base.sd_prior_family, dtype=np.int64),
        sd_nu=c(base.sd_prior_nu, dtype=np.float64), sd_mu=c(base.sd_prior_mu, dtype=np.float64),
        sd_scale=c(base.sd_prior_scale, dtype=np.float64),
    )


@numba.njit(cache=True, nogil=True)
def _omega_and_weighted_sums(rng, d, gamma, r, cell_n, cell_w, wtw, level_n, level_w):
    """Step 1: omega_i ~ PG(n_i, eta_i) and, in the same pass, the omega-weighted cell statistics
    (cell_n = sum omega, cell_w = sum omega w, wtw = sum omega w w'), then their per-level sums."""
    n, q = d.W.shape
    n_groups = d.codes.shape[1]
    cell_n[:] = 0.0
    cell_w[:, :] = 0.0
    wtw[:, :] = 0.0
    for i in range(n):
        eta = 0.0
        for a in range(q):
            eta += d.W[i, a] * gamma[a]
        for g in range(n_groups):
            eta += r[d.codes[i, g]]
        omega = draw_pg(rng, d.trials[i], eta)
        k = d.cell_of_row[i]
        cell_n[k] += omega
        for a in range(q):
            weighted = omega * d.W[i, a]
            cell_w[k, a] += weighted
            for b in range(a + 1):
                wtw[a, b] += weighted * d.W[i, b]
    for a in range(q):
        for b in range(a):
            wtw[b, a] = wtw[a, b]
    level_n[:] = 0.0
    level_w[:, :] = 0.0
    for k in range(cell_n.shape[0]):
        for g in range(n_groups):
            level = d.cell_levels[k, g]
            level_n[level] += cell_n[k]
            for a in range(q):
                level_w[level, a] += cell_w[k, a]


@numba.njit(cache=True, nogil=True)
def _pg_chain(rng, d, n_iter, n_warmup, thin, n_blocks, collapse, save_ranef, has_intercept, init_sd):
    """Run one chain; returns (draws (n_kept, q + G), ranef (n_kept, L or 0))."""
    n, q = d.W.shape
    n_groups = init_sd.shape[0]
    n_total = d.depth.shape[0]
    n_cells = d.cell_kappa.shape[0]
    max_depth = d.ancestors.shape[1]
    n_kept = (n_iter - n_warmup + thin - 1) // thin
    draws = np.empty((n_kept, q + n_groups))
    ranef = np.empty((n_kept, n_total if save_ranef else 0))

    gamma = np.zeros(q)
    r = np.zeros(n_total)
    tau = init_sd.copy()
    tau_aux = np.ones(n_groups)
    mixing = np.ones(q)
    gamma_precision = np.zeros(q)
    gamma_prior_mean = np.zeros(q)
    for a in range(q):
        if d.gamma_family[a] != _FLAT:
            gamma_prior_mean[a] = d.gamma_mu[a]
    # omega-weighted statistics (recomputed every sweep)
    cell_n = np.zeros(n_cells)
    cell_w = np.zeros((n_cells, q))
    wtw = np.zeros((q, q))
    level_n = np.zeros(n_total)
    level_w = np.zeros((n_total, q))
    # work arrays of the Gaussian location block and of the collapsed steps (every level its own "size")
    other = np.zeros(n_cells)
    level_rhs = np.zeros(n_total)
    a_diag = np.zeros(n_total)
    a_anc = np.zeros((n_total, max_depth))
    b_rows = np.zeros((n_total, q))
    c_mat = np.zeros((q, q))
    rhs_gamma = np.zeros(q)
    zeros_q = np.zeros(q)
    level_size = np.arange(n_total)
    size_count = np.ones(n_total)
    size_work = np.zeros(n_total)
    # the Gaussian kernels' inputs with the omega-weighted statistics in place of the counts and kappa
    # in place of y (sigma^2 = 1); cell_n, cell_w, wtw, level_n, level_w are refilled in place each sweep
    location = LocationData(cell_n, d.cell_kappa, cell_w, d.cell_wkappa, d.cell_levels, wtw, d.wkappa, level_n,
                            level_w, d.level_offsets, d.depth, d.ancestors, d.block_of_group)
    work = LocationWork(other, level_rhs, a_diag, a_anc, b_rows, c_mat, rhs_gamma)
    # every level its own "size" for the collapsed SD step (omega makes the level sizes all distinct)
    sizes = LevelSizes(level_size, d.level_offsets, level_n, size_count)
    sd_prior = PriorArrays(d.sd_family, d.sd_nu, d.sd_mu, d.sd_scale)

    kept = 0
    for iteration in range(n_iter):
        _omega_and_weighted_sums(rng, d, gamma, r, cell_n, cell_w, wtw, level_n, level_w)
        for a in range(q):
            if d.gamma_family[a] == _NORMAL:
                gamma_precision[a] = 1.0 / (d.gamma_scale[a] * d.gamma_scale[a])
            elif d.gamma_family[a] == _STUDENT_T:
                gamma_precision[a] = 1.0 / (d.gamma_scale[a] * d.gamma_scale[a] * mixing[a])
        for block in range(max(n_blocks, 1)):
            _location_block(rng, block, bool(True), bool(False), gamma, r, tau, 1.0, gamma_precision, gamma_prior_mean,
                            location, work)
        for a in range(q):
            if d.gamma_family[a] == _STUDENT_T:
                z = (gamma[a] - d.gamma_mu[a]) / d.gamma_scale[a]
                mixing[a] = _inverse_gamma(rng, 0.5 * (d.gamma_nu[a] + 1.0), 0.5 * (d.gamma_nu[a] + z * z))
        for g in range(n_groups):
            ss = 0.0
            for v in range(d.level_offsets[g], d.level_offsets[g + 1]):
                ss += r[v] * r[v]
            tau[g], tau_aux[g] = _draw_scale(rng, tau[g], tau_aux[g], float(d.level_offsets[g + 1] - d.level_offsets[g]),
                                             ss, d.sd_family[g], d.sd_nu[g], d.sd_mu[g], d.sd_scale[g])
            if collapse:
                _collapsed_scale_step(rng, g, gamma, r, tau, 1.0, location, sizes, level_rhs, size_work, sd_prior)
        if collapse:
            for g in range(n_groups):
                if (g == 0 or d.block_of_group[g] != d.block_of_group[g - 1]) and g + 1 < n_groups \
                        and d.block_of_group[g + 1] == d.block_of_group[g]:
                    _collapsed_top_step(rng, d.block_of_group[g], g, gamma, r, tau, 1.0, zeros_q, location, work,
                                        sd_prior)
        if iteration >= n_warmup and (iteration - n_warmup) % thin == 0:
            store_location_draw(draws[kept], gamma, d.x_means, has_intercept)
            for g in range(n_groups):
                draws[kept, q + g] = tau[g]
            if save_ranef:
                for v in range(n_total):
                    ranef[kept, v] = r[v]
            kept += 1
    return draws, ranef


# ------------------------------------------------------------------------------- random slopes
# With random slopes the location block is engine.multilevel.blocks' (q_g x q_g level blocks from the
# per-cell cross-products of u = (w, z_1, ..., z_G)) and the covariances are updated as in
# engine.gibbs_slopes; the augmentation only changes the cross-products: UU_k = sum_{i in k} omega_i u_i u_i'
# (redrawn every sweep, O(N Q^2)) and Uy_k = sum_{i in k} kappa_i u_i (fixed), with sigma^2 = 1.


class PGSlopesData(NamedTuple):
    """The slopes kernel's rows (N rows, Q = q_fix + sum q_g columns of u): U (N, Q) = [1, x_c, Z];
    trials (N,) int64; cell_of_row (N,); slopes: engine.gibbs_slopes.SlopesData whose block.cell_uu
    (K, Q, Q) is the work array the kernel refills with the omega-weighted cross-products and whose
    block.cell_uy (K, Q) holds sum kappa u per cell."""

    U: np.ndarray
    trials: np.ndarray
    cell_of_row: np.ndarray
    slopes: object


def pg_slopes_data(model: GLMModel) -> PGSlopesData:
    """Arrange a GLMModel with random slopes for _pg_slopes_chain (a fresh cell_uu work array)."""
    from engine.gibbs_slopes import slopes_data
    from engine.multilevel.model import _cell_cross_products

    base = model.base
    U = np.ascontiguousarray(np.column_stack([design_matrix(base), base.Z]), dtype=np.float64)
    trials = np.asarray(model.trials)
    kappa = np.ascontiguousarray(base.y - 0.5 * trials, dtype=np.float64)
    cell_of_row = np.ascontiguousarray(base.cell_of_row, dtype=np.int64)
    _, cell_uy = _cell_cross_products(U, kappa, cell_of_row, int(base.n_cells))
    slopes = slopes_data(base)
    block = slopes.block._replace(cell_uu=np.zeros_like(slopes.block.cell_uu), cell_uy=np.ascontiguousarray(cell_uy))
    return PGSlopesData(U, np.ascontiguousarray(np.round(trials).astype(np.int64)), cell_of_row,
                        slopes._replace(block=block))


@numba.njit(cache=True, nogil=True)
def _omega_cross_products(rng, d, gamma, r):
    """omega_i ~ PG(n_i, eta_i), eta_i = u_i' (gamma, r of row i's levels), and in the same pass
    cell_uu[k] = sum_{i in k} omega_i u_i u_i' (lower triangle, then mirrored)."""
    block = d.slopes.block
    cell_uu, cell_levels, qf = block.cell_uu, block.cell_levels, block.q_fix
    dims, z_off = block.group_dims, block.z_offsets
    n, m = d.U.shape
    n_groups = cell_levels.shape[1]
    cell_uu[:, :, :] = 0.0
    for i in range(n):
        k = d.cell_of_row[i]
        eta = 0.0
        for a in range(qf):
            eta += d.U[i, a] * gamma[a]
        for g in range(n_groups):
            v = cell_levels[k, g]
            col = qf + z_off[g]
            for c in range(dims[g]):
                eta += d.U[i, col + c] * r[v, c]
        omega = draw_pg(rng, d.trials[i], eta)
        for a in range(m):
            weighted = omega * d.U[i, a]
            for b in range(a + 1):
                cell_uu[k, a, b] += weighted * d.U[i, b]
    for k in range(cell_uu.shape[0]):
        for a in range(m):
            for b in range(a):
                cell_uu[k, b, a] = cell_uu[k, a, b]


@numba.njit(cache=True, nogil=True)
def _interweave_slopes_sds(rng, gamma, r, theta, chol, sigma_inv, data, theta_k):
    """ASIS (Yu & Meng 2011) for every sd: redraw sd_j of coefficient c of group g given the non-centred
    coefficients u = r_{.,c} / sd_j (and R_t, gamma, omega) fixed: r = diag(sd) L z, so scaling sd_j
    scales column c of r alone, and given omega the likelihood is Gaussian in sd_j with precision
    B = sum_k u_k^2 UU_k[c, c] and linear term A = sum_k u_k (Uy_k[c] - (UU_k theta_k^0)[c]) (theta_k^0:
    cell k's (gamma, r) with that coefficient zeroed). One slice update of log sd_j under that and its
    prior (engine.gibbs._slice_log_scale); exact, and it breaks the sd-r dependence that makes a
    small slope sd sticky in the centred chain."""
    block, terms, prior = data.block, data.terms, data.sd_prior
    cell_uu, cell_uy, cell_levels, qf = block.cell_uu, block.cell_uy, block.cell_levels, block.q_fix
    n_cells, n_groups = cell_levels.shape
    n_u = cell_uy.shape[1]
    for t in range(terms.group.shape[0]):
        g = terms.group[t]
        for j in range(terms.dim[t]):
            c = terms.offset[t] + j
            col = qf + block.z_offsets[g] + c
            so = terms.sd_offset[t] + j
            old = np.exp(theta[t, j])
            precision = 0.0
            linear = 0.0
            for k in range(n_cells):
                for a in range(qf):
                    theta_k[a] = gamma[a]
                for h in range(n_groups):
                    vh = cell_levels[k, h]
                    for e in range(block.group_dims[h]):
                        theta_k[qf + block.z_offsets[h] + e] = r[vh, e]
                u = theta_k[col] / old
                theta_k[col] = 0.0
                s = 0.0
                for b in range(n_u):
                    s += cell_uu[k, col, b] * theta_k[b]
                precision += u * u * cell_uu[k, col, col]
                linear += u * (cell_uy[k, col] - s)
            new = _slice_log_scale(rng, old, np.int64(1), precision, linear, prior.family[so], prior.nu[so],
                                   prior.mu[so], prior.scale[so])
            ratio = new / old
            for v in range(block.level_offsets[g], block.level_offsets[g + 1]):
                r[v, c] *= ratio
            theta[t, j] = np.log(new)
        _term_precision(theta[t], terms.dim[t], terms.correlated[t], chol[t], sigma_inv[g], terms.offset[t])


@numba.njit(cache=True, nogil=True)
def _pg_slopes_chain(rng, d, n_iter, n_warmup, thin, save_ranef, init_sd, interweave):
    """One chain of the slopes model; returns (draws (n_kept, b + sd + cor), ranef (n_kept, R or 0)).
    Per sweep: omega and the weighted cross-products, then the slopes Gibbs chain's own steps on them
    (engine.gibbs_slopes): the location block(s) with sigma^2 = 1 and the Student-t auxiliaries of gamma
    (slopes_location_step), every term's (sd, R) (_update_covariances), then (``interweave``) each sd
    once more in the non-centred parametrisation (_interweave_slopes_sds)."""
    data = d.slopes
    n_kept = (n_iter - n_warmup + thin - 1) // thin
    n_params = data.block.q_fix + data.n_sd + data.n_cor
    draws = np.empty((n_kept, n_params))
    ranef = np.empty((n_kept, _n_ranef(data.block) if save_ranef else 0))
    row = np.empty(n_params + 1)  # _store_draw's layout ends with sigma (here unused)
    chain = start_slopes_chain(data, init_sd)
    theta_k = np.zeros(data.block.cell_uy.shape[1])

    kept = 0
    for iteration in range(n_iter):
        _omega_cross_products(rng, d, chain.gamma, chain.r)
        slopes_location_step(rng, 1.0, chain, data)
        _update_covariances(rng, chain.r, chain.theta, chain.chol, chain.sigma_inv, chain.scatter, chain.cov_work,
                            data)
        if interweave:
            _interweave_slopes_sds(rng, chain.gamma, chain.r, chain.theta, chain.chol, chain.sigma_inv, data, theta_k)
        if iteration >= n_warmup and (iteration - n_warmup) % thin == 0:
            _store_draw(row, ranef[kept], chain.gamma, chain.theta, chain.chol, 1.0, chain.r, data, save_ranef)
            for a in range(n_params):
                draws[kept, a] = row[a]
            kept += 1
    return draws, ranef


def sample_chain(model: GLMModel, n_iter: int, n_warmup: int, seed: np.random.SeedSequence | int | None = None,
                 thin: int = 1, save_ranef: bool = True, collapse: bool = True, init: dict | None = None) -> ChainResult:
    """One Pólya-Gamma Gibbs chain of a bernoulli or binomial GLMModel.

    ``seed``: a SeedSequence (one per chain) or an int; ``init``: optional {"sd": (G,)} starting SDs
    (default 0.5 exp(U(-1, 1)) each; gamma and r start at 0 and are drawn first). ``collapse``: the
    partially collapsed SD steps (exact; mixing only). Returns ChainResult(draws (n_kept, n_params),
    ranef (n_kept, L), stats {}), n_kept = ceil((n_iter - n_warmup) / thin).
    """
    if not isinstance(model, GLMModel):
        raise ModelSpecError("gibbs_pg.sample_chain needs a GLMModel (engine.multilevel.families.build_glm_model)")
    if model.family.code not in (BERNOULLI, BINOMIAL):
        raise ModelSpecError(
            f"sampler='gibbs' is not available for the {model.family.name} family: the Pólya-Gamma Gibbs sampler "
            "needs a logit link (bernoulli, binomial); use sampler='nuts'")
    n_iter, n_warmup, thin = int(n_iter), int(n_warmup), int(thin)
    if n_warmup < 0 or n_iter <= n_warmup:
        raise ModelSpecError(f"n_warmup must be in 0..n_iter-1 (got n_iter={n_iter}, n_warmup={n_warmup})")
    if thin < 1:
        raise ModelSpecError(f"thin must be a positive integer, got {thin}")
    if model.base.n_groups == 0:
        raise ModelSpecError("the Pólya-Gamma Gibbs sampler needs at least one grouping factor")
    base = model.base
    level_trials = np.zeros(base.n_levels_total)
    for g in range(base.n_groups):
        np.add.at(level_trials, base.group_codes[:, g] + base.level_offsets[g], model.trials)
    if np.any(level_trials == 0):
        raise ModelSpecError("a group level has no trials (all its rows have trials 0); the Pólya-Gamma Gibbs "
                             "sampler needs at least one trial per level: drop those rows or use sampler='nuts'")
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.Generator(np.random.PCG64(sequence))
    n_sd = base.n_sd
    init_sd = 0.5 * np.exp(rng.uniform(-1.0, 1.0, size=n_sd))
    if base.has_slopes:  # a slope's sd on the scale of its column
        column_sd = np.std(base.Z, axis=0)
        init_sd = init_sd / np.where(column_sd > 0, column_sd, 1.0)
    if init is not None:
        unknown = set(init) - {"sd"}
        if unknown:
            raise ModelSpecError(f"init: unknown entries {sorted(unknown)}; the Pólya-Gamma sampler starts from 'sd'")
        init_sd = np.asarray(init["sd"], dtype=np.float64).reshape(-1)
        if init_sd.shape != (n_sd,) or not np.all(init_sd > 0):
            raise ModelSpecError(f"init['sd'] must hold {n_sd} positive values")
    if base.has_slopes:  # collapse=True: the interweaving sd steps of _pg_slopes_chain (exact; mixing only)
        draws, ranef = _pg_slopes_chain(rng, pg_slopes_data(model), n_iter, n_warmup, thin, bool(save_ranef),
                                        np.ascontiguousarray(init_sd), bool(collapse))
        if not np.all(np.isfinite(draws)):
            raise SamplerError("the Pólya-Gamma Gibbs sampler produced non-finite draws (check for separation: "
                               "a predictor that predicts the outcome perfectly makes flat priors improper)")
        return ChainResult(draws, ranef, {})
    draws, ranef = _pg_chain(rng, pg_data(model), n_iter, n_warmup, thin, int(model.base.n_blocks), bool(collapse),
                             bool(save_ranef), bool(model.base.has_intercept), np.ascontiguousarray(init_sd))
    if not np.all(np.isfinite(draws)):
        raise SamplerError("the Pólya-Gamma Gibbs sampler produced non-finite draws (check for separation: "
                           "a predictor that predicts the outcome perfectly makes flat priors improper)")
    return ChainResult(draws, ranef, {})


class PolyaGammaGibbsSampler:
    """Pólya-Gamma Gibbs as the engine.multilevel.sampler.Sampler ``"gibbs"`` of the logit families."""

    name = "gibbs"
    families = ("bernoulli", "binomial")
    unavailable_families = {"poisson": "the Pólya-Gamma Gibbs sampler needs the logit link of bernoulli or "
                                       "binomial"}
    options = {"init": None, "save_ranef": True, "collapse": True}

    def run_chain(self, model, n_iter, n_warmup, seed, thin=1, **options) -> ChainResult:
        return sample_chain(model, n_iter, n_warmup, seed, thin=thin, **options)


GIBBS_PG = register_sampler(PolyaGammaGibbsSampler())
