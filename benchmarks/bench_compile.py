"""Numba compile and cache-load cost of engine, cold (empty cache) and warm, per kernel and per call.

Issue 16: a newcomer's first ``python -m engine replicate`` is mostly compilation. This script
measures where it goes, from a fresh copy of the package and an empty Numba cache:

1. copies ``engine/`` (without any ``__pycache__``, ``*.nbi``, ``*.nbc``) into a temporary folder;
2. for each case (``import engine``, ``engine.ols``, ``engine.mice`` on 6 columns, ``engine.brm``
   Gibbs, ``engine.brm(sampler="nuts")``, ``engine.lmer``, a random-slope ``engine.brm`` (Gibbs),
   ``engine.loo`` of a log-likelihood array, ``python -m engine replicate --quick``)
   makes a new, empty ``NUMBA_CACHE_DIR`` and runs the case in a fresh subprocess twice: cold
   (every kernel compiled) and then warm (every kernel loaded from that cache);
3. in each subprocess, wraps ``numba.core.dispatcher.Dispatcher.compile`` to time each kernel's
   compilation (self time: nested compiles of the kernels it calls are subtracted, so they are
   not counted twice) and its cache load, and reads each dispatcher's ``signatures`` and
   ``stats.cache_hits`` / ``stats.cache_misses`` at the end.

It prints, per case, the cold and warm first call (wall seconds, numba's import included, the data
loading not) with the number of kernels compiled / loaded, then the kernels that cost most to
compile, then a per-module summary; ``--json PATH`` writes everything (every kernel of every case).

    python benchmarks/bench_compile.py [--cases ols,mice,...] [--json out.json] [--top 25]

``--installed`` measures what a newcomer gets instead (issue 16's "fresh environment"): for each of
``pip install .`` as it is (the wheel's build compiles the kernels into the cache it carries,
``engine._precompile``) and with ``ENGINE_PRECOMPILE=0`` (no cache shipped), it copies the
checkout's tracked files into a temporary folder, makes a new virtual environment there, times
``pip install .`` and then the README's ``python -m engine replicate`` from that checkout; after
the precompiled install it also times each case's first call in a fresh process of that
environment, outside the checkout (so the installed package is the one imported).

``ENGINE_WARMUP`` passes through to the cases (``replicate_quick`` starts its compile-ahead worker
only when the load average leaves a core free, or when ``ENGINE_WARMUP=1``; see engine/_warmup.py).
CPU seconds (user + system, the subprocess and the processes it waited for, so a worker's too) are
steadier than wall seconds on a shared machine; "call self CPU s" is the case's own process only.

A kernel with more than one signature is a duplicate specialisation (compiled once per argument
type set). Compile times are wall times on the machine as loaded when run; mice compiles on
several threads, which wait for Numba's global compiler lock, so its per-kernel figures include
some waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

MODEL1 = "mathscore2 ~ male + raven + csize + belief_survey1 + mathscore1 + grit"
MODEL1_COLUMNS = ["mathscore2", "male", "raven", "csize", "belief_survey1", "mathscore1", "grit"]
NESTED = MODEL1 + " + (1 | schoolid/classid)"
SLOPES = "mathscore2 ~ raven + (1 + raven | schoolid)"

CASES = ["import", "ols", "mice", "brm_gibbs", "brm_nuts", "lmer", "brm_slopes", "loo", "replicate_quick"]


# --------------------------------------------------------------------------------------------
# child side: one case in this (fresh) process


class _KernelTimer:
    """Wraps ``Dispatcher.compile`` to time each kernel's compile (self time) and cache load."""

    def __init__(self):
        self.records = defaultdict(lambda: {"compile_s": 0.0, "compiles": 0, "load_s": 0.0, "loads": 0})
        self.dispatchers = {}
        self._local = threading.local()

    def install(self):
        from numba.core import dispatcher as _dispatcher
        from numba.core.compiler_lock import global_compiler_lock

        original = _dispatcher.Dispatcher.compile
        timer = self

        def compile(disp, sig):  # noqa: A001 (numba's name)
            stack = getattr(timer._local, "stack", None)
            if stack is None:
                stack = timer._local.stack = []
            # Numba's compile lock (re-entrant) is taken before the clock starts and the counters are
            # read: a thread waiting while another compiles would otherwise count the wait, and the
            # other's miss of the same kernel, as a compile of its own (mice's threads did: a kernel's
            # "self time" above the case's wall time)
            global_compiler_lock.acquire()
            misses_before = sum(disp._cache_misses.values())
            hits_before = sum(disp._cache_hits.values())
            stack.append(0.0)  # time spent in nested compiles
            start = time.perf_counter()
            try:
                return original(disp, sig)
            finally:
                elapsed = time.perf_counter() - start
                nested = stack.pop()
                if stack:
                    stack[-1] += elapsed
                key = _kernel_key(disp)
                timer.dispatchers[key] = disp
                record = timer.records[key]
                if sum(disp._cache_misses.values()) > misses_before or (
                        not disp._cache_hits and not disp._cache_misses and elapsed > 1e-3):
                    record["compile_s"] += elapsed - nested
                    record["compiles"] += 1
                elif sum(disp._cache_hits.values()) > hits_before:
                    record["load_s"] += elapsed - nested
                    record["loads"] += 1
                global_compiler_lock.release()

        _dispatcher.Dispatcher.compile = compile

    def report(self):
        out = []
        for key, disp in self.dispatchers.items():
            record = dict(self.records[key])
            stats = disp.stats
            record.update(
                module=key[0], kernel=key[1],
                signatures=[str(sig) for sig in disp.signatures],
                cache_hits=int(sum(stats.cache_hits.values())),
                cache_misses=int(sum(stats.cache_misses.values())),
                parallel=bool(disp.targetoptions.get("parallel", False)),
                cached=bool(getattr(disp, "_cache", None) is not None
                            and type(disp._cache).__name__ != "NullCache"),
            )
            out.append(record)
        return out


def _kernel_key(disp):
    func = disp.py_func
    return (getattr(func, "__module__", "?"), getattr(func, "__qualname__", repr(func)))


def _study_data():
    import engine

    return engine.datasets.load_grit()


def _run_case(case: str):
    """Run one case; return (seconds of the measured call, kernel records)."""
    if case == "import":
        start = time.perf_counter()
        import engine  # noqa: F401

        seconds = time.perf_counter() - start
        return seconds, [], {"numba_imported": "numba" in sys.modules, "cpu_s": time.process_time()}
    start_import = time.perf_counter()
    import engine

    import_s = time.perf_counter() - start_import
    data = None if case == "replicate_quick" else _study_data()
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    self_start = time.process_time()
    timer = _KernelTimer()
    timer.install()  # imports numba: counted in the call, as a user pays it there
    if case == "ols":
        engine.ols(MODEL1, data)
    elif case == "mice":
        columns = ["mathscore2", "male", "raven", "csize", "belief_survey1", "mathscore1"]
        engine.mice(data[columns], m=5, maxit=5, seed=1)
    elif case in ("brm_gibbs", "brm_nuts"):
        complete = data[MODEL1_COLUMNS + ["schoolid", "classid"]].dropna()
        engine.brm(NESTED, complete, sampler="gibbs" if case == "brm_gibbs" else "nuts",
                   chains=2, iter=400, warmup=200, seed=1)
    elif case == "lmer":
        engine.lmer(NESTED, data)
    elif case == "brm_slopes":  # what a user's own model brings (engine._precompile's slopes job)
        engine.brm(SLOPES, data[["mathscore2", "raven", "schoolid"]].dropna(), chains=2, iter=400, warmup=200, seed=1)
    elif case == "loo":  # PSIS-LOO of a (chains, draws, observations) log-likelihood, 4 x 500 x 1,000
        import numpy as np

        walk = np.random.default_rng(1).normal(size=(4, 500, 1000)).cumsum(axis=1) * 0.05
        engine.loo(-0.5 * (1.0 + walk ** 2))
    elif case == "replicate_quick":
        import contextlib
        import io
        import runpy

        sys.argv = ["engine", "replicate", "--quick", "--quiet"]
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                runpy.run_module("engine", run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise
    else:
        raise ValueError(f"unknown case {case!r}")
    seconds = time.perf_counter() - start
    # self: this process only (a compile-ahead worker's CPU is in cpu_s, not here): on a machine with
    # a spare core the wall time of the call is about self_cpu_s
    return seconds, timer.report(), {"import_engine_s": import_s, "cpu_s": _cpu_seconds() - cpu_start,
                                     "self_cpu_s": time.process_time() - self_start}


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def child_main(case: str, out_path: str) -> None:
    seconds, kernels, extra = _run_case(case)
    with open(out_path, "w") as fh:
        json.dump({"case": case, "seconds": seconds, "kernels": kernels, **extra}, fh)


# --------------------------------------------------------------------------------------------
# parent side


def fresh_copy(dest: Path) -> Path:
    src = dest / "src"
    shutil.copytree(REPO_ROOT / "engine", src / "engine",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.pyc"))
    return src


def run_child(case: str, src: Path, cache: Path, work: Path, label: str, timeout: float,
              extra_env: dict | None = None) -> dict:
    out = work / f"{case}-{label}.json"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    if extra_env:
        env.update(extra_env)
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", case, "--out", str(out)],
                          env=env, cwd=str(work), capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{case} ({label}) failed:\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    result["process_s"] = wall
    # CPU seconds of the whole subprocess and of the processes it waited for (a warm-up worker):
    # steadier than wall time on a shared, loaded machine
    result["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def _timed(command: list[str], cwd: Path, env: dict, timeout: float) -> tuple[float, float]:
    """(wall s, CPU s of the command and its children) of a command that must succeed."""
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(command, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-4000:]}")
    return (time.perf_counter() - start,
            (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))


def installed_main(args) -> None:
    """The README's first command in new environments, with and without the precompiled cache."""
    sys.path.insert(0, str(HERE))
    from common import print_table

    tracked = subprocess.run(["git", "ls-files"], cwd=str(REPO_ROOT), capture_output=True, text=True,
                             check=True).stdout.split()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHONPATH", "ENGINE_PRECOMPILE"))}
    print(f"engine from {REPO_ROOT} (tracked files, new virtual environments); {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows, cases = [], [c for c in CASES if c not in ("import", "replicate_quick")]
    with tempfile.TemporaryDirectory(prefix="bench_compile_installed_") as tmp:
        tmp = Path(tmp)
        for label, extra in (("precompiled", {}), ("ENGINE_PRECOMPILE=0", {"ENGINE_PRECOMPILE": "0"})):
            checkout = tmp / label.replace("=", "_") / "engine-checkout"
            for name in tracked:
                (checkout / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / name, checkout / name)
            venv = checkout.parent / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            python = str(venv / "bin" / "python")
            env = dict(base_env, **extra)
            install = _timed([python, "-m", "pip", "install", "--quiet", "."], checkout, env, args.timeout)
            replicate = _timed([python, "-m", "engine", "replicate", "--quiet"], checkout, env, args.timeout)
            rows.append({"install": label, "pip install . s": round(install[0], 1),
                         "pip install CPU s": round(install[1], 1), "replicate s": round(replicate[0], 1),
                         "replicate CPU s": round(replicate[1], 1),
                         "README command s": round(install[0] + replicate[0], 1),
                         "load average": round(os.getloadavg()[0], 1)})
            print(f"  {label}: pip install . {install[0]:.1f} s ({install[1]:.1f} CPU s), then "
                  f"python -m engine replicate {replicate[0]:.1f} s ({replicate[1]:.1f} CPU s)", flush=True)
            if label != "precompiled":
                continue
            first = []
            outside = checkout.parent / "elsewhere"
            outside.mkdir()
            for case in cases:
                out = outside / f"{case}.json"
                wall, cpu = _timed([python, str(Path(__file__).resolve()), "--child", case, "--out", str(out)],
                                   outside, dict(env, PYTHONDONTWRITEBYTECODE="1"), args.timeout)
                result = json.loads(out.read_text())
                misses = sum(k["cache_misses"] for k in result["kernels"])
                first.append({"case": case, "first call s": round(result["seconds"], 2),
                              "process s": round(wall, 2), "process CPU s": round(cpu, 1),
                              "kernels compiled": sum(1 for k in result["kernels"] if k["compiles"]),
                              "cache misses": misses})
            print("\nFirst call of each case in a fresh process of the precompiled environment "
                  "(outside the checkout; numba import included, data loading not):")
            print_table(first, list(first[0]))
    print("\nThe README's first command, `pip install . && python -m engine replicate`, in a new environment:")
    print_table(rows, list(rows[0]))


def summarise(result: dict) -> dict:
    kernels = result["kernels"]
    return {
        "compiled": sum(1 for k in kernels if k["compiles"]),
        "compile_s": sum(k["compile_s"] for k in kernels),
        "loaded": sum(1 for k in kernels if k["loads"]),
        "load_s": sum(k["load_s"] for k in kernels),
        "misses": sum(k["cache_misses"] for k in kernels),
        "multi_sig": sum(1 for k in kernels if len(k["signatures"]) > 1),
        "uncached": sum(1 for k in kernels if not k["cached"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES))
    parser.add_argument("--json", dest="json_path", help="write all measurements to this JSON file")
    parser.add_argument("--top", type=int, default=25, help="kernels listed in the compile-cost table")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds allowed per subprocess")
    parser.add_argument("--installed", action="store_true",
                        help="fresh virtual environments: pip install . with and without the precompiled cache")
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.out)
        return
    if args.installed:
        installed_main(args)
        return

    sys.path.insert(0, str(HERE))
    from common import print_table

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {CASES}")
    import numba

    print(f"engine from {REPO_ROOT} (fresh copy, empty NUMBA_CACHE_DIR per case); numba {numba.__version__}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    results, failures = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
        tmp = Path(tmp)
        src = fresh_copy(tmp)
        for case in cases:
            cache = tmp / f"cache-{case}"
            cache.mkdir()
            try:
                cold = run_child(case, src, cache, tmp, "cold", args.timeout)
                warm = run_child(case, src, cache, tmp, "warm", args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:  # report it, go on
                failures[case] = str(exc)
                print(f"  {case}: FAILED: {str(exc).strip().splitlines()[-1]}", flush=True)
                continue
            results[case] = {"cold": cold, "warm": warm}
            print(f"  {case}: cold {cold['seconds']:.2f} s ({cold['process_cpu_s']:.1f} CPU s), "
                  f"warm {warm['seconds']:.2f} s ({warm['process_cpu_s']:.1f} CPU s); "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            if args.json_path:  # written as we go: a long run keeps what it measured
                Path(args.json_path).write_text(json.dumps({"results": results, "failures": failures}))

    rows = []
    for case, res in results.items():
        cold, warm = summarise(res["cold"]), summarise(res["warm"])
        rows.append({
            "case": case, "cold s": round(res["cold"]["seconds"], 2), "warm s": round(res["warm"]["seconds"], 2),
            "cold CPU s": round(res["cold"]["process_cpu_s"], 1), "warm CPU s": round(res["warm"]["process_cpu_s"], 1),
            "cold call self CPU s": round(res["cold"].get("self_cpu_s", float("nan")), 1),
            "kernels compiled": cold["compiled"], "compile s (sum)": round(cold["compile_s"], 2),
            "kernels loaded": warm["loaded"], "load s (sum)": round(warm["load_s"], 2),
            "warm misses": warm["misses"], ">1 signature": cold["multi_sig"],
        })
    for case, message in failures.items():
        print(f"\n{case} FAILED:\n{message[-1500:]}")
    if not rows:
        return
    print("\nFirst call in a fresh process (wall seconds of the call, numba import included, data loading not;\n"
          "CPU s: user + system seconds of the whole subprocess and the processes it waited for):")
    print_table(rows, list(rows[0]))

    # per kernel: the largest cold compile over cases (a kernel is compiled once per case)
    kernels = {}
    for case, res in results.items():
        warm_by_key = {(k["module"], k["kernel"]): k for k in res["warm"]["kernels"]}
        for k in res["cold"]["kernels"]:
            key = (k["module"], k["kernel"])
            best = kernels.get(key)
            if best is None or k["compile_s"] > best["compile_s"]:
                w = warm_by_key.get(key, {})
                kernels[key] = dict(k, case=case, warm_load_s=w.get("load_s", float("nan")))
    ranked = sorted(kernels.values(), key=lambda k: -k["compile_s"])
    print(f"\nKernels by compile self time (largest over cases; top {args.top} of {len(ranked)}):")
    print_table([{
        "kernel": f"{k['module']}.{k['kernel']}", "compile s": round(k["compile_s"], 2),
        "load s": round(k["warm_load_s"], 3), "signatures": len(k["signatures"]),
        "parallel": "yes" if k["parallel"] else "", "cached": "yes" if k["cached"] else "NO", "case": k["case"],
    } for k in ranked[:args.top]], ["kernel", "compile s", "load s", "signatures", "parallel", "cached", "case"])
    multi = [k for k in ranked if len(k["signatures"]) > 1]
    if multi:
        print("\nDuplicate specialisations (one kernel, several signatures):")
        for k in multi:
            print(f"  {k['module']}.{k['kernel']} ({k['case']}): " + "; ".join(k["signatures"]))

    modules = defaultdict(lambda: {"kernels": 0, "compile_s": 0.0, "load_s": 0.0})
    for k in kernels.values():
        m = modules[k["module"]]
        m["kernels"] += 1
        m["compile_s"] += k["compile_s"]
        m["load_s"] += k["warm_load_s"] if k["warm_load_s"] == k["warm_load_s"] else 0.0
    print("\nPer module (kernels seen in any case; compile and load summed over their largest case):")
    print_table([{"module": name, "kernels": m["kernels"], "compile s": round(m["compile_s"], 2),
                  "load s": round(m["load_s"], 3)}
                 for name, m in sorted(modules.items(), key=lambda item: -item[1]["compile_s"])],
                ["module", "kernels", "compile s", "load s"])
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"results": results, "failures": failures}, indent=1))
        print(f"\nwrote {args.json_path}")


if __name__ == "__main__":
    main()
