"""brms-style priors: parsing, validation, brms' defaults and prior_summary's print."""

import numpy as np
import pytest

from engine.errors import PriorError
from engine.priors import (
    EXPONENTIAL,
    FLAT,
    NORMAL,
    STUDENT_T,
    default_priors,
    format_prior_summary,
    prior,
    prior_summary_table,
    r_mad,
    resolve_priors,
)

STUDY_COEFS = ["male1", "raven", "csize", "belief_survey1", "mathscore1", "gritintervention"]


def test_parse_families():
    p = prior("normal(0, 10)", class_="b")
    assert (p.family, p.mu, p.scale, p.spec) == (NORMAL, 0.0, 10.0, "normal(0, 10)")
    t = prior("student_t(3,-0.1,2.5)", class_="Intercept")
    assert (t.family, t.nu, t.mu, t.scale, t.spec) == (STUDENT_T, 3.0, -0.1, 2.5, "student_t(3, -0.1, 2.5)")
    c = prior(" cauchy( 0 , 10 ) ", class_="sd", group="schoolid")
    assert (c.family, c.nu, c.mu, c.scale, c.group) == (STUDENT_T, 1.0, 0.0, 10.0, "schoolid")
    assert c.spec == "cauchy(0, 10)" and c.lower_bound == 0.0
    e = prior("exponential(2)", class_="sigma")
    assert (e.family, e.scale) == (EXPONENTIAL, 0.5)
    assert prior("", class_="b").family == FLAT


@pytest.mark.parametrize(
    "spec, class_, message",
    [
        ("gamma(2, 1)", "b", "unknown family 'gamma'"),
        ("normal(0, 0)", "b", "scale must be positive"),
        ("normal(0, -1)", "sd", "scale must be positive"),
        ("student_t(0, 0, 1)", "b", "degrees of freedom must be positive"),
        ("normal(0)", "b", "takes 2 arguments"),
        ("normal(0, a)", "b", "'a' is not a number"),
        ("normal 0, 1", "b", "cannot read prior"),
        ("exponential(1)", "b", "for 'sd' and 'sigma' only"),
        ("exponential(0)", "sigma", "rate must be positive"),
        ("normal(0, 1)", "cor", r"lkj\(eta\) is the prior of class 'cor'"),  # class cor takes lkj(eta) only (issue 12)
        ("normal(0, 1)", "rescor", "unknown prior class 'rescor'"),
    ],
)
def test_bad_priors_raise(spec, class_, message):
    with pytest.raises(PriorError, match=message):
        prior(spec, class_=class_)


def test_prior_on_missing_class_or_name_is_rejected():
    y = np.linspace(-1, 1, 50)
    with pytest.raises(PriorError, match="no coefficient 'iq'"):
        resolve_priors([prior("normal(0, 1)", coef="iq")], y, STUDY_COEFS, ["schoolid"], True)
    with pytest.raises(PriorError, match="no grouping factor 'classid'"):
        resolve_priors([prior("normal(0, 1)", "sd", group="classid")], y, STUDY_COEFS, ["schoolid"], True)
    with pytest.raises(PriorError, match="no group-level"):
        resolve_priors([prior("normal(0, 1)", "sd")], y, STUDY_COEFS, [], True)
    with pytest.raises(PriorError, match="no population-level"):
        resolve_priors([prior("normal(0, 1)", "b")], y, [], ["g"], True)
    with pytest.raises(PriorError, match="duplicate"):
        resolve_priors([prior("normal(0, 1)", "b"), prior("normal(0, 2)", "b")], y, STUDY_COEFS, [], True)
    with pytest.raises(PriorError, match="group' applies to class 'sd'"):
        prior("normal(0, 1)", "b", group="schoolid")


def test_defaults_follow_brms_rounding():
    # median 12.34 -> 12.3, mad 4.4478 -> 4.4 (> 2.5)
    rng = np.random.default_rng(0)
    y = 12.34 + 3.0 * rng.standard_normal(501)
    y = y - np.median(y) + 12.34
    scale = round(r_mad(y), 1)
    assert scale > 2.5
    rows = {p.class_: p for p in default_priors(y, ["x"], ["g"], True)}
    assert rows["Intercept"].spec == f"student_t(3, 12.3, {scale:g})"
    assert rows["sd"].spec == rows["sigma"].spec == f"student_t(3, 0, {scale:g})"
    assert rows["b"].spec == "(flat)" and rows["b"].family == FLAT
    # small spread: the scale floors at 2.5
    rows = {p.class_: p for p in default_priors(np.array([0.0, 0.1, 0.2]), [], [], True)}
    assert rows["Intercept"].spec == "student_t(3, 0.1, 2.5)" and "sd" not in rows and "b" not in rows
    assert r_mad(np.array([1.0, 2.0, 4.0])) == pytest.approx(1.4826)


def test_study_default_prior_summary_prints_as_brms(fixtures_dir):
    from engine.datasets import load_grit

    data = load_grit()
    used = ["mathscore2", "male", "raven", "csize", "belief_survey1", "mathscore1", "grit", "schoolid", "classid"]
    y = data[used].dropna()["mathscore2"].to_numpy()
    resolved = resolve_priors(None, y, STUDY_COEFS, ["schoolid"], True)
    assert resolved.intercept.spec == "student_t(3, -0.1, 2.5)"
    text = format_prior_summary(prior_summary_table(resolved))
    expected = (fixtures_dir / "brms" / "brms_school_priors.txt").read_text()
    assert [line.rstrip() for line in text.splitlines()] == [line.rstrip() for line in expected.splitlines()]


def test_user_priors_precedence_and_table():
    y = np.linspace(-3, 3, 100)
    resolved = resolve_priors(
        [prior("normal(0, 10)", "b"), prior("normal(0, 10)", "Intercept"), prior("cauchy(0, 10)", "sd"),
         prior("normal(0, 2)", "sd", group="schoolid:classid"), prior("cauchy(0, 10)", "sigma"),
         prior("student_t(5, 0, 1)", "b", coef="raven")],
        y, STUDY_COEFS, ["schoolid", "schoolid:classid"], True)
    assert [p.spec for p in resolved.b] == ["normal(0, 10)", "student_t(5, 0, 1)"] + ["normal(0, 10)"] * 4
    assert [p.spec for p in resolved.sd] == ["cauchy(0, 10)", "normal(0, 2)"]
    assert resolved.sigma.spec == "cauchy(0, 10)" and resolved.sigma.source == "user"
    table = prior_summary_table(resolved)
    assert list(table.columns) == ["prior", "class", "coef", "group", "resp", "dpar", "nlpar", "lb", "ub", "source"]
    sd_rows = table[table["class"] == "sd"]
    assert sd_rows[["prior", "coef", "group", "source"]].values.tolist() == [
        ["cauchy(0, 10)", "", "", "user"],
        ["cauchy(0, 10)", "", "schoolid", "(vectorized)"],
        ["cauchy(0, 10)", "Intercept", "schoolid", "(vectorized)"],
        ["normal(0, 2)", "", "schoolid:classid", "user"],
        ["normal(0, 2)", "Intercept", "schoolid:classid", "(vectorized)"],
    ]
    raven = table[(table["class"] == "b") & (table["coef"] == "raven")]
    assert raven["source"].item() == "user" and raven["prior"].item() == "student_t(5, 0, 1)"
    assert table["lb"].tolist().count("0") == 6  # sd rows and sigma
    # coef="Intercept" without a group is the class-wide sd prior (never silently dropped)
    again = resolve_priors([prior("normal(0, 3)", "sd", coef="Intercept")], y, [], ["g"], True)
    assert [p.spec for p in again.sd] == ["normal(0, 3)"]


def test_nested_user_prior_summary_prints_as_brms(fixtures_dir):
    """brms 2.18's prior_summary for user priors on a nested model (fixture made with brm(empty = TRUE))."""
    user = [prior("normal(0, 10)", "Intercept"), prior("normal(0, 10)", "b"),
            prior("cauchy(0, 10)", "sd"), prior("cauchy(0, 10)", "sigma")]
    resolved = resolve_priors(user, np.zeros(3), ["male1", "raven"], ["schoolid", "schoolid:classid"], True)
    text = format_prior_summary(prior_summary_table(resolved))
    expected = (fixtures_dir / "priors" / "brms_nested_user_priors.txt").read_text()
    assert [line.rstrip() for line in text.splitlines()] == [line.rstrip() for line in expected.splitlines()]
