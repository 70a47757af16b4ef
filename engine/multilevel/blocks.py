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

from engine._linalg import cholesky_into, draw_from_precision

__all__ = ["BlockData", "BlockWork", "make_block_work", "block_location_step"]


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
def _forward_solve_columns(chol, d, m, ncol):
    """m[:d, :ncol] <- L^{-1} m[:d, :ncol] for the lower factor in chol[:d, :d]."""
    for c in range(ncol):
        for i in range(d):
            s = m[i, c]
            for k in range(i):
                s -= chol[i, k] * m[k, c]
            m[i, c] = s / chol[i, i]


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
def _scale_and_add_priors(block, sigma_inv, sigma2, gamma_precision, gamma_prior_mean, data, work):
    """Divide the sums by sigma^2 and add the prior precisions (Sigma_g^{-1} per level, diagonal on gamma)."""
    qf, dims, level_offsets, depth = data.q_fix, data.group_dims, data.level_offsets, data.depth
    a_diag, a_anc, b_rows, level_rhs = work.a_diag, work.a_anc, work.b_rows, work.level_rhs
    c_mat, rhs_gamma = work.c_mat, work.rhs_gamma
    inv_s2 = 1.0 / sigma2
    for a in range(qf):
        rhs_gamma[a] = rhs_gamma[a] * inv_s2 + gamma_precision[a] * gamma_prior_mean[a]
        for b in range(qf):
            c_mat[a, b] *= inv_s2
        c_mat[a, a] += gamma_precision[a]
    for g in range(dims.shape[0]):
        if data.block_of_group[g] != block:
            continue
        dg = dims[g]
        for v in range(level_offsets[g], level_offsets[g + 1]):
            for a in range(dg):
                level_rhs[v, a] *= inv_s2
                for b in range(dg):
                    a_diag[v, a, b] = a_diag[v, a, b] * inv_s2 + sigma_inv[g, a, b]
                for b in range(qf):
                    b_rows[v, a, b] *= inv_s2
                for j in range(depth[v]):
                    for b in range(a_anc.shape[3]):
                        a_anc[v, j, a, b] *= inv_s2


@numba.njit(cache=True, nogil=True)
def _eliminate_level(v, dg, draw_gamma, data, work):
    """Factor level v's block, whiten its couplings in place and update its ancestors and the gamma block."""
    qf, dims, level_group, depth, ancestors = data.q_fix, data.group_dims, data.level_group, data.depth, data.ancestors
    a_diag, a_anc, b_rows, level_rhs = work.a_diag, work.a_anc, work.b_rows, work.level_rhs
    c_mat, rhs_gamma = work.c_mat, work.rhs_gamma
    chol = a_diag[v]
    cholesky_into(chol, chol, dg, 0.0, False, 1e-300)  # a singular pivot (degenerate data) floored, not failed
    for j in range(depth[v]):
        _forward_solve_columns(chol, dg, a_anc[v, j], dims[level_group[ancestors[v, j]]])
    _forward_solve_columns(chol, dg, b_rows[v], qf)
    for i in range(dg):  # x = L^{-1} rhs
        s = level_rhs[v, i]
        for kk in range(i):
            s -= chol[i, kk] * level_rhs[v, kk]
        level_rhs[v, i] = s / chol[i, i]
    for j in range(depth[v]):
        anc = ancestors[v, j]
        da = dims[level_group[anc]]
        xj = a_anc[v, j]
        for a in range(da):
            for b in range(da):
                s = 0.0
                for i in range(dg):
                    s += xj[i, a] * xj[i, b]
                a_diag[anc, a, b] -= s
            for jj in range(j):
                xjj = a_anc[v, jj]
                djj = dims[level_group[ancestors[v, jj]]]
                for b in range(djj):
                    s = 0.0
                    for i in range(dg):
                        s += xj[i, a] * xjj[i, b]
                    a_anc[anc, jj, a, b] -= s
            for b in range(qf):
                s = 0.0
                for i in range(dg):
                    s += xj[i, a] * b_rows[v, i, b]
                b_rows[anc, a, b] -= s
            s = 0.0
            for i in range(dg):
                s += xj[i, a] * level_rhs[v, i]
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


@numba.njit(cache=True, nogil=True)
def _draw_gamma(rng, gamma, work):
    """gamma ~ N(S^{-1} rhs, S^{-1}) from the Schur complement S (lower triangle of c_mat), S = L L'."""
    c_mat, rhs_gamma = work.c_mat, work.rhs_gamma
    qf = gamma.shape[0]
    for a in range(qf):
        for b in range(a):
            c_mat[b, a] = c_mat[a, b]
    draw_from_precision(rng, np.linalg.cholesky(c_mat), rhs_gamma, gamma)


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
    _scale_and_add_priors(block, sigma_inv, sigma2, gamma_precision, gamma_prior_mean, data, work)
    for g in range(data.group_dims.shape[0] - 1, -1, -1):  # deepest group first
        if data.block_of_group[g] != block:
            continue
        for v in range(data.level_offsets[g], data.level_offsets[g + 1]):
            _eliminate_level(v, data.group_dims[g], draw_gamma, data, work)
    if draw_gamma and data.q_fix > 0:
        _draw_gamma(rng, gamma, work)
    _draw_levels_roots_first(rng, block, gamma, r, data, work)
