"""Print a Bayesian multilevel fit exactly as brms 2.18 prints one (``print.brmssummary``).

Layout, from brms 2.18's ``print.brmssummary`` and ``print_format``::

     Family: gaussian
      Links: mu = identity; sigma = identity
    Formula: y ~ 1 + x + (1 | g)
       Data: data (Number of observations: 1180)
      Draws: 4 chains, each with iter = 2000; warmup = 1000; thin = 1;
             total post-warmup draws = 4000

    Group-Level Effects:
    ~g (Number of levels: 16)
                  Estimate Est.Error l-95% CI u-95% CI Rhat Bulk_ESS Tail_ESS
    sd(Intercept)     0.16      0.05     0.07     0.28 1.00     1323     1951

    Population-Level Effects:
    ...
    Family Specific Parameters:
    ...
    Draws were sampled using sampling(NUTS). For each parameter, Bulk_ESS
    and Tail_ESS are effective sample size measures, and Rhat is the potential
    scale reduction factor on split chains (at convergence, Rhat = 1).

(brms leaves a space at the end of the Family, Links, Formula, Data and section-title lines; so
does this module.) Each table is a character matrix: numbers through C's ``sprintf("%.2f")``, the
ESS columns through ``"%.0f"``, then R's ``print(quote = FALSE, right = TRUE)``: row names
left-aligned, columns right-aligned to the wider of name and values, one space apart, and split
into column blocks so that no line reaches R's default width of 80 characters
(:func:`engine.rcompat.layout.matrix_text`). The prior table prints as brms'
``print.brmsprior`` prints it (``format_prior_summary``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from engine.errors import MissingFieldError, PrintError
from engine.rcompat.language import deparse_lines, parse
from engine.rcompat.layout import data_frame_text, matrix_text
from engine.rcompat.numbers import R_WIDTH, sprintf_fixed

__all__ = [
    "brms_label",
    "format_brms_fit",
    "format_r_matrix",
    "group_title",
    "brms_note",
    "fit_print_parts",
    "r_deparse_formula",
    "format_prior_summary",
]

NO_DIGIT_COLUMNS = ("Bulk_ESS", "Tail_ESS")


def format_r_matrix(table: pd.DataFrame, digits: int = 2, width: int = R_WIDTH) -> str:
    """brms' ``print_format``: a numeric table rounded and printed as R prints a character matrix.

    Columns named in ``NO_DIGIT_COLUMNS`` (the ESS) are printed with no decimals, the others with
    ``digits``. Lines are joined with "\\n", with no trailing newline.
    """
    columns = [str(column) for column in table.columns]
    places = [0 if name in NO_DIGIT_COLUMNS else digits for name in columns]
    cells = [[sprintf_fixed(value, p) for value, p in zip(row, places)]
             for row in table.itertuples(index=False, name=None)]
    return matrix_text(cells, [str(label) for label in table.index], columns, width=width)[:-1]


def group_title(group: str, n_levels: int) -> str:
    """The title brms prints above a grouping factor's table: ``~schoolid (Number of levels: 16)``."""
    return f"~{group} (Number of levels: {int(n_levels)})"


def brms_note(sampler: str = "sampling(NUTS)", algorithm: str = "sampling") -> str:
    """brms' closing note (three lines for MCMC; one line otherwise)."""
    text = f"Draws were sampled using {sampler}. "
    if algorithm == "sampling":
        text += (
            "For each parameter, Bulk_ESS\n"
            "and Tail_ESS are effective sample size measures, and Rhat is the potential\n"
            "scale reduction factor on split chains (at convergence, Rhat = 1)."
        )
    return text


def _links_text(links: Any) -> str:
    if isinstance(links, str):
        return links
    if isinstance(links, Mapping):
        links = list(links.items())
    return "; ".join(f"{parameter} = {link}" for parameter, link in links)


def _header_lines(header: Mapping[str, Any]) -> list[str]:
    required = ("formula", "nobs", "chains", "iter", "warmup")
    missing = [key for key in required if key not in header]
    if missing:
        raise MissingFieldError(f"header is missing {', '.join(missing)} (needs {', '.join(required)})")
    thin = int(header.get("thin", 1))
    chains, iterations, warmup = int(header["chains"]), int(header["iter"]), int(header["warmup"])
    total = math.ceil((iterations - warmup) / thin * chains)
    return [
        f" Family: {header.get('family', 'gaussian')} ",
        f"  Links: {_links_text(header.get('links', 'mu = identity; sigma = identity'))} ",
        f"Formula: {header['formula']} ",
        f"   Data: {header.get('data_name', 'data')} (Number of observations: {int(header['nobs'])}) ",
        f"  Draws: {chains} chains, each with iter = {iterations}; warmup = {warmup}; thin = {thin};",
        f"         total post-warmup draws = {total}",
        "",
    ]


def _blocks(group_blocks: Sequence[Sequence[Any]]) -> list[tuple[str, pd.DataFrame]]:
    out = []
    for block in group_blocks:
        if len(block) == 3:
            name, n_levels, frame = block
            out.append((group_title(name, n_levels), frame))
        elif len(block) == 2:
            title, frame = block
            out.append((str(title), frame))
        else:
            raise PrintError("each group block is (title, DataFrame) or (group, n_levels, DataFrame)")
    return out


def format_brms_fit(
    header: Mapping[str, Any] | Any,
    group_blocks: Sequence[Sequence[Any]] | None = None,
    population: pd.DataFrame | None = None,
    family: pd.DataFrame | None = None,
    note: str | None = None,
) -> str:
    """The text brms 2.18 prints for a fit (ending with a newline).

    Parameters
    ----------
    header : dict with ``formula`` (as brms shows it, e.g. ``y ~ 1 + x + (1 | g)``), ``nobs``,
        ``chains``, ``iter``, ``warmup`` and optionally ``thin`` (1), ``family`` ("gaussian"),
        ``links`` (text, mapping or pairs; default "mu = identity; sigma = identity"),
        ``data_name`` ("data"), ``sampler`` ("sampling(NUTS)"), ``algorithm`` ("sampling").
        A results object (``engine.multilevel.results.BrmFit``) may be passed instead of all five
        arguments: its parts are taken by :func:`fit_print_parts`.
    group_blocks : per grouping factor, ``(title, table)`` with a title such as
        ``group_title("schoolid", 16)``, or ``(group, n_levels, table)``.
    population, family : tables of the population-level effects and the family parameters.
    note : the closing note; None gives brms' note for ``header["sampler"]``, "" none.

    Every table has one row per parameter, labelled as brms labels it (``sd(Intercept)``,
    ``Intercept``, ``male1``, ``sigma``), and the columns to print (brms: Estimate, Est.Error,
    l-95% CI, u-95% CI, Rhat, Bulk_ESS, Tail_ESS); NaN prints as NA. Empty or None tables are
    left out, as brms leaves out empty sections.
    """
    if not isinstance(header, Mapping):
        if group_blocks is not None or population is not None or family is not None:
            raise PrintError("pass either a fit object alone or header and tables")
        header, group_blocks, population, family, note = fit_print_parts(header)
    lines = _header_lines(header)
    blocks = _blocks(group_blocks or [])
    if blocks:
        lines.append("Group-Level Effects: ")
        for title, frame in blocks:
            lines.append(f"{title} ")
            lines.append(format_r_matrix(frame))
            lines.append("")
    if population is not None and len(population):
        lines.append("Population-Level Effects: ")
        lines.append(format_r_matrix(population))
        lines.append("")
    if family is not None and len(family):
        lines.append("Family Specific Parameters: ")
        lines.append(format_r_matrix(family))
        lines.append("")
    if note is None:
        note = brms_note(header.get("sampler", "sampling(NUTS)"), header.get("algorithm", "sampling"))
    if note:
        lines.append(note)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# formulas as R deparses them (brms prints ``deparse(formula)`` with runs of spaces trimmed)

def r_deparse_formula(formula: str) -> str:
    """``formula`` as brms prints it: R's ``deparse()`` (:mod:`engine.rcompat.language`), the
    lines joined and runs of white space trimmed to one space (brms' ``formula2str(space =
    "trim")``).

    Examples: ``y~x+(1|g)`` -> ``y ~ x + (1 | g)``; ``y ~ a / b`` -> ``y ~ a/b``;
    ``y ~ 0.50 + 100000`` -> ``y ~ 0.5 + 1e+05``; ``I(a == 'b')`` -> ``I(a == "b")``.
    """
    lines = deparse_lines(parse(str(formula), what="formula"))
    return re.sub(r"[ \t\r\n]+", " ", "".join(lines)).strip()


def format_prior_summary(table: pd.DataFrame, width: int = R_WIDTH) -> str:
    """brms' ``print.brmsprior`` of a prior table: ``print.data.frame(x, row.names = FALSE)``
    (every column, the first too, after one space; blocks shorter than ``width``)."""
    return data_frame_text(table, width=width, row_names=False)


# ------------------------------------------------------------------------------------------
# adapter for engine's results objects


def brms_label(name: str) -> str:
    """The row label brms prints for a parameter: ``b_male1`` -> ``male1``, ``sd_g__Intercept`` ->
    ``sd(Intercept)``, ``cor_g__Intercept__x`` -> ``cor(Intercept,x)``, ``sigma`` -> ``sigma``."""
    if name.startswith("b_"):
        return name[2:]
    if name.startswith("sd_") and "__" in name:
        return f"sd({name.rsplit('__', 1)[1]})"
    if name.startswith("cor_") and name.count("__") >= 2:
        first, second = name.split("__")[-2:]
        return f"cor({first},{second})"
    return name


def _relabel(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out.index = pd.Index([brms_label(str(name)) for name in table.index])
    return out


def fit_print_parts(fit: Any) -> tuple[dict, list, pd.DataFrame, pd.DataFrame, None]:
    """Header and tables of an ``engine.multilevel.results.BrmFit`` (or any object with ``summary()``,
    ``groups`` (objects with ``name`` and ``n_levels``), ``formula``, ``nobs``, ``chains``, ``iter``,
    ``warmup``, ``thin``, ``sampler``, ``family``, ``links``, ``data_name``).

    For a combined ``brm_multiple`` fit the Draws line counts all stored chains, as brms does.
    """
    table = fit.summary()
    names = [str(name) for name in table.index]
    n_chains = getattr(fit, "n_chains_total", None) or fit.chains
    sampler = str(getattr(fit, "sampler", "nuts")).lower()
    sampler_text = {"nuts": "sampling(NUTS)", "gibbs": "sampling(Gibbs)"}.get(sampler, f"sampling({sampler})")
    header = {
        "family": getattr(fit, "family", "gaussian"),
        "links": getattr(fit, "links", "mu = identity; sigma = identity"),
        "formula": r_deparse_formula(fit.formula),
        "data_name": getattr(fit, "data_name", "data"),
        "nobs": fit.nobs,
        "chains": n_chains,
        "iter": fit.iter,
        "warmup": fit.warmup,
        "thin": getattr(fit, "thin", 1),
        "sampler": sampler_text,
        "algorithm": "sampling",
    }
    group_blocks = []
    used: set[str] = set()
    for group in getattr(fit, "groups", []):
        prefix = f"sd_{group.name}__"
        rows = [name for name in names if name.startswith(prefix)]
        rows += [name for name in names if name.startswith(f"cor_{group.name}__")]  # brms: sd rows, then cor
        if rows:
            group_blocks.append((group_title(group.name, group.n_levels), _relabel(table.loc[rows])))
            used.update(rows)
    population_rows = [name for name in names if name.startswith("b_")]
    used.update(population_rows)
    family_rows = [name for name in names if name not in used and not name.startswith(("sd_", "cor_", "r_"))]
    return header, group_blocks, _relabel(table.loc[population_rows]), _relabel(table.loc[family_rows]), None
