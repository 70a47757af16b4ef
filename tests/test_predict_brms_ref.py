"""engine's predictions on brms' own draws against brms 2.18's own predictions of the same fits.

tests/fixtures/brms_predict/make_brms_predict.R fits four tiny models with brms 2.18 (gaussian with a
random slope, bernoulli with a random slope, binomial with trials, poisson with a random slope),
exports every draw (random effects included) and brms' ``posterior_linpred``, ``posterior_epred``,
``log_lik``, ``bayes_R2(summary = FALSE)`` and ``posterior_epred(newdata)``. engine gets the same draws
(no sampling) and must give the same numbers: they are deterministic functions of the draws, so the
tolerance is the CSV's precision (15 significant digits) carried through exp / logit: 1e-9 relative.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.brm import _Prepared
from engine.multilevel.results import BrmFit

HERE = Path(__file__).parent / "fixtures" / "brms_predict"
MODELS = {
    "sleep": ("Reaction ~ Days + (Days | Subject)", "gaussian", "sleepstudy.csv", {"Subject": str}),
    "binary": ("y ~ x + (1 + x | g)", "bernoulli", "binary_sim.csv", {"g": str}),
    "cbpp": ("incidence | trials(size) ~ period + (1 | herd)", "binomial", "lme4_cbpp.csv", {"herd": str, "period": str}),
    "epi": ("count ~ zAge + zBase * Trt + (1 + visitc | patient)", "poisson", "brms_epilepsy.csv",
            {"Trt": str, "patient": str}),
}
RTOL = 1e-9



@pytest.fixture(scope="module")
def refs():
    with gzip.open(HERE / "brms_predict.json.gz", "rt") as handle:
        return json.load(handle)


def load(name):
    formula, family, file, dtypes = MODELS[name]
    data = pd.read_csv(HERE / file, dtype=dtypes)
    if name == "epi":
        data["visitc"] = data["visit"].astype(float) - 2.5
    prep = _Prepared(formula, data, None, family=family)
    draws = pd.read_csv(HERE / f"{name}_draws.csv.gz")
    chains = int(draws[".chain"].max())
    stack = lambda names: draws[names].to_numpy().reshape(chains, -1, len(names))
    fit = BrmFit(formula=formula, parameter_names=prep.parameter_names, draws_values=stack(prep.parameter_names),
                 ranef_names=prep.ranef_names, ranef_values=stack(prep.ranef_names), stats={}, groups=prep.groups,
                 nobs=prep.nobs, data_name="d", chains=chains, iter=300, warmup=150, thin=1, sampler="nuts",
                 family=family, design=prep.design)
    return fit, data


def check(values, ref):
    np.testing.assert_allclose(values.mean(axis=0), ref["colmeans"], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(values[:, :4], np.asarray(ref["first"]), rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("name", list(MODELS))
def test_draw_functions_match_brms(name, refs):
    fit, _ = load(name)
    ref = refs[name]
    check(fit.posterior_linpred(), ref["linpred"])
    check(fit.posterior_epred(), ref["epred"])
    check(fit.log_lik(), ref["log_lik"])
    np.testing.assert_allclose(fit.bayes_R2(summary=False), ref["bayes_R2"], rtol=RTOL)


@pytest.mark.parametrize("name", list(MODELS))
def test_newdata_matches_brms(name, refs):
    fit, data = load(name)
    ref = refs[name]
    nd = pd.DataFrame(ref["newdata"])
    for col, kind in MODELS[name][3].items():
        if col in nd:
            nd[col] = nd[col].astype(kind)
    np.testing.assert_allclose(fit.posterior_epred(nd), np.asarray(ref["newdata_epred"]), rtol=RTOL)
    np.testing.assert_allclose(fit.posterior_epred(nd, re_formula=np.nan), np.asarray(ref["newdata_epred_re_na"]),
                               rtol=RTOL)
    if ref.get("newdata_log_lik"):  # (binomial only: with trials and response in newdata)
        np.testing.assert_allclose(fit.log_lik(nd), np.asarray(ref["newdata_log_lik"]), rtol=RTOL)
