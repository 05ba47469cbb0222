"""Read a Minari dataset (HDF5, Arrow or Parquet) without the minari package.

``MinariSource`` turns each Minari episode into harvest's columnar ``EpisodeBatch`` (the
columns of ``collector.spaces.columns``), so an import writes ordinary shards and a direct
read serves the ordinary ``Dataset`` API. Image leaves are decoded by what is stored (JPEG
bytes or raw arrays), not by the ``jpeg_encoding`` flag: files from minari <= 0.5.3 get that
flag wrong (research/minari.md section 2, checklist item 9).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from collector import storage
from collector.errors import CorruptDatasetError, HarvestWarning, UsageError
from collector.spaces import (
    check_supported,
    columns,
    escape_key,
    join_name,
    make_batch_setter,
    space_from_json,
)
from curation.minari import layout

__all__ = ["MinariSource"]

_EPISODE_GROUP = re.compile(r"episode_(\d+)")
#: Per-episode metadata keys that are not callback fields.
RESERVED = ("id", "total_steps", "seed", "options")


class MinariSource:
    """One Minari dataset on disk, read-only.

    Args:
        data_dir: the dataset's ``data/`` folder (see ``layout.find_dataset``).
        dataset_id: its Minari id, when known (else ``metadata.json``'s ``dataset_id``).
    """

    def __init__(self, data_dir: Path, dataset_id: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.meta = layout.read_metadata(self.data_dir)
        self.dataset_id = dataset_id or self.meta.get("dataset_id")
        self.data_format: str = self.meta.get("data_format", "hdf5")
        try:
            self.observation_space = space_from_json(self.meta["observation_space"])
            self.action_space = space_from_json(self.meta["action_space"])
            check_supported(self.observation_space, "observation")
            check_supported(self.action_space, "action")
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptDatasetError(
                f"{self.data_dir / layout.METADATA_FILE}: unreadable space ({e})"
            ) from e
        self._warned: set[str] = set()
        self._file: h5py.File | None = None
        if self.data_format == "hdf5":
            self._ids = self._hdf5_ids()
        else:
            self._ids = sorted(
                int(p.name) for p in self.data_dir.iterdir() if p.is_dir() and p.name.isdigit()
            )

    # -- what is there -------------------------------------------------------------------------

    @property
    def episode_ids(self) -> list[int]:
        """Minari episode ids, ascending."""
        return list(self._ids)

    def _hdf5(self) -> h5py.File:
        if self._file is None:
            path = self.data_dir / layout.HDF5_FILE
            if path.stat().st_size == 0:  # Minari touches an empty file for an empty dataset
                raise _Empty
            try:
                self._file = h5py.File(path, "r", locking=False)
            except OSError as e:
                raise CorruptDatasetError(f"{path} is not a readable HDF5 file ({e})") from e
        return self._file

    def _hdf5_ids(self) -> list[int]:
        path = self.data_dir / layout.HDF5_FILE
        if not path.exists():
            raise CorruptDatasetError(f"{path} is missing; re-download the Minari dataset")
        try:
            keys = list(self._hdf5().keys())
        except _Empty:
            return []
        return sorted(int(m.group(1)) for k in keys if (m := _EPISODE_GROUP.fullmatch(k)))

    def close(self) -> None:
        """Close the HDF5 file, if open."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MinariSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- episodes ------------------------------------------------------------------------------

    def episode_metadata(self, episode_id: int) -> dict[str, Any]:
        """Minari's per-episode metadata: id, total_steps, seed, options and callback fields."""
        if self.data_format == "hdf5":
            return _attrs_metadata(self._group(episode_id).attrs)
        file = self.data_dir / str(episode_id) / layout.METADATA_FILE
        try:
            return layout.strict_json(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise CorruptDatasetError(f"{file} is not readable JSON ({e})") from e

    def episode_summary(self, episode_id: int) -> tuple[dict[str, Any], np.ndarray, bool, bool]:
        """Metadata, rewards and the last step's termination and truncation of one episode.

        What an episode index needs, without reading observations or actions.
        """
        where = self._where(episode_id)
        if self.data_format == "hdf5":
            group = self._group(episode_id)
            meta = _attrs_metadata(group.attrs)
            try:
                rew = group["rewards"][()]
                term, trunc = (group[k][-1:] for k in ("terminations", "truncations"))
            except KeyError as e:
                raise CorruptDatasetError(f"{where}: missing {e}") from e
        else:
            meta = self.episode_metadata(episode_id)
            cols = ("rewards", "terminations", "truncations")
            table = _read_arrow(self.data_dir / str(episode_id), self.data_format, where, cols)
            rows = table.num_rows - 1  # the padding row
            rew, term, trunc = (
                table.column(c).slice(0, rows).to_numpy(zero_copy_only=False) for c in cols
            )
            term, trunc = term[-1:], trunc[-1:]
        return meta, np.asarray(rew, np.float64), bool(term.any()), bool(trunc.any())

    def read_episode(self, episode_id: int, new_id: int | None = None) -> storage.EpisodeBatch:
        """One episode as a one-episode batch (its id ``new_id``, default the Minari id)."""
        where = self._where(episode_id)
        if self.data_format == "hdf5":
            group = self._group(episode_id)  # looked up once: per-object cost dominates
            meta = _attrs_metadata(group.attrs)
            obs, act, rew, term, trunc, infos = self._hdf5_episode(group, where)
        else:
            meta = self.episode_metadata(episode_id)
            obs, act, rew, term, trunc, infos = self._arrow_episode(episode_id, where)
        length = len(rew)
        if len(term) != length or len(trunc) != length or _rows(obs) != length + 1:
            raise CorruptDatasetError(
                f"{where}: {length} rewards, {len(term)} terminations, {len(trunc)} "
                f"truncations and {_rows(obs)} observations do not fit one episode"
            )
        seed = meta.get("seed")
        extra = {k: v for k, v in meta.items() if k not in RESERVED}
        table = storage.make_table(
            [episode_id if new_id is None else new_id],
            [int(seed) if isinstance(seed, int) and seed >= 0 else None],
            [length],
            [float(np.sum(rew, dtype=np.float64))],
            [bool(term[-1]) if length else False],
            [bool(trunc[-1]) if length else False],
            [meta.get("options")],
            [extra or None],
        )
        info_cols: dict[str, np.ndarray] = {}
        for name, value in (infos or {}).items():
            if len(value) == length + 1:
                info_cols[name] = value
            else:
                self._warn(name, f"{len(value)} rows where the episode has {length + 1}")
        return storage.EpisodeBatch(
            observations=self._columns(self.observation_space, obs, length + 1, where),
            actions=self._columns(self.action_space, act, length, where),
            rewards=np.asarray(rew, np.float64),
            terminations=np.asarray(term, bool),
            truncations=np.asarray(trunc, bool),
            table=table,
            infos=info_cols if info_cols else None,
            info_masks={n: np.ones(len(v), bool) for n, v in (info_cols or {}).items()},
        )

    def iter_batches(
        self,
        target_bytes: int = 64 << 20,
        episode_ids: list[int] | None = None,
        on_episode: Callable[[int], object] | None = None,
    ) -> Iterator[storage.EpisodeBatch]:
        """Episodes in id order, numbered 0..N-1, in batches of about ``target_bytes``.

        ``on_episode(1)`` is called as each episode is read (e.g. a progress bar's update).
        """
        pending: list[storage.EpisodeBatch] = []
        size = 0
        chosen = self._ids if episode_ids is None else episode_ids
        for new_id, i in enumerate(chosen):
            batch = self.read_episode(i, new_id)
            if on_episode is not None:
                on_episode(1)
            pending.append(batch)
            size += batch.nbytes
            if size >= target_bytes:
                yield storage.concat_batches(pending)
                pending, size = [], 0
        if pending:
            yield storage.concat_batches(pending)

    def _columns(
        self, space: spaces.Space, value: Any, rows: int, where: str
    ) -> dict[str, np.ndarray]:
        store = {c.name: np.zeros((rows, *c.shape), c.dtype) for c in columns(space)}
        try:
            make_batch_setter(space, store)(slice(0, rows), value, slice(0, rows))
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise CorruptDatasetError(
                f"{where}: stored data does not fit the recorded space {space} ({e})"
            ) from e
        return store

    def _where(self, episode_id: int) -> str:
        return f"{self.dataset_id or self.data_dir} episode {episode_id}"

    def _warn(self, key: str, why: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"info key {key!r} of {self.dataset_id or self.data_dir} is not imported: {why}",
                HarvestWarning,
                stacklevel=4,
            )

    # -- HDF5 ----------------------------------------------------------------------------------

    def _group(self, episode_id: int) -> h5py.Group:
        try:
            return self._hdf5()[f"episode_{episode_id}"]
        except KeyError as e:
            raise CorruptDatasetError(f"{self._where(episode_id)} is missing ({e})") from e

    def _hdf5_episode(self, group: h5py.Group, where: str) -> tuple[Any, ...]:
        try:
            obs = _h5_value(group["observations"], self.observation_space, f"{where} observations")
            act = _h5_value(group["actions"], self.action_space, f"{where} actions")
            rew, term, trunc = (group[k][()] for k in ("rewards", "terminations", "truncations"))
        except KeyError as e:
            raise CorruptDatasetError(f"{where}: missing {e}") from e
        infos: dict[str, np.ndarray] = {}
        if "infos" in group:
            self._h5_infos(group["infos"], "", infos, where)
        return obs, act, rew, term, trunc, infos

    def _h5_infos(self, node: h5py.Group, prefix: str, out: dict[str, np.ndarray], where: str):
        for key, child in node.items():
            name = join_name(prefix, escape_key(key))
            if isinstance(child, h5py.Group):
                self._h5_infos(child, name, out, where)
                continue
            if h5py.check_string_dtype(child.dtype) is not None:
                self._warn(name, "strings are not recorded as info columns")
                continue
            if h5py.check_vlen_dtype(child.dtype) is not None:
                out[name] = layout.decode_jpeg(child[()], None, f"{where} info {name!r}")
                continue
            value = child[()]
            if layout.looks_like_jpeg(value):  # minari 0.5.3 encoded 2-D/3-D uint8 infos too
                value = layout.decode_jpeg(value, None, f"{where} info {name!r}")
            if value.dtype.kind not in "biuf" or value.ndim == 0:
                self._warn(name, f"{value.dtype} with shape {value.shape} is not a column")
                continue
            out[name] = value

    # -- Arrow / Parquet -----------------------------------------------------------------------

    def _arrow_episode(self, episode_id: int, where: str) -> tuple[Any, ...]:
        table = _read_arrow(self.data_dir / str(episode_id), self.data_format, where)
        rows = table.num_rows
        names = table.column_names
        missing = [
            c
            for c in ("observations", "actions", "rewards", "terminations", "truncations")
            if c not in names
        ]
        if missing:
            raise CorruptDatasetError(f"{where}: missing column(s) {missing}")

        def col(name: str) -> Any:
            return table.column(name).combine_chunks()

        obs = _arrow_value(col("observations"), self.observation_space, f"{where} observations")
        act = _arrow_value(col("actions").slice(0, rows - 1), self.action_space, where)
        rew = col("rewards").slice(0, rows - 1).to_numpy(zero_copy_only=False)
        term = col("terminations").slice(0, rows - 1).to_numpy(zero_copy_only=False)
        trunc = col("truncations").slice(0, rows - 1).to_numpy(zero_copy_only=False)
        infos: dict[str, np.ndarray] = {}
        if "infos" in names:
            self._arrow_infos(col("infos"), None, "", infos, where)
        return obs, act, rew, term, trunc, infos

    def _arrow_infos(
        self, array: Any, field: Any, prefix: str, out: dict[str, np.ndarray], where: str
    ) -> None:
        import pyarrow as pa

        if pa.types.is_struct(array.type):
            for i, child in enumerate(array.flatten()):
                sub = array.type.field(i)
                name = join_name(prefix, escape_key(sub.name))
                self._arrow_infos(child, sub, name, out, where)
            return
        if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
            out[prefix] = layout.decode_jpeg(array.to_pylist(), None, f"{where} info {prefix!r}")
            return
        if pa.types.is_fixed_size_list(array.type):
            shape_text = ((field.metadata or {}) if field is not None else {}).get(b"shape")
            shape = tuple(int(s) for s in shape_text.decode().split(",") if s) if shape_text else ()
            flat = array.flatten().to_numpy(zero_copy_only=False)
            out[prefix] = flat.reshape(len(array), *(shape or (array.type.list_size,)))
            return
        try:
            value = array.to_numpy(zero_copy_only=False)
        except (pa.ArrowException, ValueError):
            value = np.asarray(array.to_pylist(), dtype=object)
        if value.dtype.kind not in "biuf":
            self._warn(prefix, f"arrow type {array.type} is not a numeric column")
            return
        out[prefix] = value


class _Empty(Exception):
    """A 0-byte ``main_data.hdf5``: Minari's empty dataset."""


def _attrs_metadata(attrs: h5py.AttributeManager) -> dict[str, Any]:
    """Per-episode metadata from HDF5 attributes, ``options/a/b`` names nested again."""
    meta: dict[str, Any] = {}
    for name, value in attrs.items():
        node = meta
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return layout.strict_json(meta)


def _rows(value: Any) -> int:
    while isinstance(value, dict | tuple):
        if not value:
            return 0
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    return len(value)


def _h5_value(node: h5py.Group | h5py.Dataset, space: spaces.Space, where: str) -> Any:
    """The stored rows of ``space``, nested as the space (Dict keys, Tuple ``_index_i``)."""
    if isinstance(space, spaces.Dict):
        return {k: _h5_value(node[k], sub, f"{where}/{k}") for k, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(
            _h5_value(node[f"_index_{i}"], sub, f"{where}/{i}") for i, sub in enumerate(space)
        )
    if not isinstance(node, h5py.Dataset):
        raise CorruptDatasetError(f"{where}: expected data, found a group")
    if isinstance(space, spaces.Text):
        return [s for s in node.asstr()[()]]
    if h5py.check_vlen_dtype(node.dtype) is not None:
        return layout.decode_jpeg(node[()], space.shape, where)
    value = node[()]
    if (
        isinstance(space, spaces.Box)
        and len(space.shape) in (2, 3)
        and value.shape[1:] != space.shape
        and layout.looks_like_jpeg(value)
    ):
        return layout.decode_jpeg(value, space.shape, where)
    return value


def _arrow_value(array: Any, space: spaces.Space, where: str) -> Any:
    """One space's rows from an Arrow column (struct for Dict/Tuple, lists for arrays)."""
    import pyarrow as pa

    if isinstance(space, spaces.Dict):
        return {
            k: _arrow_value(_child(array, k, where), sub, f"{where}/{k}")
            for k, sub in space.items()
        }
    if isinstance(space, spaces.Tuple):
        return tuple(
            _arrow_value(_child(array, str(i), where), sub, f"{where}/{i}")
            for i, sub in enumerate(space)
        )
    if isinstance(space, spaces.Text):
        return [s or "" for s in array.to_pylist()]
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        return layout.decode_jpeg(array.to_pylist(), space.shape, where)
    if pa.types.is_fixed_size_list(array.type):
        if array.type.list_size != int(np.prod(space.shape, dtype=np.int64)):
            raise CorruptDatasetError(
                f"{where}: stored rows of {array.type.list_size} values do not fit the "
                f"recorded space {space}"
            )
        flat = array.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(array), *space.shape)
    return array.to_numpy(zero_copy_only=False)


def _read_arrow(
    folder: Path, data_format: str, where: str, columns: tuple[str, ...] | None = None
) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise UsageError(
            f"{where} is stored as {data_format}; reading it needs pyarrow: pip install "
            "'harvest[minari]'"
        ) from e
    ext = "arrow" if data_format == "arrow" else "parquet"
    parts = sorted(folder.glob(f"part-*.{ext}"), key=lambda p: int(p.stem.split("-")[1]))
    if not parts:
        raise CorruptDatasetError(f"{where}: no part-*.{ext} file in {folder}")
    try:
        if ext == "arrow":
            tables = []
            for p in parts:
                with pa.memory_map(str(p)) as source:
                    table = pa.ipc.open_file(source).read_all()
                tables.append(table.select(list(columns)) if columns else table)
        else:
            tables = [pq.read_table(p, columns=list(columns) if columns else None) for p in parts]
    except (pa.ArrowException, OSError, KeyError) as e:
        raise CorruptDatasetError(f"{where}: unreadable {ext} file ({e})") from e
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _child(array: Any, name: str, where: str) -> Any:
    """A struct column's child, sliced like its parent (``StructArray.field`` is not)."""
    import pyarrow as pa

    index = array.type.get_field_index(name) if pa.types.is_struct(array.type) else -1
    if index < 0:  # -1 would silently pick the last child
        raise CorruptDatasetError(
            f"{where}: no field {name!r} in the stored {array.type}, which the recorded space needs"
        )
    return array.flatten()[index]
