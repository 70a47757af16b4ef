"""Posterior predictive checks and ArviZ export for ``engine.brm`` fits.

- ``pp_check(fit, kind, ndraws)``: brms' ``pp_check`` (bayesplot's ``ppc_dens_overlay``, ``ppc_hist``,
  ``ppc_stat``) as a matplotlib ``Figure`` (built without pyplot, so nothing global changes).
  Defaults as brms 2.18: ``ndraws`` 10 for the overlay and histogram kinds, every draw for ``"stat"``;
  bayesplot's colours (observed ``#011f4b``, replicated ``#b3cde0``). Gabry, Simpson, Vehtari,
  Betancourt & Gelman (2019), "Visualization in Bayesian workflow", JRSS A 182(2).
- ``to_arviz(fit)``: an ArviZ ``InferenceData`` with groups ``posterior`` (chain, draw; one variable
  per brms parameter, and ``r_<group>`` with a level dimension for the random effects, and a
  coefficient dimension for varying slopes),
  ``sample_stats`` (ArviZ's names for Stan's sampler statistics: ``diverging``, ``tree_depth``,
  ``n_steps``, ``energy``, ``step_size``, ``acceptance_rate``), ``log_likelihood`` and
  ``observed_data`` (named after the response), optionally ``posterior_predictive``. ArviZ is an
  optional dependency (``pip install engine[arviz]``).
"""

from __future__ import annotations

import numpy as np

from engine.errors import EngineInputError

__all__ = ["pp_check", "to_arviz", "draw_dens_overlay", "PP_KINDS"]

PP_KINDS = ("dens_overlay", "hist", "stat")
_Y_COLOUR, _YREP_COLOUR = "#011f4b", "#b3cde0"
_STAN_TO_ARVIZ = {
    "divergent": "diverging",
    "treedepth": "tree_depth",
    "n_leapfrog": "n_steps",
    "energy": "energy",
    "stepsize": "step_size",
    "accept_stat": "acceptance_rate",
}


def _stat_function(stat):
    if callable(stat):
        return stat, getattr(stat, "__name__", "stat")
    table = {"mean": np.mean, "sd": lambda v, axis=None: np.std(v, axis=axis, ddof=1), "median": np.median,
             "min": np.min, "max": np.max}
    if stat not in table:
        raise EngineInputError(f"stat must be a function or one of {', '.join(table)}; got {stat!r}")
    return table[stat], stat


def pp_check(fit, kind: str = "dens_overlay", ndraws: int | None = None, stat="mean", newdata=None,
             seed=None, figsize=(6.0, 4.0)):
    """A posterior predictive check of ``fit`` as a matplotlib Figure (see the module docstring)."""
    if kind not in PP_KINDS:
        raise EngineInputError(f"kind must be one of {', '.join(map(repr, PP_KINDS))}; got {kind!r}")
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is an optional extra
        raise ImportError("pp_check needs matplotlib: pip install engine[report]") from None
    from engine.multilevel.predict import _design, log_lik  # noqa: F401  (design check: a clear error first)
    from engine.multilevel.predict import _newdata_response, posterior_predict

    design = _design(fit)
    y = design.y if newdata is None else _newdata_response(design, newdata)
    if ndraws is None and kind != "stat":
        ndraws = 10
    yrep = posterior_predict(fit, newdata, ndraws=ndraws, seed=seed)
    fig = Figure(figsize=figsize)
    if kind == "dens_overlay":
        draw_dens_overlay(fig.subplots(), y, yrep)
    elif kind == "hist":
        panels = [("y", y)] + [("y_rep", row) for row in yrep]
        ncol = int(np.ceil(np.sqrt(len(panels))))
        nrow = int(np.ceil(len(panels) / ncol))
        axes = np.atleast_1d(fig.subplots(nrow, ncol, sharex=True)).ravel()
        bins = np.histogram_bin_edges(np.concatenate([y, yrep.ravel()]), bins=30)
        for ax, (label, values) in zip(axes, panels):
            ax.hist(values, bins=bins, color=_Y_COLOUR if label == "y" else _YREP_COLOUR,
                    edgecolor=_Y_COLOUR if label == "y" else "#6497b1")
            ax.set_title(label, fontsize=8)
            ax.set_yticks([])
        for ax in axes[len(panels):]:
            ax.set_visible(False)
    else:
        fn, name = _stat_function(stat)
        t_rep = np.array([fn(row) for row in yrep])
        t_y = fn(y)
        ax = fig.subplots()
        ax.hist(t_rep, bins=30, color=_YREP_COLOUR, edgecolor="#6497b1", label=f"T = {name}, T(y_rep)")
        ax.axvline(t_y, color=_Y_COLOUR, lw=2, label="T(y)")
        ax.set_yticks([])
        ax.legend(frameon=False)
    fig.suptitle(f"pp_check ({kind})", fontsize=9)
    return fig


def draw_dens_overlay(ax, y: np.ndarray, yrep: np.ndarray) -> None:
    """bayesplot's ``ppc_dens_overlay`` on a matplotlib axis: a kernel density of each row of
    ``yrep`` (ndraws, n) in light blue and of ``y`` (n,) in dark blue. For a discrete response with
    few values (at most 20 distinct whole numbers, e.g. bernoulli's 0/1) a density is misleading;
    bayesplot's ``ppc_bars`` is drawn instead: bars of the observed counts per value, the median and
    the 5-95 % range of the replicated counts as points and lines."""
    y = np.asarray(y, dtype=np.float64)
    yrep = np.asarray(yrep, dtype=np.float64)
    values = np.unique(np.concatenate([y, yrep.ravel()]))
    if values.size <= 20 and np.all(values == np.round(values)):
        counts = np.array([[np.sum(row == v) for v in values] for row in yrep])
        ax.bar(values, [np.sum(y == v) for v in values], color=_YREP_COLOUR, edgecolor="#6497b1", label="y")
        lo, mid, hi = np.quantile(counts, [0.05, 0.5, 0.95], axis=0)
        ax.vlines(values, lo, hi, color=_Y_COLOUR, lw=1.5)
        ax.plot(values, mid, "o", color=_Y_COLOUR, label="y_rep (median, 90 %)")
        ax.set_xticks(values)
        ax.legend(frameon=False)
        return
    from scipy.stats import gaussian_kde

    grid = np.linspace(min(y.min(), yrep.min()), max(y.max(), yrep.max()), 512)
    for row in yrep:
        ax.plot(grid, gaussian_kde(row)(grid), color=_YREP_COLOUR, lw=0.7, label="_yrep")
    ax.plot(grid, gaussian_kde(y)(grid), color=_Y_COLOUR, lw=1.5, label="y")
    ax.plot([], [], color=_YREP_COLOUR, label="y_rep")
    ax.set_yticks([])
    ax.legend(frameon=False)


def to_arviz(fit, posterior_predictive: bool = False, seed=None):
    """The fit as an ArviZ InferenceData (see the module docstring)."""
    try:
        import arviz as az
    except ImportError:
        raise ImportError("to_arviz needs ArviZ: pip install engine[arviz]") from None
    draws = fit.draws_values
    posterior = {name: draws[:, :, j] for j, name in enumerate(fit.parameter_names)}
    coords, dims = {}, {}
    ranef = fit.ranef_values
    from engine.multilevel.predict import _RANEF

    index = {}
    for j, name in enumerate(fit.ranef_names):
        m = _RANEF.match(name)
        if m:
            index[(m["group"], m["level"], m["coef"])] = j
    for group in fit.groups:
        key = f"r_{group.name}"
        dim = f"{group.name}__level"
        levels = [str(level) for level in group.levels]
        coefs = list(dict.fromkeys(c for (g, _l, c) in index if g == group.name))
        cols = np.array([[index[(group.name, lev, c)] for c in coefs] for lev in levels], dtype=np.int64)
        coords[dim] = list(group.levels)
        if coefs == ["Intercept"]:  # a random intercept: (chain, draw, level)
            posterior[key] = ranef[:, :, cols[:, 0]]
            dims[key] = [dim]
        else:  # varying slopes: (chain, draw, level, coefficient)
            posterior[key] = ranef[:, :, cols]
            coords[f"{group.name}__coef"] = coefs
            dims[key] = [dim, f"{group.name}__coef"]
    stats = {}
    for name, values in fit.stats.items():
        values = np.asarray(values)
        if values.shape[:2] != draws.shape[:2]:
            continue
        new = _STAN_TO_ARVIZ.get(name, name)
        stats[new] = values.astype(bool) if new == "diverging" else values
    kwargs = {"posterior": posterior, "coords": coords, "dims": dims}
    if stats:
        kwargs["sample_stats"] = stats
    design = getattr(fit, "design", None)
    if design is not None:
        response = fit.formula.split("~", 1)[0].strip() or "y"
        obs_dim = f"{response}_dim_0"
        kwargs["log_likelihood"] = {response: fit.log_lik(as_array=True)}
        kwargs["observed_data"] = {response: design.y}
        dims[response] = [obs_dim]
        if posterior_predictive:
            yrep = fit.posterior_predict(seed=seed).reshape(draws.shape[0], draws.shape[1], -1)
            kwargs["posterior_predictive"] = {response: yrep}
    return az.from_dict(**kwargs)
