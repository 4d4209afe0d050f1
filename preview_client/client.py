"""A Python client of the preview job service's HTTP API.

    client = PreviewClient("http://127.0.0.1:3000", api_key="dev")
    admitted = client.enqueue(Path("job.json").read_bytes())
    status = client.wait(admitted.job_id)
    files = client.download(client.artifact(admitted.job_id), Path("out"))

Requests are signed with SigV4 (service execute-api) with the caller's AWS credentials, as the
deployed API's IAM authorization wants, unless an API key is given (the emulator's
`--api-key` mode). Retries follow the service's contract: enqueue is idempotent (the same body
again answers 200 with the job when it was admitted after all), so a 503 or a dropped
connection is retried with the same body, with backoff and a bounded number of attempts; a
429 (queue full) is retried after its `Retry-After`, within a bounded total wait.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

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

# The service's routes (template.yaml; tests hold these to shared.api's).
JOB_ROUTE = "/api/preview/job"
QUEUE_METRICS_ROUTE = "/api/preview/queue/metrics"
WORKER_HEALTH_ROUTE = "/api/preview/worker/health"
# The collection: GET lists jobs (operators), POST admits a batch; a job's detail, retry and
# cancel are under JOB_ROUTE.
JOBS_ROUTE = "/api/preview/jobs"
# A batch holds at most this many jobs (the service's MAX_BATCH), and its body is kept within
# the service's default body limit (PREVIEW_MAX_BODY_BYTES); a service with a lower limit
# answers 413 and the batch is split.
MAX_BATCH = 100
BATCH_BYTES = 262_144
# Jobs sent one request each (a service without the batch route, a body that cannot go into
# a batch as it is): this many requests in flight at once.
SINGLES_AT_ONCE = 8

TERMINAL_STATES = ("completed", "failed")
SERVICE = "execute-api"
DEFAULT_REGION = "us-east-1"  # the emulator's, when nothing else names one
_API_GATEWAY_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a request is tried. 503s and dropped connections: `attempts` tries in all,
    waiting `backoff` seconds doubled each time (at most `max_backoff`, ±20 % jitter) or the
    answer's `Retry-After`. 429s: each `Retry-After` is waited for as long as the waits add up
    to at most `busy_wait` seconds; a single one over `max_retry_after` is not waited for."""

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 4.0
    busy_wait: float = 120.0
    max_retry_after: float = 60.0


@dataclass(frozen=True)
class RetryNotice:
    """Told to `on_retry` before each wait."""

    method: str
    path: str
    reason: str  # "503 store_unavailable", "connection refused", "429 queue full"
    wait: float
    attempt: int  # the try that just failed (1-based)


@dataclass(frozen=True)
class Admission:
    """What enqueue answered: 202 admitted now, 200 already admitted (an identical replay)."""

    status: int
    body: dict[str, Any]

    @property
    def job_id(self) -> str:
        return str(self.body["jobId"])

    @property
    def created(self) -> bool:
        return self.status == 202


@dataclass(frozen=True)
class DownloadedFile:
    name: str
    path: Path
    bytes: int
    sha256: str


@dataclass
class Credentials:
    """Where the requests' authorization comes from (for messages; never the secret)."""

    api_key: str | None = None
    profile: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        if self.api_key:
            return "with an API key"
        key = f"access key {self.access_key[:4]}…" if self.access_key else "AWS credentials"
        profile = f" of profile {self.profile}" if self.profile else ""
        return f"signed (SigV4, {SERVICE}, region {self.region}) with {key}{profile}"


class _ApiKey(httpx.Auth):
    def __init__(self, key: str) -> None:
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["x-api-key"] = self.key
        yield request


class _SigV4(httpx.Auth):
    """botocore's SigV4 over host and content-type, with the caller's credentials (environment,
    profile, SSO, role: whatever botocore finds), refreshed as they expire."""

    requires_request_body = True

    def __init__(self, who: Credentials) -> None:
        self.who = who
        self._provider: Any = None

    def _credentials(self) -> Any:
        if self._provider is None:
            import botocore.exceptions
            import botocore.session

            try:
                session = botocore.session.Session(profile=self.who.profile)
                provider = session.get_credentials()
            except botocore.exceptions.ProfileNotFound as exc:
                raise ConfigurationError(f"{exc} (check --profile or AWS_PROFILE)") from None
            except botocore.exceptions.BotoCoreError as exc:
                raise ConfigurationError(f"cannot load AWS credentials: {exc}") from None
            if provider is None:
                raise ConfigurationError(
                    "no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
                    "~/.aws): configure them, or pass --api-key for an emulator started with --api-key")
            self._provider = provider
        try:
            frozen = self._provider.get_frozen_credentials()
        except Exception as exc:  # an expired SSO token, a role that cannot be assumed
            raise ConfigurationError(f"cannot load AWS credentials: {exc}") from None
        self.who.access_key = frozen.access_key
        return frozen

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        signed = {"host": request.headers["host"]}
        if "content-type" in request.headers:
            signed["content-type"] = request.headers["content-type"]
        aws = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=signed)
        SigV4Auth(self._credentials(), SERVICE, self.who.region).add_auth(aws)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws.headers:
                request.headers[name] = aws.headers[name]
        yield request


def resolve_region(url: str, region: str | None, profile: str | None,
                   env: Mapping[str, str] | None = None) -> str:
    """--region, else the region in an execute-api host name, else AWS_REGION /
    AWS_DEFAULT_REGION, else the profile's, else us-east-1 (the emulator's default)."""
    if region:
        return region
    match = _API_GATEWAY_HOST.search(urlsplit(url).hostname or "")
    if match:
        return match.group(1)
    env = os.environ if env is None else env
    named = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if named:
        return named
    try:
        import botocore.session

        configured = botocore.session.Session(profile=profile).get_config_variable("region")
    except Exception:  # an unknown profile is reported when signing
        configured = None
    return str(configured) if configured else DEFAULT_REGION


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"the service URL must be http:// or https://, got {url!r}")
    return url.rstrip("/")


class PreviewClient:
    def __init__(self, url: str, *, api_key: str | None = None, profile: str | None = None,
                 region: str | None = None, timeout: float = 30.0, retry: RetryPolicy | None = None,
                 on_retry: Callable[[RetryNotice], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = check_url(url)
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self.sleep = sleep
        if api_key:
            self.credentials = Credentials(api_key=api_key)
            auth: httpx.Auth = _ApiKey(api_key)
        else:
            self.credentials = Credentials(profile=profile, region=resolve_region(self.url, region, profile))
            auth = _SigV4(self.credentials)
        headers = {"user-agent": "preview-client/0.1", "accept": "application/json"}
        self._http = httpx.Client(base_url=self.url, auth=auth, timeout=timeout, headers=headers)
        # Artifact links are signed URLs in themselves (local links, S3 presigned URLs): they
        # get no credentials of ours, which S3 would refuse and should never see.
        self._links = httpx.Client(timeout=timeout, headers={"user-agent": headers["user-agent"]})

    def close(self) -> None:
        self._http.close()
        self._links.close()

    def __enter__(self) -> PreviewClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the routes

    def enqueue(self, body: bytes | str | Mapping[str, Any]) -> Admission:
        """Submit a job. The same bytes are sent on every retry, so a job that a 503 or a lost
        answer hid is recognised by the service (200) rather than admitted twice."""
        response = self._request("POST", JOB_ROUTE, content=_content(body), idempotent=True,
                                 headers={"content-type": "application/json"})
        data = self._answer(response, "POST", JOB_ROUTE)
        return Admission(response.status_code, data)

    def enqueue_many(self, bodies: Sequence[bytes | str | Mapping[str, Any]]) -> list[Admission | ClientError]:
        """Submit several jobs through the batch route (POST /api/preview/jobs), MAX_BATCH at a
        time: one result per body, in order, each what `enqueue` of that body alone gives (an
        `Admission`, or the error it would raise, returned in its place). A batch is retried
        whole with the same bytes after a 503 or a lost answer (what it had admitted answers
        200); jobs answered 429 are sent again, alone in a smaller batch, after their
        `retryAfter`, within the one `busy_wait` budget of the call. A body that cannot be
        spliced into a batch as it is (not UTF-8 JSON), a batch the service refuses whole (400,
        or 413 for one job) and a service without the route fall back to `enqueue`."""
        contents = [_content(body) for body in bodies]
        results: list[Admission | ClientError | None] = [None] * len(contents)
        batchable = [i for i, content in enumerate(contents)
                     if len(content) <= BATCH_BYTES - len(b'{"jobs":[]}') and _spliceable(content)]
        chosen = set(batchable)
        alone = [i for i in range(len(contents)) if i not in chosen]
        budget = _Budget(self.retry.busy_wait)
        for chunk in _chunks([(i, contents[i]) for i in batchable]):
            missing = self._batch(chunk, results, budget)
            if missing:  # the service has no batch route: the rest one by one
                alone += [i for i, _ in missing] + [i for i in batchable if i > missing[-1][0]]
                break
        for i, result in zip(alone, self._singles([contents[i] for i in alone]), strict=True):
            results[i] = result
        return [result for result in results if result is not None]

    def _batch(self, chunk: list[tuple[int, bytes]], results: list[Admission | ClientError | None],
               budget: _Budget) -> list[tuple[int, bytes]]:
        """Send one batch, answering each job in `results`; the jobs left to send alone when
        the service has no batch route (then nothing else of it was answered)."""
        pending, attempt = chunk, 0
        while pending:
            attempt += 1
            content = b'{"jobs":[' + b",".join(item for _, item in pending) + b"]}"
            try:
                response = self._request("POST", JOBS_ROUTE, content=content, idempotent=True,
                                         headers={"content-type": "application/json"})
            except ClientError as exc:  # unreachable: each job gets the error its own request would
                for i, _ in pending:
                    results[i] = exc
                return []
            code, body = response.status_code, _json(response)
            if code in (404, 405) and body.get("error") in (None, "not_found"):
                return pending
            if code == 413 and len(pending) > 1:  # the service's body limit is below ours: halves
                half = len(pending) // 2
                for part in (pending[:half], pending[half:]):
                    left = self._batch(part, results, budget)
                    if left:
                        return left + [item for item in pending if item[0] > left[-1][0]]
                return []
            if code in (400, 413):  # refused whole, nothing admitted: each alone gets its own answer
                for (i, _), result in zip(pending, self._singles([c for _, c in pending]), strict=True):
                    results[i] = result
                return []
            items = body.get("results")
            if code != 200 or not isinstance(items, list) or len(items) != len(pending):
                try:
                    self._answer(response, "POST", JOBS_ROUTE, "admitting a batch")
                    error: ClientError = ApiError(f"POST {JOBS_ROUTE}: {code} answer without one result per job",
                                                  code, body)
                except ClientError as exc:
                    error = exc
                for i, _ in pending:
                    results[i] = error
                return []
            full: list[tuple[int, bytes, float, dict[str, Any]]] = []
            for (i, item), answer in zip(pending, items, strict=True):
                status = answer.get("status") if isinstance(answer, dict) else None
                data = answer.get("body") if isinstance(answer, dict) else None
                data = data if isinstance(data, dict) else {}
                if status in (200, 202):
                    results[i] = Admission(int(status), data)
                elif status == 429 and _seconds(data.get("retryAfter")) <= self.retry.max_retry_after:
                    full.append((i, item, _seconds(data.get("retryAfter")), data))
                else:
                    results[i] = self._job_error(int(status) if isinstance(status, int) else 502, data)
            wait = max((after for _, _, after, _ in full), default=0.0)
            if full and not budget.take(wait):
                for i, _, _, data in full:
                    results[i] = self._job_error(429, data)
                return []
            if full:
                text = str(full[0][3].get("message") or "queue full")
                self._pause(RetryNotice("POST", JOBS_ROUTE, f"429 {text} ({len(full)} of the batch)", wait, attempt))
            pending = [(i, item) for i, item, _, _ in full]
        return []

    def _singles(self, contents: list[bytes]) -> list[Admission | ClientError]:
        """`enqueue` of each body, SINGLES_AT_ONCE at a time; an error in the place of its body."""
        def one(content: bytes) -> Admission | ClientError:
            try:
                return self.enqueue(content)
            except ClientError as exc:
                return exc

        if len(contents) <= 1:
            return [one(content) for content in contents]
        with ThreadPoolExecutor(max_workers=min(SINGLES_AT_ONCE, len(contents))) as pool:
            return list(pool.map(one, contents))

    def _job_error(self, code: int, body: dict[str, Any]) -> ClientError:
        """The error `enqueue` raises for an answer of `code` and `body` to one job."""
        text = str(body.get("message") or body.get("error") or _phrase(code))
        after = body.get("retryAfter", "?") if code == 429 else None
        try:
            self._raise_for(code, body, text, "POST", JOB_ROUTE, "", str(after))
        except ClientError as exc:
            return exc
        return ApiError(f"POST {JOB_ROUTE}: {code} {text}", code, body)  # (not reached)

    def status(self, job_id: str) -> dict[str, Any]:
        path = f"{JOB_ROUTE}/{_segment(job_id)}/status"
        return self._answer(self._request("GET", path), "GET", path)

    def artifact(self, job_id: str) -> dict[str, Any]:
        path = f"{JOB_ROUTE}/{_segment(job_id)}/artifact"
        return self._answer(self._request("GET", path), "GET", path)

    def queue_metrics(self) -> dict[str, Any]:
        return self._answer(self._request("GET", QUEUE_METRICS_ROUTE), "GET", QUEUE_METRICS_ROUTE)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the report): 503 is the service's answer for unhealthy, not an error."""
        response = self._request("GET", WORKER_HEALTH_ROUTE, retry_unavailable=False)
        body = _json(response)
        if response.status_code == 503 and "status" in body:
            return False, body
        return True, self._answer(response, "GET", WORKER_HEALTH_ROUTE)

    def jobs(self, state: str | None = None, cursor: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """One page of the jobs in a state (GET /api/preview/jobs?state=&cursor=&limit=): `jobs`,
        `nextCursor` for the next page (None on the last) and `counts`."""
        params = {k: str(v) for k, v in (("state", state), ("cursor", cursor), ("limit", limit)) if v is not None}
        response = self._request("GET", JOBS_ROUTE, params=params)
        return self._answer(response, "GET", JOBS_ROUTE, "listing jobs")

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's detail for operators (GET /api/preview/job/{id}): status, history, stack trace."""
        path = f"{JOB_ROUTE}/{_segment(job_id)}"
        return self._answer(self._request("GET", path), "GET", path, "reading a job's detail")

    def retry_job(self, job_id: str) -> dict[str, Any]:
        """Put a failed job back in the queue with fresh attempts (POST /api/preview/job/{id}/retry)."""
        path = f"{JOB_ROUTE}/{_segment(job_id)}/retry"
        return self._answer(self._request("POST", path), "POST", path, "retrying a job")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a waiting or delayed job (POST /api/preview/job/{id}/cancel)."""
        path = f"{JOB_ROUTE}/{_segment(job_id)}/cancel"
        return self._answer(self._request("POST", path), "POST", path, "cancelling a job")

    # ------------------------------------------------------------------ waiting and files

    def wait(self, job_id: str, *, timeout: float | None = None, interval: float = 0.5,
             on_status: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll the job's status until it is completed or failed (the last status), or raise
        `JobTimeout` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if on_status:
                on_status(status)
            if status.get("state") in TERMINAL_STATES:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {job_id} is still {status.get('state')} ({status.get('progress', 0)}%) "
                                 f"after {timeout:g} s", status)
            self.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))

    def download(self, artifact: Mapping[str, Any], directory: Path) -> list[DownloadedFile]:
        """Every file of a completed job's preview into `directory`, each checked against the
        manifest (its bytes and sha256); the manifest is saved beside them. A file that does not
        match is removed and `IntegrityError` names every such file."""
        from shared.contract import is_id

        manifest_name = Path(urlsplit(str(artifact.get("manifestUrl", ""))).path).name
        if not is_id(manifest_name):
            raise IntegrityError(f"the artifact answer gives no usable manifest link: {artifact.get('manifestUrl')!r}")
        raw = self._fetch(str(artifact["manifestUrl"]), manifest_name)
        try:
            manifest = json.loads(raw)
            entries = {str(f["name"]): f for f in manifest["files"]}
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{manifest_name} is not a preview manifest") from None
        listed = {str(f.get("name")): f for f in artifact.get("files", [])}
        problems = []
        for name, entry in entries.items():
            if not is_id(name):
                problems.append(f"the manifest names a file {name!r} that is not a plain file name")
            elif name not in listed or not listed[name].get("url"):
                problems.append(f"{name}: in the manifest but the artifact answer has no link for it")
            elif listed[name].get("sha256") != entry.get("sha256"):
                problems.append(f"{name}: the artifact answer says sha256 {listed[name].get('sha256')}, "
                                f"the manifest {entry.get('sha256')}")
        problems += [f"{name}: listed but not in the manifest" for name in listed if name not in entries]
        if problems:
            raise IntegrityError("; ".join(problems))
        directory.mkdir(parents=True, exist_ok=True)
        done = []
        for name, entry in sorted(entries.items()):
            got = self._save(str(listed[name]["url"]), directory, name)
            if got.sha256 != entry["sha256"] or got.bytes != entry["bytes"]:
                got.path.unlink()
                problems.append(f"{name}: got {got.bytes} bytes with sha256 {got.sha256}, the manifest says "
                                f"{entry['bytes']} bytes with sha256 {entry['sha256']}")
            else:
                done.append(got)
        if problems:
            raise IntegrityError("downloaded files do not match the manifest: " + "; ".join(problems))
        (directory / manifest_name).write_bytes(raw)
        return done

    def _fetch(self, url: str, name: str) -> bytes:
        try:
            response = self._links.get(url)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot fetch {name}: {_describe(exc)}") from None
        if response.status_code != 200:
            raise ApiError(f"the link of {name} answered {response.status_code}: {_message(response)}",
                           response.status_code, _json(response))
        return response.content

    def _save(self, url: str, directory: Path, name: str) -> DownloadedFile:
        digest, size = hashlib.sha256(), 0
        partial = directory / f".{name}.part"
        try:
            with self._links.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    raise ApiError(f"the link of {name} answered {response.status_code}: {_message(response)}",
                                   response.status_code, _json(response))
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 16):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise Unreachable(f"cannot fetch {name}: {_describe(exc)}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        path = directory / name
        partial.replace(path)
        return DownloadedFile(name, path, size, digest.hexdigest())

    # ------------------------------------------------------------------ one request

    def _request(self, method: str, path: str, *, content: bytes | None = None,
                 params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                 idempotent: bool | None = None, retry_unavailable: bool = True) -> httpx.Response:
        """Send one request, again after a dropped connection or a 503 when it is safe to
        (GETs and enqueue; an unsent request always), again after a 429's Retry-After."""
        policy = self.retry
        safe = method == "GET" if idempotent is None else idempotent
        attempt, busy_waited = 0, 0.0
        unavailable: httpx.Response | None = None  # the last 503, answered when the tries run out
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = self._http.request(method, path, content=content, params=params, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached the service
                unavailable, failure = None, _describe(exc)
            except httpx.TransportError as exc:  # sent, perhaps acted on, answer lost
                if not safe:
                    raise Unreachable(f"{method} {self.url}{path}: {_describe(exc)} (not retried: the request "
                                      "may have been acted on)") from None
                unavailable, failure = None, _describe(exc)
            else:
                code = response.status_code
                if code == 429:
                    wait = _retry_after(response)
                    wait = policy.backoff if wait is None else wait
                    if wait <= policy.max_retry_after and busy_waited + wait <= policy.busy_wait:
                        busy_waited += wait
                        self._pause(RetryNotice(method, path, f"429 {_message(response)}", wait, attempt))
                        continue
                    return response
                if code != 503 or not (safe and retry_unavailable):
                    return response
                unavailable, failure, retry_after = response, f"503 {_message(response)}", _retry_after(response)
            if attempt >= policy.attempts:
                if unavailable is not None:
                    return unavailable
                raise Unreachable(f"cannot reach the service at {self.url} ({failure}; {attempt} tries)")
            backoff = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            wait = min(retry_after, policy.max_backoff) if retry_after is not None else backoff
            self._pause(RetryNotice(method, path, failure, wait, attempt))

    def _pause(self, notice: RetryNotice) -> None:
        if self.on_retry:
            self.on_retry(notice)
        self.sleep(notice.wait)

    def _answer(self, response: httpx.Response, method: str, path: str, purpose: str = "") -> dict[str, Any]:
        """The JSON body of a 2xx answer, else the error it stands for."""
        code, body = response.status_code, _json(response)
        if 200 <= code < 300:
            return body
        self._raise_for(code, body, _message(response), method, path, purpose, response.headers.get("retry-after", "?"))
        raise AssertionError("not reached")

    def _raise_for(self, code: int, body: dict[str, Any], text: str, method: str, path: str, purpose: str,
                   after: str) -> None:
        """Raise the error an answer of `code` stands for (`after`: its Retry-After)."""
        where = f"{method} {path}"
        if code in (400, 413):
            raise InvalidPayload(f"{where}: {code} {text}", code, body)
        if code == 401:
            hint = ("the API key was refused" if self.credentials.api_key else
                    "the service wants an API key: pass --api-key or set PREVIEW_API_KEY")
            raise Refused(f"{where}: 401 {text}: {hint}", code, body)
        if code == 403:
            raise Refused(f"{where}: 403 {text} (request {self.credentials.describe()}; the caller needs "
                          f"execute-api:Invoke on the API, and the emulator its own local credentials)", code, body)
        if code == 404:
            if body.get("error") in (None, "not_found"):  # the gateway's, or no handler matched
                doing = f" ({purpose} needs a service version that has this route)" if purpose else ""
                raise RouteMissing(f"{where}: the service has no such route{doing}", code, body)
            raise NotFound(f"{where}: 404 {text}", code, body)
        if code == 429:
            raise Unavailable(f"{where}: 429 {text} (still full after the retries; it asks to retry after "
                              f"{after} s)", code, body)
        if code == 503:
            raise Unavailable(f"{where}: 503 {text} (still so after {self.retry.attempts} tries)", code, body)
        raise ApiError(f"{where}: {code} {text}", code, body)


class JobTimeout(ClientError):
    def __init__(self, message: str, status: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status


class _Budget:
    """The seconds one call may still spend waiting out 429s."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    def take(self, seconds: float) -> bool:
        if seconds > self.left:
            return False
        self.left -= seconds
        return True


def _content(body: bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(body, Mapping):
        return json.dumps(body).encode()
    return body.encode() if isinstance(body, str) else body


def _spliceable(content: bytes) -> bool:
    """Whether the bytes can stand as they are for one job of a batch body: one JSON value in
    UTF-8 without a byte order mark (what the service reads alone may be other encodings too)."""
    try:
        text = content.decode("utf-8")
        if text.startswith("\ufeff"):
            return False
        json.loads(text, parse_constant=_refuse)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _chunks(items: list[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
    """Batches of at most MAX_BATCH jobs and BATCH_BYTES of body (a job over it goes alone)."""
    chunk: list[tuple[int, bytes]] = []
    size = len(b'{"jobs":[]}')
    for item in items:
        if chunk and (len(chunk) == MAX_BATCH or size + len(item[1]) + 1 > BATCH_BYTES):
            yield chunk
            chunk, size = [], len(b'{"jobs":[]}')
        chunk.append(item)
        size += len(item[1]) + 1
    if chunk:
        yield chunk


def _seconds(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 1.0


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return str(code)


def _segment(job_id: str) -> str:
    if not job_id:
        raise ConfigurationError("a job id is needed")
    return quote(job_id, safe="")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {"value": data}


def _message(response: httpx.Response) -> str:
    body = _json(response)
    text = body.get("message") or body.get("error") or response.reason_phrase or response.text[:200]
    return str(text)


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the service sends whole seconds; an HTTP date is read too)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return text
