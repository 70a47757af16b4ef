"""Euclidean metrics for Hamiltonian Monte Carlo: momentum draws, kinetic energy, velocity.

The Hamiltonian is H(q, p) = -log π(q) + ½ pᵀ M⁻¹ p with a constant metric (mass matrix) M.
Following Stan we store and adapt the *inverse* metric M⁻¹, which is an estimate of the
posterior covariance (Betancourt 2017, "A Conceptual Introduction to Hamiltonian Monte Carlo",
sec. 4.2): either its diagonal (``is_dense=False``) or the full matrix with its lower Cholesky
factor C (M⁻¹ = C Cᵀ).

- momentum p ~ N(0, M): diagonal p_i = z_i / sqrt(M⁻¹_ii); dense p = C⁻ᵀ z, since
  Cov(C⁻ᵀ z) = (C Cᵀ)⁻¹ = M (a triangular solve, no inverse is formed);
- velocity (Stan's "sharp momentum" dτ/dp) p♯ = M⁻¹ p, used by the leapfrog position update
  and by the no-U-turn criterion;
- kinetic energy ½ pᵀ M⁻¹ p = ½ pᵀ p♯.

The variance / covariance estimators used to adapt M⁻¹ during warm-up are Welford's running
moments, regularised as Stan does (``stan/mcmc/var_adaptation.hpp``):
(n / (n + 5)) · var + 1e-3 · 5 / (n + 5), which keeps a window of near-constant draws from
giving a zero (or NaN) metric.

Array shapes: d = dimension; ``inverse_diagonal`` (d,), ``inverse_dense`` and
``inverse_dense_cholesky`` (d, d). Both representations are always present so that one compiled
kernel serves both metrics (the unused one is ignored).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine._linalg import solve_upper_t


class EuclideanMetric(NamedTuple):
    """The inverse metric M⁻¹ (posterior covariance estimate), diagonal or dense."""

    inverse_diagonal: np.ndarray  # (d,) used when not is_dense
    inverse_dense: np.ndarray  # (d, d) used when is_dense
    inverse_dense_cholesky: np.ndarray  # (d, d) lower Cholesky factor of inverse_dense
    is_dense: bool


def unit_metric(dimension: int, is_dense: bool) -> EuclideanMetric:
    """The identity metric Stan starts from."""
    return EuclideanMetric(
        np.ones(dimension), np.eye(dimension), np.eye(dimension), bool(is_dense)
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dense_velocity_entry(momentum, inverse, i):
    """(M⁻¹ p)_i of a dense M⁻¹: the one place the product's summation order is fixed, so that every
    caller (velocity_into, the leapfrog's position update) gets bit-identical results."""
    total = 0.0
    for j in range(momentum.shape[0]):
        total += inverse[i, j] * momentum[j]
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def velocity_entry(momentum, metric, i):
    """(M⁻¹ p)_i (for one entry; loops over all entries should take the metric's arrays out once, as
    velocity_into does: a NamedTuple argument costs a reference-count update of each of its arrays
    per call, which in a per-entry loop cost more than the arithmetic)."""
    if metric.is_dense:
        return dense_velocity_entry(momentum, metric.inverse_dense, i)
    return metric.inverse_diagonal[i] * momentum[i]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def velocity_into_arrays(momentum, is_dense, diagonal, inverse, out):
    """out ← M⁻¹ p without allocating, from the metric's arrays (the tree's leaf loop calls this form:
    a NamedTuple argument costs a reference-count update of each of its arrays per call)."""
    n = momentum.shape[0]
    if is_dense:
        for i in range(n):
            out[i] = dense_velocity_entry(momentum, inverse, i)
    else:
        for i in range(n):
            out[i] = diagonal[i] * momentum[i]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def velocity_into(momentum, metric, out):
    """out ← M⁻¹ p without allocating."""
    velocity_into_arrays(momentum, metric.is_dense, metric.inverse_diagonal, metric.inverse_dense, out)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def velocity(momentum, metric):
    """p♯ = M⁻¹ p (shape (d,))."""
    out = np.empty(momentum.shape[0])
    velocity_into(momentum, metric, out)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def kinetic_energy_arrays(momentum, is_dense, diagonal, inverse):
    """½ pᵀ M⁻¹ p from the metric's arrays (no allocation with the diagonal metric)."""
    total = 0.0
    if is_dense:
        sharp = np.empty(momentum.shape[0])
        velocity_into_arrays(momentum, is_dense, diagonal, inverse, sharp)
        for i in range(momentum.shape[0]):
            total += momentum[i] * sharp[i]
    else:
        for i in range(momentum.shape[0]):
            total += momentum[i] * (diagonal[i] * momentum[i])
    return 0.5 * total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def velocity_and_kinetic_arrays(momentum, is_dense, diagonal, inverse, out):
    """out ← M⁻¹ p and returns ½ pᵀ M⁻¹ p from it: the operations of velocity_into_arrays and
    kinetic_energy_arrays in the same order (bit-identical), without computing M⁻¹ p twice."""
    velocity_into_arrays(momentum, is_dense, diagonal, inverse, out)
    total = 0.0
    for i in range(momentum.shape[0]):
        total += momentum[i] * out[i]
    return 0.5 * total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def kinetic_energy(momentum, metric):
    """½ pᵀ M⁻¹ p (no allocation with the diagonal metric)."""
    return kinetic_energy_arrays(momentum, metric.is_dense, metric.inverse_diagonal, metric.inverse_dense)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def draw_momentum(rng, metric, dimension):
    """p ~ N(0, M), drawing ``dimension`` standard normals from ``rng`` (always that many, in order)."""
    z = rng.standard_normal(dimension)
    if not metric.is_dense:
        return z / np.sqrt(metric.inverse_diagonal)
    # Cᵀ p = z with C the lower Cholesky factor of M⁻¹, so that Cov(p) = (C Cᵀ)⁻¹ = M
    return solve_upper_t(metric.inverse_dense_cholesky, z)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def welford_update(count, mean, second_moment, x, is_dense):
    """Add draw ``x`` to running moments; returns the new count (mean, second_moment updated in place).

    ``second_moment`` holds the running sums of products of deviations: shape (d, d) for the
    dense metric; for the diagonal metric its first row (shape (1, d) suffices) holds the sums of
    squared deviations.
    """
    count += 1
    delta = x - mean
    mean += delta / count
    if is_dense:
        delta_after = x - mean
        d = x.shape[0]
        for i in range(d):
            for j in range(d):
                second_moment[i, j] += delta[i] * delta_after[j]
    else:
        second_moment[0, :] += delta * (x - mean)
    return count


@numba.njit(cache=True, nogil=True, error_model="numpy")
def regularised_metric(count, second_moment, is_dense, dimension):
    """Stan's regularised estimate (n/(n+5))·var + 1e-3·5/(n+5) as a new EuclideanMetric."""
    n = float(count)
    shrink = n / (n + 5.0)
    ridge = 1e-3 * 5.0 / (n + 5.0)
    if is_dense:
        covariance = second_moment / (n - 1.0)
        covariance = shrink * covariance
        for i in range(dimension):
            covariance[i, i] += ridge
        # symmetrise against rounding before factorising
        covariance = 0.5 * (covariance + covariance.T)
        cholesky = np.linalg.cholesky(covariance)
        return EuclideanMetric(np.diag(covariance).copy(), covariance, cholesky, True)
    variance = shrink * (second_moment[0, :] / (n - 1.0)) + ridge
    return EuclideanMetric(variance, np.eye(dimension), np.eye(dimension), False)
