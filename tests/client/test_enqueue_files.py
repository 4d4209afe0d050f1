"""`preview enqueue FILE FILE...` against a real emulator: each file admitted as if alone, the
reports in the order given, the exit status the worst of theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.client.conftest import assert_exit, client_env, job_file, keyed_args, preview
from tests.emulator.conftest import Emulator

pytestmark = [pytest.mark.process, pytest.mark.slow]


def test_several_files_are_each_admitted_and_reported_in_order(keyed: Emulator, tmp_path: Path) -> None:
    files = [job_file(tmp_path, "minimal", jobId=f"many-{i}") for i in range(6)]
    invalid = job_file(tmp_path, "invalid-payload", jobId="many-bad")
    alone = preview(keyed_args(keyed, "enqueue", str(invalid)), client_env(tmp_path))
    names = [str(files[0]), str(invalid), *map(str, files[1:])]
    result = preview(keyed_args(keyed, "enqueue", *names), client_env(tmp_path))
    # The worst status of the files: the invalid one's, as when it is sent alone
    assert alone.returncode != 0
    assert_exit(result, alone.returncode)
    lines = result.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"admitted many-{i}" for i in range(6)]
    assert f"preview: {invalid}: error:" in result.stderr
    # Sent again: identical replays, in the same order
    replays = preview(keyed_args(keyed, "enqueue", *names), client_env(tmp_path))
    assert [line.split(" (")[0] for line in replays.stdout.splitlines()] == \
        [f"already admitted many-{i}" for i in range(6)]
    # With --json: one document per file, in the order given
    again = preview(keyed_args(keyed, "--json", "enqueue", *names), client_env(tmp_path))
    assert_exit(again, alone.returncode)
    documents = json.loads(again.stdout)
    assert [d["file"] for d in documents] == names
    assert documents[1]["error"]["status"] == 400
    admitted = [d for i, d in enumerate(documents) if i != 1]
    assert [d["admission"]["jobId"] for d in admitted] == [f"many-{i}" for i in range(6)]
