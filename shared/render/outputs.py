"""The text files of a preview: the captions (WebVTT) and the JSON writers. File names and
the manifest are `shared.artifacts.layout`'s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.artifacts import layout
from shared.render.plan import RenderPlan


def vtt_time(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _cue_text(text: str) -> str:
    # cue payloads are markup: escape it; a blank line would end the cue and "-->" is reserved
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    lines = [line.strip() for line in escaped.splitlines()]
    return "\n".join(line for line in lines if line)


def captions_vtt(plan: RenderPlan) -> str:
    """WebVTT with one cue per step that has a title or text (the title card counts as a step)."""
    blocks = ["WEBVTT"]
    for step in plan.steps:
        body = "\n".join(part for part in (_cue_text(step.title or ""), _cue_text(step.text or "")) if part)
        if not body:
            continue
        blocks.append(f"step-{step.index + 1}\n{vtt_time(step.start_ms)} --> {vtt_time(step.end_ms)}\n{body}")
    return "\n\n".join(blocks) + "\n"


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


def write_json(path: Path, document: Any) -> None:
    write_text(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def remove_stale_outputs(out_dir: Path) -> None:
    """Drop files an earlier attempt left in the same folder, so they cannot be mistaken for
    (or listed with) this render's output."""
    for path in out_dir.iterdir():
        if path.is_file() and (layout.is_output(path.name) or path.name.endswith(".part")):
            path.unlink()
