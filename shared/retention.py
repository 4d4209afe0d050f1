"""How many finished jobs Redis keeps, and in how much memory.

Age is the rule: a completed job stays readable for PREVIEW_KEEP_COMPLETED_SECONDS, a failed one
for PREVIEW_KEEP_FAILED_SECONDS. The count caps that bound memory are sized from one budget,
PREVIEW_FINISHED_MEMORY_MB, with the worst-case size of a record (measured on records of the
longest ids with MEMORY USAGE and INFO: tests/test_retention.py checks these figures). When a
cap is reached by records still within their age, admission answers 429 (`RetentionFull`)
rather than drop a record a client may still poll.

A completed job sheds its payload (its hash stays, for replays and conflicts); a failed job
keeps it for a retry, within its own byte budget: past it, the oldest failed jobs shed theirs
(their state and reason stay readable).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings

# Bytes of one completed job: its hash with ids of 128 characters, without payload, plus its
# entry in the completed set, allocator overhead included (measured: 2,194 on Redis 6.2).
COMPLETED_RECORD_BYTES = 2560
# Bytes of one failed job without its payload, reason and stack trace at their caps, plus its
# set entries (measured: 10,259).
FAILED_RECORD_BYTES = 11 * 1024
# What a failure may store of its reason and of its stack trace (the end of it).
REASON_MAX_BYTES = 4096
STACKTRACE_MAX_BYTES = 4096

# The budget's shares: completed records, failed records, failed jobs' payloads. With the
# default 64 MiB: 13,107 completed jobs (3.6 a second for an hour, sustained), 1,489 failed ones
# (a day's), 16 MiB of their payloads; an eighth of the smallest ElastiCache node (0.5 GiB).
COMPLETED_SHARE = 0.5
FAILED_SHARE = 0.25
FAILED_PAYLOAD_SHARE = 0.25


@dataclass(frozen=True)
class Caps:
    completed: int
    failed: int
    failed_payload_bytes: int


def caps(settings: Settings) -> Caps:
    """The count caps and the failed payloads' byte budget (an explicit
    PREVIEW_KEEP_*_COUNT takes the place of the budget's count)."""
    budget = settings.finished_memory_mb * 1024 * 1024
    completed = settings.keep_completed_count or int(budget * COMPLETED_SHARE // COMPLETED_RECORD_BYTES)
    failed = settings.keep_failed_count or int(budget * FAILED_SHARE // FAILED_RECORD_BYTES)
    return Caps(completed=max(1, completed), failed=max(1, failed),
                failed_payload_bytes=int(budget * FAILED_PAYLOAD_SHARE))


def clip(text: str, limit: int, *, tail: bool = False) -> str:
    """At most `limit` bytes of UTF-8 (the end of it with `tail`), never a split character."""
    data = text.encode()
    if len(data) <= limit:
        return text
    part = data[-limit:] if tail else data[:limit]
    return part.decode(errors="ignore")
