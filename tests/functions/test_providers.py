"""Model providers (OpenAI-compatible, Anthropic, offline) through the real `chat` and `compile` functions,
with respx standing in for the providers: what is sent, what is billed, and what happens on each failure."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from functions.chat import SYSTEM_PROMPT
from tests.support.pg import Sql

OPENAI_URL = "https://llm.test/v1/chat/completions"
ANTHROPIC_URL = "https://anthropic.test/v1/messages"
PRICES = ("insert into public.model_prices (model, provider, input_usd_per_mtok, output_usd_per_mtok,"
          " max_output_tokens) values ('gpt-test','openai',1,2,4096), ('claude-test','anthropic',3,15,4096)")


# -- what each provider answers ---------------------------------------------------------------------------

def _sse(*events: Any, done: bool = False) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def _anthropic_sse(*events: dict[str, Any]) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


@dataclass(frozen=True)
class Spec:
    """One provider: its model row, its endpoint, and the bodies it answers with."""

    name: str
    model: str
    url: str
    price_in: Decimal
    price_out: Decimal
    ok: Callable[[str, int, int], dict[str, Any]]
    without_usage: Callable[[str], dict[str, Any]]
    stream: Callable[[list[str], int, int], bytes]
    first_delta_then: Callable[[str, str], bytes]  # one delta, then a raw tail (malformed event, or nothing)

    def cost(self, tokens_in: int, tokens_out: int) -> Decimal:
        return (tokens_in * self.price_in + tokens_out * self.price_out) / 1_000_000


def _openai_ok(text: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out}}


def _openai_without_usage(text: str) -> dict[str, Any]:
    body = _openai_ok(text, 1, 1)
    del body["usage"]
    return body


def _openai_chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _openai_stream(parts: list[str], tokens_in: int, tokens_out: int) -> bytes:
    first = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    usage = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                       "total_tokens": tokens_in + tokens_out}}
    return _sse(first, *(_openai_chunk(p) for p in parts), _openai_chunk(finish="stop"), usage, done=True)


def _openai_first_delta_then(text: str, tail: str) -> bytes:
    return _sse(_openai_chunk(text)) + tail.encode()


def _anthropic_ok(text: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}


def _anthropic_without_usage(text: str) -> dict[str, Any]:
    body = _anthropic_ok(text, 1, 1)
    del body["usage"]
    return body


def _anthropic_start(tokens_in: int) -> list[dict[str, Any]]:
    return [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                                              "model": "claude-test", "stop_reason": None,
                                              "usage": {"input_tokens": tokens_in, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]


def _anthropic_delta(text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}


def _anthropic_stream(parts: list[str], tokens_in: int, tokens_out: int) -> bytes:
    return _anthropic_sse(
        *_anthropic_start(tokens_in), *(_anthropic_delta(p) for p in parts),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": tokens_out}},
        {"type": "message_stop"},
    )


def _anthropic_first_delta_then(text: str, tail: str) -> bytes:
    return _anthropic_sse(*_anthropic_start(7), _anthropic_delta(text)) + tail.encode()


SPECS = {
    "openai": Spec("openai", "gpt-test", OPENAI_URL, Decimal(1), Decimal(2), _openai_ok, _openai_without_usage,
                   _openai_stream, _openai_first_delta_then),
    "anthropic": Spec("anthropic", "claude-test", ANTHROPIC_URL, Decimal(3), Decimal(15), _anthropic_ok,
                      _anthropic_without_usage, _anthropic_stream, _anthropic_first_delta_then),
}


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest, api: Any) -> Spec:
    """A priced test model of each real provider."""
    api.db.q(PRICES)
    return SPECS[request.param]


# -- what the database says -------------------------------------------------------------------------------

def account(db: Sql, uid: uuid.UUID) -> dict[str, Any]:
    row: dict[str, Any] = db.one(
        "select balance_usd, held_usd, month_spend_usd from public.billing_accounts where user_id = %s", (uid,))
    return row


def ledger(db: Sql, uid: uuid.UUID) -> list[dict[str, Any]]:
    return db.q("select kind, amount_usd, balance_after from public.credit_ledger where user_id = %s order by id",
                (uid,))


def charges(db: Sql, uid: uuid.UUID) -> list[Decimal]:
    return [row["amount_usd"] for row in ledger(db, uid) if row["kind"] == "charge"]


def messages(db: Sql, uid: uuid.UUID) -> list[dict[str, Any]]:
    return db.q("select role, content, status, input_tokens, output_tokens from public.chat_messages"
                " where user_id = %s order by seq", (uid,))


def assert_released_without_charge(db: Sql, uid: uuid.UUID, before: dict[str, Any],
                                   ledger_before: list[dict[str, Any]], error_code: str) -> None:
    """The failed model call left a released hold, a failed usage row, and nothing else."""
    hold = db.one("select status, charged_usd from public.holds where user_id = %s", (uid,))
    assert hold["status"] == "released" and hold["charged_usd"] is None
    usage = db.one("select status, error_code, cost_usd, input_tokens, output_tokens from public.usage_logs"
                   " where user_id = %s", (uid,))
    assert usage == {"status": "failed", "error_code": error_code, "cost_usd": Decimal(0),
                     "input_tokens": 0, "output_tokens": 0}
    assert account(db, uid) == before | {"held_usd": Decimal(0)}
    assert ledger(db, uid) == ledger_before
    assert messages(db, uid) == []


def sent(route: Any, index: int = -1) -> tuple[httpx.Request, dict[str, Any]]:
    request: httpx.Request = route.calls[index].request
    return request, json.loads(request.content)


# -- plain (non-streamed) calls ---------------------------------------------------------------------------

def test_success_bills_the_providers_token_counts_at_the_model_price(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    route = api.router.post(spec.url).mock(return_value=httpx.Response(200, json=spec.ok("Use reversed().", 123, 45)))
    r = api.post("chat", {"message": "How do I reverse a list?", "model": spec.model}, user=uid)
    assert r.status_code == 200, r.json
    body = r.json
    cost = spec.cost(123, 45)
    assert body["content"] == "Use reversed()."
    assert (body["provider"], body["model"]) == (spec.name, spec.model)
    assert body["usage"]["input_tokens"] == 123 and body["usage"]["output_tokens"] == 45
    assert Decimal(str(body["usage"]["cost_usd"])) == cost
    assert route.call_count == 1
    assistant = messages(db, uid)[1]
    assert (assistant["input_tokens"], assistant["output_tokens"], assistant["status"]) == (123, 45, "complete")
    usage = db.one("select status, model, input_tokens, output_tokens, cost_usd from public.usage_logs"
                   " where user_id = %s", (uid,))
    assert usage == {"status": "succeeded", "model": spec.model, "input_tokens": 123, "output_tokens": 45,
                     "cost_usd": cost}
    assert charges(db, uid) == [-cost]
    assert account(db, uid) == {"balance_usd": Decimal(5) - cost, "held_usd": Decimal(0), "month_spend_usd": cost}
    assert Decimal(str(body["balance_usd"])) == Decimal(5) - cost


def test_openai_request_carries_bearer_key_and_the_whole_conversation(api: Any) -> None:
    db: Sql = api.db
    db.q(PRICES)
    uid = db.make_user(balance=5)
    route = api.router.post(OPENAI_URL).mock(side_effect=[httpx.Response(200, json=_openai_ok("first", 5, 1)),
                                                          httpx.Response(200, json=_openai_ok("second", 9, 1))])
    for text in ("one", "two"):
        r = api.post("chat", {"message": text, "model": "gpt-test", "session_id": "s", "max_tokens": 77}, user=uid)
        assert r.status_code == 200, r.json
    request, payload = sent(route)
    assert request.headers["Authorization"] == "Bearer sk-test-openai"
    assert "x-api-key" not in request.headers
    assert payload == {"model": "gpt-test", "max_tokens": 77, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first"}, {"role": "user", "content": "two"}]}


def test_anthropic_request_puts_the_system_prompt_at_top_level_with_version_and_key(api: Any) -> None:
    db: Sql = api.db
    db.q(PRICES)
    uid = db.make_user(balance=5)
    route = api.router.post(ANTHROPIC_URL).mock(side_effect=[httpx.Response(200, json=_anthropic_ok("first", 5, 1)),
                                                             httpx.Response(200, json=_anthropic_ok("second", 9, 1))])
    for text in ("one", "two"):
        r = api.post("chat", {"message": text, "model": "claude-test", "session_id": "s", "max_tokens": 77}, user=uid)
        assert r.status_code == 200, r.json
    request, payload = sent(route)
    assert request.headers["x-api-key"] == "sk-test-anthropic"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert payload == {"model": "claude-test", "max_tokens": 77, "system": SYSTEM_PROMPT, "messages": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "first"},
        {"role": "user", "content": "two"}]}


def test_rate_limited_then_success_is_one_turn_and_one_charge(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    route = api.router.post(spec.url).mock(side_effect=[
        httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "0"}),
        httpx.Response(200, json=spec.ok("fine", 10, 3))])
    r = api.post("chat", {"message": "hi", "model": spec.model}, user=uid)
    assert r.status_code == 200, r.json
    assert route.call_count == 2
    assert [m["role"] for m in messages(db, uid)] == ["user", "assistant"]
    assert charges(db, uid) == [-spec.cost(10, 3)]
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 1
    assert db.one("select count(*) from public.holds where user_id = %s and status = 'settled'", (uid,)) == 1


@pytest.mark.parametrize("status", [500, 529])
def test_server_errors_until_giving_up_are_502_and_release_the_hold(api: Any, spec: Spec, status: int) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    before, ledger_before = account(db, uid), ledger(db, uid)
    route = api.router.post(spec.url).mock(return_value=httpx.Response(status, json={"error": "overloaded"}))
    r = api.post("chat", {"message": "hi", "model": spec.model}, user=uid)
    assert r.status_code == 502, r.json
    assert r.json["error"]["code"] == "model_provider_error"
    assert r.json["error"]["details"] == {"provider_status": status, "provider_message": "overloaded"}
    assert r.json["error"]["message"].endswith(f"(HTTP {status}): overloaded.")
    assert route.call_count == 3  # the test environment's stamina attempts
    assert_released_without_charge(db, uid, before, ledger_before, "model_provider_error")


def test_timeout_is_504_and_releases_the_hold(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    before, ledger_before = account(db, uid), ledger(db, uid)
    api.router.post(spec.url).mock(side_effect=httpx.ReadTimeout)
    r = api.post("chat", {"message": "hi", "model": spec.model}, user=uid)
    assert r.status_code == 504, r.json
    assert r.json["error"]["code"] == "model_provider_timeout"
    assert_released_without_charge(db, uid, before, ledger_before, "model_provider_timeout")


def test_connect_errors_are_retried_then_502(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    before, ledger_before = account(db, uid), ledger(db, uid)
    route = api.router.post(spec.url).mock(side_effect=httpx.ConnectError)
    r = api.post("chat", {"message": "hi", "model": spec.model}, user=uid)
    assert r.status_code == 502, r.json
    assert route.call_count == 3
    assert_released_without_charge(db, uid, before, ledger_before, "model_provider_error")


def _non_json(spec: Spec) -> httpx.Response:
    return httpx.Response(200, content=b"<html>gateway says hi</html>", headers={"content-type": "text/html"})


def _missing_usage(spec: Spec) -> httpx.Response:
    return httpx.Response(200, json=spec.without_usage("an answer nobody can bill"))


def _json_list(spec: Spec) -> httpx.Response:
    return httpx.Response(200, json=[spec.ok("wrapped in a list", 1, 1)])


def _content_not_objects(spec: Spec) -> httpx.Response:
    body = spec.ok("x", 1, 1)
    if spec.name == "openai":
        body["choices"] = ["x"]
    else:
        body["content"] = ["x"]
    return httpx.Response(200, json=body)


def _negative_tokens(spec: Spec) -> httpx.Response:
    return httpx.Response(200, json=spec.ok("free lunch", -100, 5))


@pytest.mark.parametrize("answer", [_non_json, _missing_usage, _json_list, _content_not_objects, _negative_tokens])
def test_malformed_answer_is_502_malformed_and_never_billed(api: Any, spec: Spec,
                                                            answer: Callable[[Spec], httpx.Response]) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    before, ledger_before = account(db, uid), ledger(db, uid)
    route = api.router.post(spec.url).mock(return_value=answer(spec))
    r = api.post("chat", {"message": "hi", "model": spec.model}, user=uid)
    assert r.status_code == 502, r.json
    assert r.json["error"]["code"] == "malformed_model_response"
    assert route.call_count == 1
    assert_released_without_charge(db, uid, before, ledger_before, "malformed_model_response")


@pytest.mark.parametrize("status", [400, 401])
def test_client_errors_from_the_provider_are_not_retried(api: Any, spec: Spec, status: int) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    before, ledger_before = account(db, uid), ledger(db, uid)
    route = api.router.post(spec.url).mock(return_value=httpx.Response(status, json={"error": "bad request"}))
    r = api.post("chat", {"message": "hi", "model": spec.model}, user=uid)
    assert r.status_code == 502, r.json
    assert r.json["error"]["details"] == {"provider_status": status, "provider_message": "bad request"}
    assert route.call_count == 1
    assert_released_without_charge(db, uid, before, ledger_before, "model_provider_error")


PROVIDER_ERRORS = {
    "openai": {"error": {"message": "Invalid model name passed in model=gpt-nope. Call `/v1/models` to view "
                                    "available models. Your key sk-live-abcdefghijklmnop is fine.",
                         "type": "invalid_request_error", "param": "model", "code": "400"}},
    "anthropic": {"type": "error", "error": {"type": "invalid_request_error",
                                             "message": "model: gpt-nope not found; x-api-key sk-ant-abcdefghijkl"}},
}


def test_the_providers_own_reason_reaches_the_caller_and_the_log_without_secrets(
        api: Any, spec: Spec, caplog: pytest.LogCaptureFixture) -> None:
    uid = api.db.make_user(balance=5)
    api.router.post(spec.url).mock(return_value=httpx.Response(400, json=PROVIDER_ERRORS[spec.name]))
    r = api.post("chat", {"message": "hi", "model": spec.model}, user=uid)
    assert r.status_code == 502
    reason = r.json["error"]["details"]["provider_message"]
    assert "gpt-nope" in reason and "sk-" not in reason and "[redacted]" in reason
    assert reason in r.json["error"]["message"]
    logged = [json.loads(rec.getMessage()) for rec in caplog.records if "provider_error" in rec.getMessage()]
    assert logged and logged[0]["provider_message"] == reason and logged[0]["provider_status"] == 400


# -- streaming --------------------------------------------------------------------------------------------

def events_of(response: Any) -> list[tuple[str, Any]]:
    """The Server-Sent Events of a response, as (event, data) pairs."""
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    out = []
    for block in response.get_data(as_text=True).split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        name = next(line[len("event: "):] for line in lines if line.startswith("event: "))
        data = "\n".join(line[len("data: "):] for line in lines if line.startswith("data: "))
        out.append((name, json.loads(data)))
    return out


def stream_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def test_stream_sends_deltas_then_one_done_and_bills_once(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    route = api.router.post(spec.url).mock(return_value=stream_response(spec.stream(["Hel", "lo ", "there"], 31, 4)))
    events = events_of(api.post("chat", {"message": "hi", "model": spec.model, "stream": True}, user=uid))
    assert [name for name, _ in events] == ["delta", "delta", "delta", "done"]
    assert [data["text"] for _, data in events[:-1]] == ["Hel", "lo ", "there"]
    done = events[-1][1]
    cost = spec.cost(31, 4)
    assert done["content"] == "Hello there" and done["partial"] is False
    assert done["usage"]["input_tokens"] == 31 and done["usage"]["output_tokens"] == 4
    assert Decimal(str(done["usage"]["cost_usd"])) == cost
    ids = {m["id"] for m in db.q("select id from public.chat_messages where user_id = %s", (uid,))}
    assert {uuid.UUID(done["message_id"]), uuid.UUID(done["user_message_id"])} == ids
    assert messages(db, uid)[1] | {"content": None} == {
        "role": "assistant", "content": None, "status": "complete", "input_tokens": 31, "output_tokens": 4}
    assert charges(db, uid) == [-cost]
    assert account(db, uid)["held_usd"] == 0
    _, payload = sent(route)
    assert payload["stream"] is True and payload["model"] == spec.model
    if spec.name == "openai":
        assert payload["stream_options"] == {"include_usage": True}
    else:
        assert payload["system"] == SYSTEM_PROMPT


def test_offline_stream_sends_deltas_then_one_done_and_bills_once(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    events = events_of(api.post("chat", {"message": "stream me a long enough answer", "stream": True}, user=uid))
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"delta"} and len(names) > 2
    done = events[-1][1]
    assert "".join(data["text"] for _, data in events[:-1]) == done["content"]
    assert done["provider"] == "offline" and "offline development model" in done["content"]
    assert messages(db, uid)[1]["content"] == done["content"]
    cost = db.one("select cost_usd from public.usage_logs where user_id = %s and status = 'succeeded'", (uid,))
    assert Decimal(str(done["usage"]["cost_usd"])) == cost
    assert charges(db, uid) == [-cost]


@pytest.mark.parametrize("tail", ['data: {"choices": [{"delta": {"cont\n\n', "data: [1, 2\n\n", ""],
                         ids=["cut-json", "bad-json", "eof"])
def test_stream_failing_after_a_delta_keeps_a_partial_answer_within_the_hold(api: Any, spec: Spec,
                                                                             tail: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    api.router.post(spec.url).mock(return_value=stream_response(spec.first_delta_then("Partial ans", tail)))
    events = events_of(api.post("chat", {"message": "hi", "model": spec.model, "stream": True}, user=uid))
    assert [name for name, _ in events] == ["delta", "error"]
    assert events[1][1]["code"] == "malformed_model_response"
    assert [(m["role"], m["content"], m["status"]) for m in messages(db, uid)] == [
        ("user", "hi", "complete"), ("assistant", "Partial ans", "partial")]
    hold = db.one("select status, amount_usd, charged_usd from public.holds where user_id = %s", (uid,))
    assert hold["status"] == "settled" and 0 < hold["charged_usd"] <= hold["amount_usd"]
    assert charges(db, uid) == [-hold["charged_usd"]]
    assert account(db, uid)["held_usd"] == 0


def test_stream_whose_connection_drops_after_a_delta_keeps_a_partial_answer(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)

    class Dropped(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield spec.first_delta_then("Half", "")
            raise httpx.ReadError("connection reset by peer")

    api.router.post(spec.url).mock(return_value=httpx.Response(200, stream=Dropped()))
    events = events_of(api.post("chat", {"message": "hi", "model": spec.model, "stream": True}, user=uid))
    assert [name for name, _ in events] == ["delta", "error"]
    assert events[1][1]["code"] == "model_provider_error"
    assert messages(db, uid)[1]["status"] == "partial"
    assert len(charges(db, uid)) == 1


def test_stream_refused_before_any_delta_is_an_error_event_and_no_charge(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    before, ledger_before = account(db, uid), ledger(db, uid)
    route = api.router.post(spec.url).mock(return_value=httpx.Response(400, json={"error": "bad"}))
    events = events_of(api.post("chat", {"message": "hi", "model": spec.model, "stream": True}, user=uid))
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["code"] == "model_provider_error" and events[0][1]["request_id"]
    assert route.call_count == 1
    assert_released_without_charge(db, uid, before, ledger_before, "model_provider_error")


def test_stream_timeout_before_any_delta_is_an_error_event_and_no_charge(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    before, ledger_before = account(db, uid), ledger(db, uid)
    api.router.post(spec.url).mock(side_effect=httpx.ReadTimeout)
    events = events_of(api.post("chat", {"message": "hi", "model": spec.model, "stream": True}, user=uid))
    assert [(name, data["code"]) for name, data in events] == [("error", "model_provider_timeout")]
    assert_released_without_charge(db, uid, before, ledger_before, "model_provider_timeout")


def test_stream_malformed_before_any_delta_is_an_error_event_and_no_charge(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    before, ledger_before = account(db, uid), ledger(db, uid)
    api.router.post(spec.url).mock(return_value=stream_response(b'data: {"type": "message_st\n\n'))
    events = events_of(api.post("chat", {"message": "hi", "model": spec.model, "stream": True}, user=uid))
    assert [(name, data["code"]) for name, data in events] == [("error", "malformed_model_response")]
    assert_released_without_charge(db, uid, before, ledger_before, "malformed_model_response")


def test_stream_rate_limited_then_success_is_one_turn_and_one_charge(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    route = api.router.post(spec.url).mock(side_effect=[
        httpx.Response(429, json={"error": "slow down"}), httpx.Response(503, json={"error": "busy"}),
        stream_response(spec.stream(["ok"], 8, 1))])
    events = events_of(api.post("chat", {"message": "hi", "model": spec.model, "stream": True}, user=uid))
    assert [name for name, _ in events] == ["delta", "done"]
    assert route.call_count == 3
    assert len(messages(db, uid)) == 2
    assert charges(db, uid) == [-spec.cost(8, 1)]


def test_stream_whose_settle_cannot_reach_the_database_is_charged_by_the_expiry(
        api: Any, spec: Spec, monkeypatch: pytest.MonkeyPatch) -> None:
    """The text was delivered, then the settle found no database: the hold keeps what was delivered and the
    scheduled expiry charges it (never free)."""
    from functions.billed_call import BilledCall
    from functions.errors import ServiceUnavailable

    db: Sql = api.db
    uid = db.make_user(balance=5)
    api.router.post(spec.url).mock(return_value=stream_response(spec.stream(["ok"], 8, 1)))

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise ServiceUnavailable("database unavailable", code="database_unavailable")

    monkeypatch.setattr(BilledCall, "settle", unavailable)
    events = events_of(api.post("chat", {"message": "hi", "model": spec.model, "stream": True}, user=uid))
    assert [(name, data.get("code")) for name, data in events] == [("delta", None), ("error", "database_unavailable")]
    assert charges(db, uid) == []
    assert messages(db, uid) == []
    hold = db.one("select id, status, delivered_chars, amount_usd from public.holds where user_id = %s", (uid,))
    assert (hold["status"], hold["delivered_chars"]) == ("open", 2)
    db.q("update public.holds set last_seen_at = now() - interval '1 hour' where id = %s", (hold["id"],))
    assert db.rpc("expire_stale_holds", older_than_seconds=60)["charged"] == 1
    charged = charges(db, uid)
    assert len(charged) == 1 and 0 < -charged[0] <= hold["amount_usd"]


# -- compile with a provider ------------------------------------------------------------------------------

def _fenced(code: str) -> str:
    return f"Here you go:\n```python\n{code}\n```\n"


def test_compile_repairs_an_unparsable_first_answer_and_bills_both_calls_once(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    route = api.router.post(spec.url).mock(side_effect=[
        httpx.Response(200, json=spec.ok(_fenced("def add(a, b)\n    return a + b"), 40, 11)),
        httpx.Response(200, json=spec.ok(_fenced("def add(a, b):\n    return a + b"), 70, 12))])
    r = api.post("compile", {"task": "add two numbers", "language": "python", "model": spec.model}, user=uid)
    assert r.status_code == 200, r.json
    body = r.json
    assert (body["valid"], body["repaired"], body["diagnostics"]) == (True, True, [])
    assert body["code"] == "def add(a, b):\n    return a + b"
    assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"]) == (110, 23)
    cost = spec.cost(110, 23)
    assert Decimal(str(body["usage"]["cost_usd"])) == cost
    assert route.call_count == 2
    _, repair = sent(route, 1)
    assert repair["messages"][-2] == {"role": "assistant", "content": _fenced("def add(a, b)\n    return a + b")}
    assert "line 1" in repair["messages"][-1]["content"]
    assert charges(db, uid) == [-cost]
    usage = db.one("select status, operation, input_tokens, output_tokens, cost_usd from public.usage_logs"
                   " where user_id = %s", (uid,))
    assert usage == {"status": "succeeded", "operation": "compile", "input_tokens": 110, "output_tokens": 23,
                     "cost_usd": cost}
    row = db.one("select valid, repaired, input_tokens, output_tokens, cost_usd from public.code_gen_requests"
                 " where user_id = %s", (uid,))
    assert row == {"valid": True, "repaired": True, "input_tokens": 110, "output_tokens": 23, "cost_usd": cost}


def test_compile_with_two_unparsable_answers_is_invalid_with_line_and_column(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    route = api.router.post(spec.url).mock(side_effect=[
        httpx.Response(200, json=spec.ok(_fenced("select 1 as ok;\nselect frm where;"), 20, 9)),
        httpx.Response(200, json=spec.ok(_fenced("select 1 as ok;\nselect * from where t;"), 30, 9))])
    r = api.post("compile", {"task": "count rows", "language": "sql", "model": spec.model}, user=uid)
    assert r.status_code == 200, r.json
    body = r.json
    assert (body["valid"], body["repaired"]) == (False, True)
    assert body["code"] == "select 1 as ok;\nselect * from where t;"
    assert body["diagnostics"] == [{"line": 2, "column": 15, "message": 'syntax error at or near "where"'}]
    assert route.call_count == 2
    assert charges(db, uid) == [-spec.cost(50, 18)]


def test_compile_provider_failure_on_the_repair_call_releases_the_hold(api: Any, spec: Spec) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    before, ledger_before = account(db, uid), ledger(db, uid)
    api.router.post(spec.url).mock(side_effect=[
        httpx.Response(200, json=spec.ok(_fenced("def broken(:"), 20, 9)),
        httpx.Response(400, json={"error": "no"})])
    r = api.post("compile", {"task": "anything", "language": "python", "model": spec.model}, user=uid)
    assert r.status_code == 502, r.json
    assert db.one("select count(*) from public.code_gen_requests where user_id = %s", (uid,)) == 0
    assert_released_without_charge(db, uid, before, ledger_before, "model_provider_error")
