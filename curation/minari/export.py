"""Export: write harvest datasets in Minari's own layout.

``to_minari`` writes ``<minari root>/<id>/data/metadata.json`` and ``main_data.hdf5`` (one
``episode_{i}`` group per episode, as Minari's HDF5 storage does) plus
``namespace_metadata.json`` at every namespace level, so that ``minari.load_dataset``,
``minari list local`` and ``minari show`` open it (research/minari.md, compatibility checklist).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from collector import storage
from collector.errors import DatasetExistsError, UsageError
from collector.spaces import minari_space_json
from curation.dataset import Dataset, EpisodeData, open_dataset
from curation.minari import layout

__all__ = ["to_minari"]

#: Stamped when no space is image-like: the oldest Minari that reads the format (0.5.2
#: for hdf5 and arrow; parquet arrived in 0.5.3).
_STAMPS = {"hdf5": "0.5.2", "arrow": "0.5.2", "parquet": "0.5.3"}
#: Minari's arrow reader splits longer episodes across record batches and misaligns them.
ARROW_MAX_ROWS = 32_767
#: Raw (not JPEG) image leaves need the ``jpeg_encoding`` flag, which only 0.5.4 honours.
_STAMP_RAW_IMAGES = "0.5.4"


def _write_space_data(group: h5py.Group, name: str, space: spaces.Space, value: Any) -> None:
    """One space's rows, nested as Minari nests them (Dict: subgroups; Tuple: ``_index_i``)."""
    if isinstance(space, spaces.Dict):
        sub = group.create_group(name)
        for key, child in space.spaces.items():
            _write_space_data(sub, key, child, value[key])
    elif isinstance(space, spaces.Tuple):
        sub = group.create_group(name)
        for i, child in enumerate(space.spaces):
            _write_space_data(sub, f"_index_{i}", child, value[i])
    elif isinstance(space, spaces.Text):
        group.create_dataset(name, data=list(value), dtype=h5py.string_dtype("utf-8"))
    else:
        dtype = {
            spaces.Discrete: np.int64,
            spaces.MultiDiscrete: np.int64,
            spaces.MultiBinary: np.int8,
        }.get(type(space), space.dtype)
        group.create_dataset(name, data=np.asarray(value, dtype=dtype))


def minari_infos(infos: Mapping[str, Any]) -> dict[str, Any]:
    """Our nested infos in Minari's model: ``_key`` presence masks dropped where all True.

    Minari has no masks (its infos must keep one structure); a mask with a False row is
    kept, so that the zeros written there are not mistaken for data.
    """
    masks = {f"_{k}" for k, v in infos.items() if not isinstance(v, Mapping)} & set(infos)
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key in masks:
            if not np.all(value):
                out[key] = value
        elif isinstance(value, Mapping):
            out[key] = minari_infos(value)
        else:
            out[key] = value
    return out


def _write_infos(group: h5py.Group, infos: Mapping[str, Any]) -> None:
    """Info columns (T+1 rows each) under ``infos/``; nested keys become subgroups."""
    for key, value in infos.items():
        path = "/".join(_h5_segment(s) for s in key.split("/"))
        if isinstance(value, Mapping):
            _write_infos(group.require_group(path), value)
        else:
            group.create_dataset(path, data=np.asarray(value))


def _h5_segment(segment: str) -> str:
    """An HDF5 name segment (``.`` alone is not allowed)."""
    return segment if segment not in ("", ".") else f"_{segment}"


def _episode_attrs(ep: EpisodeData, new_id: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {"id": np.int64(new_id), "total_steps": np.int64(len(ep))}
    if ep.seed is not None:
        attrs["seed"] = (
            np.uint64(ep.seed) if ep.seed > np.iinfo(np.int64).max else np.int64(ep.seed)
        )

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                flatten(f"{prefix}/{k}", v)
        else:
            attrs[prefix] = value

    if ep.options:
        flatten("options", ep.options)
    rewards = np.asarray(ep.rewards, np.float64)
    if len(rewards):
        attrs.update(
            rewards_sum=rewards.sum(),
            rewards_mean=rewards.mean(),
            rewards_std=rewards.std(),
            rewards_max=rewards.max(),
            rewards_min=rewards.min(),
        )
    return attrs


def _metadata(ds: Dataset, dataset_id: str, data_dir: Path, data_format: str) -> dict[str, Any]:
    src = ds.metadata
    images = layout.has_image(ds.observation_space) or layout.has_image(ds.action_space)
    meta: dict[str, Any] = {
        "total_episodes": int(ds.total_episodes),
        "total_steps": int(ds.total_steps),
        "data_format": data_format,
        "jpeg_encoding": False,  # frames are stored raw
        "observation_space": json.dumps(minari_space_json(ds.observation_space)),
        "action_space": json.dumps(minari_space_json(ds.action_space)),
    }
    if src.get("env_spec"):
        meta["env_spec"] = _spec_text(src["env_spec"])
    size = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
    meta["dataset_size"] = round(size / 1e6, 1)
    meta["dataset_id"] = dataset_id
    meta["minari_version"] = _STAMP_RAW_IMAGES if images else _STAMPS[data_format]
    for key in storage.AUTHOR_FIELDS:  # the fields from_minari brings in, sent back
        value = src.get(key)
        if not value and (value is None or key in ("author", "author_email", "eval_env_spec")):
            continue
        if key in ("author", "author_email"):
            value = [value] if isinstance(value, str) else list(value)
        elif key == "eval_env_spec":
            value = _spec_text(value)
        meta[key] = value
    return meta


def _spec_text(spec: str | dict[str, Any]) -> str:
    """An env spec as Minari stores it: ``EnvSpec.to_json()`` text inside the JSON."""
    return spec if isinstance(spec, str) else json.dumps(spec)


def _write_hdf5(ds: Dataset, data_dir: Path) -> None:
    """``main_data.hdf5``: one ``episode_{i}`` group per episode, as Minari's HDF5 storage.

    The file is built in memory (h5py's core driver, no backing store) and written with one
    plain write (``storage.write_new_file``): HDF5 never writes to disk itself, because a full
    disk under an HDF5 write crashes the process (issue 16 item 7) where a plain write is one
    ``StorageError``. Memory holds the whole file meanwhile (Minari's layout is uncompressed).
    """
    with h5py.File(
        f"minari-{uuid.uuid4().hex}",
        "w",
        driver="core",
        backing_store=False,
        track_order=True,
    ) as f:
        for new_id, ep in enumerate(ds.iterate_episodes()):
            group = f.create_group(f"episode_{new_id}")
            group.attrs.update(_episode_attrs(ep, new_id))
            _write_space_data(group, "observations", ds.observation_space, ep.observations)
            _write_space_data(group, "actions", ds.action_space, ep.actions)
            group.create_dataset("rewards", data=np.asarray(ep.rewards, np.float64))
            group.create_dataset("terminations", data=np.asarray(ep.terminations, bool))
            group.create_dataset("truncations", data=np.asarray(ep.truncations, bool))
            _write_infos(group.create_group("infos"), minari_infos(ep.infos))
        f.flush()
        image = f.id.get_file_image()
    storage.write_new_file(data_dir / layout.HDF5_FILE, image, sync=True)


def _check_arrow(ds: Dataset) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as e:
        raise UsageError(
            "writing Minari's arrow/parquet formats needs pyarrow: pip install 'harvest[minari]'"
        ) from e
    lengths = ds.episodes()["length"]
    if len(lengths) and lengths.max() + 1 > ARROW_MAX_ROWS:
        episode = int(ds.episode_indices[int(np.argmax(lengths))])
        raise UsageError(
            f"episode {episode} of {ds.id!r} has {int(lengths.max())} steps; Minari's arrow "
            f"reader misreads episodes of more than {ARROW_MAX_ROWS - 1} steps: export with "
            "data_format='hdf5'"
        )


def _write_arrow(ds: Dataset, data_dir: Path, data_format: str) -> None:
    """``data/<i>/part-0.<fmt>`` plus ``data/<i>/metadata.json`` per episode, as Minari's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for new_id, ep in enumerate(ds.iterate_episodes()):
        rows, pad = len(ep) + 1, 1
        columns = {
            "observations": _arrow_array(ds.observation_space, ep.observations, 0),
            "actions": _arrow_array(ds.action_space, ep.actions, pad),
            "rewards": pa.array(np.pad(np.asarray(ep.rewards, np.float64), (0, pad))),
            "terminations": pa.array(np.pad(np.asarray(ep.terminations, bool), (0, pad))),
            "truncations": pa.array(np.pad(np.asarray(ep.truncations, bool), (0, pad))),
        }
        infos = minari_infos(ep.infos)
        if infos:
            columns["infos"] = _arrow_infos(infos)
        table = pa.Table.from_pydict(columns)
        assert table.num_rows == rows
        folder = data_dir / str(new_id)
        folder.mkdir()
        if data_format == "arrow":
            with pa.OSFile(str(folder / "part-0.arrow"), "wb") as sink:
                with pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table, max_chunksize=rows)
        else:
            pq.write_table(table, folder / "part-0.parquet")
        meta = {
            key: (int(value) if key in ("id", "total_steps") else value)
            for key, value in _episode_attrs(ep, new_id).items()
            if "/" not in key
        }
        if ep.options:
            meta["options"] = ep.options
        (folder / layout.METADATA_FILE).write_text(json.dumps(layout.strict_json(meta)))


def _arrow_array(space: spaces.Space, value: Any, pad: int) -> Any:
    """One space's rows as Minari's arrow encoding (struct, fixed-size list, string)."""
    import pyarrow as pa

    if isinstance(space, spaces.Dict):
        keys = list(space.spaces)
        return pa.StructArray.from_arrays(
            [_arrow_array(space[k], value[k], pad) for k in keys], names=keys
        )
    if isinstance(space, spaces.Tuple):
        return pa.StructArray.from_arrays(
            [_arrow_array(sub, value[i], pad) for i, sub in enumerate(space.spaces)],
            names=[str(i) for i in range(len(space.spaces))],
        )
    if isinstance(space, spaces.Text):
        return pa.array(list(value) + [None] * pad, type=pa.string())
    if isinstance(space, spaces.Discrete):
        return pa.array(np.pad(np.asarray(value, np.int64), (0, pad)))
    dtype = np.int8 if isinstance(space, spaces.MultiBinary) else space.dtype
    arr = np.asarray(value, dtype).reshape(len(value), -1)
    arr = np.pad(arr, ((0, pad), (0, 0)))
    kind = pa.list_(pa.from_numpy_dtype(arr.dtype), list_size=arr.shape[1])
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), type=kind)


def _arrow_infos(infos: Mapping[str, Any]) -> Any:
    """Infos as Minari's arrow struct; array leaves keep their row shape in field metadata."""
    import pyarrow as pa

    arrays, fields = [], []
    for key, value in infos.items():
        if isinstance(value, Mapping):
            array = _arrow_infos(value)
            field = pa.field(key, array.type)
        else:
            value = np.asarray(value)
            if value.ndim == 1:
                array = pa.array(value)
                field = pa.field(key, array.type)
            else:
                shape = ",".join(str(n) for n in value.shape[1:])
                flat = value.reshape(len(value), -1)
                kind = pa.list_(pa.from_numpy_dtype(flat.dtype), list_size=flat.shape[1])
                array = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), type=kind)
                field = pa.field(key, kind, metadata={"shape": shape})
        arrays.append(array)
        fields.append(field)
    return pa.StructArray.from_arrays(arrays, fields=fields)


def to_minari(
    dataset: Dataset | str,
    minari_root: str | os.PathLike[str] | None = None,
    data_format: str = "hdf5",
    *,
    new_dataset_id: str | None = None,
    overwrite: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a dataset (or view) in Minari's layout, so that ``minari.load_dataset`` opens it.

    Episodes are renumbered 0..N-1; seeds, options and reward statistics go into each
    episode group's attributes, as Minari's ``DataCollector`` writes them. Images stay raw
    (``jpeg_encoding: false``, lossless).

    Args:
        dataset: a ``Dataset`` or a local dataset id.
        minari_root: Minari's datasets folder (default ``$MINARI_DATASETS_PATH`` or
            ``~/.minari/datasets``).
        data_format: ``"hdf5"`` (Minari's default), ``"arrow"`` or ``"parquet"``.
        new_dataset_id: the id in Minari (default: the dataset's own id).
        overwrite: replace a Minari dataset with that id.
        root: harvest datasets root, when ``dataset`` is an id.

    Returns:
        The Minari dataset folder.

    Raises:
        UsageError: an unknown ``data_format``, an id Minari cannot parse, a target that is
            a symbolic link, or (arrow and parquet) an episode too long for Minari's arrow
            reader.
        DatasetExistsError: the Minari dataset exists and ``overwrite`` is false.
        StorageError: the Minari root is full, read-only or not writable; nothing is left.
    """
    if data_format not in layout.FORMATS:
        raise UsageError(
            f"to_minari(data_format={data_format!r}): Minari's formats are {layout.FORMATS}"
        )
    ds = open_dataset(dataset, root) if isinstance(dataset, str) else dataset
    if data_format != "hdf5":
        _check_arrow(ds)
    dataset_id = new_dataset_id or ds.id
    layout.check_minari_id(dataset_id)
    base = layout.resolve_minari_root(minari_root)
    target = _export_target(base, dataset_id, overwrite)
    staging = base / f".harvest-export-{uuid.uuid4().hex[:12]}"
    data_dir = staging / layout.DATA_DIR
    try:
        with storage.storage_errors(staging, "export to"):  # a full or read-only Minari root
            data_dir.mkdir(parents=True)
            if data_format == "hdf5":
                _write_hdf5(ds, data_dir)
            else:
                _write_arrow(ds, data_dir, data_format)
            meta = _metadata(ds, dataset_id, data_dir, data_format)
            storage.write_new_file(
                data_dir / layout.METADATA_FILE, json.dumps(meta).encode(), sync=True
            )
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_namespace_files(base, dataset_id)
    return target


def _export_target(base: Path, dataset_id: str, overwrite: bool) -> Path:
    """The Minari folder ``dataset_id`` exports to under ``base``, refused if unsafe to replace.

    Raises:
        UsageError: the target is a symbolic link.
        DatasetExistsError: the target exists and ``overwrite`` is false.
    """
    target = base / dataset_id
    if target.is_symlink():  # replacing it would remove files that may not be this export's
        raise UsageError(
            f"Minari dataset {dataset_id!r} at {target} is a symbolic link (to "
            f"{os.readlink(target)}); remove the link or export under another id"
        )
    if target.exists() and not overwrite:
        raise DatasetExistsError(
            f"Minari dataset {dataset_id!r} already exists at {target}; pass overwrite=True "
            "(--overwrite) or new_dataset_id=",
            dataset_id=dataset_id,
        )
    return target


def _write_namespace_files(base: Path, dataset_id: str) -> None:
    """Give each namespace level of ``dataset_id`` the file Minari lists namespaces by."""
    namespace, _, _ = storage.parse_dataset_id(dataset_id)
    if namespace:
        parts = namespace.split("/")
        for depth in range(1, len(parts) + 1):
            file = base.joinpath(*parts[:depth]) / layout.NAMESPACE_FILE
            if not file.exists():
                storage.write_new_file(file, b"{}")
