"""R's ``abbreviate(names.arg, minlength = 4)`` (base/R/abbreviate.R and src/main/character.c
``stripchars``, R 4.2), for ASCII names.

The C routine drops characters from the right end towards the left, never the first character
of the string, in five passes, stopping as soon as the string (not counting interior spaces)
is at most ``minlength`` long: lower-case vowels that end a word; lower-case vowels not
starting a word; lower-case letters that end a word; lower-case letters not starting a word;
then any character not starting a word. Interior spaces are removed at the end (when the result
is still longer than ``minlength``). The R wrapper trims the names, abbreviates the distinct
ones, and while two abbreviations coincide raises ``minlength`` by one for the duplicated ones
(``method = "left.kept"``).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["abbreviate"]


def _strip_chars(text: str, minlength: int, use_classes: bool) -> str:
    """R's ``stripchars``: one name shortened towards ``minlength`` characters."""
    s = list(text)
    nspace = 0

    def short_enough() -> bool:
        return len(s) - nspace <= minlength

    def first_of_word(i: int) -> bool:
        return s[i - 1].isspace()

    def last_of_word(i: int) -> bool:
        return not s[i - 1].isspace() and (i + 1 >= len(s) or s[i + 1].isspace())

    def vowel(i: int) -> bool:
        return s[i] in "aeiou"

    def lower(i: int) -> bool:
        return "a" <= s[i] <= "z"

    def drop_pass(rule) -> bool:
        for i in range(len(s) - 1, 0, -1):
            if i < len(s) and rule(i):
                del s[i]
            if short_enough():
                return True
        return False

    if len(s) >= minlength:
        done = False
        trailing = True
        for i in range(len(s) - 1, 0, -1):  # trailing spaces dropped, interior ones counted
            if s[i].isspace():
                if trailing:
                    del s[i:]
                else:
                    nspace += 1
            else:
                trailing = False
            if short_enough():
                done = True
                break
        if not done and use_classes:
            done = (drop_pass(lambda i: vowel(i) and last_of_word(i))
                    or drop_pass(lambda i: vowel(i) and not first_of_word(i))
                    or drop_pass(lambda i: lower(i) and last_of_word(i))
                    or drop_pass(lambda i: lower(i) and not first_of_word(i)))
        if not done:
            drop_pass(lambda i: not first_of_word(i) and not s[i].isspace())
    if len(s) > minlength:
        s = [s[0]] + [ch for ch in s[1:] if not ch.isspace()]
    return "".join(s)


def _internal(names: Sequence[str], minlength: int, use_classes: bool) -> list[str]:
    """R's ``.Internal(abbreviate(x, minlength, use.classes))``."""
    return [_strip_chars(n, minlength, use_classes) if len(n) > minlength else n for n in names]


def abbreviate(names: Sequence[str], minlength: int = 4, use_classes: bool = True,
               dot: bool = False, strict: bool = False) -> list[str]:
    """R's ``abbreviate(names, minlength, use.classes, dot, strict)`` (method "left.kept").

    Returns the abbreviations in the order of ``names`` (R's result without its names).
    """
    if minlength <= 0:
        return ["" for _ in names]
    names = [str(n).strip(" ") for n in names]
    distinct = list(dict.fromkeys(names))
    x = list(distinct)
    if strict:
        x = _internal(x, minlength, use_classes)
    else:
        redo = [True] * len(distinct)
        these = list(distinct)
        while True:
            answer = iter(_internal(these, minlength, use_classes))
            x = [next(answer) if r else v for v, r in zip(x, redo)]
            seen: set[str] = set()
            duplicated = []
            for v in x:
                duplicated.append(v in seen)
                seen.add(v)
            if not any(duplicated):
                break
            minlength += 1
            clashing = {v for v, d in zip(x, duplicated) if d}
            redo = [d or v in clashing for v, d in zip(x, duplicated)]
            these = [n for n, r in zip(distinct, redo) if r]
    by_name = dict(zip(distinct, x))
    out = [by_name[n] for n in names]
    if dot:
        out = [a + "." if a != n else a for a, n in zip(out, names)]
    return out
