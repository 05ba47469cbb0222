"""Dataset format v1: the one module that knows file names, HDF5 keys and the commit protocol.

A dataset is a folder ``<root>/<id>/`` holding ``metadata.json`` (the commit point, replaced
atomically) and ``data/shard-<seq>-<hash8>.h5`` files (immutable, mode 0444, whole episodes,
columnar). See DESIGN.md section 4. Writers hold a lock kept outside the folder (``DatasetLock``).

Contents:
    ids and paths    ``parse_dataset_id``, ``datasets_root``, ``dataset_path``
    episode batches  ``EpisodeBatch`` (columnar episodes in memory), ``concat_batches``
    digests          ``episode_digests``, ``fingerprint``
    shards           ``build_shard_bytes``, ``read_shard``, ``read_shard_table``
    metadata         ``read_metadata``, ``loads_metadata``, ``check_metadata``, ``seal_metadata``
    writing          ``DatasetLock``, ``DatasetWriter`` (write shard, commit, repack, cleanup)
    checking         ``verify_dataset``
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import h5py
import numpy as np

from collector.errors import (
    CorruptDatasetError,
    DatasetIdError,
    DatasetNotFoundError,
    FormatVersionError,
    HarvestError,
    LockHeldError,
    StorageError,
    UnsupportedSpaceError,
    UsageError,
)
from collector.redact import redact

log = logging.getLogger(__name__)

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
METADATA_FILE: Final = "metadata.json"
METADATA_TMP: Final = "metadata.json.tmp"
#: Namespace description file, at `<root>/<namespace>/` (Minari's name for it).
NAMESPACE_METADATA_FILE: Final = "namespace_metadata.json"
DATA_DIR: Final = "data"
LOCKS_DIR: Final = ".locks"
SPILL_DIR: Final = ".tmp"
SHARD_RE: Final = re.compile(r"^shard-(\d{6,})-([0-9a-f]{8})\.h5$")
# The HDF5 1.10 file format (2016), pinned at both ends: readable by every HDF5 >= 1.10 that
# Minari and TorchRL users have (h5py >= 2.7), never HDF5 2.0's newer structures [review 9e],
# and every piece of HDF5's own metadata (superblock, object headers, chunk indexes) carries
# a checksum. With the 1.0 format ("earliest"), an exhaustive one-bit flip of a shard made
# reads return wrong data silently at 8 of its first 2,000 bytes (chunk index keys); 1.10: 0.
LIBVER: Final = ("v110", "v110")
#: Free space a repack leaves besides twice the shards it merges.
REPACK_SPARE_BYTES: Final = 1 << 20
CHUNK_BYTES: Final = 512 * 1024
CHUNK_ROWS: Final = 16_384
#: ``repack`` merges shards under ``target / SMALL_SHARD_FRACTION`` bytes.
SMALL_SHARD_FRACTION: Final = 16
MASK_SUFFIX: Final = "@mask"
GROUPS: Final = ("observations", "actions")
STEP_COLUMNS: Final = ("rewards", "terminations", "truncations")
TABLE_FIELDS: Final = (
    "id",
    "seed",
    "has_seed",
    "length",
    "obs_offset",
    "step_offset",
    "return",
    "terminated",
    "truncated",
    "digest",
    "options",
    "metadata",
)
_SEGMENT = r"[A-Za-z0-9_-]+"
_SHARD_FILE_RE: Final = re.compile(r"shard-[A-Za-z0-9_-]+\.h5", re.ASCII)
_ID_RE: Final = re.compile(
    rf"(?:(?P<ns>{_SEGMENT}(?:/{_SEGMENT})*)/)?(?P<name>{_SEGMENT})-v(?P<v>[0-9]+)", re.ASCII
)


# --------------------------------------------------------------------------------------------
# ids and paths


def parse_dataset_id(dataset_id: str) -> tuple[str | None, str, int]:
    """Split ``[namespace/...]name-vN`` into (namespace, name, version), refusing anything else.

    >>> parse_dataset_id("cartpole/random-v0")
    ('cartpole', 'random', 0)

    Raises:
        DatasetIdError: for paths (``..``, absolute, backslashes), empty segments or no version.
    """
    if not isinstance(dataset_id, str) or not dataset_id:
        raise DatasetIdError(
            f"dataset id {dataset_id!r} is empty; use [namespace/]name-vN, e.g. cartpole/random-v0"
        )
    match = _ID_RE.fullmatch(dataset_id)
    if match is None:
        if ".." in dataset_id or dataset_id.startswith("/") or "\\" in dataset_id:
            why = "is a path, not an id"
        elif "//" in dataset_id or dataset_id.endswith("/"):
            why = "has an empty segment"
        elif "-v" not in dataset_id.rsplit("/", 1)[-1]:
            why = "has no version suffix"
        else:
            why = "has a character outside [A-Za-z0-9_-] or a bad version"
        raise DatasetIdError(
            f"dataset id {dataset_id!r} {why}; use [namespace/]name-vN with segments of "
            "[A-Za-z0-9_-], e.g. cartpole/random-v0"
        )
    return match["ns"], match["name"], int(match["v"])


def human_size(n: float) -> str:
    """A byte count in powers of 1000, as the command-line tools print sizes.

    >>> human_size(999), human_size(27_160), human_size(3_400_000_000_000)
    ('999 B', '27.2 kB', '3400.0 GB')
    """
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` (``a`` or ``a/b``, segments as in dataset ids) if it is valid.

    >>> check_namespace("cartpole/experts")
    'cartpole/experts'

    Raises:
        DatasetIdError: anything else (paths, empty segments, a version suffix).
    """
    if not isinstance(namespace, str) or not re.fullmatch(
        rf"{_SEGMENT}(?:/{_SEGMENT})*", namespace, re.ASCII
    ):
        raise DatasetIdError(
            f"namespace {namespace!r} is not valid; use segments of [A-Za-z0-9_-] joined by '/', "
            "e.g. cartpole or cartpole/experts"
        )
    if re.search(r"-v[0-9]+$", namespace.rsplit("/", 1)[-1]):
        raise DatasetIdError(
            f"namespace {namespace!r} looks like a dataset id; drop the -vN suffix"
        )
    return namespace


def datasets_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The datasets root: ``root``, else ``$HARVEST_DATASETS``, else ``~/.harvest/datasets``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("HARVEST_DATASETS")
    return Path(env) if env else Path.home() / ".harvest" / "datasets"


def dataset_path(dataset_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of ``dataset_id`` under the datasets root (the id is validated first)."""
    parse_dataset_id(dataset_id)
    return datasets_root(root) / dataset_id


def id_ancestors(dataset_id: str) -> list[str]:
    """Every folder prefix of ``dataset_id``, shortest first (ids or not).

    >>> id_ancestors("w-v0/data/y-v0")
    ['w-v0', 'w-v0/data']
    """
    parts = dataset_id.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def nesting_error(dataset_id: str, other: str, where: str) -> UsageError:
    """The refusal of a dataset inside or around another (DESIGN.md section 4)."""
    if other.startswith(dataset_id + "/"):
        how = f"would contain dataset {other!r}"
    else:
        how = f"would sit inside dataset {other!r}"
    return UsageError(
        f"dataset id {dataset_id!r} {how} {where}; a dataset never contains another: pick "
        f"another id, or delete {other!r} first"
    )


def contained_datasets(dataset_id: str, root: str | os.PathLike[str] | None = None) -> list[str]:
    """Ids of the local datasets inside ``dataset_id``'s folder (symlinks are not followed)."""
    base = datasets_root(root)
    path = dataset_path(dataset_id, base)
    found = []
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            if METADATA_FILE in filenames and Path(dirpath) != path:
                found.append(Path(dirpath).relative_to(base).as_posix())
    return sorted(found)


def check_not_nested(dataset_id: str, root: str | os.PathLike[str] | None = None) -> None:
    """Refuse an id whose folder is inside or around another local dataset's folder.

    A dataset folder is one holding ``metadata.json``. An id inside another dataset (its
    ``data/`` folder included, e.g. ``w-v0/data/y-v0``) would be swept by that dataset's
    cleaners and deleters, and one around others would sweep them.

    Raises:
        UsageError: naming both ids and the fix.
    """
    base = datasets_root(root)
    dataset_path(dataset_id, base)  # validates the id
    for prefix in id_ancestors(dataset_id):
        if (base / prefix / METADATA_FILE).exists():
            raise nesting_error(dataset_id, prefix, f"in {base}")
    inner = contained_datasets(dataset_id, base)
    if inner:
        raise nesting_error(dataset_id, inner[0], f"in {base}")


def is_own_file(rel: str) -> bool:
    """Whether ``rel`` (relative to a dataset folder) is a file a dataset can own.

    Only ``metadata.json`` and plain shard names directly in ``data/``: never anything of a
    dataset nested below (which cleaners and deleters must leave alone).
    """
    if rel == METADATA_FILE:
        return True
    folder, _, name = rel.partition("/")
    return folder == DATA_DIR and _SHARD_FILE_RE.fullmatch(name) is not None


# --------------------------------------------------------------------------------------------
# columnar episodes in memory


@dataclass
class EpisodeBatch:
    """Whole episodes, columnar, as a shard holds them.

    ``observations``/``infos`` columns have ``sum(T_i + 1)`` rows, ``actions`` and the step
    columns ``sum(T_i)``. ``table`` holds one entry per episode (see ``TABLE_FIELDS``);
    ``digest`` may be missing until ``episode_digests`` fills it.
    """

    observations: dict[str, np.ndarray]
    actions: dict[str, np.ndarray]
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    table: dict[str, Any]
    infos: dict[str, np.ndarray] | None = None
    info_masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_episodes(self) -> int:
        """Episodes in the batch."""
        return len(self.table["id"])

    @property
    def num_steps(self) -> int:
        """Steps (transitions) in the batch."""
        return len(self.rewards)

    @property
    def nbytes(self) -> int:
        """Bytes of step data held in memory."""
        return _columns_nbytes(self)

    def info_schema(self) -> dict[str, dict[str, Any]] | None:
        """Info columns as ``{name: {"dtype", "shape"}}``, or None when infos are not recorded."""
        if self.infos is None:
            return None
        return {
            k: {"dtype": v.dtype.str, "shape": list(v.shape[1:])} for k, v in self.infos.items()
        }


def _columns_nbytes(rows: EpisodeBatch | ShardRows) -> int:
    """Bytes of every column of a batch or a block of rows."""
    arrays = [*rows.observations.values(), *rows.actions.values()]
    arrays += [rows.rewards, rows.terminations, rows.truncations]
    arrays += [*(rows.infos or {}).values(), *rows.info_masks.values()]
    return sum(a.nbytes for a in arrays)


def make_table(
    ids: Sequence[int],
    seeds: Sequence[int | None],
    lengths: Sequence[int],
    returns: Sequence[float],
    terminated: Sequence[bool],
    truncated: Sequence[bool],
    options: Sequence[Any],
    metadata: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Build an episode table from per-episode values (offsets derived from lengths)."""
    n = len(ids)
    length = np.asarray(lengths, dtype=np.int64).reshape(n)
    obs_offset, step_offset = _offsets(length)
    seeds, options = list(seeds), list(options)
    metadata = [None] * n if metadata is None else list(metadata)
    unseeded = seeds.count(None) == n  # e.g. vector_entry_point: no per-episode loop (ints)
    return {
        "id": np.asarray(ids, dtype=np.int64).reshape(n),
        "seed": np.zeros(n, np.uint64)
        if unseeded
        else np.asarray([0 if s is None else s for s in seeds], dtype=np.uint64).reshape(n),
        "has_seed": np.zeros(n, bool)
        if unseeded
        else np.asarray([s is not None for s in seeds], dtype=bool).reshape(n),
        "length": length,
        "obs_offset": obs_offset,
        "step_offset": step_offset,
        "return": np.asarray(returns, dtype=np.float64).reshape(n),
        "terminated": np.asarray(terminated, dtype=bool).reshape(n),
        "truncated": np.asarray(truncated, dtype=bool).reshape(n),
        "options": _canonical_jsons(options),
        "metadata": _canonical_jsons(metadata),
    }


def _canonical_jsons(values: list[Any]) -> list[str | None]:
    """``_canonical_json`` of each value, None kept as None."""
    if set(map(type, values)) <= {type(None)}:  # not count(None): values may be arrays
        return [None] * len(values)
    return [None if v is None else _canonical_json(v) for v in values]


def _offsets(length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets of each episode: observations have T+1 rows, steps T."""
    step_offset = np.zeros(len(length), np.int64)
    np.cumsum(length[:-1], out=step_offset[1:])
    return step_offset + np.arange(len(length), dtype=np.int64), step_offset


def row_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for each (s, n), without a Python loop.

    >>> row_ranges(np.array([5, 0]), np.array([2, 3])).tolist()
    [5, 6, 0, 1, 2]
    """
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    firsts = np.repeat(np.asarray(starts, np.int64) - (ends - lengths), lengths)
    return firsts + np.arange(total, dtype=np.int64)


def select_episodes(batch: EpisodeBatch, positions: np.ndarray, ids: np.ndarray) -> EpisodeBatch:
    """The episodes at table ``positions`` of ``batch``, renumbered ``ids``, as a new batch.

    Columnar: one gather per column, not a copy per episode.
    """
    t = batch.table
    pos = np.asarray(positions, np.int64)
    length = t["length"][pos]
    obs_rows = row_ranges(t["obs_offset"][pos], length + 1)
    step_rows = row_ranges(t["step_offset"][pos], length)
    table = {k: v[pos] if isinstance(v, np.ndarray) else [v[i] for i in pos] for k, v in t.items()}
    table["obs_offset"], table["step_offset"] = _offsets(length)
    table["id"] = np.asarray(ids, np.int64)
    return EpisodeBatch(
        observations={k: v[obs_rows] for k, v in batch.observations.items()},
        actions={k: v[step_rows] for k, v in batch.actions.items()},
        rewards=batch.rewards[step_rows],
        terminations=batch.terminations[step_rows],
        truncations=batch.truncations[step_rows],
        table=table,
        infos=None if batch.infos is None else {k: v[obs_rows] for k, v in batch.infos.items()},
        info_masks={k: v[obs_rows] for k, v in batch.info_masks.items()},
    )


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def concat_batches(batches: Sequence[EpisodeBatch]) -> EpisodeBatch:
    """Concatenate batches (e.g. small shards being repacked), unioning info columns."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]

    def cat(key: str) -> dict[str, np.ndarray]:
        return {
            n: np.concatenate([getattr(b, key)[n] for b in batches]) for n in getattr(first, key)
        }

    table = _concat_tables([b.table for b in batches])
    infos, masks = _concat_infos(batches)
    return EpisodeBatch(
        observations=cat("observations"),
        actions=cat("actions"),
        rewards=np.concatenate([b.rewards for b in batches]),
        terminations=np.concatenate([b.terminations for b in batches]),
        truncations=np.concatenate([b.truncations for b in batches]),
        table=table,
        infos=infos,
        info_masks=masks,
    )


def _concat_infos(
    batches: Sequence[EpisodeBatch],
) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray]]:
    if all(b.infos is None for b in batches):
        return None, {}
    names: dict[str, np.ndarray] = {}
    for b in batches:
        for n, col in (b.infos or {}).items():
            proto = names.get(n)
            dtype = col.dtype if proto is None else np.result_type(proto.dtype, col.dtype)
            names[n] = np.empty((0, *col.shape[1:]), dtype)
    infos: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for n, proto in names.items():
        parts, mparts = [], []
        for b in batches:
            rows = int(b.table["length"].sum()) + b.num_episodes
            if b.infos is not None and n in b.infos:
                parts.append(b.infos[n].astype(proto.dtype, copy=False))
                mparts.append(b.info_masks[n])
            else:
                parts.append(np.zeros((rows, *proto.shape[1:]), proto.dtype))
                mparts.append(np.zeros(rows, bool))
        infos[n], masks[n] = np.concatenate(parts), np.concatenate(mparts)
    return infos, masks


# --------------------------------------------------------------------------------------------
# digests and fingerprint


def episode_digests(batch: EpisodeBatch) -> np.ndarray:
    """Per-episode sha256 over the episode's data, seed and options, but not its id.

    Shard boundaries, compression and ids do not enter, so the dataset fingerprint depends on
    the data alone. Info columns enter only where present (mask True) and as canonical
    numbers, so an episode's digest does not depend on which other episodes share its shard
    (their keys, or a dtype widened for them). Returns an ``(n, 32)`` uint8 array.

    Episode ``e``'s message is its head (``_episode_heads``: seed and options), then per
    observation column (sorted by name) ``name|dtype|shape`` and its ``T + 1`` rows' bytes,
    the same per action column (sorted) and for rewards, terminations and truncations with
    ``T`` rows, then ``infos:yes|no`` and the info parts (``_info_tails``). The messages of a
    block of episodes are laid out back to back in one buffer by a few numpy scatters per
    column, then hashed with one ``sha256`` call each: a Python loop over episodes and
    columns costs several times the hashing itself.
    """
    columns = [
        (group, f"{name}|{arr.dtype.str}|{arr.shape[1:]}".encode(), _row_bytes(arr))
        for group, cols in (
            ("obs", sorted(batch.observations.items())),
            (
                "step",
                [
                    *sorted(batch.actions.items()),
                    ("rewards", batch.rewards),
                    ("terminations", batch.terminations),
                    ("truncations", batch.truncations),
                ],
            ),
        )
        for name, arr in cols
    ]
    n = batch.num_episodes
    out = np.zeros((n, 32), np.uint8)
    for lo in range(0, n, _DIGEST_BLOCK):
        hi = min(lo + _DIGEST_BLOCK, n)
        out[lo:hi] = _digest_block(batch, columns, lo, hi)
    return out


#: Episodes laid out and hashed at a time by ``episode_digests``: bounds the message buffer
#: (~3.5 MiB for CartPole-sized episodes), which then is still in cache when it is hashed.
_DIGEST_BLOCK = 4096


def _row_bytes(arr: np.ndarray) -> np.ndarray:
    """The raw bytes of ``arr``'s rows: a C-contiguous uint8 array ``(rows, row bytes)``."""
    flat = np.ascontiguousarray(arr)
    width = flat.dtype.itemsize * int(np.prod(flat.shape[1:], dtype=np.int64))
    return flat.reshape(-1).view(np.uint8).reshape(len(flat), width)


def _episode_heads(table: Mapping[str, Any], lo: int, hi: int) -> list[bytes]:
    """The first part of the digest message of episodes ``lo:hi``: seed and options."""
    seeds, has_seed = table["seed"][lo:hi].tolist(), table["has_seed"][lo:hi].tolist()
    options = table["options"][lo:hi]
    if not any(has_seed) and all(o is None for o in options):  # e.g. vector_entry_point
        return [b"harvest-episode-v1seed:noneoptions:null"] * (hi - lo)
    return [
        b"harvest-episode-v1seed:"
        + (str(seed).encode() if has else b"none")
        + b"options:"
        + (option or "null").encode()
        for seed, has, option in zip(seeds, has_seed, options, strict=True)
    ]


def _info_tails(batch: EpisodeBatch, lo: int, hi: int) -> list[bytes]:
    """The last part of the digest message of episodes ``lo:hi``: the infos flag and parts.

    Per info column (sorted) present in the episode: ``info|name|shape``, the episode's
    presence mask and its present values as ``_canonical_numbers``.
    """
    flag = b"infos:" + (b"yes" if batch.infos is not None else b"no")
    if not batch.infos:
        return [flag] * (hi - lo)
    t = batch.table
    info_cols = [(n, v, batch.info_masks[n]) for n, v in sorted(batch.infos.items())]
    tails = []
    offsets, lengths = t["obs_offset"][lo:hi].tolist(), t["length"][lo:hi].tolist()
    for o0, length in zip(offsets, lengths, strict=True):
        parts = [flag]
        obs_rows = slice(o0, o0 + length + 1)
        for name, values, mask in info_cols:
            present = mask[obs_rows]
            if present.any():
                parts.append(f"info|{name}|{values.shape[1:]}".encode())
                parts.append(np.ascontiguousarray(present).tobytes())
                parts.append(_canonical_numbers(values[obs_rows][present]))
        tails.append(b"".join(parts))
    return tails


def _digest_block(
    batch: EpisodeBatch, columns: list[tuple[str, bytes, np.ndarray]], lo: int, hi: int
) -> np.ndarray:
    """``episode_digests`` of the episodes at table positions ``lo:hi`` (``(hi - lo, 32)``).

    ``columns`` holds ``("obs" | "step", header, _row_bytes(column))`` in message order.
    """
    t, n = batch.table, hi - lo
    length = np.asarray(t["length"][lo:hi], np.int64)
    rows = {"obs": length + 1, "step": length}
    first = {
        "obs": np.asarray(t["obs_offset"][lo:hi], np.int64),
        "step": np.asarray(t["step_offset"][lo:hi], np.int64),
    }
    heads, tails = _episode_heads(t, lo, hi), _info_tails(batch, lo, hi)
    # bytes of each piece of each message: head, (header, rows) per column, tail
    sizes = np.empty((n, 2 + 2 * len(columns)), np.int64)
    sizes[:, 0] = np.fromiter(map(len, heads), np.int64, n)
    for k, (group, header, data) in enumerate(columns):
        sizes[:, 1 + 2 * k] = len(header)
        sizes[:, 2 + 2 * k] = rows[group] * data.shape[1]
    sizes[:, -1] = np.fromiter(map(len, tails), np.int64, n)
    ends = np.cumsum(sizes.reshape(-1)).reshape(sizes.shape)
    starts = ends - sizes
    buf = np.empty(int(ends[-1, -1]) if n else 0, np.uint8)
    buf[row_ranges(starts[:, 0], sizes[:, 0])] = np.frombuffer(b"".join(heads), np.uint8)
    buf[row_ranges(starts[:, -1], sizes[:, -1])] = np.frombuffer(b"".join(tails), np.uint8)
    # where each episode's rows sit in the batch, and their position within the episode
    src, within = {}, {}
    for group in ("obs", "step"):
        total = int(rows[group].sum())
        if n and np.array_equal(first[group][1:], first[group][:-1] + rows[group][:-1]):
            src[group] = slice(int(first[group][0]), int(first[group][0]) + total)  # in order
        else:
            src[group] = row_ranges(first[group], rows[group])
        within[group] = row_ranges(np.zeros(n, np.int64), rows[group])
    for k, (group, header, data) in enumerate(columns):
        _put_records(buf, starts[:, 1 + 2 * k], np.frombuffer(header, np.uint8)[None, :])
        width = data.shape[1]
        dest = np.repeat(starts[:, 2 + 2 * k], rows[group]) + within[group] * width
        _put_records(buf, dest, data[src[group]])
    view, sha256 = memoryview(buf), hashlib.sha256
    bounds = zip(starts[:, 0].tolist(), ends[:, -1].tolist(), strict=True)
    digests = b"".join([sha256(view[a:b]).digest() for a, b in bounds])
    return np.frombuffer(digests, np.uint8).reshape(n, 32)


def _put_records(buf: np.ndarray, at: np.ndarray, records: np.ndarray) -> None:
    """Copy row ``i`` of the uint8 array ``records`` to ``buf[at[i]:]`` (one row: to all).

    ``buf`` is seen as one fixed-size void record at every byte offset (stride 1), so a
    whole column of unaligned rows moves with a single fancy-index assignment.
    """
    width = records.shape[1]
    if width == 0 or len(at) == 0:
        return
    slots = np.ndarray((len(buf) - width + 1,), f"V{width}", buf, strides=(1,))
    slots[at] = np.ascontiguousarray(records).view(f"V{width}")[:, 0]


def _canonical_numbers(values: np.ndarray) -> bytes:
    """Bytes that are the same for equal numbers whatever the dtype (int 3 == float 3.0).

    Integral values hash as int64 (uint64 when too large), others as float64: exact for every
    integer and float, and unchanged when a column's dtype is widened to hold another episode.
    """
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            integral = bool(
                np.all(np.isfinite(values))
                and np.all(values == np.trunc(values))
                and np.all(np.abs(values) < 2.0**63)
            )
            if not integral:  # (a signaling NaN raises "invalid" when widened)
                return b"f" + np.ascontiguousarray(values, np.float64).tobytes()
    elif values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        return b"u" + np.ascontiguousarray(values, np.uint64).tobytes()
    return b"i" + np.ascontiguousarray(values, np.int64).tobytes()


def fingerprint(ids: np.ndarray, digests: np.ndarray) -> str:
    """Dataset fingerprint: sha256 of per-episode digests in episode-id order."""
    order = np.argsort(ids, kind="stable")
    return hashlib.sha256(np.ascontiguousarray(digests[order]).data).hexdigest()


# --------------------------------------------------------------------------------------------
# shards


def parse_compression(spec: str | None) -> tuple[str | None, int | None]:
    """Parse ``none | lzf | gzip[:level]`` into h5py's (compression, compression_opts).

    >>> parse_compression("gzip:6"), parse_compression("none")
    (('gzip', 6), (None, None))
    """
    text = "none" if spec is None else str(spec).strip().lower()
    name, _, level = text.partition(":")
    if name in ("none", "lzf") and not level:
        return (None if name == "none" else "lzf"), None
    if name == "gzip" and not _:
        return "gzip", 4
    if name == "gzip" and re.fullmatch(r"[0-9]", level, re.ASCII):
        return "gzip", int(level)
    raise UsageError(f"storage.compression={spec!r} is not valid; use none, lzf, gzip or gzip:0-9")


def _dataset_kwargs(
    rows: int,
    row_shape: tuple[int, ...],
    dtype: np.dtype,
    compression: str | None,
    level: int | None,
) -> dict[str, Any]:
    """Chunking, compression and a fletcher32 checksum for one step-aligned column.

    Every chunk carries HDF5's fletcher32 checksum (uncompressed columns are chunked for
    it), so a read of a damaged chunk fails inside HDF5 instead of returning wrong numbers.
    """
    if rows == 0:
        return {}
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    # the same rows per chunk for every narrow column, a divisor of the readers' block size,
    # so a block read decompresses each chunk once (wide rows: by bytes)
    chunk_rows = int(max(1, min(rows, CHUNK_ROWS, CHUNK_BYTES // row_bytes)))
    if compression is None:  # a last chunk's unused rows would be stored as they are
        chunk_rows = -(-rows // -(-rows // chunk_rows))  # equal chunks, none mostly empty
    kw: dict[str, Any] = {"chunks": (chunk_rows, *row_shape), "fletcher32": True}
    if compression is not None:
        kw["compression"] = compression
    if level is not None:
        kw["compression_opts"] = level
        kw["shuffle"] = np.dtype(dtype).itemsize > 1
    return kw


def _column_kwargs(arr: np.ndarray, compression: str | None, level: int | None) -> dict[str, Any]:
    return _dataset_kwargs(len(arr), arr.shape[1:], arr.dtype, compression, level)


#: The HDF5 name of a group's root leaf when that leaf has two columns (a top-level Text
#: space: characters and ``@len``), since ``observations`` cannot be a dataset and a group.
ROOT_LEAF: Final = "@"


def _h5name(group: str, name: str, names: Iterable[str]) -> str:
    """Where column ``name`` of ``group`` (whose columns are ``names``) lives in a shard."""
    if name:
        return f"{group}/{name}"
    return f"{group}/{ROOT_LEAF}" if len(list(names)) > 1 else group


def _column_name(h5_name: str) -> str:
    """The column name of a dataset found inside a group (the inverse of ``_h5name``)."""
    return "" if h5_name == ROOT_LEAF else h5_name


def _fill_shard(f: h5py.File, batch: EpisodeBatch, compression: str | None) -> None:
    comp, level = parse_compression(compression)
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["info_schema"] = _schema_attr(batch.info_schema())
    for group in GROUPS:
        cols = getattr(batch, group)
        for name, arr in cols.items():
            f.create_dataset(
                _h5name(group, name, cols), data=arr, **_column_kwargs(arr, comp, level)
            )
    for name in STEP_COLUMNS:
        arr = getattr(batch, name)
        f.create_dataset(name, data=arr, **_column_kwargs(arr, comp, level))
    if batch.infos is not None:
        g = f.create_group("infos")
        for name, arr in batch.infos.items():
            g.create_dataset(name, data=arr, **_column_kwargs(arr, comp, level))
            mask = batch.info_masks[name]
            g.create_dataset(name + MASK_SUFFIX, data=mask, **_column_kwargs(mask, comp, level))
    _write_table(f, batch.table)
    f.flush()  # every chunk allocated (none left dirty in the chunk cache) before hashing
    f.attrs[LAYOUT_CHECKSUM] = np.bytes_(_layout_checksum(f))


def write_shard_file(batch: EpisodeBatch, path: Path, compression: str | None = "gzip") -> None:
    """Write ``batch`` as a shard file at ``path`` (digests must be in ``batch.table``).

    The shard is encoded in memory (``build_shard_bytes``) and written with one plain write
    (``write_new_file``): HDF5 never writes to disk itself, so a full disk is a clean
    ``OSError`` that leaves no file (HDF5 2.0 crashes the process when it closes a file whose
    write failed). Memory holds the compressed image besides ``batch`` meanwhile.
    """
    write_new_file(path, build_shard_bytes(batch, compression))


def build_shard_bytes(batch: EpisodeBatch, compression: str | None = "gzip") -> bytes:
    """Encode ``batch`` as an HDF5 file image in memory, e.g. for a remote worker to ship."""
    block = int(min(max(batch.nbytes, 1 << 16), 1 << 24))  # fewer reallocs of a large image
    with h5py.File(
        f"shard-{uuid.uuid4().hex}",
        "w",
        driver="core",
        backing_store=False,
        block_size=block,
        libver=LIBVER,
    ) as f:
        _fill_shard(f, batch, compression)
        f.flush()
        return f.id.get_file_image()


def _write_table(f: h5py.File, table: dict[str, Any]) -> None:
    """Write the episode table, each column with a sha256 attribute.

    Nothing goes to HDF5's global heap (no variable-length strings, in columns or attributes):
    a damaged global heap can send HDF5 into an endless loop instead of an error. JSON text
    columns are fixed-width UTF-8, deflated so that one long value costs little.
    """
    tab = f.create_group("episodes")
    for key in TABLE_FIELDS:
        value = table[key]
        kw: dict[str, Any] = {}
        if key in ("options", "metadata"):
            encoded = [b"" if o is None else o.encode() for o in value]
            value = np.array(encoded, dtype=f"S{max(1, max(map(len, encoded), default=1))}")
            kw = _dataset_kwargs(len(value), (), value.dtype, "gzip", 4)
        column = tab.create_dataset(key, data=value, **kw)
        column.attrs[TABLE_CHECKSUM] = np.bytes_(_table_checksum(value))


#: Attribute of each episode-table column: sha256 of its values. The table steers every read
#: (offsets, lengths), and a checksum of the values also catches a damaged datatype.
TABLE_CHECKSUM: Final = "sha256"


def _table_checksum(values: np.ndarray) -> str:
    """sha256 of a table column: its dtype, shape and bytes."""
    h = hashlib.sha256(f"{values.dtype.str}|{values.shape}|".encode())
    if values.dtype.kind == "O":  # variable-length strings (shards written before this)
        for item in values.tolist():
            data = item.encode() if isinstance(item, str) else bytes(item)
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    else:
        h.update(np.ascontiguousarray(values).data)
    return h.hexdigest()


#: Root attribute of a shard: sha256 of where HDF5 keeps every column (see _layout_checksum).
LAYOUT_CHECKSUM: Final = "layout_sha256"


def _layout_checksum(f: h5py.File) -> str:
    """sha256 of every dataset's type, shape, filters and chunk index (address, size, mask).

    fletcher32 covers a chunk's bytes, not HDF5's index of them, which has no checksum in the
    early file format we write: a flipped bit in a chunk's filter mask skips decompression,
    and one in its key moves it, both without an error. This catches those on open.
    """
    h = hashlib.sha256()

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        h.update(f"{name}|{obj.dtype.str}|{obj.shape}|{obj.chunks}|".encode())
        h.update(f"{obj.compression}|{obj.compression_opts}|{obj.fletcher32}|".encode())
        if obj.chunks is None:
            h.update(f"{obj.id.get_offset()}|{obj.id.get_storage_size()}|".encode())
            return
        obj.id.chunk_iter(
            lambda c: h.update(
                f"{c.chunk_offset}{c.filter_mask},{c.byte_offset},{c.size}|".encode()
            )
        )

    f.visititems(visit)
    return h.hexdigest()


def _check_layout(f: h5py.File) -> None:
    """Raise ``CorruptDatasetError`` when a shard's layout is not the one it was written with."""
    stored = f.attrs.get(LAYOUT_CHECKSUM)  # absent in shards written before it
    if stored is not None and _layout_checksum(f) != _text(stored):
        raise CorruptDatasetError(
            f"shard {f.filename}: HDF5 layout does not match its checksum; the file is damaged "
            "(run verify)"
        )


def _schema_attr(schema: Any) -> np.bytes_:
    """The info schema as a fixed-width attribute (a ``str`` would be stored in the global heap)."""
    return np.bytes_(json.dumps(schema).encode())


def _concat_tables(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in tables[0]:
        if key in ("options", "metadata"):
            out[key] = [v for t in tables for v in t[key]]
        else:
            out[key] = np.concatenate([t[key] for t in tables])
    out["obs_offset"], out["step_offset"] = _offsets(out["length"])
    return out


def merge_shards(
    sources: Sequence[Path], dest: Path, compression: str | None = "gzip"
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Stream ``sources`` into one new shard file at ``dest``, one source in memory at a time.

    Each source's digests are recomputed from its data and checked against its table before
    it is copied, so a merge never launders a damaged shard. Info columns are unioned (a key
    missing from a source is zero-filled with mask False). Returns (episode table, info schema).

    Raises:
        CorruptDatasetError: a source does not match its own digests.
    """
    comp, level = parse_compression(compression)
    schemas: list[dict[str, Any] | None] = []
    n_obs = n_steps = 0
    for path in sources:
        with _open_shard(path) as f:
            schemas.append(json.loads(f.attrs.get("info_schema", "null")))
            length = f["episodes/length"][()]
        n_steps += int(length.sum())
        n_obs += int(length.sum()) + len(length)
    union: dict[str, Any] | None = None
    if any(sc is not None for sc in schemas):
        union = {}
        for sc in schemas:
            for name, spec in (sc or {}).items():
                old = union.get(name)
                dtype = (
                    np.dtype(spec["dtype"])
                    if old is None
                    else np.result_type(np.dtype(old["dtype"]), np.dtype(spec["dtype"]))
                )
                union[name] = {"dtype": np.dtype(dtype).str, "shape": spec["shape"]}
    tables = []
    with h5py.File(dest, "w", libver=LIBVER) as out:
        out.attrs["format_version"] = FORMAT_VERSION
        out.attrs["info_schema"] = _schema_attr(union)
        o = s = 0
        for i, path in enumerate(sources):
            batch = read_shard(path)
            if np.any(episode_digests(batch) != batch.table["digest"]):
                raise CorruptDatasetError(
                    f"shard {path.name} does not match its own digests; run verify before repacking"
                )
            cols: list[tuple[str, np.ndarray, int, int]] = []
            for group in GROUPS:
                group_cols = getattr(batch, group)
                for name, arr in group_cols.items():
                    rows = n_obs if group == "observations" else n_steps
                    at = o if group == "observations" else s
                    cols.append((_h5name(group, name, group_cols), arr, rows, at))
            for name in STEP_COLUMNS:
                cols.append((name, getattr(batch, name), n_steps, s))
            for name, spec in (union or {}).items():
                dtype = np.dtype(spec["dtype"])
                if batch.infos is not None and name in batch.infos:
                    values = batch.infos[name].astype(dtype, copy=False)
                    cols.append((f"infos/{name}", values, n_obs, o))
                    cols.append((f"infos/{name}{MASK_SUFFIX}", batch.info_masks[name], n_obs, o))
                elif i == 0:
                    shape = tuple(spec["shape"])
                    out.create_dataset(
                        f"infos/{name}",
                        shape=(n_obs, *shape),
                        dtype=dtype,
                        fillvalue=0,
                        **_dataset_kwargs(n_obs, shape, dtype, comp, level),
                    )
                    out.create_dataset(
                        f"infos/{name}{MASK_SUFFIX}",
                        shape=(n_obs,),
                        dtype=bool,
                        fillvalue=False,
                        **_dataset_kwargs(n_obs, (), np.dtype(bool), comp, level),
                    )
            if union is not None:
                out.require_group("infos")
            for key, arr, rows, at in cols:
                if key not in out:
                    kw = _dataset_kwargs(rows, arr.shape[1:], arr.dtype, comp, level)
                    # an explicit fill value: HDF5 leaves late-allocated contiguous space
                    # uninitialized otherwise, and info columns have rows no source writes
                    out.create_dataset(
                        key, shape=(rows, *arr.shape[1:]), dtype=arr.dtype, fillvalue=0, **kw
                    )
                out[key][at : at + len(arr)] = arr
            tables.append(batch.table)
            o += int(batch.table["length"].sum()) + batch.num_episodes
            s += batch.num_steps
            del batch, cols
        table = _concat_tables(tables)
        _write_table(out, table)
        out.flush()  # every chunk allocated (none left dirty in the chunk cache) before hashing
        out.attrs[LAYOUT_CHECKSUM] = np.bytes_(_layout_checksum(out))
    return table, union


def missing_shard_error(path: str | os.PathLike[str]) -> CorruptDatasetError:
    """The error for a committed shard that is gone: a stale snapshot, or damage."""
    return CorruptDatasetError(
        f"shard {path} is missing; the dataset was changed underneath this reader "
        "(refresh() it) or damaged (run verify)"
    )


def _open_shard(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r", locking=False)
    except FileNotFoundError as e:
        raise missing_shard_error(path) from e
    except OSError as e:
        raise CorruptDatasetError(
            f"shard {path} is not a readable HDF5 file ({e}); run verify"
        ) from e


@contextlib.contextmanager
def _damaged(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn what h5py raises on reading a damaged shard into one ``CorruptDatasetError``."""
    try:
        yield
    except CorruptDatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CorruptDatasetError(
            f"shard {path} is damaged ({type(e).__name__}: {e}); run verify"
        ) from e


def _read_table(
    f: h5py.File, fields: Sequence[str] = TABLE_FIELDS, raw_text: bool = False
) -> dict[str, Any]:
    """Read (and check against its checksums) the episode table of an open shard."""
    out: dict[str, Any] = {}
    with _damaged(f.filename):
        tab = f["episodes"]
        for key in fields:
            column = tab[key]
            values = column[()]
            stored = column.attrs.get(TABLE_CHECKSUM)  # absent in shards written before it
            if stored is not None and _table_checksum(values) != _text(stored):
                raise CorruptDatasetError(
                    f"shard {f.filename}: episode table column {key!r} does not match its "
                    "checksum; the file is damaged (run verify)"
                )
            if key in ("options", "metadata") and not raw_text:
                values = [o.decode() or None for o in values]
            out[key] = values
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_shard_table(
    path: str | os.PathLike[str], fields: Sequence[str] = TABLE_FIELDS, raw_text: bool = False
) -> dict[str, Any]:
    """Read a shard's episode table only (no step data).

    ``fields`` picks columns; ``raw_text`` leaves ``options``/``metadata`` as the stored
    UTF-8 bytes (``b""`` for none), for readers that decode them only when asked.
    """
    with _open_shard(Path(path)) as f:
        return _read_table(f, fields, raw_text)


def read_shard(path: str | os.PathLike[str]) -> EpisodeBatch:
    """Read a whole shard back into an ``EpisodeBatch``."""
    with _open_shard(Path(path)) as f:
        table = _read_table(f)

        def group(name: str) -> dict[str, np.ndarray]:
            node = f[name]
            if isinstance(node, h5py.Dataset):
                return {"": node[()]}
            return {_column_name(n): node[n][()] for n in _dataset_names(node)}

        with _damaged(path):
            _check_layout(f)
            infos = masks = None
            if "infos" in f:
                both = group("infos")
                masks = {
                    n[: -len(MASK_SUFFIX)]: v for n, v in both.items() if n.endswith(MASK_SUFFIX)
                }
                infos = {n: v for n, v in both.items() if not n.endswith(MASK_SUFFIX)}
            batch = EpisodeBatch(
                observations=group("observations"),
                actions=group("actions"),
                rewards=f["rewards"][()],
                terminations=f["terminations"][()],
                truncations=f["truncations"][()],
                table=table,
                infos=infos,
                info_masks=masks or {},
            )
        return batch


def shard_name(seq: int, sha256: str) -> str:
    """Unique, never-reused shard file name [review 8]."""
    return f"shard-{seq:06d}-{sha256[:8]}.h5"


# --------------------------------------------------------------------------------------------
# metadata


def dumps_metadata(meta: dict[str, Any]) -> str:
    """Strict JSON (no NaN/Infinity) for ``metadata.json``."""
    return json.dumps(meta, indent=1, allow_nan=False, default=_json_default) + "\n"


def seal_metadata(meta: Mapping[str, Any]) -> str:
    """``metadata.json`` text for ``meta`` with its ``manifest_sha256`` set (what a commit writes).

    The checksum covers the JSON as a reader will parse it (numpy values, tuples and sets as
    plain JSON), so any reader recomputes it from what it parsed, whatever the whitespace.

    >>> text = seal_metadata({"format_version": FORMAT_VERSION, "a": (1, 2)})
    >>> json.loads(text)[MANIFEST_SHA256] == manifest_sha256(json.loads(text))
    True
    """
    body = json.loads(dumps_metadata({k: v for k, v in meta.items() if k != MANIFEST_SHA256}))
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
    for key in ("provenance", "lineage", "env_spec", "eval_env_spec"):
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
    from collector.spaces import space_from_json

    leaves: list[int] = []
    total = 0
    for key in ("observation_space", "action_space"):
        if not isinstance(meta.get(key), dict):
            raise bad(f"{key} must be an object")
        total += _space_bytes(meta[key], key, leaves, bad)
    if total > MAX_STEP_BYTES:
        raise bad(f"its spaces need {human_size(total)} a step, over {human_size(MAX_STEP_BYTES)}")
    for key in ("observation_space", "action_space"):
        try:  # sizes are bounded now; gymnasium checks the rest (bounds, dtypes, values)
            space_from_json(meta[key])
        except (
            UnsupportedSpaceError, ValueError, TypeError, KeyError, OverflowError, AssertionError
        ) as e:  # fmt: skip
            raise bad(f"{key} is not a valid space ({str(e).splitlines()[0][:200]})") from None


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
        if not isinstance(name, str) or _SHARD_FILE_RE.fullmatch(name) is None:
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
        if not isinstance(entry.get("compression", ""), str):
            raise bad(f"shard {name}: compression must be text")
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
        if not isinstance(name, str) or _SHARD_FILE_RE.fullmatch(name) is None:
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


# --------------------------------------------------------------------------------------------
# durable file operations (the commit protocol, DESIGN.md section 4)


#: errno values of a local write the user can fix: what each means, and the fix.
STORAGE_ERRNOS: Final = {
    errno.ENOSPC: ("the disk is full", "free space there"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space within the quota"),
    errno.EROFS: (
        "the filesystem is read-only",
        "remount it read-write or use another datasets root ($HARVEST_DATASETS)",
    ),
    errno.EACCES: (
        "permission denied",
        "make it writable for this user or use another datasets root ($HARVEST_DATASETS)",
    ),
    errno.EPERM: (
        "operation not permitted",
        "make it writable for this user or use another datasets root ($HARVEST_DATASETS)",
    ),
}


def storage_error(
    err: OSError, path: str | os.PathLike[str] | None, doing: str = "write"
) -> StorageError | None:
    """The one-line ``StorageError`` for a failed local write, or None for other errors.

    ``path`` names where when the error does not (``shutil``'s copies raise ENOSPC without a
    file name); ``doing`` is the verb of the message ("write", "create", ...).

    >>> str(storage_error(OSError(errno.EROFS, "Read-only file system"), "/data/x"))[:46]
    'cannot write /data/x: the filesystem is read-o'
    """
    if isinstance(err, HarvestError):
        return err if isinstance(err, StorageError) else None
    known = STORAGE_ERRNOS.get(err.errno) if err.errno is not None else None
    if known is None:
        return None
    meaning, fix = known
    where = err.filename2 or err.filename or path  # a copy's (src, dest): the dest filled up
    strerror = err.strerror or os.strerror(err.errno)
    return StorageError(
        f"cannot {doing} {where if where is not None else '(unknown path)'}: {meaning} "
        f"({strerror}); {fix}, then run the same command again",
        path=None if where is None else os.fspath(where),
        errno=err.errno,
    )


@contextlib.contextmanager
def storage_errors(path: str | os.PathLike[str] | None, doing: str = "write") -> Iterator[None]:
    """Raise a full disk, exhausted quota, read-only root or denied write as ``StorageError``.

    Other errors pass unchanged. The durable I/O functions below and the writers use it, so
    every operation that writes a dataset ends in one line instead of an ``OSError``.
    """
    try:
        yield
    except OSError as e:
        mapped = storage_error(e, path, doing)
        if mapped is None or mapped is e:
            raise
        raise mapped from e


def fsync_path(path: Path) -> None:
    """Fsync a file or directory by path (h5py's close does not fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Create ``path`` holding ``data`` (fsynced with ``sync``); a failed write removes it.

    Every byte a writer puts in a dataset's folder goes through here (shards, as one HDF5
    image; ``metadata.json``), so a full disk is one ``StorageError`` (see
    ``storage_errors``) and leaves no partial file.
    """
    with storage_errors(path):
        try:
            with open(path, "wb") as fh:
                fh.write(data)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via ``<path>.tmp``: write, fsync, replace, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with storage_errors(path):
        try:
            write_new_file(tmp, data, sync=True)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_path(path.parent)


# --------------------------------------------------------------------------------------------
# locking


class DatasetLock:
    """Exclusive writer lock of one dataset folder, kept outside it [review 8].

    The lock is keyed by the dataset folder's real path (issue 16 item 18): it is
    ``<real parent>/.locks/<real name>.lock``, so one dataset reached through two roots (a
    symlinked root, namespace or dataset folder) has one lock. For an id without namespace in
    a root without links that is ``<root>/.locks/<id>.lock``; for ``ns/name-v0`` it is
    ``<root>/ns/.locks/name-v0.lock``. The holder's pid is written after the lock is taken,
    so a refused writer can name it.

    Lock files are created ``0664`` minus the umask, like every other file a writer makes: a
    root shared by a group (umask 002) gets group-writable locks, a private one stays
    private. A lock file this user cannot write (another user's, under umask 022) is
    opened read-only: ``flock`` works on it, only the holder's pid is not recorded.
    """

    def __init__(self, dataset_id: str, root: str | os.PathLike[str] | None = None) -> None:
        parse_dataset_id(dataset_id)
        self.dataset_id = dataset_id
        self._root = root
        real = Path(os.path.realpath(dataset_path(dataset_id, root)))
        self.path = real.parent / LOCKS_DIR / f"{real.name}.lock"
        self._fd: int | None = None

    def acquire(self) -> DatasetLock:
        """Take the lock or raise ``LockHeldError`` naming the holder's pid.

        Raises:
            LockHeldError: another process holds it.
            UsageError: a new dataset's id is inside another dataset's folder.
            StorageError: the lock cannot be created (a read-only or not writable root).
        """
        self._refuse_new_nested()
        with storage_errors(self.path, "create the writer lock"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o664)
                writable = True
            except PermissionError as e:
                try:
                    fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
                except FileNotFoundError:
                    raise e from None
                writable = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = int(holder) if holder.isdigit() else None
            raise LockHeldError(
                f"dataset {self.dataset_id!r} is being written by another process "
                f"(pid {holder or 'unknown'}); wait for it to finish or stop it",
                pid=pid,
            ) from None
        if writable:  # the pid only names the holder: a full disk must not fail the lock
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def _refuse_new_nested(self) -> None:
        # The lock sits beside the dataset folder, so the lock of a new id inside another
        # dataset would be created in that dataset's folder: refuse it here, before any
        # writer's own nesting check runs. A dataset nested by an older harvest still locks,
        # so that it can be deleted.
        base = datasets_root(self._root)
        if (base / self.dataset_id / METADATA_FILE).exists():
            return
        for prefix in id_ancestors(self.dataset_id):
            if (base / prefix / METADATA_FILE).exists():
                raise nesting_error(self.dataset_id, prefix, f"in {base}")

    def release(self) -> None:
        """Release the lock (the lock file stays; it is reused)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DatasetLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------------------------
# writing


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


def place_file(src: Path, dest: Path) -> str:
    """Put a copy of the immutable file ``src`` at ``dest``, copy-free where the filesystem allows.

    A hard link first, else ``copy_file_range`` (a server- or extent-level copy on NFS 4.2,
    XFS and btrfs), else a streaming copy; never re-encoded. Returns how: ``"link"`` or
    ``"copy"``. The caller fsyncs.
    """
    try:
        os.link(src, dest)
        return "link"
    except OSError:
        pass
    with storage_errors(dest), open(src, "rb") as fin, open(dest, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), size - done)
                if n == 0:
                    break
                done += n
        except (AttributeError, OSError):
            fin.seek(done)
            fout.seek(done)
            fout.truncate(done)
            while chunk := fin.read(1 << 22):
                fout.write(chunk)
    return "copy"


class DatasetWriter:
    """The single committer of one dataset: writes shards durably and commits the manifest.

    Opening takes the writer lock, reads the last commit (if any), removes files no commit
    references (temp files, shards of a crashed window or a replaced generation) and loads a
    numpy index of committed episode ids and digests.
    """

    def __init__(self, dataset_id: str, root: str | os.PathLike[str] | None = None) -> None:
        self.dataset_id = dataset_id
        self.root = datasets_root(root)
        self.path = dataset_path(dataset_id, self.root)
        self.data_dir = self.path / DATA_DIR
        self._lock = DatasetLock(dataset_id, self.root).acquire()
        try:
            self.meta: dict[str, Any] | None = (
                read_metadata(self.path, dataset_id)
                if (self.path / METADATA_FILE).exists()
                else None
            )
            self._ids = np.zeros(0, np.int64)
            self._digests = np.zeros((0, 32), np.uint8)
            self._installed: set[str] = set()  # shards installed since the last commit
            if self.meta is not None:
                self._load_index()
            self.cleanup()
        except BaseException:
            self._lock.release()
            raise

    # -- state ---------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """True when the dataset has a commit."""
        return self.meta is not None

    def committed_ids(self) -> np.ndarray:
        """Episode ids of the last commit (numpy, unsorted)."""
        return self._ids

    def _load_index(self) -> None:
        assert self.meta is not None
        ids, digests = [], []
        for entry in self.meta.get("shards", []):
            table = read_shard_table(self.data_dir / entry["file"], ("id", "digest"))
            pos, mapped = map_shard_ids(entry, table["id"])
            ids.append(mapped)
            digests.append(table["digest"][pos])
        if ids:
            self._ids = np.concatenate(ids)
            self._digests = np.concatenate(digests)

    def cleanup(self) -> list[str]:
        """Delete this writer's own leftovers: files no commit references.

        Only what it can prove is its own (issue 16 item 4): regular files (``lstat``: never a
        link, never a folder) named as this module names shards and their temp files, that
        the manifest does not reference, plus a regular ``metadata.json.tmp``. A ``data/``
        that is a symlink is not cleaned at all: the folder it points to may be shared (two
        datasets' ``data/`` linked to one place name shards alike), so a name proves nothing
        there; its leftovers only cost space, and a warning says so.
        """
        keep = {e["file"] for e in (self.meta or {}).get("shards", [])}
        removed: list[str] = []
        if self.data_dir.is_symlink():
            log.warning(
                "not cleaning %s: it is a symbolic link, so its files may not be this dataset's",
                self.data_dir,
            )
        elif self.data_dir.is_dir():
            for p in self.data_dir.iterdir():
                if p.name not in keep and _is_own_file(p):
                    _force_unlink(p)
                    removed.append(p.name)
        tmp = self.path / METADATA_TMP
        if _is_regular(tmp):
            tmp.unlink()
            removed.append(METADATA_TMP)
        if removed:
            log.info("removed %d uncommitted file(s) from %s", len(removed), self.path)
        return removed

    # -- generations -----------------------------------------------------------------------

    def start(self, base: dict[str, Any], *, commit: bool = True) -> None:
        """Begin a new, empty generation with ``base`` metadata (new dataset or overwrite).

        ``commit=False`` leaves the previous commit in place until the first ``commit()``:
        curation builds a whole generation and publishes it at once. An overwrite only swaps
        the manifest: the old generation's shards stay on disk until the next writer opens
        the dataset (``cleanup``), so snapshots opened on the old generation stay readable
        meanwhile [review 8].
        """
        check_not_nested(self.dataset_id, self.root)
        now = time.time()
        self.meta = {
            "format_version": FORMAT_VERSION,
            "dataset_id": self.dataset_id,
            **base,
            "generation": uuid.uuid4().hex,
            "created": now,
            # keep counting across generations: a shard name is never reused [review 8]
            "next_shard_seq": int((self.meta or {}).get("next_shard_seq", 0)),
            "shards": [],
        }
        self._ids = np.zeros(0, np.int64)
        self._digests = np.zeros((0, 32), np.uint8)
        with storage_errors(self.data_dir, "create"):
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if commit:
            self.commit()

    # -- shards ----------------------------------------------------------------------------

    def write_shard(self, batch: EpisodeBatch, compression: str | None = "gzip") -> dict[str, Any]:
        """Durably write ``batch`` as a new shard; it is part of the dataset after ``commit``.

        The file is written under a hidden temp name (``write_shard_file``: a full disk leaves
        none), then installed.
        """
        if self.meta is None:
            raise RuntimeError("DatasetWriter.start() must be called before writing shards")
        batch.table["digest"] = episode_digests(batch)
        tmp = self.data_dir / f".shard-{uuid.uuid4().hex[:12]}.h5.tmp"
        try:
            write_shard_file(batch, tmp, compression)
            return self._install(tmp, batch.table, batch.info_schema(), compression, id_offset=0)
        except BaseException:  # e.g. a second Ctrl-C during the fsync (issue 16, item 19)
            _force_unlink(tmp)
            raise

    def write_image(
        self, image: bytes, table: dict[str, Any], schema: Any, compression: str | None
    ) -> dict[str, Any]:
        """Durably install a shard built elsewhere as bytes (``build_shard_bytes``).

        E.g. by a Ray worker; ``table`` must carry its digests.
        """
        if self.meta is None:
            raise RuntimeError("DatasetWriter.start() must be called before writing shards")
        tmp = self.data_dir / f".shard-{uuid.uuid4().hex[:12]}.h5.tmp"
        try:
            write_new_file(tmp, image)
            return self._install(tmp, table, schema, compression, id_offset=0)
        except BaseException:  # e.g. a second Ctrl-C during the fsync (issue 16, item 19)
            _force_unlink(tmp)
            raise

    def adopt_shard(
        self, src: Path, id_offset: int = 0, compression: str | None = None
    ) -> dict[str, Any]:
        """Move an already-written shard file (e.g. a DataCollector spill) into ``data/``.

        ``src`` must be on the same filesystem; its episode ids are shifted by ``id_offset`` in
        the manifest, never in the immutable file.
        """
        if self.meta is None:
            raise RuntimeError("DatasetWriter.start() must be called before adopting shards")
        with _open_shard(src) as f:
            table = _read_table(f)
            schema = json.loads(f.attrs.get("info_schema", "null"))
        return self._install(src, table, schema, compression, id_offset)

    def link_shard(
        self, src: Path, entry: dict[str, Any], id_map: list[list[int]]
    ) -> dict[str, Any]:
        """Add another dataset's committed shard ``src`` (manifest ``entry``) under ``id_map``.

        The file is hard-linked (else copied without re-encoding, see ``place_file``); only
        the manifest renumbers its episodes. The shard's sha256 is the source manifest's: a
        link is the same file, and a copy is checked against it.
        """
        if self.meta is None:
            raise RuntimeError("DatasetWriter.start() must be called before linking shards")
        name = self._next_name(entry["sha256"])
        dest = self.data_dir / name
        tmp = self.data_dir / f".link-{uuid.uuid4().hex[:12]}.h5.tmp"
        try:
            try:
                how = place_file(src, tmp)
            except FileNotFoundError as e:
                if src.exists():
                    raise
                # a stale snapshot's shard: superseded, and removed by a later writer
                raise missing_shard_error(src) from e
            if how == "copy":
                fsync_path(tmp)
                os.chmod(tmp, 0o444)
                if sha256_file(tmp) != entry["sha256"]:
                    raise CorruptDatasetError(
                        f"shard {src} does not match its sha256 in the source's metadata.json; "
                        "run verify on the source"
                    )
            os.rename(tmp, dest)
        except BaseException:
            _force_unlink(tmp)
            raise
        fsync_path(self.data_dir)
        table = read_shard_table(dest, ("id", "length", "digest"))
        return self._register(
            name,
            table,
            entry.get("info_schema"),
            entry.get("compression"),
            0,
            entry["sha256"],
            dest.stat().st_size,
            id_map=id_map,
        )

    def _next_name(self, sha: str) -> str:
        assert self.meta is not None
        seq = int(self.meta["next_shard_seq"])
        self.meta["next_shard_seq"] = seq + 1
        return shard_name(seq, sha)

    def _install(
        self,
        src: Path,
        table: dict[str, Any],
        schema: Any,
        compression: str | None,
        id_offset: int,
    ) -> dict[str, Any]:
        """Install ``src`` in ``data/``: fsync, make read-only, rename, fsync the folder."""
        with storage_errors(self.data_dir, "install a shard in"):
            fsync_path(src)
            os.chmod(src, 0o444)
            sha = sha256_file(src)
            name = self._next_name(sha)
            dest = self.data_dir / name
            os.rename(src, dest)
            fsync_path(self.data_dir)
        return self._register(name, table, schema, compression, id_offset, sha, dest.stat().st_size)

    def _register(
        self,
        name: str,
        table: dict[str, Any],
        schema: Any,
        compression: str | None,
        id_offset: int,
        sha: str,
        nbytes: int,
        id_map: list[list[int]] | None = None,
    ) -> dict[str, Any]:
        assert self.meta is not None
        entry: dict[str, Any] = {"file": name, "id_offset": int(id_offset)}
        if id_map is not None:
            entry["id_map"] = id_map
        pos, ids = map_shard_ids(entry, table["id"])
        if len(ids) == 0:
            raise ValueError(f"shard {name}: its id map selects no episode")
        steps = int(table["length"][pos].sum())
        entry.update(
            {
                "episodes": int(len(ids)),
                "id_ranges": id_ranges(np.sort(ids)),  # the set of ids; shard order may differ
                "obs_rows": steps + len(ids),
                "step_rows": steps,
                "bytes": int(nbytes),
                "sha256": sha,
                "compression": compression or "none",
                "info_schema": schema,
            }
        )
        self.meta["shards"].append(entry)
        self._installed.add(name)
        self._ids = np.concatenate([self._ids, ids])
        self._digests = np.concatenate([self._digests, table["digest"][pos]])
        return entry

    # -- commit ----------------------------------------------------------------------------

    def commit(self, **updates: Any) -> dict[str, Any]:
        """Atomically publish the current shard list (plus ``updates``) as the new commit."""
        if self.meta is None:
            raise RuntimeError("nothing to commit: call start() first")
        meta = self.meta
        meta.update(updates)
        if len(np.unique(self._ids)) != len(self._ids):
            raise CorruptDatasetError(
                f"refusing to commit {self.dataset_id!r}: duplicate episode ids in the shard list"
            )
        meta["total_episodes"] = int(len(self._ids))
        meta["total_steps"] = int(sum(e["step_rows"] for e in meta["shards"]))
        meta["dataset_bytes"] = int(sum(e["bytes"] for e in meta["shards"]))
        meta["fingerprint"] = fingerprint(self._ids, self._digests)
        meta["updated"] = time.time()
        meta["format_version"] = FORMAT_VERSION  # a version 1 dataset is sealed from now on
        meta.pop(MANIFEST_SHA256, None)
        data = seal_metadata(meta).encode()
        # never publish a manifest that readers refuse (a bug here must not cost the dataset)
        loads_metadata(data, f"the new {METADATA_FILE} of {self.dataset_id}", self.dataset_id)
        with storage_errors(self.path, "create"):
            self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / METADATA_FILE, data)
        self._installed.clear()
        return meta

    def remove_uncommitted(self) -> list[str]:
        """Delete the shards this writer installed that the commit on disk does not list.

        For a run stopped between installing a shard and committing it (a second Ctrl-C,
        issue 16 item 19): nothing is left for the next writer to clean. Files some commit
        listed are never touched (a reader's snapshot may still use a merged-away shard). The
        writer's view returns to the commit on disk. Returns the names removed.
        """
        if not self._installed:
            return []
        try:
            disk = read_metadata(self.path, self.dataset_id)
        except (OSError, HarvestError):  # no commit on disk to compare with: keep them
            return []
        listed = {e["file"] for e in disk.get("shards", [])}
        removed = sorted(self._installed - listed)
        for name in removed:
            _force_unlink(self.data_dir / name)
        self._installed.clear()
        if removed:
            self.meta = disk
            self._ids = np.zeros(0, np.int64)
            self._digests = np.zeros((0, 32), np.uint8)
            self._load_index()
            fsync_path(self.data_dir)
        return removed

    # -- repack ----------------------------------------------------------------------------

    def repack(self, target_bytes: int, compression: str | None = "gzip") -> int:
        """Merge runs of small shards into shards of about ``target_bytes``; returns shards merged.

        A shard is small when under ``1/SMALL_SHARD_FRACTION`` of the target (16 MB at the
        default 256 MB). Above that, what a shard costs on its own (opening its episode
        table, one manifest entry) is a few percent of reading its data, and re-encoding it
        would cost more than it saves: a full commit window stays as it is, the many small
        shards of short windows or Ray batches are merged. The fingerprint does not change:
        digests ignore shard boundaries and compression.
        """
        assert self.meta is not None
        shards = self.meta["shards"]
        limit = target_bytes // SMALL_SHARD_FRACTION
        small = [
            e
            for e in shards
            if e["bytes"] < limit and e.get("id_offset", 0) == 0 and "id_map" not in e
        ]
        if len(small) < 2:
            return 0
        groups: list[list[dict[str, Any]]] = [[]]
        size = 0
        for e in sorted(small, key=lambda e: e["id_ranges"][0][0] if e["id_ranges"] else -1):
            if groups[-1] and size + e["bytes"] > target_bytes:
                groups.append([])
                size = 0
            groups[-1].append(e)
            size += e["bytes"]
        groups = [g for g in groups if len(g) > 1]
        merged = 0
        for group in groups:
            # merge_shards streams through HDF5, which crashes on a full disk: merge only with
            # room to spare (small shards are complete data; the next run repacks them)
            need = 2 * sum(e["bytes"] for e in group) + REPACK_SPARE_BYTES
            if free_bytes(self.data_dir) < need:
                log.warning(
                    "not repacking %d small shards of %s: under %s free",
                    len(group),
                    self.dataset_id,
                    human_size(need),
                )
                continue
            merged += self._merge(group, compression)
        return merged

    def _merge(self, group: list[dict[str, Any]], compression: str | None) -> int:
        """Replace ``group`` by one streamed shard and commit."""
        assert self.meta is not None
        names = {e["file"] for e in group}
        before = fingerprint(self._ids, self._digests)
        keep_shards, keep_ids, keep_digests = list(self.meta["shards"]), self._ids, self._digests
        tmp = self.data_dir / f".merge-{uuid.uuid4().hex[:8]}.h5.tmp"
        new_name = None
        try:
            table, schema = merge_shards(
                [self.data_dir / e["file"] for e in group], tmp, compression
            )
            self.meta["shards"] = [e for e in self.meta["shards"] if e["file"] not in names]
            self._ids, self._digests = _drop_ids(self._ids, self._digests, table["id"])
            new_name = self._install(tmp, table, schema, compression, 0)["file"]
            if fingerprint(self._ids, self._digests) != before:
                raise CorruptDatasetError(
                    "repack would change the fingerprint; nothing was committed (a bug in "
                    "harvest: please report it)"
                )
        except BaseException:
            self.meta["shards"] = keep_shards
            self._ids, self._digests = keep_ids, keep_digests
            _force_unlink(tmp)
            if new_name is not None:
                _force_unlink(self.data_dir / new_name)
            raise
        self.commit()
        # the merged shards stay until the next writer opens the dataset (cleanup), so a
        # reader's snapshot taken before this commit stays readable
        return len(group)

    def close(self) -> None:
        """Release the writer lock."""
        self._lock.release()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_ids(
    ids: np.ndarray, digests: np.ndarray, drop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isin(ids, drop)
    return ids[keep], digests[keep]


#: Names this module gives files in ``data/``: shards and the temp files of ``write_shard``,
#: ``write_image``, ``link_shard`` and ``_merge`` (``.shard-…``, ``.link-…``, ``.merge-…``).
_OWN_TMP_RE: Final = re.compile(r"^\.(?:shard|link|merge)-[A-Za-z0-9_-]+\.h5\.tmp$", re.ASCII)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_own_file(path: Path) -> bool:
    """A regular file (not followed if a link) with a shard's or a writer temp file's name."""
    named = SHARD_RE.match(path.name) or _OWN_TMP_RE.match(path.name)
    return named is not None and _is_regular(path)


def _force_unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def exact_shards(
    path: Path, meta: dict[str, Any], staging: Path
) -> tuple[dict[str, Any], dict[str, Path]]:
    """A manifest and files for exporting a dataset whose shards hold only its episodes.

    A saved view links whole shards of its source (copy-free), so a shard may also hold
    episodes the manifest leaves out, e.g. a split's held-out part [issue 16]. An export must
    carry exactly the dataset's episodes: each such shard is rewritten into ``staging`` with
    just the episodes the manifest maps, under their dataset ids, in id order. Ids and
    digests are unchanged, so the fingerprint is too; the same dataset always gives the same
    bytes, so a repeated push finds them in place.

    Returns:
        ``(manifest, {relative path: local file})``; the manifest is ``meta`` itself when no
        shard holds foreign episodes.

    Raises:
        CorruptDatasetError: a shard to rewrite does not match its sha256 or its digests.
    """
    files: dict[str, Path] = {}
    entries: list[dict[str, Any]] = []
    label = str(meta.get("dataset_id", path))
    for (rel, sha, _), entry in zip(dataset_files(meta, label), meta["shards"], strict=True):
        src = path / rel
        entries.append(entry)
        files[rel] = src
        if entry.get("id_map") is None:  # an id offset keeps every episode of the file
            continue
        stored = read_shard_table(src, ("id",))["id"]
        pos, ids = map_shard_ids(entry, stored)
        if len(pos) == len(stored):
            continue
        if sha256_file(src) != sha:
            raise CorruptDatasetError(
                f"{src} does not match its sha256 in metadata.json; run `curate verify` on {label}"
            )
        order = np.argsort(ids, kind="stable")
        batch = read_shard(src)
        part = select_episodes(batch, pos[order], ids[order])
        want = part.table["digest"].copy()
        part.table["digest"] = episode_digests(part)
        if not np.array_equal(part.table["digest"], want):
            raise CorruptDatasetError(
                f"{src} does not match its own digests; run `curate verify` on {label}"
            )
        compression = entry.get("compression")
        data = build_shard_bytes(part, None if compression in (None, "none") else compression)
        new_sha = hashlib.sha256(data).hexdigest()
        seq = SHARD_RE.match(entry["file"])
        name = shard_name(int(seq[1]) if seq else len(entries) - 1, new_sha)
        staging.mkdir(parents=True, exist_ok=True)
        write_new_file(staging / name, data, sync=True)
        new = {k: v for k, v in entry.items() if k != "id_map"}
        new.update(file=name, id_offset=0, sha256=new_sha, bytes=len(data))
        entries[-1] = new
        del files[rel]
        files[f"{DATA_DIR}/{name}"] = staging / name
    if all(a is b for a, b in zip(entries, meta["shards"], strict=True)):
        return meta, files
    return {**meta, "shards": entries, "dataset_bytes": sum(e["bytes"] for e in entries)}, files


# --------------------------------------------------------------------------------------------
# verification


@dataclass
class VerifyReport:
    """What ``verify_dataset`` found: ``problems`` is empty for a sound dataset."""

    dataset_id: str
    episodes: int = 0
    steps: int = 0
    fingerprint: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def verify_dataset(dataset_id: str, root: str | os.PathLike[str] | None = None) -> VerifyReport:
    """Check a dataset against its manifest, recomputing digests and fingerprint from disk.

    Every shard's sha256, episode ids and step data are checked; nothing is trusted from memory.
    """
    path = dataset_path(dataset_id, root)
    report = VerifyReport(dataset_id)
    try:
        meta = read_metadata(path, dataset_id)
        files = dataset_files(meta, dataset_id)  # plain shard names in data/, sha256s, sizes
    except CorruptDatasetError as e:
        report.problems.append(str(e))
        return report
    all_ids, all_digests = [], []
    for (rel, sha, expected), entry in zip(files, meta.get("shards", []), strict=True):
        file, name = path / rel, entry["file"]
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            report.problems.append(f"{name}: missing")
            continue
        if size != expected:
            report.problems.append(
                f"{name}: {size:,} bytes, metadata.json says {expected:,} "
                f"({'truncated' if size < expected else 'grown'})"
            )
            continue
        if sha256_file(file) != sha:
            report.problems.append(f"{name}: sha256 mismatch (file changed or corrupt)")
            continue
        try:
            batch = read_shard(file)
        except (CorruptDatasetError, OSError, KeyError) as e:
            report.problems.append(f"{name}: unreadable ({e})")
            continue
        pos, ids = map_shard_ids(entry, batch.table["id"])
        if id_ranges(np.sort(ids)) != entry["id_ranges"]:
            report.problems.append(f"{name}: episode ids differ from the manifest")
        digests = episode_digests(batch)
        bad = np.flatnonzero(np.any(digests != batch.table["digest"], axis=1)[pos])
        if len(bad):
            report.problems.append(
                f"{name}: {len(bad)} episode digest(s) do not match their data "
                f"(first id {int(ids[bad[0]])})"
            )
        all_ids.append(ids)
        all_digests.append(digests[pos])
        report.steps += int(batch.table["length"][pos].sum())
    ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
    digests = np.concatenate(all_digests) if all_digests else np.zeros((0, 32), np.uint8)
    report.episodes = len(ids)
    if not report.problems:
        report.fingerprint = fingerprint(ids, digests)
        if report.fingerprint != meta.get("fingerprint"):
            report.problems.append("fingerprint recomputed from disk differs from metadata.json")
        if report.episodes != meta.get("total_episodes"):
            report.problems.append("total_episodes in metadata.json differs from the shards")
        if report.steps != meta.get("total_steps"):
            report.problems.append("total_steps in metadata.json differs from the shards")
    if len(np.unique(ids)) != len(ids):
        report.problems.append("duplicate episode ids across shards")
    return report


# --------------------------------------------------------------------------------------------
# metadata keys


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


# --------------------------------------------------------------------------------------------
# reading rows (the readers' primitive: one contiguous block of whole episodes)


@dataclass
class ShardRows:
    """Contiguous rows of a shard, column by column.

    Observation-like columns have T+1 rows per episode, step columns T; keys are column names
    inside their group, as in ``EpisodeBatch``.
    """

    observations: dict[str, np.ndarray]
    actions: dict[str, np.ndarray]
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, np.ndarray] | None
    info_masks: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return _columns_nbytes(self)


class ShardReader:
    """A per-process, bounded LRU of open shard files [review 9].

    Shards are immutable, so they are opened with ``locking=False``; handles are keyed by pid
    and reopened after a fork (e.g. inside a torch ``DataLoader`` worker); each handle has a
    small chunk cache because callers read whole blocks and cache those themselves.
    """

    def __init__(self, max_open: int = 64, chunk_cache_bytes: int = 1 << 20) -> None:
        self.max_open = max_open
        self.chunk_cache_bytes = chunk_cache_bytes
        self._pid = os.getpid()
        self._open: dict[str, tuple[h5py.File, list[tuple[str, str, Any]]]] = {}

    def _handle(self, path: Path) -> tuple[h5py.File, list[tuple[str, str, Any]]]:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours to use
            self._open = {}
            self._pid = os.getpid()
        key = str(path)
        hit = self._open.pop(key, None)
        if hit is None:
            try:
                f = h5py.File(path, "r", locking=False, rdcc_nbytes=self.chunk_cache_bytes)
            except FileNotFoundError as e:
                raise CorruptDatasetError(
                    f"shard {path} is missing: the dataset changed after this snapshot was "
                    "opened (call refresh()) or it is damaged (run verify)"
                ) from e
            except OSError as e:
                raise CorruptDatasetError(f"shard {path} is unreadable ({e}); run verify") from e
            # dataset objects are kept with the file: each keeps its chunk cache between the
            # consecutive block reads, so a chunk shared by two blocks is decompressed once
            try:
                with _damaged(path):
                    _check_layout(f)
                    hit = (f, [(g, n, f[p]) for g, n, p in _list_columns(f)])
            except CorruptDatasetError:
                f.close()
                raise
            while len(self._open) >= self.max_open:
                old = self._open.pop(next(iter(self._open)))
                old[0].close()
        self._open[key] = hit  # most recently used last
        return hit

    def read_rows(self, path: Path, obs_rows: slice, step_rows: slice) -> ShardRows:
        """Read one contiguous block of rows from every column of a shard."""
        f, cols = self._handle(path)
        out: dict[str, dict[str, np.ndarray]] = {"observations": {}, "actions": {}, "infos": {}}
        masks: dict[str, np.ndarray] = {}
        steps: list[np.ndarray] = []
        with _damaged(path):
            for group, name, dset in cols:
                if group == "steps":
                    steps.append(dset[step_rows])
                    continue
                data = dset[step_rows if group == "actions" else obs_rows]
                if group == "infos" and name.endswith(MASK_SUFFIX):
                    masks[name[: -len(MASK_SUFFIX)]] = data
                else:
                    out[group][name] = data
        return ShardRows(
            observations=out["observations"],
            actions=out["actions"],
            rewards=steps[0],
            terminations=steps[1],
            truncations=steps[2],
            infos=out["infos"] if "infos" in f else None,
            info_masks=masks,
        )

    def close(self) -> None:
        """Close every handle this process opened."""
        if os.getpid() == self._pid:
            for f, _ in self._open.values():
                f.close()
        self._open = {}


def _dataset_names(node: h5py.Group) -> list[str]:
    names: list[str] = []
    node.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
    return names


def _list_columns(f: h5py.File) -> list[tuple[str, str, str]]:
    """(group, column name, HDF5 path) of every step, observation, action and info column."""
    out: list[tuple[str, str, str]] = [("steps", name, name) for name in STEP_COLUMNS]
    for group in (*GROUPS, "infos"):
        if group not in f:
            continue
        node = f[group]
        if isinstance(node, h5py.Dataset):
            out.append((group, "", group))
            continue
        out.extend((group, _column_name(n), f"{group}/{n}") for n in _dataset_names(node))
    return out
