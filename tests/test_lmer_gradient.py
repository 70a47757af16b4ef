"""engine.lmer's exact gradient (random-intercept models) and the large crossed path it drives
(BFGS from a moment start and curvature, ``_optimize`` for a dense trailing block of 200 or more effects)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine import formula as _formula
from engine import lmer as lmer_module
from engine._linalg import SingleThreadedBlas
from engine.lmer import lmer
from engine.lmer_kernels import minimize_bounded

def _crossed(n=3000, la=150, lb=300, lc=7, seed=1):
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"a": rng.integers(0, la, n), "b": rng.integers(0, lb, n), "c": rng.integers(0, lc, n),
                      "x": rng.standard_normal(n)})
    d["y"] = (1 + d.x + 0.5 * rng.standard_normal(la)[d.a] + 0.7 * rng.standard_normal(lb)[d.b]
              + rng.standard_normal(lc)[d.c] + rng.standard_normal(n))
    return d


def _stats(formula, d):
    mf = _formula.model_frame(formula, d, allow_random=True)
    terms = lmer_module._lme4_order(lmer_module._terms_from_frame(mf, d, formula))
    return lmer_module._sufficient_stats(terms, np.ascontiguousarray(mf.X), np.asarray(mf.y, float))


@pytest.mark.parametrize("formula", ["y ~ x + (1 | a) + (1 | b) + (1 | c)", "y ~ x + (1 | a)",
                                     "y ~ x + (1 | b) + (1 | c)", "y ~ x + (1 | a:c) + (0 + x | b)"])
@pytest.mark.parametrize("reml", [True, False])
def test_exact_gradient_matches_central_differences(formula, reml):
    st = _stats(formula, _crossed())
    K = len(st.layout.term_q)
    for theta in (np.array([0.6, 0.3, 1.2])[:K], np.array([0.02, 2.0, 0.4])[:K]):
        with SingleThreadedBlas():
            crit, grad = lmer_module._criterion_and_gradient(st, theta, reml)
            f = lambda t: lmer_module.profiled_criterion(t, st.moments, st.cross, st.layout, st.n, reml)  # noqa: E731
            assert crit == pytest.approx(f(theta), rel=1e-13)
            h = 1e-5
            fd = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(K)])
        # central differences: truncation h^2 f''' and rounding eps |f| / h (|f| ~ 1e4: ~2e-7)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("reml", [True, False])
def test_large_crossed_path_reaches_the_optimum(monkeypatch, reml):
    """Trailing block 217 >= 200: the exact-gradient path; the compiled FD-BFGS + Newton path
    (forced by raising the threshold) is the reference: same optimum, never a higher criterion."""
    d = _crossed(n=3000, la=300, lb=210, lc=7, seed=2)
    formula = "y ~ x + (1 | a) + (1 | b) + (1 | c)"
    fit = lmer(formula, d, REML=reml)
    assert fit._stats.Q2 >= lmer_module._COBYQA_MIN_Q2
    monkeypatch.setattr(lmer_module, "_COBYQA_MIN_Q2", 10 ** 9)
    ref = lmer(formula, d, REML=reml)
    assert fit.criterion <= ref.criterion + 1e-8
    assert fit.criterion == pytest.approx(ref.criterion, abs=1e-7)
    np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-6, atol=1e-8)
    assert fit.n_evaluations < 40


def test_moment_start_is_near_the_optimum():
    d = _crossed(n=3000, la=300, lb=210, lc=7, seed=2)
    formula = "y ~ x + (1 | a) + (1 | b) + (1 | c)"
    fit = lmer(formula, d)
    start = lmer_module._moment_start(lmer_module._moment_components(fit._stats))
    # simulated sd ratios 0.5, 0.7, 1 (order a, b, c): the start within a factor 1.5 of the optimum
    assert np.all(np.abs(np.log(start / fit.theta)) < np.log(1.5))


def test_moment_curvature_is_near_the_hessian_diagonal():
    """The quasi-Newton start's Hessian diagonal against central second differences of the
    criterion at the optimum: within a factor 2 (crossing correlates the terms)."""
    d = _crossed(n=3000, la=300, lb=210, lc=7, seed=2)
    fit = lmer("y ~ x + (1 | a) + (1 | b) + (1 | c)", d)
    st = fit._stats
    est = lmer_module._moment_components(st)
    h0 = lmer_module._moment_curvature(est, lmer_module._moment_start(est))
    f = lambda t: lmer_module.profiled_criterion(t, st.moments, st.cross, st.layout, st.n, True)  # noqa: E731
    th = fit.theta
    hd = np.array([(f(th + 1e-3 * e) - 2 * f(th) + f(th - 1e-3 * e)) / 1e-6 for e in np.eye(3)])
    assert np.all(np.abs(np.log(h0 / hd)) < np.log(2.0))


def test_minimize_bounded_on_a_bounded_quadratic():
    """A convex quadratic with its unconstrained minimum outside x[1] >= 0: the bounded minimum
    (x[1] on its bound, x[0] minimising given it) from a badly scaled start."""
    A = np.array([[4.0, 1.0], [1.0, 2.0]])
    c = np.array([-3.0, 1.0])  # unconstrained minimum -A^{-1}c = (1, -1)

    def f(x):
        return 0.5 * x @ A @ x + c @ x

    def g(x, fx):
        return A @ x + c

    # from diag(h0) (the crossed path's start) and from I with a capped first step (small models')
    for opts in ({"h0": np.array([1.0, 1.0])}, {}):
        x, fx, ok = minimize_bounded(f, g, np.array([5.0, 5.0]), np.array([-np.inf, 0.0]), **opts)
        assert ok
        np.testing.assert_allclose(x, [0.75, 0.0], atol=1e-6)  # x[1] = 0: 2 x0^2 - 3 x0 is least at 3/4
        assert fx == pytest.approx(-9.0 / 8.0, abs=1e-9)


def _slopes3(n=600, groups=30, seed=4):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x, z = rng.standard_normal(n), rng.standard_normal(n)
    b = rng.standard_normal((groups, 3)) @ np.array([[0.8, 0.0, 0.0], [0.3, 0.5, 0.0], [-0.2, 0.1, 0.4]]).T
    y = 1 + x - z + b[g, 0] + b[g, 1] * x + b[g, 2] * z + rng.standard_normal(n)
    return pd.DataFrame({"y": y, "x": x, "z": z, "g": g})


def _leading_cases():
    from test_lmer import _data

    return [("sleepstudy", lambda: _data("sleepstudy"), "Reaction ~ Days + (Days | Subject)"),
            ("Exam", lambda: _data("Exam"), "normexam ~ standLRT + sex + (1 + standLRT | school)"),
            ("3 x 3 term", _slopes3, "y ~ x + z + (x + z | g)"),
            ("Dyestuff", lambda: _data("Dyestuff"), "Yield ~ 1 + (1 | Batch)")]


@pytest.mark.parametrize("case", range(4), ids=["sleepstudy", "Exam", "3 x 3 term", "Dyestuff"])
@pytest.mark.parametrize("reml", [True, False])
def test_one_term_gradient_matches_central_differences(case, reml):
    """leading_criterion_gradient (one term of any size, Q2 = 0) against central differences of the
    compiled criterion, at interior thetas of both signs of the off-diagonals."""
    from engine.lmer_kernels import leading_criterion_gradient

    _name, data, formula = _leading_cases()[case]
    st = _stats(formula, data())
    assert st.Q2 == 0
    K = int(np.sum(st.layout.term_q * (st.layout.term_q + 1) // 2))
    f = lambda t: lmer_module.profiled_criterion(t, st.moments, st.cross, st.layout, st.n, reml)  # noqa: E731
    for theta in (np.array([0.9, 0.2, 0.3, 0.7, -0.1, 0.5])[:K], np.array([0.1, -0.4, 1.3, 0.2, 0.6, 1.1])[:K]):
        crit, grad = leading_criterion_gradient(theta, st.moments, st.cross, st.layout, st.n, reml)
        assert crit == pytest.approx(f(theta), rel=1e-13)
        h = 1e-5
        fd = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(K)])
        # central differences: truncation h^2 f''' and rounding eps |f| / h (|f| ~ 2e3: ~4e-8)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", range(3), ids=["sleepstudy", "Exam", "3 x 3 term"])
@pytest.mark.parametrize("reml", [True, False])
def test_one_term_fit_is_stationary(case, reml):
    """One-term fits run BFGS on the exact gradient without a Newton polish: at the returned theta
    the exact gradient is zero (1e-5, BFGS stops at 1e-6) and no central-difference step in any
    coordinate lowers the criterion by more than rounding."""
    from engine.lmer_kernels import leading_criterion_gradient

    _name, data, formula = _leading_cases()[case]
    fit = lmer(formula, data(), REML=reml)
    st = fit._stats
    _crit, grad = leading_criterion_gradient(fit.theta, st.moments, st.cross, st.layout, st.n, reml)
    assert np.max(np.abs(grad)) < 1e-5
    f = lambda t: lmer_module.profiled_criterion(t, st.moments, st.cross, st.layout, st.n, reml)  # noqa: E731
    for e in np.eye(len(fit.theta)):
        assert min(f(fit.theta + 1e-4 * e), f(fit.theta - 1e-4 * e)) > fit.criterion - 1e-10


def _nested(n=900, schools=30, classes=4, seed=5):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, schools, n)
    c = s * classes + rng.integers(0, classes, n)  # class codes unique across schools
    x = rng.standard_normal(n)
    y = 1 + x + 0.6 * rng.standard_normal(schools)[s] + 0.4 * rng.standard_normal(schools * classes)[c] \
        + rng.standard_normal(n)
    return pd.DataFrame({"y": y, "x": x, "s": s, "c": c})


_SCALAR_CASES = [("leading only", _crossed, "y ~ x + (1 | a)", False),
                 ("dense trailing", _crossed, "y ~ x + (1 | a) + (1 | c)", False),
                 ("dense trailing, 3 terms", _crossed, "y ~ x + (1 | a) + (1 | b) + (1 | c)", False),
                 ("nested trailing", _nested, "y ~ x + (1 | s/c)", True)]


@pytest.mark.parametrize("case", range(len(_SCALAR_CASES)), ids=[c[0] for c in _SCALAR_CASES])
@pytest.mark.parametrize("reml", [True, False])
def test_scalar_gradient_matches_central_differences(case, reml):
    """scalar_criterion_gradient (compiled; every term scalar, the small models' BFGS) against
    central differences of the compiled criterion at random interior thetas, and against the
    large crossed path's ``_criterion_and_gradient`` (the same algebra, S^{-1} from LAPACK)."""
    from engine.lmer_kernels import criterion_gradient, scalar_criterion_gradient

    _name, data, formula, nested = _SCALAR_CASES[case]
    st = _stats(formula, data())
    assert st.layout.nested == nested and np.all(st.layout.term_q == 1)
    assert st.Q2 < lmer_module._COBYQA_MIN_Q2 or case == 2
    K = len(st.layout.term_q)
    f = lambda t: lmer_module.profiled_criterion(t, st.moments, st.cross, st.layout, st.n, reml)  # noqa: E731
    rng = np.random.default_rng(case)
    for theta in rng.uniform(0.05, 2.0, (3, K)):
        crit, grad = scalar_criterion_gradient(theta, st.moments, st.cross, st.layout, st.n, reml)
        assert crit == f(theta)  # profiled_criterion's arithmetic
        np.testing.assert_array_equal(criterion_gradient(theta, st.moments, st.cross, st.layout, st.n, reml)[1], grad)
        h = 1e-5
        fd = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(K)])
        # central differences: truncation h^2 f''' and rounding eps |f| / h (|f| ~ 1e4: ~2e-7)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-5)
        with SingleThreadedBlas():
            crit_py, grad_py = lmer_module._criterion_and_gradient(st, theta, reml)
        assert crit_py == pytest.approx(crit, rel=1e-13)
        np.testing.assert_allclose(grad, grad_py, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", [0, 1, 3], ids=["leading only", "dense trailing", "nested trailing"])
@pytest.mark.parametrize("reml", [True, False])
def test_scalar_fit_is_stationary(case, reml):
    """Scalar-term fits run BFGS on the exact gradient: at the returned theta the exact gradient
    is zero (1e-5) and no central-difference step in any coordinate lowers the criterion by more
    than rounding."""
    from engine.lmer_kernels import criterion_gradient

    _name, data, formula, _nested_layout = _SCALAR_CASES[case]
    fit = lmer(formula, data(), REML=reml)
    st = fit._stats
    _crit, grad = criterion_gradient(fit.theta, st.moments, st.cross, st.layout, st.n, reml)
    assert np.max(np.abs(grad[fit.theta > 0])) < 1e-5
    f = lambda t: lmer_module.profiled_criterion(t, st.moments, st.cross, st.layout, st.n, reml)  # noqa: E731
    for e in np.eye(len(fit.theta)):
        assert min(f(fit.theta + 1e-4 * e), f(np.maximum(fit.theta - 1e-4 * e, 0.0))) > fit.criterion - 1e-10
