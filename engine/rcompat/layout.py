"""R's printing of matrices, named vectors and data frames (``width = 80``).

- ``matrix_text``: ``print.default`` of a character matrix with ``quote = FALSE``
  (src/main/printmatrix.c): row names left-justified, each column as wide as its widest entry
  or name, columns that do not fit in the width continue in further blocks below -- a block
  takes columns while the line stays *shorter* than ``width``, so no line reaches 80 characters.
- ``named_vector_text``, ``named_strings_text``: ``print`` of a named numeric / character vector
  (src/main/printvector.c).
- ``data_frame_text``: ``print.data.frame`` (base/R/format.R ``format.data.frame``, then
  ``print.matrix``): every numeric column formatted on its own by ``format()`` (7 digits),
  integer columns as integers, logicals as ``TRUE``/``FALSE``, a missing string as ``<NA>``,
  row names ``1..n``.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from engine.rcompat.numbers import R_DIGITS, R_WIDTH, encode_real, format_info, format_real

__all__ = [
    "data_frame_text",
    "matrix_text",
    "named_strings_text",
    "named_vector_text",
]

def matrix_text(cells: Sequence[Sequence[str]], row_names: Sequence[str],
                col_names: Sequence[str], right: bool = True, width: int = R_WIDTH,
                gap: int = 1) -> str:
    """R's ``print.default`` of a character matrix with ``quote = FALSE``.

    Row names left-justified; each column as wide as its widest entry or name; columns that do
    not fit in ``width`` continue in further blocks below, as R does. Ends with a newline.
    """
    n_rows = len(row_names)
    n_cols = len(col_names)
    # no rows: R's printMatrix takes the width of absent row labels, IndexWidth(r + 1) + 3 = 4
    rlabw = max((len(s) for s in row_names), default=0) if n_rows else 4
    widths = [max([len(col_names[j])] + [len(cells[i][j]) for i in range(n_rows)])
              for j in range(n_cols)]
    lines: list[str] = []
    jmin = 0
    while jmin < n_cols:
        total = rlabw
        jmax = jmin
        while True:
            total += widths[jmax] + gap
            jmax += 1
            if not (jmax < n_cols and total + widths[jmax] + gap < width):
                break
        head = " " * rlabw
        for j in range(jmin, jmax):
            label = col_names[j].rjust(widths[j]) if right else col_names[j].ljust(widths[j])
            head += " " * gap + label
        lines.append(head)
        for i in range(n_rows):
            line = row_names[i].ljust(rlabw)
            for j in range(jmin, jmax):
                cell = cells[i][j]
                line += " " * gap + (cell.rjust(widths[j]) if right else cell.ljust(widths[j]))
            lines.append(line)
        jmin = jmax
    return "\n".join(lines) + "\n"


def _named_fields_text(fields: Sequence[str], names: Sequence[str], width: int, gap: int) -> str:
    """R's layout of a named vector whose entries are already formatted: names right-justified
    over the fields, as many per line as fit in ``width``; every field followed by the gap."""
    w = max([len(s) for s in fields] + [len(s) for s in names])
    per_line = max(1, width // (w + gap))
    out = []
    for start in range(0, len(fields), per_line):
        stop = min(len(fields), start + per_line)
        if start:
            out.append("\n")
        out.append("".join(names[k].rjust(w) + " " * gap for k in range(start, stop)) + "\n")
        out.append("".join(fields[k].rjust(w) + " " * gap for k in range(start, stop)))
    out.append("\n")
    return "".join(out)


def named_vector_text(values: Sequence[float], names: Sequence[str], digits: int = R_DIGITS,
                      width: int = R_WIDTH, gap: int = 1) -> str:
    """R's ``print`` of a named double vector: names right-justified over the values, as many
    per line as fit in ``width``; every field followed by the gap. Ends with a newline."""
    fmt = format_info(values, digits)
    fields = [encode_real(float(v), fmt).rjust(fmt.width) for v in values]
    return _named_fields_text(fields, names, width, gap)



def named_strings_text(values: Sequence[str], names: Sequence[str], width: int = R_WIDTH,
                       gap: int = 1) -> str:
    """R's ``print.default`` of a named character vector with ``quote = FALSE``."""
    return _named_fields_text(list(values), names, width, gap)


def _column_texts(column: pd.Series, digits: int) -> list[str]:
    """``format()`` of one data-frame column, as ``format.data.frame`` calls it."""
    if pd.api.types.is_bool_dtype(column):
        return ["NA" if pd.isna(v) else ("TRUE" if v else "FALSE") for v in column]
    if pd.api.types.is_integer_dtype(column):
        texts = ["NA" if pd.isna(v) else str(int(v)) for v in column]
        width = max((len(t) for t in texts), default=0)
        return [t.rjust(width) for t in texts]
    if pd.api.types.is_numeric_dtype(column):
        return format_real(column.to_numpy(dtype=float), digits)
    return ["<NA>" if pd.isna(v) else str(v) for v in column]


def data_frame_text(frame: pd.DataFrame, digits: int = R_DIGITS, width: int = R_WIDTH,
                    row_names: bool = True) -> str:
    """A DataFrame as R's ``print.data.frame(x, row.names = row_names)`` prints it (row names
    1..n, or none: every line then starts with the column gap); no trailing newline."""
    cells_by_column = [_column_texts(frame[name], digits) for name in frame.columns]
    n_rows = len(frame)
    cells = [[column[i] for column in cells_by_column] for i in range(n_rows)]
    labels = [str(i + 1) if row_names else "" for i in range(n_rows)]
    return matrix_text(cells, labels, [str(name) for name in frame.columns], width=width)[:-1]
