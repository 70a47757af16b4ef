"""Progress lines on stderr for steps that take more than a second.

Silent when stderr is not a terminal or when the caller asks for quiet; never writes to stdout,
so printed results stay clean for piping. A step reports ``done`` out of ``total`` units and gets
an ETA from the mean time per unit so far.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

from engine.errors import CallbackError, EngineInputError


class Progress:
    """Report the progress of one named step: ``with Progress("mice", total=25) as p: p.advance()``."""

    def __init__(self, label: str, total: int, enabled: bool | None = None, stream: TextIO | None = None,
                 min_interval: float = 0.2):
        self.label = label
        self.total = max(int(total), 1)
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.done = 0
        self.min_interval = min_interval
        self._start = time.perf_counter()
        self._last = 0.0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def advance(self, units: int = 1) -> None:
        self.done = min(self.done + units, self.total)
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.min_interval or self.done == self.total):
            self._last = now
            self._write(now)

    def _write(self, now: float) -> None:
        elapsed = now - self._start
        if self.done:
            eta = elapsed / self.done * (self.total - self.done)
            tail = f"{elapsed:5.1f}s elapsed, ETA {eta:5.1f}s"
        else:
            tail = f"{elapsed:5.1f}s elapsed"
        self.stream.write(f"\r{self.label}: {self.done}/{self.total} ({tail})   ")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self._start
            if elapsed >= 1.0:
                self.stream.write(f"\r{self.label}: done in {elapsed:.1f}s{' ' * 30}\n")
            else:
                self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


def progress_reporter(progress, label: str, total: int):
    """(report function or None, closer) for a ``progress=`` argument of engine's long steps.

    ``progress`` may be a callable ``f(done, total)`` (called as work finishes), ``True`` (a line
    on stderr), ``None`` (a line on stderr only when stderr is a terminal) or ``False`` (silence).
    """
    if callable(progress):
        def call(done: int, total_: int) -> None:
            try:
                progress(done, total_)
            except Exception as error:  # the user's function: say whose exception it is
                raise CallbackError(
                    f"the progress= callback {getattr(progress, '__name__', repr(progress))!r} raised "
                    f"{type(error).__name__}: {error} (called as progress({done}, {total_}))") from error
        return call, lambda: None
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise EngineInputError(
            f"progress must be True, False, None or a function f(done, total), got {progress!r}")
    if progress is False:
        return None, lambda: None
    if progress is None and not getattr(sys.stderr, "isatty", lambda: False)():
        return None, lambda: None
    bar = Progress(label, total=total, enabled=True)

    def report(done: int, _total: int) -> None:
        bar.advance(done - bar.done)

    return report, bar.finish
