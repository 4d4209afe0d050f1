"""Where finished previews live and how clients get a URL for them: the layout of a preview
(`layout`), the local folder store (`local`, with `signing` for its URLs) and the S3 store
(`s3`). `build_store` is the one place that chooses between them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from shared.settings import Settings


class ArtifactStore(Protocol):
    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]: ...

    def read_manifest(self, project_id: str, job_id: str) -> dict[str, Any] | None: ...

    def signed_url(self, project_id: str, job_id: str, name: str, ttl_seconds: int,
                   base_url: str | None) -> tuple[str, datetime]: ...

    def delete(self, project_id: str, job_id: str) -> None: ...

    def close(self) -> None: ...


def build_store(settings: Settings) -> ArtifactStore:
    """S3 when ARTIFACT_BUCKET is set, else the folder under DATA_DIR (each store's module, and
    the local store's SQLite index, loaded only when it is the one used)."""
    if settings.artifact_bucket:
        from shared.artifacts.s3 import S3Store

        return S3Store(settings.artifact_bucket)
    from shared.artifacts.local import LocalStore

    return LocalStore(settings.data_dir, settings.url_secret, settings.artifact_retention_days * 86_400,
                      settings.local_store_max_mb)
