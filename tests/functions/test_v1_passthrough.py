"""The compatible API in front of a real, independent implementation of both protocols: the LiteLLM proxy
(tests/litellm_proxy.py). A request for a model whose provider speaks the caller's protocol passes through
as the client wrote it (tools, unknown fields, content parts) and its answer comes back as the provider sent
it; a request in one protocol for a model of the other is translated. Either way the recorded usage is what
the provider reported, priced from model_prices, charged once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.support.litellm_proxy import MOCK_TEXT, LiteLLMProxy, litellm_proxy_fixture  # noqa: F401  (fixture)
from tests.support.pg import Sql
from tests.support.v1server import Server, charges, server_fixture, settled_books, usage_rows  # noqa: F401  (fixture)

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [{"type": "function",
          "function": {"name": "get_weather", "description": "Weather of a city", "parameters": CITY}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}


class Sent(list[Any]):
    """(path, payload) of each provider request; `headers`: the per-request headers each one carried."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict[str, str]] = []


@pytest.fixture
def sent(server: Server, litellm_proxy: LiteLLMProxy, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The providers pointed at the live proxy; yields the (path, payload) of every provider request."""
    from functions.providers import _HttpProvider, reset_providers
    from functions.settings import get_settings

    for var, value in (("OPENAI_BASE_URL", litellm_proxy.base_url), ("ANTHROPIC_BASE_URL", litellm_proxy.base_url),
                       ("OPENAI_API_KEY", litellm_proxy.master_key), ("ANTHROPIC_API_KEY", litellm_proxy.master_key),
                       ("MODEL_TIMEOUT_SECONDS", "60")):  # a real server over loopback, busy with the rest of the suite
        monkeypatch.setenv(var, value)
    get_settings.cache_clear()
    reset_providers()
    seen = Sent()
    send = _HttpProvider._send_once

    async def record(self: _HttpProvider, url: str, payload: dict[str, Any], stream: bool,
                     headers: Any = None) -> Any:
        seen.append((url.removeprefix(self.base_url), payload))
        seen.headers.append(dict(headers or {}))
        return await send(self, url, payload, stream, headers)

    monkeypatch.setattr(_HttpProvider, "_send_once", record)
    yield seen
    reset_providers()


def cost(db: Sql, model: str, input_tokens: int, output_tokens: int) -> Decimal:
    price = db.one("select * from public.model_prices where model = %s", (model,))
    return round((input_tokens * price["input_usd_per_mtok"] + output_tokens * price["output_usd_per_mtok"])
                 / 1_000_000, 6)


def test_openai_request_passes_through_with_tools_and_unknown_fields(server: Server, sent: list[Any]) -> None:
    user = server.db.make_user(balance=5)
    client = server.openai(server.key(user))
    messages = [{"role": "system", "content": "Use tools."},
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}]
    done = client.chat.completions.create(model=OPENAI_MODEL, messages=messages, tools=TOOLS, temperature=0.2,
                                          extra_body={"mock_tool_calls": [CALL]})
    [(path, payload)] = sent
    assert path == "/chat/completions"
    assert payload == {"model": OPENAI_MODEL, "messages": messages, "tools": TOOLS, "temperature": 0.2,
                       "mock_tool_calls": [CALL], "max_completion_tokens": 1024}
    [call] = done.choices[0].message.tool_calls or []
    assert call.model_dump(exclude_none=True) == CALL
    assert done.id.startswith("chatcmpl-") and done.choices[0].message.content == MOCK_TEXT
    assert done.usage is not None
    [usage] = usage_rows(server.db, user)
    assert (usage["input_tokens"], usage["output_tokens"]) == (done.usage.prompt_tokens, done.usage.completion_tokens)
    assert usage["cost_usd"] == cost(server.db, OPENAI_MODEL, usage["input_tokens"], usage["output_tokens"]) > 0
    assert usage["protocol"] == "openai" and len(charges(server.db, user)) == 1
    settled_books(server.db, user)


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage-asked", "usage-not-asked"])
def test_openai_stream_passes_through_and_is_billed_from_the_reported_usage(
        server: Server, sent: list[Any], include_usage: bool) -> None:
    user = server.db.make_user(balance=5)
    client = server.openai(server.key(user))
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client.chat.completions.create(model=OPENAI_MODEL, stream=True, max_tokens=50,
                                                 messages=[{"role": "user", "content": "Say hello"}], **options))
    [(_, payload)] = sent
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}  # asked for the bill
    assert payload["max_tokens"] == 50
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == MOCK_TEXT
    [usage] = usage_rows(server.db, user)
    if include_usage:
        final = chunks[-1].usage
        assert final is not None
        assert (usage["input_tokens"], usage["output_tokens"]) == (final.prompt_tokens, final.completion_tokens)
    else:
        assert all(c.usage is None for c in chunks)  # the usage the client did not ask for is not relayed
    assert usage["output_tokens"] > 0 and usage["status"] == "succeeded"
    assert len(charges(server.db, user)) == 1
    settled_books(server.db, user)


def test_anthropic_request_passes_through(server: Server, sent: list[Any]) -> None:
    user = server.db.make_user(balance=5)
    client = server.anthropic(server.key(user))
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    message = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, system="Be brief.", tools=tools,
                                     messages=[{"role": "user", "content": "Weather?"}],
                                     extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19"})
    [(path, payload)] = sent
    assert sent.headers == [{"anthropic-beta": "token-efficient-tools-2025-02-19"}]  # the beta reaches the provider
    assert path == "/v1/messages"
    assert payload == {"model": ANTHROPIC_MODEL, "max_tokens": 64, "system": "Be brief.", "tools": tools,
                       "messages": [{"role": "user", "content": "Weather?"}]}
    assert message.content[0].text == MOCK_TEXT  # type: ignore[union-attr]
    [usage] = usage_rows(server.db, user)
    assert (usage["input_tokens"], usage["output_tokens"]) == (message.usage.input_tokens, message.usage.output_tokens)
    assert usage["protocol"] == "anthropic" and len(charges(server.db, user)) == 1
    settled_books(server.db, user)


def test_anthropic_stream_passes_through_and_counts_the_input_of_message_delta(server: Server, sent: list[Any]) -> None:
    """LiteLLM's Messages stream says `input_tokens: 0` in message_start and the real count in message_delta:
    the bill takes the latest, and so does the SDK's final message, from the events relayed as they came."""
    user = server.db.make_user(balance=5)
    client = server.anthropic(server.key(user))
    with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64,
                                messages=[{"role": "user", "content": "Say hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == MOCK_TEXT
    [usage] = usage_rows(server.db, user)
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert (usage["input_tokens"], usage["output_tokens"]) == (final.usage.input_tokens, final.usage.output_tokens)
    settled_books(server.db, user)


def test_a_request_in_one_protocol_for_a_model_of_the_other_is_translated(server: Server, sent: list[Any]) -> None:
    user = server.db.make_user(balance=5)
    done = server.openai(server.key(user)).chat.completions.create(
        model=ANTHROPIC_MODEL, max_tokens=40, stop=["END"],
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    message = server.anthropic(server.key(user)).messages.create(
        model=OPENAI_MODEL, max_tokens=40, system="Be brief.", messages=[{"role": "user", "content": "Hi"}])
    (path1, to_anthropic), (path2, to_openai) = sent
    assert path1 == "/v1/messages" and to_anthropic == {
        "stop_sequences": ["END"], "model": ANTHROPIC_MODEL, "max_tokens": 40, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}]}
    assert path2 == "/chat/completions" and to_openai == {
        "model": OPENAI_MODEL, "max_tokens": 40,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    assert done.object == "chat.completion" and done.choices[0].message.content == MOCK_TEXT
    assert message.type == "message" and message.content[0].text == MOCK_TEXT  # type: ignore[union-attr]
    rows = usage_rows(server.db, user)
    assert [r["protocol"] for r in rows] == ["openai", "anthropic"]
    assert done.usage is not None
    assert (rows[0]["input_tokens"], rows[0]["output_tokens"]) == (done.usage.prompt_tokens,
                                                                   done.usage.completion_tokens)
    assert (rows[1]["input_tokens"], rows[1]["output_tokens"]) == (message.usage.input_tokens,
                                                                   message.usage.output_tokens)
    assert len(charges(server.db, user)) == 2
    settled_books(server.db, user)


def test_a_provider_failure_is_answered_in_the_protocol_and_not_charged(
        server: Server, sent: list[Any], monkeypatch: pytest.MonkeyPatch, litellm_proxy: LiteLLMProxy) -> None:
    """The proxy refuses the key: the client gets a 502 in its protocol's body, with the provider's status."""
    import openai

    from functions.providers import reset_providers
    from functions.settings import get_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-for-the-proxy")
    get_settings.cache_clear()
    reset_providers()
    user = server.db.make_user(balance=5)
    with pytest.raises(openai.APIStatusError) as caught:
        server.openai(server.key(user)).chat.completions.create(model=OPENAI_MODEL,
                                                                messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 502 and caught.value.type == "server_error"
    assert "The OpenAI provider refused the request (HTTP 4" in caught.value.message
    assert "sk-wrong" not in json.dumps(caught.value.body)
    assert charges(server.db, user) == []
    [usage] = usage_rows(server.db, user)
    assert usage["status"] == "failed" and usage["cost_usd"] == 0 and usage["protocol"] == "openai"
    settled_books(server.db, user)
