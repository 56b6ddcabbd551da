"""Reading image files with checks that name the file: missing, empty, truncated or undecodable.

OpenCV decodes a JPEG cut to half its size without an error (libjpeg prints "Premature end of JPEG file" on
stderr, without the file name, and the missing rows come out grey), so a truncated file must be caught before
decoding: a complete JPEG ends with the end-of-image marker (FF D9), a complete PNG with its IEND chunk.
Trailing zero padding (written by some tools) is allowed after the marker.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = ["ImageReadError", "check_encoded", "read_encoded", "read_image"]

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"


class ImageReadError(IOError):
    """An image file is missing, empty, truncated or cannot be decoded (the message names the file)."""


def check_encoded(buf: bytes | np.ndarray, path: str) -> None:
    """Raise ImageReadError if the encoded bytes of ``path`` are empty or a truncated JPEG / PNG."""
    b = buf.tobytes() if isinstance(buf, np.ndarray) else bytes(buf)
    if not b:
        raise ImageReadError(f"empty image file (0 bytes): {path}")
    if b[:2] == _JPEG_SOI:
        if not b.rstrip(b"\x00").endswith(_JPEG_EOI):
            raise ImageReadError(
                f"truncated or corrupt JPEG (no end-of-image marker; {len(b)} bytes): {path}"
            )
    elif b[:8] == _PNG_SIG:
        if _PNG_IEND not in b[-64:]:
            raise ImageReadError(f"truncated or corrupt PNG (no IEND chunk; {len(b)} bytes): {path}")


def read_encoded(path: str) -> np.ndarray:
    """The checked file bytes of ``path`` (uint8); raises ImageReadError naming the file."""
    if not os.path.isfile(path):
        raise ImageReadError(f"image file not found: {path}")
    buf = np.fromfile(path, dtype=np.uint8)
    check_encoded(buf, path)
    return buf


def read_image(path: str) -> np.ndarray:
    """BGR uint8 (H, W, 3) of ``path``; raises ImageReadError naming the file and the reason."""
    img = cv2.imdecode(read_encoded(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"cannot decode image: {path}")
    return img
