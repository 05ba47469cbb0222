"""Shard codecs: what ``storage.compression`` accepts, and the codec each column gets.

Pure rules, no HDF5: ``collector.storage.hdf5`` turns a column's codec into h5py's
arguments, and ``collector.storage.manifest`` checks the spec a shard entry records.

Measured on real frames, in HDF5 chunks with fletcher32 (bytes per frame, lossless):

============================  =================  ===============  ================
codec                         Pong 210x160x3     Pong 84x84 gray  HalfCheetah obs
============================  =================  ===============  ================
lzf (the old default)         1,844              146              136 (1.00x raw)
zstd:3, 1 MiB image chunks    93                 38               -
zstd:5, 1 MiB image chunks    147                30               -
shuffle + zstd:1              -                  -                123 (0.90x raw)
============================  =================  ===============  ================

zstd:3 encodes Pong at ~4 GB/s of CPU (lzf: 0.65), 7% of a core at the env's 2,600 frames/s.
zstd:10 stores Pong in 71 B/frame and 84x84 in 27 at ~0.8 GB/s (still less CPU than lzf):
the choice for archives. Levels 4-9 are no smaller on raw Pong (zstd:5 147, zstd:9 117),
but from level 5 on zstd searches hash chains instead of its fast double hash, and that finds
the short-distance repeats of small frames: 84x84 gray goes from 38 to 30 B/frame (64x64x3
crops of Pong: 2.6 to 1.8), decoded as fast, encoded at ~0.5 GB/s instead of ~0.7. Between 16
and 100 KiB per frame the measures go both ways (Pong crops: 100x100x3 12.7 to 13.7, 160x160x3
56 to 52), so ``auto`` gives zstd:5 to frames of at most ``SMALL_FRAME_BYTES`` only.

Vectors: a byte shuffle ahead of zstd is what makes floats and ints smaller. blosc2 (zstd:1,
shuffle) is as small and decoded faster in a bare h5py probe, but iterating HalfCheetah is
already on par with lzf (2.06M vs 2.10M steps/s): not worth a second plugin filter.
A temporal xor delta restarted at each chunk (lossless, seekable per chunk) took Pong from
93 to 84 B/frame and made 84x84 larger (41): not worth a layout plain HDF5 readers cannot
decode; neither was blosc2's block delta (137 B/frame on 84x84).
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np

from collector.errors import UsageError

__all__ = [
    "COMPRESSION_CHOICES",
    "IMAGE_ZSTD_LEVEL",
    "SMALL_FRAME_BYTES",
    "SMALL_IMAGE_ZSTD_LEVEL",
    "VECTOR_ZSTD_LEVEL",
    "is_image_leaf",
    "leaf_codec",
    "parse_compression",
]

#: How an error names what ``storage.compression`` accepts.
COMPRESSION_CHOICES: Final = "auto, none, lzf, gzip, gzip:0-9, zstd or zstd:1-22"
#: ``auto``'s zstd level for image-like leaves: Pong 93 B/frame at ~1.5 GB/s encode.
IMAGE_ZSTD_LEVEL: Final = 3
#: ``auto``'s zstd level for image-like leaves of at most ``SMALL_FRAME_BYTES`` a frame.
SMALL_IMAGE_ZSTD_LEVEL: Final = 5
#: Frames up to this size (84x84 gray, 64x64x3) are "small" for ``auto``.
SMALL_FRAME_BYTES: Final = 16 * 1024
#: ``auto``'s zstd level (after a byte shuffle) for every other column.
VECTOR_ZSTD_LEVEL: Final = 1
_DEFAULT_LEVEL: Final = {"gzip": 4, "zstd": 3}
_LEVELS: Final = {"gzip": range(0, 10), "zstd": range(1, 23)}


def parse_compression(spec: str | None) -> tuple[str | None, int | None]:
    """Parse ``auto | none | lzf | gzip[:0-9] | zstd[:1-22]`` into (codec, level).

    ``auto`` is per column (see ``leaf_codec``); ``None`` means no compression.

    >>> parse_compression("gzip:6"), parse_compression("none"), parse_compression("zstd")
    (('gzip', 6), (None, None), ('zstd', 3))

    Raises:
        UsageError: ``spec`` is none of these.
    """
    text = "none" if spec is None else str(spec).strip().lower()
    name, colon, level = text.partition(":")
    if name in ("none", "lzf", "auto") and not colon:
        return (None if name == "none" else name), None
    if name in _LEVELS and not colon:
        return name, _DEFAULT_LEVEL[name]
    if name in _LEVELS and re.fullmatch(r"[0-9]{1,2}", level, re.ASCII):
        if int(level) in _LEVELS[name]:
            return name, int(level)
    raise UsageError(f"storage.compression={spec!r} is not valid; use {COMPRESSION_CHOICES}")


def is_image_leaf(row_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether rows of ``row_shape`` and ``dtype`` are images (HxW or HxWxC uint8)."""
    return np.dtype(dtype) == np.uint8 and len(row_shape) >= 2


def leaf_codec(
    codec: str | None, level: int | None, row_shape: tuple[int, ...], dtype: np.dtype
) -> tuple[str | None, int | None, bool]:
    """The (codec, level, byte shuffle) one column gets under a parsed ``storage.compression``.

    ``auto``: zstd:5 for image-like leaves of at most ``SMALL_FRAME_BYTES`` a frame, zstd:3
    for larger ones, shuffle + zstd:1 for the rest. An explicit codec
    applies to every column; with a level (gzip, zstd), multi-byte columns are shuffled first.
    """
    multibyte = np.dtype(dtype).itemsize > 1
    if codec == "auto":
        if is_image_leaf(row_shape, dtype):
            frame = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            small = frame <= SMALL_FRAME_BYTES
            return "zstd", SMALL_IMAGE_ZSTD_LEVEL if small else IMAGE_ZSTD_LEVEL, False
        return "zstd", VECTOR_ZSTD_LEVEL, multibyte
    return codec, level, level is not None and multibyte
