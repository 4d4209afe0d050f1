"""The local artifact store's size budget (PREVIEW_LOCAL_STORE_MAX_MB): previews published past
it prune the oldest first, the index's total is what the folders take on disk, and a job whose
preview was pruned answers 404 saying so, on its artifact route and on its signed links (the
emulator's /artifacts/ route), while a job merely gone still answers the plain 404."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.startup import ServeArgs
from shared import wiring
from shared.artifacts import build_store
from shared.artifacts.index import FILENAME
from shared.artifacts.layout import build_manifest, describe_files, manifest_bytes
from shared.artifacts.local import MB, LocalStore, disk_usage
from shared.errors import ArtifactPruned
from shared.settings import Settings
from tests.conftest import load_event
from tests.emulator.in_process import prepared_for, running, start_app
from tests.handlers import body, invoke, run_worker_until_idle

PRUNED = "was pruned at "
WITHIN = "to keep the local store within"


def render_dir(path: Path, project: str, job: str, video_bytes: int = 3000) -> Path:
    """A folder shaped like a render's output."""
    path.mkdir(parents=True)
    (path / "preview.mp4").write_bytes(job.encode() * (video_bytes // len(job)))
    (path / "preview.json").write_text(json.dumps({"job": job}))
    (path / "container.json").write_bytes(manifest_bytes(build_manifest(project, job, describe_files(path))))
    return path


def folders(store: LocalStore) -> dict[str, int]:
    """`project/job` -> disk usage of every published folder, as `du` would see them."""
    return {f"{p.name}/{j.name}": disk_usage(j) for p in sorted(store.root.iterdir()) if p.is_dir()
            for j in sorted(p.iterdir()) if not j.name.startswith(".")}


def one_preview_bytes(tmp_path: Path) -> int:
    probe = LocalStore(tmp_path / "probe")
    probe.publish("p", "j", render_dir(tmp_path / "probe-src", "p", "j"))
    return disk_usage(probe.job_dir("p", "j"))


# --------------------------------------------------------------------------- the store


def test_publishing_past_the_budget_prunes_the_oldest_first(tmp_path: Path) -> None:
    size = one_preview_bytes(tmp_path)
    budget_mb = 3.5 * size / MB  # room for three
    store = LocalStore(tmp_path / "data", "s3cret", max_mb=budget_mb)
    published = []
    for n in range(8):
        project = f"proj-{n % 2}"  # across projects: one budget for the whole store
        store.publish(project, f"job-{n}", render_dir(tmp_path / f"src-{n}", project, f"job-{n}"))
        published.append(f"{project}/job-{n}")
        present = folders(store)
        # Then: within budget after every publish, and what is left is the newest ones
        assert sum(present.values()) <= budget_mb * MB
        assert sorted(present) == sorted(published[-3:]), n
        assert store.usage() == (sum(present.values()), len(present))
    for gone in published[:-3]:
        project, job = gone.split("/")
        with pytest.raises(ArtifactPruned, match=f"job {job!r} {PRUNED}.* {WITHIN} {budget_mb:g} MB"):
            store.read_manifest(project, job)
    assert store.read_manifest("proj-1", "job-7") is not None
    assert store.read_manifest("proj-1", "never-published") is None  # not pruned: simply absent
    print(f"\nbudget {budget_mb * MB:.0f} B, preview {size} B, kept {len(folders(store))} of 8")


def test_a_rerender_of_a_pruned_job_is_published_and_counted_once(tmp_path: Path) -> None:
    size = one_preview_bytes(tmp_path)
    store = LocalStore(tmp_path / "data", "s3cret", max_mb=2.5 * size / MB)
    for n in range(3):
        store.publish("proj", f"job-{n}", render_dir(tmp_path / f"src-{n}", "proj", f"job-{n}"))
    with pytest.raises(ArtifactPruned):
        store.read_manifest("proj", "job-0")
    # When job-0 renders again it is the newest: job-1 goes, job-0's tombstone with it
    store.publish("proj", "job-0", render_dir(tmp_path / "again", "proj", "job-0"))
    assert store.read_manifest("proj", "job-0") is not None
    assert store.pruned_reason("proj", "job-0") is None
    assert sorted(folders(store)) == ["proj/job-0", "proj/job-2"]
    # Publishing the same job again replaces its row, it does not add one
    store.publish("proj", "job-2", render_dir(tmp_path / "again-2", "proj", "job-2"))
    assert store.usage() == (sum(folders(store).values()), 2)


def test_a_preview_larger_than_the_budget_is_kept_alone(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret", max_mb=0.01)
    store.publish("proj", "small", render_dir(tmp_path / "small", "proj", "small", 1000))
    store.publish("proj", "big", render_dir(tmp_path / "big", "proj", "big", 200_000))
    assert sorted(folders(store)) == ["proj/big"]  # the one just published is never the victim
    with pytest.raises(ArtifactPruned):
        store.read_manifest("proj", "small")
    store.prune()  # nor is the newest one when the hourly walk holds the budget again
    assert sorted(folders(store)) == ["proj/big"]


def test_an_existing_store_is_indexed_once_and_pruned_by_age(tmp_path: Path) -> None:
    """A store filled before the budget existed (or whose index was deleted) is indexed from
    its folders on the first publish, the oldest manifests first to go."""
    data = tmp_path / "data"
    unbounded = LocalStore(data, "s3cret")
    now = time.time()
    for n in range(6):
        unbounded.publish("proj", f"old-{n}", render_dir(tmp_path / f"src-{n}", "proj", f"old-{n}"))
        manifest = unbounded.job_dir("proj", f"old-{n}") / "container.json"
        then = now - 3600 * (10 - n)  # old-0 the oldest
        os.utime(manifest, (then, then))
    assert not (data / "previews" / FILENAME).exists()  # no budget, no index
    size = disk_usage(unbounded.job_dir("proj", "old-0"))
    store = LocalStore(data, "s3cret", max_mb=3.5 * size / MB)
    store.publish("proj", "new", render_dir(tmp_path / "new", "proj", "new"))
    assert sorted(folders(store)) == ["proj/new", "proj/old-4", "proj/old-5"]
    assert store.usage()[1] == 3


def test_the_hourly_walk_reconciles_the_index_with_the_folders(tmp_path: Path) -> None:
    size = one_preview_bytes(tmp_path)
    store = LocalStore(tmp_path / "data", "s3cret", max_mb=10 * size / MB)
    for n in range(4):
        store.publish("proj", f"job-{n}", render_dir(tmp_path / f"src-{n}", "proj", f"job-{n}"))
    # A folder deleted by hand stops counting; one the index never heard of starts counting
    shutil.rmtree(store.job_dir("proj", "job-1"))
    stray = store.job_dir("proj", "stray")
    shutil.copytree(store.job_dir("proj", "job-2"), stray)
    (stray / "preview.json").write_text("x" * 10_000)  # not the size of the one deleted
    old = time.time() - 2 * 3600  # older than a publish in progress could be
    os.utime(stray / "container.json", (old, old))
    assert sorted(f"{e.project}/{e.job}" for e in store.index.all()) == [f"proj/job-{n}" for n in range(4)]
    store.prune()
    assert sorted(f"{e.project}/{e.job}" for e in store.index.all()) == sorted(folders(store))
    assert store.usage() == (sum(folders(store).values()), 4)
    assert store.pruned_reason("proj", "job-1") is None  # deleted, not pruned by the budget


def test_two_stores_on_one_folder_share_the_budget(tmp_path: Path) -> None:
    """Two publishers on one DATA_DIR (the emulator's worker and a worker process) keep one
    total between them."""
    size = one_preview_bytes(tmp_path)
    first = LocalStore(tmp_path / "data", "s3cret", max_mb=3.5 * size / MB)
    second = LocalStore(tmp_path / "data", "s3cret", max_mb=3.5 * size / MB)
    for n in range(6):
        (first if n % 2 else second).publish("proj", f"job-{n}", render_dir(tmp_path / f"s{n}", "proj", f"job-{n}"))
    assert sorted(folders(first)) == ["proj/job-3", "proj/job-4", "proj/job-5"]
    assert first.usage() == second.usage() == (sum(folders(first).values()), 3)
    with pytest.raises(ArtifactPruned):
        second.read_manifest("proj", "job-1")  # pruned by the other one
    first.close()
    second.close()


def test_the_budget_comes_from_settings(tmp_path: Path) -> None:
    default = build_store(Settings.from_env({"DATA_DIR": str(tmp_path)}))
    assert isinstance(default, LocalStore) and default.max_mb == 2048
    small = build_store(Settings.from_env({"DATA_DIR": str(tmp_path), "PREVIEW_LOCAL_STORE_MAX_MB": "0.5"}))
    assert isinstance(small, LocalStore) and small.max_bytes == MB // 2
    off = build_store(Settings.from_env({"DATA_DIR": str(tmp_path), "PREVIEW_LOCAL_STORE_MAX_MB": "0"}))
    assert isinstance(off, LocalStore) and off.max_bytes == 0


# --------------------------------------------------------------------------- through the handlers


def enqueue(job_id: str) -> None:
    event = load_event("enqueue_job", "success")  # a dry run
    document = json.loads(event["body"])
    document.update(jobId=job_id, requestId=f"req-{job_id}")
    event["body"] = json.dumps(document)
    response = invoke("enqueue_job", event)
    assert response["statusCode"] == 202, response["body"]


def artifact(job_id: str) -> dict[str, Any]:
    event = load_event("job_artifact", "success")
    event["pathParameters"] = {"jobId": job_id}
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/preview/job/{job_id}/artifact"
    return invoke("job_artifact", event)


def test_the_artifact_route_says_a_preview_was_pruned(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    # Given a budget with room for about three dry-run previews
    enqueue("sizing-job")
    run_worker_until_idle()
    store = wiring.services().store
    assert isinstance(store, LocalStore)
    size = disk_usage(store.job_dir("proj-mobius-123", "sizing-job"))
    shutil.rmtree(store.root)
    budget_mb = 3.5 * size / MB
    monkeypatch.setenv("PREVIEW_LOCAL_STORE_MAX_MB", f"{budget_mb:.6f}")
    wiring.reset()
    # When six jobs are rendered one after another by the worker
    jobs = [f"budget-job-{n}" for n in range(6)]
    for job in jobs:
        enqueue(job)
        assert run_worker_until_idle()["processed"] == 1
    # Then the three newest are served and the three oldest answer 404 with the reason
    store = wiring.services().store
    assert isinstance(store, LocalStore)
    assert sorted(folders(store)) == [f"proj-mobius-123/{job}" for job in jobs[3:]]
    assert store.usage()[0] == sum(folders(store).values()) <= float(f"{budget_mb:.6f}") * MB
    for job in jobs[3:]:
        assert artifact(job)["statusCode"] == 200
    for job in jobs[:3]:
        response = artifact(job)
        document = body(response)
        assert response["statusCode"] == 404, document
        assert set(document) == {"error", "message", "jobId"} and document["error"] == "job_not_found"
        assert document["jobId"] == job
        assert f"the preview of job {job!r} {PRUNED}" in document["message"]
        assert f"{WITHIN} {float(f'{budget_mb:.6f}'):g} MB" in document["message"]
    # A preview that vanished another way keeps the plain answer
    shutil.rmtree(store.job_dir("proj-mobius-123", jobs[5]))
    assert "no longer available" in body(artifact(jobs[5]))["message"]


# --------------------------------------------------------------------------- through the emulator


def test_the_emulators_links_say_a_preview_was_pruned(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    key = "budget-key-01"
    args = ServeArgs(api_key=key, data_dir=tmp_path / "emulator-data")
    prepared = prepared_for(args, redis_url)
    probe = one_preview_bytes(tmp_path)  # a dry run's folder takes about the same: two files
    budget_mb = 2.5 * probe / MB
    prepared.env.values["PREVIEW_LOCAL_STORE_MAX_MB"] = f"{budget_mb:.6f}"
    app = start_app(args, prepared, monkeypatch, redis_description=redis_url)
    with running(app, headers={"x-api-key": key}) as client:

        def render(job_id: str) -> dict[str, Any]:
            payload = json.loads(load_event("enqueue_job", "success")["body"])
            payload.update(jobId=job_id, requestId=f"req-{job_id}")
            assert client.post("/api/preview/job", json=payload).status_code == 202
            deadline = time.monotonic() + 30
            while client.get(f"/api/preview/job/{job_id}/status").json()["state"] != "completed":
                assert time.monotonic() < deadline, f"{job_id} not completed"
                time.sleep(0.05)
            answer = client.get(f"/api/preview/job/{job_id}/artifact")
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        # Given a job's links, handed out while its preview was there
        first = render("link-job-0")
        assert client.get(first["url"]).status_code == 200
        # When enough newer jobs are rendered to push it out of the budget
        for n in range(1, 4):
            latest = render(f"link-job-{n}")
        # Then its links and its artifact route say why it is gone
        for url in (first["url"], first["manifestUrl"]):
            answer = client.get(url)
            assert answer.status_code == 404
            message = answer.json()["message"]
            assert message.startswith("the preview of job 'link-job-0' " + PRUNED), message
            assert WITHIN in message
        route = client.get("/api/preview/job/link-job-0/artifact")
        assert route.status_code == 404 and route.json()["message"] == message
        # ...while the newest is served, and a link to a file that is merely missing stays plain
        assert client.get(latest["url"]).status_code == 200
        path = urlsplit(latest["url"]).path.replace("preview.json", "poster.png")
        missing = client.get(f"{path}?{urlsplit(latest['url']).query}")
        assert missing.status_code == 403  # another file: the signature does not cover it
        (args.data_dir / urlsplit(latest["url"]).path.removeprefix("/artifacts/")).unlink()
        gone = client.get(latest["url"])
        assert (gone.status_code, gone.json()) == (404, {"message": "Not Found"})


# Threads read the index while another closes it, as a worker publishing does while the emulator
# resets its services; run in a child process, since the failure it guards against is a crash.
_CLOSE_WHILE_READING = """
import sys, threading, time
from pathlib import Path
from shared.artifacts.index import StoreIndex
index = StoreIndex(Path(sys.argv[1]))
index.open()
stop = time.monotonic() + 2
failures = []
def read():
    while time.monotonic() < stop:
        try:
            index.open()
            index.total()
            index.oldest(50)
        except Exception as exc:  # "Cannot operate on a closed database", say
            failures.append(repr(exc))
            return
threads = [threading.Thread(target=read) for _ in range(4)]
for thread in threads:
    thread.start()
while time.monotonic() < stop:
    index.close()
for thread in threads:
    thread.join()
print(failures[:3] or "ok")
"""


@pytest.mark.process
def test_closing_the_index_while_other_threads_read_it_is_safe(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run([sys.executable, "-c", _CLOSE_WHILE_READING, str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr[-2000:]
