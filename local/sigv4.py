"""IAM authorization as API Gateway applies it to an HTTP API route: the request must carry an
AWS Signature Version 4 for `execute-api` in the API's region, made with credentials the
gateway knows, within five minutes of now. The emulator knows one set of credentials (its
"local credentials", see `local_credentials`); the signature is recomputed with botocore's
own signer over exactly the headers the client signed, and compared in constant time.

A refusal is API Gateway's: 403 with its message. An accepted request's identity goes into the
event as `requestContext.authorizer.iam`, as the deployed API gives it to the function.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

SERVICE = "execute-api"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=5)
_STAMP = "%Y%m%dT%H%M%SZ"

# API Gateway's own words for each refusal.
FORBIDDEN = "Forbidden"
BAD_KEY = "The security token included in the request is invalid."
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.")


@dataclass(frozen=True)
class LocalCredentials:
    access_key: str
    secret_key: str
    token: str | None
    source: str  # where they were found, for the banner (never the secret)


def local_credentials(shell: Mapping[str, str]) -> LocalCredentials | None:
    """The credentials requests must be signed with, from the emulator's shell the way the AWS
    CLI finds them: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), else the
    AWS_PROFILE (or default) profile of the shared credentials and config files. Nothing is
    asked of the network (no instance metadata, no SSO)."""
    key, secret = shell.get("AWS_ACCESS_KEY_ID", ""), shell.get("AWS_SECRET_ACCESS_KEY", "")
    if key and secret:
        return LocalCredentials(key, secret, shell.get("AWS_SESSION_TOKEN") or None, "AWS_ACCESS_KEY_ID")
    import configparser

    profile = shell.get("AWS_PROFILE") or shell.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path(shell.get("HOME") or os.path.expanduser("~"))
    files = (
        (Path(shell.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"), profile),
        (Path(shell.get("AWS_CONFIG_FILE") or home / ".aws" / "config"),
         profile if profile == "default" else f"profile {profile}"),
    )
    for path, section in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if parser.has_section(section):
            values = dict(parser.items(section))
            if values.get("aws_access_key_id") and values.get("aws_secret_access_key"):
                return LocalCredentials(values["aws_access_key_id"], values["aws_secret_access_key"],
                                        values.get("aws_session_token") or None, f"profile {profile} in {path.name}")
    return None


@dataclass(frozen=True)
class Refusal:
    message: str
    why: str  # for the emulator's log: what exactly was wrong (never a secret)


class _SignedHeadersOnly(SigV4Auth):
    """botocore's signer, over the headers the client listed in SignedHeaders (botocore would
    take every header of the request but a few)."""

    def __init__(self, credentials: Credentials, region: str, signed: Sequence[tuple[str, str]]) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name, value in self._signed:
            headers[name] = value  # a repeated header is added again, as it was sent
        return headers


class SigV4Verifier:
    def __init__(self, credentials: LocalCredentials | None, region: str, account_id: str) -> None:
        self.credentials = credentials
        self.region = region
        self.account_id = account_id

    def verify(self, method: str, scheme: str, raw_path: str, raw_query: str,
               headers: Sequence[tuple[bytes, bytes]], body: bytes,
               now: datetime | None = None) -> dict[str, Any] | Refusal:
        """The `iam` identity of a correctly signed request, else the refusal."""
        fields = _header_map(headers)
        authorization = fields.get("authorization", [""])[0]
        if not authorization:
            return Refusal(FORBIDDEN, "no Authorization header")
        algorithm, _, rest = authorization.partition(" ")
        if algorithm != ALGORITHM:
            return Refusal(FORBIDDEN, f"Authorization is not {ALGORITHM}")
        parts = _auth_parts(rest)
        credential, signed_names = parts.get("Credential"), parts.get("SignedHeaders")
        signature = parts.get("Signature")
        if not (credential and signed_names and signature):
            return Refusal(FORBIDDEN, "Authorization lacks Credential, SignedHeaders or Signature")
        scope = credential.split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            return Refusal(FORBIDDEN, "malformed credential scope")
        access_key, day, region, service, _ = scope
        if service != SERVICE:
            return Refusal(FORBIDDEN, f"credential scoped to service {service!r}, not {SERVICE!r}")
        if region != self.region:
            return Refusal(FORBIDDEN, f"credential scoped to region {region!r}, the API is in {self.region!r}")
        creds = self.credentials
        if creds is None or not hmac.compare_digest(access_key.encode(), creds.access_key.encode()):
            return Refusal(BAD_KEY, "unknown access key" if creds else "the emulator has no local credentials")
        stamp = fields.get("x-amz-date", [""])[0]
        try:
            when = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
        except ValueError:
            return Refusal(FORBIDDEN, "no valid X-Amz-Date header")
        now = now or datetime.now(UTC)
        if when < now - MAX_SKEW:
            return Refusal(f"Signature expired: {stamp} is now earlier than {(now - MAX_SKEW).strftime(_STAMP)} "
                           f"({now.strftime(_STAMP)} - 5 min.)", "stale signature")
        if when > now + MAX_SKEW:
            return Refusal(f"Signature not yet current: {stamp} is still later than "
                           f"{(now + MAX_SKEW).strftime(_STAMP)} ({now.strftime(_STAMP)} + 5 min.)",
                           "signature from the future")
        if day != stamp[:8]:
            return Refusal(MISMATCH, "credential date differs from X-Amz-Date")
        names = signed_names.split(";")
        if "host" not in names or any(name not in fields for name in names):
            return Refusal(MISMATCH, "SignedHeaders lacks host or names a header not sent")
        if creds.token is not None and fields.get("x-amz-security-token", [""])[0] != creds.token:
            return Refusal(BAD_KEY, "session token missing or different")
        declared = fields.get("x-amz-content-sha256", [None])[0]
        if declared is not None and declared != hashlib.sha256(body).hexdigest():
            return Refusal(MISMATCH, "X-Amz-Content-SHA256 is not the body's hash")
        try:
            expected = self._signature(method, scheme, raw_path, raw_query,
                                       [(n, v) for n in names for v in fields[n]], body, stamp)
        except ValueError:  # a path botocore cannot take apart: no signature can match it
            return Refusal(MISMATCH, "the request's path cannot be canonicalised")
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return Refusal(MISMATCH, "signature mismatch")
        return {
            "accessKey": access_key, "accountId": self.account_id, "callerId": access_key,
            "cognitoIdentity": None, "principalOrgId": None,
            "userArn": f"arn:aws:iam::{self.account_id}:user/local", "userId": access_key,
        }

    def _signature(self, method: str, scheme: str, raw_path: str, raw_query: str,
                   signed: Sequence[tuple[str, str]], body: bytes, stamp: str) -> str:
        assert self.credentials is not None
        creds = Credentials(self.credentials.access_key, self.credentials.secret_key, self.credentials.token)
        # The signer reads only the path and query of the URL; the host it signs is the Host
        # header as sent (in `signed`), whatever it says.
        url = f"{scheme}://localhost{raw_path}" + (f"?{raw_query}" if raw_query else "")
        request = AWSRequest(method=method, url=url, data=body, headers=dict(signed))
        request.context["timestamp"] = stamp
        signer = _SignedHeadersOnly(creds, self.region, signed)
        canonical = signer.canonical_request(request)
        signature: str = signer.signature(signer.string_to_sign(request, canonical), request)
        return signature


def _header_map(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    # Signers hash header values as UTF-8 text; bytes that are not UTF-8 cannot match a signature.
    fields: dict[str, list[str]] = {}
    for name, value in headers:
        fields.setdefault(name.decode("latin-1").lower(), []).append(value.decode("utf-8", "replace"))
    return fields


def _auth_parts(text: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts[key] = value.strip()
    return parts
