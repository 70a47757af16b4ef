"""The Gaussian location block of the multilevel model: (gamma, r) | scales, shared by every sampler.

Given the group SDs tau and sigma, the location parameters theta = (gamma, r), gamma = (b0_c, beta)
the centred intercept and coefficients and r every random intercept, are Gaussian with precision
Q = W'W / sigma^2 + prior precision, W = [1, X_c, Z]. Random effects of a nested run of groups (a
*block*: school, school:class, deeper) have a precision whose graph is a tree plus the edges to each
level's ancestors; eliminating levels leaves-up (deepest group first) creates no fill-in: each
elimination updates only the level's ancestors and the dense q x q fixed block (the Schur complement
S = C - B'A^{-1}B of DESIGN.md, built one level at a time). gamma is drawn from N(S^{-1} b_S, S^{-1})
with one q x q Cholesky factor and triangular solves, then every level, roots first, from its scalar
normal conditional given its ancestors and gamma (the factorisation
p(theta) = p(gamma) prod_l p(r_l | ancestors, gamma)). Cost O(L (D^2 + D q + q^2) + K q + q^3), L
levels, D nesting depth, K cells, from the cell sufficient statistics: independent of N.

``engine.gibbs`` runs it every iteration; ``draw_ranef`` runs it with gamma fixed to draw the random
effects after a collapsed sampler (NUTS with ``marginalize=True``).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._linalg import draw_from_precision
from engine.errors import ModelSpecError
from engine.multilevel.model import MultilevelModel

__all__ = ["PriorArrays", "LocationInputs", "LocationData", "LocationWork", "location_inputs", "location_data",
           "make_work", "draw_ranef", "store_location_draw"]


class PriorArrays(NamedTuple):
    """Priors of a vector of parameters as arrays (engine.multilevel.priors codes): family (k,) int64,
    nu, mu, scale (k,) float64."""

    family: np.ndarray
    nu: np.ndarray
    mu: np.ndarray
    scale: np.ndarray


class LocationInputs(NamedTuple):
    """The arrays of one MultilevelModel arranged for gamma = (b0_c, beta) (q = has_intercept + p).

    cell_w: (K, q) sums of w = (1, x_c) per cell; cell_wy: (K, q) sums of w y; wtw: (q, q); wty: (q,);
    level_w: (L, q); gamma_prior: PriorArrays (q,) of gamma.
    """

    cell_w: np.ndarray
    cell_wy: np.ndarray
    wtw: np.ndarray
    wty: np.ndarray
    level_w: np.ndarray
    gamma_prior: PriorArrays


class LocationData(NamedTuple):
    """What the location-block kernel reads (K cells, G groups, L levels, q = len(gamma), D depth).

    cell_n, cell_sum_y: (K,); cell_w, cell_wy: (K, q); cell_levels: (K, G) global level indices;
    wtw: (q, q); wty: (q,); level_n: (L,); level_w: (L, q); level_offsets: (G + 1,); depth: (L,);
    ancestors: (L, D); block_of_group: (G,).
    """

    cell_n: np.ndarray
    cell_sum_y: np.ndarray
    cell_w: np.ndarray
    cell_wy: np.ndarray
    cell_levels: np.ndarray
    wtw: np.ndarray
    wty: np.ndarray
    level_n: np.ndarray
    level_w: np.ndarray
    level_offsets: np.ndarray
    depth: np.ndarray
    ancestors: np.ndarray
    block_of_group: np.ndarray


class LocationWork(NamedTuple):
    """Work arrays of the location block: other (K,), level_rhs, a_diag (L,), a_anc (L, D),
    b_rows (L, q), c_mat (q, q), rhs_gamma (q,)."""

    other: np.ndarray
    level_rhs: np.ndarray
    a_diag: np.ndarray
    a_anc: np.ndarray
    b_rows: np.ndarray
    c_mat: np.ndarray
    rhs_gamma: np.ndarray


def location_inputs(model: MultilevelModel) -> LocationInputs:
    """Augment the model's sufficient statistics with the intercept column (when the model has one)."""
    if model.has_intercept:
        cell_w = np.column_stack([model.cell_n, model.cell_sum_x])
        cell_wy = np.column_stack([model.cell_sum_y, model.cell_sum_xy])
        p = model.n_coef
        wtw = np.empty((p + 1, p + 1))
        wtw[0, 0] = model.n_obs
        wtw[0, 1:] = wtw[1:, 0] = model.sum_x
        wtw[1:, 1:] = model.xtx
        wty = np.concatenate([[model.sum_y], model.xty])
        level_w = np.column_stack([model.level_n, model.level_sum_x])
        ip = model.intercept_prior
        family = np.concatenate([[int(ip[0])], model.b_prior_family]).astype(np.int64)
        nu = np.concatenate([[ip[1]], model.b_prior_nu])
        mu = np.concatenate([[ip[2]], model.b_prior_mu])
        scale = np.concatenate([[ip[3]], model.b_prior_scale])
    else:
        cell_w, cell_wy = model.cell_sum_x, model.cell_sum_xy
        wtw, wty, level_w = model.xtx, model.xty, model.level_sum_x
        family, nu, mu, scale = model.b_prior_family, model.b_prior_nu, model.b_prior_mu, model.b_prior_scale
    c = np.ascontiguousarray
    return LocationInputs(c(cell_w, dtype=np.float64), c(cell_wy, dtype=np.float64), c(wtw, dtype=np.float64),
                          c(wty, dtype=np.float64), c(level_w, dtype=np.float64),
                          PriorArrays(c(family, dtype=np.int64), c(nu, dtype=np.float64), c(mu, dtype=np.float64),
                                      c(scale, dtype=np.float64)))


def location_data(model: MultilevelModel, inputs: LocationInputs | None = None) -> LocationData:
    """The LocationData of ``model`` (contiguous arrays for the kernels)."""
    inputs = location_inputs(model) if inputs is None else inputs
    return LocationData(model.cell_n, model.cell_sum_y, inputs.cell_w, inputs.cell_wy,
                        np.ascontiguousarray(model.cell_levels), inputs.wtw, inputs.wty, model.level_n,
                        inputs.level_w, model.level_offsets, model.depth, model.ancestors, model.block_of_group)


@numba.njit(cache=True, nogil=True)
def make_work(data, q):
    """Fresh LocationWork arrays for ``data`` (a LocationData) and q location parameters."""
    n_total = data.level_n.shape[0]
    return LocationWork(np.zeros(data.cell_n.shape[0]), np.zeros(n_total), np.zeros(n_total),
                        np.zeros((n_total, data.ancestors.shape[1])), np.zeros((n_total, q)), np.zeros((q, q)),
                        np.zeros(q))


@numba.njit(cache=True, nogil=True)
def _location_block(rng, block, draw_gamma, eliminate_only, gamma, r, tau, sigma2, gamma_precision, gamma_prior_mean,
                    data, work):
    """Draw (gamma, r of ``block``) | other blocks, tau, sigma (or r of ``block`` | gamma when not draw_gamma).

    Updates gamma and r in place. ``data``: LocationData; ``work``: LocationWork (see make_work). ``eliminate_only``: stop after the leaves-up
    elimination (no draws); a_diag, level_rhs and b_rows of the block's top levels then hold each
    top level's Gaussian factor with its whole subtree integrated out (used by _collapsed_top_step).
    """
    cell_n, cell_sum_y, cell_w, cell_levels = data.cell_n, data.cell_sum_y, data.cell_w, data.cell_levels
    wtw, wty, level_n, level_w, level_offsets = data.wtw, data.wty, data.level_n, data.level_w, data.level_offsets
    depth, ancestors, block_of_group = data.depth, data.ancestors, data.block_of_group
    other, level_rhs, a_diag, a_anc, b_rows = work.other, work.level_rhs, work.a_diag, work.a_anc, work.b_rows
    c_mat, rhs_gamma = work.c_mat, work.rhs_gamma
    n_cells, n_groups = cell_levels.shape
    q = gamma.shape[0]
    inv_s2 = 1.0 / sigma2
    # contribution of the other blocks' effects per cell (constant within a cell)
    for k in range(n_cells):
        total = 0.0
        for g in range(n_groups):
            if block_of_group[g] != block:
                total += r[cell_levels[k, g]]
        other[k] = total
    # per-level response sums of this block, the fixed block's linear term
    for g in range(n_groups):
        if block_of_group[g] == block:
            for v in range(level_offsets[g], level_offsets[g + 1]):
                level_rhs[v] = 0.0
    for a in range(q):
        rhs_gamma[a] = wty[a]
    for k in range(n_cells):
        adjusted = cell_sum_y[k] - cell_n[k] * other[k]
        for g in range(n_groups):
            if block_of_group[g] == block:
                level_rhs[cell_levels[k, g]] += adjusted
        if other[k] != 0.0:
            for a in range(q):
                rhs_gamma[a] -= other[k] * cell_w[k, a]
    for a in range(q):
        rhs_gamma[a] = rhs_gamma[a] * inv_s2 + gamma_precision[a] * gamma_prior_mean[a]
        for b in range(q):
            c_mat[a, b] = wtw[a, b] * inv_s2
        c_mat[a, a] += gamma_precision[a]
    # initial rows of the random-effect precision (for the levels of this block)
    for g in range(n_groups):
        if block_of_group[g] != block:
            continue
        prior_precision = 1.0 / (tau[g] * tau[g])
        for v in range(level_offsets[g], level_offsets[g + 1]):
            nv = level_n[v] * inv_s2
            a_diag[v] = nv + prior_precision
            for j in range(depth[v]):
                a_anc[v, j] = nv
            for a in range(q):
                b_rows[v, a] = level_w[v, a] * inv_s2
            level_rhs[v] *= inv_s2
    # eliminate leaves-up: deepest group of the block first
    for g in range(n_groups - 1, -1, -1):
        if block_of_group[g] != block:
            continue
        for v in range(level_offsets[g], level_offsets[g + 1]):
            d = a_diag[v]
            for j in range(depth[v]):
                anc = ancestors[v, j]
                factor = a_anc[v, j] / d
                a_diag[anc] -= a_anc[v, j] * factor
                for jj in range(j):
                    a_anc[anc, jj] -= a_anc[v, jj] * factor
                for a in range(q):
                    b_rows[anc, a] -= b_rows[v, a] * factor
                level_rhs[anc] -= level_rhs[v] * factor
            if draw_gamma:
                for a in range(q):
                    scaled = b_rows[v, a] / d
                    rhs_gamma[a] -= scaled * level_rhs[v]
                    for b in range(a + 1):
                        c_mat[a, b] -= scaled * b_rows[v, b]
    if eliminate_only:
        return
    # gamma ~ N(S^{-1} rhs, S^{-1}) with S = L L' (lower Cholesky; never an inverse)
    if draw_gamma and q > 0:
        for a in range(q):
            for b in range(a):
                c_mat[b, a] = c_mat[a, b]
        draw_from_precision(rng, np.linalg.cholesky(c_mat), rhs_gamma, gamma)
    # random effects roots first: r_v | ancestors, gamma ~ N((rhs_v - A_v,anc r_anc - B_v gamma) / d_v, 1 / d_v)
    for g in range(n_groups):
        if block_of_group[g] != block:
            continue
        for v in range(level_offsets[g], level_offsets[g + 1]):
            s = level_rhs[v]
            for j in range(depth[v]):
                s -= a_anc[v, j] * r[ancestors[v, j]]
            for a in range(q):
                s -= b_rows[v, a] * gamma[a]
            d = a_diag[v]
            r[v] = s / d + rng.standard_normal() / np.sqrt(d)


@numba.njit(cache=True, nogil=True)
def store_location_draw(row, gamma, x_means, has_intercept):
    """row[:q] <- gamma = (b0_c, beta) in the canonical order with the intercept un-centred,
    b_Intercept = b0_c - x_means' beta (the samplers work with centred columns X_c = X - x_means,
    as brms does); without an intercept row[:q] = beta. Shapes: gamma (q,), x_means (q - 1,) or
    (q,) without an intercept, row (>= q,) written in place (one row of the draws array)."""
    q = gamma.shape[0]
    if has_intercept:
        intercept = gamma[0]
        for a in range(1, q):
            intercept -= x_means[a - 1] * gamma[a]
        row[0] = intercept
        for a in range(1, q):
            row[a] = gamma[a]
    else:
        for a in range(q):
            row[a] = gamma[a]


@numba.njit(cache=True, nogil=True)
def _draw_ranef_kernel(rng, gamma_draws, tau_draws, sigma_draws, data):
    n_draws, q = gamma_draws.shape
    n_total = data.level_n.shape[0]
    out = np.empty((n_draws, n_total))
    r = np.zeros(n_total)
    work = make_work(data, q)
    zeros = np.zeros(q)
    for i in range(n_draws):
        gamma = gamma_draws[i].copy()
        _location_block(rng, np.int64(0), bool(False), bool(False), gamma, r, tau_draws[i], sigma_draws[i] ** 2, zeros, zeros, data, work)
        out[i] = r
    return out


def draw_ranef(model: MultilevelModel, draws: np.ndarray, seed: np.random.SeedSequence | int | None = None) -> np.ndarray:
    """Random intercepts drawn exactly from p(r | b, sd, sigma, y), one per row of ``draws``.

    ``draws``: (n, n_params) in the canonical order (b_Intercept on the original scale, b..., sd...,
    sigma), as a collapsed sampler produces them. Exact for nested groups (one block; the
    leaves-up elimination of the location block with gamma fixed). Returns (n, L).
    """
    if model.n_blocks > 1:
        raise ModelSpecError("draw_ranef: crossed grouping factors have no exact one-pass conditional draw; "
                             "use the Gibbs sampler")
    draws = np.asarray(draws, dtype=np.float64)
    q = int(model.has_intercept) + model.n_coef
    gamma = np.ascontiguousarray(draws[:, :q])
    if model.has_intercept:  # back to the centred intercept b0_c = b_Intercept + xbar'beta
        gamma[:, 0] = draws[:, 0] + draws[:, 1:q] @ model.x_means
    tau = np.ascontiguousarray(draws[:, q:q + model.n_groups])
    sigma = np.ascontiguousarray(draws[:, q + model.n_groups])
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.Generator(np.random.PCG64(sequence))
    return _draw_ranef_kernel(rng, gamma, tau, sigma, location_data(model))
