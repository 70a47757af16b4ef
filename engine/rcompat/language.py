"""R's language: one tokenizer, one parser and one deparser of R expressions.

Everything engine reads or prints as R source goes through this module: model formulas (the
formula layer reads them with :func:`read_formula`), the ``Call:`` line of ``print(lm)``, the
``Formula:`` line of a brms fit, the names of model terms.

- :func:`tokenize`: R's lexer (src/main/gram.y ``token``) for names (plain and backquoted),
  numbers (with ``L`` suffix), strings, and the operators of expressions.
- :func:`parse`: a precedence-climbing parser with R's precedences and associativity (R's
  ``?Syntax``; gram.y): ``<-`` < ``~`` < ``|| |`` < ``&& &`` < ``!`` < comparisons < ``+ -`` <
  ``* /`` < ``%any%`` < ``:`` < unary ``+ -`` < ``^`` < ``$ @`` < ``::`` < calls and indexing.
  The tree is made of the small frozen node classes below, each with the 0-based position of
  its token in the source.
- :func:`read_formula`: a model formula's two sides, checked against the formula grammar
  (``+ - * / %in% : ^``, ``(a | g)`` random-effect bars, ``.``, the functions the formula layer
  evaluates; arithmetic only inside function calls). Errors are ``FormulaError`` s with the
  position of the offending token.
- :func:`deparse`, :func:`deparse_lines`: R's ``deparse()`` (src/main/deparse.c
  ``deparse2buff``): binary operators spaced (PP_BINARY) or tight (PP_BINARY2: ``/ ^ : $ @ ::
  %% %/%``), numbers with 15 significant digits as ``formatReal`` writes them, strings in double
  quotes, non-syntactic names in backquotes (:func:`r_name`), and -- in :func:`deparse_lines`
  -- R's line breaking: once a line is longer than ``width.cutoff`` (60), break after the next
  binary operator or argument comma, continuation lines indented four spaces.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from dataclasses import dataclass, field
from typing import Collection, Sequence

from engine.errors import FormulaError, PrintError, RSyntaxError
from engine.rcompat.numbers import format_number

__all__ = [
    "Bar",
    "BinOp",
    "Call",
    "Const",
    "Dot",
    "Index",
    "Missing",
    "Name",
    "Num",
    "Paren",
    "Str",
    "Token",
    "Unary",
    "call_lines",
    "deparse",
    "deparse_lines",
    "formula_node",
    "parse",
    "r_name",
    "r_number",
    "r_string",
    "read_formula",
    "tokenize",
]

# ----------------------------------------------------------------------------------------------
# names
# ----------------------------------------------------------------------------------------------

_CONSTANTS = frozenset({
    "TRUE", "FALSE", "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_",
})
_RESERVED = frozenset({
    "if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE", "NULL",
    "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "in",
})
# R's isValidName in a UTF-8 locale: a letter, or "." not followed by a digit, then letters,
# digits, "." and "_"
_SYNTACTIC = re.compile(r"(?:[^\W\d_]|\.(?!\d))[\w.]*|\.", re.UNICODE)


#: Python frames allowed while reading, evaluating or writing R's trees: the parser, the formula
#: layer's term algebra and evaluation, and the deparser recurse once per operator of a chain
#: (``a + b + ...``), about two frames a term, so Python's default of 1000 would stop near 450
#: terms where R has no such limit (R 4.2.2 fits ``y ~ x + x + ...`` with 5000 terms). 40000
#: frames reach some 15,000 terms; checked in worker threads too (Python 3.11's Python-to-Python
#: calls use no C stack).
DEEP_RECURSION_LIMIT = 40000


@contextlib.contextmanager
def deep_recursion():
    """Lift Python's recursion limit to :data:`DEEP_RECURSION_LIMIT` for the enclosed tree walk (a
    formula of some 15,000 terms); deeper trees still raise RecursionError, which the callers turn
    into a clear FormulaError. (Python 3.11 runs Python-to-Python calls without C recursion, so
    the higher limit cannot overflow the C stack.)"""
    old = sys.getrecursionlimit()
    if old >= DEEP_RECURSION_LIMIT:
        yield
        return
    sys.setrecursionlimit(DEEP_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def deep_tree_walk(function):
    """Decorator: ``function`` walks formula trees recursively; run it under
    :func:`deep_recursion`, and a tree deeper still is a FormulaError naming the limit (never a
    RecursionError)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            with deep_recursion():
                return function(*args, **kwargs)
        except RecursionError:
            raise FormulaError(
                f"the formula is nested too deeply for {function.__name__}() (engine follows chains of "
                f"some 15,000 terms: {DEEP_RECURSION_LIMIT} Python frames)") from None

    return wrapper


def r_name(name: str) -> str:
    """A symbol as R's ``deparse(backtick = TRUE)`` writes it: as is when syntactic, else in
    backquotes with ``\\`` and ``\\``` escaped (R 4.2: ``deparse(as.name("a\\\\b"))`` is
    ``\\`a\\\\\\\\b\\```)."""
    if _SYNTACTIC.fullmatch(name) and name not in _RESERVED:
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def r_number(value: float) -> str:
    """A double as R's ``deparse()`` / ``as.character()`` writes it: 15 significant digits,
    fixed notation unless scientific is narrower (``formatReal`` with ``digits = 15``)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Inf" if value > 0 else "-Inf"
    return _finite_r_number(float(value))


@functools.lru_cache(maxsize=65536)  # factor(numeric) labels: every refit on the same groups asks again
def _finite_r_number(value: float) -> str:
    # -0.0 shares 0.0's cache entry; both print "0" in R, so the shared entry is right.
    if value.is_integer() and abs(value) < 1e15:
        return _integer_r_number(value)
    return format_number(value, 15)


def _integer_r_number(value: float) -> str:
    """``format_number(value, 15)`` for an integer-valued double below 1e15 in magnitude, without
    its general digit search (grouping ids: 345,000 class labels at 10^7 students took ~40 s
    there): the digits are exact, the significant ones those before the trailing zeros, and R's
    formatReal takes fixed notation unless scientific (d.ddde+XX) is narrower (scipen 0)."""
    i = int(value)
    if i == 0:
        return "0"
    digits = str(abs(i))
    sign = "-" if i < 0 else ""
    significant = digits.rstrip("0")
    exponent = len(digits) - 1
    nsig = len(significant)
    sci_width = (nsig + 1 if nsig > 1 else 1) + (4 if exponent < 100 else 5)
    if len(digits) <= sci_width:
        return sign + digits
    mantissa = significant[0] + ("." + significant[1:] if nsig > 1 else "")
    return f"{sign}{mantissa}e+{exponent:02d}"


_ENCODE = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
           "\b": "\\b", "\f": "\\f", "\v": "\\v", "\0": "\\0"}


def r_string(value: str) -> str:
    """A string as R's ``deparse()`` writes it: in double quotes with R's escapes."""
    out = []
    for ch in value:
        if ch in _ENCODE:
            out.append(_ENCODE[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# ----------------------------------------------------------------------------------------------
# tokens
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One token: kind in {"name", "number", "string", "op", "end"}; ``text`` is the name (escapes
    resolved, without backquotes), the number's or operator's source text, or the string's value."""

    kind: str
    text: str
    pos: int
    quoted: bool = False


_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?")
_NAME = re.compile(r"(?:[^\W\d_]|\.)[\w.]*", re.UNICODE)
_OPERATOR = re.compile(r"%[^%\n]*%|<<-|::|\|\||&&|==|!=|<=|>=|<-|\[\[|[-+*/^:~|&<>!()\[\],=$@{}?]")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "0": "\0", "\\": "\\", '"': '"', "'": "'", "`": "`", " ": " "}


def _quoted(text: str, start: int, quote: str) -> tuple[str, int] | None:
    """The value of the quoted string or name starting at ``start`` and the index after it."""
    out = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x":
                digits = re.match(r"[0-9A-Fa-f]{1,2}", text[i + 2:])
                if digits:
                    out.append(chr(int(digits.group(), 16)))
                    i += 2 + len(digits.group())
                    continue
            if nxt in ("u", "U"):
                digits = re.match(r"\{?([0-9A-Fa-f]{1,8})\}?", text[i + 2:])
                if digits:
                    out.append(chr(int(digits.group(1), 16)))
                    i += 2 + len(digits.group())
                    continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return None


def tokenize(text: str) -> list[Token]:
    """R's tokens of ``text``, ending with an "end" token at ``len(text)``.

    Raises RSyntaxError (a FormulaError) at the position of a character R cannot read.
    """
    if not isinstance(text, str):
        raise RSyntaxError(f"R source must be a string, not {type(text).__name__}")
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "`":
            found = _quoted(text, i, "`")
            if found is None:
                raise RSyntaxError("unterminated backquoted name", text, i)
            if found[1] == i + 2:
                raise RSyntaxError("empty backquoted name", text, i)
            tokens.append(Token("name", found[0], i, quoted=True))
            i = found[1]
            continue
        if ch in "\"'":
            found = _quoted(text, i, ch)
            if found is None:
                raise RSyntaxError("unterminated string", text, i)
            tokens.append(Token("string", found[0], i))
            i = found[1]
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            number = _NUMBER.match(text, i)
            tokens.append(Token("number", number.group(), i))
            i = number.end()
            continue
        name = _NAME.match(text, i)
        if name:
            tokens.append(Token("name", name.group(), i))
            i = name.end()
            continue
        op = _OPERATOR.match(text, i)
        if op:
            tokens.append(Token("op", op.group(), i))
            i = op.end()
            continue
        raise RSyntaxError(f"unexpected character {ch!r}", text, i)
    tokens.append(Token("end", "", n))
    return tokens


# ----------------------------------------------------------------------------------------------
# syntax tree (``pos``: 0-based offset of the node's token in the source)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    """A symbol (``quoted``: written in backquotes, which only the formula's ``.`` cares about)."""

    name: str
    pos: int
    quoted: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Num:
    """A numeric constant: its value and source text (``2L`` is an integer)."""

    value: float
    text: str
    pos: int


@dataclass(frozen=True)
class Str:
    """A string constant (escapes resolved)."""

    value: str
    pos: int


@dataclass(frozen=True)
class Const:
    """One of R's constants written as a word: ``TRUE``, ``FALSE``, ``NULL``, ``NA``, ``Inf`` ..."""

    text: str
    pos: int


@dataclass(frozen=True)
class Dot:
    """The formula's ``.`` (all other columns); :func:`parse` reads ``.`` as a Name."""

    pos: int


@dataclass(frozen=True)
class Missing:
    """An empty argument, as in ``x[, 1]``."""

    pos: int


@dataclass(frozen=True)
class Call:
    """``func(args)``; ``tags`` holds each argument's name or None (empty: no names); ``end``
    is the position of the closing parenthesis."""

    func: str
    args: tuple
    pos: int
    tags: tuple = ()
    end: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class Index:
    """``obj[args]``, or ``obj[[args]]`` when ``double``; ``pos`` is the bracket's position."""

    obj: object
    args: tuple
    pos: int
    tags: tuple = ()
    double: bool = False


@dataclass(frozen=True)
class Paren:
    """``(expr)``; ``end`` is the position of the closing parenthesis."""

    expr: object
    pos: int
    end: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class Unary:
    """A prefix operator: ``-x``, ``+x``, ``!x``, ``~x`` (``pos``: the operator's position;
    R's unary minus binds tighter than ``:`` and looser than ``^``)."""

    op: str
    operand: object
    pos: int


@dataclass(frozen=True)
class BinOp:
    """A binary operator; ``pos`` is the operator's position."""

    op: str
    left: object
    right: object
    pos: int


@dataclass(frozen=True)
class Bar:
    """A formula's random-effect term ``(lhs | rhs)``; ``text`` is its source (empty for a bare
    ``lhs | rhs`` outside parentheses)."""

    lhs: object
    rhs: object
    pos: int
    text: str
    double: bool = False  # "||": uncorrelated random effects (lme4's expandDoubleVerts)


def start(node) -> int:
    """The position of the first character of ``node`` in the source."""
    while isinstance(node, (BinOp, Index)):
        node = node.left if isinstance(node, BinOp) else node.obj
    return node.pos


# ----------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------

# binding powers (left, right) from R's grammar (src/main/gram.y); right < left: right-associative
_BINARY = {
    "<-": (5, 4), "<<-": (5, 4), "~": (10, 11), "||": (20, 21), "|": (20, 21), "&&": (30, 31),
    "&": (30, 31), "==": (50, 51), "!=": (50, 51), "<": (50, 51), ">": (50, 51), "<=": (50, 51),
    ">=": (50, 51), "+": (60, 61), "-": (60, 61), "*": (70, 71), "/": (70, 71), "%": (80, 81),
    ":": (90, 91), "^": (111, 110), "$": (120, 121), "@": (120, 121), "::": (130, 131),
}
_PREFIX = {"-": 100, "+": 100, "!": 40, "~": 10}


class _Parser:
    def __init__(self, text: str, what: str):
        self.text = text
        self.what = what
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.i += 1
        return token

    def error(self, message: str, pos: int):
        raise RSyntaxError(message, self.text, pos)

    def expect(self, op: str) -> Token:
        token = self.peek()
        if not (token.kind == "op" and token.text == op):
            found = f"end of {self.what}" if token.kind == "end" else repr(token.text)
            self.error(f"expected {op!r}, found {found}", token.pos)
        return self.take()

    def whole(self):
        node = self.expr(0)
        token = self.peek()
        if token.kind != "end":
            self.error(f"unexpected {token.text!r}", token.pos)
        return node

    def expr(self, min_power: int):
        token = self.take()
        if token.kind == "end":
            self.error(f"{self.what} ends unexpectedly", token.pos)
        if token.kind == "op" and token.text in _PREFIX:
            left = Unary(token.text, self.expr(_PREFIX[token.text]), token.pos)
        elif token.kind == "op" and token.text == "(":
            inner = self.expr(0)
            close = self.expect(")")
            left = Paren(inner, token.pos, close.pos)
        elif token.kind == "number":
            left = Num(float(token.text.rstrip("L")), token.text, token.pos)
        elif token.kind == "string":
            left = Str(token.text, token.pos)
        elif token.kind == "name" and not token.quoted and token.text in _CONSTANTS:
            left = Const(token.text, token.pos)
        elif token.kind == "name":
            left = Name(token.text, token.pos, token.quoted)
        else:
            self.error(f"unexpected {token.text!r}", token.pos)
        while True:
            token = self.peek()
            if token.kind != "op":
                break
            if token.text == "(" and isinstance(left, Name):
                self.take()
                args, tags, close = self.arguments(")")
                left = Call(left.name, args, left.pos, tags, close)
                continue
            if token.text in ("[", "[["):
                self.take()
                args, tags, _ = self.arguments("]")
                if token.text == "[[":
                    self.expect("]")
                left = Index(left, args, token.pos, tags, token.text == "[[")
                continue
            key = "%" if len(token.text) > 1 and token.text.startswith("%") else token.text
            if key not in _BINARY or _BINARY[key][0] < min_power:
                break
            self.take()
            left = BinOp(token.text, left, self.expr(_BINARY[key][1]), token.pos)
        return left

    def arguments(self, close: str) -> tuple[tuple, tuple, int]:
        args, tags = [], []
        if self.peek().text == close and self.peek().kind == "op":
            return (), (), self.take().pos
        while True:
            tag = None
            token, nxt = self.peek(), self.peek(1)
            if token.kind in ("name", "string") and nxt.kind == "op" and nxt.text == "=":
                tag = token.text
                self.take()
                self.take()
            token = self.peek()
            if token.kind == "op" and token.text in (",", close):
                args.append(Missing(token.pos))
            else:
                args.append(self.expr(0))
            tags.append(tag)
            token = self.take()
            if token.kind == "op" and token.text == close:
                return tuple(args), (tuple(tags) if any(t is not None for t in tags) else ()), token.pos
            if not (token.kind == "op" and token.text == ","):
                found = f"end of {self.what}" if token.kind == "end" else repr(token.text)
                self.error(f"expected ',' or {close!r}, found {found}", token.pos)


def parse(text: str, what: str = "expression"):
    """Parse one R expression into a tree of the node classes above.

    Raises RSyntaxError (a FormulaError; ``what`` names the text in messages) with the position
    of the problem.
    """
    parser = _Parser(text, what)
    _check_nesting(parser)
    return parser.whole()


#: R's parser keeps the open brackets on a stack of this size (gram.y's CONTEXTSTACK_SIZE):
#: ``str2lang(strrep("(", 51))...`` fails with "contextstack overflow" (R 4.2.2), ``[[`` counts twice
R_CONTEXTSTACK_SIZE = 50


def _check_nesting(parser: "_Parser") -> None:
    """R's "contextstack overflow": brackets nested more than :data:`R_CONTEXTSTACK_SIZE` deep."""
    depth = 0
    for token in parser.tokens:
        if token.kind != "op":
            continue
        if token.text in ("(", "[", "[[", "{"):
            depth += 2 if token.text == "[[" else 1
            if depth > R_CONTEXTSTACK_SIZE:
                parser.error(
                    f"brackets nested more than {R_CONTEXTSTACK_SIZE} deep (R: 'contextstack overflow')", token.pos)
        elif token.text in (")", "]", "}"):
            depth = max(depth - 1, 0)


# ----------------------------------------------------------------------------------------------
# the formula grammar
# ----------------------------------------------------------------------------------------------

_TERM_OPERATORS = ("+", "-", "*", "/", "%in%", ":", "^")
_ARITHMETIC_OPERATORS = ("+", "-", "*", "/", "^")


class _FormulaReader:
    """Checks a parsed formula against the formula grammar and turns parenthesised ``|`` into
    Bar and ``.`` into Dot; arithmetic (``* / ^`` as numbers) only inside function calls."""

    def __init__(self, text: str, functions: Collection[str], factor_functions: Collection[str]):
        self.text = text
        self.functions = functions
        self.factor_functions = factor_functions

    def error(self, message: str, pos: int):
        raise FormulaError(message, self.text, pos)

    def unexpected(self, node, context: str = ""):
        label = node.op if isinstance(node, (BinOp, Unary)) else (
            "[" if isinstance(node, Index) else deparse(node))
        self.error(f"unexpected {label!r}{context}", node.pos)

    def sides(self, tree):
        if isinstance(tree, BinOp) and tree.op == "~":
            lhs, rhs = tree.left, tree.right
            if isinstance(lhs, BinOp) and lhs.op == "~":
                self.error("a formula has only one '~'", tree.pos)
            lhs = self.bar_level(lhs)
        elif isinstance(tree, Unary) and tree.op == "~":
            lhs, rhs = None, tree.operand
        else:
            self.error("formula has no '~'", len(self.text))
        rhs = self.bar_level(rhs)
        if isinstance(rhs, Bar) and not rhs.text:
            self.error("put a random-effect term in parentheses, e.g. (1 | g)", rhs.pos)
        return lhs, rhs

    def bar_level(self, node):
        if isinstance(node, BinOp) and node.op in ("|", "||"):
            if isinstance(node.left, BinOp) and node.left.op in ("|", "||"):
                self.error(f"unexpected {node.op!r}", node.pos)  # a | b | c: the second bar is extra
            return Bar(self.term(node.left), self.term(node.right), start(node), "", node.op == "||")
        return self.term(node)

    def term(self, node):
        if isinstance(node, BinOp):
            if node.op in _TERM_OPERATORS:
                return BinOp(node.op, self.term(node.left), self.term(node.right), node.pos)
            if node.op == "||":
                self.error("'||' (uncorrelated random effects) is not supported", node.pos)
            if node.op.startswith("%") and len(node.op) > 1:
                self.error("unsupported %op% operator (only %in% is supported)", node.pos)
            self.unexpected(node)
        if isinstance(node, Unary):
            if node.op in ("+", "-"):
                return Unary(node.op, self.term(node.operand), node.pos)
            self.unexpected(node)
        if isinstance(node, Paren):
            inner = self.bar_level(node.expr)
            if isinstance(inner, Bar):
                return Bar(inner.lhs, inner.rhs, node.pos, self.text[node.pos:node.end + 1], inner.double)
            return Paren(inner, node.pos)
        if isinstance(node, Name):
            return Dot(node.pos) if node.name == "." and not node.quoted else Name(node.name, node.pos)
        if isinstance(node, Num):
            return node
        if isinstance(node, Call):
            return self.call(node)
        self.unexpected(node)

    def call(self, node: Call):
        func = node.func
        if func != "I" and func not in self.functions and func not in self.factor_functions:
            known = ", ".join(["I"] + sorted(self.functions) + list(self.factor_functions))
            self.error(f"unknown function {func!r} in formula (supported: {known})", node.pos)
        if not node.args or isinstance(node.args[0], Missing):
            self.error(f"{func}() needs an argument", node.end if not node.args else node.args[0].pos)
        if len(node.args) > 1:
            comma = self.text.rfind(",", 0, start(node.args[1]))
            self.error(f"{func}() takes one argument", comma)
        if node.tags:
            self.error(f"{func}() takes one argument without a name", node.pos)
        (arg,) = node.args
        if func in self.factor_functions and not isinstance(arg, Name):
            self.error(f"{func}() takes one column name", start(arg))
        return Call(func, (self.arithmetic(arg),), node.pos)

    def arithmetic(self, node):
        if isinstance(node, BinOp):
            if node.op in _ARITHMETIC_OPERATORS:
                return BinOp(node.op, self.arithmetic(node.left), self.arithmetic(node.right), node.pos)
            self.unexpected(node, " in arithmetic expression")
        if isinstance(node, Unary):
            if node.op in ("+", "-"):
                return Unary(node.op, self.arithmetic(node.operand), node.pos)
            self.unexpected(node, " in arithmetic expression")
        if isinstance(node, Num):
            return node
        if isinstance(node, Name):
            if node.name == "." and not node.quoted:
                self.error("'.' cannot be used inside I()", node.pos)
            return Name(node.name, node.pos)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Paren):
            return Paren(self.arithmetic(node.expr), node.pos)
        self.unexpected(node, " in arithmetic expression")


def read_formula(text: str, functions: Collection[str] = (),
                 factor_functions: Collection[str] = ()) -> tuple[object, object]:
    """The (lhs, rhs) trees of a model formula (lhs None for ``~ x``).

    ``functions``: names callable as variables and inside ``I()`` (``log``...);
    ``factor_functions``: names that take one column and make it a factor (``factor``). Raises
    FormulaError with the position of the problem.
    """
    tokens = tokenize(text)
    if tokens[0].kind == "end":
        raise FormulaError("empty formula", text, 0)
    if len(tokens) >= 2 and tokens[-2].kind == "op" and tokens[-2].text == "~":
        raise FormulaError("nothing on the right of '~'", text, tokens[-1].pos)
    tree = parse(text, what="formula")
    return _FormulaReader(text, functions, factor_functions).sides(tree)


def formula_node(lhs, rhs):
    """The tree of the whole formula ``lhs ~ rhs`` (``~ rhs`` when lhs is None)."""
    if lhs is None:
        return Unary("~", rhs, 0)
    return BinOp("~", lhs, rhs, 0)


# ----------------------------------------------------------------------------------------------
# deparser
# ----------------------------------------------------------------------------------------------

# operators R deparses without spaces around them (PP_BINARY2 and the subset/namespace ones)
_TIGHT = frozenset({"/", "^", ":", "$", "@", "::", "%%", "%/%"})


class _Deparser:
    """R's deparse2buff for the node classes above, with its line-breaking rule
    (``cutoff`` None: one line)."""

    def __init__(self, cutoff: int | None):
        self.cutoff = cutoff
        self.lines: list[str] = []
        self.buf = ""
        self.indent = 0
        self.startline = True

    def put(self, s: str):
        if self.startline:
            self.startline = False
            for i in range(1, self.indent + 1):
                self.buf += "    " if i <= 4 else "  "
        self.buf += s

    def writeline(self):
        self.lines.append(self.buf)
        self.buf = ""
        self.startline = True

    def linebreak(self, state: list) -> None:
        if self.cutoff is not None and len(self.buf) > self.cutoff:
            if not state[0]:
                state[0] = True
                self.indent += 1
            self.writeline()

    def spaced(self, left, op: str, right):
        state = [False]
        self.node(left)
        self.put(" " + op + " ")
        self.linebreak(state)
        self.node(right)
        if state[0]:
            self.indent -= 1

    def node(self, e):
        if isinstance(e, Name):
            self.put(r_name(e.name))
        elif isinstance(e, Num):
            self.put(f"{int(e.value)}L" if e.text.endswith("L") else r_number(e.value))
        elif isinstance(e, Str):
            self.put(r_string(e.value))
        elif isinstance(e, Const):
            self.put(e.text)
        elif isinstance(e, Dot):
            self.put(".")
        elif isinstance(e, Missing):
            pass
        elif isinstance(e, Paren):
            self.put("(")
            self.node(e.expr)
            self.put(")")
        elif isinstance(e, Bar):
            self.put("(")
            self.spaced(e.lhs, "||" if e.double else "|", e.rhs)
            self.put(")")
        elif isinstance(e, Unary):
            self.put(e.op)
            self.node(e.operand)
        elif isinstance(e, BinOp):
            if e.op in _TIGHT:
                self.node(e.left)
                self.put(e.op)
                self.node(e.right)
            else:
                self.spaced(e.left, e.op, e.right)
        elif isinstance(e, Call):
            self.put(r_name(e.func) + "(")
            self.args(e.args, e.tags)
            self.put(")")
        elif isinstance(e, Index):
            self.node(e.obj)
            self.put("[[" if e.double else "[")
            self.args(e.args, e.tags)
            self.put("]]" if e.double else "]")
        else:
            raise PrintError(f"cannot deparse {e!r}: not an R expression node")

    def args(self, args, tags):
        state = [False]
        for k, value in enumerate(args):
            tag = tags[k] if tags else None
            if tag is not None:
                self.put(r_name(tag) + " = ")
            self.node(value)
            if k < len(args) - 1:
                self.put(", ")
                self.linebreak(state)
        if state[0]:
            self.indent -= 1


def deparse(node) -> str:
    """R's ``deparse()`` of an expression on one line (the labels of model terms)."""
    d = _Deparser(None)
    with deep_recursion():
        d.node(node)
    return d.buf


def deparse_lines(node, width_cutoff: int = 60) -> list[str]:
    """R's ``deparse(expr, width.cutoff)``: the lines R would print for this expression."""
    d = _Deparser(width_cutoff)
    with deep_recursion():
        d.node(node)
    d.writeline()
    return d.lines


def call_lines(function: str, args: Sequence[tuple[str | None, object]],
               width_cutoff: int = 60) -> list[str]:
    """Deparse ``function(tag = value, ...)``; each value is a node or R source text."""
    values = tuple(parse(v) if isinstance(v, str) else v for _, v in args)
    tags = tuple(tag for tag, _ in args)
    node = Call(function, values, 0, tags if any(t is not None for t in tags) else ())
    return deparse_lines(node, width_cutoff)
