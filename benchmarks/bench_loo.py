"""Benchmark: engine.loo vs R loo 2.5.1 (``relative_eff(exp(ll), chain_id)`` then ``loo(ll, r_eff)``,
as brms' ``loo()`` does) on one log-likelihood array of 4 chains x 1000 draws x N observations.

Data: a normal model's pointwise log-likelihood ``log N(y_i | mu_s, sigma_s)`` under AR(1)-correlated
posterior draws of (mu, log sigma), with a few outlying y so that some Pareto k are high. Engine
gets the (chains, draws, N) array; R gets the same numbers as a (draws, N) matrix read from a
binary file. R's time is measured inside R (``proc.time()`` around relative_eff + loo only; start-up,
reading excluded): wall and CPU (user + system) seconds; engine's CPU seconds are the process's
(``time.process_time``, all threads), steadier than wall time on a shared machine. To fit in this machine's memory (R needs several copies of the matrix) R works
through the observations in blocks of ``--r-block`` columns and its per-block times are summed; loo's
work is per observation, so this is the same work (R's own per-call overhead, a few ms a block, is
included). engine's first call (Numba cache load or compile) is reported apart; engine is timed with
all Numba threads and with one. The largest relative difference of the pointwise elpd_loo and of k
between the two is printed.

    python benchmarks/bench_loo.py [--obs 100000] [--draws 1000] [--chains 4] [--r-block 10000] [--no-r]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numba
import numpy as np
from common import print_table, r_package_versions, ratio, rscript_available, run_rscript

import engine
from engine.errors import ImportanceSamplingWarning


def simulate(chains: int, draws: int, n_obs: int, seed: int = 20261202) -> np.ndarray:
    """(chains, draws, n_obs) log-likelihoods, built in blocks of observations (memory)."""
    rng = np.random.default_rng(seed)
    phi = 0.3
    z = np.empty((chains, draws, 2))
    z[:, 0] = rng.normal(size=(chains, 2))
    e = rng.normal(size=(chains, draws, 2)) * np.sqrt(1 - phi**2)
    for t in range(1, draws):
        z[:, t] = phi * z[:, t - 1] + e[:, t]
    mu = 0.02 * z[..., 0]  # posterior of a mean from ~2,500 observations
    log_sigma = 0.015 * z[..., 1]
    sigma = np.exp(log_sigma)
    y = rng.normal(size=n_obs)
    y[rng.random(n_obs) < 0.001] *= 6.0  # a few outliers
    out = np.empty((chains, draws, n_obs))
    block = 10_000
    for lo in range(0, n_obs, block):
        yy = y[lo : lo + block]
        out[:, :, lo : lo + block] = (
            -0.5 * np.log(2 * np.pi) - log_sigma[..., None] - 0.5 * ((yy - mu[..., None]) / sigma[..., None]) ** 2
        )
    return out


def write_for_r(arr: np.ndarray, path: str) -> None:
    """Column-major (draws, N) doubles: observation by observation, draws chain-major."""
    chains, draws, n_obs = arr.shape
    flat = arr.reshape(chains * draws, n_obs)
    with open(path, "wb") as handle:
        for lo in range(0, n_obs, 5_000):
            np.ascontiguousarray(flat[:, lo : lo + 5_000].T).tofile(handle)


R_CODE = """
suppressMessages(library(loo))
S <- {S}; N <- {N}; B <- {B}
chain <- rep(seq_len({C}), each = {D})
con <- file("{path}", "rb")
secs <- 0; cpu <- 0; elpd <- numeric(0); k <- numeric(0)
for (lo in seq(1, N, by = B)) {{
  nb <- min(B, N - lo + 1)
  ll <- matrix(readBin(con, "double", S * nb), S, nb)
  t0 <- proc.time()
  reff <- relative_eff(exp(ll), chain_id = chain)
  lo_ <- suppressWarnings(loo(ll, r_eff = reff))
  t1 <- proc.time()
  secs <- secs + t1[["elapsed"]] - t0[["elapsed"]]
  cpu <- cpu + sum(t1[c("user.self", "sys.self")]) - sum(t0[c("user.self", "sys.self")])
  elpd <- c(elpd, lo_$pointwise[, "elpd_loo"]); k <- c(k, lo_$diagnostics$pareto_k)
  rm(ll, lo_); invisible(gc())
}}
close(con)
writeBin(c(elpd, k), "{out}")
cat(sprintf("R_SECONDS %.6f R_CPU %.6f\\n", secs, cpu))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--obs", type=int, default=100_000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--r-block", type=int, default=10_000)
    parser.add_argument("--no-r", action="store_true")
    args = parser.parse_args()

    arr = simulate(args.chains, args.draws, args.obs)
    print(f"log-likelihood array {arr.shape} ({arr.nbytes / 2**30:.2f} GiB); Numba threads: {numba.get_num_threads()}")

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportanceSamplingWarning)
            return engine.loo(arr)

    def timed():
        w0, c0 = time.perf_counter(), time.process_time()
        out = run()
        return out, time.perf_counter() - w0, time.process_time() - c0

    t0 = time.perf_counter()
    engine.loo(arr[:, :, :64], r_eff=1.0)  # first call: Numba cache load / compile
    first = time.perf_counter() - t0
    result, steady, steady_cpu = timed()
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    _, single, single_cpu = timed()
    numba.set_num_threads(threads)
    rows = [
        ["engine.loo (first call on 64 obs: cache load/compile)", first, "", "", ""],
        [f"engine.loo ({threads} threads)", steady, "", steady_cpu, ""],
        ["engine.loo (1 thread)", single, "", single_cpu, ""],
    ]
    k = result.pareto_k
    print(f"Pareto k: max {k.max():.3f}; > 0.5: {(k > 0.5).sum()}, > 0.7: {(k > 0.7).sum()}")

    if not args.no_r and rscript_available(["loo"]):
        versions = r_package_versions(["loo"])
        with tempfile.TemporaryDirectory() as tmp:
            path, out = os.path.join(tmp, "ll.bin"), os.path.join(tmp, "out.bin")
            write_for_r(arr, path)
            code = R_CODE.format(S=args.chains * args.draws, N=args.obs, B=args.r_block, C=args.chains,
                                 D=args.draws, path=path, out=out)
            stdout, _ = run_rscript(code, timeout=24 * 3600)
            r_secs = float(stdout.split("R_SECONDS")[1].split()[0])
            r_cpu = float(stdout.split("R_CPU")[1].split()[0])
            back = np.fromfile(out)
        r_elpd, r_k = back[: args.obs], back[args.obs :]
        d_elpd = np.max(np.abs(result.pointwise["elpd_loo"].to_numpy() - r_elpd) / np.abs(r_elpd))
        fin = np.isfinite(r_k)
        d_k = np.max(np.abs(k[fin] - r_k[fin]) / np.abs(r_k[fin]))
        rows.append([f"R loo {versions.get('loo', '?')} (1 core, inside R)", r_secs, "", r_cpu, ""])
        for row, wall, cpu in ((rows[1], steady, steady_cpu), (rows[2], single, single_cpu)):
            row[2] = ratio(r_secs, wall)
            row[4] = ratio(r_cpu, cpu)
        print(f"largest relative difference engine vs R: elpd_loo {d_elpd:.2e}, pareto_k {d_k:.2e}")
    else:
        print("R with loo not available (or --no-r): engine only")
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print_table(rows, ["run", "wall s", "R / engine (wall)", "CPU s", "R / engine (CPU)"])


if __name__ == "__main__":
    main()
