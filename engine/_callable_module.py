"""Let ``engine.ols(...)`` work although ``engine/ols.py`` is also a submodule named ``ols``.

Importing a submodule makes it an attribute of the package (``engine.ols`` becomes the module),
which would hide the function of the same name. The module is therefore made callable: calling
it calls the function. Used by ``ols``, ``mice``, ``pool`` and ``brm``.
"""

from __future__ import annotations

import sys
import types


def make_module_callable(module_name: str, function_name: str) -> None:
    """Make ``sys.modules[module_name]`` forward calls to its attribute ``function_name``."""
    module = sys.modules[module_name]

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, function_name)(*args, **kwargs)

    CallableModule.__name__ = f"CallableModule[{module_name}]"
    module.__class__ = CallableModule
