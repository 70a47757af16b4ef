"""Drop Numba cache indexes that a change in *another* engine file has made stale.

Numba's ``cache=True`` stamps a kernel's cache with a hash of the one source file that defines it
(``numba/core/caching.py``, ``_SourceFileBackedLocatorMixin.get_source_stamp``). A kernel in
``engine/ols.py`` that calls a kernel of ``engine/_linalg.py`` has the callee's machine code
compiled into its own cache entry, so after an edit of ``_linalg.py`` Numba would go on loading the
old code for ``ols.py``'s kernels. This module finds such entries and deletes their index files
(``*.nbi``; without its index a cache entry is a miss, so Numba recompiles and rewrites it).

The rule, conservative (an unnecessary recompile, never a stale load): module M's cache index is
stale when some engine module that M imports, directly or through other engine modules, and
that uses Numba, has a source file modified after the index was written. Imports are read from
the source text (``import engine.x``, ``from engine.x import``, relative ``from .x import``,
anywhere in the file), so a call into another module's kernel is always seen.

Cost: ``engine/__init__.py`` calls :func:`clear_stale` on import. Its fast path is only ``stat``
calls (the package's source files, the cache folders' index files, a stamp file): when no source
is newer than the last check (or than every index), nothing is read. After an edit it reads the
sources once, deletes what is stale and touches the stamp. Numba is never imported here.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

__all__ = ["find_stale", "clear_stale", "module_dependencies", "cache_dirs"]

STAMP_NAME = "engine-kernel-deps.stamp"

_FROM_RE = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]+)", re.M)
_IMPORT_RE = re.compile(r"^[ \t]*import[ \t]+([^\n#;]+)", re.M)


def _sources(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` under ``package_dir``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        rel = Path(dirpath).relative_to(package_dir).parts
        for name in filenames:
            if not name.endswith(".py"):
                continue
            parts = (package, *rel) if name == "__init__.py" else (package, *rel, name[:-3])
            out[".".join(parts)] = Path(dirpath) / name
    return out


def _resolve(importer: str, is_package: bool, target: str) -> str:
    level = len(target) - len(target.lstrip("."))
    if not level:
        return target
    parts = importer.split(".") if is_package else importer.split(".")[:-1]
    parts = parts[:len(parts) - (level - 1)]
    rest = target[level:]
    return ".".join(parts + ([rest] if rest else []))


def module_dependencies(package_dir: str | os.PathLike, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (directly), read from the source text."""
    sources = _sources(Path(package_dir), package)
    deps: dict[str, set[str]] = {}
    for module, path in sources.items():
        text = path.read_text(encoding="utf-8", errors="replace")
        is_package = path.name == "__init__.py"
        found = set()
        for target, names in _FROM_RE.findall(text):
            base = _resolve(module, is_package, target)
            if base in sources:
                found.add(base)
            for name in re.split(r"[\s,()]+", names):
                name = name.split(" as ")[0].strip()
                if name and f"{base}.{name}" in sources:
                    found.add(f"{base}.{name}")
        for names in _IMPORT_RE.findall(text):
            for name in names.split(","):
                name = name.strip().split(" ")[0]
                while name and name not in sources and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in sources:
                    found.add(name)
        found.discard(module)
        deps[module] = found
    return deps


def _user_cache_root() -> Path:
    # numba.misc.appdirs.user_cache_dir("numba", appauthor=False), without importing numba
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "numba"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "numba" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numba"


def cache_dirs(source_dir: str | os.PathLike) -> list[Path]:
    """Where Numba may keep the caches of kernels defined in files of ``source_dir``: the
    ``NUMBA_CACHE_DIR`` folder, ``__pycache__`` beside them, the user-wide folder (Numba 0.68's
    locators, in its order; ``get_suitable_cache_subpath`` names the per-folder subfolder)."""
    source_dir = os.path.abspath(source_dir)
    subpath = "_".join([os.path.split(source_dir)[-1], hashlib.sha1(source_dir.encode()).hexdigest()])
    dirs = []
    if os.environ.get("NUMBA_CACHE_DIR"):
        dirs.append(Path(os.environ["NUMBA_CACHE_DIR"]) / subpath)
    dirs.append(Path(source_dir) / "__pycache__")
    dirs.append(_user_cache_root() / subpath)
    return dirs


def _index_files(sources: dict[str, Path]) -> dict[str, list[tuple[Path, int]]]:
    """Module -> its kernels' index files with their mtimes (ns)."""
    by_dir: dict[Path, list[tuple[str, str]]] = {}
    for module, path in sources.items():
        by_dir.setdefault(path.parent, []).append((module, path.stem + "."))
    out: dict[str, list[tuple[Path, int]]] = {}
    for source_dir, modules in by_dir.items():
        for folder in cache_dirs(source_dir):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.endswith(".nbi"):
                    continue
                for module, prefix in modules:
                    if entry.name.startswith(prefix):
                        try:
                            out.setdefault(module, []).append((Path(entry.path), entry.stat().st_mtime_ns))
                        except OSError:
                            pass
    return out


def find_stale(package_dir: str | os.PathLike, package: str) -> list[tuple[Path, str]]:
    """(index file, the newer dependency module) for every stale cache index of the package."""
    sources = _sources(Path(package_dir), package)
    indexes = _index_files(sources)
    if not indexes:
        return []
    mtimes = {m: p.stat().st_mtime_ns for m, p in sources.items()}
    uses_numba = {m for m, p in sources.items() if "numba" in p.read_text(encoding="utf-8", errors="replace")}
    direct = module_dependencies(package_dir, package)
    stale = []
    for module, files in indexes.items():
        seen, todo = set(), list(direct.get(module, ()))
        while todo:
            dep = todo.pop()
            if dep not in seen and dep != module:
                seen.add(dep)
                todo.extend(direct.get(dep, ()))
        kernel_deps = [d for d in seen if d in uses_numba]
        if not kernel_deps:
            continue
        newest = max(kernel_deps, key=mtimes.__getitem__)
        for path, mtime in files:
            if mtimes[newest] > mtime:
                stale.append((path, newest))
    return stale


def clear_stale(package_dir: str | os.PathLike | None = None, package: str = "engine") -> list[Path]:
    """Delete stale cache indexes (see the module docstring); returns the files deleted.

    Fast path (stat only): nothing to do when no source file is newer than the stamp left by the
    last full check, or than the oldest index file."""
    package_dir = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent
    # one stamp per NUMBA_CACHE_DIR: a check covers only the cache folders it looked in
    where = hashlib.sha1(os.environ.get("NUMBA_CACHE_DIR", "").encode()).hexdigest()[:12]
    stamp = package_dir / "__pycache__" / f"{STAMP_NAME}.{where}"
    sources = _sources(package_dir, package)
    newest_source = max(p.stat().st_mtime_ns for p in sources.values())
    try:
        if newest_source <= stamp.stat().st_mtime_ns:
            return []
    except OSError:
        pass
    indexes = _index_files(sources)
    if not indexes or newest_source <= min(m for files in indexes.values() for _, m in files):
        return []
    removed = []
    for path, _dependency in find_stale(package_dir, package):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    try:
        stamp.parent.mkdir(exist_ok=True)
        stamp.touch()
    except OSError:
        pass  # a read-only install: its sources do not change, the fast path's index test holds
    return removed

