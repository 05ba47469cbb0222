"""Checks of a shard's own structure: episode-table and layout checksums, filter availability.

``hdf5`` writes these checksums and runs these checks on every open; they live apart from the
codec so that what a shard's integrity means is in one short module.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import h5py
import numpy as np

from collector.errors import CorruptDatasetError

__all__ = [
    "LAYOUT_CHECKSUM",
    "TABLE_CHECKSUM",
    "attr_text",
    "check_filters",
    "check_layout",
    "layout_checksum",
    "table_checksum",
    "walk",
]


#: Attribute of each episode-table column: sha256 of its values. The table steers every read
#: (offsets, lengths), and a checksum of the values also catches a damaged datatype.
TABLE_CHECKSUM: Final = "sha256"


def table_checksum(values: np.ndarray) -> str:
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


#: Root attribute of a shard: sha256 of where HDF5 keeps every column (see layout_checksum).
LAYOUT_CHECKSUM: Final = "layout_sha256"


def layout_checksum(f: h5py.File, made: dict[str, h5py.Dataset] | None = None) -> str:
    """sha256 of every dataset's type, shape, filters and chunk index (address, size, mask).

    fletcher32 covers a chunk's bytes, not HDF5's index of them, which has no checksum in the
    early file format we write: a flipped bit in a chunk's filter mask skips decompression,
    and one in its key moves it, both without an error. This catches those on open.

    ``made``: every dataset of ``f`` by path (as the writer created them, or ``walk`` found
    them); hashed in the order ``visititems`` takes (by name, depth first), without opening
    each one again (~13% of building a small shard).
    """
    h = hashlib.sha256()

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        h.update(f"{name}|{obj.dtype.str}|{obj.shape}|{obj.chunks}|".encode())
        h.update(f"{_codec_key(obj)}|{obj.fletcher32}|".encode())
        if obj.chunks is None:
            h.update(f"{obj.id.get_offset()}|{obj.id.get_storage_size()}|".encode())
            return
        obj.id.chunk_iter(
            lambda c: h.update(
                f"{c.chunk_offset}{c.filter_mask},{c.byte_offset},{c.size}|".encode()
            )
        )

    if made is None:
        f.visititems(visit)
    else:
        for name in sorted(made, key=lambda n: n.split("/")):
            visit(name, made[name])
    return h.hexdigest()


def walk(f: h5py.File) -> dict[str, h5py.Dataset]:
    """Every dataset of ``f`` by path, in a walk's order: one walk serves every check of an open."""
    found: dict[str, h5py.Dataset] = {}
    f.visititems(lambda n, obj: found.update({n: obj}) if isinstance(obj, h5py.Dataset) else None)
    return found


def check_filters(f: h5py.File, found: dict[str, h5py.Dataset]) -> None:
    """Raise ``CorruptDatasetError`` when a column needs an HDF5 filter this install lacks.

    harvest writes only filters it can read (built-in, or registered by ``hdf5plugin`` on
    import); any other names a file not written by harvest, or a damaged one.
    """
    for name, obj in found.items():
        plist = obj.id.get_create_plist()
        for i in range(plist.get_nfilters()):
            code, _, _, label = plist.get_filter(i)
            if not h5py.h5z.filter_avail(code):
                shown = bytes(label)[:40].decode("ascii", "replace")
                raise CorruptDatasetError(
                    f"shard {f.filename}: column {name!r} needs HDF5 filter {code} ({shown!r}), "
                    "which harvest cannot decode; the file was not written by harvest or is "
                    "damaged (run verify)"
                )


#: HDF5's own filters and h5py's lzf: h5py names each the same in every version.
_BUILTIN_FILTERS: Final = frozenset(
    {
        h5py.h5z.FILTER_DEFLATE,
        h5py.h5z.FILTER_SHUFFLE,
        h5py.h5z.FILTER_FLETCHER32,
        h5py.h5z.FILTER_SZIP,
        h5py.h5z.FILTER_SCALEOFFSET,
        h5py.h5z.FILTER_LZF,
    }
)


def _codec_key(obj: h5py.Dataset) -> str:
    """A column's compression for ``layout_checksum``, the same in every h5py version.

    Built-in filters keep the text shards were always hashed with (h5py's name and
    options); a plugin filter (zstd), which h5py calls ``'unknown'`` since 3.x and ``None``
    before, is hashed as its filter id and options instead.
    """
    plist = obj.id.get_create_plist()
    pipeline = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    if all(code in _BUILTIN_FILTERS for code, *_ in pipeline):
        return f"{obj.compression}|{obj.compression_opts}"
    return ",".join(f"{code}:{tuple(values)}" for code, _, values, _ in pipeline) + "|plugin"


def check_layout(f: h5py.File) -> dict[str, h5py.Dataset]:
    """Raise ``CorruptDatasetError`` when a shard's layout is not the one it was written with.

    Returns every dataset of the shard by path (``walk``).
    """
    found = walk(f)
    check_filters(f, found)
    stored = f.attrs.get(LAYOUT_CHECKSUM)  # absent in shards written before it
    if stored is not None and layout_checksum(f, found) != attr_text(stored):
        raise CorruptDatasetError(
            f"shard {f.filename}: HDF5 layout does not match its checksum; the file is damaged "
            "(run verify)"
        )
    return found


def attr_text(value: Any) -> str:
    """An HDF5 string attribute as ``str`` (h5py gives ``bytes`` or ``str``, as it was stored)."""
    return value.decode() if isinstance(value, bytes) else str(value)
