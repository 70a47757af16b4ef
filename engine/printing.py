"""R's number formatting and printers, reproduced so that engine's output reads like R's.

Each function names the R function (and source file of R 4.2) whose behaviour it reproduces:

- ``scientific``, ``format_info``, ``format_real``: ``format()`` of a double vector
  (src/main/format.c ``scientific``/``formatReal``, src/main/printutils.c ``encodeReal``):
  common width, decimals and fixed-vs-scientific choice for a whole vector, so that every
  element shows at least ``digits`` significant digits.
- ``signif`` (src/nmath/fprec.c), ``round_half`` (src/nmath/fround.c, R >= 4.0.0 algorithm),
  ``zapsmall`` (src/library/base/R/zapsmall.R, R < 4.3).
- ``format_c``: ``formatC(x, digits, format = "g")`` (C's ``%*.*g``).
- ``format_pval``: ``format.pval`` (base/R/format.R).
- ``signif_stars``, ``coefmat_text``: ``symnum`` and ``printCoefmat`` (stats/R/anova.R).
- ``matrix_text``: ``print.default`` of a character matrix (src/main/printmatrix.c), with R's
  column blocks for ``width = 80``.
- ``named_vector_text``: ``print`` of a named numeric vector (src/main/printvector.c).
- ``quantile7``: ``quantile(type = 7)`` (stats/R/quantile.R).
- ``deparse_lines``: ``deparse()`` of a call with R's line breaking at ``width.cutoff = 60``
  (src/main/deparse.c: a break after a binary operator or an argument comma once the line is
  longer than the cutoff; continuation lines indented four spaces).
- ``summary_lm_text``: ``print.summary.lm`` (stats/R/lm.R).

R's options are taken at their defaults: ``digits = 7``, ``scipen = 0``, ``width = 80``,
``OutDec = "."``, ``show.signif.stars = TRUE``. Missing values are NaN (R's NA).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Sequence

import numpy as np

R_DIGITS = 7
R_WIDTH = 80
DBL_EPSILON = 2.220446049250313e-16
_KP_MAX = 27  # long double table of exact powers of ten in R's format.c
_NA_WIDTH = 2


# --------------------------------------------------------------------------------------------
# rounding: R_pow_di, signif (fprec), round (fround)
# --------------------------------------------------------------------------------------------


def _pow_di(x: float, n: int) -> float:
    """R's R_pow_di: x^n by repeated squaring in double precision."""
    xn = 1.0
    if n == 0:
        return xn
    neg = n < 0
    n = -n if neg else n
    while True:
        if n & 1:
            xn *= x
        n >>= 1
        if n:
            x *= x
        else:
            break
    return 1.0 / xn if neg else xn


def signif(x: float, digits: int) -> float:
    """R's ``signif(x, digits)`` (src/nmath/fprec.c)."""
    if not math.isfinite(x) or x == 0.0:
        return x
    dig = int(round(digits))
    if dig > 22:
        return x
    dig = max(dig, 1)
    sgn = 1.0
    if x < 0.0:
        sgn, x = -1.0, -x
    l10 = math.log10(x)
    e10 = int(dig - 1 - math.floor(l10))
    max10e = 308
    if abs(l10) < max10e - 2:
        p10 = 1.0
        if e10 > max10e:
            p10 = _pow_di(10.0, e10 - max10e)
            e10 = max10e
        if e10 > 0:
            pow10 = _pow_di(10.0, e10)
            return sgn * (_nearbyint((x * pow10) * p10) / pow10) / p10
        pow10 = _pow_di(10.0, -e10)
        return sgn * (_nearbyint(x / pow10) * pow10)
    # very large or small numbers: scale through a power of two as R does
    do_round = max10e - l10 >= _pow_di(10.0, -dig)
    e2 = dig + (4 if e10 > 0 else 2)
    p10 = _pow_di(10.0, e2)
    x *= p10
    P10 = _pow_di(10.0, e10 - e2)
    x *= P10
    if do_round:
        x += 0.5
    x = math.floor(x) / p10
    return sgn * x / P10


def _nearbyint(x: float) -> float:
    """C's nearbyint in the default rounding mode: round half to even."""
    return float(round(x))


def round_half(x: float, digits: float) -> float:
    """R's ``round(x, digits)`` (src/nmath/fround.c, the R >= 4.0.0 algorithm).

    Of the two decimal candidates that bracket x, the closer one (in double arithmetic) wins;
    a tie goes to the even last digit. ``digits`` is rounded to an integer first.
    """
    if not math.isfinite(x) or x == 0.0:
        return x
    if digits > 308 + 15:
        return x
    if digits < -308:
        return 0.0
    if digits == 0.0:
        return _nearbyint(x)
    dig = int(math.floor(digits + 0.5))
    sgn = 1.0
    if x < 0.0:
        sgn, x = -1.0, -x
    l10x = 0.30102999566398119521 * (0.5 + math.floor(math.log2(x)))
    if l10x + dig > 15:
        return sgn * x
    pow10 = _pow_di(10.0, dig)
    x10 = pow10 * x
    i10 = math.floor(x10)
    xd = i10 / pow10
    xu = math.ceil(x10) / pow10
    du = xu - x
    dd = x - xd
    return sgn * (xu if (du < dd or (du == dd and math.fmod(i10, 2.0) == 1.0)) else xd)


def zapsmall(x: Sequence[float], digits: int = R_DIGITS) -> np.ndarray:
    """R's ``zapsmall`` as of R 4.2: round to ``digits - log10(max|x|)`` decimals."""
    x = np.asarray(x, dtype=float)
    ok = ~np.isnan(x)
    if not ok.any():
        return x
    mx = float(np.max(np.abs(x[ok])))
    d = max(0.0, digits - math.log10(mx)) if mx > 0 else digits
    return np.array([round_half(v, d) if not math.isnan(v) else v for v in x])


# --------------------------------------------------------------------------------------------
# format(): scientific() and formatReal()
# --------------------------------------------------------------------------------------------


def _round_bits(q: Fraction, bits: int = 64) -> Fraction:
    """Round a positive rational to ``bits`` significant bits, ties to even (x87 long double)."""
    if q == 0:
        return q
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** e > q:
        e -= 1
    shift = bits - 1 - e
    scaled = q * (Fraction(2) ** shift)
    m = round(scaled)  # Fraction rounds half to even
    return Fraction(m) / (Fraction(2) ** shift)


def scientific(x: float, digits: int = R_DIGITS) -> tuple[int, int, int, bool]:
    """R's ``scientific()``: (neg, kpower, nsig, roundingwidens) of x at ``digits`` digits.

    |x| = alpha * 10^kpower with 1 <= alpha < 10 after rounding to ``digits`` significant digits;
    nsig is the number of significant digits actually needed (trailing zeros dropped). The
    scaling is done as R does on x86_64, in 64-bit-mantissa long double arithmetic.
    """
    if x == 0.0:
        return 0, 0, 1, False
    neg = 1 if x < 0 else 0
    r = -x if neg else x
    if digits >= 16:
        text = "%#.*e" % (digits - 1, r)
        mantissa, exponent = text.split("e")
        kpower = int(exponent)
        mant_digits = mantissa.replace(".", "")
        nsig = digits
        for i in range(digits - 1, 0, -1):
            if mant_digits[i] != "0":
                break
            nsig -= 1
        return neg, kpower, nsig, False
    kp = int(math.floor(math.log10(r))) - digits + 1
    rf = Fraction(r)
    if abs(kp) <= _KP_MAX:
        r_prec = _round_bits(rf / Fraction(10) ** kp if kp > 0 else rf * Fraction(10) ** (-kp))
    else:
        r_prec = _round_bits(rf / _round_bits(Fraction(10) ** kp))
    if r_prec < Fraction(10) ** (digits - 1):
        r_prec = _round_bits(r_prec * 10)
        kp -= 1
    alpha = int(round(r_prec))  # nearbyintl: half to even
    nsig = digits
    for _ in range(digits):
        if alpha % 10 == 0:
            nsig -= 1
            alpha //= 10
        else:
            break
    if nsig == 0 and digits > 0:
        nsig = 1
        kp += 1
    kpower = kp + digits - 1
    rgt = min(max(digits - kpower, 0), _KP_MAX)
    fuzz = 0.5 / 10.0 ** rgt
    widens = 0 < kpower <= _KP_MAX and rf < _round_bits(Fraction(10) ** kpower - Fraction(fuzz))
    return neg, kpower, nsig, bool(widens)


@dataclass(frozen=True)
class RealFormat:
    """R's (w, d, e): field width, decimals (or mantissa decimals), exponent flag."""

    width: int
    decimals: int
    exponent: int


def format_info(values: Iterable[float], digits: int = R_DIGITS, nsmall: int = 0,
                scientific_notation: bool | None = None) -> RealFormat:
    """R's ``formatReal``: one common format for a vector, as ``format(x, digits)`` chooses it.

    Fixed notation is used whenever its width is not larger than scientific notation's
    (``scipen = 0``); ``scientific_notation=False``/``True`` forces one of them as R's
    ``format(scientific = )`` does.
    """
    naflag = posinf = neginf = False
    neg = 0
    rgt = mxl = mxsl = mxns = None
    mnl = None
    for x in values:
        x = float(x)
        if not math.isfinite(x):
            if math.isnan(x):
                naflag = True
            elif x > 0:
                posinf = True
            else:
                neginf = True
            continue
        neg_i, kpower, nsig, widens = scientific(x, digits)
        left = kpower + 1
        if widens:
            left -= 1
        sleft = neg_i + (1 if left <= 0 else left)
        right = nsig - left
        if neg_i:
            neg = 1
        rgt = right if rgt is None else max(rgt, right)
        mxl = left if mxl is None else max(mxl, left)
        mnl = left if mnl is None else min(mnl, left)
        mxsl = sleft if mxsl is None else max(mxsl, sleft)
        mxns = nsig if mxns is None else max(mxns, nsig)
    if mxns is None:
        w, d, e = 0, 0, 0
    else:
        if digits == 0:
            rgt = 0
        if mxl < 0:
            mxsl = 1 + neg
        rgt = max(rgt, 0)
        wF = mxsl + rgt + (rgt != 0)
        e = 2 if (mxl > 100 or mnl <= -99) else 1
        d = mxns - 1
        w = neg + (d > 0) + d + 4 + e
        scipen = 0 if scientific_notation is None else (-10**6 if scientific_notation else 10**6)
        if wF <= w + scipen:
            e = 0
            if nsmall > rgt:
                rgt = nsmall
                wF = mxsl + rgt + (rgt != 0)
            d = rgt
            w = wF
    if naflag:
        w = max(w, _NA_WIDTH)
    if posinf:
        w = max(w, 3)
    if neginf:
        w = max(w, 4)
    return RealFormat(w, d, e)


def encode_real(x: float, fmt: RealFormat, na: str = "NA") -> str:
    """R's ``encodeReal0``: one number in a given format, right-justified to its width."""
    w, d, e = fmt.width, fmt.decimals, fmt.exponent
    if math.isnan(x):
        return na.rjust(w)
    if math.isinf(x):
        return ("Inf" if x > 0 else "-Inf").rjust(w)
    if x == 0.0:
        x = 0.0  # no negative zero
    if e:
        return ("%#*.*e" if d else "%*.*e") % (w, d, x)
    return "%*.*f" % (w, d, x)


def format_real(values: Iterable[float], digits: int = R_DIGITS, nsmall: int = 0,
                na: str = "NA", scientific: bool | None = None) -> list[str]:
    """R's ``format(x, digits = digits)`` for a double vector: common format, common width."""
    values = [float(v) for v in values]
    fmt = format_info(values, digits, nsmall, scientific)
    return [encode_real(v, fmt, na) for v in values]


def format_number(x: float, digits: int = R_DIGITS) -> str:
    """One number as ``format(x)`` / ``cat(x)`` / ``as.character``-like printing in R."""
    return format_real([x], digits)[0]


def format_c(x: float, digits: int | None = None, width: int | None = None,
             fmt: str = "g", flag: str = "") -> str:
    """R's ``formatC(x, digits, width, format, flag)`` for one double (C's ``sprintf``)."""
    if width is None and digits is None:
        width = 1
    if digits is None:
        digits = 4
    elif digits < 0:
        digits = 6
    if width is None:
        width = digits + 1
    elif width == 0:
        width = digits
    if not math.isfinite(x):
        text = "NaN" if math.isnan(x) else ("Inf" if x > 0 else "-Inf")
        return text.ljust(width) if "-" in flag else text.rjust(width)
    return ("%" + flag + "*.*" + fmt) % (width, digits, x)


def format_pval(pv: Sequence[float], digits: int = max(1, R_DIGITS - 2),
                eps: float = DBL_EPSILON, na_form: str = "NA") -> list[str]:
    """R's ``format.pval``: fixed and exponent-range p-values formatted as separate groups;
    values below ``eps`` as ``< eps`` with fewer digits."""
    pv = [float(p) for p in pv]
    out: list[str | None] = [None] * len(pv)
    idx = [i for i, p in enumerate(pv) if not math.isnan(p)]
    is0 = [i for i in idx if pv[i] < eps]
    not0 = [i for i in idx if pv[i] >= eps]
    rr: dict[int, str] = {}
    if not0:
        expo = {i: math.floor(math.log10(pv[i] if pv[i] > 0 else 1e-50)) for i in not0}
        fixp = [i for i in not0 if expo[i] >= -3 or (expo[i] == -4 and digits > 1)]
        expp = [i for i in not0 if i not in set(fixp)]
        for group in (fixp, expp):
            if group:
                for i, s in zip(group, format_real([pv[i] for i in group], digits)):
                    rr[i] = s
        for i in not0:
            out[i] = rr[i]
    if is0:
        d = max(1, digits - 2)
        if not0:
            nc = max(len(s) for s in rr.values())
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if (d == 1 and nc <= 6) else " "
        else:
            sep = "" if d == 1 else " "
        text = "<" + sep + format_real([eps], d)[0]
        for i in is0:
            out[i] = text
    for i, p in enumerate(pv):
        if math.isnan(p):
            out[i] = na_form
    return [s if s is not None else na_form for s in out]


# --------------------------------------------------------------------------------------------
# printing matrices and named vectors
# --------------------------------------------------------------------------------------------


def matrix_text(cells: Sequence[Sequence[str]], row_names: Sequence[str],
                col_names: Sequence[str], right: bool = True, width: int = R_WIDTH,
                gap: int = 1) -> str:
    """R's ``print.default`` of a character matrix with ``quote = FALSE``.

    Row names left-justified; each column as wide as its widest entry or name; columns that do
    not fit in ``width`` continue in further blocks below, as R does. Ends with a newline.
    """
    n_rows = len(row_names)
    n_cols = len(col_names)
    rlabw = max((len(s) for s in row_names), default=0)
    widths = [max([len(col_names[j])] + [len(cells[i][j]) for i in range(n_rows)])
              for j in range(n_cols)]
    lines: list[str] = []
    jmin = 0
    while jmin < n_cols:
        total = rlabw
        jmax = jmin
        while True:
            total += widths[jmax] + gap
            jmax += 1
            if not (jmax < n_cols and total + widths[jmax] + gap < width):
                break
        head = " " * rlabw
        for j in range(jmin, jmax):
            label = col_names[j].rjust(widths[j]) if right else col_names[j].ljust(widths[j])
            head += " " * gap + label
        lines.append(head)
        for i in range(n_rows):
            line = row_names[i].ljust(rlabw)
            for j in range(jmin, jmax):
                cell = cells[i][j]
                line += " " * gap + (cell.rjust(widths[j]) if right else cell.ljust(widths[j]))
            lines.append(line)
        jmin = jmax
    return "\n".join(lines) + "\n"


def _named_fields_text(fields: Sequence[str], names: Sequence[str], width: int, gap: int) -> str:
    """R's layout of a named vector whose entries are already formatted: names right-justified
    over the fields, as many per line as fit in ``width``; every field followed by the gap."""
    w = max([len(s) for s in fields] + [len(s) for s in names])
    per_line = max(1, width // (w + gap))
    out = []
    for start in range(0, len(fields), per_line):
        stop = min(len(fields), start + per_line)
        if start:
            out.append("\n")
        out.append("".join(names[k].rjust(w) + " " * gap for k in range(start, stop)) + "\n")
        out.append("".join(fields[k].rjust(w) + " " * gap for k in range(start, stop)))
    out.append("\n")
    return "".join(out)


def named_vector_text(values: Sequence[float], names: Sequence[str], digits: int = R_DIGITS,
                      width: int = R_WIDTH, gap: int = 1) -> str:
    """R's ``print`` of a named double vector: names right-justified over the values, as many
    per line as fit in ``width``; every field followed by the gap. Ends with a newline."""
    fmt = format_info(values, digits)
    fields = [encode_real(float(v), fmt).rjust(fmt.width) for v in values]
    return _named_fields_text(fields, names, width, gap)


# --------------------------------------------------------------------------------------------
# printCoefmat
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# quantile(type = 7)
# --------------------------------------------------------------------------------------------


def quantile7(x: np.ndarray, probs: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> np.ndarray:
    """R's ``quantile(x, probs, type = 7)``: (1 - h) x[lo] + h x[hi] on the sorted values."""
    xs = np.sort(np.asarray(x, dtype=float))
    n = xs.size
    out = np.empty(len(probs))
    for t, p in enumerate(probs):
        index = 1 + max(n - 1, 0) * p
        lo = math.floor(index)
        hi = math.ceil(index)
        q = xs[lo - 1]
        if index > lo and xs[hi - 1] != q:
            h = index - lo
            q = (1 - h) * q + h * xs[hi - 1]
        out[t] = q
    return out


# --------------------------------------------------------------------------------------------
# deparse(): a small R expression parser and R's deparser with line breaking
# --------------------------------------------------------------------------------------------

_RESERVED = {"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE",
             "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "in"}
_SYNTACTIC = re.compile(r"^((([A-Za-z]|[.][A-Za-z._])[A-Za-z0-9._]*)|[.])$")


def r_name(name: str) -> str:
    """A name as R's deparse writes it: as is when syntactic, else in backticks."""
    if _SYNTACTIC.match(name) and name not in _RESERVED:
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass(frozen=True)
class RNode:
    """An R expression: kind in {"name", "num", "str", "call", "paren", "binary", "unary"}."""

    kind: str
    text: str = ""                      # name, literal text, operator or function name
    args: tuple = ()                    # operands / arguments (RNode or (tag, RNode))


# binding powers (left, right) from R's grammar (src/main/gram.y)
_BINARY_POWER = {
    "~": (10, 11), "||": (20, 21), "|": (20, 21), "&&": (30, 31), "&": (30, 31),
    "==": (50, 51), "!=": (50, 51), "<": (50, 51), ">": (50, 51), "<=": (50, 51), ">=": (50, 51),
    "+": (60, 61), "-": (60, 61), "*": (70, 71), "/": (70, 71), "%": (80, 81), ":": (90, 91),
    "^": (111, 110), "$": (120, 121), "@": (120, 121),
}
_UNARY_POWER = {"-": 100, "+": 100, "!": 40, "~": 10}
# operators R deparses with spaces around them (PP_BINARY); the others (PP_BINARY2) without
_SPACED = {"~", "||", "|", "&&", "&", "==", "!=", "<", ">", "<=", ">=", "+", "-", "*"}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?)
  | (?P<name>(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*|`(?:[^`\\]|\\.)*`)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>%[^%]*%|\|\||&&|==|!=|<=|>=|[-+*/^:~|&<>!()\[\],=$@])
""", re.VERBOSE)


class _Parser:
    def __init__(self, text: str):
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise ValueError(f"cannot deparse {text!r}: unexpected character at {pos}")
            pos = m.end()
            kind = m.lastgroup
            if kind != "ws":
                self.tokens.append((kind, m.group()))
        self.i = 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, value):
        kind, tok = self.take()
        if tok != value:
            raise ValueError(f"expected {value!r}, got {tok!r}")

    def parse(self, min_power: int = 0) -> RNode:
        kind, tok = self.take()
        if kind is None:
            raise ValueError("unexpected end of expression")
        if kind == "op" and tok in _UNARY_POWER:
            operand = self.parse(_UNARY_POWER[tok])
            left = RNode("unary", tok, (operand,))
        elif tok == "(":
            inner = self.parse(0)
            self.expect(")")
            left = RNode("paren", "(", (inner,))
        elif kind == "num":
            left = RNode("num", tok)
        elif kind == "str":
            left = RNode("str", tok)
        elif kind == "name":
            left = RNode("name", tok[1:-1] if tok.startswith("`") else tok)
        else:
            raise ValueError(f"unexpected {tok!r}")
        while True:
            kind, tok = self.peek()
            if tok == "(" and left.kind == "name":
                self.take()
                left = RNode("call", left.text, tuple(self._args(")")))
                continue
            if tok == "[":
                self.take()
                left = RNode("index", "[", (left,) + tuple(self._args("]")))
                continue
            if kind != "op":
                break
            key = "%" if (tok.startswith("%") and len(tok) > 1) else tok
            if key not in _BINARY_POWER:
                break
            lp, rp = _BINARY_POWER[key]
            if lp < min_power:
                break
            self.take()
            right = self.parse(rp)
            left = RNode("binary", tok, (left, right))
        return left

    def _args(self, close: str) -> list:
        args = []
        if self.peek()[1] == close:
            self.take()
            return args
        while True:
            tag = None
            kind, tok = self.peek()
            nxt = self.tokens[self.i + 1][1] if self.i + 1 < len(self.tokens) else None
            if kind in ("name", "str") and nxt == "=":
                tag = tok.strip("`\"'")
                self.take()
                self.take()
            args.append((tag, self.parse(0)))
            kind, tok = self.take()
            if tok == close:
                return args
            if tok != ",":
                raise ValueError(f"expected ',' or {close!r}, got {tok!r}")


def parse_r(text: str) -> RNode:
    """Parse an R expression (formulas, calls, arithmetic) into an ``RNode`` tree."""
    p = _Parser(text)
    node = p.parse(0)
    if p.i != len(p.tokens):
        raise ValueError(f"cannot deparse {text!r}: trailing {p.peek()[1]!r}")
    return node


def _num_text(tok: str) -> str:
    if tok.endswith("L"):
        return str(int(float(tok[:-1]))) + "L"
    return format_number(float(tok), 15)


class _Deparser:
    """R's deparse2buff for the node kinds above, with its line-breaking rule."""

    def __init__(self, cutoff: int):
        self.cutoff = cutoff
        self.lines: list[str] = []
        self.buf = ""
        self.indent = 0
        self.startline = True

    def put(self, s: str):
        if self.startline:
            self.startline = False
            for i in range(1, self.indent + 1):
                self.buf += "    " if i <= 4 else "  "
        self.buf += s

    def writeline(self):
        self.lines.append(self.buf)
        self.buf = ""
        self.startline = True

    def linebreak(self, state: list) -> None:
        if len(self.buf) > self.cutoff:
            if not state[0]:
                state[0] = True
                self.indent += 1
            self.writeline()

    def node(self, e: RNode):
        if e.kind == "name":
            self.put(r_name(e.text))
        elif e.kind == "num":
            self.put(_num_text(e.text))
        elif e.kind == "str":
            body = e.text[1:-1]
            if e.text[0] == "'":
                body = body.replace('\\\'', "'").replace('"', '\\"')
            self.put('"' + body + '"')
        elif e.kind == "paren":
            self.put("(")
            self.node(e.args[0])
            self.put(")")
        elif e.kind == "unary":
            self.put(e.text)
            self.node(e.args[0])
        elif e.kind == "binary":
            op = e.text
            left, right = e.args
            if op in _SPACED or (op.startswith("%") and op not in ("%%", "%/%")):
                state = [False]
                self.node(left)
                self.put(" " + op + " ")
                self.linebreak(state)
                self.node(right)
                if state[0]:
                    self.indent -= 1
            else:
                self.node(left)
                self.put(op)
                self.node(right)
        elif e.kind == "call":
            self.put(r_name(e.text) + "(")
            self.args(e.args)
            self.put(")")
        elif e.kind == "index":
            self.node(e.args[0])
            self.put("[")
            self.args(e.args[1:])
            self.put("]")
        else:  # pragma: no cover - parse_r produces only the kinds above
            raise ValueError(e.kind)

    def args(self, args):
        state = [False]
        for k, (tag, value) in enumerate(args):
            if tag is not None:
                self.put(r_name(tag) + " = ")
            self.node(value)
            if k < len(args) - 1:
                self.put(", ")
                self.linebreak(state)
        if state[0]:
            self.indent -= 1


def deparse_lines(expr: RNode, width_cutoff: int = 60) -> list[str]:
    """R's ``deparse(expr, width.cutoff)``: the lines R would print for this expression."""
    d = _Deparser(width_cutoff)
    d.node(expr)
    d.writeline()
    return d.lines


def call_lines(function: str, args: Sequence[tuple[str | None, str]],
               width_cutoff: int = 60) -> list[str]:
    """Deparse ``function(tag = value, ...)`` where each value is R source text."""
    node = RNode("call", function, tuple((tag, parse_r(text)) for tag, text in args))
    return deparse_lines(node, width_cutoff)


# --------------------------------------------------------------------------------------------
# print.summary.lm
# --------------------------------------------------------------------------------------------


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
                    digits: int = max(3, R_DIGITS - 3)) -> str:
    """The text of R's ``print(summary(lm(...)))`` (stats/R/lm.R ``print.summary.lm``).

    coef_table: (n_coef, 4) estimate, std. error, t value, p-value for every coefficient in
    model-matrix order, NaN in the rows of aliased coefficients.
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


def named_strings_text(values: Sequence[str], names: Sequence[str], width: int = R_WIDTH,
                       gap: int = 1) -> str:
    """R's ``print.default`` of a named character vector with ``quote = FALSE``."""
    return _named_fields_text(list(values), names, width, gap)


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


def abbreviate(name: str, minlength: int = 4) -> str:
    """R's ``abbreviate(name, minlength)`` (base/R/abbreviate.R, method "left.kept", ASCII):
    drop lower-case vowels from the right (not the first character), then lower-case letters
    from the right, until at most ``minlength`` characters remain; spaces are dropped first."""
    if len(name) <= minlength:
        return name
    x = name.strip()
    if len(x) <= minlength:
        return x
    chars = list(x)
    # drop lower case vowels, from the end, not the first character of a word
    def is_first(i):
        return i == 0 or chars[i - 1] == " "
    i = len(chars) - 1
    while len(chars) > minlength and i > 0:
        if chars[i] in "aeiou" and not is_first(i):
            del chars[i]
        i -= 1
    i = len(chars) - 1
    while len(chars) > minlength and i > 0:
        if chars[i].islower() and not is_first(i):
            del chars[i]
        i -= 1
    if len(chars) > minlength:
        chars = [c for c in chars if c != " "]
    return "".join(chars)
