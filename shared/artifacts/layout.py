"""What a published preview looks like, in one place: its file names, their content types,
which file is the preview's main one, where a job's files live, and the manifest format.

    previews/{projectId}/{jobId}/
        preview.mp4 | preview.webm | preview.gif   the video (not in a dry run)
        poster.png                                 the first frame (not in a dry run)
        captions.vtt                               WebVTT, one cue per step (not in a dry run)
        preview.json                               the summary: duration, resolution, codecs, steps
        container.json                             the manifest: every other file's name, bytes,
                                                   content type and sha256

container.json is the commit marker of a set: a store writes it last, so a reader that finds it
can trust every file it names. The renderer writes it beside its outputs; a store publishes it
as it is, after checking it against the files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from shared.contract import FORMATS, is_id
from shared.errors import RenderError

PREFIX = "previews"
MANIFEST = "container.json"
SUMMARY = "preview.json"
POSTER = "poster.png"
CAPTIONS = "captions.vtt"

CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".gif": "image/gif",
    ".png": "image/png",
    ".vtt": "text/vtt",
    ".json": "application/json",
}


def video_name(format: str) -> str:
    return f"preview.{format}"


VIDEO_NAMES = tuple(video_name(f) for f in FORMATS)
# Everything a render may write; a store cleans these up where no manifest names them.
OUTPUT_NAMES = (*VIDEO_NAMES, POSTER, CAPTIONS, SUMMARY)


def is_output(name: str) -> bool:
    return name in OUTPUT_NAMES or name == MANIFEST


def main_file(names: list[str]) -> str:
    """The file a client opens first: the video, or the summary of a dry run."""
    return next((name for name in names if name in VIDEO_NAMES), SUMMARY)


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def check_name(value: str, what: str) -> str:
    # the payload's id rule: no '/', no leading '.', so no path or key injection
    if not is_id(value):
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def job_key(project_id: str, job_id: str, name: str) -> str:
    """`previews/{projectId}/{jobId}/{name}`: the S3 key and the local path below DATA_DIR."""
    return f"{PREFIX}/{check_name(project_id, 'projectId')}/{check_name(job_id, 'jobId')}/" \
           f"{check_name(name, 'artifact name')}"


# --------------------------------------------------------------------------- the manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path, names: list[str] | None = None) -> list[dict[str, Any]]:
    """name, bytes, contentType, sha256 of each file (default: every regular file except the
    manifest), sorted by name."""
    if names is None:
        names = [p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST]
    entries = []
    for name in sorted(names):
        path = directory / name
        entries.append({
            "name": name,
            "bytes": path.stat().st_size,
            "contentType": content_type(name),
            "sha256": sha256_file(path),
        })
    return entries


def build_manifest(project_id: str, job_id: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {"jobId": job_id, "projectId": project_id, "files": files}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parse_manifest(raw: bytes) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(raw)
    return manifest


def write_manifest(directory: Path, project_id: str, job_id: str, names: list[str]) -> dict[str, Any]:
    """Describe `names` in `directory` and write the manifest beside them."""
    manifest = build_manifest(project_id, job_id, describe_files(directory, names))
    (directory / MANIFEST).write_bytes(manifest_bytes(manifest))
    return manifest


def manifest_to_publish(project_id: str, job_id: str, src_dir: Path) -> tuple[dict[str, Any], bytes]:
    """The manifest of a folder about to be published: its container.json as it is (checked
    against the files), or one built from its files."""
    path = src_dir / MANIFEST
    if path.is_file():
        raw = path.read_bytes()
        manifest = parse_manifest(raw)
    else:
        manifest = build_manifest(project_id, job_id, describe_files(src_dir))
        raw = manifest_bytes(manifest)
    for entry in manifest["files"]:
        name = check_name(entry["name"], "artifact name")
        size = (src_dir / name).stat().st_size
        if size != entry["bytes"]:
            raise RenderError(f"{name} is {size} bytes but the manifest says {entry['bytes']}")
    return manifest, raw
