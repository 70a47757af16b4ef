"""engine.lmer with grouping columns of pandas categorical dtype (as engine.datasets.load_grit
gives them): the same fit as with the same groups as integers (regression: the grouping column
was passed to the formula layer as a Series, which has no ``.codes``)."""

import numpy as np

import engine


def test_lmer_categorical_grouping_columns_match_integer_groups():
    data = engine.datasets.load_grit()
    assert isinstance(data["schoolid"].dtype, __import__("pandas").CategoricalDtype)
    cols = ["mathscore2", "mathscore1", "schoolid", "classid"]
    sub = data[cols].dropna().iloc[:400]
    as_int = sub.assign(schoolid=sub["schoolid"].astype(int), classid=sub["classid"].astype(int))
    formula = "mathscore2 ~ mathscore1 + (1 | schoolid)"
    fit_cat = engine.lmer(formula, sub)
    fit_int = engine.lmer(formula, as_int)
    np.testing.assert_allclose(np.asarray(fit_cat.fixef), np.asarray(fit_int.fixef), rtol=1e-10)
    np.testing.assert_allclose(fit_cat.loglik, fit_int.loglik, rtol=1e-12)
