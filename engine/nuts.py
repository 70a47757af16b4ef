"""The No-U-Turn sampler with Stan's adaptation, for any Numba-compiled log density.

    result = engine.nuts.sample(logp_and_grad, initial_position, chains=4, iter=2000, warmup=1000,
                                seed=1, adapt_delta=0.8, max_treedepth=10, metric="diag")

``logp_and_grad`` is a ``numba.njit`` function returning (log density, gradient (d,)), called either
as ``logp_and_grad(position)`` or, when ``data`` / ``index`` are given, as
``logp_and_grad(position, data, index)`` with ``data`` a float64 and ``index`` an int64 1-D array
(pack a model's arrays into these two; close over small constants instead if you prefer)::

    @numba.njit
    def logp_and_grad(x):          # a standard normal in 3 dimensions
        return -0.5 * (x @ x), -x

    fit = engine.nuts.sample(logp_and_grad, np.zeros(3), seed=1)
    fit.draws.shape                # (4, 1000, 3); fit.stats["divergent"], fit.e_bfmi, fit.summary()

**Compile once.** The kernels take the log density as a Numba *first-class function* of one fixed
signature, ``(float64[::1], float64[::1], int64[::1]) -> (float64, float64[::1])``
(:data:`LOGP_SIGNATURE`), handed over as a function pointer (:class:`LogDensity`). So the whole
sampler (tree building, adaptation, chain loop) is compiled once and cached on disk by Numba;
a new target costs only its own compilation (plus a tiny adapter for other call forms), not a new
specialisation of the sampler. The indirect call costs a few nanoseconds per gradient. (The
function pointer comes from ``numba.experimental.function_type._get_wrapper_address``, Numba's own
helper for first-class functions; checked with Numba 0.68.) The pieces:

- ``engine.hmc.metric``: diagonal / dense Euclidean metric, momentum, kinetic energy, Welford;
- ``engine.hmc.integrator``: the leapfrog step;
- ``engine.hmc.tree``: one multinomial NUTS transition (iterative tree building, Stan's extra
  U-turn checks across merged subtrees, divergence at H − H0 > 1000);
- ``engine.hmc.adaptation``: dual averaging, Stan's windowed metric schedule, step-size heuristic.

This module assembles them into a chain kernel (one ``numba.njit`` loop over warm-up and sampling,
so that no Python runs between transitions) and runs chains in parallel via
``engine.parallel.run_tasks``, each from its own child seed (``engine.parallel.child_seeds``): the
same seed gives the same draws whatever the executor or worker count.

As in Stan/brms, ``iter`` counts all iterations *including* ``warmup``; ``iter − warmup`` draws
are kept per chain. Sampler statistics per kept draw follow Stan's names (``stepsize``,
``treedepth``, ``n_leapfrog``, ``divergent``, ``energy``, ``accept_stat``); E-BFMI per chain is
Σ(E_t − E_{t−1})² / Σ(E_t − Ē)² (Betancourt 2016, "Diagnosing suboptimal cotangent
disintegrations in Hamiltonian Monte Carlo").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np

from numba import types
from numba.experimental.function_type import _get_wrapper_address

from engine import _numba_setup  # noqa: F401 - engine's Numba settings, before any kernel compiles
from engine.errors import CallbackError, ConvergenceWarning, EngineInputError, SamplerError, warn_user
from engine.hmc.adaptation import (
    adaptation_windows,
    dual_averaging_restart,
    dual_averaging_update,
    initial_step_size,
)
from engine.hmc.metric import EuclideanMetric, regularised_metric, welford_update
from engine.hmc.tree import make_workspace, nuts_transition
from engine.parallel import child_seeds, run_tasks
from engine.validate import as_array, check_seed, checked_arguments

LOGP_SIGNATURE = types.Tuple((types.float64, types.float64[::1]))(
    types.float64[::1], types.float64[::1], types.int64[::1])


class LogDensity(types.WrapperAddressProtocol):
    """A compiled log density of signature LOGP_SIGNATURE, passed to the kernels as a function pointer.

    Numba types it as ``FunctionType(LOGP_SIGNATURE)`` whatever the function, which is what lets the
    sampler kernels be compiled once and cached. Calling it from Python calls the function.
    """

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher  # keeps the compiled code alive
        dispatcher.compile(LOGP_SIGNATURE.args)
        self._address = _get_wrapper_address(dispatcher, LOGP_SIGNATURE)

    def __wrapper_address__(self):
        return self._address

    def signature(self):
        return LOGP_SIGNATURE

    def __call__(self, position, data, index):
        return self.dispatcher(position, data, index)

    def __reduce__(self):
        # a function pointer is meaningless in another process: rebuild (recompile) it there
        return (LogDensity, (self.dispatcher,))


NO_DATA = np.zeros(0)
NO_INDEX = np.zeros(0, dtype=np.int64)


def log_density(function, with_data: bool) -> LogDensity:
    """Adapt a user's njit function (``f(x)`` or ``f(x, data, index)``) to LOGP_SIGNATURE."""
    if with_data:
        @numba.njit(error_model="numpy")
        def adapted(position, data, index):
            logp, gradient = function(position, data, index)
            return float(logp), np.ascontiguousarray(gradient)
    else:
        @numba.njit(error_model="numpy")
        def adapted(position, data, index):
            logp, gradient = function(position)
            return float(logp), np.ascontiguousarray(gradient)
    return _user_log_density(adapted, with_data)


def _user_log_density(kernel, with_data: bool) -> LogDensity:
    """LogDensity(kernel), or an EngineInputError naming the signature a user's function must have."""
    try:
        return LogDensity(kernel)
    except Exception as error:  # TypingError, or a lowering error (float("a")): the user's code
        form = "(position, data, index)" if with_data else "(position)"
        raise EngineInputError(
            f"logp_and_grad{form} must return (float, float64 gradient array) for float64 input: "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from None


# A user's density is called through a function pointer, which cannot carry an exception (one
# raised there used to kill the process) and whose gradient the kernels write without bounds
# checks. So sample() wraps it in a *guarded* adapter that never raises and always returns a
# gradient of the position's length, and reports what went wrong in STATUS_SLOTS int64 slots
# appended to the chain's own copy of ``index``: [code, detail, iteration]. The chain kernel
# writes the iteration and stops when the code is set (engine.validate.density_failure_message).
STATUS_SLOTS = 3
DENSITY_RAISED, DENSITY_GRADIENT_LENGTH, DENSITY_NAN, DENSITY_GRADIENT_NOT_FINITE = 1, 2, 3, 4


def guarded_density(function, with_data: bool) -> LogDensity:
    """A never-raising LogDensity over a user's njit function (see STATUS_SLOTS)."""
    if with_data:
        @numba.njit(error_model="numpy")
        def call(position, data, index):
            return function(position, data, index)
    else:
        @numba.njit(error_model="numpy")
        def call(position, data, index):
            return function(position)

    @numba.njit(error_model="numpy")
    def guarded(position, data, index):
        slot = index.shape[0] - STATUS_SLOTS
        d = position.shape[0]
        if index[slot] != 0:  # failed before: never call it again
            return np.nan, np.zeros(d)
        try:
            raw_logp, raw_gradient = call(position, data, index[:slot])
            logp = float(raw_logp)
            gradient = np.ascontiguousarray(raw_gradient)
        except Exception:
            index[slot] = DENSITY_RAISED
            return np.nan, np.zeros(d)
        if gradient.shape[0] != d:
            index[slot] = DENSITY_GRADIENT_LENGTH
            index[slot + 1] = gradient.shape[0]
            return np.nan, np.zeros(d)
        if math.isnan(logp) or logp == np.inf:
            index[slot] = DENSITY_NAN
            return np.nan, np.zeros(d)
        if logp > -np.inf:
            for i in range(d):
                if not math.isfinite(gradient[i]):
                    index[slot] = DENSITY_GRADIENT_NOT_FINITE
                    index[slot + 1] = i
                    return np.nan, np.zeros(d)
        return logp, gradient

    return _user_log_density(guarded, with_data)


STAT_NAMES = ("stepsize", "treedepth", "n_leapfrog", "divergent", "energy", "accept_stat", "lp")

# status codes returned by the chain kernel
OK = 0
STEP_SIZE_SEARCH_FAILED = 1
DENSITY_FAILED = 2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def run_chain(logp_and_grad, args, rng, initial_position, n_iter, n_warmup, adapt_delta,
              max_treedepth, is_dense, window_first, window_last, step_size, workspace, status_slot=-1):
    """Warm-up and sampling of one chain.

    Returns (status, positions (n_iter, d), stats (n_iter, 7) in STAT_NAMES order, final step
    size, final metric). Warm-up iterations are included in the outputs (the caller drops them).
    ``status_slot`` >= 0: a guarded density's status slot in ``args[1]`` (see STATUS_SLOTS); the
    kernel records the iteration there and stops with DENSITY_FAILED once it is set.
    """
    dimension = initial_position.shape[0]
    metric = EuclideanMetric(np.ones(dimension), np.eye(dimension), np.eye(dimension), is_dense)
    position = initial_position.copy()
    logp, gradient = logp_and_grad(position, *args)
    positions = np.empty((n_iter, dimension))
    stats = np.zeros((n_iter, 7))
    # Stan sets mu from the user's step size before the heuristic runs
    mu = math.log(10.0 * step_size)
    step_size = initial_step_size(logp_and_grad, args, rng, position, logp, gradient, step_size, metric)
    if status_slot >= 0 and args[1][status_slot] != 0:
        return DENSITY_FAILED, positions, stats, step_size, metric
    if step_size < 0.0:
        return STEP_SIZE_SEARCH_FAILED, positions, stats, step_size, metric
    dual_state = np.zeros(3)
    welford_count = np.int64(0)  # np.int64, not a literal 0: welford_update would also compile for Literal[int](0)
    welford_mean = np.zeros(dimension)
    welford_m2 = np.zeros((dimension, dimension)) if is_dense else np.zeros((1, dimension))
    window = 0
    n_windows = window_first.shape[0]
    for iteration in range(n_iter):
        if status_slot >= 0:
            args[1][status_slot + 2] = iteration
        sample_logp, accept_stat, n_leapfrog, depth, divergent, energy = nuts_transition(
            logp_and_grad, args, rng, position, logp, gradient, step_size, metric, max_treedepth, workspace
        )
        if status_slot >= 0 and args[1][status_slot] != 0:
            return DENSITY_FAILED, positions, stats, step_size, metric
        position = workspace.sample_position.copy()
        gradient = workspace.sample_gradient.copy()
        logp = sample_logp
        positions[iteration] = position
        stats[iteration, 0] = step_size
        stats[iteration, 1] = depth
        stats[iteration, 2] = n_leapfrog
        stats[iteration, 3] = 1.0 if divergent else 0.0
        stats[iteration, 4] = energy
        stats[iteration, 5] = accept_stat
        stats[iteration, 6] = logp
        if iteration < n_warmup:
            step_size = dual_averaging_update(dual_state, accept_stat, adapt_delta, mu)
            if window < n_windows and iteration >= window_first[window]:
                welford_count = welford_update(welford_count, welford_mean, welford_m2, position, is_dense)
                if iteration == window_last[window]:
                    metric = regularised_metric(welford_count, welford_m2, is_dense, dimension)
                    welford_count = np.int64(0)
                    welford_mean[:] = 0.0
                    welford_m2[:] = 0.0
                    window += 1
                    step_size = initial_step_size(
                        logp_and_grad, args, rng, position, logp, gradient, step_size, metric
                    )
                    if status_slot >= 0 and args[1][status_slot] != 0:
                        return DENSITY_FAILED, positions, stats, step_size, metric
                    if step_size < 0.0:
                        return STEP_SIZE_SEARCH_FAILED, positions, stats, step_size, metric
                    mu = math.log(10.0 * step_size)
                    dual_averaging_restart(dual_state)
            if iteration == n_warmup - 1:
                step_size = math.exp(dual_state[2])
    return OK, positions, stats, step_size, metric


@dataclass
class NUTSResult:
    """Draws and sampler statistics of a NUTS run.

    draws: (chains, draws, dim); stats: name -> (chains, draws) for STAT_NAMES; warmup_stats the same
    over warm-up iterations; step_size (chains,); inverse_metric (chains, dim) or (chains, dim, dim);
    e_bfmi (chains,).
    """

    draws: np.ndarray
    stats: dict
    warmup_stats: dict
    step_size: np.ndarray
    inverse_metric: np.ndarray
    e_bfmi: np.ndarray
    parameter_names: list = field(default_factory=list)

    @property
    def n_divergent(self) -> int:
        return int(self.stats["divergent"].sum())

    def gradient_evaluations(self) -> int:
        """Leapfrog steps (one gradient each) over warm-up and sampling, all chains."""
        return int(self.stats["n_leapfrog"].sum() + self.warmup_stats["n_leapfrog"].sum())

    def summary(self):
        """mean, sd, quantiles, MCSE, R-hat, bulk and tail ESS per parameter (a DataFrame)."""
        import pandas as pd

        from engine import diagnostics

        rows = []
        for j, name in enumerate(self.parameter_names):
            x = self.draws[:, :, j]
            rows.append({
                "parameter": name,
                "mean": x.mean(),
                "sd": x.std(ddof=1),
                "q5": np.quantile(x, 0.05),
                "q50": np.quantile(x, 0.5),
                "q95": np.quantile(x, 0.95),
                "mcse_mean": diagnostics.mcse_mean(x),
                "rhat": diagnostics.rhat(x),
                "ess_bulk": diagnostics.ess_bulk(x),
                "ess_tail": diagnostics.ess_tail(x),
            })
        return pd.DataFrame(rows).set_index("parameter")


def e_bfmi(energy: np.ndarray) -> float:
    """Energy Bayesian fraction of missing information of one chain's energies."""
    energy = np.asarray(energy, dtype=float)
    if energy.size < 2:
        return float("nan")
    denominator = np.sum((energy - energy.mean()) ** 2)
    return float(np.sum(np.diff(energy) ** 2) / denominator) if denominator > 0 else float("nan")


def _is_numba_function(function) -> bool:
    return isinstance(function, numba.core.registry.CPUDispatcher)


def run_one_chain(logp_and_grad, args, seed, initial_position, n_iter, n_warmup, adapt_delta,
                  max_treedepth, is_dense, step_size=1.0, trace_capacity=0, guarded=False):
    """``logp_and_grad``: a LogDensity; ``args``: (data float64 (m,), index int64 (k,))."""
    """One chain from a SeedSequence; returns the kernel's outputs (status, positions, stats, ε, metric)
    and, for a guarded density (``guarded``), its status slots [code, detail, iteration]."""
    status_slot = -1
    if guarded:  # this chain's own status slots, after a copy of the user's index
        args = (args[0], np.concatenate([args[1], np.array([0, 0, -1], dtype=np.int64)]))
        status_slot = args[1].shape[0] - STATUS_SLOTS
    rng = np.random.Generator(np.random.PCG64(seed))
    windows = adaptation_windows(n_warmup)
    first = np.array([w[0] for w in windows], dtype=np.int64)
    last = np.array([w[1] for w in windows], dtype=np.int64)
    workspace = make_workspace(initial_position.shape[0], max_treedepth, trace_capacity)
    out = run_chain(logp_and_grad, args, rng, np.ascontiguousarray(initial_position, dtype=np.float64),
                    int(n_iter), int(n_warmup), float(adapt_delta), int(max_treedepth), bool(is_dense),
                    first, last, float(step_size), workspace, status_slot)
    if guarded:
        return out + (args[1][status_slot:].copy(),)
    return out


def validate_options(iter, warmup, adapt_delta, max_treedepth, metric, chains=1):
    if not isinstance(chains, (int, np.integer)) or chains < 1:
        raise EngineInputError(f"chains must be a positive integer, got {chains!r}")
    if not isinstance(iter, (int, np.integer)) or iter < 1:
        raise EngineInputError(f"iter must be a positive integer, got {iter!r}")
    if not isinstance(warmup, (int, np.integer)) or warmup < 0 or warmup >= iter:
        raise EngineInputError(f"warmup must be an integer in [0, iter), got warmup={warmup!r}, iter={iter!r}")
    if isinstance(adapt_delta, (str, bytes, bool)) or not isinstance(adapt_delta, (int, float, np.number)) \
            or not (0.0 < float(adapt_delta) < 1.0):
        raise EngineInputError(f"adapt_delta must lie in (0, 1), got {adapt_delta!r}")
    if not isinstance(max_treedepth, (int, np.integer)) or not (1 <= max_treedepth <= 30):
        raise EngineInputError(f"max_treedepth must be an integer in 1..30, got {max_treedepth!r}")
    if metric not in ("diag", "dense"):
        raise EngineInputError(f"metric must be 'diag' or 'dense', got {metric!r}")


def convergence_warnings(divergent: np.ndarray, treedepth: np.ndarray, max_treedepth: int,
                         e_bfmi_values: np.ndarray) -> None:
    """Stan's post-sampling warnings (divergences, max tree depth, low E-BFMI)."""
    n_div = int(np.sum(divergent))
    if n_div:
        warn_user(
            f"There were {n_div} divergent transitions after warmup. Increasing adapt_delta above "
            "its current value may help (or reparameterise the model).",
            ConvergenceWarning)
    n_hit = int(np.sum(treedepth >= max_treedepth))
    if n_hit:
        warn_user(
            f"There were {n_hit} transitions after warmup that exceeded the maximum treedepth "
            f"({max_treedepth}). Increase max_treedepth above {max_treedepth}.",
            ConvergenceWarning)
    low = [i + 1 for i, v in enumerate(e_bfmi_values) if np.isfinite(v) and v < 0.3]
    if low:
        warn_user(f"E-BFMI below 0.3 in chain(s) {low}: the energy distribution is poorly explored.",
                  ConvergenceWarning)


@checked_arguments
def sample(logp_and_grad, initial_position, chains=4, iter=2000, warmup=1000, seed=None,
           adapt_delta=0.8, max_treedepth=10, metric="diag", executor=None, data=None, index=None,
           parameter_names=None, step_size=1.0) -> NUTSResult:
    """Sample with NUTS and Stan's warm-up.

    Parameters
    ----------
    logp_and_grad : numba.njit function ``(position (d,)) -> (float, gradient (d,))``, or
        ``(position, data, index)`` when ``data`` (float64 1-D) or ``index`` (int64 1-D) is given,
        or a LogDensity.
    initial_position : (d,) (all chains) or (chains, d).
    iter, warmup : iterations per chain including warm-up, and warm-up (draws kept: iter − warmup).
    seed : int, SeedSequence or None; chain c uses ``child_seeds(seed, chains)[c]``.
    metric : "diag" (Stan's default) or "dense".
    executor : a concurrent.futures.Executor for the chains (default: local threads).
    """
    validate_options(iter, warmup, adapt_delta, max_treedepth, metric, chains)
    check_seed(seed, where="nuts.sample")
    with_data = data is not None or index is not None
    data = NO_DATA if data is None else as_array(data, np.float64, "data").reshape(-1)
    if index is not None:  # never truncate silently: 1.5 is not an index
        raw = np.asarray(index)
        integral = raw.dtype.kind in "iu" or (
            raw.dtype.kind == "f" and bool(np.all(np.isfinite(raw))) and bool(np.all(raw == np.round(raw))))
        if not integral:
            raise EngineInputError(f"index must hold integers (an int64 1-D array); got dtype {raw.dtype}")
    index = NO_INDEX if index is None else as_array(index, np.int64, "index").reshape(-1)
    args = (data, index)
    if isinstance(logp_and_grad, LogDensity):
        user_density = logp_and_grad
        guarded = getattr(logp_and_grad, "_guarded", None)
        if guarded is None:  # compiled once per LogDensity
            guarded = logp_and_grad._guarded = guarded_density(logp_and_grad.dispatcher, True)
    else:
        if not _is_numba_function(logp_and_grad):
            raise EngineInputError("logp_and_grad must be a numba.njit-compiled function returning (logp, grad)")
        user_density = log_density(logp_and_grad, with_data)
        guarded = guarded_density(logp_and_grad, with_data)
    logp_and_grad = user_density
    init = as_array(initial_position, np.float64, "initial_position")
    if init.ndim == 1:
        init = np.broadcast_to(init, (chains, init.shape[0]))
    if init.ndim != 2 or init.shape[0] != chains or init.shape[1] < 1:
        raise EngineInputError(
            f"initial_position must have shape (d,) or (chains, d); got {np.shape(initial_position)}")
    if not np.all(np.isfinite(init)):
        raise EngineInputError("initial_position has non-finite values")
    dimension = init.shape[1]
    for c in range(chains):
        try:
            logp0, grad0 = logp_and_grad(np.ascontiguousarray(init[c]), *args)
        except Exception as error:  # checked here, in Python, where an exception can propagate
            raise EngineInputError(
                f"logp_and_grad failed at the initial position of chain {c + 1} (dimension {dimension}): {error}"
            ) from None
        grad0 = np.asarray(grad0)
        if grad0.shape != (dimension,):
            raise EngineInputError(
                f"logp_and_grad returned a gradient of shape {grad0.shape}, expected ({dimension},)")
        if not (np.isfinite(logp0) and np.all(np.isfinite(grad0))):
            raise SamplerError(f"log density or gradient not finite at the initial position of chain {c + 1}")
    if parameter_names is None:
        parameter_names = [f"x[{i}]" for i in range(dimension)]
    seeds = child_seeds(seed, chains)
    tasks = [(guarded, args, seeds[c], np.ascontiguousarray(init[c]), iter, warmup, adapt_delta,
              max_treedepth, metric == "dense", step_size, 0, True) for c in range(chains)]
    outputs = run_tasks(run_one_chain, tasks, executor=executor)
    for c, out in enumerate(outputs):
        if out[0] == DENSITY_FAILED:
            cls = CallbackError if int(out[5][0]) == DENSITY_RAISED else SamplerError
            raise cls(_density_failure(c, out[5], warmup, dimension))
    return assemble_result(outputs, warmup, max_treedepth, metric == "dense", list(parameter_names))


def _density_failure(chain: int, status: np.ndarray, warmup: int, dimension: int) -> str:
    """The message for a guarded density's status slots [code, detail, iteration] (0-based)."""
    code, detail, iteration = (int(v) for v in status)
    if iteration < 0:
        when = "in the initial step-size search"
    elif iteration < warmup:
        when = f"at warm-up iteration {iteration + 1}"
    else:
        when = f"at iteration {iteration + 1} (sampling iteration {iteration - warmup + 1})"
    what = {
        DENSITY_RAISED: "raised an exception",
        DENSITY_GRADIENT_LENGTH: f"returned a gradient of length {detail}, expected {dimension}",
        DENSITY_NAN: "returned a log density of NaN or +inf (return -inf outside the support)",
        DENSITY_GRADIENT_NOT_FINITE: f"returned a non-finite gradient (element {detail}) with a finite log density",
    }.get(code, f"failed (status {code})")
    return f"chain {chain + 1}: logp_and_grad {what} {when}; sampling stopped"


def assemble_result(outputs, warmup, max_treedepth, is_dense, parameter_names) -> NUTSResult:
    """Stack per-chain kernel outputs into a NUTSResult, raising on failure and warning as Stan."""
    for c, out in enumerate(outputs):
        if out[0] == STEP_SIZE_SEARCH_FAILED:
            raise SamplerError(
                f"chain {c + 1}: the step-size search left (0, 1e7); the posterior may be improper "
                "or the log density / gradient wrong")
    draws = np.stack([out[1][warmup:] for out in outputs])
    all_stats = np.stack([out[2] for out in outputs])  # (chains, iter, 7)
    stats = {name: all_stats[:, warmup:, i] for i, name in enumerate(STAT_NAMES)}
    warmup_stats = {name: all_stats[:, :warmup, i] for i, name in enumerate(STAT_NAMES)}
    for name in ("treedepth", "n_leapfrog"):
        stats[name] = stats[name].astype(np.int64)
        warmup_stats[name] = warmup_stats[name].astype(np.int64)
    stats["divergent"] = stats["divergent"].astype(bool)
    warmup_stats["divergent"] = warmup_stats["divergent"].astype(bool)
    step = np.array([out[3] for out in outputs])
    if is_dense:
        inverse_metric = np.stack([out[4].inverse_dense for out in outputs])
    else:
        inverse_metric = np.stack([out[4].inverse_diagonal for out in outputs])
    bfmi = np.array([e_bfmi(stats["energy"][c]) for c in range(len(outputs))])
    convergence_warnings(stats["divergent"], stats["treedepth"], max_treedepth, bfmi)
    return NUTSResult(draws, stats, warmup_stats, step, inverse_metric, bfmi, parameter_names)
