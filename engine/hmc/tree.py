"""One NUTS transition: iterative trajectory building with multinomial sampling.

This is the "multinomial" No-U-Turn sampler of Stan (``src/stan/mcmc/hmc/nuts/base_nuts.hpp``),
described by Betancourt (2017, "A Conceptual Introduction to Hamiltonian Monte Carlo",
appendix A) after Hoffman & Gelman (2014, "The No-U-Turn Sampler", JMLR 15):

- The trajectory doubles: at depth j a new subtree of 2^j leapfrog steps is built forwards or
  backwards (direction: one uniform, forwards when u > 1/2, as Stan).
- Each state z carries the weight w(z) = exp(H0 − H(z)); weights are kept in log space and combined
  with log-sum-exp. A NaN energy counts as +∞ (weight 0, divergent).
- Within a subtree the proposal is chosen by *uniform* progressive multinomial sampling: merging a
  left and a right half, the right half's proposal replaces the left's with probability
  w_right / (w_left + w_right). Between the old trajectory and a new subtree the sampling is
  *biased* progressive: the new subtree's proposal is taken with probability
  min(1, w_new / w_old), which favours states far from the start.
- No-U-turn: a (sub)trajectory from state a to state b with summed momentum ρ turns when
  p♯_a·ρ ≤ 0 or p♯_b·ρ ≤ 0 (the generalised criterion, Betancourt 2013, arXiv:1304.1920). Every
  merge checks the merged tree and, as Stan does since 2.26 (stan-dev/stan#2799, PR #2800), two
  extra checks across the seam: left half + first state of the right half, and last state of the
  left half + right half. A subtree that turns or diverges is rejected whole: its states were
  integrated (they count in the acceptance statistic) but none can be the next draw.
- Divergence: H − H0 > 1000 (one-sided).
- The acceptance statistic (for step-size adaptation) averages min(1, exp(H0 − H)) over every
  state integrated, rejected subtrees included.

The subtree is built *iteratively*: leaf i of a depth-j subtree is the right half of the
(sub)subtrees whose sizes are 2^1 … 2^t, t = number of trailing one bits of i; after each leaf those
merges are done innermost first, which is exactly the order in which the recursive builder of
the papers finishes them, so both consume the same random numbers in the same order (the tests
compare this builder with ``tests/reference_nuts.py``, a plain recursive transcription). Pending
left halves are kept per level in the workspace (O(max_treedepth · d) memory).

Random numbers, in order, per transition: d standard normals (momentum), then for each doubling
one uniform (direction), the uniforms of the merges inside the new subtree as they happen, and one
uniform for the biased top-level merge (drawn only when w_new ≤ w_old, as Stan).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.hmc.integrator import leapfrog_arrays
from engine.hmc.metric import draw_momentum, kinetic_energy, velocity, velocity_and_kinetic_arrays

MAX_ENERGY_ERROR = 1000.0


class TreeWorkspace(NamedTuple):
    """Preallocated arrays for one chain (d = dimension, D = max tree depth)."""

    # integration edges of the trajectory (forward and backward ends)
    forward_position: np.ndarray  # (d,)
    forward_momentum: np.ndarray
    forward_gradient: np.ndarray
    backward_position: np.ndarray
    backward_momentum: np.ndarray
    backward_gradient: np.ndarray
    scalars: np.ndarray  # (4,): forward logp, backward logp, proposal logp, sample logp
    # momenta / velocities at the four inner and outer ends (Stan's p_fwd_fwd ... p_sharp_bck_bck)
    ends: np.ndarray  # (8, d)
    rho: np.ndarray  # (d,) summed momentum of the whole trajectory
    rho_forward: np.ndarray
    rho_backward: np.ndarray
    # the subtree being built: its running summary ("current")
    current_rho: np.ndarray
    current_ends: np.ndarray  # (4, d): p_begin, p♯_begin, p_end, p♯_end
    proposal_position: np.ndarray  # (d,)
    proposal_gradient: np.ndarray
    # pending left halves, one per level
    left_log_weight: np.ndarray  # (D,)
    left_proposal_logp: np.ndarray  # (D,)
    left_proposal_position: np.ndarray  # (D, d)
    # kinetic energy of each pending proposal: the transition's energy diagnostic needs only the
    # chosen state's -logp + K, so its momentum is never copied along
    left_proposal_kinetic: np.ndarray  # (D,)
    left_proposal_gradient: np.ndarray  # (D, d)
    left_rho: np.ndarray  # (D, d)
    left_ends: np.ndarray  # (D, 4, d)
    # chosen state of the transition
    sample_position: np.ndarray
    sample_gradient: np.ndarray
    # scratch vectors for momentum sums (no allocation inside the tree)
    merged_rho: np.ndarray  # (d,)
    seam_rho: np.ndarray  # (d,)
    # optional trace of every leapfrog state, in integration order (capacity 0: no trace)
    trace_position: np.ndarray  # (capacity, d)
    trace_log_weight: np.ndarray  # (capacity,)


# Row indices, as np.int64 rather than Python ints: Numba types a global Python int as a literal, so
# every distinct constant passed to no_u_turn compiled a specialisation of its own (six in all).
# rows of TreeWorkspace.ends
P_FWD_FWD, P_SHARP_FWD_FWD, P_FWD_BCK, P_SHARP_FWD_BCK = (np.int64(k) for k in (0, 1, 2, 3))
P_BCK_FWD, P_SHARP_BCK_FWD, P_BCK_BCK, P_SHARP_BCK_BCK = (np.int64(k) for k in (4, 5, 6, 7))
# rows of current_ends / left_ends
BEGIN, SHARP_BEGIN, END, SHARP_END = (np.int64(k) for k in (0, 1, 2, 3))


def make_workspace(dimension: int, max_treedepth: int, trace_capacity: int = 0) -> TreeWorkspace:
    d, depth = dimension, max(int(max_treedepth), 1)
    z = np.zeros
    return TreeWorkspace(
        z(d), z(d), z(d), z(d), z(d), z(d), z(4), z((8, d)), z(d), z(d), z(d),
        z(d), z((4, d)), z(d), z(d),
        z(depth), z(depth), z((depth, d)), z(depth), z((depth, d)), z((depth, d)),
        z((depth, 4, d)),
        z(d), z(d), z(d), z(d), z((trace_capacity, d)), z(trace_capacity),
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def log_sum_exp(a, b):
    """log(exp(a) + exp(b)) without overflow; -inf absorbs."""
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def no_u_turn(minus_rows, minus_row, plus_rows, plus_row, rho):
    """Generalised criterion: the (sub)trajectory keeps going while both ends move along rho; the ends'
    velocities p♯₋ = minus_rows[minus_row], p♯₊ = plus_rows[plus_row] are read in place (a row view
    per call would cost reference-count updates in the tree's merge loop)."""
    plus_dot = 0.0
    for i in range(rho.shape[0]):
        plus_dot += plus_rows[plus_row, i] * rho[i]
    if not plus_dot > 0.0:
        return False
    minus_dot = 0.0
    for i in range(rho.shape[0]):
        minus_dot += minus_rows[minus_row, i] * rho[i]
    return minus_dot > 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def build_subtree(logp_and_grad, args, rng, depth, direction, step_size, metric, initial_energy,
                  edge_position, edge_momentum, edge_gradient, edge_logp, workspace, n_leapfrog_before):
    """Integrate 2^depth leapfrog steps from the edge state, sampling a proposal on the way.

    The edge arrays are advanced in place. The subtree's summary is left in the workspace
    (current_rho, current_ends, proposal_position/gradient). Returns (valid, log_weight, proposal_logp,
    proposal_kinetic, edge_logp, n_leapfrog, sum_metropolis_probability, divergent), proposal_kinetic
    the proposal's ½ pᵀ M⁻¹ p.
    """
    ws = workspace
    # the workspace's arrays taken out once: a NamedTuple field read in the leaf loop costs a
    # reference-count update each time, which cost more than the arithmetic
    current_ends = ws.current_ends
    current_rho = ws.current_rho
    left_ends = ws.left_ends
    left_log_weight = ws.left_log_weight
    left_proposal_gradient = ws.left_proposal_gradient
    left_proposal_logp = ws.left_proposal_logp
    left_proposal_kinetic = ws.left_proposal_kinetic
    left_proposal_position = ws.left_proposal_position
    left_rho = ws.left_rho
    proposal_gradient = ws.proposal_gradient
    proposal_position = ws.proposal_position
    trace_log_weight = ws.trace_log_weight
    trace_position = ws.trace_position
    signed_step = direction * step_size
    n_leapfrog = 0
    sum_metropolis = 0.0
    log_weight = -np.inf
    proposal_logp = -np.inf
    proposal_kinetic = np.inf
    position, momentum, gradient, logp = edge_position, edge_momentum, edge_gradient, edge_logp
    dimension = position.shape[0]
    merged_rho = ws.merged_rho
    seam_rho = ws.seam_rho
    sharp_end = current_ends[SHARP_END]
    # the density's and the metric's arrays taken out once, for the same reason
    data, index_array = args[0], args[1]
    is_dense, diagonal, inverse = metric.is_dense, metric.inverse_diagonal, metric.inverse_dense
    n_leaves = 1 << depth
    for leaf in range(n_leaves):
        logp = leapfrog_arrays(logp_and_grad, data, index_array, position, momentum, gradient, signed_step,
                               is_dense, diagonal, inverse)
        n_leapfrog += 1
        # the leaf's velocity p♯ (into current_ends[SHARP_END]) and kinetic energy ½ pᵀ p♯ in one pass
        kinetic = velocity_and_kinetic_arrays(momentum, is_dense, diagonal, inverse, sharp_end)
        energy = -logp + kinetic
        if math.isnan(energy):
            energy = np.inf
        leaf_log_weight = initial_energy - energy
        index = n_leapfrog_before + n_leapfrog - 1
        if index < trace_log_weight.shape[0]:
            for i in range(dimension):
                trace_position[index, i] = position[i]
            trace_log_weight[index] = leaf_log_weight
        sum_metropolis += 1.0 if leaf_log_weight > 0.0 else math.exp(leaf_log_weight)
        if energy - initial_energy > MAX_ENERGY_ERROR:
            return False, log_weight, proposal_logp, proposal_kinetic, logp, n_leapfrog, sum_metropolis, True
        # the leaf is the current subtree of size 1. Copies are explicit loops, several arrays per
        # pass: a slice assignment checks shapes and overlap and loops once per array
        for i in range(dimension):
            p = momentum[i]
            current_rho[i] = p
            current_ends[BEGIN, i] = p
            current_ends[END, i] = p
            current_ends[SHARP_BEGIN, i] = sharp_end[i]
            proposal_position[i] = position[i]
            proposal_gradient[i] = gradient[i]
        proposal_logp = logp
        proposal_kinetic = kinetic
        log_weight = leaf_log_weight
        level = 0
        while (leaf >> level) & 1:
            # merge the pending left half at this level with the current (right) half
            level_log_weight = left_log_weight[level]
            merged_log_weight = log_sum_exp(level_log_weight, log_weight)
            take_right = True
            if not (log_weight > merged_log_weight):
                if not (rng.random() < math.exp(log_weight - merged_log_weight)):
                    take_right = False
            if not take_right:
                for i in range(dimension):
                    proposal_position[i] = left_proposal_position[level, i]
                    proposal_gradient[i] = left_proposal_gradient[level, i]
                proposal_logp = left_proposal_logp[level]
                proposal_kinetic = left_proposal_kinetic[level]
            level_ends = left_ends[level]
            level_rho = left_rho[level]
            for i in range(dimension):
                merged_rho[i] = level_rho[i] + current_rho[i]
            persist = no_u_turn(level_ends, SHARP_BEGIN, current_ends, SHARP_END, merged_rho)
            if persist:
                for i in range(dimension):
                    seam_rho[i] = level_rho[i] + current_ends[BEGIN, i]
                persist = no_u_turn(level_ends, SHARP_BEGIN, current_ends, SHARP_BEGIN, seam_rho)
            if persist:
                for i in range(dimension):
                    seam_rho[i] = current_rho[i] + level_ends[END, i]
                persist = no_u_turn(level_ends, SHARP_END, current_ends, SHARP_END, seam_rho)
            for i in range(dimension):
                current_rho[i] = merged_rho[i]
                current_ends[BEGIN, i] = level_ends[BEGIN, i]
                current_ends[SHARP_BEGIN, i] = level_ends[SHARP_BEGIN, i]
            log_weight = merged_log_weight
            if not persist:
                return False, log_weight, proposal_logp, proposal_kinetic, logp, n_leapfrog, sum_metropolis, False
            level += 1
        if level < depth:
            # the current subtree is the left half at this level: park it
            left_log_weight[level] = log_weight
            left_proposal_logp[level] = proposal_logp
            left_proposal_kinetic[level] = proposal_kinetic
            for i in range(dimension):
                left_proposal_position[level, i] = proposal_position[i]
                left_proposal_gradient[level, i] = proposal_gradient[i]
                left_rho[level, i] = current_rho[i]
                for row in range(4):
                    left_ends[level, row, i] = current_ends[row, i]
    return True, log_weight, proposal_logp, proposal_kinetic, logp, n_leapfrog, sum_metropolis, False


@numba.njit(cache=True, nogil=True, error_model="numpy")
def nuts_transition(logp_and_grad, args, rng, position, logp, gradient, step_size, metric,
                    max_treedepth, workspace):
    """One NUTS step from (position, logp, gradient).

    The chosen state is left in workspace.sample_position / sample_gradient. Returns
    (sample_logp, accept_stat, n_leapfrog, treedepth, divergent, energy).
    """
    ws = workspace
    backward_gradient = ws.backward_gradient
    backward_momentum = ws.backward_momentum
    backward_position = ws.backward_position
    current_ends = ws.current_ends
    current_rho = ws.current_rho
    ends = ws.ends
    forward_gradient = ws.forward_gradient
    forward_momentum = ws.forward_momentum
    forward_position = ws.forward_position
    proposal_gradient = ws.proposal_gradient
    proposal_position = ws.proposal_position
    rho = ws.rho
    rho_backward = ws.rho_backward
    rho_forward = ws.rho_forward
    sample_gradient = ws.sample_gradient
    sample_position = ws.sample_position
    seam_rho = ws.seam_rho
    dimension = position.shape[0]
    momentum = draw_momentum(rng, metric, dimension)
    sharp = velocity(momentum, metric)
    initial_kinetic = kinetic_energy(momentum, metric)
    initial_energy = -logp + initial_kinetic
    # copies as explicit loops, several arrays per pass (build_subtree's comment)
    for i in range(dimension):
        p = momentum[i]
        forward_position[i] = position[i]
        forward_momentum[i] = p
        forward_gradient[i] = gradient[i]
        backward_position[i] = position[i]
        backward_momentum[i] = p
        backward_gradient[i] = gradient[i]
        for row in range(0, 8, 2):
            ends[row, i] = p
            ends[row + 1, i] = sharp[i]
        rho[i] = p
        sample_position[i] = position[i]
        sample_gradient[i] = gradient[i]
    forward_logp = logp
    backward_logp = logp
    sample_logp = logp
    sample_kinetic = initial_kinetic
    log_sum_weight = 0.0
    n_leapfrog = np.int64(0)  # np.int64, not a literal 0: build_subtree would also compile for Literal[int](0)
    sum_metropolis = 0.0
    depth = np.int64(0)
    divergent = False
    while depth < max_treedepth:
        if rng.random() > 0.5:
            for i in range(dimension):
                rho_backward[i] = rho[i]
                ends[P_BCK_FWD, i] = ends[P_FWD_BCK, i]
                ends[P_SHARP_BCK_FWD, i] = ends[P_SHARP_FWD_BCK, i]
            (valid, subtree_log_weight, proposal_logp, proposal_kinetic, forward_logp, steps, metro,
             diverged) = build_subtree(
                logp_and_grad, args, rng, depth, 1.0, step_size, metric, initial_energy,
                forward_position, forward_momentum, forward_gradient, forward_logp,
                ws, n_leapfrog)
            for i in range(dimension):
                rho_forward[i] = current_rho[i]
                ends[P_FWD_BCK, i] = current_ends[BEGIN, i]
                ends[P_SHARP_FWD_BCK, i] = current_ends[SHARP_BEGIN, i]
                ends[P_FWD_FWD, i] = current_ends[END, i]
                ends[P_SHARP_FWD_FWD, i] = current_ends[SHARP_END, i]
        else:
            for i in range(dimension):
                rho_forward[i] = rho[i]
                ends[P_FWD_BCK, i] = ends[P_BCK_FWD, i]
                ends[P_SHARP_FWD_BCK, i] = ends[P_SHARP_BCK_FWD, i]
            (valid, subtree_log_weight, proposal_logp, proposal_kinetic, backward_logp, steps, metro,
             diverged) = build_subtree(
                logp_and_grad, args, rng, depth, -1.0, step_size, metric, initial_energy,
                backward_position, backward_momentum, backward_gradient, backward_logp,
                ws, n_leapfrog)
            for i in range(dimension):
                rho_backward[i] = current_rho[i]
                ends[P_BCK_FWD, i] = current_ends[BEGIN, i]
                ends[P_SHARP_BCK_FWD, i] = current_ends[SHARP_BEGIN, i]
                ends[P_BCK_BCK, i] = current_ends[END, i]
                ends[P_SHARP_BCK_BCK, i] = current_ends[SHARP_END, i]
        n_leapfrog += steps
        sum_metropolis += metro
        divergent = divergent or diverged
        if not valid:
            break
        depth += 1
        take_new = True
        if not (subtree_log_weight > log_sum_weight):
            if not (rng.random() < math.exp(subtree_log_weight - log_sum_weight)):
                take_new = False
        if take_new:
            for i in range(dimension):
                sample_position[i] = proposal_position[i]
                sample_gradient[i] = proposal_gradient[i]
            sample_logp = proposal_logp
            sample_kinetic = proposal_kinetic
        log_sum_weight = log_sum_exp(log_sum_weight, subtree_log_weight)
        for i in range(dimension):
            rho[i] = rho_backward[i] + rho_forward[i]
        persist = no_u_turn(ends, P_SHARP_BCK_BCK, ends, P_SHARP_FWD_FWD, rho)
        if persist:
            for i in range(dimension):
                seam_rho[i] = rho_backward[i] + ends[P_FWD_BCK, i]
            persist = no_u_turn(ends, P_SHARP_BCK_BCK, ends, P_SHARP_FWD_BCK, seam_rho)
        if persist:
            for i in range(dimension):
                seam_rho[i] = rho_forward[i] + ends[P_BCK_FWD, i]
            persist = no_u_turn(ends, P_SHARP_BCK_FWD, ends, P_SHARP_FWD_FWD, seam_rho)
        if not persist:
            break
    accept_stat = sum_metropolis / n_leapfrog if n_leapfrog > 0 else 0.0
    energy = -sample_logp + sample_kinetic
    return sample_logp, accept_stat, n_leapfrog, depth, divergent, energy
