"""The render worker: claim a job, keep its lease alive while rendering, publish the
artifacts, then complete or fail it.

    worker.py        Worker: the core and its two run modes
    core.py          the parts below, one job at a time, the worker's own maintenance
    job.py           one job from lease to outcome (the state machine)
    lease.py         leases and the one thread that renews them
    scratch.py       scratch folders for renders
    lambda_mode.py   inside a Lambda invocation, bounded by the time left
    process_mode.py  as a long-running process: job loops, maintenance, graceful stop
"""

from shared.worker.worker import Worker

__all__ = ["Worker"]
