"""engine.rcompat.print_brms against brms 2.18's printed output (character for character)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from engine.diagnostics import summarise_draws
from engine.rcompat.print_brms import format_brms_fit, format_r_matrix, group_title

COLUMNS = ["Estimate", "Est.Error", "l-95% CI", "u-95% CI", "Rhat", "Bulk_ESS", "Tail_ESS"]
SCHOOL_FORMULA = "mathscore2 ~ 1 + male + raven + csize + belief_survey1 + mathscore1 + grit + (1 | schoolid)"


def _brms_table(draws: np.ndarray, names: list[str]) -> pd.DataFrame:
    table = summarise_draws(draws, names)
    table.columns = COLUMNS
    return table


@pytest.fixture(scope="module")
def school(fixtures_dir):
    frame = pd.read_csv(fixtures_dir / "brms" / "brms_school_draws.csv")
    names = [column for column in frame.columns if not column.startswith(".")]
    chains = frame[".chain"].to_numpy()
    # (chains, draws, params), chains in order, iterations in order within each chain
    frame = frame.sort_values([".chain", ".iteration"])
    draws = frame[names].to_numpy().reshape(len(np.unique(chains)), -1, len(names))
    expected = (fixtures_dir / "brms" / "brms_school_print.txt").read_text()
    return draws, names, expected


def _school_parts(draws, names):
    table = _brms_table(draws, names)
    relabel = lambda rows, labels: table.loc[rows].set_axis(labels, axis=0)  # noqa: E731
    population_rows = [name for name in names if name.startswith("b_")]
    header = {
        "family": "gaussian",
        "links": "mu = identity; sigma = identity",
        "formula": SCHOOL_FORMULA,
        "data_name": "data",
        "nobs": 1180,
        "chains": 4,
        "iter": 2000,
        "warmup": 1000,
        "thin": 1,
        "sampler": "sampling(NUTS)",
    }
    groups = [(group_title("schoolid", 16), relabel(["sd_schoolid__Intercept"], ["sd(Intercept)"]))]
    population = relabel(population_rows, [name[2:] for name in population_rows])
    family = relabel(["sigma"], ["sigma"])
    return header, groups, population, family


def test_prints_brms_school_fit_to_the_character(school):
    # diagnostics computed by engine on brms' own draws, printed by engine: both must reproduce
    # brms' print(fit) exactly (Rhat to 2 decimals, ESS to the integer)
    draws, names, expected = school
    header, groups, population, family = _school_parts(draws, names)
    text = format_brms_fit(header, groups, population, family, None)
    assert text.splitlines() == expected.splitlines()
    assert text == expected


def test_fit_object_is_printed_like_the_explicit_parts(school):
    draws, names, expected = school
    table = _brms_table(draws, names)
    fit = SimpleNamespace(
        summary=lambda: table,
        groups=[SimpleNamespace(name="schoolid", n_levels=16)],
        formula=SCHOOL_FORMULA,
        nobs=1180,
        chains=4,
        n_chains_total=4,
        iter=2000,
        warmup=1000,
        thin=1,
        sampler="nuts",
        family="gaussian",
        links=(("mu", "identity"), ("sigma", "identity")),
        data_name="data",
    )
    assert format_brms_fit(fit) == expected


def test_group_blocks_accept_name_and_levels(school):
    draws, names, expected = school
    header, groups, population, family = _school_parts(draws, names)
    triple = [("schoolid", 16, groups[0][1])]
    assert format_brms_fit(header, triple, population, family) == expected


def _crafted_table(labels):
    values = np.array(
        [[0.123, np.nan, 1.005, 1.0049, 10.5, 1234.5, 7.0], [-0.004, np.nan, 2.675, 1.2, 11.5, np.nan, 8.0]]
    )
    return pd.DataFrame(values, index=labels, columns=COLUMNS)


def test_table_layout_matches_brms_print_format(fixtures_dir):
    # R's own output: NA, -0.00, binary half-way rounding, ESS without decimals, and the split
    # into column blocks when a line would reach 80 characters
    expected_blocks = (fixtures_dir / "printing_brms" / "print_format_cases.txt").read_text().split("---\n")
    label_sets = [
        ["belief_survey1:gritintervention_long_name", "x"],
        ["abcdefghijklmnopqrs", "b"],
        ["abcdefghijklmnopqrst", "b"],
        ["abcdefghijklmnopqr", "b"],
        ["sd(Intercept)", "Intercept"],
    ]
    for labels, expected in zip(label_sets, expected_blocks):
        assert format_r_matrix(_crafted_table(labels)) + "\n" == expected
    big = pd.DataFrame(
        [[123456.789, -0.5, 0.5, 1.5, 2.5, 99999.5, 1e-10, 12.0]], index=["p"], columns=COLUMNS + ["Extra"]
    )
    assert format_r_matrix(big) + "\n" == expected_blocks[5]


def test_empty_sections_are_left_out_and_note_can_change(school):
    draws, names, _ = school
    header, groups, population, family = _school_parts(draws, names)
    text = format_brms_fit(header, [], population, None, note="Draws were sampled using sampling(Gibbs).")
    assert "Group-Level Effects" not in text and "Family Specific" not in text
    assert text.endswith("\nDraws were sampled using sampling(Gibbs).\n")
    assert "total post-warmup draws = 4000" in text


def test_missing_header_keys_are_named():
    with pytest.raises(KeyError, match="nobs"):
        format_brms_fit({"formula": "y ~ x", "chains": 4, "iter": 10, "warmup": 5}, [], None, None)


def test_formula_is_spaced_as_r_deparses_it(fixtures_dir):
    from engine.rcompat.print_brms import r_deparse_formula

    lines = (fixtures_dir / "printing_brms" / "formula_deparse.tsv").read_text().splitlines()
    assert len(lines) == 19
    for line in lines:
        given, deparsed = line.split("\t")
        assert r_deparse_formula(given) == deparsed, given
