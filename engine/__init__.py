"""engine: a Numba-accelerated statistics engine for multilevel data.

The public API (imported lazily so that ``import engine`` stays fast):

- ``engine.ols(formula, data)``: least squares with R formulas, printing like ``summary(lm())``.
- ``engine.mice(data, m=5, ...)`` and ``engine.pool(fits)``: multiple imputation by chained
  equations and Rubin's rules with Barnard-Rubin degrees of freedom, as R's mice.
- ``engine.brm(formula, data, ...)``, ``engine.brm_multiple(formula, imp, ...)``,
  ``engine.prior(...)``: Bayesian multilevel models (Gibbs or NUTS), brms-style results.
- ``engine.loo(fit_or_log_lik)``, ``engine.waic``, ``engine.loo_compare``: PSIS-LOO as R's loo 2.5.1.
- ``engine.lmer(formula, data, REML=True)``, ``engine.anova(fit_a, fit_b)``: linear mixed models as
  lme4 (nested, crossed, random slopes), printing like ``summary(lmer())``.
- ``engine.datasets.load_grit()``: the study data (Alan, Boneva & Ertac 2019).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "ols": "engine.ols",
    "mice": "engine.mice",
    "pool": "engine.pool",
    "brm": "engine.brm",
    "brm_multiple": "engine.brm",
    "prior": "engine.priors",
    "loo": "engine.loo",
    "waic": "engine.loo",
    "loo_compare": "engine.loo",
    "load_grit": "engine.datasets",
    "load_grit_raw": "engine.datasets",
    "lmer": "engine.lmer",
    "anova": "engine.lmer",
}
_SUBMODULES = {
    "datasets", "errors", "formula", "diagnostics", "gibbs", "nuts", "hmc", "impute", "rcompat",
    "multilevel", "priors", "parallel", "progress", "report", "replicate",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"engine.{name}")
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_SUBMODULES))
