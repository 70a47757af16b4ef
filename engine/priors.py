"""``engine.priors``: the brms-style prior statements of the multilevel models.

The implementation lives in ``engine.multilevel.priors`` (the model layer); this module keeps the
public spelling ``engine.priors.prior(...)`` (also ``engine.prior``).
"""

from __future__ import annotations

from engine.multilevel.priors import *  # noqa: F401,F403
from engine.multilevel.priors import __all__  # noqa: F401
