"""The multilevel model layer: the model as arrays, its priors, the sampler contract and the results.

- ``model``: ``MultilevelModel`` (the one input of every sampler) and ``build_model`` from a model
  frame; brms parameter names.
- ``priors``: brms-style prior statements, defaults and ``prior_summary`` (``engine.prior``).
- ``location``: the exact Gaussian draw of the location block, shared by the samplers
  (``draw_ranef``).
- ``sampler``: the ``Sampler`` protocol, ``ChainResult`` and the registry ``engine.brm`` uses.
- ``nuts_target``: the NUTS sampler's log densities (non-centred and collapsed).
- ``results``: ``BrmFit`` / ``BrmMultipleFit`` and the saved-fit format.

The Gibbs sampler (``engine.gibbs``) and the user entry points (``engine.brm``) sit beside the
package, at the top of ``engine``.
"""

from __future__ import annotations

from engine.multilevel.model import (
    MultilevelModel,
    SimpleFrame,
    SimpleGroup,
    build_model,
    nested_frame,
    parameter_names,
    ranef_names,
)

__all__ = ["MultilevelModel", "SimpleFrame", "SimpleGroup", "build_model", "nested_frame", "parameter_names",
           "ranef_names"]
