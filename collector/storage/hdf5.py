"""The HDF5 codec: shard files (encode, decode, merge) and ``ShardReader``.

The one module that knows HDF5 keys, with ``checksums`` (which checks a shard's structure).
Shards use the HDF5 1.10 file format (``LIBVER``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import h5py
import hdf5plugin
import numpy as np

from collector.errors import CorruptDatasetError
from collector.storage import digests, durable
from collector.storage.batch import (
    STEP_COLUMNS,
    TABLE_FIELDS,
    EpisodeBatch,
    ShardRows,
    concat_tables,
    episode_blocks,
    select_episodes,
    select_table,
    union_schema,
)
from collector.storage.checksums import (
    LAYOUT_CHECKSUM,
    TABLE_CHECKSUM,
    attr_text,
    check_layout,
    layout_checksum,
    table_checksum,
)
from collector.storage.codecs import is_image_leaf, leaf_codec, parse_compression
from collector.storage.manifest import FORMAT_VERSION, map_shard_ids

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_ROWS",
    "GROUPS",
    "LAYOUT_CHECKSUM",
    "LIBVER",
    "MASK_SUFFIX",
    "MERGE_BLOCK_BYTES",
    "ROOT_LEAF",
    "ShardReader",
    "TABLE_CHECKSUM",
    "build_shard_bytes",
    "dataset_episodes",
    "merge_shards",
    "missing_shard_error",
    "open_shard",
    "parse_compression",
    "read_checked_shard",
    "read_shard",
    "read_shard_table",
    "read_table",
    "write_shard_file",
]


# The HDF5 1.10 file format (2016), pinned at both ends: readable by every HDF5 >= 1.10 that
# Minari and TorchRL users have (h5py >= 2.7), never HDF5 2.0's newer structures [review 9e],
# and every piece of HDF5's own metadata (superblock, object headers, chunk indexes) carries
# a checksum. With the 1.0 format ("earliest"), an exhaustive one-bit flip of a shard made
# reads return wrong data silently at 8 of its first 2,000 bytes (chunk index keys); 1.10: 0.
LIBVER: Final = ("v110", "v110")
CHUNK_BYTES: Final = 512 * 1024
#: Chunk size of image-like columns: zstd:3 stores Pong in 1 MiB chunks (10 frames) at 93
#: B/frame, in 512 KiB chunks at 107; a chunk still fits ``ShardReader``'s 1 MiB chunk cache.
IMAGE_CHUNK_BYTES: Final = 1024 * 1024
CHUNK_ROWS: Final = 16_384
MASK_SUFFIX: Final = "@mask"
GROUPS: Final = ("observations", "actions")


def _dataset_kwargs(
    rows: int,
    row_shape: tuple[int, ...],
    dtype: np.dtype,
    compression: str | None,
    level: int | None,
) -> dict[str, Any]:
    """Chunking, compression and a fletcher32 checksum for one step-aligned column.

    ``compression`` and ``level`` are a parsed ``storage.compression`` (``auto`` is resolved
    here, per column, by ``codecs.leaf_codec``); image-like columns get 1 MiB chunks.
    Every chunk carries HDF5's fletcher32 checksum (uncompressed columns are chunked for
    it), so a read of a damaged chunk fails inside HDF5 instead of returning wrong numbers.
    """
    if rows == 0:
        return {}
    codec, level, shuffle = leaf_codec(compression, level, row_shape, dtype)
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    budget = IMAGE_CHUNK_BYTES if is_image_leaf(row_shape, dtype) else CHUNK_BYTES
    # the same rows per chunk for every narrow column, a divisor of the readers' block size,
    # so a block read decompresses each chunk once (wide rows: by bytes)
    chunk_rows = int(max(1, min(rows, CHUNK_ROWS, budget // row_bytes)))
    if codec is None:  # a last chunk's unused rows would be stored as they are
        chunk_rows = -(-rows // -(-rows // chunk_rows))  # equal chunks, none mostly empty
    kw: dict[str, Any] = {"chunks": (chunk_rows, *row_shape), "fletcher32": True}
    if codec == "zstd":
        kw.update(hdf5plugin.Zstd(clevel=level))
    elif codec is not None:
        kw["compression"] = codec
        if level is not None:
            kw["compression_opts"] = level
    if shuffle:
        kw["shuffle"] = True
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


def _fill_shard(
    f: h5py.File,
    batch: EpisodeBatch,
    compression: str | None,
    before_table: Callable[[], object] | None = None,
) -> None:
    comp, level = parse_compression(compression)
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["info_schema"] = _schema_attr(batch.info_schema())
    made: dict[str, h5py.Dataset] = {}  # every dataset, by its path (for layout_checksum)
    for group in GROUPS:
        cols = getattr(batch, group)
        for name, arr in cols.items():
            key = _h5name(group, name, cols)
            made[key] = f.create_dataset(key, data=arr, **_column_kwargs(arr, comp, level))
    for name in STEP_COLUMNS:
        arr = getattr(batch, name)
        made[name] = f.create_dataset(name, data=arr, **_column_kwargs(arr, comp, level))
    if batch.infos is not None:
        f.create_group("infos")
        for name, arr in batch.infos.items():
            mask = batch.info_masks[name]
            for key, values in ((name, arr), (name + MASK_SUFFIX, mask)):
                made[f"infos/{key}"] = f.create_dataset(
                    f"infos/{key}", data=values, **_column_kwargs(values, comp, level)
                )
    if before_table is not None:
        before_table()
    made.update(_write_table(f, batch.table))
    f.flush()  # every chunk allocated (none left dirty in the chunk cache) before hashing
    f.attrs[LAYOUT_CHECKSUM] = np.bytes_(layout_checksum(f, made))


def write_shard_file(batch: EpisodeBatch, path: Path, compression: str | None = "gzip") -> None:
    """Write ``batch`` as a shard file at ``path`` (digests must be in ``batch.table``).

    The shard is encoded in memory (``build_shard_bytes``) and written with one plain write
    (``durable.write_new_file``): HDF5 never writes to disk itself, so a full disk is a clean
    ``OSError`` that leaves no file (HDF5 2.0 crashes the process when it closes a file whose
    write failed). Memory holds the compressed image besides ``batch`` meanwhile.
    """
    durable.write_new_file(path, build_shard_bytes(batch, compression))


def build_shard_bytes(
    batch: EpisodeBatch,
    compression: str | None = "gzip",
    before_table: Callable[[], object] | None = None,
) -> bytes:
    """Encode ``batch`` as an HDF5 file image in memory, e.g. for a remote worker to ship.

    ``before_table()`` runs once the data columns are written, before the episode table:
    a caller hashing the episodes in another thread meanwhile waits for their digests there.
    """
    block = int(min(max(batch.nbytes, 1 << 16), 1 << 24))  # fewer reallocs of a large image
    with h5py.File(
        f"shard-{uuid.uuid4().hex}",
        "w",
        driver="core",
        backing_store=False,
        block_size=block,
        libver=LIBVER,
    ) as f:
        _fill_shard(f, batch, compression, before_table)
        f.flush()
        return f.id.get_file_image()


def _write_table(f: h5py.File, table: dict[str, Any]) -> dict[str, h5py.Dataset]:
    """Write the episode table, each column with a sha256 attribute; returns them by path.

    Nothing goes to HDF5's global heap (no variable-length strings, in columns or attributes):
    a damaged global heap can send HDF5 into an endless loop instead of an error. JSON text
    columns are fixed-width UTF-8, deflated so that one long value costs little.
    """
    tab = f.create_group("episodes")
    made: dict[str, h5py.Dataset] = {}
    for key in TABLE_FIELDS:
        value = table[key]
        kw: dict[str, Any] = {}
        if key in ("options", "metadata"):
            encoded = [b"" if o is None else o.encode() for o in value]
            value = np.array(encoded, dtype=f"S{max(1, max(map(len, encoded), default=1))}")
            kw = _dataset_kwargs(len(value), (), value.dtype, "gzip", 4)
        column = tab.create_dataset(key, data=value, **kw)
        column.attrs[TABLE_CHECKSUM] = np.bytes_(table_checksum(value))
        made[f"episodes/{key}"] = column
    return made


def _schema_attr(schema: Any) -> np.bytes_:
    """The info schema as a fixed-width attribute (a ``str`` would be stored in the global heap)."""
    return np.bytes_(json.dumps(schema).encode())


#: Decoded bytes of the episodes ``merge_shards`` holds at a time (a longer episode goes
#: alone): reading each source whole (a commit window: up to ``checkpoint.every_mb``, 32 MiB)
#: was the peak RSS of a ``collect`` run, and grew with it (issue 18).
MERGE_BLOCK_BYTES: Final = 4 << 20


def merge_shards(
    sources: Sequence[Path],
    dest: Path,
    compression: str | None = "gzip",
    entries: Sequence[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Stream ``sources`` into one new shard file at ``dest``, a block of episodes at a time.

    Each source is read in blocks of whole episodes of about ``MERGE_BLOCK_BYTES`` decoded;
    a block's digests are recomputed from its data and checked against the source's table
    before any of it is written, so a merge never launders a damaged shard (``dest`` is then
    incomplete: the caller discards it). Info columns are unioned (a key missing from a
    source is zero-filled with mask False). With ``entries`` (the sources' manifest entries)
    each source keeps only the episodes its ``id_offset``/``id_map`` puts in the dataset,
    stored under their dataset ids in id order, so the merged shard needs no mapping
    (offset 0). Returns (episode table, info schema).

    Raises:
        CorruptDatasetError: a source does not match its own digests.
    """
    comp, level = parse_compression(compression)
    schemas, n_obs, n_steps = _merge_sizes(sources, entries)
    union = union_schema(schemas)
    tables = []
    columns: dict[str, h5py.Dataset] = {}
    reader = ShardReader(max_open=1)
    with contextlib.closing(reader), h5py.File(dest, "w", libver=LIBVER) as out:
        out.attrs["format_version"] = FORMAT_VERSION
        out.attrs["info_schema"] = _schema_attr(union)
        _create_infos(out, union, n_obs, comp, level)

        def write(part: EpisodeBatch, o: int, s: int) -> None:
            for key, arr, rows, at in _merge_columns(part, union, n_obs, n_steps, o, s):
                if key not in columns:  # a handle per column: a lookup costs as much as a write
                    if key not in out:
                        kw = _dataset_kwargs(rows, arr.shape[1:], arr.dtype, comp, level)
                        # an explicit fill value: HDF5 leaves late-allocated contiguous space
                        # uninitialized otherwise
                        shape = (rows, *arr.shape[1:])
                        out.create_dataset(key, shape=shape, dtype=arr.dtype, fillvalue=0, **kw)
                    columns[key] = out[key]
                columns[key][at : at + len(arr)] = arr

        o = s = 0
        for i, path in enumerate(sources):
            table = _merge_source(
                reader, path, None if entries is None else entries[i], write, o, s
            )
            tables.append(table)
            o += int(table["length"].sum()) + len(table["length"])
            s += int(table["length"].sum())
        table = concat_tables(tables)
        _write_table(out, table)
        out.flush()  # every chunk allocated (none left dirty in the chunk cache) before hashing
        out.attrs[LAYOUT_CHECKSUM] = np.bytes_(layout_checksum(out))
    return table, union


def _merge_source(
    reader: ShardReader,
    path: Path,
    entry: dict[str, Any] | None,
    write: Callable[[EpisodeBatch, int, int], None],
    o: int,
    s: int,
) -> dict[str, Any]:
    """Pass the episodes of source ``path`` that ``entry`` maps to ``write``, in checked blocks.

    ``write(part, obs_row, step_row)`` puts a batch at rows of the merged shard; ``o`` and
    ``s`` are the rows written before this source. Returns the source's merged episode table
    (mapped episodes by dataset id, rows back to back). Every episode's digest is checked,
    mapped or not.
    """
    f, cols = reader._handle(path)
    table = read_table(f)
    pos, ids = (
        (np.arange(len(table["id"])), table["id"])
        if entry is None
        else map_shard_ids(entry, table["id"])
    )
    order = np.argsort(ids, kind="stable")
    merged = select_table(table, pos[order], ids[order])
    rank = np.full(len(table["id"]), -1, np.int64)
    rank[pos[order]] = np.arange(len(order))
    widths = {"obs": 0, "step": 0}
    for group, _, dset in cols:
        width = dset.dtype.itemsize * int(np.prod(dset.shape[1:], dtype=np.int64))
        widths["step" if group in ("steps", "actions") else "obs"] += width
    for a, b in episode_blocks(table["length"], widths["obs"], widths["step"], MERGE_BLOCK_BYTES):
        part = _checked_block(path, reader, table, a, b, cols)
        runs = np.flatnonzero(rank[a:b] >= 0)
        runs = runs[np.argsort(rank[a:b][runs], kind="stable")]
        for run in np.split(runs, np.flatnonzero(np.diff(rank[a:b][runs]) != 1) + 1):
            if not len(run):
                continue
            first = int(rank[a + run[0]])
            rows = {k: merged[k][first : first + len(run)] for k in ("obs_offset", "step_offset")}
            in_place = (  # the block's episodes, in its order, with its rows: as merged already
                len(run) == b - a
                and np.array_equal(run, np.arange(b - a))
                and all(np.array_equal(part.table[k], v - v[0]) for k, v in rows.items())
            )
            piece = (
                part if in_place else select_episodes(part, run, merged["id"][first:][: len(run)])
            )
            # the checked digests of what goes to these rows are those the merged table lists
            # for them: a wrong selection is refused, never stored under another id
            if not np.array_equal(piece.table["digest"], merged["digest"][first:][: len(run)]):
                raise CorruptDatasetError(
                    f"merging {path.name} would store episodes under other ids; nothing was "
                    "committed (a bug in harvest: please report it)"
                )
            write(piece, o + int(rows["obs_offset"][0]), s + int(rows["step_offset"][0]))
    if not len(order):  # every column made, with no rows
        write(_checked_block(path, reader, table, 0, 0, cols), o, s)
    return merged


def _checked_block(
    path: Path,
    reader: ShardReader,
    table: dict[str, Any],
    a: int,
    b: int,
    cols: list[tuple[str, str, Any]],
) -> EpisodeBatch:
    """Episodes ``a:b`` of shard ``path`` (its ``table``), checked against their digests."""
    t = {k: v[a:b] for k, v in table.items()}
    spans = {}
    for key, extra in (("obs_offset", 1), ("step_offset", 0)):
        first = np.asarray(t[key], np.int64)
        stop = first + np.asarray(t["length"], np.int64) + extra
        spans[key] = (int(first.min()), int(stop.max())) if b > a else (0, 0)
        t[key] = first - spans[key][0]
        rows = [d.shape[0] for g, _, d in cols if (g in ("steps", "actions")) == (extra == 0)]
        if spans[key][0] < 0 or spans[key][1] > min(rows, default=0) or np.any(stop < first):
            raise CorruptDatasetError(
                f"shard {path}: its episode table points outside its data; run verify"
            )
    got = reader.read_rows(path, slice(*spans["obs_offset"]), slice(*spans["step_offset"]))
    part = EpisodeBatch(
        observations=got.observations,
        actions=got.actions,
        rewards=got.rewards,
        terminations=got.terminations,
        truncations=got.truncations,
        table=t,
        infos=got.infos,
        info_masks=got.info_masks,
    )
    return _check_digests(path, part)


def read_checked_shard(path: Path) -> EpisodeBatch:
    """``read_shard``, its digests recomputed from the data and checked against its table.

    Raises:
        CorruptDatasetError: the shard does not match its own digests.
    """
    return _check_digests(path, read_shard(path))


def _check_digests(path: Path, batch: EpisodeBatch) -> EpisodeBatch:
    """``batch`` (episodes of shard ``path``) once its digests match its data."""
    if np.any(digests.episode_digests(batch) != batch.table["digest"]):
        raise CorruptDatasetError(
            f"shard {path.name} does not match its own digests; run verify before repacking"
        )
    return batch


def dataset_episodes(batch: EpisodeBatch, entry: dict[str, Any]) -> EpisodeBatch:
    """The episodes of a shard's ``batch`` its manifest ``entry`` maps, by dataset id, in order."""
    pos, ids = map_shard_ids(entry, batch.table["id"])
    order = np.argsort(ids, kind="stable")
    if len(pos) == batch.num_episodes and np.array_equal(ids[order], batch.table["id"]):
        return batch  # already stored as the dataset's ids, in order
    return select_episodes(batch, pos[order], ids[order])


def _merge_sizes(
    sources: Sequence[Path], entries: Sequence[dict[str, Any]] | None
) -> tuple[list[dict[str, Any] | None], int, int]:
    """The info schema of each of ``sources`` and their total (observation, step) rows.

    With ``entries``, only the rows of the episodes each entry maps count.
    """
    schemas: list[dict[str, Any] | None] = []
    n_obs = n_steps = 0
    for i, path in enumerate(sources):
        with open_shard(path) as f:
            schemas.append(json.loads(f.attrs.get("info_schema", "null")))
            length = f["episodes/length"][()]
            if entries is not None:
                length = length[map_shard_ids(entries[i], f["episodes/id"][()])[0]]
        n_steps += int(length.sum())
        n_obs += int(length.sum()) + len(length)
    return schemas, n_obs, n_steps


def _merge_columns(
    batch: EpisodeBatch,
    union: dict[str, Any] | None,
    n_obs: int,
    n_steps: int,
    o: int,
    s: int,
) -> list[tuple[str, np.ndarray, int, int]]:
    """``batch``'s columns as (HDF5 key, values, rows of the merged column, first row).

    ``o`` and ``s`` are the observation and step rows written before ``batch``.
    """
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
        if batch.infos is not None and name in batch.infos:
            values = batch.infos[name].astype(np.dtype(spec["dtype"]), copy=False)
            cols.append((f"infos/{name}", values, n_obs, o))
            cols.append((f"infos/{name}{MASK_SUFFIX}", batch.info_masks[name], n_obs, o))
    return cols


def _create_infos(
    out: h5py.File,
    union: dict[str, Any] | None,
    n_obs: int,
    comp: str | None,
    level: int | None,
) -> None:
    """Create the info columns of ``union``, zero-filled with mask False where no source writes."""
    if union is not None:
        out.create_group("infos")
    for name, spec in (union or {}).items():
        dtype = np.dtype(spec["dtype"])
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


def missing_shard_error(path: str | os.PathLike[str]) -> CorruptDatasetError:
    """The error for a committed shard that is gone: a stale snapshot, or damage."""
    return CorruptDatasetError(
        f"shard {path} is missing; the dataset was changed underneath this reader "
        "(refresh() it) or damaged (run verify)"
    )


def open_shard(path: Path) -> h5py.File:
    """Open a shard read-only; a missing file is a ``CorruptDatasetError`` naming it."""
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


def read_table(
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
            if stored is not None and table_checksum(values) != attr_text(stored):
                raise CorruptDatasetError(
                    f"shard {f.filename}: episode table column {key!r} does not match its "
                    "checksum; the file is damaged (run verify)"
                )
            if key in ("options", "metadata") and not raw_text:
                values = [o.decode() or None for o in values]
            out[key] = values
    return out


def read_shard_table(
    path: str | os.PathLike[str], fields: Sequence[str] = TABLE_FIELDS, raw_text: bool = False
) -> dict[str, Any]:
    """Read a shard's episode table only (no step data).

    ``fields`` picks columns; ``raw_text`` leaves ``options``/``metadata`` as the stored
    UTF-8 bytes (``b""`` for none), for readers that decode them only when asked.
    """
    with open_shard(Path(path)) as f:
        return read_table(f, fields, raw_text)


def read_shard(path: str | os.PathLike[str]) -> EpisodeBatch:
    """Read a whole shard back into an ``EpisodeBatch``."""
    with open_shard(Path(path)) as f:
        table = read_table(f)

        def group(name: str) -> dict[str, np.ndarray]:
            if isinstance(f[name], h5py.Dataset):  # f[name]: a KeyError when it is missing
                return {"": f[name][()]}
            inside = [n for n in found if n.startswith(f"{name}/")]
            return {_column_name(n[len(name) + 1 :]): found[n][()] for n in inside}

        with _damaged(path):
            found = check_layout(f)
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
                    hit = (f, _checked_columns(f))
            except CorruptDatasetError:
                f.close()
                raise
            while len(self._open) >= self.max_open:
                old = self._open.pop(next(iter(self._open)))
                old[0].close()
        self._open[key] = hit  # most recently used last
        return hit

    def read_rows(
        self,
        path: Path,
        obs_rows: slice,
        step_rows: slice,
        alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray | None] | None = None,
    ) -> ShardRows:
        """Read one contiguous block of rows from every column of a shard.

        ``alloc(shape, dtype)`` may give the array each column is decoded into (e.g. a view
        of shared memory, so that the rows are never copied); where it gives None, or
        without ``alloc``, h5py allocates one. Exceptions it raises propagate.
        """
        f, cols = self._handle(path)
        out: dict[str, dict[str, np.ndarray]] = {"observations": {}, "actions": {}, "infos": {}}
        masks: dict[str, np.ndarray] = {}
        steps: list[np.ndarray] = []
        with _damaged(path):
            for group, name, dset in cols:
                rows = obs_rows if group not in ("steps", "actions") else step_rows
                data = _read_into(dset, rows, alloc)
                if group == "steps":
                    steps.append(data)
                    continue
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


#: The columns (``_list_columns``) of each shard file this process has checked
#: (``check_layout``), by the file's identity: a new ``ShardReader`` (one per snapshot, per
#: uncached epoch, per worker) reopening it skips walking and hashing every dataset, ~1.5 ms
#: a shard: the fixed cost that made a dataset of many shards read slower (issue 18). Any
#: change to the file (a write, chmod, rename over it) changes its identity: checked again.
_CHECKED: dict[tuple[int, ...], list[tuple[str, str, str]]] = {}
_CHECKED_MAX: Final = 4096
#: Only a file unchanged for this long is remembered: file times tick coarsely (a jiffy), so
#: a change within the tick of the last one would keep its identity (git's "racy" files).
SETTLED_NS: Final = 100_000_000


def _checked_columns(f: h5py.File) -> list[tuple[str, str, h5py.Dataset]]:
    """(group, column name, dataset) of ``f``'s columns, its layout checked once per process."""
    try:
        st = os.fstat(f.id.get_vfd_handle())  # the file opened, not whatever the path is now
        ident: tuple[int, ...] | None = (
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        )
    except (OSError, TypeError, ValueError):  # a driver without a file descriptor
        ident = None
    paths = None if ident is None else _CHECKED.get(ident)
    if paths is not None:
        return [(g, n, f[p]) for g, n, p in paths]
    found = check_layout(f)
    paths = _list_columns(f, found)
    if ident is not None and time.time_ns() - ident[4] > SETTLED_NS:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[ident] = paths
    return [(g, n, found[p]) for g, n, p in paths]


def _read_into(
    dset: h5py.Dataset,
    rows: slice,
    alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray | None] | None,
) -> np.ndarray:
    """Rows ``rows`` of ``dset``, decoded into ``alloc``'s array when it gives one."""
    out = None
    if alloc is not None and not dset.dtype.hasobject:
        start, stop, _ = rows.indices(dset.shape[0])
        out = alloc((max(0, stop - start), *dset.shape[1:]), dset.dtype)
    if out is None:
        return dset[rows]
    if len(out):
        dset.read_direct(out, np.s_[rows])
    return out


def _list_columns(f: h5py.File, found: dict[str, h5py.Dataset]) -> list[tuple[str, str, str]]:
    """(group, column name, HDF5 path) of every step, observation, action and info column.

    ``found``: every dataset of ``f`` by path (``walk``).
    """
    out: list[tuple[str, str, str]] = [("steps", name, name) for name in STEP_COLUMNS]
    for group in (*GROUPS, "infos"):
        if group in found:
            out.append((group, "", group))
            continue
        inside = [n[len(group) + 1 :] for n in found if n.startswith(f"{group}/")]
        out.extend((group, _column_name(n), f"{group}/{n}") for n in inside)
    return out
