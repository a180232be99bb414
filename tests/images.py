"""Image files made for tests, cheaply."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares `width` x `height` and that holds no pixel data: what a
    reader that checks the size before decoding must refuse at once."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path
