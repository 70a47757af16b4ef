"""Benchmark: min bulk ESS per second for the nested multilevel model, engine vs brms (and others).

Model (issue 4): ``mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit +
(1 | schoolid/classid)`` on the study's complete cases (1,180 rows), priors normal(0, 10) on the
Intercept and b, cauchy(0, 10) on the SDs and sigma; 4 chains x 2000 iterations, 1000 warm-up.

ESS per second = min bulk ESS over all parameters (b_*, sd_*, sigma; engine.diagnostics, as R
posterior) / sampler seconds (warm-up + sampling, summed over chains; ``--clock cpu``: the process's CPU
seconds for engine's chains and nutpie's, steadier on a loaded machine; brms keeps Stan's per-chain
times, which rstan 2.21 / Stan 2.21 measure with C's ``clock()``, the CPU time of the chain's own process
(``stan/services/util/run_adaptive_sampler.hpp``), so ``--clock cpu`` compares CPU with CPU). Compile time (Numba first call / cache load; Stan's C++ compile for brms) is excluded and
reported apart.

Samplers are entries of ``SAMPLERS``: (label, function(model, chains, n_iter, n_warmup, seed) ->
Run). Engine entries run chains one after another in this process and time each. brms runs in R
where ``Rscript`` with brms is installed (adapt_delta 0.95, as the reference fits), nutpie on
the same model in PyMC where importable (or under ``--nutpie-python``); otherwise the table says they are absent.

The scaling table simulates data with the study's structure (about 29 students per class, 2.6
classes per school, the same six covariates) for N = 1,500, 15,000 and 150,000 and reports the
sufficient-statistics pass (build_model, the only O(N) step) apart from sampling.

Random slopes (issue 12, ``--slopes`` / ``--slopes-only``): lme4's sleepstudy ``Reaction ~ Days +
(Days | Subject)`` and the London schools' Exam data ``normexam ~ standLRT + sex + (1 + standLRT |
school)`` (4,059 students, 65 schools) with brms' default priors, engine's Gibbs, NUTS and collapsed
NUTS against brms (default adapt_delta 0.8) in the same run, and a scaling table for 4k, 40k and 400k
simulated students with the Exam structure (65 schools).

    python benchmarks/bench_bayes.py [--no-r] [--quick] [--scaling-only] [--no-scaling] [--nutpie-python PY]
                                     [--slopes | --slopes-only] [--slopes-models sleepstudy Exam] [--no-glm] [--glm-only] [--clock wall|cpu]

The binary and count models of issue 13 (the study's bernoulli model, brms' epilepsy) follow the
main table: benchmarks/bench_glm.py (``--glm-only`` runs just those, ``--no-glm`` skips them).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import os
import tempfile
import time
from typing import Callable, NamedTuple

import numpy as np
from common import print_table, r_package_versions, rscript_available, run_rscript

from engine.datasets import load_grit
from engine.diagnostics import summarise_draws
from engine.formula import model_frame
from engine.multilevel import build_model, nested_frame, parameter_names
from engine.priors import prior

FORMULA = "mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit + (1 | schoolid/classid)"
VARIABLES = ["mathscore2", "male", "raven", "csize", "belief_survey1", "mathscore1", "grit", "schoolid", "classid"]
PRIORS = [prior("normal(0, 10)", "Intercept"), prior("normal(0, 10)", "b"),
          prior("cauchy(0, 10)", "sd"), prior("cauchy(0, 10)", "sigma")]
SEED = 4387510
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
SAMPLER_CLOCK = ["wall"]  # the clock of the sampler seconds (--clock)


def sampler_clock() -> float:
    return CLOCK[SAMPLER_CLOCK[0]]()


class Run(NamedTuple):
    """One sampler's result: draws (chains, draws, params) in parameter_names order, seconds."""

    draws: np.ndarray
    sampler_seconds: float  # warm-up + sampling, summed over chains
    compile_seconds: float  # reported apart (nan when not applicable)
    note: str = ""


# ------------------------------------------------------------------------------ engine entries


def engine_entry(module_name: str, **options) -> Callable:
    """A SAMPLERS function for an engine sampler module with the model-layer contract's sample_chain."""

    def run(model, chains: int, n_iter: int, n_warmup: int, seed: int) -> Run:
        module = importlib.import_module(module_name)
        start = time.perf_counter()
        module.sample_chain(model, 30, 10, np.random.SeedSequence(0), **options)  # compile / cache load
        first_call = time.perf_counter() - start
        draws, seconds = [], 0.0
        for child in np.random.SeedSequence(seed).spawn(chains):
            start = sampler_clock()
            result = module.sample_chain(model, n_iter, n_warmup, child, **options)
            seconds += sampler_clock() - start
            draws.append(result.draws)
        return Run(np.stack(draws), seconds, first_call)

    return run


def nuts_entry(**options) -> Callable:
    """engine.multilevel.nuts_target chains (timing includes the exact random-effect draws of the collapsed
    sampler); the note gives gradient evaluations (leapfrog steps, warm-up included) per effective
    draw of the worst parameter, and post-warm-up divergences."""

    def run(model, chains: int, n_iter: int, n_warmup: int, seed: int) -> Run:
        from engine.multilevel import nuts_target as nuts_multilevel

        start = time.perf_counter()
        nuts_multilevel.sample_chain(model, 30, 10, np.random.SeedSequence(0), **options)  # compile / cache load
        first_call = time.perf_counter() - start
        draws, seconds, gradients, divergent = [], 0.0, 0, 0
        for child in np.random.SeedSequence(seed).spawn(chains):
            start = sampler_clock()
            result = nuts_multilevel.sample_chain(model, n_iter, n_warmup, child, **options)
            seconds += sampler_clock() - start
            draws.append(result.draws)
            gradients += int(result.stats["n_leapfrog"].sum() + result.stats["n_leapfrog_warmup"][0])
            divergent += int(result.stats["divergent"].sum())
        ess = min_bulk_ess(np.stack(draws), parameter_names(model))[0]
        note = f"adapt_delta {options.get('adapt_delta', 0.8)}; {gradients / ess:.0f} gradients/ESS; {divergent} divergent"
        return Run(np.stack(draws), seconds, first_call, note)

    return run


# -------------------------------------------------------------------------------- brms (R)

BRMS_CODE = r"""
{preamble}
d <- read.csv("{path}")
for (v in c("male", "grit", "schoolid", "classid")) d[[v]] <- factor(d[[v]])
pri <- c(prior(normal(0, 10), class = Intercept), prior(normal(0, 10), class = b),
         prior(cauchy(0, 10), class = sd), prior(cauchy(0, 10), class = sigma))
t0 <- proc.time()[["elapsed"]]
fit0 <- brm({formula}, data = d, family = gaussian, prior = pri, chains = 0, seed = {seed})
cat("COMPILE", proc.time()[["elapsed"]] - t0, "\n")
fit <- update(fit0, recompile = FALSE, chains = {chains}, cores = {cores}, iter = {iter}, warmup = {warmup},
              seed = {seed}, control = list(adapt_delta = 0.95), refresh = 0)
el <- rstan::get_elapsed_time(fit$fit)
cat("SAMPLER", sum(el), "\n")
dr <- posterior::as_draws_df(fit)
keep <- grep("^(b_|sd_|sigma$)", names(dr), value = TRUE)
write.csv(as.data.frame(dr)[, c(keep, ".chain")], "{out}", row.names = FALSE)
"""


def brms_entry(model, chains: int, n_iter: int, n_warmup: int, seed: int, data=None) -> Run:
    import pandas as pd

    with tempfile.TemporaryDirectory() as folder:
        path, out = os.path.join(folder, "data.csv"), os.path.join(folder, "draws.csv")
        data.to_csv(path, index=False)
        from common import brms_preamble

        code = BRMS_CODE.format(preamble=brms_preamble(), path=path, out=out, formula=FORMULA, seed=seed,
                                chains=chains, cores=min(chains, os.cpu_count() or 1), iter=n_iter, warmup=n_warmup)
        stdout, _ = run_rscript(code, timeout=3600)
        values = dict(line.split()[:2] for line in stdout.splitlines() if line.startswith(("COMPILE", "SAMPLER")))
        table = pd.read_csv(out)
    names = parameter_names(model)
    draws = np.stack([table[table[".chain"] == c][names].to_numpy() for c in sorted(table[".chain"].unique())])
    return Run(draws, float(values["SAMPLER"]), float(values["COMPILE"]), "adapt_delta 0.95")


def nutpie_entry(python: str, target_accept: float = 0.95) -> Callable:
    """A SAMPLERS function running nutpie (PyMC model, numba backend) under interpreter ``python``
    (benchmarks/nutpie_peer.py), since nutpie and PyMC pin their own numba."""

    def run(model, chains: int, n_iter: int, n_warmup: int, seed: int) -> Run:
        import subprocess

        with tempfile.TemporaryDirectory() as folder:
            source, target = os.path.join(folder, "in.npz"), os.path.join(folder, "out.npz")
            if model.has_slopes:  # one grouping factor with q coefficients, brms' default priors
                np.savez(source, y=model.y, X_c=model.X_c, x_means=model.x_means, Z=model.Z,
                         group=model.group_codes[:, 0], intercept_prior=model.intercept_prior[1:],
                         sd_nu=model.sd_prior_nu[0], sd_scale=model.sd_prior_scale[0], eta=model.cor_eta[0],
                         sigma_prior=model.sigma_prior[[1, 3]], target_accept=target_accept)
            else:
                np.savez(source, y=model.y, X_c=model.X_c, x_means=model.x_means,
                         school=model.group_codes[:, 0], klass=model.group_codes[:, 1], target_accept=target_accept)
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nutpie_peer.py")
            done = subprocess.run([python, script, source, target, str(chains), str(n_iter), str(n_warmup), str(seed),
                                   SAMPLER_CLOCK[0]],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"nutpie_peer.py failed: {done.stderr.strip()[-2000:]}")
            out = np.load(target)
            note = (f"nutpie {out['nutpie_version']}, pymc {out['pymc_version']}, target_accept {target_accept}, "
                    f"{int(out['divergences'])} divergences")
            return Run(out["draws"], float(out["sampler_seconds"]), float(out["compile_seconds"]), note)

    return run


SAMPLERS: list[tuple[str, Callable]] = [
    ("engine gibbs", engine_entry("engine.gibbs")),
    ("engine nuts", nuts_entry(adapt_delta=0.95)),
    ("engine nuts collapsed", nuts_entry(marginalize=True, adapt_delta=0.95)),
]


# ------------------------------------------------------------------------------------ helpers


def find_nutpie_python(args) -> str | None:
    """--nutpie-python, else this interpreter where it has nutpie and pymc, else None."""
    if args.nutpie_python:
        return args.nutpie_python
    if all(importlib.util.find_spec(p) for p in ("nutpie", "pymc")):
        return sys.executable
    return None


def study_data():
    data = load_grit()[VARIABLES].dropna()
    return data


def min_bulk_ess(draws: np.ndarray, names: list[str]) -> tuple[float, str, float]:
    """(min bulk ESS, which parameter, max R-hat) of (chains, draws, params)."""
    summary = summarise_draws(draws, names)
    worst = summary["ess_bulk"].idxmin()
    return float(summary["ess_bulk"].min()), str(worst), float(summary["rhat"].max())


def simulate_study_like(n: int, seed: int = 1, n_classes: int | None = None, n_schools: int | None = None):
    """Data shaped like the study: ~29 students per class, ~2.6 classes per school, six covariates
    (or the given numbers of classes and schools, for growing N at fixed groups)."""
    rng = np.random.default_rng(seed)
    n_classes = n_classes or max(2, round(n / 28.8))
    n_schools = n_schools or max(2, round(n_classes / 2.6))
    klass = np.sort(rng.integers(0, n_classes, n))
    klass = np.unique(klass, return_inverse=True)[1]
    school = (klass * n_schools) // (klass.max() + 1)
    X = np.column_stack([np.ones(n), rng.integers(0, 2, n), rng.normal(size=n), rng.integers(20, 40, n),
                         rng.normal(size=n), rng.normal(size=n), (school % 2).astype(float)])
    y = (X @ [0.2, 0.0, 0.4, -0.01, 0.0, 0.27, 0.3] + 0.15 * rng.normal(size=school.max() + 1)[school]
         + 0.2 * rng.normal(size=klass.max() + 1)[klass] + 0.78 * rng.normal(size=n))
    names = ["(Intercept)", "male1", "raven", "csize", "belief_survey1", "mathscore1", "gritintervention"]
    return nested_frame(y, X, names, school, klass)


# --------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-r", action="store_true", help="skip brms even when installed")
    parser.add_argument("--quick", action="store_true", help="scaling table with 1 chain of 1000 iterations")
    parser.add_argument("--scaling-only", action="store_true")
    parser.add_argument("--nutpie-python", help="a Python interpreter with pymc and nutpie (default: this one, if it has them)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling table")
    parser.add_argument("--slopes", action="store_true", help="also the random-slopes models (sleepstudy, Exam)")
    parser.add_argument("--slopes-only", action="store_true", help="only the random-slopes models")
    parser.add_argument("--slopes-models", nargs="+", choices=list(SLOPES_MODELS), default=list(SLOPES_MODELS),
                        help="which random-slopes models (default: all)")
    parser.add_argument("--no-glm", action="store_true", help="skip the binary and count models (bench_glm.py)")
    parser.add_argument("--glm-only", action="store_true", help="only the binary and count models (bench_glm.py)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="sampler seconds of engine and nutpie: wall clock, or the process's CPU time")
    args = parser.parse_args()
    SAMPLER_CLOCK[0] = args.clock
    print(f"sampler seconds: {args.clock} clock (engine, nutpie); load average {os.getloadavg()[0]:.1f}")
    chains, n_iter, n_warmup = 4, 2000, 1000
    if args.glm_only:
        from bench_glm import run_glm_benchmarks

        run_glm_benchmarks(args.no_r, chains, n_iter, n_warmup, clock=args.clock)
        return
    if args.slopes or args.slopes_only:
        slopes_benchmark(args, chains, n_iter, n_warmup)
        if args.slopes_only:
            return

    data = study_data()
    model = build_model(model_frame(FORMULA, data, allow_random=True), PRIORS)
    names = parameter_names(model)
    print(f"nested model on the study's complete cases: N = {model.n_obs}, {model.n_levels[0]} schools, "
          f"{model.n_levels[1]} classes; {chains} chains x {n_iter} iterations ({n_warmup} warm-up)")

    rows = []
    if not args.scaling_only:
        entries = list(SAMPLERS)
        if args.no_r:
            print("brms: skipped (--no-r)")
        elif rscript_available(["brms"]):
            versions = r_package_versions(["brms", "rstan"])
            print("brms:", ", ".join(f"{k} {v}" for k, v in versions.items()))
            entries.append(("brms (NUTS)", lambda m, c, i, w, s: brms_entry(m, c, i, w, s, data=data)))
        else:
            print("brms: absent (Rscript with brms not installed) -- no brms column")
        nutpie_python = find_nutpie_python(args)
        if nutpie_python:
            entries.append(("nutpie (PyMC)", nutpie_entry(nutpie_python)))
        else:
            print("nutpie/pymc: absent (pass --nutpie-python with an interpreter that has them)")
        if importlib.util.find_spec("numpyro"):
            print("numpyro: installed, but this script has no numpyro entry (not compared)")
        else:
            print("numpyro: absent")
        for label, function in entries:
            try:
                run = function(model, chains, n_iter, n_warmup, SEED)
            except Exception as error:  # a broken peer must not hide the other rows
                print(f"{label}: failed ({type(error).__name__}: {error})")
                continue
            ess, worst, rhat = min_bulk_ess(run.draws, names)
            rows.append({"sampler": label, "min bulk ESS": round(ess), "(param)": worst, "max R-hat": round(rhat, 3),
                         "sampler s": round(run.sampler_seconds, 3), "ESS/s": round(ess / run.sampler_seconds, 1),
                         "compile s": round(run.compile_seconds, 2), "note": run.note})
        peer = next((r for r in rows if r["sampler"].startswith("brms")), None)
        nutpie_row = next((r for r in rows if r["sampler"].startswith("nutpie")), None)
        for row in rows:
            row["vs brms"] = f"{row['ESS/s'] / peer['ESS/s']:.1f}x" if peer else "n/a"
            row["vs nutpie"] = f"{row['ESS/s'] / nutpie_row['ESS/s']:.1f}x" if nutpie_row else "n/a"
        print_table(rows, ["sampler", "min bulk ESS", "(param)", "max R-hat", "sampler s", "ESS/s", "vs brms",
                           "vs nutpie", "compile s", "note"])
        if peer is None:
            print("(no brms run: brms reference points measured on this project's machine: 12-24 ESS/s, "
                  "compile 53-134 s; the goal is Gibbs >= 50x)")

    if not args.no_glm and not args.scaling_only:
        # the study's binary model (bernoulli) and brms' epilepsy (poisson): benchmarks/bench_glm.py
        from bench_glm import run_glm_benchmarks

        print()
        run_glm_benchmarks(args.no_r, chains, n_iter, n_warmup, clock=args.clock)
    if args.no_scaling:
        return
    # scaling in N (Gibbs; the O(N) pass apart)
    scale_chains, scale_iter, scale_warmup = (1, 1000, 500) if args.quick else (chains, n_iter, n_warmup)
    for fixed_groups in (False, True):
        scaling_table(fixed_groups, scale_chains, scale_iter, scale_warmup)


def scaling_table(fixed_groups: bool, chains: int, n_iter: int, n_warmup: int) -> None:
    """Gibbs at N = 1,500 / 15,000 / 150,000: groups growing with N, or the study's 16 schools and 41 classes."""
    scaling = []
    for n in (1_500, 15_000, 150_000):
        frame = simulate_study_like(n, n_classes=41, n_schools=16) if fixed_groups else simulate_study_like(n)
        start = time.perf_counter()
        sim_model = build_model(frame, PRIORS)
        build_seconds = time.perf_counter() - start
        run = engine_entry("engine.gibbs")(sim_model, chains, n_iter, n_warmup, SEED)
        ess, worst, rhat = min_bulk_ess(run.draws, parameter_names(sim_model))
        scaling.append({"N": n, "schools": int(sim_model.n_levels[0]), "classes": int(sim_model.n_levels[1]),
                        "build s (O(N) pass)": round(build_seconds, 3), "sampler s": round(run.sampler_seconds, 3),
                        "s per 1000 iter per chain": round(run.sampler_seconds / chains / n_iter * 1000, 4),
                        "min bulk ESS": round(ess), "ESS/s": round(ess / run.sampler_seconds, 1)})
    shape = "the study's 16 schools and 41 classes" if fixed_groups else "groups grow with N"
    print(f"\nscaling (engine gibbs, {chains} chain(s) x {n_iter} iterations, {shape}):")
    print_table(scaling, list(scaling[0]))


# ------------------------------------------------------------------------------ random slopes

SLOPES_MODELS = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", "lme4_sleepstudy.csv"),
    "Exam": ("normexam ~ standLRT + sex + (1 + standLRT | school)", "mlmRev_Exam.csv"),
}

BRMS_SLOPES_CODE = r"""
{preamble}
d <- read.csv("{path}")
{factors}
t0 <- proc.time()[["elapsed"]]
fit0 <- brm({formula}, data = d, family = gaussian, chains = 0, seed = {seed})
cat("COMPILE", proc.time()[["elapsed"]] - t0, "\n")
fit <- update(fit0, recompile = FALSE, chains = {chains}, cores = {cores}, iter = {iter}, warmup = {warmup},
              seed = {seed}, refresh = 0)
el <- rstan::get_elapsed_time(fit$fit)
cat("SAMPLER", sum(el), "\n")
dr <- posterior::as_draws_df(fit)
keep <- grep("^(b_|sd_|cor_|sigma$)", names(dr), value = TRUE)
write.csv(as.data.frame(dr)[, c(keep, ".chain")], "{out}", row.names = FALSE)
"""


def _data_folder() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.environ.get("ENGINE_SHARED_DATA", ""), os.path.join(here, "..", "..", "shared", "data"),
                      "/work/shared/data"):
        if candidate and os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError("the shared data folder (set ENGINE_SHARED_DATA)")


def brms_slopes_entry(formula: str, data, factors: list[str]) -> Callable:
    def run(model, chains: int, n_iter: int, n_warmup: int, seed: int) -> Run:
        import pandas as pd

        from common import brms_preamble

        with tempfile.TemporaryDirectory() as folder:
            path, out = os.path.join(folder, "data.csv"), os.path.join(folder, "draws.csv")
            data.to_csv(path, index=False)
            code = BRMS_SLOPES_CODE.format(
                preamble=brms_preamble(), path=path, out=out, formula=formula, seed=seed, chains=chains,
                cores=min(chains, os.cpu_count() or 1), iter=n_iter, warmup=n_warmup,
                factors="\n".join(f"d${v} <- factor(d${v})" for v in factors))
            stdout, _ = run_rscript(code, timeout=3600)
            values = dict(line.split()[:2] for line in stdout.splitlines() if line.startswith(("COMPILE", "SAMPLER")))
            table = pd.read_csv(out)
        names = parameter_names(model)
        draws = np.stack([table[table[".chain"] == c][names].to_numpy() for c in sorted(table[".chain"].unique())])
        return Run(draws, float(values["SAMPLER"]), float(values["COMPILE"]), "adapt_delta 0.8 (default)")

    return run


def simulate_exam_like(n: int, n_schools: int = 65, seed: int = 2):
    """Data with the Exam structure: n students in 65 schools, standLRT ~ N(0, 1), sex, random intercept
    and standLRT slope per school (sd 0.3 and 0.12, correlation 0.5), residual sd 0.75."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    school = np.sort(rng.integers(0, n_schools, n))
    lrt = rng.normal(size=n)
    sex = rng.choice(["F", "M"], size=n)
    cov = np.array([[0.09, 0.5 * 0.3 * 0.12], [0.5 * 0.3 * 0.12, 0.0144]])
    u = rng.multivariate_normal([0, 0], cov, size=n_schools)
    y = -0.1 + 0.55 * lrt - 0.17 * (sex == "M") + u[school, 0] + u[school, 1] * lrt + 0.75 * rng.normal(size=n)
    return pd.DataFrame({"normexam": y, "standLRT": lrt, "sex": sex, "school": school})


def slopes_benchmark(args, chains: int, n_iter: int, n_warmup: int) -> None:
    import pandas as pd

    folder = _data_folder()
    with_r = not args.no_r and rscript_available(["brms"])
    if with_r:
        versions = r_package_versions(["brms", "rstan"])
        print("brms:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    else:
        print("brms: skipped or absent -- no brms column")
    nutpie_python = find_nutpie_python(args)
    if not nutpie_python:
        print("nutpie/pymc: absent (pass --nutpie-python with an interpreter that has them)")
    for label in args.slopes_models:
        formula, file_name = SLOPES_MODELS[label]
        data = pd.read_csv(os.path.join(folder, file_name))
        factors = ["Subject"] if label == "sleepstudy" else ["school", "sex"]
        for v in factors:
            data[v] = data[v].astype(str)
        model = build_model(model_frame(formula, data, allow_random=True))
        names = parameter_names(model)
        print(f"\n{label}: {formula}; N = {model.n_obs}, {model.n_levels[0]} groups; {chains} chains x {n_iter} "
              f"iterations ({n_warmup} warm-up), brms' default priors")
        entries = [("engine gibbs", engine_entry("engine.gibbs")), ("engine nuts", nuts_entry()),
                   ("engine nuts collapsed", nuts_entry(marginalize=True))]
        if with_r:
            entries.append(("brms (NUTS)", brms_slopes_entry(formula, data, factors)))
        if nutpie_python:  # brms' default adapt_delta 0.8 here, so nutpie's target_accept 0.8
            entries.append(("nutpie (PyMC)", nutpie_entry(nutpie_python, target_accept=0.8)))
        rows = []
        for name, function in entries:
            try:
                run = function(model, chains, n_iter, n_warmup, SEED)
            except Exception as error:  # a broken peer must not hide the other rows
                print(f"{name}: failed ({type(error).__name__}: {error})")
                continue
            ess, worst, rhat = min_bulk_ess(run.draws, names)
            rows.append({"sampler": name, "min bulk ESS": round(ess), "(param)": worst, "max R-hat": round(rhat, 3),
                         "sampler s": round(run.sampler_seconds, 3), "ESS/s": round(ess / run.sampler_seconds, 1),
                         "compile s": round(run.compile_seconds, 2), "note": run.note})
        peer = next((r for r in rows if r["sampler"].startswith("brms")), None)
        nutpie_row = next((r for r in rows if r["sampler"].startswith("nutpie")), None)
        for row in rows:
            row["vs brms"] = f"{row['ESS/s'] / peer['ESS/s']:.1f}x" if peer else "n/a"
            row["vs nutpie"] = f"{row['ESS/s'] / nutpie_row['ESS/s']:.1f}x" if nutpie_row else "n/a"
        print_table(rows, ["sampler", "min bulk ESS", "(param)", "max R-hat", "sampler s", "ESS/s", "vs brms",
                           "vs nutpie", "compile s", "note"])
    if args.no_scaling:
        return
    scale_chains, scale_iter, scale_warmup = (1, 1000, 500) if args.quick else (chains, n_iter, n_warmup)
    scaling = []
    for n in (4_000, 40_000, 400_000):
        data = simulate_exam_like(n)
        frame = model_frame(SLOPES_MODELS["Exam"][0], data.assign(school=data["school"].astype(str)), allow_random=True)
        start = time.perf_counter()
        sim_model = build_model(frame)
        build_seconds = time.perf_counter() - start
        run = engine_entry("engine.gibbs")(sim_model, scale_chains, scale_iter, scale_warmup, SEED)
        ess, worst, rhat = min_bulk_ess(run.draws, parameter_names(sim_model))
        scaling.append({"N": n, "schools": int(sim_model.n_levels[0]), "build s (O(N) pass)": round(build_seconds, 3),
                        "sampler s": round(run.sampler_seconds, 3),
                        "s per 1000 iter per chain": round(run.sampler_seconds / scale_chains / scale_iter * 1000, 4),
                        "min bulk ESS": round(ess), "ESS/s": round(ess / run.sampler_seconds, 1)})
    print(f"\nscaling (engine gibbs, random slopes, Exam structure, {scale_chains} chain(s) x {scale_iter} iterations):")
    print_table(scaling, list(scaling[0]))


if __name__ == "__main__":
    main()
