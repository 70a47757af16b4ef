"""Peer run for bench_bayes.py: the nested model in PyMC, sampled by nutpie (numba backend).

Run by ``bench_bayes.py --nutpie-python PYTHON`` with an interpreter that has ``pymc`` and
``nutpie`` (they pin their own numba, so they usually live in a separate virtual environment):

    PYTHON benchmarks/nutpie_peer.py IN.npz OUT.npz CHAINS ITER WARMUP SEED

IN.npz holds the model's arrays (y, X_c centred design without intercept, x_means, school and
class codes); the model is the one engine samples: centred intercept ~ normal(0, 10), b ~ normal(0,
10), sd_school, sd_class, sigma ~ half-Cauchy(0, 10), non-centred random intercepts (as brms).
OUT.npz gets the draws (chains, draws, params) in engine's parameter order (b_Intercept on the
original scale, b_*, sd_school, sd_class, sigma), the compile seconds and the sampler seconds
(chains run one after another, cores = 1, so wall time is the sum over chains).
"""

import sys
import time

import numpy as np


def main() -> None:
    source, target, chains, n_iter, n_warmup, seed = sys.argv[1:7]
    chains, n_iter, n_warmup, seed = int(chains), int(n_iter), int(n_warmup), int(seed)
    arrays = np.load(source)
    y, X, x_means = arrays["y"], arrays["X_c"], arrays["x_means"]
    school, klass = arrays["school"], arrays["klass"]
    import nutpie
    import pymc as pm

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
    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trace = nutpie.sample(compiled, draws=n_iter - n_warmup, tune=n_warmup, chains=chains, seed=seed,
                          target_accept=0.95, cores=1, progress_bar=False)
    sampler_seconds = time.perf_counter() - start
    post = trace.posterior
    b_draws = post["b"].values  # (chains, draws, p)
    intercept = post["intercept_c"].values - b_draws @ x_means
    draws = np.concatenate([intercept[..., None], b_draws, post["sd_school"].values[..., None],
                            post["sd_class"].values[..., None], post["sigma"].values[..., None]], axis=2)
    divergences = int(trace.sample_stats["diverging"].values.sum())
    np.savez(target, draws=draws, compile_seconds=compile_seconds, sampler_seconds=sampler_seconds,
             divergences=divergences, nutpie_version=nutpie.__version__, pymc_version=pm.__version__)


if __name__ == "__main__":
    main()
