"""engine.ols from partitions (engine.partitioned) at 10^6, 10^7, 10^8 students, with peers.

Generates once, cached under --cache (default ~/.cache/engine-bench), Parquet datasets with the
study's three-level structure: about 29 students a class, 2.6 classes a school, a school-level
treatment, five student covariates (float32 / int32, zstd). Reports per size the pass time
(levels pre-pass + QR pass + residual passes), rows per second, the peak memory of a worker
(resident set, sampled) and, at the sizes that fit, in-memory engine.ols and statsmodels OLS in the
same run with the ratio.

Not yet here: the nested Gibbs fit from partitions (engine.brm on a Dask frame) and lme4; see the
dask section of benchmarks/README.md.

    python benchmarks/bench_scale.py --sizes 1e6 1e7 [--cache DIR] [--workers 2]
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


def main() -> None:
    import engine
    from distributed import Client, LocalCluster

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/engine-bench"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="2GiB")
    ap.add_argument("--in-memory-max", type=float, default=1e7)
    args = ap.parse_args()
    cache = Path(args.cache)
    print(f"load average: {os.getloadavg()}")
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # compile the kernels in the workers first (compile time apart)
        small = generate(10_000, cache)
        engine.ols(FORMULA, str(small))
        client.run(lambda: __import__("engine.ols"))
        for size in args.sizes:
            n = int(size)
            t = time.perf_counter()
            path = generate(n, cache)
            gen = time.perf_counter() - t
            t = time.perf_counter()
            fit = engine.ols(FORMULA, str(path))
            wall = time.perf_counter() - t
            line = (f"n={n:.0e} generate/cached {gen:.1f}s  partitioned ols {wall:.2f}s "
                    f"({n / wall:,.0f} rows/s; prepass {fit.timings['prepass']:.2f}s, qr pass "
                    f"{fit.timings['qr_pass']:.2f}s, residual passes "
                    f"{fit.timings['residual_passes']:.2f}s)  peak worker RSS "
                    f"{peak_worker_rss(client):.2f} GiB")
            if n <= args.in_memory_max:
                import statsmodels.api as sm

                df = pd.read_parquet(path)
                t = time.perf_counter()
                mem = engine.ols(FORMULA, df)
                t_mem = time.perf_counter() - t
                X = mem.model_frame.X
                t = time.perf_counter()
                sm.OLS(mem.model_frame.y, X).fit()
                t_sm = time.perf_counter() - t
                gap = float(np.max(np.abs(mem.params.to_numpy() - fit.params.to_numpy())))
                line += (f"\n    in-memory engine.ols {t_mem:.2f}s, statsmodels OLS (design "
                         f"given) {t_sm:.2f}s, statsmodels/partitioned {t_sm / wall:.2f}x; "
                         f"max |beta gap| {gap:.1e}")
                del df, mem, X
            print(line, flush=True)


if __name__ == "__main__":
    main()
