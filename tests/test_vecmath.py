"""engine._vecmath's exp and log1p against glibc's (Python's math module; numpy's own SIMD exp may
differ from glibc by an ulp) over the whole double range: within one ulp, exact special values
(0, inf, -inf, NaN, subnormal results, tiny arguments)."""

import math

import numpy as np
import pytest

from engine import _vecmath


def ulps(a, b):
    """|a - b| in units of the last place of b (b finite), 0 where both are equal (inf included)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    finite = np.isfinite(a) & np.isfinite(b)
    spacing = np.spacing(np.where(np.isfinite(b), np.abs(b), 1.0))
    diff = np.abs(np.where(finite, a, 0.0) - np.where(finite, b, 0.0))
    out = diff / np.maximum(spacing, np.finfo(float).smallest_subnormal)
    return np.where(same, 0.0, np.where(finite, out, np.inf))


def _libm(function):
    def apply(x):
        out = np.empty(len(x))
        for i, v in enumerate(np.asarray(x, float).tolist()):
            try:
                out[i] = function(v)
            except OverflowError:
                out[i] = np.inf
            except ValueError:  # log1p(-1) and below
                out[i] = -np.inf if v == -1.0 else np.nan
        return out
    return apply


libm_exp, libm_log1p = _libm(math.exp), _libm(math.log1p)


def _wide(rng, low, high, n):
    return np.concatenate([rng.uniform(low, high, n), rng.uniform(-1, 1, n), rng.standard_normal(n) * 30])


def test_exp_within_one_ulp_over_its_range():
    rng = np.random.default_rng(7)
    x = _wide(rng, -745.2, 709.78, 200_000)
    x = x[(x > -745.2) & (x < 709.78)]
    got, want = _vecmath.exp(x), libm_exp(x)
    normal = want >= np.finfo(float).tiny
    assert np.max(ulps(got[normal], want[normal])) <= 1.0
    # subnormal results: within one subnormal step
    assert np.max(np.abs(got[~normal] - want[~normal])) <= np.finfo(float).smallest_subnormal


def test_exp_tiny_arguments_and_special_values():
    tiny = np.array([0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-17, 1e-17, 2.0 ** -53, -(2.0 ** -54)])
    assert np.array_equal(_vecmath.exp(tiny), libm_exp(tiny))
    special = np.array([np.inf, -np.inf, np.nan, 709.78, 709.79, 710.0, 1e300, -745.13, -745.2, -746.0, -1e300])
    got, want = _vecmath.exp(special), libm_exp(special)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    assert np.all(ulps(got[finite], want[finite]) <= 1.0)
    assert got[0] == np.inf and got[1] == 0.0 and np.isnan(got[2]) and got[5] == np.inf and got[-1] == 0.0


def test_exp_at_integer_multiples_of_ln2():
    k = np.arange(-1074, 1024, dtype=float)
    x = k * np.log(2.0)
    ok = (x > -745.13) & (x < 709.78)
    got, want = _vecmath.exp(x[ok]), libm_exp(x[ok])
    normal = want >= np.finfo(float).tiny
    assert np.max(ulps(got[normal], want[normal])) <= 1.0


def test_log1p_within_one_ulp_over_the_double_range():
    rng = np.random.default_rng(11)
    x = np.concatenate([
        rng.uniform(-1.0, 1.0, 200_000),
        -1.0 + 10.0 ** rng.uniform(-16, 0, 50_000),  # near -1
        10.0 ** rng.uniform(-320, 308, 200_000),  # every magnitude, subnormals included
        -(10.0 ** rng.uniform(-320, -0.01, 50_000)),
        rng.uniform(-0.3, 0.42, 50_000),  # about the k = 0 interval's ends
        libm_exp(rng.standard_normal(50_000)),  # the GLM's arguments are exp(-|eta|) in (0, 1]
    ])
    got, want = _vecmath.log1p(x), libm_log1p(x)
    assert np.max(ulps(got, want)) <= 1.0


def test_log1p_tiny_arguments_and_special_values():
    tiny = np.array([0.0, -0.0, 5e-324, -5e-324, 1e-300, 1e-20, -1e-20, 2.0 ** -53, -(2.0 ** -54)])
    got = _vecmath.log1p(tiny)
    assert np.array_equal(got, libm_log1p(tiny))
    assert np.signbit(got[1])
    special = np.array([np.inf, -np.inf, np.nan, -1.0, -1.5, -1e300, np.nextafter(-1.0, 0.0), 1e308,
                        np.finfo(float).max, np.sqrt(2.0) - 1.0, np.sqrt(0.5) - 1.0, 1.0, 2.0, 3.0])
    got, want = _vecmath.log1p(special), libm_log1p(special)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert got[0] == np.inf and got[3] == -np.inf
    finite = ~np.isnan(want)
    assert np.all(ulps(got[finite], want[finite]) <= 1.0)


@pytest.mark.parametrize("name", ["exp_into", "log1p_into"])
def test_in_place(name):
    x = np.linspace(-5, 5, 101)
    want = getattr(_vecmath, name.replace("_into", ""))(x)
    y = x.copy()
    getattr(_vecmath, name)(y, y)
    assert np.array_equal(y, want, equal_nan=True)


def test_log1p_and_reciprocal():
    x = np.concatenate([np.linspace(-0.99, 10, 1001), [0.0, 1e-300, np.inf]])
    out = np.array([_vecmath.log1p_and_reciprocal(v) for v in x])
    assert np.array_equal(out[:, 0], _vecmath.log1p(x))
    assert np.array_equal(out[:, 1], 1.0 / (1.0 + x))


def test_dot_reassoc_is_the_dot_product_to_rounding():
    rng = np.random.default_rng(3)
    for n in [0, 1, 7, 33, 1080]:
        x, w = rng.standard_normal(n), rng.standard_normal(n)
        exact = math.fsum((x * w).tolist()) if n else 0.0
        assert abs(_vecmath.dot_reassoc(x, w) - exact) <= 4 * n * np.finfo(float).eps * np.sum(np.abs(x * w))
