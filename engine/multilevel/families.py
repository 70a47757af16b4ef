"""Response families of ``engine.brm``: gaussian, bernoulli, binomial and poisson, as brms 2.18 has them.

A family fixes the distribution of the response given the linear predictor eta_i and its link:

- ``gaussian`` (identity): y_i ~ N(eta_i, sigma^2) -- the model of engine.multilevel;
- ``bernoulli`` (logit): y_i in {0, 1}, P(y_i = 1) = 1 / (1 + exp(-eta_i));
- ``binomial`` (logit), response ``y | trials(n)``: y_i ~ Binomial(n_i, logit^-1(eta_i));
- ``poisson`` (log): y_i ~ Poisson(exp(eta_i)).

Only these canonical links are offered (the Pólya-Gamma sampler needs the logit link; other links
raise an error naming the ones there are). This module holds what is family-specific and
sampler-independent:

- ``get_family(family, link)``: the ``Family`` record, or an error naming the families and links;
- ``glm_model_frame(formula, data, family)``: the model frame of a non-Gaussian model. The left side
  may carry brms' addition term ``| trials(n)`` (binomial only; ``n`` a column or a whole number);
  the response is checked and converted (bernoulli: 0/1 numbers, booleans, or a two-level factor
  whose second level is the success, as brms; binomial and poisson: counts) before the formula layer
  sees it, so the formula layer needs no change. The user's data are never modified;
- ``build_glm_model(frame, prior, family)``: a ``GLMModel`` -- the model layer's ``MultilevelModel``
  (engine.multilevel.build_model: the same design, grouping and nesting arrays) with the family,
  the trials and brms' default priors for the family;
- ``default_priors(family, y, ...)``: brms 2.18's defaults, from ``def_scale_prior.brmsterms``
  (R/priors.R): flat on b; ``student_t(3, location, scale)`` on the Intercept and
  ``student_t(3, 0, scale)`` on sd, where for links in brms' list of "transforming" links
  (identity, log, inverse, sqrt, 1/mu^2) y_link = link(y) (zeros replaced by 0.1 under log),
  scale = max(2.5, round(mad(y_link), 1)) and location = round(median(y_link), 1); for the logit
  link location 0 and scale 2.5. That gives ``student_t(3, 0, 2.5)`` on cbpp's intercept and
  ``student_t(3, 1.4, 2.5)`` on epilepsy's (median count 4, log 4 = 1.39). No sigma for these families;
- ``log_likelihood(family, y, trials, eta)``: the per-observation log-likelihood (normalising
  constants included, as brms' ``log_lik``), vectorised over draws;
- ``linear_predictor(model, draws, ranef)``: eta (draws, N) from canonical draws (random intercepts
  and slopes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy.special import gammaln

from engine.errors import DataError, EngineInputError, FormulaError, ModelSpecError, PriorError, warn_user
from engine.multilevel.model import MultilevelModel
from engine.multilevel.priors import STUDENT_T, Prior, ResolvedPriors, _as_prior_list, _format_number, r_mad, r_round

GAUSSIAN, BERNOULLI, BINOMIAL, POISSON = 0, 1, 2, 3


@dataclass(frozen=True)
class Family:
    """A response family: ``name`` (brms' name), ``code`` (GAUSSIAN/BERNOULLI/BINOMIAL/POISSON for the
    kernels), ``link`` of the mean, and whether it has a residual scale ``sigma``."""

    name: str
    code: int
    link: str
    has_sigma: bool

    @property
    def links(self) -> tuple[tuple[str, str], ...]:
        """brms' ``Links:`` line as (parameter, link) pairs."""
        if self.has_sigma:
            return (("mu", self.link), ("sigma", "identity"))
        return (("mu", self.link),)


_FAMILIES = {
    "gaussian": Family("gaussian", GAUSSIAN, "identity", True),
    "bernoulli": Family("bernoulli", BERNOULLI, "logit", False),
    "binomial": Family("binomial", BINOMIAL, "logit", False),
    "poisson": Family("poisson", POISSON, "log", False),
}


def get_family(family="gaussian", link: str | None = None) -> Family:
    """The Family for a name (``"bernoulli"``; case-insensitive) or a Family, with its link checked.

    Raises EngineInputError for an unknown family or a link other than the family's supported one.
    """
    if isinstance(family, Family):
        chosen = family
    else:
        if not isinstance(family, str) or family.strip().lower() not in _FAMILIES:
            raise EngineInputError(
                f"unknown family {family!r}: choose one of {', '.join(repr(f) for f in _FAMILIES)}")
        chosen = _FAMILIES[family.strip().lower()]
    if link is not None:
        if not isinstance(link, str) or link.strip() != chosen.link:
            raise EngineInputError(
                f"link {link!r} is not available for family {chosen.name!r}: engine fits the "
                f"{chosen.name} family with link {chosen.link!r} only")
    return chosen


# ------------------------------------------------------------------------------------ formula


_BARE_NAME = re.compile(r"^\s*(?:([A-Za-z.][A-Za-z0-9._]*)|`([^`]+)`)\s*$")
_TRIALS = re.compile(r"^\s*trials\s*\((.*)\)\s*$", re.S)
_PLACEHOLDER = "engine_glm_response__"


def _top_level_split(text: str, separator: str) -> tuple[str, str] | None:
    """Split ``text`` at the first ``separator`` outside parentheses and backticks."""
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch == "`":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == separator and depth == 0:
            return text[:i], text[i + 1:]
    return None


class ResponseSpec(NamedTuple):
    """The left side of a brms formula: the response text and the ``trials()`` argument text (or None)."""

    response: str
    trials: str | None
    rhs: str


def split_response(formula: str) -> ResponseSpec:
    """``"y | trials(n) ~ x + (1 | g)"`` -> ResponseSpec("y", "n", "x + (1 | g)").

    Raises FormulaError for a formula without ``~`` or an addition term other than ``trials()``.
    """
    if not isinstance(formula, str):
        raise FormulaError(f"a formula must be a string, not {type(formula).__name__}")
    parts = _top_level_split(formula, "~")
    if parts is None:
        raise FormulaError("the formula has no response (write 'y ~ ...')", formula, 0)
    lhs, rhs = parts
    bar = _top_level_split(lhs, "|")
    if bar is None:
        return ResponseSpec(lhs.strip(), None, rhs)
    response, addition = bar
    match = _TRIALS.match(addition)
    if match is None:
        raise FormulaError(
            f"addition term {addition.strip()!r} is not supported: the response side takes only "
            "'| trials(n)' (binomial)", formula, len(response) + 1)
    return ResponseSpec(response.strip(), match.group(1).strip(), rhs)


# ------------------------------------------------------------------------------------ response


def _column(data: pd.DataFrame, text: str, what: str, formula: str) -> tuple[str, pd.Series] | None:
    """The data column named by a bare name (or `backticked` name), or None if ``text`` is an expression."""
    match = _BARE_NAME.match(text)
    if match is None:
        return None
    name = match.group(1) or match.group(2)
    if name not in data.columns:
        from engine.errors import ColumnNotFoundError

        raise ColumnNotFoundError(f"{what} column {name!r} of formula {formula!r} is not in the data")
    return name, data[name]


def bernoulli_values(series: pd.Series, name: str) -> np.ndarray:
    """0/1 float values (NaN where missing) of a bernoulli response, as brms reads one.

    Numbers must be 0 or 1; booleans are 0/1; a factor (pandas categorical, strings, or objects) must
    have at most two levels, the second (in level order; R's sorted order for strings) being the
    success. Raises DataError naming the column otherwise.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        levels = [str(level) for level in series.cat.categories]
        codes = series.cat.codes.to_numpy()
        if len(levels) > 2:
            raise DataError(f"bernoulli response {name!r} is a factor with {len(levels)} levels "
                            f"({', '.join(levels[:5])}{', ...' if len(levels) > 5 else ''}); it needs two")
        values = codes.astype(np.float64)
        values[codes < 0] = np.nan
        return values
    if series.dtype == bool or pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        observed = values[~np.isnan(values)]
        bad = observed[(observed != 0.0) & (observed != 1.0)]
        if bad.size:
            raise DataError(f"bernoulli response {name!r} must be 0 or 1 (or booleans, or a two-level factor); "
                            f"found {_format_number(bad[0])}")
        return values
    # strings / objects: a factor with R's sorted levels
    missing = series.isna().to_numpy()
    labels = series.astype(str).to_numpy()
    levels = sorted(set(labels[~missing].tolist()))
    if len(levels) > 2:
        raise DataError(f"bernoulli response {name!r} has {len(levels)} distinct values "
                        f"({', '.join(levels[:5])}{', ...' if len(levels) > 5 else ''}); it needs two")
    values = np.array([float(levels.index(v)) if not m else np.nan for v, m in zip(labels, missing)])
    return values


def check_counts(values: np.ndarray, name: str, family: str) -> None:
    """Non-negative whole numbers (NaN = missing allowed); DataError naming the column otherwise."""
    observed = values[~np.isnan(values)]
    if observed.size and (np.any(observed < 0) or np.any(observed != np.round(observed)) or not np.all(np.isfinite(observed))):
        bad = observed[(observed < 0) | (observed != np.round(observed)) | ~np.isfinite(observed)][0]
        raise DataError(f"{family} response {name!r} must hold non-negative whole numbers (counts); found {_format_number(bad)}")


def _numeric(series: pd.Series, name: str, what: str) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        raise DataError(f"{what} {name!r} must be numeric, got {series.dtype}")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def glm_model_frame(formula: str, data: pd.DataFrame, family: Family, allow_random: bool = True):
    """The ModelFrame of a non-Gaussian model and the trials per kept row ((n,) float64; ones unless binomial).

    The response (and the ``trials()`` column) is read and checked here; the formula layer then sees
    a numeric placeholder response on a shallow copy of ``data`` (NaN where the response or the
    trials are missing, so its listwise deletion drops those rows too). The returned frame carries the
    user's formula and response name.
    """
    from dataclasses import replace as dc_replace

    from engine.formula import model_frame

    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    spec = split_response(formula)
    if spec.trials is not None and family.code != BINOMIAL:
        raise FormulaError(f"'| trials(...)' applies to the binomial family only (family is {family.name!r})", formula, 0)
    max_trials = family.code == BINOMIAL and spec.trials is None  # brms 2.18: warn, trials = max(y)
    n_rows = len(data)
    column = _column(data, spec.response, "response", formula)
    if column is not None:
        name, series = column
        if family.code == BERNOULLI:
            y = bernoulli_values(series, name)
        else:
            y = _numeric(series, name, f"{family.name} response")
            check_counts(y, name, family.name)
        response_name = name
    else:
        y = None  # an expression (I(...), log(...)): the formula layer evaluates it
        response_name = spec.response
    trials = np.ones(n_rows)
    if spec.trials is not None:
        text = spec.trials
        try:
            constant = float(text)
        except ValueError:
            constant = None
        if constant is not None:
            if not (constant >= 0 and constant == round(constant)):
                raise DataError(f"trials({text}) must be a non-negative whole number")
            trials = np.full(n_rows, constant)
        else:
            trials_column = _column(data, text, "trials", formula)
            if trials_column is None:
                raise FormulaError(f"trials({text}): give a column name or a whole number", formula, 0)
            trials_name, trials_series = trials_column
            trials = _numeric(trials_series, trials_name, "trials column")
            observed = trials[~np.isnan(trials)]
            if observed.size and (np.any(observed < 0) or np.any(observed != np.round(observed))):
                raise DataError(f"trials column {trials_name!r} must hold non-negative whole numbers")
    rhs = spec.rhs
    if y is not None:
        placeholder = _PLACEHOLDER
        while placeholder in data.columns:
            placeholder += "_"
        values = y.copy()
        values[np.isnan(trials)] = np.nan
        frame_data = data.assign(**{placeholder: values})
        frame = model_frame(f"{placeholder} ~{rhs}", frame_data, allow_random=allow_random)
    else:
        frame_data = data
        if np.any(np.isnan(trials)):
            raise DataError("the trials column has missing values; with a response expression drop those rows first")
        frame = model_frame(f"{spec.response} ~{rhs}", frame_data, allow_random=allow_random)
        if family.code == BERNOULLI:
            bernoulli_values(pd.Series(frame.y), response_name)
        else:
            check_counts(np.asarray(frame.y, dtype=float), response_name, family.name)
    kept_trials = np.ascontiguousarray(trials[np.asarray(frame.rows, dtype=np.int64)], dtype=np.float64)
    if max_trials:
        # brms 2.18 (checked with make_standata): "Using the maximum response value as the number of
        # trials." and a deprecation warning; every row gets max(y) over the rows kept
        
        from engine.errors import DataWarning

        top = float(np.max(np.asarray(frame.y, dtype=float))) if len(frame.rows) else 1.0
        warn_user(f"binomial without '| trials(n)': using the maximum response value ({_format_number(top)}) "
                  f"as the number of trials, as brms 2.18 does (deprecated there); give "
                  f"'{spec.response} | trials(n) ~ ...'", DataWarning)
        kept_trials = np.full(kept_trials.shape, top)
    if family.code == BINOMIAL:
        y_kept = np.asarray(frame.y, dtype=float)
        too_many = np.nonzero(y_kept > kept_trials)[0]
        if too_many.size:
            row = int(np.asarray(frame.rows)[too_many[0]])
            raise DataError(f"binomial response {response_name!r} exceeds its trials in {too_many.size} row(s) "
                            f"(first: row {row + 1}, {_format_number(y_kept[too_many[0]])} successes of "
                            f"{_format_number(kept_trials[too_many[0]])} trials)")
    frame = dc_replace(frame, formula=formula, response_name=response_name)
    return frame, kept_trials


# ------------------------------------------------------------------------------------ priors


def default_priors(family: Family, y: np.ndarray, coef_names: Sequence[str], group_names: Sequence[str],
                   has_intercept: bool) -> list[Prior]:
    """brms 2.18's default priors (``def_scale_prior.brmsterms``) for a family without sigma.

    Transforming links (identity, log, inverse, sqrt, 1/mu^2): y_link = link(y), zeros moved to 0.1
    under log; scale = max(2.5, round(mad(y_link), 1)); the Intercept's location round(median(y_link), 1).
    Other links (logit): location 0, scale 2.5.
    """
    if family.has_sigma:
        from engine.multilevel.priors import default_priors as gaussian_defaults

        return gaussian_defaults(y, coef_names, group_names, has_intercept)
    y = np.asarray(y, dtype=float)
    scale, location = 2.5, 0.0
    if family.link == "log":
        y_link = np.log(np.where(y == 0, y + 0.1, y))
        scale = max(2.5, r_round(r_mad(y_link), 1))
        location = r_round(float(np.median(y_link)), 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    rows = []
    if coef_names:
        rows.append(Prior("(flat)", "b", source="default"))
    if has_intercept:
        rows.append(Prior(f"student_t(3, {_format_number(location)}, {_format_number(scale)})", "Intercept",
                          family=STUDENT_T, nu=3.0, mu=location, scale=scale, source="default"))
    if group_names:
        rows.append(Prior(f"student_t(3, 0, {_format_number(scale)})", "sd", family=STUDENT_T, nu=3.0, mu=0.0,
                          scale=scale, source="default"))
    return rows


def check_user_priors(priors, family: Family) -> list[Prior]:
    """The user's priors as a list; PriorError for a prior on sigma when the family has none."""
    user = _as_prior_list(priors)
    if not family.has_sigma:
        for p in user:
            if p.class_ == "sigma":
                raise PriorError(f"prior {p.spec!r} on class 'sigma': the {family.name} family has no sigma "
                                 "(its classes: b, Intercept, sd)")
    return user


# ------------------------------------------------------------------------------------ model


class GLMModel(NamedTuple):
    """A non-Gaussian multilevel model: the model layer's arrays plus the family.

    base: engine.multilevel.MultilevelModel (y = the response as float64 (n,), X_c, groups, cells,
        priors; its sigma entries are unused); family: Family; trials: (n,) float64 (ones unless
        binomial); priors: ResolvedPriors without sigma (prior_summary's rows).
    """

    base: MultilevelModel
    family: Family
    trials: np.ndarray
    priors: ResolvedPriors

    @property
    def n_params(self) -> int:
        """Length of the canonical draw vector (b, sd, cor; no sigma)."""
        return self.base.n_params - 1


def build_glm_model(frame, trials: np.ndarray, prior, family: Family) -> GLMModel:
    """The GLMModel of a frame from glm_model_frame: engine.multilevel.build_model with brms' defaults
    for ``family`` in place of the Gaussian ones (passed as class-wide priors so that the model layer's
    precedence rules -- specific over class-wide over default -- and prior_summary rows are unchanged)."""
    from engine.multilevel.model import build_model

    user = check_user_priors(prior, family)
    y = np.asarray(frame.y, dtype=float)
    coef_names = [c for c in frame.column_names if c != "(Intercept)"] if frame.has_intercept else list(frame.column_names)
    group_names = [g.name for g in frame.groups]
    defaults = default_priors(family, y, coef_names, group_names, bool(frame.has_intercept))
    given = {(p.class_, p.coef, p.group) for p in user}
    combined = user + [d for d in defaults if (d.class_, "", "") not in given]
    model = build_model(frame, combined)
    table = tuple(row for row in model.priors.table if row.class_ != "sigma")
    resolved = replace(model.priors, table=table)
    model = model._replace(priors=resolved)
    return GLMModel(model, family, np.ascontiguousarray(trials, dtype=np.float64), resolved)


def parameter_names(model: GLMModel) -> list[str]:
    """brms names of the canonical draw vector: b_Intercept, b_<col>..., sd_<g>__<coef>..., cor_<g>__<a>__<b>...
    (engine.multilevel.model.parameter_names without sigma)."""
    from engine.multilevel.model import parameter_names as gaussian_names

    return gaussian_names(model.base)[:-1]


def design_matrix(base: MultilevelModel) -> np.ndarray:
    """W = [1, X_c] (n, q) (or X_c without an intercept): the columns of gamma = (b0_c, beta)."""
    if base.has_intercept:
        return np.ascontiguousarray(np.column_stack([np.ones(base.n_obs), base.X_c]))
    return np.ascontiguousarray(base.X_c)


def linear_predictor(model: GLMModel, draws: np.ndarray, ranef: np.ndarray) -> np.ndarray:
    """eta (S, N) from canonical draws (S, n_params) and random effects (S, L) in ranef_names order."""
    base = model.base
    q = int(base.has_intercept) + base.n_coef
    draws = np.asarray(draws, dtype=float)
    gamma = draws[:, :q].copy()
    if base.has_intercept:  # b0_c = b_Intercept + xbar'beta
        gamma[:, 0] = draws[:, 0] + draws[:, 1:q] @ base.x_means
    eta = gamma @ design_matrix(base).T
    ranef = np.asarray(ranef, dtype=float)
    if base.has_slopes:  # ranef order: per group, per coefficient, per level
        start = 0
        for g in range(base.n_groups):
            n_levels = int(base.level_offsets[g + 1] - base.level_offsets[g])
            for c in range(int(base.group_dims[g])):
                z = base.Z[:, int(base.z_offsets[g]) + c]
                eta += ranef[:, start + base.group_codes[:, g]] * z
                start += n_levels
        return eta
    global_codes = base.group_codes + base.level_offsets[:-1][None, :]
    for g in range(base.n_groups):
        eta += ranef[:, global_codes[:, g]]
    return eta


def log_likelihood(family: Family, y: np.ndarray, trials: np.ndarray, eta: np.ndarray, sigma=None) -> np.ndarray:
    """Per-observation log-likelihood log p(y_i | eta_i) with its normalising constant (brms' log_lik).

    ``eta``: (..., N) linear predictors; ``y``, ``trials``: (N,). bernoulli: y eta - log(1 + e^eta);
    binomial: log C(n, y) + y eta - n log(1 + e^eta); poisson: y eta - e^eta - log y!;
    gaussian: the normal log density with ``sigma`` (broadcast against eta's leading axes).
    """
    eta = np.asarray(eta, dtype=float)
    y = np.asarray(y, dtype=float)
    if family.code == BERNOULLI:
        return y * eta - np.logaddexp(0.0, eta)
    if family.code == BINOMIAL:
        n = np.asarray(trials, dtype=float)
        return gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1) + y * eta - n * np.logaddexp(0.0, eta)
    if family.code == POISSON:
        return y * eta - np.exp(eta) - gammaln(y + 1)
    if sigma is None:
        raise ModelSpecError("log_likelihood: the gaussian family needs sigma")
    sigma = np.asarray(sigma, dtype=float)[..., None]
    return -0.5 * np.log(2 * np.pi) - np.log(sigma) - 0.5 * ((y - eta) / sigma) ** 2


def inverse_link(family: Family, eta: np.ndarray) -> np.ndarray:
    """The mean of y_i (per trial for binomial) given eta: logistic, exp or identity."""
    eta = np.asarray(eta, dtype=float)
    if family.link == "logit":
        return 1.0 / (1.0 + np.exp(-eta))
    if family.link == "log":
        return np.exp(eta)
    return eta


def link(family: Family, mu: np.ndarray) -> np.ndarray:
    """The link function: logit, log or identity."""
    mu = np.asarray(mu, dtype=float)
    if family.link == "logit":
        return np.log(mu) - np.log1p(-mu)
    if family.link == "log":
        return np.log(mu)
    return mu


# ------------------------------------------------------------------------------------ brm's questions


def model_frame(formula: str, data: pd.DataFrame, family: Family):
    """The ModelFrame of ``formula`` on ``data`` for ``family`` and the trials per kept row (None for the
    Gaussian family): the one place engine.brm's model building branches on the family."""
    if family.has_sigma:
        from engine.formula import model_frame as gaussian_frame

        return gaussian_frame(formula, data, allow_random=True), None
    return glm_model_frame(formula, data, family)


def describe(frame, trials, prior, family: Family, sample_prior: str = "no"):
    """engine.multilevel.layout.describe for any family: the MultilevelModel (Gaussian) or GLMModel
    (bernoulli, binomial, poisson) with its names, groups, prior_summary table and fingerprint."""
    from engine.multilevel.layout import ModelLayout, describe as gaussian_describe, frame_hash
    from engine.multilevel.model import ranef_names
    from engine.multilevel.priors import prior_summary_table
    from engine.multilevel.results import GroupInfo

    if family.has_sigma:
        return gaussian_describe(frame, prior, sample_prior)
    if sample_prior != "no":
        raise EngineInputError(f"sample_prior={sample_prior!r} is available for the gaussian family only "
                               f"(not for {family.name})")
    model = build_glm_model(frame, trials, prior, family)
    base = model.base
    groups = [GroupInfo(name, tuple(str(level) for level in levels))
              for name, levels in zip(base.group_names, base.group_levels)]
    return ModelLayout(model, parameter_names(model), list(ranef_names(base)), groups, prior_summary_table(model),
                       int(len(frame.y)), int(frame.n_dropped), frame_hash(frame))


def pointwise_log_lik(model: GLMModel, draws: np.ndarray, ranef: np.ndarray) -> np.ndarray:
    """log p(y_i | draw s) (S, N) for canonical draws (S, n_params) and random effects (S, L): brms'
    ``log_lik(fit)`` matrix (what loo takes), with every normalising constant."""
    eta = linear_predictor(model, draws, ranef)
    return log_likelihood(model.family, model.base.y, model.trials, eta)


def average_effect(model: GLMModel, draws: np.ndarray, ranef: np.ndarray, column: str) -> np.ndarray:
    """Per draw, the average effect of a 0/1 design column on the mean of the response:
    mean_i [mu_i(column = 1) - mu_i(column = 0)] (the probability for bernoulli; per trial for
    binomial; the expected count for poisson), every other term, random effects included, at its
    observed value. ``draws`` (S, n_params) canonical, ``ranef`` (S, L). Returns (S,)."""
    base = model.base
    if column not in base.coef_names:
        raise ModelSpecError(f"average_effect: the model has no column {column!r} (columns: {', '.join(base.coef_names)})")
    j = base.coef_names.index(column)
    raw = base.X_c[:, j] + base.x_means[j]
    if not np.all((raw == 0.0) | (raw == 1.0)):
        raise ModelSpecError(f"average_effect: column {column!r} is not a 0/1 indicator")
    q0 = int(base.has_intercept)
    beta = np.asarray(draws, dtype=float)[:, q0 + j][:, None]
    eta = linear_predictor(model, draws, ranef)
    treated = inverse_link(model.family, eta + beta * (1.0 - raw))
    control = inverse_link(model.family, eta - beta * raw)
    return (treated - control).mean(axis=1)
