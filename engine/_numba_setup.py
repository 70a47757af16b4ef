"""Numba settings for engine's kernels, applied once per process before any of them compiles.

Every module that defines a kernel imports this module (``from engine import _numba_setup``), so
it runs before the first kernel is compiled; ``import engine`` alone still imports no Numba.

Cache stamps: a kernel's cache entry is valid for the sources of its module and of the engine
modules it calls into (``engine._kernel_cache``), not its own file's alone.

Slice assignment from an array (``a[i, :] = b``) makes Numba link, into every kernel that has one,
a shape-mismatch error whose message formats both shapes at run time
(``numba.np.arrayobj.ol_raise_with_shape_context_cpu``: f-strings, ``str.join``, ``str(int)``).
Compiling that string machinery costs about 4 CPU seconds the first time in each process, a third
of a cold ``engine.ols`` (measured: 13.3 -> 8.8 CPU s; issue 16). Engine's kernels assign
slices of matching shapes by construction, so the message is never shown; Numba's own "generic"
implementation of the same error (a constant message, ``cannot assign slice from input of
different size``, still a ValueError) is used instead. This changes that message only, for
kernels compiled in this process (Numba has no per-kernel switch); results are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numba  # noqa: F401 - the kernels' modules need it anyway

from engine._kernel_cache import install_locators


def _constant_slice_shape_error() -> bool:
    """Point Numba's CPU overload of ``raise_with_shape_context`` at its generic one; True if done.

    The overload templates are found in Numba's builtin typing registry, where ``@overload`` put
    them when ``numba.np.arrayobj`` was imported, rather than through the typing context: resolving
    the function there would first ``refresh()`` the context at import (~0.25 s; Numba's first cache
    load or compile refreshes it anyway, so a warm first call costs the same, issue 16). A later
    refresh installs these same template classes, so the change holds for every compile.
    """
    try:
        from numba.core.typing.templates import builtin_registry
        from numba.np import arrayobj

        generic = arrayobj.ol_raise_with_shape_context_generic
        cpu = arrayobj.ol_raise_with_shape_context_cpu
        target = arrayobj.raise_with_shape_context
        function_types = [ty for func, ty in builtin_registry.globals if func is target]
    except (ImportError, AttributeError):  # another Numba version: leave it as it is
        return False
    done = False
    for function_type in function_types:
        for template in getattr(function_type, "templates", ()):
            if getattr(template, "_overload_func", None) is cpu:
                template._overload_func = staticmethod(generic)
                done = True
    return done


CONSTANT_SLICE_SHAPE_ERROR = _constant_slice_shape_error()
# a kernel's cache entry stamped with its module's sources and those of the engine kernels it calls
CONTENT_STAMPED_CACHE = install_locators(Path(__file__).resolve().parent, "engine")
