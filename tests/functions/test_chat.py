"""chat: turns saved and billed atomically, sessions, history, listings, idempotent retries."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from tests.support.pg import Sql


def ledger_matches(db: Sql, uid: uuid.UUID) -> None:
    acct = db.one("select balance_usd, held_usd from public.billing_accounts where user_id = %s", (uid,))
    total = db.one("select coalesce(sum(amount_usd), 0) from public.credit_ledger where user_id = %s", (uid,))
    assert acct["balance_usd"] == total
    assert acct["balance_usd"] >= 0


def test_turn_is_saved_billed_and_named_offline(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    r = api.post("chat", {"message": "How do I reverse a list?"}, user=uid)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["provider"] == "offline" and "offline development model" in body["content"]
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    messages = db.q("select role, content, seq from public.chat_messages where session_id = %s order by seq",
                    (body["session_id"],))
    assert [(m["role"], m["seq"]) for m in messages] == [("user", 1), ("assistant", 2)]
    assert messages[1]["content"] == body["content"]
    usage = db.one("select cost_usd, status from public.usage_logs where user_id = %s", (uid,))
    assert usage["status"] == "succeeded"
    assert usage["cost_usd"] == Decimal(str(body["usage"]["cost_usd"]))
    assert db.one("select balance_usd from public.billing_accounts where user_id = %s", (uid,)) == \
        Decimal("5") - usage["cost_usd"]
    ledger_matches(db, uid)


def test_named_session_keeps_history_per_user(api: Any) -> None:
    db: Sql = api.db
    alice, bob = db.make_user(balance=5), db.make_user(balance=5)
    first = api.post("chat", {"message": "one", "session_id": "main"}, user=alice).json
    second = api.post("chat", {"message": "two", "session_id": "main"}, user=alice).json
    other = api.post("chat", {"message": "hi", "session_id": "main"}, user=bob).json
    assert first["session_id"] == second["session_id"]
    assert first["session_name"] == second["session_name"] == other["session_name"] == "main"
    assert other["session_id"] != first["session_id"]
    assert "turn 2" in second["content"]  # the model saw the first turn
    assert "turn 1" in other["content"]
    # The id is the database's, not derived from the name: nobody can predict it and take it first.
    assert first["session_id"] != str(uuid.uuid5(alice, "main"))
    assert db.one("select name from public.chat_sessions where id = %s", (first["session_id"],)) == "main"


def test_a_deleted_named_session_frees_its_name(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    first = api.post("chat", {"message": "one", "session_id": "work"}, user=uid).json
    db.q("update public.chat_sessions set deleted_at = now() where id = %s", (first["session_id"],))
    again = api.post("chat", {"message": "fresh start", "session_id": "work"}, user=uid).json
    assert again["session_id"] != first["session_id"]
    assert "turn 1" in again["content"]  # the deleted session's history is not sent


def test_a_session_named_before_names_were_kept_is_found_by_its_name(api: Any) -> None:
    """Sessions created when names mapped to uuid5(user, name) keep answering to that name."""
    db: Sql = api.db
    uid = db.make_user(balance=5)
    legacy = uuid.uuid5(uid, "old")
    db.q("insert into public.chat_sessions (id, user_id, title) values (%s, %s, 'old')", (legacy, uid))
    turn = api.post("chat", {"message": "still there?", "session_id": "old"}, user=uid).json
    assert turn["session_id"] == str(legacy)
    listed = api.get("chat", user=uid, query_string={"session_id": "old"}).json["items"]
    assert [m["role"] for m in listed] == ["assistant", "user"]


def test_uuid_session_of_another_user_is_404_and_nothing_billed(api: Any) -> None:
    db: Sql = api.db
    alice, bob = db.make_user(balance=5), db.make_user(balance=5)
    session = api.post("chat", {"message": "mine"}, user=alice).json["session_id"]
    r = api.post("chat", {"message": "let me in", "session_id": session}, user=bob)
    assert r.status_code == 404 and r.json["error"]["code"] == "session_not_found"
    assert db.one("select count(*) from public.holds where user_id = %s", (bob,)) == 0
    unknown = api.post("chat", {"message": "x", "session_id": str(uuid.uuid4())}, user=alice)
    assert unknown.status_code == 404


def test_retry_with_same_client_message_id_is_one_turn_and_one_charge(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    body = {"message": "once", "client_message_id": "msg-123"}
    a, b = api.post("chat", body, user=uid), api.post("chat", body, user=uid)
    assert a.status_code == b.status_code == 200
    assert a.json["message_id"] == b.json["message_id"]
    assert b.json["replay"] is True and a.json["replay"] is False
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 2
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == 1


def test_x_request_id_is_echoed_and_makes_the_post_idempotent(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    headers = {"X-Request-Id": "req-abc-1"}
    a = api.post("chat", {"message": "hello"}, user=uid, headers=headers)
    b = api.post("chat", {"message": "hello"}, user=uid, headers=headers)
    assert a.headers["X-Request-Id"] == "req-abc-1"
    assert a.json["message_id"] == b.json["message_id"]


def test_empty_balance_is_402_and_nothing_written(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=0)
    r = api.post("chat", {"message": "hello"}, user=uid)
    assert r.status_code == 402 and r.json["error"]["code"] == "insufficient_credits"
    assert r.json["error"]["request_id"] == r.headers["X-Request-Id"]
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 0
    assert db.one("select count(*) from public.holds where user_id = %s", (uid,)) == 0


@pytest.mark.parametrize("status", ["blocked", "paused"])
def test_blocked_or_paused_user_is_403(api: Any, status: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    db.q("update public.profiles set status = %s where id = %s", (status, uid))
    r = api.post("chat", {"message": "hello"}, user=uid)
    assert r.status_code == 403 and r.json["error"]["code"] == f"account_{status}"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "message"),
    ({"message": ""}, "message"),
    ({"message": "x" * 32001}, "message"),
    ({"message": "hi", "max_tokens": 0}, "max_tokens"),
    ({"message": "hi", "max_tokens": 10**6}, "max_tokens"),
    ({"message": "hi", "mesage": "typo"}, "mesage"),
    ({"message": "hi", "session_id": ""}, "session_id"),
    ({"message": "hi", "client_message_id": "has spaces"}, "client_message_id"),
    ({"message": 12}, "message"),
])
def test_bad_input_is_422_naming_the_field(api: Any, body: dict[str, Any], field: str) -> None:
    uid = api.db.make_user(balance=5)
    r = api.post("chat", body, user=uid)
    assert r.status_code == 422, r.json
    assert field in r.json["error"]["message"]
    assert any(d["field"] == field for d in r.json["error"]["details"]["fields"])


def test_unknown_model_is_422(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    r = api.post("chat", {"message": "hi", "model": "no-such-model"}, user=uid)
    assert r.status_code == 422 and r.json["error"]["code"] == "unknown_model"


def test_sessions_and_messages_page_newest_first_without_gaps(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    for i in range(5):
        api.post("chat", {"message": f"session {i}", "session_id": f"s{i}"}, user=uid)
    for i in range(3):
        api.post("chat", {"message": f"more {i}", "session_id": "s0"}, user=uid)
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("chat", user=uid, query_string=query).json
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5
    s0 = api.db.one("select id from public.chat_sessions where user_id = %s and name = 's0'", (uid,))
    assert seen[0] == str(s0)  # most recent activity first
    msgs: list[int] = []
    cursor = None
    while True:
        query = {"session_id": "s0", "limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.get("chat", user=uid, query_string=query).json
        msgs += [m["seq"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert msgs == list(range(8, 0, -1))


def test_listing_another_users_session_is_404(api: Any) -> None:
    db: Sql = api.db
    alice, bob = db.make_user(balance=5), db.make_user(balance=5)
    session = api.post("chat", {"message": "secret"}, user=alice).json["session_id"]
    r = api.get("chat", user=bob, query_string={"session_id": session})
    assert r.status_code == 404
    assert api.get("chat", user=bob).json["items"] == []


@pytest.mark.parametrize("cursor", ["not-base64!", "e30", "eyJ0IjoieCIsImlkIjoieSJ9"])
def test_bad_cursor_is_422_naming_cursor(api: Any, cursor: str) -> None:
    uid = api.db.make_user(balance=5)
    r = api.get("chat", user=uid, query_string={"cursor": cursor})
    assert r.status_code == 422 and r.json["error"]["details"]["fields"][0]["field"] == "cursor"


# -- which model answers --------------------------------------------------------------------------------

OPENAI_ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "from openai"},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}


@pytest.mark.parametrize("configure", ["provider", "default_model"])
def test_the_configured_provider_answers_a_request_that_names_no_model(
        api: Any, monkeypatch: pytest.MonkeyPatch, configure: str) -> None:
    """MODEL_PROVIDER picks its default model in model_prices (one per provider, set from the dashboard);
    DEFAULT_MODEL names one outright. Either way the configured provider answers, not the seed's offline model."""
    import httpx

    from functions.providers import reset_providers
    from functions.settings import get_settings

    if configure == "provider":
        monkeypatch.setenv("MODEL_PROVIDER", "openai")
        expected = api.db.one("select model from public.model_prices where provider = 'openai' and is_default")
    else:
        monkeypatch.setenv("DEFAULT_MODEL", "gpt-4o")
        expected = "gpt-4o"
    get_settings.cache_clear()
    reset_providers()
    route = api.router.post("https://llm.test/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=OPENAI_ANSWER))
    uid = api.db.make_user(balance=5)
    r = api.post("chat", {"message": "who answers?"}, user=uid)
    assert r.status_code == 200, r.json
    assert (r.json["provider"], r.json["model"], r.json["content"]) == ("openai", expected, "from openai")
    assert json.loads(route.calls.last.request.content)["model"] == expected
    models = api.get("chat", user=uid, path="/models").json
    assert models["default_model"] == expected
    assert {m["model"] for m in models["items"]} >= {"offline-dev", "gpt-4o-mini", "claude-haiku-4-5"}
    health = api.get("health").json
    assert health["default_model"] == expected and health["model_provider"] == get_settings().model_provider


@pytest.mark.parametrize(("target", "body"), [
    ("chat", {"message": "hi"}),
    ("compile", {"task": "sum a list", "language": "python"}),
])
def test_a_model_without_a_provider_releases_its_hold_at_once(api: Any, monkeypatch: pytest.MonkeyPatch,
                                                              target: str, body: dict[str, Any]) -> None:
    """No provider for the hold's model (the offline model in production, say): 502, and the hold is closed
    now rather than by the expiry, with nothing charged and no usage row (no call was made)."""
    from functions import billed_call
    from functions.errors import BadGateway

    def none(name: str, settings: Any) -> Any:
        raise BadGateway(f"no provider named {name!r}", code="provider_unavailable")

    monkeypatch.setattr(billed_call, "get_provider", none)
    db: Sql = api.db
    uid = db.make_user(balance=5)
    r = api.post(target, body, user=uid)
    assert r.status_code == 502 and r.json["error"]["code"] == "provider_unavailable"
    assert db.one("select status from public.holds where user_id = %s", (uid,)) == "released"
    assert db.one("select held_usd from public.billing_accounts where user_id = %s", (uid,)) == 0
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 0
