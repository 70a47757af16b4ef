"""A slow, plain-Python, *recursive* multinomial NUTS transition: the reference for engine.hmc.tree.

Written straight from Betancourt (2017, "A Conceptual Introduction to Hamiltonian Monte Carlo",
appendix A.3-A.4) and Hoffman & Gelman (2014, algorithm 3 with multinomial instead of slice
sampling), with the extra U-turn checks across merged subtrees of Stan >= 2.26 (stan-dev/stan#2800).
It shares only the leapfrog step and the energy with the Numba kernel; the tree logic, weights and
sampling are independent. It consumes random numbers in the documented order: momentum normals,
then per doubling a direction uniform, the merge uniforms inside the subtree, one top-level uniform.
"""

from __future__ import annotations

import math

import numpy as np

from engine.hmc.integrator import leapfrog_step
from engine.hmc.metric import kinetic_energy, velocity


def _lse(a, b):
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(min(a, b) - m))


def _turning_ok(p_sharp_minus, p_sharp_plus, rho):
    return float(np.dot(p_sharp_plus, rho)) > 0 and float(np.dot(p_sharp_minus, rho)) > 0


class Recorder:
    def __init__(self):
        self.positions = []
        self.log_weights = []
        self.sum_metropolis = 0.0
        self.divergent = False


class State:
    def __init__(self, q, p, logp, grad):
        self.q, self.p, self.logp, self.grad = q, p, logp, grad


def build_tree(depth, state, direction, eps, H0, target, args, metric, rng, rec):
    """Returns (valid, end_state, proposal, log_weight, rho, p_beg, p_sharp_beg, p_end, p_sharp_end)."""
    if depth == 0:
        q, p, logp, grad = leapfrog_step(target, args, state.q, state.p, state.grad, direction * eps, metric)
        new = State(q, p, logp, grad)
        h = -logp + kinetic_energy(p, metric)
        if math.isnan(h):
            h = math.inf
        rec.positions.append(q.copy())
        rec.log_weights.append(H0 - h)
        rec.sum_metropolis += 1.0 if H0 - h > 0 else math.exp(H0 - h)
        if h - H0 > 1000.0:
            rec.divergent = True
            return (False, new, None, H0 - h, None, None, None, None, None)
        sharp = velocity(p, metric)
        return (True, new, new, H0 - h, p.copy(), p, sharp, p, sharp)
    ok1, edge, prop1, lw1, rho1, pb1, psb1, pe1, pse1 = build_tree(
        depth - 1, state, direction, eps, H0, target, args, metric, rng, rec)
    if not ok1:
        return (False, edge, None, lw1, None, None, None, None, None)
    ok2, edge, prop2, lw2, rho2, pb2, psb2, pe2, pse2 = build_tree(
        depth - 1, edge, direction, eps, H0, target, args, metric, rng, rec)
    if not ok2:
        return (False, edge, None, lw2, None, None, None, None, None)
    lw = _lse(lw1, lw2)
    # uniform multinomial sampling between the two halves
    if lw2 > lw:
        proposal = prop2
    else:
        proposal = prop2 if rng.random() < math.exp(lw2 - lw) else prop1
    rho = rho1 + rho2
    ok = _turning_ok(psb1, pse2, rho)
    ok = ok and _turning_ok(psb1, psb2, rho1 + pb2)
    ok = ok and _turning_ok(pse1, pse2, rho2 + pe1)
    return (ok, edge, proposal, lw, rho, pb1, psb1, pe2, pse2)


def transition(target, args, rng, q0, metric, eps, max_depth):
    """One transition; returns (chosen State, Recorder, depth, n_leapfrog)."""
    d = q0.shape[0]
    logp0, grad0 = target(q0, *args)
    z = rng.standard_normal(d)
    p0 = z / np.sqrt(metric.inverse_diagonal)  # diagonal metric only, as the tests use
    H0 = -logp0 + kinetic_energy(p0, metric)
    start = State(q0.copy(), p0, logp0, grad0)
    sharp0 = velocity(p0, metric)
    forward_edge = backward_edge = start
    # the trajectory's momentum sums and end momenta, kept as [backward part, forward part]
    rho = p0.copy()
    p_bck_bck = p_bck_fwd = p_fwd_bck = p_fwd_fwd = p0
    ps_bck_bck = ps_bck_fwd = ps_fwd_bck = ps_fwd_fwd = sharp0
    sample = start
    log_sum_weight = 0.0
    rec = Recorder()
    depth = 0
    while depth < max_depth:
        if rng.random() > 0.5:
            rho_bck = rho
            p_bck_fwd, ps_bck_fwd = p_fwd_bck, ps_fwd_bck
            ok, forward_edge, proposal, lw, rho_fwd, p_fwd_bck, ps_fwd_bck, p_fwd_fwd, ps_fwd_fwd = build_tree(
                depth, forward_edge, 1.0, eps, H0, target, args, metric, rng, rec)
        else:
            rho_fwd = rho
            p_fwd_bck, ps_fwd_bck = p_bck_fwd, ps_bck_fwd
            ok, backward_edge, proposal, lw, rho_bck, p_bck_fwd, ps_bck_fwd, p_bck_bck, ps_bck_bck = build_tree(
                depth, backward_edge, -1.0, eps, H0, target, args, metric, rng, rec)
        if not ok:
            break
        depth += 1
        # biased progressive sampling between old trajectory and new subtree
        if lw > log_sum_weight:
            sample = proposal
        elif rng.random() < math.exp(lw - log_sum_weight):
            sample = proposal
        log_sum_weight = _lse(log_sum_weight, lw)
        rho = rho_bck + rho_fwd
        keep = _turning_ok(ps_bck_bck, ps_fwd_fwd, rho)
        keep = keep and _turning_ok(ps_bck_bck, ps_fwd_bck, rho_bck + p_fwd_bck)
        keep = keep and _turning_ok(ps_bck_fwd, ps_fwd_fwd, rho_fwd + p_bck_fwd)
        if not keep:
            break
    return sample, rec, depth, len(rec.positions)
