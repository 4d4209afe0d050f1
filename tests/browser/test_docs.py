"""/docs in a real browser against a real emulator process: Swagger UI renders every route of
the template offline, and "Try it out" enqueues a job (202), signed in the page with the
emulator's local credentials (IAM, the template's default) or with the API key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local.redis_server import RedisServer
from local.template import load_template
from tests.conftest import ROOT
from tests.emulator.conftest import Emulator, child_env

pytestmark = [pytest.mark.process, pytest.mark.slow]

KEY, SECRET, REGION = "AKIDDOCSEXAMPLE", "docs-secret-example", "eu-west-1"


def start(tmp_path: Path, redis: RedisServer, *extra: str) -> Emulator:
    import redis as redis_py

    redis_py.Redis.from_url(redis.url).flushall()
    env = child_env(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION=REGION, REDIS_URL=redis.url)
    env.pop("AWS_DEFAULT_REGION", None)
    return Emulator(tmp_path, ["--data-dir", str(tmp_path / "data"), "--no-worker", "--no-schedules", *extra],
                    env).start()


def operations(page: Any) -> set[tuple[str, str]]:
    page.wait_for_selector(".opblock")
    found = set()
    for block in page.query_selector_all(".opblock"):
        method = block.query_selector(".opblock-summary-method").inner_text().strip().upper()
        path = block.query_selector(".opblock-summary-path").get_attribute("data-path")
        found.add((method, path))
    return found


def authorize(page: Any, value: str) -> None:
    page.click("button.authorize")
    page.fill(".modal-ux input", value)
    page.click(".modal-ux .auth-btn-wrapper button.authorize")
    page.click(".modal-ux button.btn-done")


def try_enqueue(page: Any) -> tuple[str, str]:
    block = page.locator(".opblock-post", has=page.locator('[data-path="/api/preview/job"]'))
    if "is-open" not in (block.get_attribute("class") or ""):
        block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table td.response-col_status:not(.col_header)")
    status.wait_for()
    return status.inner_text().strip(), block.locator(".live-responses-table .microlight").first.inner_text()


def test_docs_render_every_route_and_try_it_out_signs_with_sigv4(tmp_path: Path, redis_server: RedisServer,
                                                                 page: Any) -> None:
    emulator = start(tmp_path, redis_server)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{emulator.url}/docs")
        # Every route of the template is on the page, and the bundled UI accepted the 3.1 document
        routes = {(r.method, r.path) for r in load_template(ROOT / "template.yaml").routes()}
        assert operations(page) == routes
        assert "Unable to render" not in page.content()
        # The default example is one that is admitted on its own, and says so
        block = page.locator(".opblock-post", has=page.locator('[data-path="/api/preview/job"]'))
        block.locator(".opblock-summary").click()
        assert "(202)" in block.locator(".examples-select select option:checked").inner_text()
        block.locator(".opblock-summary").click()
        # Without credentials the emulator refuses the call, as API Gateway would
        status, body = try_enqueue(page)
        assert status == "403", body
        page.goto(f"{emulator.url}/docs")
        operations(page)
        # With the emulator's local credentials typed into Authorize, the page signs the request
        authorize(page, f"{KEY}:{SECRET}")
        status, body = try_enqueue(page)
        assert status == "202", body
        assert '"status": "queued"' in body
        assert errors == []
    finally:
        emulator.stop()


def test_try_it_out_with_the_api_key(tmp_path: Path, redis_server: RedisServer, page: Any) -> None:
    emulator = start(tmp_path, redis_server, "--api-key", "docs-key")
    try:
        page.goto(f"{emulator.url}/docs")
        operations(page)
        authorize(page, "docs-key")
        status, body = try_enqueue(page)
        assert status == "202", body
    finally:
        emulator.stop()
