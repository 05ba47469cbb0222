"""Tests of the safe filter expressions (``curation.expr``).

Valid expressions are checked against hand-computed masks over the five episodes of
``columns()``; invalid ones against their exact one-line messages (with the 1-based column);
malicious ones must be rejected without any builtin that could run code being called.
"""

from __future__ import annotations

import builtins
import re
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.errors import UsageError
from curation.expr import Expression, ExpressionError, compile_expression, evaluate_expression

T, F = True, False


def columns(n: int | None = None) -> dict[str, np.ndarray]:
    cols = {
        "id": np.arange(5),
        "return": np.array([250.0, 90.0, 310.0, -4.0, np.nan]),
        "length": np.array([400, 120, 700, 10, 500]),
        "terminated": np.array([T, F, T, F, F]),
        "truncated": np.array([F, T, F, F, T]),
        "seed": np.array([4.0, np.nan, 3.0, 0.0, np.nan]),
        "source": np.array(["ns/a-v0", "b", "ns/a-v0", "c", "it's"]),
    }
    return cols if n is None else {k: v[:n] for k, v in cols.items()}


FIELDS = "(fields: id, length, return, seed, source, terminated, truncated)"


def message(text: str, detail: str) -> str:
    return re.escape(f"bad expression {text!r}: {detail}")


def check(text: str, expected: list[bool]) -> None:
    mask = evaluate_expression(text, columns())
    assert mask.dtype == np.bool_ and mask.shape == (5,)
    assert mask.tolist() == expected


# The three expressions of the issue, then one of each feature.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("return >= 200 and length < 500", [T, F, F, F, F]),
        ("terminated", [T, F, T, F, F]),
        ("seed % 2 == 0", [T, F, F, T, F]),  # NaN seeds are never even
        ("not truncated or abs(return) > 3.5", [T, T, T, T, F]),
        ("terminated or truncated", [T, T, T, F, T]),
        ("terminated and not truncated", [T, F, T, F, F]),
        ("terminated == true", [T, F, T, F, F]),
        ("terminated != truncated", [T, T, T, F, T]),
        ("seed == seed", [T, F, T, T, F]),
        ("isnan(seed)", [F, T, F, F, T]),
        ("isnan(length) or isnan(return / 0)", [F, F, F, F, T]),
        ("not isnan(seed) and seed >= 3", [T, F, T, F, F]),
        ("length / 100 >= 4", [T, F, T, F, T]),
        ("length // 100 == 4", [T, F, F, F, F]),
        ("length % 7 == 1", [T, T, F, F, F]),
        ("2 ** id == 4", [F, F, T, F, F]),
        ("-length < -450", [F, F, T, F, T]),
        ("+id == id", [T, T, T, T, T]),
        ("length - 100 * id == 400", [T, F, F, F, F]),
        ("abs(return - 100) < 20", [F, T, F, F, F]),
        ("min(length, 450) == 450", [F, F, T, F, T]),
        ("max(return, 100) == 100", [F, T, F, T, F]),
        ("min(length, 300, id * 100) == 100", [F, T, F, F, F]),
        ("1e3 > length", [T, T, T, T, T]),
        (".5 < 1 and 1E-1 < 0.2", [T, T, T, T, T]),
        ("2.5e2 == return", [T, F, F, F, F]),
        ("true", [T, T, T, T, T]),
        ("False", [F, F, F, F, F]),
        ("True and not false", [T, T, T, T, T]),
        ("\tlength\n>=\r\n400 ", [T, F, T, F, T]),
        ("9223372036854775807 > length", [T, T, T, T, T]),
    ],
)
def test_valid_expressions(text: str, expected: list[bool]) -> None:
    check(text, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not terminated or truncated", [F, T, F, T, T]),  # (not a) or b
        ("not terminated and truncated", [F, T, F, F, T]),
        ("terminated or truncated and false", [T, F, T, F, F]),  # and binds tighter
        ("not length > 450", [T, T, F, T, F]),  # not binds looser than comparisons
        ("-2 ** 2 == -4", [T] * 5),  # as in Python: -(2 ** 2)
        ("(-2) ** 2 == 4", [T] * 5),
        ("2 ** 3 ** 2 == 512", [T] * 5),  # right-associative
        ("2 ** -1 == 0.5", [T] * 5),
        ("-2 * 3 == -6", [T] * 5),
        ("1 - 2 - 3 == -4", [T] * 5),  # left-associative
        ("12 / 2 / 3 == 2", [T] * 5),
        ("2 + 3 * 4 == 14 and (2 + 3) * 4 == 20", [T] * 5),
        ("7 // 2 * 2 == 6 and 7 % 4 * 2 == 6", [T] * 5),
        ("0 < length <= 400", [T, T, F, T, F]),  # chained: pairwise and
        ("100 < length < 600 > return", [T, T, F, F, F]),
        ("1 < 3 > 2", [T] * 5),  # not (1 < 3) > 2, which would compare true/false with 2
        ("3 > 2 > 1 == 1", [T] * 5),
        ("length in (10, 400) and terminated", [T, F, F, F, F]),
    ],
)
def test_precedence(text: str, expected: list[bool]) -> None:
    check(text, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("length in (10, 20, 400)", [T, F, F, T, F]),
        ("length not in (10, 20, 400)", [F, T, T, F, T]),
        ("length in [120]", [F, T, F, F, F]),
        ("length in (120,)", [F, T, F, F, F]),
        ("return in (-4, 90, +7.5)", [F, T, F, T, F]),
        ("id in ()", [F, F, F, F, F]),
        ("id not in []", [T, T, T, T, T]),
        ("terminated in (false,)", [F, T, F, T, T]),
        ("source in ('b', 'c')", [F, T, F, T, F]),
        ('source not in ["b"]', [T, F, T, T, T]),
    ],
)
def test_in(text: str, expected: list[bool]) -> None:
    check(text, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('source == "ns/a-v0"', [T, F, T, F, F]),
        ("source == 'ns/a-v0'", [T, F, T, F, F]),
        ("source != 'b'", [T, F, T, T, T]),
        ("'b' == source", [F, T, F, F, F]),
        ("source == 'it\\'s'", [F, F, F, F, T]),
        ('source == "it\'s" or source == "a\\\\b"', [F, F, F, F, T]),
        ("'x' == 'x'", [T] * 5),
    ],
)
def test_string_fields(text: str, expected: list[bool]) -> None:
    check(text, expected)


@pytest.mark.parametrize("dtype", [object, "S7"])
def test_string_columns_of_objects_and_bytes(dtype: object) -> None:
    source = np.array(["ns/a-v0", "b", "c"]).astype(dtype)
    mask = evaluate_expression("source in ('b', 'c')", {"source": source})
    assert mask.tolist() == [F, T, T]


def test_issue_example_message() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("return >= 200 and foo", fields=columns())
    assert str(info.value) == (
        f"bad expression 'return >= 200 and foo': unknown field 'foo' at column 19 {FIELDS}"
    )


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("return)", "unexpected ')' at column 7"),
        ("(1 + 2)) == 3", "unexpected ')' at column 8"),
        ("return >=", "expected an expression at end of input"),
        ("", "expected an expression at end of input"),
        ("   ", "expected an expression at end of input"),
        ("not", "expected an expression at end of input"),
        ("'abc", "unterminated string at column 1"),
        ('source == "ns', "unterminated string at column 11"),
        ("source == 'a\\'", "unterminated string at column 11"),
        ("source == 'a\\q'", "unknown escape '\\\\q' in string at column 13"),
        ("(1 + 2 == 3", "unclosed '(' at column 1"),
        ("abs(length", "unclosed '(' at column 4"),
        ("abs(length 2) > 0", "unexpected '2' at column 12 (expected ')')"),
        ("length in (1, 2", "unclosed '(' at column 11"),
        ("length in [1, 2)", "unexpected ')' at column 16 (expected ']')"),
        ("length == (1, 2)", "a tuple is only allowed after 'in' at column 13"),
        ("[1, 2] == length", "a list is only allowed after 'in' at column 1"),
        ("length in length", "'in' needs a tuple or list of constants at column 11"),
        ("length in (1, id)", "only constants are allowed after 'in' at column 15"),
        ("length in (1, -id)", "only constants are allowed after 'in' at column 16"),
        ("length in (1, 'a')", "the values after 'in' mix numbers and text at column 11"),
        ("length in (1, 2) < 3", "unexpected '<' at column 18"),
        ("length == not terminated", "unexpected 'not' at column 11"),
        ("length > -not terminated", "unexpected 'not' at column 11"),
        ("length > 0 0", "unexpected '0' at column 12"),
        ("1.2.3 > 0", "bad number '1.2.3' at column 1"),
        ("1abc > 0", "bad number '1abc' at column 1"),
        ("1_000 > 0", "bad number '1_000' at column 1"),
        ("length > 99999999999999999999", "integer 99999999999999999999 is too large for int64"),
        ("length > 9223372036854775808", "integer 9223372036854775808 is too large for int64"),
        ("length = 1", "unexpected '=' at column 8 (use '==' to compare)"),
        ("length > 1 & id", "unexpected '&' at column 12 (use 'and')"),
        ("length > 1 | id", "unexpected '|' at column 12 (use 'or')"),
        ("!terminated", "unexpected '!' at column 1 (use 'not' or '!=')"),
        ("length > 1 ^ 2", "unexpected character '^' at column 12"),
        ("length > 1 @ 2", "unexpected character '@' at column 12"),
        ("length é 1", "unexpected character 'é' at column 8"),
        ("x := 1", "unexpected character ':' at column 3"),
        ("1 \\ 2", "a backslash is only allowed inside a string at column 3"),
        ("length[0] > 1", "subscripts are not allowed at column 7"),
        ("(length)(1)", "only abs, min, max and isnan can be called at column 9"),
        ("abs() > 0", "abs() takes exactly 1 argument, got 0 at column 1"),
        ("isnan(seed, 1)", "isnan() takes exactly 1 argument, got 2 at column 1"),
        ("min(length) > 0", "min() takes at least 2 arguments, got 1 at column 1"),
        ("max(length,) > 0", "max() takes at least 2 arguments, got 1 at column 1"),
        ("terminated is true", "'is' is not allowed at column 12"),
    ],
)
def test_syntax_errors_point_at_the_column(text: str, detail: str) -> None:
    with pytest.raises(ExpressionError, match=message(text, detail)):
        evaluate_expression(text, columns())


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("retrun > 0", f"unknown field 'retrun' at column 1 (did you mean 'return'? {FIELDS[1:]}"),
        ("length > 0 and termnated", "unknown field 'termnated' at column 16 (did you mean"),
        ("foo", f"unknown field 'foo' at column 1 {FIELDS}"),
    ],
)
def test_unknown_field_suggests_close_names(text: str, detail: str) -> None:
    with pytest.raises(ExpressionError, match=message(text, detail)):
        compile_expression(text, fields=columns())
    with pytest.raises(ExpressionError, match=message(text, detail)):
        evaluate_expression(text, columns())


def test_unknown_field_found_at_evaluation_when_compiled_without_fields() -> None:
    expr = compile_expression("lenght > 0 and id >= 0")
    assert expr.fields == frozenset({"lenght", "id"})
    detail = "unknown field 'lenght' at column 1 (did you mean 'length'?"
    with pytest.raises(ExpressionError, match=message(expr.text, detail)):
        expr.evaluate(columns())


def test_many_fields_are_abbreviated() -> None:
    fields = [f"f{i:02d}" for i in range(20)]
    with pytest.raises(ExpressionError, match=re.escape("f10, f11, ...)")):
        compile_expression("nope", fields)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("return + 1", "gives numbers, not true/false; compare it, e.g. `return + 1 > 0`"),
        ("abs(length)", "gives numbers, not true/false; compare it, e.g. `abs(length) > 0`"),
        ("source", "gives text, not true/false; compare it, e.g. `source == 'x'`"),
        ("length and terminated", "'and' needs true/false, got numbers at column 8"),
        ("terminated or 1", "'or' needs true/false, got numbers at column 12"),
        ("terminated and source", "'and' needs true/false, got text at column 12"),
        ("not length", "'not' needs true/false, got numbers at column 1"),
        ("source < 'a'", "'<' needs numbers, got text at column 8 (text supports only"),
        ("source >= 1", "'>=' needs numbers, got text at column 8"),
        ("terminated > 0", "'>' needs numbers, got true/false at column 12"),
        ("source == 1", "'==' compares text with numbers at column 8"),
        ("1 != source", "'!=' compares numbers with text at column 3"),
        ("terminated == 1", "'==' compares true/false with numbers at column 12"),
        ("length in ('a', 'b')", "'in' compares numbers with text at column 8"),
        ("source not in (1, 2)", "'not in' compares text with numbers at column 8"),
        ("source * 2 == 1", "'*' needs numbers, got text at column 8"),
        ("source * 2 == 'x'", "'==' compares numbers with text at column 12"),  # at compile time
        ("source + 'x' == 'x'", "'+' needs numbers, got text at column 8"),
        ("-source == 1", "'-' needs numbers, got text at column 1"),
        ("abs(source) > 1", "abs() needs numbers, got text at column 1"),
        ("isnan(terminated)", "isnan() needs numbers, got true/false at column 1"),
        ("terminated + 1 > 0", "'+' needs numbers, got true/false at column 12"),
    ],
)
def test_type_errors(text: str, detail: str) -> None:
    with pytest.raises(ExpressionError, match=message(text, detail)):
        evaluate_expression(text, columns())


def test_type_errors_of_constants_are_found_at_compile_time() -> None:
    with pytest.raises(ExpressionError, match=message("'a' < 1", "'<' needs numbers, got text")):
        compile_expression("'a' < 1")
    with pytest.raises(ExpressionError, match="gives numbers"):
        compile_expression("length * 2")  # arithmetic gives numbers whatever the field holds
    expr = compile_expression("source == 1")  # field types are known only at evaluation
    with pytest.raises(ExpressionError, match="compares text with numbers"):
        expr.evaluate(columns())


MALICIOUS = [
    "__import__('os')",
    "__import__('os').system('touch /tmp/pwned')",
    "().__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "open('/etc/passwd')",
    "open('/etc/passwd').read() == ''",
    "(lambda: 1)()",
    "lambda: 1",
    "return.__class__",
    "[c for c in ()]",
    "length; import os",
    "import os",
    "_secret",
    "_secret > 0",
    "length.__len__ == 5",
    "getattr(length, 'x')",
    "eval('1')",
    "exec('1')",
    "compile('1', '', 'eval')",
    "globals()",
    "source.format",
    "f'{length}'",
    "length if true else id",
    "(x := 1)",
    '"a" * 10**9',
    '"a" * 10**9 == "a"',
    "source * 10 ** 9 == 'x'",
    "length @ length",
    "{length}",
    "`length`",
    "b'abc' == source",
]


@pytest.mark.parametrize("text", MALICIOUS)
def test_malicious_inputs_are_rejected_without_running_anything(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[str] = []
    error: ExpressionError | None = None
    with monkeypatch.context() as patch:
        for name in ("__import__", "open", "eval", "exec", "compile", "globals", "breakpoint"):
            original = getattr(builtins, name)

            def spy(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
                called.append(_name)
                return _original(*args, **kw)

            patch.setattr(builtins, name, spy)
        called.clear()  # setattr itself imports
        try:
            evaluate_expression(text, columns())
        except ExpressionError as err:
            error = err
        during = list(called)
    assert error is not None and during == []


def test_huge_powers_finish_quickly() -> None:
    start = time.perf_counter()
    check("10 ** 10 ** 10 > 1e308", [T] * 5)  # float64 inf, not a 10-billion-digit integer
    check("length ** 10 ** 10 > 0", [T] * 5)
    check("9 ** 9 ** 9 ** 9 > 0", [T] * 5)
    assert time.perf_counter() - start < 1.0


def test_string_repetition_is_rejected_before_allocating() -> None:
    start = time.perf_counter()
    with pytest.raises(ExpressionError, match="'\\*' needs numbers, got text at column 5"):
        compile_expression('"a" * 10**9 == "a"')
    assert time.perf_counter() - start < 1.0


def test_long_input_is_rejected() -> None:
    text = "length > 0 and " * 150 + "true"
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert str(info.value).endswith("too long (2254 characters, at most 2000)")
    assert len(str(info.value)) < 200  # the text is abbreviated in the message
    compile_expression("length > 0 and " * 130 + "true")  # 1954 characters: fine


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("(" * 1000 + "true" + ")" * 1000, "too long (2004 characters, at most 2000)"),
        ("(" * 1000 + "true", "expression nests deeper than 64 levels at column 65"),
        ("(" * 500 + "true" + ")" * 500, "expression nests deeper than 64 levels at column 65"),
        ("(" * 65 + "true" + ")" * 65, "expression nests deeper than 64 levels at column 65"),
        ("not " * 400 + "true", "expression nests deeper than 64 levels at column 257"),
        ("-" * 1000 + "1 > 0", "expression nests deeper than 64 levels at column 65"),
        ("abs(" * 300 + "1" + ")" * 300, "expression nests deeper than 64 levels at column 260"),
        ("2 ** " * 300 + "1 > 0", "expression nests deeper than 64 levels at column 323"),
    ],
)
def test_deep_nesting_is_rejected_without_recursion_error(text: str, detail: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert str(info.value).startswith("bad expression ") and str(info.value).endswith(detail)


def test_nesting_up_to_the_limit_evaluates() -> None:
    check("(" * 64 + "true" + ")" * 64, [T] * 5)
    check("abs(" * 64 + "length" + ")" * 64 + " > 0", [T] * 5)
    inner = "length"  # each level nests 5 deep: parentheses, +, *, unary -, **
    for _ in range(12):
        inner = f"(0 + 1 * -({inner}) ** 1)"
    check(f"not false or id < 0 and {inner} > 0", [T, T, T, T, T])
    with pytest.raises(ExpressionError, match="nests deeper than 64 levels"):
        compile_expression(f"not false or id < 0 and (0 + 1 * -({inner}) ** 1) > 0")


def test_division_by_zero_does_not_crash() -> None:
    check("length / 0 > 1", [T] * 5)  # inf
    check("return / 0 > 0", [T, T, T, F, F])  # -inf and nan
    check("length // 0 == 0 and length % 0 == 0", [T] * 5)  # numpy integer convention
    check("seed % 0 == 0 or 0 / 0 == 0", [F] * 5)  # nan
    check("length * 9223372036854775807 != 0.5", [T] * 5)  # int64 overflow wraps quietly


def test_empty_columns_give_an_empty_mask() -> None:
    for text in ("return >= 200 and length < 500", "true", "seed % 2 == 0", "source == 'b'"):
        mask = evaluate_expression(text, columns(0))
        assert mask.dtype == np.bool_ and mask.shape == (0,)


def test_constant_expressions_give_a_full_mask() -> None:
    assert evaluate_expression("1 < 2", columns()).tolist() == [T] * 5
    assert evaluate_expression("false", {"length": np.arange(3)}).tolist() == [F] * 3
    with pytest.raises(ExpressionError, match=message("true", "no columns given")):
        evaluate_expression("true", {})


def test_mask_is_a_fresh_array() -> None:
    cols = columns()
    mask = evaluate_expression("terminated", cols)
    mask[:] = False
    assert cols["terminated"].tolist() == [T, F, T, F, F]


def test_columns_are_validated() -> None:
    cols = {"length": np.arange(5), "return": np.zeros(3)}
    detail = "columns differ in length (length=5, return=3)"
    with pytest.raises(ExpressionError, match=message("length > return", detail)):
        evaluate_expression("length > return", cols)
    with pytest.raises(ExpressionError, match="field 'length' is not a 1-d column"):
        evaluate_expression("length > 0", {"length": np.zeros((2, 2))})
    bad = np.array(["a", 1], dtype=object)
    with pytest.raises(ExpressionError, match="field 'source' holds object values"):
        evaluate_expression("source == 'a'", {"source": bad})
    unsigned = {"length": np.arange(3, dtype=np.uint8)}
    assert evaluate_expression("length > 1 and -length < 0", unsigned).tolist() == [F, F, T]


def test_compiled_expression_api() -> None:
    expr = compile_expression("return >= 200 and length < 500", fields=columns())
    assert isinstance(expr, Expression)
    assert expr.text == "return >= 200 and length < 500"
    assert expr.fields == frozenset({"return", "length"})
    assert repr(expr).startswith("Expression(text='return >= 200") and "_root" not in repr(expr)
    assert expr.evaluate(columns()).tolist() == [T, F, F, F, F]
    assert expr.evaluate(columns(2)).tolist() == [T, F]
    assert compile_expression("true").fields == frozenset()


def test_expression_error_is_a_usage_error() -> None:
    assert issubclass(ExpressionError, UsageError)
    assert ExpressionError("x").exit_code == 2
    with pytest.raises(ExpressionError, match="expected a string"):
        compile_expression(3)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.text(alphabet="lengthsourceid_ \n()[],.'\"\\<>=!+-*/%0123456789eE:;andortuiTF", max_size=40)
)
def test_any_text_parses_or_raises_expression_error(text: str) -> None:
    try:
        mask = evaluate_expression(text, columns())
    except ExpressionError as err:
        assert "\n" not in str(err)
    else:
        assert mask.dtype == np.bool_ and mask.shape == (5,)


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.recursive(
        st.sampled_from(["length", "id", "return", "seed", "1", "2.5", "-3", "0"]),
        lambda sub: st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), sub).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        max_leaves=12,
    ),
    st.sampled_from(["<", "<=", "==", "!=", ">", ">="]),
)
def test_arithmetic_never_warns_or_crashes(term: str, op: str) -> None:
    mask = evaluate_expression(f"{term} {op} 1", columns())
    assert mask.shape == (5,)


# -- 64-bit seeds and missing values ----------------------------------------------------------


def test_uint64_seeds_stay_exact() -> None:
    seeds = np.array([2**64 - 1, 2**63, 8382577565250890231, 4], np.uint64)
    got = evaluate_expression("seed % 2 == 0", {"seed": seeds})
    np.testing.assert_array_equal(got, [False, True, False, True])
    got = evaluate_expression("seed == 8382577565250890231", {"seed": seeds})
    np.testing.assert_array_equal(got, [False, False, True, False])
    got = evaluate_expression("seed // 2 ** 62 >= 2", {"seed": seeds})  # ** is float64
    np.testing.assert_array_equal(got, [True, True, False, False])
    got = evaluate_expression("seed > -1", {"seed": seeds})  # a negative side: float64
    np.testing.assert_array_equal(got, [True, True, True, True])
    small = np.array([3, 4], np.uint64)  # under 2**63: computed as int64
    np.testing.assert_array_equal(evaluate_expression("-seed < -3", {"seed": small}), [False, True])


def test_missing_values_behave_as_nan() -> None:
    expr = compile_expression("seed % 2 == 0")
    seeds = np.array([2, 0, 3], np.uint64)
    missing = {"seed": np.array([False, True, False])}
    np.testing.assert_array_equal(expr.evaluate({"seed": seeds}, missing), [True, False, False])
    np.testing.assert_array_equal(
        compile_expression("seed != 2").evaluate({"seed": seeds}, missing), [False, True, True]
    )
    np.testing.assert_array_equal(
        compile_expression("isnan(seed)").evaluate({"seed": seeds}, missing), [False, True, False]
    )
    np.testing.assert_array_equal(
        compile_expression("not seed in (0, 2)").evaluate({"seed": seeds}, missing),
        [False, True, True],
    )
    np.testing.assert_array_equal(
        compile_expression("min(seed, 1) < 5").evaluate({"seed": seeds}, missing),
        [True, False, True],
    )
