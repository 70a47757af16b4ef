"""Robust covariances for OLS: engine vs statsmodels and R's sandwich / clubSandwich, same data.

    python benchmarks/bench_robust.py                  # n = 200,000, k = 10, 1,000 x 40 clusters
    python benchmarks/bench_robust.py --n 20000 --clusters 200

One simulated design (seed 1): an intercept and k - 1 normal columns with a cluster-level shift,
y with a cluster effect and heteroskedastic noise; clusters `g` (``--clusters``) and a crossed
second dimension `h` (40 levels). Every method fits the same rows (R reads them from a CSV written
first; R's timing, taken inside R with proc.time(), excludes reading). Each row gives the wall
seconds of the fit plus the covariance (engine: ``ols(formula, data, vcov=, cluster=)``;
statsmodels: ``OLS(y, X).fit(cov_type=...)`` on arrays; R: ``lm`` then ``vcovHC``/``vcovCL``/
``vcovCR``), the ratio peer / engine (above 1: engine faster) and the largest relative difference
of the standard errors from engine's. Numba compile time (first call, cache load included) is
reported apart. One run each; timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd

from common import print_table, ratio, rscript_available, run_rscript  # noqa: F401

import engine  # noqa: E402


def simulate(n: int, k: int, clusters: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, clusters, n)
    h = rng.integers(0, 40, n)
    X = rng.normal(size=(n, k - 1)) + 0.5 * rng.normal(size=(clusters, k - 1))[g]
    y = X @ np.linspace(0.5, -0.5, k - 1) + rng.normal(size=clusters)[g] + rng.normal(size=n) * (1 + np.abs(X[:, 0]))
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(1, k)])
    frame["y"] = y
    frame["g"] = g
    frame["h"] = h
    return frame


CASES = (  # label, engine kwargs, statsmodels cov_type / kwds, R expression
    ("HC3", {"vcov": "HC3"}, ("HC3", {}), 'vcovHC(m, type = "HC3")'),
    ("CR1 by g", {"cluster": "g"}, ("cluster", "g"), "vcovCL(m, cluster = d$g, type = \"HC1\")"),
    ("CR1 two-way g, h", {"cluster": ["g", "h"]}, ("cluster", "gh"), "vcovCL(m, cluster = d[, c(\"g\", \"h\")], type = \"HC1\")"),
    ("CR2 by g", {"vcov": "CR2", "cluster": "g"}, None, 'clubSandwich::vcovCR(m, cluster = d$g, type = "CR2")'),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=1000)
    args = parser.parse_args()
    data = simulate(args.n, args.k, args.clusters)
    formula = "y ~ " + " + ".join(f"x{j}" for j in range(1, args.k))
    print(f"n = {args.n:,}, k = {args.k}, clusters g = {args.clusters}, h = 40; formula {formula}")

    small = data.iloc[:500]
    t0 = time.perf_counter()
    for _, kwargs, _, _ in CASES:
        engine.ols(formula, small, **kwargs)
    print(f"engine first calls on 500 rows (Numba compile or cache load included): "
          f"{time.perf_counter() - t0:.2f} s")

    results = {}
    rows = []
    for label, kwargs, sm_spec, _ in CASES:
        t0 = time.perf_counter()
        fit = engine.ols(formula, data, **kwargs)
        seconds = time.perf_counter() - t0
        results[label] = (fit.bse.to_numpy(), seconds)
        rows.append([label, "engine ols", f"{seconds:.3f}", "1.0x", "-",
                     f"{fit.timings.get('robust_vcov', float('nan')):.3f}"])

    try:
        import statsmodels.api as sm

        X = np.column_stack([np.ones(len(data))] + [data[f"x{j}"].to_numpy() for j in range(1, args.k)])
        y = data["y"].to_numpy()
        for label, _, sm_spec, _ in CASES:
            if sm_spec is None:
                continue
            cov_type, spec = sm_spec
            kwds = {}
            if spec == "g":
                kwds = {"groups": data["g"].to_numpy()}
            elif spec == "gh":
                kwds = {"groups": np.column_stack([data["g"].to_numpy(), data["h"].to_numpy()])}
            t0 = time.perf_counter()
            res = sm.OLS(y, X).fit(cov_type=cov_type, cov_kwds=kwds or None)
            seconds = time.perf_counter() - t0
            bse, eng = results[label]
            rows.append([label, "statsmodels", f"{seconds:.3f}", ratio(seconds, eng),
                         f"{np.max(np.abs(res.bse / bse - 1)):.1e}", ""])
    except ImportError:
        print("statsmodels not installed: skipped")

    if rscript_available(("sandwich", "clubSandwich")):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "d.csv")
            data.to_csv(path, index=False)
            lines = [f'suppressMessages({{library(sandwich); library(clubSandwich)}}); d <- read.csv("{path}")']
            for index, (label, _, _, expr) in enumerate(CASES):
                lines.append(
                    f"t <- proc.time()[['elapsed']]; m <- lm({formula}, data = d); V <- {expr}; "
                    f"s <- proc.time()[['elapsed']] - t; "
                    f"cat('CASE {index}', s, sprintf('%.17g', sqrt(diag(as.matrix(V)))), '\\n')")
            stdout, _ = run_rscript("\n".join(lines), timeout=3000)
        for line in stdout.splitlines():
            if not line.startswith("CASE"):
                continue
            parts = line.split()
            label = CASES[int(parts[1])][0]
            seconds = float(parts[2])
            se = np.array([float(v) for v in parts[3:]])
            bse, eng = results[label]
            rows.append([label, "R lm + sandwich" if "CR2" not in label else "R lm + clubSandwich",
                         f"{seconds:.3f}", ratio(seconds, eng), f"{np.max(np.abs(se / bse - 1)):.1e}", ""])
    else:
        print("Rscript with sandwich and clubSandwich not available: R skipped")

    rows.sort(key=lambda r: [c[0] for c in CASES].index(r[0]))
    print_table(rows, ["covariance", "method", "seconds", "peer/engine", "max rel SE diff",
                       "engine vcov part s"])


if __name__ == "__main__":
    main()
