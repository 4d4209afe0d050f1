"""`preview validate FILE...`: offline, the contract admission applies (the same body decoding and
validation), every problem with its JSON Pointer; exit 0 when every file is valid, 2 when one is
invalid, 3 when one cannot be read (the worst wins). No service, no Redis, no socket: the unit
tests here run with sockets and processes blocked."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from preview_client.cli import main
from tests.client.conftest import assert_exit, client_env, job_body, job_file, preview
from tests.conftest import EVENTS


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["validate", *args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_valid_file_exits_0(tmp_path: Path) -> None:
    code, out, _ = run(str(job_file(tmp_path, "render")))
    assert code == 0
    assert out.strip().endswith(": valid")


def test_every_error_is_listed_with_its_json_pointer(tmp_path: Path) -> None:
    code, out, _ = run(str(job_file(tmp_path, "invalid-payload")))
    assert code == 2
    pointers = {line.split(":")[0].strip() for line in out.splitlines()[1:]}
    assert pointers == {"/jobId", "/dryRun", "/priority", "/previewRequest/steps", "/previewRequest/audio",
                        "/requestId"}
    assert "the job payload has 6 errors" in out


def test_rules_beyond_the_schema_are_applied_too(tmp_path: Path) -> None:
    document = json.loads(job_body("render"))
    document["previewRequest"]["steps"][0]["asset"] = "no-such-asset"
    document["previewRequest"]["options"] = {"resolution": "321x240"}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(document))
    code, out, _ = run(str(path))
    assert code == 2
    assert "/previewRequest/steps/0/asset: refers to unknown asset id 'no-such-asset'" in out
    assert "/previewRequest/options/resolution: resolution 321x240 must have even width and height" in out


def test_not_json_is_invalid_at_the_documents_pointer(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"jobId": NaN}')
    code, out, _ = run(str(path))
    assert code == 2
    assert "  /: request body is not valid JSON" in out


def test_an_unreadable_file_exits_3_and_the_worst_verdict_wins(tmp_path: Path) -> None:
    valid, invalid = job_file(tmp_path, "minimal"), job_file(tmp_path, "invalid-payload")
    missing = tmp_path / "missing.json"
    code, out, _ = run(str(valid), str(invalid), str(missing))
    assert code == 3
    lines = out.splitlines()
    assert lines[0] == f"{valid}: valid"
    assert f"{invalid}: invalid: the job payload has 6 errors" in lines
    assert f"{missing}: unreadable: No such file or directory" in lines
    assert run(str(valid), str(invalid))[0] == 2
    assert run(str(tmp_path))[0] == 3  # a folder cannot be read as a file


def test_json_output_for_scripts(tmp_path: Path) -> None:
    valid, invalid = job_file(tmp_path, "minimal"), job_file(tmp_path, "invalid-payload")
    code, out, _ = run("--json", str(valid), str(invalid))
    assert code == 2
    reports = json.loads(out)
    assert [r["valid"] for r in reports] == [True, False]
    assert {"path": "/jobId", "message": "42 is not of type 'string'"} in reports[1]["errors"]


def test_s3_buckets_are_checked_when_the_services_are_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = json.loads(job_body("render"))
    document["previewRequest"]["assets"][0]["uri"] = "s3://other-bucket/editor.png"
    path = tmp_path / "s3.json"
    path.write_text(json.dumps(document))
    monkeypatch.delenv("PREVIEW_ASSET_BUCKETS", raising=False)
    code, out, _ = run(str(path))  # not known offline: let through, with a note
    assert code == 0
    assert "note: s3:// buckets not checked (other-bucket)" in out
    code, out, _ = run("--asset-buckets", "preview-assets", str(path))
    assert code == 2
    assert "/previewRequest/assets/0/uri: bucket 'other-bucket' is not an allowed asset bucket" in out
    monkeypatch.setenv("PREVIEW_ASSET_BUCKETS", "other-bucket")
    assert run(str(path))[0] == 0


def test_the_body_limit_is_admissions(tmp_path: Path) -> None:
    path = job_file(tmp_path, "render")
    code, out, _ = run("--max-body-bytes", "1024", str(path))
    assert code == 2
    assert "  /: request body exceeds 1024 bytes" in out


def test_the_same_verdict_as_admission(tmp_path: Path) -> None:
    """Every enqueue fixture's body: invalid offline exactly when events/expected.json says the
    enqueue handler answers it 400 or 413 (409 and 429 are about the queue, not the body)."""
    expected = json.loads((EVENTS / "expected.json").read_text())
    for fixture in sorted((EVENTS / "enqueue_job").glob("*.json")):
        event = json.loads(fixture.read_text())
        body = event.get("body") or ""
        path = tmp_path / fixture.name
        path.write_bytes(base64.b64decode(body) if event.get("isBase64Encoded") else body.encode())
        code, out, _ = run(str(path))
        status = expected[f"enqueue_job/{fixture.stem}"]["status"]
        assert code == (2 if status in (400, 413) else 0), (fixture.name, status, out)


@pytest.mark.process
def test_the_console_script_and_python_m_give_the_same_answer(tmp_path: Path) -> None:
    valid, invalid = job_file(tmp_path, "minimal"), job_file(tmp_path, "invalid-payload")
    env = client_env(tmp_path)
    result = preview(["validate", str(valid), str(invalid)], env)
    assert_exit(result, 2)
    script = shutil.which("preview", path=str(Path(sys.executable).parent))
    assert script, "no `preview` console script beside the interpreter: reinstall the project (make venv)"
    installed = subprocess.run([script, "validate", str(valid), str(invalid)], env=env, capture_output=True,
                               text=True, timeout=60, cwd=tmp_path)  # not the project folder: the installed one
    assert installed.returncode == 2, installed.stderr
    assert installed.stdout == result.stdout
    stdin = preview(["validate", "-"], env, stdin=job_body("minimal"))
    assert_exit(stdin, 0)
    assert stdin.stdout == "-: valid\n"
