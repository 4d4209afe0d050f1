"""AWS clients (S3 for assets and artifacts, Lambda for the worker kick) and the one
classification of their errors.

boto3/botocore are imported inside functions: importing them costs ~100 ms, which code paths
that never call AWS should not pay.
"""

from __future__ import annotations

from typing import Any, Literal

ErrorKind = Literal["transient", "missing", "denied", "other"]

# Codes AWS documents as worth retrying; anything 5xx is treated the same way.
_TRANSIENT_CODES = frozenset({
    "RequestTimeout", "RequestTimeoutException", "Throttling", "ThrottlingException",
    "ThrottledException", "SlowDown", "ServiceUnavailable", "InternalError",
    "RequestLimitExceeded", "TooManyRequestsException", "PriorRequestNotComplete",
    "BandwidthLimitExceeded", "RequestThrottled", "RequestThrottledException",
})
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidObjectState"})


def make_s3_client() -> Any:
    """A client with bounded timeouts; botocore's standard retry mode already retries
    throttling and 5xx a few times before we classify what is left."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("s3", config=config)


def make_lambda_client() -> Any:
    """For the enqueue kick: it is best effort, so one quick attempt only."""
    import boto3
    from botocore.config import Config

    return boto3.client("lambda", config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}))


def classify(exc: BaseException) -> ErrorKind:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return "transient"
        if code in _MISSING_CODES or status == 404:
            return "missing"
        if code in _DENIED_CODES or status == 403:
            return "denied"
        return "other"
    if isinstance(exc, BotoCoreError | ConnectionError | TimeoutError):
        # Connection failures, timeouts, truncated bodies, and also missing credentials: none
        # of them is the payload's fault, so another attempt (after backoff) may succeed.
        return "transient"
    return "other"


def describe(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"
