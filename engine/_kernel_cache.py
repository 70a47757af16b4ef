"""Numba's on-disk cache for engine's kernels: a kernel's cache entry is stamped with the sources it was built from.

Numba's ``cache=True`` stamps a kernel's cache entry with a hash of the one source file that defines
it (``numba/core/caching.py``, ``_SourceFileBackedLocatorMixin.get_source_stamp``). But a kernel in
``engine/ols.py`` that calls a kernel of ``engine/_linalg.py`` has the callee's machine code
compiled into its own entry, so after an edit of ``_linalg.py`` Numba would go on loading the old
code for ``ols.py``'s kernels. Here the stamp of a kernel defined in module M is instead a SHA-256
over the sources of M and of every engine module that M imports, directly or through other engine
modules, and that uses Numba: an edit of any of them is a cache miss, Numba recompiles and rewrites
the entry. Imports are read from the source text (``import engine.x``, ``from engine.x import``,
relative ``from .x import``, anywhere in the file), so a call into another module's kernel is always
seen; the rule is conservative (an edit of a comment recompiles too, never a stale load).

The stamp is content, not file times, so a cache built elsewhere stays valid where the same sources
are: ``engine._precompile`` builds the cache when the package is installed and the wheel carries it
(issue 16), and no cache needs deleting by hand after an edit.

:func:`install_locators` puts engine's subclasses of Numba's three file-backed locators (the
``NUMBA_CACHE_DIR`` folder, ``__pycache__`` beside the module when it is writable, the user-wide
folder, in Numba's order; they differ from Numba's only in the stamp) ahead of Numba's own, for the
files of one package; ``engine._numba_setup`` calls it for engine before any kernel is defined.
Where Numba's internals differ (another version), nothing is installed and Numba's own stamp is
used. Cost: the sources of a kernel module's dependency closure are read once per process (only those:
the import graph is followed lazily, module by module).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from pathlib import Path

__all__ = ["module_dependencies", "dependency_closure", "source_stamp", "install_locators", "cache_dirs"]

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


def _direct_imports(module: str, path: Path, sources: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` (source file ``path``) imports directly, read from its text."""
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
    return found


def module_dependencies(package_dir: str | os.PathLike, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (directly), read from the source text."""
    sources = _sources(Path(package_dir), package)
    return {module: _direct_imports(module, path, sources) for module, path in sources.items()}


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


# Read lazily, module by module, and kept for the process: a kernel module's stamp reads only the
# modules its imports reach (formula_kernels: 3 files), not the whole package (~40 ms a process).
@functools.lru_cache(maxsize=None)
def _package_sources(package_dir: str, package: str) -> dict[str, Path]:
    return _sources(Path(package_dir), package)


@functools.lru_cache(maxsize=None)
def _imports_of(package_dir: str, package: str, module: str) -> frozenset[str]:
    sources = _package_sources(package_dir, package)
    return frozenset(_direct_imports(module, sources[module], sources))


@functools.lru_cache(maxsize=None)
def _uses_numba(package_dir: str, package: str, module: str) -> bool:
    return "numba" in _package_sources(package_dir, package)[module].read_text(encoding="utf-8", errors="replace")


def dependency_closure(package_dir: str | os.PathLike, package: str, module: str) -> list[str]:
    """``module`` and the package's Numba-using modules it imports, directly or not; sorted."""
    root = str(Path(package_dir).resolve())
    if module not in _package_sources(root, package):
        return [module]
    seen, todo = set(), list(_imports_of(root, package, module))
    while todo:
        dep = todo.pop()
        if dep not in seen and dep != module:
            seen.add(dep)
            todo.extend(_imports_of(root, package, dep))
    return sorted({module} | {dep for dep in seen if _uses_numba(root, package, dep)})


def _module_name(package_dir: Path, package: str, py_file: Path) -> str:
    rel = py_file.relative_to(package_dir).with_suffix("").parts
    return ".".join((package, *rel[:-1]) if rel[-1] == "__init__" else (package, *rel))


def source_stamp(package_dir: str | os.PathLike, package: str, py_file: str | os.PathLike) -> str:
    """SHA-256 over the sources of ``py_file``'s module and of its Numba-using dependencies (hex)."""
    return _source_stamp(str(Path(package_dir).resolve()), package, str(Path(py_file).resolve()))


@functools.lru_cache(maxsize=None)
def _source_stamp(package_dir: str, package: str, py_file: str) -> str:  # once per kernel module a process
    package_dir, py_file = Path(package_dir), Path(py_file)
    sources = _package_sources(str(package_dir), package)
    digest = hashlib.sha256()
    for module in dependency_closure(package_dir, package, _module_name(package_dir, package, py_file)):
        digest.update(module.encode() + b"\0")
        digest.update(hashlib.sha256(sources[module].read_bytes()).digest())
    return digest.hexdigest()


def install_locators(package_dir: str | os.PathLike, package: str) -> bool:
    """Stamp the cache entries of kernels defined under ``package_dir`` with :func:`source_stamp`.

    Returns False (and changes nothing) when this Numba lacks the internals relied on."""
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover
        return False
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    bases = [getattr(caching, name, None) or getattr(caching, "_" + name, None)
             for name in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")]
    if impl is None or None in bases or not isinstance(getattr(impl, "_locator_classes", None), list):
        return False
    root = Path(package_dir).resolve()
    if any(getattr(cls, "_engine_package", None) == (str(root), package) for cls in impl._locator_classes):
        return True

    def get_source_stamp(self):
        try:
            return source_stamp(root, package, self._py_file)
        except (OSError, KeyError, ValueError):  # a file outside the package's .py modules: Numba's own stamp
            return super(type(self), self).get_source_stamp()

    def from_function(cls, py_func, py_file):
        try:
            if not Path(py_file).resolve().is_relative_to(root):
                return None
        except (OSError, ValueError):
            return None
        return super(cls, cls).from_function(py_func, py_file)

    ours = [type(f"Engine{base.__name__.lstrip('_')}", (base,),
                 {"get_source_stamp": get_source_stamp, "from_function": classmethod(from_function),
                  "_engine_package": (str(root), package), "__module__": __name__})
            for base in bases]
    impl._locator_classes[:0] = ours
    return True
