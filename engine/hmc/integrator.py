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

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.hmc.metric import dense_velocity_entry


@numba.njit(cache=True, nogil=True, error_model="numpy")
def leapfrog_arrays(logp_and_grad, data, index, position, momentum, gradient, step_size, is_dense, diagonal,
                    inverse):
    """leapfrog_step_in_place on the density's (data, index) and the metric's arrays (the tree's leaf
    loop calls this form: a tuple or NamedTuple argument costs a reference-count update of each of its
    arrays per call)."""
    d = position.shape[0]
    half = 0.5 * step_size
    for i in range(d):
        momentum[i] = momentum[i] + half * gradient[i]
    # the momentum is fixed during this loop: M^-1 p entry by entry, no buffer
    if is_dense:
        for i in range(d):
            position[i] = position[i] + step_size * dense_velocity_entry(momentum, inverse, i)
    else:
        for i in range(d):
            position[i] = position[i] + step_size * (diagonal[i] * momentum[i])
    new_logp, new_gradient = logp_and_grad(position, data, index)
    for i in range(d):
        gradient[i] = new_gradient[i]
        momentum[i] = momentum[i] + half * new_gradient[i]
    return new_logp


@numba.njit(cache=True, nogil=True, error_model="numpy")
def leapfrog_step_in_place(logp_and_grad, args, position, momentum, gradient, step_size, metric):
    """One leapfrog step updating position, momentum and gradient in place; returns the new log density.
    ``args``: the density's (data, index)."""
    return leapfrog_arrays(logp_and_grad, args[0], args[1], position, momentum, gradient, step_size,
                           metric.is_dense, metric.inverse_diagonal, metric.inverse_dense)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def leapfrog_step(logp_and_grad, args, position, momentum, gradient, step_size, metric):
    """One leapfrog step on copies; returns (position, momentum, log density, gradient), all new arrays."""
    new_position = position.copy()
    new_momentum = momentum.copy()
    new_gradient = gradient.copy()
    new_logp = leapfrog_step_in_place(logp_and_grad, args, new_position, new_momentum, new_gradient,
                                      step_size, metric)
    return new_position, new_momentum, new_logp, new_gradient
