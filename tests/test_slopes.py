"""Random slopes: the Gibbs sampler against brms 2.18 (sleepstudy), its Sigma step against the LKJ and
half-t priors (sample_prior="only"), its location block against the dense Gaussian conditional,
printing, coef()/varcorr(), and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import engine
from engine import diagnostics
from engine.errors import ColumnNotFoundError, FormulaError, ModelSpecError, PriorError
from engine.formula import model_frame
from engine.gibbs_slopes import run_slopes_chain, slopes_data
from engine.multilevel import build_model, parameter_names, ranef_names
from engine.rcompat.print_brms import format_prior_summary
from engine.parallel import child_seeds
from engine.priors import prior

SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep_dir(fixtures_dir):
    return fixtures_dir / "brms_slopes"


@pytest.fixture(scope="module")
def sleep_data(sleep_dir):
    return pd.read_csv(sleep_dir / "sleepstudy.csv")


@pytest.fixture(scope="module")
def sleep_fit(sleep_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return engine.brm(SLEEP, sleep_data, seed=20261202, data_name="sleepstudy")


def _by_chain(fit, name):
    if name in fit.parameter_names:
        return fit.draws_values[:, :, fit.parameter_names.index(name)]
    return fit.ranef_values[:, :, fit.ranef_names.index(name)]


def test_names_as_brms(sleep_data):
    model = build_model(model_frame(SLEEP, sleep_data, allow_random=True))
    assert parameter_names(model) == ["b_Intercept", "b_Days", "sd_Subject__Intercept", "sd_Subject__Days",
                                      "cor_Subject__Intercept__Days", "sigma"]
    names = ranef_names(model)
    assert names[:2] == ["r_Subject[308,Intercept]", "r_Subject[309,Intercept]"]
    assert names[18] == "r_Subject[308,Days]" and len(names) == 36


def test_gibbs_matches_brms_sleepstudy(sleep_fit, sleep_dir):
    """Posterior means and SDs of every b_, sd_, cor_, sigma (and the first subjects' r_) within 4
    combined Monte Carlo SEs + 1% of brms' posterior SD."""
    reference = json.loads((sleep_dir / "sleep_slope_summary.json").read_text())["parameters"]
    for name, ref in reference.items():
        x = _by_chain(sleep_fit, name)
        mean, sd = float(x.mean()), float(x.std(ddof=1))
        tolerance_mean = 4 * np.hypot(diagnostics.mcse_mean(x), ref["mcse_mean"]) + 0.01 * ref["sd"]
        tolerance_sd = 4 * np.hypot(diagnostics.mcse_sd(x), ref["mcse_sd"]) + 0.01 * ref["sd"]
        assert abs(mean - ref["mean"]) <= tolerance_mean, (name, mean, ref["mean"], tolerance_mean)
        assert abs(sd - ref["sd"]) <= tolerance_sd, (name, sd, ref["sd"], tolerance_sd)


def test_print_and_priors_as_brms(sleep_fit, sleep_dir):
    expected_priors = (sleep_dir / "sleep_slope_priors.txt").read_text().rstrip("\n")
    assert format_prior_summary(sleep_fit.prior_summary()) == expected_priors
    text = str(sleep_fit)
    reference = (sleep_dir / "sleep_slope_print.txt").read_text()
    labels = [line.split()[0] for line in text.splitlines() if line.startswith(("sd(", "cor("))]
    assert labels == ["sd(Intercept)", "sd(Days)", "cor(Intercept,Days)"]
    # brms' layout line by line (numbers and the Data: line differ)
    def skeleton(block):
        return [line.split()[0] if line.strip() else "" for line in block.splitlines()]
    assert skeleton(text)[:18] == skeleton(reference)[:18]


def test_coef_and_varcorr(sleep_fit):
    coefs = sleep_fit.coef()["Subject"]
    days = _by_chain(sleep_fit, "b_Days").reshape(-1) + _by_chain(sleep_fit, "r_Subject[309,Days]").reshape(-1)
    assert coefs.loc["309", ("Days", "Estimate")] == pytest.approx(days.mean())
    assert coefs.shape == (18, 8)
    vc = sleep_fit.varcorr()
    sd = _by_chain(sleep_fit, "sd_Subject__Days").reshape(-1)
    assert vc["Subject"]["sd"].loc["Days", "Estimate"] == pytest.approx(sd.mean())
    cor = _by_chain(sleep_fit, "cor_Subject__Intercept__Days").reshape(-1)
    assert vc["Subject"]["cor"].loc["Intercept", "Days"] == pytest.approx(cor.mean())
    assert vc["Subject"]["cor"].loc["Days", "Days"] == 1.0
    assert list(vc) == ["Subject", "residual__"]


# ------------------------------------------------------------------------ the Sigma step alone


def _prior_only_frame(q, seed=0, n_levels=3, per_level=5):
    rng = np.random.default_rng(seed)
    n = n_levels * per_level
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.normal(size=n),
                         "g": np.repeat([f"L{j}" for j in range(n_levels)], per_level)})
    lhs = {2: "1 + x", 3: "1 + x + z"}[q]
    return data, f"y ~ x + ({lhs} | g)"


@pytest.mark.parametrize("q, eta", [(2, 1.0), (3, 2.0)])
def test_prior_only_recovers_lkj_and_half_t(q, eta):
    """sample_prior='only': the chain's stationary law is brms' prior; (r + 1) / 2 ~ Beta(b, b),
    b = eta - 1 + q / 2 (Lewandowski et al. 2009) for every correlation, each sd half-t(3, 0, 2.5)."""
    data, formula = _prior_only_frame(q)
    priors = [prior("normal(0, 1)", class_="b"), prior(f"lkj({eta:g})", class_="cor")]
    model = build_model(model_frame(formula, data, allow_random=True), priors, sample_prior="only")
    assert model.sd_prior_scale.tolist() == [2.5] * q
    chains = [engine.gibbs.sample_chain(model, 20000, 500, s, save_ranef=False) for s in child_seeds(11, 2)]
    draws = np.stack([c.draws for c in chains])  # (2, draws, params)
    names = parameter_names(model)
    b = eta - 1 + q / 2
    beta = stats.beta(b, b)
    for j, name in enumerate(names):
        x = draws[:, :, j]
        if name.startswith("cor_"):
            checks = [(x, 0.0), (x ** 2, 1.0 / (2 * b + 1))]
            checks += [((x <= t).astype(float), beta.cdf((t + 1) / 2)) for t in (-0.5, 0.0, 0.5)]
        elif name.startswith("sd_"):
            half_t = lambda t: 2 * stats.t(3).cdf(t / 2.5) - 1  # noqa: E731
            checks = [((x <= t).astype(float), half_t(t)) for t in (1.0, 2.5, 7.5)]
        else:
            continue
        for values, expected in checks:
            assert abs(values.mean() - expected) <= 4.5 * diagnostics.mcse_mean(values), (name, values.mean(), expected)


# --------------------------------------------------------------- location block vs dense Gaussian


def test_location_block_with_sigma_fixed_is_the_dense_gaussian():
    """(1 + x | school/class), Sigma and sigma fixed: the joint draws of (gamma, r) have the mean
    and covariance of the dense Gaussian conditional (precision U'U / sigma^2 + prior precision)."""
    rng = np.random.default_rng(3)
    school = np.repeat(np.arange(3), 12)
    klass = np.tile(np.repeat(np.arange(2), 6), 3)
    n = school.size
    x = rng.normal(size=n)
    data = pd.DataFrame({"y": 1 + 0.5 * x + rng.normal(size=n), "x": x, "school": school, "class": klass})
    frame = model_frame("y ~ x + (1 + x | school/class)", data, allow_random=True)
    model = build_model(frame, [prior("normal(0, 3)", class_="b"), prior("normal(0, 3)", class_="Intercept")])
    sd = np.array([0.8, 0.4, 0.6, 0.3])
    sigma = 0.9
    n_draws = 20000
    draws, ranef = run_slopes_chain(np.random.default_rng(5), n_draws, 0, 1, False, True, slopes_data(model), sd, sigma)
    # dense conditional in the kernel's ordering: gamma (centred intercept, beta), then r per group/coef/level
    W = np.column_stack([np.ones(n), model.X_c])
    blocks, prior_precision = [W], [np.array([1 / 9, 1 / 9])]
    offsets = model.level_offsets
    for g in range(2):
        codes = model.group_codes[:, g]
        n_levels = int(model.n_levels[g])
        Zg = model.Z[:, model.z_offsets[g]:model.z_offsets[g + 1]]
        for c in range(2):
            blocks.append((codes[:, None] == np.arange(n_levels)[None, :]) * Zg[:, [c]])
            prior_precision.append(np.full(n_levels, 1 / sd[2 * g + c] ** 2))
    U = np.column_stack(blocks)
    precision = U.T @ U / sigma ** 2 + np.diag(np.concatenate(prior_precision))
    covariance = np.linalg.inv(precision)
    mean = covariance @ U.T @ model.y / sigma ** 2
    gamma = draws[:, :2].copy()
    gamma[:, 0] = draws[:, 0] + draws[:, 1] * model.x_means[0]  # back to the centred intercept
    sample = np.column_stack([gamma, ranef])
    assert sample.shape[1] == 2 + 2 * 3 + 2 * 6 == offsets[-1] * 2 + 2
    se = np.sqrt(np.diag(covariance) / n_draws)
    assert np.max(np.abs(sample.mean(axis=0) - mean) / se) < 4.5
    empirical = np.cov(sample, rowvar=False)
    scale = np.sqrt(np.outer(np.diag(covariance), np.diag(covariance)))
    # SE of a covariance estimate from n i.i.d. normal draws <= sqrt(2 / n) * sqrt(s_aa s_bb)
    assert np.max(np.abs(empirical - covariance) / scale) < 4.5 * np.sqrt(2 / n_draws)


@pytest.mark.parametrize("formula, priors", [
    ("y ~ x + (1 + x | school/class)", [prior("normal(0, 3)", class_="b"), prior("normal(1, 2)", class_="Intercept"),
                                        prior("lkj(2)", class_="cor")]),
    ("y ~ x + z + (x || school)", [prior("normal(0, 2)", class_="Intercept")]),  # flat b: integrated too
])
def test_collapsed_gibbs_target_is_the_marginal_posterior(formula, priors):
    """The collapsed (Sigma, sigma) step's target: log p(phi | y) differences between two points equal
    those of log N(y; W m, sigma^2 I + Z Sigma Z' + W_p Lambda^{-1} W_p') with the flat coefficients
    integrated out (the REML-type factor), plus the sds' and sigma's half-t priors with the log Jacobian
    and LKJ(eta) through the CPC (q = 2: eta log(1 - z^2) in y = atanh z)."""
    from engine.gibbs_slopes import _collapsed_log_target, make_collapsed_state

    rng = np.random.default_rng(7)
    school = np.repeat(np.arange(4), 10)
    klass = np.tile(np.repeat(np.arange(2), 5), 4)
    n = school.size
    x, z = rng.normal(size=n), rng.normal(size=n)
    data = pd.DataFrame({"y": 1 + 0.5 * x + rng.normal(size=n) + 0.5 * school, "x": x, "z": z, "school": school,
                         "class": klass})
    model = build_model(model_frame(formula, data, allow_random=True), priors)
    packed = slopes_data(model)
    gp = packed.gamma_prior
    proper = gp.family == 1  # NORMAL
    assert proper[0] and (proper[1:].all() == ("||" not in formula))
    precision = np.where(proper, 1.0 / gp.scale ** 2, 0.0)
    prior_mean = np.where(proper, gp.mu, 0.0)
    state = make_collapsed_state(packed, 4)
    terms = model.terms
    W = np.column_stack([np.ones(n), model.X_c])

    def dense(phi):
        pos, value = 0, 0.0
        Z_sigma = np.zeros((n, n))
        for t, term in enumerate(terms):
            q = term.size
            correlated = term.correlated and q > 1
            sd = np.exp(phi[pos:pos + q])
            so = packed.terms.sd_offset[t]
            value += np.sum(stats.t(3, 0, packed.sd_prior.scale[so:so + q]).logpdf(sd)) + np.sum(phi[pos:pos + q])
            pos += q
            R = np.eye(q)
            if correlated:
                cpc = np.tanh(phi[pos])
                R[0, 1] = R[1, 0] = cpc
                value += packed.terms.eta[t] * np.log1p(-cpc ** 2)
                pos += 1
            g = term.group
            codes = model.group_codes[:, g]
            Zg = model.Z[:, model.z_offsets[g] + term.offset: model.z_offsets[g] + term.offset + q]
            same = codes[:, None] == codes[None, :]
            Z_sigma += same * (Zg @ (np.diag(sd) @ R @ np.diag(sd)) @ Zg.T)
        log_sigma = phi[pos]
        value += stats.t(3, 0, model.sigma_prior[3]).logpdf(np.exp(log_sigma)) + log_sigma
        V = np.exp(2 * log_sigma) * np.eye(n) + Z_sigma
        Wp, Wf = W[:, proper], W[:, ~proper]
        V = V + Wp @ np.diag(1 / precision[proper]) @ Wp.T
        e = model.y - Wp @ prior_mean[proper]
        Vi = np.linalg.inv(V)
        value += -0.5 * np.linalg.slogdet(V)[1] - 0.5 * e @ Vi @ e
        if Wf.shape[1]:
            F = Wf.T @ Vi @ Wf
            h = Wf.T @ Vi @ e
            value += -0.5 * np.linalg.slogdet(F)[1] + 0.5 * h @ np.linalg.solve(F, h)
        return value

    def kernel(phi):
        return _collapsed_log_target(phi, state.theta_new, state.chol_new, state.sigma_inv_new, state.log_det_new,
                                     precision, prior_mean, packed, state.sums, state.work_new)

    d = state.phi.shape[0]
    assert d == sum(t.size + (t.size * (t.size - 1) // 2 if t.correlated and t.size > 1 else 0) for t in terms) + 1
    a, b = rng.normal(scale=0.7, size=d), rng.normal(scale=0.7, size=d)
    assert kernel(a) - kernel(b) == pytest.approx(dense(a) - dense(b), rel=1e-9, abs=1e-8)


def test_collapsed_gibbs_step_runs_by_default_and_mixes(sleep_data):
    """sleepstudy: the collapsed step is on by default (one block), accepts most proposals, and lifts the
    worst lag-1 autocorrelation (the correlation's) well below the conditional-only sampler's."""
    model = build_model(model_frame(SLEEP, sleep_data, allow_random=True))
    runs = {c: engine.gibbs.sample_chain(model, 3000, 500, 3, collapse=c, save_ranef=False) for c in (True, False)}
    assert runs[True].stats["collapsed_acceptance"] > 0.5 and "collapsed_acceptance" not in runs[False].stats

    def worst_lag1(draws):
        x = draws - draws.mean(axis=0)
        return np.max(np.sum(x[1:] * x[:-1], axis=0) / np.sum(x * x, axis=0))

    assert worst_lag1(runs[True].draws) < 0.35 < worst_lag1(runs[False].draws)


# ------------------------------------------------------------------------------- bad input


def test_bad_input(sleep_data):
    frame = model_frame(SLEEP, sleep_data, allow_random=True)
    with pytest.raises(PriorError, match="eta must be positive"):
        prior("lkj(0)", class_="cor")
    with pytest.raises(PriorError, match="eta must be positive"):
        prior("lkj(-1)", class_="cor")
    with pytest.raises(PriorError, match="lkj"):
        prior("normal(0, 1)", class_="cor")
    intercepts = model_frame("Reaction ~ Days + (1 | Subject)", sleep_data, allow_random=True)
    with pytest.raises(PriorError, match="no group-level term of the model has correlated"):
        build_model(intercepts, [prior("lkj(2)", class_="cor")])
    uncorrelated = model_frame("Reaction ~ Days + (Days || Subject)", sleep_data, allow_random=True)
    with pytest.raises(PriorError, match="correlated"):
        build_model(uncorrelated, [prior("lkj(2)", class_="cor")])
    with pytest.raises(PriorError, match="no coefficient 'Dayz'"):
        build_model(frame, [prior("normal(0, 5)", class_="sd", group="Subject", coef="Dayz")])
    with pytest.raises((ColumnNotFoundError, FormulaError), match="Nights"):
        engine.brm("Reaction ~ Days + (Nights | Subject)", sleep_data)
    constant = sleep_data.assign(week=sleep_data["Subject"] % 3)
    with pytest.raises(ModelSpecError, match="'week' is constant within every level of 'Subject'"):
        build_model(model_frame("Reaction ~ Days + (week | Subject)", constant, allow_random=True))
    one_each = sleep_data[sleep_data["Days"] == 0]
    with pytest.raises(ModelSpecError, match="no level has 2 observations"):
        build_model(model_frame("Reaction ~ 1 + (Days | Subject)", one_each, allow_random=True))
    with pytest.raises(PriorError, match="proper priors"):
        build_model(frame, sample_prior="only")


def test_user_priors_resolve_per_coefficient(sleep_data):
    frame = model_frame(SLEEP, sleep_data, allow_random=True)
    model = build_model(frame, [prior("normal(0, 5)", class_="sd", group="Subject", coef="Days"),
                                prior("lkj(2)", class_="cor", group="Subject")])
    assert model.sd_prior_family.tolist() == [2, 1] and model.sd_prior_scale.tolist() == [59.3, 5.0]
    assert model.cor_eta.tolist() == [2.0]
    table = engine.multilevel.priors.prior_summary_table(model)
    assert table.loc[table["class"] == "L", "prior"].tolist() == ["lkj_corr_cholesky(1)", "lkj_corr_cholesky(2)"]


# ------------------------------------------------------------------------------------ NUTS


def test_nuts_density_and_gradient_are_the_dense_model():
    """The non-centred density: differences of log p between two points equal those of the row-by-row
    likelihood plus the priors (LKJ via det(R)^(eta - 1) and the CPC Jacobian), and the gradient
    matches central differences."""
    from engine.multilevel.covariance import cholesky_from_cpc
    from engine.multilevel.nuts_slopes import slopes_args, slopes_log_density, slopes_unconstrained_dimension

    rng = np.random.default_rng(0)
    n = 40
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.normal(size=n),
                         "g": rng.integers(0, 4, n), "h": rng.integers(0, 3, n)})
    frame = model_frame("y ~ x + (1 + x + z | g) + (1 | h)", data, allow_random=True)
    model = build_model(frame, [prior("normal(0, 2)", class_="b"), prior("lkj(2)", class_="cor")])
    packed = slopes_args(model)
    dim = slopes_unconstrained_dimension(model)
    assert dim == 2 + 4 + 3 + 1 + 12 + 3

    def dense(theta):
        gamma, log_sd, y, log_sigma, z = theta[:2], theta[2:6], theta[6:9], theta[9], theta[10:]
        L = np.zeros((3, 3))
        cholesky_from_cpc(y, 3, L)
        sd = np.exp(log_sd)
        zg = z[:12].reshape(3, 4)  # (coef, level)
        r_g = (np.diag(sd[:3]) @ L @ zg).T  # (level, coef)
        r_h = sd[3] * z[12:]
        codes_g, codes_h = model.group_codes[:, 0], model.group_codes[:, 1]
        Zg = model.Z[:, :3]
        mean = gamma[0] + model.X_c[:, 0] * gamma[1] + np.sum(Zg * r_g[codes_g], axis=1) + r_h[codes_h]
        value = stats.norm(mean, np.exp(log_sigma)).logpdf(model.y).sum() + stats.norm.logpdf(z).sum()
        value += stats.norm(0, 2).logpdf(gamma[1])
        value += stats.t(3, model.sd_prior_mu[0], model.intercept_prior[3]).logpdf(gamma[0] - model.intercept_prior[2] + model.sd_prior_mu[0])
        value += np.sum(stats.t(3, 0, model.sd_prior_scale).logpdf(sd)) + np.sum(log_sd)
        value += stats.t(3, 0, model.sigma_prior[3]).logpdf(np.exp(log_sigma)) + log_sigma
        R = L @ L.T
        value += (2.0 - 1.0) * np.log(np.linalg.det(R))  # LKJ(2) on R
        # Jacobian of y -> R: prod over CPCs (1 - z^2)^((q - 1 - j) / 2) ... times tanh' = 1 - z^2
        t = np.tanh(y)
        value += 0.5 * (3 - 2) * (np.log1p(-t[0] ** 2) + np.log1p(-t[1] ** 2)) + np.sum(np.log1p(-t ** 2))
        return value

    a, b = rng.normal(size=dim) * 0.5, rng.normal(size=dim) * 0.5
    la, ga = slopes_log_density(a, *packed)
    lb, _ = slopes_log_density(b, *packed)
    assert la - lb == pytest.approx(dense(a) - dense(b), rel=1e-9, abs=1e-8)
    numeric = np.array([(slopes_log_density(a + e, *packed)[0] - slopes_log_density(a - e, *packed)[0]) / 2e-6
                        for e in np.eye(dim) * 1e-6])
    assert np.max(np.abs(numeric - ga)) < 1e-5 * max(1.0, np.max(np.abs(ga)))


def test_nuts_matches_brms_sleepstudy(sleep_data, sleep_dir):
    reference = json.loads((sleep_dir / "sleep_slope_summary.json").read_text())["parameters"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm(SLEEP, sleep_data, sampler="nuts", seed=20261203)
    assert fit.divergences == 0
    for name, ref in reference.items():
        x = _by_chain(fit, name)
        mean, sd = float(x.mean()), float(x.std(ddof=1))
        assert abs(mean - ref["mean"]) <= 4 * np.hypot(diagnostics.mcse_mean(x), ref["mcse_mean"]) + 0.01 * ref["sd"], name
        assert abs(sd - ref["sd"]) <= 4 * np.hypot(diagnostics.mcse_sd(x), ref["mcse_sd"]) + 0.01 * ref["sd"], name


@pytest.mark.parametrize("formula", ["y ~ x + (1 + x + z | g)", "y ~ x + (x || g)"])
def test_collapsed_density_is_the_marginal_likelihood(formula):
    """marginalize=True: log p(theta) differences equal log N(y; W gamma, sigma^2 I + Z Sigma Z') plus the
    priors (LKJ via det(R)^(eta - 1) and the CPC Jacobian), and the gradient matches central differences."""
    from engine.multilevel.covariance import cholesky_from_cpc
    from engine.multilevel.nuts_slopes import collapsed_slopes_args, collapsed_slopes_log_density

    rng = np.random.default_rng(1)
    n = 40
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.normal(size=n),
                         "g": rng.integers(0, 4, n)})
    model = build_model(model_frame(formula, data, allow_random=True), [prior("normal(0, 2)", class_="b")])
    packed = collapsed_slopes_args(model)
    S, C = model.n_sd, model.n_cor
    dim = 2 + S + C + 1

    def dense(theta):
        gamma, log_sd, y, log_sigma = theta[:2], theta[2:2 + S], theta[2 + S:2 + S + C], theta[-1]
        sd = np.exp(log_sd)
        R = np.eye(S)
        value = 0.0
        if C:
            L = np.zeros((S, S))
            cholesky_from_cpc(y, S, L)
            R = L @ L.T
            t = np.tanh(y)  # eta = 1: det(R)^0; CPC Jacobian (column j: (q - 2 - j) / 2) and tanh'
            value += 0.5 * (np.log1p(-t[0] ** 2) + np.log1p(-t[1] ** 2)) + np.sum(np.log1p(-t ** 2))
        covariance = np.diag(sd) @ R @ np.diag(sd)
        V = np.exp(2 * log_sigma) * np.eye(n)
        codes = model.group_codes[:, 0]
        for j in range(int(model.n_levels[0])):
            rows = codes == j
            V[np.ix_(rows, rows)] += model.Z[rows] @ covariance @ model.Z[rows].T
        value += stats.multivariate_normal(gamma[0] + model.X_c[:, 0] * gamma[1], V).logpdf(model.y)
        value += stats.norm(0, 2).logpdf(gamma[1])
        value += stats.t(3, model.intercept_prior[2], model.intercept_prior[3]).logpdf(gamma[0])
        value += np.sum(stats.t(3, 0, model.sd_prior_scale).logpdf(sd)) + np.sum(log_sd)
        value += stats.t(3, 0, model.sigma_prior[3]).logpdf(np.exp(log_sigma)) + log_sigma
        return value

    a, b = rng.normal(size=dim) * 0.5, rng.normal(size=dim) * 0.5
    la, ga = collapsed_slopes_log_density(a, *packed)
    lb, _ = collapsed_slopes_log_density(b, *packed)
    assert la - lb == pytest.approx(dense(a) - dense(b), rel=1e-9, abs=1e-8)
    numeric = np.array([(collapsed_slopes_log_density(a + e, *packed)[0]
                         - collapsed_slopes_log_density(a - e, *packed)[0]) / 2e-6 for e in np.eye(dim) * 1e-6])
    assert np.max(np.abs(numeric - ga)) < 1e-5 * max(1.0, np.max(np.abs(ga)))


def test_collapsed_nuts_matches_brms_sleepstudy(sleep_data, sleep_dir):
    reference = json.loads((sleep_dir / "sleep_slope_summary.json").read_text())["parameters"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm(SLEEP, sleep_data, sampler="nuts", marginalize=True, seed=20261204)
    assert fit.divergences == 0
    for name, ref in reference.items():  # r_ drawn exactly afterwards
        x = _by_chain(fit, name)
        mean, sd = float(x.mean()), float(x.std(ddof=1))
        assert abs(mean - ref["mean"]) <= 4 * np.hypot(diagnostics.mcse_mean(x), ref["mcse_mean"]) + 0.01 * ref["sd"], name
        assert abs(sd - ref["sd"]) <= 4 * np.hypot(diagnostics.mcse_sd(x), ref["mcse_sd"]) + 0.01 * ref["sd"], name


def test_brm_multiple_and_file_with_slopes(sleep_data, tmp_path):
    rng = np.random.default_rng(2)
    datasets = [sleep_data.assign(Reaction=sleep_data["Reaction"] + rng.normal(0, 1, len(sleep_data))) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = engine.brm_multiple(SLEEP, datasets, chains=2, iter=400, warmup=200, seed=3)
        assert "cor_Subject__Intercept__Days" in fit.parameter_names and fit.draws_array().shape == (4, 200, 6)
        path = tmp_path / "sleep"
        first = engine.brm(SLEEP, sleep_data, chains=2, iter=400, warmup=200, seed=4, file=path)
        again = engine.brm(SLEEP, sleep_data, chains=2, iter=400, warmup=200, seed=99, file=path)
    np.testing.assert_array_equal(first.draws_array(), again.draws_array())
    assert again.ranef_names[18] == "r_Subject[308,Days]"
    assert "cor(Intercept,Days)" in str(again)
