"""The job contract: `schemas/preview-job.schema.json`, the limits it states (read from it),
the rules a JSON Schema cannot express, the one classifier of asset URIs, and the typed,
defaults-applied request that the renderer works from.

Admission calls `validate_payload` (every problem as `{path, message}`, JSON Pointer paths);
the worker calls `config_errors` (only what depends on configuration can have changed since)
and `JobRequest.from_payload`. The renderer imports this module, never the other way round.
jsonschema is loaded by the first validation only: most functions never validate a payload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from shared.errors import InvalidAsset, InvalidPayload
from shared.settings import Settings

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "preview-job.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def load_schema() -> dict[str, Any]:
    return SCHEMA


# --------------------------------------------------------------------------- limits

_DEFS = SCHEMA["definitions"]
_REQUEST = SCHEMA["properties"]["previewRequest"]["properties"]
_STEP = _DEFS["step"]["properties"]
_OPTIONS = _DEFS["options"]["properties"]

# What the schema states, read from it so that the two can never disagree.
MAX_STEPS: int = _REQUEST["steps"]["maxItems"]
MIN_STEP_SECONDS: float = _STEP["durationSec"]["minimum"]
MAX_STEP_SECONDS: float = _STEP["durationSec"]["maximum"]
DEFAULT_STEP_SECONDS: float = _STEP["durationSec"]["default"]
FORMATS: tuple[str, ...] = tuple(_OPTIONS["format"]["enum"])
DEFAULT_FORMAT: str = _OPTIONS["format"]["default"]
MIN_FPS: int = _OPTIONS["fps"]["minimum"]
MAX_FPS: int = _OPTIONS["fps"]["maximum"]
DEFAULT_FPS: int = _OPTIONS["fps"]["default"]
DEFAULT_RESOLUTION: str = _OPTIONS["resolution"]["default"]
DEFAULT_INCLUDE_CAPTIONS: bool = _OPTIONS["includeCaptions"]["default"]
DEFAULT_MUSIC_VOLUME: float = _DEFS["audio"]["properties"]["musicVolume"]["default"]
DEFAULT_PRIORITY: str = SCHEMA["properties"]["priority"]["default"]

# What a JSON Schema cannot express.
MAX_TOTAL_SECONDS = 600
MAX_WIDTH, MAX_HEIGHT = 1920, 1080
MIN_SIDE = 16
# A request without steps becomes one title card of this length.
TITLE_CARD_SECONDS = 3


@cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262, where `$` matches only at the very end; Python's `$`
    # also matches before a final newline, which would let "job-1\n" through.
    return re.compile(pattern.replace("$", r"\Z"))


_ID = _ecma_regex(_DEFS["id"]["pattern"])
ID_RULE = "must be 1-128 letters, digits, '.', '_' or '-', not starting with '.'"


def is_id(value: object) -> bool:
    """Whether `value` is a valid jobId/projectId/requestId (also the rule for artifact names:
    no '/', no leading '.', so no path or key injection)."""
    return isinstance(value, str) and _ID.search(value) is not None


# --------------------------------------------------------------------------- asset URIs

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
ALLOWED_FORMS = "use a data: URI, s3://bucket/key or a relative path inside the asset folder"


@dataclass(frozen=True)
class AssetSource:
    """Where an asset's bytes come from, as its URI says."""

    kind: Literal["data", "s3", "local"]
    uri: str
    bucket: str = ""
    key: str = ""
    parts: tuple[str, ...] = ()  # a local path, split; never absolute, never '..'


class UriRefused(ValueError):
    """An asset URI this service will not read, with the reason as its message."""


def classify_uri(uri: str) -> AssetSource:
    """The one reading of an asset URI, used by admission and by the asset loader. Raises
    `UriRefused` for any other scheme, absolute paths and paths that climb out of the folder."""
    if uri.startswith("data:"):
        return AssetSource("data", uri)
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not bucket or not key:
            raise UriRefused(f"{uri!r} is not of the form s3://bucket/key")
        return AssetSource("s3", uri, bucket=bucket, key=key)
    if _SCHEME.match(uri):
        raise UriRefused(f"{uri.split(':', 1)[0]!r} is not allowed; {ALLOWED_FORMS}")
    if uri.startswith(("/", "\\")):
        raise UriRefused(f"an absolute path is not allowed; {ALLOWED_FORMS}")
    parts = PurePosixPath(uri).parts
    if not parts or ".." in parts or ":" in parts[0]:
        raise UriRefused(f"path {uri!r} must stay inside the asset folder")
    return AssetSource("local", uri, parts=parts)


def bucket_problem(source: AssetSource, settings: Settings) -> str | None:
    """The configuration-dependent rule: s3:// assets only from the allowed buckets."""
    if source.kind == "s3" and source.bucket not in settings.allowed_asset_buckets:
        return f"bucket {source.bucket!r} is not an allowed asset bucket"
    return None


def asset_source(asset_id: str, uri: str, settings: Settings) -> AssetSource:
    """The source of one asset, or `InvalidAsset` naming it (for the loader)."""
    try:
        source = classify_uri(uri)
    except UriRefused as exc:
        raise InvalidAsset(f"asset {asset_id!r}: {exc}") from None
    problem = bucket_problem(source, settings)
    if problem:
        raise InvalidAsset(f"asset {asset_id!r}: {problem}")
    return source


# --------------------------------------------------------------------------- validation

Problem = dict[str, str]


@cache
def validator() -> Any:
    """The compiled schema validator (the enqueue function builds it at cold start)."""
    from jsonschema import Draft7Validator, FormatChecker, validators
    from jsonschema.exceptions import ValidationError

    def pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
        if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")

    return validators.extend(Draft7Validator, {"pattern": pattern})(SCHEMA, format_checker=FormatChecker())


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(error: Any) -> Problem:
    parts: list[str | int] = list(error.absolute_path)
    message = error.message
    if error.validator == "required":
        match = re.match(r"'(.+)' is a required property", error.message)
        if match:
            parts.append(match.group(1))
    elif error.validator == "additionalProperties":
        extra = re.findall(r"'([^']+)'", error.message)
        if len(extra) == 1:
            parts.append(extra[0])
        message = f"unknown property not allowed: {', '.join(extra) or error.message}"
    elif error.validator == "pattern" and parts and parts[-1] == "uri":
        message = "uri must be a data: URI, s3://bucket/key, or a relative path inside the asset folder"
    elif error.validator == "pattern" and parts and parts[-1] == "resolution":
        message = f"resolution {_short(error.instance)} must look like {DEFAULT_RESOLUTION} (width x height)"
    elif error.validator == "pattern" and error.schema.get("maxLength") == 128:
        message = ID_RULE
    elif error.validator == "pattern":
        message = f"{_short(error.instance)} does not match the allowed form {error.validator_value}"
    return {"path": _pointer(parts), "message": message}


def schema_errors(document: Any) -> list[Problem]:
    return [_describe(e) for e in sorted(validator().iter_errors(document), key=lambda e: list(e.path))]


def resolution_problem(width: int, height: int) -> str | None:
    if width % 2 or height % 2:
        return f"resolution {width}x{height} must have even width and height (H.264/VP9 4:2:0)"
    if width > MAX_WIDTH or height > MAX_HEIGHT:
        return f"resolution {width}x{height} exceeds the maximum {MAX_WIDTH}x{MAX_HEIGHT}"
    if width < MIN_SIDE or height < MIN_SIDE:
        return f"resolution {width}x{height} is below the minimum {MIN_SIDE}x{MIN_SIDE}"
    return None


def _reference(path: str, ref: str, kind: str, assets: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
    asset = assets.get(ref)
    if asset is None:
        return [{"path": path, "message": f"refers to unknown asset id {ref!r}"}]
    if asset["type"] != kind:
        return [{"path": path, "message": f"asset {ref!r} is of type {asset['type']!r}, expected {kind!r}"}]
    return []


def semantic_errors(document: Mapping[str, Any], settings: Settings) -> list[Problem]:
    """Rules beyond the schema (for a schema-valid document): references, limits, where
    assets may come from."""
    errors: list[Problem] = []
    request = document["previewRequest"]
    assets: dict[str, Mapping[str, Any]] = {}
    for i, asset in enumerate(request["assets"]):
        if asset["id"] in assets:
            errors.append({"path": f"/previewRequest/assets/{i}/id",
                           "message": f"asset id {asset['id']!r} is used by more than one asset"})
        assets[asset["id"]] = asset
        try:
            problem = bucket_problem(classify_uri(asset["uri"]), settings)
        except UriRefused as exc:
            problem = str(exc)
        if problem:
            errors.append({"path": f"/previewRequest/assets/{i}/uri", "message": problem})

    total = 0.0
    for i, step in enumerate(request["steps"]):
        total += float(step.get("durationSec", DEFAULT_STEP_SECONDS))
        ref = step.get("asset")
        if ref is not None:
            errors.extend(_reference(f"/previewRequest/steps/{i}/asset", ref, "image", assets))
    if total > MAX_TOTAL_SECONDS:
        errors.append({"path": "/previewRequest/steps",
                       "message": f"total duration {total:g} s exceeds {MAX_TOTAL_SECONDS} s"})

    for role in ("narration", "music"):
        ref = request["audio"].get(role)
        if ref is not None:
            errors.extend(_reference(f"/previewRequest/audio/{role}", ref, "audio", assets))

    resolution = request.get("options", {}).get("resolution")
    if resolution is not None:
        width, height = (int(v) for v in resolution.split("x"))
        problem = resolution_problem(width, height)
        if problem:
            errors.append({"path": "/previewRequest/options/resolution", "message": problem})
    return errors


def config_errors(document: Mapping[str, Any], settings: Settings) -> list[Problem]:
    """What may have become unacceptable since admission: only the configuration changes (the
    allowed buckets), so only its rules are checked again when a job runs."""
    errors: list[Problem] = []
    for i, asset in enumerate((document.get("previewRequest") or {}).get("assets") or []):
        try:
            problem = bucket_problem(classify_uri(str(asset.get("uri", ""))), settings)
        except UriRefused as exc:
            problem = str(exc)
        if problem:
            errors.append({"path": f"/previewRequest/assets/{i}/uri", "message": problem})
    return errors


def _raise_if(errors: list[Problem], message: str | None = None) -> None:
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise InvalidPayload(message or f"the job payload has {len(errors)} {noun}", errors)


def validate_payload(document: Any, settings: Settings) -> dict[str, Any]:
    """Return the payload if valid; otherwise raise `InvalidPayload` listing every error."""
    errors = schema_errors(document)
    if not errors:
        errors = semantic_errors(document, settings)
    _raise_if(errors)
    result: dict[str, Any] = document
    return result


def parse(document: Any, settings: Settings) -> JobRequest:
    """Validate, then the typed request (what a dry run or a test starts from)."""
    return JobRequest.from_payload(validate_payload(document, settings))


# --------------------------------------------------------------------------- the typed request


@dataclass(frozen=True)
class Asset:
    id: str
    type: Literal["image", "audio"]
    uri: str


@dataclass(frozen=True)
class Step:
    index: int
    duration_ms: int
    title: str | None
    text: str | None
    asset: str | None  # an image asset id


@dataclass(frozen=True)
class JobRequest:
    """A valid payload with every default applied and blank texts as None."""

    job_id: str
    project_id: str
    request_id: str
    dry_run: bool
    priority: str
    title: str | None
    description: str | None
    steps: tuple[Step, ...]
    assets: Mapping[str, Asset]  # every declared asset, in payload order
    narration: str | None
    music: str | None
    music_volume: float
    width: int
    height: int
    fps: int
    format: str
    include_captions: bool

    @property
    def steps_ms(self) -> int:
        return sum(step.duration_ms for step in self.steps)

    @property
    def video_ms(self) -> int:
        """Length of the rendered preview: the steps, or the title card when there are none."""
        return self.steps_ms if self.steps else TITLE_CARD_SECONDS * 1000

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> JobRequest:
        """The typed request of a payload that passed `validate_payload` (at admission). A
        stored payload that no longer reads as one raises `InvalidPayload`."""
        try:
            return cls._read(payload)
        except InvalidPayload:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidPayload("the job payload is malformed", [
                {"path": "/", "message": f"does not read as a preview job ({type(exc).__name__}: {exc})"}]) from None

    @classmethod
    def _read(cls, payload: Mapping[str, Any]) -> JobRequest:
        request = payload["previewRequest"]
        options = request.get("options") or {}
        audio = request.get("audio") or {}
        fps = options.get("fps", DEFAULT_FPS)
        if isinstance(fps, bool) or not isinstance(fps, int):
            # JSON Schema counts 30.0 as an integer; frame arithmetic needs a real one.
            _raise_if([{"path": "/previewRequest/options/fps",
                        "message": f"fps {fps!r} must be an integer from {MIN_FPS} to {MAX_FPS}"}])
        width, height = (int(v) for v in str(options.get("resolution", DEFAULT_RESOLUTION)).split("x"))
        steps = tuple(
            Step(index=i, duration_ms=round(float(raw.get("durationSec", DEFAULT_STEP_SECONDS)) * 1000),
                 title=_text(raw.get("title")), text=_text(raw.get("text")), asset=raw.get("asset"))
            for i, raw in enumerate(request.get("steps") or [])
        )
        assets = {str(a["id"]): Asset(str(a["id"]), a["type"], str(a["uri"])) for a in request.get("assets") or []}
        return cls(
            job_id=str(payload["jobId"]), project_id=str(payload["projectId"]),
            request_id=str(payload.get("requestId", "")), dry_run=bool(payload.get("dryRun", False)),
            priority=str(payload.get("priority", DEFAULT_PRIORITY)),
            title=_text(request.get("title")), description=_text(request.get("description")),
            steps=steps, assets=assets, narration=audio.get("narration"), music=audio.get("music"),
            music_volume=float(audio.get("musicVolume", DEFAULT_MUSIC_VOLUME)),
            width=width, height=height, fps=fps, format=str(options.get("format", DEFAULT_FORMAT)),
            include_captions=bool(options.get("includeCaptions", DEFAULT_INCLUDE_CAPTIONS)),
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None
