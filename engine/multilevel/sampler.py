"""The sampler contract of the multilevel model layer: what a sampler is, what it returns, and the
registry ``engine.brm`` chooses from.

A sampler is an object with

- ``name``: the string users pass as ``brm(..., sampler=name)``;
- ``options``: the keyword options it accepts, declared as a mapping name -> default (``brm``
  validates a user's options against it before any chain starts; no signature sniffing);
- ``run_chain(model, n_iter, n_warmup, seed, thin=1, **options) -> ChainResult``: one chain of
  ``n_iter`` iterations on an ``engine.multilevel.MultilevelModel``, keeping every ``thin``-th
  iteration after ``n_warmup`` (iterations n_warmup, n_warmup + thin, ...).

Samplers register themselves with ``register_sampler`` when their module is imported;
``get_sampler(name)`` imports the built-in ones (``engine.gibbs``, ``engine.multilevel.nuts_target``,
and for the bernoulli/binomial/poisson families ``engine.multilevel.gibbs_pg`` and
``engine.multilevel.nuts_glm``) first. A sampler may declare ``families``, the response families it
runs (default ``("gaussian",)``): the registry holds one implementation per (name, family), and
``get_sampler(name, family)`` is the one place that picks the implementation for a model's family.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Protocol, runtime_checkable

import numpy as np

from engine.errors import EngineInputError

__all__ = ["ChainResult", "Sampler", "register_sampler", "get_sampler", "sampler_names", "thin_stats"]


class ChainResult(NamedTuple):
    """One chain's kept draws.

    draws: (n_kept, n_params) in the order of engine.multilevel.parameter_names(model);
    ranef: (n_kept, L) random effects in the order of ranef_names(model) ((n_kept, 0) when not saved);
    stats: sampler statistics, per kept draw ((n_kept,) arrays) or per chain (any other shape;
    e.g. NUTS' warm-up gradient count); Gibbs: none, an empty dict.
    """

    draws: np.ndarray
    ranef: np.ndarray
    stats: dict


@runtime_checkable
class Sampler(Protocol):
    """The protocol every multilevel sampler implements (see the module docstring)."""

    name: str
    options: Mapping[str, Any]

    def run_chain(self, model, n_iter: int, n_warmup: int, seed, thin: int = 1, **options) -> ChainResult:
        ...


_REGISTRY: dict[str, dict[str, Sampler]] = {}  # name -> family -> implementation


def register_sampler(sampler: Sampler) -> Sampler:
    """Add ``sampler`` to the registry under ``sampler.name`` for each of its ``families`` (default
    ``("gaussian",)``; a later registration replaces an earlier one for the same name and family)."""
    if not isinstance(sampler, Sampler):
        raise EngineInputError(f"{sampler!r} does not implement engine.multilevel.sampler.Sampler")
    for family in getattr(sampler, "families", ("gaussian",)):
        _REGISTRY.setdefault(sampler.name, {})[family] = sampler
    return sampler


def _load_builtin() -> None:
    # importing a sampler's module registers it
    from engine import gibbs  # noqa: F401
    from engine.multilevel import gibbs_pg, nuts_glm, nuts_target  # noqa: F401


#: The built-in samplers' names in the order they are listed (whichever module a program imported first).
_BUILTIN_ORDER = ("gibbs", "nuts")


def sampler_names() -> tuple[str, ...]:
    """The registered samplers' names: the built-in ones first, in ``_BUILTIN_ORDER``, then the others
    in the order they registered."""
    _load_builtin()
    rank = {name: i for i, name in enumerate(_BUILTIN_ORDER)}
    return tuple(sorted(_REGISTRY, key=lambda name: rank.get(name, len(rank))))  # stable for the others


def get_sampler(name, family: str = "gaussian") -> Sampler:
    """The registered sampler called ``name`` (case-insensitive) for the response ``family`` (a name such
    as "bernoulli"); EngineInputError naming the choices (the samplers there are for that family)."""
    _load_builtin()
    key = name.lower() if isinstance(name, str) else None
    if key not in _REGISTRY:
        raise EngineInputError(f"unknown sampler {name!r}: choose one of {', '.join(repr(s) for s in sampler_names())}")
    implementations = _REGISTRY[key]
    if family not in implementations:
        others = [n for n, by_family in _REGISTRY.items() if family in by_family]
        # a sampler may say why it has no implementation for a family (``unavailable_families``: family -> why)
        why = next((getattr(s, "unavailable_families", {})[family] for s in implementations.values()
                    if family in getattr(s, "unavailable_families", {})), "")
        raise EngineInputError(
            f"sampler={key!r} is not available for the {family} family{' (' + why + ')' if why else ''}"
            + (f"; use {' or '.join(f'sampler={n!r}' for n in others)}" if others else ""))
    return implementations[family]


def thin_stats(stats: dict, n_rows: int, keep: slice) -> dict:
    """Per-draw statistics (first axis of length ``n_rows``) sliced by ``keep``; others kept whole."""
    out = {}
    for name, values in dict(stats or {}).items():
        values = np.asarray(values)
        out[name] = values[keep] if values.ndim >= 1 and values.shape[0] == n_rows else values
    return out
