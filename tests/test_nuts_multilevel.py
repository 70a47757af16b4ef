"""NUTS for the multilevel model: densities and gradients, collapsed likelihood, agreement with Gibbs and brms."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from engine import diagnostics, gibbs
from engine.errors import ModelSpecError
from engine.multilevel import SimpleFrame, SimpleGroup, build_model, nested_frame, parameter_names
from engine.multilevel.location import PriorArrays, location_inputs
from engine.multilevel.nuts_target import (
    DensityData,
    collapsed_args,
    collapsed_log_density,
    collapsed_logp_and_grad,
    initial_values,
    noncentred_args,
    noncentred_log_density,
    noncentred_logp_and_grad,
    sample_chain,
)
from engine.parallel import child_seeds
from engine.priors import prior

STUDY_FORMULA = "mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit + (1 | schoolid)"
NESTED_FORMULA = STUDY_FORMULA.replace("(1 | schoolid)", "(1 | schoolid/classid)")
NESTED_PRIORS = [prior("normal(0, 10)", class_="b"), prior("normal(0, 10)", class_="Intercept"),
                 prior("cauchy(0, 10)", class_="sd"), prior("cauchy(0, 10)", class_="sigma")]


def _simulated(two_levels=True, seed=0, n_schools=5, classes_per_school=3, n_per_class=4, priors=None):
    rng = np.random.default_rng(seed)
    n_classes = n_schools * classes_per_school
    klass = np.repeat(np.arange(n_classes), n_per_class)
    # unequal class sizes: drop a few rows
    keep = rng.random(klass.size) > 0.2
    keep[::n_per_class] = True
    klass = klass[keep]
    school = klass // classes_per_school
    n = klass.size
    x = rng.normal(size=(n, 2)) + np.array([1.0, -2.0])
    y = (1.0 + x @ np.array([0.5, -0.3]) + 0.7 * rng.normal(size=n_schools)[school]
         + 0.4 * rng.normal(size=n_classes)[klass] + 0.8 * rng.normal(size=n))
    X = np.column_stack([np.ones(n), x])
    frame = nested_frame(y, X, ["(Intercept)", "x1", "x2"], school, klass if two_levels else None)
    return build_model(frame, priors), frame, school, klass


MIXED_PRIORS = [prior("normal(0.3, 2)", class_="b"), prior("student_t(3, 1, 2.5)", class_="Intercept"),
                prior("cauchy(0, 2)", class_="sd", group="schoolid"),
                prior("exponential(1.5)", class_="sd", group="schoolid:classid"),
                prior("normal(1, 3)", class_="sigma")]


def _finite_difference_gradient(function, theta, args, h=1e-6):
    return np.array([(function(theta + e, *args)[0] - function(theta - e, *args)[0]) / (2 * h)
                     for e in np.eye(theta.size) * h])


@pytest.mark.parametrize("two_levels", [False, True])
@pytest.mark.parametrize("marginalize", [False, True])
@pytest.mark.parametrize("priors", [None, MIXED_PRIORS], ids=["brms-defaults", "mixed"])
def test_analytic_gradient_matches_finite_differences(two_levels, marginalize, priors):
    if priors is not None and not two_levels:
        priors = [p for p in priors if p.group != "schoolid:classid"]
    model, *_ = _simulated(two_levels, priors=priors)
    args = collapsed_args(model) if marginalize else noncentred_args(model)
    density = collapsed_log_density if marginalize else noncentred_log_density
    rng = np.random.default_rng(1)
    for _ in range(3):
        theta = initial_values(model, rng, marginalize)
        logp, grad = density(theta, *args)
        numeric = _finite_difference_gradient(density, theta, args)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5 * (1 + np.abs(logp)) ** 0.5)


def _flat_density_data(model, inputs, q, n_groups):
    """DensityData of ``model`` with flat priors on everything."""
    zeros_q, zeros_g = np.zeros(q), np.zeros(n_groups)
    return DensityData(model.cell_n, model.cell_sum_y, inputs.cell_w, inputs.wtw, inputs.wty, float(model.yty),
                       float(model.n_obs), PriorArrays(np.zeros(q, np.int64), zeros_q, zeros_q, zeros_q + 1),
                       PriorArrays(np.zeros(n_groups, np.int64), zeros_g, zeros_g, zeros_g + 1),
                       np.array([0.0, 0.0, 0.0, 1.0]))


@pytest.mark.parametrize("two_levels", [False, True])
def test_collapsed_log_density_equals_dense_multivariate_normal(two_levels):
    """Flat priors: collapsed log density = log N(y; Wγ, σ²I + τ_s² Z_s Z_sᵀ [+ τ_c² Z_c Z_cᵀ]) + N/2 log 2π + Jacobians."""
    model, frame, school, klass = _simulated(two_levels, seed=3)
    args = collapsed_args(model)  # for the sufficient statistics
    inputs = location_inputs(model)
    q, G = 3, model.n_groups
    W = np.column_stack([np.ones(model.n_obs), model.X_c])
    Zs = (school[:, None] == np.arange(school.max() + 1)[None, :]).astype(float)
    Zc = (klass[:, None] == np.arange(klass.max() + 1)[None, :]).astype(float)
    rng = np.random.default_rng(4)
    for _ in range(3):
        theta = rng.normal(size=q + G + 1) * 0.5
        gamma, tau, sigma = theta[:q], np.exp(theta[q:q + G]), np.exp(theta[q + G])
        V = sigma ** 2 * np.eye(model.n_obs) + tau[0] ** 2 * Zs @ Zs.T
        if two_levels:
            V += tau[1] ** 2 * Zc @ Zc.T
        expected = (stats.multivariate_normal(W @ gamma, V).logpdf(model.y) + 0.5 * model.n_obs * np.log(2 * np.pi)
                    + np.sum(theta[q:]))
        logp, _ = collapsed_logp_and_grad(
            theta, q, G, np.ascontiguousarray(model.cell_levels[:, 0]), int(model.n_levels[0]),
            _flat_density_data(model, inputs, q, G))
        assert logp == pytest.approx(expected, rel=1e-10)
    assert args[1][1] == G


def test_noncentred_log_density_equals_row_by_row_likelihood():
    model, frame, school, klass = _simulated(True, seed=5)
    inputs = location_inputs(model)
    q, G, L = 3, 2, model.n_levels_total
    W = np.column_stack([np.ones(model.n_obs), model.X_c])
    rng = np.random.default_rng(6)
    theta = rng.normal(size=q + G + 1 + L) * 0.5
    gamma, tau, sigma, z = theta[:q], np.exp(theta[q:q + G]), np.exp(theta[q + G]), theta[q + G + 1:]
    r = tau[model.level_group] * z
    mean = W @ gamma + r[model.group_codes[:, 0] + model.level_offsets[0]] + r[model.group_codes[:, 1] + model.level_offsets[1]]
    expected = (stats.norm(mean, sigma).logpdf(model.y).sum() + 0.5 * model.n_obs * np.log(2 * np.pi)
                + stats.norm.logpdf(z).sum() + 0.5 * L * np.log(2 * np.pi) + np.sum(theta[q:q + G + 1]))
    logp, _ = noncentred_logp_and_grad(
        theta, q, G, np.ascontiguousarray(model.cell_levels), np.ascontiguousarray(model.level_group),
        _flat_density_data(model, inputs, q, G))
    assert logp == pytest.approx(expected, rel=1e-10)


def test_marginalize_rejects_crossed_and_deeper_nesting():
    rng = np.random.default_rng(0)
    n = 60
    a, b = rng.integers(0, 4, n), rng.integers(0, 3, n)
    groups = [SimpleGroup("a", a, [str(i) for i in range(4)], 4), SimpleGroup("b", b, [str(i) for i in range(3)], 3)]
    frame = SimpleFrame(rng.normal(size=n), np.ones((n, 1)), ["(Intercept)"], True, groups)
    model = build_model(frame)
    with pytest.raises(ModelSpecError, match="not supported with marginalize=True"):
        sample_chain(model, 20, 10, seed=1, marginalize=True)
    c = np.arange(n) // 5
    b2 = c // 3
    a2 = b2 // 2
    groups = [SimpleGroup("a", a2, [str(i) for i in range(a2.max() + 1)], a2.max() + 1),
              SimpleGroup("a:b", b2, [str(i) for i in range(b2.max() + 1)], b2.max() + 1),
              SimpleGroup("a:b:c", c, [str(i) for i in range(c.max() + 1)], c.max() + 1)]
    model = build_model(SimpleFrame(rng.normal(size=n), np.ones((n, 1)), ["(Intercept)"], True, groups))
    with pytest.raises(ModelSpecError, match="not supported with marginalize=True"):
        sample_chain(model, 20, 10, seed=1, marginalize=True)
    # the non-centred sampler handles both
    result = sample_chain(model, 60, 30, seed=1, marginalize=False)
    assert result.draws.shape == (30, 5) and result.ranef.shape == (30, model.n_levels_total)


def _chains(model, sampler, seed, **options):
    results = [sampler(model, 2000, 1000, s, **options) for s in child_seeds(seed, 4)]
    return np.stack([r.draws for r in results]), np.stack([r.ranef for r in results]), results


def _agree(ours, theirs, names, relative=0.0, label=""):
    for j, name in enumerate(names):
        a, b = ours[:, :, j], theirs[:, :, j]
        mean_tol = 4.0 * np.hypot(diagnostics.mcse_mean(a), diagnostics.mcse_mean(b)) + relative * abs(b.mean())
        assert abs(a.mean() - b.mean()) < mean_tol, f"{label} {name}: mean {a.mean():.4f} vs {b.mean():.4f}"
        sd_tol = 4.0 * np.hypot(diagnostics.mcse_sd(a), diagnostics.mcse_sd(b)) + relative * b.std(ddof=1)
        assert abs(a.std(ddof=1) - b.std(ddof=1)) < sd_tol, f"{label} {name}: sd {a.std(ddof=1):.4f} vs {b.std(ddof=1):.4f}"


@pytest.fixture(scope="module")
def study():
    from engine.datasets import load_grit
    return load_grit()


def test_school_model_nuts_collapsed_gibbs_and_brms_agree(study, fixtures_dir):
    """Complete cases, brms' default priors: both NUTS variants agree with Gibbs (4 combined MCSEs) and with
    the brms 2.18 draws (4 combined MCSEs + 1%), random effects included between the samplers."""
    from engine.formula import model_frame
    model = build_model(model_frame(STUDY_FORMULA, study, allow_random=True))
    names = parameter_names(model)
    reference = pd.read_csv(fixtures_dir / "brms" / "brms_school_draws.csv")
    brms = np.stack([reference[reference[".chain"] == c][names].to_numpy() for c in range(1, 5)])
    nuts, nuts_ranef, results = _chains(model, sample_chain, 2024)
    collapsed, collapsed_ranef, collapsed_results = _chains(model, sample_chain, 2025, marginalize=True)
    gibbs_draws, gibbs_ranef, _ = _chains(model, gibbs.sample_chain, 2026)
    for r in results + collapsed_results:
        assert r.stats["divergent"].sum() <= 2
    _agree(nuts, brms, names, relative=0.01, label="nuts vs brms")
    _agree(collapsed, brms, names, relative=0.01, label="collapsed vs brms")
    _agree(nuts, gibbs_draws, names, label="nuts vs gibbs")
    _agree(collapsed, gibbs_draws, names, label="collapsed vs gibbs")
    ranef_names = [f"r[{i}]" for i in range(model.n_levels_total)]
    _agree(collapsed_ranef, gibbs_ranef, ranef_names, label="collapsed vs gibbs ranef")
    _agree(nuts_ranef, gibbs_ranef, ranef_names, label="nuts vs gibbs ranef")
    for draws in (nuts, collapsed):
        assert max(diagnostics.rhat(draws[:, :, j]) for j in range(len(names))) < 1.01


def test_nested_model_nuts_collapsed_and_gibbs_agree(study):
    """(1 | schoolid/classid) with the reference's priors and adapt_delta 0.95."""
    from engine.formula import model_frame
    model = build_model(model_frame(NESTED_FORMULA, study, allow_random=True), NESTED_PRIORS)
    names = parameter_names(model)
    assert names[-3:] == ["sd_schoolid__Intercept", "sd_schoolid:classid__Intercept", "sigma"]
    nuts, nuts_ranef, _ = _chains(model, sample_chain, 7, adapt_delta=0.95)
    collapsed, collapsed_ranef, results = _chains(model, sample_chain, 8, marginalize=True, adapt_delta=0.95)
    gibbs_draws, gibbs_ranef, _ = _chains(model, gibbs.sample_chain, 9)
    _agree(nuts, gibbs_draws, names, label="nuts vs gibbs")
    _agree(collapsed, gibbs_draws, names, label="collapsed vs gibbs")
    _agree(collapsed_ranef, gibbs_ranef, [f"r[{i}]" for i in range(model.n_levels_total)], label="ranef")
    dense, _, _ = _chains(model, sample_chain, 10, marginalize=True, adapt_delta=0.95, metric="dense")
    _agree(dense, gibbs_draws, names, label="collapsed dense-metric vs gibbs")
    # the collapsed sampler works in q + 3 dimensions: short trajectories
    assert np.mean([r.stats["n_leapfrog"].mean() for r in results]) < 20


def test_sample_chain_contract():
    model, *_ = _simulated(True, seed=8)
    result = sample_chain(model, 300, 100, seed=np.random.SeedSequence(3), marginalize=True)
    assert result.draws.shape == (200, model.n_params)
    assert result.ranef.shape == (200, model.n_levels_total)
    for name in ("stepsize", "treedepth", "n_leapfrog", "divergent", "energy", "accept_stat"):
        assert result.stats[name].shape == (200,)
    assert np.all(result.draws[:, -3:] > 0)  # sd's and sigma on their natural scale
    again = sample_chain(model, 300, 100, seed=np.random.SeedSequence(3), marginalize=True)
    np.testing.assert_array_equal(result.draws, again.draws)
    np.testing.assert_array_equal(result.ranef, again.ranef)
    with pytest.raises(ModelSpecError):
        sample_chain(model, 100, 100, seed=1)


def test_model_without_groups_is_bayesian_regression():
    """No grouping factor: both variants coincide; weak priors give the least-squares fit."""
    rng = np.random.default_rng(0)
    n = 200
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = X @ [1.0, 2.0] + rng.normal(size=n)
    model = build_model(SimpleFrame(y, X, ["(Intercept)", "x"], True, []))
    a = sample_chain(model, 1000, 500, seed=1)
    b = sample_chain(model, 1000, 500, seed=1, marginalize=True)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert a.ranef.shape == (500, 0)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    posterior_sd = a.draws[:, :2].std(0)
    assert np.all(np.abs(a.draws[:, :2].mean(0) - beta) < 0.3 * posterior_sd)
