"""Min bulk ESS per CPU second of engine's three samplers on a nested random-slopes model (issue 12):
``y ~ x + (1 + x | s/c)`` on the simulated unbalanced designs of tests/test_collapsed_nested_slopes.py
(``simulate``; 12 schools / 308 rows and 60 schools / 2,917 rows), collapsed NUTS (``marginalize=True``),
the non-centred NUTS and the Gibbs sampler, interleaved per round; round 0 compiles and is not counted.
The CPU time (``time.process_time``) is that of the whole ``engine.brm`` call; the ESS is the smallest
bulk ESS over b_, sd_, cor_ and sigma. No peer (brms is not needed).

    python benchmarks/bench_nested_slopes.py [--rounds 3] [--iter 2000]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import engine  # noqa: E402
from engine import diagnostics  # noqa: E402
from test_collapsed_nested_slopes import simulate  # noqa: E402

FORMULA = "y ~ x + (1 + x | s/c)"
SAMPLERS = [("collapsed NUTS", dict(sampler="nuts", marginalize=True)), ("non-centred NUTS", dict(sampler="nuts")),
            ("Gibbs", dict(sampler="gibbs"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iter", type=int, default=2000, help="iterations per chain (half warm-up), 2 chains")
    args = parser.parse_args()
    designs = {"12 schools": simulate(11, n_outer=12, inner=(3, 7), rows=(3, 9)),
               "60 schools": simulate(12, n_outer=60, inner=(3, 9), rows=(3, 15))}
    for label, data in designs.items():
        print(f"{label}: {len(data)} rows, {data['c'].nunique()} classes, {FORMULA}, 2 chains x {args.iter}")
        results = {name: [] for name, _ in SAMPLERS}
        for round_ in range(args.rounds + 1):
            for name, options in SAMPLERS:
                start = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit = engine.brm(FORMULA, data, chains=2, iter=args.iter, warmup=args.iter // 2,
                                     seed=100 + round_, **options)
                cpu = time.process_time() - start
                if round_:
                    x = fit.draws_values
                    ess = min(diagnostics.ess_bulk(x[:, :, i]) for i in range(x.shape[2]))
                    results[name].append((ess / cpu, ess, cpu, fit.divergences or 0))
        for name, rows in results.items():
            r = np.array(rows)
            print(f"  {name:17s} ESS/CPU s best {r[:, 0].max():8.1f} median {np.median(r[:, 0]):8.1f}"
                  f"   min ESS median {np.median(r[:, 1]):6.0f}   CPU s median {np.median(r[:, 2]):6.2f}"
                  f"   divergences {int(r[:, 3].sum())}")


if __name__ == "__main__":
    main()
