"""Image dimensions read from headers alone agree with Pillow for every accepted format, and
cut-short or foreign bytes give None (the caller refuses them)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shared.media import BadDataUri, data_uri_payload, image_size


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
@pytest.mark.parametrize("size", [(1, 1), (321, 17), (4000, 3001)])
def test_header_dimensions_match_pillow(fmt: str, size: tuple[int, int]) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert image_size(buffer.getvalue()) == (fmt, *size)


def test_lossy_and_extended_webp() -> None:
    for options in ({"quality": 50}, {"exif": b"Exif\x00\x00"}):
        buffer = io.BytesIO()
        Image.new("RGB", (123, 45)).save(buffer, format="WEBP", **options)
        assert image_size(buffer.getvalue()) == ("WEBP", 123, 45)


def test_jpeg_with_a_large_exif_block_before_the_frame() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480)).save(buffer, format="JPEG", exif=b"Exif\x00\x00" + b"\x00" * 30_000)
    assert image_size(buffer.getvalue()) == ("JPEG", 640, 480)


@pytest.mark.parametrize("data", [b"", b"hello", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00", b"GIF89a\x01",
                                  b"RIFF\x00\x00\x00\x00WEBPVP8 "])
def test_foreign_or_cut_short_bytes_give_none(data: bytes) -> None:
    assert image_size(data) is None


def test_data_uri_payloads() -> None:
    assert data_uri_payload("data:text/plain,hello%20world", 100) == b"hello world"
    assert data_uri_payload("data:;base64,aGk", 100) == b"hi"
    assert data_uri_payload("data:;base64,aG k=\n", 100) == b"hi"
    for uri, reason in [("data:abc", "no ','"), ("data:;base64,@@", "not valid base64"),
                        ("data:," + "x" * 200, "larger than 100 bytes"), ("data:;base64," + "QUFB" * 40, "larger")]:
        with pytest.raises(BadDataUri, match=reason):
            data_uri_payload(uri, 100)
