"""Stan's warm-up: dual-averaging step size, windowed metric adaptation, step-size heuristic.

**Step size** (``stan/mcmc/stepsize_adaptation.hpp``): Nesterov dual averaging as in Hoffman &
Gelman (2014, sec. 3.2.1). With the acceptance statistic a_t (capped at 1) of iteration t,

    s̄_t = (1 − 1/(t + t0)) s̄_{t−1} + (δ − a_t)/(t + t0)
    x_t = μ − √t s̄_t / γ,            ε_t = exp(x_t)
    x̄_t = (1 − t^−κ) x̄_{t−1} + t^−κ x_t

with Stan's constants γ = 0.05, t0 = 10, κ = 0.75, target δ = adapt_delta (0.8 by default) and
μ = log(10 ε0). During warm-up the sampler uses ε_t; at the end of warm-up ε = exp(x̄).

**Metric windows** (``stan/mcmc/windowed_adaptation.hpp``): an initial fast buffer (75
iterations: step size only), then slow windows of 25, 50, 100, ... iterations in which the
(co)variance of the draws is accumulated, the last window stretched to end where the terminal
fast buffer (50) begins; after each window the metric is replaced by the regularised estimate,
the step size re-initialised by the heuristic and dual averaging restarted with μ = log(10 ε).
When init buffer + first window + term buffer exceed the warm-up, Stan uses 15% / 75% / 10% of
it; below 20 warm-up iterations no metric is adapted at all (step size only).
:func:`adaptation_windows` reproduces that schedule exactly (integer arithmetic as Stan's
unsigned ints).

**Step-size heuristic** (``stan/mcmc/hmc/base_hmc.hpp``, ``init_stepsize``): from ε, take one
leapfrog step with fresh momentum; if the acceptance exp(H0 − H) is above 0.8 keep doubling ε
(else halving) until it crosses 0.8.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.hmc.integrator import leapfrog_step
from engine.hmc.metric import draw_momentum, kinetic_energy

DUAL_AVERAGING_GAMMA = 0.05
DUAL_AVERAGING_T0 = 10.0
DUAL_AVERAGING_KAPPA = 0.75
INIT_BUFFER = 75
TERM_BUFFER = 50
BASE_WINDOW = 25


def adaptation_windows(
    n_warmup: int,
    init_buffer: int = INIT_BUFFER,
    term_buffer: int = TERM_BUFFER,
    base_window: int = BASE_WINDOW,
) -> list[tuple[int, int]]:
    """Slow adaptation windows as Stan runs them: [(first, last)] warm-up iterations (0-based, inclusive).

    Written from Stan's ``windowed_adaptation``: ``set_window_params`` (short warm-ups),
    ``adaptation_window`` / ``end_adaptation_window`` and ``compute_next_window``.
    """
    n_warmup = int(n_warmup)
    if n_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > n_warmup:
        init_buffer = int(0.15 * n_warmup)
        term_buffer = int(0.1 * n_warmup)
        base_window = n_warmup - (init_buffer + term_buffer)
    last_end = n_warmup - term_buffer - 1
    window_size = base_window
    next_end = init_buffer + window_size - 1
    windows = []
    start = init_buffer
    for counter in range(n_warmup):
        if counter == next_end:
            windows.append((start, counter))
            start = counter + 1
            if next_end == last_end:
                break
            window_size *= 2
            next_end = counter + window_size
            if next_end != last_end and next_end + 2 * window_size >= n_warmup - term_buffer:
                next_end = last_end
    return windows


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dual_averaging_update(state, accept_stat, target, mu):
    """One dual-averaging step; ``state`` = [t, s̄, x̄] updated in place; returns the new ε_t."""
    state[0] += 1.0
    t = state[0]
    accept_stat = min(accept_stat, 1.0)
    eta = 1.0 / (t + DUAL_AVERAGING_T0)
    state[1] = (1.0 - eta) * state[1] + eta * (target - accept_stat)
    x = mu - state[1] * math.sqrt(t) / DUAL_AVERAGING_GAMMA
    x_eta = t ** (-DUAL_AVERAGING_KAPPA)
    state[2] = (1.0 - x_eta) * state[2] + x_eta * x
    return math.exp(x)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dual_averaging_restart(state):
    state[0] = 0.0
    state[1] = 0.0
    state[2] = 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _one_step_log_acceptance(logp_and_grad, args, rng, position, logp, gradient, step_size, metric):
    momentum = draw_momentum(rng, metric, position.shape[0])
    initial_energy = -logp + kinetic_energy(momentum, metric)
    _, new_momentum, new_logp, _ = leapfrog_step(
        logp_and_grad, args, position, momentum, gradient, step_size, metric
    )
    energy = -new_logp + kinetic_energy(new_momentum, metric)
    if math.isnan(energy):
        energy = np.inf
    return initial_energy - energy


@numba.njit(cache=True, nogil=True, error_model="numpy")
def initial_step_size(logp_and_grad, args, rng, position, logp, gradient, step_size, metric):
    """Stan's heuristic; returns ε (or -1.0 when ε left (0, 1e7), which the caller reports)."""
    if step_size == 0.0 or step_size > 1e7 or math.isnan(step_size):
        return step_size
    log_threshold = math.log(0.8)
    delta = _one_step_log_acceptance(logp_and_grad, args, rng, position, logp, gradient, step_size, metric)
    direction = 1 if delta > log_threshold else -1
    while True:
        delta = _one_step_log_acceptance(logp_and_grad, args, rng, position, logp, gradient, step_size, metric)
        if direction == 1 and not (delta > log_threshold):
            break
        if direction == -1 and not (delta < log_threshold):
            break
        step_size = step_size * 2.0 if direction == 1 else step_size * 0.5
        if step_size > 1e7 or step_size == 0.0:
            return -1.0
    return step_size
