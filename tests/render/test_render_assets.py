"""Asset loading: allowed sources, refusals, S3 via moto, S3 failures, corrupt and oversized data."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from moto import mock_aws
from PIL import Image
from render_testkit import make_job, png_bytes, png_uri, request, wav_bytes

from shared import aws as s3
from shared import contract
from shared.contract import Asset
from shared.errors import InvalidAsset, TransientRenderError
from shared.render import assets as assets_module
from shared.render import render_preview
from shared.render.assets import AssetLoader, decode_image
from shared.render.audio import PcmSource
from shared.settings import Settings


def image_ref(uri: str, asset_id: str = "pic") -> Asset:
    return Asset(asset_id, "image", uri)


def test_data_uri_base64_and_percent_encoded(settings: Settings) -> None:
    loader = AssetLoader(settings)
    raw = png_bytes((1, 2, 3))
    assert loader.fetch(image_ref(png_uri((1, 2, 3)))) == raw
    assert loader.fetch(Asset("a", "audio", "data:text/plain,hello%20world%21")) == b"hello world!"
    assert loader.fetch(Asset("a", "audio", "data:text/plain;charset=utf-8;base64,aGk")) == b"hi"  # unpadded
    with pytest.raises(InvalidAsset, match="'pic': is not a PNG, JPEG, GIF, WebP or BMP image"):
        loader.fetch(image_ref("data:text/plain;charset=utf-8;base64,aGk"))
    with pytest.raises(InvalidAsset, match="'pic'.*not valid base64"):
        loader.fetch(image_ref("data:image/png;base64,@@@@"))
    with pytest.raises(InvalidAsset, match="no ','"):
        loader.fetch(image_ref("data:image/png;base64"))


def test_local_path_inside_asset_folder(settings: Settings) -> None:
    folder = settings.assets_root / "shots"
    folder.mkdir(parents=True)
    (folder / "one shot.png").write_bytes(png_bytes((9, 9, 9)))
    assert AssetLoader(settings).fetch(image_ref("shots/one shot.png")) == png_bytes((9, 9, 9))


def test_symlink_inside_folder_is_followed(settings: Settings) -> None:
    (settings.assets_root / "real.png").write_bytes(png_bytes((5, 5, 5)))
    (settings.assets_root / "alias.png").symlink_to(settings.assets_root / "real.png")
    assert AssetLoader(settings).fetch(image_ref("alias.png")) == png_bytes((5, 5, 5))


@pytest.mark.parametrize(("uri", "message"), [
    ("http://169.254.169.254/latest/meta-data", "'http' is not allowed"),
    ("file:///etc/passwd", "'file' is not allowed"),
    ("ftp://example.com/a.png", "'ftp' is not allowed"),
    ("/etc/passwd", "absolute path"),
    ("../outside.png", "must stay inside"),
    ("shots/../../outside.png", "must stay inside"),
    ("missing.png", "not found"),
    ("s3://other-bucket/key.png", "not an allowed asset bucket"),
    ("s3://asset-bucket", "s3://bucket/key"),
])
def test_refused_uris(settings: Settings, uri: str, message: str) -> None:
    with pytest.raises(InvalidAsset, match=message) as caught:
        AssetLoader(settings).fetch(image_ref(uri))
    assert "'pic'" in caught.value.message


def test_symlink_escaping_asset_folder_is_refused(settings: Settings, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes((1, 1, 1)))
    (settings.assets_root / "innocent.png").symlink_to(secret)
    (settings.assets_root / "dir-link").symlink_to(tmp_path)
    loader = AssetLoader(settings)
    for uri in ("innocent.png", "dir-link/secret.png"):
        with pytest.raises(InvalidAsset, match="escapes the asset folder"):
            loader.fetch(image_ref(uri))


def test_special_files_and_size_cap(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    (settings.assets_root / "folder").mkdir()
    with pytest.raises(InvalidAsset, match="not a regular file"):
        AssetLoader(settings).fetch(image_ref("folder"))
    os.mkfifo(settings.assets_root / "pipe")  # must not block the worker on open()
    with pytest.raises(InvalidAsset, match="not a regular file"):
        AssetLoader(settings).fetch(image_ref("pipe"))
    (settings.assets_root / "big.png").write_bytes(b"x" * 2048)
    monkeypatch.setattr(assets_module, "MAX_ASSET_BYTES", 1024)
    with pytest.raises(InvalidAsset, match="larger than"):
        AssetLoader(settings).fetch(image_ref("big.png"))
    with pytest.raises(InvalidAsset, match="larger than"):
        AssetLoader(settings).fetch(image_ref(png_uri((0, 0, 0), (200, 200)) + "A" * 2048))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions but carries almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_corrupt_and_oversized_images() -> None:
    truncated = png_bytes((10, 20, 30), (300, 300))[:-40]
    with pytest.raises(InvalidAsset, match="'pic'"):
        decode_image(truncated, "pic", (320, 240))
    with pytest.raises(InvalidAsset, match="'pic' is not a decodable image"):
        decode_image(b"definitely not a picture", "pic", (320, 240))
    with pytest.raises(InvalidAsset, match="megapixels"):
        decode_image(png_header_only(8000, 6000), "pic", (320, 240))
    with pytest.raises(InvalidAsset, match="decompression bomb"):
        decode_image(png_header_only(100_000, 100_000), "pic", (320, 240))
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="TIFF")
    with pytest.raises(InvalidAsset, match="not a decodable image"):
        decode_image(buffer.getvalue(), "pic", (320, 240))


def test_pixel_budget_per_image_and_per_job(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured from the header before any decoding: one image over 40 MP is refused, and so is
    the image that takes a job's distinct images past the budget (the same asset shown twice
    counts once)."""
    (settings.assets_root / "huge.png").write_bytes(png_header_only(8000, 6000))
    for name in ("a", "b", "c"):
        (settings.assets_root / f"{name}.png").write_bytes(png_header_only(6300, 6300))
    with pytest.raises(InvalidAsset, match="'pic': image is 8000x6000, more than 40 megapixels"):
        AssetLoader(settings).fetch(image_ref("huge.png"))
    monkeypatch.setattr(contract, "MAX_JOB_PIXELS", 80_000_000)
    loader = AssetLoader(settings)
    loader.fetch(image_ref("a.png", "a"))
    loader.fetch(image_ref("a.png", "a"))
    loader.fetch(image_ref("b.png", "b"))
    with pytest.raises(InvalidAsset, match="hold 119 megapixels, more than the budget of 80 per job"):
        loader.fetch(image_ref("c.png", "c"))


def test_image_modes_become_rgb() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 20), (255, 0, 0, 0)).save(buffer, format="PNG")
    image = decode_image(buffer.getvalue(), "pic", (320, 240))
    assert image.mode == "RGB" and image.getpixel((5, 5)) == (0, 0, 0)  # transparent -> black
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (0, 128, 255)).save(buffer, format="JPEG")
    image = decode_image(buffer.getvalue(), "pic", (320, 240))
    # decoded at a reduced DCT scale, still large enough to fill the frame
    assert 320 <= image.width < 4000 and image.height >= 240


def test_audio_decode_and_refusals() -> None:
    source = PcmSource(wav_bytes(0.5, rate=8000, channels=1), "voice")
    block = source.read(48_000)
    assert block.shape == (48_000, 2)
    assert abs(block[:, 0]).max() > 0.3 and abs(block[24_500:]).max() == 0  # 0.5 s then silence
    source.close()
    with pytest.raises(InvalidAsset, match="'voice' is not decodable audio"):
        PcmSource(b"RIFF0000WAVEjunkjunk" * 10, "voice")
    playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    with pytest.raises(InvalidAsset):
        PcmSource(playlist, "voice")
    with pytest.raises(InvalidAsset, match="no audio stream|not decodable"):
        PcmSource(png_bytes((0, 0, 0)), "voice")


def encode_tone(fmt: str, codec: str, seconds: float = 0.6, rate: int = 44_100) -> bytes:
    """A short tone in a compressed format, made with PyAV itself."""
    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream: Any = container.add_stream(codec, rate=rate, layout="mono")
        t = np.arange(int(seconds * rate)) / rate
        tone = (np.sin(2 * np.pi * 330 * t) * 0.5).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "codec", "rate"), [
    ("mp3", "libmp3lame", 44_100), ("ogg", "libopus", 24_000), ("flac", "flac", 32_000)])
def test_compressed_audio_formats(fmt: str, codec: str, rate: int) -> None:
    source = PcmSource(encode_tone(fmt, codec, rate=rate), "music")
    samples = source.read(48_000)
    source.close()
    loud = np.abs(samples[2_000:20_000]).max()
    assert 0.3 < loud <= 1.0 and np.abs(samples[40_000:]).max() < 0.05  # 0.6 s tone, resampled to 48 kHz


def test_s3_asset_via_moto(settings: Settings, aws_env: None, tmp_path: Path) -> None:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="asset-bucket")
        client.put_object(Bucket="asset-bucket", Key="shots/red.png", Body=png_bytes((200, 0, 0)))
        loader = AssetLoader(settings)
        assert loader.fetch(image_ref("s3://asset-bucket/shots/red.png")) == png_bytes((200, 0, 0))
        with pytest.raises(InvalidAsset, match="does not exist"):
            loader.fetch(image_ref("s3://asset-bucket/shots/missing.png"))
        # and end to end through a dry run
        job = make_job([{"asset": "pic"}], [{"id": "pic", "type": "image", "uri": "s3://asset-bucket/shots/red.png"}],
                       dry_run=True)
        result = render_preview(request(job, settings), tmp_path / "out", settings)
        assert result.files == ["container.json", "preview.json"]


class FailingClient:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def get_object(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        raise self.error


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize("error", [
    EndpointConnectionError(endpoint_url="https://s3.amazonaws.com"),
    ReadTimeoutError(endpoint_url="https://s3.amazonaws.com"),
    client_error("SlowDown", 503),
    client_error("InternalError", 500),
    client_error("Throttling", 400),
])
def test_s3_transient_errors(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             error: Exception) -> None:
    failing = FailingClient(error)
    monkeypatch.setattr(s3, "make_s3_client", lambda: failing)
    job = make_job([{"asset": "pic"}], [{"id": "pic", "type": "image", "uri": "s3://asset-bucket/a.png"}])
    with pytest.raises(TransientRenderError, match="'pic'") as caught:
        render_preview(request(job, settings), tmp_path / "out", settings)
    assert caught.value.retryable and failing.calls == 1


@pytest.mark.parametrize(("error", "message"), [
    (client_error("NoSuchKey", 404), "does not exist"),
    (client_error("AccessDenied", 403), "denied"),
    (client_error("InvalidRange", 416), "cannot read"),
])
def test_s3_permanent_errors(settings: Settings, monkeypatch: pytest.MonkeyPatch, error: Exception,
                             message: str) -> None:
    monkeypatch.setattr(s3, "make_s3_client", lambda: FailingClient(error))
    with pytest.raises(InvalidAsset, match=message) as caught:
        AssetLoader(settings).fetch(image_ref("s3://asset-bucket/a.png"))
    assert not caught.value.retryable


def test_s3_client_is_created_lazily(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("no S3 asset, so no client")
    monkeypatch.setattr(s3, "make_s3_client", refuse)
    assert AssetLoader(settings).fetch(image_ref(png_uri((0, 0, 0))))


def test_local_file_permissions_error(settings: Settings) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = settings.assets_root / "locked.png"
    path.write_bytes(png_bytes((0, 0, 0)))
    path.chmod(0)
    with pytest.raises(InvalidAsset, match="cannot open"):
        AssetLoader(settings).fetch(image_ref("locked.png"))
