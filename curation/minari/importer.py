"""Import a Minari dataset (any of its three formats) as a harvest dataset."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from collector import storage
from collector.errors import UsageError
from curation.dataset import Dataset, open_dataset
from curation.minari import layout
from curation.minari.source import MinariSource
from curation.write import new_dataset_writer

__all__ = ["from_minari"]

#: Raw bytes of episodes gathered into one shard.
SHARD_BYTES = 128 << 20


def from_minari(
    path_or_id: str | os.PathLike[str],
    new_dataset_id: str | None = None,
    *,
    minari_root: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    compression: str | None = "gzip",
    progress: bool = False,
) -> Dataset:
    """Import a Minari dataset, in any of its formats, as a new harvest dataset.

    Episodes are numbered 0..N-1 in Minari id order (``episode_sources`` gives the Minari
    id back). Every episode keeps its seed, options and the per-episode fields Minari stored
    (``rewards_sum`` and the like, in ``get_episode_metadata``). Dataset fields (author,
    description, reference scores, eval env spec, requirements, ...) carry over, and
    ``lineage`` names the Minari source. Images are decoded whether or not they were stored
    as JPEG, judged from the stored bytes.

    Args:
        path_or_id: a Minari dataset folder, or an id under ``minari_root``.
        new_dataset_id: the harvest id (default: the Minari id).
        minari_root: Minari's datasets folder (default ``$MINARI_DATASETS_PATH`` or
            ``~/.minari/datasets``).
        root: harvest datasets root.
        overwrite: replace a harvest dataset with that id.
        compression: shard compression (gzip is readable everywhere).
        progress: show a progress bar.

    Raises:
        DatasetNotFoundError: no Minari dataset there.
        CorruptDatasetError: the Minari files are unreadable or inconsistent.
        DatasetExistsError: the harvest id exists and ``overwrite`` is false.
    """
    data_dir, known_id = layout.find_dataset(path_or_id, minari_root)
    with MinariSource(data_dir, known_id) as src:
        dataset_id = new_dataset_id or src.dataset_id
        if not dataset_id:
            raise UsageError(
                f"{data_dir / layout.METADATA_FILE} has no dataset_id; pass new_dataset_id="
            )
        with new_dataset_writer(dataset_id, root, overwrite) as writer:
            writer.start(import_metadata(src), commit=False)
            infos = False
            with tqdm(
                total=len(src.episode_ids), unit="ep", disable=not progress, leave=False
            ) as bar:
                for batch in src.iter_batches(SHARD_BYTES, on_episode=bar.update):
                    infos = infos or batch.infos is not None
                    writer.write_shard(batch, compression)
            writer.commit(record_infos=infos)
    return open_dataset(dataset_id, root)


def import_metadata(src: MinariSource) -> dict[str, Any]:
    """The metadata.json fields of a Minari dataset: its own fields, provenance, lineage."""
    from collector.provenance import versions

    meta, data_dir = src.meta, src.data_dir
    fields: dict[str, Any] = {}
    for key in storage.AUTHOR_FIELDS:
        value = meta.get(key)
        if value is None:
            continue
        if key == "eval_env_spec":
            value = layout.env_spec_dict(value)
        elif key in ("author", "author_email"):
            value = [value] if isinstance(value, str) else sorted(value)
        fields[key] = layout.strict_json(value)
    source_id = src.dataset_id or str(data_dir.parent)
    minari = {
        k: layout.strict_json(meta[k])
        for k in (
            "dataset_id",
            "minari_version",
            "data_format",
            "jpeg_encoding",
            "total_episodes",
            "total_steps",
            "num_episodes_average_score",
            "combined_datasets",
            "docs_url",
        )
        if k in meta
    }
    minari["path"] = str(data_dir.parent.resolve())
    out = storage.new_metadata(
        src.observation_space,
        src.action_space,
        layout.env_spec_dict(meta.get("env_spec")),
        record_infos=False,
        provenance={
            "command": "import-minari",
            "created": time.time(),
            "versions": versions(),
            "minari": minari,
        },
        **fields,
    )
    out["lineage"] = {
        "operation": {"name": "import-minari", "minari": minari},
        "sources": [
            {
                "dataset_id": source_id,
                "fingerprint": None,
                "first_id": 0,
                "episodes": len(src.episode_ids),
                "episode_ids": storage.id_ranges(np.asarray(src.episode_ids, np.int64)),
                "steps": [],
            }
        ],
    }
    return out
