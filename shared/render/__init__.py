"""Rendering of tutorial previews: plan a job, then encode it with PyAV.

Public API::

    plan_preview(request) -> RenderPlan
    render_preview(request, out_dir, settings, progress=None) -> RenderResult

`request` is a `shared.contract.JobRequest`. Exports resolve lazily so that importing a light
submodule (the plan) does not load PyAV, Pillow and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.render.pipeline import RenderResult, render_preview
    from shared.render.plan import PlannedStep, RenderPlan, plan_preview

__all__ = ["PlannedStep", "RenderPlan", "RenderResult", "plan_preview", "render_preview"]

_HOMES = {
    "PlannedStep": "shared.render.plan",
    "RenderPlan": "shared.render.plan",
    "plan_preview": "shared.render.plan",
    "RenderResult": "shared.render.pipeline",
    "render_preview": "shared.render.pipeline",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shared.render' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
