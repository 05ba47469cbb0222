"""Spaces: flatten nested values into named columns and back; serialize spaces to JSON and back.

This is the one place that knows how a Gymnasium space maps to storage columns:

- ``columns(space)`` lists the storage columns of a space (name, dtype, row shape);
- ``make_setter(space, store)`` returns a fast ``set(row, value)`` that writes one value into
  the column arrays held in ``store`` (the recorder's hot path);
- ``make_checker(space, role)`` returns ``check(value)`` refusing a value its columns cannot
  hold exactly (another shape, or a dtype cast that changes a value) with ``ValueMismatch``;
- ``make_batch_setter(space, store)`` does the same for a vector env's batched value (every
  leaf has a leading sub-env axis), scattering a chosen subset of sub-envs to given rows;
- ``unflatten(space, columns)`` rebuilds the nested value (dict / tuple / array / list[str]);
- ``space_to_json`` / ``space_from_json`` serialize spaces (Minari's schema, strict JSON).

Column names are the space's key path joined by ``/`` with each Dict key escaped, so a key
containing ``/`` cannot collide with a nested Dict. The root leaf of a non-composite space is
named ``""``. Text is stored as fixed-width UTF-8 bytes (``4 * max_length`` per row) plus an
``@len`` column, because variable-length strings are large and slow in HDF5.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import numpy as np
from gymnasium import spaces

from collector.errors import UnsupportedSpaceError

__all__ = [
    "Column",
    "check_supported",
    "columns",
    "escape_key",
    "iter_leaves",
    "join_name",
    "batch_item",
    "set_batch_rows",
    "ValueMismatch",
    "exact_value",
    "make_batch_setter",
    "make_checker",
    "make_leaf_checker",
    "make_setter",
    "minari_space_json",
    "space_from_json",
    "space_to_json",
    "unescape_key",
    "unflatten",
]

TEXT_LEN_SUFFIX = "@len"
SUPPORTED = "Box, Discrete, MultiDiscrete, MultiBinary, Text, Dict, Tuple"
# Minari writes Infinity/NaN tokens; strict JSON has none, so non-finite bounds become strings.
_NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}

Setter = Callable[[int, Any], None]
#: ``set(index, value, select)``: ``store[leaf][index] = leaf_of(value)[select]``.
BatchSetter = Callable[[Any, Any, Any], None]


@dataclass(frozen=True)
class Column:
    """One storage column: ``name`` inside its group, numpy ``dtype`` and per-row ``shape``."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


def escape_key(key: str) -> str:
    """Escape a Dict key so it is one safe HDF5 path segment.

    >>> escape_key("a/b"), escape_key(".x"), unescape_key(escape_key("50%@/"))
    ('a%2Fb', '%2Ex', '50%@/')
    """
    if key == "":
        return "%"
    out = key.replace("%", "%25").replace("/", "%2F").replace("@", "%40")
    return "%2E" + out[1:] if out.startswith(".") else out


def unescape_key(segment: str) -> str:
    """Invert ``escape_key``."""
    return "" if segment == "%" else unquote(segment)


def join_name(parent: str, segment: str) -> str:
    """Join a column name and one (already escaped) segment."""
    return f"{parent}/{segment}" if parent else segment


def _leaf_path(path: str) -> str:
    return repr(path) if path else "the root"


def check_supported(space: spaces.Space, role: str = "observation", _path: str = "") -> None:
    """Refuse, before any data is recorded, a space harvest cannot store.

    Raises:
        UnsupportedSpaceError: naming the role, the offending sub-space and its path.
    """
    if isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            if not isinstance(key, str):
                raise UnsupportedSpaceError(
                    f"{role} space has a Dict key {key!r} of type {type(key).__name__} at "
                    f"{_leaf_path(_path)}; harvest stores Dict spaces with str keys only"
                )
            check_supported(sub, role, join_name(_path, escape_key(key)))
    elif isinstance(space, spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            check_supported(sub, role, join_name(_path, str(i)))
    elif not isinstance(
        space,
        spaces.Box | spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary | spaces.Text,
    ):
        raise UnsupportedSpaceError(
            f"{role} space {type(space).__name__} at {_leaf_path(_path)} cannot be stored "
            f"({space}); supported spaces: {SUPPORTED}. Wrap the env to convert it, or pass "
            f"{role}_space= a supported space to DataCollector"
        )


def iter_leaves(space: spaces.Space, name: str = "") -> Iterator[tuple[str, spaces.Space]]:
    """``(column name, leaf space)`` of every non-Dict, non-Tuple leaf, in storage order."""
    if isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            yield from iter_leaves(sub, join_name(name, escape_key(key)))
    elif isinstance(space, spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            yield from iter_leaves(sub, join_name(name, str(i)))
    else:
        yield name, space


def _text_width(space: spaces.Text) -> int:
    return 4 * space.max_length  # UTF-8 needs at most 4 bytes a character


def columns(space: spaces.Space) -> list[Column]:
    """The storage columns of ``space``, in a stable order (Dict order, then Tuple order).

    >>> [c.name for c in columns(spaces.Dict(a=spaces.Discrete(2), b=spaces.Text(3)))]
    ['a', 'b', 'b@len']
    """
    check_supported(space)
    out: list[Column] = []
    for name, leaf in iter_leaves(space):
        if isinstance(leaf, spaces.Text):
            out.append(Column(name, np.dtype(np.uint8), (_text_width(leaf),)))
            out.append(Column(name + TEXT_LEN_SUFFIX, np.dtype(np.int32), ()))
        elif isinstance(leaf, spaces.Discrete):
            out.append(Column(name, np.dtype(leaf.dtype), ()))
        elif isinstance(leaf, spaces.MultiBinary):
            out.append(Column(name, np.dtype(np.int8), tuple(leaf.shape)))
        else:  # Box, MultiDiscrete
            out.append(Column(name, np.dtype(leaf.dtype), tuple(leaf.shape)))
    return out


class ValueMismatch(ValueError):
    """A value that its column cannot hold exactly; ``detail`` says which leaf and how.

    ``index`` is the first offending element's index (for a value refused element-wise);
    ``sub_env`` and ``step`` locate a mismatch found inside a vector env's sub-env (see
    ``collector.runners.vector``), where the recorder cannot see the value itself.
    """

    def __init__(
        self,
        detail: Any,
        *,
        index: tuple[int, ...] = (),
        sub_env: int | None = None,
        step: int | None = None,
    ) -> None:
        if isinstance(detail, ValueMismatch):  # AsyncVectorEnv re-raises ``type(e)(e)``
            detail, index, sub_env, step = detail.detail, detail.index, detail.sub_env, detail.step
        super().__init__(str(detail))
        self.detail = str(detail)
        self.index = index
        self.sub_env = sub_env
        self.step = step

    def __reduce__(self) -> Any:
        return (_value_mismatch, (self.detail, self.index, self.sub_env, self.step))


def _value_mismatch(
    detail: str, index: tuple[int, ...], sub_env: int | None, step: int | None
) -> ValueMismatch:
    return ValueMismatch(detail, index=index, sub_env=sub_env, step=step)


_NUMERIC = "biuf"
_EXACT_CASTS: dict[tuple[np.dtype, np.dtype], bool] = {}


def _always_exact(src: np.dtype, dst: np.dtype) -> bool:
    """True when every value of ``src`` is exactly a value of ``dst``.

    numpy calls int64 -> float64 "safe" although it rounds beyond 2**53: an integer as wide as
    the float is checked value by value instead.
    """
    key = (src, dst)
    exact = _EXACT_CASTS.get(key)
    if exact is None:
        exact = bool(np.can_cast(src, dst, "safe")) and not (
            src.kind in "iu" and dst.kind == "f" and src.itemsize >= dst.itemsize
        )
        _EXACT_CASTS[key] = exact
    return exact


def _describe(what: str, value: Any) -> str:
    text = repr(value)
    return f"{what} is {type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def exact_value(value: Any, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``value`` as an array that a column of ``dtype`` rows of ``shape`` holds exactly.

    The shape must match (no broadcasting); a dtype cast is allowed only when it changes no
    value (NaN stays NaN). ``what`` names the leaf in the error.

    >>> exact_value(7, np.dtype(np.uint8), (), "action")
    array(7, dtype=uint8)
    >>> exact_value([-1], np.dtype(np.uint8), (1,), "obs")
    Traceback (most recent call last):
    ...
    collector.spaces.ValueMismatch: obs value -1 at (0,) (int64) cannot be stored exactly as uint8

    Raises:
        ValueMismatch: another shape, a non-numeric dtype, or a value the cast would change.
    """
    if type(value) is np.ndarray:
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise ValueMismatch(_describe(what, value) + f", not an array ({e})") from None
    if arr.shape != shape:
        raise ValueMismatch(f"{what} has shape {arr.shape} where its space's is {shape}")
    src = arr.dtype
    if src == dtype:
        return arr
    if src.kind not in _NUMERIC or dtype.kind not in _NUMERIC:
        raise ValueMismatch(f"{what} has dtype {src} where its space's is {dtype}")
    if _always_exact(src, dtype):
        return arr
    with np.errstate(all="ignore"):
        out = arr.astype(dtype)
        back = out.astype(src)
    same = back == arr
    if src.kind == "f":
        same |= np.isnan(arr) & np.isnan(back)
    if dtype.kind in "iu":  # a wrapped value casts back to itself (int8 -1 <-> uint8 255)
        info = np.iinfo(dtype)
        # numpy compares integers of any two dtypes exactly; a float as a float
        same &= (arr >= info.min) & (arr <= info.max)
    if not same.all():
        bad = int(np.flatnonzero(~same.reshape(-1))[0])
        x = arr.reshape(-1)[bad].item()
        index = tuple(int(i) for i in np.unravel_index(bad, shape))
        at = f" at {index}" if shape else ""
        raise ValueMismatch(
            f"{what} value {x!r}{at} ({src}) cannot be stored exactly as {dtype}", index=index
        )
    return out


def _leaf_what(role: str, name: str) -> str:
    return f"{role} {name!r}" if name else role


def make_checker(space: spaces.Space, role: str, batch: int | None = None) -> Callable[[Any], None]:
    """Return ``check(value)``, raising ``ValueMismatch`` unless ``value`` is stored exactly.

    See ``exact_value``; ``batch``: a vector env's value of ``batch`` sub-envs.

    Arrays of the column's dtype and shape, and scalars of its type, pass at the cost of a
    few comparisons: the recording hot path calls it on every step.
    """
    return _checker(space, role, "", batch)


def _checker(space: spaces.Space, role: str, name: str, batch: int | None) -> Callable[[Any], None]:
    if isinstance(space, spaces.Dict):
        subs = [
            (key, _checker(sub, role, join_name(name, escape_key(key)), batch))
            for key, sub in space.spaces.items()
        ]

        def check_dict(value: Any) -> None:
            for key, sub_check in subs:
                try:
                    item = value[key]
                except (KeyError, TypeError, IndexError):
                    raise ValueMismatch(
                        _describe(_leaf_what(role, name), value) + f", without the key {key!r}"
                    ) from None
                sub_check(item)

        return check_dict
    if isinstance(space, spaces.Tuple):
        parts = [_checker(sub, role, join_name(name, str(i)), batch) for i, sub in enumerate(space)]

        def check_tuple(value: Any) -> None:
            try:
                items = list(value)
            except TypeError:
                items = None
            if items is None or len(items) != len(parts):
                raise ValueMismatch(
                    _describe(_leaf_what(role, name), value) + f", not {len(parts)} items"
                )
            for sub_check, item in zip(parts, items, strict=True):
                sub_check(item)

        return check_tuple
    what = _leaf_what(role, name)
    if isinstance(space, spaces.Text):
        width = _text_width(space)

        def check_text(value: Any) -> None:
            for text in [value] if batch is None else list(value):
                if not isinstance(text, str):
                    raise ValueMismatch(_describe(what, text) + ", not a str")
                if len(text.encode("utf-8")) > width:
                    raise ValueMismatch(
                        f"{what} is {len(text)} characters, over its space's max_length "
                        f"{space.max_length}"
                    )

        return check_text
    (column,) = columns(space)
    shape = column.shape if batch is None else (batch, *column.shape)
    return make_leaf_checker(column.dtype, shape, what)


def make_leaf_checker(dtype: np.dtype, shape: tuple[int, ...], what: str) -> Callable[[Any], None]:
    """``check(value)`` for one column of ``dtype`` rows of ``shape`` (see ``make_checker``)."""
    dtype = np.dtype(dtype)
    scalar = dtype.type if not shape else None
    python = (
        (float if dtype == np.float64 else bool if dtype.kind == "b" else None)
        if not shape
        else None
    )
    ndarray = np.ndarray
    # a Python int: a range check (np.asarray costs ~1 us a call); for a float column, the
    # range where every integer is exact (2**53 for float64)
    lo, hi = 1, 0
    if not shape and dtype.kind in "iu":
        lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
    elif not shape and dtype.kind == "f":
        hi = 2 ** (np.finfo(dtype).nmant + 1)
        lo = -hi
    exact_scalars: set[type] = set()  # numpy scalar types whose every value casts exactly

    def check_array(value: Any) -> None:
        cls = value.__class__
        if cls is ndarray:
            if value.dtype is dtype and value.shape == shape:
                return
        elif cls is scalar or cls is python or cls in exact_scalars:
            return
        elif cls is int:
            if lo <= value <= hi:
                return
        elif not shape and isinstance(value, np.generic) and _always_exact(value.dtype, dtype):
            exact_scalars.add(cls)
            return
        exact_value(value, dtype, shape, what)

    return check_array


def make_setter(space: spaces.Space, store: dict[str, np.ndarray]) -> Setter:
    """Return ``set(row, value)`` writing one nested ``value`` into ``store``'s column arrays.

    ``store`` maps column names to arrays with at least ``row + 1`` rows; the setter looks the
    arrays up on every call, so the caller may replace them (e.g. to grow) between calls.
    """
    return _setter(space, "", store)


def _setter(space: spaces.Space, name: str, store: dict[str, np.ndarray]) -> Setter:
    if isinstance(space, spaces.Dict):
        subs = [
            (key, _setter(sub, join_name(name, escape_key(key)), store))
            for key, sub in space.spaces.items()
        ]

        def set_dict(row: int, value: Any) -> None:
            for key, sub_set in subs:
                sub_set(row, value[key])

        return set_dict
    if isinstance(space, spaces.Tuple):
        parts = [_setter(sub, join_name(name, str(i)), store) for i, sub in enumerate(space)]

        def set_tuple(row: int, value: Any) -> None:
            for sub_set, item in zip(parts, value, strict=True):
                sub_set(row, item)

        return set_tuple
    if isinstance(space, spaces.Text):
        len_name = name + TEXT_LEN_SUFFIX

        def set_text(row: int, value: str) -> None:
            raw = value.encode("utf-8")
            dest = store[name][row]
            dest[:] = 0
            dest[: len(raw)] = np.frombuffer(raw, np.uint8)
            store[len_name][row] = len(raw)

        return set_text

    def set_array(row: int, value: Any) -> None:
        store[name][row] = value

    return set_array


def make_batch_setter(space: spaces.Space, store: dict[str, np.ndarray]) -> BatchSetter:
    """Return ``set(index, value, select)`` for batched values of ``space`` (a vector env's).

    Every leaf of ``value`` has a leading sub-env axis (Gymnasium's ``batch_space`` layout;
    Text leaves are tuples of strings). ``select`` picks sub-envs (an index array or a
    slice) and ``index`` is where their rows go in ``store``'s arrays (any numpy index, e.g.
    ``(env_rows, step_rows)`` for arrays shaped ``(num_envs, rows, ...)``).
    """
    return _batch_setter(space, "", store)


def _batch_setter(space: spaces.Space, name: str, store: dict[str, np.ndarray]) -> BatchSetter:
    if isinstance(space, spaces.Dict):
        subs = [
            (key, _batch_setter(sub, join_name(name, escape_key(key)), store))
            for key, sub in space.spaces.items()
        ]

        def set_dict(index: Any, value: Any, select: Any) -> None:
            for key, sub_set in subs:
                sub_set(index, value[key], select)

        return set_dict
    if isinstance(space, spaces.Tuple):
        parts = [_batch_setter(sub, join_name(name, str(i)), store) for i, sub in enumerate(space)]

        def set_tuple(index: Any, value: Any, select: Any) -> None:
            for sub_set, item in zip(parts, value, strict=True):
                sub_set(index, item, select)

        return set_tuple
    if isinstance(space, spaces.Text):
        len_name = name + TEXT_LEN_SUFFIX
        width = _text_width(space)

        def set_text(index: Any, value: Any, select: Any) -> None:
            chosen = np.asarray(value, dtype=object)[select].reshape(-1)
            raw = np.zeros((len(chosen), width), np.uint8)
            lengths = np.zeros(len(chosen), np.int32)
            for k, text in enumerate(chosen):
                data = str(text).encode("utf-8")
                raw[k, : len(data)] = np.frombuffer(data, np.uint8)
                lengths[k] = len(data)
            store[name][index] = raw
            store[len_name][index] = lengths

        return set_text

    def set_array(index: Any, value: Any, select: Any) -> None:
        store[name][index] = np.asarray(value)[select]

    return set_array


def batch_item(space: spaces.Space, value: Any, i: int) -> Any:
    """Sub-env ``i``'s value from a vector env's batched ``value`` of ``space``.

    Unlike ``gymnasium.vector.utils.iterate``, this handles Discrete leaves inside Dict and
    Tuple spaces.
    """
    if isinstance(space, spaces.Dict):
        return {k: batch_item(sub, value[k], i) for k, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(batch_item(sub, v, i) for sub, v in zip(space.spaces, value, strict=True))
    return value[i]


def set_batch_rows(space: spaces.Space, batch: Any, rows: Any, values: Any) -> None:
    """Write ``values`` (a batch of ``len(rows)``) into rows ``rows`` of ``batch``, in place.

    The inverse of ``batch_item(space, batch, rows)`` with an index array, for Box, Discrete,
    MultiDiscrete and MultiBinary leaves inside any Dict or Tuple nesting.
    """
    if isinstance(space, spaces.Dict):
        for k, sub in space.spaces.items():
            set_batch_rows(sub, batch[k], rows, values[k])
    elif isinstance(space, spaces.Tuple):
        for sub, b, v in zip(space.spaces, batch, values, strict=True):
            set_batch_rows(sub, b, rows, v)
    else:
        batch[rows] = values


def unflatten(space: spaces.Space, cols: dict[str, np.ndarray], name: str = "") -> Any:
    """Rebuild nested values from column arrays (all with the same number of rows).

    Returns a dict for Dict, a tuple for Tuple, ``list[str]`` for Text and an ndarray otherwise.
    """
    if isinstance(space, spaces.Dict):
        return {
            key: unflatten(sub, cols, join_name(name, escape_key(key)))
            for key, sub in space.spaces.items()
        }
    if isinstance(space, spaces.Tuple):
        return tuple(unflatten(sub, cols, join_name(name, str(i))) for i, sub in enumerate(space))
    if isinstance(space, spaces.Text):
        raw, lengths = cols[name], cols[name + TEXT_LEN_SUFFIX]
        return [bytes(raw[i, : lengths[i]]).decode("utf-8") for i in range(len(lengths))]
    return cols[name]


# --------------------------------------------------------------------------------------------
# JSON serialization (Minari's schema; strict JSON out, Minari's lenient JSON accepted in)


def _bound_to_json(arr: np.ndarray) -> Any:
    flat = arr.ravel()
    if flat.size and np.all(flat == flat[0]) and not np.isnan(flat[0]):
        return _scalar_to_json(flat[0])  # one value for all: image spaces stay small
    return _nested_to_json(arr.tolist())


def _scalar_to_json(x: Any) -> Any:
    x = x.item() if hasattr(x, "item") else x
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    return x


def _nested_to_json(x: Any) -> Any:
    if isinstance(x, list):
        return [_nested_to_json(v) for v in x]
    return _scalar_to_json(x)


def _nested_from_json(x: Any) -> Any:
    if isinstance(x, list):
        return [_nested_from_json(v) for v in x]
    return _NONFINITE.get(x, x) if isinstance(x, str) else x


def _bound_from_json(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    arr = np.asarray(_nested_from_json(value), dtype=np.float64 if dtype.kind == "f" else dtype)
    return np.broadcast_to(arr, shape).astype(dtype)


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """Serialize a space to a JSON-ready dict (no NaN/Infinity tokens).

    >>> space_to_json(spaces.Discrete(3, start=1))
    {'type': 'Discrete', 'dtype': 'int64', 'n': 3, 'start': 1}
    """
    check_supported(space)
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "dtype": str(space.dtype),
            "shape": list(space.shape),
            "low": _bound_to_json(space.low),
            "high": _bound_to_json(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {
            "type": "Discrete",
            "dtype": str(space.dtype),
            "n": int(space.n),
            "start": int(space.start),
        }
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "dtype": str(space.dtype),
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
        }
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": int(n) if np.ndim(n) == 0 else list(map(int, n))}
    if isinstance(space, spaces.Text):
        return {
            "type": "Text",
            "max_length": space.max_length,
            "min_length": space.min_length,
            "charset": "".join(sorted(space.character_set)),
        }
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "subspaces": {k: space_to_json(s) for k, s in space.items()}}
    return {"type": "Tuple", "subspaces": [space_to_json(s) for s in space.spaces]}


def minari_space_json(space: spaces.Space) -> dict[str, Any]:
    """Minari's schema for a space (``minari.serialization.serialize_space``, as a dict).

    The same as ``space_to_json`` except that Box bounds are full nested lists with infinite
    values kept as floats (written as ``Infinity`` tokens, as Minari does), and Discrete's
    dtype is always ``int64`` (Minari hard-codes it).

    >>> minari_space_json(spaces.Box(0.0, 1.0, (2,), np.float32))["high"]
    [1.0, 1.0]
    """
    out = space_to_json(space)
    if isinstance(space, spaces.Box):
        out["low"], out["high"] = space.low.tolist(), space.high.tolist()
    elif isinstance(space, spaces.Discrete):
        out["dtype"] = "int64"
    elif isinstance(space, spaces.Dict):
        out["subspaces"] = {k: minari_space_json(s) for k, s in space.items()}
    elif isinstance(space, spaces.Tuple):
        out["subspaces"] = [minari_space_json(s) for s in space.spaces]
    return out


def space_from_json(data: dict[str, Any] | str) -> spaces.Space:
    """Rebuild a space from ``space_to_json`` output or Minari's serialized form (str or dict).

    Raises:
        UnsupportedSpaceError: for an unknown ``type``.
    """
    if isinstance(data, str):
        data = json.loads(data)  # Python's json accepts Minari's Infinity/NaN tokens
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        shape = tuple(data["shape"])
        return spaces.Box(
            low=_bound_from_json(data["low"], shape, dtype),
            high=_bound_from_json(data["high"], shape, dtype),
            shape=shape,
            dtype=dtype,
        )
    if kind == "Discrete":
        return spaces.Discrete(
            int(data["n"]), start=int(data.get("start", 0)), dtype=data.get("dtype", "int64")
        )
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(
            np.array(data["nvec"]), dtype=data.get("dtype", "int64"), start=data.get("start")
        )
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Text":
        return spaces.Text(
            max_length=int(data["max_length"]),
            min_length=int(data.get("min_length", 1)),
            charset=data["charset"],
        )
    if kind == "Dict":
        subs = data["subspaces"]
        # gymnasium sorts plain-dict keys; pass pairs to keep the recorded order
        return spaces.Dict([(k, space_from_json(v)) for k, v in subs.items()])
    if kind == "Tuple":
        return spaces.Tuple([space_from_json(v) for v in data["subspaces"]])
    raise UnsupportedSpaceError(
        f"cannot rebuild a space of type {kind!r} from JSON; supported: {SUPPORTED}"
    )
