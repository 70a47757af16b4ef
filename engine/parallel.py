"""Seeds and scheduling shared by every multi-stream computation (imputations, chains).

One ``seed`` in, independent streams out: ``numpy.random.SeedSequence(seed).spawn(k)`` gives one
child sequence per task, keyed by the task's position, so the draws do not depend on how many
workers run the tasks or in which order they finish. Work runs on any
``concurrent.futures.Executor`` (the default: threads over the local cores, since the Numba
kernels release the GIL; a ``dask.distributed`` client's ``get_executor()`` works the same way).
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np


def child_seeds(seed: int | np.random.SeedSequence | None, count: int) -> list[np.random.SeedSequence]:
    """``count`` independent child seed sequences of ``seed`` (``None``: fresh OS entropy)."""
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return root.spawn(count)


def generators(seed: int | np.random.SeedSequence | None, count: int) -> list[np.random.Generator]:
    """``count`` independent ``numpy.random.Generator`` streams (PCG64) derived from ``seed``."""
    return [np.random.Generator(np.random.PCG64(s)) for s in child_seeds(seed, count)]


def default_workers() -> int:
    """Number of local worker threads: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def run_tasks(
    function: Callable[..., Any],
    tasks: Sequence[tuple],
    executor: Executor | None = None,
    max_workers: int | None = None,
) -> list[Any]:
    """Run ``function(*task)`` for every task; results in task order, whatever the executor.

    ``executor=None`` runs on a local thread pool of ``max_workers`` (default: all cores); with one
    task or one worker it runs inline, which keeps tracebacks simple.
    """
    if executor is None:
        workers = max_workers or default_workers()
        if workers <= 1 or len(tasks) <= 1:
            return [function(*task) for task in tasks]
        with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            futures = [pool.submit(function, *task) for task in tasks]
            return [f.result() for f in futures]
    if not callable(getattr(executor, "submit", None)):
        from engine.errors import EngineInputError

        raise EngineInputError(f"executor must be a concurrent.futures.Executor (an object with a submit() "
                               f"method, such as ThreadPoolExecutor or a dask client's get_executor()), got {executor!r}")
    try:
        futures = [executor.submit(function, *task) for task in tasks]
    except RuntimeError as error:  # "cannot schedule new futures after shutdown"
        from engine.errors import EngineInputError

        raise EngineInputError(f"executor cannot run the tasks: {error}") from None
    return [f.result() for f in futures]
