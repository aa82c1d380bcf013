"""The demo page in headless Chromium (Debian's, driven by Playwright), calling the real functions
cross-origin on a real HTTP server with the real database. Screenshots land in tests/screenshots/."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions import runtime
from functions.db.postgres import PostgresDatabase
from tests import fnsupport
from tests.pg import Sql

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent / "screenshots"
DEMO_USER = "00000000-0000-4000-8000-00000000d3e0"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is missing: run python -m tests.setup_browser")


class Servers:
    def __init__(self, functions_url: str, demo_url: str, db: Sql) -> None:
        self.functions_url, self.demo_url, self.db = functions_url, demo_url, db


@pytest.fixture
def servers(fn_env: None, db: Sql, monkeypatch: pytest.MonkeyPatch) -> Iterator[Servers]:
    from werkzeug.serving import make_server

    from functions.serve import build_app, build_demo_app, serve_in_thread

    functions, functions_thread, functions_port = serve_in_thread(build_app())  # uvicorn, as deployed
    functions_url = f"http://127.0.0.1:{functions_port}"
    demo_token = fnsupport.token(DEMO_USER, email="demo@example.com")
    demo = make_server("127.0.0.1", 0, build_demo_app(functions_url, demo_token), threaded=True)
    demo_url = f"http://127.0.0.1:{demo.server_port}"
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", demo_url)  # cross-origin, as a deployed frontend
    runtime.reset()
    runtime.install(PostgresDatabase(db.url, max_size=4))
    threading.Thread(target=demo.serve_forever, daemon=True).start()
    yield Servers(functions_url, demo_url, db)
    functions.should_exit = True
    functions_thread.join(10)
    demo.shutdown()


@pytest.fixture
def page(servers: Servers) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(f"{servers.demo_url}/index.html")
        page.click("#demo-signin")
        page.wait_for_selector("[data-testid=whoami]:has-text('demo@example.com')")
        yield page
        browser.close()


def send(page: Any, text: str) -> None:
    page.fill("#chat-input", text)
    page.click("#send")
    page.wait_for_selector(f"#messages li.assistant:has-text('You said: {text}')")
    page.wait_for_selector("[data-testid=chat-meta]:has-text('offline')")


def test_typing_a_message_streams_the_reply(page: Any, servers: Servers) -> None:
    send(page, "hello from the browser")
    page.screenshot(path=str(SHOTS / "chat.png"), full_page=True)
    replies = page.locator("#messages li.assistant").all_text_contents()
    assert len(replies) == 1 and "offline development model" in replies[0]
    assert servers.db.one("select count(*) from public.chat_messages where user_id = %s", (DEMO_USER,)) == 2


def test_reloading_finds_the_session_and_reopens_it(page: Any, servers: Servers) -> None:
    send(page, "remember me")
    page.reload()
    page.wait_for_selector("#sessions li:has-text('remember me')")
    page.click("#new-session")
    assert page.locator("#messages li").count() == 0
    page.click("#sessions li:has-text('remember me')")
    page.wait_for_selector("#messages li.user:has-text('remember me')")
    assert page.locator("#messages li").count() == 2
    page.screenshot(path=str(SHOTS / "sessions.png"), full_page=True)


def test_usage_chart_changes_after_a_turn(page: Any, servers: Servers) -> None:
    page.click("nav button[data-page=usage]")
    page.wait_for_selector("[data-testid=usage-total]:has-text('requests')")
    before_bars = page.locator("#chart rect").count()
    before_quota = float(page.get_attribute("#quota-used", "data-percent") or 0)
    page.click("nav button[data-page=chat]")
    send(page, "count me")
    page.click("nav button[data-page=usage]")
    page.wait_for_function(f"document.querySelectorAll('#chart rect').length > {before_bars}")
    assert float(page.get_attribute("#quota-used", "data-percent") or 0) > before_quota
    page.screenshot(path=str(SHOTS / "usage.png"), full_page=True)


def test_compile_shows_code_and_diagnostics(page: Any) -> None:
    page.click("nav button[data-page=compile]")
    page.fill("#task", "select the top customers")
    page.select_option("#language", "sql")
    page.click("#compile-form button[type=submit]")
    page.wait_for_selector("[data-testid=code]:has-text('select 1')")
    assert "no diagnostics" in page.text_content("[data-testid=diagnostics]")
    page.screenshot(path=str(SHOTS / "compile.png"), full_page=True)


def test_key_screen_creates_copies_lists_and_revokes_a_key(page: Any, servers: Servers) -> None:
    import httpx

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=servers.demo_url)
    page.click("nav button[data-page=keys]")
    page.fill("#key-name", "dashboard script")
    page.uncheck("#key-form input[value=models]")
    page.select_option("#key-expiry", "7")
    page.click("#create-key")
    page.wait_for_selector("[data-testid=new-key-value]:has-text('sk_')")
    key = page.text_content("[data-testid=new-key-value]") or ""
    page.click("#copy-key")
    page.wait_for_selector("[data-testid=copy-status]:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = page.locator("#keys tbody tr:has-text('dashboard script')")
    assert row.locator("td").nth(2).text_content() == "usage:read"
    assert row.locator("td").nth(3).text_content() == "active"
    assert key[16:] not in (page.text_content("#keys") or "")  # the list shows the prefix, never the secret
    page.screenshot(path=str(SHOTS / "keys.png"), full_page=True)

    # The key works for what its scope allows, and nothing else.
    headers = {"X-API-Key": key}
    assert httpx.get(f"{servers.functions_url}/usage", headers=headers).status_code == 200
    refused = httpx.post(f"{servers.functions_url}/chat", headers=headers, json={"message": "hi"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"

    row.locator("button.revoke").click()
    page.wait_for_selector("#keys tbody tr.revoked:has-text('dashboard script')")
    assert httpx.get(f"{servers.functions_url}/usage", headers=headers).status_code == 401

    page.click("nav button[data-page=chat]")  # leaving the screen forgets the key: it was shown once
    page.click("nav button[data-page=keys]")
    page.wait_for_selector("#keys tbody tr.revoked")
    assert page.is_hidden("[data-testid=new-key]") and key not in page.content()
