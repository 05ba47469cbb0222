"""The manifest ``metadata.json``: reading, checking, sealing, and the episode-id maps.

Everything read from a manifest is hostile: ``check_metadata`` bounds every field before use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from collector.errors import (
    CorruptDatasetError,
    DatasetNotFoundError,
    FormatVersionError,
    UnsupportedSpaceError,
    UsageError,
)
from collector.redact import redact
from collector.storage.batch import json_default
from collector.storage.codecs import parse_compression
from collector.storage.ids import DATA_DIR, METADATA_FILE, SHARD_FILE_RE, index_name
from collector.storage.text import human_size

__all__ = [
    "AUTHOR_FIELDS",
    "FORMAT_VERSION",
    "MANIFEST_SHA256",
    "MAX_SPACE_LEAVES",
    "MAX_STEP_BYTES",
    "METADATA_MAX_BYTES",
    "METADATA_MAX_DEPTH",
    "UNSEALED_FORMAT_VERSION",
    "check_metadata",
    "dataset_files",
    "decoded_bytes",
    "dumps_metadata",
    "id_map_runs",
    "index_files",
    "id_ranges",
    "ids_from_ranges",
    "loads_metadata",
    "manifest_sha256",
    "map_shard_ids",
    "new_metadata",
    "read_metadata",
    "read_metadata_bytes",
    "seal_metadata",
    "stored_bytes",
]


#: 2: ``metadata.json`` carries ``manifest_sha256`` (issue 16). Version 1 manifests (no
#: checksum) are still read, and sealed by their next commit.
FORMAT_VERSION: Final = 2
#: The newest format whose manifests carry no checksum.
UNSEALED_FORMAT_VERSION: Final = 1
#: The manifest's own checksum: sha256 of the canonical JSON of every other field
#: (``manifest_sha256``). A later format that computes it otherwise must use another key.
MANIFEST_SHA256: Final = "manifest_sha256"
#: ``metadata.json`` is refused unread above this size (over 100,000 shards).
METADATA_MAX_BYTES: Final = 64 << 20
#: Deepest nesting of lists and objects in ``metadata.json``.
METADATA_MAX_DEPTH: Final = 64
#: Largest step (observation plus action, as stored) a manifest may declare, and most leaves.
MAX_STEP_BYTES: Final = 256 << 20
MAX_SPACE_LEAVES: Final = 10_000


def dumps_metadata(meta: dict[str, Any]) -> str:
    """Strict JSON (no NaN/Infinity) for ``metadata.json``."""
    return json.dumps(meta, indent=1, allow_nan=False, default=json_default) + "\n"


def seal_metadata(meta: Mapping[str, Any]) -> str:
    """``metadata.json`` text for ``meta`` with its ``manifest_sha256`` set (what a commit writes).

    The checksum covers the JSON as a reader will parse it (numpy values, tuples and sets as
    plain JSON), so any reader recomputes it from what it parsed, whatever the whitespace.

    >>> text = seal_metadata({"format_version": FORMAT_VERSION, "a": (1, 2)})
    >>> json.loads(text)[MANIFEST_SHA256] == manifest_sha256(json.loads(text))
    True
    """
    # parsed as a reader will see it; without indent, json's C encoder does this part
    body = json.loads(
        json.dumps(
            {k: v for k, v in meta.items() if k != MANIFEST_SHA256},
            allow_nan=False,
            default=json_default,
        )
    )
    body[MANIFEST_SHA256] = manifest_sha256(body)
    return dumps_metadata(body)


def manifest_sha256(meta: Mapping[str, Any]) -> str:
    """The checksum of a parsed manifest: sha256 of the canonical JSON of all other fields.

    Canonical: keys sorted, no whitespace, ASCII only (``json.dumps`` of what was parsed), so
    only a change of the parsed content changes it.
    """
    body = {k: v for k, v in meta.items() if k != MANIFEST_SHA256}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_metadata(path: str | os.PathLike[str], dataset_id: str | None = None) -> dict[str, Any]:
    """Read and check ``<path>/metadata.json`` (Minari's lenient JSON is accepted).

    Raises:
        DatasetNotFoundError: no dataset at ``path``.
        CorruptDatasetError: the file is damaged or hostile (``loads_metadata``).
        FormatVersionError: written by a newer harvest.
    """
    file = Path(path) / METADATA_FILE
    return loads_metadata(read_metadata_bytes(path, dataset_id), str(file), dataset_id or str(path))


def read_metadata_bytes(path: str | os.PathLike[str], dataset_id: str | None = None) -> bytes:
    """The raw bytes of ``<path>/metadata.json`` (what a push publishes, unparsed).

    At most ``METADATA_MAX_BYTES + 1`` bytes are read: a larger file is refused by
    ``loads_metadata`` without being read whole.

    Raises:
        DatasetNotFoundError: no dataset at ``path``.
    """
    try:
        with open(Path(path) / METADATA_FILE, "rb") as f:
            return f.read(METADATA_MAX_BYTES + 1)
    except FileNotFoundError as e:
        raise DatasetNotFoundError(
            f"no dataset {dataset_id or str(path)!r} at {path} (no {METADATA_FILE}); check the "
            "id and $HARVEST_DATASETS, or collect it first",
            dataset_id=dataset_id,
        ) from e


_RESTORE: Final = (
    "restore it from a copy or a remote (curate pull ID --overwrite), or re-collect the dataset"
)


def loads_metadata(data: bytes, source: str, label: str) -> dict[str, Any]:
    """Parse and check ``metadata.json`` bytes read from ``source`` (a file or remote URI).

    The one gate every manifest passes (local open, writer, verify, list, pull, push): size
    cap, JSON, nesting depth, the ``manifest_sha256`` seal (version 1 manifests have none), the
    format version, then the schema (``check_metadata``).

    Raises:
        CorruptDatasetError: too large, not UTF-8 JSON, not an object, too deep, not matching
            its checksum, or failing the schema.
        FormatVersionError: written by a newer harvest.
    """
    if len(data) > METADATA_MAX_BYTES:
        raise CorruptDatasetError(
            f"{source} is larger than {human_size(METADATA_MAX_BYTES)}, the most a manifest may "
            f"be; {_RESTORE}"
        )
    try:
        meta = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorruptDatasetError(f"{source} is not UTF-8 text ({e.reason}); {_RESTORE}") from e
    except json.JSONDecodeError as e:
        raise CorruptDatasetError(
            f"{source} is not valid JSON ({e.msg} at line {e.lineno}); {_RESTORE}"
        ) from e
    except (ValueError, RecursionError) as e:  # a 5,000-digit number, 5,000-deep nesting
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
        raise CorruptDatasetError(f"{source} is not a valid manifest ({reason}); {_RESTORE}") from e
    if not isinstance(meta, dict):
        raise CorruptDatasetError(f"{source} does not hold a JSON object; {_RESTORE}")
    if _depth(meta) > METADATA_MAX_DEPTH:
        raise CorruptDatasetError(
            f"{source} nests lists and objects deeper than {METADATA_MAX_DEPTH} levels; {_RESTORE}"
        )
    version = meta.get("format_version")
    seal = meta.get(MANIFEST_SHA256)
    if seal is not None and seal != manifest_sha256(meta):
        raise CorruptDatasetError(
            f"{source} does not match its {MANIFEST_SHA256}: it was damaged or edited by hand; "
            f"{_RESTORE}"
        )
    if type(version) is int and version > FORMAT_VERSION:
        raise FormatVersionError(
            f"dataset {label!r} uses format version {version}, newer than this harvest reads "
            f"({FORMAT_VERSION}); upgrade harvest"
        )
    if seal is None and not (type(version) is int and version <= UNSEALED_FORMAT_VERSION):
        # a flip in the key's name lands here: only version 1 manifests may lack the seal
        raise CorruptDatasetError(
            f"{source} has no {MANIFEST_SHA256} (format_version {version!r} needs one): it was "
            f"damaged or edited by hand; {_RESTORE}"
        )
    check_metadata(meta, source)
    return meta


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, counted up to ``METADATA_MAX_DEPTH + 1``.

    Iterative, and bounding what code that walks the manifest later may recurse through.
    """
    depth, level = 0, [value]
    while level and depth <= METADATA_MAX_DEPTH:
        depth += 1
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return depth


_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_ID_LIMIT: Final = 1 << 53
_SPACE_DTYPE: Final = re.compile(r"[a-z0-9<>|=]{1,10}")
_INFO_DTYPE: Final = re.compile(r"[<>|=]?(?:b1|[iu][1248]|f[248]|c(?:8|16)|[SU][0-9]{1,6})")
_SCORE_FIELDS: Final = ("ref_min_score", "ref_max_score", "created", "updated")


def _is_int(value: Any, lo: int = 0, hi: int = _ID_LIMIT) -> bool:
    return type(value) is int and lo <= value <= hi


def _is_compression(value: Any) -> bool:
    """Whether a shard entry's ``compression`` is one ``storage.compression`` accepts."""
    if not isinstance(value, str):
        return False
    try:
        parse_compression(value)
    except UsageError:
        return False
    return True


def check_metadata(meta: Mapping[str, Any], source: str) -> None:
    """Check a parsed manifest's schema before anything uses it (issue 16 item 6).

    Types, ranges and sizes of every field readers use; the spaces' sizes before any array is
    allocated (``MAX_STEP_BYTES``); the shard list's consistency: each file once, no episode id
    in two shards, totals that add up.

    Raises:
        CorruptDatasetError: naming ``source`` and the first bad field.
    """

    def bad(what: str) -> CorruptDatasetError:
        return CorruptDatasetError(f"{source}: {what}; {_RESTORE}")

    if not _is_int(meta.get("format_version"), 1):
        raise bad("format_version must be a positive integer")
    if not isinstance(meta.get("dataset_id", ""), str):
        raise bad("dataset_id must be text")
    if not isinstance(meta.get("fingerprint"), str) or not _HEX64.fullmatch(meta["fingerprint"]):
        raise bad("fingerprint must be 64 hex digits")
    for key in ("total_episodes", "total_steps", "dataset_bytes", "next_shard_seq"):
        if (key in meta or key.startswith("total")) and not _is_int(meta.get(key)):
            raise bad(f"{key} must be a count (a non-negative integer), not {meta.get(key)!r:.40}")
    for key in _SCORE_FIELDS:  # Minari's lenient JSON may hold NaN scores
        if type(meta.get(key)) not in (int, float, type(None)):
            raise bad(f"{key} must be a number")
    if not isinstance(meta.get("record_infos", False), bool):
        raise bad("record_infos must be true or false")
    for key in ("provenance", "lineage", "env_spec", "eval_env_spec", "ref_scores"):
        if not isinstance(meta.get(key), dict | None):
            raise bad(f"{key} must be an object or null")
    requirements = meta.get("requirements") or []
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise bad("requirements must be a list of text")
    _check_env_specs(meta, bad)
    _check_spaces(meta, bad)
    _check_shards(meta, bad)


def _check_env_specs(meta: Mapping[str, Any], bad: Callable[[str], Exception]) -> None:
    from gymnasium.envs.registration import EnvSpec

    for key in ("env_spec", "eval_env_spec"):
        spec = meta.get(key)
        if spec is None:
            continue
        if not isinstance(spec.get("id"), str):
            raise bad(f"{key} has no id")
        try:  # builds the dataclass only: nothing is imported or called
            EnvSpec.from_json(json.dumps({"additional_wrappers": [], **spec}))
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise bad(f"{key} is not a Gymnasium EnvSpec ({reason})") from None


def _check_spaces(meta: Mapping[str, Any], bad: Callable[[str], Exception]) -> None:
    leaves: list[int] = []
    total = 0
    for key in ("observation_space", "action_space"):
        if not isinstance(meta.get(key), dict):
            raise bad(f"{key} must be an object")
        total += _space_bytes(meta[key], key, leaves, bad)
    if total > MAX_STEP_BYTES:
        raise bad(f"its spaces need {human_size(total)} a step, over {human_size(MAX_STEP_BYTES)}")
    for key in ("observation_space", "action_space"):
        # sizes are bounded now; gymnasium checks the rest (bounds, dtypes, values)
        try:
            why = _space_error(json.dumps(meta[key], sort_keys=True))
        except (TypeError, ValueError) as e:  # not JSON (a manifest in memory only)
            why = str(e)[:200]
        if why is not None:
            raise bad(f"{key} is not a valid space ({why})")


@functools.lru_cache(maxsize=64)
def _space_error(text: str) -> str | None:
    """Why the space JSON ``text`` is not a valid space (None: it is).

    Cached: building a frame space (a 210x160x3 Box) costs ~2 ms of numpy calls, at every
    commit of a run and every open of its manifest (issue 19); the answer depends on the
    text alone.
    """
    from collector.spaces import space_from_json

    try:
        space_from_json(json.loads(text))
    except (
        UnsupportedSpaceError, ValueError, TypeError, KeyError, OverflowError, AssertionError
    ) as e:  # fmt: skip
        return str(e).splitlines()[0][:200]
    return None


def decoded_bytes(meta: Mapping[str, Any], entry: Mapping[str, Any]) -> int:
    """Bytes a shard's rows take decoded (``meta`` checked by ``check_metadata``).

    What a shard's size is judged by when deciding whether it is small enough to merge: its
    bytes on disk say little once frames compress 100-fold, and re-encoding a large window
    costs far more than it saves (issue 19 item 4).
    """

    def bad(message: str) -> Exception:  # unreachable for a checked manifest
        return CorruptDatasetError(f"{meta.get('dataset_id')}: {message}")

    obs = _space_bytes(meta["observation_space"], "observation_space", [], bad)
    act = _space_bytes(meta["action_space"], "action_space", [], bad)
    info = 0
    for spec in (entry.get("info_schema") or {}).values():
        info += np.dtype(spec["dtype"]).itemsize * math.prod(spec["shape"]) + 1  # + its mask
    step = act + 8 + 1 + 1  # reward (float64), terminated, truncated
    return int(entry["obs_rows"]) * (obs + info) + int(entry["step_rows"]) * step


def _count_dims(value: Any, what: str, bad: Callable[[str], Exception], ndim: int = 32) -> int:
    """Elements of a shape list (each dimension a count), refusing more than ``MAX_STEP_BYTES``."""
    if not isinstance(value, list) or len(value) > ndim or not all(_is_int(d) for d in value):
        raise bad(f"{what} must be a list of at most {ndim} non-negative integers")
    n = 1
    for d in value:
        n = min(n * d, MAX_STEP_BYTES + 1)
    return n


def _nested_shape(value: Any) -> tuple[int, ...] | None:
    """Shape of a rectangular nested list (None when ragged); scalars have shape ()."""
    if not isinstance(value, list):
        return None if isinstance(value, dict) else ()
    shapes = {_nested_shape(v) for v in value}
    if len(shapes) > 1 or None in shapes:
        return None
    return (len(value), *(shapes.pop() if shapes else ()))


def _space_bytes(data: Any, where: str, leaves: list[int], bad: Callable[[str], Exception]) -> int:
    """Bytes a step of the space takes as stored; checks types and sizes, allocates nothing."""
    if not isinstance(data, dict):
        raise bad(f"{where} must be an object")
    kind = data.get("type")
    if kind in ("Dict", "Tuple"):
        subs = data.get("subspaces")
        if not isinstance(subs, dict if kind == "Dict" else list):
            raise bad(f"{where}.subspaces must be an {'object' if kind == 'Dict' else 'array'}")
        items = subs.items() if isinstance(subs, dict) else enumerate(subs)
        return sum(_space_bytes(s, f"{where}.{k}", leaves, bad) for k, s in items)
    leaves.append(1)
    if len(leaves) > MAX_SPACE_LEAVES:
        raise bad(f"its spaces have more than {MAX_SPACE_LEAVES:,} leaves")
    itemsize = 8
    if kind in ("Box", "Discrete", "MultiDiscrete"):
        dtype = data.get("dtype", "int64")
        ok = isinstance(dtype, str) and _SPACE_DTYPE.fullmatch(dtype)
        try:
            dt = np.dtype(dtype) if ok else None
        except TypeError:
            dt = None
        if dt is None or dt.kind not in ("biuf" if kind == "Box" else "iu") or dt.itemsize > 8:
            raise bad(f"{where}.dtype {dtype!r:.40} is not a supported number type")
        itemsize = dt.itemsize
    if kind == "Box":
        n = _count_dims(data.get("shape"), f"{where}.shape", bad)
        if n * itemsize > MAX_STEP_BYTES:
            raise bad(f"{where} needs over {human_size(MAX_STEP_BYTES)} a step")
        for bound in ("low", "high"):
            value = data.get(bound)
            if isinstance(value, list):
                if _nested_shape(value) != tuple(data["shape"]):
                    raise bad(f"{where}.{bound} does not have the space's shape")
            elif not isinstance(value, int | float | str) or isinstance(value, bool):
                raise bad(f"{where}.{bound} must be a number or a nested list of numbers")
        return n * itemsize
    if kind == "Discrete":
        if not _is_int(data.get("n"), 1, 2**63 - 1) or not _is_int(
            data.get("start", 0), -(2**63), 2**63 - 1
        ):
            raise bad(f"{where}.n must be a positive integer and start an integer")
        return itemsize
    if kind in ("MultiDiscrete", "MultiBinary"):
        key = "nvec" if kind == "MultiDiscrete" else "n"
        value = data.get(key)
        if kind == "MultiBinary" and _is_int(value, 1):
            return min(value, MAX_STEP_BYTES + 1)
        shape = _nested_shape(value) if isinstance(value, list) else None
        if kind == "MultiBinary" and shape is not None:
            return _count_dims(value, f"{where}.n", bad)
        if shape is None or len(shape) > 32:
            raise bad(f"{where}.{key} must be a (nested) list of positive integers")
        return _count_dims(list(shape), f"{where}.{key}", bad) * itemsize
    if kind == "Text":
        hi, lo = data.get("max_length"), data.get("min_length", 1)
        if not _is_int(hi, 1, MAX_STEP_BYTES // 4) or not _is_int(lo, 0, hi):
            raise bad(f"{where}.max_length must be a positive integer, min_length up to it")
        if not isinstance(data.get("charset"), str) or not data["charset"]:
            raise bad(f"{where}.charset must be non-empty text")
        return 4 * hi + 8
    raise bad(f"{where}.type {kind!r:.40} is not a supported space")


def _check_shards(meta: Mapping[str, Any], bad: Callable[[str], Exception]) -> None:
    shards = meta.get("shards")
    if not isinstance(shards, list):
        raise bad("shards must be a list")
    files: set[str] = set()
    ranges: list[tuple[int, int, str]] = []
    totals = {"episodes": 0, "step_rows": 0, "bytes": 0}
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict):
            raise bad(f"shards[{i}] must be an object")
        name = entry.get("file")
        if not isinstance(name, str) or SHARD_FILE_RE.fullmatch(name) is None:
            raise bad(f"manifest names shard file {name!r:.80}, not a plain shard-*.h5 name")
        if name in files:
            raise bad(f"shard {name} is listed twice")
        files.add(name)
        if not isinstance(entry.get("sha256"), str) or not _HEX64.fullmatch(entry["sha256"]):
            raise bad(f"shard {name} has no valid sha256")
        for key in ("bytes", "episodes", "obs_rows", "step_rows"):
            if not _is_int(entry.get(key), 1 if key == "bytes" else 0, 1 << 62):
                raise bad(f"shard {name} has no valid {key}")
            if key != "obs_rows":
                totals[key] += entry[key]
        if entry["obs_rows"] != entry["step_rows"] + entry["episodes"]:
            raise bad(f"shard {name}: obs_rows is not step_rows plus episodes")
        if not _is_int(entry.get("id_offset", 0), -_ID_LIMIT):
            raise bad(f"shard {name} has no valid id_offset")
        runs = entry.get("id_map")
        if runs is not None and not (
            isinstance(runs, list)
            and all(
                isinstance(r, list) and len(r) == 3 and all(_is_int(x, -_ID_LIMIT) for x in r)
                for r in runs
            )
        ):
            raise bad(f"shard {name}: id_map must be a list of [start, stop, new start] runs")
        own = entry.get("id_ranges")
        if not isinstance(own, list) or not all(
            isinstance(r, list)
            and len(r) == 2
            and all(_is_int(x, -_ID_LIMIT) for x in r)
            and r[0] < r[1]
            for r in own
        ):
            raise bad(f"shard {name}: id_ranges must be a list of [start, stop) ranges")
        if sum(b - a for a, b in own) != entry["episodes"]:
            raise bad(f"shard {name}: id_ranges do not hold its {entry['episodes']} episodes")
        ranges.extend((a, b, name) for a, b in own)
        if not _is_compression(entry.get("compression", "none")):
            raise bad(f"shard {name}: compression must be a storage.compression value")
        _check_index(entry, name, bad)
        _check_info_schema(entry.get("info_schema"), name, bad)
    ranges.sort()
    for (_, stop, first), (start, _, second) in zip(ranges, ranges[1:], strict=False):
        if start < stop:
            where = "twice in" if first == second else f"in {first} and"
            raise bad(f"episode id {start} is {where} {second}")
    for key, part in (("total_episodes", "episodes"), ("total_steps", "step_rows")):
        if meta[key] != totals[part]:
            raise bad(f"{key} {meta[key]} differs from the shards' sum ({totals[part]})")
    if "dataset_bytes" in meta and meta["dataset_bytes"] != totals["bytes"]:
        raise bad(f"dataset_bytes {meta['dataset_bytes']} differs from the shards' sum")


def _check_index(entry: Mapping[str, Any], name: str, bad: Callable[[str], Exception]) -> None:
    """A shard's ``index`` field (its index file, ``storage.index``): absent, or well formed."""
    index = entry.get("index")
    if index is None:
        return
    if not (
        isinstance(index, dict)
        and index.get("file") == index_name(name)
        and isinstance(index.get("sha256"), str)
        and _HEX64.fullmatch(index["sha256"])
        and _is_int(index.get("bytes"), 1, 1 << 62)
        and _is_int(index.get("rows"), entry["episodes"], 1 << 62)
    ):
        raise bad(f"shard {name}: index must name {index_name(name)} with its sha256, bytes, rows")


def _check_info_schema(schema: Any, name: str, bad: Callable[[str], Exception]) -> None:
    if schema is None:
        return
    if not isinstance(schema, dict) or len(schema) > MAX_SPACE_LEAVES:
        raise bad(f"shard {name}: info_schema must be an object of at most {MAX_SPACE_LEAVES:,}")
    total = 0
    for key, spec in schema.items():
        dtype = spec.get("dtype") if isinstance(spec, dict) else None
        if not isinstance(dtype, str) or _INFO_DTYPE.fullmatch(dtype) is None:
            raise bad(f"shard {name}: info {key!r:.40} has no supported dtype")
        n = _count_dims(spec.get("shape"), f"shard {name}: info {key!r:.40} shape", bad)
        total += n * np.dtype(dtype).itemsize
        if total > MAX_STEP_BYTES:
            raise bad(f"shard {name}: its infos need more than {human_size(MAX_STEP_BYTES)} a step")


def dataset_files(meta: Mapping[str, Any], label: str) -> list[tuple[str, str, int]]:
    """``(relative path, sha256, bytes)`` of every shard a manifest lists, in manifest order.

    The one place that turns manifest entries into paths, so a hostile ``metadata.json`` (from a
    remote, say) cannot name a file outside the dataset's ``data/`` folder.

    Raises:
        CorruptDatasetError: an entry without a plain shard file name, sha256 or size.
    """
    out = []
    for entry in meta.get("shards", []):
        name = entry.get("file") if isinstance(entry, Mapping) else None
        sha = entry.get("sha256") if isinstance(entry, Mapping) else None
        size = entry.get("bytes") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or SHARD_FILE_RE.fullmatch(name) is None:
            raise CorruptDatasetError(
                f"{label}: manifest names shard file {name!r}, not a plain shard-*.h5 name; "
                "the metadata.json is corrupt or hostile"
            )
        if not isinstance(sha, str) or re.fullmatch(r"[0-9a-f]{64}", sha) is None:
            raise CorruptDatasetError(f"{label}: shard {name} has no valid sha256 in metadata.json")
        if not isinstance(size, int) or size < 0:
            raise CorruptDatasetError(f"{label}: shard {name} has no valid size in metadata.json")
        out.append((f"{DATA_DIR}/{name}", sha, size))
    return out


def stored_bytes(meta: Mapping[str, Any]) -> int:
    """Bytes of the files a commit lists: its shards and their index files.

    What ``du`` says of the dataset's ``data/`` folder once a run has ended: the size
    ``curate list``, ``curate show`` and dataset cards print. ``dataset_bytes`` counts the
    shards alone, which for short episodes is ~20% less (an index file holds ~100 bytes an
    episode; CartPole's shards ~420). A field that is not a count counts 0: a listing
    must not fail on one odd manifest (``check_metadata`` refuses it where it matters).
    """

    def count(value: Any) -> int:
        return value if _is_int(value) else 0

    shards = meta.get("shards")
    indexes = (
        [e.get("index") for e in shards if isinstance(e, Mapping)]
        if isinstance(shards, list)
        else []
    )
    return count(meta.get("dataset_bytes")) + sum(
        count(index.get("bytes")) for index in indexes if isinstance(index, Mapping)
    )


def index_files(meta: Mapping[str, Any], label: str) -> list[tuple[str, str, int]]:
    """``(relative path, sha256, bytes)`` of the shard index files a manifest lists.

    Shards committed before index files existed have none. ``dataset_files`` first, so the
    shard names are plain.

    Raises:
        CorruptDatasetError: as ``dataset_files``, or an ``index`` field that is malformed.
    """
    out = []
    for (rel, _, _), entry in zip(dataset_files(meta, label), meta.get("shards", []), strict=True):
        index = entry.get("index")
        if index is None:
            continue
        name = rel.rsplit("/", 1)[-1]
        sha, size = (
            index.get(k) if isinstance(index, Mapping) else None for k in ("sha256", "bytes")
        )
        if (
            not isinstance(index, Mapping)
            or index.get("file") != index_name(name)
            or not isinstance(sha, str)
            or re.fullmatch(r"[0-9a-f]{64}", sha) is None
            or not isinstance(size, int)
            or size < 0
        ):
            raise CorruptDatasetError(
                f"{label}: shard {name} has a malformed index entry in metadata.json"
            )
        out.append((f"{DATA_DIR}/{index_name(name)}", sha, size))
    return out


def id_ranges(ids: np.ndarray) -> list[list[int]]:
    """Compress ids into [start, stop) runs, in the given order (``ids_from_ranges`` inverts it).

    >>> id_ranges(np.array([0, 1, 2, 5]))
    [[0, 3], [5, 6]]
    """
    if len(ids) == 0:
        return []
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(ids)]])
    return [[int(ids[a]), int(ids[b - 1]) + 1] for a, b in zip(starts, stops, strict=True)]


def ids_from_ranges(ranges: Iterable[Sequence[int]]) -> np.ndarray:
    """Expand [start, stop) runs back into ids."""
    parts = [np.arange(a, b, dtype=np.int64) for a, b in ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def id_map_runs(stored: np.ndarray, new: np.ndarray) -> list[list[int]]:
    """Encode a shard's id mapping as ``[stored_start, stored_stop, new_start]`` runs.

    The manifest renumbers episodes of immutable shards (combine, saved views) with these
    runs; stored ids that no run covers are not part of the dataset.

    >>> id_map_runs(np.array([0, 1, 2, 5, 6]), np.array([10, 11, 12, 13, 14]))
    [[0, 3, 10], [5, 7, 13]]
    """
    stored, new = np.asarray(stored, np.int64), np.asarray(new, np.int64)
    if len(stored) == 0:
        return []
    order = np.argsort(stored, kind="stable")
    s, n = stored[order], new[order]
    breaks = np.flatnonzero((np.diff(s) != 1) | (np.diff(n) != 1)) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(s)]])
    return [[int(s[a]), int(s[b - 1]) + 1, int(n[a])] for a, b in zip(starts, stops, strict=True)]


def map_shard_ids(entry: dict[str, Any], stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of a shard's episodes (by table position) are in the dataset, and their ids.

    ``stored`` is the shard table's ``id`` column; ``entry`` its manifest entry. Without an
    ``id_map`` every episode is in, shifted by ``id_offset``.
    """
    stored = np.asarray(stored, np.int64)
    runs = entry.get("id_map")
    if runs is None:
        return np.arange(len(stored)), stored + int(entry.get("id_offset", 0))
    r = np.asarray(runs, np.int64).reshape(-1, 3)
    r = r[np.argsort(r[:, 0], kind="stable")]
    k = np.searchsorted(r[:, 0], stored, side="right") - 1
    kk = np.maximum(k, 0)
    pos = np.flatnonzero((k >= 0) & (stored < r[kk, 1]) if len(r) else np.zeros(len(stored), bool))
    return pos, stored[pos] - r[kk[pos], 0] + r[kk[pos], 2]


AUTHOR_FIELDS: Final = (
    "author",
    "author_email",
    "algorithm_name",
    "code_permalink",
    "description",
    "requirements",
    "ref_min_score",
    "ref_max_score",
    "eval_env_spec",
)


def new_metadata(
    observation_space: Any,
    action_space: Any,
    env_spec: dict[str, Any] | None,
    *,
    record_infos: bool,
    provenance: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The descriptive part of a new dataset's ``metadata.json`` (DESIGN.md section 4).

    ``fields`` takes the author fields (``AUTHOR_FIELDS``); None values are left out.
    """
    from collector.spaces import space_to_json

    unknown = set(fields) - set(AUTHOR_FIELDS)
    if unknown:
        raise UsageError(f"unknown metadata field(s) {sorted(unknown)}; known: {AUTHOR_FIELDS}")
    # no secret from a config, override or URL is written (issue 16 item 10); the spaces are
    # data, not config, and a Dict space may well have a key named "token"
    meta: dict[str, Any] = {
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "env_spec": redact(env_spec),
        "record_infos": bool(record_infos),
        "provenance": redact(provenance or {}),
        "lineage": redact(lineage),
    }
    for key in AUTHOR_FIELDS:
        value = fields.get(key)
        if value is not None:
            meta[key] = redact(sorted(value) if isinstance(value, set | frozenset) else value)
    step = sum(
        _space_bytes(meta[key], key, [], UsageError)
        for key in ("observation_space", "action_space")
    )
    if step > MAX_STEP_BYTES:
        raise UsageError(
            f"the observation and action spaces take {human_size(step)} a step, more than "
            f"the {human_size(MAX_STEP_BYTES)} a dataset may hold; record a smaller observation"
        )
    return meta
