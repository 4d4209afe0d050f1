"""What the cluster tests share: events for any job id, queues on their own cluster clients."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from redis.crc import key_slot

from local.redis_cluster import ClusterNode, RedisCluster
from shared import redis_client
from shared.keys import QueueKeys
from shared.queue import JobQueue
from shared.settings import Settings
from tests.conftest import load_event

QUEUE = Settings().queue_name


def queue_slot(name: str = QUEUE) -> int:
    return key_slot(QueueKeys(name).waiting.encode())


def queue_master(cluster: RedisCluster, name: str = QUEUE) -> ClusterNode:
    return cluster.master_of_slot(queue_slot(name))


def enqueue_event(job_id: str, case: str = "success") -> dict[str, Any]:
    event = load_event("enqueue_job", case)
    document = json.loads(event["body"])
    document["jobId"] = job_id
    event["body"] = json.dumps(document)
    event["headers"]["content-length"] = str(len(event["body"]))
    return event


def job_event(function: str, job_id: str) -> dict[str, Any]:
    """A job_status or job_artifact event for `job_id`."""
    event = copy.deepcopy(load_event(function, "success"))
    event["pathParameters"]["jobId"] = job_id
    event["rawPath"] = event["rawPath"].replace("preview-job-0002", job_id)
    return event


def dry_job(job_id: str) -> dict[str, Any]:
    return {"jobId": job_id, "projectId": "proj-cluster", "requestId": f"req-{job_id}", "dryRun": True,
            "previewRequest": {"steps": [], "assets": [], "audio": {}}}


def make_queue(url: str, **env: str) -> tuple[JobQueue, Callable[[], None]]:
    """A queue on its own clients for `url` (built the way the service builds them), and what
    closes it."""
    settings = Settings.from_env({"REDIS_URL": url, "PREVIEW_QUEUE_MAX": "100000", **env})
    client = redis_client.connect(settings)
    blocking = redis_client.connect(settings, blocking=True)
    queue = JobQueue(client, settings, blocking)

    def close() -> None:
        queue.close()
        client.close()
        blocking.close()

    return queue, close
