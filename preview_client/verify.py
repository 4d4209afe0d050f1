"""`preview verify`: the check after a deployment (or of a running emulator), one step at a time:

    health    the health route answers healthy (Redis reachable, a worker seen recently)
    dry-run   a dry-run job goes enqueue -> completed -> artifact, its files match the manifest
    render    a real render of a tiny video (64x64, 1 s) completes and its files match too
    invalid   a payload that breaks the contract is refused with 400 and JSON Pointer errors

A step that fails does not stop the others, except that no render is tried when the dry run
did not complete, and nothing more is tried once the service is unreachable or refuses the
credentials. Jobs get fresh ids (`verify-<time>-<random>`) in the project `preview-verify`.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preview_client.client import JobTimeout, PreviewClient
from preview_client.errors import ClientError, ConfigurationError, InvalidPayload, Refused, Unreachable

PROJECT = "preview-verify"
STEPS = ("health", "dry-run", "render", "invalid")


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    detail: str
    seconds: float
    skipped: bool = False

    @property
    def verdict(self) -> str:
        return "skip" if self.skipped else "ok" if self.ok else "FAIL"

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.name:<8} {self.detail} ({self.seconds:.2f} s)"

    def as_json(self) -> dict[str, Any]:
        return {"step": self.name, "ok": self.ok, "skipped": self.skipped, "detail": self.detail,
                "seconds": round(self.seconds, 3)}


class StepFailed(Exception):
    pass


def job_id(kind: str) -> str:
    return f"verify-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}-{kind}"


def dry_run_job(job: str) -> dict[str, Any]:
    return {"jobId": job, "projectId": PROJECT, "requestId": f"{job}-req", "dryRun": True,
            "previewRequest": {"title": "preview verify: dry run", "steps": [{"title": "one", "durationSec": 1}],
                               "assets": [], "audio": {}}}


def render_job(job: str) -> dict[str, Any]:
    return {"jobId": job, "projectId": PROJECT, "requestId": f"{job}-req", "dryRun": False, "attempts": 1,
            "previewRequest": {"title": "preview verify", "assets": [], "audio": {},
                               "steps": [{"title": "verify", "text": "a tiny render", "durationSec": 1}],
                               "options": {"resolution": "64x64", "fps": 5, "format": "mp4",
                                           "includeCaptions": True}}}


def invalid_job() -> dict[str, Any]:
    # Three problems the schema names by JSON Pointer: /jobId, /dryRun, /previewRequest/steps.
    return {"jobId": "not a valid id", "projectId": PROJECT, "requestId": "verify-invalid", "dryRun": "yes",
            "previewRequest": {"steps": "none", "assets": [], "audio": {}}}


def run(client: PreviewClient, *, timeout: float = 120.0, report: Callable[[StepResult], None] | None = None,
        interval: float = 0.5) -> list[StepResult]:
    results: list[StepResult] = []
    stopped: str | None = None

    def step(name: str, check: Callable[[], str], skip: str | None = None) -> StepResult:
        nonlocal stopped
        started = time.monotonic()
        if stopped or skip:
            result = StepResult(name, False, f"skipped: {stopped or skip}", 0.0, skipped=True)
        else:
            try:
                result = StepResult(name, True, check(), time.monotonic() - started)
            except (Unreachable, Refused, ConfigurationError) as exc:
                stopped = ("the service is unreachable" if isinstance(exc, Unreachable) else
                           "the service refused the credentials" if isinstance(exc, Refused) else
                           "no credentials to sign with")
                result = StepResult(name, False, exc.message, time.monotonic() - started)
            except (StepFailed, ClientError) as exc:
                result = StepResult(name, False, str(exc), time.monotonic() - started)
        results.append(result)
        if report:
            report(result)
        return result

    def health() -> str:
        healthy, body = client.health()
        redis = (body.get("redis") or {}).get("status", "?")
        workers = (body.get("workers") or {}).get("recent")
        seen = f", {workers} worker(s) seen" if workers is not None else ""
        if not healthy:
            raise StepFailed(f"unhealthy: {'; '.join(body.get('problems') or ['no reason given'])} "
                             f"(redis {redis}{seen})")
        return f"healthy (redis {redis}{seen})"

    def complete(payload: dict[str, Any]) -> tuple[dict[str, Any], list[Any], float]:
        started = time.monotonic()
        admission = client.enqueue(payload)
        if admission.job_id != payload["jobId"]:
            raise StepFailed(f"enqueue answered job {admission.job_id!r} for {payload['jobId']!r}")
        try:
            status = client.wait(admission.job_id, timeout=timeout, interval=interval)
        except JobTimeout as exc:
            raise StepFailed(f"{exc.message} (is a worker running?)") from None
        if status["state"] != "completed":
            raise StepFailed(f"job {admission.job_id} failed: {status.get('failedReason') or 'no reason given'}")
        elapsed = time.monotonic() - started
        artifact = client.artifact(admission.job_id)
        with tempfile.TemporaryDirectory(prefix="preview-verify-") as folder:
            files = client.download(artifact, Path(folder))
        return artifact, files, elapsed

    def dry_run() -> str:
        _, files, elapsed = complete(dry_run_job(job_id("dry")))
        return f"completed in {elapsed:.1f} s, {len(files)} file(s) match the manifest"

    def render() -> str:
        artifact, files, elapsed = complete(render_job(job_id("render")))
        video = next((f for f in artifact.get("files", []) if str(f.get("contentType", "")).startswith("video/")),
                     None)
        if video is None or not video.get("bytes"):
            raise StepFailed(f"completed but no video among {[f.get('name') for f in artifact.get('files', [])]}")
        return (f"rendered {video['name']} ({video['bytes']} bytes) in {elapsed:.1f} s, "
                f"{len(files)} file(s) match the manifest")

    def invalid() -> str:
        try:
            admission = client.enqueue(invalid_job())
        except InvalidPayload as exc:
            if exc.status != 400:
                raise StepFailed(f"answered {exc.status}, not 400") from None
            paths = [e.get("path", "") for e in exc.errors]
            if not paths or not all(p.startswith("/") for p in paths):
                raise StepFailed(f"400 without JSON Pointer errors: {exc.body}") from None
            return f"refused with 400, {len(paths)} error(s) at {', '.join(paths)}"
        raise StepFailed(f"an invalid payload was admitted ({admission.status})")

    step("health", health)
    dry = step("dry-run", dry_run)
    step("render", render, None if dry.ok else "the dry run did not complete")
    step("invalid", invalid)
    return results
