"""R's printing of linear models: ``printCoefmat``, ``print.summary.lm`` and ``print.lm``.

- ``signif_stars``, ``coefmat_text``: ``symnum`` and ``printCoefmat`` (stats/R/anova.R).
- ``naprint_omit``: ``naprint.omit`` (stats/R/nafns.R).
- ``summary_lm_text``: ``print.summary.lm`` (stats/R/lm.R).
- ``print_lm_text``: ``print.lm`` (stats/R/lm.R).

Built on :mod:`engine.rcompat.numbers` (format, signif, formatC, format.pval),
:mod:`engine.rcompat.layout` (matrices and named vectors) and
:mod:`engine.rcompat.quantile`; R's options at their defaults (``digits = 7``,
``show.signif.stars = TRUE``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from engine.rcompat.layout import matrix_text, named_strings_text, named_vector_text
from engine.rcompat.numbers import (DBL_EPSILON, R_DIGITS, format_c, format_number, format_pval, format_real,
                      round_half, signif, zapsmall)
from engine.rcompat.quantile import quantile7

__all__ = [
    "SIGNIF_LEGEND",
    "coefmat_text",
    "naprint_omit",
    "print_lm_text",
    "signif_stars",
    "summary_lm_text",
]

SIGNIF_LEGEND = "0 \u2018***\u2019 0.001 \u2018**\u2019 0.01 \u2018*\u2019 0.05 \u2018.\u2019 0.1 \u2018 \u2019 1"


def signif_stars(pv: Sequence[float]) -> list[str]:
    """R's ``symnum(pv, cutpoints = c(0, .001, .01, .05, .1, 1), na = FALSE)`` codes:
    intervals closed on the right (p = 0.05 gets "*"); NA gets ""."""
    out = []
    for p in pv:
        if math.isnan(p):
            out.append("")
        elif p <= 0.001:
            out.append("***")
        elif p <= 0.01:
            out.append("**")
        elif p <= 0.05:
            out.append("*")
        elif p <= 0.1:
            out.append(".")
        else:
            out.append(" ")
    return out


def coefmat_text(table: np.ndarray, row_names: Sequence[str], col_names: Sequence[str],
                 digits: int = max(3, R_DIGITS - 2), signif_legend: bool = True,
                 dig_tst: int | None = None, eps_pvalue: float = DBL_EPSILON,
                 na_print: str = "NA", has_pvalue: bool | None = None,
                 signif_stars_on: bool = True, is_na: np.ndarray | None = None) -> str:
    """R's ``printCoefmat`` for the usual layout: estimate and standard error columns, one test
    statistic column, then (when the last column's name starts with "Pr(" or "p-v") p-values.

    table: (k, nc) float array. NaN entries print as ``na_print`` where ``is_na`` (same shape)
    is True -- R's NA, e.g. aliased coefficients -- and as "NaN" elsewhere (R's NaN, e.g. a
    standard error with no residual degrees of freedom); ``is_na=None`` treats every NaN as NA.
    Returns the printed text (ends with a newline).
    """
    x = np.asarray(table, dtype=float)
    nr, nc = x.shape
    if has_pvalue is None:
        has_pvalue = nc >= 4 and col_names[-1][:3] in ("Pr(", "p-v")
    if dig_tst is None:
        dig_tst = max(1, min(5, digits - 1))
    k = nc - int(has_pvalue) - 1
    cs_ind = list(range(k))
    tst_ind = [k]
    cf = [["" for _ in range(nc)] for _ in range(nr)]
    ina = np.isnan(x)
    ok = ~ina
    if cs_ind:
        coef_se = x[:, cs_ind]
        acs = np.abs(coef_se)
        finite = np.isfinite(acs)
        if finite.any():
            nz = acs[finite & (acs != 0)]
            if nz.size:
                digmin = 1 + np.floor(np.log10(np.array([nz.min(), nz.max()])))
            else:
                digmin = np.array([1.0])
            dround = max(1.0, float(np.max(digits - digmin)))
            rounded = [round_half(v, dround) for v in coef_se.ravel(order="F")]
            texts = format_real(rounded, digits)
            for idx, s in enumerate(texts):
                i, jj = idx % nr, idx // nr
                cf[i][cs_ind[jj]] = s
    for j in tst_ind:
        texts = format_real([round_half(v, dig_tst) for v in x[:, j]], digits)
        for i in range(nr):
            cf[i][j] = texts[i]
    ok_p = ok.copy()
    ok_p[:, tst_ind] = False
    check_cols = [j for j in range(nc) if not (has_pvalue and j == nc - 1)]
    fix = []
    for j in check_cols:
        for i in range(nr):
            if ok_p[i, j]:
                try:
                    shown_zero = float(cf[i][j]) == 0.0
                except ValueError:
                    continue
                if (x[i, j] == 0.0) != shown_zero:
                    fix.append((i, j))
    if fix:
        texts = format_real([x[i, j] for i, j in fix], max(1, digits - 1))
        for (i, j), s in zip(fix, texts):
            cf[i][j] = s
    true_na = ina if is_na is None else (ina & np.asarray(is_na, dtype=bool))
    for i in range(nr):
        for j in range(nc):
            if ina[i, j]:
                cf[i][j] = na_print if true_na[i, j] else "NaN"
    stars = None
    if has_pvalue:
        okp = ok[:, nc - 1]
        if okp.any():
            pv = x[:, nc - 1]
            texts = format_pval(pv[okp], digits=dig_tst, eps=eps_pvalue)
            for i, s in zip(np.flatnonzero(okp), texts):
                cf[i][nc - 1] = s
            if signif_stars_on and np.any(pv[okp] < 0.1):
                codes = signif_stars(pv)
                w = max(len(c) for c in codes)
                stars = [c.ljust(w) for c in codes]
    names = list(col_names)
    if stars is not None:
        for i in range(nr):
            cf[i].append(stars[i])
        names.append("")
    out = matrix_text(cf, list(row_names), names, right=True)
    if stars is not None and signif_legend:
        out += "---\nSignif. codes:  " + SIGNIF_LEGEND + "\n"
    return out



def naprint_omit(n_deleted: int) -> str:
    """R's ``naprint.omit``: the message for rows removed by listwise deletion ("" for none)."""
    if n_deleted <= 0:
        return ""
    noun = "observation" if n_deleted == 1 else "observations"
    return f"{n_deleted} {noun} deleted due to missingness"


def summary_lm_text(*, call_lines_: Sequence[str], residuals: np.ndarray,
                    residual_names: Sequence[str], rank: int, df_resid: int, n_coef: int,
                    coef_names: Sequence[str], coef_table: np.ndarray, aliased: Sequence[bool],
                    sigma: float, n_deleted: int, r_squared: float, adj_r_squared: float,
                    fstatistic: tuple[float, float, float] | None, f_pvalue: float,
                    digits: int = max(3, R_DIGITS - 3), vcov_note: str | None = None) -> str:
    """The text of R's ``print(summary(lm(...)))`` (stats/R/lm.R ``print.summary.lm``).

    coef_table: (n_coef, 4) estimate, std. error, t value, p-value for every coefficient in
    model-matrix order, NaN in the rows of aliased coefficients. vcov_note: a line printed above
    "Residual standard error" naming a robust covariance (engine's addition; R prints none).
    """
    out = ["\nCall:\n", "\n".join(call_lines_), "\n\n"]
    out.append("Residuals:\n")
    rdf = df_resid
    if rdf > 5:
        q = zapsmall(quantile7(residuals), digits + 1)
        out.append(named_vector_text(q, ["Min", "1Q", "Median", "3Q", "Max"], digits))
    elif rdf > 0:
        out.append(named_vector_text(np.asarray(residuals, dtype=float),
                                     list(residual_names), digits))
    else:
        out.append(f"ALL {rank} residuals are 0: no residual degrees of freedom!")
        out.append("\n")
    if n_coef == 0:
        out.append("\nNo Coefficients\n")
    else:
        nsingular = n_coef - rank
        if nsingular:
            out.append(f"\nCoefficients: ({nsingular} not defined because of singularities)\n")
        else:
            out.append("\nCoefficients:\n")
        is_na = np.repeat(np.asarray(aliased, dtype=bool)[:, None], 4, axis=1)
        out.append(coefmat_text(coef_table, coef_names,
                                ["Estimate", "Std. Error", "t value", "Pr(>|t|)"],
                                digits=digits, is_na=is_na))
    sigma_text = "NaN" if math.isnan(sigma) else format_number(signif(sigma, digits))
    if vcov_note:
        out.append("\n" + vcov_note)
    out.append("\nResidual standard error: " + sigma_text
               + " on " + str(int(rdf)) + " degrees of freedom")
    out.append("\n")
    mess = naprint_omit(n_deleted)
    if mess:
        out.append("  (" + mess + ")\n")
    if fstatistic is not None:
        fval, numdf, dendf = fstatistic
        out.append("Multiple R-squared:  " + format_c(r_squared, digits=digits))
        out.append(",\tAdjusted R-squared:  " + format_c(adj_r_squared, digits=digits)
                   + " \nF-statistic: " + format_c(fval, digits=digits)
                   + " on " + format_number(numdf) + " and " + format_number(dendf)
                   + " DF,  p-value: " + format_pval([f_pvalue], digits=digits)[0])
        out.append("\n")
    out.append("\n")
    return "".join(out)


def print_lm_text(call_lines_: Sequence[str], coef: Sequence[float], names: Sequence[str],
                  digits: int = max(3, R_DIGITS - 3)) -> str:
    """The text of R's ``print(lm(...))`` (stats/R/lm.R ``print.lm``)."""
    out = ["\nCall:\n", "\n".join(call_lines_), "\n\n"]
    if len(coef):
        out.append("Coefficients:\n")
        out.append(named_strings_text(format_real(coef, digits), list(names), gap=2))
    else:
        out.append("No coefficients\n")
    out.append("\n")
    return "".join(out)
