"""engine._warmup: replicate's compile-ahead worker (issue 16).

The worker's real job (compiling the Bayesian stages, ~40 CPU s) is measured by
benchmarks/bench_compile.py, not here; these tests hold the parts that decide and wait.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from engine import _warmup
from engine._kernel_cache import cache_dirs
from engine.replicate import Settings


def test_stage_cached_sees_the_marker_kernels_index(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    real_listdir = os.listdir

    def listdir(folder):  # only the NUMBA_CACHE_DIR folder: ignore caches beside the sources
        return real_listdir(folder) if str(folder).startswith(str(tmp_path)) else []

    monkeypatch.setattr(_warmup.os, "listdir", listdir)
    assert not _warmup.stage_cached("bayes", "gibbs")
    folder = cache_dirs(_warmup._PACKAGE_DIR)[0]
    assert str(folder).startswith(str(tmp_path))
    folder.mkdir(parents=True)
    (folder / "gibbs._gibbs_chain-425.py311.nbi").write_bytes(b"")
    assert _warmup.stage_cached("bayes", "gibbs")
    assert not _warmup.stage_cached("bayes", "nuts") and not _warmup.stage_cached("binary", "gibbs")


def test_no_worker_when_disabled_or_cached(monkeypatch):
    monkeypatch.setenv("ENGINE_WARMUP", "0")
    with _warmup.compile_ahead(Settings()) as ahead:
        assert ahead.process is None
        ahead.wait("bayes")  # returns at once
    monkeypatch.setenv("ENGINE_WARMUP", "1")
    monkeypatch.setattr(_warmup, "stage_cached", lambda stage, sampler: True)
    with _warmup.compile_ahead(Settings()) as ahead:
        assert ahead.process is None


def test_wait_returns_per_stage_and_when_the_worker_dies():
    script = "import time; print('bayes', flush=True); time.sleep(30)"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    ahead = _warmup.Ahead(process, ("bayes", "binary"))
    start = time.perf_counter()
    ahead.wait("bayes")
    assert time.perf_counter() - start < 20
    assert process.poll() is None  # still "compiling" binary
    process.terminate()  # a worker that dies before reporting a stage: wait does not hang
    ahead.wait("binary")
    ahead.close()
    assert process.returncode is not None


def test_worker_failing_before_any_stage_releases_the_main_process(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_WARMUP", "1")
    monkeypatch.setattr(_warmup, "stage_cached", lambda stage, sampler: False)
    settings = Settings(data=str(tmp_path / "missing.csv"))  # the worker fails loading it
    with _warmup.compile_ahead(settings) as ahead:
        assert ahead.process is not None and ahead.stages == ("bayes", "binary")
        ahead.wait("bayes")
        ahead.wait("binary")
        assert ahead.process.wait(timeout=120) != 0
