"""R's order of strings: the collation ``sort()``, ``order()`` and ``factor()`` use.

R sorts character vectors with the locale's collation (``Scollate`` in R's
``src/main/util.c``, which calls ICU or the C library's ``strcoll``). Users normally run
R in an English UTF-8 locale; this module reproduces that order for ASCII text.
"""
from __future__ import annotations

import functools

__all__ = ["r_sort_key"]


@functools.lru_cache(maxsize=1 << 16)  # the same group and level labels recur in every refit
def r_sort_key(text: str):
    """Sort key giving R's ``sort()`` of strings in an English UTF-8 locale (ICU / glibc 2.28+
    collation), for ASCII: punctuation and spaces < digits < letters; letters compare
    case-insensitively first, then lower case before upper case (``a < A < b < B``;
    ``1_2 < 10_1``). The C locale would sort by bytes instead; this is the locale R users
    normally run in.

    Returns ``(primary, tertiary)``: tuples to compare with Python's ordering.
    """
    primary = tuple((0, ord(c)) if not c.isalnum() else (1, c) if c.isdigit() else (2, c.casefold())
                    for c in text)
    tertiary = tuple(1 if c.isupper() else 0 for c in text)
    return primary, tertiary
