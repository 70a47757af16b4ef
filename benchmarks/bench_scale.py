"""Fits from partitions (engine.partitioned) at 10^6, 10^7, 10^8 students, with peers.

Generates once, cached under --cache (default ~/.cache/engine-bench), Parquet datasets with the
study's three-level structure: about 29 students a class, 2.6 classes a school, a school-level
treatment, five student covariates (float32 / int32, zstd, 10^6 rows a file). Reports per size:

- partitioned engine.ols (p = 9): the pass times (pre-pass, QR pass, residual passes), rows/s;
- partitioned engine.brm, the nested Gibbs fit (1 | schoolid/classid), 4 chains x 2000: the pass
  time (pre-pass + cell pass + exact median/MAD) and the sampling time apart;
- partitioned engine.lmer of the same model (passes + optimisation);
- the peak resident set of any worker (ru_maxrss in the worker processes) after each fit;
- at the sizes that fit (--in-memory-max): in-memory engine.ols / engine.lmer and statsmodels OLS
  in the same run, and the largest gap between the partitioned and the in-memory numbers;
- lme4 1.1-31's lmer of the same model (timed inside R, the data handed over as CSV) at the sizes up
  to --lme4-max where R and lme4 are installed (--no-r skips), with engine's REML criterion minus
  lme4's. engine.lmer runs up to --lmer-max (default 10^7): the classes are nested in the schools,
  so its trailing block (every school intercept: 13,000 at 10^6 students, 133,000 at 10^7) is held
  and factored per school (engine.lmer._NESTED_BLOCKS), not as one dense 13,000^2 matrix (1.4 GB
  and a dense Cholesky per evaluation, which stopped the 10^6 fit before session 10).

    python benchmarks/bench_scale.py --sizes 1e6 1e7 [--cache DIR] [--workers 2] [--skip brm lmer]
                                     [--iter 2000]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

FORMULA = "score ~ treat + x1 + x2 + x3 + x4 + x5 + female + grade"   # p = 9
ROWS_PER_FILE = 1_000_000


def generate(n: int, cache: Path, seed: int = 1) -> Path:
    """The dataset of n students (cached: generated only when its folder is absent)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = cache / f"students_{n}"
    if (out / "_done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_class = max(1, round(n / 29))
    n_school = max(1, round(n_class / 2.6))
    school_treat = rng.integers(0, 2, n_school).astype(np.int32)
    school_effect = rng.normal(0, 0.3, n_school)
    class_effect = rng.normal(0, 0.2, n_class)
    start = 0
    for i in range(0, -(-n // ROWS_PER_FILE)):
        m = min(ROWS_PER_FILE, n - start)
        cls = (np.arange(start, start + m) * n_class // n).astype(np.int32)  # sorted by class
        sch = (cls.astype(np.int64) * n_school // n_class).astype(np.int32)
        x = rng.normal(size=(m, 5)).astype(np.float32)
        female = rng.integers(0, 2, m).astype(np.int32)
        grade = rng.integers(3, 5, m).astype(np.int32)
        score = (0.2 * school_treat[sch] + x @ np.array([0.3, -0.2, 0.1, 0.0, 0.05])
                 + 0.1 * female + school_effect[sch] + class_effect[cls]
                 + rng.normal(size=m)).astype(np.float32)
        table = pa.table({"schoolid": sch, "classid": cls, "treat": school_treat[sch],
                          **{f"x{j + 1}": x[:, j] for j in range(5)}, "female": female,
                          "grade": grade, "score": score})
        pq.write_table(table, out / f"part.{i:05d}.parquet", compression="zstd")
        start += m
    (out / "_done").touch()
    return out


def peak_worker_rss(client) -> float:
    """The largest resident set of any worker since start, in GiB (psutil, in the worker)."""
    def rss():
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return max(client.run(rss).values())


NESTED = "score ~ treat + x1 + x2 + x3 + x4 + x5 + female + (1 | schoolid/classid)"


def _brm_partitioned(path, chains=4, iter=2000, warmup=1000, seed=1):
    """(pass seconds, sampling seconds, draws) of engine.brm's Gibbs fit from partitions: the
    model from engine.partitioned.brm.prepare, the chains as engine.brm runs them."""
    import engine.brm as B
    from engine.multilevel import families
    from engine.partitioned.brm import prepare

    t = time.perf_counter()
    prepared = prepare(NESTED, str(path), None, sampler="gibbs", family=families.get_family("gaussian"))
    t_pass = time.perf_counter() - t
    t = time.perf_counter()
    options = B._sampler_options("gibbs", False, {}, "gaussian")
    seeds = np.random.SeedSequence(seed).spawn(chains)
    tasks = [("gibbs", prepared.model, iter, warmup, 1, s, options, "gaussian") for s in seeds]
    results = B._run_chains(tasks, None, False, "")
    draws = np.stack([r[0] for r in results])
    return t_pass, time.perf_counter() - t, draws, prepared


def _lme4_line(path, fit) -> str:
    """lme4's REML fit of NESTED on the dataset at ``path`` (timed inside R around lmer() only) and,
    given engine's partitioned ``fit``, engine's criterion minus lme4's."""
    import tempfile

    from common import rscript_available, run_rscript

    if not rscript_available(["lme4"]):
        return "lme4: not installed (R package lme4), skipped"
    frame = pd.read_parquet(path, columns=["score", "treat", "x1", "x2", "x3", "x4", "x5", "female",
                                           "schoolid", "classid"])
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "data.csv")
        # the files' float32 values as exact doubles: float32's short decimal form read by R is a
        # different number (it moved lme4's criterion by 5e-6 at 10^5 rows)
        frame.astype({c: "float64" for c in frame.columns if frame[c].dtype == np.float32}).to_csv(
            csv, index=False, float_format="%.17g")
        code = (f'suppressMessages(library(lme4)); d <- read.csv("{csv}"); '
                "d$schoolid <- factor(d$schoolid); d$classid <- factor(d$classid); "
                f"t <- proc.time()[['elapsed']]; m <- lmer({NESTED}, data = d); "
                "cat(proc.time()[['elapsed']] - t, sprintf('%.10f', REMLcrit(m)), '\\n')")
        out, _ = run_rscript(code, timeout=3600)
    seconds, crit = (float(v) for v in out.split()[-2:])
    line = f"lme4 lmer (REML, in R's memory) {seconds:.2f}s ({len(frame) / seconds:,.0f} rows/s)"
    if fit is not None:
        line += f"; engine's criterion minus lme4's {fit.criterion - crit:+.1e}"
    return line


def main() -> None:
    import warnings

    import engine
    from distributed import Client, LocalCluster

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/engine-bench"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="2GiB")
    ap.add_argument("--in-memory-max", type=float, default=1e6)
    ap.add_argument("--skip", nargs="*", default=[], choices=["ols", "brm", "lmer"])
    ap.add_argument("--iter", type=int, default=2000, help="brm iterations per chain (half warm-up)")
    ap.add_argument("--lmer-max", type=float, default=1e7, help="largest n for engine.lmer")
    ap.add_argument("--lme4-max", type=float, default=1e6, help="largest n for the lme4 peer")
    ap.add_argument("--no-r", action="store_true", help="skip the lme4 peer")
    args = ap.parse_args()
    cache = Path(args.cache)
    warnings.simplefilter("ignore")
    print(f"load average: {os.getloadavg()}", flush=True)
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # compile the kernels in the workers first (compile time apart)
        small = generate(10_000, cache)
        engine.ols(FORMULA, str(small))
        _brm_partitioned(small, chains=1, iter=20, warmup=10)
        engine.lmer(NESTED, str(small))
        for size in args.sizes:
            n = int(size)
            t = time.perf_counter()
            path = generate(n, cache)
            print(f"n={n:.0e}: generate/cached {time.perf_counter() - t:.1f}s; load {os.getloadavg()}",
                  flush=True)
            df = pd.read_parquet(path) if n <= args.in_memory_max else None
            if "ols" not in args.skip:
                t = time.perf_counter()
                fit = engine.ols(FORMULA, str(path))
                wall = time.perf_counter() - t
                line = (f"  partitioned ols {wall:.2f}s ({n / wall:,.0f} rows/s; prepass "
                        f"{fit.timings['prepass']:.2f}s, qr pass {fit.timings['qr_pass']:.2f}s, residual "
                        f"pass(es) {fit.timings['residual_passes']:.2f}s; {fit.n_passes} passes over the rows); "
                        f"peak worker RSS "
                        f"{peak_worker_rss(client):.2f} GiB")
                if df is not None:
                    import statsmodels.api as sm

                    t = time.perf_counter()
                    mem = engine.ols(FORMULA, df)
                    t_mem = time.perf_counter() - t
                    t = time.perf_counter()
                    sm.OLS(mem.model_frame.y, mem.model_frame.X).fit()
                    t_sm = time.perf_counter() - t
                    gap = float(np.max(np.abs(mem.params.to_numpy() - fit.params.to_numpy())))
                    line += (f"\n    in-memory engine.ols {t_mem:.2f}s, statsmodels OLS (design given) "
                             f"{t_sm:.2f}s; max |beta gap| {gap:.1e}")
                print(line, flush=True)
            if "brm" not in args.skip:
                t_pass, t_sample, draws, prepared = _brm_partitioned(path, iter=args.iter, warmup=args.iter // 2)
                line = (f"  partitioned brm (Gibbs 4 x {args.iter}, {prepared.model.n_cells} cells, "
                        f"{prepared.model.n_levels_total} levels): passes {t_pass:.2f}s ({n / t_pass:,.0f} "
                        f"rows/s), sampling {t_sample:.2f}s; peak worker RSS {peak_worker_rss(client):.2f} GiB")
                if df is not None:
                    t = time.perf_counter()
                    mem = engine.brm(NESTED, df, seed=1, iter=args.iter, warmup=args.iter // 2)
                    t_mem = time.perf_counter() - t
                    gap = float(np.max(np.abs(mem.draws_values - draws)))
                    line += f"\n    in-memory engine.brm {t_mem:.2f}s; max |draw gap| {gap:.1e}"
                print(line, flush=True)
            if "lmer" in args.skip:
                pass
            elif n > args.lmer_max:
                print(f"  partitioned lmer skipped above --lmer-max {args.lmer_max:.0e}", flush=True)
            else:
                t = time.perf_counter()
                fit = engine.lmer(NESTED, str(path))
                wall = time.perf_counter() - t
                line = (f"  partitioned lmer {wall:.2f}s ({n / wall:,.0f} rows/s); peak worker RSS "
                        f"{peak_worker_rss(client):.2f} GiB")
                if df is not None:
                    t, c = time.perf_counter(), time.process_time()
                    mem = engine.lmer(NESTED, df)
                    t_mem, c_mem = time.perf_counter() - t, time.process_time() - c
                    gap = float(np.max(np.abs(mem.theta / fit.theta - 1)))
                    line += (f"\n    in-memory engine.lmer {t_mem:.2f}s ({c_mem:.2f} CPU s); max relative theta "
                             f"gap {gap:.1e}")
                print(line, flush=True)
            if "lmer" not in args.skip and not args.no_r and n <= args.lme4_max:
                print("  " + _lme4_line(path, fit if n <= args.lmer_max else None), flush=True)
            del df


if __name__ == "__main__":
    main()
