"""Client of the preview job service: `PreviewClient` (the HTTP API, signed with SigV4 or sent
with an API key, retried as the service's contract allows) and the `preview` command
(`preview_client.cli`). It imports the service's contract for offline validation only, never
the handlers or the emulator."""

from preview_client.client import Admission, DownloadedFile, JobTimeout, PreviewClient, RetryNotice, RetryPolicy
from preview_client.errors import (
    ApiError,
    ClientError,
    ConfigurationError,
    IntegrityError,
    InvalidPayload,
    NotFound,
    Refused,
    RouteMissing,
    Unavailable,
    Unreachable,
)

__all__ = [
    "Admission", "ApiError", "ClientError", "ConfigurationError", "DownloadedFile", "IntegrityError",
    "InvalidPayload", "JobTimeout", "NotFound", "PreviewClient", "Refused", "RetryNotice", "RetryPolicy",
    "RouteMissing", "Unavailable", "Unreachable",
]
