"""Peer run for bench_bayes.py: the nested model, or a random-slopes model, in PyMC, sampled by nutpie
(numba backend).

Run by ``bench_bayes.py --nutpie-python PYTHON`` with an interpreter that has ``pymc`` and
``nutpie`` (they pin their own numba, so they usually live in a separate virtual environment):

    PYTHON benchmarks/nutpie_peer.py IN.npz OUT.npz CHAINS ITER WARMUP SEED [wall|cpu]

(the last: the clock of the sampler seconds, wall by default, or the process's CPU time)

IN.npz holds the model's arrays (y, X_c centred design without intercept, x_means, school and
class codes); the model is the one engine samples: centred intercept ~ normal(0, 10), b ~ normal(0,
10), sd_school, sd_class, sigma ~ half-Cauchy(0, 10), non-centred random intercepts (as brms).
OUT.npz gets the draws (chains, draws, params) in engine's parameter order (b_Intercept on the
original scale, b_*, sd_school, sd_class, sigma), the compile seconds and the sampler seconds
(chains run one after another, cores = 1, so wall time is the sum over chains).

Where IN.npz holds ``Z`` (rows x q) and ``group`` (one grouping factor), the model is brms' random-slopes
model with its default priors, as engine samples it: centred intercept ~ student_t(intercept_prior), b flat,
each sd ~ half-student_t(sd_nu, 0, sd_scale), the correlation matrix ~ LKJ(eta) (PyMC's LKJCholeskyCov,
the sds as its sd_dist), sigma ~ half-student_t(sigma_prior), non-centred group coefficients
r = z (diag(sd) L)' (as brms' Stan code); draws in engine's order b_, sd_ (q), cor_ (lower triangle by
rows of column pairs, as brms), sigma.
"""

import sys
import time

import numpy as np


def main() -> None:
    source, target, chains, n_iter, n_warmup, seed = sys.argv[1:7]
    chains, n_iter, n_warmup, seed = int(chains), int(n_iter), int(n_warmup), int(seed)
    clock = time.process_time if sys.argv[7:8] == ["cpu"] else time.perf_counter
    arrays = np.load(source)
    import nutpie
    import pymc as pm

    if "Z" in arrays.files:
        model, to_draws = _slopes_model(pm, arrays)
    else:
        model, to_draws = _nested_model(pm, arrays)
    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model)
    compile_seconds = time.perf_counter() - start
    start = clock()
    trace = nutpie.sample(compiled, draws=n_iter - n_warmup, tune=n_warmup, chains=chains, seed=seed,
                          target_accept=float(arrays["target_accept"]) if "target_accept" in arrays.files else 0.95,
                          cores=1, progress_bar=False)
    sampler_seconds = clock() - start
    draws = to_draws(trace.posterior)
    divergences = int(trace.sample_stats["diverging"].values.sum())
    np.savez(target, draws=draws, compile_seconds=compile_seconds, sampler_seconds=sampler_seconds,
             divergences=divergences, nutpie_version=nutpie.__version__, pymc_version=pm.__version__)


def _half_student_t(pm, name, nu, scale, **shape):
    return pm.HalfStudentT(name, nu=nu, sigma=scale, **shape) if np.isfinite(nu) else pm.HalfNormal(name, scale, **shape)


def _slopes_model(pm, arrays):
    y, X, x_means, Z, group = arrays["y"], arrays["X_c"], arrays["x_means"], arrays["Z"], arrays["group"]
    nu_i, mu_i, s_i = arrays["intercept_prior"]
    sd_nu, sd_scale, eta = float(arrays["sd_nu"]), float(arrays["sd_scale"]), float(arrays["eta"])
    sig_nu, sig_scale = arrays["sigma_prior"]
    q, n_groups = Z.shape[1], int(group.max()) + 1
    with pm.Model() as model:
        intercept_c = pm.StudentT("intercept_c", nu=nu_i, mu=mu_i, sigma=s_i)
        b = pm.Flat("b", shape=X.shape[1])
        sd_dist = pm.HalfStudentT.dist(nu=sd_nu, sigma=sd_scale, shape=q)
        chol, corr, sds = pm.LKJCholeskyCov("chol", n=q, eta=eta, sd_dist=sd_dist, compute_corr=True)
        z = pm.Normal("z", 0.0, 1.0, shape=(n_groups, q))
        r = pm.math.dot(z, chol.T)  # chol = diag(sd) L
        sigma = _half_student_t(pm, "sigma", sig_nu, sig_scale)
        mu = intercept_c + pm.math.dot(X, b) + (Z * r[group]).sum(axis=1)
        pm.Normal("y", mu, sigma, observed=y)
        pm.Deterministic("sds", sds)
        pm.Deterministic("corr", corr)

    def to_draws(post):
        b_draws = post["b"].values
        intercept = post["intercept_c"].values - b_draws @ x_means
        corr = post["corr"].values
        pairs = [(i, j) for j in range(1, q) for i in range(j)]  # brms: cor_g__1__2, 1__3, 2__3 (by column)
        cor_draws = np.stack([corr[..., i, j] for i, j in pairs], axis=-1)
        return np.concatenate([intercept[..., None], b_draws, post["sds"].values, cor_draws,
                               post["sigma"].values[..., None]], axis=2)

    return model, to_draws


def _nested_model(pm, arrays):
    y, X, x_means = arrays["y"], arrays["X_c"], arrays["x_means"]
    school, klass = arrays["school"], arrays["klass"]
    with pm.Model() as model:
        intercept_c = pm.Normal("intercept_c", 0.0, 10.0)
        b = pm.Normal("b", 0.0, 10.0, shape=X.shape[1])
        sd_school = pm.HalfCauchy("sd_school", 10.0)
        sd_class = pm.HalfCauchy("sd_class", 10.0)
        sigma = pm.HalfCauchy("sigma", 10.0)
        z_school = pm.Normal("z_school", 0.0, 1.0, shape=int(school.max()) + 1)
        z_class = pm.Normal("z_class", 0.0, 1.0, shape=int(klass.max()) + 1)
        mu = intercept_c + pm.math.dot(X, b) + sd_school * z_school[school] + sd_class * z_class[klass]
        pm.Normal("y", mu, sigma, observed=y)

    def to_draws(post):
        b_draws = post["b"].values  # (chains, draws, p)
        intercept = post["intercept_c"].values - b_draws @ x_means
        return np.concatenate([intercept[..., None], b_draws, post["sd_school"].values[..., None],
                               post["sd_class"].values[..., None], post["sigma"].values[..., None]], axis=2)

    return model, to_draws


if __name__ == "__main__":
    main()
