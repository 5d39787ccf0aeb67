"""A TIFF damaged as one flipped byte damages it, for the tests of what the decoders and their callers do then."""

from __future__ import annotations

import struct
from pathlib import Path


def first_entry(data: bytes) -> int:
    """Where the first directory entry (tag, type, count, value) of the classic little-endian TIFF `data` lies:
    GDAL writes the image width's entry (tag 256) first."""
    return struct.unpack_from("<I", data, 4)[0] + 2


def empty_width(path: Path) -> None:
    """The file's image width entry left holding no value (its count's low byte 1 -> 0)."""
    data = bytearray(path.read_bytes())
    data[first_entry(data) + 4] = 0
    path.write_bytes(bytes(data))
