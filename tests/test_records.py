"""A lazy dataclass is the dataclass `@dataclass` makes, made at its first construction; the
HTTP functions' cold start makes none of the worker's records or the typed request, and loads
no local store (nor its SQLite index) when the artifacts are in S3."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from dataclasses import field
from pathlib import Path

import pytest

from shared.records import build, lazy_dataclass
from tests.conftest import ROOT


def declare() -> tuple[type, type, type]:
    @lazy_dataclass(frozen=True)
    class Point:
        """A point."""

        x: int
        y: int = 0
        tags: tuple[str, ...] = ()

    @lazy_dataclass
    class Bag:
        name: str
        items: list[int] = field(default_factory=list)
        secret: str = field(default="", repr=False, compare=False)

        def __post_init__(self) -> None:
            self.items.append(len(self.name))

    @lazy_dataclass(frozen=True)
    class Point3(Point):
        z: int = 0

    return Point, Bag, Point3


def test_nothing_is_made_before_the_first_construction() -> None:
    Point, Bag, Point3 = declare()
    assert not any(dataclasses.is_dataclass(cls) for cls in (Point, Bag, Point3))
    Point3(1, 2, z=3)
    assert dataclasses.is_dataclass(Point3) and dataclasses.is_dataclass(Point)  # its base first
    assert not dataclasses.is_dataclass(Bag)


def test_it_behaves_as_the_dataclass() -> None:
    Point, Bag, Point3 = declare()
    point = Point(1, y=2)
    assert (point.x, point.y, point.tags) == (1, 2, ())
    assert repr(point).endswith("Point(x=1, y=2, tags=())") and point == Point(1, 2)
    assert hash(point) == hash(Point(1, 2)) and point != Point(2, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    assert dataclasses.replace(point, y=7) == Point(1, 7)
    assert Point.__doc__ == "A point." and Point.__match_args__ == ("x", "y", "tags")  # type: ignore[attr-defined]
    bag, other = Bag("abc"), Bag("abc", secret="s")
    assert bag.items == [3] and other.items == [3] and bag.items is not other.items
    assert bag == other and "secret" not in repr(other)
    bag.name = "changed"  # not frozen
    assert Point3(1, 2, (), 3) == Point3(x=1, y=2, z=3) and dataclasses.asdict(Point3(1)) == {
        "x": 1, "y": 0, "tags": (), "z": 0}
    Fresh = declare()[0]
    build(Fresh)
    assert dataclasses.is_dataclass(Fresh)


def test_threads_constructing_first_all_get_the_dataclass() -> None:
    Point = declare()[0]
    made: list[object] = []
    start = threading.Barrier(8)

    def construct(i: int) -> None:
        start.wait()
        made.append(Point(i))

    threads = [threading.Thread(target=construct, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.x for p in made) == list(range(8))  # type: ignore[attr-defined]


LAZY = ["shared.contract.AssetSource", "shared.contract.Asset", "shared.contract.Step", "shared.contract.JobRequest",
        "shared.queue.ClaimedJob", "shared.queue.ClaimOutcome"]


@pytest.mark.process
def test_the_status_function_cold_start_makes_none_of_them() -> None:
    probe = f"""
import dataclasses, importlib, json
import functions.job_status.app
found = {{}}
for path in {LAZY!r}:
    module, _, name = path.rpartition(".")
    found[path] = dataclasses.is_dataclass(getattr(importlib.import_module(module), name))
print(json.dumps(found))
"""
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:9/0", "ARTIFACT_BUCKET": "b"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    assert json.loads(result.stdout) == dict.fromkeys(LAZY, False)


@pytest.mark.process
def test_with_an_artifact_bucket_the_local_store_is_never_loaded(tmp_path: Path) -> None:
    probe = """
import json, sys
import functions.job_artifact.app, functions.job_status.app, functions.enqueue_job.app
names = ("shared.artifacts.local", "shared.artifacts.index", "sqlite3")
print(json.dumps(sorted(m for m in names if m in sys.modules)))
"""
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:9/0", "ARTIFACT_BUCKET": "b"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    assert json.loads(result.stdout) == []
    local_env = {**env, "ARTIFACT_BUCKET": "", "DATA_DIR": str(tmp_path)}
    local = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=local_env, capture_output=True, text=True,
                           timeout=60, check=True)
    assert "shared.artifacts.local" in json.loads(local.stdout)  # the local store's module, when it is used
