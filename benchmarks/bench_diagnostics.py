"""Benchmark: engine.diagnostics.summarise_draws vs R posterior::summarise_draws.

Same draws for both (AR(1) chains with varied autocorrelation, written to a temporary CSV):
mean, sd, 2.5% / 97.5% quantiles, R-hat, bulk and tail ESS for every parameter. R's time is
measured inside R (``proc.time()`` around the summary only, start-up and CSV reading excluded);
engine's first call is reported apart from the steady state. The largest relative difference
between the two tables is printed too.

    python benchmarks/bench_diagnostics.py [--chains 4] [--draws 1000] [--params 80]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile

import numpy as np
import pandas as pd
from common import (
    compile_and_run_times,
    print_table,
    r_package_versions,
    ratio,
    rscript_available,
    run_rscript,
)

from engine.diagnostics import summarise_draws


def simulate(chains: int, draws: int, params: int, seed: int = 20261130) -> np.ndarray:
    """AR(1) chains (chains, draws, params), autocorrelation from 0 to 0.95 across parameters."""
    rng = np.random.default_rng(seed)
    rho = np.linspace(0.0, 0.95, params)
    x = np.empty((chains, draws, params))
    x[:, 0] = rng.normal(size=(chains, params))
    noise = rng.normal(size=(chains, draws, params)) * np.sqrt(1.0 - rho**2)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    return x


R_CODE = """
suppressPackageStartupMessages(library(posterior))
wide <- read.csv("{path}", check.names = FALSE)
arr <- array(as.matrix(wide[, -(1:2)]), dim = c({draws}, {chains}, {params}),
             dimnames = list(NULL, NULL, names(wide)[-(1:2)]))
d <- as_draws_array(arr)
f <- function() summarise_draws(d, "mean", "sd", ~quantile(.x, c(0.025, 0.975)), "rhat", "ess_bulk", "ess_tail")
best <- Inf
for (i in 1:{repeat}) {{ t0 <- proc.time()[["elapsed"]]; s <- f(); best <- min(best, proc.time()[["elapsed"]] - t0) }}
cat("SECONDS", best, "\\n")
s <- as.data.frame(lapply(as.data.frame(s), function(c) if (is.character(c)) c else as.numeric(c)), check.names = FALSE)
write.csv(s, stdout(), row.names = FALSE)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--params", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    draws = simulate(args.chains, args.draws, args.params)
    names = [f"theta[{j + 1}]" for j in range(args.params)]
    times = compile_and_run_times(summarise_draws, draws, names, repeat=args.repeat)
    ours = times.result
    rows = [
        {
            "implementation": "engine summarise_draws",
            "seconds": times.steady_s,
            "first call s": times.first_s,
            "vs R": "",
        }
    ]
    print(f"draws: {args.chains} chains x {args.draws} draws x {args.params} parameters\n")
    if rscript_available(["posterior"]):
        versions = r_package_versions(["posterior"])
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "draws.csv")
            # rows chain by chain, iterations within: R fills (draws, chains, params) from it
            wide = pd.DataFrame(draws.reshape(args.chains * args.draws, args.params), columns=names)
            wide.insert(0, ".chain", np.repeat(np.arange(1, args.chains + 1), args.draws))
            wide.insert(1, ".iteration", np.tile(np.arange(1, args.draws + 1), args.chains))
            wide.to_csv(path, index=False, float_format="%.17g")
            stdout, _ = run_rscript(
                R_CODE.format(path=path, draws=args.draws, chains=args.chains, params=args.params, repeat=args.repeat),
                timeout=600,
            )
        seconds_line, _, table = stdout.partition("\n")
        r_seconds = float(seconds_line.split()[1])
        theirs = pd.read_csv(io.StringIO(table)).set_index("variable")
        theirs = theirs.rename(columns={"2.5%": "q2.5", "97.5%": "q97.5"})
        columns = ["mean", "sd", "q2.5", "q97.5", "rhat", "ess_bulk", "ess_tail"]
        diff = (ours[columns] - theirs.loc[ours.index, columns]).abs() / theirs.loc[ours.index, columns].abs()
        rows.append(
            {
                "implementation": f"R posterior {versions.get('posterior', '?')} summarise_draws",
                "seconds": r_seconds,
                "first call s": None,
                "vs R": "",
            }
        )
        rows[0]["vs R"] = ratio(r_seconds, times.steady_s) + " faster"
        print_table(rows, ["implementation", "seconds", "first call s", "vs R"])
        print(f"\nlargest relative difference engine vs posterior: {np.nanmax(diff.to_numpy()):.2e}")
    else:
        print_table(rows, ["implementation", "seconds", "first call s", "vs R"])
        print("\nR with posterior not installed: peer comparison skipped (Debian: r-cran-posterior)")


if __name__ == "__main__":
    main()
