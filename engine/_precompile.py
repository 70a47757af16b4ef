"""Build Numba's on-disk cache for engine's kernels ahead of use: when the package is installed, or by hand.

Why (issue 16): a kernel is compiled the first time a process calls it, so in a new environment
the first ``python -m engine replicate`` spent most of its minute compiling, and a first
``engine.ols`` ~10 s. ``pip install .`` runs :func:`build` (``setup.py``'s ``build_py``), so the
wheel carries the cache (``__pycache__/*.nbi``, ``*.nbc`` beside the modules) and the first calls
load it instead. Cache entries are stamped with the content of the sources they were built from
(``engine._kernel_cache``), so they are valid wherever the same files are installed; Numba also
keys each entry on its own version, the Python version and the CPU, so a cache built for another
machine or Numba is simply not used (the kernel compiles on first use, as without this module).

What: :data:`JOBS`, each a small workload on the bundled study data that calls what the public
functions and ``replicate`` call, with the same argument types (so the same compiled
specialisations) and negligible work (a few iterations): the OLS stages, mice, ``lmer`` and the
Bayesian stages with either sampler, and (:data:`USER_MODEL_JOBS`: at install time only with 4
workers or more, :func:`install_jobs`) what a user's own model adds most often: random slopes,
crossed groupings, predictions and ``loo``. Each job runs in its own process and the jobs run
``workers`` at a time: Numba compiles in one thread under a global lock per process, so separate
processes are what compiles on several cores at once. Results are discarded; a failed job only
means that its kernels compile on first use. Numba writes each entry to a temporary file and
renames it, so processes that compile the same kernel never leave half an entry.

By hand: ``python -m engine precompile`` (for instance as the user of a read-only install, whose
cache is then built in the user-wide folder); ``ENGINE_PRECOMPILE=0`` skips it at install time.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

__all__ = ["JOBS", "USER_MODEL_JOBS", "build", "install_jobs", "run_all", "run_job"]

# longest first (cold CPU seconds on the 2-core machine of issue 16), so the workers finish together
JOBS = ("lmer", "bayes-nuts", "slopes", "ols-mice", "bayes-gibbs", "loo-predict", "binary-nuts", "binary-gibbs")
# what a user brings beyond the study's models: a random slope (brm with either sampler and the
# three families, lmer), crossed groupings, predictions and LOO; compiled on first use these cost
# ~50 s (slopes Gibbs) and ~20 s (loo) of a first call. Their ~65 CPU s are built at install time
# only with 4 workers or more (``install_jobs``): on 2 cores they would lengthen ``pip install .``
# by ~30 s and make the README's first command (install, then replicate) slower than with no
# precompile at all (measured: 158 s against 130 s); ``python -m engine precompile`` builds them.
USER_MODEL_JOBS = ("slopes", "loo-predict")
SLOPES_FORMULA = "mathscore2 ~ raven + (1 + raven | schoolid)"
CROSSED_FORMULA = "mathscore2 ~ raven + (1 | schoolid) + (1 | male)"

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class _TwoCopies:
    """Stands in for a mice result in ``replicate.run_lmer``: ``fit`` on two copies of one data set."""

    def __init__(self, data):
        self.data = data

    def fit(self, fun):
        return [fun(self.data), fun(self.data)]


def run_job(name: str) -> None:
    """Run one of :data:`JOBS` in this process (its output discarded)."""
    from engine import replicate
    from engine.datasets import load_grit

    data = load_grit()
    outcome = replicate.Outcome()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "ols-mice":
            import engine

            replicate.run_ols(data, outcome)
            replicate.run_paper_spec(data, outcome)

            class OneSweep(replicate.Settings):
                @property
                def mice_maxit(self):
                    return 1

            replicate.run_mice(data, OneSweep(quiet=True), outcome)
            columns = ["mathscore2", "male", "raven", "csize", "belief_survey1", "mathscore1"]
            engine.mice(data[columns], m=1, maxit=1, seed=1)  # mice's default methods on the study's columns
        elif name == "lmer":
            from engine._warmup import complete_cases

            replicate.run_lmer(data, _TwoCopies(complete_cases(data, replicate.NESTED_FORMULA)), outcome)
        elif name == "slopes":
            import engine
            from engine._warmup import complete_cases

            slopes = complete_cases(data, SLOPES_FORMULA)
            for sampler in ("gibbs", "nuts"):  # warmup >= 40: the slopes Gibbs sampler's collapsed step
                engine.brm(SLOPES_FORMULA, slopes, sampler=sampler, chains=1, iter=50, warmup=40, seed=1)
            # the other families' slopes: bernoulli by Polya-Gamma Gibbs (the default), poisson by NUTS
            binary = complete_cases(data, SLOPES_FORMULA.replace("mathscore2", "choicer1"))
            engine.brm(SLOPES_FORMULA.replace("mathscore2", "choicer1"), binary, family="bernoulli",
                       chains=1, iter=50, warmup=40, seed=1)
            counts = slopes.assign(count=(slopes["mathscore2"] > 0).astype(int))
            engine.brm(SLOPES_FORMULA.replace("mathscore2", "count"), counts, family="poisson", sampler="nuts",
                       chains=1, iter=50, warmup=40, seed=1)
            engine.lmer(SLOPES_FORMULA, slopes)
            engine.lmer(CROSSED_FORMULA, complete_cases(data, CROSSED_FORMULA))
        elif name == "loo-predict":
            import numpy as np

            import engine
            from engine._warmup import complete_cases

            # a random walk along 400 draws: autocorrelated beyond loo.MAX_DIRECT_LAG, so loo also takes
            # its FFT r_eff path (checked: 29 of the 30 columns)
            log_lik = -0.5 * (np.cumsum(np.random.default_rng(1).normal(size=(2, 400, 30)), axis=1) / 20) ** 2
            engine.loo(log_lik)
            engine.waic(log_lik)
            fit = engine.ols(replicate.OLS_MODELS[0][1], data)
            fit.predict(data.head(5), interval="confidence")
            fit.predict(data.head(5), interval="prediction")
            lmer_fit = engine.lmer(replicate.NESTED_FORMULA, complete_cases(data, replicate.NESTED_FORMULA))
            lmer_fit.predict(data.head(5))
        elif name.startswith(("bayes-", "binary-")):
            from engine._warmup import _worker

            stage, sampler = name.split("-")
            with contextlib.redirect_stderr(io.StringIO()):
                _worker({"data": None, "sampler": sampler, "seed": 1, "stages": [stage]}, report=io.StringIO())
        else:
            raise ValueError(f"unknown precompile job {name!r}; choose from {', '.join(JOBS)}")


def install_jobs(workers: int | None = None) -> tuple[str, ...]:
    """The jobs ``pip install .`` runs with ``workers`` processes (default: the CPU count, at most 4):
    every job from 4 workers, else all but :data:`USER_MODEL_JOBS`."""
    if _workers(workers) >= 4:
        return JOBS
    return tuple(job for job in JOBS if job not in USER_MODEL_JOBS)


def _workers(workers: int | None) -> int:
    return max(1, min(workers or os.cpu_count() or 1, 4))


def build(workers: int | None = None, jobs: tuple[str, ...] = JOBS, package_root: str | os.PathLike | None = None,
          log=None) -> dict[str, float | None]:
    """Run ``jobs`` in subprocesses, ``workers`` at a time (default: the CPU count, at most 4), each
    importing engine from ``package_root`` (default: this copy). Returns job -> wall seconds (None
    when the job failed)."""
    workers = _workers(workers)
    root = str(package_root or _PACKAGE_ROOT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["ENGINE_WARMUP"] = "0"  # the jobs are the compile-ahead: no worker of their own
    pending, running, seconds = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            errors = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty job cannot block on it
            running[job] = (time.perf_counter(), errors, subprocess.Popen(
                [sys.executable, "-m", "engine._precompile", job], env=env, cwd=root,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors))
        for job, (start, errors, process) in list(running.items()):
            if process.poll() is None:
                continue
            errors.seek(0)
            error = errors.read()
            errors.close()
            del running[job]
            seconds[job] = time.perf_counter() - start if process.returncode == 0 else None
            if log is not None:
                status = f"{seconds[job]:.1f} s" if seconds[job] is not None else "failed: " + error.strip()[-500:]
                log(f"engine precompile: {job} {status}")
        time.sleep(0.05)
    return seconds


def run_all(workers: int | None = None, install: bool = False) -> int:
    """``python -m engine precompile``: every job (``install``: :func:`install_jobs`, what setup.py
    asks for), a line on stderr each; exit status 1 if one failed."""
    start = time.perf_counter()
    jobs = install_jobs(workers) if install else JOBS
    seconds = build(workers, jobs, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"engine precompile: {len(seconds)} jobs in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0 if all(s is not None for s in seconds.values()) else 1


if __name__ == "__main__":  # one job in this process: python -m engine._precompile JOB (what build starts)
    run_job(sys.argv[1])
