"""Every Redis key of a queue, in one place.

All keys of one queue share the hash tag ``{<queue name>}`` so that each Lua script touches
a single Redis Cluster slot.

    pq:{q}:job:<jobId>   hash   one job: payload, state, attempts, timestamps, lease token,
                                and `history` (JSON: the failures before each retry)
    pq:{q}:waiting       zset   jobs ready to run; score = priority rank * 1e13 + admission seq
    pq:{q}:active        zset   claimed jobs; score = lease deadline (ms since epoch)
    pq:{q}:delayed       zset   jobs backing off before a retry; score = due time (ms)
    pq:{q}:completed     zset   finished jobs; score = finish time (ms), trimmed by retention
    pq:{q}:failed        zset   dead letters; score = finish time (ms), trimmed by retention
    pq:{q}:failedpayloads zset  failed jobs still holding their payload; score = finish time
    pq:{q}:failedbytes   string bytes of those payloads (kept within their budget)
    pq:{q}:seq           string admission counter (FIFO order within a priority)
    pq:{q}:notify        list   wake-up tokens for idle workers blocked on BLPOP
    pq:{q}:workers       zset   worker id -> last heartbeat (ms)
    pq:{q}:alive         zset   worker id -> liveness deadline (ms, Redis clock); a claimed
                                job's hash names its worker, taken back when this lapses
    pq:{q}:checked       string time of the last dead-worker check (ms)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

PREFIX = "pq"

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}
# Admission sequence numbers stay below this, so rank * SEQ_SPAN + seq is exact in a double.
SEQ_SPAN = 10**13

STATES = ("waiting", "active", "delayed", "completed", "failed")

# Wake-up tokens beyond this many are useless: every idle worker already has one.
NOTIFY_MAX = 1000

# A retried job keeps its earlier failures in its `history` field: the last HISTORY_MAX, each
# reason clipped to HISTORY_REASON_BYTES (the full last reason and stack trace are in the hash
# until the retry).
HISTORY_MAX = 10
HISTORY_REASON_BYTES = 256

# Listing: pickup order for the unfinished states, newest first for the finished ones.
NEWEST_FIRST = ("completed", "failed")


@dataclass(frozen=True)
class QueueKeys:
    """Key names of one queue; each is built once (admission and claim use them per call)."""

    name: str

    @cached_property
    def base(self) -> str:
        return f"{PREFIX}:{{{self.name}}}:"

    def job(self, job_id: str) -> str:
        return f"{self.base}job:{job_id}"

    @cached_property
    def job_prefix(self) -> str:
        return f"{self.base}job:"

    @cached_property
    def waiting(self) -> str:
        return f"{self.base}waiting"

    @cached_property
    def active(self) -> str:
        return f"{self.base}active"

    @cached_property
    def delayed(self) -> str:
        return f"{self.base}delayed"

    @cached_property
    def completed(self) -> str:
        return f"{self.base}completed"

    @cached_property
    def failed(self) -> str:
        return f"{self.base}failed"

    @cached_property
    def failed_payloads(self) -> str:
        return f"{self.base}failedpayloads"

    @cached_property
    def failed_bytes(self) -> str:
        return f"{self.base}failedbytes"

    @cached_property
    def seq(self) -> str:
        return f"{self.base}seq"

    @cached_property
    def notify(self) -> str:
        return f"{self.base}notify"

    @cached_property
    def workers(self) -> str:
        return f"{self.base}workers"

    @cached_property
    def alive(self) -> str:
        return f"{self.base}alive"

    @cached_property
    def checked(self) -> str:
        return f"{self.base}checked"

    def state_key(self, state: str) -> str:
        return f"{self.base}{state}"
