"""Domain errors. Each carries its HTTP status; `shared.api` maps them in one place."""

from __future__ import annotations

from typing import Any


class PreviewError(Exception):
    """Base of every error the service reports to a client."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}

    def headers(self) -> dict[str, str]:
        return {}


class ConfigError(Exception):
    """A configuration variable has a bad value; start-up must stop."""


class InvalidRequest(PreviewError):
    status_code = 400
    code = "invalid_request"


class InvalidPayload(PreviewError):
    """The job payload breaks the schema; `errors` lists every problem as {path, message}."""

    status_code = 400
    code = "invalid_payload"

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message, errors=errors)
        self.errors = errors


class PayloadTooLarge(PreviewError):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(PreviewError):
    status_code = 401
    code = "unauthorized"


class JobNotFound(PreviewError):
    status_code = 404
    code = "job_not_found"


class ArtifactPruned(JobNotFound):
    """The job completed, but the local store pruned its preview to stay within its size
    budget (PREVIEW_LOCAL_STORE_MAX_MB): a 404 that says so."""


class Conflict(PreviewError):
    status_code = 409
    code = "conflict"


class JobNotCompleted(PreviewError):
    status_code = 409
    code = "job_not_completed"


class QueueFull(PreviewError):
    status_code = 429
    code = "queue_full"

    def __init__(self, message: str, retry_after: int, **details: Any) -> None:
        super().__init__(message, retryAfter=retry_after, **details)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RetentionFull(QueueFull):
    """Finished jobs are at the count cap of their memory budget, every one still within its
    retention period: admitting more would drop the record of a job a client may still poll.
    The same answer as a full queue (429, `queue_full`, Retry-After: when the oldest ages out)."""


class StoreUnavailable(PreviewError):
    """Redis (or the artifact store) cannot be reached."""

    status_code = 503
    code = "store_unavailable"


class LeaseLost(Exception):
    """The worker no longer owns the job (its lease expired and another worker took it)."""


class RenderError(Exception):
    """A render failed. `retryable` says whether another attempt can help."""

    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentRenderError(RenderError):
    """Retrying cannot help: invalid payload, missing or corrupt asset, refused URI."""

    retryable = False


class InvalidAsset(PermanentRenderError):
    pass


class TransientRenderError(RenderError):
    """Temporary trouble (S3 timeout, throttling): retry with backoff."""

    retryable = True
