"""Benchmark: engine.lmer vs lme4 1.1-31 (timed inside R) and statsmodels MixedLM, in one run.

Models (REML): Dyestuff ``Yield ~ 1 + (1 | Batch)``, Penicillin ``diameter ~ 1 + (1 | plate) +
(1 | sample)`` (crossed), Pastes ``strength ~ 1 + (1 | batch/cask)`` (nested), sleepstudy
``Reaction ~ Days + (Days | Subject)``, the study's model 1 + ``(1 | schoolid/classid)``, Exam
``normexam ~ standLRT + (1 + standLRT | school)`` and InstEval ``y ~ 1 + service + (1 | s) + (1 | d) +
(1 | dept:service)``. Then a scaling table in N (simulated random-slope design, 200 groups).

engine: the first call (Numba cache load or compile) is reported apart; steady state is the best of
``--repeat`` calls. lme4: median of the same number of fits inside one R process (``system.time``).
MixedLM: one fit (model construction included, as lme4's), statsmodels' default optimisers (bfgs,
then lbfgs and cg if it fails), crossed designs in its variance-components form (one group,
``vc_formula``; sparse for large data), in a separate process stopped after ``--sm-limit`` seconds
(CPU seconds with ``--clock cpu``): a stopped fit is reported as "> limit" and its ratio as a lower
bound. Each line also gives engine's criterion minus lme4's (negative: engine's optimum is lower),
and the load average is printed before and after.

Run from the repository root: ``python benchmarks/bench_lmer.py [--skip-r] [--skip-statsmodels]``.
Timings on a shared 2-core machine are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from common import REPO_ROOT, compile_and_run_times, print_table, ratio, rscript_available, run_rscript

import engine

DATA = REPO_ROOT.parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
FIX = REPO_ROOT / "tests" / "fixtures" / "lmer"


def _grit() -> pd.DataFrame:
    d = engine.load_grit_raw().copy()
    d["male"] = d["male"].astype("Int64").astype(str).replace("<NA>", None)
    d["grit"] = d["grit"].map({0: "control", 1: "intervention"})
    return d


def _insteval() -> pd.DataFrame:
    d = pd.read_csv(DATA / "lme4_InstEval.csv")
    for c in ("s", "d", "service", "dept"):
        d[c] = d[c].astype(str)
    return d


# name, data loader, R data expression, formula, statsmodels spec (fixed, groups, re_formula, vc)
MODELS = [
    ("Dyestuff", lambda: pd.read_csv(FIX / "lme4_Dyestuff.csv"), f'read.csv("{FIX}/lme4_Dyestuff.csv")',
     "Yield ~ 1 + (1 | Batch)", ("Yield ~ 1", "Batch", None, None)),
    ("Penicillin", lambda: pd.read_csv(FIX / "lme4_Penicillin.csv"), f'read.csv("{FIX}/lme4_Penicillin.csv")',
     "diameter ~ 1 + (1 | plate) + (1 | sample)",
     ("diameter ~ 1", None, None, {"plate": "0 + C(plate)", "sample": "0 + C(sample)"})),
    ("Pastes", lambda: pd.read_csv(FIX / "lme4_Pastes.csv"), f'read.csv("{FIX}/lme4_Pastes.csv")',
     "strength ~ 1 + (1 | batch/cask)", ("strength ~ 1", "batch", None, {"cask": "0 + C(cask)"})),
    ("sleepstudy", lambda: pd.read_csv(FIX / "lme4_sleepstudy.csv"),
     f'transform(read.csv("{FIX}/lme4_sleepstudy.csv"), Subject = factor(Subject))',
     "Reaction ~ Days + (Days | Subject)", ("Reaction ~ Days", "Subject", "~Days", None)),
    ("grit nested", _grit,
     f'transform(read.csv("{DATA}/Sample2_Data.csv"), male = factor(male), schoolid = factor(schoolid), '
     'classid = factor(classid), grit = factor(grit, levels = 0:1, labels = c("control", "intervention")))',
     "mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit + (1 | schoolid/classid)",
     ("mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit", "schoolid", None,
      {"classid": "0 + C(classid)"})),
    ("Exam slopes", lambda: pd.read_csv(DATA / "mlmRev_Exam.csv"),
     f'transform(read.csv("{DATA}/mlmRev_Exam.csv"), school = factor(school))',
     "normexam ~ standLRT + (1 + standLRT | school)", ("normexam ~ standLRT", "school", "~standLRT", None)),
    ("InstEval", _insteval,
     f'transform(read.csv("{DATA}/lme4_InstEval.csv"), s = factor(s), d = factor(d), service = factor(service), '
     'dept = factor(dept))',
     "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)",
     ("y ~ 1 + service", None, None, {"s": "0 + C(s)", "d": "0 + C(d)", "ds": "0 + C(dept):C(service)"})),
]


def r_times(models, repeat: dict, clock: str = "wall") -> dict:
    """lme4's median seconds and REML criterion per model, timed inside one R process
    (``clock="cpu"``: user + system CPU seconds of the R process, steadier on a loaded machine)."""
    lines = ["suppressMessages(library(lme4))",
             "tm <- function(t) " + ("t[['user.self']] + t[['sys.self']]" if clock == "cpu" else "t[['elapsed']]")]
    for name, _, rdata, formula, _ in models:
        reps = repeat[name]
        lines.append(f"d <- {rdata}")
        lines.append(f"ts <- sapply(1:{reps}, function(i) tm(system.time(fit <<- lmer({formula}, data = d))))")
        lines.append(f'cat("{name}", median(ts), sprintf("%.10f", REMLcrit(fit)), "\\n", sep = "\\t")')
    out, _ = run_rscript("\n".join(lines), timeout=3600)
    res = {}
    for line in out.splitlines():
        parts = [p for p in line.split("\t") if p.strip()]
        if len(parts) >= 3:
            res[parts[0]] = (float(parts[1]), float(parts[2]))
    return res


def sm_time(data: pd.DataFrame, spec, formula: str, clock: str = "wall") -> float:
    """Seconds of one statsmodels MixedLM REML fit (model construction included)."""
    import re

    import statsmodels.formula.api as smf

    fixed, groups, re_formula, vc = spec
    used = [c for c in data.columns if c in set(re.findall(r"[A-Za-z_.][A-Za-z0-9_.]*", formula))]
    d = data.dropna(subset=used).copy()  # MixedLM needs complete cases (lme4 drops them itself)
    if groups is None:  # crossed: one group, every term a variance component
        d["_one"] = 1
        groups = "_one"
        re_formula = "0"
    clock_fn = time.process_time if clock == "cpu" else time.perf_counter
    start = clock_fn()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smf.mixedlm(fixed, d, groups=groups, re_formula=re_formula, vc_formula=vc,
                    use_sparse=len(d) > 10_000).fit(reml=True)
    return clock_fn() - start


def _sm_child(conn, data, spec, formula, clock, limit):
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    used = used.ru_utime + used.ru_stime  # the interpreter's start and imports, not timed
    conn.send(("start", used))
    if limit and clock == "cpu":  # SIGXCPU ends the fit at the limit
        soft = int(math.ceil(used + limit))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 10))
    try:
        conn.send(("ok", sm_time(data, spec, formula, clock)))
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the other models still run
        conn.send(("error", repr(exc)))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def sm_time_limited(data: pd.DataFrame, spec, formula: str, clock: str, limit: float):
    """(seconds, stopped): ``sm_time`` in a fresh process, stopped after ``limit`` seconds of its
    clock (CPU: by RLIMIT_CPU, with a wall-clock backstop of 5x for a loaded machine); a stopped
    fit's seconds are what it had used (a lower bound of MixedLM's time)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_sm_child, args=(send, data, spec, formula, clock, limit))
    proc.start()
    send.close()
    status, baseline = "start", 0.0
    try:
        if recv.poll(600):
            status, baseline = recv.recv()
        t0 = time.perf_counter()
        wall_limit = (5 * limit if clock == "cpu" else limit) if limit else None
        status = None
        if recv.poll(wall_limit):
            status, value = recv.recv()
    except EOFError:  # the child died: SIGXCPU at the CPU limit
        status = None
    if status is None:
        used = _cpu_seconds(proc.pid) - baseline if clock == "cpu" else time.perf_counter() - t0
        proc.kill()
        proc.join()
        if clock == "cpu" and not used == used:  # already gone: it had reached the limit
            used = limit
        return min(used, limit) if clock == "cpu" else used, True
    proc.join()
    if status == "error":
        print(f"MixedLM failed: {value}", file=sys.stderr)
        return math.nan, False
    return value, False


def scaling(sizes, with_r: bool, seed: int = 20261202, clock: str = "wall"):
    """engine (and lme4) on y ~ x + (x | g), 200 groups, N rows; ``clock="cpu"``: engine's process
    CPU seconds (best of 2 after the first call) and R's user + system seconds."""
    rows = []
    rng = np.random.default_rng(seed)
    for n in sizes:
        g = rng.integers(0, 200, n)
        x = rng.standard_normal(n)
        b0 = rng.standard_normal(200) * 0.5
        b1 = rng.standard_normal(200) * 0.3
        y = 1 + 0.5 * x + b0[g] + b1[g] * x + rng.standard_normal(n)
        d = pd.DataFrame({"y": y, "x": x, "g": g})
        ct = compile_and_run_times(engine.lmer, "y ~ x + (x | g)", d, repeat=1)
        steady = ct.steady_s
        if clock == "cpu":
            cpu = []
            for _ in range(2):
                t0 = time.process_time()
                engine.lmer("y ~ x + (x | g)", d)
                cpu.append(time.process_time() - t0)
            steady = min(cpu)
        row = {"N": n, "engine_s": round(steady, 4), "lme4_s": "", "ratio": ""}
        if with_r and n <= 200_000:
            path = Path("/tmp") / f"bench_lmer_scale_{n}.csv"
            d.to_csv(path, index=False)
            field = ('t[["user.self"]] + t[["sys.self"]]' if clock == "cpu" else 't[["elapsed"]]')
            out, _ = run_rscript(
                "suppressMessages(library(lme4))\n"
                f'd <- read.csv("{path}"); d$g <- factor(d$g)\n'
                f't <- system.time(lmer(y ~ x + (x | g), data = d)); cat({field}, "\\n")', timeout=1800)
            t = float(out.split()[0])
            row["lme4_s"] = t
            row["ratio"] = ratio(t, steady)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-r", action="store_true")
    parser.add_argument("--skip-statsmodels", action="store_true")
    parser.add_argument("--sm-limit", type=float, default=600.0,
                        help="stop a MixedLM fit after this many seconds (of --clock); 0: no limit")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scaling", default="10000,100000,1000000", help="N values ('' to skip)")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: engine's process CPU time and R's user + system time (loaded machines)")
    args = parser.parse_args(argv)
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    models = [m for m in MODELS if not args.only or m[0] in args.only.split(",")]
    repeat = {m[0]: (1 if m[0] == "InstEval" else args.repeat) for m in models}
    with_r = not args.skip_r and rscript_available(["lme4"])
    rows = []
    eng = {}
    for name, load, _, formula, spec in models:
        data = load()
        ct = compile_and_run_times(engine.lmer, formula, data, repeat=repeat[name])
        if args.clock == "cpu":  # steady state again, by CPU time (best of the repeats)
            cpu = []
            for _ in range(repeat[name]):
                t0 = time.process_time()
                engine.lmer(formula, data)
                cpu.append(time.process_time() - t0)
            ct = ct._replace(steady_s=min(cpu))
        eng[name] = (ct, data, spec)
    r = r_times(models, repeat, args.clock) if with_r else {}
    formulas = {m[0]: m[3] for m in models}
    for name, (ct, data, spec) in eng.items():
        sm, stopped = math.nan, False
        if not args.skip_statsmodels:
            sm, stopped = sm_time_limited(data, spec, formulas[name], args.clock, args.sm_limit)
        lme4_s, lme4_crit = r.get(name, (math.nan, math.nan))
        sm_text = "" if sm != sm else (f"> {sm:.0f}" if stopped else round(sm, 3))
        vs_sm = ratio(sm, ct.steady_s)
        rows.append({"model": name, "N": ct.result.nobs, "engine_first_s": round(ct.first_s, 3),
                     "compile_s": round(ct.compile_s, 3), "engine_s": round(ct.steady_s, 6), "engine_us": f"{ct.steady_s * 1e6:.0f}",
                     "lme4_s": lme4_s, "vs_lme4": ratio(lme4_s, ct.steady_s),
                     "MixedLM_s": sm_text, "vs_MixedLM": f"> {vs_sm}" if stopped and vs_sm else vs_sm,
                     "crit_minus_lme4": f"{ct.result.criterion - lme4_crit:.2e}" if lme4_crit == lme4_crit else ""})
    print_table(rows, list(rows[0]))
    if args.scaling:
        print(f"\nScaling in N: y ~ x + (x | g), 200 groups (engine steady state, {args.clock} seconds; "
              "lme4 up to N = 200,000)")
        srows = scaling([int(float(v)) for v in args.scaling.split(",")], with_r, clock=args.clock)
        print_table(srows, list(srows[0]))
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
