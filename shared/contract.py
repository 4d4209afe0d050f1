"""The job contract: `schemas/preview-job.schema.json`, the limits it states (read from it),
the rules a JSON Schema cannot express, the one classifier of asset URIs, and the typed,
defaults-applied request that the renderer works from.

Admission calls `validate_payload` (every problem as `{path, message}`, JSON Pointer paths);
the worker calls `config_errors` (only what depends on configuration can have changed since)
and `JobRequest.from_payload`. The renderer imports this module, never the other way round.
jsonschema is loaded by the first validation only: most functions never validate a payload.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from shared.errors import InvalidAsset, InvalidPayload
from shared.media import BadDataUri, data_uri_payload, image_size
from shared.records import lazy_dataclass
from shared.settings import Settings

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "preview-job.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- limits

_DEFS = SCHEMA["definitions"]
_REQUEST = SCHEMA["properties"]["previewRequest"]["properties"]
_STEP = _DEFS["step"]["properties"]
_OPTIONS = _DEFS["options"]["properties"]

# What the schema states, read from it so that the two can never disagree.
MAX_STEPS: int = _REQUEST["steps"]["maxItems"]
MAX_ASSETS: int = _REQUEST["assets"]["maxItems"]
ASSET_TYPES: tuple[str, ...] = tuple(_DEFS["asset"]["properties"]["type"]["enum"])
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
PRIORITIES: tuple[str, ...] = tuple(SCHEMA["properties"]["priority"]["enum"])
MIN_MUSIC_VOLUME: float = _DEFS["audio"]["properties"]["musicVolume"]["minimum"]
MAX_MUSIC_VOLUME: float = _DEFS["audio"]["properties"]["musicVolume"]["maximum"]

# What a JSON Schema cannot express.
MAX_TOTAL_SECONDS = 600
MAX_WIDTH, MAX_HEIGHT = 1920, 1080
MIN_SIDE = 16
# A request without steps becomes one title card of this length.
TITLE_CARD_SECONDS = 3
# Bytes of one asset, whatever its source.
MAX_ASSET_BYTES = 50 * 1024 * 1024
# Decoded pixels of one image: far above any useful slide source (8K is 33 MP) yet below
# Pillow's own bomb threshold (89 MP), so oversized images are refused with a clear message.
MAX_IMAGE_PIXELS = 40_000_000
# Decoded pixels of all the distinct images a job shows: 60 distinct 4K screenshots, or every
# one of 100 steps at 2560x1920. Bounds the decoding work and memory of one render.
MAX_JOB_PIXELS = 500_000_000


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


@lazy_dataclass(frozen=True)
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

    built = validators.extend(Draft7Validator, {"pattern": pattern})(SCHEMA, format_checker=FormatChecker())
    fast_validator()  # compiled at the same time (the enqueue function's cold start)
    return built


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _resolution_form(value: Any) -> str:
    return f"resolution {_short(value)} must look like {DEFAULT_RESOLUTION} (width x height)"


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
        message = _resolution_form(error.instance)
    elif error.validator == "pattern" and error.schema.get("maxLength") == 128:
        message = ID_RULE
    elif error.validator == "pattern":
        message = f"{_short(error.instance)} does not match the allowed form {error.validator_value}"
    elif error.validator in ("maxLength", "maxItems", "maxProperties"):
        # jsonschema's message quotes the whole value: a long string would come back whole
        size, most = len(error.instance), error.validator_value
        message = (f"{_short(error.instance)} is too long ({size} characters, at most {most})"
                   if isinstance(error.instance, str) else f"has {size} entries, more than the maximum of {most}")
    elif len(message) > 300:
        message = message[:297] + "..."
    return {"path": _pointer(parts), "message": message}


@cache
def fast_validator() -> Callable[[Any], Any] | None:
    """The same schema compiled to Python code (fastjsonschema), a tenth of jsonschema's time on
    a small payload: it only says whether a document is valid. Every pattern reads as ECMA-262
    (as in `validator`) and every format is checked by jsonschema's own format checker, so it
    is never more lenient; a document it refuses goes to `validator` for the problems (which
    also settles a case where it would be stricter). None without fastjsonschema."""
    from jsonschema import FormatChecker

    checker = FormatChecker()
    formats = {name: functools.partial(_conforms, checker, name) for name in _formats(SCHEMA)}
    # Compiled ahead (generating and compiling the code took 6-20 ms of the enqueue function's
    # cold start, importing fastjsonschema 2 more); a module not made from this very schema is
    # not used.
    from shared import payload_check

    if fast_validator_digest(SCHEMA, payload_check.VERSION) == payload_check.DIGEST:
        return functools.partial(payload_check.validate, custom_formats=formats)
    try:
        import fastjsonschema
    except ImportError:
        return None
    compiled: Callable[[Any], Any] = fastjsonschema.compile(_ecma_schema(SCHEMA), formats=formats, **_FAST_OPTIONS)
    return compiled


# use_default=False: a check, not a filler of defaults (the stored payload stays as sent);
# detailed_exceptions=False: only valid or not counts (a third of the code).
_FAST_OPTIONS: dict[str, Any] = {"use_default": False, "detailed_exceptions": False}


def fast_validator_digest(schema: Any, version: str) -> str:
    """What the code of `fast_validator` is made from: the schema, the options and the version
    of fastjsonschema that generated it (a change to `_ecma_schema` is the test's to catch)."""
    import hashlib

    made_from = json.dumps([schema, _FAST_OPTIONS, version], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(made_from.encode()).hexdigest()


# The generated code needs nothing of fastjsonschema but the exception it raises (and the caller
# only asks whether one was raised): its own class, so the module imports no code generator.
_FAST_EXCEPTIONS = '''

class JsonSchemaValueException(ValueError):
    """The document breaks the schema (fastjsonschema's exception, without the generator)."""

    def __init__(self, message, value=None, name=None, definition=None, rule=None):
        super().__init__(message)
        self.message, self.value, self.name, self.definition, self.rule = message, value, name, definition, rule


JsonSchemaValuesException = JsonSchemaValueException
'''


def fast_validator_source() -> str:
    """The source of shared/payload_check.py (`python -m deploy.payload_check` writes it)."""
    import fastjsonschema

    formats: dict[str, Any] = dict.fromkeys(_formats(SCHEMA), _conforms)  # only their names count here
    code = fastjsonschema.compile_to_code(_ecma_schema(SCHEMA), formats=formats, **_FAST_OPTIONS)
    imported = "from fastjsonschema import JsonSchemaValueException, JsonSchemaValuesException\n"
    if code.count(imported) != 1:
        raise RuntimeError("fastjsonschema's generated code no longer imports its exceptions as expected")
    code = code.replace(imported, _FAST_EXCEPTIONS)
    name = re.findall(r"^def (\w+)\(", code, re.MULTILINE)[0]  # the schema's own function comes first
    return (f'''# ruff: noqa
"""The payload schema compiled by fastjsonschema {fastjsonschema.VERSION}, ahead: generated by
`python -m deploy.payload_check` from schemas/preview-job.schema.json (shared.contract.fast_validator_source);
do not edit. shared.contract uses it only while DIGEST is that of the schema it reads."""

DIGEST = "{fast_validator_digest(SCHEMA, fastjsonschema.VERSION)}"
''' + code.rstrip() + f"\n\n\nvalidate = {name}\n")


def _conforms(checker: Any, name: str, value: Any) -> bool:
    return bool(checker.conforms(value, name))


def _formats(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["format"]} if isinstance(node.get("format"), str) else set()
        return found.union(*(_formats(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_formats(value) for value in node))
    return set()


def _ecma_schema(node: Any) -> Any:
    """The schema with each pattern's `$` meaning the very end, as `_ecma_regex` reads it, and
    each reference to a definition replaced by the definition, the same schema (a definition
    that refers to itself stays a reference there): fastjsonschema makes a function of each
    definition referred to, and calls it with the path of the value for its messages, built on
    every call (a `str.format(**locals())` for each item of an array)."""
    return _ecma_patterns(_inline_definitions(node, node.get("definitions", {}), ()))


def _inline_definitions(node: Any, definitions: dict[str, Any], within: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        name = ref.removeprefix("#/definitions/") if isinstance(ref, str) else None
        if len(node) == 1 and name in definitions and name not in within:  # a "$ref" on its own
            return _inline_definitions(definitions[name], definitions, (*within, name))
        return {key: value if key == "definitions" else _inline_definitions(value, definitions, within)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_definitions(value, definitions, within) for value in node]
    return node


def _ecma_patterns(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _ecma_regex(value).pattern if key == "pattern" and isinstance(value, str)
                else _ecma_patterns(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_ecma_patterns(value) for value in node]
    return node


def schema_errors(document: Any) -> list[Problem]:
    fast = fast_validator()
    if fast is not None:
        try:
            fast(document)
            return []
        except Exception:  # JsonSchemaException, or anything it could not read: the full check says
            pass
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


IMAGE_KINDS = "PNG, JPEG, GIF, WebP or BMP"


def measure_image(data: bytes) -> tuple[int, str | None]:
    """The decoded pixels of an image, read from its header, or why it is refused: not one of
    the accepted formats, no pixels, or more than `MAX_IMAGE_PIXELS`. Admission applies it to
    inline images, the asset loader to the others, so both refuse the same images."""
    size = image_size(data)
    if size is None:
        return 0, f"is not a {IMAGE_KINDS} image (or its header is cut short)"
    _, width, height = size
    if not width or not height:
        return 0, f"image is {width}x{height}: it has no pixels"
    if width * height > MAX_IMAGE_PIXELS:
        return width * height, (f"image is {width}x{height}, more than "
                                f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels")
    return width * height, None


def job_pixels_problem(total: int) -> str | None:
    """The per-job budget of decoded pixels (all the distinct images the steps show)."""
    if total > MAX_JOB_PIXELS:
        return (f"the images the steps show hold {total / 1e6:.0f} megapixels, more than the "
                f"budget of {MAX_JOB_PIXELS // 1_000_000} per job; use smaller or fewer images")
    return None


def semantic_errors(document: Mapping[str, Any], settings: Settings) -> list[Problem]:
    """Rules beyond the schema (for a schema-valid document): references, limits, where
    assets may come from."""
    return _rules(document) + config_errors(document, settings)


def _rules(document: Mapping[str, Any], *, inline: bool = True) -> list[Problem]:
    """The rules beyond the schema that no configuration changes. `inline=False` leaves out
    decoding and measuring the `data:` assets: the asset loader applies those same rules
    (`data_uri_payload`, `measure_image`, `job_pixels_problem`) when it fetches them."""
    errors: list[Problem] = []
    request = document["previewRequest"]
    assets: dict[str, Mapping[str, Any]] = {}
    pixels: dict[str, int] = {}  # inline images: the others are measured when loaded
    for i, asset in enumerate(request.get("assets", [])):
        if asset["id"] in assets:
            errors.append({"path": f"/previewRequest/assets/{i}/id",
                           "message": f"asset id {asset['id']!r} is used by more than one asset"})
        assets[asset["id"]] = asset
        try:
            source = classify_uri(asset["uri"])
        except UriRefused as exc:
            errors.append({"path": f"/previewRequest/assets/{i}/uri", "message": str(exc)})
            continue
        if inline and source.kind == "data":
            problem = _inline_problem(asset, pixels)
            if problem:
                errors.append({"path": f"/previewRequest/assets/{i}/uri", "message": problem})

    total = 0.0
    for i, step in enumerate(request.get("steps", [])):
        total += float(step.get("durationSec", DEFAULT_STEP_SECONDS))
        ref = step.get("asset")
        if ref is not None:
            errors.extend(_reference(f"/previewRequest/steps/{i}/asset", ref, "image", assets))
    if total > MAX_TOTAL_SECONDS:
        errors.append({"path": "/previewRequest/steps",
                       "message": f"total duration {total:g} s exceeds {MAX_TOTAL_SECONDS} s"})
    if pixels:  # no inline image, no pixels to count against the budget
        shown = {step.get("asset") for step in request.get("steps", [])}
        problem = job_pixels_problem(sum(count for asset_id, count in pixels.items() if asset_id in shown))
        if problem:
            errors.append({"path": "/previewRequest/assets", "message": problem})

    audio = request.get("audio", {})
    for role in ("narration", "music"):
        ref = audio.get(role)
        if ref is not None:
            errors.extend(_reference(f"/previewRequest/audio/{role}", ref, "audio", assets))

    resolution = request.get("options", {}).get("resolution")
    if resolution is not None:
        width, height = (int(v) for v in resolution.split("x"))
        problem = resolution_problem(width, height)
        if problem:
            errors.append({"path": "/previewRequest/options/resolution", "message": problem})
    return errors


def _inline_problem(asset: Mapping[str, Any], pixels: dict[str, int]) -> str | None:
    """Why an inline (data:) asset cannot be used; an image's pixels go into `pixels`."""
    try:
        data = data_uri_payload(asset["uri"], MAX_ASSET_BYTES)
    except BadDataUri as exc:
        return str(exc)
    if not data:
        return "data: URI holds no data"
    if asset["type"] != "image":
        return None
    count, problem = measure_image(data)
    if problem is None and asset["id"] not in pixels:
        pixels[asset["id"]] = count
    return problem


def config_errors(document: Mapping[str, Any], settings: Settings) -> list[Problem]:
    """What may have become unacceptable since admission: only the configuration changes (the
    allowed buckets), so only its rules are checked again when a job runs."""
    errors: list[Problem] = []
    for i, asset in enumerate((document.get("previewRequest") or {}).get("assets") or []):
        try:
            problem = bucket_problem(classify_uri(str(asset.get("uri", ""))), settings)
        except UriRefused:
            continue  # not configuration: the typed read refuses it
        if problem:
            errors.append({"path": f"/previewRequest/assets/{i}/uri", "message": problem})
    return errors


def _raise_if(errors: list[Problem], message: str | None = None) -> None:
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise InvalidPayload(message or f"the job payload has {len(errors)} {noun}", errors)


# What json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False) builds on
# every call, built once: its `encode` keeps no state between calls (each has its own
# circularity check), so threads share it.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(payload: Any) -> str:
    """The text a payload is stored and hashed as (`shared.queue` admits it): keys sorted, no
    spaces, Unicode as is."""
    return _CANONICAL.encode(payload)


def validate_for_admission(document: Any, settings: Settings) -> tuple[dict[str, Any], str]:
    """`validate_payload`, and the payload's `canonical_json` for `JobQueue.admit`: a payload
    on its way in is serialised once. The lone-surrogate check reads that text (ASCII, or one
    UTF-8 encodes) instead of walking the payload; the text is made again only when a number
    was made whole. What does not serialise is left to `validate_payload`, as are its errors."""
    try:
        text: str | None = canonical_json(document)
    except (TypeError, ValueError, RecursionError):  # not JSON, or a cycle
        text = None
    if text is None or not (text.isascii() or _encodable(text)):
        payload = validate_payload(document, settings)
        return payload, canonical_json(payload)
    if _make_whole(document, _INTEGER_PATHS):
        text = canonical_json(document)
    _raise_if(schema_errors(document) or semantic_errors(document, settings))
    return document, text


def validate_payload(document: Any, settings: Settings) -> dict[str, Any]:
    """Return the payload, as it is to be stored, if valid; otherwise raise `InvalidPayload`
    listing every error. Numbers the contract types as integers are made integers (JSON
    Schema counts 6.0 and 1e1 as integers; they are stored as 6 and 10), in place."""
    errors = unencodable_strings(document)
    if not errors:
        _make_whole(document, _INTEGER_PATHS)
        errors = schema_errors(document)
    if not errors:
        errors = semantic_errors(document, settings)
    _raise_if(errors)
    result: dict[str, Any] = document
    return result


def unencodable_strings(document: Any) -> list[Problem]:
    """Strings (values or keys) that UTF-8 cannot encode: a lone surrogate such as "\\ud800"
    is valid JSON text but no valid Unicode string, so it can be neither hashed nor stored."""
    if _all_encodable(document):
        return []
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
        return []  # (a document too large to walk, all of it encodable)
    except UnicodeEncodeError:
        pass
    errors: list[Problem] = []
    pending: list[tuple[Any, list[str | int]]] = [(document, [])]
    while pending:
        node, parts = pending.pop()
        if isinstance(node, str) and not _encodable(node):
            errors.append({"path": _pointer(parts), "message": "string holds a lone surrogate (not valid Unicode)"})
        elif isinstance(node, dict):
            for key, value in node.items():
                if not _encodable(key):
                    errors.append({"path": _pointer(parts), "message": "a property name holds a lone surrogate "
                                   f"(not valid Unicode): {json.dumps(key)[:80]}"})
                pending.append((value, [*parts, key]))
        elif isinstance(node, list):
            pending.extend((value, [*parts, i]) for i, value in enumerate(node))
    return sorted(errors, key=lambda e: e["path"])


def _all_encodable(document: Any) -> bool:
    """Whether every string of the document (keys too) encodes: ASCII always does, so only the
    others are tried (a walk of a small payload is a third of serialising it to find out).
    False, for the serialisation to settle, after _WALK_NODES values (a cycle never ends)."""
    pending = [document]
    for _ in range(_WALK_NODES):
        if not pending:
            return True
        node = pending.pop()
        if isinstance(node, str):
            if not node.isascii() and not _encodable(node):
                return False
        elif isinstance(node, dict):
            for key in node:
                if isinstance(key, str) and not key.isascii() and not _encodable(key):
                    return False
            pending.extend(node.values())
        elif isinstance(node, list | tuple):
            pending.extend(node)
    return False


_WALK_NODES = 100_000


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _integer_paths(node: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Where the schema types a value as an integer ("*" for every item of an array)."""
    if "$ref" in node:
        node = _DEFS[node["$ref"].removeprefix("#/definitions/")]
    found = [path] if node.get("type") == "integer" else []
    for name, child in node.get("properties", {}).items():
        found.extend(_integer_paths(child, (*path, name)))
    if isinstance(node.get("items"), Mapping):
        found.extend(_integer_paths(node["items"], (*path, "*")))
    return found


_INTEGER_PATHS = _integer_paths(SCHEMA)


def _make_whole(document: Any, paths: list[tuple[str, ...]]) -> bool:
    """Whether a number was made whole."""
    changed = False
    for path in paths:
        if "*" not in path:  # one value at most: followed down, no lists built
            node = document
            for name in path[:-1]:
                node = node[name] if isinstance(node, dict) and name in node else None
            last = path[-1]
            if isinstance(node, dict) and last in node:
                value = node[last]
                if type(value) is float and value.is_integer():
                    node[last], changed = int(value), True
            continue
        nodes = [document]
        for name in path[:-1]:
            if name == "*":
                nodes = [item for node in nodes if isinstance(node, list) for item in node]
            else:
                nodes = [node[name] for node in nodes if isinstance(node, dict) and name in node]
        last = path[-1]
        for node in nodes:
            keys = range(len(node)) if last == "*" and isinstance(node, list) else (
                [last] if isinstance(node, dict) and last in node else [])
            for key in keys:
                value = node[key]
                if type(value) is float and value.is_integer():
                    node[key], changed = int(value), True
    return changed


# --------------------------------------------------------------------------- the typed request


@lazy_dataclass(frozen=True)
class Asset:
    id: str
    type: Literal["image", "audio"]
    uri: str


@lazy_dataclass(frozen=True)
class Step:
    index: int
    duration_ms: int
    title: str | None
    text: str | None
    asset: str | None  # an image asset id


@lazy_dataclass(frozen=True)
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
    def from_payload(cls, payload: Any) -> JobRequest:
        """The typed request of a stored payload. Admission has checked it against the whole
        contract; this read trusts no more than it must: every value it uses must have the type
        and range the contract gives, and the rules beyond the schema must hold, else
        `InvalidPayload` lists what does not (a job stored by any other way than admission
        fails for a reason, never renders wrongly or crashes). Far cheaper than the schema."""
        read = _Reader()
        request = read.mapping(payload, "")
        body = read.mapping(request.get("previewRequest"), "/previewRequest")
        options = read.mapping(body.get("options", {}), "/previewRequest/options")
        audio = read.mapping(body.get("audio", {}), "/previewRequest/audio")
        raw_steps = read.items(body.get("steps", []), "/previewRequest/steps", MAX_STEPS)
        raw_assets = read.items(body.get("assets", []), "/previewRequest/assets", MAX_ASSETS)
        steps = tuple(
            Step(index=i,
                 duration_ms=round(1000 * read.number(raw.get("durationSec"), f"{where}/durationSec",
                                                      MIN_STEP_SECONDS, MAX_STEP_SECONDS, DEFAULT_STEP_SECONDS)),
                 title=_text(read.string(raw.get("title"), f"{where}/title")),
                 text=_text(read.string(raw.get("text"), f"{where}/text")),
                 asset=read.string(raw.get("asset"), f"{where}/asset"))
            for i, raw in enumerate(raw_steps) for where in (f"/previewRequest/steps/{i}",))
        assets: dict[str, Asset] = {}
        for i, raw in enumerate(raw_assets):
            where = f"/previewRequest/assets/{i}"
            asset_id = read.identifier(raw.get("id"), f"{where}/id")
            kind = read.choice(raw.get("type"), f"{where}/type", ASSET_TYPES, None)
            uri = read.string(raw.get("uri"), f"{where}/uri", required=True)
            if asset_id and kind and uri:
                assets.setdefault(asset_id, Asset(asset_id, kind, uri))  # type: ignore[arg-type]
        resolution = read.string(options.get("resolution"), "/previewRequest/options/resolution") or DEFAULT_RESOLUTION
        if not _ecma_regex(_OPTIONS["resolution"]["pattern"]).search(resolution):
            read.problem("/previewRequest/options/resolution", _resolution_form(resolution))
            resolution = DEFAULT_RESOLUTION
        width, height = (int(v) for v in resolution.split("x"))
        typed = cls(
            job_id=read.identifier(request.get("jobId"), "/jobId"),
            project_id=read.identifier(request.get("projectId"), "/projectId"),
            request_id=read.string(request.get("requestId"), "/requestId") or "",
            dry_run=read.boolean(request.get("dryRun"), "/dryRun", False),
            priority=read.choice(request.get("priority"), "/priority", PRIORITIES, DEFAULT_PRIORITY),
            title=_text(read.string(body.get("title"), "/previewRequest/title")),
            description=_text(read.string(body.get("description"), "/previewRequest/description")),
            steps=steps, assets=assets,
            narration=read.string(audio.get("narration"), "/previewRequest/audio/narration"),
            music=read.string(audio.get("music"), "/previewRequest/audio/music"),
            music_volume=read.number(audio.get("musicVolume"), "/previewRequest/audio/musicVolume",
                                     MIN_MUSIC_VOLUME, MAX_MUSIC_VOLUME, DEFAULT_MUSIC_VOLUME),
            width=width, height=height,
            fps=read.integer(options.get("fps"), "/previewRequest/options/fps", MIN_FPS, MAX_FPS, DEFAULT_FPS),
            format=read.choice(options.get("format"), "/previewRequest/options/format", FORMATS, DEFAULT_FORMAT),
            include_captions=read.boolean(options.get("includeCaptions"), "/previewRequest/options/includeCaptions",
                                          DEFAULT_INCLUDE_CAPTIONS),
        )
        _raise_if(read.errors, "the job payload does not read as a preview job")
        # the inline assets were decoded and measured at admission, and the loader does it
        # again as it fetches them: not a third time here
        _raise_if(_rules(payload, inline=False), "the job payload breaks the contract")
        return typed


class _Reader:
    """Reads values of a payload, collecting a problem (in the schema's words) for each one that
    is not of the type and range the contract gives. Absent values take their default."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []

    def problem(self, path: str, message: str) -> None:
        self.errors.append({"path": path or "/", "message": message})

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        self.problem(path, f"{_short(value)} is not of type 'object'")
        return {}

    def items(self, value: Any, path: str, most: int) -> list[Mapping[str, Any]]:
        if not isinstance(value, list):
            self.problem(path, f"{_short(value)} is not of type 'array'")
            return []
        if len(value) > most:
            self.problem(path, f"has {len(value)} items, more than the maximum of {most}")
        return [self.mapping(item, f"{path}/{i}") for i, item in enumerate(value)]

    def string(self, value: Any, path: str, *, required: bool = False) -> str | None:
        if value is None and not required:
            return None
        if isinstance(value, str) and (value or not required):
            return value
        self.problem(path, f"{_short(value)} is not of type 'string'")
        return None

    def identifier(self, value: Any, path: str) -> str:
        if is_id(value):
            return str(value)
        self.problem(path, ID_RULE)
        return ""

    def number(self, value: Any, path: str, low: float, high: float, default: float) -> float:
        if value is None:
            return float(default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            self.problem(path, f"{_short(value)} is not of type 'number'")
            return float(default)
        if not low <= value <= high:
            self.problem(path, f"{value!r} is not between the minimum of {low:g} and the maximum of {high:g}")
            return float(default)
        return float(value)

    def integer(self, value: Any, path: str, low: int, high: int, default: int) -> int:
        if value is None:
            return default
        # JSON Schema counts 30.0 as an integer; frame arithmetic needs a real one.
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"{_short(value)} must be an integer from {low} to {high}")
            return default
        if not low <= value <= high:
            self.problem(path, f"{value!r} must be an integer from {low} to {high}")
            return default
        return value

    def boolean(self, value: Any, path: str, default: bool | None) -> bool:
        if value is None and default is not None:
            return default
        if isinstance(value, bool):
            return value
        self.problem(path, f"{_short(value)} is not of type 'boolean'")
        return bool(default)

    def choice(self, value: Any, path: str, allowed: tuple[str, ...], default: str | None) -> str:
        if value is None and default is not None:
            return default
        if value in allowed:
            return str(value)
        self.problem(path, f"{_short(value)} is not one of {list(allowed)}")
        return default or ""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None
