"""``engine.brm`` and ``engine.brm_multiple``: Bayesian Gaussian multilevel models as brms fits them.

The user-facing layer only: it validates the arguments, builds the model through the formula and
model layers (``engine.formula.model_frame`` -> ``engine.multilevel.build_model``), runs one task
per chain (per imputed data set and chain for ``brm_multiple``) through
``engine.parallel.run_tasks`` with one child seed each, and wraps the draws in
``engine.multilevel.results.BrmFit``. Seeds: ``brm`` gives chain ``c`` the seed
``SeedSequence(seed).spawn(chains)[c]``; ``brm_multiple`` gives data set ``k``
``SeedSequence(seed).spawn(m)[k]`` and its chain ``c`` that sequence's ``spawn(chains)[c]``. The
draws are therefore the same whatever executor or number of workers runs the tasks.

Samplers (``sampler=``): the registered ``engine.multilevel.sampler.Sampler`` objects, ``"gibbs"``
(``engine.gibbs``, blocked Gibbs) and ``"nuts"`` (``engine.multilevel.nuts_target``;
``marginalize=True`` integrates the random intercepts or coefficients out, for one grouping factor or
two nested ones, and draws them afterwards; crossed factors are refused). Extra keyword
arguments go to the sampler (e.g. ``adapt_delta``), checked against the options it declares.

Families (``family=``; ``engine.multilevel.families``): ``"gaussian"`` as above; ``"bernoulli"``,
``"binomial"`` (``y | trials(n) ~ ...``) and ``"poisson"`` build an ``engine.multilevel.families.GLMModel``
instead (``families.model_frame`` and ``families.describe``), and the registry gives the sampler of
that name for the family (``get_sampler(name, family)``: ``engine.multilevel.gibbs_pg``, Pólya-Gamma
Gibbs for the logit families, and ``engine.multilevel.nuts_glm``, non-centred NUTS for all three).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from engine.errors import DataError, DataWarning, EngineInputError, ImputationError, SamplerError, warn_user
from engine.progress import progress_reporter
from engine.parallel import run_tasks
from engine.multilevel import families as _families
from engine.multilevel.layout import frame_hash
from engine.multilevel.results import BrmFit, BrmMultipleFit, fit_exists, fit_paths, load_fit
from engine.multilevel.sampler import get_sampler
from engine.validate import check_brm_frame, check_fit_file, sampler_failures

__all__ = ["brm", "brm_multiple"]


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise EngineInputError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if value < minimum:
        raise EngineInputError(f"{name} must be at least {minimum}, got {value}")
    return value


def _validate_run(sampler, chains, iter, warmup, thin, marginalize, seed, data_name,
                  family: str = "gaussian") -> tuple[str, int, int, int, int]:
    sampler = get_sampler(sampler, family).name
    chains = _check_int("chains", chains, 1)
    iter = _check_int("iter", iter, 1)
    warmup = _check_int("warmup", warmup, 0)
    thin = _check_int("thin", thin, 1)
    if warmup >= iter:
        raise EngineInputError(
            f"warmup ({warmup}) must be smaller than iter ({iter}): iter counts the warm-up "
            "iterations too, as in brms"
        )
    if thin > iter - warmup:
        raise EngineInputError(f"thin ({thin}) exceeds the number of post-warmup iterations ({iter - warmup})")
    if seed is not None and not isinstance(seed, np.random.SeedSequence):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise EngineInputError(f"seed must be a non-negative integer, a numpy SeedSequence or None, got {seed!r}")
    if data_name is not None and not isinstance(data_name, str):
        raise EngineInputError(f"data_name must be a string, got {type(data_name).__name__}")
    if marginalize and "marginalize" not in get_sampler(sampler, family).options:
        refusal = getattr(get_sampler(sampler, family), "unavailable_options", {}).get("marginalize")
        if refusal:
            raise EngineInputError(refusal.format(family=family))
        raise EngineInputError(
            f"marginalize=True applies to sampler='nuts' only (sampler {sampler!r} has no such option; "
            "the Gibbs sampler already draws the random intercepts jointly with the fixed effects)"
        )
    return sampler, chains, iter, warmup, thin


def _sampler_options(sampler: str, marginalize: bool, options: dict[str, Any], family: str = "gaussian") -> dict[str, Any]:
    """The keyword arguments for the sampler's ``run_chain``, checked against the options it declares
    (a misspelt option fails before any chain starts, naming the options there are)."""
    options = dict(options)
    accepted = list(get_sampler(sampler, family).options)
    if "marginalize" in accepted:
        options["marginalize"] = bool(marginalize)
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise EngineInputError(
            f"sampler {sampler!r} has no option {unknown[0]!r}"
            + (f"; its options: {', '.join(n for n in accepted if n != 'marginalize')}" if accepted else "")
        )
    return options


# --------------------------------------------------------------------------- model building


class _Prepared:
    """What one data set contributes: the model arrays, the names and the bookkeeping."""

    def __init__(self, formula: str, data: pd.DataFrame, prior, label: str = "",
                 sample_prior: str = "no", family=None):
        family = _families.get_family("gaussian" if family is None else family)
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
        frame, trials = _families.model_frame(formula, data, family)
        check_brm_frame(frame, label, family.name, trials)
        if not frame.groups:
            raise EngineInputError(
                f"formula {formula!r} has no group-level term such as (1 | schoolid); brm fits "
                "multilevel models (use engine.ols for a model without groups)"
            )
        if frame.n_dropped:
            where = f" of {label}" if label else ""
            warn_user(
                f"Rows containing NAs were excluded from the model: {frame.n_dropped} of "
                f"{frame.n_dropped + len(frame.y)} rows{where} dropped (missing values in the "
                f"variables the formula uses).",
                DataWarning,
            )
        self.frame = frame
        layout = _families.describe(frame, trials, prior, family, sample_prior)
        self.model = layout.model
        self.parameter_names = layout.parameter_names
        self.groups = layout.groups
        self.ranef_names = layout.ranef_names
        self.priors = layout.priors
        self.nobs = layout.nobs
        self.n_dropped = layout.n_dropped
        self.data_hash = layout.data_hash
        from engine.multilevel.predict import design_from_frame

        # what predictions / log_lik / loo need, for every family (the trials of a binomial's rows too)
        self.design = design_from_frame(formula, frame, data, family.name, trials)


# --------------------------------------------------------------------------- chains


def _run_chain(sampler: str, model, n_iter: int, n_warmup: int, thin: int, seed, options: dict,
               family: str = "gaussian"):
    """One chain (a picklable task for any executor): the sampler's kept draws (it thins itself:
    post-warmup iterations 0, thin, 2 thin, ...)."""
    with sampler_failures(sampler):  # a numerical failure inside a kernel: SamplerError, not LinAlgError
        result = get_sampler(sampler, family).run_chain(model, n_iter, n_warmup, seed, thin=thin, **options)
    draws = np.asarray(result.draws, dtype=np.float64)
    ranef = np.asarray(result.ranef, dtype=np.float64)
    # per-draw statistics (one value per kept iteration) go with the draws; anything else
    # (per-chain totals such as NUTS' warm-up gradient count) is kept whole
    stats, chain_stats = {}, {}
    for name, values in dict(result.stats or {}).items():
        values = np.asarray(values)
        if values.ndim >= 1 and values.shape[0] == draws.shape[0]:
            stats[name] = values
        else:
            chain_stats[name] = values
    return draws, ranef, stats, chain_stats


def _stack(results: list, names: list[str], ranef_names: list[str]):
    draws = np.stack([r[0] for r in results])
    ranef = np.stack([r[1] for r in results])
    if draws.shape[2] != len(names):
        raise SamplerError(f"sampler returned {draws.shape[2]} parameters, expected {len(names)}: {names}")
    if ranef.shape[2] != len(ranef_names):
        raise SamplerError(f"sampler returned {ranef.shape[2]} random effects, expected {len(ranef_names)}")
    stats = {name: np.stack([np.asarray(r[2][name]) for r in results]) for name in results[0][2]}
    chain_stats = {name: np.stack([np.asarray(r[3][name]) for r in results]) for name in results[0][3]}
    return draws, ranef, stats, chain_stats


def _seed_info(root: np.random.SeedSequence, chain_seeds: list[np.random.SeedSequence]) -> dict[str, Any]:
    entropy = root.entropy
    return {
        "entropy": [int(e) for e in entropy] if isinstance(entropy, (list, tuple, np.ndarray)) else int(entropy),
        "chain_spawn_keys": [list(int(k) for k in s.spawn_key) for s in chain_seeds],
    }


class _ChainCounter:
    """Calls ``report(done, total)`` as chains finish (thread-safe); used only with thread executors,
    where the task function may close over it (process or cluster executors get the plain task)."""

    def __init__(self, report: Callable[[int, int], None], total: int):
        self.report, self.total, self.done = report, total, 0
        self._lock = threading.Lock()

    def __call__(self, *task):
        result = _run_chain(*task)
        with self._lock:
            self.done += 1
            self.report(self.done, self.total)
        return result


def _run_chains(tasks: list[tuple], executor: Executor | None, progress, label: str) -> list:
    """All chain tasks through engine.parallel.run_tasks, reporting progress per finished chain."""
    report, close = progress_reporter(progress, label, len(tasks))
    try:
        if report is None:
            return run_tasks(_run_chain, tasks, executor)
        if executor is None or isinstance(executor, ThreadPoolExecutor):
            return run_tasks(_ChainCounter(report, len(tasks)), tasks, executor)
        results = run_tasks(_run_chain, tasks, executor)
        report(len(tasks), len(tasks))
        return results
    finally:
        close()


# --------------------------------------------------------------------------- file=


def _reload(file, data_hash_now: str | None, formula: str) -> BrmFit:
    fit = load_fit(file)
    if fit.formula != formula:
        warn_user(
            f"reloaded the fit stored at {fit_paths(file)[0]!r}, fitted with formula {fit.formula!r}, "
            f"not {formula!r}; delete the file to refit (brms' file= also reloads without refitting)",
            DataWarning,
        )
    elif data_hash_now is not None and fit.data_hash and fit.data_hash != data_hash_now:
        warn_user(
            f"reloaded the fit stored at {fit_paths(file)[0]!r}, but the data differ from those it was "
            "fitted to (different fingerprint); delete the file to refit",
            DataWarning,
        )
    return fit


# --------------------------------------------------------------------------- public API


def brm(
    formula: str,
    data: pd.DataFrame,
    prior=None,
    sampler: str = "gibbs",
    chains: int = 4,
    iter: int = 2000,
    warmup: int = 1000,
    thin: int = 1,
    seed: int | np.random.SeedSequence | None = None,
    executor: Executor | None = None,
    file: str | os.PathLike | None = None,
    marginalize: bool = False,
    data_name: str | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
    sample_prior: str = "no",
    family="gaussian",
    **sampler_options,
) -> BrmFit:
    """Fit a Gaussian multilevel model with random intercepts and slopes, as ``brms::brm`` does.

    ``formula``: R syntax with group-level terms, ``y ~ x + (1 | school/class)``, ``y ~ x + (1 + x | g)``,
    ``(x || g)``;
    ``prior``: ``engine.prior(...)`` or a list of them (default: brms' defaults); ``sampler``:
    ``"gibbs"`` or ``"nuts"``; ``chains``, ``iter`` (including warm-up), ``warmup``, ``thin`` as
    brms; ``seed``: one integer for the whole fit (chain ``c`` uses
    ``SeedSequence(seed).spawn(chains)[c]``); ``executor``: any ``concurrent.futures.Executor``
    (default: threads on the local cores); ``file``: save the fit as ``<file>.npz`` + ``<file>.json``
    and reload it instead of refitting when it exists (a warning if the data or formula changed);
    ``data_name``: the name printed after ``Data:`` (default ``"data"``); ``progress``: a line on
    stderr as chains finish (default: when stderr is a terminal), False for none, or a callable
    ``f(chains_done, chains_total)``; ``sample_prior``: ``"no"`` or ``"only"`` (draws from the prior
    alone, as brms; needs proper priors); ``family``: ``"gaussian"`` (default), ``"bernoulli"``,
    ``"binomial"`` (response ``y | trials(n)``) or ``"poisson"`` (brms' default links and priors;
    ``sampler="gibbs"`` is Pólya-Gamma Gibbs for bernoulli and binomial, NUTS is non-centred for
    every family).

    Rows with missing values in the variables used are dropped (a ``DataWarning`` says how many).
    A ``ConvergenceWarning`` reports R-hat above 1.01 or bulk/tail ESS below 100 per chain.
    """
    family = _families.get_family(family)
    sampler, chains, iter, warmup, thin = _validate_run(
        sampler, chains, iter, warmup, thin, marginalize, seed, data_name, family.name
    )
    options = _sampler_options(sampler, marginalize, sampler_options, family.name)
    if sample_prior not in ("no", "only"):
        raise EngineInputError(f"sample_prior must be 'no' or 'only', got {sample_prior!r}")
    check_fit_file(file)
    from engine.partitioned import is_partitioned

    partitioned = is_partitioned(data)  # a Dask DataFrame or a Parquet path: engine.partitioned.brm
    if file is not None and fit_exists(file):
        prepared_hash = None  # partitioned data: no fingerprint without a pass, reloaded unchecked
        try:
            if not partitioned:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    prepared_hash = frame_hash(_families.model_frame(formula, data, family)[0])
        except Exception:  # the stored fit is returned regardless, as brms does
            prepared_hash = "unavailable"
        return _reload(file, prepared_hash, formula)

    if partitioned:
        from engine.partitioned.brm import prepare

        prepared = prepare(formula, data, prior, sampler=sampler, family=family, sample_prior=sample_prior)
    else:
        prepared = _Prepared(formula, data, prior, sample_prior=sample_prior, family=family)
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    chain_seeds = np.random.SeedSequence(root.entropy, spawn_key=root.spawn_key).spawn(chains)
    tasks = [(sampler, prepared.model, iter, warmup, thin, s, options, family.name) for s in chain_seeds]
    results = _run_chains(tasks, executor, progress, f"brm ({sampler}): chains")
    draws, ranef, stats, chain_stats = _stack(results, prepared.parameter_names, prepared.ranef_names)

    fit = BrmFit(
        formula=formula,
        parameter_names=prepared.parameter_names,
        draws_values=draws,
        ranef_names=prepared.ranef_names,
        ranef_values=ranef,
        stats=stats,
        chain_stats=chain_stats,
        groups=prepared.groups,
        nobs=prepared.nobs,
        data_name=data_name or "data",
        chains=chains,
        iter=iter,
        warmup=warmup,
        thin=thin,
        sampler=sampler,
        sampler_options=options,
        priors=prepared.priors,
        n_dropped=prepared.n_dropped,
        seed_info=_seed_info(root, chain_seeds),
        data_hash=prepared.data_hash,
        family=family.name,
        links=family.links,
    )
    fit.design = prepared.design
    fit.warn_convergence()
    if file is not None:
        fit.save(file)
    return fit


def _imputed_datasets(imp) -> list[pd.DataFrame]:
    """The completed data sets of an ``engine.mice`` result (``.m``, ``.complete(k)``, k = 1..m as in
    R) or a list of DataFrames."""
    if isinstance(imp, pd.DataFrame):
        raise ImputationError(
            "brm_multiple needs several data sets (an engine.mice result or a list of DataFrames), "
            "got one DataFrame; use engine.brm for a single data set"
        )
    if hasattr(imp, "complete") and hasattr(imp, "m"):
        m = int(imp.m)
        datasets = [imp.complete(k) for k in range(1, m + 1)]
    elif isinstance(imp, Sequence) and not isinstance(imp, (str, bytes)):
        datasets = list(imp)
    else:
        raise ImputationError(
            f"imp must be an engine.mice result or a list of DataFrames, got {type(imp).__name__}"
        )
    if not datasets:
        raise ImputationError("brm_multiple needs at least one data set, got none")
    for k, frame in enumerate(datasets, start=1):
        if not isinstance(frame, pd.DataFrame):
            raise ImputationError(f"data set {k} is a {type(frame).__name__}, not a pandas DataFrame")
    return datasets


def brm_multiple(
    formula: str,
    imp,
    prior=None,
    sampler: str = "gibbs",
    chains: int = 4,
    iter: int = 2000,
    warmup: int = 1000,
    thin: int = 1,
    seed: int | np.random.SeedSequence | None = None,
    executor: Executor | None = None,
    file: str | os.PathLike | None = None,
    marginalize: bool = False,
    data_name: str | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
    family="gaussian",
    **sampler_options,
) -> BrmMultipleFit:
    """Fit the same model to every imputed data set and combine the draws, as ``brms::brm_multiple``.

    ``imp``: an ``engine.mice`` result (its ``complete(k)`` data sets, k = 1..m) or a list of
    DataFrames. All ``m * chains`` chains run through one ``run_tasks`` call so they spread over the
    executor; data set ``k`` uses ``SeedSequence(seed).spawn(m)[k]`` and its chains that sequence's
    children. The result stores ``chains * m`` chains (imputation-major). Its combined R-hat is
    inflated by the differences between imputed data sets; ``fit.rhats`` (per imputation) and
    ``fit.rhat_within`` give the within-imputation R-hats that the convergence warnings use.
    Other arguments as ``brm``.
    """
    family = _families.get_family(family)
    sampler, chains, iter, warmup, thin = _validate_run(
        sampler, chains, iter, warmup, thin, marginalize, seed, data_name, family.name
    )
    options = _sampler_options(sampler, marginalize, sampler_options, family.name)
    datasets = _imputed_datasets(imp)
    m = len(datasets)
    check_fit_file(file)
    if file is not None and fit_exists(file):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                combined = hashlib.sha256()
                for frame in datasets:
                    combined.update(frame_hash(_families.model_frame(formula, frame, family)[0]).encode())
                prepared_hash = combined.hexdigest()
        except Exception:
            prepared_hash = "unavailable"
        return _reload(file, prepared_hash, formula)

    prepared = []
    for k, frame in enumerate(datasets, start=1):
        prepared.append(_Prepared(formula, frame, prior, label=f"imputed data set {k}", family=family))
    first = prepared[0]
    for k, p in enumerate(prepared[1:], start=2):
        if p.parameter_names != first.parameter_names or p.ranef_names != first.ranef_names:
            raise ImputationError(
                f"imputed data set {k} gives different model parameters than data set 1 (for example a "
                "factor level present in one and not the other); the data sets must share their columns "
                "and levels"
            )
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    imputation_seeds = np.random.SeedSequence(root.entropy, spawn_key=root.spawn_key).spawn(m)
    chain_seeds = [s for imp_seed in imputation_seeds for s in imp_seed.spawn(chains)]
    tasks = [
        (sampler, prepared[k].model, iter, warmup, thin, chain_seeds[k * chains + c], options, family.name)
        for k in range(m)
        for c in range(chains)
    ]
    results = _run_chains(tasks, executor, progress, f"brm_multiple ({sampler}): {m} data sets x {chains} chains")
    draws, ranef, stats, chain_stats = _stack(results, first.parameter_names, first.ranef_names)

    combined = hashlib.sha256()
    for p in prepared:
        combined.update(p.data_hash.encode())
    nobs = [p.nobs for p in prepared]
    fit = BrmMultipleFit(
        formula=formula,
        parameter_names=first.parameter_names,
        draws_values=draws,
        ranef_names=first.ranef_names,
        ranef_values=ranef,
        stats=stats,
        chain_stats=chain_stats,
        groups=first.groups,
        nobs=nobs[0],
        data_name=data_name or "data",
        chains=chains,
        iter=iter,
        warmup=warmup,
        thin=thin,
        sampler=sampler,
        sampler_options=options,
        priors=first.priors,
        n_dropped=int(sum(p.n_dropped for p in prepared)),
        seed_info=_seed_info(root, chain_seeds),
        data_hash=combined.hexdigest(),
        family=family.name,
        links=family.links,
        chain_imputation=np.repeat(np.arange(m, dtype=np.int64), chains),
        m=m,
        nobs_per_imputation=nobs,
    )
    fit.design = first.design  # brms predicts from the first imputed data set
    fit.designs = [p.design for p in prepared]
    fit.warn_convergence()
    if file is not None:
        fit.save(file)
    return fit


from engine._callable_module import make_module_callable  # noqa: E402

make_module_callable(__name__, "brm")
