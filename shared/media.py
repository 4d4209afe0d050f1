"""What can be read from an asset's bytes without decoding it: the payload of a `data:` URI,
and an image's format and dimensions from its header. Pure Python, no image library, so
admission can apply the pixel budget to inline images as cheaply as the loader does.
"""

from __future__ import annotations

import base64
import binascii
import struct
from urllib.parse import unquote_to_bytes


class BadDataUri(ValueError):
    """A `data:` URI whose payload cannot be read, with the reason as its message."""


def data_uri_payload(uri: str, limit: int) -> bytes:
    """The bytes of a `data:` URI (base64 or percent-encoded). Raises `BadDataUri` when it has
    no ',' before its data, is not valid base64, or decodes to more than `limit` bytes."""
    header, sep, payload = uri.removeprefix("data:").partition(",")
    if not sep:
        raise BadDataUri("data: URI has no ',' before its data")
    if len(payload) > limit * 4 // 3 + 4:
        raise BadDataUri(f"data: URI is larger than {_amount(limit)}")
    if header.lower().endswith(";base64"):
        text = payload
        if "%" in text:
            text = unquote_to_bytes(text).decode("ascii", "replace")
        text = "".join(text.split()).replace("-", "+").replace("_", "/")
        text += "=" * (-len(text) % 4)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadDataUri("data: URI is not valid base64") from None
    else:
        data = unquote_to_bytes(payload)
    if len(data) > limit:
        raise BadDataUri(f"data: URI is larger than {_amount(limit)}")
    return data


def _amount(size: int) -> str:
    return f"{size // (1024 * 1024)} MB" if size >= 1024 * 1024 else f"{size} bytes"


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) read from the header of a PNG, JPEG, GIF, WebP or BMP, or None
    when the bytes are none of these or the header is cut short."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return "PNG", width, height
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", data[6:10])
            return "GIF", width, height
        if data.startswith(b"BM") and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return "BMP", abs(width), abs(height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
    except struct.error:
        return None
    return None


def _webp(data: bytes) -> tuple[str, int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return "WEBP", width, height
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return "WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return "WEBP", width & 0x3FFF, height & 0x3FFF
    return None


# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> tuple[str, int, int] | None:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return "JPEG", width, height
        if length < 2:
            return None
        position += 2 + length
    return None
