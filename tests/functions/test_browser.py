"""The demo page in headless Chromium (Debian's, driven by Playwright), calling the real functions
cross-origin on a real HTTP server with the real database. Screenshots land in tests/screenshots/;
axe-core (tests/support/vendor/axe.min.js, vendored from npm with the page's libraries) checks accessibility."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from functions import runtime
from functions.db.postgres import PostgresDatabase
from tests.support import fnsupport
from tests.support.pg import Sql

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "screenshots"
AXE = Path(__file__).resolve().parents[1] / "support" / "vendor" / "axe.min.js"
DEMO = Path(__file__).resolve().parents[2] / "functions" / "dev" / "demo"
DEMO_USER = "00000000-0000-4000-8000-00000000d3e0"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is missing: run python -m tests.support.setup_browser")


class Servers:
    def __init__(self, functions_url: str, demo_url: str, db: Sql) -> None:
        self.functions_url, self.demo_url, self.db = functions_url, demo_url, db


@pytest.fixture
def servers(fn_env: None, db: Sql, monkeypatch: pytest.MonkeyPatch) -> Iterator[Servers]:
    from werkzeug.serving import make_server

    from functions.dev.serve import build_demo_app
    from tests.support.served import served_functions

    with served_functions() as functions_url:  # uvicorn, as deployed
        demo_token = fnsupport.token(DEMO_USER, email="demo@example.com")
        demo = make_server("127.0.0.1", 0, build_demo_app(functions_url, demo_token), threaded=True)
        demo_url = f"http://127.0.0.1:{demo.server_port}"
        monkeypatch.setenv("CORS_ALLOWED_ORIGINS", demo_url)  # cross-origin, as a deployed frontend
        runtime.reset()
        runtime.install(PostgresDatabase(db.url, max_size=4))
        threading.Thread(target=demo.serve_forever, daemon=True).start()
        yield Servers(functions_url, demo_url, db)
        demo.shutdown()


@pytest.fixture
def browser_page(servers: Servers) -> Iterator[Any]:
    """The page, open and signed out."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{servers.demo_url}/index.html")
        yield page
        assert not errors, errors  # no uncaught exception in the page, whatever the test did
        browser.close()


@pytest.fixture
def page(browser_page: Any) -> Any:
    """The page, signed in as the demo user."""
    browser_page.click("#demo-signin")
    browser_page.wait_for_selector("[data-testid=whoami]:has-text('Signed in as demo@example.com')")
    return browser_page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def send(page: Any, text: str) -> Any:
    """Send a one-line message and wait for the whole streamed answer; returns the answer's turn."""
    count = page.locator("#messages li.assistant").count()
    page.fill("#chat-input", text)
    page.click("#send")
    page.wait_for_function(f"document.querySelectorAll('#messages li.assistant').length > {count}")
    page.wait_for_selector("#send:visible")  # the stream is over
    page.wait_for_function("document.querySelectorAll('#messages li.assistant.streaming').length === 0")
    return page.locator("#messages li.assistant").last


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations of the page as it is now."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def slow_offline_stream(monkeypatch: pytest.MonkeyPatch, *, pieces: int = 200, delay: float = 0.05,
                        fail_after: int | None = None) -> None:
    """The offline model writes slowly (so Stop has something to stop), or fails after some deltas."""
    from functions.errors import BadGateway
    from functions.providers import Delta, Offline

    original = Offline.stream

    async def stream(self: Any, model: str, messages: Any, max_tokens: int) -> AsyncIterator[Any]:
        final = None
        i = -1
        async for item in original(self, model, messages, max_tokens):
            i += 1
            if not isinstance(item, Delta):
                final = item
                continue
            if fail_after is not None and i == fail_after:
                raise BadGateway("The model provider failed mid-answer (test).", code="provider_error")
            yield item
            await asyncio.sleep(delay)
        for _ in range(pieces):  # a long tail of words, for the stop test
            yield Delta(" more")
            await asyncio.sleep(delay)
        yield final

    monkeypatch.setattr(Offline, "stream", stream)


# -- chat ---------------------------------------------------------------------------------------------

def test_typing_a_message_streams_the_labelled_reply(page: Any, servers: Servers) -> None:
    reply = send(page, "hello from the browser")
    shot(page, "chat")
    assert "You said: hello from the browser" in reply.inner_text()
    assert "offline development model" in reply.inner_text()
    assert page.locator("#messages li.user .turn-label").inner_text().lower() == "you"
    assert reply.locator(".turn-label").inner_text().lower() == "assistant"
    assert reply.locator(".turn-model").inner_text() == "offline-dev"
    assert reply.locator(".partial-badge").is_hidden()
    page.wait_for_selector("[data-testid=chat-meta]:has-text('offline')")
    assert servers.db.one("select count(*) from public.chat_messages where user_id = %s", (DEMO_USER,)) == 2


def test_reloading_finds_the_session_and_reopens_it(page: Any, servers: Servers) -> None:
    send(page, "remember me")
    page.reload()
    page.wait_for_selector("[data-testid=whoami]:has-text('Signed in')")
    page.wait_for_selector("#sessions li:has-text('remember me')")
    page.click("#new-session")
    assert page.locator("#messages li").count() == 0
    page.click("#sessions li:has-text('remember me') button")
    page.wait_for_selector("#messages li.user:has-text('remember me')")
    assert page.locator("#messages li").count() == 2
    shot(page, "sessions")


def test_markdown_and_code_blocks_render_with_a_copy_button(page: Any, servers: Servers) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=servers.demo_url)
    message = "Use this:\n```python\nprint(sorted([3, 1, 2]))\n```\nIt is **fast** and uses `sorted`.\n\n- one\n- two"
    page.fill("#chat-input", message)
    page.click("#send")
    page.wait_for_selector("#messages li.assistant .code-block pre code")
    page.wait_for_selector("#send:visible")
    reply = page.locator("#messages li.assistant").last
    assert reply.locator("pre code").inner_text().strip() == "print(sorted([3, 1, 2]))"
    assert reply.locator(".code-lang").inner_text() == "python"
    assert reply.locator("strong").inner_text() == "fast"
    assert reply.locator("p code").first.inner_text() == "sorted"
    assert reply.locator("ul li").count() == 2
    reply.locator(".code-block button.copy").click()
    page.wait_for_selector("#messages li.assistant .code-block button.copy:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()").strip() == "print(sorted([3, 1, 2]))"
    # the user's own turn is shown as typed, not rendered
    assert "```python" in page.locator("#messages li.user").last.inner_text()
    shot(page, "markdown")
    assert axe_violations(page) == []


def test_the_chat_fits_a_phone_screen(page: Any) -> None:
    page.set_viewport_size({"width": 400, "height": 800})
    code = "print('a line of code far too long for a phone screen, which scrolls')"
    page.fill("#chat-input", f"Here:\n```python\n{code}\n```\nok")
    page.click("#send")
    page.wait_for_selector("#messages li.assistant .code-block")
    page.wait_for_selector("#send:visible")
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # the code block scrolls, not the page
    shot(page, "chat-phone")


def test_html_in_an_answer_never_runs(page: Any) -> None:
    attack = ('<img src=x onerror="window.__xss=\'img\'"> <script>window.__xss=\'script\'</script> '
              '<a href="javascript:window.__xss=\'href\'">click</a> [md](javascript:window.__xss=\'md\') '
              '<svg onload="window.__xss=\'svg\'"></svg> ![pixel](http://127.0.0.1:9/leak.png)')
    reply = send(page, attack)
    text = reply.inner_text()
    assert "You said:" in text and "<img src=x" in text and "<script>" in text  # shown as text
    hrefs = page.eval_on_selector_all("#messages a", "as => as.map(a => a.getAttribute('href') || '')")
    assert not [h for h in hrefs if h.strip().lower().startswith("javascript")]
    for link in page.locator("#messages a").all():
        if link.inner_text() == "md":
            link.click()  # no href left: nothing happens
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    inert = "#messages img, #messages script, #messages svg, #messages [onerror], #messages [onload]"
    assert page.locator(inert).count() == 0
    # reopened from the database, the same answer is just as inert
    page.reload()
    page.wait_for_selector("#messages li.assistant:has-text('You said:')")
    assert page.evaluate("window.__xss") is None
    assert page.locator("#messages img, #messages script, #messages svg").count() == 0
    shot(page, "html-not-executed")


def test_stop_keeps_the_partial_answer_shown_as_partial(page: Any, servers: Servers,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    slow_offline_stream(monkeypatch)
    page.fill("#chat-input", "write a long answer")
    page.click("#send")
    page.wait_for_selector("#stop:visible")
    page.wait_for_selector("#messages li.assistant .turn-body:has-text('of this session) more more')")
    page.click("#stop")
    page.wait_for_selector("#send:visible")
    reply = page.locator("#messages li.assistant").last
    assert reply.locator(".partial-badge").is_visible()
    assert "partial" in reply.locator(".partial-badge").inner_text()
    shown = reply.locator(".turn-body").inner_text()
    assert "You said: write a long answer" in shown and reply.locator(".turn-error").is_hidden()
    # the backend kept (and billed) what was delivered, as a partial answer
    deadline = time.monotonic() + 10
    row = None
    while time.monotonic() < deadline:
        rows = servers.db.q("select status, content from public.chat_messages "
                            "where user_id = %s and role = 'assistant'", (DEMO_USER,))
        if rows:
            row = rows[0]
            break
        time.sleep(0.1)
    assert row is not None and row["status"] == "partial" and row["content"].startswith(shown.split(" more")[0][:40])
    charged = servers.db.one("select count(*) from public.usage_logs where user_id = %s and cost_usd > 0", (DEMO_USER,))
    assert charged == 1
    shot(page, "stopped-partial")
    assert axe_violations(page) == []
    # the page found the session the stopped stream started; reopened, the answer is still marked partial
    page.wait_for_selector("#sessions li.current:has-text('write a long answer')")
    page.reload()
    page.wait_for_selector("#messages li.assistant.partial .partial-badge:has-text('partial')")


def test_a_failed_stream_shows_its_error_in_place(page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_offline_stream(monkeypatch, pieces=0, delay=0.01, fail_after=2)
    page.fill("#chat-input", "this one breaks")
    page.click("#send")
    page.wait_for_selector("#messages li.assistant .turn-error:visible")
    reply = page.locator("#messages li.assistant").last
    error = reply.locator(".turn-error").inner_text()
    assert "failed mid-answer" in error and "provider_error" in error
    assert reply.locator(".partial-badge").inner_text() == "partial"  # some text did arrive: kept as partial
    assert reply.locator(".turn-body").inner_text().strip() != ""

    # refused before anything streamed: the error in the answer's place, no empty "partial" bubble
    page.fill("#chat-input", "x" * 32001)
    page.click("#send")
    page.wait_for_selector("#messages li.assistant.failed .turn-error:visible")
    failed = page.locator("#messages li.assistant").last
    assert "32000" in failed.locator(".turn-error").inner_text()
    assert failed.locator(".partial-badge").is_hidden() and failed.locator(".turn-body").is_hidden()
    assert len(page.input_value("#chat-input")) == 32001  # given back, to edit and send again
    shot(page, "errors-in-place")
    assert axe_violations(page) == []


def test_model_picker_lists_the_models_and_sends_the_choice(page: Any, servers: Servers) -> None:
    import httpx

    listed = httpx.get(f"{servers.functions_url}/chat/models",
                       headers={"Authorization": f"Bearer {fnsupport.token(DEMO_USER)}"}).json()
    page.wait_for_selector("#model option", state="attached")
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert options == [m["model"] for m in listed["items"]] and len(options) >= 2
    assert page.input_value("#model") == listed["default_model"] == "offline-dev"
    assert "default" in page.locator("#model option[value='offline-dev']").inner_text()
    assert "per million tokens" in page.inner_text("[data-testid=model-price]")
    # a second model answered by the offline provider, so the choice can be seen end to end
    servers.db.q("update public.model_prices set provider = 'offline' where model = 'gpt-4o'")
    page.select_option("#model", "gpt-4o")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/chat")) as request:
        reply = send(page, "which model?")
    assert json.loads(request.value.post_data)["model"] == "gpt-4o"
    assert reply.locator(".turn-model").inner_text() == "gpt-4o"
    page.wait_for_selector("[data-testid=chat-meta]:has-text('gpt-4o')")
    page.reload()  # the choice is remembered for the tab
    page.wait_for_selector("[data-testid=whoami]:has-text('Signed in')")
    page.wait_for_selector("#model option", state="attached")
    assert page.input_value("#model") == "gpt-4o"
    shot(page, "model-picker")


def test_long_session_titles_are_cut_with_the_full_title_on_hover(page: Any) -> None:
    long = "a very long first message that would not fit in the sidebar at all " * 3
    send(page, long.strip())
    page.wait_for_selector("#sessions li .session-title")
    title = page.locator("#sessions li .session-title").first
    assert page.evaluate("e => e.scrollWidth > e.clientWidth", title.element_handle())  # cut (ellipsis)
    aside = page.locator(".sessions-pane").bounding_box()
    box = title.bounding_box()
    assert box["x"] + box["width"] <= aside["x"] + aside["width"] + 1  # stays in the sidebar
    full = page.get_attribute("#sessions li button.session", "title") or ""
    assert full.startswith("a very long first message") and len(full) > 60
    shot(page, "long-title")


# -- usage --------------------------------------------------------------------------------------------

NINE = ["alpha-1", "bravo-2", "charlie-3", "delta-4", "echo-5", "foxtrot-6", "golf-7", "hotel-8", "india-9"]


def seed_usage(servers: Servers) -> dict[str, float]:
    """Nine charged models over the last days, and one that cost nothing; returns cost per model."""
    import httpx

    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    events, costs = [], {}
    for i, model in enumerate(NINE):
        for back in (0, 2, 5):
            cost = round(0.001 * (i + 1) * (back + 1), 6)
            costs[model] = round(costs.get(model, 0) + cost, 6)
            events.append({"event_id": str(uuid.uuid4()), "user_id": DEMO_USER, "service": "chat", "operation": "chat",
                           "model": model, "input_tokens": 100, "output_tokens": 50, "cost_usd": str(cost),
                           "created_at": (today - timedelta(days=back)).isoformat()})
    events.append({"event_id": str(uuid.uuid4()), "user_id": DEMO_USER, "service": "batch", "operation": "embed",
                   "model": "free-model", "input_tokens": 999, "output_tokens": 0, "cost_usd": "0",
                   "created_at": today.isoformat()})
    r = httpx.post(f"{servers.functions_url}/usage", json={"events": events},
                   headers={"Authorization": f"Bearer {fnsupport.SERVICE_SECRET}"})
    assert r.status_code == 200, r.text
    # past days are read from the daily view: refresh it, as the scheduler would
    service = {"Authorization": f"Bearer {fnsupport.SERVICE_SECRET}"}
    r = httpx.post(f"{servers.functions_url}/refresh_views", headers=service)
    assert r.status_code == 200, r.text
    return costs


def chart(page: Any) -> dict[str, Any]:
    return page.evaluate("""() => {
      const c = Chart.getChart('chart');
      return {labels: c.data.labels, datasets: c.data.datasets.map(d => ({label: d.label, data: d.data,
              colour: d.backgroundColor})), x: c.options.scales.x.title.text, y: c.options.scales.y.title.text,
              yTicks: c.scales.y.ticks.map(t => t.label),
              totals: c.$barTotals || []};
    }""")


def open_usage(page: Any) -> None:
    page.click("nav button[data-page=usage]")
    page.wait_for_selector("[data-testid=usage-total]:has-text('requests')")


def table_costs(page: Any, column: int) -> dict[str, float]:
    """Cost per key (the given key column) summed over the table's rows."""
    sums: dict[str, float] = {}
    for row in page.locator("#usage-table tbody tr").all():
        cells = row.locator("td").all_inner_texts()
        sums[cells[column]] = round(sums.get(cells[column], 0) + float(cells[-1].lstrip("$")), 6)
    return sums


def test_usage_chart_is_readable_without_hovering(page: Any, servers: Servers) -> None:
    costs = seed_usage(servers)
    open_usage(page)
    c = chart(page)
    # axes with titles, dates on x, dollar values on y, and the value of every bar written on it
    assert c["x"] == "Day (UTC)" and c["y"] == "Cost (USD)"
    assert len(c["labels"]) == 30
    today = datetime.now(UTC).date()
    assert c["labels"][-1] == f"{today:%b} {today.day}"
    assert all(t.startswith("$") for t in c["yTicks"])
    assert len([t for t in c["totals"] if t]) == 3  # three days carry cost, three labels drawn
    # one series per charged model, each its own colour; the model that cost nothing is left out
    names = [d["label"] for d in c["datasets"]]
    assert sorted(names) == NINE
    assert len({d["colour"] for d in c["datasets"]}) == 9
    legend = page.locator("#legend li")
    assert legend.count() == 9 and "free-model" not in page.inner_text("#legend")
    colours = page.eval_on_selector_all("#legend li", "ls => ls.map(l => l.dataset.colour)")
    assert len(set(colours)) == 9
    assert "free-model" in page.inner_text("[data-testid=chart-note]")
    # the table holds the same numbers (and lists the free model too)
    per_model = table_costs(page, 1)
    for d in c["datasets"]:
        assert round(sum(d["data"]), 6) == pytest.approx(costs[d["label"]], abs=1e-6)
        assert per_model[d["label"]] == pytest.approx(costs[d["label"]], abs=1e-6)
    assert per_model["free-model"] == 0
    total = float(page.locator("#usage-table tfoot td").last.inner_text().lstrip("$"))
    assert total == pytest.approx(sum(costs.values()), abs=1e-6)
    shot(page, "usage")
    assert axe_violations(page) == []


def test_usage_range_and_grouping_switch(page: Any, servers: Servers) -> None:
    costs = seed_usage(servers)
    open_usage(page)
    today = datetime.now(UTC).date()
    with page.expect_response(lambda r: "/usage?" in r.url and "from=" in r.url) as answer:
        page.click("#usage-form [data-days='7']")
    assert f"from={today - timedelta(days=6)}" in answer.value.url
    page.wait_for_function("Chart.getChart('chart').data.labels.length === 7")
    assert table_costs(page, 1) == pytest.approx({**costs, "free-model": 0}, abs=1e-6)
    # from three days ago: today's and two days ago's events, not those of five days ago
    page.fill("#usage-from", str(today - timedelta(days=3)))
    page.dispatch_event("#usage-from", "change")
    page.wait_for_function("Chart.getChart('chart').data.labels.length === 4")
    in_range = {m: round(0.001 * (i + 1) * (1 + 3), 6) for i, m in enumerate(NINE)}
    assert table_costs(page, 1) == pytest.approx({**in_range, "free-model": 0}, abs=1e-6)

    page.check("#group-by input[value=model]")
    page.wait_for_function("Chart.getChart('chart').options.scales.x.title.text === 'Model'")
    c = chart(page)
    assert sorted(c["labels"]) == NINE and "free-model" not in c["labels"]
    assert page.locator("#usage-table thead th").first.inner_text() == "Model"
    assert table_costs(page, 0) == pytest.approx({**in_range, "free-model": 0}, abs=1e-6)
    shot(page, "usage-by-model")

    page.check("#group-by input[value=service]")
    page.wait_for_function("Chart.getChart('chart').options.scales.x.title.text === 'Service'")
    assert chart(page)["labels"] == ["chat"]  # batch cost nothing: not charted
    assert set(table_costs(page, 0)) == {"batch", "chat"}

    page.check("#group-by input[value=day]")
    page.wait_for_function("Chart.getChart('chart').data.datasets.length === 1 && "
                           "Chart.getChart('chart').options.scales.x.title.text === 'Day (UTC)'")
    assert len(chart(page)["labels"]) == 4

    # a range the other way round is refused where it was chosen
    page.fill("#usage-from", str(today))
    page.fill("#usage-to", str(today - timedelta(days=3)))
    page.dispatch_event("#usage-to", "change")
    page.wait_for_selector("[data-testid=usage-error]:visible")
    assert "on or before" in page.inner_text("[data-testid=usage-error]")
    page.fill("#usage-from", str(today - timedelta(days=40)))
    page.dispatch_event("#usage-from", "change")
    page.wait_for_selector("[data-testid=usage-error]", state="hidden")
    shot(page, "usage-by-day")


def test_usage_chart_changes_after_a_turn(page: Any) -> None:
    open_usage(page)
    before = page.evaluate("Chart.getChart('chart').data.datasets.length")
    page.click("nav button[data-page=chat]")
    send(page, "count me")
    open_usage(page)
    page.wait_for_function(f"Chart.getChart('chart').data.datasets.length > {before}")
    assert page.evaluate("Chart.getChart('chart').data.datasets[0].label") == "offline-dev"
    assert float(page.get_attribute("#quota-used", "data-percent") or 0) > 0


def test_quota_bar_is_visible_at_a_small_percentage(page: Any, servers: Servers) -> None:
    servers.db.q("update public.billing_accounts set month_spend_usd = 0.02, "
                 "period_start = date_trunc('month', now() at time zone 'utc')::date where user_id = %s", (DEMO_USER,))
    open_usage(page)
    page.wait_for_selector("[data-testid=quota-percent]:has-text('0.02% used')")
    box = page.locator("#quota-used").bounding_box()
    assert box is not None and box["width"] >= 5  # 0.02% of the bar would be a fraction of a pixel
    assert page.get_attribute("#quota-bar", "aria-valuetext") == "0.02% used"
    assert "$0.020000 spent" in page.inner_text("[data-testid=quota-text]")
    page.locator(".quota").screenshot(path=str(SHOTS / "quota-small.png"))


# -- compile, keys, account -----------------------------------------------------------------------------

def test_compile_shows_code_and_diagnostics(page: Any) -> None:
    page.click("nav button[data-page=compile]")
    page.fill("#task", "select the top customers")
    page.select_option("#language", "sql")
    page.click("#compile")
    page.wait_for_selector("[data-testid=code]:has-text('select 1')")
    assert "no diagnostics" in page.text_content("[data-testid=diagnostics]")
    assert page.locator("#compile-result button.copy").is_visible()
    shot(page, "compile")
    assert axe_violations(page) == []


def test_key_screen_creates_copies_lists_and_revokes_a_key(page: Any, servers: Servers) -> None:
    import httpx

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=servers.demo_url)
    page.click("nav button[data-page=keys]")
    page.wait_for_selector("#keys-empty:visible")
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
    shot(page, "keys")
    assert axe_violations(page) == []

    # The key works for what its scope allows, and nothing else.
    headers = {"X-API-Key": key}
    assert httpx.get(f"{servers.functions_url}/usage", headers=headers).status_code == 200
    refused = httpx.post(f"{servers.functions_url}/chat", headers=headers, json={"message": "hi"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"

    row.locator("button.revoke").click()
    page.wait_for_selector("#keys tbody tr.revoked:has-text('dashboard script')")
    assert httpx.get(f"{servers.functions_url}/usage", headers=headers).status_code == 401

    # a refused create is shown on the key screen
    page.fill("#key-name", "no scopes")
    page.uncheck("#key-form input[value=usage\\:read]")
    page.click("#create-key")
    page.wait_for_selector("[data-testid=keys-error]:visible")
    assert page.is_hidden("[data-testid=new-key]")

    page.click("nav button[data-page=chat]")  # leaving the screen forgets the key: it was shown once
    page.click("nav button[data-page=keys]")
    page.wait_for_selector("#keys tbody tr.revoked")
    assert page.is_hidden("[data-testid=new-key]") and key not in page.content()


def test_sign_out_leaves_a_clear_signed_out_state(page: Any) -> None:
    send(page, "before signing out")
    page.click("#sign-out")
    page.wait_for_selector("[data-testid=signed-out]:visible")
    assert page.inner_text("[data-testid=whoami]") == "Signed out"
    assert page.is_hidden("#nav") and page.is_hidden("#sign-out") and page.is_hidden("#page-chat")
    assert page.locator("#messages li").count() == 0
    assert page.evaluate("sessionStorage.getItem('token')") is None
    page.reload()  # stays signed out
    page.wait_for_selector("[data-testid=signed-out]:visible")
    assert page.inner_text("[data-testid=whoami]") == "Signed out"
    shot(page, "signed-out")
    assert axe_violations(page) == []


def test_a_bad_token_is_refused_and_never_shown_signed_in(browser_page: Any) -> None:
    page = browser_page
    bad = fnsupport.token(DEMO_USER, email="demo@example.com", secret="another-secret-that-is-long-enough-0123456789")
    page.fill("#token", bad)
    page.click("#token-signin")
    page.wait_for_selector("[data-testid=signin-error]:visible")
    error = page.inner_text("[data-testid=signin-error]")
    assert "not accepted" in error and "HTTP 401" in error
    assert page.inner_text("[data-testid=whoami]") == "Signed out"
    assert page.is_hidden("#nav") and page.is_visible("[data-testid=signed-out]")
    assert page.evaluate("sessionStorage.getItem('token')") is None
    shot(page, "bad-token")
    # an expired token saved by an earlier visit is refused the same way on load
    expired = fnsupport.token(DEMO_USER, email="demo@example.com", ttl=-60)
    page.evaluate(f"sessionStorage.setItem('token', {json.dumps(expired)})")
    page.reload()
    page.wait_for_selector("[data-testid=signin-error]:visible")
    assert page.inner_text("[data-testid=whoami]") == "Signed out"


def test_vendored_libraries_are_the_versions_package_json_names() -> None:
    package = json.loads((DEMO / "package.json").read_text())
    vendored = json.loads((DEMO / "vendor" / "versions.json").read_text())
    assert vendored == {**package["dependencies"], **package["devDependencies"]}
    html = (DEMO / "index.html").read_text()
    scripts = re.findall(r'<script[^>]*\ssrc="([^"]+)"', html)
    assert scripts == ["vendor/marked.umd.js", "vendor/purify.min.js", "vendor/chart.umd.min.js", "config.js", "app.js"]
    assert all((DEMO / s).is_file() for s in scripts if s != "config.js")  # shipped with the page, no CDN
    assert not re.search(r'(src|href)="(https?:)?//', html)
