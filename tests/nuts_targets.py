"""Log densities shared by the NUTS tests (one Numba function per target keeps compile time down)."""

import numba
import numpy as np


@numba.njit(cache=True)
def gaussian_logp_and_grad(x, mean, precision):
    """N(mean, precision⁻¹) up to a constant: -½ (x-μ)ᵀ P (x-μ) and its gradient -P (x-μ)."""
    centred = x - mean
    gradient = -(precision @ centred)
    return 0.5 * (centred @ gradient), gradient


def correlated_covariance(dimension, correlation):
    """Equicorrelated covariance with unequal scales 1..10 (a hard target for a diagonal metric)."""
    scales = np.linspace(1.0, 10.0, dimension) if dimension > 1 else np.ones(1)
    corr = np.full((dimension, dimension), correlation) + (1 - correlation) * np.eye(dimension)
    return corr * np.outer(scales, scales)
