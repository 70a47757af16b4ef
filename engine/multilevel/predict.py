"""Posterior predictions of ``engine.brm`` / ``engine.brm_multiple`` fits, as brms 2.18 computes them.

Model pieces (one family object, one random-effect part per grouping factor, so other families and
random slopes plug in without touching the rest):

- linear predictor, draw s, row i: ``eta[s, i] = X[i] b[s] + sum_g Z_g[i] r_g[s, level_g(i)]``
  (``posterior_linpred``); X is the fixed design on the original scale (brms' ``b_Intercept``
  is the uncentred intercept), Z_g the varying-effect design of group g (a column of ones for a
  random intercept);
- ``posterior_epred`` = the family's inverse link of eta (its mean); ``posterior_predict`` draws
  from the family given eta and the distributional parameters; ``log_lik`` its log density at y;
- summaries (``fitted()``, ``predict()``): brms' ``posterior_summary``: mean, SD and type-7
  quantiles over draws, columns ``Estimate``, ``Est.Error``, ``Q2.5``, ``Q97.5``;
- ``re_formula``: None (all group-level effects), NA / ``"~0"`` (none), or a formula naming some
  of the fitted groups (``"~ (1 | schoolid)"``);
- new levels (``allow_new_levels=True``; brms' ``get_new_rdraws``): ``"uncertainty"`` (default)
  gives each draw of a new level the draw of a randomly chosen existing level of that group (a
  different one per draw; the level's whole coefficient vector); ``"gaussian"`` draws
  ``N(0, Sigma_g[s])`` per draw; ``"old_levels"`` gives a new level all draws of one randomly
  chosen existing level;
- ``bayes_R2``: Gelman, Goodrich, Gabry & Vehtari (2019), "R-squared for Bayesian regression
  models", Am. Stat. 73(3): per draw ``var(epred) / (var(epred) + var(y - epred))`` (brms'
  ``.bayes_R2``), summarised as above.

Data on new rows (``newdata``) go through engine.newdata.multilevel_rows (the one new-data
evaluator of the multilevel fits; ``_design_rows`` calls it, for the fitted rows too): the fixed design
and every random term's Z columns and level labels, with the fitted codings. Families (gaussian,
bernoulli, binomial with ``trials()`` from the data or newdata, poisson) are ``Family`` objects whose
densities and inverse links are engine.multilevel.families' (brms' posterior_epred: ``n p`` for binomial).
A varying-slope term adds ``sum_c Z[i, c] r_g[s, level, c]``; a new level draws the group's whole
coefficient vector (for "gaussian" from ``N(0, Sigma_g[s])`` with the draw's correlations).

Shapes: draws x rows arrays ``(S, n)`` with S = chains x draws (chain-major, as brms).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from engine.errors import ColumnNotFoundError, DataError, EngineInputError
from engine.validate import as_array, check_flag, check_prediction_args, checked_arguments

__all__ = [
    "FitDesign",
    "Family",
    "GaussianFamily",
    "BernoulliFamily",
    "BinomialFamily",
    "PoissonFamily",
    "FAMILIES",
    "posterior_linpred",
    "posterior_epred",
    "posterior_predict",
    "log_lik",
    "fitted",
    "predict",
    "bayes_R2",
    "posterior_summary",
]

SAMPLE_NEW_LEVELS = ("uncertainty", "gaussian", "old_levels")


# ----------------------------------------------------------------------------- families


class Family:
    """A response distribution: inverse link (eta -> mean), random draws and log density.

    ``dpars`` names the distributional parameters other than the mean that the draws carry
    (brms names, e.g. ``("sigma",)``); each method gets them as a dict of (S,) or (S, n) arrays.
    ``trials`` (n,) is the number of trials of each row (binomial; None for the other families).
    The densities and inverse links are engine.multilevel.families' (one home).
    """

    name = "family"
    dpars: tuple[str, ...] = ()
    needs_trials = False

    @property
    def record(self):
        from engine.multilevel.families import get_family

        return get_family(self.name)

    def epred(self, eta: np.ndarray, dp: dict[str, np.ndarray], trials=None) -> np.ndarray:
        from engine.multilevel.families import inverse_link

        return inverse_link(self.record, eta)

    def predict(self, eta: np.ndarray, dp: dict[str, np.ndarray], rng: np.random.Generator, trials=None) -> np.ndarray:
        raise NotImplementedError

    def log_lik(self, y: np.ndarray, eta: np.ndarray, dp: dict[str, np.ndarray], trials=None) -> np.ndarray:
        from engine.multilevel.families import log_likelihood

        sigma = dp.get("sigma")
        return log_likelihood(self.record, y, trials, eta, sigma=sigma)


class GaussianFamily(Family):
    """``y ~ N(eta, sigma)`` with the identity link."""

    name = "gaussian"
    dpars = ("sigma",)

    def predict(self, eta, dp, rng, trials=None):
        return eta + _col(dp["sigma"]) * rng.standard_normal(eta.shape)


class BernoulliFamily(Family):
    """``y ~ Bernoulli(logit^-1(eta))``; posterior_predict draws 0/1 (brms' ``rbinom(size = 1)``)."""

    name = "bernoulli"

    def predict(self, eta, dp, rng, trials=None):
        return rng.binomial(1, self.epred(eta, dp)).astype(np.float64)


class BinomialFamily(Family):
    """``y ~ Binomial(n, logit^-1(eta))``; epred is ``n p`` (brms' posterior_epred_binomial)."""

    name = "binomial"
    needs_trials = True

    def epred(self, eta, dp, trials=None):
        return super().epred(eta, dp) * _trials(trials)[None, :]

    def predict(self, eta, dp, rng, trials=None):
        n = np.broadcast_to(_trials(trials).astype(np.int64)[None, :], eta.shape)
        return rng.binomial(n, super().epred(eta, dp)).astype(np.float64)


class PoissonFamily(Family):
    """``y ~ Poisson(exp(eta))``."""

    name = "poisson"

    def predict(self, eta, dp, rng, trials=None):
        return rng.poisson(self.epred(eta, dp)).astype(np.float64)


FAMILIES: dict[str, Family] = {f.name: f for f in (GaussianFamily(), BernoulliFamily(), BinomialFamily(), PoissonFamily())}


def _trials(trials) -> np.ndarray:
    if trials is None:  # pragma: no cover - the callers pass them for binomial
        raise EngineInputError("the binomial family needs the number of trials of each row")
    return np.asarray(trials, dtype=np.float64)


def _col(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[:, None] if values.ndim == 1 else values


# ----------------------------------------------------------------------------- stored design


@dataclass(eq=False)
class FitDesign:
    """What a fit keeps of its data to predict: the fixed design and the group codes of the rows
    used, and those rows' model columns for evaluating the formula on new data.

    ``y`` (n,), ``X`` (n, P) with ``column_names`` (R's, ``(Intercept)`` first when present),
    ``group_names`` (G,) brms names, ``group_codes`` (n, G) 0-based level of each row,
    ``group_levels`` (G,) labels, ``data`` the model columns of the rows used (a copy),
    ``response_columns`` the data columns the response (and a binomial's ``trials()``) reads (filled
    in on new data when absent), ``family`` brms' family name, ``trials`` (n,) the trials of each row
    used (binomial; None otherwise) and ``trials_text`` the ``trials()`` argument (a column name or a
    whole number; None: brms 2.18's max(y) rule, repeated on new data from the fitted value).
    """

    formula: str
    y: np.ndarray
    X: np.ndarray
    column_names: list[str]
    group_names: list[str]
    group_codes: np.ndarray
    group_levels: list[list[str]]
    group_columns: list[tuple[str, ...]]
    data: pd.DataFrame | None = None
    response_columns: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    family: str = "gaussian"
    trials: np.ndarray | None = None
    trials_text: str | None = None

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])


def _formula_columns(formula: str, data: pd.DataFrame) -> list[str]:
    """The data columns a formula reads (every column for a ``.``)."""
    rhs = formula.split("~", 1)[1] if "~" in formula else formula
    if re.search(r"(?<![\w.])\.(?![\w.])", rhs):
        return [str(c) for c in data.columns]
    found = []
    for c in data.columns:
        name = str(c)
        if re.search(r"(?<![\w.])" + re.escape(name) + r"(?![\w.])", formula) or f"`{name}`" in formula:
            found.append(name)
    return found


def design_from_frame(formula: str, frame, data: pd.DataFrame, family: str = "gaussian", trials=None) -> FitDesign:
    """The FitDesign of a fitted model from its ModelFrame, the user's data (not modified) and,
    for the binomial family, the trials per row used (engine.multilevel.families.model_frame)."""
    cols = _formula_columns(formula, data)
    lhs = formula.split("~", 1)[0]
    response_columns = tuple(c for c in cols if re.search(r"(?<![\w.])" + re.escape(c) + r"(?![\w.])", lhs))
    used = data.iloc[np.asarray(frame.rows)][cols].reset_index(drop=True).copy()
    groups = list(frame.groups)
    codes = np.column_stack([np.asarray(g.codes, np.int64) for g in groups]) if groups else np.zeros((len(frame.y), 0), np.int64)
    return FitDesign(
        formula=formula,
        y=np.array(frame.y, dtype=np.float64),
        X=np.array(frame.X, dtype=np.float64),
        column_names=list(frame.column_names),
        group_names=[g.name for g in groups],
        group_codes=codes,
        group_levels=[[str(x) for x in g.levels] for g in groups],
        group_columns=[tuple(g.columns) for g in groups],
        data=used,
        response_columns=response_columns,
        family=family,
        trials=None if trials is None or family != "binomial" else np.array(trials, dtype=np.float64),
        trials_text=_trials_text(formula) if family == "binomial" else None,
    )


def _trials_text(formula: str) -> str | None:
    from engine.multilevel.families import split_response

    return split_response(formula).trials


def _design(fit) -> FitDesign:
    design = getattr(fit, "design", None)
    if design is None:
        raise EngineInputError(
            "this fit does not carry its data (it was saved by an engine without prediction support); "
            "refit it to get predictions, log_lik, loo or bayes_R2"
        )
    return design


# ----------------------------------------------------------------------------- new data


def _design_rows(design: FitDesign, newdata: pd.DataFrame | None, needed_groups: list[int]):
    """engine.newdata.multilevel_rows on ``design``: the fixed design (m, P) and the random terms
    (Z, level labels) of ``newdata``, or of the fitted rows (newdata None; cached)."""
    from engine.newdata import multilevel_rows

    fitted = newdata is None
    if fitted:
        cached = design.extra.get("fitted_rows")
        if cached is not None:
            return cached
        newdata, needed_groups = design.data, list(range(len(design.group_names)))
    # the response (and trials) columns are not needed on new rows, unless a predictor reads them too
    rhs_columns = set(_formula_columns("~" + design.formula.split("~", 1)[1], design.data))
    placeholders = [c for c in design.response_columns if c not in rhs_columns]
    rows = multilevel_rows(design.formula, design.data, design.X, design.column_names, newdata,
                           design.group_columns, needed_groups, placeholder_columns=placeholders)
    if fitted:
        design.extra["fitted_rows"] = rows
    return rows


def _newdata_trials(design: FitDesign, newdata: pd.DataFrame | None) -> np.ndarray | None:
    """The trials of each row (binomial): the fitted ones, or from ``newdata``'s trials column (a
    ColumnNotFoundError naming it when absent), a constant ``trials(10)``, or the fitted max(y)."""
    if design.family != "binomial":
        return None
    if newdata is None:
        return design.trials
    text = design.trials_text
    if text is None:  # brms 2.18 without trials(): the fitted maximum response
        return np.full(len(newdata), float(design.trials[0]) if design.trials is not None and len(design.trials) else 1.0)
    try:
        return np.full(len(newdata), float(text))
    except ValueError:
        pass
    name = text.strip().strip("`")
    if name not in newdata.columns:
        raise ColumnNotFoundError(
            f"newdata lacks the trials column {name!r} of the binomial model {design.formula!r} "
            "(posterior_epred, posterior_predict and log_lik need the number of trials of each row)")
    values = newdata[name]
    if not pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        raise DataError(f"trials column {name!r} must be numeric, got {values.dtype}")
    values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
    if bad.any():
        raise DataError(f"trials column {name!r} of newdata must hold non-negative whole numbers "
                        f"(row {int(np.flatnonzero(bad)[0])} has {values[bad][0]!r})")
    return values


# ----------------------------------------------------------------------------- draws


def _draws_matrix(fit) -> np.ndarray:
    values = fit.draws_values
    return values.reshape(values.shape[0] * values.shape[1], values.shape[2])


def _ranef_matrix(fit) -> np.ndarray:
    values = fit.ranef_values
    return values.reshape(values.shape[0] * values.shape[1], values.shape[2])


_RANEF = re.compile(r"^r_(?P<group>.+)\[(?P<level>.*),(?P<coef>[^,\]]+)\]$")


def _group_effects(fit, design: FitDesign) -> list[dict[str, Any]]:
    """Per fitted group: its varying coefficients (brms names, in the order of the draws) and the
    column of each (level, coefficient) in the random-effect draws (``r_<group>[<level>,<coef>]``)."""
    cache = fit._cache.get("predict_groups")
    if cache is not None:
        return cache
    index = {}
    for j, name in enumerate(fit.ranef_names):
        m = _RANEF.match(name)
        if m:
            index[(m["group"], m["level"], m["coef"])] = j
    out = []
    for gname, levels in zip(design.group_names, design.group_levels):
        coefs = []
        for (grp, _lev, coef) in index:
            if grp == gname and coef not in coefs:
                coefs.append(coef)
        cols = np.full((len(levels), len(coefs)), -1, dtype=np.int64)
        for li, lev in enumerate(levels):
            for ci, coef in enumerate(coefs):
                cols[li, ci] = index.get((gname, lev, coef), -1)
        if not coefs or (cols < 0).any():
            raise EngineInputError(f"the fit's random-effect draws do not cover every level of {gname!r}")
        out.append({"name": gname, "coefs": coefs, "cols": cols, "levels": {lev: i for i, lev in enumerate(levels)}})
    fit._cache["predict_groups"] = out
    return out


def _re_groups(re_formula, design: FitDesign) -> list[int]:
    """Indices of the fitted groups that ``re_formula`` keeps."""
    all_groups = list(range(len(design.group_names)))
    if re_formula is None:
        return all_groups
    if re_formula is pd.NA or (isinstance(re_formula, float) and math.isnan(re_formula)):
        return []
    if not isinstance(re_formula, str):
        raise EngineInputError(f"re_formula must be None, NA or a formula string, got {re_formula!r}")
    text = re_formula.strip()
    if text.upper() == "NA":
        return []
    rhs = text[1:].strip() if text.startswith("~") else text
    if rhs in ("0", "-1", "1", "") or "|" not in rhs:
        return []
    from engine.formula import parse_formula

    parsed = parse_formula("y ~ " + rhs)
    wanted = [name for bar in parsed.random_terms for name in bar.groups]
    unknown = [w for w in wanted if w not in design.group_names]
    if unknown:
        raise EngineInputError(
            f"re_formula names group(s) the model does not have: {', '.join(map(repr, unknown))} "
            f"(fitted groups: {', '.join(design.group_names)})"
        )
    return [g for g in all_groups if design.group_names[g] in wanted]


def _checked_draw_ids(draw_ids, total: int) -> np.ndarray:
    """``draw_ids`` as posterior's ``check_draw_ids`` (brms' ``draw_ids``) reads them, 0-based:
    duplicates dropped and sorted (R's ``unique`` then ``sort``); a non-whole number, a bool, text
    or an index outside 0..total-1 is an error here (R truncates 1.5 to 1 with as.integer)."""
    raw = np.asarray(draw_ids, dtype=object).ravel() if not isinstance(draw_ids, np.ndarray) else draw_ids.ravel()
    if raw.size == 0:
        raise EngineInputError(f"draw_ids is empty; give 0-based draw indices below {total}")
    if raw.dtype.kind in "iu":
        ids = raw.astype(np.int64)
    else:
        values = []
        for v in raw:
            ok = isinstance(v, (int, np.integer, float, np.floating)) and not isinstance(v, (bool, np.bool_))
            if not ok or not np.isfinite(float(v)) or float(v) != int(v):
                raise EngineInputError(f"draw_ids must be whole numbers (0-based draw indices below {total}), got {v!r}")
            values.append(int(v))
        ids = np.array(values, dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= total)]
    if bad.size:
        raise EngineInputError(
            f"draw_ids must be 0-based draw indices from 0 to {total - 1} (the fit has {total} draws), got {int(bad[0])}")
    return np.unique(ids)


def _draw_ids(fit, ndraws, draw_ids, rng) -> np.ndarray:
    total = fit.draws_values.shape[0] * fit.draws_values.shape[1]
    if draw_ids is not None:
        return _checked_draw_ids(draw_ids, total)
    if ndraws is None:
        return np.arange(total)
    if isinstance(ndraws, bool) or not isinstance(ndraws, (int, np.integer)) or not 1 <= ndraws <= total:
        raise EngineInputError(f"ndraws must be a whole number from 1 to {total}, got {ndraws!r}")
    return np.sort(rng.choice(total, size=int(ndraws), replace=False))


def _linpred(fit, newdata, re_formula, allow_new_levels, sample_new_levels, rng, ids):
    """eta (S, n) on the draws ``ids`` and the design used.

    eta = X b + sum over random terms t of sum_c Z_t[:, c] r_{g(t)}[level, c]; a new level of a
    group (allow_new_levels) gets one draw of the group's whole coefficient vector per posterior
    draw (``_new_level_draws``), shared by every row and term of that level."""
    design = _design(fit)
    if sample_new_levels not in SAMPLE_NEW_LEVELS:
        raise EngineInputError(
            f"sample_new_levels must be one of {', '.join(map(repr, SAMPLE_NEW_LEVELS))}, got {sample_new_levels!r}"
        )
    keep = _re_groups(re_formula, design)
    draws = _draws_matrix(fit)[ids]
    names = list(fit.parameter_names)
    bcols = []
    for c in design.column_names:
        name = "b_Intercept" if c == "(Intercept)" else f"b_{c}"
        if name not in names:
            raise EngineInputError(f"the fit has no draws of {name!r} for design column {c!r}")
        bcols.append(names.index(name))
    if newdata is None:
        X = design.X
        rows = _design_rows(design, None, keep) if keep else None
    else:
        rows = _design_rows(design, newdata, keep)
        X = rows.X
    eta = draws[:, bcols] @ X.T
    if not keep:
        return eta, design
    groups = _group_effects(fit, design)
    ranef = _ranef_matrix(fit)[ids]
    by_name = {design.group_names[g]: g for g in keep}
    new_draws: dict[tuple[int, str], np.ndarray] = {}  # (group, level) -> (S, q) draws of a new level
    for term in rows.terms:
        g = by_name.get(term.group)
        if g is None:
            continue
        info = groups[g]
        codes = np.array([info["levels"].get(x, -1) for x in term.labels], dtype=np.int64)
        new = sorted({x for x, c in zip(term.labels, codes) if c < 0})
        if new and not allow_new_levels:
            raise DataError(
                f"Levels {', '.join(repr(x) for x in new[:10])} of grouping factor {info['name']!r} cannot be "
                "found in the fitted model. Consider setting argument 'allow_new_levels' to TRUE."
            )
        old = codes >= 0
        labels = np.asarray(term.labels, dtype=object)
        for c, coef in enumerate(term.coef_names):
            if coef not in info["coefs"]:
                raise EngineInputError(f"the fit has no draws of the varying coefficient {coef!r} of {info['name']!r}")
            k = info["coefs"].index(coef)
            z = term.Z[:, c]
            if old.all():
                eta += ranef[:, info["cols"][codes, k]] * z[None, :]
                continue
            if old.any():
                eta[:, old] += ranef[:, info["cols"][codes[old], k]] * z[None, old]
            for level in new:
                key = (g, level)
                if key not in new_draws:
                    new_draws[key] = _new_level_draws(fit, info, ranef, draws, sample_new_levels, rng)
                sel = labels == level
                eta[:, sel] += new_draws[key][:, k][:, None] * z[None, sel]
    return eta, design


def _new_level_draws(fit, info, ranef, draws, how, rng) -> np.ndarray:
    """(S, q) draws of a new level's coefficient vector, as brms 2.18's ``get_new_rdraws``:
    "uncertainty": per draw s, the vector of a randomly chosen existing level in draw s (one level
    for all coefficients); "old_levels": every draw of one randomly chosen existing level;
    "gaussian": N(0, Sigma[s]) with Sigma[s] = D R D from draw s's ``sd_<g>__<coef>`` and
    ``cor_<g>__<a>__<b>`` (0 where the fit has no correlation, as for ``||`` terms)."""
    n_levels, q = info["cols"].shape
    s = ranef.shape[0]
    if how == "uncertainty":
        sel = rng.integers(0, n_levels, size=s)
        return ranef[np.arange(s)[:, None], info["cols"][sel, :]]
    if how == "old_levels":
        return ranef[:, info["cols"][int(rng.integers(0, n_levels)), :]]
    names = list(fit.parameter_names)
    g, coefs = info["name"], info["coefs"]
    sd = np.column_stack([draws[:, names.index(f"sd_{g}__{c}")] for c in coefs])
    if q == 1:
        return sd * rng.standard_normal((s, 1))
    cor = np.broadcast_to(np.eye(q), (s, q, q)).copy()
    for a in range(q):
        for b in range(a + 1, q):
            for name in (f"cor_{g}__{coefs[a]}__{coefs[b]}", f"cor_{g}__{coefs[b]}__{coefs[a]}"):
                if name in names:
                    cor[:, a, b] = cor[:, b, a] = draws[:, names.index(name)]
                    break
    chol = sd[:, :, None] * np.linalg.cholesky(cor)  # chol(D R D) = D chol(R)
    return np.einsum("sij,sj->si", chol, rng.standard_normal((s, q)))


def _family(fit) -> Family:
    fam = FAMILIES.get(getattr(fit, "family", "gaussian"))
    if fam is None:
        raise EngineInputError(f"predictions for family {fit.family!r} are not implemented")
    return fam


def _dpars(fit, fam: Family, ids) -> dict[str, np.ndarray]:
    draws = _draws_matrix(fit)[ids]
    names = list(fit.parameter_names)
    return {p: draws[:, names.index(p)] for p in fam.dpars}


def _on_draws(fit, newdata, re_formula, allow_new_levels, sample_new_levels, ndraws, draw_ids, seed,
              family: bool = True):
    """The start every prediction shares: the arguments checked, the draws chosen (all, ``draw_ids``,
    or ``ndraws`` at random under ``seed``), the family (with ``family``; else None) and eta (S, rows)
    on those draws. Returns (eta, design, ids, fam, rng); rng goes on to the draws of new levels
    and of the predictive distribution, in that order."""
    check_prediction_args(seed, allow_new_levels, re_formula)
    rng = np.random.default_rng(seed)
    ids = _draw_ids(fit, ndraws, draw_ids, rng)
    fam = _family(fit) if family else None
    eta, design = _linpred(fit, newdata, re_formula, allow_new_levels, sample_new_levels, rng, ids)
    return eta, design, ids, fam, rng


# ----------------------------------------------------------------------------- public functions


@checked_arguments
def posterior_linpred(fit, newdata=None, re_formula=None, allow_new_levels=False,
                      sample_new_levels="uncertainty", ndraws=None, draw_ids=None, seed=None) -> np.ndarray:
    """Draws of the linear predictor, (S, rows)."""
    return _on_draws(fit, newdata, re_formula, allow_new_levels, sample_new_levels, ndraws, draw_ids, seed,
                     family=False)[0]


@checked_arguments
def posterior_epred(fit, newdata=None, re_formula=None, allow_new_levels=False,
                    sample_new_levels="uncertainty", ndraws=None, draw_ids=None, seed=None) -> np.ndarray:
    """Draws of the expected response E(y | parameters), (S, rows)."""
    eta, design, ids, fam, rng = _on_draws(fit, newdata, re_formula, allow_new_levels, sample_new_levels, ndraws,
                                           draw_ids, seed)
    return fam.epred(eta, _dpars(fit, fam, ids), _newdata_trials(design, newdata))


@checked_arguments
def posterior_predict(fit, newdata=None, re_formula=None, allow_new_levels=False,
                      sample_new_levels="uncertainty", ndraws=None, draw_ids=None, seed=None) -> np.ndarray:
    """Draws of the posterior predictive distribution, (S, rows); ``seed`` fixes the draws."""
    eta, design, ids, fam, rng = _on_draws(fit, newdata, re_formula, allow_new_levels, sample_new_levels, ndraws,
                                           draw_ids, seed)
    return fam.predict(eta, _dpars(fit, fam, ids), rng, _newdata_trials(design, newdata))


@checked_arguments
def log_lik(fit, newdata=None, re_formula=None, allow_new_levels=False, sample_new_levels="uncertainty",
            ndraws=None, draw_ids=None, seed=None, y=None) -> np.ndarray:
    """Pointwise log-likelihood, (S, rows): of the fitted data, or of ``newdata`` (which must then
    hold the response; or pass ``y``)."""
    eta, design, ids, fam, rng = _on_draws(fit, newdata, re_formula, allow_new_levels, sample_new_levels, ndraws,
                                           draw_ids, seed)
    trials = _newdata_trials(design, newdata)
    if y is None:
        y = design.y if newdata is None else _newdata_response(design, newdata)
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (eta.shape[1],):
        raise EngineInputError(f"y must have one value per row ({eta.shape[1]}), got shape {y.shape}")
    return fam.log_lik(y, eta, _dpars(fit, fam, ids), trials)


def _newdata_response(design: FitDesign, newdata: pd.DataFrame) -> np.ndarray:
    """The response evaluated on newdata by the fitted formula's left-hand side (a non-Gaussian
    family's response read and checked as in fitting: engine.multilevel.families.model_frame)."""
    from engine.multilevel.families import get_family, model_frame

    missing = [c for c in design.response_columns if c not in newdata.columns]
    if missing:
        raise ColumnNotFoundError(f"the response on newdata needs the column(s) {', '.join(map(repr, missing))}")
    lhs = design.formula.split("~", 1)[0]
    columns = newdata[list(design.response_columns)].reset_index(drop=True)
    if design.family == "bernoulli":
        # a factor response keeps the fitted levels (the second is the success), whatever newdata holds
        for col in design.response_columns:
            fitted = design.data[col]
            if isinstance(fitted.dtype, pd.CategoricalDtype):
                levels = list(fitted.cat.categories)
            elif pd.api.types.is_numeric_dtype(fitted.dtype) or pd.api.types.is_bool_dtype(fitted.dtype):
                continue
            else:
                levels = sorted(set(fitted.astype(str)))
                columns[col] = columns[col].astype(str).where(columns[col].notna())
            unseen = sorted({str(v) for v in pd.unique(columns[col].dropna())} - {str(v) for v in levels})
            if unseen:
                raise DataError(f"response column {col!r} of newdata has value(s) not seen in fitting: "
                                f"{', '.join(map(repr, unseen[:5]))}")
            columns[col] = pd.Categorical(columns[col], categories=levels)
    frame, _ = model_frame(f"{lhs} ~ 1", columns, get_family(design.family))
    if frame.n_dropped:
        raise DataError("the response has missing values in newdata")
    return np.asarray(frame.y, dtype=np.float64)


def posterior_summary(draws: np.ndarray, probs: Sequence[float] = (0.025, 0.975), index=None) -> pd.DataFrame:
    """brms' posterior_summary of (S, k) draws: Estimate (mean), Est.Error (SD), quantiles Q<100 p>."""
    draws = np.asarray(draws, dtype=np.float64)
    probs = as_array(probs, np.float64, "probs").ravel().tolist()  # Python floats: the Q2.5 names
    if any(not 0 <= p <= 1 for p in probs):
        raise EngineInputError(f"probs must lie in [0, 1], got {probs}")
    out = {"Estimate": draws.mean(axis=0), "Est.Error": draws.std(axis=0, ddof=1)}
    q = np.quantile(draws, probs, axis=0) if probs else np.empty((0, draws.shape[1]))
    for p, row in zip(probs, q):
        out[f"Q{_pct(p)}"] = row
    return pd.DataFrame(out, index=index)


def _pct(p: float) -> str:
    v = p * 100
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else repr(v).rstrip("0")


@checked_arguments
def fitted(fit, newdata=None, re_formula=None, allow_new_levels=False, sample_new_levels="uncertainty",
           summary=True, probs=(0.025, 0.975), ndraws=None, draw_ids=None, seed=None):
    """brms' ``fitted()``: the summary of ``posterior_epred`` per row (or the draws, summary=False)."""
    draws = posterior_epred(fit, newdata, re_formula, allow_new_levels, sample_new_levels, ndraws, draw_ids, seed)
    return posterior_summary(draws, probs) if check_flag(summary, "summary") else draws


@checked_arguments
def predict(fit, newdata=None, re_formula=None, allow_new_levels=False, sample_new_levels="uncertainty",
            summary=True, probs=(0.025, 0.975), ndraws=None, draw_ids=None, seed=None):
    """brms' ``predict()``: the summary of ``posterior_predict`` per row (or the draws)."""
    draws = posterior_predict(fit, newdata, re_formula, allow_new_levels, sample_new_levels, ndraws, draw_ids, seed)
    return posterior_summary(draws, probs) if check_flag(summary, "summary") else draws


@checked_arguments
def bayes_R2(fit, summary=True, probs=(0.025, 0.975), re_formula=None, ndraws=None, draw_ids=None, seed=None):
    """Bayesian R^2 as brms' ``bayes_R2`` (Gelman, Goodrich, Gabry & Vehtari 2019): per draw
    var(epred) / (var(epred) + var(y - epred)), variances over the observations (n - 1)."""
    design = _design(fit)
    ypred = posterior_epred(fit, None, re_formula, ndraws=ndraws, draw_ids=draw_ids, seed=seed)
    e = design.y[None, :] - ypred
    var_ypred = ypred.var(axis=1, ddof=1)
    var_e = e.var(axis=1, ddof=1)
    r2 = var_ypred / (var_ypred + var_e)
    return posterior_summary(r2[:, None], probs, index=["R2"]) if summary else r2


# ----------------------------------------------------------------------------- saving


def design_to_arrays(design: FitDesign, prefix: str = "design") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The design as npz arrays (no objects: strings as unicode arrays) and JSON metadata, for
    ``BrmFit.save``: arrays ``design__y``, ``design__X``, ``design__group_codes``, ``design__data<j>``."""
    arrays = {
        f"{prefix}__y": np.asarray(design.y, np.float64),
        f"{prefix}__X": np.asarray(design.X, np.float64),
        f"{prefix}__group_codes": np.asarray(design.group_codes, np.int64),
    }
    if design.trials is not None:
        arrays[f"{prefix}__trials"] = np.asarray(design.trials, np.float64)
    columns = []
    data = design.data if design.data is not None else pd.DataFrame()
    for j, col in enumerate(data.columns):
        series = data[col]
        entry: dict[str, Any] = {"name": str(col)}
        if isinstance(series.dtype, pd.CategoricalDtype):
            entry["kind"] = "categorical"
            entry["categories"] = [c.item() if hasattr(c, "item") else c for c in series.cat.categories]
            entry["ordered"] = bool(series.cat.ordered)
            arrays[f"{prefix}__data{j}"] = series.cat.codes.to_numpy(np.int64)
        elif series.dtype.kind in "fiub":
            entry["kind"] = "numeric"
            entry["dtype"] = series.dtype.str
            arrays[f"{prefix}__data{j}"] = series.to_numpy()
        else:
            entry["kind"] = "string"
            arrays[f"{prefix}__data{j}"] = series.astype(str).to_numpy(dtype=str)
        columns.append(entry)
    meta = {
        "formula": design.formula,
        "column_names": list(design.column_names),
        "group_names": list(design.group_names),
        "group_levels": [list(lv) for lv in design.group_levels],
        "group_columns": [list(c) for c in design.group_columns],
        "response_columns": list(design.response_columns),
        "data_columns": columns,
        "family": design.family,
        "trials_text": design.trials_text,
    }
    return arrays, meta


def design_from_arrays(arrays, meta: dict[str, Any], prefix: str = "design") -> FitDesign:
    """Inverse of ``design_to_arrays`` (``arrays``: the opened npz)."""
    cols = {}
    for j, entry in enumerate(meta.get("data_columns", [])):
        values = np.array(arrays[f"{prefix}__data{j}"])
        if entry["kind"] == "categorical":
            cols[entry["name"]] = pd.Categorical.from_codes(values, categories=entry["categories"], ordered=entry["ordered"])
        elif entry["kind"] == "numeric":
            cols[entry["name"]] = values.astype(entry.get("dtype", values.dtype.str))
        else:
            cols[entry["name"]] = values.astype(object)
    return FitDesign(
        formula=meta["formula"],
        y=np.array(arrays[f"{prefix}__y"]),
        X=np.array(arrays[f"{prefix}__X"]),
        column_names=list(meta["column_names"]),
        group_names=list(meta["group_names"]),
        group_codes=np.array(arrays[f"{prefix}__group_codes"]),
        group_levels=[list(lv) for lv in meta["group_levels"]],
        group_columns=[tuple(c) for c in meta["group_columns"]],
        data=pd.DataFrame(cols),
        response_columns=tuple(meta.get("response_columns", ())),
        family=meta.get("family", "gaussian"),
        trials=np.array(arrays[f"{prefix}__trials"]) if f"{prefix}__trials" in arrays else None,
        trials_text=meta.get("trials_text"),
    )


def imputation_fit(fit, k: int):
    """A BrmFit view of imputed data set ``k`` (0-based) of a ``brm_multiple`` fit: that data set's
    chains and its own design (for its log-likelihood)."""
    from engine.multilevel.results import BrmFit

    designs = getattr(fit, "designs", None)
    if not designs:
        raise EngineInputError(
            "this brm_multiple fit does not carry its imputed data sets; refit it to get per-imputation "
            "log-likelihoods and LOO"
        )
    if not 0 <= k < len(designs):
        raise EngineInputError(f"imputation index {k} out of range for m = {len(designs)}")
    sel = fit._chain_imputation() == k
    return BrmFit(
        formula=fit.formula, parameter_names=list(fit.parameter_names), draws_values=fit.draws_values[sel],
        ranef_names=list(fit.ranef_names), ranef_values=fit.ranef_values[sel],
        stats={name: np.asarray(v)[sel] for name, v in fit.stats.items()}, groups=fit.groups,
        nobs=designs[k].nobs, data_name=fit.data_name, chains=int(sel.sum()), iter=fit.iter, warmup=fit.warmup,
        thin=fit.thin, sampler=fit.sampler, family=fit.family, design=designs[k],
    )
