"""The `preview` command (also `python -m preview_client`).

    preview validate FILE...                      offline: the contract admission applies
    preview enqueue FILE... [--wait] [--download DIR]   several files: in batches, each as if alone
    preview status ID
    preview artifact ID [--download DIR]          files checked against the manifest's sha256
    preview jobs [--state failed]                 \\
    preview retry ID                               > operator routes (dead letters: docs/dead-letters.md)
    preview cancel ID                             /
    preview verify                                the post-deployment check, one line per step

The service is `--url` or PREVIEW_URL. Requests are signed with SigV4 with the caller's AWS
credentials (--profile / AWS_PROFILE, --region / AWS_REGION, or what botocore finds), unless
`--api-key` or PREVIEW_API_KEY gives a key (an emulator started with --api-key). Results go to
stdout (`--json` for scripts), progress and retries to stderr. Exit codes: see
preview_client.errors.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from preview_client import errors
from preview_client.client import MAX_BATCH, Admission, JobTimeout, PreviewClient, RetryNotice, RetryPolicy
from preview_client.errors import ClientError, ConfigurationError, Unreadable

STATES = ("waiting", "active", "delayed", "completed", "failed")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def parser() -> argparse.ArgumentParser:
    def connection(p: argparse.ArgumentParser, default: Any) -> None:
        # Given before or after the command: the command's copy only sets what it was given.
        def d(value: Any) -> Any:
            return argparse.SUPPRESS if default is argparse.SUPPRESS else value

        p.add_argument("--url", default=d(None), help="the service (default: $PREVIEW_URL)")
        p.add_argument("--api-key", default=d(None),
                       help="send this key (x-api-key) instead of signing (default: $PREVIEW_API_KEY)")
        p.add_argument("--profile", default=d(None), help="AWS profile to sign with (default: $AWS_PROFILE)")
        p.add_argument("--region", default=d(None),
                       help="region to sign for (default: the API's host name, $AWS_REGION or the profile's)")
        p.add_argument("--json", action="store_true", default=d(False), help="one JSON document on stdout")
        p.add_argument("--retries", type=int, default=d(None), metavar="N",
                       help="tries in all after a 503 or a dropped connection (default: 5; 1: no retry)")
        p.add_argument("--queue-full-wait", type=_positive, default=d(None), metavar="SECONDS",
                       help="how long in all to wait out 429 (queue full) answers, as their Retry-After says "
                            "(default: 120)")
        p.add_argument("--http-timeout", type=_positive, default=d(30.0), metavar="SECONDS",
                       help="timeout of one HTTP request (default: 30)")

    root = argparse.ArgumentParser(prog="preview", description="Use and check the preview job service.",
                                   epilog="exit codes: 0 ok, 1 failed, 2 invalid, 3 unreadable, 4 unreachable or "
                                          "unavailable, 5 credentials refused")
    connection(root, None)
    common = argparse.ArgumentParser(add_help=False)
    connection(common, argparse.SUPPRESS)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=text, description=text)

    validate = command("validate", "check job files offline against the contract admission applies")
    validate.add_argument("files", nargs="+", metavar="FILE", help="job documents (JSON); - reads stdin")
    validate.add_argument("--asset-buckets", default=None, metavar="A,B",
                          help="the service's allowed s3:// buckets (default: $PREVIEW_ASSET_BUCKETS; unset: "
                               "buckets are not checked)")
    validate.add_argument("--max-body-bytes", type=int, default=None, metavar="N",
                          help="the service's body limit (default: the service's default, 262144)")

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument("--timeout", type=_positive, default=600.0, metavar="SECONDS",
                       help="give up waiting after this long (default: 600)")
        p.add_argument("--interval", type=_positive, default=0.5, metavar="SECONDS",
                       help="status polling interval (default: 0.5)")

    enqueue = command("enqueue", "submit jobs (each retried with the same body on 503, after Retry-After on 429)")
    enqueue.add_argument("files", nargs="+", metavar="FILE",
                         help=f"job documents (JSON); several are sent in batches of up to {MAX_BATCH} (POST "
                              f"/api/preview/jobs), each answered as if sent alone; - reads stdin")
    enqueue.add_argument("--wait", action="store_true", help="follow the job until it completes or fails")
    enqueue.add_argument("--download", type=Path, metavar="DIR",
                         help="then download its files into DIR (with several files, DIR/JOB_ID), checked against "
                              "the manifest (implies --wait)")
    waiting(enqueue)

    status = command("status", "state, progress and attempts of a job")
    status.add_argument("job_id", metavar="ID")

    artifact = command("artifact", "links of a completed job's files")
    artifact.add_argument("job_id", metavar="ID")
    artifact.add_argument("--download", type=Path, metavar="DIR",
                          help="download the files into DIR, each checked against the manifest's sha256")

    jobs = command("jobs", "list the jobs in a state, a page at a time (operator route)")
    jobs.add_argument("--state", choices=STATES,
                      help="default: waiting (in pickup order); completed and failed come newest first")
    jobs.add_argument("--limit", type=int, help="jobs per page, 1-100 (default: 20)")
    jobs.add_argument("--cursor", help="the next page: the cursor the previous page printed")

    retry = command("retry", "put a failed job back in the queue (operator route)")
    retry.add_argument("job_id", metavar="ID")
    cancel = command("cancel", "cancel a waiting job (operator route)")
    cancel.add_argument("job_id", metavar="ID")

    verify = command("verify", "check a deployment: health, a dry run, a tiny render, an invalid payload")
    verify.add_argument("--timeout", type=_positive, default=120.0, metavar="SECONDS",
                        help="how long each job may take to complete (default: 120)")
    return root


# `preview enqueue` with several files: this many jobs followed (--wait, --download) at once.
SEND_AT_ONCE = 8


class Output:
    """stdout for results, stderr for progress, retries and errors."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json, self.out, self.err = as_json, out, err

    def line(self, text: str = "") -> None:
        if not self.as_json:
            print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def document(self, value: Any) -> None:
        if self.as_json:
            print(json.dumps(value, indent=2), file=self.out, flush=True)

    def retrying(self, notice: RetryNotice) -> None:
        self.note(f"preview: {notice.method} {notice.path}: {notice.reason}; retrying in {notice.wait:.1f} s "
                  f"(after try {notice.attempt})")


class Buffered(Output):
    """The output of one of several jobs, shown once it is done (in the order given)."""

    out: io.StringIO
    err: io.StringIO

    def __init__(self, as_json: bool) -> None:
        super().__init__(as_json, io.StringIO(), io.StringIO())
        self.result: dict[str, Any] = {}

    def document(self, value: Any) -> None:
        self.result = value


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    output = Output(args.json, out or sys.stdout, err or sys.stderr)
    try:
        if args.command == "validate":
            return validate(args, output)
        with connect(args, output) as client:
            return COMMANDS[args.command](client, args, output)
    except ClientError as exc:
        output.note(f"preview: error: {exc.message}")
        body = getattr(exc, "body", None)
        output.document({"error": {"type": type(exc).__name__, "message": exc.message,
                                   "status": getattr(exc, "status", None), "body": body}})
        for problem in getattr(exc, "errors", []):
            output.note(f"  {problem.get('path')}: {problem.get('message')}")
        return exc.exit_code
    except KeyboardInterrupt:
        output.note("preview: interrupted")
        return 130
    except BrokenPipeError:  # `preview ... | head`: the reader has gone, nothing more to say
        sys.stderr.close()
        return errors.OK


def connect(args: argparse.Namespace, output: Output) -> PreviewClient:
    url = args.url or os.environ.get("PREVIEW_URL")
    if not url:
        raise ConfigurationError("no service URL: pass --url or set PREVIEW_URL (make run serves "
                                 "http://127.0.0.1:3000)")
    return PreviewClient(url, api_key=args.api_key or os.environ.get("PREVIEW_API_KEY") or None,
                         profile=args.profile, region=args.region, timeout=args.http_timeout,
                         retry=retry_policy(args),
                         on_retry=output.retrying)


def retry_policy(args: argparse.Namespace) -> RetryPolicy:
    policy = RetryPolicy()
    if args.retries is not None:
        policy = replace(policy, attempts=max(1, args.retries))
    if args.queue_full_wait is not None:
        policy = replace(policy, busy_wait=args.queue_full_wait)
    return policy


# --------------------------------------------------------------------------- validate


def validate(args: argparse.Namespace, output: Output) -> int:
    from preview_client.offline import validate_file

    names = args.asset_buckets if args.asset_buckets is not None else os.environ.get("PREVIEW_ASSET_BUCKETS")
    buckets = None if names is None else tuple(b.strip() for b in names.split(",") if b.strip())
    reports = [validate_file(name, asset_buckets=buckets, max_body_bytes=args.max_body_bytes)
               for name in args.files]
    for report in reports:
        if report.outcome == "valid":
            output.line(f"{report.file}: valid")
        elif report.outcome == "unreadable":
            output.line(f"{report.file}: unreadable: {report.message}")
        else:
            output.line(f"{report.file}: invalid: {report.message}")
            for problem in report.errors:
                output.line(f"  {problem['path']}: {problem['message']}")
        for note in report.notes:
            output.line(f"  note: {note}")
    output.document([r.as_json() for r in reports])
    return max(r.exit_code for r in reports)


# --------------------------------------------------------------------------- the job commands


def read_job(name: str) -> bytes:
    from preview_client.offline import read_input

    try:
        return read_input(name)
    except OSError as exc:
        raise Unreadable(f"cannot read {name}: {exc.strerror or exc}") from None


def enqueue(client: PreviewClient, args: argparse.Namespace, output: Output) -> int:
    """One file: its admission (and status, files). Several: admitted together through the
    batch route (`PreviewClient.enqueue_many`: each answered as if sent alone), then each
    followed SEND_AT_ONCE at a time (--download: each job's files in DIR/<jobId>, since every
    preview has the same file names); their reports in the order given (with --json, a list of
    {"file", and the one-file document or "error"}); the exit status is the worst of theirs."""
    if len(args.files) == 1:
        return enqueue_one(client, args.files[0], args, output)
    if args.files.count("-") > 1:
        raise ConfigurationError("stdin (-) can be given once")
    read: list[bytes | ClientError] = []
    for name in args.files:
        try:
            read.append(read_job(name))
        except ClientError as exc:  # an unreadable file is its own report
            read.append(exc)
    bodies = [content for content in read if isinstance(content, bytes)]
    admitted = iter(client.enqueue_many(bodies) if bodies else [])
    answers = [content if isinstance(content, ClientError) else next(admitted) for content in read]

    def one(job: tuple[str, Admission | ClientError]) -> tuple[int, Buffered, Any]:
        name, answer = job
        own = Buffered(output.as_json)
        try:
            if isinstance(answer, ClientError):
                raise answer
            # Every preview has the same file names: each job's go into a folder of its own
            own_args = argparse.Namespace(**{**vars(args), "download": args.download / answer.job_id}) \
                if args.download else args
            code = report_admission(client, answer, own_args, own)
            return code, own, {"file": name, **own.result}
        except ClientError as exc:
            own.note(f"preview: {name}: error: {exc.message}")
            for problem in getattr(exc, "errors", []):
                own.note(f"  {problem.get('path')}: {problem.get('message')}")
            return exc.exit_code, own, {"file": name, "error": {
                "type": type(exc).__name__, "message": exc.message, "status": getattr(exc, "status", None),
                "body": getattr(exc, "body", None)}}

    with ThreadPoolExecutor(max_workers=min(SEND_AT_ONCE, len(args.files))) as pool:
        reports = list(pool.map(one, zip(args.files, answers, strict=True)))
    for _, own, _ in reports:
        for stream, into in ((own.err, output.err), (own.out, output.out)):
            text = stream.getvalue()
            if text:
                into.write(text)
                into.flush()
    output.document([document for _, _, document in reports])
    return max(code for code, _, _ in reports)


def enqueue_one(client: PreviewClient, name: str, args: argparse.Namespace, output: Output) -> int:
    return report_admission(client, client.enqueue(read_job(name)), args, output)


def report_admission(client: PreviewClient, admission: Admission, args: argparse.Namespace, output: Output) -> int:
    """A job's admission, and with --wait / --download its end and files."""
    describe_admission(admission, output)
    result: dict[str, Any] = {"admission": {"status": admission.status, **admission.body}}
    code = errors.OK
    if args.wait or args.download:
        status = follow(client, admission.job_id, args, output)
        result["status"] = status
        if status["state"] != "completed":
            code = errors.FAILED
        elif args.download:
            result["files"] = download(client, client.artifact(admission.job_id), args.download, output)
    output.document(result)
    return code


def describe_admission(admission: Admission, output: Output) -> None:
    body = admission.body
    if admission.created:
        output.line(f"admitted {admission.job_id} (202, {body.get('state')}): {body.get('statusUrl')}")
    else:
        output.line(f"already admitted {admission.job_id} (200, an identical replay): it is {body.get('state')}")


def follow(client: PreviewClient, job_id: str, args: argparse.Namespace, output: Output) -> dict[str, Any]:
    from preview_client.progress import Progress

    progress = None if output.as_json else Progress(output.err, job_id)
    started = time.monotonic()
    try:
        status = client.wait(job_id, timeout=args.timeout, interval=args.interval,
                             on_status=progress.update if progress else None)
    except JobTimeout:
        if progress:
            progress.finish()
        raise
    if progress:
        progress.finish()
    elapsed = time.monotonic() - started
    if status["state"] == "completed":
        output.line(f"completed {job_id} in {elapsed:.1f} s (attempt {status.get('attemptsMade')}/"
                    f"{status.get('attemptsMax')})")
    else:
        output.line(f"failed {job_id} after {status.get('attemptsMade')} attempt(s): "
                    f"{status.get('failedReason') or 'no reason given'}")
        output.note(f"preview: job {job_id} failed")
    return status


def download(client: PreviewClient, artifact: dict[str, Any], directory: Path, output: Output) -> list[dict[str, Any]]:
    files = client.download(artifact, directory)
    for item in files:
        output.line(f"downloaded {item.path} ({item.bytes} bytes, sha256 {item.sha256[:12]}… matches the manifest)")
    return [{"name": f.name, "path": str(f.path), "bytes": f.bytes, "sha256": f.sha256} for f in files]


def status(client: PreviewClient, args: argparse.Namespace, output: Output) -> int:
    body = client.status(args.job_id)
    output.line(f"{body.get('jobId')}  {body.get('state')}  {body.get('progress')}%  attempt "
                f"{body.get('attemptsMade')}/{body.get('attemptsMax')}  created {body.get('createdAt')}"
                + (f"  finished {body['finishedOn']}" if body.get("finishedOn") else ""))
    if body.get("failedReason"):
        output.line(f"  failed: {body['failedReason']}")
    for entry in body.get("history") or []:
        output.line(f"  earlier: failed after {entry.get('attemptsMade')} attempt(s) at {entry.get('finishedOn')}, "
                    f"retried at {entry.get('retriedOn')}: {entry.get('failedReason')}")
    output.document(body)
    return errors.OK


def artifact(client: PreviewClient, args: argparse.Namespace, output: Output) -> int:
    body = client.artifact(args.job_id)
    output.line(f"{body.get('jobId')}: {body.get('url')} (links expire {body.get('expiresAt')})")
    for item in body.get("files", []):
        output.line(f"  {item.get('name')}  {item.get('contentType')}  {item.get('bytes')} bytes  "
                    f"sha256 {str(item.get('sha256'))[:12]}…")
    result: dict[str, Any] = {"artifact": body}
    if args.download:
        result["files"] = download(client, body, args.download, output)
    output.document(result)
    return errors.OK


def jobs(client: PreviewClient, args: argparse.Namespace, output: Output) -> int:
    body = client.jobs(state=args.state, cursor=args.cursor, limit=args.limit)
    for job in body.get("jobs") or []:
        reason = f"  {job['failedReason']}" if job.get("failedReason") else ""
        output.line(f"{job.get('jobId')}  {job.get('state')}  {job.get('progress', 0)}%  "
                    f"attempt {job.get('attemptsMade')}/{job.get('attemptsMax')}{reason}")
    if body.get("nextCursor"):
        output.line(f"more: --cursor {body['nextCursor']}")
    output.document(body)
    return errors.OK


def retry(client: PreviewClient, args: argparse.Namespace, output: Output) -> int:
    body = client.retry_job(args.job_id)
    output.line(f"retried {args.job_id}: {body.get('state', 'queued again')} with fresh attempts "
                f"({len(body.get('history') or [])} earlier failure(s) in its history)")
    output.document(body)
    return errors.OK


def cancel(client: PreviewClient, args: argparse.Namespace, output: Output) -> int:
    body = client.cancel_job(args.job_id)
    output.line(f"cancelled {args.job_id}: {body.get('state', 'removed')} ({body.get('failedReason')})")
    output.document(body)
    return errors.OK


def verify(client: PreviewClient, args: argparse.Namespace, output: Output) -> int:
    from preview_client import verify as check

    output.line(f"verify {client.url} ({client.credentials.describe()})")
    results = check.run(client, timeout=args.timeout, report=lambda r: output.line(r.line()))
    failed = [r.name for r in results if not r.ok and not r.skipped]
    skipped = [r.name for r in results if r.skipped]
    if failed or skipped:
        output.line(f"verify: FAILED at {', '.join(failed)}" + (f" ({', '.join(skipped)} skipped)" if skipped else ""))
    else:
        output.line(f"verify: all {len(results)} steps passed")
    output.document({"url": client.url, "ok": not (failed or skipped), "steps": [r.as_json() for r in results]})
    return errors.FAILED if failed or skipped else errors.OK


COMMANDS = {"enqueue": enqueue, "status": status, "artifact": artifact, "jobs": jobs, "retry": retry,
            "cancel": cancel, "verify": verify}


if __name__ == "__main__":
    raise SystemExit(main())
