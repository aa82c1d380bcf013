"""Token accounting of record, against what providers really send.

Two sources of truth, neither written by the code under test:
- recorded transcripts (`tests/support/transcripts/`): the LiteLLM proxy's own answers, and protocol-faithful answers
  with cached, cache-write and reasoning tokens and usage where only some servers put it; each with the
  usage a correct client must extract (`.expected.json`);
- the LiteLLM proxy itself, live: an independent implementation of both protocols. Its answers pass
  through a recording tap, and the reference reader (`tests/support/usage_reference.py`) says what they reported.

Every case goes through the real `chat` (plain and streamed) or `compile` function, over both database
transports, and checks that the usage row, the message or compile record, the answer and the charge carry
exactly the reported counts, priced class by class from `model_prices`.
"""

from __future__ import annotations

import itertools
import json
import urllib.request
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.litellm_proxy import LiteLLMProxy, litellm_proxy_fixture  # noqa: F401  (registers `litellm_proxy`)
from tests.support.pg import Sql
from tests.support.usage_reference import TRANSCRIPTS, extract

OPENAI_URL = "https://llm.test/v1/chat/completions"
ANTHROPIC_URL = "https://anthropic.test/v1/messages"
COUNTS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
# Every class at its own price, so a count booked in the wrong class changes the cost.
PRICES = {
    "acct-openai": ("openai", Decimal("1.1"), Decimal("0.55"), None, Decimal("4.4")),
    "acct-anthropic": ("anthropic", Decimal("3"), Decimal("0.3"), Decimal("3.75"), Decimal("15")),
}


def price(db: Sql) -> None:
    for model, (provider, cost_in, cached, write, out) in PRICES.items():
        db.q("insert into public.model_prices (model, provider, input_usd_per_mtok, cached_input_usd_per_mtok,"
             " cache_write_usd_per_mtok, output_usd_per_mtok, max_output_tokens) values (%s, %s, %s, %s, %s, %s, 8192)",
             (model, provider, cost_in, cached, write, out))


def expected_cost(db: Sql, model: str, usage: dict[str, int]) -> Decimal:
    """The cost of `usage` from the model's row in model_prices (a null cache price is the input price)."""
    p = db.one("select * from public.model_prices where model = %s", (model,))
    total = (usage["input_tokens"] * p["input_usd_per_mtok"]
             + usage["cached_input_tokens"] * (p["cached_input_usd_per_mtok"] or p["input_usd_per_mtok"])
             + usage["cache_write_tokens"] * (p["cache_write_usd_per_mtok"] or p["input_usd_per_mtok"])
             + usage["output_tokens"] * p["output_usd_per_mtok"])
    return (total / 1_000_000).quantize(Decimal("0.000001"), ROUND_HALF_UP)  # as numeric round(x, 6) does


def recorded(db: Sql, table: str, uid: Any) -> list[dict[str, Any]]:
    cols = ", ".join(COUNTS)
    return db.q(f"select {cols}, cost_usd from public.{table} where user_id = %s order by id", (uid,))


def counts_of(row: dict[str, Any]) -> dict[str, int]:
    return {k: row[k] for k in COUNTS}


def sse_events(body: str) -> list[tuple[str, Any]]:
    out = []
    for block in body.split("\n\n"):
        if block.strip():
            lines = block.split("\n")
            name = next(line[7:] for line in lines if line.startswith("event: "))
            out.append((name, json.loads("\n".join(line[6:] for line in lines if line.startswith("data: ")))))
    return out


# -- recorded transcripts -----------------------------------------------------------------------------------

def _transcripts() -> list[str]:
    # The canned LiteLLM mock answers a stream request with a plain JSON body: no real server does that.
    return sorted(p.stem for p in TRANSCRIPTS.glob("*.sse")) + sorted(
        p.stem for p in TRANSCRIPTS.glob("*.json")
        if not p.name.endswith(".expected.json") and p.stem != "litellm_anthropic_canned_stream")


def _raw(name: str) -> tuple[bytes, bool]:
    path = TRANSCRIPTS / f"{name}.sse"
    return (path.read_bytes(), True) if path.exists() else ((TRANSCRIPTS / f"{name}.json").read_bytes(), False)


def _protocol(name: str) -> str:
    return "anthropic" if name.startswith(("anthropic", "litellm_anthropic")) else "openai"


@pytest.mark.parametrize("name", _transcripts())
def test_a_chat_turn_records_exactly_what_the_transcript_reports(api: Any, name: str) -> None:
    db: Sql = api.db
    price(db)
    raw, streamed = _raw(name)
    expected = json.loads((TRANSCRIPTS / f"{name}.expected.json").read_text())
    assert {k: v for k, v in extract(raw, streamed).items()} == expected  # the reference reader agrees
    protocol = _protocol(name)
    model = f"acct-{protocol}"
    api.router.post(OPENAI_URL if protocol == "openai" else ANTHROPIC_URL).mock(return_value=httpx.Response(
        200, content=raw, headers={"content-type": "text/event-stream" if streamed else "application/json"}))
    uid = db.make_user(balance=5)
    r = api.post("chat", {"message": "hello", "model": model, "stream": streamed, "max_tokens": 4096}, user=uid)
    assert r.status_code == 200, r.get_data(as_text=True)
    if streamed:
        events = sse_events(r.get_data(as_text=True))
        assert events[-1][0] == "done", events[-1]
        answer = events[-1][1]
        assert "".join(d["text"] for kind, d in events if kind == "delta") == expected["text"]
    else:
        answer = r.json
    want = {k: expected[k] for k in COUNTS}
    cost = expected_cost(db, model, want)
    assert {k: answer["usage"][k] for k in COUNTS} == want
    assert Decimal(str(answer["usage"]["cost_usd"])) == cost
    assert answer["content"] == expected["text"]
    [usage] = recorded(db, "usage_logs", uid)
    assert counts_of(usage) == want and usage["cost_usd"] == cost
    message = db.one("select input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens"
                     " from public.chat_messages where user_id = %s and role = 'assistant'", (uid,))
    assert message == want
    charge = db.one("select amount_usd from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,))
    assert charge == -cost


@pytest.mark.parametrize("name", [n for n in _transcripts() if not _raw(n)[1]])
def test_compile_records_both_calls_exactly(api: Any, name: str) -> None:
    """The transcripts' answers are not code, so compile makes its repair call: both calls' usage, summed."""
    db: Sql = api.db
    price(db)
    raw, _ = _raw(name)
    expected = json.loads((TRANSCRIPTS / f"{name}.expected.json").read_text())
    protocol = _protocol(name)
    model = f"acct-{protocol}"
    route = api.router.post(OPENAI_URL if protocol == "openai" else ANTHROPIC_URL).mock(
        return_value=httpx.Response(200, content=raw, headers={"content-type": "application/json"}))
    uid = db.make_user(balance=5)
    r = api.post("compile", {"task": "say hello", "language": "python", "model": model, "max_tokens": 4096}, user=uid)
    assert r.status_code == 200, r.json
    calls = route.call_count
    assert calls in (1, 2) and r.json["repaired"] is (calls == 2)
    want = {k: expected[k] * calls for k in COUNTS}
    cost = expected_cost(db, model, want)
    assert {k: r.json["usage"][k] for k in COUNTS} == want and Decimal(str(r.json["usage"]["cost_usd"])) == cost
    [usage] = recorded(db, "usage_logs", uid)
    [record] = recorded(db, "code_gen_requests", uid)
    assert counts_of(usage) == counts_of(record) == want and usage["cost_usd"] == record["cost_usd"] == cost


def test_usage_summary_reports_every_token_class(api: Any) -> None:
    db: Sql = api.db
    price(db)
    raw, _ = _raw("anthropic_cache")
    api.router.post(ANTHROPIC_URL).mock(return_value=httpx.Response(200, content=raw))
    uid = db.make_user(balance=5)
    for _ in range(2):
        assert api.post("chat", {"message": "hi", "model": "acct-anthropic"}, user=uid).status_code == 200
    summary = api.get("usage", user=uid, query_string={"group_by": "model"}).json
    [row] = summary["rows"]
    assert {k: row[k] for k in COUNTS} == {"input_tokens": 24, "cached_input_tokens": 3600, "cache_write_tokens": 496,
                                           "output_tokens": 84, "reasoning_tokens": 0}
    assert {k: summary["totals"][k] for k in COUNTS} == {k: row[k] for k in COUNTS}


# -- the LiteLLM proxy, live --------------------------------------------------------------------------------

class Tap:
    """Forwards the functions' provider calls to the real proxy (outside respx, with urllib) and keeps each raw
    answer, so the test knows exactly what the server reported."""

    def __init__(self, proxy: LiteLLMProxy) -> None:
        self.proxy = proxy
        self.answers: list[tuple[dict[str, Any], bytes]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = self.proxy.base_url + request.url.raw_path.decode()
        assert url.startswith("http://127.0.0.1:")
        forwarded = urllib.request.Request(url, data=request.content, method="POST",  # noqa: S310 (loopback)
                                           headers=dict(request.headers))
        with urllib.request.urlopen(forwarded, timeout=60) as answer:  # noqa: S310
            body = answer.read()
            status, ctype = answer.status, answer.headers.get("content-type", "application/json")
        self.answers.append((json.loads(request.content), body))
        return httpx.Response(status, content=body, headers={"content-type": ctype})


@pytest.fixture
def live(api: Any, litellm_proxy: LiteLLMProxy, monkeypatch: pytest.MonkeyPatch) -> Tap:
    """The functions' providers pointed at the live proxy (through the tap), its models priced."""
    from functions.providers import reset_providers
    from functions.settings import get_settings

    for var, value in (("OPENAI_BASE_URL", "https://litellm.test"), ("ANTHROPIC_BASE_URL", "https://litellm.test/v1"),
                       ("OPENAI_API_KEY", litellm_proxy.master_key), ("ANTHROPIC_API_KEY", litellm_proxy.master_key)):
        monkeypatch.setenv(var, value)  # a bare host and a trailing /v1: both base URL forms are accepted
    get_settings.cache_clear()
    reset_providers()
    tap = Tap(litellm_proxy)
    api.router.post(url__startswith="https://litellm.test/").mock(side_effect=tap)
    return tap


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5"])
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_chat_turn_through_the_live_proxy_records_what_it_reported(
        api: Any, live: Tap, model: str, streamed: bool) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    r = api.post("chat", {"message": "Say hello in one short sentence.", "model": model, "stream": streamed},
                 user=uid)
    assert r.status_code == 200, r.get_data(as_text=True)
    answer = sse_events(r.get_data(as_text=True))[-1][1] if streamed else r.json
    [(sent, body)] = live.answers
    assert sent["model"] == model and bool(sent.get("stream")) is streamed
    if model.startswith("claude"):
        assert sent["messages"][0]["role"] == "user" and "system" in sent
    reported = extract(body, streamed)
    want = {k: reported[k] for k in COUNTS}
    assert want["input_tokens"] > 0 and want["output_tokens"] > 0  # a stream's usage was found, not defaulted
    cost = expected_cost(db, model, want)
    assert answer["content"] == reported["text"]
    assert {k: answer["usage"][k] for k in COUNTS} == want and Decimal(str(answer["usage"]["cost_usd"])) == cost
    [usage] = recorded(db, "usage_logs", uid)
    assert counts_of(usage) == want and usage["cost_usd"] == cost


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5"])
def test_compile_through_the_live_proxy_records_what_it_reported(api: Any, live: Tap, model: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    r = api.post("compile", {"task": "return 1", "language": "python", "model": model}, user=uid)
    assert r.status_code == 200, r.json
    want = {k: sum(extract(body, False)[k] for _, body in live.answers) for k in COUNTS}
    assert len(live.answers) == (2 if r.json["repaired"] else 1)
    cost = expected_cost(db, model, want)
    [usage] = recorded(db, "usage_logs", uid)
    assert counts_of(usage) == want and usage["cost_usd"] == cost == Decimal(str(r.json["usage"]["cost_usd"]))


def test_a_conversation_sent_to_the_messages_api_starts_with_the_user_and_alternates(
        api: Any, live: Tap, monkeypatch: pytest.MonkeyPatch) -> None:
    """History trimmed by the budget to its newest whole exchanges; the system prompt in `system`. With a
    100-character budget, cutting by characters alone would keep the first answer without its question."""
    from functions.settings import get_settings

    monkeypatch.setenv("HISTORY_MAX_CHARS", "100")
    get_settings.cache_clear()
    db: Sql = api.db
    uid = db.make_user(balance=5)
    for message in ("first " * 400, "second", "third"):
        r = api.post("chat", {"message": message, "session_id": "talk", "model": "claude-haiku-4-5"}, user=uid)
        assert r.status_code == 200, r.json
    for sent, _ in live.answers:
        roles = [m["role"] for m in sent["messages"]]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(a != b for a, b in itertools.pairwise(roles)), roles
        assert all(m["role"] != "system" for m in sent["messages"]) and sent["system"]
    assert [len(sent["messages"]) for sent, _ in live.answers] == [1, 1, 3]  # the long first exchange is dropped


def test_transcripts_are_all_exercised() -> None:
    names = set(_transcripts())
    assert {"openai_cached_reasoning", "openai_cached_reasoning_stream", "anthropic_cache_stream",
            "anthropic_usage_in_delta_only_stream", "litellm_anthropic_stream", "litellm_openai_stream"} <= names
    assert all((Path(TRANSCRIPTS) / f"{n}.expected.json").exists() for n in names)
