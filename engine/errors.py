"""One hierarchy for every error and warning engine raises.

Every input problem is an ``EngineInputError``, which is also a ``ValueError`` so that
callers who catch ``ValueError`` keep working. Messages name the column, term or argument at
fault. Kernels never see bad input: the thin Python layer validates first.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = [
    "CallbackError",
    "ColumnNotFoundError",
    "ConvergenceWarning",
    "DataError",
    "DataWarning",
    "EngineError",
    "EngineInputError",
    "EngineWarning",
    "FormulaError",
    "ImputationError",
    "KeywordArgumentError",
    "MissingFieldError",
    "ModelSpecError",
    "PrintError",
    "PriorError",
    "RSyntaxError",
    "SamplerError",
    "warn_user",
]


class EngineError(Exception):
    """Base class of every exception raised by engine."""


class EngineInputError(EngineError, ValueError):
    """The user's input (data, formula, argument) cannot be used as given."""


class FormulaError(EngineInputError):
    """A formula that cannot be parsed or does not fit the data.

    ``position`` is the 0-based character offset of the problem in ``formula`` when known.
    """

    def __init__(self, message: str, formula: str | None = None, position: int | None = None):
        self.formula = formula
        self.position = position
        if formula is not None and position is not None:
            message = f"{message}\n  {formula}\n  {' ' * position}^ (position {position})"
        super().__init__(message)


class RSyntaxError(FormulaError):
    """R source text (a formula, an expression, a call) that R's grammar cannot read."""


class PrintError(EngineInputError):
    """Arguments that a printer (``engine.rcompat``) cannot print as R prints them."""


class MissingFieldError(PrintError, KeyError):
    """A printer's header or table lacks a field it needs (also a ``KeyError``)."""


class DataError(EngineInputError):
    """Data that cannot be used: missing column, non-finite values, no rows left, ..."""


class ColumnNotFoundError(DataError):
    """A column named in a formula or argument is not in the data."""


class NewFactorLevelError(DataError):
    """New data has a factor level the model was not fitted with (R: "factor f has new level z")."""


class ModelSpecError(EngineInputError):
    """A model that cannot be fitted as specified (too few rows, one-level factor, ...)."""


class PriorError(EngineInputError):
    """A prior that is malformed or refers to a parameter class the model does not have."""


class KeywordArgumentError(EngineInputError, TypeError):
    """A call with a keyword argument the function does not take, or a missing or repeated one
    (also a ``TypeError``, what Python raises for such a call)."""


class ImputationError(EngineInputError):
    """An imputation specification that cannot be used (unknown method, wrong shape, ...)."""


class SamplerError(EngineError, RuntimeError):
    """A sampler failed at run time (for example a non-finite log density at the start)."""


class CallbackError(SamplerError):
    """A function the user passed in (a log density given to ``engine.nuts.sample``, a
    ``progress=`` callable of mice / brm) raised while engine was running it; the message names
    the argument, and the user's exception is the ``__cause__`` where it could be kept."""


class EngineWarning(UserWarning):
    """Base class of engine's warnings."""


class ConvergenceWarning(EngineWarning):
    """R-hat above 1.01, low effective sample size, divergences, or max tree depth hit."""


class DataWarning(EngineWarning):
    """Rows dropped, predictors removed, or other changes engine made to the analysis data."""


class ImportanceSamplingWarning(EngineWarning):
    """PSIS-LOO / WAIC diagnostics as R's loo warns: Pareto k too high, tails too short, p_waic > 0.4."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_user(message: str, category: type[Warning] = EngineWarning) -> None:
    """``warnings.warn`` attributed to the user's line: the first frame outside the engine package.

    A fixed ``stacklevel`` is right for one call path only (``engine.brm`` reaches a warning through
    more frames than ``engine.brm_multiple``, and the callable modules add one), so the warning would
    name an engine file; R's warnings name the user's call. Frames are walked from the caller out.
    """
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    # called from engine itself all the way out (``python -m engine``): name engine's caller
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)


class CacheError(DataError):
    """A saved fit (``file=``) that is corrupt, tampered with or inconsistent; the message says
    which files to delete so that the model is refitted."""


class OutputPathError(EngineInputError):
    """An output path (``file=``, ``--report``, ``--json``) that cannot be written, found before
    any work starts."""
