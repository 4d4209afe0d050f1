"""The job queue on Redis: admission, claim with lease, heartbeat, complete, fail/retry,
stalled-lease recovery, retention and O(1) counts. Each state change is one Lua script."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import field
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterError,
    CrossSlotTransactionError,
    InvalidPipelineStack,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)

from shared.contract import DEFAULT_PRIORITY, canonical_json
from shared.errors import Conflict, JobNotFound, LeaseLost, PreviewError, QueueFull, RetentionFull, StoreUnavailable
from shared.keys import (
    HISTORY_MAX,
    HISTORY_REASON_BYTES,
    NEWEST_FIRST,
    NOTIFY_MAX,
    PRIORITY_RANK,
    SEQ_SPAN,
    STATES,
    QueueKeys,
)
from shared.models import AdmitResult, JobStatus, JobSummary, QueueCounts
from shared.records import lazy_dataclass
from shared.redis_client import MAX_BLOCK_SECONDS, RedisClient, ScriptRunner
from shared.retention import REASON_MAX_BYTES, STACKTRACE_MAX_BYTES, caps, clip
from shared.settings import Settings

_SCRIPT_NAMES = ("admit", "admit_many", "claim", "heartbeat", "complete", "fail", "release", "recover", "alive",
                 "retry", "cancel", "list")


_RETENTION_USERS = {"admit", "admit_many", "complete", "fail", "recover", "cancel"}
# admit_many admits each job as admit does (`admit_one` in _admit.lua).
_ADMIT_USERS = {"admit", "admit_many"}
# complete claims the next job the way claim does (`claim_next` in _claim.lua).
_CLAIM_USERS = {"claim", "complete"}


def _load_script(name: str) -> str:
    folder = resources.files("shared.lua")
    source = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name in _CLAIM_USERS:
        source = folder.joinpath("_claim.lua").read_text(encoding="utf-8") + source
    if name in _ADMIT_USERS:
        source = folder.joinpath("_admit.lua").read_text(encoding="utf-8") + source
    if name in _RETENTION_USERS:
        source = folder.joinpath("_retention.lua").read_text(encoding="utf-8") + source
    return source


SCRIPT_SOURCES = {name: _load_script(name) for name in _SCRIPT_NAMES}


def payload_hash(payload: dict[str, Any] | str) -> str:
    text = payload if isinstance(payload, str) else canonical_json(payload)
    return hashlib.sha256(text.encode()).hexdigest()


# Error replies of a server that is busy, starting, or not (or no longer) the master. redis-py
# strips the code from the message of those it has a class for, so the classes count too.
_NOT_READY_CODES = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "NOAUTH", "WRONGPASS")


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn connection trouble into `StoreUnavailable` (503) without leaking the URL.

    In cluster mode that includes a cluster reconfiguring: CLUSTERDOWN and MASTERDOWN
    (`ClusterError`), redirections still unresolved after the client followed a few (MOVED,
    ASK), TRYAGAIN during a migration, a slot no known node serves and a slot map that could
    not be read (`RedisClusterException`). Programming errors (CROSSSLOT, a pipeline the
    cluster refuses) stay errors."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable("Redis is unreachable; try again shortly") from exc
    except (ClusterError, TryAgainError, redis.exceptions.AskError) as exc:  # AskError: MOVED too
        raise StoreUnavailable("Redis Cluster is reconfiguring; try again shortly") from exc
    except (CrossSlotTransactionError, InvalidPipelineStack):
        raise
    except RedisClusterException as exc:
        raise StoreUnavailable("Redis Cluster is unreachable; try again shortly") from exc
    except redis.ResponseError as exc:
        code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
        if isinstance(exc, ReadOnlyError) or code in _NOT_READY_CODES or str(exc).startswith(_NOT_READY_CODES):
            raise StoreUnavailable("Redis is not ready; try again shortly") from exc
        raise


@lazy_dataclass
class ClaimedJob:
    id: str
    token: str
    payload: dict[str, Any]
    attempts_made: int
    attempts_max: int
    priority: str
    project_id: str
    fields: dict[str, str] = field(repr=False, default_factory=dict)


@lazy_dataclass(frozen=True)
class ClaimOutcome:
    job: ClaimedJob | None
    next_due_ms: int | None = None


# Jobs per admit_many script, and bytes of their payloads: a script blocks Redis while it runs.
ADMIT_BATCH = 500
ADMIT_BATCH_BYTES = 4 * 1024 * 1024


def _batches(jobs: list[tuple[str, list[Any]]]) -> Iterator[list[tuple[str, list[Any]]]]:
    """Consecutive runs of (jobId, admit arguments) within ADMIT_BATCH and ADMIT_BATCH_BYTES."""
    batch: list[tuple[str, list[Any]]] = []
    size = 0
    for job in jobs:
        weight = len(job[1][2])  # the stored document
        if batch and (len(batch) >= ADMIT_BATCH or size + weight > ADMIT_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(job)
        size += weight
    if batch:
        yield batch


def _claim_outcome(reply: list[Any], token: str) -> ClaimOutcome:
    """What claim_next (_claim.lua) answered: the leased job's hash, or when the next is due."""
    if int(reply[0]) == 0:
        due = int(float(reply[1]))
        return ClaimOutcome(job=None, next_due_ms=None if due < 0 else due)
    flat = reply[1]
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return ClaimOutcome(job=ClaimedJob(
        id=fields["id"],
        token=token,
        payload=json.loads(fields["payload"]),
        attempts_made=int(fields.get("attemptsMade") or 0),
        attempts_max=int(fields.get("attemptsMax") or 1),
        priority=fields.get("priority", DEFAULT_PRIORITY),
        project_id=fields.get("projectId", ""),
        fields=fields,
    ))


def backoff_delay_ms(base_ms: int, attempts_made: int, rng: random.Random | None = None) -> int:
    """Exponential backoff with jitter: base * 2^(n-1), scaled by a random factor in [0.8, 1.2]."""
    exponent = max(attempts_made - 1, 0)
    delay = base_ms * (2 ** min(exponent, 20))
    factor = (rng or random).uniform(0.8, 1.2)
    return int(delay * factor)


# Scripts whose success a client is told of (202 admitted, 200 retried or cancelled): where the
# server has a replica (a cluster shard's, or a replicated single server's) their write must reach
# it before that answer, or a failover right after could undo what the client was promised.
# The worker's own writes need no such wait: a lost claim leaves the job waiting, a lost
# completion or failure leaves it leased until its lease runs out and it is handed out again.
_ACKNOWLEDGED_WRITES = frozenset({"admit", "admit_many", "retry", "cancel"})


class JobQueue:
    def __init__(self, client: RedisClient, settings: Settings, blocking_client: RedisClient | None = None):
        self.redis = client
        self.blocking_redis = blocking_client
        self.settings = settings
        self.keys = QueueKeys(settings.queue_name)
        self.caps = caps(settings)
        self._scripts = {name: client.register_script(src) for name, src in SCRIPT_SOURCES.items()}
        self._runner = ScriptRunner(client)

    def _script(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        return self._runner(self._scripts[name], keys, args, replicated=name in _ACKNOWLEDGED_WRITES)

    def close(self) -> None:
        """Close the connections the scripts ran on (the clients belong to the caller)."""
        self._runner.close()

    @property
    def name(self) -> str:
        return self.settings.queue_name

    # -- client side -------------------------------------------------------------------

    def admit(self, payload: dict[str, Any], document: str | None = None) -> AdmitResult:
        """Store and enqueue a validated payload in one atomic step (`document`: its
        `canonical_json`, when the caller has it already).

        Identical replay of a known jobId returns the existing job; a different payload under
        the same jobId raises `Conflict`; a full backlog raises `QueueFull`, and finished jobs
        at their cap (all still within their age) `RetentionFull`."""
        k = self.keys
        job_id, job_args = self._admit_args(payload, document)
        with redis_errors():
            reply = self._script("admit", keys=[k.job(job_id), *self._admit_keys()],
                                 args=[*job_args, *self._admit_limits()])
        return self._admit_answer(job_id, reply)

    def admit_many(self, payloads: list[dict[str, Any]]) -> list[AdmitResult | PreviewError]:
        """Admit validated payloads in order, each answered as `admit` would answer it alone
        (its result, or the `Conflict`, `QueueFull` or `RetentionFull` it would raise, in its
        place), in one atomic script per ADMIT_BATCH jobs (or ADMIT_BATCH_BYTES of payloads):
        the backlog limit holds exactly under any concurrency, and a jobId given twice is a
        replay (or a conflict) of its first admission."""
        answers: list[AdmitResult | PreviewError] = []
        jobs = [self._admit_args(payload) for payload in payloads]
        for batch in _batches(jobs):
            keys = [self.keys.job(job_id) for job_id, _ in batch]
            with redis_errors():
                replies = self._script("admit_many", keys=[*self._admit_keys(), *keys],
                                       args=[*self._admit_limits(), *(a for _, job_args in batch for a in job_args)])
            for (job_id, _), reply in zip(batch, replies, strict=True):
                try:
                    answers.append(self._admit_answer(job_id, reply))
                except (Conflict, QueueFull) as exc:  # RetentionFull is a QueueFull
                    answers.append(exc)
        return answers

    def _admit_keys(self) -> list[str]:
        k = self.keys
        return [k.waiting, k.delayed, k.seq, k.notify, k.active, k.completed, k.failed, k.failed_payloads,
                k.failed_bytes]

    def _admit_limits(self) -> list[Any]:
        s = self.settings
        return [s.queue_max, SEQ_SPAN, NOTIFY_MAX, self.keys.job_prefix, s.keep_completed_seconds * 1000,
                self.caps.completed, s.keep_failed_seconds * 1000, self.caps.failed]

    def _admit_args(self, payload: dict[str, Any], document: str | None = None) -> tuple[str, list[Any]]:
        job_id = payload["jobId"]
        priority = payload.get("priority", DEFAULT_PRIORITY)
        if document is None:
            document = canonical_json(payload)
        return job_id, [job_id, payload_hash(document), document, PRIORITY_RANK[priority], priority,
                        payload.get("attempts") or self.settings.job_attempts, payload["projectId"]]

    def _admit_answer(self, job_id: str, reply: list[Any]) -> AdmitResult:
        code, detail, *cap = reply
        code = int(code)
        if code == 0:
            return AdmitResult(jobId=job_id, created=True, state="waiting")
        if code == 1:
            return AdmitResult(jobId=job_id, created=False, state=detail)
        if code == 2:
            raise Conflict(
                f"job {job_id!r} already exists with a different payload", jobId=job_id, state=detail
            )
        if code == 4:
            which, limit = cap
            raise RetentionFull(
                f"queue {self.name!r} keeps {limit} {which} jobs for their retention period and all are "
                f"recent; try again later", retry_after=max(1, -(-int(detail) // 1000)), limit=int(limit))
        raise QueueFull(
            f"queue {self.name!r} is full ({detail} jobs waiting, limit {self.settings.queue_max})",
            retry_after=self._retry_after_seconds(),
            limit=self.settings.queue_max,
        )

    def _retry_after_seconds(self) -> int:
        # A slot frees as soon as a worker claims a job: about one backoff step, at least 1 s.
        return max(1, min(30, self.settings.backoff_ms // 1000 or 1))

    def status(self, job_id: str) -> JobStatus | None:
        with redis_errors():
            fields: dict[str, str] = self.redis.hgetall(self.keys.job(job_id))  # type: ignore[assignment]
        if not fields or "state" not in fields:
            return None
        return JobStatus.from_hash(fields)

    def job_fields(self, job_id: str, *names: str) -> dict[str, str | None]:
        with redis_errors():
            values: list[str | None] = self.redis.hmget(self.keys.job(job_id), list(names))  # type: ignore[assignment]
        return dict(zip(names, values, strict=True))

    def counts(self) -> QueueCounts:
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for state in STATES:
                pipe.zcard(self.keys.state_key(state))
            values = dict(zip(STATES, (int(v) for v in pipe.execute()), strict=True))
        return QueueCounts(name=self.name, total=sum(values.values()), **values)

    def oldest_waiting_ms(self) -> int | None:
        """Admission time of the oldest waiting job (the head of each priority band)."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for rank in PRIORITY_RANK.values():
                pipe.zrangebyscore(self.keys.waiting, rank * SEQ_SPAN, (rank + 1) * SEQ_SPAN - 1, 0, 1)
            heads = [ids[0] for ids in pipe.execute() if ids]
            if not heads:
                return None
            pipe = self.redis.pipeline(transaction=False)
            for job_id in heads:
                pipe.hget(self.keys.job(job_id), "createdAt")
            created = [int(v) for v in pipe.execute() if v]
        return min(created) if created else None

    def ping(self) -> None:
        with redis_errors():
            if isinstance(self.redis, RedisCluster):
                # A cluster client's PING goes to its default node: ask the queue's own master.
                self.redis.ping(target_nodes=self.redis.get_node_from_key(self.keys.waiting))
            else:
                self.redis.ping()

    # -- worker side -------------------------------------------------------------------

    def claim(self, token: str | None = None, worker_id: str | None = None) -> ClaimOutcome:
        """Lease the next ready job. `worker_id`: a claimer that keeps its liveness renewed
        (`renew_liveness`); its job is taken back as soon as that lapses. Without it only the
        lease's expiry does (a Lambda invocation)."""
        token = token or secrets.token_hex(12)
        k = self.keys
        with redis_errors():
            reply = self._script("claim", keys=[k.waiting, k.active, k.delayed, k.notify, k.alive],
                                 args=[k.job_prefix, token, self.settings.lease_ms, worker_id or "",
                                       self.settings.worker_liveness_ms])
        return _claim_outcome(reply, token)

    def wait_for_work(self, timeout_s: float) -> bool:
        """Block until an admission wakes us (True) or the timeout passes (False)."""
        client = self.blocking_redis or self.redis
        with redis_errors():
            # BLPOP takes whole or fractional seconds (Redis >= 6); 0 would block forever.
            wait = min(max(timeout_s, 0.01), MAX_BLOCK_SECONDS)
            return client.blpop([self.keys.notify], timeout=wait) is not None

    def heartbeat(self, job: ClaimedJob, progress: int | None = None) -> None:
        """Renew the lease; raises `LeaseLost` when another worker owns the job now."""
        with redis_errors():
            renewed = self._script("heartbeat", 
                keys=[self.keys.job(job.id), self.keys.active],
                args=[job.id, job.token, self.settings.lease_ms, "" if progress is None else int(progress)],
            )
        if not int(renewed):
            raise LeaseLost(f"lease on job {job.id!r} was lost")

    def complete(self, job: ClaimedJob, result: dict[str, Any] | None = None, *, claim_next: bool = False,
                 worker_id: str | None = None) -> ClaimOutcome | None:
        """Mark an owned job completed (`LeaseLost` when it is no longer this worker's). With
        `claim_next`, the same script then claims the next ready job as `claim(worker_id=...)`
        would, and its outcome is returned: one round trip per job for a busy worker."""
        s, k = self.settings, self.keys
        token = secrets.token_hex(12) if claim_next else ""
        with redis_errors():
            reply = self._script("complete",
                keys=[k.job(job.id), k.active, k.completed, k.waiting, k.delayed, k.notify, k.alive],
                args=[job.id, job.token, k.job_prefix, s.keep_completed_seconds * 1000, self.caps.completed,
                      json.dumps(result or {}), token, s.lease_ms, worker_id or "", s.worker_liveness_ms],
            )
        if not int(reply[0]):
            raise LeaseLost(f"lease on job {job.id!r} was lost before completion")
        return _claim_outcome(reply[1], token) if claim_next else None

    def fail(self, job: ClaimedJob, reason: str, stacktrace: str = "", *, retryable: bool = True) -> str:
        """Record a failed attempt; returns the new state (`delayed` for a retry, or `failed`)."""
        s = self.settings
        delay = backoff_delay_ms(s.backoff_ms, job.attempts_made + 1)
        with redis_errors():
            state, _attempts = self._script("fail",
                keys=[self.keys.job(job.id), self.keys.active, self.keys.delayed, self.keys.failed,
                      self.keys.failed_payloads, self.keys.failed_bytes],
                args=[job.id, job.token, self.keys.job_prefix, clip(reason, REASON_MAX_BYTES),
                      clip(stacktrace, STACKTRACE_MAX_BYTES, tail=True), 1 if retryable else 0, delay,
                      s.keep_failed_seconds * 1000, self.caps.failed, self.caps.failed_payload_bytes],
            )
        if state == "lost":
            raise LeaseLost(f"lease on job {job.id!r} was lost before recording the failure")
        return str(state)

    def release(self, job: ClaimedJob) -> bool:
        """Hand an owned job back to waiting without counting an attempt (shutdown)."""
        with redis_errors():
            return bool(
                int(
                    self._script("release", 
                        keys=[self.keys.job(job.id), self.keys.active, self.keys.waiting, self.keys.notify],
                        args=[job.id, job.token],
                    )
                )
            )

    def recover_stalled(self, limit: int = 1000) -> tuple[list[str], list[str]]:
        """Jobs whose lease expired, or whose worker's liveness lapsed, go back to waiting (an
        attempt counted) or to failed; then finished jobs past their retention are dropped."""
        s = self.settings
        with redis_errors():
            requeued, failed = self._script("recover",
                keys=[self.keys.active, self.keys.waiting, self.keys.failed, self.keys.notify,
                      self.keys.completed, self.keys.alive, self.keys.checked, self.keys.failed_payloads,
                      self.keys.failed_bytes],
                args=[self.keys.job_prefix, limit, s.keep_failed_seconds * 1000, self.caps.failed,
                      s.keep_completed_seconds * 1000, self.caps.completed, s.worker_liveness_ms,
                      self.caps.failed_payload_bytes],
            )
        return list(requeued), list(failed)

    def renew_liveness(self, worker_id: str) -> bool:
        """This worker is alive for another PREVIEW_WORKER_LIVENESS_MS. False when it was not
        listed: its first renewal, or its liveness had lapsed and its jobs were taken back."""
        with redis_errors():
            added = self._script("alive", keys=[self.keys.alive],
                                 args=[worker_id, self.settings.worker_liveness_ms])
        return not int(added)

    def record_worker(self, worker_id: str) -> None:
        now_ms = int(time.time() * 1000)
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(self.keys.workers, {worker_id: now_ms})
            pipe.zremrangebyscore(self.keys.workers, "-inf", now_ms - 86_400_000)
            pipe.execute()

    def forget_worker(self, worker_id: str) -> None:
        """A worker that stops: out of the health count, and its liveness ended now, so that
        the next recovery pass takes back any job it could not hand back."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.keys.workers, worker_id)
            pipe.zadd(self.keys.alive, {worker_id: 0}, xx=True)
            pipe.execute()

    def workers_seen(self, since_ms: int) -> tuple[int, int | None]:
        """How many workers sent a heartbeat since `since_ms`, and the latest heartbeat time."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcount(self.keys.workers, since_ms, "+inf")
            pipe.zrange(self.keys.workers, -1, -1, withscores=True)
            count, latest = pipe.execute()
        return int(count), (int(latest[0][1]) if latest else None)

    # -- operator side -------------------------------------------------------------------

    def list_jobs(self, state: str, limit: int, after: tuple[str, str] | None = None
                  ) -> tuple[list[JobSummary], tuple[str, str] | None, QueueCounts]:
        """One page of the jobs in `state` (pickup order; newest first when finished) after the
        (score, id) position `after`, the position to continue from (None: no more), and the
        counts, all read at one instant without the payloads."""
        k = self.keys
        score, last_id = after or ("", "")
        with redis_errors():
            more, counts, *entries = self._script("list",
                keys=[k.state_key(state), k.waiting, k.active, k.delayed, k.completed, k.failed],
                args=[k.job_prefix, 1 if state in NEWEST_FIRST else 0, limit, score, last_id, *JobSummary.FIELDS],
            )
        values = dict(zip(("waiting", "active", "delayed", "completed", "failed"), (int(c) for c in counts),
                          strict=True))
        jobs = [JobSummary.from_fields(dict(zip(JobSummary.FIELDS, fields, strict=True)))
                for _, _, fields in entries]
        position = (str(entries[-1][1]), str(entries[-1][0])) if int(more) and entries else None
        return jobs, position, QueueCounts(name=self.name, total=sum(values.values()), **values)

    def job_fields_all(self, job_id: str) -> dict[str, str] | None:
        """Every field of a job's hash (its payload too), or None for an unknown job."""
        with redis_errors():
            fields: dict[str, str] = self.redis.hgetall(self.keys.job(job_id))  # type: ignore[assignment]
        return fields if fields and "state" in fields else None

    def retry(self, job_id: str) -> JobStatus:
        """A failed job back to waiting with fresh attempts, its failure kept in its history.
        `JobNotFound`, `Conflict` (not failed, or its payload shed), `QueueFull` (the backlog at
        PREVIEW_QUEUE_MAX, as for admission)."""
        k = self.keys
        with redis_errors():
            code, detail, *values = self._script("retry",
                keys=[k.job(job_id), k.failed, k.waiting, k.delayed, k.notify, k.failed_payloads, k.failed_bytes,
                      k.seq],
                args=[job_id, self.settings.queue_max, NOTIFY_MAX, HISTORY_MAX, HISTORY_REASON_BYTES, SEQ_SPAN,
                      PRIORITY_RANK["high"], PRIORITY_RANK["normal"], PRIORITY_RANK["low"], *JobStatus.FIELDS],
            )
        code = int(code)
        if code == 1:
            raise JobNotFound(f"no job {job_id!r}", jobId=job_id)
        if code == 2:
            raise Conflict(f"job {job_id!r} is {detail}: only a failed job can be retried", jobId=job_id,
                           state=detail)
        if code == 3:
            raise QueueFull(
                f"queue {self.name!r} is full ({detail} jobs waiting, limit {self.settings.queue_max})",
                retry_after=self._retry_after_seconds(), limit=self.settings.queue_max)
        if code == 4:
            raise Conflict(f"job {job_id!r} no longer holds its payload (failed jobs past their payload budget "
                           "shed theirs), so it cannot run again; enqueue it under a new jobId", jobId=job_id,
                           state="failed")
        # As the retry left it: a worker may have claimed it since
        return JobStatus.from_hash(dict(zip(JobStatus.FIELDS, values[0], strict=True)))

    def cancel(self, job_id: str, reason: str) -> JobStatus:
        """A waiting or delayed job dead-lettered with `reason` (its payload kept for a retry).
        `JobNotFound`; `Conflict` for any other state (a running render is not cancelled)."""
        s, k = self.settings, self.keys
        with redis_errors():
            code, detail, *values = self._script("cancel",
                keys=[k.job(job_id), k.waiting, k.delayed, k.failed, k.failed_payloads, k.failed_bytes],
                args=[job_id, k.job_prefix, reason, s.keep_failed_seconds * 1000, self.caps.failed,
                      self.caps.failed_payload_bytes, *JobStatus.FIELDS],
            )
        code = int(code)
        if code == 1:
            raise JobNotFound(f"no job {job_id!r}", jobId=job_id)
        if code == 2:
            why = " (a running render cannot be cancelled)" if detail == "active" else ""
            raise Conflict(f"job {job_id!r} is {detail}: only a waiting or delayed job can be cancelled{why}",
                           jobId=job_id, state=detail)
        return JobStatus.from_hash(dict(zip(JobStatus.FIELDS, values[0], strict=True)))
