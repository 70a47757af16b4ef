"""`python -m engine replicate` end to end (quick mode): JSON numbers, printed tables, report."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
from engine.datasets import load_grit
from engine.replicate import OLS_MODELS, TREATMENT, effects_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def replicate_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicate")
    json_path = out / "out.json"
    report_dir = out / "report"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "replicate", "--quick", "--seed", "11",
         "--json", str(json_path), "--report", str(report_dir)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(json_path.read_text()), report_dir


def test_ols_models_equal_engine_ols(replicate_run):
    _, numbers, _ = replicate_run
    data = load_grit()
    assert list(numbers["ols"]) == [name for name, _ in OLS_MODELS]
    for name, formula in OLS_MODELS:
        fit = engine.ols(formula, data)
        got = numbers["ols"][name]
        assert got["formula"] == formula
        assert got["nobs"] == fit.nobs and got["n_deleted"] == fit.n_dropped
        for term, value in fit.params.items():
            if np.isnan(value):
                assert got["estimate"][term] is None
            else:
                assert got["estimate"][term] == pytest.approx(value, rel=1e-12)
                assert got["std_error"][term] == pytest.approx(fit.bse[term], rel=1e-12)


def test_pooled_results_carry_barnard_rubin_df(replicate_run):
    _, numbers, _ = replicate_run
    assert set(numbers["pooled"]) == {"model1 (mathscore2)", "model1 (mathscore3)"}
    for entry in numbers["pooled"].values():
        table = entry["table"]
        pooled = entry["pooled"]
        df = np.array(table["df"], dtype=float)
        dfcom = np.array(pooled["dfcom"], dtype=float)
        # Barnard-Rubin df are finite, positive and below the complete-data df
        assert np.all(np.isfinite(df)) and np.all(df > 0) and np.all(df <= dfcom)
        assert table["term"][-1] == TREATMENT
        for key in ("riv", "lambda", "fmi"):
            assert all(v is not None for v in pooled[key])


def test_multilevel_fits_carry_rhat_and_ess(replicate_run):
    _, numbers, _ = replicate_run
    assert len(numbers["bayes"]) == 3  # school, school/class, and the bernoulli model of choicer1
    for entry in numbers["bayes"].values():
        row = entry["summary"][f"b_{TREATMENT}"]
        assert row["Rhat"] is not None and row["Rhat"] > 0.99
        assert row["Bulk_ESS"] > 50 and row["Tail_ESS"] > 50
        assert f"b_{TREATMENT}" in entry["rhat_within"]
    nested = [e for name, e in numbers["bayes"].items() if "class" in name][0]
    assert "sd_schoolid:classid__Intercept" in nested["summary"]


def test_closing_table_has_one_row_per_model(replicate_run):
    proc, numbers, _ = replicate_run
    effects = numbers["treatment_effects"]
    # + the paper's own specification; the bernoulli model adds two rows (log-odds, average effect)
    assert len(effects) == (len(numbers["ols"]) + len(numbers["pooled"]) + len(numbers["bayes"])
                            + len(["paper_spec"])  # the paper's own specification
                            + 2 * len(numbers["lmer"])  # lmer: complete cases and pooled
                            + 1)  # the bernoulli model's average effect on the probability
    for e in effects:
        assert set(e) >= {"model", "method", "estimate", "std_error", "lower", "upper"}
        assert e["lower"] < e["estimate"] < e["upper"]
    assert effects[0]["estimate"] == pytest.approx(numbers["ols"]["model1"]["estimate"][TREATMENT])
    assert effects_table(effects).splitlines()[0] in proc.stdout


def test_every_table_printed_and_reported(replicate_run):
    proc, numbers, report_dir = replicate_run
    out = proc.stdout
    assert out.count("Residual standard error:") == len(OLS_MODELS) + 1  # + the paper's specification
    assert out.count("2.5 %") >= 2  # pooled summaries
    assert out.count("Group-Level Effects:") == 3
    assert " Family: bernoulli \n  Links: mu = logit \n" in out
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    assert page.count("<pre>") == len(OLS_MODELS) + 1 + 2 + 3 + 4 + 1 + 1  # + 4 lmer blocks, the paper's specification
    assert out.count("Linear mixed model fit by REML ['lmerMod']") == 2
    # the LOO table of each Bayesian model (brm_multiple: per imputed data set and combined)
    assert page.count('<pre class="loo"') == 3 and page.count("Per imputed data set") == 3
    pytest.importorskip("matplotlib")
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert len(alts) == 1 + 2 * 2 + 3 + 2  # forest, trace + rank x 2, posterior predictive check x 3, mice x 2
    assert sum(a.startswith("Posterior predictive check: ") for a in alts) == 3
