"""The blocked Gibbs sampler: exactness of each block, calibration, and agreement with REML and brms."""

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, linalg, stats

from engine.errors import ModelSpecError
from engine.gibbs import _draw_scale, sample_chain
from engine.multilevel.location import draw_ranef
from engine.multilevel import SimpleFrame, SimpleGroup, build_model, nested_frame, parameter_names
from engine.priors import prior

try:  # MCSE as R posterior computes it; a batch-means estimate when the module is absent
    from engine.diagnostics import mcse_mean as _mcse_mean
    from engine.diagnostics import mcse_sd as _mcse_sd
except ImportError:  # pragma: no cover
    _mcse_mean = _mcse_sd = None


def mcse_mean(chains: np.ndarray) -> float:
    """MCSE of the mean of (chains, draws)."""
    if _mcse_mean is not None:
        return _mcse_mean(chains)
    flat = chains.reshape(-1)
    batches = flat[: len(flat) // 40 * 40].reshape(40, -1).mean(axis=1)
    return float(batches.std(ddof=1) / np.sqrt(40))


def mcse_sd(chains: np.ndarray) -> float:
    if _mcse_sd is not None:
        return _mcse_sd(chains)
    flat = chains.reshape(-1)
    batches = flat[: len(flat) // 40 * 40].reshape(40, -1).std(axis=1, ddof=1)
    return float(batches.std(ddof=1) / np.sqrt(40))


def _group(name, codes):
    levels, inverse = np.unique(codes, return_inverse=True)
    return SimpleGroup(name, inverse.astype(np.int64), [str(v) for v in levels], len(levels))


def _dense_location_posterior(model, tau, sigma):
    """Mean and covariance of (b_Intercept, beta, r) given the scales, from the dense (q + L) system."""
    n = model.n_obs
    q = int(model.has_intercept) + model.n_coef
    W = np.column_stack([np.ones(n), model.X_c]) if model.has_intercept else model.X_c.copy()
    Z = np.zeros((n, model.n_levels_total))
    for g in range(model.n_groups):
        Z[np.arange(n), model.level_offsets[g] + model.group_codes[:, g]] = 1.0
    design = np.column_stack([W, Z])
    prior_mean = np.zeros(q + model.n_levels_total)
    prior_precision = np.zeros(q + model.n_levels_total)
    priors_gamma = ([model.intercept_prior] if model.has_intercept else []) + [
        (f, nu, mu, s) for f, nu, mu, s in zip(model.b_prior_family, model.b_prior_nu, model.b_prior_mu, model.b_prior_scale)]
    for a, (family, _, mu, scale) in enumerate(priors_gamma):
        assert family in (0, 1)
        if family == 1:
            prior_mean[a], prior_precision[a] = mu, 1.0 / scale**2
    prior_precision[q:] = 1.0 / np.repeat(np.asarray(tau) ** 2, model.n_levels)
    precision = design.T @ design / sigma**2 + np.diag(prior_precision)
    factor = linalg.cho_factor(precision, lower=True)
    mean = linalg.cho_solve(factor, design.T @ model.y / sigma**2 + prior_precision * prior_mean)
    cov = linalg.cho_solve(factor, np.eye(len(mean)))
    # report the intercept on the original scale: b_Intercept = b0_c - xbar' beta
    transform = np.eye(len(mean))
    if model.has_intercept:
        transform[0, 1:q] = -model.x_means
    return transform @ mean, transform @ cov @ transform.T


def _three_level_model(seed=0, priors=None):
    rng = np.random.default_rng(seed)
    n = 90
    district = np.repeat([0, 1], 45)
    school = district * 3 + rng.integers(0, 3, n)
    klass = school * 2 + rng.integers(0, 2, n)
    X = np.column_stack([np.ones(n), rng.normal(size=n) + 2.0, rng.integers(0, 2, n)])
    y = X @ [1.0, 0.5, -0.3] + rng.normal(size=n) + np.array([0.7, -0.7])[district]
    frame = SimpleFrame(y, X, ["(Intercept)", "x", "z1"], True,
                        [_group("d", district), _group("d:s", school), _group("d:s:c", klass)])
    return build_model(frame, priors)


def _assert_matches_gaussian(sample, mean, cov, ess=None):
    """z-tests of means (MCSE from ESS) and of the whitened sample covariance against the identity."""
    n = sample.shape[0]
    ess = n if ess is None else ess
    z = (sample.mean(axis=0) - mean) / np.sqrt(np.diag(cov) / ess)
    assert np.max(np.abs(z)) < 4.5, f"posterior means off: max |z| = {np.max(np.abs(z)):.2f}"
    chol = np.linalg.cholesky(cov)
    white = linalg.solve_triangular(chol, (sample - mean).T, lower=True).T
    white_cov = white.T @ white / n
    tolerance = 5.0 * np.sqrt(2.0 / ess)
    assert np.max(np.abs(white_cov - np.eye(len(mean)))) < tolerance


NORMAL_PRIORS = [prior("normal(0, 3)", "b"), prior("normal(1, 2)", "Intercept")]


def test_location_block_is_the_exact_gaussian_posterior_three_levels():
    model = _three_level_model(priors=NORMAL_PRIORS)
    tau, sigma = np.array([0.8, 0.5, 0.3]), 0.9
    mean, cov = _dense_location_posterior(model, tau, sigma)
    result = sample_chain(model, 20000, 0, np.random.SeedSequence(11), init={"sd": tau, "sigma": sigma},
                          update_scales=False)
    q = 3
    assert np.all(result.draws[:, q:] == np.r_[tau, sigma])  # scales held
    sample = np.column_stack([result.draws[:, :q], result.ranef])
    _assert_matches_gaussian(sample, mean, cov)  # one block: independent draws


def test_location_block_with_flat_priors_and_no_intercept():
    rng = np.random.default_rng(5)
    n = 60
    school = np.repeat(np.arange(6), 10)
    X = np.column_stack([rng.normal(size=n), rng.normal(size=n) + 1.0])
    y = X @ [0.3, 1.0] + rng.normal(size=n) + rng.normal(size=6)[school]
    model = build_model(SimpleFrame(y, X, ["a", "b"], False, [_group("s", school)]))
    assert model.b_prior_family.tolist() == [0, 0]
    mean, cov = _dense_location_posterior(model, [0.7], 1.1)
    result = sample_chain(model, 15000, 0, np.random.SeedSequence(3), init={"sd": [0.7], "sigma": 1.1},
                          update_scales=False)
    _assert_matches_gaussian(np.column_stack([result.draws[:, :2], result.ranef]), mean, cov)


def test_model_without_groups_is_bayesian_regression():
    rng = np.random.default_rng(6)
    n = 50
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    y = X @ [1.0, -0.5, 0.25] + 0.8 * rng.normal(size=n)
    model = build_model(SimpleFrame(y, X, ["(Intercept)", "a", "b"], True, []), NORMAL_PRIORS)
    assert model.n_blocks == 0 and model.n_cells == 1 and parameter_names(model) == ["b_Intercept", "b_a", "b_b", "sigma"]
    mean, cov = _dense_location_posterior(model, [], 0.8)
    result = sample_chain(model, 15000, 0, np.random.SeedSequence(2), init={"sigma": 0.8}, update_scales=False)
    _assert_matches_gaussian(result.draws[:, :3], mean, cov)
    assert result.ranef.shape == (15000, 0)


def test_crossed_blocks_target_the_joint_gaussian():
    rng = np.random.default_rng(8)
    n = 120
    a, b = rng.integers(0, 4, n), rng.integers(0, 5, n)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = X @ [0.5, 1.0] + rng.normal(size=n) + rng.normal(size=4)[a] + rng.normal(size=5)[b]
    model = build_model(SimpleFrame(y, X, ["(Intercept)", "x"], True, [_group("a", a), _group("b", b)]),
                        NORMAL_PRIORS)
    assert model.n_blocks == 2
    tau, sigma = np.array([1.0, 0.6]), 1.0
    mean, cov = _dense_location_posterior(model, tau, sigma)
    result = sample_chain(model, 30000, 100, np.random.SeedSequence(4), init={"sd": tau, "sigma": sigma},
                          update_scales=False)
    sample = np.column_stack([result.draws[:, :2], result.ranef])
    from engine.diagnostics import ess_bulk

    ess = min(ess_bulk(sample[:, j][None, :]) for j in range(sample.shape[1]))
    _assert_matches_gaussian(sample, mean, cov, ess=ess)


def test_draw_ranef_given_fixed_effects_is_the_exact_conditional():
    model = _three_level_model(seed=2, priors=NORMAL_PRIORS)
    tau, sigma = np.array([0.5, 0.4, 0.6]), 1.2
    fixed = np.array([0.4, 0.6, -0.2])  # b_Intercept (original scale), b_x, b_z1
    draws = np.tile(np.r_[fixed, tau, sigma], (20000, 1))
    r = draw_ranef(model, draws, np.random.SeedSequence(9))
    # dense conditional r | gamma: precision Z'Z/s2 + diag(1/tau^2), linear term Z'(y - W gamma)/s2
    n = model.n_obs
    Z = np.zeros((n, model.n_levels_total))
    for g in range(3):
        Z[np.arange(n), model.level_offsets[g] + model.group_codes[:, g]] = 1.0
    b0_c = fixed[0] + model.x_means @ fixed[1:]
    residual = model.y - b0_c - model.X_c @ fixed[1:]
    precision = Z.T @ Z / sigma**2 + np.diag(1.0 / np.repeat(tau**2, model.n_levels))
    cov = np.linalg.inv(precision)
    mean = cov @ (Z.T @ residual / sigma**2)
    _assert_matches_gaussian(r, mean, cov)


def _scale_conditional_moments(n_effects, ss, log_prior):
    """Mean and SD of tau under p(tau | effects) ∝ tau^-K exp(-SS / (2 tau^2)) prior(tau) on (0, inf)."""
    def log_kernel(t):
        return -n_effects * np.log(t) - ss / (2 * t * t) + log_prior(t)

    grid = np.linspace(1e-3, 20, 20001)
    offset = np.max(log_kernel(grid))  # keeps exp() in range

    def density(t):
        return np.exp(log_kernel(t) - offset)

    mass = integrate.quad(density, 0, np.inf, limit=200)[0]
    m1 = integrate.quad(lambda t: t * density(t), 0, np.inf, limit=200)[0] / mass
    m2 = integrate.quad(lambda t: t * t * density(t), 0, np.inf, limit=200)[0] / mass
    return m1, np.sqrt(m2 - m1 * m1)


@pytest.mark.parametrize(
    "spec, log_prior",
    [
        ("student_t(3, 0, 1)", lambda t: -2.0 * np.log1p(t * t / 3.0)),
        ("cauchy(0, 0.5)", lambda t: -np.log1p((t / 0.5) ** 2)),
        ("normal(0, 0.5)", lambda t: -0.5 * (t / 0.5) ** 2),
        ("normal(1, 0.5)", lambda t: -0.5 * ((t - 1) / 0.5) ** 2),
        ("student_t(4, 0.5, 1)", lambda t: -2.5 * np.log1p((t - 0.5) ** 2 / 4.0)),
        ("exponential(2)", lambda t: -2.0 * t),
        ("", lambda t: 0.0 * t),
    ],
)
def test_scale_update_leaves_its_exact_conditional_invariant(spec, log_prior):
    """Iterate the tau update (mixture auxiliaries or slice step) with fixed effects; moments by quadrature."""
    from engine.diagnostics import ess_mean

    p = prior(spec, "sd")
    n_effects, ss = 6.0, 3.0
    rng = np.random.default_rng(1)
    tau, aux = 1.0, 1.0
    draws = np.empty(20000)
    for i in range(draws.size):
        tau, aux = _draw_scale(rng, tau, aux, n_effects, ss, p.family, p.nu, p.mu, p.scale)
        draws[i] = tau
    mean, sd = _scale_conditional_moments(n_effects, ss, log_prior)
    ess = ess_mean(draws[None, :])
    assert abs(draws.mean() - mean) < 4.5 * sd / np.sqrt(ess)
    assert abs(draws.std() - sd) < 4.5 * sd / np.sqrt(ess) + 0.02 * sd


def test_same_seed_same_draws_and_argument_checks():
    model = _three_level_model()
    one = sample_chain(model, 300, 100, np.random.SeedSequence(7))
    two = sample_chain(model, 300, 100, np.random.SeedSequence(7))
    np.testing.assert_array_equal(one.draws, two.draws)
    np.testing.assert_array_equal(one.ranef, two.ranef)
    assert one.draws.shape == (200, model.n_params) and one.ranef.shape == (200, model.n_levels_total)
    assert not np.array_equal(one.draws, sample_chain(model, 300, 100, np.random.SeedSequence(8)).draws)
    thinned = sample_chain(model, 300, 100, np.random.SeedSequence(7), thin=3, save_ranef=False)
    assert thinned.draws.shape == (67, model.n_params) and thinned.ranef.shape == (67, 0)
    with pytest.raises(ModelSpecError, match="n_warmup"):
        sample_chain(model, 100, 100, 1)
    with pytest.raises(ModelSpecError, match="init"):
        sample_chain(model, 100, 10, 1, init={"sd": [1.0, -1.0, 1.0]})


def test_mixing_variants_target_the_same_posterior():
    """Centred-only, collapsed (default) and interweaving updates of the SDs: same posterior means/SDs."""
    rng = np.random.default_rng(3)
    school, klass = np.repeat(np.arange(5), 12), np.repeat(np.arange(15), 4)
    x = rng.normal(size=60)
    y = 0.3 + 0.5 * x + 0.4 * rng.normal(size=5)[school] + 0.3 * rng.normal(size=15)[klass] + 0.8 * rng.normal(size=60)
    priors = [prior("student_t(5, 0, 1)", "Intercept"), prior("normal(0, 1)", "b"),
              prior("student_t(3, 0, 1)", "sd", group="schoolid"), prior("normal(0, 0.5)", "sd", group="schoolid:classid"),
              prior("student_t(3, 0, 1)", "sigma")]
    model = build_model(nested_frame(y, np.column_stack([np.ones(60), x]), ["(Intercept)", "x"], school, klass), priors)
    variants = {"centred": dict(collapse=False), "collapsed": {}, "interweave": dict(collapse=False, interweave=True)}
    draws = {name: np.stack([sample_chain(model, 25000, 500, s, save_ranef=False, **options).draws
                             for s in np.random.SeedSequence(12).spawn(2)]) for name, options in variants.items()}
    base = draws["centred"]
    for name in ("collapsed", "interweave"):
        for j in range(model.n_params):
            a, b = base[:, :, j], draws[name][:, :, j]
            assert abs(a.mean() - b.mean()) < 4.5 * np.hypot(mcse_mean(a), mcse_mean(b)), (name, j)
            assert abs(a.std() - b.std()) < 4.5 * np.hypot(mcse_sd(a), mcse_sd(b)), (name, j)


# ------------------------------------------------------------------------ calibration (SBC)


@pytest.mark.slow
def test_simulation_based_calibration_nested_model():
    """Talts et al. (2018): ranks of prior draws among thinned posterior draws are uniform.

    Nested school/class model with one covariate; priors exercise every update: Student-t
    (normal mixture) on the intercept, normal on b, half-t (inverse-gamma mixture) on the school SD
    and on sigma, half-normal (slice step) on the class SD.
    """
    priors = [prior("student_t(5, 0, 1)", "Intercept"), prior("normal(0, 1)", "b"),
              prior("student_t(3, 0, 1)", "sd", group="schoolid"), prior("normal(0, 0.5)", "sd", group="schoolid:classid"),
              prior("student_t(3, 0, 1)", "sigma")]
    rng = np.random.default_rng(20181104)
    seeds = np.random.SeedSequence(20181104).spawn(300)
    n_schools, n_classes, n_students = 5, 3, 4
    school = np.repeat(np.arange(n_schools), n_classes * n_students)
    klass = np.repeat(np.arange(n_schools * n_classes), n_students)
    n = school.size
    n_kept, thin = 99, 40
    ranks = []
    for rep in range(300):
        x = rng.normal(size=n)
        b0_c = stats.t.rvs(5, random_state=rng)
        beta = rng.normal()
        tau_s = abs(stats.t.rvs(3, random_state=rng))
        tau_c = abs(0.5 * rng.normal())
        sigma = abs(stats.t.rvs(3, random_state=rng))
        u = tau_s * rng.normal(size=n_schools)
        v = tau_c * rng.normal(size=n_schools * n_classes)
        y = b0_c + (x - x.mean()) * beta + u[school] + v[klass] + sigma * rng.normal(size=n)
        model = build_model(nested_frame(y, np.column_stack([np.ones(n), x]), ["(Intercept)", "x"], school, klass), priors)
        truth = np.array([b0_c - x.mean() * beta, beta, tau_s, tau_c, sigma, u[0], v[0]])
        result = sample_chain(model, 500 + n_kept * thin, 500, seeds[rep], thin=thin)
        draws = np.column_stack([result.draws, result.ranef[:, [0, n_schools]]])
        assert draws.shape == (n_kept, 7)
        ranks.append((draws < truth).sum(axis=0))
    ranks = np.array(ranks)  # 0..99: 100 values, 10 equal bins
    names = ["b_Intercept", "b_x", "sd_school", "sd_class", "sigma", "r_school[1]", "r_class[1_1]"]
    for j, name in enumerate(names):
        counts = np.bincount(ranks[:, j] // 10, minlength=10)
        p_value = stats.chisquare(counts).pvalue
        assert p_value > 1e-3, f"{name}: ranks not uniform (chi-square p = {p_value:.2g}, counts {counts.tolist()})"


@pytest.mark.slow
def test_simulation_based_calibration_crossed_intercept_only():
    """SBC for crossed factors (two blocks drawn in turn with the intercept), no covariates."""
    priors = [prior("normal(0, 2)", "Intercept"), prior("student_t(3, 0, 1)", "sd", group="a"),
              prior("exponential(2)", "sd", group="b"), prior("normal(0, 1)", "sigma")]
    rng = np.random.default_rng(2018)
    seeds = np.random.SeedSequence(2018).spawn(200)
    a, b = np.repeat(np.arange(4), 12), np.tile(np.arange(6), 8)
    n = a.size
    groups = [SimpleGroup("a", a, [str(i) for i in range(4)], 4), SimpleGroup("b", b, [str(i) for i in range(6)], 6)]
    n_kept, thin = 99, 20
    ranks = []
    for rep in range(200):
        b0 = 2.0 * rng.normal()
        tau_a, tau_b = abs(stats.t.rvs(3, random_state=rng)), rng.exponential(0.5)
        sigma = abs(rng.normal())
        ua, ub = tau_a * rng.normal(size=4), tau_b * rng.normal(size=6)
        y = b0 + ua[a] + ub[b] + sigma * rng.normal(size=n)
        model = build_model(SimpleFrame(y, np.ones((n, 1)), ["(Intercept)"], True, groups), priors)
        result = sample_chain(model, 300 + n_kept * thin, 300, seeds[rep], thin=thin)
        draws = np.column_stack([result.draws, result.ranef[:, [0, 4]]])
        ranks.append((draws < np.array([b0, tau_a, tau_b, sigma, ua[0], ub[0]])).sum(axis=0))
    ranks = np.array(ranks)
    for j, name in enumerate(["b_Intercept", "sd_a", "sd_b", "sigma", "r_a[0]", "r_b[0]"]):
        counts = np.bincount(ranks[:, j] // 10, minlength=10)
        p_value = stats.chisquare(counts).pvalue
        assert p_value > 1e-3, f"{name}: ranks not uniform (chi-square p = {p_value:.2g}, counts {counts.tolist()})"


# -------------------------------------------------------------------- agreement with references


def test_posterior_means_agree_with_mixedlm_reml():
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(2024)
    n_schools, n_classes, n_students = 60, 4, 12
    school = np.repeat(np.arange(n_schools), n_classes * n_students)
    klass = np.repeat(np.arange(n_schools * n_classes), n_students)
    n = school.size
    x1, x2 = rng.normal(size=n), rng.integers(0, 2, n).astype(float)
    y = (1.0 + 0.5 * x1 - 0.4 * x2 + 0.6 * rng.normal(size=n_schools)[school]
         + 0.4 * rng.normal(size=n_schools * n_classes)[klass] + rng.normal(size=n))
    frame = pd.DataFrame({"y": y, "x1": x1, "x2": x2, "school": school, "klass": klass})
    reml = smf.mixedlm("y ~ x1 + x2", frame, groups="school", re_formula="1",
                       vc_formula={"klass": "0 + C(klass)"}).fit(reml=True)
    weak = [prior("normal(0, 100)", "b"), prior("normal(0, 100)", "Intercept"), prior("cauchy(0, 10)", "sd"),
            prior("cauchy(0, 10)", "sigma")]
    model = build_model(nested_frame(y, np.column_stack([np.ones(n), x1, x2]), ["(Intercept)", "x1", "x2"],
                                     school, klass), weak)
    draws = sample_chain(model, 4000, 500, np.random.SeedSequence(5), save_ranef=False).draws
    estimates = np.r_[reml.fe_params.values, np.sqrt(reml.cov_re.values[0, 0]), np.sqrt(reml.vcomp[0]), np.sqrt(reml.scale)]
    post_mean, post_sd = draws.mean(axis=0), draws.std(axis=0)
    assert parameter_names(model) == ["b_Intercept", "b_x1", "b_x2", "sd_schoolid__Intercept",
                                      "sd_schoolid:classid__Intercept", "sigma"]
    np.testing.assert_array_less(np.abs(post_mean - estimates), 2.0 * post_sd)


STUDY_FORMULA = "mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit + (1 | schoolid)"


def test_school_model_agrees_with_brms_reference(fixtures_dir):
    """brms 2.18 draws (default priors, 4 x 1000 kept): means and SDs within 4 combined MCSEs + 1%."""
    from engine.datasets import load_grit
    from engine.formula import model_frame

    reference = pd.read_csv(fixtures_dir / "brms" / "brms_school_draws.csv")
    model = build_model(model_frame(STUDY_FORMULA, load_grit(), allow_random=True))
    assert model.n_obs == 1180
    _agrees_with_brms(model, reference, 4387510)


def _agrees_with_brms(model, reference, seed):
    names = parameter_names(model)
    assert names == [c for c in reference.columns if not c.startswith(".")]
    chains = [sample_chain(model, 2000, 1000, s, save_ranef=False).draws for s in np.random.SeedSequence(seed).spawn(4)]
    ours = np.stack(chains)  # (chains, draws, params)
    theirs = np.stack([reference[reference[".chain"] == c][names].to_numpy() for c in range(1, 5)])
    for j, name in enumerate(names):
        a, b = ours[:, :, j], theirs[:, :, j]
        mean_gap = abs(a.mean() - b.mean())
        mean_tol = 4.0 * np.hypot(mcse_mean(a), mcse_mean(b)) + 0.01 * abs(b.mean())
        assert mean_gap < mean_tol, f"{name}: mean {a.mean():.4f} vs brms {b.mean():.4f}"
        sd_gap = abs(a.std(ddof=1) - b.std(ddof=1))
        sd_tol = 4.0 * np.hypot(mcse_sd(a), mcse_sd(b)) + 0.01 * b.std(ddof=1)
        assert sd_gap < sd_tol, f"{name}: sd {a.std(ddof=1):.4f} vs brms {b.std(ddof=1):.4f}"


def test_nested_model_agrees_with_brms_reference(fixtures_dir):
    """brms 2.18 on (1 | schoolid/classid), normal(0, 10) / cauchy(0, 10) priors (fixtures/gibbs)."""
    from engine.datasets import load_grit
    from engine.formula import model_frame

    reference = pd.read_csv(fixtures_dir / "gibbs" / "brms_nested_draws.csv")
    formula = STUDY_FORMULA.replace("(1 | schoolid)", "(1 | schoolid/classid)")
    priors = [prior("normal(0, 10)", "Intercept"), prior("normal(0, 10)", "b"),
              prior("cauchy(0, 10)", "sd"), prior("cauchy(0, 10)", "sigma")]
    model = build_model(model_frame(formula, load_grit(), allow_random=True), priors)
    _agrees_with_brms(model, reference, 20261130)


def test_runs_100000_students_in_2500_classes_in_500_schools():
    rng = np.random.default_rng(100000)
    n_schools, n_classes = 500, 2500
    klass = np.sort(rng.integers(0, n_classes, 100_000))
    school = klass // 5
    x = rng.normal(size=klass.size)
    y = 0.5 + 0.3 * x + 0.4 * rng.normal(size=n_schools)[school] + 0.2 * rng.normal(size=n_classes)[klass] \
        + rng.normal(size=klass.size)
    model = build_model(nested_frame(y, np.column_stack([np.ones(y.size), x]), ["(Intercept)", "x"], school, klass),
                        [prior("normal(0, 10)", "b"), prior("normal(0, 10)", "Intercept"),
                         prior("cauchy(0, 10)", "sd"), prior("cauchy(0, 10)", "sigma")])
    assert model.n_levels.tolist() == [500, 2500] and model.n_cells == 2500
    draws = sample_chain(model, 400, 200, np.random.SeedSequence(1), save_ranef=False).draws
    mean, sd = draws.mean(axis=0), draws.std(axis=0)
    truth = np.array([0.5, 0.3, 0.4, 0.2, 1.0])
    assert np.all(np.abs(mean - truth) < 4 * sd + 0.05)
