"""The location block with q x q blocks: random intercepts *and slopes*, drawn jointly with gamma.

Model (engine.multilevel.model): y_i = w_i'gamma + sum_g z_{g,i}' r_g[l_g(i)] + e_i, e_i ~ N(0, sigma^2),
w_i = (1, x_c,i) (q_fix columns), z_{g,i} the q_g random-design columns of group g (intercept, slopes),
r_g[l] ~ N(0, Sigma_g). Given (Sigma, sigma) theta = (gamma, r) is Gaussian with precision
U'U / sigma^2 + prior precision, U = [W, Z_1, ..., Z_G]. Everything the draw needs is a function of the
per-cell cross-products UU_k = sum_{i in k} u_i u_i' and Uy_k = sum u_i y_i (u_i = (w_i, z_1,i, ...,
z_G,i), Q = q_fix + sum_g q_g columns), computed once (DESIGN.md, "Random slopes").

Algorithm: the leaves-up elimination of engine.multilevel.location with q_g x q_g blocks in place of
scalars. For each level v (deepest group first) with precision block A_v = L_v L_v' (one q_g x q_g
Cholesky), the whitened couplings X_j = L_v^{-1} A_{v,anc_j} to its ancestors, X_b = L_v^{-1} B_v to
gamma and x = L_v^{-1} b_v update the ancestors' blocks by -X_j'X_jj, -X_j'X_b, -X_j'x and the gamma
block (Schur complement) by -X_b'X_b, -X_b'x; nesting creates no fill-in. gamma ~ N(S^{-1} b_S, S^{-1})
(one q_fix x q_fix Cholesky), then roots first r_v = L_v^{-T}(x - sum_j X_j r_anc_j - X_b gamma + z),
z ~ N(0, I): an exact draw from p(gamma) prod_v p(r_v | ancestors, gamma). Crossed blocks are drawn
one after the other, each jointly with gamma given the others (their contribution enters the cell
cross-products as UU_k[:, z_h] r_h). Cost per block draw O(K Q^2 + L (D^2 q^3 + q^2 q_fix) + q_fix^3):
independent of N.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._linalg import cholesky_log_det_into, solve_lower, solve_upper_t

__all__ = ["BlockData", "BlockWork", "make_block_work", "block_location_step", "block_sums", "block_factor", "block_draw"]


class BlockData(NamedTuple):
    """Arrays the block location kernel reads (K cells, Q = q_fix + sum q_g, G groups, L levels, D depth).

    cell_uu: (K, Q, Q); cell_uy: (K, Q); cell_levels: (K, G) global level indices; q_fix: int;
    group_dims: (G,) q_g; z_offsets: (G + 1,) column of group g's block in u is q_fix + z_offsets[g];
    level_offsets: (G + 1,); level_group: (L,); depth: (L,); ancestors: (L, D); block_of_group: (G,).
    """

    cell_uu: np.ndarray
    cell_uy: np.ndarray
    cell_levels: np.ndarray
    q_fix: int
    group_dims: np.ndarray
    z_offsets: np.ndarray
    level_offsets: np.ndarray
    level_group: np.ndarray
    depth: np.ndarray
    ancestors: np.ndarray
    block_of_group: np.ndarray


class BlockWork(NamedTuple):
    """Work arrays (qm = max q_g): a_diag (L, qm, qm), a_anc (L, D, qm, qm), b_rows (L, qm, q_fix),
    level_rhs (L, qm), c_mat (q_fix, q_fix), rhs_gamma (q_fix,), uy_adj (Q,)."""

    a_diag: np.ndarray
    a_anc: np.ndarray
    b_rows: np.ndarray
    level_rhs: np.ndarray
    c_mat: np.ndarray
    rhs_gamma: np.ndarray
    uy_adj: np.ndarray


@numba.njit(cache=True, nogil=True)
def make_block_work(data):
    n_total = data.level_group.shape[0]
    qm = 1
    for g in range(data.group_dims.shape[0]):
        qm = max(qm, data.group_dims[g])
    qf = data.q_fix
    return BlockWork(np.zeros((n_total, qm, qm)), np.zeros((n_total, data.ancestors.shape[1], qm, qm)),
                     np.zeros((n_total, qm, qf)), np.zeros((n_total, qm)), np.zeros((qf, qf)), np.zeros(qf),
                     np.zeros(data.cell_uy.shape[1]))


@numba.njit(cache=True, nogil=True)
def _accumulate(block, r, data, work):
    """Sum the cell cross-products into the block's level blocks, couplings and right-hand sides
    (other blocks' coefficients moved to the right-hand side), and W'W, W'y into c_mat, rhs_gamma."""
    cell_uu, cell_uy, cell_levels, qf = data.cell_uu, data.cell_uy, data.cell_levels, data.q_fix
    dims, z_off, level_offsets = data.group_dims, data.z_offsets, data.level_offsets
    level_group, depth, ancestors, block_of_group = data.level_group, data.depth, data.ancestors, data.block_of_group
    a_diag, a_anc, b_rows, level_rhs = work.a_diag, work.a_anc, work.b_rows, work.level_rhs
    c_mat, rhs_gamma, uy_adj = work.c_mat, work.rhs_gamma, work.uy_adj
    n_cells, n_groups = cell_levels.shape
    n_u = cell_uy.shape[1]
    for g in range(n_groups):
        if block_of_group[g] != block:
            continue
        for v in range(level_offsets[g], level_offsets[g + 1]):
            a_diag[v] = 0.0
            a_anc[v] = 0.0
            b_rows[v] = 0.0
            level_rhs[v] = 0.0
    c_mat[:, :] = 0.0
    rhs_gamma[:] = 0.0
    for k in range(n_cells):
        for a in range(n_u):
            uy_adj[a] = cell_uy[k, a]
        for h in range(n_groups):
            if block_of_group[h] == block:
                continue
            vh = cell_levels[k, h]
            col = qf + z_off[h]
            for c in range(dims[h]):
                coef = r[vh, c]
                if coef != 0.0:
                    for a in range(n_u):
                        uy_adj[a] -= cell_uu[k, a, col + c] * coef
        for a in range(qf):
            rhs_gamma[a] += uy_adj[a]
            for b in range(qf):
                c_mat[a, b] += cell_uu[k, a, b]
        for g in range(n_groups):
            if block_of_group[g] != block:
                continue
            v = cell_levels[k, g]
            col = qf + z_off[g]
            dg = dims[g]
            for a in range(dg):
                level_rhs[v, a] += uy_adj[col + a]
                for b in range(dg):
                    a_diag[v, a, b] += cell_uu[k, col + a, col + b]
                for b in range(qf):
                    b_rows[v, a, b] += cell_uu[k, col + a, b]
                for j in range(depth[v]):
                    anc_group = level_group[ancestors[v, j]]
                    col_anc = qf + z_off[anc_group]
                    for b in range(dims[anc_group]):
                        a_anc[v, j, a, b] += cell_uu[k, col + a, col_anc + b]


@numba.njit(cache=True, nogil=True)
def _scale_and_add_priors(block, source, sigma_inv, sigma2, gamma_precision, gamma_prior_mean, data, work):
    """work <- source's sums divided by sigma^2 plus the prior precisions (Sigma_g^{-1} per level,
    diagonal on gamma). ``source`` is ``work`` itself (in place, after _accumulate) or a BlockWork
    holding sums accumulated once (block_sums: a single block's sums do not change)."""
    qf, dims, level_offsets, depth = data.q_fix, data.group_dims, data.level_offsets, data.depth
    a_diag, a_anc, b_rows, level_rhs = work.a_diag, work.a_anc, work.b_rows, work.level_rhs
    s_diag, s_anc, s_rows, s_rhs = source.a_diag, source.a_anc, source.b_rows, source.level_rhs
    c_mat, rhs_gamma = work.c_mat, work.rhs_gamma
    inv_s2 = 1.0 / sigma2
    for a in range(qf):
        rhs_gamma[a] = source.rhs_gamma[a] * inv_s2 + gamma_precision[a] * gamma_prior_mean[a]
        for b in range(qf):
            c_mat[a, b] = source.c_mat[a, b] * inv_s2
        c_mat[a, a] += gamma_precision[a]
    for g in range(dims.shape[0]):
        if data.block_of_group[g] != block:
            continue
        dg = dims[g]
        for v in range(level_offsets[g], level_offsets[g + 1]):
            for a in range(dg):
                level_rhs[v, a] = s_rhs[v, a] * inv_s2
                for b in range(dg):
                    a_diag[v, a, b] = s_diag[v, a, b] * inv_s2 + sigma_inv[g, a, b]
                for b in range(qf):
                    b_rows[v, a, b] = s_rows[v, a, b] * inv_s2
                for j in range(depth[v]):
                    for b in range(a_anc.shape[3]):
                        a_anc[v, j, a, b] = s_anc[v, j, a, b] * inv_s2


@numba.njit(cache=True, nogil=True)
def _eliminate_levels(block, draw_gamma, data, work):
    """Leaves-up elimination of every level of ``block`` (deepest group first): factor each level's
    block A_v = L_v L_v' in place, whiten its couplings (X_j = L_v^{-1} A_{v,anc_j}, X_b = L_v^{-1} B_v,
    x = L_v^{-1} b_v) and update its ancestors and (draw_gamma) the gamma block by their Schur
    complements. Returns (sum_v log det L_v, sum_v ||x_v||^2, ok): the levels' part of log det P / 2 and
    of b'P^{-1}b for block_log_marginal; ok is False when a pivot was not positive (clamped to 1e-300).

    One function over all levels with the arrays taken out of the NamedTuples once: a call per level
    passing array views cost more than its O(q^3) arithmetic on small q.
    """
    qf, dims, level_group, depth, ancestors = data.q_fix, data.group_dims, data.level_group, data.depth, data.ancestors
    level_offsets, block_of_group = data.level_offsets, data.block_of_group
    a_diag, a_anc, b_rows, level_rhs = work.a_diag, work.a_anc, work.b_rows, work.level_rhs
    c_mat, rhs_gamma = work.c_mat, work.rhs_gamma
    log_det = 0.0
    quad = 0.0
    ok = True
    for g in range(dims.shape[0] - 1, -1, -1):
        if block_of_group[g] != block:
            continue
        dg = dims[g]
        for v in range(level_offsets[g], level_offsets[g + 1]):
            dv = depth[v]
            # A_v = L_v L_v' in place; a pivot that is not positive is only reachable with degenerate
            # data: floored (1e-300) so that the factor stays finite, and reported
            exact, log_det = cholesky_log_det_into(a_diag[v], a_diag[v], dg, 1e-300, log_det)
            ok = ok and exact
            for j in range(dv):  # X_j = L^{-1} A_{v,anc_j}
                for c in range(dims[level_group[ancestors[v, j]]]):
                    for i in range(dg):
                        s = a_anc[v, j, i, c]
                        for k in range(i):
                            s -= a_diag[v, i, k] * a_anc[v, j, k, c]
                        a_anc[v, j, i, c] = s / a_diag[v, i, i]
            for c in range(qf):  # X_b = L^{-1} B_v
                for i in range(dg):
                    s = b_rows[v, i, c]
                    for k in range(i):
                        s -= a_diag[v, i, k] * b_rows[v, k, c]
                    b_rows[v, i, c] = s / a_diag[v, i, i]
            for i in range(dg):  # x = L^{-1} rhs
                s = level_rhs[v, i]
                for k in range(i):
                    s -= a_diag[v, i, k] * level_rhs[v, k]
                s /= a_diag[v, i, i]
                level_rhs[v, i] = s
                quad += s * s
            for j in range(dv):
                anc = ancestors[v, j]
                da = dims[level_group[anc]]
                for a in range(da):
                    for b in range(da):
                        s = 0.0
                        for i in range(dg):
                            s += a_anc[v, j, i, a] * a_anc[v, j, i, b]
                        a_diag[anc, a, b] -= s
                    for jj in range(j):
                        djj = dims[level_group[ancestors[v, jj]]]
                        for b in range(djj):
                            s = 0.0
                            for i in range(dg):
                                s += a_anc[v, j, i, a] * a_anc[v, jj, i, b]
                            a_anc[anc, jj, a, b] -= s
                    for b in range(qf):
                        s = 0.0
                        for i in range(dg):
                            s += a_anc[v, j, i, a] * b_rows[v, i, b]
                        b_rows[anc, a, b] -= s
                    s = 0.0
                    for i in range(dg):
                        s += a_anc[v, j, i, a] * level_rhs[v, i]
                    level_rhs[anc, a] -= s
            if draw_gamma:
                for a in range(qf):
                    s = 0.0
                    for i in range(dg):
                        s += b_rows[v, i, a] * level_rhs[v, i]
                    rhs_gamma[a] -= s
                    for b in range(a + 1):
                        s = 0.0
                        for i in range(dg):
                            s += b_rows[v, i, a] * b_rows[v, i, b]
                        c_mat[a, b] -= s
    return log_det, quad, ok


@numba.njit(cache=True, nogil=True)
def _factor_gamma(work):
    """Cholesky of the Schur complement S (lower triangle of c_mat) in place and u = L_S^{-1} rhs_gamma
    in rhs_gamma. Returns (log det L_S, ||u||^2, ok)."""
    c_mat, rhs = work.c_mat, work.rhs_gamma
    ok, log_det = cholesky_log_det_into(c_mat, c_mat, rhs.shape[0], 1e-300, 0.0)
    u = solve_lower(c_mat, rhs)
    quad = 0.0
    for i in range(u.shape[0]):
        rhs[i] = u[i]
        quad += u[i] * u[i]
    return log_det, quad, ok


@numba.njit(cache=True, nogil=True)
def _draw_gamma(rng, gamma, work):
    """gamma ~ N(S^{-1} rhs, S^{-1}) = L_S^{-T} (u + z), z ~ N(0, I) drawn in index order, after
    _factor_gamma (c_mat holds L_S, rhs_gamma holds u)."""
    u = work.rhs_gamma
    for i in range(gamma.shape[0]):
        u[i] += rng.standard_normal()
    gamma[:] = solve_upper_t(work.c_mat, u)


@numba.njit(cache=True, nogil=True)
def _draw_levels_roots_first(rng, block, gamma, r, data, work):
    """r_v = L_v^{-T} (x - sum_j X_j r_anc_j - X_b gamma + z), groups of the block in nesting order."""
    qf, dims, level_offsets = data.q_fix, data.group_dims, data.level_offsets
    level_group, depth, ancestors = data.level_group, data.depth, data.ancestors
    a_diag, a_anc, b_rows, level_rhs = work.a_diag, work.a_anc, work.b_rows, work.level_rhs
    t = np.empty(a_diag.shape[1])
    for g in range(dims.shape[0]):
        if data.block_of_group[g] != block:
            continue
        dg = dims[g]
        for v in range(level_offsets[g], level_offsets[g + 1]):
            chol = a_diag[v]
            for i in range(dg):
                s = level_rhs[v, i] + rng.standard_normal()
                for j in range(depth[v]):
                    anc = ancestors[v, j]
                    for b in range(dims[level_group[anc]]):
                        s -= a_anc[v, j, i, b] * r[anc, b]
                for b in range(qf):
                    s -= b_rows[v, i, b] * gamma[b]
                t[i] = s
            for i in range(dg - 1, -1, -1):
                s = t[i]
                for kk in range(i + 1, dg):
                    s -= chol[kk, i] * r[v, kk]
                r[v, i] = s / chol[i, i]


@numba.njit(cache=True, nogil=True)
def block_location_step(rng, block, draw_gamma, gamma, r, sigma_inv, sigma2, gamma_precision, gamma_prior_mean,
                        data, work):
    """Draw (gamma, r of ``block``) | other blocks, Sigma, sigma (r of ``block`` | gamma if not draw_gamma).

    gamma: (q_fix,); r: (L, qm) random coefficients, row v holds level v's q_g coefficients; sigma_inv:
    (G, qm, qm) prior precision Sigma_g^{-1} of each group's coefficient vector; gamma_precision and
    gamma_prior_mean: (q_fix,) diagonal prior of gamma. Updates gamma and r in place. Steps (module
    doc): accumulate, scale and add the priors, eliminate leaves-up, draw gamma, draw the levels.
    """
    _accumulate(block, r, data, work)
    _scale_and_add_priors(block, work, sigma_inv, sigma2, gamma_precision, gamma_prior_mean, data, work)
    _eliminate_levels(block, draw_gamma, data, work)
    if draw_gamma and data.q_fix > 0:
        _factor_gamma(work)
        _draw_gamma(rng, gamma, work)
    _draw_levels_roots_first(rng, block, gamma, r, data, work)


# ------------------------------------------------------------------ one block: sums once, marginal


@numba.njit(cache=True, nogil=True)
def block_sums(data):
    """The unscaled sums (a BlockWork) of a model whose groups form one block (n_blocks <= 1): with no
    other block's coefficients to move to the right-hand side they are fixed, so accumulate them once
    and let block_factor scale them each iteration."""
    sums = make_block_work(data)
    _accumulate(np.int64(0), np.zeros((data.level_group.shape[0], sums.a_diag.shape[1])), data, sums)
    return sums


@numba.njit(cache=True, nogil=True)
def block_factor(sigma_inv, log_det_sigma, sigma2, gamma_precision, gamma_prior_mean, yty, n_obs, data, sums, work):
    """Factor the precision P of theta = (gamma, r) given (Sigma, sigma) into ``work`` (one block) and
    return (log p(y | Sigma, sigma), ok): the marginal likelihood with gamma and every random coefficient
    integrated out, up to a constant free of (Sigma, sigma),

        -n log sigma - y'y / (2 sigma^2) - sum_v log det Sigma_g(v) / 2 - log det P / 2 + b'P^{-1}b / 2,

    b = U'y / sigma^2 + (Lambda m, 0) (Lambda, m: gamma's prior precision and mean; flat entries 0).
    The leaves-up elimination gives log det P / 2 = sum_v log det L_v + log det L_S and b'P^{-1}b =
    sum_v ||x_v||^2 + ||L_S^{-1} rhs_S||^2 (Schur complements, block by block). log_det_sigma: (G,)
    log det Sigma_g; sums: block_sums. ok is False when a pivot was not positive (then reject the
    point). block_draw then draws (gamma, r) from the factored ``work``.
    """
    _scale_and_add_priors(np.int64(0), sums, sigma_inv, sigma2, gamma_precision, gamma_prior_mean, data, work)
    log_det, quad, ok = _eliminate_levels(np.int64(0), True, data, work)
    log_det_s, quad_s, ok_s = _factor_gamma(work)
    value = -0.5 * n_obs * np.log(sigma2) - 0.5 * yty / sigma2 - log_det - log_det_s + 0.5 * (quad + quad_s)
    for g in range(data.group_dims.shape[0]):
        value -= 0.5 * (data.level_offsets[g + 1] - data.level_offsets[g]) * log_det_sigma[g]
    return value, ok and ok_s


@numba.njit(cache=True, nogil=True)
def block_draw(rng, gamma, r, data, work):
    """(gamma, r) ~ N(P^{-1} b, P^{-1}) from a ``work`` that block_factor factored (one block)."""
    if data.q_fix > 0:
        _draw_gamma(rng, gamma, work)
    _draw_levels_roots_first(rng, np.int64(0), gamma, r, data, work)
