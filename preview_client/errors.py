"""What can go wrong when using the service, as types, each with the `preview` command's exit code.

0 success; 1 the job or a check failed (a failed job, a file that does not match the manifest,
a refused request); 2 invalid input (a payload the contract refuses, a bad command line or
configuration); 3 an input file that cannot be read; 4 the service cannot be reached or stays
unavailable (connection refused, 503, 429 beyond the retry budget); 5 the service refused the
caller's credentials (401, 403).
"""

from __future__ import annotations

from typing import Any

OK, FAILED, INVALID, UNREADABLE, UNREACHABLE, REFUSED = 0, 1, 2, 3, 4, 5


class ClientError(Exception):
    """Base of every error the client reports; `exit_code` is the command's."""

    exit_code = FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(ClientError):
    """No URL, no credentials, a bad flag value."""

    exit_code = INVALID


class Unreadable(ClientError):
    exit_code = UNREADABLE


class Unreachable(ClientError):
    """No connection could be made, or it kept dropping (after the retries)."""

    exit_code = UNREACHABLE


class ApiError(ClientError):
    """The service answered with an error status; `body` is its JSON answer (or {})."""

    def __init__(self, message: str, status: int, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}

    @property
    def errors(self) -> list[dict[str, str]]:
        """The `{path, message}` problems of a 400, if any."""
        found = self.body.get("errors")
        return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


class InvalidPayload(ApiError):
    """400 or 413: the service refused the request as sent."""

    exit_code = INVALID


class Refused(ApiError):
    """401 or 403: the credentials or the key are missing or wrong."""

    exit_code = REFUSED


class Unavailable(ApiError):
    """503, or 429 (queue full), still so when the retries ran out."""

    exit_code = UNREACHABLE


class RouteMissing(ApiError):
    """The service has no such route (a version without the operator routes)."""


class NotFound(ApiError):
    """404 of an existing route: no such job, or its artifacts are gone."""


class IntegrityError(ClientError):
    """A downloaded file differs from what the manifest says of it."""
