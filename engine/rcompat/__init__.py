"""R compatibility: R's language and R's printing, in one place.

**Rule: R's formatting and R's language live here only.** Any code elsewhere in engine that
must read R source, write R source, format a number as R does or lay text out as R prints it
imports it from this package; nothing outside it tokenizes, deparses, or calls ``sprintf`` to
imitate R.

What lives where:

- :mod:`~engine.rcompat.language`: one tokenizer, parser and deparser of R expressions --
  ``tokenize``, ``parse``, ``read_formula`` (the formula grammar, used by ``engine.formula``),
  ``deparse`` / ``deparse_lines`` (R's ``deparse()`` with its line breaking), ``call_lines``
  (a printed ``Call:``), ``r_name`` (backquoted names), ``r_number`` (``as.character`` of a
  double), ``r_string``.
- :mod:`~engine.rcompat.numbers`: ``format()`` of doubles (``formatReal``: ``format_real``,
  ``format_info``, ``encode_real``, ``scientific``, ``format_number``), ``signif``, ``round``
  (``round_half``), ``zapsmall``, ``formatC`` (``format_c``), ``format.pval``,
  ``sprintf("%.nf")`` (``sprintf_fixed``), ``confint``'s percent labels (``format_percent``).
- :mod:`~engine.rcompat.layout`: the 80-column matrix-block printer (``matrix_text``), named
  vectors (``named_vector_text``, ``named_strings_text``), ``print.data.frame``
  (``data_frame_text``).
- :mod:`~engine.rcompat.quantile`: ``quantile(type = 7)`` (``quantile7``, ``quantile7_rows``; its
  interpolation step ``type7_step``).
- :mod:`~engine.rcompat.abbreviate`: R's ``abbreviate()`` (the lme4 correlation labels).
- :mod:`~engine.rcompat.collate`: R's order of strings in an English UTF-8 locale
  (``r_sort_key``: ``sort()`` / ``factor()`` levels).
- Printers, each built only on the modules above: :mod:`~engine.rcompat.print_lm`
  (``print.summary.lm``, ``print.lm``, ``printCoefmat``), :mod:`~engine.rcompat.print_pool`
  (mice's ``print.mipo`` and pooled summaries), :mod:`~engine.rcompat.print_brms` (brms'
  ``print.brmssummary``, its matrices and formula line, ``print.brmsprior``),
  :mod:`~engine.rcompat.print_loo` (loo's ``print.psis_loo``, ``print.waic``,
  ``print.pareto_k_table``).

Every function names the R function and source file it reproduces; tests compare with output
of R 4.2.2 stored in ``tests/fixtures`` beside the R scripts that made it.
"""

from __future__ import annotations

from engine.rcompat.abbreviate import abbreviate
from engine.rcompat.language import (call_lines, deparse, deparse_lines, parse, r_name, r_number, r_string,
                       read_formula, tokenize)
from engine.rcompat.layout import data_frame_text, matrix_text, named_strings_text, named_vector_text
from engine.rcompat.numbers import (DBL_EPSILON, R_DIGITS, R_WIDTH, RealFormat, encode_real, format_c,
                      format_info, format_number, format_percent, format_pval, format_real,
                      round_half,
                      scientific, signif, sprintf_fixed, zapsmall)
from engine.rcompat.print_lm import (SIGNIF_LEGEND, coefmat_text, naprint_omit, print_lm_text, signif_stars,
                       summary_lm_text)
from engine.rcompat.quantile import quantile7, quantile7_rows, type7_step

#: ``parse`` under the name the printers' tests have always used
parse_r = parse

__all__ = [
    "DBL_EPSILON", "R_DIGITS", "R_WIDTH", "RealFormat", "SIGNIF_LEGEND", "abbreviate",
    "call_lines", "coefmat_text", "data_frame_text", "deparse", "deparse_lines", "encode_real",
    "format_c", "format_info", "format_number", "format_percent", "format_pval", "format_real",
    "matrix_text", "named_strings_text", "named_vector_text", "naprint_omit", "parse", "parse_r",
    "print_lm_text", "quantile7", "quantile7_rows", "type7_step", "r_name", "r_number", "r_string",
    "read_formula", "round_half", "scientific", "signif", "signif_stars", "sprintf_fixed",
    "summary_lm_text", "tokenize", "zapsmall",
]
