"""The sampler contract of the multilevel model layer: registered objects with declared options."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.errors import EngineInputError
from engine.multilevel import nested_frame, build_model
from engine.multilevel.sampler import ChainResult, Sampler, get_sampler, register_sampler, sampler_names


def test_builtin_order_does_not_depend_on_import_order():
    """A program (or an earlier test) that imports the NUTS target first still lists gibbs first."""
    import subprocess
    import sys

    code = ("import engine.multilevel.nuts_target\n"
            "from engine.multilevel.sampler import sampler_names\n"
            "print(','.join(sampler_names()[:2]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "gibbs,nuts"


def test_builtin_samplers_are_registered_with_declared_options():
    assert sampler_names()[:2] == ("gibbs", "nuts")
    gibbs, nuts = get_sampler("gibbs"), get_sampler("NUTS")
    assert isinstance(gibbs, Sampler) and isinstance(nuts, Sampler)
    assert "marginalize" in nuts.options and "marginalize" not in gibbs.options
    assert "adapt_delta" in nuts.options and "collapse" in gibbs.options
    with pytest.raises(EngineInputError, match="unknown sampler 'hmc'"):
        get_sampler("hmc")


def test_a_registered_sampler_runs_through_brm():
    """A new sampler is one registered object: brm validates its declared options and runs it."""

    class Halving:
        name = "halving-gibbs"
        options = {"factor": 1.0}

        def run_chain(self, model, n_iter, n_warmup, seed, thin=1, factor=1.0):
            result = get_sampler("gibbs").run_chain(model, n_iter, n_warmup, seed, thin=thin)
            return ChainResult(result.draws * factor, result.ranef, {})

    register_sampler(Halving())
    rng = np.random.default_rng(0)
    school = np.repeat(np.arange(6), 8)
    data = {"y": rng.normal(size=48) + school * 0.3, "x": rng.normal(size=48), "school": school}
    import pandas as pd

    frame = pd.DataFrame(data)
    plain = engine.brm("y ~ x + (1 | school)", frame, chains=2, iter=300, warmup=100, seed=5)
    mine = engine.brm("y ~ x + (1 | school)", frame, sampler="halving-gibbs", chains=2, iter=300, warmup=100,
                      seed=5, factor=0.5)
    np.testing.assert_array_equal(mine.draws_array(), 0.5 * plain.draws_array())
    with pytest.raises(EngineInputError, match="has no option 'adapt_delta'"):
        engine.brm("y ~ x + (1 | school)", frame, sampler="halving-gibbs", adapt_delta=0.9)
    with pytest.raises(EngineInputError, match="marginalize=True applies to sampler='nuts' only"):
        engine.brm("y ~ x + (1 | school)", frame, sampler="halving-gibbs", marginalize=True)


def test_a_non_sampler_is_refused():
    with pytest.raises(EngineInputError, match="does not implement"):
        register_sampler(object())
