"""Results of ``engine.brm`` / ``engine.brm_multiple``: posterior draws with brms' names, summaries,
diagnostics, and a portable on-disk format.

A results object holds numbers only; ``engine.rcompat.print_brms`` formats them the way brms prints a
fit. Shapes: ``draws_array()`` is ``(chains, draws, parameters)``, the random effects
``(chains, draws, levels)``, sampler statistics ``(chains, draws)`` each.

Saved format (``BrmFit.save(path)`` / ``load_fit(path)``), documented so that other tools can read it:

- ``<path>.npz`` (``numpy.savez_compressed``, no pickled objects): ``draws`` (chains, draws, params)
  float64; ``ranef`` (chains, draws, levels) float64; ``stat__<name>`` (chains, draws) for each
  per-draw sampler statistic; ``chainstat__<name>`` (chains, ...) for per-chain ones; ``chain_imputation`` (chains,) int64 (the imputed data set each chain used;
  all 0 for ``brm``); optional ``design__y``, ``design__X``, ``design__group_codes``,
  ``design__data<j>`` (the data predictions need, ``engine.multilevel.predict.design_to_arrays``).
- ``<path>.json``: metadata (UTF-8 JSON): ``format`` ("engine-brmfit"), ``format_version``,
  ``engine_version``, ``kind`` ("brm" or "brm_multiple"), ``formula``, ``family``, ``links``,
  ``parameter_names``, ``ranef_names``, ``groups`` (name, n_levels, levels), ``nobs``,
  ``n_dropped``, ``data_name``, ``chains`` (per data set), ``iter``, ``warmup``, ``thin``,
  ``sampler``, ``sampler_options``, ``prior_summary`` (records), ``seed`` (root entropy and the
  spawn key of every chain's seed sequence), ``data_hash`` (SHA-256 of the model's arrays),
  ``n_imputations``, ``nobs_per_imputation``, ``created``; optional ``design`` (column names,
  groups, data columns). Files without the optional design load as before (no predictions);
  since format version 2
  ``arrays_sha256``, the SHA-256 of the arrays and the settings that give them their meaning
  (``engine.validate.arrays_checksum``). ``load_fit`` checks the schema version, the shapes the
  settings imply and the checksum, and raises ``engine.errors.CacheError`` (which files to delete)
  on anything else (``engine.validate.read_fit_cache``); version-1 files (no checksum) still load.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import CacheError, ConvergenceWarning, DataError, EngineInputError, warn_user
from engine.rcompat.print_brms import brms_label  # re-exported: results name rows as brms
from engine.validate import arrays_checksum, read_fit_cache, checked_arguments

__all__ = ["BrmFit", "BrmMultipleFit", "GroupInfo", "summarise_array", "brms_label", "load_fit", "fit_paths",
           "fit_exists", "SUMMARY_COLUMNS"]

FORMAT_NAME = "engine-brmfit"
FORMAT_VERSION = 2  # 2: the JSON records arrays_sha256 (engine.validate.arrays_checksum)
SUMMARY_COLUMNS = ["Estimate", "Est.Error", "l-95% CI", "u-95% CI", "Rhat", "Bulk_ESS", "Tail_ESS"]
RHAT_THRESHOLD = 1.01
ESS_PER_CHAIN = 100
EBFMI_THRESHOLD = 0.2  # rstan's check_energy threshold


@dataclass(frozen=True)
class GroupInfo:
    """One grouping factor of the fitted model: brms name (``schoolid:classid``) and its levels."""

    name: str
    levels: tuple[str, ...]

    @property
    def n_levels(self) -> int:
        return len(self.levels)


def _draw_index(n_chains: int, n_draws: int) -> dict[str, np.ndarray]:
    """The ``.chain``, ``.iteration`` and ``.draw`` columns of a posterior draws_df (1-based)."""
    chain = np.repeat(np.arange(1, n_chains + 1, dtype=np.int64), n_draws)
    iteration = np.tile(np.arange(1, n_draws + 1, dtype=np.int64), n_chains)
    draw = np.arange(1, n_chains * n_draws + 1, dtype=np.int64)
    return {".chain": chain, ".iteration": iteration, ".draw": draw}


def _draws_frame(array: np.ndarray, names: list[str]) -> pd.DataFrame:
    n_chains, n_draws, n_par = array.shape
    frame = pd.DataFrame(array.reshape(n_chains * n_draws, n_par), columns=list(names))
    for key, values in _draw_index(n_chains, n_draws).items():
        frame[key] = values
    return frame


def summarise_array(array: np.ndarray, names: list[str], prob: float = 0.95) -> pd.DataFrame:
    """brms' summary columns for draws of shape (chains, draws, params).

    Estimate and Est.Error are the posterior mean and SD; the interval is the equal-tailed
    ``prob`` quantile interval (R's type-7 quantiles); Rhat, Bulk_ESS and Tail_ESS are the
    rank-normalised diagnostics of Vehtari et al. (2021) from ``engine.diagnostics``.
    """
    from engine.diagnostics import summarise_draws

    lower, upper = (1 - prob) / 2, 1 - (1 - prob) / 2
    table = summarise_draws(array, names=list(names), probs=(lower, upper))
    pct = f"{100 * prob:g}%"
    columns = ["Estimate", "Est.Error", f"l-{pct} CI", f"u-{pct} CI", "Rhat", "Bulk_ESS", "Tail_ESS"]
    table.columns = columns
    table.index = pd.Index(list(names), name="parameter")
    return table


@dataclass(eq=False)
class BrmFit:
    """A fitted Bayesian multilevel model (Gaussian family), as ``engine.brm`` returns it.

    Attributes (numbers only; ``print(fit)`` formats them as brms prints a fit):

    - ``formula``, ``family`` ("gaussian"), ``nobs``, ``data_name``, ``chains``, ``iter``,
      ``warmup``, ``thin``, ``sampler`` ("gibbs" or "nuts"), ``sampler_options``.
    - ``parameter_names``: brms names (``b_Intercept``, ``b_male1``, ..., ``sd_schoolid__Intercept``,
      ``sigma``); ``ranef_names``: ``r_schoolid[1,Intercept]``, ...; ``groups``: ``GroupInfo`` per
      grouping factor, in formula order.
    - ``draws`` (DataFrame, one row per draw, brms columns plus ``.chain``, ``.iteration``,
      ``.draw``), ``ranef`` (same for the random effects), ``draws_array()``,
      ``sampler_stats`` (DataFrame of per-draw sampler statistics, NUTS: ``stepsize``,
      ``treedepth``, ``n_leapfrog``, ``divergent``, ``energy``, ``accept_stat``; Gibbs: none).
    - ``summary()``, ``fixef()``, ``prior_summary()``, ``diagnostics_warnings()``.
    """

    formula: str
    parameter_names: list[str]
    draws_values: np.ndarray  # (chains, draws, params)
    ranef_names: list[str]
    ranef_values: np.ndarray  # (chains, draws, levels)
    stats: dict[str, np.ndarray]  # name -> (chains, draws)
    groups: list[GroupInfo]
    nobs: int
    data_name: str
    chains: int
    iter: int
    warmup: int
    thin: int
    sampler: str
    sampler_options: dict[str, Any] = field(default_factory=dict)
    priors: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_dropped: int = 0
    seed_info: dict[str, Any] = field(default_factory=dict)
    data_hash: str = ""
    family: str = "gaussian"
    links: tuple[tuple[str, str], ...] = (("mu", "identity"), ("sigma", "identity"))
    chain_imputation: np.ndarray | None = None
    chain_stats: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (chains, ...)
    _cache: dict = field(default_factory=dict, repr=False)
    design: Any = field(default=None, repr=False)  # engine.multilevel.predict.FitDesign: the data predictions need

    kind = "brm"

    # ------------------------------------------------- after the fit (engine.multilevel.predict, engine.loo)
    def posterior_linpred(self, newdata=None, **kwargs) -> np.ndarray:
        """Linear-predictor draws (draws, rows); arguments as ``engine.multilevel.predict.posterior_linpred``."""
        from engine.multilevel.predict import posterior_linpred

        return posterior_linpred(self, newdata, **kwargs)

    def posterior_epred(self, newdata=None, **kwargs) -> np.ndarray:
        """Expected-response draws (draws, rows), as brms' ``posterior_epred``."""
        from engine.multilevel.predict import posterior_epred

        return posterior_epred(self, newdata, **kwargs)

    def posterior_predict(self, newdata=None, **kwargs) -> np.ndarray:
        """Posterior predictive draws (draws, rows), as brms' ``posterior_predict``."""
        from engine.multilevel.predict import posterior_predict

        return posterior_predict(self, newdata, **kwargs)

    def fitted(self, newdata=None, **kwargs) -> pd.DataFrame:
        """brms' ``fitted()``: Estimate, Est.Error, Q2.5, Q97.5 of the expected response per row."""
        from engine.multilevel.predict import fitted

        return fitted(self, newdata, **kwargs)

    def predict(self, newdata=None, **kwargs) -> pd.DataFrame:
        """brms' ``predict()``: Estimate, Est.Error, Q2.5, Q97.5 of the posterior predictive per row."""
        from engine.multilevel.predict import predict

        return predict(self, newdata, **kwargs)

    def log_lik(self, newdata=None, as_array: bool = False, **kwargs) -> np.ndarray:
        """Pointwise log-likelihood (draws, observations), or (chains, draws, observations) with
        ``as_array=True`` (the shape ``engine.loo`` takes)."""
        from engine.multilevel.predict import log_lik

        if as_array and (kwargs.get("ndraws") is not None or kwargs.get("draw_ids") is not None):
            raise EngineInputError("as_array=True needs every draw (no ndraws / draw_ids)")
        values = log_lik(self, newdata, **kwargs)
        if as_array:
            values = values.reshape(self.draws_values.shape[0], self.draws_values.shape[1], -1)
        return values

    def bayes_R2(self, **kwargs):
        """Bayesian R-squared as brms' ``bayes_R2`` (one row ``R2``: Estimate, Est.Error, Q2.5, Q97.5)."""
        from engine.multilevel.predict import bayes_R2

        return bayes_R2(self, **kwargs)

    def loo(self, **kwargs):
        """PSIS-LOO of this fit (``engine.loo``)."""
        from engine.loo import loo

        return loo(self, **kwargs)

    def waic(self, **kwargs):
        """WAIC of this fit (``engine.waic``)."""
        from engine.loo import waic

        return waic(self, **kwargs)

    def pp_check(self, kind: str = "dens_overlay", ndraws: int | None = None, **kwargs):
        """Posterior predictive check as a matplotlib Figure (``engine.multilevel.ppcheck.pp_check``)."""
        from engine.multilevel.ppcheck import pp_check

        return pp_check(self, kind=kind, ndraws=ndraws, **kwargs)

    def to_arviz(self, **kwargs):
        """ArviZ InferenceData of this fit (``engine.multilevel.ppcheck.to_arviz``; needs ArviZ)."""
        from engine.multilevel.ppcheck import to_arviz

        return to_arviz(self, **kwargs)

    # ----------------------------------------------------------------- draws
    @property
    def n_chains_total(self) -> int:
        """Number of chains stored (``chains`` for brm, ``chains * m`` for brm_multiple)."""
        return int(self.draws_values.shape[0])

    @property
    def ndraws(self) -> int:
        """Total post-warmup draws over all chains."""
        return int(self.draws_values.shape[0] * self.draws_values.shape[1])

    def draws_array(self) -> np.ndarray:
        """Posterior draws as an array (chains, draws per chain, parameters), brms' order."""
        return self.draws_values.copy()

    @property
    def draws(self) -> pd.DataFrame:
        """Draws in posterior's draws_df layout: brms parameter columns, ``.chain``, ``.iteration``,
        ``.draw``."""
        if "draws" not in self._cache:
            self._cache["draws"] = _draws_frame(self.draws_values, self.parameter_names)
        return self._cache["draws"].copy()

    @property
    def ranef(self) -> pd.DataFrame:
        """Draws of the random intercepts (``r_<group>[<level>,Intercept]``) with the draw index."""
        if "ranef" not in self._cache:
            self._cache["ranef"] = _draws_frame(self.ranef_values, self.ranef_names)
        return self._cache["ranef"].copy()

    @property
    def sampler_stats(self) -> pd.DataFrame:
        """Per-draw sampler statistics (NUTS: stepsize, treedepth, n_leapfrog, divergent, energy,
        accept_stat); only the index columns for a sampler that reports none (Gibbs)."""
        n_chains, n_draws = self.draws_values.shape[:2]
        frame = pd.DataFrame({k: np.asarray(v).reshape(n_chains * n_draws) for k, v in self.stats.items()})
        for key, values in _draw_index(n_chains, n_draws).items():
            frame[key] = values
        return frame

    @property
    def divergences(self) -> int | None:
        """Number of divergent transitions after warm-up (None when the sampler has no such notion)."""
        if "divergent" not in self.stats:
            return None
        return int(np.sum(np.asarray(self.stats["divergent"]) != 0))

    def ebfmi(self) -> np.ndarray | None:
        """Energy Bayesian fraction of missing information per chain (Betancourt 2016), as rstan's
        ``get_bfmi``: mean squared energy difference over the energy's variance; None without an
        ``energy`` statistic (Gibbs)."""
        if "energy" not in self.stats:
            return None
        energy = np.asarray(self.stats["energy"], dtype=np.float64)
        if energy.shape[1] < 2:
            return np.full(energy.shape[0], np.nan)
        numerator = np.sum(np.diff(energy, axis=1) ** 2, axis=1) / energy.shape[1]
        return numerator / np.var(energy, axis=1, ddof=1)

    # ------------------------------------------------------------- summaries
    def summary(self, prob: float = 0.95) -> pd.DataFrame:
        """Estimate, Est.Error, l-95% CI, u-95% CI, Rhat, Bulk_ESS, Tail_ESS per parameter (index:
        brms names ``b_Intercept``, ..., ``sd_<group>__Intercept``, ``sigma``)."""
        if not 0 < prob < 1:
            raise EngineInputError(f"prob must lie in (0, 1), got {prob!r}")
        key = ("summary", prob)
        if key not in self._cache:
            self._cache[key] = summarise_array(self.draws_values, self.parameter_names, prob)
        return self._cache[key].copy()

    def fixef(self, prob: float = 0.95) -> pd.DataFrame:
        """Population-level effects as brms' ``fixef()``: Estimate, Est.Error, Q2.5, Q97.5; rows
        ``Intercept``, ``male1``, ..."""
        table = self.summary(prob).iloc[:, :4]
        table = table[[n.startswith("b_") for n in table.index]]
        lo, hi = 100 * (1 - prob) / 2, 100 * (1 - (1 - prob) / 2)
        table.columns = ["Estimate", "Est.Error", f"Q{lo:g}", f"Q{hi:g}"]
        table.index = pd.Index([n[2:] for n in table.index])
        return table

    def ranef_summary(self, prob: float = 0.95) -> pd.DataFrame:
        """Posterior mean, SD and interval of every random intercept (brms' ``ranef()`` values)."""
        n_chains, n_draws, n_lev = self.ranef_values.shape
        flat = self.ranef_values.reshape(n_chains * n_draws, n_lev)
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        return pd.DataFrame(
            {
                "Estimate": flat.mean(axis=0),
                "Est.Error": flat.std(axis=0, ddof=1),
                f"Q{100 * lo:g}": np.quantile(flat, lo, axis=0),
                f"Q{100 * hi:g}": np.quantile(flat, hi, axis=0),
            },
            index=pd.Index(self.ranef_names),
        )

    def _group_coefs(self, group: str) -> list[str]:
        prefix = f"sd_{group}__"
        return [n[len(prefix):] for n in self.parameter_names if n.startswith(prefix)]

    def _flat(self, name: str) -> np.ndarray:
        """All draws (chains stacked) of a parameter or a random effect, by brms name."""
        if name in self.parameter_names:
            return self.draws_values[:, :, self.parameter_names.index(name)].reshape(-1)
        return self.ranef_values[:, :, self.ranef_names.index(name)].reshape(-1)

    @staticmethod
    def _stats(values: np.ndarray, prob: float) -> list[float]:
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        return [float(values.mean()), float(values.std(ddof=1)), float(np.quantile(values, lo)),
                float(np.quantile(values, hi))]

    def coef(self, prob: float = 0.95) -> dict[str, pd.DataFrame]:
        """brms' ``coef()``: per grouping factor, each level's coefficients b + r (population-level
        coefficients without a random part: b alone), summarised as Estimate, Est.Error, Q2.5, Q97.5.
        Returns {group: DataFrame (rows: levels; columns: MultiIndex (coefficient, statistic))}."""
        if not 0 < prob < 1:
            raise EngineInputError(f"prob must lie in (0, 1), got {prob!r}")
        lo, hi = 100 * (1 - prob) / 2, 100 * (1 - (1 - prob) / 2)
        stat_names = ["Estimate", "Est.Error", f"Q{lo:g}", f"Q{hi:g}"]
        fixed = [n[2:] for n in self.parameter_names if n.startswith("b_")]
        out = {}
        for group in self.groups:
            random = set(self._group_coefs(group.name))
            rows = []
            for level in group.levels:
                row = []
                for c in fixed:
                    values = self._flat(f"b_{c}")
                    if c in random:
                        values = values + self._flat(f"r_{group.name}[{level},{c}]")
                    row += self._stats(values, prob)
                rows.append(row)
            columns = pd.MultiIndex.from_product([fixed, stat_names])
            out[group.name] = pd.DataFrame(rows, index=pd.Index(list(group.levels)), columns=columns)
        return out

    def varcorr(self, prob: float = 0.95) -> dict[str, dict[str, pd.DataFrame]]:
        """brms' ``VarCorr()``: per grouping factor ``{"sd": DataFrame (rows: coefficients; Estimate,
        Est.Error, Q2.5, Q97.5), "cor": posterior-mean correlation matrix, "cov": posterior-mean
        covariance matrix}``, and ``"residual__"`` with the sd of sigma."""
        if not 0 < prob < 1:
            raise EngineInputError(f"prob must lie in (0, 1), got {prob!r}")
        lo, hi = 100 * (1 - prob) / 2, 100 * (1 - (1 - prob) / 2)
        stat_names = ["Estimate", "Est.Error", f"Q{lo:g}", f"Q{hi:g}"]
        out = {}
        for group in self.groups:
            coefs = self._group_coefs(group.name)
            sds = [self._flat(f"sd_{group.name}__{c}") for c in coefs]
            q = len(coefs)
            cor = np.eye(q)
            cov = np.empty((q, q))
            for a in range(q):
                for b in range(q):
                    if a == b:
                        r = np.ones_like(sds[a])
                    else:
                        name = f"cor_{group.name}__{coefs[min(a, b)]}__{coefs[max(a, b)]}"
                        r = self._flat(name) if name in self.parameter_names else np.zeros_like(sds[a])
                        cor[a, b] = r.mean()
                    cov[a, b] = float(np.mean(sds[a] * sds[b] * r))
            out[group.name] = {
                "sd": pd.DataFrame([self._stats(v, prob) for v in sds], index=pd.Index(coefs), columns=stat_names),
                "cor": pd.DataFrame(cor, index=coefs, columns=coefs),
                "cov": pd.DataFrame(cov, index=coefs, columns=coefs),
            }
        if "sigma" in self.parameter_names:
            out["residual__"] = {"sd": pd.DataFrame([self._stats(self._flat("sigma"), prob)],
                                                    index=pd.Index(["Intercept"]), columns=stat_names)}
        return out

    def prior_summary(self) -> pd.DataFrame:
        """The priors used, one row per parameter class/coefficient/group, as brms'
        ``prior_summary()`` (columns prior, class, coef, group, lb, ub, source)."""
        return self.priors.copy()

    # ------------------------------------------------------------ warnings
    def diagnostics_warnings(self) -> list[str]:
        """Messages (rstan's wording) for R-hat above 1.01 and bulk/tail ESS below 100 per chain;
        divergent transitions and max tree depth hits for NUTS."""
        table = self.summary()
        return _convergence_messages(table, self.n_chains_total, self.stats, self.sampler_options, self.ebfmi())

    def warn_convergence(self) -> None:
        for message in self.diagnostics_warnings():
            warn_user(message, ConvergenceWarning)

    # -------------------------------------------------------------- printing
    def __str__(self) -> str:
        from engine.rcompat.print_brms import format_brms_fit

        return format_brms_fit(self)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))

    # ------------------------------------------------------------ save/load
    def _metadata(self) -> dict[str, Any]:
        from engine import __version__

        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "engine_version": __version__,
            "kind": self.kind,
            "formula": self.formula,
            "family": self.family,
            "links": [list(link) for link in self.links],
            "parameter_names": list(self.parameter_names),
            "ranef_names": list(self.ranef_names),
            "groups": [{"name": g.name, "n_levels": g.n_levels, "levels": list(g.levels)} for g in self.groups],
            "nobs": int(self.nobs),
            "n_dropped": int(self.n_dropped),
            "data_name": self.data_name,
            "chains": int(self.chains),
            "iter": int(self.iter),
            "warmup": int(self.warmup),
            "thin": int(self.thin),
            "sampler": self.sampler,
            "sampler_options": _jsonable(self.sampler_options),
            "prior_summary": _jsonable(self.priors.to_dict(orient="records")),
            "prior_columns": list(self.priors.columns),
            "seed": _jsonable(self.seed_info),
            "data_hash": self.data_hash,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def save(self, path: str | os.PathLike) -> tuple[str, str]:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (metadata); returns both paths."""
        npz_path, json_path = fit_paths(path)
        directory = os.path.dirname(npz_path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        arrays = {
            "draws": np.ascontiguousarray(self.draws_values, dtype=np.float64),
            "ranef": np.ascontiguousarray(self.ranef_values, dtype=np.float64),
            "chain_imputation": self._chain_imputation(),
        }
        for name, values in self.stats.items():
            arrays[f"stat__{name}"] = np.asarray(values)
        for name, values in self.chain_stats.items():
            arrays[f"chainstat__{name}"] = np.asarray(values)
        meta = self._metadata()
        arrays.update(self._design_arrays(meta))
        # write to temporaries then rename, so a crash never leaves a half-written fit behind
        tmp_npz = npz_path + ".tmp.npz"
        np.savez_compressed(tmp_npz, **arrays)
        tmp_json = json_path + ".tmp"
        meta["arrays_sha256"] = arrays_checksum(arrays, meta)
        with open(tmp_json, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1)
        os.replace(tmp_npz, npz_path)
        os.replace(tmp_json, json_path)
        return npz_path, json_path

    def _design_arrays(self, meta: dict[str, Any]) -> dict[str, np.ndarray]:
        """Optional ``design__*`` arrays and ``meta["design"]`` (readers that predate them ignore both)."""
        if self.design is None:
            return {}
        from engine.multilevel.predict import design_to_arrays

        arrays, meta["design"] = design_to_arrays(self.design)
        return arrays

    def _chain_imputation(self) -> np.ndarray:
        if self.chain_imputation is None:
            return np.zeros(self.n_chains_total, dtype=np.int64)
        return np.asarray(self.chain_imputation, dtype=np.int64)


@dataclass(eq=False)
class BrmMultipleFit(BrmFit):
    """``engine.brm_multiple``'s result: the draws of every imputed data set combined (chains =
    ``chains * m``, imputation-major, as brms' ``combine_models``).

    Besides ``BrmFit``'s attributes: ``m`` (number of data sets), ``chain_imputation`` (0-based data
    set of each stored chain), ``rhats`` (DataFrame, one row per imputation, one column per
    parameter: the R-hat of that imputation's own chains, as brms' ``fit$rhats``), ``rhat_within``
    (Series: the largest within-imputation R-hat per parameter), ``imputation_summary()`` (long
    table: imputation, parameter, Rhat, Bulk_ESS, Tail_ESS). The combined R-hat in ``summary()``
    is inflated by differences between imputed data sets and is not a convergence check (see
    brms' ``brm_multiple`` documentation); the warnings use the within-imputation values.
    """

    m: int = 1
    nobs_per_imputation: list[int] = field(default_factory=list)
    designs: list = field(default_factory=list, repr=False)  # FitDesign of every imputed data set

    kind = "brm_multiple"

    def imputation_draws(self, k: int) -> np.ndarray:
        """Draws (chains, draws, params) of imputed data set ``k`` (0-based)."""
        if not 0 <= k < self.m:
            raise EngineInputError(f"imputation index {k} out of range for m = {self.m}")
        return self.draws_values[self._chain_imputation() == k]

    def imputation_summary(self) -> pd.DataFrame:
        """Rhat, Bulk_ESS and Tail_ESS within each imputed data set (columns imputation (1-based),
        parameter, Rhat, Bulk_ESS, Tail_ESS)."""
        if "imputation_summary" not in self._cache:
            frames = []
            for k in range(self.m):
                table = summarise_array(self.imputation_draws(k), self.parameter_names)
                table = table[["Rhat", "Bulk_ESS", "Tail_ESS"]].reset_index()
                table.insert(0, "imputation", k + 1)
                frames.append(table)
            self._cache["imputation_summary"] = pd.concat(frames, ignore_index=True)
        return self._cache["imputation_summary"].copy()

    @property
    def rhats(self) -> pd.DataFrame:
        """R-hat of each parameter within each imputed data set (rows: imputations 1..m)."""
        long = self.imputation_summary()
        wide = long.pivot(index="imputation", columns="parameter", values="Rhat")
        return wide[self.parameter_names]

    @property
    def rhat_within(self) -> pd.Series:
        """Largest within-imputation R-hat per parameter."""
        return self.rhats.max(axis=0).rename("Rhat_within")

    def within_imputation_table(self) -> pd.DataFrame:
        """Rows: parameters (brms names, which stay unique across grouping factors, unlike the
        per-block labels); columns ``max`` (largest within-imputation R-hat) and
        ``imp1`` .. ``impm`` (R-hat of each imputed data set's own chains)."""
        rhats = self.rhats
        table = pd.DataFrame({"max": rhats.max(axis=0)})
        for k in rhats.index:
            table[f"imp{k}"] = rhats.loc[k]
        table.index = pd.Index(list(rhats.columns))
        return table

    def __str__(self) -> str:
        from engine.rcompat.print_brms import format_brms_fit, format_r_matrix

        text = format_brms_fit(self)
        section = (
            "\nWithin-imputation Rhat (each imputed data set's own chains; the Rhat above also\n"
            "reflects differences between the imputed data sets, as brms' brm_multiple warns):\n"
        )
        return text + section + format_r_matrix(self.within_imputation_table()) + "\n"

    def diagnostics_warnings(self) -> list[str]:
        long = self.imputation_summary()
        within = long.groupby("parameter", sort=False).agg(
            Rhat=("Rhat", "max"), Bulk_ESS=("Bulk_ESS", "min"), Tail_ESS=("Tail_ESS", "min")
        )
        messages = _convergence_messages(
            within, self.chains, self.stats, self.sampler_options, self.ebfmi(), within_imputation=True
        )
        return messages

    def _design_arrays(self, meta: dict[str, Any]) -> dict[str, np.ndarray]:
        arrays = super()._design_arrays(meta)
        if self.designs:
            from engine.multilevel.predict import design_to_arrays

            meta["designs"] = []
            for k, design in enumerate(self.designs):
                more, info = design_to_arrays(design, prefix=f"design{k}")
                arrays.update(more)
                meta["designs"].append(info)
        return arrays

    def loo(self, **kwargs):
        """PSIS-LOO per imputed data set and their combination (``engine.loo.loo_multiple``)."""
        from engine.loo import loo_multiple

        return loo_multiple(self, **kwargs)

    def _metadata(self) -> dict[str, Any]:
        meta = super()._metadata()
        meta["n_imputations"] = int(self.m)
        meta["nobs_per_imputation"] = [int(n) for n in self.nobs_per_imputation]
        return meta


# ----------------------------------------------------------------------------- helpers


def _convergence_messages(
    table: pd.DataFrame,
    n_chains: int,
    stats: dict[str, np.ndarray],
    sampler_options: dict[str, Any],
    ebfmi: np.ndarray | None = None,
    within_imputation: bool = False,
) -> list[str]:
    messages = []
    where = " (within an imputed data set)" if within_imputation else ""
    divergent = stats.get("divergent")
    if divergent is not None:
        count = int(np.sum(np.asarray(divergent) != 0))
        if count:
            messages.append(
                f"There were {count} divergent transitions after warmup. See\n"
                "https://mc-stan.org/misc/warnings.html#divergent-transitions-after-warmup\n"
                "to find out why this is a problem and how to eliminate them."
            )
    treedepth = stats.get("treedepth")
    if treedepth is not None:
        max_depth = int(sampler_options.get("max_treedepth", 10))
        hits = int(np.sum(np.asarray(treedepth) >= max_depth))
        if hits:
            messages.append(
                f"There were {hits} transitions after warmup that exceeded the maximum treedepth. "
                f"Increase max_treedepth above {max_depth}. See\n"
                "https://mc-stan.org/misc/warnings.html#maximum-treedepth-exceeded"
            )
    if ebfmi is not None:
        low = int(np.sum(np.asarray(ebfmi) < EBFMI_THRESHOLD))
        if low:
            messages.append(
                f"There were {low} chains where the estimated Bayesian Fraction of Missing Information "
                "was low. See\nhttps://mc-stan.org/misc/warnings.html#bfmi-low"
            )
    rhat = table["Rhat"].to_numpy(dtype=float)
    if rhat.size and (np.any(np.isnan(rhat)) or np.nanmax(rhat) > RHAT_THRESHOLD):
        largest = "NA" if np.all(np.isnan(rhat)) else f"{np.nanmax(rhat):.3g}"
        messages.append(
            f"The largest R-hat{where} is {largest}, indicating chains have not mixed.\n"
            "Running the chains for more iterations may help. See\n"
            "https://mc-stan.org/misc/warnings.html#r-hat"
        )
    threshold = ESS_PER_CHAIN * n_chains
    for kind, what in (("Bulk", "means and medians"), ("Tail", "variances and tail quantiles")):
        ess = table[f"{kind}_ESS"].to_numpy(dtype=float)
        if ess.size and (np.any(np.isnan(ess)) or np.nanmin(ess) < threshold):
            messages.append(
                f"{kind} Effective Samples Size (ESS){where} is too low, indicating posterior {what} "
                "may be unreliable.\nRunning the chains for more iterations may help. See\n"
                f"https://mc-stan.org/misc/warnings.html#{kind.lower()}-ess"
            )
    return messages


def _jsonable(value: Any) -> Any:
    """Plain JSON types for metadata (numpy scalars/arrays to Python, NaN to None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if np.isnan(value) else value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def fit_paths(path: str | os.PathLike) -> tuple[str, str]:
    """``(<path>.npz, <path>.json)`` for a fit file name given with or without either extension."""
    base = os.fspath(path)
    for ext in (".npz", ".json"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base + ".npz", base + ".json"


def fit_exists(path: str | os.PathLike) -> bool:
    npz_path, json_path = fit_paths(path)
    return os.path.exists(npz_path) and os.path.exists(json_path)


@checked_arguments
def load_fit(path: str | os.PathLike) -> BrmFit:
    """Read a fit written by ``BrmFit.save`` (no pickle: ``numpy.load(allow_pickle=False)``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"load_fit() needs a file path, got {type(path).__name__}")
    npz_path, json_path = fit_paths(path)
    if not (os.path.exists(npz_path) and os.path.exists(json_path)):
        raise DataError(f"no saved fit at {os.fspath(path)!r} (expected {npz_path} and {json_path})")
    # every check (schema, shapes implied by the settings, checksum) in one place: CacheError
    meta, arrays = read_fit_cache(npz_path, json_path, FORMAT_NAME, FORMAT_VERSION)
    draws = arrays["draws"]
    ranef = arrays["ranef"]
    chain_imputation = arrays["chain_imputation"]
    stats = {key[len("stat__"):]: value for key, value in arrays.items() if key.startswith("stat__")}
    chain_stats = {key[len("chainstat__"):]: value for key, value in arrays.items() if key.startswith("chainstat__")}
    design = None
    designs = []
    try:
        if "design" in meta and "design__y" in arrays:
            from engine.multilevel.predict import design_from_arrays

            design = design_from_arrays(arrays, meta["design"])
        if "designs" in meta and "design0__y" in arrays:
            from engine.multilevel.predict import design_from_arrays

            designs = [design_from_arrays(arrays, info, prefix=f"design{k}") for k, info in enumerate(meta["designs"])]
        return _fit_from_cache(meta, draws, ranef, chain_imputation, stats, chain_stats, design, designs)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CacheError(f"the saved fit {json_path} / {npz_path} cannot be used: its metadata is malformed "
                         f"({type(error).__name__}: {error}); delete both files to refit the model") from None


def _fit_from_cache(meta, draws, ranef, chain_imputation, stats, chain_stats, design, designs) -> BrmFit:
    priors = pd.DataFrame.from_records(meta.get("prior_summary", []), columns=meta.get("prior_columns") or None)
    common = dict(
        formula=meta["formula"],
        parameter_names=list(meta["parameter_names"]),
        draws_values=draws,
        ranef_names=list(meta["ranef_names"]),
        ranef_values=ranef,
        stats=stats,
        groups=[GroupInfo(g["name"], tuple(g["levels"])) for g in meta["groups"]],
        nobs=int(meta["nobs"]),
        data_name=meta["data_name"],
        chains=int(meta["chains"]),
        iter=int(meta["iter"]),
        warmup=int(meta["warmup"]),
        thin=int(meta["thin"]),
        sampler=meta["sampler"],
        sampler_options=dict(meta.get("sampler_options") or {}),
        priors=priors,
        n_dropped=int(meta.get("n_dropped", 0)),
        seed_info=dict(meta.get("seed") or {}),
        data_hash=meta.get("data_hash", ""),
        family=meta.get("family", "gaussian"),
        links=tuple(tuple(link) for link in meta.get("links", [["mu", "identity"], ["sigma", "identity"]])),
        chain_imputation=chain_imputation,
        chain_stats=chain_stats,
        design=design,
    )
    if meta.get("kind") == "brm_multiple":
        return BrmMultipleFit(
            **common, m=int(meta["n_imputations"]), nobs_per_imputation=list(meta.get("nobs_per_imputation", [])),
            designs=designs,
        )
    return BrmFit(**common)
