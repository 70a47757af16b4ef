"""Build step of engine's install: the package's metadata is in pyproject.toml; this file adds one step.

After ``build_py`` has copied the package into the build folder, its Numba kernels are compiled
there into Numba's on-disk cache (``engine._precompile``), so the wheel, and the installed package,
carry the cache and a new environment's first calls load kernels instead of compiling them (issue
16). The same cache files are copied beside the checkout's sources, for ``python -m engine
replicate`` run from the checkout (it imports the checkout's ``engine/``). The cache entries are
stamped with the content of their sources (``engine._kernel_cache``), so they hold for both copies.
``ENGINE_PRECOMPILE=0`` skips the step; a failure in it is reported and the build goes on without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CACHE_SUFFIXES = (".nbi", ".nbc")


def _cache_files(package_dir: Path):
    for path in package_dir.rglob("__pycache__/*"):
        if path.suffix in CACHE_SUFFIXES:
            yield path


class BuildPyWithKernelCache(build_py):
    def run(self):
        super().run()
        if os.environ.get("ENGINE_PRECOMPILE", "1").strip() == "0":
            return
        build_lib = Path(self.build_lib).resolve()
        built = build_lib / "engine"
        for stale in list(_cache_files(built)):  # left by an earlier build of other sources
            stale.unlink()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}  # the cache beside the modules
        # build_lib first; pip's isolated build environment is itself on PYTHONPATH
        env["PYTHONPATH"] = os.pathsep.join([str(build_lib)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "engine", "precompile", "--install"], cwd=str(build_lib), env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
        except OSError as error:
            self.warn(f"engine: kernels not precompiled ({error}); they compile on first use")
            return
        if proc.returncode != 0:
            self.warn("engine: some kernels not precompiled (they compile on first use):\n" + proc.stderr[-2000:])
        self.announce(f"engine: kernels precompiled in {time.perf_counter() - start:.0f} s", level=2)
        source = Path(__file__).resolve().parent / "engine"
        if source.resolve() == built:
            return
        for path in _cache_files(built):
            target = source / path.relative_to(built)
            try:
                target.parent.mkdir(exist_ok=True)
                shutil.copyfile(path, target)
            except OSError:  # a read-only checkout: its copy compiles on first use
                break


setup(cmdclass={"build_py": BuildPyWithKernelCache})
