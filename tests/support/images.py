"""Hostile images for the QR readers, written by hand so that making one costs nothing."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def blank_png(path: Path, width: int, height: int, *, rgb: bool = False) -> Path:
    """A valid all-black PNG of any size: a few kilobytes that decode to width x height pixels.

    1-bit grey by default (the classic decompression bomb), or 8-bit RGB.
    """
    depth, colour, row_bytes = (8, 2, 3 * width) if rgb else (1, 0, (width + 7) // 8)
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    squeeze = zlib.compressobj(9)
    row = b"\0" * (1 + row_bytes)  # filter type 0, then black pixels
    data = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )
    return path
