"""`preview validate`: a job file checked against the contract admission applies, with no
service and no Redis: the same body decoding (`shared.api.parse_body`: size limit, JSON,
numbers) and the same validation (`shared.contract.validate_payload`).

What depends on the service's configuration is taken from the caller: the allowed `s3://`
buckets (`--asset-buckets`, else PREVIEW_ASSET_BUCKETS; unset, s3:// buckets are not checked)
and the body limit (`--max-body-bytes`, else the service default).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from preview_client.errors import INVALID, OK, UNREADABLE, ConfigurationError

if TYPE_CHECKING:
    from shared.settings import Settings


@dataclass
class FileReport:
    file: str
    outcome: str  # "valid", "invalid", "unreadable"
    errors: list[dict[str, str]] = field(default_factory=list)
    message: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"valid": OK, "invalid": INVALID}.get(self.outcome, UNREADABLE)

    def as_json(self) -> dict[str, object]:
        return {"file": self.file, "valid": self.outcome == "valid", "outcome": self.outcome,
                "message": self.message, "errors": self.errors, "notes": self.notes}


def read_input(name: str) -> bytes:
    """The bytes of a file, or of stdin for "-"; OSError when it cannot be read."""
    if name == "-":
        return sys.stdin.buffer.read()
    return Path(name).read_bytes()


def validate_bytes(raw: bytes, *, asset_buckets: tuple[str, ...] | None = None,
                   max_body_bytes: int | None = None) -> tuple[list[dict[str, str]], str, list[str]]:
    """(problems, summary, notes) of one job body; no problems means admission accepts it."""
    from shared import contract
    from shared.api import parse_body
    from shared.errors import PreviewError
    from shared.settings import Settings

    notes: list[str] = []
    limit = max_body_bytes or Settings.fields()["max_body_bytes"].default
    try:
        document = parse_body(raw, False, limit)
        if asset_buckets is None:
            # Unknown configuration: every bucket the document names is let through (unchecked,
            # so not validated as a setting either; the schema checks its form).
            buckets = _s3_buckets(document)
            settings = Settings.unvalidated(asset_buckets=buckets)
            if buckets:
                notes.append(f"s3:// buckets not checked ({', '.join(buckets)}): pass --asset-buckets or set "
                             "PREVIEW_ASSET_BUCKETS to the service's")
        else:
            settings = asset_settings(asset_buckets)
        contract.validate_payload(document, settings)
    except PreviewError as exc:
        errors = exc.details.get("errors")
        if not errors:  # refused as a whole (not JSON, too large): the pointer is the document's
            return [{"path": "/", "message": exc.message}], "1 error", notes
        return list(errors), exc.message, notes
    return [], "valid", notes


def asset_settings(buckets: tuple[str, ...]) -> Settings:
    """The service settings that matter offline: the allowed buckets, checked as the service does."""
    from shared.settings import Settings, SettingsError

    try:
        return Settings(asset_buckets=",".join(buckets))
    except SettingsError as exc:
        raise ConfigurationError(f"--asset-buckets: {exc.message}") from None


def _s3_buckets(document: object) -> tuple[str, ...]:
    """The buckets a document's s3:// assets name (whatever else is wrong with it)."""
    from shared.contract import UriRefused, classify_uri

    found: list[str] = []
    request = document.get("previewRequest") if isinstance(document, dict) else None
    assets = request.get("assets") if isinstance(request, dict) else None
    for asset in assets if isinstance(assets, list) else []:
        uri = asset.get("uri") if isinstance(asset, dict) else None
        if isinstance(uri, str):
            try:
                source = classify_uri(uri)
            except UriRefused:
                continue
            if source.kind == "s3" and source.bucket not in found:
                found.append(source.bucket)
    return tuple(found)


def validate_file(name: str, *, asset_buckets: tuple[str, ...] | None = None,
                  max_body_bytes: int | None = None) -> FileReport:
    try:
        raw = read_input(name)
    except OSError as exc:
        return FileReport(name, "unreadable", message=exc.strerror or str(exc))
    errors, summary, notes = validate_bytes(raw, asset_buckets=asset_buckets, max_body_bytes=max_body_bytes)
    return FileReport(name, "invalid" if errors else "valid", errors, summary, notes)
