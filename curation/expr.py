r"""Safe filter expressions over per-episode fields, e.g. ``return >= 200 and length < 500``.

Filters come from users (command lines, recipes), so their text never reaches ``eval``,
``exec`` or ``compile``: a small hand-written tokenizer and precedence-climbing parser build a
tiny AST of this module's own node classes, which is type-checked and then evaluated over
numpy columns through fixed tables of numpy functions, so no user-chosen Python ever runs.
(Python's ``ast`` cannot parse these: ``return`` is a keyword there and a field here.) The
whole text is tokenized first, so a stray ``.`` (attribute access), ``;``, ``:`` or Python
keyword is reported wherever it is; texts over 2000 characters and sub-expressions nested
more than 64 deep (parentheses, calls and operands within one another) are refused.

Grammar, loosest binding first, as in Python::

    or  <  and  <  not  <  == != < <= > >= in, not in  (chains: 0 < length <= 100)
        <  + -  <  * / // %  <  unary - +  <  ** (right associative)  <  atoms

Atoms are numbers (``3``, ``2.5``, ``1e3``, ``.5``), strings in single or double quotes (escapes
``\\ \' \" \n \t``), ``true``/``false`` (or ``True``/``False``), field names (not starting
with ``_``), parentheses, calls of ``abs``, ``min``, ``max`` (elementwise) and ``isnan``, and,
only right after ``in``/``not in``, a tuple or list of constants: ``length in (10, 20)``.

Types are strict so that a mistake fails loudly instead of filtering silently: arithmetic and
``< <= > >=`` need numbers; text supports only ``==``, ``!=`` and ``in``; ``and``, ``or`` and
``not`` need true/false operands (``length and x`` is an error, write ``length > 0 and x``);
true/false are not numbers; the whole expression must give true/false. Numbers follow numpy:
a NaN (e.g. the ``seed`` of an unseeded episode) makes every comparison with it false,
division by zero gives inf or nan (0 for integers), ``**`` is computed in float64 (so
``10 ** 10 ** 10`` is inf, not a huge integer); integer columns are computed as int64, except
uint64 columns with values of 2**63 and over (64-bit seeds), which stay exact uint64 against
non-negative integers; integer overflow wraps around. Rows a ``missing`` mask marks behave as
NaN: comparisons with them are false (``!=`` true), ``isnan`` is true.
"""

from __future__ import annotations

import difflib
import keyword
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collector.errors import ExpressionError

__all__ = ["Expression", "ExpressionError", "compile_expression", "evaluate_expression"]

MAX_LENGTH = 2000
MAX_DEPTH = 64
_FUNCTIONS = {"abs": np.abs, "min": np.minimum, "max": np.maximum, "isnan": np.isnan}
_UNARY = {"-": np.negative, "+": np.positive, "not": np.logical_not}
_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide,
          "//": np.floor_divide, "%": np.mod, "**": np.float_power}  # fmt: skip
_COMPARE = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
            ">": np.greater, ">=": np.greater_equal}  # fmt: skip
_PREFIX = {"not": 3, "-": 7, "+": 7}  # binding powers, loosest first
_INFIX = {"or": 1, "and": 2, **dict.fromkeys([*_COMPARE, "in", "not in"], 4), "+": 5, "-": 5,
          "*": 6, "/": 6, "//": 6, "%": 6, "**": 8}  # fmt: skip
_KIND_NAMES = {"num": "numbers", "str": "text", "bool": "true/false"}
_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
    r"|(?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>\*\*|//|==|!=|<=|>=|[-+*/%<>()\[\],])"
)
_HINTS = {  # a stray character: what to say, and a hint after its column
    ".": ("attribute access is not allowed", ""),
    ";": ("';' is not allowed", " (one expression only)"),
    "\\": ("a backslash is only allowed inside a string", ""),
    "=": ("unexpected '='", " (use '==' to compare)"),
    "&": ("unexpected '&'", " (use 'and')"),
    "|": ("unexpected '|'", " (use 'or')"),
    "!": ("unexpected '!'", " (use 'not' or '!=')"),
}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_BOOLS = {"true": True, "True": True, "false": False, "False": False}


def _error(text: str, detail: str) -> ExpressionError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return ExpressionError(f"bad expression {shown!r}: {detail}")


def _at(col: int | None) -> str:
    return " at end of input" if col is None else f" at column {col}"


def _unknown_field(text: str, name: str, col: int | None, known: Iterable[str]) -> ExpressionError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    listing = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "") or "none"
    hint = f"did you mean {close[0]!r}? " if close else ""
    return _error(text, f"unknown field {name!r}{_at(col)} ({hint}fields: {listing})")


@dataclass(frozen=True)
class _Token:
    kind: str  # num, str, bool (constants), name, op (and/or/not/in too), end
    text: str
    col: int | None
    value: Any = None


def _lex(text: str) -> list[_Token]:
    """Split ``text`` into tokens, ending with an ``end`` token; reject stray characters."""
    tokens, pos = [], 0
    while pos < len(text):
        m, col = _TOKEN.match(text, pos), pos + 1
        if m is None and text[pos] in "'\"":
            raise _error(text, f"unterminated string{_at(col)}")
        if m is None:
            detail, hint = _HINTS.get(text[pos], (f"unexpected character {text[pos]!r}", ""))
            raise _error(text, f"{detail}{_at(col)}{hint}")
        word, pos, kind = m.group(), m.end(), m.lastgroup
        if kind == "str":
            for esc in re.finditer(r"\\(.)", word, re.S):
                if esc.group(1) not in _ESCAPES:
                    bad = f"unknown escape {esc.group()!r} in string"
                    raise _error(text, f"{bad}{_at(col + esc.start())}")
            value = re.sub(r"\\(.)", lambda e: _ESCAPES[e.group(1)], word[1:-1], flags=re.S)
            tokens.append(_Token("str", word, col, np.str_(value)))
        elif kind == "num":
            if pos < len(text) and (text[pos].isalnum() or text[pos] in "_."):
                bad = re.match(r"[\w.]*", text[col - 1 :]).group()
                raise _error(text, f"bad number {bad!r}{_at(col)}")
            if not any(c in word for c in ".eE") and int(word) >= 2**63:
                raise _error(text, f"integer {word} is too large for int64{_at(col)}")
            value = np.int64(word) if word.isdigit() else np.float64(word)
            tokens.append(_Token("num", word, col, value))
        elif kind == "name" and word in _BOOLS:
            tokens.append(_Token("bool", word, col, np.bool_(_BOOLS[word])))
        elif kind == "name" and word in ("and", "or", "not", "in"):
            tokens.append(_Token("op", word, col))
        elif kind == "name" and keyword.iskeyword(word) and word != "return":
            raise _error(text, f"{word!r} is not allowed{_at(col)}")
        elif kind != "space":
            tokens.append(_Token(kind, word, col))
    return [*tokens, _Token("end", "", None)]


# AST nodes. ``col`` is the 1-based column of the token that names the node (its operator).
@dataclass(frozen=True)
class _Const:
    value: Any  # np.int64, np.float64, np.str_ or np.bool_
    kind: str
    col: int


@dataclass(frozen=True)
class _Field:
    name: str
    col: int


@dataclass(frozen=True)
class _Unary:
    op: str  # "-", "+" or "not"
    operand: Any
    col: int


@dataclass(frozen=True)
class _Chain:
    """``a op b op c ...``: arithmetic (left to right), ``and``/``or``, or comparisons."""

    operands: tuple[Any, ...]
    ops: tuple[str, ...]
    cols: tuple[int, ...]


@dataclass(frozen=True)
class _Tuple:
    values: tuple[Any, ...]
    kind: str | None  # None when empty


@dataclass(frozen=True)
class _Call:
    func: str
    args: tuple[Any, ...]
    col: int


class _Parser:
    def __init__(self, text: str, fields: frozenset[str] | None) -> None:
        self.text, self.fields, self.names = text, fields, dict[str, int]()
        self.tokens, self.pos, self.depth = _lex(text), 0, 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        self.pos += 1
        return self.tokens[min(self.pos - 1, len(self.tokens) - 1)]

    def at(self, text: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind == "op" and tok.text == text

    def fail(self, detail: str, col: int | None, hint: str = "") -> ExpressionError:
        return _error(self.text, f"{detail}{_at(col)}{hint}")

    def unexpected(self, tok: _Token, hint: str = "") -> ExpressionError:
        if tok.kind == "end":
            return self.fail("expected an expression", None, hint)
        if tok.text == "(":
            return self.fail("only abs, min, max and isnan can be called", tok.col)
        if tok.text == "[":
            return self.fail("subscripts are not allowed", tok.col)
        return self.fail(f"unexpected {tok.text!r}", tok.col, hint)

    def nested(self, prec: int, col: int | None) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"expression nests deeper than {MAX_DEPTH} levels", col)
        node = self.expr(prec)
        self.depth -= 1
        return node

    def parse(self) -> Any:
        node = self.expr(1)
        if self.peek().kind != "end":
            raise self.unexpected(self.peek())
        return node

    def close(self, opening: _Token, closer: str) -> None:
        tok = self.take()
        if tok.kind == "end":
            raise self.fail(f"unclosed {opening.text!r}", opening.col)
        if tok.text != closer:
            raise self.unexpected(tok, f" (expected {closer!r})")

    def expr(self, min_prec: int) -> Any:
        """Precedence climbing; runs of one level become one flat ``_Chain``."""
        tok = self.peek()
        if tok.kind == "op" and _PREFIX.get(tok.text, 0) >= min_prec:
            self.take()
            left = _Unary(tok.text, self.nested(_PREFIX[tok.text], tok.col), tok.col)
        else:
            left = self.atom()
        operands, ops, cols, level = [left], [], [], 0
        while True:
            tok = self.peek()
            op = "not in" if self.at("not") and self.at("in", 1) else tok.text
            prec = _INFIX.get(op, 0) if tok.kind == "op" else 0
            if prec < max(min_prec, 1) or prec == 4 and isinstance(operands[-1], _Tuple):
                break  # anything after `in (...)` in a chain is reported as unexpected
            if level and prec != level:
                operands, ops, cols = [_Chain(tuple(operands), tuple(ops), tuple(cols))], [], []
            self.pos, level = self.pos + (2 if op == "not in" else 1), prec
            ops.append(op)
            cols.append(tok.col)
            if op in ("in", "not in"):
                operands.append(self.collection(op))
            else:  # `**` is right-associative and its exponent may be signed: 2 ** -1
                operands.append(self.nested(7 if op == "**" else prec + 1, tok.col))
        return _Chain(tuple(operands), tuple(ops), tuple(cols)) if ops else operands[0]

    def collection(self, op: str) -> _Tuple:
        opening = self.take()
        if opening.kind != "op" or opening.text not in ("(", "["):
            hint = " (e.g. `length in (10, 20)`)"
            raise self.fail(f"'{op}' needs a tuple or list of constants", opening.col, hint)
        closer, values, kinds = ")" if opening.text == "(" else "]", [], set()
        while not self.at(closer):
            tok, sign = self.take(), None
            if tok.kind == "op" and tok.text in ("-", "+"):
                sign, tok = tok.text, self.take()
            if tok.kind not in ("num", "str", "bool") or sign and tok.kind != "num":
                raise self.fail(f"only constants are allowed after '{op}'", tok.col)
            values.append(-tok.value if sign == "-" else tok.value)
            kinds.add(tok.kind)
            if not self.at(","):
                break
            self.take()
        self.close(opening, closer)
        if len(kinds) > 1:
            mixed = " and ".join(sorted(_KIND_NAMES[k] for k in kinds))
            raise self.fail(f"the values after '{op}' mix {mixed}", opening.col)
        return _Tuple(tuple(values), kinds.pop() if kinds else None)

    def atom(self) -> Any:
        tok = self.take()
        if tok.kind in ("num", "str", "bool"):
            return _Const(tok.value, tok.kind, tok.col)
        if tok.kind == "name" and self.at("("):
            return self.call(tok)
        if tok.kind == "name":
            if tok.text.startswith("_"):
                raise self.fail(f"private name {tok.text!r} is not allowed", tok.col)
            if self.fields is not None and tok.text not in self.fields:
                raise _unknown_field(self.text, tok.text, tok.col, self.fields)
            self.names.setdefault(tok.text, tok.col)
            return _Field(tok.text, tok.col)
        if tok.kind == "op" and tok.text == "(":
            node = self.nested(1, tok.col)
            if self.at(","):
                raise self.fail("a tuple is only allowed after 'in'", self.peek().col)
            self.close(tok, ")")
            return node
        if tok.kind == "op" and tok.text == "[":
            raise self.fail("a list is only allowed after 'in'", tok.col)
        raise self.unexpected(tok)

    def call(self, name: _Token) -> _Call:
        if name.text not in _FUNCTIONS:
            allowed = " (allowed: abs, min, max, isnan)"
            raise self.fail(f"function {name.text!r} is not allowed", name.col, allowed)
        opening, args = self.take(), []
        while not self.at(")"):
            args.append(self.nested(1, opening.col))
            if not self.at(","):
                break
            self.take()
        self.close(opening, ")")
        many = name.text in ("min", "max")
        if len(args) < 2 if many else len(args) != 1:
            count = "at least 2 arguments" if many else "exactly 1 argument"
            raise self.fail(f"{name.text}() takes {count}, got {len(args)}", name.col)
        return _Call(name.text, tuple(args), name.col)


def _check(node: Any, kinds: Mapping[str, str], text: str) -> str | None:
    """Return the kind (num, str, bool; None if not known yet) ``node`` gives, or raise."""

    def need(kind: str | None, want: str, what: str, col: int, hint: str = "") -> None:
        if kind is not None and kind != want:
            got = f"{what} needs {_KIND_NAMES[want]}, got {_KIND_NAMES[kind]}"
            raise _error(text, f"{got}{_at(col)}{hint}")

    if isinstance(node, _Const):
        return node.kind
    if isinstance(node, _Field):
        return kinds.get(node.name)
    if isinstance(node, _Call):
        for arg in node.args:
            need(_check(arg, kinds, text), "num", f"{node.func}()", node.col)
        return "bool" if node.func == "isnan" else "num"
    if isinstance(node, _Unary):
        want = "bool" if node.op == "not" else "num"
        need(_check(node.operand, kinds, text), want, f"'{node.op}'", node.col)
        return want
    found = [_check(node.operands[0], kinds, text)]
    for op, col, right in zip(node.ops, node.cols, node.operands[1:], strict=True):
        left = found[-1]
        found.append(right.kind if isinstance(right, _Tuple) else _check(right, kinds, text))
        if op in ("and", "or"):
            for kind in (left, found[-1]):
                need(kind, "bool", f"'{op}'", col, " (compare it, e.g. `length > 0`)")
        elif op in _ARITH or op in ("<", "<=", ">", ">="):
            hint = " (text supports only ==, != and in)" if "str" in found[-2:] else ""
            for kind in (left, found[-1]):
                need(kind, "num", f"'{op}'", col, hint)
        elif None not in found[-2:] and left != found[-1]:
            pair = f"{_KIND_NAMES[left]} with {_KIND_NAMES[found[-1]]}"
            raise _error(text, f"'{op}' compares {pair}{_at(col)}")
    return "num" if node.ops[0] in _ARITH else "bool"


def _align(a: Any, b: Any) -> tuple[Any, Any]:
    """Make a uint64 operand and a signed one exact together where numpy would go to float64.

    numpy computes uint64 with int64 in float64, which loses the low bits of 64-bit seeds
    (``seed % 2``); a non-negative int64 side is cast to uint64 instead, a negative one
    takes both to float64.
    """
    au, bu = np.asarray(a).dtype == np.uint64, np.asarray(b).dtype == np.uint64
    if au == bu:
        return a, b
    u, other = (a, b) if au else (b, a)
    if np.asarray(other).dtype.kind == "i":
        if (np.asarray(other) >= 0).all():  # a method: np.all() calls builtins.getattr
            other = np.asarray(other).astype(np.uint64)
        else:
            u = np.asarray(u).astype(np.float64)
    return (u, other) if au else (other, u)


def _missing(node: Any, masks: Mapping[str, np.ndarray]) -> Any:
    """Rows where a number under ``node`` is missing (a field's ``missing`` mask), or None."""
    if isinstance(node, _Field):
        return masks.get(node.name)
    children = (
        [node.operand] if isinstance(node, _Unary)
        else list(node.args) if isinstance(node, _Call)
        else list(node.operands) if isinstance(node, _Chain)
        else []
    )  # fmt: skip
    out = None
    for child in children:
        m = _missing(child, masks)
        if m is not None:
            out = m if out is None else out | m
    return out


def _eval(node: Any, cols: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> Any:
    """Compute a checked node with numpy only: fixed tables of functions, no user code.

    Missing values (``masks``) behave as NaN does: comparisons with them are false (``!=``
    true) and ``isnan`` is true.
    """
    if isinstance(node, _Const):
        return node.value
    if isinstance(node, _Field):
        return cols[node.name]
    if isinstance(node, _Unary):
        value = _eval(node.operand, cols, masks)
        if node.op == "-" and np.asarray(value).dtype == np.uint64:
            value = np.asarray(value).astype(np.float64)
        return _UNARY[node.op](value)
    if isinstance(node, _Call):
        func, args = _FUNCTIONS[node.func], [_eval(arg, cols, masks) for arg in node.args]
        if node.func == "isnan":
            miss = _missing(node, masks)
            out = func(np.asarray(args[0], np.float64))
            return out if miss is None else out | miss
        out = args[0] if len(args) > 1 else func(args[0])
        for arg in args[1:]:
            out = func(*_align(out, arg))
        return out
    out = left = _eval(node.operands[0], cols, masks)
    if node.ops[0] in ("and", "or"):
        func = np.logical_and if node.ops[0] == "and" else np.logical_or
        for right in node.operands[1:]:
            out = func(out, _eval(right, cols, masks))
        return out
    if node.ops[0] in _ARITH:
        for op, right in zip(node.ops, node.operands[1:], strict=True):
            out = _ARITH[op](*_align(out, _eval(right, cols, masks)))
        return out
    out = np.bool_(True)
    left_node = node.operands[0]
    for op, right in zip(node.ops, node.operands[1:], strict=True):
        miss = _missing(left_node, masks)
        if isinstance(right, _Tuple):
            values = np.array(right.values)
            found = np.isin(*_align(left, values)) if right.values else np.bool_(False)
            if miss is not None:
                found = found & ~miss
            out = np.logical_and(out, np.logical_not(found) if op == "not in" else found)
        else:
            value = _eval(right, cols, masks)
            cmp = _COMPARE[op](*_align(left, value))
            right_miss = _missing(right, masks)
            if right_miss is not None:
                miss = right_miss if miss is None else miss | right_miss
            if miss is not None:
                cmp = cmp | miss if op == "!=" else cmp & ~miss
            out, left, left_node = np.logical_and(out, cmp), value, right
    return out


def _column(text: str, name: str, values: Any) -> tuple[np.ndarray, str]:
    """Return a field's column as a 1-d array of numbers, bools or str, and its kind."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise _error(text, f"field {name!r} is not a 1-d column (shape {array.shape})")
    if array.dtype == np.uint64:  # 64-bit seeds: exact, see _align
        if len(array) and array.max() >= 2**63:
            return array, "num"
        return array.astype(np.int64), "num"
    if array.dtype.kind in "iu" and array.dtype != np.int64:  # so -x and x * 1000 don't wrap
        return array.astype(np.int64), "num"
    kind = {"b": "bool", "i": "num", "f": "num", "U": "str"}.get(array.dtype.kind)
    if kind is not None:
        return array, kind
    if array.dtype.kind == "S":
        return np.char.decode(array, "utf-8", "replace"), "str"
    if array.dtype.kind == "O" and all(type(v) is str for v in array):
        return array.astype(str), "str"
    raise _error(text, f"field {name!r} holds {array.dtype} values, not numbers, bools or text")


def _check_result(text: str, kind: str | None) -> None:
    if kind in ("num", "str"):
        example = " ".join(text.split()) if len(text) <= 40 else "..."
        example += " > 0" if kind == "num" else " == 'x'"
        raise _error(
            text, f"gives {_KIND_NAMES[kind]}, not true/false; compare it, e.g. `{example}`"
        )


@dataclass(frozen=True)
class Expression:
    """A parsed and checked filter expression; make one with :func:`compile_expression`.

    Attributes:
        text: The expression as written.
        fields: The field names it references.
    """

    text: str
    fields: frozenset[str]
    _root: Any = field(repr=False, compare=False)
    _where: Mapping[str, int] = field(repr=False, compare=False, default_factory=dict)

    def evaluate(
        self, columns: Mapping[str, np.ndarray], missing: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Evaluate over per-episode columns, all of one length ``n``.

        Args:
            columns: Field name to 1-d numpy column (numbers, bools or text).
            missing: Field name to a boolean mask of rows where its number is absent (e.g.
                the seed of an unseeded episode); they behave as NaN (see the module doc).

        Returns:
            A boolean mask of length ``n``: True for the episodes the expression keeps.

        Raises:
            ExpressionError: A referenced field is missing or of the wrong type, or columns
                differ in length.
        """
        arrays, kinds = {}, {}
        for name in sorted(self.fields):
            if name not in columns:
                raise _unknown_field(self.text, name, self._where.get(name), columns)
            arrays[name], kinds[name] = _column(self.text, name, columns[name])
        sizes = {len(a) for a in arrays.values()} or {np.size(c) for c in [*columns.values()][:1]}
        if len(sizes) != 1:
            lengths = ", ".join(f"{k}={len(v)}" for k, v in arrays.items())
            detail = f"columns differ in length ({lengths})" if sizes else "no columns given"
            raise _error(self.text, detail)
        try:
            _check_result(self.text, _check(self._root, kinds, self.text))
            with np.errstate(all="ignore"):
                masks = {k: np.asarray(v, bool) for k, v in (missing or {}).items()}
                out = _eval(self._root, arrays, masks)
        except RecursionError:  # as in compile_expression
            raise _error(self.text, "expression is too deeply nested") from None
        return np.broadcast_to(np.asarray(out, dtype=bool), (sizes.pop(),)).copy()


def compile_expression(text: str, fields: Iterable[str] | None = None) -> Expression:
    """Parse and type-check ``text``; evaluate the result with :meth:`Expression.evaluate`.

    Args:
        text: The expression, e.g. ``"return >= 200 and length < 500"``.
        fields: The known field names; when given, unknown names are errors now rather than
            at evaluation.

    Returns:
        The compiled expression.

    Raises:
        ExpressionError: The text does not parse, is longer than 2000 characters, nests
            deeper than 64 levels, names an unknown field or mixes types.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"bad expression {text!r}: expected a string")
    if len(text) > MAX_LENGTH:
        raise _error(text, f"too long ({len(text)} characters, at most {MAX_LENGTH})")
    parser = _Parser(text, None if fields is None else frozenset(fields))
    try:
        root = parser.parse()
        _check_result(text, _check(root, {}, text))
    except RecursionError:  # unreachable within MAX_DEPTH; never let one escape
        raise _error(text, "expression is too deeply nested") from None
    return Expression(text, frozenset(parser.names), root, parser.names)


def evaluate_expression(text: str, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Compile ``text`` against the names in ``columns`` and evaluate it over them.

    Args:
        text: The expression.
        columns: Field name to 1-d numpy column, all of one length ``n``.

    Returns:
        A boolean mask of length ``n``.

    Raises:
        ExpressionError: See :func:`compile_expression` and :meth:`Expression.evaluate`.

    Example:
        >>> cols = {"return": np.array([250.0, 90.0, 310.0]), "length": np.array([400, 120, 700])}
        >>> evaluate_expression("return >= 200 and length < 500", cols)
        array([ True, False, False])
        >>> evaluate_expression("seed % 2 == 0", {"seed": np.array([4.0, np.nan, 3.0])})
        array([ True, False, False])
    """
    return compile_expression(text, columns.keys()).evaluate(columns)
