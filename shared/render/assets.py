"""Fetch asset bytes from the three allowed sources and decode images safely.

Sources: `data:` URIs, `s3://bucket/key` in an allowed bucket, and relative paths inside the
asset folder, as `shared.contract.asset_source` reads the URI. Every refusal is an
`InvalidAsset` naming the asset id; only S3 trouble that another attempt could fix is a
`TransientRenderError`.
"""

from __future__ import annotations

import io
import math
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from shared import aws
from shared.contract import (
    MAX_ASSET_BYTES,
    MAX_IMAGE_PIXELS,
    Asset,
    AssetSource,
    asset_source,
    job_pixels_problem,
    measure_image,
)
from shared.errors import InvalidAsset, TransientRenderError
from shared.media import BadDataUri, data_uri_payload
from shared.settings import Settings

# Decoders Pillow may use: common web formats only, to keep the parsing surface small.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
# An S3 read is bounded in time so that a slow or hung connection ends well within the render's
# deadline: the client's own timeouts bound each attempt's connect and each socket read
# (`shared.aws`: 3 attempts of 5 + 30 s at most), and the body is read in chunks within this
# (or PREVIEW_RENDER_DEADLINE_SECONDS when lower): ~165 s in all, under the deadline's floor.
S3_BODY_SECONDS = 60.0
S3_CHUNK_BYTES = 64 * 1024


class AssetLoader:
    """Loads the bytes of assets for one render. The S3 client is created on first use only."""

    def __init__(self, settings: Settings, s3_client: Any | None = None) -> None:
        self.settings = settings
        self._s3_client = s3_client
        self._client_lock = threading.Lock()  # assets load in parallel threads
        self._pixels: dict[str, int] = {}  # images measured so far, for the job's pixel budget
        self._pixels_lock = threading.Lock()

    def fetch(self, asset: Asset) -> bytes:
        """The asset's bytes; an image is measured from its header first, and refused (before
        anything decodes it) when it, or the job's images so far, exceed the pixel budget."""
        data = self._fetch(asset)
        if asset.type == "image":
            count, problem = measure_image(data)
            if problem:
                raise InvalidAsset(f"asset {asset.id!r}: {problem}")
            with self._pixels_lock:
                self._pixels.setdefault(asset.id, count)
                problem = job_pixels_problem(sum(self._pixels.values()))
            if problem:
                raise InvalidAsset(problem)
        return data

    def _fetch(self, asset: Asset) -> bytes:
        source = asset_source(asset.id, asset.uri, self.settings)
        if source.kind == "data":
            data = _decode_data_uri(asset)
        elif source.kind == "s3":
            data = self._fetch_s3(asset, source)
        else:
            data = self._read_local(asset, source)
        if len(data) > MAX_ASSET_BYTES:
            raise InvalidAsset(f"asset {asset.id!r} is larger than {MAX_ASSET_BYTES // (1024 * 1024)} MB")
        if not data:
            raise InvalidAsset(f"asset {asset.id!r} is empty")
        return data

    def _client(self) -> Any:
        with self._client_lock:
            if self._s3_client is None:
                self._s3_client = aws.make_s3_client()
            return self._s3_client

    def _fetch_s3(self, asset: Asset, source: AssetSource) -> bytes:
        bucket, key = source.bucket, source.key
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client().get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                if int(response.get("ContentLength") or 0) > MAX_ASSET_BYTES:
                    raise InvalidAsset(
                        f"asset {asset.id!r} is larger than {MAX_ASSET_BYTES // (1024 * 1024)} MB")
                data = self._read_body(asset, body)
            finally:
                body.close()
        except (BotoCoreError, ClientError, OSError) as exc:
            kind = aws.classify(exc)
            detail = aws.describe(exc)
            if kind == "transient":
                raise TransientRenderError(
                    f"asset {asset.id!r}: S3 temporarily unavailable ({detail})") from exc
            if kind == "missing":
                raise InvalidAsset(f"asset {asset.id!r}: s3://{bucket}/{key} does not exist") from exc
            if kind == "denied":
                raise InvalidAsset(f"asset {asset.id!r}: access to s3://{bucket}/{key} is denied") from exc
            raise InvalidAsset(f"asset {asset.id!r}: cannot read s3://{bucket}/{key} ({detail})") from exc
        return data

    def _read_body(self, asset: Asset, body: Any) -> bytes:
        limit = min(S3_BODY_SECONDS, self.settings.render_deadline_seconds)
        ends = time.monotonic() + limit
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_ASSET_BYTES:
            chunk: bytes = body.read(S3_CHUNK_BYTES)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if time.monotonic() > ends:
                raise TransientRenderError(f"asset {asset.id!r}: reading it from S3 took over {limit:g} s")
        return b"".join(chunks)

    def _read_local(self, asset: Asset, source: AssetSource) -> bytes:
        root = self.settings.assets_root
        try:
            # strict resolution follows every symlink, so the containment check below sees the
            # real location, not the name the payload used
            resolved = root.joinpath(*source.parts).resolve(strict=True)
        except FileNotFoundError:
            raise InvalidAsset(f"asset {asset.id!r}: file {asset.uri!r} not found in the asset folder") from None
        except (OSError, RuntimeError) as exc:
            raise InvalidAsset(f"asset {asset.id!r}: cannot resolve {asset.uri!r}: {exc}") from None
        if not resolved.is_relative_to(root):
            raise InvalidAsset(f"asset {asset.id!r}: path {asset.uri!r} escapes the asset folder")
        return _read_regular_file(resolved, asset)


def _read_regular_file(path: Path, asset: Asset) -> bytes:
    # O_NOFOLLOW: if the final component was swapped for a symlink after resolving, refuse it;
    # O_NONBLOCK: a FIFO planted in the folder must not hang the worker on open()
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise InvalidAsset(f"asset {asset.id!r}: cannot open {asset.uri!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidAsset(f"asset {asset.id!r}: {asset.uri!r} is not a regular file")
        if info.st_size > MAX_ASSET_BYTES:
            raise InvalidAsset(f"asset {asset.id!r} is larger than {MAX_ASSET_BYTES // (1024 * 1024)} MB")
        with os.fdopen(fd, "rb") as handle:
            fd = -1  # the file object owns it now
            return handle.read(MAX_ASSET_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def _decode_data_uri(asset: Asset) -> bytes:
    try:
        return data_uri_payload(asset.uri, MAX_ASSET_BYTES)
    except BadDataUri as exc:
        raise InvalidAsset(f"asset {asset.id!r}: {exc}") from None


def decode_image(data: bytes, asset_id: str, fit: tuple[int, int]) -> Image.Image:
    """Decode to an RGB image no smaller than needed to fill `fit`; transparency goes onto black.

    JPEGs are decoded at a reduced scale when far larger than the frame (libjpeg DCT scaling),
    which is much cheaper than decoding at full size and resizing.
    """
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InvalidAsset(
                    f"asset {asset_id!r}: image is {width}x{height}, more than "
                    f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels")
            # either orientation may apply once EXIF rotation is honoured, so ask for a decode
            # scale large enough for both
            scale = max(min(fit[0] / width, fit[1] / height), min(fit[0] / height, fit[1] / width))
            if scale < 1:
                opened.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return _to_rgb(image)
    except InvalidAsset:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidAsset(f"asset {asset_id!r}: image dimensions are too large (decompression bomb)") from None
    except UnidentifiedImageError:
        raise InvalidAsset(
            f"asset {asset_id!r} is not a decodable image (supported: {', '.join(IMAGE_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise InvalidAsset(f"asset {asset_id!r}: image data is corrupt: {exc}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I"):
        # 16-bit greyscale: scale into 8 bits instead of clipping nearly everything to white
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    # exif_transpose already returned a copy, detached from the closed file
    return image if image.mode == "RGB" else image.convert("RGB")
