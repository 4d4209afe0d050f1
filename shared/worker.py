"""The render worker: claim a job, keep its lease alive while rendering, publish the
artifacts, then complete or fail it. Runs inside a Lambda invocation (bounded by the time
left) or as a long-running process with several jobs at a time."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from shared.errors import InvalidPayload, LeaseLost, PermanentRenderError, RenderError, StoreUnavailable
from shared.observability import logger, record_failure, record_job, record_queue_counts, record_worker_heartbeat
from shared.payload import DEFAULT_STEP_SECONDS, semantic_errors
from shared.queue import ClaimedJob, JobQueue
from shared.settings import Settings

RenderFn = Callable[[dict[str, Any], Path, Settings, Callable[[int], None] | None], Any]


class Store(Protocol):
    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]: ...


class Stopping(Exception):
    """The worker is shutting down and gives the job back instead of finishing it."""


def video_seconds(payload: dict[str, Any]) -> float:
    steps = payload.get("previewRequest", {}).get("steps") or []
    return sum(float(s.get("durationSec", DEFAULT_STEP_SECONDS)) for s in steps) or DEFAULT_STEP_SECONDS


class Worker:
    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        store: Store,
        render: RenderFn | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.store = store
        self._render = render
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stop_event = threading.Event()
        # After a stop request, jobs still running get this long before they are handed back.
        self.abort_event = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._leases = _LeaseRenewer(queue, settings.lease_ms / 3000)
        self._scratch_dir: Path | None = None
        self._thread_scratch = threading.local()

    @property
    def render(self) -> RenderFn:
        if self._render is None:
            from shared.render import render_preview

            self._render = render_preview
        return self._render

    # -- one job -----------------------------------------------------------------------

    def process(self, job: ClaimedJob) -> str:
        """Run one claimed job to an outcome: completed, dryrun, retried, failed, invalid,
        lost (another worker owns it now) or released (handed back at shutdown)."""
        started = time.monotonic()
        log = {"jobId": job.id, "projectId": job.project_id, "attempt": job.attempts_made + 1}
        logger.debug("job started", extra=log)
        lease = self._leases.add(job, self.abort_event)
        try:
            with self._workdir(job) as workdir:
                outcome = self._run(job, workdir, lease)
        finally:
            # Whatever happened, this worker stops renewing: a job it could not finish must
            # become recoverable when its lease runs out.
            lease.stop()
        seconds = time.monotonic() - started
        if outcome not in ("lost", "released"):
            record_job(outcome, seconds)
        with self._lock:
            self.outcomes[outcome] += 1
        logger.info("job finished", extra={**log, "outcome": outcome, "seconds": round(seconds, 3)})
        return outcome

    def _scratch(self) -> Path:
        if self._scratch_dir is None:
            path = self.settings.data_dir / "tmp"
            path.mkdir(parents=True, exist_ok=True)
            self._scratch_dir = path
        return self._scratch_dir

    @contextlib.contextmanager
    def _workdir(self, job: ClaimedJob) -> Iterator[Path]:
        """An empty folder for one render: the job loop's own, emptied after each job (a
        fresh folder per job costs more than a no-op job), or a temporary one."""
        reusable: Path | None = getattr(self._thread_scratch, "path", None)
        if reusable is None:
            path = Path(tempfile.mkdtemp(prefix=f"render-{job.id}-", dir=self._scratch()))
            try:
                yield path
            finally:
                shutil.rmtree(path, ignore_errors=True)
            return
        try:
            yield reusable
        finally:
            _empty(reusable)

    @contextlib.contextmanager
    def _loop_scratch(self) -> Iterator[None]:
        """Give the calling job loop a scratch folder of its own for its lifetime."""
        name = f"{self.worker_id}-{threading.get_ident()}".replace(":", "_")
        path = self._scratch() / name
        path.mkdir(exist_ok=True)
        _empty(path)
        self._thread_scratch.path = path
        try:
            yield
        finally:
            self._thread_scratch.path = None
            shutil.rmtree(path, ignore_errors=True)

    def sweep_scratch(self) -> None:
        """Remove scratch folders left by dead worker processes of this host (killed mid-render)."""
        host = socket.gethostname()
        for entry in self._scratch().iterdir():
            parts = entry.name.split("_")
            if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(entry, ignore_errors=True)
            except PermissionError:
                pass  # alive, owned by someone else

    def _run(self, job: ClaimedJob, workdir: Path, lease: _Lease) -> str:
        try:
            payload = job.payload
            # The schema was enforced at admission; what can change since is this service's
            # configuration (allowed buckets, limits), so only those rules are checked again.
            problems = semantic_errors(payload, self.settings)
            if problems:
                raise InvalidPayload("the job payload is no longer acceptable", problems)
            self.render(payload, workdir, self.settings, lease.progress)
            lease.check()
            self.store.publish(job.project_id, job.id, workdir)
            lease.stop()
            self.queue.complete(job, {"dryRun": bool(payload.get("dryRun"))})
            return "dryrun" if payload.get("dryRun") else "completed"
        except LeaseLost:
            logger.warning("lease lost; another worker owns the job now", extra={"jobId": job.id})
            return "lost"
        except Stopping:
            lease.stop()
            return "released" if self.queue.release(job) else "lost"
        except (InvalidPayload, PermanentRenderError) as exc:
            reason = _reason(exc)
            return self._fail(job, lease, reason, "", retryable=False, outcome="invalid")
        except StoreUnavailable:
            raise
        except Exception as exc:
            retryable = exc.retryable if isinstance(exc, RenderError) else True
            if not isinstance(exc, RenderError):
                record_failure("render")
                logger.exception("render failed unexpectedly", extra={"jobId": job.id})
            return self._fail(job, lease, _reason(exc), traceback.format_exc(), retryable=retryable, outcome="")

    def _fail(self, job: ClaimedJob, lease: _Lease, reason: str, stack: str, *, retryable: bool,
              outcome: str) -> str:
        lease.stop()
        try:
            state = self.queue.fail(job, reason, stack, retryable=retryable)
        except LeaseLost:
            return "lost"
        logger.warning("job attempt failed", extra={"jobId": job.id, "reason": reason, "state": state})
        return outcome or ("retried" if state == "delayed" else "failed")

    # -- loops -------------------------------------------------------------------------

    def maintain(self) -> None:
        """Heartbeat of the worker itself, and recovery of leases other workers lost."""
        self.queue.record_worker(self.worker_id)
        record_worker_heartbeat()
        record_queue_counts(self.queue.counts())
        requeued, failed = self.queue.recover_stalled()
        for _ in requeued + failed:
            record_job("stalled")
        if requeued or failed:
            logger.warning("recovered expired leases", extra={"requeued": requeued, "failed": failed})

    def run_until_idle(self, remaining_ms: Callable[[], float] | None = None, max_jobs: int | None = None,
                       safety_ms: int = 2000) -> dict[str, Any]:
        """Claim and process jobs one after another until the queue is empty, `max_jobs` ran,
        or the time left (Lambda) could not fit the next job; such a job goes back unharmed."""
        with self._loop_scratch():
            return self._drain(remaining_ms, max_jobs, safety_ms)

    def _drain(self, remaining_ms: Callable[[], float] | None, max_jobs: int | None, safety_ms: int) -> dict[str, Any]:
        self.maintain()
        budget = remaining_ms() if remaining_ms is not None else None
        done = 0
        while max_jobs is None or done < max_jobs:
            claim = self.queue.claim()
            job = claim.job
            if job is None:
                break
            if remaining_ms is not None and budget is not None:
                needed = self.estimate_ms(job.payload) + safety_ms
                if needed > budget:
                    # Even a fresh invocation could not finish it: retrying would only block
                    # the queue, so it fails now with a reason an operator can act on.
                    reason = (f"rendering needs about {needed / 1000:.0f} s, more than the worker "
                              f"function's {budget / 1000:.0f} s; run a long-running worker for such jobs")
                    lease = self._leases.add(job, self.abort_event)
                    outcome = self._fail(job, lease, reason, "", retryable=False, outcome="invalid")
                    record_job(outcome)
                    with self._lock:
                        self.outcomes[outcome] += 1
                    continue
                if remaining_ms() < needed:
                    self.queue.release(job)
                    with self._lock:
                        self.outcomes["deferred"] += 1
                    logger.info("not enough time left for the next job; left it queued",
                                extra={"jobId": job.id, "neededMs": needed})
                    break
            self.process(job)
            done += 1
        return {"workerId": self.worker_id, "processed": done, "outcomes": dict(self.outcomes)}

    def estimate_ms(self, payload: dict[str, Any]) -> int:
        """A conservative render budget: fixed start-up plus a cost per second of video."""
        if payload.get("dryRun"):
            return 2000
        return int(3000 + video_seconds(payload) * self.settings.render_ms_per_video_second)

    def run_forever(self, concurrency: int | None = None) -> None:
        """Long-running mode: `concurrency` job loops plus a maintenance loop, until `stop()`."""
        n = concurrency or self.settings.worker_concurrency
        with contextlib.suppress(OSError):
            self.sweep_scratch()
        threads = [threading.Thread(target=self._loop, name=f"job-loop-{i}", daemon=True) for i in range(n)]
        for thread in threads:
            thread.start()
        logger.info("worker started", extra={"workerId": self.worker_id, "concurrency": n})
        interval = min(5.0, self.settings.lease_ms / 2000)
        while not self.stop_event.is_set():
            try:
                self.maintain()
            except StoreUnavailable:
                logger.warning("redis unreachable; retrying")
            self.stop_event.wait(interval)
        grace_deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        for thread in threads:
            thread.join(max(0.0, grace_deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            # Past the grace period: running renders abort and their jobs go back to waiting.
            self.abort_event.set()
            for thread in threads:
                thread.join(30)
        with contextlib.suppress(StoreUnavailable):
            self.queue.forget_worker(self.worker_id)
        logger.info("worker stopped", extra={"workerId": self.worker_id, "outcomes": dict(self.outcomes)})

    def stop(self) -> None:
        self.stop_event.set()

    def _loop(self) -> None:
        with self._loop_scratch():
            self._serve()

    def _serve(self) -> None:
        while not self.stop_event.is_set():
            try:
                claim = self.queue.claim()
                if claim.job is not None:
                    self.process(claim.job)
                    continue
                wait = 1.0
                if claim.next_due_ms is not None:
                    wait = min(wait, max(0.0, claim.next_due_ms / 1000 - time.time()))
                if wait > 0:
                    self.queue.wait_for_work(wait)
            except StoreUnavailable:
                logger.warning("redis unreachable; retrying in 1 s")
                self.stop_event.wait(1.0)
            except Exception:
                record_failure("worker")
                logger.exception("worker loop error")
                self.stop_event.wait(1.0)


class _Lease:
    """One claimed job's lease as its render sees it: progress goes in, a lost lease or a
    shutdown comes out as an exception at the next progress report."""

    def __init__(self, renewer: _LeaseRenewer, job: ClaimedJob, abort: threading.Event) -> None:
        self.renewer = renewer
        self.job = job
        self.abort = abort
        self.lost = threading.Event()
        self.percent: int | None = None
        self.sent: int | None = None
        self.last_beat = time.monotonic()

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"lease on job {self.job.id!r} was lost")
        if self.abort.is_set():
            raise Stopping()

    def progress(self, percent: int) -> None:
        """The render's progress callback."""
        self.percent = max(0, min(100, int(percent)))
        self.check()

    def stop(self) -> None:
        self.renewer.remove(self)


class _LeaseRenewer:
    """One thread per worker renews the leases of all its running jobs, so a render holding
    the CPU cannot starve them, and a job costs no thread of its own."""

    TICK_S = 0.25

    def __init__(self, queue: JobQueue, interval_s: float) -> None:
        self.queue = queue
        self.interval = interval_s
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job: ClaimedJob, abort: threading.Event) -> _Lease:
        lease = _Lease(self, job, abort)
        with self._lock:
            self._leases[job.token] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
        return lease

    def remove(self, lease: _Lease) -> None:
        with self._lock:
            self._leases.pop(lease.job.token, None)

    def _run(self) -> None:
        while True:
            time.sleep(min(self.interval, self.TICK_S))
            with self._lock:
                leases = list(self._leases.values())
                if not leases:
                    # Nothing to renew: end, so idle workers (warm Lambdas) hold no thread.
                    self._thread = None
                    return
            now = time.monotonic()
            for lease in leases:
                due = now - lease.last_beat >= self.interval
                fresh = lease.percent is not None and lease.percent != lease.sent
                if due or fresh:
                    self._beat(lease)

    def _beat(self, lease: _Lease) -> None:
        percent = lease.percent
        try:
            self.queue.heartbeat(lease.job, percent)
        except LeaseLost:
            lease.lost.set()
            self.remove(lease)
            return
        except StoreUnavailable:
            # Keep trying: the lease survives a Redis blip shorter than its remaining time.
            logger.warning("heartbeat failed: redis unreachable", extra={"jobId": lease.job.id})
            return
        except Exception:
            record_failure("heartbeat")
            logger.exception("heartbeat failed", extra={"jobId": lease.job.id})
            return
        lease.sent = percent
        lease.last_beat = time.monotonic()


def _empty(folder: Path) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InvalidPayload):
        details = "; ".join(f"{e['path']}: {e['message']}" for e in exc.errors[:5])
        return f"invalid payload: {details}"
    message = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    return message if isinstance(exc, RenderError) else f"{exc.__class__.__name__}: {message}"


def build_worker(settings: Settings | None = None) -> Worker:
    """A worker wired to the configured Redis and artifact store."""
    from shared.artifacts import get_store
    from shared.redis_client import get_redis
    from shared.settings import get_settings

    settings = settings or get_settings()
    queue = JobQueue(get_redis(settings), settings, get_redis(settings, blocking=True))
    return Worker(settings, queue, get_store(settings))


def main() -> int:
    """Long-running mode: PREVIEW_WORKER_CONCURRENCY jobs at a time, /metrics for Prometheus,
    SIGTERM/SIGINT finish (or hand back) active jobs before exiting."""
    import signal
    import sys

    from prometheus_client import start_http_server

    from shared.errors import ConfigError
    from shared.prometheus_metrics import REGISTRY
    from shared.settings import get_settings

    try:
        settings = get_settings()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    worker = build_worker(settings)
    if settings.metrics_port:
        host = os.environ.get("PREVIEW_METRICS_HOST", "127.0.0.1")
        start_http_server(settings.metrics_port, addr=host, registry=REGISTRY)

    def on_signal(signum: int, frame: object) -> None:
        logger.info("stop requested", extra={"signal": signal.Signals(signum).name})
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run_forever()
    return 0
