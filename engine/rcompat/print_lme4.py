"""lme4 1.1-31's printers for ``engine.lmer`` fits, on R's number formatting (``engine.rcompat``).

- ``LmerSummary``: ``print(summary(fit))`` (lme4 ``print.summary.merMod`` with ``.prt.methTit``,
  ``.prt.call``, ``.prt.aictab``, ``.prt.resids``, ``.prt.VC``/``formatVC``, ``.prt.grps``,
  ``printCoefmat`` and the correlation of fixed effects with ``abbreviate()`` labels,
  ``.prt.warn``). The ``Data:`` line names ``data_name`` (R prints the data argument's
  expression) and the optimizer line names engine's optimizer.
- ``anova_text``: ``print(anova(m1, m2))`` of lme4's ``anova.merMod`` table.

R's options at their defaults (``digits = 7``, so lme4 prints with ``digits = 4``; width 80).
"""

from __future__ import annotations

import numpy as np

from engine.rcompat.abbreviate import abbreviate
from engine.rcompat.language import deparse_lines
from engine.rcompat.language import parse as parse_r
from engine.rcompat.layout import matrix_text, named_strings_text, named_vector_text
from engine.rcompat.numbers import format_pval, format_real, round_half, zapsmall
from engine.rcompat.print_lm import SIGNIF_LEGEND, coefmat_text, signif_stars
from engine.rcompat.quantile import quantile7

DIGITS = 4  # max(3, getOption("digits") - 3)
COR_MAX = 12  # getOption("lme4.summary.cor.max")


def _cat_fill(items, width: int = 80) -> str:
    """R's ``cat(..., fill = TRUE)`` with sep " ": a new line before an item that would pass
    the width (the separator is written first), and a final newline."""
    out = ""
    col = 0
    for k, item in enumerate(items):
        if k > 0:
            out += " "
            col += 1
            if col + len(item) > width:
                out += "\n"
                col = 0
        out += item
        col += len(item)
    return out + "\n"


def _number(x: float) -> str:
    return format_real([x])[0].strip()


def _formula_lines(formula: str, data_name: str) -> str:
    try:
        lines = deparse_lines(parse_r(formula))
    except Exception:  # pragma: no cover - a formula R's deparser reader does not know
        lines = [formula]
    return _cat_fill(["Formula:"] + lines) + _cat_fill(["   Data:", data_name])


def _aictab(fit) -> str:
    if fit.reml:
        return _cat_fill(["REML criterion at convergence:", _number(round_half(fit.criterion, 1))])
    vals = [fit.aic, fit.bic, fit.loglik, fit.deviance(), float(fit.df_resid)]
    t4 = [round_half(v, 1) for v in vals]
    texts = format_real(t4)
    texts[-1] = _number(t4[-1])
    return named_strings_text(texts, ["AIC", "BIC", "logLik", "deviance", "df.resid"])


def _resids(fit) -> str:
    scaled = fit.resid / fit.sigma
    q = zapsmall(quantile7(scaled), DIGITS + 1)
    return "Scaled residuals: \n" + named_vector_text(q, ["Min", "1Q", "Median", "3Q", "Max"], DIGITS) + "\n"


def _varcorr_text(fit) -> str:
    names = fit._group_names()
    covs = fit._term_covs()
    sds = [np.sqrt(np.diag(C)) for C in covs]
    lens = [t.q for t in fit.terms] + [1]
    nr = sum(lens)
    groups = []
    for name, t in zip(names, fit.terms):
        groups += [name] + [""] * (t.q - 1)
    groups.append("Residual")
    cn = [c for t in fit.terms for c in t.cnms] + [""]
    sd_all = [float(v) for s in sds for v in s] + [fit.sigma]
    var_txt = format_real([v * v for v in sd_all], DIGITS)
    sd_txt = format_real(sd_all, DIGITS)
    cells = [[groups[i], cn[i], var_txt[i], sd_txt[i]] for i in range(nr)]
    cols = ["Groups", "Name", "Variance", "Std.Dev."]
    maxlen = max(lens)
    if maxlen > 1:
        dig = max(2, DIGITS - 2)
        corr_rows = []
        for C, s, t in zip(covs, sds, fit.terms):
            q = t.q
            R = np.eye(q)
            for i in range(q):
                for j in range(q):
                    if i != j:
                        R[i, j] = C[i, j] / (s[i] * s[j]) if s[i] > 0 and s[j] > 0 else np.nan
            flat = [round_half(float(v), dig) for v in R.ravel(order="F")]
            txt = format_real(flat, nsmall=dig, digits=7)
            cc = [[txt[j * q + i] if i > j else "" for j in range(q)] for i in range(q)]
            for row in cc:
                corr_rows.append(row + [""] * (maxlen - q))
        corr_rows = [row[:maxlen - 1] for row in corr_rows]
        corr_rows += [[""] * (maxlen - 1)] * (nr - len(corr_rows))
        cells = [c + r for c, r in zip(cells, corr_rows)]
        cols = cols + ["Corr"] + [""] * (maxlen - 2)
    return "Random effects:\n" + matrix_text(cells, [""] * nr, cols, right=False)


def _grps(fit) -> str:
    parts = "; ".join(f"{g}, {n}" for g, n in fit.ngrps.items())
    return _cat_fill([f"Number of obs: {fit.nobs}, groups: ", parts])


def _fixef_text(fit) -> str:
    names = list(fit.fixef.index)
    p = len(names)
    if p == 0:
        return ""
    est = fit.fixef.to_numpy()
    se = fit.bse.to_numpy()
    table = np.column_stack([est, se, est / se])
    out = "\nFixed effects:\n" + coefmat_text(table, names, ["Estimate", "Std. Error", "t value"],
                                               digits=DIGITS, has_pvalue=False)
    if 1 < p <= COR_MAX:
        V = fit.vcov.to_numpy()
        d = np.sqrt(np.diag(V))
        corr = V / np.outer(d, d)
        flat = [round_half(float(v), 3) for v in corr.ravel(order="F")]
        txt = format_real(flat, nsmall=3)
        rns = abbreviate(names, 11)
        cns = abbreviate(names, 6)
        cells = [[txt[j * p + i] if i > j else "" for j in range(p - 1)] for i in range(1, p)]
        out += "\nCorrelation of Fixed Effects:\n" + matrix_text(cells, rns[1:], cns[:-1], right=False)
    return out


def summary_text(fit, data_name: str = "data") -> str:
    """The text of lme4's ``print(summary(fit))``."""
    if fit.reml:
        title = "Linear mixed model fit by REML ['lmerMod']\n"
    else:
        title = "Linear mixed model fit by maximum likelihood  ['lmerMod']\n"
    out = [title, _formula_lines(fit.formula, data_name), "\n", _aictab(fit), "\n", _resids(fit),
           _varcorr_text(fit), _grps(fit), _fixef_text(fit)]
    msgs = []
    if fit.is_singular:
        msgs.append("boundary (singular) fit: see help('isSingular')")
    if msgs or not fit.converged:
        code = 0 if fit.converged else 1
        out.append(f"optimizer (L-BFGS-B) convergence code: {code} ({'OK' if code == 0 else 'failed'})\n")
        out.append("\n".join(msgs) + "\n\n")
    return "".join(out)


class LmerSummary:
    """``summary(fit)``: prints as lme4's ``print(summary(fit))``."""

    def __init__(self, fit, data_name: str = "data"):
        self.fit = fit
        self.data_name = data_name

    def __str__(self) -> str:
        return summary_text(self.fit, self.data_name)

    def __repr__(self) -> str:
        return str(self)


def anova_text(table, heading: list[str]) -> str:
    """``print(anova(m1, m2, ...))`` of lme4 (stats' ``print.anova``: heading lines, then the
    table with ``printCoefmat(digits = 5, signif.stars, zap.ind, tst.ind = Chisq column)``)."""
    out = "\n".join(heading) + "\n"
    names = list(table.index)
    cols = list(table.columns)
    x = table.to_numpy(dtype=float)
    digits = max(getattr(table, "_digits", 5), 5)  # print.anova: digits = max(getOption("digits") - 2L, 3L)
    # print.anova -> printCoefmat(x, digits, signif.stars, has.Pvalue, P.values, cs.ind = NULL,
    # zap.ind = npar/Df columns, tst.ind = Chisq column, na.print = "")
    nr, nc = x.shape
    cells = [["" for _ in range(nc)] for _ in range(nr)]
    zap = [cols.index("npar"), cols.index("Df")]
    tst = cols.index("Chisq")
    pcol = nc - 1
    for j in range(nc - 1):
        colv = x[:, j]
        ok = ~np.isnan(colv)
        if j in zap:
            vals = [round_half(v, 0) for v in colv[ok]]
            texts = format_real(vals, digits)
        elif j == tst:
            texts = format_real([round_half(v, max(1, min(5, digits - 1))) for v in colv[ok]], digits)
        else:
            texts = format_real(list(colv[ok]), digits)
        for i, t in zip(np.flatnonzero(ok), texts):
            cells[i][j] = t
    pv = x[:, pcol]
    okp = ~np.isnan(pv)
    stars = None
    if okp.any():
        for i, t in zip(np.flatnonzero(okp), format_pval(pv[okp], digits=max(1, min(5, digits - 1)))):
            cells[i][pcol] = t
        if np.any(pv[okp] < 0.1):
            codes = signif_stars(pv)
            w = max(len(c) for c in codes)
            stars = [c.ljust(w) for c in codes]
    header = cols
    if stars is not None:
        for i in range(nr):
            cells[i].append(stars[i])
        header = cols + [""]
    out += matrix_text(cells, names, header, right=True)
    if stars is not None:
        out += "---\nSignif. codes:  " + SIGNIF_LEGEND + "\n"
    return out


def terms_anova_text(table, heading: list[str]) -> str:
    """``print(anova(m))`` of one lmer fit: stats' ``print.anova`` (digits 5) -> ``printCoefmat``
    with ``zap.ind`` = npar, Sum Sq, Mean Sq (zapsmall, then format per column), ``tst.ind`` = F value
    (``format(round(F, 4), digits = 5)``), no P value; an entry that formats to 0 but is not 0 is
    formatted again with 4 digits, as printCoefmat does."""
    out = "\n".join(heading) + "\n"
    names = list(table.index)
    cols = list(table.columns)
    x = table.to_numpy(dtype=float)
    digits = 5
    nr, nc = x.shape
    columns = []
    for j in range(nc):
        if j == nc - 1:
            texts = format_real([round_half(v, 4) for v in x[:, j]], digits)
        else:
            texts = format_real(list(zapsmall(x[:, j], digits)), digits)
        for i in range(nr):  # printCoefmat's not.both.0 fix (the F column takes part: ok[, tst.ind] is FALSE only after)
            if j < nc - 1 and x[i, j] != 0 and float(texts[i]) == 0:
                texts[i] = format_real([x[i, j]], digits - 1)[0]
        columns.append(texts)
    cells = [[columns[j][i] for j in range(nc)] for i in range(nr)]
    return out + matrix_text(cells, names, cols, right=True)
