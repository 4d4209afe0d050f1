"""The payload schema compiled ahead (shared/payload_check.py) is what fastjsonschema makes of
the schema now, admission uses it instead of compiling at the enqueue function's cold start,
and a module made from another schema is never used."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import fastjsonschema
import pytest

from deploy import payload_check as generator
from shared import contract, payload_check
from tests.conftest import ROOT, load_event


@pytest.fixture(autouse=True)
def fresh_validator() -> Iterator[None]:
    contract.fast_validator.cache_clear()
    yield
    contract.fast_validator.cache_clear()


def test_the_module_is_what_the_schema_gives() -> None:
    assert generator.TARGET.read_text() == contract.fast_validator_source(), \
        "shared/payload_check.py is out of date: run python -m deploy.payload_check"
    assert generator.main(["--check"]) == 0


def test_admission_compiles_no_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the schema was compiled at run time")

    monkeypatch.setattr(fastjsonschema, "compile", refuse)
    fast = contract.fast_validator()
    assert isinstance(fast, functools.partial) and fast.func is payload_check.validate
    document = json.loads(load_event("enqueue_job", "success")["body"])
    assert contract.schema_errors(document) == []
    with pytest.raises(payload_check.JsonSchemaValueException):
        fast({**document, "jobId": ".hidden"})
    with pytest.raises(payload_check.JsonSchemaValueException):  # the format checker is the one passed in
        fast({**document, "createdAt": "2026-13-01T00:00:00Z"})


def test_a_module_of_another_schema_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payload_check, "DIGEST", "0" * 64)
    fast = contract.fast_validator()
    assert fast is not None and not (isinstance(fast, functools.partial) and fast.func is payload_check.validate)
    document = json.loads(load_event("enqueue_job", "success")["body"])
    assert fast(document) is not None
    with pytest.raises(fastjsonschema.JsonSchemaException):
        fast({**document, "jobId": ".hidden"})


def test_the_digest_follows_the_schema_and_the_generator() -> None:
    digest = contract.fast_validator_digest(contract.SCHEMA, payload_check.VERSION)
    assert digest == payload_check.DIGEST and payload_check.VERSION == fastjsonschema.VERSION
    changed = {**contract.SCHEMA, "required": [*contract.SCHEMA["required"], "extra"]}
    assert contract.fast_validator_digest(changed, payload_check.VERSION) != digest
    assert contract.fast_validator_digest(contract.SCHEMA, "0.0.0") != digest


@pytest.mark.process
def test_the_enqueue_cold_start_loads_no_code_generator() -> None:
    probe = """
import json, sys
import functions.enqueue_job.app
from shared import contract
from tests.conftest import load_event
assert contract.schema_errors(json.loads(load_event("enqueue_job", "success")["body"])) == []
print(json.dumps(sorted(m for m in sys.modules if m.startswith("fastjsonschema"))))
"""
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:9/0", "ARTIFACT_BUCKET": "b"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    assert json.loads(result.stdout) == []
