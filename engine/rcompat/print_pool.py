"""R's printing of pooled multiple-imputation results (mice 3.15).

- ``mipo_text``: ``print.mipo``: ``cat("Class: mipo    m =", m, "\\n")`` then
  ``print.data.frame`` of the ``$pooled`` table.
- ``pooled_summary_text``: ``print`` of ``summary(pool(fit))``, a data frame
  (``print.data.frame``).

Both are :func:`engine.rcompat.layout.data_frame_text` underneath; the numbers (Rubin's rules)
are computed in :mod:`engine.pool`.
"""

from __future__ import annotations

import pandas as pd

from engine.rcompat.layout import data_frame_text

__all__ = ["mipo_text", "pooled_summary_text"]


def mipo_text(pooled: pd.DataFrame, m: int) -> str:
    """The text of ``print(pool(fit))`` (no trailing newline)."""
    return f"Class: mipo    m = {int(m)} \n" + data_frame_text(pooled)


def pooled_summary_text(summary: pd.DataFrame) -> str:
    """The text of ``print(summary(pool(fit), ...))`` (no trailing newline)."""
    return data_frame_text(summary)
