"""Let ``engine.ols(...)`` work although ``engine/ols.py`` is also a submodule named ``ols``.

Importing a submodule makes it an attribute of the package (``engine.ols`` becomes the module),
which would hide the function of the same name. The module is therefore made callable: calling
it calls the function. Used by ``ols``, ``mice``, ``pool``, ``brm``, ``lmer`` and ``loo``.

Why it must stay (checked on Python 3.11): the import system binds a submodule as the package's
attribute when it first loads it, and ``import engine.ols as m`` reads that attribute back
(``IMPORT_FROM``: ``getattr(engine, "ols")``, ``sys.modules`` only if it is missing). So one name
must serve as both. Tried: (1) the package's lazy ``__getattr__`` rebinding ``engine.ols`` to the
function after the first import: ``engine.ols(...)`` works, but ``import engine.ols as m`` then
gives the function, and the tests' ``monkeypatch.setattr(m, ...)`` patch the function, not the
module; (2) importing the functions eagerly in ``engine/__init__.py``: the same, and ``import
engine`` loads Numba (over a second); (3) a property on the package's class: again the function
for ``import engine.ols as m``, and the same ``__class__`` rewrite, only on the package; (4)
renaming the modules (``engine/ols_fit.py``): hides the entry points a reader looks for. A
callable module keeps all four uses: ``engine.ols(...)``, ``from engine.ols import X``, ``import
engine.ols as m`` with monkeypatch, and ``python -m engine``. See docs/ARCHITECTURE.md.
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
