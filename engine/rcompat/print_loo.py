"""R's printing of loo 2.5.1 objects (``R/print.R`` of the loo package).

- ``loo_text``: ``print.psis_loo``: dimensions, the estimates table, the Monte Carlo SE of
  elpd_loo and the Pareto k diagnostic table (``print.pareto_k_table``);
- ``waic_text``: ``print.waic``, with loo's p_waic warning text (``pwaic_message``);
- ``loo_multiple_text``: engine's own summary of a ``brm_multiple`` LOO (brms has none) in the
  same style.

The numbers are computed in :mod:`engine.loo`; this module only formats them (loo's ``.fr``:
``format(round(x, digits), nsmall = digits)``, character matrices printed with ``quote = FALSE``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.rcompat.layout import matrix_text
from engine.rcompat.numbers import format_real

__all__ = ["fr", "estimates_text", "pareto_table_text", "pwaic_message", "loo_text", "waic_text", "loo_multiple_text"]


def fr(values, digits: int = 1) -> list[str]:
    """loo's .fr: format(round(x, digits), nsmall = digits)."""
    return format_real([round(float(v), digits) if np.isfinite(v) else v for v in values], nsmall=digits)


def estimates_text(table: pd.DataFrame, digits: int = 1) -> str:
    """print(.fr(as.data.frame(estimates), digits), quote = FALSE) as loo prints it."""
    cols = [fr(table[col].to_numpy(), digits) for col in table.columns]
    cells = [[cols[j][i] for j in range(len(cols))] for i in range(table.shape[0])]
    return matrix_text(cells, list(table.index), list(table.columns)).rstrip("\n")


def pareto_table_text(table: pd.DataFrame) -> str:
    """loo's print.pareto_k_table: a character matrix printed left-justified, quote = FALSE."""
    names = ["(good)", "(ok)", "(bad)", "(very bad)"]
    count = fr(table["Count"].to_numpy(dtype=float), 0)
    pct = [f"{p}%" for p in fr(100 * table["Proportion"].to_numpy(), 1)]
    neff = ["<NA>" if not np.isfinite(v) else str(int(round(v))) for v in table["Min. n_eff"]]
    cells = [["", names[r], count[r], pct[r], neff[r]] for r in range(4)]
    labels = list(table.index)
    width = max(len(x) for x in labels)
    rows = [lab.rjust(width) for lab in labels]
    return matrix_text(cells, rows, [" ", " ", "Count", "Pct.   ", "Min. n_eff"], right=False).rstrip("\n")


def pwaic_message(p: np.ndarray) -> str | None:
    """loo's warning when some p_waic > 0.4 (None when none is)."""
    bad = p > 0.4
    if not bad.any():
        return None
    count = int(bad.sum())
    return (
        f"\n{count} ({fr([100 * count / bad.size])[0]}%) p_waic estimates greater than 0.4. "
        "We recommend trying loo instead."
    )


def loo_text(result) -> str:
    """The text of ``print(loo(...))`` for an :class:`engine.loo.LooResult`."""
    from engine.loo import K_HELP

    s, n = result.dims
    lines = ["", f"Computed from {s} by {n} log-likelihood matrix", "", estimates_text(result.estimates), "------"]
    lines.append(f"Monte Carlo SE of elpd_loo is {fr([result.mcse_loo()])[0]}.")
    table = result.pareto_k_table()
    counts = table["Count"].to_numpy()
    if counts[1:].sum() == 0:
        lines += ["", "All Pareto k estimates are good (k < 0.5)."]
    else:
        lines += ["", "Pareto k diagnostic values:"]
        lines.append(pareto_table_text(table))
        if counts[2:].sum() == 0:
            lines += ["", "All Pareto k estimates are ok (k < 0.7)."]
    lines.append(K_HELP)
    return "\n".join(lines) + "\n"


def waic_text(result) -> str:
    """The text of ``print(waic(...))`` for an :class:`engine.loo.WaicResult`."""
    s, n = result.dims
    text = f"\nComputed from {s} by {n} log-likelihood matrix\n\n{estimates_text(result.estimates)}\n"
    msg = pwaic_message(result.pointwise["p_waic"].to_numpy())
    return text + (msg + "\n" if msg else "")


def loo_multiple_text(result) -> str:
    """engine's summary of an :class:`engine.loo.LooMultipleResult`: the combined estimates, then
    one row per imputed data set."""
    text = [f"PSIS-LOO of {result.m} imputed data sets (combined by Rubin's rules):", "", estimates_text(result.estimates), ""]
    tab = result.table
    cells = [[*fr(row[:-1], 1), str(int(row[-1]))] for row in tab.to_numpy()]
    text.append("Per imputed data set:")
    text.append(matrix_text(cells, [str(i) for i in tab.index], list(tab.columns)).rstrip("\n"))
    return "\n".join(text) + "\n"
