"""engine._linalg's shared kernels against NumPy: the one Cholesky (each caller's pivot rule), the
inverse from a Cholesky factor, the triangular solves."""

from __future__ import annotations

import numpy as np

from engine import _linalg


def _spd(q, seed):
    a = np.random.default_rng(seed).standard_normal((q + 3, q))
    return a.T @ a + 0.1 * np.eye(q)


def test_cholesky_into_matches_numpy_out_of_place_and_in_place():
    a = _spd(6, 1)
    out = np.full((6, 6), np.nan)
    assert _linalg.cholesky_into(a, out, 6, 0.0, False, 0.0)
    np.testing.assert_allclose(out, np.linalg.cholesky(a), rtol=1e-12, atol=1e-12)
    b = a.copy()
    assert _linalg.cholesky_into(b, b, 6, 1e-12, True, 0.0)
    np.testing.assert_array_equal(b, out)  # in place: the same arithmetic, upper triangle zeroed
    chol, ok = _linalg.cholesky_lower(a)
    assert ok
    np.testing.assert_array_equal(chol, out)


def test_cholesky_into_leading_block_only():
    a = _spd(5, 2)
    big = np.full((7, 7), 3.0)
    big[:5, :5] = a
    assert _linalg.cholesky_into(big, big, 5, 0.0, False, 0.0)
    np.testing.assert_allclose(big[:5, :5], np.linalg.cholesky(a), rtol=1e-12, atol=1e-12)
    assert np.all(big[5:, :] == 3.0) and np.all(big[:, 5:] == 3.0)


def test_cholesky_into_pivot_rules():
    singular = np.array([[1.0, 1.0], [1.0, 1.0 + 1e-14]])  # last pivot 1e-14: positive, not clearly so
    out = np.zeros((2, 2))
    assert _linalg.cholesky_into(singular, out, 2, 0.0, False, 0.0)
    assert not _linalg.cholesky_into(singular, out, 2, 1e-12, False, 0.0)
    assert not _linalg.cholesky_lower(singular)[1]
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert not _linalg.cholesky_into(indefinite, out, 2, 0.0, False, 0.0)
    assert _linalg.cholesky_into(indefinite, out, 2, 0.0, False, 1e-300)  # floored, not failed
    assert out[1, 1] == np.sqrt(1e-300) and np.all(np.isfinite(out))
    infinite = np.array([[np.inf]])
    assert _linalg.cholesky_into(infinite, np.zeros((1, 1)), 1, 0.0, False, 0.0)
    assert not _linalg.cholesky_into(infinite, np.zeros((1, 1)), 1, 0.0, True, 0.0)


def test_cholesky_log_det_into_running_sum_and_floor_flag():
    a, b = _spd(4, 5), _spd(3, 6)
    out = np.zeros((4, 4))
    exact, total = _linalg.cholesky_log_det_into(a, out, 4, 1e-300, 0.0)
    assert exact
    np.testing.assert_array_equal(out, _linalg.cholesky_lower(a)[0])  # cholesky_into's arithmetic
    assert np.isclose(2.0 * total, np.linalg.slogdet(a)[1], rtol=1e-12)
    exact, total = _linalg.cholesky_log_det_into(b, b.copy(), 3, 1e-300, total)  # added to the running sum
    assert exact and np.isclose(2.0 * total, np.linalg.slogdet(a)[1] + np.linalg.slogdet(b)[1], rtol=1e-12)
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])
    exact, total = _linalg.cholesky_log_det_into(indefinite, np.zeros((2, 2)), 2, 1e-300, 0.0)
    assert not exact and total == np.log(np.sqrt(1e-300))  # second pivot -3 floored, reported
    nan_pivot = np.array([[np.nan]])
    out = np.zeros((1, 1))
    exact, _ = _linalg.cholesky_log_det_into(nan_pivot, out, 1, 1e-300, 0.0)
    assert not exact and out[0, 0] == np.sqrt(1e-300)  # nan is not > 0: floored too
    exact, total = _linalg.cholesky_log_det_into(indefinite, np.zeros((2, 2)), 2, 0.0, 1.5)
    assert not exact and total == 1.5  # no floor: the factor stops, the running sum is unchanged


def test_inverse_from_cholesky_and_solves():
    a = _spd(4, 3)
    chol = np.linalg.cholesky(a)
    inverse = np.full((5, 5), 7.0)
    _linalg.inverse_from_cholesky(chol, 4, inverse)
    np.testing.assert_allclose(inverse[:4, :4], np.linalg.inv(a), rtol=1e-10, atol=1e-12)
    assert np.all(inverse[4, :] == 7.0)
    b = np.arange(1.0, 5.0)
    np.testing.assert_allclose(_linalg.solve_lower(chol, b), np.linalg.solve(chol, b), rtol=1e-12)
    np.testing.assert_allclose(_linalg.solve_upper_t(chol, b), np.linalg.solve(chol.T, b), rtol=1e-12)
