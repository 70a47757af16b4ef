"""Priors for the Bayesian multilevel models, spelled and defaulted as brms spells them.

``prior("normal(0, 10)", class_="b")`` is engine's ``brms::prior(normal(0, 10), class = b)``. The
classes of the Gaussian multilevel model are

- ``b``: population-level (fixed) effects, optionally one ``coef`` (a column name such as ``male1``);
- ``Intercept``: the intercept of the *centred* predictors (brms' ``Intercept``, not ``b_Intercept``);
- ``sd``: group-level standard deviations, optionally one ``group`` (``schoolid``, ``schoolid:classid``);
  ``coef="Intercept"`` is accepted, as brms accepts it;
- ``sigma``: the residual standard deviation.

Families: ``normal(mu, sigma)``, ``student_t(nu, mu, sigma)``, ``cauchy(mu, sigma)`` and, for the
positive classes ``sd``/``sigma`` only, ``exponential(rate)``; ``""`` or ``"flat"`` is brms' improper
flat prior. On ``sd`` and ``sigma`` every family is truncated to the positive half-line (brms' ``lb =
0``): ``cauchy(0, 10)`` on ``sd`` is a half-Cauchy.

Defaults (brms 2.18, ``R/priors.R``, ``def_scale_prior.brmsterms``): flat on ``b``;
``student_t(3, round(median(y), 1), max(2.5, round(mad(y), 1)))`` on ``Intercept``;
``student_t(3, 0, max(2.5, round(mad(y), 1)))`` on ``sd`` and ``sigma`` (half-t), where ``mad`` is R's
``mad`` (constant 1.4826) and ``round`` R's rounding to one decimal. On the study's complete cases
that gives the reference's ``student_t(3, -0.1, 2.5)``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from engine.errors import PriorError
from engine.validate import checked_arguments
from engine.rcompat.language import r_number
from engine.rcompat.numbers import round_half

__all__ = [
    "PriorFamily", "FLAT", "NORMAL", "STUDENT_T", "EXPONENTIAL", "LKJ", "CLASSES", "POSITIVE_CLASSES",
    "Prior", "ResolvedPriors", "prior", "parse_prior_spec", "default_priors", "resolve_priors",
    "prior_summary_table", "r_round", "r_mad",
]


class PriorFamily(enum.IntEnum):
    """The one list of prior families; the samplers' kernels compare against these codes."""

    FLAT = 0
    NORMAL = 1
    STUDENT_T = 2  # cauchy(mu, s) is student_t(1, mu, s)
    EXPONENTIAL = 3  # exponential(rate): stored with scale = 1 / rate, mu = 0, nu = 0
    LKJ = 4  # lkj(eta) on a correlation matrix: stored with nu = eta (brms prints lkj_corr_cholesky(eta), class L)


# plain ints of the enum, for Numba kernels (compiled in as constants)
FLAT = int(PriorFamily.FLAT)
NORMAL = int(PriorFamily.NORMAL)
STUDENT_T = int(PriorFamily.STUDENT_T)
EXPONENTIAL = int(PriorFamily.EXPONENTIAL)
LKJ = int(PriorFamily.LKJ)

CLASSES = ("b", "Intercept", "sd", "cor", "sigma")
POSITIVE_CLASSES = ("sd", "sigma")

_FAMILY_ARITY = {"normal": 2, "student_t": 3, "cauchy": 2, "exponential": 1, "lkj": 1, "lkj_corr_cholesky": 1}
_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z_0-9]*)\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class Prior:
    """One prior statement (a row of brms' ``prior_summary``).

    ``family`` is one of FLAT, NORMAL, STUDENT_T, EXPONENTIAL; ``nu`` (degrees of freedom; 1 for
    Cauchy), ``mu`` (location) and ``scale`` (scale; 1/rate for exponential) its parameters.
    ``source`` is "user", "default" or "(vectorized)" as in brms.
    """

    spec: str
    class_: str
    coef: str = ""
    group: str = ""
    family: int = FLAT
    nu: float = np.inf
    mu: float = 0.0
    scale: float = np.inf
    source: str = "user"

    @property
    def lower_bound(self) -> float | None:
        return 0.0 if self.class_ in POSITIVE_CLASSES else None


def _format_number(value: float) -> str:
    """A number as R's ``as.character`` writes it in brms' prior text (``2.5``, ``-0.1``, ``10``)."""
    return r_number(float(value))


def _parse_arguments(text: str, spec: str) -> list[float]:
    if not text.strip():
        return []
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            values.append(float(part))
        except ValueError:
            raise PriorError(f"prior {spec!r}: argument {part!r} is not a number") from None
    if not all(np.isfinite(values)):
        raise PriorError(f"prior {spec!r}: arguments must be finite numbers")
    return values


def parse_prior_spec(spec: str) -> tuple[int, float, float, float, str]:
    """``"student_t(3, 0, 2.5)"`` -> (family code, nu, mu, scale, canonical spelling).

    Raises PriorError for an unknown family, a wrong number of arguments, a non-positive scale,
    rate or degrees of freedom.
    """
    if not isinstance(spec, str):
        raise PriorError(f"prior must be a string such as 'normal(0, 10)', got {type(spec).__name__}")
    stripped = spec.strip()
    if stripped in ("", "flat", "(flat)"):
        return FLAT, np.inf, 0.0, np.inf, "(flat)"
    match = _SPEC.match(stripped)
    if match is None:
        raise PriorError(f"cannot read prior {spec!r}; write it as brms does, e.g. 'normal(0, 10)'")
    name, arguments = match.group(1), _parse_arguments(match.group(2), spec)
    if name not in _FAMILY_ARITY:
        known = ", ".join(sorted(_FAMILY_ARITY))
        raise PriorError(f"prior {spec!r}: unknown family {name!r} (known: {known}, flat)")
    if len(arguments) != _FAMILY_ARITY[name]:
        raise PriorError(f"prior {spec!r}: {name} takes {_FAMILY_ARITY[name]} arguments, got {len(arguments)}")
    canonical = f"{name}({', '.join(_format_number(a) for a in arguments)})"
    if name == "normal":
        mu, scale = arguments
        family, nu = NORMAL, np.inf
    elif name == "cauchy":
        mu, scale = arguments
        family, nu = STUDENT_T, 1.0
    elif name == "student_t":
        nu, mu, scale = arguments
        family = STUDENT_T
        if nu <= 0:
            raise PriorError(f"prior {spec!r}: degrees of freedom must be positive, got {_format_number(nu)}")
    elif name in ("lkj", "lkj_corr_cholesky"):
        (eta,) = arguments
        if eta <= 0:
            raise PriorError(f"prior {spec!r}: the LKJ shape eta must be positive, got {_format_number(eta)}")
        return LKJ, float(eta), 0.0, 1.0, f"lkj_corr_cholesky({_format_number(eta)})"
    else:  # exponential(rate)
        (rate,) = arguments
        if rate <= 0:
            raise PriorError(f"prior {spec!r}: rate must be positive, got {_format_number(rate)}")
        return EXPONENTIAL, 0.0, 0.0, 1.0 / rate, canonical
    if scale <= 0:
        raise PriorError(f"prior {spec!r}: scale must be positive, got {_format_number(scale)}")
    return family, float(nu), float(mu), float(scale), canonical


@checked_arguments
def prior(spec: str, class_: str = "b", group: str | None = None, coef: str | None = None) -> Prior:
    """A brms-style prior statement: ``prior("cauchy(0, 10)", class_="sd", group="schoolid")``.

    Validated at once (family, arguments, class); whether the model has the class, group or
    coefficient is checked when the model is built.
    """
    if class_ == "L":  # brms 2.18's name of the correlation class (the Cholesky factor)
        class_ = "cor"
    if class_ not in CLASSES:
        raise PriorError(f"unknown prior class {class_!r}; the Gaussian multilevel model has {', '.join(CLASSES)}")
    family, nu, mu, scale, canonical = parse_prior_spec(spec)
    if (family == LKJ) != (class_ == "cor"):
        raise PriorError(f"prior {spec!r} on class {class_!r}: lkj(eta) is the prior of class 'cor' "
                         "(correlations of random effects), and the only one")
    if class_ == "cor" and coef not in (None, ""):
        raise PriorError(f"prior on class 'cor' takes no 'coef' (got {coef!r}); use group=")
    if family == EXPONENTIAL and class_ not in POSITIVE_CLASSES:
        raise PriorError(f"prior {spec!r} on class {class_!r}: exponential priors are for 'sd' and 'sigma' only")
    if group is not None and class_ not in ("sd", "cor"):
        raise PriorError(f"prior on class {class_!r}: 'group' applies to class 'sd' or 'cor' only")
    if class_ in ("Intercept", "sigma") and coef not in (None, ""):
        raise PriorError(f"prior on class {class_!r} takes no 'coef' (got {coef!r})")
    if class_ == "sd" and coef not in (None, "", "Intercept") and not group:
        raise PriorError(f"prior on class 'sd' with coef {coef!r}: name its grouping factor too (group=...)")
    if class_ == "sd" and not group:
        coef = ""  # sd with coef "Intercept" but no group: every group's intercept SD, i.e. the class-wide prior
    return Prior(canonical, class_, coef or "", group or "", family, nu, mu, scale, "user")


# ----------------------------------------------------------------------------------- defaults


def r_round(value: float, digits: int = 1) -> float:
    """R's ``round(x, digits)`` (the R >= 4.0.0 algorithm of src/nmath/fround.c)."""
    return round_half(float(value), digits)


def r_mad(values: np.ndarray) -> float:
    """R's ``mad``: 1.4826 * median(|x - median(x)|)."""
    values = np.asarray(values, dtype=float)
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def default_priors(y: np.ndarray, coef_names: Sequence[str], group_names: Sequence[str], has_intercept: bool) -> list[Prior]:
    """brms 2.18's default priors for a Gaussian model of response ``y``, as prior_summary lists them."""
    y = np.asarray(y, dtype=float)
    scale = max(2.5, r_round(r_mad(y), 1))
    location = r_round(float(np.median(y)), 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    t_scale = f"student_t(3, 0, {_format_number(scale)})"
    rows = []
    if coef_names:
        rows.append(Prior("(flat)", "b", source="default"))
    if has_intercept:
        rows.append(
            Prior(f"student_t(3, {_format_number(location)}, {_format_number(scale)})", "Intercept",
                  family=STUDENT_T, nu=3.0, mu=location, scale=scale, source="default")
        )
    if group_names:
        rows.append(Prior(t_scale, "sd", family=STUDENT_T, nu=3.0, mu=0.0, scale=scale, source="default"))
    rows.append(Prior(t_scale, "sigma", family=STUDENT_T, nu=3.0, mu=0.0, scale=scale, source="default"))
    return rows


# ------------------------------------------------------------------------- resolution per model


@dataclass(frozen=True)
class ResolvedPriors:
    """The prior of every parameter of one model, and the table brms' prior_summary prints.

    ``b``: one Prior per non-intercept column (in design order); ``intercept``: Prior or None;
    ``sd``: one Prior per group-level coefficient (groups in order, each group's coefficients in
    order; one per group for random intercepts); ``sigma``: Prior; ``table``: the prior_summary
    rows; ``cor``: one LKJ Prior per group with correlated coefficients (in ``cor_groups`` order).
    """

    b: tuple[Prior, ...]
    intercept: Prior | None
    sd: tuple[Prior, ...]
    sigma: Prior
    table: tuple[Prior, ...]
    cor: tuple[Prior, ...] = ()


def _as_prior_list(priors) -> list[Prior]:
    if priors is None:
        return []
    if isinstance(priors, Prior):
        return [priors]
    if isinstance(priors, Iterable) and not isinstance(priors, (str, bytes)):
        result = list(priors)
        for item in result:
            if not isinstance(item, Prior):
                raise PriorError(f"priors must be engine.prior(...) objects, got {type(item).__name__}")
        return result
    raise PriorError(f"priors must be engine.prior(...) objects or a list of them, got {type(priors).__name__}")


def resolve_priors(priors, y: np.ndarray, coef_names: Sequence[str], group_names: Sequence[str], has_intercept: bool,
                   group_coefs: Sequence[Sequence[str]] | None = None, cor_groups: Sequence[str] = ()) -> ResolvedPriors:
    """Combine the user's priors with brms' defaults, the most specific statement winning.

    Order of precedence, as in brms: coefficient/group specific > class-wide > default. A prior
    that names a class, coefficient or group the model does not have raises PriorError naming it.
    ``group_coefs``: each group's coefficient names (brms: "Intercept", "Days"; default: intercepts
    only); ``cor_groups``: the groups with correlated coefficients (an LKJ prior each; brms 2.18
    default lkj(1), listed as class L, lkj_corr_cholesky(1)).
    """
    user = _as_prior_list(priors)
    coef_names, group_names = list(coef_names), list(group_names)
    group_coefs = [("Intercept",)] * len(group_names) if group_coefs is None else [tuple(c) for c in group_coefs]
    coefs_of = dict(zip(group_names, group_coefs))
    cor_groups = list(cor_groups)
    seen: set[tuple[str, str, str]] = set()
    for p in user:
        key = (p.class_, p.coef, p.group)
        if key in seen:
            raise PriorError(f"duplicate prior for class {p.class_!r}" + (f", coef {p.coef!r}" if p.coef else "")
                             + (f", group {p.group!r}" if p.group else ""))
        seen.add(key)
        if p.class_ == "b":
            if not coef_names:
                raise PriorError("prior on class 'b': the model has no population-level effects besides the intercept")
            if p.coef == "Intercept" or p.coef == "(Intercept)":
                raise PriorError("prior on class 'b' with coef 'Intercept': set the intercept's prior with class_='Intercept'")
            if p.coef and p.coef not in coef_names:
                raise PriorError(f"prior on class 'b': the model has no coefficient {p.coef!r} "
                                 f"(coefficients: {', '.join(coef_names)})")
        elif p.class_ == "Intercept" and not has_intercept:
            raise PriorError("prior on class 'Intercept': the model has no intercept")
        elif p.class_ == "sd":
            if not group_names:
                raise PriorError("prior on class 'sd': the model has no group-level (random) effects")
            if p.group and p.group not in group_names:
                raise PriorError(f"prior on class 'sd': the model has no grouping factor {p.group!r} "
                                 f"(groups: {', '.join(group_names)})")
            if p.group and p.coef and p.coef not in coefs_of[p.group]:
                raise PriorError(f"prior on class 'sd': grouping factor {p.group!r} has no coefficient {p.coef!r} "
                                 f"(its coefficients: {', '.join(coefs_of[p.group])})")
        elif p.class_ == "cor":
            if not cor_groups:
                raise PriorError("prior on class 'cor': no group-level term of the model has correlated "
                                 "coefficients (a term such as (1 + x | g))")
            if p.group and p.group not in cor_groups:
                raise PriorError(f"prior on class 'cor': grouping factor {p.group!r} has no correlated coefficients "
                                 f"(groups with correlations: {', '.join(cor_groups)})")

    defaults = {d.class_: d for d in default_priors(y, coef_names, group_names, has_intercept)}

    def find(class_: str, coef: str = "", group: str = "") -> Prior | None:
        for p in user:
            if p.class_ == class_ and p.coef == coef and p.group == group:
                return p
        return None

    table: list[Prior] = []
    # class b: class-wide row, then one row per coefficient (brms sorts them alphabetically)
    b_priors: list[Prior] = []
    if coef_names:
        b_class = find("b") or defaults["b"]
        table.append(b_class)
        per_coef = {}
        for name in coef_names:
            specific = find("b", coef=name)
            per_coef[name] = specific if specific is not None else replace(b_class, coef=name, source="(vectorized)")
            b_priors.append(per_coef[name])
        table.extend(per_coef[name] for name in sorted(coef_names))
    intercept = None
    if has_intercept:
        intercept = find("Intercept") or defaults["Intercept"]
        table.append(intercept)
    cor_priors: list[Prior] = []
    if cor_groups:
        default_cor = Prior("lkj_corr_cholesky(1)", "cor", family=LKJ, nu=1.0, scale=1.0, source="default")
        cor_class = find("cor") or default_cor
        table.append(cor_class)
        by_group = {}
        for name in sorted(cor_groups):
            by_group[name] = find("cor", group=name) or replace(cor_class, group=name, source="(vectorized)")
            table.append(by_group[name])
        cor_priors = [by_group[name] for name in cor_groups]
    sd_priors: list[Prior] = []
    if group_names:
        sd_class = find("sd") or defaults["sd"]
        table.append(sd_class)
        by_key = {}
        for name in sorted(group_names):
            group_prior = find("sd", group=name)
            group_row = group_prior or replace(sd_class, group=name, source="(vectorized)")
            table.append(group_row)
            for coef in sorted(coefs_of[name]):
                coef_prior = find("sd", coef=coef, group=name)
                by_key[name, coef] = coef_prior or replace(group_row, coef=coef, source="(vectorized)")
                table.append(by_key[name, coef])
        sd_priors = [by_key[name, coef] for name in group_names for coef in coefs_of[name]]
    sigma = find("sigma") or defaults["sigma"]
    table.append(sigma)
    return ResolvedPriors(tuple(b_priors), intercept, tuple(sd_priors), sigma, tuple(table), tuple(cor_priors))


# -------------------------------------------------------------------------------- summaries

_SUMMARY_COLUMNS = ["prior", "class", "coef", "group", "resp", "dpar", "nlpar", "lb", "ub", "source"]


def prior_summary_table(model_or_priors) -> pd.DataFrame:
    """brms' ``prior_summary``: one row per prior statement (prior, class, coef, group, ..., source).

    Accepts a MultilevelModel (``model.priors``), a ResolvedPriors or a sequence of Prior rows.
    """
    if hasattr(model_or_priors, "priors") and isinstance(model_or_priors.priors, ResolvedPriors):
        rows = model_or_priors.priors.table
    elif isinstance(model_or_priors, ResolvedPriors):
        rows = model_or_priors.table
    else:
        rows = _as_prior_list(model_or_priors)
    records = [
        {
            "prior": p.spec, "class": "L" if p.class_ == "cor" else p.class_, "coef": p.coef, "group": p.group, "resp": "", "dpar": "",
            "nlpar": "", "lb": "0" if p.lower_bound is not None else "", "ub": "", "source": p.source,
        }
        for p in rows
    ]
    return pd.DataFrame.from_records(records, columns=_SUMMARY_COLUMNS)
