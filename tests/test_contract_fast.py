"""The compiled schema check admission runs first is never more lenient than the schema as
jsonschema reads it: on the fixtures' documents and on many mutations of them, whatever it
accepts jsonschema accepts, and a document it refuses still gets jsonschema's problems."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import contract
from tests.conftest import EVENTS

SEEDS: list[dict[str, Any]] = []
for path in sorted((EVENTS / "enqueue_job").glob("*.json")):
    body = json.loads(path.read_text()).get("body")
    try:
        document = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        document = None
    if isinstance(document, dict):
        SEEDS.append(document)

TRICKY_STRINGS = ["", "job-1\n", ".hidden", "a/b", "x" * 129, "1280x720", "1281x720\n", "s3://bucket/key",
                  "data:image/png;base64,AAAA", "../up", "/abs", "http://host/x", "2025-10-08T12:05:00.000Z",
                  # leap second: a date-time checker of its own would take it, jsonschema's does not
                  "2025-10-08T25:05:00Z", "2025-02-30T12:05:00Z", "2025-10-08T12:05:60Z", "2025-10-08",
                  "mp4", "gif\n", "high", "HIGH", "image", "audio", "\u00e9"]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.floats(-1, 100, allow_nan=False)
    | st.sampled_from(TRICKY_STRINGS) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["id", "type", "uri", "title", "durationSec", "asset", "x"]), inner, max_size=3),
    max_leaves=6)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_paths(value, (*prefix, i)))
    return found


def _set(document: Any, path: tuple[Any, ...], value: Any, key: str | None) -> Any:
    if not path:
        return value
    node = document
    for part in path[:-1]:
        node = node[part]
    if key is not None and isinstance(node[path[-1]], dict):
        node[path[-1]][key] = value  # a new or replaced property
    else:
        node[path[-1]] = value
    return document


def _agrees(document: Any) -> None:
    fast = contract.fast_validator()
    assert fast is not None
    try:
        fast(document)
        accepted = True
    except Exception:
        accepted = False
    problems = list(contract.validator().iter_errors(document))
    if accepted:
        assert problems == [], (document, [p.message for p in problems])
    assert (contract.schema_errors(document) == []) == (problems == [])


def test_the_fixtures_agree() -> None:
    assert len(SEEDS) >= 5
    for document in SEEDS:
        _agrees(document)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(16)), where=st.integers(0, 10_000), value=values,
       key=st.none() | st.sampled_from(["jobId", "priority", "attempts", "createdAt", "resolution", "fps", "format",
                                        "steps", "assets", "audio", "musicVolume", "extra"]))
def test_mutated_documents_agree(seed: int, where: int, value: Any, key: str | None) -> None:
    document = copy.deepcopy(SEEDS[seed % len(SEEDS)])
    paths = _paths(document)
    _agrees(_set(document, paths[where % len(paths)], value, key))


def test_every_string_of_the_fixtures_replaced_by_tricky_ones_agrees() -> None:
    """Patterns (ids, URIs, resolution) and formats (dates) are where two engines differ most:
    every string value of every fixture document, replaced by each tricky string in turn."""
    checked = 0
    for seed in SEEDS:
        for path in _paths(seed):
            node: Any = seed
            for part in path:
                node = node[part]
            if not isinstance(node, str):
                continue
            for text in TRICKY_STRINGS:
                _agrees(_set(copy.deepcopy(seed), path, text, None))
                checked += 1
    assert checked > 100


def _admission_agrees(document: Any, *, acyclic: bool = True) -> None:
    """`validate_for_admission` answers as `validate_payload` does, with the text admission
    would make of the payload."""
    from shared.errors import InvalidPayload
    from shared.settings import Settings

    settings = Settings()
    alone, together = copy.deepcopy(document), copy.deepcopy(document)
    try:
        expected: Any = contract.validate_payload(alone, settings)
        expected = (expected, contract.canonical_json(expected))
    except (InvalidPayload, TypeError, ValueError) as exc:
        expected = (type(exc), getattr(exc, "errors", None))
    try:
        answer: Any = contract.validate_for_admission(together, settings)
    except (InvalidPayload, TypeError, ValueError) as exc:
        answer = (type(exc), getattr(exc, "errors", None))
    assert answer == expected
    assert not acyclic or alone == together  # the same numbers made whole, in place


ADMISSION_VALUES = [3.0, 30.0, 2.5, "\ud800", "caf\u00e9", {"\udfff": 1}, {1, 2}, ("a", 1), None]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(16)), where=st.integers(0, 10_000),
       value=values | st.sampled_from(ADMISSION_VALUES),
       key=st.none() | st.sampled_from(["attempts", "fps", "title", "metadata", "durationSec", "extra"]))
def test_admission_serialises_once_and_answers_as_validation(seed: int, where: int, value: Any,
                                                             key: str | None) -> None:
    document = copy.deepcopy(SEEDS[seed % len(SEEDS)])
    paths = _paths(document)
    _admission_agrees(_set(document, paths[where % len(paths)], value, key))


def test_admission_of_the_fixtures_and_of_numbers_made_whole() -> None:
    for document in SEEDS:
        _admission_agrees(document)
        _admission_agrees({**document, "attempts": 3.0})  # stored as 3: the text is made again
    looped: dict[str, Any] = {}
    looped["self"] = looped
    _admission_agrees({**SEEDS[0], "previewRequest": {**SEEDS[0]["previewRequest"], "metadata": looped}},
                      acyclic=False)
