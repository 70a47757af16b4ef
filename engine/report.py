"""A self-contained HTML report of an analysis: tables as printed, figures embedded as PNG.

Figures need matplotlib (``pip install 'engine[report]'``); without it the page carries every
table and says how to get the figures. The page has no external references (no scripts, fonts
or images fetched), so it can be mailed or archived as one file.

Inputs are plain numbers (see :class:`ReportContent`), so the report does not depend on how the
results were computed.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

FIGURE_NOTE = (
    "Figures need matplotlib: install it with <code>pip install 'engine[report]'</code> "
    "(or <code>pip install matplotlib</code>) and run the command again."
)


@dataclass
class BayesTrace:
    """Posterior draws of one Bayesian fit for trace and rank plots.

    draws: array (chains, draws, parameters); names: the parameter names (length = parameters).
    """

    title: str
    draws: np.ndarray
    names: Sequence[str]


@dataclass
class ImputationTrace:
    """Convergence and distributions of one imputation run.

    chain_means / chain_vars: {column: array (iterations, m)}; observed: {column: 1-D array of the
    observed values}; imputed: {column: list of m 1-D arrays of the imputed values}.
    """

    title: str
    chain_means: dict
    chain_vars: dict
    observed: dict
    imputed: dict


@dataclass
class PosteriorCheck:
    """A posterior predictive check and the PSIS-LOO table of one Bayesian fit.

    y: the observed response (n,); yrep: posterior predictive draws (ndraws, n) of the same rows;
    loo_text: the LOO result as printed (engine.loo; for brm_multiple its per-imputation table and
    the Rubin's-rules combination).
    """

    title: str
    y: np.ndarray
    yrep: np.ndarray
    loo_text: str


@dataclass
class ReportContent:
    title: str
    intro: str = ""
    effects: list = field(default_factory=list)  # dicts: model, method, estimate, std_error, lower, upper
    tables: list = field(default_factory=list)  # (heading, preformatted text)
    bayes: list = field(default_factory=list)  # BayesTrace
    imputations: list = field(default_factory=list)  # ImputationTrace
    checks: list = field(default_factory=list)  # PosteriorCheck


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure_to_img(fig, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def forest_plot(effects: list):
    """Treatment effect with its 95% interval in every model, one row each (top to bottom)."""
    import matplotlib.pyplot as plt

    labels = [str(e["model"]) for e in effects]
    est = np.array([e["estimate"] for e in effects], dtype=float)
    lo = np.array([e["lower"] for e in effects], dtype=float)
    hi = np.array([e["upper"] for e in effects], dtype=float)
    rows = np.arange(len(effects))[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(effects) + 1.6))
    methods = list(dict.fromkeys(str(e["method"]) for e in effects))
    colours = ["#204a87", "#ce5c00", "#4e9a06", "#75507b", "#a40000"]
    for i, method in enumerate(methods):
        mask = np.array([str(e["method"]) == method for e in effects])
        colour = colours[i % len(colours)]
        ax.hlines(rows[mask], lo[mask], hi[mask], color=colour, lw=2)
        ax.plot(est[mask], rows[mask], "o", color=colour, label=method)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(rows)
    ax.set_yticklabels(labels)
    ax.set_xlabel("effect of the grit intervention on the maths score (SD units), 95% interval")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _parameter_panels(trace: BayesTrace, max_params: int, cols: int = 3):
    """A figure with one panel per parameter (at most ``max_params``); yields (axis, index)."""
    import matplotlib.pyplot as plt

    k = min(len(trace.names), max_params)
    rows = max(int(np.ceil(k / cols)), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.0 * rows), squeeze=False)
    panels = []
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= k:
            ax.axis("off")
            continue
        ax.set_title(trace.names[i], fontsize=9)
        ax.tick_params(labelsize=7)
        panels.append((ax, i))
    return fig, panels


def trace_plot(trace: BayesTrace, max_params: int = 12):
    """Draws against iteration, one panel per parameter, one colour per chain."""
    fig, panels = _parameter_panels(trace, max_params)
    for ax, i in panels:
        for c in range(trace.draws.shape[0]):
            ax.plot(trace.draws[c, :, i], lw=0.4, alpha=0.7)
    fig.tight_layout()
    return fig


def rank_plot(trace: BayesTrace, max_params: int = 12, bins: int = 20):
    """Rank histograms per chain (Vehtari et al. 2021): flat when the chains mix."""
    chains, draws, _ = trace.draws.shape
    fig, panels = _parameter_panels(trace, max_params)
    edges = np.linspace(0, chains * draws, bins + 1)
    for ax, i in panels:
        flat = trace.draws[:, :, i].reshape(-1)
        ranks = np.argsort(np.argsort(flat, kind="mergesort"), kind="mergesort").reshape(chains, draws)
        for c in range(chains):
            counts, _ = np.histogram(ranks[c], bins=edges)
            ax.step(np.arange(bins), counts, where="mid", lw=0.9)
        ax.axhline(draws / bins, color="grey", lw=0.8, ls="--")
    fig.tight_layout()
    return fig


def ppc_plot(check: PosteriorCheck):
    """The observed response against posterior predictive draws (engine.multilevel.ppcheck's
    density overlay, or bars for a response with few values)."""
    import matplotlib.pyplot as plt

    from engine.multilevel.ppcheck import draw_dens_overlay

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    draw_dens_overlay(ax, check.y, check.yrep)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def convergence_plot(trace: ImputationTrace, max_columns: int = 8):
    """Mean and SD of the imputed values per sweep, one line per imputation (as mice's plot())."""
    import matplotlib.pyplot as plt

    names = list(trace.chain_means)[:max_columns]
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 1.9 * len(names) + 0.5), squeeze=False)
    for r, name in enumerate(names):
        means = np.asarray(trace.chain_means[name], dtype=float)
        sds = np.sqrt(np.asarray(trace.chain_vars[name], dtype=float))
        iterations = np.arange(1, means.shape[0] + 1)
        for j in range(means.shape[1]):
            axes[r][0].plot(iterations, means[:, j], lw=1)
            axes[r][1].plot(iterations, sds[:, j], lw=1)
        axes[r][0].set_ylabel(name, fontsize=8)
        axes[r][0].set_title("mean" if r == 0 else "", fontsize=9)
        axes[r][1].set_title("sd" if r == 0 else "", fontsize=9)
        for ax in axes[r]:
            ax.tick_params(labelsize=7)
    axes[-1][0].set_xlabel("iteration")
    axes[-1][1].set_xlabel("iteration")
    fig.tight_layout()
    return fig


def distribution_plot(trace: ImputationTrace, max_columns: int = 6):
    """Observed (black) against imputed (colour, one per imputation) densities, as mice's densityplot."""
    import matplotlib.pyplot as plt

    names = [n for n in trace.observed if n in trace.imputed][:max_columns]
    cols = min(3, max(len(names), 1))
    rows = int(np.ceil(len(names) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.6 * rows), squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= len(names):
            ax.axis("off")
            continue
        name = names[i]
        observed = np.asarray(trace.observed[name], dtype=float)
        everything = np.concatenate([observed] + [np.asarray(v, dtype=float) for v in trace.imputed[name]])
        edges = np.histogram_bin_edges(everything, bins=30)
        ax.hist(observed, bins=edges, density=True, histtype="step", color="black", lw=1.5, label="observed")
        for j, values in enumerate(trace.imputed[name]):
            ax.hist(np.asarray(values, dtype=float), bins=edges, density=True, histtype="step", lw=0.9,
                    label="imputed" if j == 0 else None)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-bottom:.3em}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:.8em;overflow-x:auto;font-size:12.5px;line-height:1.3}
table.effects{border-collapse:collapse;margin:1em 0;font-size:14px}
table.effects th,table.effects td{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:right}
table.effects th:first-child,table.effects td:first-child,table.effects th:nth-child(2),table.effects td:nth-child(2){text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em}
nav ul{columns:2}
"""


def _effects_table(effects: list) -> str:
    head = "<tr><th>model</th><th>method</th><th>estimate</th><th>SE / posterior SD</th><th>2.5 %</th><th>97.5 %</th></tr>"
    rows = []
    for e in effects:
        rows.append(
            "<tr>" + f"<td>{html.escape(str(e['model']))}</td><td>{html.escape(str(e['method']))}</td>"
            + "".join(f"<td>{e[k]:.4f}</td>" for k in ("estimate", "std_error", "lower", "upper")) + "</tr>"
        )
    return f'<table class="effects" id="treatment-effects">{head}{"".join(rows)}</table>'


def render_html(content: ReportContent, with_figures: bool | None = None) -> str:
    """The report as one HTML string; ``with_figures=None`` draws figures when matplotlib is there."""
    if with_figures is None:
        with_figures = _have_matplotlib()
    if with_figures:
        import matplotlib

        matplotlib.use("Agg", force=True)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(content.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(content.title)}</h1>",
    ]
    if content.intro:
        parts.append(f"<p>{content.intro}</p>")
    if not with_figures:
        parts.append(f'<p class="note" id="no-figures">{FIGURE_NOTE}</p>')
    sections = [("effects", "Treatment effect across models")]
    if content.bayes:
        sections.append(("bayes", "Bayesian fits: traces and ranks"))
    if content.checks:
        sections.append(("checks", "Bayesian fits: posterior predictive checks and LOO"))
    if content.imputations:
        sections.append(("imputation", "Imputation diagnostics"))
    sections.append(("tables", "Every table"))
    parts.append("<nav><ul>" + "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in sections) + "</ul></nav>")

    parts.append('<h2 id="effects">Treatment effect across models</h2>')
    parts.append(_effects_table(content.effects))
    if with_figures and content.effects:
        parts.append(_figure_to_img(forest_plot(content.effects), "Forest plot: the grit effect in every model"))

    if content.bayes:
        parts.append('<h2 id="bayes">Bayesian fits: traces and ranks</h2>')
        for trace in content.bayes:
            parts.append(f"<h3>{html.escape(trace.title)}</h3>")
            if with_figures:
                parts.append(_figure_to_img(trace_plot(trace), f"Trace plot: {trace.title}"))
                parts.append(_figure_to_img(rank_plot(trace), f"Rank plot: {trace.title}"))
    if content.checks:
        parts.append('<h2 id="checks">Bayesian fits: posterior predictive checks and LOO</h2>')
        for i, check in enumerate(content.checks):
            parts.append(f"<h3>{html.escape(check.title)}</h3>")
            if with_figures:
                parts.append(_figure_to_img(ppc_plot(check), f"Posterior predictive check: {check.title}"))
            parts.append(f'<pre class="loo" id="loo-{i + 1}">{html.escape(check.loo_text)}</pre>')
    if content.imputations:
        parts.append('<h2 id="imputation">Imputation diagnostics</h2>')
        for trace in content.imputations:
            parts.append(f"<h3>{html.escape(trace.title)}</h3>")
            if with_figures:
                parts.append(_figure_to_img(convergence_plot(trace), f"Imputation convergence: {trace.title}"))
                parts.append(_figure_to_img(distribution_plot(trace), f"Observed and imputed values: {trace.title}"))
    parts.append('<h2 id="tables">Every table</h2>')
    for i, (heading, text) in enumerate(content.tables):
        parts.append(f'<h3 id="table-{i + 1}">{html.escape(heading)}</h3><pre>{html.escape(text)}</pre>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(content: ReportContent, directory: str | os.PathLike, filename: str = "index.html",
                 with_figures: bool | None = None) -> str:
    """Write the report into ``directory`` (created if needed); returns the file's path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(os.fspath(directory), filename)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_html(content, with_figures=with_figures))
    return path
