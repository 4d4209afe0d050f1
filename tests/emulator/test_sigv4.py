"""IAM authorization in the emulator, as API Gateway applies it: a route whose template
authorizer is AWS_IAM needs a SigV4 signature (service execute-api, the API's region) made
with the emulator's local credentials within five minutes; anything else is a 403 with API
Gateway's message. Signatures are made here with botocore (and with curl, as the README
shows); the emulator recomputes them with botocore."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.runtime import FunctionRuntime
from local.server import Emulator, ServerOptions
from local.sigv4 import BAD_KEY, FORBIDDEN, MISMATCH, Refusal, SigV4Verifier, local_credentials
from local.template import load_template
from tests.conftest import ROOT
from tests.emulator.conftest import write_template
from tests.emulator.in_process import running
from tests.sigv4 import SigV4

KEY, SECRET, REGION = "AKIDLOCALEXAMPLE", "local-secret-example", "eu-west-1"
ACCOUNT = "123456789012"
HOST = "127.0.0.1:3000"

TEMPLATE = """\
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth: {EnableIamAuthorizer: true, DefaultAuthorizer: AWS_IAM}
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      CodeUri: @ROOT@
      Handler: tests.emulator.apps.echo
      Events:
        Post:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: "/echo/{id}", Method: POST}
        Open:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: /health, Method: GET, Auth: {Authorizer: NONE}}
"""


# --------------------------------------------------------------------------- the check itself


def signed(method: str = "POST", path: str = "/echo/1", body: bytes = b'{"a": 1}', *, key: str = KEY,
           secret: str = SECRET, region: str = REGION, service: str = "execute-api",
           when: datetime | None = None, token: str | None = None,
           extra: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    """The headers botocore's signer gives a request (at `when`, else now)."""
    request = AWSRequest(method=method, url=f"http://{HOST}{path}", data=body,
                         headers={"host": HOST, "content-type": "application/json", **(extra or {})})
    signer = SigV4Auth(Credentials(key, secret, token), service, region)
    if when is None:
        signer.add_auth(request)
    else:  # add_auth always signs at the current time; sign at `when` the same way
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        request.headers["X-Amz-Date"] = request.context["timestamp"]
        if token:
            request.headers["X-Amz-Security-Token"] = token
        canonical = signer.canonical_request(request)
        signature = signer.signature(signer.string_to_sign(request, canonical), request)
        scope = signer.scope(request)
        request.headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders="
                                            f"{signer.signed_headers(signer.headers_to_sign(request))}, "
                                            f"Signature={signature}")
    return [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]


def verify(headers: list[tuple[bytes, bytes]], method: str = "POST", path: str = "/echo/1",
           body: bytes = b'{"a": 1}', token: str | None = None, query: str = "") -> Any:
    from local.sigv4 import LocalCredentials

    verifier = SigV4Verifier(LocalCredentials(KEY, SECRET, token, "test"), REGION, ACCOUNT)
    return verifier.verify(method, "http", path, query, headers, body)


def test_a_botocore_signature_is_accepted_with_the_callers_identity() -> None:
    identity = verify(signed())
    assert identity["accessKey"] == KEY and identity["accountId"] == ACCOUNT
    assert identity["userArn"] == f"arn:aws:iam::{ACCOUNT}:user/local"


@pytest.mark.parametrize(("change", "message"), [
    ({"secret": "not-the-secret"}, MISMATCH),
    ({"key": "AKIDSOMEONEELSE"}, BAD_KEY),
    ({"region": "us-east-1"}, FORBIDDEN),
    ({"service": "s3"}, FORBIDDEN),
])
def test_a_signature_of_other_credentials_or_scope_is_refused(change: dict[str, Any], message: str) -> None:
    refusal = verify(signed(**change))
    assert isinstance(refusal, Refusal) and refusal.message == message


def test_a_changed_body_path_or_method_breaks_the_signature() -> None:
    headers = signed()
    assert verify(headers).get("accessKey") == KEY
    assert verify(headers, body=b'{"a": 2}').message == MISMATCH
    assert verify(headers, path="/echo/2").message == MISMATCH
    assert verify(headers, method="PUT").message == MISMATCH
    assert verify(headers, query="x=1").message == MISMATCH
    lying = signed(extra={"x-amz-content-sha256": hashlib.sha256(b"other").hexdigest()})
    assert verify(lying).message == MISMATCH


def test_stale_and_future_signatures_are_refused_as_api_gateway_does() -> None:
    now = datetime.now(UTC)
    assert verify(signed(when=now - timedelta(minutes=4))).get("accessKey") == KEY
    stale = verify(signed(when=now - timedelta(minutes=6)))
    assert stale.message.startswith("Signature expired: ") and "- 5 min.)" in stale.message
    future = verify(signed(when=now + timedelta(minutes=6)))
    assert future.message.startswith("Signature not yet current: ")


def test_missing_or_malformed_authorization_is_forbidden() -> None:
    assert verify([(b"host", HOST.encode())]).message == FORBIDDEN
    assert verify([(b"host", HOST.encode()), (b"authorization", b"Bearer abc")]).message == FORBIDDEN
    assert verify([(b"host", HOST.encode()), (b"authorization", b"AWS4-HMAC-SHA256 Credential=x")]).message \
        == FORBIDDEN
    unsigned_host = [(k, v) for k, v in signed() if k != b"host"]
    assert verify(unsigned_host).message == MISMATCH


def test_session_credentials_need_their_token() -> None:
    now = datetime.now(UTC)
    assert verify(signed(when=now, token="tok"), token="tok").get("accessKey") == KEY
    assert verify(signed(when=now), token="tok").message == BAD_KEY


def test_local_credentials_come_from_the_shell_or_the_shared_files(tmp_path: Path) -> None:
    from_shell = local_credentials({"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S", "HOME": str(tmp_path)})
    assert from_shell is not None and from_shell.access_key == "A"
    assert local_credentials({"HOME": str(tmp_path)}) is None
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[dev]\naws_access_key_id = D\naws_secret_access_key = E\n")
    found = local_credentials({"HOME": str(tmp_path), "AWS_PROFILE": "dev"})
    assert found is not None and (found.access_key, found.secret_key) == ("D", "E")
    assert "E" not in found.source


# --------------------------------------------------------------------------- through the gateway


@pytest.fixture
def app(tmp_path: Path) -> Any:
    from local.sigv4 import LocalCredentials

    template = load_template(write_template(tmp_path, TEMPLATE), region=REGION)
    runtime = FunctionRuntime(template)
    runtime.load()
    verifier = SigV4Verifier(LocalCredentials(KEY, SECRET, None, "test"), REGION, template.account_id)
    return Emulator(template, runtime, ServerOptions(sigv4=verifier, schedules=False)).app()


def test_the_gateway_refuses_unsigned_requests_and_passes_the_identity_on(app: Any) -> None:
    with running(app) as client:
        refused = client.post("/echo/1", json={"a": 1})
        assert (refused.status_code, refused.json()) == (403, {"message": "Forbidden"})
        wrong = client.post("/echo/1", json={"a": 1}, auth=SigV4(KEY, "wrong", region=REGION))
        assert (wrong.status_code, wrong.json()["message"]) == (403, MISMATCH)
        answer = client.post("/echo/1?x=1", json={"a": 1}, auth=SigV4(KEY, SECRET, region=REGION))
        assert answer.status_code == 200, answer.text
        iam = answer.json()["event"]["requestContext"]["authorizer"]["iam"]
        assert iam["accessKey"] == KEY
        # A route whose event says `Authorizer: NONE` stays open; its event has no authorizer.
        open_route = client.get("/health")
        assert open_route.status_code == 200 and "authorizer" not in open_route.json()["event"]["requestContext"]
        # The emulator's own routes need a signature too; the docs do not.
        assert client.get("/_emulator/schedules").status_code == 403
        assert client.get("/_emulator/schedules", auth=SigV4(KEY, SECRET, region=REGION)).status_code == 200
        document = client.get("/openapi.json").json()
        assert document["paths"]["/echo/{id}"]["post"]["security"] == [{"sigv4": []}]
        assert "403" in document["paths"]["/echo/{id}"]["post"]["responses"]
        assert document["paths"]["/health"]["get"]["security"] == []
        assert document["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_the_api_key_mode_replaces_iam(tmp_path: Path) -> None:
    template = load_template(write_template(tmp_path, TEMPLATE), region=REGION)
    runtime = FunctionRuntime(template)
    runtime.load()
    app = Emulator(template, runtime, ServerOptions(api_key="quick", schedules=False)).app()
    with running(app) as client:
        assert client.post("/echo/1", json={}).status_code == 401
        assert client.post("/echo/1", json={}, headers={"x-api-key": "quick"}).status_code == 200


def test_the_real_template_uses_iam_on_every_route() -> None:
    template = load_template(ROOT / "template.yaml")
    assert {route.auth for route in template.routes()} == {"AWS_IAM"}


# --------------------------------------------------------------------------- a real process, curl


@pytest.mark.process
@pytest.mark.slow
def test_serve_takes_curl_and_botocore_signatures(tmp_path: Path, private_redis: Any) -> None:
    from tests.emulator.conftest import Emulator as EmulatorProcess
    from tests.emulator.conftest import child_env

    env = child_env(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION=REGION,
                    REDIS_URL=private_redis.url)
    env.pop("AWS_DEFAULT_REGION", None)
    emulator = EmulatorProcess(tmp_path, ["--data-dir", str(tmp_path / "data"), "--no-worker"], env).start()
    try:
        url = f"{emulator.url}/api/preview/queue/metrics"
        assert httpx.get(url).status_code == 403
        signed_answer = httpx.get(url, auth=SigV4(KEY, SECRET, region=REGION))
        assert signed_answer.status_code == 200, signed_answer.text
        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("curl is not installed: the botocore-signed request passed, the curl one is not tried")
        # The README's form: a signed POST of a job, then its status.
        body = json.loads((ROOT / "events/enqueue_job/success.json").read_text())["body"]
        sign = ["--aws-sigv4", f"aws:amz:{REGION}:execute-api", "--user", f"{KEY}:{SECRET}"]
        result = subprocess.run(
            [curl, "-sS", *sign, "-H", "content-type: application/json", "--data-binary", body,
             "-w", "\n%{http_code}", f"{emulator.url}/api/preview/job"],
            capture_output=True, text=True, timeout=30)
        answer, status = result.stdout.rsplit("\n", 1)
        assert status == "202", result.stdout + result.stderr
        job_id = json.loads(answer)["jobId"]
        result = subprocess.run([curl, "-sS", *sign, "-w", "\n%{http_code}",
                                 f"{emulator.url}/api/preview/job/{job_id}/status"],
                                capture_output=True, text=True, timeout=30)
        assert result.stdout.rsplit("\n", 1)[1] == "200", result.stdout + result.stderr
        bad = subprocess.run(
            [curl, "-sS", "--aws-sigv4", f"aws:amz:{REGION}:execute-api", "--user", f"{KEY}:wrong",
             "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, text=True, timeout=30)
        assert bad.stdout == "403"
    finally:
        emulator.stop()
