"""Benchmark: binary and count multilevel models (issue 13), engine vs brms, min bulk ESS per sampler-second.

Models (brms' default priors, 4 chains x 2000 iterations, 1000 warm-up):

- the study's binary model ``choicer1 ~ grit + male + raven + mathscore1 + (1 | schoolid/classid)``,
  bernoulli, on its complete cases: engine's Pólya-Gamma Gibbs and NUTS, brms (NUTS);
- brms' epilepsy ``count ~ zAge + zBase * Trt + (1 | patient)``, poisson: engine's NUTS, brms.

ESS per second = min bulk ESS over the b_ and sd_ parameters (engine.diagnostics, as R's posterior) /
sampler seconds (warm-up + sampling, summed over chains). Compile time (Numba first call / cache load;
Stan's C++ compile for brms) is reported apart. Engine chains run one after another in this process;
brms runs its chains through rstan (``cores = 2``), whose per-chain elapsed times are summed.
Goals: Pólya-Gamma Gibbs >= 50x brms, NUTS >= 10x brms. Run by ``bench_bayes.py`` (its GLM section)
or alone:

    python benchmarks/bench_glm.py [--no-r]
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
EPILEPSY = "count ~ zAge + zBase * Trt + (1 | patient)"
EPILEPSY_PATH = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "families" / "brms_epilepsy.csv"


def binary_data() -> pd.DataFrame:
    return load_grit()[BINARY_VARIABLES].dropna()


def epilepsy_data() -> pd.DataFrame:
    return pd.read_csv(EPILEPSY_PATH, dtype={"Trt": str, "patient": str, "visit": str, "obs": str})


def min_bulk_ess(draws: np.ndarray, names: list[str]) -> tuple[float, str, float]:
    summary = summarise_draws(draws, names)
    return float(summary["ess_bulk"].min()), str(summary["ess_bulk"].idxmin()), float(summary["rhat"].max())


def engine_run(module_name: str, model, chains: int, n_iter: int, n_warmup: int, seed: int):
    """(draws (chains, draws, params), sampler seconds, first-call seconds, note)."""
    module = importlib.import_module(module_name)
    start = time.perf_counter()
    module.sample_chain(model, 30, 10, np.random.SeedSequence(0))  # compile / cache load
    first_call = time.perf_counter() - start
    draws, seconds, note = [], 0.0, ""
    divergent = 0
    for child in np.random.SeedSequence(seed).spawn(chains):
        start = time.perf_counter()
        result = module.sample_chain(model, n_iter, n_warmup, child)
        seconds += time.perf_counter() - start
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
keep <- grep("^(b_|sd_)", names(dr), value = TRUE)
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


def run_glm_benchmarks(no_r: bool = False, chains: int = 4, n_iter: int = 2000, n_warmup: int = 1000) -> list[dict]:
    """Both models, every sampler, one table each; returns the rows."""
    with_brms = not no_r and rscript_available(["brms"])
    if with_brms:
        versions = r_package_versions(["brms", "rstan"])
        print("brms:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    else:
        print("brms: " + ("skipped (--no-r)" if no_r else "absent (Rscript with brms not installed) -- no brms column"))
    cases = [
        ("study binary (bernoulli)", BINARY, binary_data(), "bernoulli",
         ["choicer1", "grit", "male", "schoolid", "classid"], ["engine.multilevel.gibbs_pg", "engine.multilevel.nuts_glm"]),
        ("epilepsy (poisson)", EPILEPSY, epilepsy_data(), "poisson", ["Trt", "patient"], ["engine.multilevel.nuts_glm"]),
    ]
    all_rows = []
    for title, formula, data, family_name, factors, modules in cases:
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
            runs.append((label, lambda m=module_name: engine_run(m, model, chains, n_iter, n_warmup, SEED)))
        if with_brms:
            runs.append(("brms (NUTS)", lambda: brms_run(formula, data, family_name, factors, names, chains, n_iter,
                                                          n_warmup, SEED)))
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
    parser.add_argument("--no-r", action="store_true", help="skip brms even when installed")
    args = parser.parse_args()
    run_glm_benchmarks(args.no_r)


if __name__ == "__main__":
    main()
