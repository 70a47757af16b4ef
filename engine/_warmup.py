"""Compile the later stages of ``python -m engine replicate`` ahead, in a worker process, on a cold cache.

On a fresh install most of a first ``replicate`` is Numba compiling kernels (issue 16), and
compilation is single-threaded (Numba holds one global compiler lock per process), so one core
compiles while the others idle. The stages are independent in their kernels: the OLS and mice
stages that run first use none of the multilevel samplers' kernels. So when the cache lacks the
samplers' kernels, :func:`compile_ahead` starts one worker process that runs the Bayesian stages
(``replicate.run_bayes``, then ``replicate.run_binary``) on a few complete cases with a handful of
iterations, compiling exactly the kernels (same argument types) that the real stages will call and
writing them to Numba's on-disk cache, while the main process runs OLS and mice. When the main
process reaches a stage it first waits for the worker to finish that stage (it is already
compiling it, and waiting is shorter than compiling again), then loads the kernels from the cache.

The worker changes no result: it is another process with its own random streams, its output is
discarded, and whatever it fails to compile the main process compiles as before. Numba writes
each cache entry to a temporary file and renames it, so the two processes never read half an
entry.

When: only if a stage's kernels are not cached (a warm run starts nothing) and the machine has a
core to spare (1-minute load average below the CPU count: on a busy machine the worker would only
take CPU from the main process). ``ENGINE_WARMUP=1`` starts it whenever a stage is not cached,
``ENGINE_WARMUP=0`` never.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import traceback
import warnings
from pathlib import Path

__all__ = ["compile_ahead", "Ahead", "stage_cached"]

STAGES = ("bayes", "binary")

# a kernel each stage compiles, per sampler: (file under engine/, index-file name prefix)
_MARKERS = {
    ("bayes", "gibbs"): ("gibbs.py", "gibbs._gibbs_chain-"),
    ("bayes", "nuts"): ("multilevel/nuts_target.py", "nuts_target."),
    ("binary", "gibbs"): ("multilevel/gibbs_pg.py", "gibbs_pg._pg_chain-"),
    ("binary", "nuts"): ("multilevel/nuts_glm.py", "nuts_glm."),
}

_PACKAGE_DIR = Path(__file__).resolve().parent


def stage_cached(stage: str, sampler: str) -> bool:
    """Whether Numba's cache (any folder it may use for that file) holds the stage's marker kernel."""
    from engine._kernel_cache import cache_dirs

    relative, prefix = _MARKERS[stage, sampler]
    source = _PACKAGE_DIR / relative
    for folder in cache_dirs(source.parent):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        if any(name.startswith(prefix) and name.endswith(".nbi") for name in names):
            return True
    return False


def _spare_core() -> bool:
    try:
        return os.getloadavg()[0] < (os.cpu_count() or 1)
    except (AttributeError, OSError):  # pragma: no cover - no load average on this platform
        return False


class Ahead:
    """The worker's progress as the main process sees it; ``wait(stage)`` before running a stage."""

    def __init__(self, process: subprocess.Popen | None, stages: tuple[str, ...]):
        self.process = process
        self.stages = stages
        self._done: dict[str, threading.Event] = {stage: threading.Event() for stage in stages}
        self._reader = None
        if process is not None:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            stage = line.strip()
            if stage in self._done:
                self._done[stage].set()
        for event in self._done.values():  # the worker ended (or died): nothing more to wait for
            event.set()

    def wait(self, stage: str) -> None:
        """Block until the worker has compiled ``stage`` (at once when it does not compile it)."""
        if stage in self._done and self.process is not None:
            self._done[stage].wait()

    def close(self) -> None:
        """Stop the worker if it is still running (the main process is done with it)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.process.kill()
            self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self.process.stdout.close()


@contextlib.contextmanager
def compile_ahead(settings):
    """Start the worker for ``settings`` (a ``replicate.Settings``) when it pays; yields an :class:`Ahead`."""
    ahead = Ahead(None, ())
    mode = os.environ.get("ENGINE_WARMUP", "").strip()
    if mode != "0" and (mode == "1" or _spare_core()):
        stages = tuple(s for s in STAGES if not stage_cached(s, settings.sampler))
        if stages:
            ahead = _start(settings, stages)
    try:
        yield ahead
    finally:
        ahead.close()


def _start(settings, stages: tuple[str, ...]) -> Ahead:
    request = json.dumps({"data": settings.data, "sampler": settings.sampler, "seed": settings.seed,
                          "stages": list(stages)})
    env = dict(os.environ)
    # the worker imports this very copy of engine
    env["PYTHONPATH"] = os.pathsep.join([str(_PACKAGE_DIR.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        process = subprocess.Popen([sys.executable, "-m", "engine._warmup", request], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return Ahead(None, ())
    return Ahead(process, stages)


# --------------------------------------------------------------------------------------------
# the worker


def complete_cases(data, formula: str):
    """The rows of ``data`` with no missing value in a column ``formula`` names (the columns' dtypes
    as in the imputed data sets, so the kernels compiled are the ones the real stage calls)."""
    columns = [c for c in re.findall(r"[A-Za-z_.][A-Za-z0-9_.]*", formula) if c in data.columns]
    return data.dropna(subset=columns)


def _worker(request: dict, report=None) -> None:
    """Run each requested stage on a few complete cases; write the stage's name to ``report`` (default:
    this process's standard output as it was on entry) when it is compiled."""
    from engine import replicate
    from engine.datasets import load_grit

    class Tiny(replicate.Settings):
        @property
        def bayes_iter(self):
            return (2, 20, 10)  # chains, iter, warmup: the kernels are the same, the work negligible

    if report is None:
        report = os.fdopen(os.dup(1), "w")
    settings = Tiny(data=request["data"], seed=request["seed"], sampler=request["sampler"], quiet=True)
    data = load_grit(settings.data)
    formulas = {"bayes": replicate.NESTED_FORMULA, "binary": replicate.BINARY_FORMULA}
    runners = {"bayes": replicate.run_bayes, "binary": replicate.run_binary}
    outcome = replicate.Outcome()
    outcome.numbers["bayes"] = {}  # run_bayes makes it; run_binary adds to it
    for stage in request["stages"]:
        try:
            complete = complete_cases(data, formulas[stage])
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runners[stage]([complete, complete], settings, outcome)
        except Exception:  # noqa: BLE001 - the main process compiles whatever failed here
            traceback.print_exc()  # to the main process's DEVNULL; seen when the worker is run by hand
        report.write(stage + "\n")
        report.flush()


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
