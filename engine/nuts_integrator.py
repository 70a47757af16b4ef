"""The leapfrog (Störmer–Verlet) integrator for Hamiltonian dynamics.

One step of size ε (negative ε integrates backwards in time; the momentum is never flipped, as in
Stan's ``expl_leapfrog``):

    p ← p + (ε/2) ∇log π(q)
    q ← q + ε M⁻¹ p
    p ← p + (ε/2) ∇log π(q)

It is symplectic and time-reversible, so the energy error stays bounded for stable step sizes
(Leimkuhler & Reich 2004; Neal 2011, "MCMC using Hamiltonian dynamics", sec. 2.3).

``logp_and_grad(position, *args) -> (log density, gradient)`` is a Numba first-class function of
the fixed signature engine.nuts.LOGP_SIGNATURE (``args`` = (data, index)), so one compiled, cached
kernel serves every target.
"""

from __future__ import annotations

import numba

from engine.nuts_metric import velocity


@numba.njit(cache=True, nogil=True, error_model="numpy")
def leapfrog_step(logp_and_grad, args, position, momentum, gradient, step_size, metric):
    """One leapfrog step; returns (position, momentum, log density, gradient), all new arrays."""
    half = 0.5 * step_size
    momentum_half = momentum + half * gradient
    new_position = position + step_size * velocity(momentum_half, metric)
    new_logp, new_gradient = logp_and_grad(new_position, *args)
    new_momentum = momentum_half + half * new_gradient
    return new_position, new_momentum, new_logp, new_gradient
