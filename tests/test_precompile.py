"""engine._precompile: the jobs that build Numba's cache ahead of use (at install time, issue 16)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_a_precompile_job_writes_its_kernels_to_the_cache(tmp_path, monkeypatch):
    from engine._precompile import build

    copy = tmp_path / "site"
    shutil.copytree(REPO_ROOT / "engine", copy / "engine",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.pyc"))
    cache = tmp_path / "cache"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(cache))
    lines = []
    seconds = build(workers=1, jobs=("binary-gibbs",), package_root=copy, log=lines.append)
    assert set(seconds) == {"binary-gibbs"} and seconds["binary-gibbs"] is not None, lines
    indexes = {p.name for p in cache.rglob("*.nbi")}
    # the Polya-Gamma Gibbs chain of replicate's binary stage, and the kernels it shares with others
    assert any(name.startswith("gibbs_pg._pg_chain-") for name in indexes), sorted(indexes)
    assert not list((copy / "engine").rglob("*.nbi"))  # NUMBA_CACHE_DIR is honoured


def test_a_failed_job_is_reported_not_raised(tmp_path, monkeypatch):
    from engine._precompile import build

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    lines = []
    assert build(workers=1, jobs=("no-such-job",), log=lines.append) == {"no-such-job": None}
    assert len(lines) == 1 and lines[0].startswith("engine precompile: no-such-job failed")


def test_unknown_job_names_the_choices():
    from engine._precompile import run_job

    with pytest.raises(ValueError, match="lmer"):
        run_job("nope")


def test_install_jobs_leave_the_user_model_jobs_to_four_workers():
    """pip install runs the user-model jobs (slopes, loo/predict) only with 4 workers or more; by
    hand every job runs."""
    from engine._precompile import JOBS, USER_MODEL_JOBS, install_jobs

    assert set(USER_MODEL_JOBS) <= set(JOBS)
    assert install_jobs(2) == tuple(job for job in JOBS if job not in USER_MODEL_JOBS)
    assert install_jobs(1) == install_jobs(2)
    assert install_jobs(4) == JOBS
    assert install_jobs(16) == JOBS  # workers are capped at 4
