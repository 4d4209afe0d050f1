"""No Redis password ever reaches a response or a log through the URL."""

from __future__ import annotations

import pytest

from shared.settings import mask_url

pytestmark = pytest.mark.usefixtures("no_sockets")


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
    ("redis://:pw@10.0.0.1:6380/2", "redis://***@10.0.0.1:6380/2"),
    ("rediss://user:pw@cache.example:6379/0", "rediss://***@cache.example:6379/0"),
    ("redis://127.0.0.1:6379/0?password=pw&db=1", "redis://127.0.0.1:6379/0"),
    ("redis://user@[::1]:6379", "redis://***@[::1]:6379"),
    ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert "pw" not in mask_url(url)
