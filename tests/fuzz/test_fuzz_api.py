"""Fuzz suite, part 1: bad and edge-case inputs to the public API, in this process.

Hand-written cases (tests/fuzz/cases.py) and hypothesis-generated ones (below); each input must
give an engine error of the right class or R's answer (categories: tests/fuzz/harness.py).
Crash-prone inputs (a user's Numba density, the command line) are in test_fuzz_subprocess.py.

CI runs everything with a small number of generated examples per property. The full run, with
many more generated examples and a report of the counts per category::

    ENGINE_FUZZ=full ENGINE_FUZZ_REPORT=fuzz_report.md python -m pytest tests/fuzz -q

(the table is printed at the end of any run of tests/fuzz as well).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.multilevel.results import load_fit
from engine import diagnostics, errors
from tests.fuzz import cases
from tests.fuzz.harness import GOOD, Case, classify, classify_either

FULL = os.environ.get("ENGINE_FUZZ") == "full"
FUZZ = settings(max_examples=200 if FULL else 12, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SLOW_FUZZ = settings(FUZZ, max_examples=60 if FULL else 4)

ALL = cases.all_cases()


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_hand_written(case: Case):
    category, detail = classify(case)
    assert category in GOOD, f"{case.id}: {category}: {detail}"


def _assert_good(area: str, name: str, run, expect=None, match=None, check=None):
    category, detail = classify(Case(name, area, run, expect, match, check))
    assert category in GOOD, f"{area}:{name}: {category}: {detail}"


# ------------------------------------------------------------------ generated: seeds

BAD_SEEDS = st.one_of(
    st.integers(max_value=-1), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(),
    st.lists(st.integers(), max_size=2).map(tuple).filter(lambda t: any(v < 0 for v in t)),
)


@FUZZ
@given(seed=BAD_SEEDS)
def test_generated_bad_seeds(seed):
    import numba

    @numba.njit
    def normal(x):
        return -0.5 * (x @ x), -x

    d = cases.mice_frame()
    for name, run in (("mice", lambda: engine.mice(d, m=1, maxit=1, seed=seed)),
                      ("brm", lambda: cases.brm(seed=seed)),
                      ("nuts", lambda: engine.nuts.sample(normal, np.zeros(2), seed=seed))):
        _assert_good(name, f"seed={seed!r}", run, errors.EngineInputError)


# ------------------------------------------------------------------ generated: ols scale invariance


@FUZZ
@given(power=st.integers(min_value=-300, max_value=300), which=st.sampled_from(["x", "y"]))
def test_generated_ols_scale_is_r(power, which):
    """R's lm is scale-equivariant for any finite scale (lm_edge_cases.R shows 1e-300 .. 1e250):
    the slope on x * 10^k is the plain slope / 10^k; never aliased; no error."""
    x, y = cases.lm_data()
    plain = engine.ols("y ~ x", cases.frame())
    scale = 10.0 ** power
    data = cases.frame(x=x * scale) if which == "x" else cases.frame(y=y * scale)

    def check(fit, caught):
        assert not fit._ls.aliased.any()
        expected = plain.params.to_numpy() * (np.array([1.0, 1.0 / scale]) if which == "x" else scale)
        np.testing.assert_allclose(fit.params.to_numpy(), expected, rtol=1e-9)

    _assert_good("ols", f"{which}*1e{power}", lambda: engine.ols("y ~ x", data), check=check)


# ------------------------------------------------------------------ generated: ols bad values

BAD_VALUES = st.sampled_from([np.inf, -np.inf, np.nan, 1e308, -1e308, 5e-324, 0.0])


@FUZZ
@given(value=BAD_VALUES, row=st.integers(0, 19), column=st.sampled_from(["x", "y", "z"]))
def test_generated_ols_bad_values(value, row, column):
    """One extreme value anywhere: an engine error naming the column, or a finite fit (NaN rows
    are dropped, as R's na.omit)."""
    rng = np.random.default_rng(row)
    d = cases.frame(z=rng.normal(size=20))
    d.loc[row, column] = value

    def run():
        return engine.ols("y ~ x + z", d)

    def check(fit, caught):
        assert np.isfinite(fit.params.to_numpy()).all() or fit._ls.aliased.any()

    category, detail = classify_either(Case(f"{column}[{row}]={value}", "ols", run, errors.DataError), check)
    assert category in GOOD, detail


# ------------------------------------------------------------------ generated: formula garbage

TOKENS = st.sampled_from(["y", "x", "z", "~", "+", "-", "*", ":", "(", ")", "|", "^", "2", "I(", "log(", "1", "0",
                          " ", ".", "%in%", "/", ",", "g", "factor(", "Inf", "NA", "``", "`x`", "'"])


@FUZZ
@given(parts=st.lists(TOKENS, min_size=0, max_size=12))
def test_generated_formula_garbage(parts):
    """Random token strings: a fit, or a formula / data / model error; never a raw error."""
    text = "".join(parts)
    d = cases.frame(z=np.arange(20.0) % 3, g=np.arange(20) % 4)
    # a valid formula is fitted, as R does (parsing is tested against R in test_formula.py)
    category, detail = classify_either(Case(repr(text), "formula", lambda: engine.ols(text, d), errors.EngineInputError), None)
    assert category in GOOD, detail


# ------------------------------------------------------------------ generated: mice bad values


@SLOW_FUZZ
@given(value=st.sampled_from([np.inf, -np.inf, 1e300, -1e200, 2e150]), column=st.sampled_from(["a", "b", "c"]),
       row=st.integers(0, 29))
def test_generated_mice_bad_values(value, column, row):
    d = cases.mice_frame()
    d.loc[row, column] = value
    _assert_good("mice", f"{column}[{row}]={value}", lambda: engine.mice(d, m=1, maxit=1, seed=1),
                 errors.DataError, f"'{column}'")


# ------------------------------------------------------------------ generated: diagnostics


@FUZZ
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=4), kind=st.sampled_from(["f", "c", "U", "O", "b"]),
       name=st.sampled_from(["rhat", "ess_bulk", "ess_tail", "mcse_mean", "ess_mean"]))
def test_generated_diagnostics_arrays(shape, kind, name):
    """Any shape and dtype: a number (real 1-D/2-D input with draws) or an input error."""
    size = int(np.prod(shape)) if shape else 1
    base = np.arange(size, dtype=float).reshape(shape) if shape else np.float64(1.0)
    arr = {"f": base, "c": base + 1j, "U": np.asarray(base).astype(str), "O": np.asarray(base).astype(object),
           "b": np.asarray(base) > 1}[kind]
    f = getattr(diagnostics, name)

    def check(result, caught):
        assert isinstance(result, float)

    valid = kind in "fb" and len(shape) in (1, 2) and all(s > 0 for s in shape)
    if valid:
        category, detail = classify(Case(f"{kind}{shape}", "diagnostics", lambda: f(arr), None, None, check))
    else:
        category, detail = classify(Case(f"{kind}{shape}", "diagnostics", lambda: f(arr), errors.EngineInputError))
    assert category in GOOD, detail


# ------------------------------------------------------------------ generated: pool


@FUZZ
@given(se=st.lists(st.floats(min_value=-10, max_value=10, allow_nan=False), min_size=3, max_size=3))
def test_generated_pool_standard_errors(se):
    fits = [cases._Fit([1.0 + 0.1 * i], [s]) for i, s in enumerate(se)]

    def check(result, caught):
        assert np.isfinite(result.t).all() and result.t[0] >= 0

    expect = errors.EngineInputError if min(se) < 0 else None
    _assert_good("pool", f"se={se}", lambda: engine.pool(fits), expect, "negative" if expect else None,
                 None if expect else check)


# ------------------------------------------------------------------ generated: the fit cache


@SLOW_FUZZ
@given(which=st.sampled_from(["npz", "json"]), position=st.floats(0, 1, exclude_max=True), byte=st.integers(0, 255))
def test_generated_cache_byte_flips(which, position, byte):
    """One byte of a saved fit changed: a CacheError, or (a change that leaves the content intact,
    e.g. in the JSON's whitespace or creation time) the same fit as saved."""
    from pathlib import Path

    target, npz_path, json_path = cases._copy_fit(f"flip_{which}_{int(position * 1e6)}_{byte}")
    path = Path(npz_path if which == "npz" else json_path)
    content = bytearray(path.read_bytes())
    content[int(position * len(content))] = byte
    path.write_bytes(bytes(content))
    original = load_fit(cases.saved_fit())

    def check(fit, caught):
        np.testing.assert_array_equal(fit.draws_values, original.draws_values)
        assert fit.parameter_names == original.parameter_names

    category, detail = classify_either(Case(f"{which}@{position:.3f}={byte}", "cache",
                                            lambda: load_fit(target), errors.CacheError), check)
    assert category in GOOD, detail
