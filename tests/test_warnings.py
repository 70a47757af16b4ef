"""engine's warnings name the user's line, whatever the call path (engine.errors.warn_user)."""
import warnings

import numpy as np
import pandas as pd
import pytest

import engine
from engine.errors import DataWarning, EngineWarning, ImportanceSamplingWarning, warn_user


def _caught(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, (EngineWarning, FutureWarning))]


def test_ols_warning_points_at_the_callers_line():
    x = np.arange(20.0)
    data = pd.DataFrame({"y": 2.0 * x + 1.0, "x": x})
    fit = engine.ols("y ~ x", data)
    caught = _caught(lambda: fit.summary())
    assert caught and all(w.filename == __file__ for w in caught)
    assert any("essentially perfect fit" in str(w.message) for w in caught)


def test_lmer_warning_points_at_the_callers_line():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(10), 6)
    x = rng.normal(size=60)
    data = pd.DataFrame({"y": rng.normal(size=60) + g * 0.3, "x": x, "x2": 2.0 * x, "g": g.astype(str)})
    caught = _caught(lambda: engine.lmer("y ~ x + x2 + (1 | g)", data))
    assert any("rank deficient" in str(w.message) for w in caught)
    assert all(w.filename == __file__ for w in caught)


def test_loo_warning_points_at_the_callers_line():
    rng = np.random.default_rng(4)
    log_lik = rng.normal(size=(2, 50, 8))
    log_lik[:, :, 0] += rng.standard_cauchy(size=(2, 50)) * 40.0  # heavy tail: Pareto k warning
    caught = _caught(lambda: engine.loo(log_lik))
    assert any(issubclass(w.category, ImportanceSamplingWarning) for w in caught)
    assert all(w.filename == __file__ for w in caught)


def test_warn_user_from_a_callers_frame():
    with pytest.warns(DataWarning) as record:
        warn_user("message", DataWarning)
    assert record[0].filename == __file__
