"""Signing requests as an AWS SDK does for an IAM-authorized HTTP API: an httpx `Auth` that
adds botocore's SigV4 headers (service execute-api) to each request."""

from __future__ import annotations

import os
from collections.abc import Generator

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class SigV4(httpx.Auth):
    requires_request_body = True

    def __init__(self, access_key: str | None = None, secret_key: str | None = None, *,
                 region: str | None = None, token: str | None = None) -> None:
        # The test session's own credentials (tests/conftest.py sets them) unless told otherwise.
        self.credentials = Credentials(access_key or os.environ["AWS_ACCESS_KEY_ID"],
                                       secret_key or os.environ["AWS_SECRET_ACCESS_KEY"], token)
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        signed = {"host": request.headers["host"]}
        if "content-type" in request.headers:
            signed["content-type"] = request.headers["content-type"]
        aws = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=signed)
        SigV4Auth(self.credentials, "execute-api", self.region).add_auth(aws)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws.headers:
                request.headers[name] = aws.headers[name]
        yield request
