"""`make venv` on a fresh machine takes a minute or more: it must say what it is doing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.process


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_venv_recipe_reports_each_step_and_lets_pip_list_packages(tmp_path: Path) -> None:
    # Given a virtual environment that does not exist yet, when make shows (-n) what venv runs
    plan = subprocess.run(["make", "-n", "-B", "venv", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    # Then each step announces itself, and the long install is not silenced
    for step in ("creating the virtual environment", "[1/2]", "[2/2]", "ready"):
        assert step in plan, f"make venv does not announce {step!r}:\n{plan}"
    install = [line for line in plan.splitlines() if "pip install" in line and "-e " in line]
    assert install, plan
    assert all("--quiet" not in line and " -q" not in line for line in install), install


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_sam_build_finds_a_target_for_every_function() -> None:
    # `sam build` runs `make build-<LogicalId>` for each function whose Metadata says makefile.
    from local.template import read_document

    resources = read_document(ROOT / "template.yaml")["Resources"]
    wanted = {name for name, r in resources.items()
              if (r.get("Metadata") or {}).get("BuildMethod") == "makefile"}
    assert wanted, "no function is built by the Makefile"
    plan = subprocess.run(["make", "-n", *(f"build-{name}" for name in sorted(wanted)), "ARTIFACTS_DIR=/nowhere"],
                          cwd=ROOT, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    for name in wanted:
        assert f"--function {name} " in plan.stdout, plan.stdout
