"""The compatible API (`v1`) driven by the real clients: the official `openai` and `anthropic` Python SDKs
(sync, async, streamed), pointed at the functions served by uvicorn as deployed, on the real database.

The model here is the offline development model, so these calls are translated (text); the calls passed
through to a provider of the same protocol are in tests/test_v1_passthrough.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from tests.support import fnsupport
from tests.support.v1server import Server, charges, server_fixture, settled_books, usage_rows  # noqa: F401  (fixture)

MODEL = "offline-dev"


# -- the OpenAI SDK ------------------------------------------------------------------------------------------

def test_openai_sdk_completes_and_the_call_is_billed_once(server: Server) -> None:
    user = server.db.make_user(balance=5)
    key = server.key(user)
    client = server.openai(key)
    done = client.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}])
    assert done.object == "chat.completion" and done.model == MODEL
    assert "You said: Hello there" in (done.choices[0].message.content or "")
    assert done.choices[0].finish_reason == "stop"
    [charge] = charges(server.db, user)
    [usage] = usage_rows(server.db, user)
    assert usage["service"] == "v1" and usage["protocol"] == "openai" and usage["status"] == "succeeded"
    assert usage["api_key_id"] == server.db.one("select id from public.api_keys where user_id = %s", (user,))
    assert done.usage is not None
    assert (usage["input_tokens"], usage["output_tokens"]) == (done.usage.prompt_tokens, done.usage.completion_tokens)
    assert -charge["amount_usd"] == usage["cost_usd"] > 0
    assert server.db.one("select count(*) as n from public.chat_messages where user_id = %s", (user,)) == 0
    settled_books(server.db, user)


def test_openai_sdk_streams_with_a_final_usage_chunk_when_asked(server: Server) -> None:
    user = server.db.make_user(balance=5)
    client = server.openai(server.key(user))
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "stream me"}],
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "You said: stream me" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    [usage] = usage_rows(server.db, user)
    assert (usage["input_tokens"], usage["output_tokens"]) == (final.usage.prompt_tokens, final.usage.completion_tokens)
    assert len(charges(server.db, user)) == 1
    settled_books(server.db, user)

    plain = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "no usage"}],
                                                stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)  # not asked: no usage chunk
    assert len(charges(server.db, user)) == 2


def test_openai_async_sdk_and_the_models_list(server: Server) -> None:
    user = server.db.make_user(balance=5)
    key = server.key(user)

    async def run() -> tuple[Any, list[str], str]:
        async with server.async_openai(key) as client:
            done = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "async"}])
            models = [m.id async for m in client.models.list()]
            one = await client.models.retrieve(MODEL)
            return done, models, one.owned_by

    done, models, owner = asyncio.run(run())
    assert "You said: async" in done.choices[0].message.content
    active = [r["model"] for r in server.db.q("select model from public.model_prices where active")]
    assert sorted(models) == sorted(active) and owner == "offline"


def test_openai_sdk_sees_an_exhausted_balance_as_insufficient_quota_and_does_not_retry(server: Server) -> None:
    user = server.db.make_user(balance=0)
    client = server._keep(openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key(user)))  # default retries
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    error = caught.value
    assert error.status_code == 429 and error.code == "insufficient_quota" and error.type == "insufficient_quota"
    assert "balance" in error.message.lower()
    assert error.response.headers["x-should-retry"] == "false"
    assert server.db.one("select count(*) as n from public.holds where user_id = %s", (user,)) == 0
    assert usage_rows(server.db, user) == []


@pytest.mark.parametrize(("change", "status", "kind", "code", "param"), [
    ({"model": "no-such-model"}, 404, "invalid_request_error", "model_not_found", "model"),
    ({"messages": []}, 400, "invalid_request_error", "validation_error", "messages"),
    ({"max_tokens": 10**7}, 400, "invalid_request_error", "invalid_max_tokens", "max_tokens"),
    ({"n": 2}, 400, "invalid_request_error", "validation_error", "n"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, 400,
     "invalid_request_error", "not_translatable", "tools"),
])
def test_openai_sdk_errors_name_the_field(server: Server, change: dict[str, Any], status: int, kind: str, code: str,
                                          param: str) -> None:
    user = server.db.make_user(balance=5)
    client = server.openai(server.key(user))
    args: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]} | change
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**args)
    error = caught.value
    assert (error.status_code, error.type, error.code, error.param) == (status, kind, code, param)
    assert error.message.endswith(".") and error.message[0].isupper()
    assert charges(server.db, user) == [] and usage_rows(server.db, user) == []
    settled_books(server.db, user)


def test_openai_sdk_with_a_bad_key_or_a_usage_only_key(server: Server) -> None:
    user = server.db.make_user(balance=5)
    with pytest.raises(openai.AuthenticationError) as bad:
        server.openai("sk_" + "0" * 12 + "_" + "0" * 64).models.list()
    assert bad.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as scope:
        server.openai(server.key(user, ["usage:read"])).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert scope.value.code == "insufficient_scope" and "'models' scope" in scope.value.message


def test_an_access_token_works_as_the_key(server: Server) -> None:
    user = server.db.make_user(balance=5)
    token = fnsupport.token(user)
    done = server.openai(token).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "jwt"}])
    assert "You said: jwt" in (done.choices[0].message.content or "")
    message = server.anthropic(token).messages.create(model=MODEL, max_tokens=100,
                                                      messages=[{"role": "user", "content": "jwt too"}])
    assert "You said: jwt too" in message.content[0].text  # type: ignore[union-attr]
    assert [r["api_key_id"] for r in usage_rows(server.db, user)] == [None, None]


# -- the Anthropic SDK ---------------------------------------------------------------------------------------

def test_anthropic_sdk_creates_a_message_and_the_call_is_billed_once(server: Server) -> None:
    user = server.db.make_user(balance=5)
    client = server.anthropic(server.key(user))
    message = client.messages.create(model=MODEL, max_tokens=200, system="Be brief.",
                                     messages=[{"role": "user", "content": [{"type": "text", "text": "Hi Claude"}]}])
    assert message.type == "message" and message.role == "assistant" and message.stop_reason == "end_turn"
    assert "You said: Hi Claude" in message.content[0].text  # type: ignore[union-attr]
    [usage] = usage_rows(server.db, user)
    assert usage["protocol"] == "anthropic" and usage["service"] == "v1"
    assert (usage["input_tokens"], usage["output_tokens"]) == (message.usage.input_tokens, message.usage.output_tokens)
    assert len(charges(server.db, user)) == 1
    settled_books(server.db, user)


def test_anthropic_sdk_streams_and_its_final_message_has_the_usage(server: Server) -> None:
    user = server.db.make_user(balance=5)
    client = server.anthropic(server.key(user))
    with client.messages.stream(model=MODEL, max_tokens=200,
                                messages=[{"role": "user", "content": "stream please"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "You said: stream please" in text and final.content[0].text == text  # type: ignore[union-attr]
    [usage] = usage_rows(server.db, user)
    assert (usage["input_tokens"], usage["output_tokens"]) == (final.usage.input_tokens, final.usage.output_tokens)
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"
    settled_books(server.db, user)


def test_anthropic_async_sdk_streams(server: Server) -> None:
    user = server.db.make_user(balance=5)
    key = server.key(user)

    async def run() -> str:
        async with server.async_anthropic(key) as client, client.messages.stream(model=MODEL, max_tokens=100,
                                          messages=[{"role": "user", "content": "async stream"}]) as stream:
            return "".join([t async for t in stream.text_stream])

    assert "You said: async stream" in asyncio.run(run())
    assert len(charges(server.db, user)) == 1


def test_anthropic_sdk_errors_in_its_own_shape(server: Server) -> None:
    broke = server.db.make_user(balance=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        server.anthropic(server.key(broke)).messages.create(model=MODEL, max_tokens=10,
                                                            messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 402
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    user = server.db.make_user(balance=5)
    with pytest.raises(anthropic.BadRequestError) as bad:
        server.anthropic(server.key(user)).messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])
    assert "messages.0.content.0" in bad.value.message and bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        server.anthropic("nope").models.list()
    models = server.anthropic(server.key(user)).models.list()
    assert MODEL in [m.id for m in models]


# -- idempotency, sessions, races ----------------------------------------------------------------------------

def test_the_same_idempotency_key_twenty_times_is_one_charge(server: Server) -> None:
    user = server.db.make_user(balance=5)
    key = server.key(user)

    async def run() -> list[Any]:
        async with server.async_openai(key) as client:
            return await asyncio.gather(*(
                client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "once"}],
                                               extra_headers={"Idempotency-Key": "the-one"})
                for _ in range(20)), return_exceptions=True)

    answers = asyncio.run(run())
    ok = [a for a in answers if not isinstance(a, BaseException)]
    refused = [a for a in answers if isinstance(a, BaseException)]
    assert ok and all(isinstance(e, openai.ConflictError) for e in refused), refused[:1]
    assert len({a.id for a in ok}) == 1 and len({a.choices[0].message.content for a in ok}) == 1
    assert len(charges(server.db, user)) == 1 and len(usage_rows(server.db, user)) == 1
    settled_books(server.db, user)
    again = server.openai(key).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "once"}],
                                                       stream=True, extra_headers={"Idempotency-Key": "the-one"})
    assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == ok[0].choices[0].message.content
    assert len(charges(server.db, user)) == 1


def test_fifty_concurrent_calls_on_a_balance_for_ten(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call holds exactly a tenth of the balance, and the model takes a second to answer (so no settle
    frees money while the others begin): ten succeed, none overdraws, each is charged once."""
    from functions.providers import Offline

    answer = Offline.complete

    async def slow(self: Offline, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(1.0)
        return await answer(self, *args, **kwargs)

    user = server.db.make_user(balance=5)
    key = server.key(user)
    prompt = [{"role": "user", "content": "race"}]
    probe = server.openai(key).chat.completions.create(model=MODEL, messages=prompt, max_tokens=1000)
    del probe
    hold = server.db.one("select amount_usd from public.holds where user_id = %s", (user,))
    balance = server.db.one("select balance_usd from public.billing_accounts where user_id = %s", (user,))
    server.db.rpc("top_up", user_id=user, amount_usd=10 * hold - balance, payment_ref=f"to-ten-{user}",
                  kind="adjustment")
    assert server.db.one("select balance_usd from public.billing_accounts where user_id = %s", (user,)) == 10 * hold
    start = len(charges(server.db, user))
    monkeypatch.setattr(Offline, "complete", slow)

    async def run() -> list[Any]:
        async with server.async_openai(key) as client:
            return await asyncio.gather(*(client.chat.completions.create(model=MODEL, messages=prompt, max_tokens=1000)
                                          for _ in range(50)), return_exceptions=True)

    answers = asyncio.run(run())
    ok = [a for a in answers if not isinstance(a, BaseException)]
    refused = [a for a in answers if isinstance(a, BaseException)]
    assert len(ok) == 10 and len(refused) == 40
    assert all(isinstance(e, openai.RateLimitError) and e.code == "insufficient_quota" for e in refused)
    assert len(charges(server.db, user)) - start == len(ok)
    account = server.db.one("select * from public.billing_accounts where user_id = %s", (user,))
    assert account["balance_usd"] >= 0
    settled_books(server.db, user)


def test_a_session_header_saves_the_exchange_as_a_chat_turn(server: Server) -> None:
    user = server.db.make_user(balance=5)
    client = server.openai(server.key(user), default_headers={"X-Session-Id": "from-the-sdk"})
    for text in ("first", "second"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
    session = server.db.one("select * from public.chat_sessions where user_id = %s", (user,))
    assert session["name"] == "from-the-sdk"
    messages = server.db.q("select role, content, seq from public.chat_messages where session_id = %s order by seq",
                             (session["id"],))
    assert [(m["role"], m["seq"]) for m in messages] == [("user", 1), ("assistant", 2), ("user", 3), ("assistant", 4)]
    assert messages[2]["content"] == "second" and "You said: second" in messages[3]["content"]
    assert [r["service"] for r in usage_rows(server.db, user)] == ["v1", "v1"]
    assert len(charges(server.db, user)) == 2
    with pytest.raises(openai.NotFoundError) as gone:
        server.openai(server.key(user), default_headers={"X-Session-Id": str(uuid.uuid4())}).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert gone.value.code == "session_not_found"
    settled_books(server.db, user)


def test_the_cost_is_priced_from_model_prices(server: Server) -> None:
    user = server.db.make_user(balance=5)
    done = server.openai(server.key(user)).chat.completions.create(model=MODEL,
                                                                   messages=[{"role": "user", "content": "price"}])
    price = server.db.one("select * from public.model_prices where model = %s", (MODEL,))
    assert done.usage is not None
    want = (Decimal(done.usage.prompt_tokens) * price["input_usd_per_mtok"]
            + Decimal(done.usage.completion_tokens) * price["output_usd_per_mtok"]) / 1_000_000
    [usage] = usage_rows(server.db, user)
    assert usage["cost_usd"] == round(want, 6)


# -- a client that leaves mid-stream -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_client_that_leaves_mid_stream_pays_for_what_it_was_sent(
        server: Server, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """The model streams slowly; the client reads the first text and hangs up. The call is charged for the
    delivered part (estimated, as the provider reports no usage for a cut stream), once; the session keeps the
    partial answer."""
    import httpx

    from functions.providers import Delta, Offline

    async def slow(self: Offline, model: str, messages: Any, max_tokens: int, options: Any = None) -> Any:
        done = self.completion(model, messages, max_tokens)
        for i in range(0, len(done.text), 8):
            yield Delta(done.text[i : i + 8])
            await asyncio.sleep(0.2)
        yield done

    monkeypatch.setattr(Offline, "stream", slow)
    user = server.db.make_user(balance=5)
    body: dict[str, Any] = {"model": MODEL, "stream": True, "max_tokens": 500,
                            "messages": [{"role": "user", "content": "a long answer please"}]}
    headers = {"Authorization": f"Bearer {server.key(user)}", "X-Session-Id": "cut", "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.url, timeout=30) as client, \
            client.stream("POST", path, json=body, headers=headers) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if '"text' in line or '"content":"' in line.replace(" ", ""):
                break  # the first text arrived: leave
    deadline = time.monotonic() + 20
    while server.db.one("select status from public.holds where user_id = %s", (user,)) == "open":
        assert time.monotonic() < deadline, "the cut stream's hold was never closed"
        time.sleep(0.05)
    [charge] = charges(server.db, user)
    [usage] = usage_rows(server.db, user)
    assert 0 < usage["output_tokens"] < 500 / 4 and -charge["amount_usd"] == usage["cost_usd"] > 0
    hold = server.db.one("select * from public.holds where user_id = %s", (user,))
    assert hold["status"] == "settled" and hold["delivered_chars"] > 0 and hold["result"]["partial"] is True
    answer = server.db.one("select content, status from public.chat_messages where user_id = %s and role = 'assistant'",
                           (user,))
    full = Offline().completion(MODEL, body["messages"], 500).text
    assert answer["status"] == "partial" and full.startswith(answer["content"])
    assert 0 < len(answer["content"]) < len(full)
    settled_books(server.db, user)


def test_a_blocked_account_and_a_spent_rate_limit_in_the_openai_shape(server: Server) -> None:
    blocked = server.db.make_user(balance=5)
    token = fnsupport.token(blocked)  # an API key of a blocked account is refused at authentication already
    server.db.q("update public.profiles set status = 'blocked' where id = %s", (blocked,))
    with pytest.raises(openai.PermissionDeniedError) as refused:
        server.openai(token).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "account_blocked" and refused.value.response.headers["x-should-retry"] == "false"

    busy = server.db.make_user(balance=5, plan="free")
    rpm = server.db.one("select requests_per_minute from public.plans where id = 'free'")
    client = server.openai(server.key(busy))
    for _ in range(rpm):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "one more"}])
    assert limited.value.code == "rate_limit_exceeded" and limited.value.response.headers["retry-after"] == "60"
    assert len(charges(server.db, busy)) == rpm
    settled_books(server.db, busy)


def test_a_provider_failing_mid_stream_ends_the_stream_with_an_error_event_and_bills_what_was_sent(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.errors import BadGateway
    from functions.providers import Delta, Offline

    async def breaks(self: Offline, model: str, messages: Any, max_tokens: int, options: Any = None) -> Any:
        yield Delta("The first words")
        raise BadGateway("The upstream connection dropped.")

    monkeypatch.setattr(Offline, "stream", breaks)
    user = server.db.make_user(balance=5)
    received: list[str] = []

    def read() -> None:
        for chunk in server.openai(server.key(user)).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True):
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as caught:
        read()
    assert "".join(received) == "The first words"
    assert "upstream connection dropped" in caught.value.message
    [usage] = usage_rows(server.db, user)
    assert usage["status"] == "succeeded" and usage["output_tokens"] == len("The first words") // 4 + 1
    assert len(charges(server.db, user)) == 1
    settled_books(server.db, user)
