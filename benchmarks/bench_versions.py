"""Two commits of engine side by side in one run: is the newer one slower?

    python benchmarks/bench_versions.py OLD_REF [NEW_REF] [--rounds 5] [--only NAME ...]

Each commit is checked out into its own temporary git worktree (its Numba cache stays there), and
every workload runs in a fresh child process with ``PYTHONPATH`` pointing at that worktree. A child
calls the workload once untimed (compilation or cache loading, reported apart as ``first``), then
``repeat`` times timed. The two commits alternate within each round (old first in odd rounds, new
first in even ones) so that a change in the machine's load falls on both; the table gives each
commit's best time over all rounds and the ratio new / old (above 1: the new commit is slower).

The workloads use only the public API that both commits have (``engine.ols``, ``engine.mice``,
``engine.brm`` with the three samplers of the random-intercept model, ``summarise_draws``), on the
study's data as the replication uses it. Nothing here is a peer comparison: the other scripts in
this folder compare engine with R and statsmodels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO_ROOT, print_table

# name -> (setup code, timed statement, repeats). The setup runs once per child process.
_STUDY = (
    "import warnings, numpy as np, engine\n"
    "from engine.datasets import load_grit\n"
    "warnings.simplefilter('ignore')\n"
    "data = load_grit()\n"
)
_NESTED = (
    _STUDY
    + "cols = ['mathscore2', 'grit', 'mathscore1', 'male', 'raven', 'schoolid', 'classid']\n"
    "nested = data[cols].dropna()\n"
    "formula = 'mathscore2 ~ grit + mathscore1 + male + raven + (1 | schoolid/classid)'\n"
)
WORKLOADS: dict[str, tuple[str, str, int]] = {
    "ols study (factors)": (
        _STUDY,
        "engine.ols('mathscore2 ~ grit + male + raven + mathscore1 + csize + factor(schoolid)', data)",
        200,
    ),
    "ols numeric 200,000 x 50": (
        "import numpy as np, pandas as pd, engine\n"
        "rng = np.random.default_rng(1)\n"
        "X = rng.standard_normal((200_000, 50))\n"
        "frame = pd.DataFrame(X, columns=[f'x{j}' for j in range(50)])\n"
        "frame['y'] = X @ rng.standard_normal(50) + rng.standard_normal(200_000)\n"
        "formula = 'y ~ ' + ' + '.join(f'x{j}' for j in range(50))\n",
        "engine.ols(formula, frame)",
        5,
    ),
    "mice 12 columns m=5 maxit=5": (
        _STUDY
        + "vars12 = ['mathscore1', 'mathscore2', 'mathscore3', 'male', 'raven', 'csize',"
        " 'belief_survey1', 'grit', 'grit_survey1', 'age', 'wealth', 'schoolid']\n"
        "sub = data[vars12]\n",
        "engine.mice(sub, m=5, maxit=5, method={'wealth': 'polyreg'}, seed=4387510)",
        5,
    ),
    "brm gibbs nested 4 x 2000": (
        _NESTED,
        "engine.brm(formula, nested, sampler='gibbs', chains=4, iter=2000, warmup=1000, seed=11)",
        3,
    ),
    "brm nuts nested 4 x 1000": (
        _NESTED,
        "engine.brm(formula, nested, sampler='nuts', chains=4, iter=1000, warmup=500, seed=11)",
        2,
    ),
    "brm collapsed nuts nested 4 x 1000": (
        _NESTED,
        "engine.brm(formula, nested, sampler='nuts', marginalize=True, chains=4, iter=1000,"
        " warmup=500, seed=11)",
        3,
    ),
    "summarise_draws 4 x 1000 x 80": (
        "import numpy as np\n"
        "from engine.diagnostics import summarise_draws\n"
        "draws = np.random.default_rng(3).standard_normal((4, 1000, 80)).cumsum(axis=1) * 0.05\n"
        "names = [f'p{j}' for j in range(80)]\n",
        "summarise_draws(draws, names)",
        10,
    ),
}

# ``clock`` is time.perf_counter (wall) or time.process_time (CPU seconds of all the process's threads:
# on a loaded machine it leaves out the time spent waiting for a core, which wall time cannot).
_CHILD = """
import json, time
{setup}
clock = time.{clock}
t0 = clock(); {stmt}; first = clock() - t0
times = []
for _ in range({repeat}):
    t0 = clock(); {stmt}; times.append(clock() - t0)
print('BENCH-RESULT ' + json.dumps({{'first': first, 'times': times}}))
"""


def worktree_for(ref: str, root: Path) -> Path:
    """A detached worktree of ``ref`` under ``root`` (reused when it is already there)."""
    sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", ref], capture_output=True,
                         text=True, check=True).stdout.strip()
    path = root / f"engine-{sha[:10]}"
    if not path.exists():
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(path), sha],
                       capture_output=True, check=True)
    return path


def run_child(tree: Path, name: str, nice: int, clock: str = "wall") -> dict:
    setup, stmt, repeat = WORKLOADS[name]
    clock_function = {"wall": "perf_counter", "cpu": "process_time"}[clock]
    code = _CHILD.format(setup=setup, stmt=stmt, repeat=repeat, clock=clock_function)
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, "-c", code]
    if nice:
        command = ["nice", "-n", str(nice)] + command
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(tree))
    for line in done.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            return json.loads(line[len("BENCH-RESULT "):])
    raise RuntimeError(f"{name} in {tree} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, help="workload names (substring match)")
    parser.add_argument("--worktrees", default=tempfile.gettempdir(),
                        help="folder for the two worktrees (kept, so a rerun reuses their caches)")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the children at this nice value (negative needs root: it keeps "
                             "other work on the machine from landing on one commit's timings)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or CPU time of the child's threads (steadier on a shared "
                             "machine; for multi-threaded work it is the total over threads)")
    args = parser.parse_args()

    root = Path(args.worktrees)
    trees = {"old": worktree_for(args.old, root), "new": worktree_for(args.new, root)}
    names = [n for n in WORKLOADS if not args.only or any(s in n for s in args.only)]
    results = {(n, side): [] for n in names for side in trees}
    firsts = {(n, side): [] for n in names for side in trees}
    for round_number in range(args.rounds):
        order = ("old", "new") if round_number % 2 == 0 else ("new", "old")
        for name in names:
            for side in order:
                out = run_child(trees[side], name, args.nice, args.clock)
                results[(name, side)].extend(out["times"])
                firsts[(name, side)].append(out["first"])
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"old = {args.old} ({trees['old'].name}), new = {args.new} ({trees['new'].name}), "
          f"{args.rounds} rounds, {args.clock} clock, load average {os.getloadavg()[0]:.1f} at the end")
    rows = []
    for name in names:
        old, new = results[(name, "old")], results[(name, "new")]
        rows.append([
            name,
            f"{min(old):.4f}", f"{min(new):.4f}", f"{min(new) / min(old):.3f}",
            f"{statistics.median(new) / statistics.median(old):.3f}",
            f"{min(firsts[(name, 'old')]):.2f} / {min(firsts[(name, 'new')]):.2f}",
        ])
    print_table(rows, ["workload", "old best s", "new best s", "new/old best", "new/old median",
                       "first call s (old / new)"])


if __name__ == "__main__":
    main()
