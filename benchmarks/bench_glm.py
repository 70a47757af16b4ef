"""Benchmark: binary and count multilevel models (issue 13), engine vs brms, min bulk ESS per sampler-second.

Models (brms' default priors, 4 chains x 2000 iterations, 1000 warm-up):

- the study's binary model ``choicer1 ~ grit + male + raven + mathscore1 + (1 | schoolid/classid)``,
  bernoulli, on its complete cases: engine's Pólya-Gamma Gibbs and NUTS, brms (NUTS);
- the study's binary slope model ``choicer1 ~ grit + male + raven + mathscore1 + (1 + mathscore1 |
  schoolid)``, bernoulli: engine's Pólya-Gamma Gibbs and NUTS, brms;
- brms' epilepsy ``count ~ zAge + zBase * Trt + (1 | patient)``, poisson: engine's NUTS, brms.

ESS per second = min bulk ESS over every b_, sd_ and cor_ parameter (engine.diagnostics, as R's
posterior) / sampler seconds (warm-up + sampling, summed over chains; ``--clock cpu``: the process's
CPU seconds, steadier on a loaded machine). Compile time (Numba first call / cache load; Stan's C++
compile for brms) is reported apart. Engine chains run one after another in this process.

brms: ``--brms run`` fits it here through rstan (``cores = 2``; per-chain elapsed times summed);
``--brms recorded`` (the default) uses brms' recorded fits instead of rerunning Stan: min bulk ESS
from the stored draws (tests/fixtures/families/binary_draws.csv.gz, binary_slope_draws.csv.gz,
epi_pois_draws.csv.gz) and the chain seconds recorded with them (RECORDED_BRMS below: their sources);
``--brms none`` leaves brms out. Goals: Pólya-Gamma Gibbs >= 50x brms, NUTS >= 10x brms. Run by
``bench_bayes.py`` (its GLM section) or alone:

    python benchmarks/bench_glm.py [--brms run|recorded|none] [--clock wall|cpu] [--models binary,slope,epilepsy]
        [--samplers gibbs,nuts] [--chains 4 --iter 2000 --warmup 1000]
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import brms_preamble, print_table, r_package_versions, rscript_available, run_rscript

from engine.multilevel import families
from engine.datasets import load_grit
from engine.diagnostics import summarise_draws

SEED = 4387510
BINARY = "choicer1 ~ grit + male + raven + mathscore1 + (1 | schoolid/classid)"
BINARY_VARIABLES = ["choicer1", "grit", "male", "raven", "mathscore1", "schoolid", "classid"]
SLOPE = "choicer1 ~ grit + male + raven + mathscore1 + (1 + mathscore1 | schoolid)"
EPILEPSY = "count ~ zAge + zBase * Trt + (1 | patient)"
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "families"
EPILEPSY_PATH = FIXTURES / "brms_epilepsy.csv"

# brms 2.18 / rstan 2.21 fits recorded on this project's 2-core machine (4 chains x 2000, 1000 warm-up):
# (draws file, summed chain seconds, where the seconds come from). Stan's times are wall clock of
# single-threaded chains, i.e. about their CPU time.
RECORDED_BRMS = {
    "binary": ("binary_draws.csv.gz", 49.4, "benchmarks/README.md bench_glm row (one run, load 12-14; issue 13 "
                                            "quotes 26 s)"),
    "slope": ("binary_slope_draws.csv.gz", 32.22, "tests/fixtures/families/binary_slope_time.txt (load ~15)"),
    "epilepsy": ("epi_pois_draws.csv.gz", 37.2, "benchmarks/README.md bench_glm row (one run, load 12-14)"),
}


def binary_data() -> pd.DataFrame:
    return load_grit()[BINARY_VARIABLES].dropna()


def epilepsy_data() -> pd.DataFrame:
    return pd.read_csv(EPILEPSY_PATH, dtype={"Trt": str, "patient": str, "visit": str, "obs": str})


def min_bulk_ess(draws: np.ndarray, names: list[str]) -> tuple[float, str, float]:
    summary = summarise_draws(draws, names)
    return float(summary["ess_bulk"].min()), str(summary["ess_bulk"].idxmin()), float(summary["rhat"].max())


def engine_run(module_name: str, model, chains: int, n_iter: int, n_warmup: int, seed: int, clock=time.perf_counter):
    """(draws (chains, draws, params), sampler seconds, first-call seconds, note)."""
    module = importlib.import_module(module_name)
    start = clock()
    module.sample_chain(model, 30, 10, np.random.SeedSequence(0))  # compile / cache load
    first_call = clock() - start
    draws, seconds, note = [], 0.0, ""
    divergent = 0
    for child in np.random.SeedSequence(seed).spawn(chains):
        start = clock()
        result = module.sample_chain(model, n_iter, n_warmup, child)
        seconds += clock() - start
        draws.append(result.draws)
        if "divergent" in result.stats:
            divergent += int(np.sum(result.stats["divergent"]))
    if module_name.endswith("nuts_glm"):
        note = f"{divergent} divergent"
    return np.stack(draws), seconds, first_call, note


BRMS_CODE = r"""
{preamble}
d <- read.csv("{path}")
for (v in c({factors})) d[[v]] <- factor(d[[v]])
t0 <- proc.time()[["elapsed"]]
fit0 <- brm({formula}, data = d, family = {family}, chains = 0, seed = {seed})
cat("COMPILE", proc.time()[["elapsed"]] - t0, "\n")
fit <- update(fit0, recompile = FALSE, chains = {chains}, cores = {cores}, iter = {iter}, warmup = {warmup},
              seed = {seed}, refresh = 0)
el <- rstan::get_elapsed_time(fit$fit)
cat("SAMPLER", sum(el), "\n")
dr <- posterior::as_draws_df(fit)
keep <- grep("^(b_|sd_|cor_)", names(dr), value = TRUE)
write.csv(as.data.frame(dr)[, c(keep, ".chain")], "{out}", row.names = FALSE)
"""


def brms_run(formula: str, data: pd.DataFrame, family: str, factors: list[str], names: list[str],
             chains: int, n_iter: int, n_warmup: int, seed: int):
    with tempfile.TemporaryDirectory() as folder:
        path, out = os.path.join(folder, "data.csv"), os.path.join(folder, "draws.csv")
        data.to_csv(path, index=False)
        code = BRMS_CODE.format(preamble=brms_preamble(), path=path, out=out, formula=formula, family=family,
                                factors=", ".join(f'"{f}"' for f in factors), seed=seed, chains=chains,
                                cores=min(chains, os.cpu_count() or 1), iter=n_iter, warmup=n_warmup)
        stdout, _ = run_rscript(code, timeout=3600)
        values = dict(line.split()[:2] for line in stdout.splitlines() if line.startswith(("COMPILE", "SAMPLER")))
        table = pd.read_csv(out)
    draws = np.stack([table[table[".chain"] == c][names].to_numpy() for c in sorted(table[".chain"].unique())])
    return draws, float(values["SAMPLER"]), float(values["COMPILE"]), "rstan, cores = 2"


def brms_recorded(key: str, names: list[str]):
    """brms' recorded fit: (draws (chains, draws, params), chain seconds, compile seconds (nan), note)."""
    file, seconds, source = RECORDED_BRMS[key]
    table = pd.read_csv(FIXTURES / file)
    draws = np.stack([table[table[".chain"] == c][names].to_numpy() for c in sorted(table[".chain"].unique())])
    return draws, seconds, float("nan"), f"recorded: {source}"


GIBBS_MODULES = {"bernoulli": "engine.multilevel.gibbs_pg", "binomial": "engine.multilevel.gibbs_pg"}
NUTS_MODULE = "engine.multilevel.nuts_glm"


def run_glm_benchmarks(no_r: bool = False, chains: int = 4, n_iter: int = 2000, n_warmup: int = 1000,
                       brms: str | None = None, clock: str = "wall", models: tuple[str, ...] = ("binary", "epilepsy"),
                       samplers: tuple[str, ...] = ("gibbs", "nuts")) -> list[dict]:
    """The chosen models, every chosen sampler, one table each; returns the rows.

    ``brms``: "run" (fit it here), "recorded" (RECORDED_BRMS) or "none"; None: "none" with ``no_r``, else
    "run" (what bench_bayes.py asks for). ``clock``: "wall" (perf_counter) or "cpu" (process_time)."""
    brms = brms or ("none" if no_r else "run")
    timer = time.process_time if clock == "cpu" else time.perf_counter
    if brms == "run" and not rscript_available(["brms"]):
        print("brms: absent (Rscript with brms not installed) -- no brms column")
        brms = "none"
    if brms == "run":
        versions = r_package_versions(["brms", "rstan"])
        print("brms:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    else:
        print({"none": "brms: skipped", "recorded": "brms: recorded fits (RECORDED_BRMS), not rerun"}[brms])
    print(f"engine clock: {clock}; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    available = {
        "binary": ("study binary (bernoulli)", BINARY, binary_data, "bernoulli",
                   ["choicer1", "grit", "male", "schoolid", "classid"]),
        "slope": ("study binary slope (bernoulli)", SLOPE, binary_data, "bernoulli",
                  ["choicer1", "grit", "male", "schoolid", "classid"]),
        "epilepsy": ("epilepsy (poisson)", EPILEPSY, epilepsy_data, "poisson", ["Trt", "patient"]),
    }
    all_rows = []
    for key in models:
        title, formula, load, family_name, factors = available[key]
        data = load()
        modules = ([GIBBS_MODULES[family_name]] if "gibbs" in samplers and family_name in GIBBS_MODULES else []) \
            + ([NUTS_MODULE] if "nuts" in samplers else [])
        family = families.get_family(family_name)
        frame, trials = families.glm_model_frame(formula, data, family)
        model = families.build_glm_model(frame, trials, None, family)
        names = families.parameter_names(model)
        print(f"\n{title}: {formula}; N = {model.base.n_obs}, groups "
              + ", ".join(f"{g} {k}" for g, k in zip(model.base.group_names, model.base.n_levels))
              + f"; {chains} chains x {n_iter} iterations ({n_warmup} warm-up)")
        runs = []
        for module_name in modules:
            label = "engine PG gibbs" if module_name.endswith("gibbs_pg") else "engine nuts"
            runs.append((label, lambda m=module_name: engine_run(m, model, chains, n_iter, n_warmup, SEED, timer)))
        if brms == "run":
            runs.append(("brms (NUTS)", lambda: brms_run(formula, data, family_name, factors, names, chains, n_iter,
                                                          n_warmup, SEED)))
        elif brms == "recorded":
            runs.append(("brms (NUTS)", lambda k=key: brms_recorded(k, names)))
        rows = []
        for label, function in runs:
            try:
                draws, seconds, compile_seconds, note = function()
            except Exception as error:  # a broken peer must not hide the other rows
                print(f"{label}: failed ({type(error).__name__}: {error})")
                continue
            ess, worst, rhat = min_bulk_ess(draws, names)
            rows.append({"model": title, "sampler": label, "min bulk ESS": round(ess), "(param)": worst,
                         "max R-hat": round(rhat, 3), "sampler s": round(seconds, 2),
                         "ESS/s": round(ess / seconds, 1), "compile s": round(compile_seconds, 2), "note": note})
        peer = next((r for r in rows if r["sampler"].startswith("brms")), None)
        for row in rows:
            row["vs brms"] = f"{row['ESS/s'] / peer['ESS/s']:.1f}x" if peer else "n/a"
        print_table(rows, ["sampler", "min bulk ESS", "(param)", "max R-hat", "sampler s", "ESS/s", "vs brms",
                           "compile s", "note"])
        all_rows += rows
    print("(goals: Pólya-Gamma Gibbs >= 50x brms, NUTS >= 10x brms, in min bulk ESS per sampler-second)")
    return all_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-r", action="store_true", help="same as --brms none")
    parser.add_argument("--brms", choices=["run", "recorded", "none"], default="recorded")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--models", default="binary,slope,epilepsy")
    parser.add_argument("--samplers", default="gibbs,nuts")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--iter", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=1000)
    args = parser.parse_args()
    run_glm_benchmarks(chains=args.chains, n_iter=args.iter, n_warmup=args.warmup,
                       brms="none" if args.no_r else args.brms, clock=args.clock,
                       models=tuple(args.models.split(",")), samplers=tuple(args.samplers.split(",")))


if __name__ == "__main__":
    main()
