"""Log densities shared by the NUTS tests, in engine.nuts' fixed signature (x, data, index)."""

import numba
import numpy as np

from engine.nuts import LogDensity


@numba.njit(cache=True)
def gaussian_logp_and_grad(x, data, index):
    """N(mean, precision⁻¹) up to a constant; data = [mean (d), precision (d·d) row-major], index = [d]."""
    d = index[0]
    mean = data[:d]
    precision = data[d:d + d * d].reshape((d, d))
    centred = x - mean
    gradient = -(precision @ centred)
    return 0.5 * (centred @ gradient), gradient


GAUSSIAN = LogDensity(gaussian_logp_and_grad)


def gaussian_args(mean, covariance):
    """(data, index) for GAUSSIAN with the given mean and covariance."""
    mean = np.asarray(mean, dtype=float)
    precision = np.linalg.inv(np.asarray(covariance, dtype=float))
    data = np.concatenate([mean, precision.reshape(-1)])
    return np.ascontiguousarray(data), np.array([mean.size], dtype=np.int64)


def correlated_covariance(dimension, correlation):
    """Equicorrelated covariance with unequal scales 1..10 (a hard target for a diagonal metric)."""
    scales = np.linspace(1.0, 10.0, dimension) if dimension > 1 else np.ones(1)
    corr = np.full((dimension, dimension), correlation) + (1 - correlation) * np.eye(dimension)
    return corr * np.outer(scales, scales)
