"""R's number formatting: ``format()``, ``signif()``, ``round()``, ``formatC()``, ``format.pval``.

Each function names the R function (and source file of R 4.2) whose behaviour it reproduces:

- ``scientific``, ``format_info``, ``format_real``, ``encode_real``: ``format()`` of a double
  vector (src/main/format.c ``scientific``/``formatReal``, src/main/printutils.c ``encodeReal``):
  common width, decimals and fixed-vs-scientific choice for a whole vector, so that every
  element shows at least ``digits`` significant digits. ``format_number``: one number
  (``format(x)``; with ``digits = 15`` it is ``deparse()``'s and ``as.character()``'s text).
- ``signif`` (src/nmath/fprec.c), ``round_half`` (src/nmath/fround.c, R >= 4.0.0 algorithm),
  ``zapsmall`` (src/library/base/R/zapsmall.R, R < 4.3).
- ``format_c``: ``formatC(x, digits, format = "g")`` (C's ``%*.*g``).
- ``sprintf_fixed``: ``sprintf("%.*f", digits, x)`` with R's ``NA``/``Inf`` texts.
- ``format_pval``: ``format.pval`` (base/R/format.R).
- ``format_percent``: the interval labels of ``confint`` (stats' and mice's ``format.perc``).

R's options are taken at their defaults: ``digits = 7``, ``scipen = 0``, ``width = 80``,
``OutDec = "."``. Missing values are NaN (R's NA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "DBL_EPSILON",
    "R_DIGITS",
    "R_WIDTH",
    "RealFormat",
    "encode_real",
    "format_c",
    "format_info",
    "format_number",
    "format_percent",
    "format_pval",
    "format_real",
    "round_half",
    "scientific",
    "signif",
    "sprintf_fixed",
    "zapsmall",
]

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


def sprintf_fixed(value: Any, digits: int) -> str:
    """R's ``sprintf("%.*f", digits, x)`` for one double: C's fixed notation with ``digits``
    decimals; NA (NaN or None) prints as ``NA``, infinities as ``Inf``/``-Inf``."""
    if value is None:
        return "NA"
    value = float(value)
    if math.isnan(value):
        return "NA"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return f"{value:.{digits}f}"


def format_percent(probs: Sequence[float], digits: int = 3) -> list[str]:
    """The labels ``confint`` gives interval bounds: ``paste(format(100 * probs, trim = TRUE,
    scientific = FALSE, digits = digits), "%")`` (stats and mice ``format.perc``)."""
    return [text.strip() + " %" for text in
            format_real([100.0 * float(p) for p in probs], digits, scientific=False)]
