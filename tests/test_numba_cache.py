"""Numba's on-disk cache for engine's kernels: read-only installs, and stale caches of dependants.

A read-only install (a system site-packages, a container image): Numba 0.68's cache locators are
tried in order (``numba/core/caching.py``: ``_CacheImpl._locator_classes``): ``NUMBA_CACHE_DIR``
when set, then ``__pycache__`` beside the module when a file can be created there, then the
user-wide ``<user cache dir>/numba/<package dir name>_<sha1 of its path>`` (appdirs: on Linux
``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``). So engine needs no code of its own for it; the
test below holds Numba to that, with a copy of the package that the process cannot write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

_KERNEL_CALL = r"""
import json, os, sys
import numpy as np
import numba
import numba.core.caching
if os.environ.get("ENGINE_TEST_DROP_TO_UID"):
    numba.njit(lambda a: (a @ a.T).sum() + a.max())(np.ones((2, 2)))  # load numba's lazy imports
    # running as root, who writes through chmod: become an ordinary user (as a user of a
    # system-wide install is) once the interpreter and numba are loaded and initialised (their files may sit
    # where that user cannot read, e.g. under /root)
    uid = int(os.environ["ENGINE_TEST_DROP_TO_UID"])
    os.setgid(uid)
    os.setuid(uid)
import engine
from engine._linalg import crossprod
x = np.arange(12.0).reshape(6, 2)
xtx = crossprod(x)
assert np.allclose(xtx, x.T @ x), xtx
print(json.dumps({
    "engine_file": engine.__file__,
    "hits": int(sum(crossprod.stats.cache_hits.values())),
    "misses": int(sum(crossprod.stats.cache_misses.values())),
    "cache_path": crossprod._cache._cache_path,
}))
"""


def _set_tree_mode(root: Path, writable: bool) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644 if writable else 0o444)
        os.chmod(dirpath, 0o755 if writable else 0o555)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_kernels_cache_in_user_wide_dir_when_package_is_read_only():
    tmp = Path(tempfile.mkdtemp(prefix="engine_ro_"))
    try:
        os.chmod(tmp, 0o755)  # the unprivileged user below must reach the package
        pkg = tmp / "site"
        shutil.copytree(REPO_ROOT / "engine", pkg / "engine",
                        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.pyc"))
        _set_tree_mode(pkg, writable=False)
        user_cache = tmp / "xdg-cache"
        user_cache.mkdir()
        os.chmod(user_cache, 0o777)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
        env.update(PYTHONPATH=str(pkg), XDG_CACHE_HOME=str(user_cache), HOME=str(tmp),
                   PYTHONDONTWRITEBYTECODE="1")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env["ENGINE_TEST_DROP_TO_UID"] = "65534"  # 'nobody'
        runs = []
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", _KERNEL_CALL], env=env, cwd=str(tmp),
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        first, second = runs
        assert Path(first["engine_file"]).resolve() == (pkg / "engine" / "__init__.py").resolve()
        for run in runs:
            assert Path(run["cache_path"]).resolve().is_relative_to((user_cache / "numba").resolve()), run
        assert first["misses"] == 1 and first["hits"] == 0, first
        assert second["hits"] > 0 and second["misses"] == 0, second
        assert any(p.suffix == ".nbi" for p in Path(second["cache_path"]).iterdir())
        assert not list((pkg / "engine").rglob("*.nb[ic]"))  # nothing written into the package
    finally:
        if tmp.exists():
            _set_tree_mode(tmp, writable=True)
            shutil.rmtree(tmp, ignore_errors=True)


_A = """import numba
from .b import base


@numba.njit(cache=True)
def twice():
    return 2 * base()
"""
_B = """import numba


@numba.njit(cache=True)
def base():
    return {value}
"""


def _run_toy(root: Path, cache: Path | None) -> tuple[int, int]:
    """Call kpkg.a.twice in a fresh process with kpkg's kernels stamped by engine's locators."""
    code = ("import sys; from engine._kernel_cache import install_locators; "
            "assert install_locators(sys.argv[1], 'kpkg'); import kpkg.a as a; "
            "print(a.twice(), sum(a.twice.stats.cache_hits.values()))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO_ROOT)])
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache)
    proc = subprocess.run([sys.executable, "-c", code, str(root / "kpkg")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    value, hits = proc.stdout.split()
    return int(value), int(hits)


def _toy_package(root: Path, value: int) -> Path:
    pkg = root / "kpkg"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(_A)
    (pkg / "b.py").write_text(_B.format(value=value))
    return pkg


@pytest.mark.parametrize("where", ["NUMBA_CACHE_DIR", "__pycache__"])
def test_dependant_recompiles_after_editing_the_kernel_it_calls(tmp_path, where):
    # Numba alone stamps a.twice's entry with a.py only and would go on loading the old b.base
    pkg = _toy_package(tmp_path, value=1)
    cache = tmp_path / "cache" if where == "NUMBA_CACHE_DIR" else None
    assert _run_toy(tmp_path, cache) == (2, 0)
    assert _run_toy(tmp_path, cache) == (2, 1)  # loaded from the cache
    (pkg / "b.py").write_text(_B.format(value=5))  # same size, and no file times consulted
    assert _run_toy(tmp_path, cache) == (10, 0)  # recompiled against the edited kernel
    assert _run_toy(tmp_path, cache) == (10, 1)
    entries = list((cache or pkg / "__pycache__").rglob("a.twice-*.nbi"))
    assert len(entries) == 1


def test_cache_built_elsewhere_is_valid_for_a_copy_with_new_file_times(tmp_path):
    # what an install does with the cache the wheel carries (engine._precompile): the files are
    # written anew, in any order, with new modification times; the stamp is their content
    built = tmp_path / "built"
    _toy_package(built, value=3)
    assert _run_toy(built, None) == (6, 0)
    installed = tmp_path / "installed"
    shutil.copytree(built, installed, copy_function=shutil.copyfile)  # contents only, new mtimes
    for path in sorted(installed.rglob("*.py")):
        path.touch()
    assert _run_toy(installed, None) == (6, 1)
    (installed / "kpkg" / "b.py").write_text(_B.format(value=4))
    assert _run_toy(installed, None) == (8, 0)


def test_engine_kernels_are_content_stamped():
    from engine import _numba_setup
    from engine._kernel_cache import dependency_closure, source_stamp
    from engine._linalg import crossprod

    assert _numba_setup.CONTENT_STAMPED_CACHE  # the Numba pinned here has the internals relied on
    locator = crossprod._cache._impl.locator
    assert type(locator).__name__.startswith("Engine")
    assert locator.get_source_stamp() == source_stamp(REPO_ROOT / "engine", "engine", REPO_ROOT / "engine" / "_linalg.py")
    assert {"engine.ols", "engine._linalg", "engine.formula_kernels"} <= set(
        dependency_closure(REPO_ROOT / "engine", "engine", "engine.ols"))


def test_engine_dependency_graph_sees_kernel_imports():
    from engine._kernel_cache import module_dependencies

    deps = module_dependencies(REPO_ROOT / "engine", "engine")
    assert "engine.formula" in deps["engine.ols"]
    assert {"engine.hmc.tree", "engine.hmc.adaptation"} <= deps["engine.multilevel.nuts_target"]
    assert "engine.gibbs_slopes" in deps["engine.gibbs"]


def test_import_engine_does_not_import_numba():
    code = "import sys, engine; print('numba' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_slice_shape_error_is_constant_and_still_raised():
    import numba
    import numpy as np

    from engine import _numba_setup

    assert _numba_setup.CONSTANT_SLICE_SHAPE_ERROR  # the Numba pinned here has the overload it replaces

    @numba.njit
    def assign(a, b):
        a[0, :] = b
        return a.sum()

    assert assign(np.zeros((2, 3)), np.ones(3)) == 3.0
    with pytest.raises(ValueError, match="cannot assign slice from input of different size"):
        assign(np.zeros((2, 3)), np.ones(2))


def test_every_kernel_module_imports_the_numba_setup():
    # a module that forgot it would compile its kernels with Numba's defaults when it is the first
    # one a process compiles (slower by the string machinery engine._numba_setup avoids)
    missing = [str(path.relative_to(REPO_ROOT)) for path in sorted((REPO_ROOT / "engine").rglob("*.py"))
               if "numba.njit" in path.read_text() and path.name != "_numba_setup.py"
               and "from engine import _numba_setup" not in path.read_text()]
    assert missing == []
