"""LmerFit.predict against lme4 1.1-31's predict.merMod (fixtures/lmer/predict.json, made by
predict_ref.R there): all terms, none (re.form = NA), a subset (re.form = ~(1 | plate)), new
levels at the population level, a missing covariate as NaN, missing grouping values as new levels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import errors
from engine.lmer import lmer

FIX = Path(__file__).parent / "fixtures" / "lmer"
CASES = json.loads((FIX / "predict.json").read_text())["cases"]


def _newdata(case):
    nd = pd.DataFrame(case["newdata"])
    if "Days" in nd:
        nd["Days"] = pd.to_numeric(nd["Days"])
    return nd


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_predict_as_lme4(case):
    d = pd.read_csv(FIX / f"lme4_{case['data']}.csv")
    # R deparses (Days || Subject) expanded and parenthesised: ((1 | Subject) + (0 + Days | Subject))
    fit = lmer(case["formula"].replace("((", "(").replace("))", ")"), d, REML=case["REML"])
    args = case["args"]
    re_form = None
    if "re.form" in args:
        re_form = "~0" if args["re.form"] is None else args["re.form"]
    nd = _newdata(case)
    before = nd.copy()
    got = fit.predict(nd, re_form=re_form, allow_new_levels=bool(args.get("allow.new.levels", False)))
    pd.testing.assert_frame_equal(nd, before)
    exp = np.array([np.nan if v == "NA" else v for v in case["predict"]], dtype=float)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exp))
    # lme4's default optimum is within ~1e-8 of the criterion's: predictions agree to ~1e-6
    np.testing.assert_allclose(got[~np.isnan(exp)], exp[~np.isnan(exp)], rtol=2e-6)


def test_predict_new_level_is_an_error_unless_allowed():
    d = pd.read_csv(FIX / "lme4_sleepstudy.csv")
    fit = lmer("Reaction ~ Days + (Days | Subject)", d)
    nd = pd.DataFrame({"Days": [1.0], "Subject": ["999"]})
    with pytest.raises(errors.NewFactorLevelError, match="Subject"):
        fit.predict(nd)
    assert fit.predict(nd, allow_new_levels=True)[0] == pytest.approx(fit.predict(nd, re_form="~0")[0])
    np.testing.assert_allclose(fit.predict(), fit.fitted, rtol=1e-12)
    with pytest.raises(errors.ModelSpecError, match="re_form"):
        fit.predict(nd, re_form="~ (1 | nosuch)")
