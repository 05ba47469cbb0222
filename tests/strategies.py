"""Hypothesis strategies and checks shared by the property tests (spaces, dataset ids)."""

from __future__ import annotations

import re

import numpy as np
from gymnasium import spaces
from hypothesis import strategies as st

INF = np.inf

#: The dataset id grammar, ``[namespace/...]name-vN``, written independently of ``format``.
ID_GRAMMAR = re.compile(r"(?:[A-Za-z0-9_-]+/)*[A-Za-z0-9_-]+-v[0-9]+", re.ASCII)

#: Any text, id-like text, valid ids and valid ids behind a path prefix.
ID_TEXT = st.one_of(
    st.text(max_size=24),
    st.text(alphabet="ab_-/.v0123\\ \n\t:~", max_size=16),
    st.from_regex(ID_GRAMMAR, fullmatch=True),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(["", "..", "/", "./", "../", "a/../", "ns/./", "~/", "\\"]),
        st.from_regex(ID_GRAMMAR, fullmatch=True),
    ),
)


def assert_same_space(actual: spaces.Space, expected: spaces.Space) -> None:
    """Stricter than ``==``: exact bounds (Box ``==`` uses allclose), dtypes, Dict key order."""
    assert type(actual) is type(expected)
    assert actual == expected
    if isinstance(expected, spaces.Dict):
        assert list(actual.spaces) == list(expected.spaces)  # Dict ``==`` ignores order
        for key in expected.spaces:
            assert_same_space(actual[key], expected[key])
    elif isinstance(expected, spaces.Tuple):
        assert len(actual.spaces) == len(expected.spaces)
        for a, e in zip(actual.spaces, expected.spaces, strict=True):
            assert_same_space(a, e)
    elif isinstance(expected, spaces.Box):
        assert actual.dtype == expected.dtype
        assert actual.shape == expected.shape
        assert actual.low.dtype == expected.low.dtype
        assert actual.high.dtype == expected.high.dtype
        assert np.array_equal(actual.low, expected.low)
        assert np.array_equal(actual.high, expected.high)
        assert np.array_equal(actual.bounded_below, expected.bounded_below)
        assert np.array_equal(actual.bounded_above, expected.bounded_above)
    elif isinstance(expected, spaces.Discrete):
        assert actual.dtype == expected.dtype
        assert int(actual.n) == int(expected.n)
        assert int(actual.start) == int(expected.start)
    elif isinstance(expected, spaces.MultiDiscrete):
        assert actual.dtype == expected.dtype
        assert np.array_equal(actual.nvec, expected.nvec)
        assert np.array_equal(actual.start, expected.start)
    elif isinstance(expected, spaces.MultiBinary):
        assert actual.shape == expected.shape
    elif isinstance(expected, spaces.Text):
        assert actual.character_set == expected.character_set
        assert (actual.min_length, actual.max_length) == (expected.min_length, expected.max_length)


BOX_DTYPES = [np.float32, np.float64, np.int32, np.uint8]


@st.composite
def boxes(draw: st.DrawFn) -> spaces.Box:
    dtype = np.dtype(draw(st.sampled_from(BOX_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
    size = int(np.prod(shape, dtype=np.int64))
    if dtype.kind == "f":
        width = dtype.itemsize * 8
        finite = st.floats(allow_nan=False, allow_infinity=False, width=width)
        lo_el = st.one_of(finite, st.just(-INF))
        hi_el = st.one_of(finite, st.just(INF))
    else:
        info = np.iinfo(dtype)
        lo_el = hi_el = st.integers(int(info.min), int(info.max))
    a = np.array(draw(st.lists(lo_el, min_size=size, max_size=size)), dtype=dtype)
    b = np.array(draw(st.lists(hi_el, min_size=size, max_size=size)), dtype=dtype)
    low, high = np.minimum(a, b).reshape(shape), np.maximum(a, b).reshape(shape)
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


@st.composite
def leaf_spaces(draw: st.DrawFn) -> spaces.Space:
    """One Box, Discrete, MultiDiscrete, MultiBinary or Text space with drawn parameters."""
    kind = draw(st.sampled_from(["box", "discrete", "multidiscrete", "multibinary", "text"]))
    if kind == "box":
        return draw(boxes())
    if kind == "discrete":
        dtype = draw(st.sampled_from([np.int64, np.int32]))
        return spaces.Discrete(
            draw(st.integers(1, 2**31 - 1)), start=draw(st.integers(-(2**20), 2**20)), dtype=dtype
        )
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    size = int(np.prod(shape))
    if kind == "multidiscrete":
        nvec = np.array(draw(st.lists(st.integers(1, 1000), min_size=size, max_size=size)))
        start = np.array(draw(st.lists(st.integers(-1000, 1000), min_size=size, max_size=size)))
        return spaces.MultiDiscrete(nvec.reshape(shape), start=start.reshape(shape))
    if kind == "multibinary":
        return spaces.MultiBinary(draw(st.sampled_from([size, list(shape)])))
    chars = st.characters(exclude_categories=("Cs",))
    charset = draw(st.lists(chars, min_size=1, max_size=8, unique=True))
    max_length = draw(st.integers(1, 8))
    min_length = draw(st.integers(0, max_length))
    return spaces.Text(max_length, min_length=min_length, charset="".join(charset))


#: Arbitrarily nested Dict/Tuple spaces over every leaf kind harvest stores; Dict keys are
#: any text, in drawn order.
NESTED_SPACES = st.recursive(
    leaf_spaces(),
    lambda sub: st.one_of(
        st.lists(sub, min_size=1, max_size=3).map(lambda xs: spaces.Tuple(tuple(xs))),
        st.lists(
            st.tuples(st.text(max_size=6), sub), min_size=1, max_size=3, unique_by=lambda kv: kv[0]
        ).map(spaces.Dict),
    ),
    max_leaves=6,
)
