"""The job payload contract: parse the request body, validate against
`schemas/preview-job.schema.json`, then the rules a JSON schema cannot express."""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError

from shared.errors import InvalidPayload, InvalidRequest, PayloadTooLarge
from shared.render.plan import DEFAULT_STEP_MS, MAX_HEIGHT, MAX_TOTAL_MS, MAX_WIDTH, MIN_SIDE
from shared.settings import Settings

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "preview-job.schema.json"

# The renderer's limits are the contract's limits: one definition, in the (media-free) plan module.
MAX_TOTAL_SECONDS = MAX_TOTAL_MS // 1000
DEFAULT_STEP_SECONDS = DEFAULT_STEP_MS / 1000


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=64)
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262, where `$` matches only at the very end; Python's `$`
    # also matches before a final newline, which would let "job-1\n" through.
    return re.compile(pattern.replace("$", r"\Z"))


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft7Validator, {"pattern": _pattern})


@lru_cache(maxsize=1)
def _validator() -> Any:
    return _Validator(load_schema(), format_checker=FormatChecker())


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"


def _describe(error: ValidationError) -> dict[str, str]:
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
    elif error.validator == "pattern" and error.schema.get("maxLength") == 128:
        message = "must be 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
    elif error.validator == "pattern":
        message = f"{_short(error.instance)} does not match the allowed form {error.validator_value}"
    return {"path": _pointer(parts), "message": message}


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and NaN slips through every numeric range check.
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def parse_body(body: str | bytes | None, is_base64: bool, limit: int) -> dict[str, Any]:
    """Decode an HTTP body into a JSON object, enforcing the size limit before parsing."""
    if body is None or body == "":
        raise InvalidRequest("request body is empty; send the job as a JSON object")
    raw: bytes
    if is_base64:
        if len(body) > limit * 4 // 3 + 4:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("request body is not valid base64") from None
    else:
        raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidPayload(
            "the job must be a JSON object", [{"path": "/", "message": "must be an object"}]
        )
    return document


def validate_payload(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Return the payload if valid; otherwise raise `InvalidPayload` listing every error."""
    errors = [_describe(e) for e in sorted(_validator().iter_errors(document), key=lambda e: list(e.path))]
    if not errors:
        errors = semantic_errors(document, settings)
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise InvalidPayload(f"the job payload has {len(errors)} {noun}", errors)
    return document


def semantic_errors(document: dict[str, Any], settings: Settings) -> list[dict[str, str]]:
    """Rules beyond the schema: references, limits, where assets may come from."""
    errors: list[dict[str, str]] = []
    request = document["previewRequest"]
    assets: dict[str, dict[str, Any]] = {}
    for i, asset in enumerate(request["assets"]):
        if asset["id"] in assets:
            errors.append({"path": f"/previewRequest/assets/{i}/id", "message": f"duplicate asset id {asset['id']!r}"})
        assets[asset["id"]] = asset
        problem = asset_uri_problem(asset["uri"], settings)
        if problem:
            errors.append({"path": f"/previewRequest/assets/{i}/uri", "message": problem})

    total = 0.0
    for i, step in enumerate(request["steps"]):
        total += float(step.get("durationSec", DEFAULT_STEP_SECONDS))
        ref = step.get("asset")
        if ref is not None:
            errors.extend(_reference_errors(f"/previewRequest/steps/{i}/asset", ref, "image", assets))
    if total > MAX_TOTAL_SECONDS:
        errors.append({"path": "/previewRequest/steps",
                       "message": f"total duration {total:g} s exceeds {MAX_TOTAL_SECONDS} s"})

    for role in ("narration", "music"):
        ref = request["audio"].get(role)
        if ref is not None:
            errors.extend(_reference_errors(f"/previewRequest/audio/{role}", ref, "audio", assets))

    resolution = request.get("options", {}).get("resolution")
    if resolution is not None:
        width, height = (int(v) for v in resolution.split("x"))
        too_big = width > MAX_WIDTH or height > MAX_HEIGHT
        if width % 2 or height % 2 or too_big or width < MIN_SIDE or height < MIN_SIDE:
            errors.append({"path": "/previewRequest/options/resolution",
                           "message": f"resolution must be even, between {MIN_SIDE}x{MIN_SIDE} and "
                                      f"{MAX_WIDTH}x{MAX_HEIGHT}"})
    return errors


def _reference_errors(path: str, ref: str, kind: str, assets: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    asset = assets.get(ref)
    if asset is None:
        return [{"path": path, "message": f"refers to unknown asset id {ref!r}"}]
    if asset["type"] != kind:
        return [{"path": path, "message": f"asset {ref!r} is of type {asset['type']!r}, expected {kind!r}"}]
    return []


def asset_uri_problem(uri: str, settings: Settings) -> str | None:
    """Why an asset URI is refused, or None when it is acceptable."""
    if uri.startswith("data:"):
        return None
    if uri.startswith("s3://"):
        bucket = uri[5:].split("/", 1)[0]
        if bucket not in settings.allowed_asset_buckets:
            return f"bucket {bucket!r} is not an allowed asset bucket"
        return None
    normalized = posixpath.normpath(uri)
    if normalized.startswith(("/", "..")) or ":" in uri.split("/", 1)[0]:
        return "local asset paths must stay inside the asset folder"
    return None
