"""Time ``python -m engine replicate`` cold (fresh Numba cache) and warm, against R's pipeline.

Cold: a new, empty ``NUMBA_CACHE_DIR``, so every kernel is compiled; warm: the same command again
with that cache filled. Both run the full analysis (no ``--quick``) in a subprocess, as a user
would. Goal (issue 6): under 60 s cold and under 20 s warm on 2 cores.

R's side of the same analysis (mice on the 52 columns with cart/lda/pmm/polr, m = 5, and one
``brm_multiple`` of the nested model, its Stan compile included) took 1,056 s + 417 s on this
project's machines; where R with mice and brms is installed, this script runs R's side too in the
same run (over half an hour; ``--no-r`` skips it), otherwise it prints those measured figures,
labelled as such.

    python benchmarks/bench_replicate.py [--no-r] [--sampler gibbs|nuts]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from common import REPO_ROOT, brms_preamble, print_table, ratio, rscript_available, run_rscript

R_MEASURED = {"mice (52 columns, cart/lda/pmm/polr, m = 5)": 1056.0, "brm_multiple (nested model, 5 imputations)": 417.0}

R_PIPELINE = r"""
raw <- read.csv(file.path("{data}"))
d <- raw
fac <- grep("choice|success|payoff|difficult", names(d), value = TRUE)
fac <- union(fac, c("sample","schoolid","classid","grit","task_ability","playedr1","alldiff","playedv2","inconsistent","male","risk","wealth"))
for (v in fac) d[[v]] <- factor(d[[v]])
levels(d$grit) <- c("control","intervention")
library(mice)
t0 <- proc.time()[["elapsed"]]
imp <- mice(d, m = 5, maxit = 5, defaultMethod = c("cart", "lda", "pmm", "polr"), seed = 1, printFlag = FALSE)
t_mice <- proc.time()[["elapsed"]] - t0
f <- mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit + (1 | schoolid/classid)
pr <- c(set_prior("normal(0, 10)", class = "Intercept"), set_prior("normal(0, 10)", class = "b"),
        set_prior("cauchy(0, 10)", class = "sd"), set_prior("cauchy(0, 10)", class = "sigma"))
t0 <- proc.time()[["elapsed"]]
fit <- brm_multiple(f, data = imp, prior = pr, chains = 4, iter = 2000, warmup = 1000, cores = 2, refresh = 0, seed = 1)
t_brm <- proc.time()[["elapsed"]] - t0
cat("TIMES", t_mice, t_brm, "\n")
"""


def run_engine(cache_dir: str, sampler: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(REPO_ROOT))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine", "replicate", "--quiet", "--sampler", sampler],
                   check=True, env=env, stdout=subprocess.DEVNULL, cwd=str(REPO_ROOT))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-r", action="store_true", help="do not run R's pipeline (over 30 minutes) even if installed")
    parser.add_argument("--sampler", default="gibbs", choices=("gibbs", "nuts"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="engine-numba-cache-") as cache:
        cold = run_engine(cache, args.sampler)
        warm = run_engine(cache, args.sampler)
    rows = [["engine replicate, cold (fresh Numba cache)", f"{cold:.1f}", "goal < 60 s"],
            ["engine replicate, warm", f"{warm:.1f}", "goal < 20 s"]]

    r_total = sum(R_MEASURED.values())
    r_label = "measured earlier on this project's machines"
    if not args.no_r and rscript_available(["mice", "brms"]):
        data = REPO_ROOT / "engine" / "data" / "Sample2_Data.csv"
        code = brms_preamble() + R_PIPELINE.replace("{data}", str(data))
        out, _ = run_rscript(code, timeout=4 * 3600)
        times = [float(x) for x in out.split("TIMES", 1)[1].split()[:2]]
        r_total = sum(times)
        r_label = "R run now, same machine"
        rows.append(["R mice (52 columns)", f"{times[0]:.1f}", r_label])
        rows.append(["R brm_multiple (nested, compile included)", f"{times[1]:.1f}", r_label])
    else:
        if not args.no_r:
            print("R with mice and brms is not installed here: printing the figures measured earlier.")
        for label, seconds in R_MEASURED.items():
            rows.append([f"R {label}", f"{seconds:.0f}", r_label])
    rows.append(["R pipeline total (mice + brm_multiple)", f"{r_total:.0f}", r_label])
    print_table(rows, ["what", "seconds", "note"])
    print(f"\nengine warm is {ratio(r_total, warm)} faster than R's pipeline; cold {ratio(r_total, cold)}.")


if __name__ == "__main__":
    main()
