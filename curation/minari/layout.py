"""Minari's on-disk layout: where datasets live, their metadata, and the image/JPEG rules.

What the reader (``source.py``) and the writer (``export.py``) must agree on, from
research/minari.md (sections 1-3 and the compatibility checklist).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from collector import storage
from collector.errors import CorruptDatasetError, DatasetNotFoundError, UsageError
from collector.spaces import iter_leaves

MINARI_ROOT_ENV = "MINARI_DATASETS_PATH"
DATA_DIR = "data"
METADATA_FILE = "metadata.json"
HDF5_FILE = "main_data.hdf5"
NAMESPACE_FILE = "namespace_metadata.json"
FORMATS = ("hdf5", "arrow", "parquet")
#: Minari's id regex wants namespaces of at least two characters.
NAMESPACE_MIN = 2
JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"


def resolve_minari_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Minari's datasets folder: ``root``, ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(MINARI_ROOT_ENV)
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def check_minari_id(dataset_id: str) -> None:
    """Refuse an id Minari cannot parse (ours are stricter, except for namespace length)."""
    namespace, _, _ = storage.parse_dataset_id(dataset_id)
    if namespace is not None and len(namespace.split("/")[0]) < NAMESPACE_MIN:
        raise UsageError(
            f"{dataset_id!r}: Minari wants namespaces of at least two characters; pass "
            "new_dataset_id= with a longer namespace"
        )


def find_dataset(
    path_or_id: str | os.PathLike[str], minari_root: str | os.PathLike[str] | None = None
) -> tuple[Path, str | None]:
    """The ``data/`` folder of a Minari dataset given by folder or id, and its id if known.

    A folder may be the dataset's own (holding ``data/``) or its ``data/`` folder; anything
    else is an id under the Minari root.

    Raises:
        DatasetNotFoundError: neither names a Minari dataset.
    """
    path = Path(path_or_id).expanduser()
    for data in (path / DATA_DIR, path):
        if (data / METADATA_FILE).is_file():
            return data, None
    text = str(path_or_id)
    if not os.path.isabs(text) and "\\" not in text:
        try:
            storage.parse_dataset_id(text)
        except UsageError:
            pass
        else:
            data = resolve_minari_root(minari_root) / text / DATA_DIR
            if (data / METADATA_FILE).is_file():
                return data, text
    raise DatasetNotFoundError(
        f"no Minari dataset at {text!r}: pass a Minari dataset folder (holding "
        f"data/metadata.json) or an id under --minari-root / ${MINARI_ROOT_ENV} "
        f"({resolve_minari_root(minari_root)})"
    )


def read_metadata(data_dir: Path) -> dict[str, Any]:
    """``data/metadata.json`` as Minari writes it (``Infinity``/``NaN`` tokens accepted).

    Raises:
        CorruptDatasetError: unreadable JSON, or a field Minari itself requires is missing.
    """
    file = data_dir / METADATA_FILE
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CorruptDatasetError(f"{file} is not readable JSON ({e}); re-download it") from e
    missing = [k for k in ("observation_space", "action_space") if k not in meta]
    if not isinstance(meta, dict) or missing:
        raise CorruptDatasetError(
            f"{file} is not Minari metadata (missing {missing or 'everything'}); Minari older "
            "than 0.5 kept metadata in HDF5 attributes: re-save it with minari >= 0.5"
        )
    fmt_name = meta.get("data_format", "hdf5")
    if fmt_name not in FORMATS:
        raise CorruptDatasetError(
            f"{file}: unknown data_format {fmt_name!r}; Minari writes one of {FORMATS}"
        )
    return meta


_ENV_SPEC_FIELDS = {f.name for f in dataclasses.fields(gym.envs.registration.EnvSpec)}


def env_spec_dict(text: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """An ``EnvSpec.to_json()`` payload as a dict this gymnasium accepts.

    Keys gymnasium no longer knows (0.2x's ``autoreset``, ``apply_api_compatibility``) are
    dropped by name, which is what Minari's substring hack means to do; non-finite numbers
    become None so the dict is strict JSON.
    """
    if text is None:
        return None
    data = json.loads(text) if isinstance(text, str) else dict(text)
    if not isinstance(data, dict):
        return None
    return strict_json({k: v for k, v in data.items() if k in _ENV_SPEC_FIELDS})


def strict_json(value: Any) -> Any:
    """``value`` with numpy types made Python and non-finite floats made None."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def is_image_space(space: spaces.Space) -> bool:
    """Minari's ``is_image_space``: a uint8 Box of 2-3 dims, at least 32x32, bounds 0..255."""
    return (
        isinstance(space, spaces.Box)
        and len(space.shape) in (2, 3)
        and space.shape[0] >= 32
        and space.shape[1] >= 32
        and space.dtype == np.uint8
        and bool(np.all(space.low == 0))
        and bool(np.all(space.high == 255))
    )


def has_image(space: spaces.Space) -> bool:
    """Whether any leaf of ``space`` is image-like by Minari's rule."""
    return any(is_image_space(leaf) for _, leaf in iter_leaves(space))


def looks_like_jpeg(frames: np.ndarray) -> bool:
    """Equal-length uint8 rows that are all whole JPEG files (start and end markers).

    How Minari's HDF5 writer stores JPEG frames that happen to have the same byte length;
    checked on the data, because the ``jpeg_encoding`` flag is missing or wrong in files
    written by minari <= 0.5.3 (research/minari.md section 2).
    """
    if frames.dtype != np.uint8 or frames.ndim != 2 or frames.shape[1] < 4 or not len(frames):
        return False
    start = np.frombuffer(JPEG_START, np.uint8)
    end = np.frombuffer(JPEG_END, np.uint8)
    return bool(np.all(frames[:, :2] == start) and np.all(frames[:, -2:] == end))


def decode_jpeg(frames: Any, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    """Decode per-frame JPEG bytes to a ``(frames, *shape)`` uint8 array.

    Raises:
        UsageError: Pillow is missing.
        CorruptDatasetError: a frame is not a decodable JPEG.
    """
    try:
        from PIL import Image
    except ImportError as e:
        raise UsageError(
            f"{where} holds JPEG-encoded frames; decoding them needs Pillow: pip install "
            "'harvest[minari]'"
        ) from e
    out = []
    for i, frame in enumerate(frames):
        data = frame.tobytes() if isinstance(frame, np.ndarray) else bytes(frame)
        try:
            with Image.open(io.BytesIO(data)) as img:
                arr = np.asarray(img, dtype=np.uint8)
        except Exception as e:  # PIL raises a zoo of types for bad data
            raise CorruptDatasetError(f"{where}: frame {i} is not a readable JPEG ({e})") from e
        out.append(arr.reshape(shape) if shape is not None and arr.size == np.prod(shape) else arr)
    if not out:
        return np.zeros((0, *(shape or ())), np.uint8)
    if len({frame.shape for frame in out}) > 1:
        raise CorruptDatasetError(
            f"{where}: JPEG frames of different shapes ({out[0].shape}, ...)"
            + (f" where the space says {shape}" if shape is not None else "")
        )
    return np.stack(out)
