"""Fuzz suite, part 2: crash-prone inputs, each in a fresh interpreter (a segfault fails the test).

- ``engine.nuts.sample`` with a user's Numba log density that raises, returns NaN / +inf, a
  gradient of the wrong length or a non-finite gradient, at the start or in the middle of a run;
  the sampler must stop with a SamplerError naming the chain and iteration (an exception there
  used to kill the process: it is called through a function pointer).
- The command line: every bad option must give a one-to-three-line message on stderr and exit
  status 2 before any work is done (no traceback without --debug).

Run with the rest: ``python -m pytest tests/fuzz -q``; the density cases run together in one
fresh interpreter (harness.classify_batch), all of them in CI too; see test_fuzz_api.py for the
full run.
"""

from __future__ import annotations

import pytest

from tests.fuzz.harness import GOOD, Case, classify, classify_batch, cli_case, subprocess_code

DENSITY = """
@numba.njit
def target(x):
    if x[0] > LIMIT:
        if KIND == 1:
            raise ValueError("user error")
        if KIND == 2:
            return np.nan, -x
        if KIND == 3:
            return np.inf, -x
        if KIND == 4:
            return -0.5 * (x @ x), -x[:1]
        if KIND == 5:
            return -0.5 * (x @ x), np.zeros(1000)
        if KIND == 6:
            return -0.5 * (x @ x), np.full(x.shape[0], np.nan)
    return -0.5 * (x @ x), -x
"""


def _nuts(name: str, kind: int, limit: float, expect: str = "SamplerError", match: str | None = None,
          call: str = "engine.nuts.sample(target, np.zeros(3), chains=2, iter=300, warmup=150, seed=1)",
          extra: str = "") -> Case:
    body = f"KIND = {kind}\nLIMIT = {limit}\n{DENSITY}\n{extra}\ndef run():\n    return {call}\n"
    return Case(name, "nuts", code=subprocess_code(body, expect, match))


def _nuts_check(name: str, body: str, check: str) -> Case:
    return Case(name, "nuts", code=subprocess_code(body, None, None, check))


KINDS = {1: "raises", 2: "nan_logp", 3: "inf_logp", 4: "short_gradient", 5: "long_gradient", 6: "nan_gradient"}
MESSAGES = {1: "raised an exception", 2: "NaN", 3: "NaN or \\+inf", 4: "length 1, expected 3",
            5: "length 1000, expected 3", 6: "non-finite gradient"}

NUTS_CASES = []
for kind, label in KINDS.items():
    # the first trajectory reaches x[0] > 0.5; a run that has warmed up reaches 2.8 only now and then
    # an exception in the user's density is a CallbackError (a SamplerError), the rest SamplerErrors
    expect = "CallbackError" if kind == 1 else "SamplerError"
    NUTS_CASES.append(_nuts(f"{label}_early", kind, 0.5, expect, match=MESSAGES[kind]))
    NUTS_CASES.append(_nuts(f"{label}_mid_run", kind, 2.8, expect, match=MESSAGES[kind] + ".*iteration"))
NUTS_CASES += [
    _nuts("raises_at_initial_position", 1, -1.0, "EngineInputError", "initial position"),
    _nuts("raises_with_data_form", 1, 0.5, "CallbackError", match="raised",
          call="engine.nuts.sample(target2, np.zeros(3), data=np.ones(2), index=np.arange(2), chains=1, iter=200, warmup=100, seed=1)",
          extra="@numba.njit\ndef target2(x, data, index):\n    return target(x)\n"),
    _nuts("raises_in_a_LogDensity", 1, 0.5, "CallbackError", match="raised",
          call="engine.nuts.sample(engine.nuts.LogDensity(target3), np.zeros(3), chains=1, iter=200, warmup=100, seed=1)",
          extra="@numba.njit\ndef target3(x, data, index):\n    return target(x)\n"),
    _nuts("raises_with_thread_executor", 1, 0.5, "CallbackError", match="raised",
          call="engine.nuts.sample(target, np.zeros(3), chains=2, iter=200, warmup=100, seed=1, executor=__import__('concurrent.futures').futures.ThreadPoolExecutor(2))"),
    _nuts("wrong_gradient_at_start", 4, -1.0, "EngineInputError", "shape"),
    _nuts("not_numba", 0, 0.0, "EngineInputError", "numba", call="engine.nuts.sample(lambda x: (0.0, x), np.zeros(2))"),
    _nuts("returns_text", 0, 0.0, "EngineInputError", None,
          call="engine.nuts.sample(bad, np.zeros(2))", extra="@numba.njit\ndef bad(x):\n    return 'a', x\n"),
    _nuts("init_wrong_shape", 0, 9.0, "EngineInputError", "initial_position",
          call="engine.nuts.sample(target, np.zeros((3, 3)), chains=2)"),
    _nuts("init_nan", 0, 9.0, "EngineInputError", "non-finite", call="engine.nuts.sample(target, np.full(3, np.nan))"),
    _nuts("seed_negative", 0, 9.0, "EngineInputError", "seed", call="engine.nuts.sample(target, np.zeros(3), seed=-1)"),
    _nuts("chains_zero", 0, 9.0, "EngineInputError", "chains", call="engine.nuts.sample(target, np.zeros(3), chains=0)"),
    _nuts("warmup_not_below_iter", 0, 9.0, "EngineInputError", "warmup",
          call="engine.nuts.sample(target, np.zeros(3), iter=10, warmup=10)"),
    _nuts("adapt_delta_1.5", 0, 9.0, "EngineInputError", "adapt_delta",
          call="engine.nuts.sample(target, np.zeros(3), adapt_delta=1.5)"),
    _nuts("metric_unknown", 0, 9.0, "EngineInputError", "metric", call="engine.nuts.sample(target, np.zeros(3), metric='x')"),
    _nuts("improper_flat_density", 0, 9.0, "SamplerError", "step-size",
          call="engine.nuts.sample(flat, np.zeros(2), chains=1, iter=50, warmup=25, seed=1)",
          extra="@numba.njit\ndef flat(x):\n    return 0.0 * x[0], np.zeros(x.shape[0])\n"),
    # -inf outside the support is how a density says "impossible": Stan's answer, a truncated draw
    _nuts_check("minus_inf_outside_support_as_stan",
                "@numba.njit\ndef half(x):\n    if x[0] < 0.0:\n        return -np.inf, np.zeros(1)\n"
                "    return -0.5 * x[0] * x[0], -x\n"
                "def run():\n    return engine.nuts.sample(half, np.ones(1), chains=2, iter=1000, warmup=500, seed=3)\n"
                "def check(fit, caught):\n    assert fit.draws.min() >= 0.0\n"
                "    assert abs(fit.draws.mean() - (2 / np.pi) ** 0.5) < 0.1, fit.draws.mean()\n",
                "check"),
]


# CI runs every density case: in one batch interpreter all 28 take ~41 s (load ~3; a fixed subset
# of 10 used to take ~160 s, each case in its own interpreter)


@pytest.fixture(scope="module")
def nuts_results() -> dict:
    """Every density case in one fresh interpreter (harness.classify_batch): 10 cases took 18 s
    together (load ~3.5) where each used to take ~16-20 s in its own interpreter (its start,
    engine's import and the sampler's compilation are paid once); a segfault still fails the case
    that ran into it and every case after it (test_batch_reports_a_crash)."""
    return classify_batch(NUTS_CASES)


@pytest.mark.parametrize("case", NUTS_CASES, ids=[c.id for c in NUTS_CASES])
def test_nuts_user_density(case: Case, nuts_results):
    category, detail = nuts_results[case.name]
    assert category in GOOD, f"{case.id}: {category}: {detail}"


def test_batch_reports_a_crash():
    """A case that kills the batch interpreter is a crash, and so is every case after it."""
    from tests.fuzz.harness import FAILURES, RECORD

    ok = Case("fine", "batch_check", code="print('FUZZ ' + __import__('json').dumps(['clear_error', 'ok']))")
    dies = Case("dies", "batch_check", code="import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    after = Case("after", "batch_check", code=ok.code)
    out = classify_batch([ok, dies, after], timeout=120)
    for key in [k for k in RECORD if k[0] == "batch_check"]:  # not part of the fuzz report
        del RECORD[key]
    FAILURES[:] = [f for f in FAILURES if f[0] != "batch_check"]
    assert out["fine"][0] == "clear_error"
    assert out["dies"][0] == "crash" and "signal 11" in out["dies"][1], out["dies"]
    assert out["after"][0] == "crash" and "not run" in out["after"][1], out["after"]


CLI_CASES = [
    cli_case("seed_negative", ["replicate", "--seed", "-1", "--quiet"], 2, "seed"),
    cli_case("seed_text", ["replicate", "--seed", "abc"], 2, "--seed"),
    cli_case("sampler_unknown", ["replicate", "--sampler", "metropolis"], 2, "sampler"),
    cli_case("option_unknown", ["replicate", "--colour"], 2, "unrecognized"),
    cli_case("no_command", [], 2, "command"),
    cli_case("command_unknown", ["explode"], 2, "invalid choice"),
    cli_case("json_unwritable", ["replicate", "--json", "/proc/engine-none/out.json", "--quiet"], 2, "--json"),
    cli_case("json_is_directory", ["replicate", "--json", "/tmp", "--quiet"], 2, "directory"),
    cli_case("json_under_a_file", ["replicate", "--json", "/etc/hostname/out.json", "--quiet"], 2, "--json"),
    cli_case("report_is_file", ["replicate", "--report", "/etc/hostname", "--quiet"], 2, "--report"),
    cli_case("report_unwritable", ["replicate", "--report", "/proc/engine-none/report", "--quiet"], 2, "--report"),
    cli_case("data_missing", ["replicate", "--data", "/nonexistent/data.csv", "--quiet"], 2, "not found"),
    cli_case("data_directory", ["replicate", "--data", "/tmp", "--quiet"], 2, "not a file"),
    cli_case("data_unsupported", ["replicate", "--data", "/etc/hostname", "--quiet"], 2, "unsupported"),
    cli_case("data_garbage_csv", ["replicate", "--data", "tests/fixtures/fuzz/garbage.csv", "--quiet"], 2, "cannot be read"),
    cli_case("data_text_column", ["replicate", "--data", "tests/fixtures/fuzz/text_in_raven.csv", "--quiet"], 2, "raven"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_command_line(case: Case):
    category, detail = classify(case)
    assert category in GOOD, f"{case.id}: {category}: {detail}"
