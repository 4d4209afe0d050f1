"""Artifacts in an S3 bucket, fetched through presigned URLs."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import aws
from shared.artifacts import layout
from shared.errors import RenderError, StoreUnavailable, TransientRenderError


class S3Store:
    """Errors while publishing are render errors (the worker retries them); errors while
    reading are `StoreUnavailable` (503). The client is made on first use."""

    def __init__(self, bucket: str, client: Any | None = None) -> None:
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.make_s3_client()
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def key(self, project_id: str, job_id: str, name: str) -> str:
        return layout.job_key(project_id, job_id, name)

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        manifest, raw = layout.manifest_to_publish(project_id, job_id, Path(src_dir))
        try:
            # A previous set stops being published before its files are overwritten, so no
            # reader pairs an old manifest with new bytes.
            self.client.delete_object(Bucket=self.bucket, Key=self.key(project_id, job_id, layout.MANIFEST))
            for entry in manifest["files"]:
                with (Path(src_dir) / entry["name"]).open("rb") as body:
                    self.client.put_object(Bucket=self.bucket, Key=self.key(project_id, job_id, entry["name"]),
                                           Body=body, ContentType=entry["contentType"])
            # last: its presence publishes the set
            self.client.put_object(Bucket=self.bucket, Key=self.key(project_id, job_id, layout.MANIFEST),
                                   Body=raw, ContentType=layout.content_type(layout.MANIFEST))
        except (BotoCoreError, ClientError) as exc:
            detail = aws.describe(exc)
            if aws.classify(exc) == "transient":
                raise TransientRenderError(f"artifact upload to s3://{self.bucket} failed: {detail}") from exc
            # access denied, missing bucket: configuration, not the payload; retry may succeed
            # once fixed, and the attempt limit bounds it
            raise RenderError(f"artifact upload to s3://{self.bucket} failed: {detail}") from exc
        return manifest

    def read_manifest(self, project_id: str, job_id: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(project_id, job_id, layout.MANIFEST))
            with contextlib.closing(response["Body"]) as body:
                raw = body.read()
        except (BotoCoreError, ClientError) as exc:
            if aws.classify(exc) == "missing":
                return None
            raise StoreUnavailable(f"artifact store unavailable: {aws.describe(exc)}") from exc
        return layout.parse_manifest(raw)

    def signed_url(self, project_id: str, job_id: str, name: str, ttl_seconds: int,
                   base_url: str | None) -> tuple[str, datetime]:
        """A presigned GET; `base_url` is irrelevant here (S3 serves the file itself)."""
        from botocore.exceptions import BotoCoreError

        del base_url
        key = self.key(project_id, job_id, name)
        expires_at = datetime.fromtimestamp(int(time.time()) + int(ttl_seconds), tz=UTC)
        try:
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(ttl_seconds))
        except BotoCoreError as exc:
            raise StoreUnavailable(f"cannot sign artifact URL: {exc}") from exc
        return url, expires_at

    def delete(self, project_id: str, job_id: str) -> None:
        """Manifest first (unpublishes the set), then the files it lists. Needs no ListBucket
        permission: the names come from the manifest, or every name a render writes."""
        from botocore.exceptions import BotoCoreError, ClientError

        manifest = self.read_manifest(project_id, job_id)
        names = [entry["name"] for entry in manifest["files"]] if manifest else list(layout.OUTPUT_NAMES)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(project_id, job_id, layout.MANIFEST))
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": self.key(project_id, job_id, n)} for n in names], "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"cannot delete artifacts: {aws.describe(exc)}") from exc
