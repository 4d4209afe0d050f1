"""Fixtures for render and artifact-store tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import Settings

# test modules import render_testkit by name; make that work under any pytest import mode
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "assets").mkdir()
    return Settings.from_env({
        "DATA_DIR": str(tmp_path / "data"),
        "PREVIEW_ASSET_DIR": str(tmp_path / "assets"),
        "PREVIEW_ASSET_BUCKETS": "asset-bucket",
    })


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials so boto3 never looks for real ones."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    yield
