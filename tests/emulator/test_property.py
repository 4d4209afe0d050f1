"""Property: whatever a client sends, the service answers as its OpenAPI document says, and
every job it admits is rendered or fails for a reason admission could not know.

The real template behind the emulator, its app driven in this process (a private Redis, the
render worker in the app's threads), requests generated from the document the app serves at
/openapi.json: its paths and parameters, request bodies from its payload schema (the batch
route's: the single route's bodies, several spliced into one `{"jobs": [...]}`), plus
hand-written strategies for what a schema does not say (coherent jobs that really render, at
tiny sizes; whole numbers written as floats, lone surrogates, integers past 4,300 digits,
numbers past the float range, odd Host headers, odd paths and bodies). For every answer: no
5xx (but the health route's documented 503), a documented status, a body of the documented
schema, the documented headers, and links on the API's own origin. For every job admitted
(202): once it is final, it completed, or it failed after one attempt for a reason that is
about neither a lease nor what admission checks (the contract, inline images).

Deterministic: a fixed list of hostile requests first, then Hypothesis derandomized, a bounded
number of examples, no example database and no shrinking (a finding is reported with the
smallest request that showed it; the hand-written ones are minimal already)."""

from __future__ import annotations

import base64
import collections
import io
import itertools
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import HypothesisDeprecationWarning
from PIL import Image
from starlette.applications import Starlette

from local.openapi import response_problems
from local.redis_server import RedisServer
from local.startup import ServeArgs
from tests.conftest import load_event
from tests.emulator.in_process import PORT, function_stdout, prepared_for, running, start_app
from tests.sigv4 import SigV4

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 800  # generated requests, after the hand-written ones
GENERATION_BUDGET_S = 50  # generation stops early past this (a slow machine stays in bounds)
SETTLE_BUDGET_S = 40  # time for the admitted jobs to become final once generation is done
OWN_ORIGINS = {f"http://{host}:{PORT}" for host in ("127.0.0.1", "localhost", "[::1]")}
JSON_TYPE = "application/json"


# --------------------------------------------------------------------------- requests


@dataclass
class Request:
    method: str
    path: str  # as sent (parameters filled in, percent-encoded)
    route: str  # the OpenAPI path it exercises
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytes | None = None
    label: str = ""  # a hand-written case says what it is
    pick: int | None = None  # a job route: use the pick-th admitted job's id, if there is one
    expect: tuple[int, ...] = ()  # a hand-written case: the statuses the contract allows it (README)

    def describe(self) -> str:
        lines = [f"{self.method} {_short(self.path, 300)}"]
        for name, value in self.headers:
            lines.append(f"  {name}: {_short(value.decode('latin-1'), 200)}")
        if self.body is not None:
            lines.append(f"  body ({len(self.body)} bytes): {_short(self.body.decode('utf-8', 'replace'), 600)}")
        if self.label:
            lines.insert(0, f"[{self.label}]")
        return "\n".join(lines)

    @property
    def size(self) -> int:
        return len(self.path) + sum(len(v) for _, v in self.headers) + len(self.body or b"")


def _short(text: str, limit: int) -> str:
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit // 2]!r} ... ({len(text)} characters) ... {text[-40:]!r}"


def enqueue(body: bytes | str, label: str = "", content_type: str | None = JSON_TYPE,
            headers: list[tuple[str, bytes]] | None = None, expect: tuple[int, ...] = ()) -> Request:
    raw = body.encode() if isinstance(body, str) else body
    sent = [("content-type", content_type.encode())] if content_type else []
    return Request("POST", "/api/preview/job", "/api/preview/job", [*sent, *(headers or [])], raw, label,
                   expect=expect)


# --------------------------------------------------------------------------- assets

def _image(kind: str, size: tuple[int, int] = (8, 6)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(buffer, format=kind)
    mime = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}[kind]
    return f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _cut_png() -> str:
    """A PNG whose header admission reads (8x6) and whose pixel data is cut off: only decoding
    finds it broken, so a job showing it fails when it runs."""
    whole = base64.b64decode(_image("PNG").split(",", 1)[1])
    return "data:image/png;base64," + base64.b64encode(whole[:40]).decode()


# The images jobs show: one of each format, one cut short, one in the (empty) asset folder.
IMAGES = [*(_image(kind) for kind in ("PNG", "JPEG", "GIF", "BMP", "WEBP")), _cut_png(), "slides/missing.png"]
_RENDER = json.loads(load_event("enqueue_job", "render")["body"])
VOICE = next(a["uri"] for a in _RENDER["previewRequest"]["assets"] if a["type"] == "audio")


def _bilevel_png(width: int, height: int) -> str:
    """A real 1-bit PNG of width x height: millions of pixels in a few kilobytes."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def minimal(job_id: str, **top: Any) -> dict[str, Any]:
    return {"jobId": job_id, "projectId": "prop", "requestId": f"r-{job_id}", "dryRun": True,
            "previewRequest": {"steps": [], "assets": [], "audio": {}}, **top}


def dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"))


# --------------------------------------------------------------------------- hand-written hostile requests


def hostile() -> list[Request]:
    """Requests a schema does not think of, each as small as its case allows; `expect` where
    the README states the answer."""
    def job(job_id: str, **top: Any) -> str:
        return dumps(minimal(job_id, **top))

    def shows(job_id: str, images: list[str], dry_run: bool = True) -> str:
        return dumps({**minimal(job_id, dryRun=dry_run), "previewRequest": {
            "steps": [{"durationSec": 0.5, "asset": f"i{n}"} for n in range(len(images))], "audio": {},
            "assets": [{"id": f"i{n}", "type": "image", "uri": uri} for n, uri in enumerate(images)],
            "options": {"resolution": "32x24", "fps": 1}}})

    accepted, refused = (202,), (400,)
    over_40_mp = _bilevel_png(7_000, 6_000)  # 42 MP
    at_40_mp = _bilevel_png(6_400, 6_250)  # 40 MP: 13 of them are 520 MP
    fps_render = {**minimal("h-fps-render", dryRun=False), "previewRequest": {
        "steps": [{"durationSec": 0.5}], "assets": [], "audio": {},
        "options": {"resolution": "32x24", "fps": 2.0, "format": "gif"}}}
    return [
        enqueue(job("h-attempts-float").replace('"dryRun"', '"attempts":6.0,"dryRun"'), "attempts 6.0",
                expect=accepted),
        enqueue(job("h-attempts-exp").replace('"dryRun"', '"attempts":1e1,"dryRun"'), "attempts 1e1",
                expect=accepted),
        enqueue(job("h-fps-float", previewRequest={"steps": [], "assets": [], "audio": {},
                                                   "options": {"fps": 30.0}}), "options.fps 30.0 (dry run)",
                expect=accepted),
        enqueue(dumps(fps_render), "options.fps 2.0 (a real render)", expect=accepted),
        enqueue(job("h-fps-exp", previewRequest={"steps": [], "assets": [], "audio": {}, "options": {"fps": 1}})
                .replace('"fps":1', '"fps":1e1'), "options.fps 1e1", expect=accepted),
        enqueue(job("h-surrogate-title").replace('"steps"', '"title":"\\ud800","steps"'),
                "lone surrogate in a string", expect=refused),
        enqueue(job("h-surrogate-key").replace('"steps"', '"metadata":{"\\udfff":1},"steps"'),
                "lone surrogate in a property name", expect=refused),
        enqueue(job("h-surrogate-id").replace('"requestId":"r-h-surrogate-id"', '"requestId":"r\\ud83d"'),
                "lone surrogate in an id", expect=refused),
        enqueue(job("h-digits").replace('"dryRun"', '"attempts":1' + "0" * 5000 + ',"dryRun"'),
                "attempts: an integer of 5001 digits", expect=refused),
        enqueue(job("h-digits-meta").replace('"steps"', '"metadata":{"n":-' + "9" * 4301 + '},"steps"'),
                "metadata: an integer of 4301 digits", expect=refused),
        enqueue(job("h-float-range").replace('"steps"', '"metadata":{"x":1e400},"steps"'),
                "metadata: 1e400", expect=refused),
        enqueue(job("h-nan").replace('"steps"', '"metadata":{"x":NaN},"steps"'), "NaN", expect=refused),
        enqueue(job("h-deep").replace('"steps"', '"metadata":{"x":' + "[" * 50_000 + "]" * 50_000 + '},"steps"'),
                "50,000 nested arrays", expect=refused),
        enqueue(job("h-dup").replace('"dryRun":true', '"dryRun":true,"dryRun":"yes"'), "duplicate key"),
        enqueue(b"\xef\xbb\xbf" + job("h-bom").encode(), "UTF-8 byte order mark"),
        enqueue(job("h-latin1").replace('"steps"', '"title":"caf\u00e9","steps"').encode("latin-1"),
                "a title in latin-1, not UTF-8"),
        enqueue(job("h-utf16").encode("utf-16"), "UTF-16"),
        enqueue(job("h-octet"), "as application/octet-stream (base64 to the function)",
                content_type="application/octet-stream", expect=accepted),
        enqueue(job("h-no-type"), "without a content type"),
        enqueue(job("h-id-newline").replace('"h-id-newline"', '"h-id-newline\\n"', 1), "jobId with a final newline",
                expect=refused),
        enqueue(job("x" * 129), "jobId of 129 characters", expect=refused),
        enqueue(job("h-big", previewRequest={"steps": [], "assets": [], "audio": {},
                                             "metadata": {"x": "y" * 300_000}}), "body over 256 KiB", expect=(413,)),
        enqueue(shows("h-image-42mp", [over_40_mp]), "an inline image of 42 megapixels", expect=refused),
        enqueue(shows("h-images-520mp", [at_40_mp] * 13), "13 inline images of 40 megapixels", expect=refused),
        enqueue(shows("h-images-480mp", [at_40_mp] * 12), "12 inline images of 40 megapixels (dry run)",
                expect=accepted),
        enqueue(job("h-host-evil"), "forged Host", headers=[("host", b"evil.example")]),
        enqueue(job("h-host-huge"), "Host of 10,000 characters", headers=[("host", b"a" * 10_000)]),
        enqueue(job("h-host-labels"), "Host of 3,000 short labels", headers=[("host", b"a." * 3_000 + b"a")]),
        enqueue(job("h-host-space"), "Host with a space and a path", headers=[("host", b"a b/c?d#e")]),
        enqueue(job("h-host-port"), "Host with a bad port", headers=[("host", b"127.0.0.1:99999999")]),
        enqueue(job("h-host-latin1"), "Host of latin-1 bytes", headers=[("host", b"\xe9vil.example")]),
        enqueue(job("h-host-empty"), "empty Host", headers=[("host", b"")]),
        enqueue(job("h-forwarded"), "X-Forwarded-Proto and -Host",
                headers=[("x-forwarded-proto", b"javascript"), ("x-forwarded-host", b"evil.example")]),
        Request("GET", "/api/preview/job/%FF%FE/status", "/api/preview/job/{jobId}/status", label="id not UTF-8",
                expect=refused),
        Request("GET", "/api/preview/job/%ED%A0%80/status", "/api/preview/job/{jobId}/status",
                label="id: an encoded surrogate", expect=refused),
        Request("GET", "/api/preview/job/" + "a" * 5000 + "/artifact", "/api/preview/job/{jobId}/artifact",
                label="id of 5000 characters", expect=refused),
        Request("GET", "/api/preview/job/%2e%2e%5c/status", "/api/preview/job/{jobId}/status", label="id ..\\",
                expect=refused),
        Request("GET", "/api/preview/job/h-attempts-float/status", "/api/preview/job/{jobId}/status",
                [("host", b"a" * 10_000)], label="status of a job admitted with attempts 6.0, a huge Host",
                expect=(200,)),
        Request("GET", "/api/preview/queue/metrics?x=%00", "/api/preview/queue/metrics", label="query with NUL",
                expect=(200,)),
        Request("GET", "/api/preview/worker/health", "/api/preview/worker/health", [("host", b"[::1")],
                label="health with a broken IPv6 Host", expect=(200,)),
    ]


# --------------------------------------------------------------------------- strategies from the document


class Schemas:
    """Hypothesis strategies for the values a (JSON Schema) schema of the OpenAPI document
    describes: the keywords the payload schema uses, arrays kept short (bodies stay small)."""

    MAX_ITEMS = 3

    def __init__(self, document: dict[str, Any]) -> None:
        self.components = document["components"]["schemas"]

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.components[node["$ref"].rsplit("/", 1)[1]]
        return node

    def values(self, node: dict[str, Any]) -> st.SearchStrategy[Any]:
        node = self.resolve(node)
        if "const" in node:
            return st.just(node["const"])
        if "enum" in node:
            return st.sampled_from(node["enum"])
        for key in ("oneOf", "anyOf"):
            if key in node:
                return st.one_of([self.values(option) for option in node[key]])
        kind = node.get("type")
        if isinstance(kind, list):
            return st.one_of([self.values({**node, "type": k}) for k in kind])
        if kind == "object":
            return self.objects(node)
        if kind == "array":
            items = self.values(node.get("items", {}))
            most = min(node.get("maxItems", self.MAX_ITEMS), self.MAX_ITEMS)
            return st.lists(items, min_size=min(node.get("minItems", 0), most), max_size=most)
        if kind == "string":
            return self.strings(node)
        if kind == "integer":
            return st.integers(node.get("minimum"), node.get("maximum"))
        if kind == "number":
            low, high = node.get("minimum"), node.get("maximum")
            whole = st.integers(None if low is None else math.ceil(low), None if high is None else math.floor(high))
            return whole | st.floats(low, high, allow_nan=False, allow_infinity=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        return json_values()

    def strings(self, node: dict[str, Any]) -> st.SearchStrategy[str]:
        low, high = node.get("minLength", 0), node.get("maxLength")
        if node.get("format") == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(
                lambda moment: moment.isoformat().replace("+00:00", "Z"))
        if "pattern" in node:
            strings = st.from_regex(node["pattern"], fullmatch=True)
            return strings.filter(lambda s: low <= len(s) <= (high or len(s)))
        return st.text(min_size=low, max_size=min(high or 40, 40))

    def objects(self, node: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        properties = node.get("properties", {})
        required = {name: self.values(properties.get(name, {})) for name in node.get("required", [])}
        optional = {name: self.values(schema) for name, schema in properties.items() if name not in required}
        fixed = st.fixed_dictionaries(required, optional=optional)
        if node.get("additionalProperties", True) is False:
            return fixed
        extra = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in properties), json_values(), max_size=2)
        return st.builds(lambda extra, known: {**extra, **known}, extra, fixed)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(
        max_size=20)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=8), inner, max_size=3), max_leaves=8)


def tame(document: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
    """A schema-valid job that really renders, cut down to a few frames at a tiny size (a dry
    run costs little whatever it asks)."""
    if not isinstance(document, dict) or document.get("dryRun") is not False:
        return document
    request = document.get("previewRequest")
    if not isinstance(request, dict):
        return document
    steps = request.get("steps")
    if isinstance(steps, list):
        del steps[3:]
        for step in steps:
            if isinstance(step, dict) and isinstance(step.get("durationSec"), int | float):
                step["durationSec"] = min(step["durationSec"], 1)
    options = request.get("options")
    if isinstance(options, dict):
        options["resolution"] = draw(st.sampled_from(["16x16", "32x24", "48x32"]))
        options["fps"] = draw(st.integers(1, 4))
    else:
        request["options"] = {"resolution": "32x24", "fps": 2}
    return document


@st.composite
def schema_jobs(draw: Callable[[st.SearchStrategy[Any]], Any], schemas: Schemas,
                payload: dict[str, Any]) -> Request:
    """A body the request schema describes (mostly refused by the rules beyond the schema)."""
    document = tame(draw(schemas.values(payload)), draw)
    return enqueue(dumps(document), content_type=draw(content_types()))


def content_types() -> st.SearchStrategy[str | None]:
    return st.sampled_from([JSON_TYPE, JSON_TYPE, JSON_TYPE, "application/json; charset=utf-8", "text/plain",
                            "application/octet-stream", None])


@st.composite
def coherent_jobs(draw: Callable[[st.SearchStrategy[Any]], Any], ids: Iterator[int]) -> Request:
    """A job every rule accepts, as a client would write it: steps showing inline images,
    narration and music, options at tiny sizes; a dry run or a real render. Mostly a new
    jobId (`ids` numbers them), now and then one of two again (a replay, or a conflict)."""
    again = draw(st.integers(0, 9)) == 0
    job_id = draw(st.sampled_from(["prop-again-1", "prop-again-2"])) if again else f"prop-{next(ids)}"
    images = draw(st.lists(st.sampled_from(range(len(IMAGES))), max_size=2, unique=True))
    assets = [{"id": f"img{i}", "type": "image", "uri": IMAGES[i]} for i in images]
    audio: dict[str, Any] = {}
    if draw(st.booleans()):
        assets.append({"id": "voice", "type": "audio", "uri": VOICE})
        audio[draw(st.sampled_from(["narration", "music"]))] = "voice"
        if draw(st.booleans()):
            audio["musicVolume"] = draw(st.floats(0, 1))
    texts = st.none() | st.text(max_size=30)
    steps = []
    for _ in range(draw(st.integers(0, 3))):
        step: dict[str, Any] = {"durationSec": draw(st.sampled_from([0.5, 0.75, 1, 1.0]))}
        for key in ("title", "text"):
            value = draw(texts)
            if value is not None:
                step[key] = value
        if images and draw(st.booleans()):
            step["asset"] = f"img{draw(st.sampled_from(images))}"
        steps.append(step)
    options = draw(st.fixed_dictionaries({}, optional={
        "resolution": st.sampled_from(["16x16", "32x24", "64x48", "48x64"]),
        "format": st.sampled_from(["mp4", "webm", "gif"]),
        "fps": st.integers(1, 6) | st.sampled_from([2.0, 5.0]),
        "includeCaptions": st.booleans(),
    }))
    options.setdefault("resolution", "32x24")
    options.setdefault("fps", 2)
    body: dict[str, Any] = {"steps": steps, "assets": assets, "audio": audio, "options": options}
    title = draw(texts)
    if title is not None:
        body["title"] = title
    document: dict[str, Any] = {
        "jobId": job_id, "projectId": draw(st.sampled_from(["prop-a", "prop-b"])),
        "requestId": f"req-{job_id}", "dryRun": draw(st.booleans()), "previewRequest": body}
    extra = draw(st.fixed_dictionaries({}, optional={
        "priority": st.sampled_from(["low", "normal", "high"]),
        "attempts": st.integers(0, 25) | st.sampled_from([1.0, 3.0]),
        "createdAt": st.just("2025-10-08T12:05:00.000Z"),
    }))
    document.update(extra)
    if draw(st.booleans()):
        body["metadata"] = draw(st.dictionaries(st.text(max_size=8), json_values(), max_size=3))
    return enqueue(dumps(document), content_type=draw(content_types()))


@st.composite
def mutated_jobs(draw: Callable[[st.SearchStrategy[Any]], Any], ids: Iterator[int]) -> Request:
    """A coherent job with one value swapped for something else (another type, a number written
    another way, a lone surrogate, a huge literal), spliced into the JSON text."""
    request = draw(coherent_jobs(ids))
    text = (request.body or b"").decode()
    values = [m for m in re.finditer(r'(?<=:)(-?[0-9][0-9.eE+-]*|"(?:[^"\\]|\\.)*"|true|false|null)', text)]
    if not values:
        return request
    target = draw(st.sampled_from(values))
    replacement = draw(st.sampled_from([
        "6.0", "1e1", "1E+1", "-0", "0.5", "1e400", "-1e400", "1" + "0" * 4400, "12345678901234567890",
        '"\\ud800"', '"a\\udfffb"', '"\\u0000"', '""', '" "', "[]", "{}", "null", "true", '"6"',
        '"' + "x" * 2000 + '"', "NaN", "Infinity",
    ]))
    body = text[:target.start()] + replacement + text[target.end():]
    return enqueue(body, label=f"{target.group()[:40]} -> {replacement[:40]}", content_type=JSON_TYPE)


@st.composite
def batches(draw: Callable[[st.SearchStrategy[Any]], Any], ids: Iterator[int]) -> Request:
    """POST /api/preview/jobs with 1 to 5 of the single route's bodies (coherent, mutated or
    raw) spliced into `{"jobs": [...]}`: each answered in its place, or the batch refused whole."""
    jobs = draw(st.lists(st.one_of(coherent_jobs(ids), mutated_jobs(ids), raw_bodies()), min_size=1, max_size=5))
    raw = b'{"jobs":[' + b",".join(job.body or b"" for job in jobs) + b"]}"
    return Request("POST", "/api/preview/jobs", "/api/preview/jobs", [("content-type", JSON_TYPE.encode())], raw)


def raw_bodies() -> st.SearchStrategy[Request]:
    return st.builds(enqueue, st.binary(max_size=64) | st.text(max_size=64).map(str.encode)
                     | json_values().map(lambda v: dumps(v).encode()), content_type=content_types())


def host_headers() -> st.SearchStrategy[list[tuple[str, bytes]]]:
    hosts = st.sampled_from([b"127.0.0.1:3000", b"localhost:3000", b"evil.example", b"EVIL.example:443",
                             b"a" * 300, b"x y", b"h/p", b"[::1]:3000", b"127.0.0.1:3000.", b"\x00"]) | st.binary(
        min_size=1, max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b)
    return st.just([]) | hosts.map(lambda h: [("host", h)])


def job_id_texts() -> st.SearchStrategy[str]:
    """jobId values, as one path segment: anything but '/' and the dot segments."""
    return st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1,
                   max_size=140).filter(lambda s: s not in (".", ".."))


def requests_for(document: dict[str, Any]) -> st.SearchStrategy[Request]:
    schemas = Schemas(document)
    ids = itertools.count()
    strategies: list[st.SearchStrategy[Request]] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            if "requestBody" in operation and path == "/api/preview/jobs":
                strategies.append(st.builds(_with_headers, batches(ids), host_headers()))
            elif "requestBody" in operation:
                payload = operation["requestBody"]["content"][JSON_TYPE]["schema"]
                bodies = st.one_of(coherent_jobs(ids), coherent_jobs(ids), mutated_jobs(ids),
                                   schema_jobs(schemas, payload), raw_bodies())
                strategies.append(st.builds(_with_headers, bodies, host_headers()))
            elif params:
                strategies.append(st.builds(_job_route, st.just(method.upper()), st.just(path), job_id_texts(),
                                            st.none() | st.integers(0, 10**6), host_headers()))
            else:
                strategies.append(st.builds(Request, st.just(method.upper()), st.just(path), st.just(path),
                                            host_headers()))
    return st.one_of(strategies)


def _with_headers(request: Request, headers: list[tuple[str, bytes]]) -> Request:
    request.headers = [*request.headers, *headers]
    return request


def _job_route(method: str, route: str, job_id: str, pick: int | None, headers: list[tuple[str, bytes]]) -> Request:
    path = route.replace("{jobId}", quote(job_id, safe=""))
    return Request(method, path, route, headers, pick=pick)


# --------------------------------------------------------------------------- findings


@dataclass
class Finding:
    what: str  # the kind of problem, values left out, so that one cause is listed once
    detail: str
    request: Request


class Findings:
    def __init__(self) -> None:
        self.found: dict[str, Finding] = {}
        self.count: dict[str, int] = {}

    def add(self, what: str, detail: str, request: Request) -> None:
        key = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", what)[:200]
        self.count[key] = self.count.get(key, 0) + 1
        known = self.found.get(key)
        if known is None or request.size < known.request.size:
            self.found[key] = Finding(what, detail, request)

    def report(self) -> str:
        parts = [f"{len(self.found)} distinct problems:"]
        for key, finding in self.found.items():
            parts.append(f"\n- {finding.what} ({self.count[key]} requests)\n  {finding.detail[:1500]}\n"
                         f"  smallest request:\n{_indent(finding.request.describe())}")
        return "\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# --------------------------------------------------------------------------- the test


@pytest.fixture
def app(tmp_path_factory: pytest.TempPathFactory, private_redis: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> Starlette:
    redis.Redis.from_url(private_redis.url).flushall()
    args = ServeArgs(data_dir=tmp_path_factory.mktemp("property") / "data")
    prepared = prepared_for(args, private_redis.url, PREVIEW_QUEUE_MAX="5000")
    app = start_app(args, prepared, monkeypatch, redis_description=private_redis.url)
    # Room for every job of the run: none refused for a full queue (above), none trimmed before it
    # is checked (the template does not set these; the services read them when the app starts).
    monkeypatch.setenv("PREVIEW_KEEP_COMPLETED_COUNT", "5000")
    monkeypatch.setenv("PREVIEW_KEEP_FAILED_COUNT", "5000")
    return app


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """What Hypothesis keeps on disk even without an example database (a cache of the source's
    constants) goes to the test's temporary folder, not into the work tree."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture
def client(app: Starlette) -> Iterator[httpx.Client]:
    with function_stdout(), running(app) as client:
        client.auth = SigV4()  # the template's routes use IAM authorization
        deadline = time.monotonic() + 10
        while client.get("/api/preview/worker/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        yield client


@dataclass
class Admitted:
    job_id: str
    request: Request
    payload: dict[str, Any]


class Exercise:
    """Sends requests, checks every answer against the document, keeps the admitted jobs."""

    def __init__(self, client: httpx.Client, document: dict[str, Any], findings: Findings) -> None:
        self.client = client
        self.document = document
        self.findings = findings
        self.admitted: dict[str, Admitted] = {}
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.reasons: collections.Counter[str] = collections.Counter()  # why admitted jobs failed

    def send(self, request: Request) -> httpx.Response | None:
        if request.pick is not None and self.admitted:
            ids = list(self.admitted)
            request.path = re.sub(r"/job/[^/]+/", f"/job/{ids[request.pick % len(ids)]}/", request.path)
        self.sent += 1
        try:
            response = self.client.request(request.method, request.path, content=request.body,
                                           headers=request.headers)
        except Exception as exc:  # the app itself raised through the transport
            self.findings.add(f"the app raised {type(exc).__name__}", repr(exc)[:500], request)
            return None
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        self.check(request, response)
        return response

    def check(self, request: Request, response: httpx.Response) -> None:
        status = response.status_code
        where = f"{request.method} {request.route}"
        if request.expect and status not in request.expect:
            self.findings.add(f"{request.label}: answered {status}, the README says {request.expect}",
                              response.text[:500], request)
        if status >= 500 and not (status == 503 and request.route.endswith("/worker/health")):
            self.findings.add(f"{where}: {status}", response.text[:500], request)
        try:
            body = response.json()
        except ValueError:
            self.findings.add(f"{where}: {status} body is not JSON", response.text[:300], request)
            return
        for problem in response_problems(self.document, request.method, request.route, status, body,
                                         headers=response.headers.get):
            # "202 body at /statusUrl: <the value and the rule>": one finding per place
            self.findings.add(f"{where}: {problem.split(': ', 1)[0]} is not as documented",
                              f"{problem[:600]}\n  body: {json.dumps(body)[:600]}", request)
        if request.route == "/api/preview/job" and status in (200, 202) and isinstance(body, dict):
            for name in ("statusUrl", "artifactUrl"):
                origin = _origin(str(body.get(name, "")))
                if origin not in OWN_ORIGINS:
                    self.findings.add(f"{where}: {status} {name} not on the API's own origin",
                                      f"{name} = {str(body.get(name))[:300]!r}", request)
            if status == 202 and isinstance(body.get("jobId"), str):
                self.admitted[body["jobId"]] = Admitted(body["jobId"], request, _payload(request))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _payload(request: Request) -> dict[str, Any]:
    try:
        document = json.loads(request.body or b"")
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


# What admission checks (README: "What admission accepts, the worker renders, or fails for a
# reason admission could not know"): a failure for one of these is admission's miss.
_ADMISSION_REASONS = re.compile(r"invalid payload|megapixels|has no pixels|is not a PNG|data: URI", re.I)


def _inline_only(payload: dict[str, Any]) -> bool:
    request = payload.get("previewRequest")
    assets = request.get("assets", []) if isinstance(request, dict) else []
    return all(isinstance(a, dict) and str(a.get("uri", "")).startswith("data:") for a in assets)


def settle(exercise: Exercise, findings: Findings, budget_s: float) -> dict[str, int]:
    """Wait for every admitted job to be final; check how it ended, and its answers then."""
    outcomes = {"completed": 0, "failed": 0, "unfinished": 0}
    pending = dict(exercise.admitted)
    deadline = time.monotonic() + budget_s
    while pending:
        for job_id, job in list(pending.items()):
            status_request = Request("GET", f"/api/preview/job/{job_id}/status", "/api/preview/job/{jobId}/status")
            response = exercise.send(status_request)
            if response is None or response.status_code != 200:
                pending.pop(job_id)
                findings.add(f"an admitted job's status answers {None if response is None else response.status_code}",
                             "" if response is None else response.text[:300], job.request)
                continue
            status = response.json()
            state, reason = status.get("state"), status.get("failedReason") or ""
            if state in ("waiting", "active") and time.monotonic() < deadline:
                continue
            pending.pop(job_id)
            if state == "completed":
                outcomes["completed"] += 1
                fetch_artifact(exercise, job)
            elif state == "failed":
                outcomes["failed"] += 1
                exercise.reasons[re.sub(r"'[^']*'", "_", reason)[:70]] += 1
                if "lease" in reason.lower():
                    findings.add("an admitted job failed on a lease", reason, job.request)
                elif status.get("attemptsMade") != 1:
                    findings.add("an admitted job failed after more than one attempt",
                                 f"attemptsMade {status.get('attemptsMade')}: {reason}", job.request)
                elif _ADMISSION_REASONS.search(reason) and (reason.lower().startswith("invalid payload")
                                                           or _inline_only(job.payload)):
                    findings.add(f"an admitted job failed for a reason admission checks: {reason[:80]}", reason,
                                 job.request)
                exercise.send(Request("GET", f"/api/preview/job/{job_id}/artifact",
                                      "/api/preview/job/{jobId}/artifact"))
            elif state == "delayed":
                outcomes["failed"] += 1
                findings.add("an admitted job failed its first attempt and waits for a retry", reason, job.request)
            else:
                outcomes["unfinished"] += 1
                findings.add(f"an admitted job is still {state} after {budget_s:.0f} s", json.dumps(status),
                             job.request)
        if pending:
            time.sleep(0.1)
    return outcomes


def fetch_artifact(exercise: Exercise, job: Admitted) -> None:
    response = exercise.send(Request("GET", f"/api/preview/job/{job.job_id}/artifact",
                                     "/api/preview/job/{jobId}/artifact"))
    if response is None or response.status_code != 200:
        exercise.findings.add("a completed job has no artifact", "" if response is None else response.text[:300],
                              job.request)
        return
    document = response.json()
    main = exercise.client.get(document["url"])
    listed = {f["url"]: f["bytes"] for f in document.get("files", [])}
    if main.status_code != 200 or len(main.content) != listed.get(document["url"], len(main.content)):
        exercise.findings.add("a completed job's main file is not served as listed",
                              f"{main.status_code}, {len(main.content)} bytes", job.request)


@pytest.mark.usefixtures("hypothesis_home")
def test_every_answer_is_documented_and_every_admitted_job_renders(client: httpx.Client) -> None:
    started = time.monotonic()
    document = client.get("/openapi.json").json()
    findings = Findings()
    exercise = Exercise(client, document, findings)

    # 1. the hand-written requests, each a minimal case of its own
    for request in hostile():
        exercise.send(request)
    hand_written = exercise.sent

    # 2. generated from the document, derandomized and bounded
    generation_deadline = time.monotonic() + GENERATION_BUDGET_S

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much, HealthCheck.large_base_example])
    @given(request=requests_for(document))
    def generated(request: Request) -> None:
        if time.monotonic() < generation_deadline:
            exercise.send(request)

    with warnings.catch_warnings():
        # The app's worker threads draw a failed job's retry jitter from the global `random`
        # while Hypothesis generates; Hypothesis would take that for a strategy using `random`.
        warnings.filterwarnings("ignore", "Do not use the `random` module inside strategies",
                                HypothesisDeprecationWarning)
        generated()
    generated_count = exercise.sent - hand_written

    # 3. every admitted job to its end
    outcomes = settle(exercise, findings, SETTLE_BUDGET_S)
    elapsed = time.monotonic() - started
    print(f"\nproperty: {hand_written} hand-written + {generated_count} generated requests, "
          f"{exercise.sent} in all with the follow-ups; statuses {dict(sorted(exercise.statuses.items()))}; "
          f"{len(exercise.admitted)} jobs admitted: {outcomes}, failed for {dict(exercise.reasons)}; {elapsed:.1f} s")
    assert not findings.found, findings.report()
