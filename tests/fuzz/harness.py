"""Classify what engine does with one bad input, and count the categories (see test_fuzz_api.py).

Categories (issue 11):

- ``clear_error``: an ``engine.errors`` exception of the expected class (message checked where the
  case gives a pattern);
- ``as_r``: the input is one R answers, and engine gave R's answer (the case's ``check`` passed);
- ``crash``: the process died (segfault, abort) or hung; only seen for subprocess cases;
- ``wrong``: an answer that is not R's, or an engine error of the wrong class;
- ``silent``: bad input accepted without an error;
- ``raw_error``: an exception that is not an engine error (ZeroDivisionError, KeyError, ...).

A case is a :class:`Case`: a callable ``run()``, and either ``expect`` (the engine exception class
it must raise) or ``check(result, warnings)`` (asserting R's answer). Crash-prone cases carry
``code`` instead: Python source run in a fresh interpreter, which prints the category as its last
line (via :func:`classify`), so that a segfault fails the test, not the test run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

CATEGORIES = ("clear_error", "as_r", "crash", "wrong", "silent", "raw_error")
GOOD = ("clear_error", "as_r")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: (area, category) -> count, filled by every classified input of the session
RECORD: Counter = Counter()
#: the inputs that were not handled well: (area, name, category, detail)
FAILURES: list = []


@dataclass
class Case:
    name: str
    area: str
    run: Callable[[], Any] | None = None
    expect: type | tuple | None = None
    match: str | None = None
    check: Callable[[Any, list], None] | None = None
    code: str | None = None  # run in a subprocess instead of ``run``
    timeout: float = 240.0
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.area}:{self.name}"


def _outcome(case: Case, category: str, detail: str) -> tuple[str, str]:
    RECORD[(case.area, category)] += 1
    if category not in GOOD:
        FAILURES.append((case.area, case.name, category, detail))
    return category, detail


def classify_call(run, expect=None, match=None, check=None) -> tuple[str, str]:
    """(category, detail) of calling ``run()`` (no recording)."""
    from engine.errors import EngineError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = run()
        except EngineError as error:
            if expect is not None and isinstance(error, expect):
                if match is not None and not re.search(match, str(error)):
                    return "wrong", f"{type(error).__name__} without /{match}/: {error}"
                return "clear_error", f"{type(error).__name__}: {error}"
            return "wrong", f"unexpected {type(error).__name__}: {error}"
        except RecursionError as error:
            return "raw_error", f"RecursionError: {error}"
        except Exception as error:  # noqa: BLE001 - the point is to see every kind
            return "raw_error", f"{type(error).__module__}.{type(error).__name__}: {error}"
    if expect is not None:
        return "silent", f"accepted; returned {type(result).__name__}" + (
            f"; warnings: {[str(w.message)[:80] for w in caught]}" if caught else "")
    if check is not None:
        try:
            check(result, caught)
        except AssertionError as error:
            return "wrong", f"not R's answer: {error}"
        return "as_r", "R's answer"
    return "silent", "no expectation given"


def classify_either(case: Case, check: Callable[[Any, list], None] | None) -> tuple[str, str]:
    """An input that is either bad (``case.expect``) or one R answers (``check``, None: any
    answer is acceptable): the error must be of the right class, or the answer R's; recorded once."""
    category, detail = classify_call(case.run, case.expect, case.match)
    if category == "silent":
        if check is None:
            category, detail = "as_r", "accepted, as R does"
        else:
            category, detail = classify_call(case.run, None, None, check)
    return _outcome(case, category, detail)


def classify(case: Case) -> tuple[str, str]:
    """Classify one case (in this process, or in a subprocess when it has ``code``); recorded."""
    if case.code is None:
        return _outcome(case, *classify_call(case.run, case.expect, case.match, case.check))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable, "-c", case.code], capture_output=True, text=True,
                              timeout=case.timeout, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        return _outcome(case, "crash", f"hung (no result within {case.timeout} s)")
    if proc.returncode < 0:
        return _outcome(case, "crash", f"killed by signal {-proc.returncode}; stderr: {proc.stderr[-400:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("FUZZ ")]
    if not lines:
        return _outcome(case, "crash" if proc.returncode not in (0, 1) else "raw_error",
                        f"exit {proc.returncode}, no result; stderr: {proc.stderr[-400:]}")
    category, detail = json.loads(lines[-1][5:])
    return _outcome(case, category, detail)


def classify_batch(cases: list[Case], timeout: float = 900.0) -> dict[str, tuple[str, str]]:
    """Classify subprocess cases in *one* fresh interpreter (each case's code in its own namespace,
    one after the other), which saves an interpreter start and engine's import per case; recorded.
    A crash still fails: the case that was running is a ``crash``, and so is every case after it
    (reported as not run), so a segfault can never pass."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = ["import sys"]
    for case in cases:
        script.append(f"print('CASE ' + {case.name!r}, flush=True)")
        script.append(f"exec(compile({case.code!r}, {case.id!r}, 'exec'), {{'__name__': '__fuzz__'}})")
    results: dict[str, tuple[str, str]] = {}
    try:
        proc = subprocess.run([sys.executable, "-c", "\n".join(script)], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, env=env)
        stdout, died = proc.stdout, (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                                     else f"exit {proc.returncode}" if proc.returncode else None)
        stderr = proc.stderr
    except subprocess.TimeoutExpired as error:
        stdout = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        died, stderr = f"hung (no result within {timeout} s)", ""
    current = None
    for line in stdout.splitlines():
        if line.startswith("CASE "):
            current = line[5:]
        elif line.startswith("FUZZ ") and current is not None:
            results[current] = tuple(json.loads(line[5:]))
    out = {}
    for case in cases:
        if case.name in results:
            category, detail = results[case.name]
        elif case.name == current:
            category, detail = "crash", f"{died or 'no result'} in this case; stderr: {stderr[-400:]}"
        else:
            category, detail = "crash", f"not run: the batch process died earlier ({died}) in {current!r}"
        out[case.name] = _outcome(case, category, detail)
    return out


def subprocess_code(body: str, expect: str | None = None, match: str | None = None, check: str | None = None) -> str:
    """Source for a subprocess case: ``body`` defines ``run()`` (and ``check`` if given by name);
    ``expect`` is the name of an engine.errors class."""
    return (
        "import json, numpy as np, numba, engine, engine.errors as errors\n"
        "from tests.fuzz.harness import classify_call\n"
        f"{body}\n"
        f"expect = {('errors.' + expect) if expect else 'None'}\n"
        f"result = classify_call(run, expect, {match!r}, {check or 'None'})\n"
        "print('FUZZ ' + json.dumps(result), flush=True)\n"
    )


def cli_case(name: str, args: list[str], expect_exit: int = 2, match: str | None = None,
             max_stderr_lines: int = 3) -> Case:
    """A command-line case: ``python -m engine <args>`` must exit ``expect_exit`` with a short,
    traceback-free message on stderr (matching ``match``) before doing any work."""
    code = (
        "import json, subprocess, sys, re\n"
        f"proc = subprocess.run([sys.executable, '-m', 'engine'] + {args!r}, capture_output=True, text=True, timeout=600)\n"
        "err = proc.stderr.strip().splitlines()\n"
        "if proc.returncode < 0: cat = ('crash', f'signal {-proc.returncode}')\n"
        "elif any('Traceback' in l for l in err): cat = ('raw_error', 'traceback: ' + ' | '.join(err[-3:]))\n"
        f"elif proc.returncode != {expect_exit}: cat = ('silent' if proc.returncode == 0 else 'wrong', f'exit {{proc.returncode}}: ' + ' | '.join(err[-3:]))\n"
        f"elif len(err) > {max_stderr_lines}: cat = ('wrong', f'{{len(err)}} lines on stderr')\n"
        f"elif {match!r} and not re.search({match!r}, proc.stderr): cat = ('wrong', 'message: ' + ' | '.join(err))\n"
        "else: cat = ('clear_error', ' | '.join(err))\n"
        "print('FUZZ ' + json.dumps(cat), flush=True)\n"
    )
    return Case(name, "cli", code=code, timeout=300)


def report_table() -> str:
    """Counts per area and category, as a Markdown table."""
    areas = sorted({area for area, _ in RECORD})
    header = "| area | " + " | ".join(CATEGORIES) + " | total |"
    lines = [header, "|" + "---|" * (len(CATEGORIES) + 2)]
    totals = Counter()
    for area in areas:
        counts = [RECORD[(area, c)] for c in CATEGORIES]
        totals.update({c: RECORD[(area, c)] for c in CATEGORIES})
        lines.append(f"| {area} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
    lines.append("| **all** | " + " | ".join(str(totals[c]) for c in CATEGORIES) + f" | {sum(totals.values())} |")
    return "\n".join(lines)
