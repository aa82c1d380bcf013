"""begin_api_call and settle_api_call (the compatible API's two round trips) against the real database:
the protocol and key on every usage row of such a hold, whoever writes it; a request id of another kind of
call refused; the session turn written with the charge or not at all. The books balance after each test."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.books import check_books
from tests.support.pg import Sql, create_api_key

MODEL = "offline-dev"


@pytest.fixture(autouse=True)
def _books_balance_after_each_test(db: Sql) -> Iterator[None]:
    yield
    check_books(db)


def begin(db: Sql, user: uuid.UUID, request_id: str, **args: Any) -> Any:
    return db.rpc("begin_api_call", user_id=user, request_id=request_id, protocol=args.pop("protocol", "openai"),
                  model=MODEL, prompt_chars=100, max_output_tokens=100, **args)


def settle(db: Sql, hold: Any, **args: Any) -> Any:
    return db.rpc("settle_api_call", hold_id=hold["hold_id"], input_tokens=10, output_tokens=20,
                  response=json.dumps({"id": "chatcmpl-1", "object": "chat.completion"}), **args)


def test_a_call_without_a_session_writes_the_charge_only_with_its_protocol_and_key(db: Sql) -> None:
    user = db.make_user(balance=5)
    key = create_api_key(db, "k", user)
    hold = begin(db, user, "v1:a", api_key_id=key["id"])
    assert hold["session_id"] is None and hold["replay"] is False
    result = settle(db, hold)
    assert result["response"] == {"id": "chatcmpl-1", "object": "chat.completion"} and result["replay"] is False
    [usage] = db.q("select * from public.usage_logs where user_id = %s", (user,))
    assert (usage["service"], usage["operation"], usage["protocol"], str(usage["api_key_id"])) == (
        "v1", "chat", "openai", key["id"])
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (user,)) == 0
    again = settle(db, hold)
    assert again["replay"] is True and again["response"] == result["response"]
    replayed = begin(db, user, "v1:a")
    assert replayed["replay"] is True and replayed["result"]["response"] == result["response"]


def test_a_failed_call_and_an_expired_delivery_are_marked_too(db: Sql) -> None:
    user = db.make_user(balance=5)
    failed = begin(db, user, "v1:failed", protocol="anthropic")
    db.rpc("release_hold", hold_id=failed["hold_id"], error_code="model_error")
    cut = begin(db, user, "v1:cut", protocol="anthropic")
    db.rpc("touch_hold", hold_id=cut["hold_id"], delivered_chars=400)
    db.q("update public.holds set last_seen_at = now() - interval '1 hour' where id = %s", (cut["hold_id"],))
    db.rpc("expire_stale_holds", older_than_seconds=60)
    rows = db.q("select status, service, protocol, cost_usd from public.usage_logs where user_id = %s order by id",
                (user,))
    assert [(r["status"], r["service"], r["protocol"]) for r in rows] == [("failed", "v1", "anthropic"),
                                                                          ("succeeded", "v1", "anthropic")]
    assert rows[0]["cost_usd"] == 0 < rows[1]["cost_usd"]


def test_a_request_id_of_a_chat_call_is_refused(db: Sql) -> None:
    user = db.make_user(balance=5)
    db.rpc("begin_chat_turn", user_id=user, request_id="v1:shared", model=MODEL, provider=None, fixed_chars=10,
           max_output_tokens=10)
    with pytest.raises(psycopg.Error) as caught:
        begin(db, user, "v1:shared")
    assert caught.value.diag.sqlstate == "PT409" and caught.value.diag.message_primary == "request_id_reused"
    hold = db.one("select id from public.holds where user_id = %s", (user,))
    with pytest.raises(psycopg.Error) as wrong:
        settle(db, {"hold_id": hold})
    assert wrong.value.diag.message_primary == "wrong_operation"
    db.rpc("release_hold", hold_id=hold, error_code="model_error")


def test_a_session_turn_is_written_with_the_charge(db: Sql) -> None:
    user = db.make_user(balance=5)
    hold = begin(db, user, "v1:s1", session_name="sdk")
    assert hold["session_id"] is not None
    settle(db, hold, user_message="What is a CTE?", assistant_message="A named subquery.")
    [session] = db.q("select * from public.chat_sessions where user_id = %s", (user,))
    assert session["name"] == "sdk" and str(session["id"]) == hold["session_id"]
    messages = db.q("select role, content, seq from public.chat_messages where session_id = %s order by seq",
                    (session["id"],))
    assert [(m["role"], m["content"]) for m in messages] == [("user", "What is a CTE?"),
                                                             ("assistant", "A named subquery.")]
    [usage] = db.q("select service, protocol from public.usage_logs where user_id = %s", (user,))
    assert usage == {"service": "v1", "protocol": "openai"}


def test_a_turn_that_cannot_be_written_leaves_nothing(db: Sql) -> None:
    """Token counts the settle refuses (reasoning above output): no message, no usage row, no charge; the
    hold stays open for the caller to release."""
    user = db.make_user(balance=5)
    hold = begin(db, user, "v1:bad", session_name="sdk")
    with pytest.raises(psycopg.Error) as caught:
        settle(db, hold, reasoning_tokens=50, user_message="hi", assistant_message="hello")
    assert caught.value.diag.sqlstate == "PT422"
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (user,)) == 0
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (user,)) == 0
    assert db.one("select status from public.holds where user_id = %s", (user,)) == "open"
    db.rpc("release_hold", hold_id=hold["hold_id"], error_code="invalid_token_counts")


@pytest.mark.parametrize(("args", "code"), [
    ({"protocol": "grpc"}, "invalid_protocol"),
    ({"session_name": ""}, "invalid_session_name"),
    ({"session_id": str(uuid.uuid4())}, "session_not_found"),
])
def test_bad_arguments_are_refused_before_any_write(db: Sql, args: dict[str, Any], code: str) -> None:
    user = db.make_user(balance=5)
    with pytest.raises(psycopg.Error) as caught:
        begin(db, user, "v1:x", **args)
    assert caught.value.diag.message_primary == code
    assert db.one("select count(*) from public.holds where user_id = %s", (user,)) == 0
