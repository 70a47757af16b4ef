"""Shared helpers for the benchmark scripts in this folder.

Run a benchmark from the repository root as ``python benchmarks/bench_x.py``: Python puts this
folder on ``sys.path``, so a script imports these helpers with ``from common import ...``; importing
this module also puts the repository root first on ``sys.path`` so that ``import engine`` works from a
clone that was not pip-installed.

What is here:

- ``rscript_available(packages)``: is ``Rscript`` on the PATH with all these R packages?
- ``r_package_versions(packages)``: their versions, for the report header.
- ``run_rscript(code, timeout)``: run R code, return (stdout, wall seconds).
- ``brms_preamble()``: the R lines that make Debian's rstan find Boost (see below) and load brms.
- ``timed(fn, *args, repeat=1)``: (result, best wall seconds).
- ``compile_and_run_times(fn, *args)``: first call (Numba compilation or cache load included) vs
  steady-state calls, so that compile time is reported apart from run time.
- ``print_table(rows, columns)``: a plain fixed-width table on stdout.
- ``ratio(peer_seconds, engine_seconds)``: "12.3x" formatting of speed-ups.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

REPO_ROOT = Path(__file__).resolve().parent.parent
# First on the path, even when an installed (editable) engine is importable: a worktree or clone
# benchmarks its own engine, not the one pip points at.
while str(REPO_ROOT) in sys.path:
    sys.path.remove(str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT))

__all__ = [
    "REPO_ROOT",
    "rscript_available",
    "r_package_versions",
    "run_rscript",
    "brms_preamble",
    "timed",
    "CompileTimes",
    "compile_and_run_times",
    "print_table",
    "ratio",
]


# --------------------------------------------------------------------------------------------
# R peers


def _r_string_vector(items: Sequence[str]) -> str:
    return "c(" + ", ".join('"' + str(item).replace('"', '\\"') + '"' for item in items) + ")"


@functools.cache
def _rscript_has(packages: tuple[str, ...]) -> bool:
    if shutil.which("Rscript") is None:
        return False
    code = (
        f"ok <- all(vapply({_r_string_vector(packages)}, requireNamespace, logical(1), "
        "quietly = TRUE)); quit(status = if (ok) 0L else 1L)"
    )
    try:
        done = subprocess.run(
            ["Rscript", "--vanilla", "-e", code], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def rscript_available(packages: Sequence[str] = ()) -> bool:
    """True when ``Rscript`` runs and every R package in ``packages`` can be loaded."""
    return _rscript_has(tuple(packages))


def r_package_versions(packages: Sequence[str]) -> dict[str, str]:
    """Versions of R and of the given R packages ({} when Rscript is missing)."""
    if not rscript_available(packages):
        return {}
    code = (
        'cat("R", paste(R.version$major, R.version$minor, sep = "."), "\\n"); '
        f"for (p in {_r_string_vector(packages)}) "
        'cat(p, as.character(utils::packageVersion(p)), "\\n")'
    )
    stdout, _ = run_rscript(code, timeout=120)
    versions = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            versions[parts[0]] = parts[1]
    return versions


def run_rscript(code: str, timeout: float = 600.0, cwd: str | os.PathLike | None = None) -> tuple[str, float]:
    """Run R ``code`` with ``Rscript --vanilla``; return (stdout, wall-clock seconds).

    The seconds include R's start-up (about 0.2 s, more when packages load); time the part
    of interest inside R (``proc.time()``) and print it when start-up matters. Raises
    ``RuntimeError`` with R's stderr when R fails, ``subprocess.TimeoutExpired`` on timeout.
    """
    if shutil.which("Rscript") is None:
        raise RuntimeError("Rscript is not on the PATH (Debian: apt-get install r-base-core)")
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as handle:
        handle.write(code)
        script = handle.name
    try:
        start = time.perf_counter()
        done = subprocess.run(
            ["Rscript", "--vanilla", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
        seconds = time.perf_counter() - start
    finally:
        os.unlink(script)
    if done.returncode != 0:
        raise RuntimeError(f"Rscript failed (status {done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout, seconds


def brms_preamble(boost_include: str = "/usr/include/boost") -> str:
    """R code to put before any ``brm()`` call on Debian.

    Debian's rstan 2.21 looks for Boost headers under ``rstan_options("boost_lib")/boost``
    while Debian installs them in ``/usr/include/boost``; pointing ``boost_lib`` at a folder that
    holds a ``boost`` symlink to the system headers lets brms compile its models (as the project's
    reference script ``brms_ref.R`` does). ``auto_write = FALSE`` keeps compiled models out of the
    working tree, so each run pays (and reports) the compile time.
    """
    return (
        "suppressPackageStartupMessages({ library(brms); library(rstan) })\n"
        'boost_dir <- file.path(tempdir(), "boost_inc")\n'
        "dir.create(boost_dir, showWarnings = FALSE)\n"
        'if (!file.exists(file.path(boost_dir, "boost")))\n'
        f'  invisible(file.symlink("{boost_include}", file.path(boost_dir, "boost")))\n'
        "rstan::rstan_options(boost_lib = boost_dir, auto_write = FALSE)\n"
    )


# --------------------------------------------------------------------------------------------
# timing


def timed(fn: Callable, *args: Any, repeat: int = 1, **kwargs: Any) -> tuple[Any, float]:
    """Call ``fn(*args, **kwargs)`` ``repeat`` times; return (last result, best wall seconds)."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    best = math.inf
    result = None
    for _ in range(repeat):
        result = None  # release the previous call's result first: a fit of 10^6 x 50 holds a 400 MB design
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return result, best


class CompileTimes(NamedTuple):
    """First call vs steady state: ``compile_s`` = first_s - steady_s (clipped at 0)."""

    first_s: float
    steady_s: float
    compile_s: float
    result: Any


def compile_and_run_times(fn: Callable, *args: Any, repeat: int = 3, **kwargs: Any) -> CompileTimes:
    """Time the first call of ``fn`` (Numba compilation or cache load) apart from later calls.

    With ``cache=True`` kernels the first call in a fresh process loads the cache; run the
    benchmark twice (or clear ``__pycache__``) to see a cold compile.
    """
    start = time.perf_counter()
    fn(*args, **kwargs)
    first = time.perf_counter() - start
    result, steady = timed(fn, *args, repeat=repeat, **kwargs)
    return CompileTimes(first, steady, max(first - steady, 0.0), result)


def ratio(peer_seconds: float, engine_seconds: float) -> str:
    """How many times faster engine is than the peer, as text ('n/a' when undefined)."""
    if not (peer_seconds > 0 and engine_seconds > 0) or math.isinf(peer_seconds):
        return "n/a"
    value = peer_seconds / engine_seconds
    return f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


# --------------------------------------------------------------------------------------------
# output


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "NA"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def print_table(rows: Sequence[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str], file=None) -> str:
    """Print ``rows`` (dicts keyed by column, or sequences in column order) as a fixed-width table.

    Numbers are right-aligned, text left-aligned; returns the text printed.
    """
    body = []
    for row in rows:
        if isinstance(row, Mapping):
            values = [row.get(column) for column in columns]
        else:
            values = list(row)
            if len(values) != len(columns):
                raise ValueError(f"row has {len(values)} values for {len(columns)} columns: {row!r}")
        body.append([(_cell(value), isinstance(value, (int, float))) for value in values])
    widths = [len(str(column)) for column in columns]
    for row in body:
        widths = [max(width, len(text)) for width, (text, _) in zip(widths, row)]
    lines = ["  ".join(str(column).ljust(width) for column, width in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    for row in body:
        cells = [text.rjust(width) if numeric else text.ljust(width) for (text, numeric), width in zip(row, widths)]
        lines.append("  ".join(cells).rstrip())
    text = "\n".join(lines)
    print(text, file=file if file is not None else sys.stdout, flush=True)
    return text
