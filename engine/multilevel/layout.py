"""What a fitted multilevel model reports besides its draws: names, groups, priors, fingerprint.

``describe(frame, priors)`` is the one question ``engine.brm`` asks the model layer per data set: it
builds the MultilevelModel and returns it with the parameter and random-effect names (brms'), the
grouping factors, the prior_summary table, the number of observations and the data fingerprint.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np
import pandas as pd

from engine.multilevel.model import MultilevelModel, build_model, parameter_names, ranef_names
from engine.multilevel.priors import prior_summary_table
from engine.multilevel.results import GroupInfo

__all__ = ["ModelLayout", "describe", "frame_hash"]


class ModelLayout(NamedTuple):
    """The model and its bookkeeping: model (MultilevelModel), parameter_names, ranef_names (lists of
    brms names), groups (GroupInfo per grouping factor), priors (prior_summary DataFrame), nobs,
    n_dropped, data_hash (frame_hash of the frame)."""

    model: MultilevelModel
    parameter_names: list
    ranef_names: list
    groups: list
    priors: pd.DataFrame
    nobs: int
    n_dropped: int
    data_hash: str


def frame_hash(frame) -> str:
    """SHA-256 fingerprint of the arrays a model is fitted to (response, design, names, groups)."""
    digest = hashlib.sha256()
    digest.update(frame.formula.encode())
    digest.update("\x00".join(frame.column_names).encode())
    digest.update(np.ascontiguousarray(frame.y, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(frame.X, dtype=np.float64).tobytes())
    for group in frame.groups:
        digest.update(group.name.encode())
        digest.update(np.ascontiguousarray(group.codes, dtype=np.int64).tobytes())
        digest.update("\x00".join(str(level) for level in group.levels).encode())
    for effect in getattr(frame, "random_effects", ()) or ():
        if list(effect.coef_names) != ["(Intercept)"]:  # slopes: their design too
            digest.update(effect.group.encode())
            digest.update("\x00".join(effect.coef_names).encode())
            digest.update(np.ascontiguousarray(effect.Z, dtype=np.float64).tobytes())
    return digest.hexdigest()


def describe(frame, priors=None, sample_prior: str = "no") -> ModelLayout:
    """Build the model of ``frame`` (a ModelFrame with groups) under ``priors`` and describe it."""
    model = build_model(frame, priors, sample_prior=sample_prior)
    groups = [GroupInfo(name, tuple(str(level) for level in levels))
              for name, levels in zip(model.group_names, model.group_levels)]
    return ModelLayout(model, list(parameter_names(model)), list(ranef_names(model)), groups,
                       prior_summary_table(model), int(len(frame.y)), int(frame.n_dropped), frame_hash(frame))
