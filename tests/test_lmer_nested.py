"""engine.lmer's nested trailing block (``engine.lmer._NESTED_BLOCKS``): held and factored per
level, the same numbers as the dense trailing block.

For nested groupings (every class in one school) the trailing block's Schur complement is block
diagonal, so engine.lmer holds it as (levels, q, q) blocks. The references: the dense path on the
same statistics (``engine.lmer._NESTED_BLOCKS = False``), which the crossed designs still take and
which test_lmer.py / test_lmer_tight.py check against lme4 (Pastes and the study's nested model go
the nested way there now). At a fixed theta the two paths do the same algebra in a different
order only where the dense block goes to LAPACK (more than 48 effects), so the numbers agree to
rounding (1e-12 relative, far below any optimiser's tolerance); up to 48 effects the per-block
factor is the dense loop's arithmetic on the nonzero entries, so they are identical.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from engine import formula as _formula
from engine import lmer as lmer_module
from engine._linalg import SingleThreadedBlas
from engine.lmer import lmer

FIXTURES = "tests/fixtures/lmer"


def _nested(n_school, per, size, seed):
    """Schools of ``per`` classes each, class sizes 2 .. 2 size - 1, a random intercept and slope
    per school and per class."""
    rng = np.random.default_rng(seed)
    n_class = n_school * per
    cls = np.repeat(np.arange(n_class), rng.integers(2, 2 * size, n_class))
    sch = cls // per
    n = len(cls)
    x = rng.standard_normal(n)
    z = rng.standard_normal(n)
    y = (1 + 0.5 * x + 0.3 * z + rng.normal(0, .5, n_school)[sch] + rng.normal(0, .3, n_school)[sch] * x
         + rng.normal(0, .4, n_class)[cls] + rng.normal(0, .2, n_class)[cls] * x + rng.standard_normal(n))
    return pd.DataFrame({"y": y, "x": x, "z": z, "school": sch, "klass": cls % per})


def _stats(formula, d, nested=True):
    old = lmer_module._NESTED_BLOCKS
    lmer_module._NESTED_BLOCKS = nested
    try:
        mf = _formula.model_frame(formula, d, allow_random=True)
        terms = lmer_module._lme4_order(lmer_module._terms_from_frame(mf, d, formula))
        return lmer_module._sufficient_stats(terms, np.ascontiguousarray(mf.X), np.asarray(mf.y, float)), terms, mf
    finally:
        lmer_module._NESTED_BLOCKS = old


def _fit(formula, d, reml, nested=True, theta=None):
    old = lmer_module._NESTED_BLOCKS
    lmer_module._NESTED_BLOCKS = nested
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if theta is None:
                return lmer(formula, d, REML=reml)
            _st, terms, mf = _stats(formula, d, nested)
            args = (formula, mf.response_name, list(mf.column_names), np.ascontiguousarray(mf.X),
                    np.asarray(mf.y, float), terms)
            return lmer_module._fit_stats(args, reml=reml, theta_fixed=theta)
    finally:
        lmer_module._NESTED_BLOCKS = old


def _estimates(fit):
    """Every number of a fit, flattened per kind."""
    ranef = fit.ranef()
    return {"criterion": np.array([fit.criterion]), "theta": fit.theta, "fixef": fit.fixef.to_numpy(),
            "vcov": fit.vcov.to_numpy(), "sigma": np.array([fit.sigma]), "fitted": fit.fitted,
            "ranef": np.concatenate([ranef[g].to_numpy(dtype=float).ravel() for g in ranef]),
            "condvar": np.concatenate([cv.ravel() for g in ranef for cv in ranef[g].attrs["condvar"]])}


NESTED_FORMULAS = ["y ~ x + z + (1 | school/klass)", "y ~ x + (1 + x | school/klass)",
                   "y ~ x + z + (1 | school) + (0 + x | school)",
                   "y ~ x + (1 + x | school:klass) + (1 | school)"]  # q1 = 2 over q2 = 1


@pytest.mark.parametrize("formula", NESTED_FORMULAS)
def test_nested_detected_from_the_codes(formula):
    st, _terms, _mf = _stats(formula, _nested(20, 3, 8, seed=1))
    assert st.nested and st.layout.nested and st.A22 is None
    q2 = st.rest_terms[0][2]
    assert st.A22_blocks.shape == (20, q2, q2) and st.rest_terms[0][3] == 20  # the schools
    dense, _terms, _mf = _stats(formula, _nested(20, 3, 8, seed=1), nested=False)
    assert not dense.nested and dense.A22.shape == (20 * q2, 20 * q2)


@pytest.mark.parametrize("formula", ["y ~ x + (1 | school) + (1 | klass)",  # crossed: a class id in every school
                                     "y ~ x + (x || school/klass)",  # three later terms
                                     "y ~ x + (1 | school)"])  # no trailing block
def test_not_nested_stays_dense(formula):
    st, _terms, _mf = _stats(formula, _nested(20, 3, 8, seed=1))
    assert not st.nested and not st.layout.nested


def test_one_class_in_two_schools_is_not_nested():
    d = _nested(20, 3, 8, seed=1)
    d["cid"] = d.school * 3 + d.klass
    d.loc[d.index[-1], "school"] = 0  # the last class now has a row in school 0 as well
    st, _terms, _mf = _stats("y ~ x + (1 | cid) + (1 | school)", d)
    assert st.rest_terms[0][3] == 20 and not st.nested


@pytest.mark.parametrize("design", [(20, 3, 8, 1), (30, 2, 6, 4), (250, 2, 5, 2)])
@pytest.mark.parametrize("formula", NESTED_FORMULAS)
@pytest.mark.parametrize("reml", [True, False])
def test_criterion_and_estimates_at_a_fixed_theta_equal_the_dense_path(design, formula, reml):
    """Q2 = 20 / 40 (the dense path's own Cholesky loop), 30 / 60 and 250 / 500 (LAPACK's)."""
    d = _nested(*design)
    st, _t, _mf = _stats(formula, d)
    dense, _t, _mf = _stats(formula, d, nested=False)
    lower = lmer_module._theta_layout(st.layout.term_q)[1]
    rng = np.random.default_rng(design[3])
    small = st.Q2 <= 48
    for theta in [np.full(len(lower), 0.7), rng.uniform(0.05, 1.5, len(lower))]:
        theta = np.where(np.isfinite(lower), theta, 0.3 * theta)  # off-diagonals smaller
        args = (theta, st.moments, st.cross, st.layout, st.n, reml)
        c_nested = lmer_module.profiled_criterion(*args)
        c_dense = lmer_module.profiled_criterion(theta, dense.moments, dense.cross, dense.layout, st.n, reml)
        assert np.isfinite(c_nested)
        if small:
            assert c_nested == c_dense
        else:
            assert c_nested == pytest.approx(c_dense, rel=1e-13)
        if np.all(st.layout.term_q == 1):  # the exact gradient (the large scalar path)
            with SingleThreadedBlas():
                cg, gg = lmer_module._criterion_and_gradient(st, theta, reml)
                cd, gd = lmer_module._criterion_and_gradient(dense, theta, reml)
            assert cg == pytest.approx(cd, rel=1e-13) and cg == pytest.approx(c_nested, rel=1e-13)
            np.testing.assert_allclose(gg, gd, rtol=1e-10, atol=1e-9 * np.max(np.abs(gd)))
            assert len(gg) == len(lower)
        a = _estimates(_fit(formula, d, reml, theta=theta))
        b = _estimates(_fit(formula, d, reml, nested=False, theta=theta))
        for key in a:
            if small:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            else:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-13 * np.max(np.abs(b[key])),
                                           err_msg=key)


@pytest.mark.parametrize("formula", NESTED_FORMULAS)
@pytest.mark.parametrize("reml", [True, False])
def test_small_nested_fits_identical_to_the_dense_path(formula, reml):
    d = _nested(20, 3, 8, seed=1)
    a, b = _fit(formula, d, reml), _fit(formula, d, reml, nested=False)
    assert a._stats.nested and not b._stats.nested
    ea, eb = _estimates(a), _estimates(b)
    for key in ea:
        np.testing.assert_array_equal(ea[key], eb[key], err_msg=key)
    assert a.n_evaluations == b.n_evaluations


@pytest.mark.parametrize("reml", [True, False])
def test_pastes_identical_to_the_dense_path(reml):
    d = pd.read_csv(f"{FIXTURES}/lme4_Pastes.csv")
    formula = "strength ~ 1 + (1 | batch/cask)"
    a, b = _fit(formula, d, reml), _fit(formula, d, reml, nested=False)
    assert a._stats.nested
    ea, eb = _estimates(a), _estimates(b)
    for key in ea:
        np.testing.assert_array_equal(ea[key], eb[key], err_msg=key)


@pytest.mark.parametrize("reml", [True, False])
def test_large_nested_fit_equals_the_dense_path(reml):
    """250 schools (the exact-gradient BFGS path, trailing block >= 200): the same optimiser on
    criteria and gradients equal to rounding, so the same optimum to far below its tolerance."""
    d = _nested(250, 2, 5, seed=2)
    formula = "y ~ x + z + (1 | school/klass)"
    a, b = _fit(formula, d, reml), _fit(formula, d, reml, nested=False)
    assert a._stats.nested and a._stats.Q2 >= lmer_module._COBYQA_MIN_Q2
    assert a.criterion == pytest.approx(b.criterion, rel=1e-13)
    ea, eb = _estimates(a), _estimates(b)
    for key in ea:
        np.testing.assert_allclose(ea[key], eb[key], rtol=1e-10, atol=1e-12 * np.max(np.abs(eb[key])), err_msg=key)


def test_nested_factor_is_blocks():
    """The fit keeps no Q2 x Q2 array: the trailing factor is (levels, q2, q2)."""
    d = _nested(250, 2, 5, seed=2)
    fit = _fit("y ~ x + (1 + x | school/klass)", d, True)
    assert fit._stats.nested and fit._factor.L2.shape == (250, 2, 2)
    assert fit._stats.A22 is None
