"""``python -m engine replicate``: re-run the grit analysis end to end and print every table.

The analysis (Alan, Boneva & Ertac 2019, Sample 2, as re-analysed in R by E. Terlaak 2021):

1. OLS on the complete cases, printed as R's ``summary(lm())``: five models of the maths score
   after the intervention (``mathscore2``) and at the second follow-up (``mathscore3``).
2. Multiple imputation of all 52 columns as the analysis ran it (``mice`` with
   ``defaultMethod = c("cart", "lda", "pmm", "polr")``, m = 5), and model 1 pooled with Rubin's
   rules for both outcomes, printed as ``summary(pool(fit), conf.int = TRUE)``.
3. Two Bayesian multilevel models fitted over the five imputed data sets with the draws combined
   (``brm_multiple``): school intercepts with brms' default priors, and school/class intercepts
   with normal(0, 10) on the intercept and coefficients and half-Cauchy(0, 10) on the SDs and
   sigma; printed as brms prints a fit.
   Their frequentist counterparts (``engine.lmer``, REML, printed as lme4's ``summary``) on the
   complete cases and pooled over the five imputations.
4. The grit effect on choosing the difficult task: ``choicer1 ~ grit + male + raven + mathscore1 +
   (1 | schoolid/classid)``, bernoulli with brms' default priors, over the five imputations.
5. A closing table of the ``gritintervention`` effect in every model (for ``choicer1`` the log-odds
   and the average effect on the probability of choosing the difficult task).

Options: ``--data PATH`` (own copy, CSV or Stata), ``--seed``, ``--sampler gibbs|nuts``,
``--quick`` (fewer sweeps and draws, for a look), ``--json PATH``, ``--report DIR``, ``--quiet``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TREATMENT = "gritintervention"
MODEL1_RHS = "male + raven + csize + belief_survey1 + mathscore1 + grit"
OLS_MODELS = (
    ("model1", f"mathscore2 ~ {MODEL1_RHS}"),
    ("model2", "mathscore2 ~ mathscore1 + grit"),
    ("model3", f"mathscore2 ~ {MODEL1_RHS} + grit_survey1"),
    ("model4", f"mathscore2 ~ {MODEL1_RHS} + grit_survey1 + age + wealth - 1"),
    ("model5", f"mathscore3 ~ {MODEL1_RHS}"),
)
POOLED_MODELS = (
    ("model1 (mathscore2)", f"mathscore2 ~ {MODEL1_RHS}"),
    ("model1 (mathscore3)", f"mathscore3 ~ {MODEL1_RHS}"),
)
MICE_DEFAULT_METHOD = ("cart", "lda", "pmm", "polr")
SCHOOL_FORMULA = f"mathscore2 ~ 1 + {MODEL1_RHS} + (1 | schoolid)"
NESTED_FORMULA = f"mathscore2 ~ 1 + {MODEL1_RHS} + (1 | schoolid/classid)"
DEFAULT_SEED = 4387510
BINARY_FORMULA = "choicer1 ~ grit + male + raven + mathscore1 + (1 | schoolid/classid)"


@dataclass
class Settings:
    data: str | None = None
    seed: int = DEFAULT_SEED
    sampler: str = "gibbs"
    quick: bool = False
    json_path: str | None = None
    report_dir: str | None = None
    quiet: bool = False

    @property
    def mice_maxit(self) -> int:
        return 2 if self.quick else 5

    @property
    def bayes_iter(self) -> tuple[int, int, int]:
        """(chains, iter, warmup)."""
        return (2, 400, 200) if self.quick else (4, 2000, 1000)


@dataclass
class Outcome:
    """Everything the run produced: printed blocks, machine-readable numbers, figure inputs."""

    blocks: list = field(default_factory=list)  # (heading, text)
    numbers: dict = field(default_factory=dict)
    effects: list = field(default_factory=list)
    bayes_traces: list = field(default_factory=list)
    posterior_checks: list = field(default_factory=list)  # report only (--report): PPC and LOO per Bayesian fit
    imputation_traces: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _series_dict(series: pd.Series) -> dict:
    return {str(k): _finite(v) for k, v in series.items()}


def _log(settings: Settings, message: str) -> None:
    if not settings.quiet:
        print(message, file=sys.stderr, flush=True)


def _emit(outcome: Outcome, heading: str, text: str) -> None:
    outcome.blocks.append((heading, text))
    print(f"\n{'=' * 78}\n{heading}\n{'=' * 78}\n{text}", flush=True)


def _ols_numbers(fit) -> dict:
    return {
        "formula": fit.formula,
        "terms": list(fit.params.index),
        "estimate": _series_dict(fit.params),
        "std_error": _series_dict(fit.bse),
        "t_value": _series_dict(fit.tvalues),
        "p_value": _series_dict(fit.pvalues),
        "sigma": _finite(fit.sigma),
        "df_residual": int(fit.df_resid),
        "r_squared": _finite(fit.rsquared),
        "adj_r_squared": _finite(fit.rsquared_adj),
        "fstatistic": _finite(fit.fvalue),
        "f_p_value": _finite(fit.f_pvalue),
        "nobs": int(fit.nobs),
        "n_deleted": int(fit.n_dropped),
    }


def run_ols(data: pd.DataFrame, outcome: Outcome) -> None:
    from engine.ols import ols

    outcome.numbers["ols"] = {}
    for name, formula in OLS_MODELS:
        fit = ols(formula, data, data_name="data2")
        _emit(outcome, f"OLS {name}: {formula}", str(fit.summary()))
        outcome.numbers["ols"][name] = _ols_numbers(fit)
        ci = fit.conf_int(0.95)
        outcome.effects.append({
            "model": f"OLS {name} ({formula.split('~')[0].strip()})", "method": "OLS, complete cases",
            "outcome": formula.split("~")[0].strip(),
            "estimate": float(fit.params[TREATMENT]), "std_error": float(fit.bse[TREATMENT]),
            "lower": float(ci.loc[TREATMENT].iloc[0]), "upper": float(ci.loc[TREATMENT].iloc[1]),
        })


PAPER_CONTROLS = ("raven", "mathscore1", "verbalscore1", "belief_survey1", "grit_survey1")
PAPER_FORMULA = ("mathscore2 ~ grit + male + raven_c + mathscore1_c + verbalscore1_c + belief_survey1_c"
                 " + grit_survey1_c + csize")


def run_paper_spec(data: pd.DataFrame, outcome: Outcome) -> None:
    """The paper's own specification (the authors' Stata do-file for Sample 2): the controls
    mean-imputed over all rows (``<x>_c``), OLS with SEs clustered by school (CR1, Stata's
    small-sample factor, t on G - 1 degrees of freedom)."""
    from engine.ols import ols

    frame = data.copy()
    for name in PAPER_CONTROLS:
        frame[f"{name}_c"] = frame[name].fillna(frame[name].mean())
    fit = ols(PAPER_FORMULA, frame, data_name="data2", cluster="schoolid")
    _emit(outcome, f"OLS, the paper's specification (controls mean-imputed, SEs clustered by school): "
                   f"{PAPER_FORMULA}", str(fit.summary()))
    numbers = _ols_numbers(fit)
    numbers.update(vcov=fit.cov_type, cluster="schoolid", n_clusters=int(fit.robust.clusters.counts[0]),
                   df_inference=int(fit.df_inference))
    outcome.numbers["paper_spec"] = numbers
    ci = fit.conf_int(0.95)
    outcome.effects.append({
        "model": "OLS paper's spec (mean-imputed, clustered by school)",
        "method": "OLS, controls mean-imputed, CR1 SEs by school (df G - 1)", "outcome": "mathscore2",
        "estimate": float(fit.params[TREATMENT]), "std_error": float(fit.bse[TREATMENT]),
        "lower": float(ci.loc[TREATMENT].iloc[0]), "upper": float(ci.loc[TREATMENT].iloc[1]),
    })


def run_mice(data: pd.DataFrame, settings: Settings, outcome: Outcome):
    from engine.mice import mice
    from engine.ols import ols
    from engine.pool import pool
    from engine.report import ImputationTrace

    t0 = time.perf_counter()
    # quantify=False: pmm on the factor columns matches on their integer codes, as the mice of the
    # analysis (and of the project's R references, 3.15) did; mice >= 3.16 scales them first
    imp = mice(data, m=5, maxit=settings.mice_maxit, default_method=MICE_DEFAULT_METHOD, seed=settings.seed,
               progress=False if settings.quiet else None, quantify=False)
    outcome.timings["mice_seconds"] = time.perf_counter() - t0
    _log(settings, f"imputation: 52 columns, m = 5, maxit = {settings.mice_maxit}: "
                   f"{outcome.timings['mice_seconds']:.1f} s")
    imputed_columns = [c for c, meth in imp.method.items() if meth]
    method_text = "\n".join(f"  {c}: {imp.method[c]}" for c in imputed_columns)
    _emit(outcome, "Multiple imputation (mice, defaultMethod = cart, lda, pmm, polr)",
          f"{imp!r}\n\nImputed columns and methods:\n{method_text}")
    outcome.numbers["mice"] = {
        "m": imp.m, "maxit": imp.maxit, "seed": settings.seed,
        "method": {c: imp.method[c] for c in imputed_columns},
        "seconds": outcome.timings["mice_seconds"],
    }
    outcome.numbers["pooled"] = {}
    for name, formula in POOLED_MODELS:
        fits = imp.fit(lambda d, f=formula: ols(f, d))
        pooled = pool(fits)
        summary = pooled.summary(conf_int=True, conf_level=0.95)
        _emit(outcome, f"Pooled {name} over 5 imputations: {formula}", str(summary))
        table = pd.DataFrame(summary)
        row = table.set_index("term").loc[TREATMENT]
        outcome.numbers["pooled"][name] = {
            "formula": formula,
            "table": {col: [(_finite(v) if not isinstance(v, str) else v) for v in table[col]] for col in table.columns},
            "pooled": {col: [(_finite(v) if not isinstance(v, str) else v) for v in pooled.pooled[col]]
                       for col in pooled.pooled.columns},
        }
        outcome.effects.append({
            "model": f"Pooled {name}", "method": "OLS, multiple imputation (Rubin, Barnard-Rubin df)",
            "outcome": formula.split("~")[0].strip(),
            "estimate": float(row["estimate"]), "std_error": float(row["std.error"]),
            "lower": float(row["2.5 %"]), "upper": float(row["97.5 %"]), "df": float(row["df"]),
        })
    scores = [c for c in ("mathscore1", "mathscore2", "mathscore3", "raven", "belief_survey1", "grit_survey1")
              if c in imp.imp]
    outcome.imputation_traces.append(ImputationTrace(
        "mice on the 52 study columns",
        chain_means={c: np.asarray(imp.chain_means[c], dtype=float) for c in scores},
        chain_vars={c: np.asarray(imp.chain_vars[c], dtype=float) for c in scores},
        observed={c: data[c].dropna().to_numpy(dtype=float) for c in scores},
        imputed={c: [np.asarray(imp.imp[c], dtype=float)[:, j] for j in range(imp.m)] for c in scores},
    ))
    return imp


def _bayes_numbers(fit) -> dict:
    summary = fit.summary()
    out = {
        "formula": fit.formula,
        "summary": {name: {col: _finite(summary.loc[name, col]) for col in summary.columns}
                    for name in summary.index},
    }
    if hasattr(fit, "rhat_within"):
        out["rhat_within"] = _series_dict(fit.rhat_within)
    return out


def run_bayes(imp, settings: Settings, outcome: Outcome) -> None:
    from engine.brm import brm_multiple
    from engine.priors import prior
    from engine.report import BayesTrace

    chains, n_iter, warmup = settings.bayes_iter
    nested_priors = [
        prior("normal(0, 10)", class_="Intercept"),
        prior("normal(0, 10)", class_="b"),
        prior("cauchy(0, 10)", class_="sd"),
        prior("cauchy(0, 10)", class_="sigma"),
    ]
    specs = (
        ("brms school (default priors)", SCHOOL_FORMULA, None),
        ("brms school/class (normal(0,10), half-Cauchy(0,10))", NESTED_FORMULA, nested_priors),
    )
    outcome.numbers["bayes"] = {}
    for index, (name, formula, priors) in enumerate(specs):
        t0 = time.perf_counter()
        fit = brm_multiple(formula, imp, prior=priors, sampler=settings.sampler, chains=chains,
                           iter=n_iter, warmup=warmup, seed=settings.seed + index, data_name="imputed data",
                           progress=False if settings.quiet else None)
        seconds = time.perf_counter() - t0
        outcome.timings[f"bayes_{index}_seconds"] = seconds
        _log(settings, f"{name}: {settings.sampler}, 5 imputations x {chains} chains x {n_iter} iterations: "
                       f"{seconds:.1f} s")
        text = str(fit)
        _emit(outcome, f"Bayesian multilevel model over 5 imputations: {name}", text)
        outcome.numbers["bayes"][name] = _bayes_numbers(fit)
        outcome.numbers["bayes"][name]["sampler"] = settings.sampler
        outcome.numbers["bayes"][name]["seconds"] = seconds
        summary = fit.summary()
        row = summary.loc[f"b_{TREATMENT}"]
        outcome.effects.append({
            "model": name, "method": f"Bayes ({settings.sampler}), 5 imputations combined",
            "outcome": "mathscore2",
            "estimate": float(row["Estimate"]), "std_error": float(row["Est.Error"]),
            "lower": float(row["l-95% CI"]), "upper": float(row["u-95% CI"]),
            "rhat": float(row["Rhat"]), "ess_bulk": float(row["Bulk_ESS"]),
        })
        names = list(fit.parameter_names)
        # Chains of one imputed data set: pooled over imputations, the rank plots would show the
        # (expected) differences between imputations rather than how the chains mix.
        outcome.bayes_traces.append(BayesTrace(f"{name}: the {chains} chains of imputed data set 1",
                                               np.asarray(fit.imputation_draws(0)), names))
        if settings.report_dir:
            outcome.posterior_checks.append(posterior_check(fit, name, settings.seed + index))


def run_lmer(data: pd.DataFrame, imp, outcome: Outcome) -> None:
    """The frequentist counterparts of the two multilevel models (lme4's REML fits): on the
    complete cases, and pooled over the imputations (Rubin's rules, dfcom = lme4's df.residual as
    mice 3.15 takes it)."""
    from engine.lmer import lmer
    from engine.pool import pool

    outcome.numbers["lmer"] = {}
    for name, formula in (("school", SCHOOL_FORMULA), ("school/class", NESTED_FORMULA)):
        fit = lmer(formula, data)
        summary = fit.summary()
        summary.data_name = "complete cases"
        _emit(outcome, f"lmer {name} (REML, complete cases): {formula}", str(summary))
        est, se = float(fit.fixef[TREATMENT]), float(fit.bse[TREATMENT])
        outcome.numbers["lmer"][name] = {"formula": formula, "nobs": fit.nobs, "estimate": est, "std_error": se,
                                         "reml_criterion": fit.criterion, "is_singular": fit.is_singular}
        outcome.effects.append({
            "model": f"lmer {name} (complete cases)", "method": "REML (lme4), Wald 95% interval",
            "outcome": "mathscore2", "estimate": est, "std_error": se,
            "lower": est - 1.959963984540054 * se, "upper": est + 1.959963984540054 * se,
        })
        pooled = pool(imp.fit(lambda d, f=formula: lmer(f, d)))
        table = pd.DataFrame(pooled.summary(conf_int=True, conf_level=0.95))
        _emit(outcome, f"Pooled lmer {name} over 5 imputations: {formula}", str(pooled.summary(conf_int=True)))
        row = table.set_index("term").loc[TREATMENT]
        outcome.effects.append({
            "model": f"Pooled lmer {name}", "method": "REML (lme4), multiple imputation (Rubin, Barnard-Rubin df)",
            "outcome": "mathscore2", "estimate": float(row["estimate"]), "std_error": float(row["std.error"]),
            "lower": float(row["2.5 %"]), "upper": float(row["97.5 %"]), "df": float(row["df"]),
        })


def run_binary(imp, settings: Settings, outcome: Outcome) -> None:
    """The grit effect on choosing the difficult task (``choicer1``): a bernoulli multilevel model with
    brms' default priors over the five imputations, printed as brms, and two closing-table rows: the
    log-odds (b_gritintervention) and the average effect on the probability of choosing the difficult
    task (per draw, the mean over pupils of P(choice | intervention) - P(choice | control), random
    effects at their drawn values; engine.multilevel.families.average_effect on each imputed data set's draws)."""
    from engine.multilevel import families
    from engine.brm import _imputed_datasets, brm_multiple

    chains, n_iter, warmup = settings.bayes_iter
    t0 = time.perf_counter()
    fit = brm_multiple(BINARY_FORMULA, imp, family="bernoulli", sampler=settings.sampler, chains=chains,
                       iter=n_iter, warmup=warmup, seed=settings.seed + 10, data_name="imputed data",
                       progress=False if settings.quiet else None)
    seconds = time.perf_counter() - t0
    name = "brms school/class, choicer1 (bernoulli, default priors)"
    outcome.timings["bayes_binary_seconds"] = seconds
    _log(settings, f"{name}: {settings.sampler}, 5 imputations x {chains} chains x {n_iter} iterations: {seconds:.1f} s")
    _emit(outcome, f"Bayesian multilevel model over 5 imputations: {name}", str(fit))
    outcome.numbers["bayes"][name] = _bayes_numbers(fit)
    family = families.get_family("bernoulli")
    effects = []
    for k, frame in enumerate(_imputed_datasets(imp)):
        model_frame, trials = families.glm_model_frame(BINARY_FORMULA, frame, family)
        model = families.build_glm_model(model_frame, trials, None, family)
        keep = fit.chain_imputation == k
        draws = fit.draws_values[keep].reshape(-1, fit.draws_values.shape[2])
        ranef = fit.ranef_values[keep].reshape(-1, fit.ranef_values.shape[2])
        effects.append(families.average_effect(model, draws, ranef, TREATMENT))
    effect = np.concatenate(effects)
    row = fit.summary().loc[f"b_{TREATMENT}"]
    common = {"method": f"Bayes ({settings.sampler}), 5 imputations combined", "outcome": "choicer1",
              "rhat": float(row["Rhat"]), "ess_bulk": float(row["Bulk_ESS"])}
    outcome.effects.append({"model": f"{name}: log-odds", **common,
                            "estimate": float(row["Estimate"]), "std_error": float(row["Est.Error"]),
                            "lower": float(row["l-95% CI"]), "upper": float(row["u-95% CI"])})
    low, high = np.quantile(effect, [0.025, 0.975])
    outcome.effects.append({"model": "  average effect on P(difficult task)", **common,
                            "estimate": float(effect.mean()), "std_error": float(effect.std(ddof=1)),
                            "lower": float(low), "upper": float(high)})
    outcome.numbers["bayes"][name]["average_effect_probability"] = {
        "mean": float(effect.mean()), "sd": float(effect.std(ddof=1)), "q2.5": float(low), "q97.5": float(high)}
    if settings.report_dir:
        outcome.posterior_checks.append(posterior_check(fit, name, settings.seed + 10))


def posterior_check(fit, name: str, seed: int, ndraws: int = 10):
    """The report's posterior predictive check and LOO of a brm_multiple fit (computed only for
    --report; nothing printed or written to the JSON changes): y of imputed data set 1 against
    ``ndraws`` posterior predictive draws from that data set's chains (brms' pp_check default of
    10), and engine.loo's per-imputation table with its documented combination (Rubin's rules;
    engine.loo.LooMultipleResult). Pareto-k warnings are kept out of the output: the table counts
    the k above 0.7."""
    import warnings

    from engine.loo import loo
    from engine.multilevel.predict import imputation_fit
    from engine.report import PosteriorCheck

    first = imputation_fit(fit, 0)
    yrep = first.posterior_predict(ndraws=ndraws, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = loo(fit)
    return PosteriorCheck(f"{name}: y of imputed data set 1 and {ndraws} posterior predictive draws",
                          np.asarray(first.design.y), yrep, str(result))


def effects_table(effects: list) -> str:
    """The closing table: the grit effect in every model, side by side."""
    header = f"{'model':<52s} {'estimate':>9s} {'SE/SD':>8s} {'2.5 %':>8s} {'97.5 %':>8s}"
    lines = [header, "-" * len(header)]
    for e in effects:
        lines.append(f"{e['model']:<52.52s} {e['estimate']:9.4f} {e['std_error']:8.4f} "
                     f"{e['lower']:8.4f} {e['upper']:8.4f}")
    lines.append("")
    lines.append("estimate: OLS coefficient, pooled estimate, or posterior mean of b_gritintervention;")
    lines.append("SE/SD: standard error or posterior SD; interval: 95% confidence or credible interval.")
    if any(e.get("outcome") == "choicer1" for e in effects):
        lines.append("choicer1 rows: log-odds of choosing the difficult task, and the average effect of the")
        lines.append("intervention on its probability (posterior mean, SD and 95% interval).")
    return "\n".join(lines)


def run(settings: Settings) -> Outcome:
    from engine._warmup import compile_ahead
    from engine.datasets import CITATION, load_grit

    outcome = Outcome()
    start = time.perf_counter()
    data = load_grit(settings.data)
    _log(settings, f"data: {len(data)} students, {data.shape[1]} columns ({settings.data or 'shipped copy'})")
    # on a cold Numba cache, a worker process compiles the Bayesian stages while OLS and mice run
    with compile_ahead(settings) as ahead:
        run_ols(data, outcome)
        imp = run_mice(data, settings, outcome)
        ahead.wait("bayes")
        run_bayes(imp, settings, outcome)
        run_paper_spec(data, outcome)
        run_lmer(data, imp, outcome)
        ahead.wait("binary")
        run_binary(imp, settings, outcome)
    _emit(outcome, "The grit effect across models (gritintervention)", effects_table(outcome.effects))
    outcome.timings["total_seconds"] = time.perf_counter() - start
    outcome.numbers["treatment_effects"] = [
        {k: (_finite(v) if isinstance(v, float) else v) for k, v in e.items()} for e in outcome.effects
    ]
    outcome.numbers["settings"] = {
        "data": settings.data, "seed": settings.seed, "sampler": settings.sampler, "quick": settings.quick,
    }
    outcome.numbers["timings"] = outcome.timings
    outcome.numbers["citation"] = CITATION
    _log(settings, f"total: {outcome.timings['total_seconds']:.1f} s")
    return outcome


def write_outputs(outcome: Outcome, settings: Settings) -> None:
    if settings.json_path:
        # the up-front path check removes the folders it made: create them now, as the report does
        os.makedirs(os.path.dirname(os.path.abspath(settings.json_path)), exist_ok=True)
        with open(settings.json_path, "w", encoding="utf-8") as handle:
            json.dump(outcome.numbers, handle, indent=1)
        _log(settings, f"numbers written to {settings.json_path}")
    if settings.report_dir:
        from engine.datasets import CITATION
        from engine.report import ReportContent, write_report

        content = ReportContent(
            title="Grit intervention: the analysis re-run by engine",
            intro=("Re-analysis of Sample 2 of " + CITATION + " OLS as R's lm, multiple imputation as R's "
                   "mice, Bayesian multilevel models as brms; seed " + str(settings.seed)
                   + (", quick mode (fewer iterations)" if settings.quick else "") + "."),
            effects=outcome.effects, tables=outcome.blocks, bayes=outcome.bayes_traces,
            imputations=outcome.imputation_traces, checks=outcome.posterior_checks,
        )
        path = write_report(content, settings.report_dir)
        _log(settings, f"report written to {path}")


class _Parser(argparse.ArgumentParser):
    """argparse with a two-line error (the message, then where to find help) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n(python -m engine replicate --help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="engine", description="engine: multilevel statistics, Numba-fast.")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("replicate", help="re-run the grit analysis (OLS, mice, brms) and print every table")
    rep.add_argument("--data", help="a copy of Sample2_Data (CSV or Stata .dta); default: the shipped data")
    rep.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    rep.add_argument("--sampler", choices=("gibbs", "nuts"), default="gibbs", help="sampler for the multilevel models")
    rep.add_argument("--quick", action="store_true", help="fewer sweeps and draws, for a quick look")
    rep.add_argument("--json", dest="json_path", help="write every number as JSON to this file")
    rep.add_argument("--report", dest="report_dir", help="write an HTML report (index.html) into this folder")
    rep.add_argument("--quiet", action="store_true", help="no progress or timing lines on stderr")
    rep.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    pre = sub.add_parser("precompile", help="compile engine's kernels into Numba's cache now (pip install does it)")
    pre.add_argument("--workers", type=int, default=None, help="processes at once (default: CPU count, at most 4)")
    pre.add_argument("--install", action="store_true",
                     help="the jobs pip install runs (the user-model jobs only with 4 workers or more)")
    return parser


def _short_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings on the command line as one readable line, without the source line."""
    return f"{category.__name__}: {message}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    from engine.errors import EngineError
    from engine.validate import check_replicate_options, report_cli_error

    args = build_parser().parse_args(argv)
    if args.command == "precompile":
        from engine._precompile import run_all

        return run_all(args.workers, install=args.install)
    warnings.formatwarning = _short_warning
    settings = Settings(data=args.data, seed=args.seed, sampler=args.sampler, quick=args.quick,
                        json_path=args.json_path, report_dir=args.report_dir, quiet=args.quiet)
    try:  # an engine error is one line on stderr and exit status 2; --debug shows the traceback
        check_replicate_options(settings)
        outcome = run(settings)
        write_outputs(outcome, settings)
    except EngineError as error:
        if args.debug:
            raise
        return report_cli_error(error, "engine replicate")
    return 0
