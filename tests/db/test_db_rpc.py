"""Every RPC against the real database: its happy path, its errors with their SQLSTATE, and nothing written
when it fails. After every test the books must balance (see `tests.support.books.check_books`)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.support.books import check_books
from tests.support.pg import Sql, create_api_key
from tests.support.rows import TABLES

MODEL = "offline-dev"  # $1 per million input tokens, $2 per million output tokens (seed.sql)


def D(value: Any) -> Decimal:
    """A JSON number (float) or a numeric string as an exact Decimal."""
    return Decimal(str(value))


@pytest.fixture(autouse=True)
def _books_balance_after_each_test(db: Sql) -> Iterator[None]:
    yield
    check_books(db)


def snapshot(db: Sql) -> dict[str, Any]:
    """Row counts of every public table and the money totals: equal before and after a failed call."""
    counts = db.one("select jsonb_build_object(" + ", ".join(
        f"'{t}', (select count(*) from public.{t})" for t in sorted(TABLES)) + ")")
    money = db.one("select sum(balance_usd) as balance, sum(held_usd) as held, sum(month_spend_usd) as spend,"
                   " (select count(*) from public.holds where status = 'open') as open_holds,"
                   " (select count(*) from public.api_keys where revoked_at is not null) as revoked"
                   " from public.billing_accounts")
    return {**counts, **money}


def fails(db: Sql, sqlstate: str, name: str, *, as_role: str = "service_role", as_user: Any = None,
          **args: Any) -> psycopg.Error:
    """Call an RPC that must fail with `sqlstate` and must leave every table as it was."""
    before = snapshot(db)
    with pytest.raises(psycopg.Error) as err:
        db.rpc(name, as_role=as_role, as_user=as_user, **args)
    assert err.value.sqlstate == sqlstate, (err.value.sqlstate, err.value.diag.message_primary)
    assert snapshot(db) == before
    return err.value


def begin(db: Sql, uid: uuid.UUID, request_id: str | None = None, *, operation: str = "chat", model: str = MODEL,
          prompt_chars: int = 1000, max_output_tokens: int = 500, **extra: Any) -> dict[str, Any]:
    """A hold; the defaults cost (1000 * 1 + 500 * 2) / 1e6 = $0.002 in the worst case."""
    return db.rpc("begin_charge", user_id=uid, request_id=request_id or f"req-{uuid.uuid4()}",
                  operation=operation, model=model, prompt_chars=prompt_chars, max_output_tokens=max_output_tokens,
                  **extra)


def settle_chat(db: Sql, hold_id: Any, *, user_message: str = "hello", assistant_message: str = "hi there",
                input_tokens: int = 100, output_tokens: int = 200, **extra: Any) -> dict[str, Any]:
    return db.rpc("settle_chat_turn", hold_id=hold_id, user_message=user_message,
                  assistant_message=assistant_message, input_tokens=input_tokens, output_tokens=output_tokens,
                  **extra)


def account(db: Sql, uid: uuid.UUID) -> dict[str, Any]:
    row: dict[str, Any] = db.one("select * from public.billing_accounts where user_id = %s", (uid,))
    return row


def make_plan(db: Sql, plan_id: str, *, quota: str = "100", rpm: int = 60) -> str:
    db.q("insert into public.plans (id, name, monthly_quota_usd, requests_per_minute) values (%s, %s, %s, %s)",
         (plan_id, plan_id, Decimal(quota), rpm))
    return plan_id


# begin_charge --------------------------------------------------------------------------------------------


def test_begin_charge_places_a_worst_case_hold(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid, "r1")
    assert hold["replay"] is False and hold["status"] == "open" and hold["model"] == MODEL
    assert D(hold["amount_usd"]) == Decimal("0.002")
    acct = account(db, uid)
    assert acct["held_usd"] == Decimal("0.002") and acct["balance_usd"] == 1
    assert db.one("select count(*) from public.holds where user_id = %s", (uid,)) == 1


def test_begin_charge_is_idempotent_on_request_id(db: Sql) -> None:
    uid = db.make_user(balance=1)
    first = begin(db, uid, "same")
    before = snapshot(db)
    again = begin(db, uid, "same", prompt_chars=5, max_output_tokens=5)  # other arguments: still the same hold
    assert again["hold_id"] == first["hold_id"] and again["replay"] is True
    assert D(again["amount_usd"]) == D(first["amount_usd"])
    assert snapshot(db) == before
    settle_chat(db, first["hold_id"])
    after_settle = begin(db, uid, "same")
    assert after_settle["hold_id"] == first["hold_id"] and after_settle["status"] == "settled"
    assert after_settle["replay"] is True and after_settle["result"]["session_id"]
    # The same request id of another user is another hold.
    other = db.make_user(balance=1)
    assert begin(db, other, "same")["hold_id"] != first["hold_id"]


@pytest.mark.parametrize("status", ["blocked", "paused"])
def test_begin_charge_refuses_blocked_and_paused_users(db: Sql, status: str) -> None:
    uid = db.make_user(balance=1)
    db.q("update public.profiles set status = %s where id = %s", (status, uid))
    err = fails(db, "PT403", "begin_charge", user_id=uid, request_id="r", operation="chat", model=MODEL,
                prompt_chars=10, max_output_tokens=10)
    assert err.diag.message_primary == f"account_{status}"


def test_begin_charge_refuses_when_the_monthly_quota_would_be_exceeded(db: Sql) -> None:
    uid = db.make_user(balance=1, plan=make_plan(db, "tiny", quota="0.003"))
    begin(db, uid)  # 0.002 held, 0.001 of quota left
    err = fails(db, "PT402", "begin_charge", user_id=uid, request_id="over", operation="chat", model=MODEL,
                prompt_chars=1000, max_output_tokens=500)
    assert err.diag.message_primary == "quota_exceeded"
    fails(db, "PT402", "begin_charge", user_id=uid, request_id="just-over", operation="chat", model=MODEL,
          prompt_chars=501, max_output_tokens=250)  # $0.001001
    begin(db, uid, prompt_chars=500, max_output_tokens=250)  # exactly the $0.001 left
    assert account(db, uid)["held_usd"] == Decimal("0.003")


def test_begin_charge_refuses_when_credit_is_short(db: Sql) -> None:
    uid = db.make_user(balance=0.003)
    begin(db, uid)
    err = fails(db, "PT402", "begin_charge", user_id=uid, request_id="short", operation="chat", model=MODEL,
                prompt_chars=1000, max_output_tokens=500)
    assert err.diag.message_primary == "insufficient_credits"
    assert account(db, uid)["held_usd"] == Decimal("0.002")


def test_begin_charge_validates_its_arguments(db: Sql) -> None:
    uid = db.make_user(balance=1)
    db.q("update public.model_prices set active = false where model = 'gpt-4o'")
    base = {"user_id": uid, "request_id": "r", "operation": "chat", "model": MODEL, "prompt_chars": 10,
            "max_output_tokens": 10}
    cases = [
        ({"model": "no-such-model"}, "unknown_model"),
        ({"model": "gpt-4o"}, "unknown_model"),  # inactive
        ({"operation": "deploy"}, "invalid_operation"),
        ({"request_id": ""}, "invalid_request_id"),
        ({"prompt_chars": -1}, "invalid_prompt_chars"),
        ({"max_output_tokens": 0}, "invalid_max_tokens"),
        ({"max_output_tokens": 4097}, "invalid_max_tokens"),
        ({"calls": 0}, "invalid_calls"),
        ({"calls": 5}, "invalid_calls"),
        ({"calls": 2, "max_output_tokens": 2 * 4096 + 1}, "invalid_max_tokens"),
    ]
    for change, message in cases:
        assert fails(db, "PT422", "begin_charge", **(base | change)).diag.message_primary == message
    fails(db, "PT404", "begin_charge", **(base | {"user_id": uuid.uuid4()}))


def test_begin_charge_defaults_the_model_and_covers_several_calls(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = db.rpc("begin_charge", user_id=uid, request_id="d", operation="compile", model=None, prompt_chars=0,
                  max_output_tokens=6000, calls=2, provider="offline")  # a repair call: up to 2 x 4096 tokens
    default = db.one("select model from public.model_prices where is_default and provider = 'offline'")
    assert hold["model"] == default == MODEL and hold["provider"] == "offline"
    assert D(hold["amount_usd"]) == Decimal("0.012")
    # One default per provider: the provider named picks it; a provider without one is a clear 422.
    other = db.rpc("begin_charge", user_id=uid, request_id="e", operation="chat", model=None, prompt_chars=0,
                   max_output_tokens=10, provider="openai")
    assert other["model"] == db.one("select model from public.model_prices where is_default and provider = 'openai'")
    db.q("update public.model_prices set is_default = false where provider = 'anthropic'")
    err = fails(db, "PT422", "begin_charge", user_id=uid, request_id="f", operation="chat", model=None,
                prompt_chars=0, max_output_tokens=10, provider="anthropic")
    assert err.diag.message_primary == "no_default_model"


def test_begin_charge_rate_limits_per_plan(db: Sql) -> None:
    uid = db.make_user(balance=1, plan=make_plan(db, "slow", rpm=3))
    holds = [begin(db, uid, f"r{i}") for i in range(3)]
    err = fails(db, "PT429", "begin_charge", user_id=uid, request_id="r3", operation="chat", model=MODEL,
                prompt_chars=10, max_output_tokens=10)
    assert err.diag.message_primary == "rate_limited"
    assert begin(db, uid, "r0")["hold_id"] == holds[0]["hold_id"]  # a retry is a replay, not a new request
    # A fixed one-minute window counted on the account row: once it has passed, the count starts again.
    db.q("update public.billing_accounts set rate_window_start = rate_window_start - interval '61 seconds'"
         " where user_id = %s", (uid,))
    assert begin(db, uid, "r3")["replay"] is False
    assert db.one("select rate_window_count from public.billing_accounts where user_id = %s", (uid,)) == 1


# settle_chat_turn ----------------------------------------------------------------------------------------


def test_the_answer_is_stored_once_and_replays_still_carry_it(db: Sql) -> None:
    """20261202000500_lean_turns: the hold's result keeps no second copy of the answer; every replay path
    (settle again, begin again) reads it back from the assistant message."""
    uid = db.make_user(balance=1)
    hold = begin(db, uid, "once")
    answer = "a long answer " * 50
    first = settle_chat(db, hold["hold_id"], user_message="q", assistant_message=answer)
    assert first["content"] == answer
    stored = db.one("select result from public.holds where id = %s", (hold["hold_id"],))
    assert "content" not in stored and stored["assistant_message_id"] == first["assistant_message_id"]
    assert settle_chat(db, hold["hold_id"], user_message="q", assistant_message="other")["content"] == answer
    replay = begin(db, uid, "once")
    assert replay["replay"] is True and replay["result"]["content"] == answer


def test_settle_chat_turn_writes_the_whole_turn(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid, "turn-1")
    res = settle_chat(db, hold["hold_id"], user_message="What is 2+2?", assistant_message="4", latency_ms=12,
                      client_message_id="c-1")
    assert res["replay"] is False and res["seq"] == 2 and res["content"] == "4"
    cost = Decimal("0.0005")  # 100 in * $1 + 200 out * $2, per million
    assert D(res["cost_usd"]) == cost and D(res["balance_usd"]) == 1 - cost
    session = res["session_id"]
    msgs = db.q("select seq, role, content, status, user_id, hold_id, client_message_id, input_tokens"
                " from public.chat_messages where session_id = %s order by seq", (session,))
    assert [(m["seq"], m["role"], m["content"]) for m in msgs] == [(1, "user", "What is 2+2?"), (2, "assistant", "4")]
    assert {m["user_id"] for m in msgs} == {uid} and {str(m["hold_id"]) for m in msgs} == {hold["hold_id"]}
    assert msgs[0]["client_message_id"] == "c-1" and msgs[1]["input_tokens"] == 100
    assert [str(m_id) for m_id in (res["user_message_id"], res["assistant_message_id"])] == [
        str(r["id"]) for r in db.q("select id from public.chat_messages where session_id = %s order by seq",
                                   (session,))]
    s = db.one("select * from public.chat_sessions where id = %s", (session,))
    assert s["user_id"] == uid and s["title"] == "What is 2+2?"
    summary = db.one("select * from public.chat_session_summaries where session_id = %s", (session,))
    assert (summary["message_count"], summary["input_tokens"], summary["output_tokens"], summary["cost_usd"]) == (
        2, 100, 200, cost)
    usage = db.one("select * from public.usage_logs where hold_id = %s", (hold["hold_id"],))
    assert (usage["status"], usage["service"], usage["operation"], usage["cost_usd"], usage["latency_ms"]) == (
        "succeeded", "chat", "chat", cost, 12)
    ledger = db.one("select * from public.credit_ledger where hold_id = %s", (hold["hold_id"],))
    assert (ledger["kind"], ledger["amount_usd"], ledger["balance_after"]) == ("charge", -cost, 1 - cost)
    h = db.one("select * from public.holds where id = %s", (hold["hold_id"],))
    assert (h["status"], h["charged_usd"]) == ("settled", cost) and h["closed_at"] is not None
    acct = account(db, uid)
    assert (acct["balance_usd"], acct["held_usd"], acct["month_spend_usd"]) == (1 - cost, 0, cost)

    # The next turn in the same session continues the sequence and the totals.
    res2 = settle_chat(db, begin(db, uid, session_id=session)["hold_id"], user_message="and 3+3?",
                       assistant_message="6", partial=True)
    assert res2["seq"] == 4 and res2["session_id"] == session and res2["partial"] is True
    assert [r["seq"] for r in db.q("select seq from public.chat_messages where session_id = %s order by seq",
                                   (session,))] == [1, 2, 3, 4]
    assert db.one("select status from public.chat_messages where session_id = %s and seq = 4", (session,)) == "partial"
    summary = db.one("select * from public.chat_session_summaries where session_id = %s", (session,))
    assert (summary["message_count"], summary["cost_usd"], summary["summary"]) == (4, 2 * cost, "and 3+3?")


def test_settle_chat_turn_creates_the_session_placed_on_the_hold(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid, session_name="work")
    assert hold["session_id"] is not None  # made by the database at begin, not by the caller
    res = settle_chat(db, hold["hold_id"])
    assert res["session_id"] == hold["session_id"]
    row = db.one("select user_id, name from public.chat_sessions where id = %s", (hold["session_id"],))
    assert (row["user_id"], row["name"]) == (uid, "work")


def test_settle_chat_turn_replay_returns_the_same_turn_and_charges_once(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid)
    first = settle_chat(db, hold["hold_id"])
    before = snapshot(db)
    again = settle_chat(db, hold["hold_id"], user_message="different", input_tokens=9999)
    assert again["replay"] is True
    assert {k: v for k, v in again.items() if k != "replay"} == {k: v for k, v in first.items() if k != "replay"}
    assert snapshot(db) == before
    assert db.one("select count(*) from public.credit_ledger where hold_id = %s", (hold["hold_id"],)) == 1


def test_settle_chat_turn_on_a_released_hold_is_a_conflict(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid)
    db.rpc("release_hold", hold_id=hold["hold_id"], error_code="upstream_500")
    err = fails(db, "PT409", "settle_chat_turn", hold_id=hold["hold_id"], user_message="hi",
                assistant_message="hello", input_tokens=1, output_tokens=1)
    assert err.diag.message_primary == "hold_closed"


def test_a_turn_in_another_users_or_a_deleted_session_is_refused_at_begin(db: Sql) -> None:
    owner, intruder = db.make_user(balance=1), db.make_user(balance=1)
    session = settle_chat(db, begin(db, owner)["hold_id"])["session_id"]
    args = {"model": MODEL, "provider": None, "fixed_chars": 10, "max_output_tokens": 10}
    err = fails(db, "PT404", "begin_chat_turn", user_id=intruder, request_id="r-1", session_id=session, **args)
    assert err.diag.message_primary == "session_not_found"
    # A soft-deleted session of one's own is gone too.
    db.q("update public.chat_sessions set deleted_at = now() where id = %s", (session,))
    fails(db, "PT404", "begin_chat_turn", user_id=owner, request_id="r-2", session_id=session, **args)


def test_a_session_deleted_after_begin_still_gets_its_turn_and_the_charge(db: Sql) -> None:
    """Deleting the session while the answer is on its way cannot make the turn fail (or free)."""
    uid = db.make_user(balance=1)
    session = settle_chat(db, begin(db, uid)["hold_id"])["session_id"]
    hold = begin(db, uid, session_id=session)
    db.q("update public.chat_sessions set deleted_at = now() where id = %s", (session,))
    res = settle_chat(db, hold["hold_id"])
    assert res["session_id"] == session and D(res["cost_usd"]) > 0
    assert db.one("select count(*) from public.chat_messages where session_id = %s", (session,)) == 4
    assert db.one("select deleted_at is not null from public.chat_sessions where id = %s", (session,))


def test_settle_chat_turn_validates_and_writes_nothing_on_error(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid)["hold_id"]
    args = {"hold_id": hold, "user_message": "hi", "assistant_message": "hello",
            "input_tokens": 1, "output_tokens": 1}
    assert fails(db, "PT422", "settle_chat_turn", **(args | {"user_message": ""})).diag.message_primary == (
        "invalid_message")
    fails(db, "PT422", "settle_chat_turn", **(args | {"user_message": "x" * 32001}))
    fails(db, "PT422", "settle_chat_turn", **(args | {"assistant_message": None}))
    fails(db, "PT422", "settle_chat_turn", **(args | {"input_tokens": -1}))
    fails(db, "PT404", "settle_chat_turn", **(args | {"hold_id": uuid.uuid4()}))
    compile_hold = begin(db, uid, operation="compile")["hold_id"]
    assert fails(db, "PT409", "settle_chat_turn", **(args | {"hold_id": compile_hold})).diag.message_primary == (
        "wrong_operation")


def test_settle_never_charges_more_than_the_hold(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid, prompt_chars=10, max_output_tokens=10)  # worst case 0.00003
    res = settle_chat(db, hold["hold_id"], input_tokens=100000, output_tokens=100000)
    assert D(res["cost_usd"]) == D(hold["amount_usd"]) == Decimal("0.00003")


# settle_compile ------------------------------------------------------------------------------------------


def _project(db: Sql, uid: uuid.UUID, name: str = "p") -> uuid.UUID:
    with db.acting("authenticated", uid) as c:
        project: uuid.UUID = c.execute("insert into public.projects (name) values (%s) returning id",
                                       (name,)).fetchone()["id"]
    return project


def _compile_args(hold_id: Any, **change: Any) -> dict[str, Any]:
    return {"hold_id": hold_id, "task": "sum two numbers", "language": "python", "code": "def f(a, b): return a+b",
            "valid": True, "diagnostics": [], "input_tokens": 300, "output_tokens": 100} | change


def test_settle_compile_records_the_call_and_charges_it(db: Sql) -> None:
    uid = db.make_user(balance=1)
    project = _project(db, uid)
    hold = begin(db, uid, "c1", operation="compile")
    res = db.rpc("settle_compile", **_compile_args(hold["hold_id"], project_id=project, repaired=True,
                                                   diagnostics=[{"line": 1, "message": "fixed"}]))
    cost = Decimal("0.0005")  # 300 * $1 + 100 * $2, per million
    assert res["replay"] is False and D(res["cost_usd"]) == cost and res["project_id"] == str(project)
    row = db.one("select * from public.code_gen_requests where id = %s", (res["id"],))
    assert (row["user_id"], row["project_id"], row["request_id"], row["language"], row["valid"], row["repaired"],
            row["cost_usd"], row["model"]) == (uid, project, "c1", "python", True, True, cost, MODEL)
    assert row["diagnostics"] == [{"line": 1, "message": "fixed"}]
    usage = db.one("select service, operation, cost_usd from public.usage_logs where hold_id = %s",
                   (hold["hold_id"],))
    assert usage == {"service": "compile", "operation": "compile", "cost_usd": cost}
    assert account(db, uid)["balance_usd"] == 1 - cost
    before = snapshot(db)
    again = db.rpc("settle_compile", **_compile_args(hold["hold_id"], code="other"))
    assert again["replay"] is True and again["id"] == res["id"] and again["code"] == res["code"]
    assert snapshot(db) == before


def test_settle_compile_errors_write_nothing(db: Sql) -> None:
    uid, other = db.make_user(balance=1), db.make_user(balance=1)
    theirs = _project(db, other)
    hold = begin(db, uid, operation="compile")["hold_id"]
    assert fails(db, "PT404", "settle_compile", **_compile_args(hold, project_id=theirs)).diag.message_primary == (
        "project_not_found")
    fails(db, "PT404", "settle_compile", **_compile_args(hold, project_id=uuid.uuid4()))
    fails(db, "PT409", "settle_compile", **_compile_args(begin(db, uid)["hold_id"]))  # a chat hold
    fails(db, "PT422", "settle_compile", **_compile_args(hold, output_tokens=-5))
    db.rpc("release_hold", hold_id=hold, error_code="timeout")
    fails(db, "PT409", "settle_compile", **_compile_args(hold))


# release_hold and expire_stale_holds ----------------------------------------------------------------------


def test_release_hold_logs_a_failure_and_charges_nothing(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid, "fails")
    res = db.rpc("release_hold", hold_id=hold["hold_id"], error_code="upstream_timeout", latency_ms=30000)
    assert (res["status"], res["replay"]) == ("released", False)
    usage = db.one("select * from public.usage_logs where hold_id = %s", (hold["hold_id"],))
    assert (usage["status"], usage["error_code"], usage["cost_usd"], usage["latency_ms"], usage["request_id"]) == (
        "failed", "upstream_timeout", 0, 30000, "fails")
    acct = account(db, uid)
    assert (acct["balance_usd"], acct["held_usd"], acct["month_spend_usd"]) == (1, 0, 0)
    assert db.one("select count(*) from public.credit_ledger where hold_id = %s", (hold["hold_id"],)) == 0
    before = snapshot(db)
    again = db.rpc("release_hold", hold_id=hold["hold_id"], error_code="other")
    assert (again["status"], again["replay"]) == ("released", True)
    assert snapshot(db) == before
    fails(db, "PT404", "release_hold", hold_id=uuid.uuid4(), error_code="x")


def test_release_hold_without_a_usage_row(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid)
    db.rpc("release_hold", hold_id=hold["hold_id"], error_code="settle_failed", record_usage=False)
    assert db.one("select status from public.holds where id = %s", (hold["hold_id"],)) == "released"
    assert db.one("select count(*) from public.usage_logs where hold_id = %s", (hold["hold_id"],)) == 0
    assert account(db, uid)["held_usd"] == 0


def test_release_after_settle_changes_nothing(db: Sql) -> None:
    uid = db.make_user(balance=1)
    hold = begin(db, uid)
    settle_chat(db, hold["hold_id"])
    before = snapshot(db)
    res = db.rpc("release_hold", hold_id=hold["hold_id"], error_code="late")
    assert (res["status"], res["replay"]) == ("settled", True)
    assert snapshot(db) == before


def test_expire_stale_holds_closes_only_old_open_holds(db: Sql) -> None:
    uid = db.make_user(balance=1)
    old, fresh, settled = begin(db, uid), begin(db, uid), begin(db, uid)
    settle_chat(db, settled["hold_id"])
    db.q("update public.holds set created_at = now() - interval '1 hour', last_seen_at = now() - interval '1 hour'"
         " where id = any(%s)", ([uuid.UUID(old["hold_id"]), uuid.UUID(settled["hold_id"])],))
    res = db.rpc("expire_stale_holds", older_than_seconds=900)
    assert res == {"expired": 1, "charged": 0, "hold_ids": [old["hold_id"]]}
    h = db.one("select status, result, closed_at from public.holds where id = %s", (old["hold_id"],))
    assert h["status"] == "expired" and h["result"] == {"error_code": "hold_expired"} and h["closed_at"]
    assert account(db, uid)["held_usd"] == D(fresh["amount_usd"])
    assert db.rpc("expire_stale_holds", older_than_seconds=900) == {"expired": 0, "charged": 0, "hold_ids": []}
    fails(db, "PT409", "settle_chat_turn", hold_id=old["hold_id"], user_message="hi",
          assistant_message="late", input_tokens=1, output_tokens=1)
    fails(db, "PT422", "expire_stale_holds", older_than_seconds=0)


# top_up -----------------------------------------------------------------------------------------------------


def test_top_up_is_idempotent_on_the_payment_reference(db: Sql) -> None:
    uid = db.make_user(balance=0)
    res = db.rpc("top_up", user_id=uid, amount_usd="12.5", payment_ref="pay_1")
    assert res["replay"] is False and D(res["balance_after"]) == Decimal("12.5") and res["kind"] == "top_up"
    before = snapshot(db)
    again = db.rpc("top_up", user_id=uid, amount_usd="12.500000", payment_ref="pay_1")
    assert again["replay"] is True and again["id"] == res["id"]
    assert snapshot(db) == before
    assert fails(db, "PT409", "top_up", user_id=uid, amount_usd="13", payment_ref="pay_1").diag.message_primary == (
        "idempotency_conflict")
    other = db.make_user(balance=0)
    fails(db, "PT409", "top_up", user_id=other, amount_usd="12.5", payment_ref="pay_1")
    # The same reference under another kind is another movement.
    assert db.rpc("top_up", user_id=uid, amount_usd="1", payment_ref="pay_1", kind="grant")["replay"] is False
    assert account(db, uid)["balance_usd"] == Decimal("13.5")


def test_top_up_adjustments_and_validation(db: Sql) -> None:
    uid = db.make_user(balance=1)
    begin(db, uid)  # 0.002 held
    assert D(db.rpc("top_up", user_id=uid, amount_usd="-0.5", payment_ref="fix-1", kind="adjustment")[
        "balance_after"]) == Decimal("0.5")
    assert fails(db, "PT409", "top_up", user_id=uid, amount_usd="-0.499", payment_ref="fix-2",
                 kind="adjustment").diag.message_primary == "would_overdraw"
    for amount in ("0", "-1", "0.0000001", "100000000"):
        assert fails(db, "PT422", "top_up", user_id=uid, amount_usd=amount, payment_ref="bad").diag.message_primary == (
            "invalid_amount")
    fails(db, "PT422", "top_up", user_id=uid, amount_usd="1", payment_ref="bad", kind="charge")
    fails(db, "PT422", "top_up", user_id=uid, amount_usd="1", payment_ref="")
    fails(db, "PT404", "top_up", user_id=uuid.uuid4(), amount_usd="1", payment_ref="nobody")


# ingest_usage ----------------------------------------------------------------------------------------------


def _events(uid: uuid.UUID, ids: list[uuid.UUID], **extra: Any) -> list[dict[str, Any]]:
    return [{"event_id": str(i), "user_id": str(uid), "service": "etl", "operation": "embed", "model": "gpt-4o-mini",
             "input_tokens": 10, "output_tokens": 0, "cost_usd": "0.000001", "status": "succeeded"} | extra
            for i in ids]


def test_ingest_usage_inserts_each_event_once(db: Sql) -> None:
    uid = db.make_user()
    ids = [uuid.uuid4() for _ in range(900)]
    batch = _events(uid, ids + ids[:100])  # 1000 events, 100 duplicates inside the batch
    assert db.rpc("ingest_usage", events=batch) == {"received": 1000, "inserted": 900, "duplicates": 100}
    newer = [uuid.uuid4() for _ in range(500)]
    second = _events(uid, ids[:500] + newer)  # 500 seen in the first batch
    assert db.rpc("ingest_usage", events=second) == {"received": 1000, "inserted": 500, "duplicates": 500}
    assert db.rpc("ingest_usage", events=second)["inserted"] == 0  # a retried batch
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 1400
    assert db.one("select count(distinct event_id) from public.usage_logs where user_id = %s", (uid,)) == 1400


def test_ingest_usage_refuses_bad_batches_whole(db: Sql) -> None:
    uid = db.make_user()
    fails(db, "PT422", "ingest_usage", events=_events(uid, [uuid.uuid4() for _ in range(1001)]))
    fails(db, "PT422", "ingest_usage", events=[])
    fails(db, "PT422", "ingest_usage", events={"event_id": str(uuid.uuid4())})
    stranger = uuid.uuid4()
    mixed = _events(uid, [uuid.uuid4() for _ in range(5)]) + _events(stranger, [uuid.uuid4()])
    err = fails(db, "PT422", "ingest_usage", events=mixed)
    assert err.diag.message_primary == "unknown_user" and str(stranger) in (err.diag.message_detail or "")


# usage_summary and refresh_usage_views --------------------------------------------------------------------


def test_usage_summary_reads_the_rollup_and_the_rows_not_yet_rolled_up(db: Sql) -> None:
    uid, other = db.make_user(balance=1), db.make_user(balance=1)
    today = db.one("select (now() at time zone 'utc')::date")
    two_ago = db.one("select (now() at time zone 'utc')::date - 2")

    def at(days_ago: int) -> str:
        return str(db.one("select (date_trunc('day', now() at time zone 'utc') - make_interval(days => %s)"
                          " + interval '12 hours') at time zone 'utc'", (days_ago,)))

    db.rpc("ingest_usage", events=_events(uid, [uuid.uuid4()], created_at=at(2), cost_usd="0.01")
           + _events(uid, [uuid.uuid4()], created_at=at(3), operation="compile", model="claude-haiku-4-5",
                     cost_usd="0.02", status="failed")
           + _events(other, [uuid.uuid4()], created_at=at(2), cost_usd="5"))
    refreshed = db.rpc("refresh_usage_views")
    assert refreshed["view"] == "daily_usage_rollup" and refreshed["covers_before"] == str(today)
    assert refreshed["rows_rolled_up"] == 3
    assert db.one("select count(*) from private.daily_usage_rollup") == 3
    settle_chat(db, begin(db, uid)["hold_id"])  # not rolled up yet: read live

    start = db.one("select %s::date - 5", (today,))

    def summary(group_by: str = "day") -> dict[str, Any]:
        res: dict[str, Any] = db.rpc("usage_summary", as_role="authenticated", as_user=uid,
                                     **{"from": start, "to": today, "group_by": group_by})
        return res

    by_day = summary()
    assert [(r["key"], r["requests"], r["failures"], D(r["cost_usd"])) for r in by_day["rows"]] == [
        (str(db.one("select %s::date - 3", (today,))), 1, 1, Decimal("0.02")),
        (str(two_ago), 1, 0, Decimal("0.01")),
        (str(today), 1, 0, Decimal("0.0005")),
    ]
    assert by_day["totals"]["requests"] == 3 and D(by_day["totals"]["cost_usd"]) == Decimal("0.0305")
    assert by_day["view_covers_before"] == str(today)
    by_model = summary("model")
    assert {r["key"]: r["requests"] for r in by_model["rows"]} == {"gpt-4o-mini": 1, "claude-haiku-4-5": 1, MODEL: 1}
    by_op = summary("operation")
    assert {r["key"]: D(r["cost_usd"]) for r in by_op["rows"]} == {
        "embed": Decimal("0.01"), "compile": Decimal("0.02"), "chat": Decimal("0.0005")}
    acct = by_day["account"]
    assert (D(acct["balance_usd"]), D(acct["month_spend_usd"]), acct["plan"], acct["status"]) == (
        1 - Decimal("0.0005"), Decimal("0.0005"), "pro", "active")
    assert D(acct["quota_left_usd"]) == Decimal("100") - Decimal("0.0005")
    # The service asking for the user gets the same numbers; the other user's $5 is nowhere.
    assert db.rpc("usage_summary", user_id=uid, **{"from": start, "to": today})["rows"] == by_day["rows"]

    # A late row for a closed day shows at once (read live), and after the next refresh from the rollup,
    # counted once either way.
    db.rpc("ingest_usage", events=_events(uid, [uuid.uuid4()], created_at=at(2), cost_usd="1"))
    assert summary()["totals"]["requests"] == 4
    assert db.rpc("refresh_usage_views")["rows_rolled_up"] == 2  # the chat turn and the late row
    assert summary()["totals"]["requests"] == 4
    assert db.one("select sum(requests) from private.daily_usage_rollup where user_id = %s", (uid,)) == 4
    db.rpc("ingest_usage", events=_events(uid, [uuid.uuid4()]))
    assert summary()["totals"]["requests"] == 5


def test_usage_summary_validates_its_range(db: Sql) -> None:
    uid = db.make_user()
    for args in ({"from": "2026-02-02", "to": "2026-02-01"}, {"from": "2024-01-01", "to": "2026-01-01"},
                 {"from": "2026-01-01", "to": "2026-01-02", "group_by": "user"}):
        fails(db, "PT422", "usage_summary", as_role="authenticated", as_user=uid, **args)
    fails(db, "PT400", "usage_summary", **{"from": "2026-01-01", "to": "2026-01-02"})  # service must name the user
    empty = db.rpc("usage_summary", as_role="authenticated", as_user=uid, **{"from": "2020-01-01",
                                                                              "to": "2020-01-31"})
    assert empty["rows"] == [] and empty["totals"]["requests"] == 0


def test_refresh_usage_views_records_its_run(db: Sql) -> None:
    res = db.rpc("refresh_usage_views")
    row = db.one("select covers_before, duration_ms from private.view_refreshes where view_name = 'daily_usage_rollup'")
    assert str(row["covers_before"]) == res["covers_before"] and row["duration_ms"] == res["duration_ms"] >= 0
    assert db.rpc("refresh_usage_views")["covers_before"] == res["covers_before"]  # again: fine


# API keys --------------------------------------------------------------------------------------------------


def test_api_key_lifecycle(db: Sql) -> None:
    uid = db.make_user()
    created = create_api_key(db, "laptop", uid, as_user=uid)
    key = created["key"]
    assert re.fullmatch(r"sk_[0-9a-f]{12}_[0-9a-f]{64}", key) and key[3:15] == created["prefix"]
    stored = db.one("select * from public.api_keys where id = %s", (created["id"],))
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest() and key not in str(stored)
    second = create_api_key(db, "ci", uid)
    listed = db.rpc("list_api_keys", as_role="authenticated", as_user=uid)
    assert [k["id"] for k in listed] == [second["id"], created["id"]]
    assert all("key" not in k and "key_hash" not in k for k in listed)

    who = db.rpc("authenticate_api_key", key=key)
    assert who == {"user_id": str(uid), "key_id": created["id"], "status": "active",
                   "scopes": ["models", "usage:read"], "expires_at": None}
    assert db.one("select last_used_at from public.api_keys where id = %s", (created["id"],)) is not None

    revoked = db.rpc("revoke_api_key", as_role="authenticated", as_user=uid, key_id=created["id"])
    again = db.rpc("revoke_api_key", key_id=created["id"], user_id=uid)
    assert again["revoked_at"] == revoked["revoked_at"]  # idempotent: the first revocation stands
    assert db.rpc("list_api_keys", user_id=uid)[1]["revoked_at"] == revoked["revoked_at"]
    fails(db, "PT401", "authenticate_api_key", key=key)
    fails(db, "PT404", "revoke_api_key", key_id=uuid.uuid4(), user_id=uid)


def test_authenticate_api_key_refuses_wrong_and_malformed_keys(db: Sql) -> None:
    uid = db.make_user()
    key = create_api_key(db, "k", uid)["key"]
    wrong_secret = key[:16] + ("0" if key[16] != "0" else "1") + key[17:]
    for bad in (wrong_secret, "sk_" + "0" * 12 + "_" + "0" * 64, key + "0", "Bearer " + key, "", None):
        fails(db, "PT401", "authenticate_api_key", key=bad)
    assert db.rpc("authenticate_api_key", key=key)["user_id"] == str(uid)


def test_create_api_key_validates_the_name(db: Sql) -> None:
    uid = db.make_user()
    for name in ("", "x" * 101, None):
        before = snapshot(db)
        with pytest.raises(psycopg.Error) as err:
            create_api_key(db, name, uid)
        assert err.value.sqlstate == "PT422" and snapshot(db) == before


def test_api_key_scopes_and_expiry_are_stored_and_reported(db: Sql) -> None:
    uid = db.make_user()
    usage_only = create_api_key(db, "dash", uid, as_user=uid, scopes=["usage:read", "usage:read"], expires_in_days=7)
    assert usage_only["scopes"] == ["usage:read"]  # duplicates collapse
    expires = datetime.fromisoformat(usage_only["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    dated = create_api_key(db, "ci", uid, scopes=["models"], expires_at=until)
    assert datetime.fromisoformat(dated["expires_at"]) == until and dated["scopes"] == ["models"]
    assert db.rpc("authenticate_api_key", key=dated["key"])["scopes"] == ["models"]

    db.q("update public.api_keys set expires_at = now() - interval '1 second' where id = %s", (dated["id"],))
    err = fails(db, "PT401", "authenticate_api_key", key=dated["key"])
    assert err.diag.message_primary == "api_key_expired"
    statuses = {k["name"]: k["status"] for k in db.rpc("list_api_keys", as_role="authenticated", as_user=uid)}
    assert statuses == {"dash": "active", "ci": "expired"}


@pytest.mark.parametrize("args", [
    {"scopes": []}, {"scopes": ["keys"]}, {"scopes": ["models", "admin"]}, {"scopes": {"models": True}},
    {"scopes": [1]},
    {"expires_in_days": 0}, {"expires_in_days": 3651},
    {"expires_at": "2000-01-01T00:00:00Z"}, {"expires_at": "2999-01-01T00:00:00Z"},
    {"expires_at": "2999-01-01T00:00:00Z", "expires_in_days": 3},
])
def test_create_api_key_refuses_unknown_scopes_and_bad_expiry(db: Sql, args: dict[str, Any]) -> None:
    uid = db.make_user()
    before = snapshot(db)
    with pytest.raises(psycopg.Error) as err:
        create_api_key(db, "k", uid, as_user=uid, **args)
    assert err.value.sqlstate == "PT422" and snapshot(db) == before
    assert err.value.diag.message_primary in {"invalid_scopes", "invalid_expiry"}


# Sessions, messages and history ------------------------------------------------------------------------------


def test_list_sessions_pages_without_gaps_or_duplicates(db: Sql) -> None:
    uid, other = db.make_user(), db.make_user()
    # 25 sessions, in groups of three sharing the same last_message_at (ties broken by id).
    db.q("insert into public.chat_sessions (user_id, title, last_message_at)"
         " select %s, 's' || g, timestamptz '2026-01-01 00:00:00+00' + (g / 3) * interval '1 minute'"
         " from generate_series(1, 25) g", (uid,))
    db.q("insert into public.chat_sessions (user_id, title, deleted_at) values (%s, 'gone', now())", (uid,))
    db.q("insert into public.chat_sessions (user_id, title) values (%s, 'not mine')", (other,))
    expected = [str(r["id"]) for r in db.q(
        "select id from public.chat_sessions where user_id = %s and deleted_at is null"
        " order by last_message_at desc, id desc", (uid,))]
    seen: list[str] = []
    before: dict[str, Any] = {}
    while True:
        page = db.rpc("list_sessions", as_role="authenticated", as_user=uid, limit=4, **before)
        if not page:
            break
        assert len(page) <= 4
        seen += [s["id"] for s in page]
        before = {"before_at": page[-1]["last_message_at"], "before_id": page[-1]["id"]}
    assert seen == expected and len(seen) == 25
    assert len(db.rpc("list_sessions", user_id=uid, limit=1000)) == 25  # clamped to 100, all fit
    fails(db, "PT400", "list_sessions")  # the service must say whose


def test_list_messages_pages_without_gaps_or_duplicates(db: Sql) -> None:
    uid = db.make_user(balance=1)
    session = settle_chat(db, begin(db, uid)["hold_id"])["session_id"]
    db.q("insert into public.chat_messages (session_id, user_id, seq, role, content)"
         " select %s, %s, g, case when g %% 2 = 1 then 'user' else 'assistant' end, 'm' || g"
         " from generate_series(3, 23) g", (session, uid))
    seen: list[int] = []
    before: dict[str, Any] = {}
    while True:
        page = db.rpc("list_messages", as_role="authenticated", as_user=uid, session_id=session, limit=5, **before)
        if not page:
            break
        seen += [m["seq"] for m in page]
        before = {"before_seq": page[-1]["seq"]}
    assert seen == list(range(23, 0, -1))
    fails(db, "PT404", "list_messages", as_role="authenticated", as_user=uid, session_id=uuid.uuid4())


def test_chat_history_keeps_the_newest_messages_within_the_budget(db: Sql) -> None:
    uid = db.make_user(balance=1)
    session = uuid.uuid4()
    db.q("insert into public.chat_sessions (id, user_id) values (%s, %s)", (session, uid))
    db.q("insert into public.chat_messages (session_id, user_id, seq, role, content) values"
         " (%(s)s, %(u)s, 1, 'user', repeat('a', 10)), (%(s)s, %(u)s, 2, 'assistant', repeat('b', 20)),"
         " (%(s)s, %(u)s, 3, 'user', repeat('c', 30)), (%(s)s, %(u)s, 4, 'assistant', repeat('d', 40))",
         {"s": session, "u": uid})

    def history(budget: int) -> list[str]:
        out = db.rpc("chat_history", as_role="authenticated", as_user=uid, session_id=session, max_chars=budget)
        return [m["content"][0] + m["role"][0] for m in out]

    # Whole exchanges only (30 then 70 characters), so the history always starts with a user turn.
    assert history(100) == ["au", "ba", "cu", "da"]
    assert history(99) == ["cu", "da"]
    assert history(70) == ["cu", "da"]
    assert history(69) == []
    assert db.rpc("chat_history", session_id=session, user_id=uid)[0] == {"role": "user", "content": "a" * 10}
    fails(db, "PT404", "chat_history", as_role="authenticated", as_user=uid, session_id=uuid.uuid4())
    assert db.rpc("chat_history", as_role="authenticated", as_user=uid, session_id=uuid.uuid4(),
                  must_exist=False) == []
    db.q("update public.chat_sessions set deleted_at = now() where id = %s", (session,))
    fails(db, "PT404", "chat_history", as_role="authenticated", as_user=uid, session_id=session, must_exist=False)


# Projects --------------------------------------------------------------------------------------------------


def test_save_project_files_inserts_then_overwrites_and_recreates_deleted_paths(db: Sql) -> None:
    uid = db.make_user()
    project = _project(db, uid)

    def save(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = db.rpc("save_project_files", as_role="authenticated", as_user=uid,
                                           project_id=project, files=files)
        return out

    first = save([{"path": "src/a.py", "content": "a = 1"}, {"path": "README.md"}])
    assert [f["path"] for f in first] == ["README.md", "src/a.py"]
    ids = {f["path"]: f["id"] for f in first}
    second = save([{"path": "src/a.py", "content": "a = 2"}])
    assert second[0]["id"] == ids["src/a.py"]
    live = db.q("select path, content from public.project_files where project_id = %s and deleted_at is null"
                " order by path", (project,))
    assert live == [{"path": "README.md", "content": ""}, {"path": "src/a.py", "content": "a = 2"}]

    deleted = db.rpc("delete_project_file", as_role="authenticated", as_user=uid, file_id=ids["src/a.py"])
    assert deleted["id"] == ids["src/a.py"] and deleted["deleted_at"]
    fails(db, "PT404", "delete_project_file", as_role="authenticated", as_user=uid, file_id=ids["src/a.py"])
    again = save([{"path": "src/a.py", "content": "a = 3"}])
    assert again[0]["id"] != ids["src/a.py"]
    rows = db.q("select id, content, deleted_at is not null as gone from public.project_files"
                " where project_id = %s and path = 'src/a.py' order by created_at, gone desc", (project,))
    assert sorted((r["content"], r["gone"]) for r in rows) == [("a = 2", True), ("a = 3", False)]


def test_save_project_files_validates_and_writes_nothing_on_error(db: Sql) -> None:
    uid = db.make_user()
    project = _project(db, uid)
    for files in ([], [{"path": f"f{i}"} for i in range(501)], {"path": "a"}):
        fails(db, "PT422", "save_project_files", as_role="authenticated", as_user=uid, project_id=project,
              files=files)
    fails(db, "PT422", "save_project_files", as_role="authenticated", as_user=uid, project_id=project,
          files=[{"path": "a.py", "content": "1"}, {"path": "b.py"}, {"path": "a.py", "content": "2"}])
    fails(db, "PT404", "save_project_files", as_role="authenticated", as_user=uid, project_id=uuid.uuid4(),
          files=[{"path": "a.py"}])
    db.q("update public.projects set deleted_at = now() where id = %s", (project,))
    fails(db, "PT404", "save_project_files", as_role="authenticated", as_user=uid, project_id=project,
          files=[{"path": "a.py"}])


def test_check_project(db: Sql) -> None:
    uid, other = db.make_user(), db.make_user()
    project = _project(db, uid, "mine")
    assert db.rpc("check_project", as_role="authenticated", as_user=uid, project_id=project) == {
        "id": str(project), "name": "mine"}
    assert db.rpc("check_project", project_id=project, user_id=uid)["name"] == "mine"
    fails(db, "PT404", "check_project", project_id=project, user_id=other)
    fails(db, "PT404", "check_project", as_role="authenticated", as_user=uid, project_id=uuid.uuid4())
    db.q("update public.projects set deleted_at = now() where id = %s", (project,))
    fails(db, "PT404", "check_project", as_role="authenticated", as_user=uid, project_id=project)


# health -------------------------------------------------------------------------------------------------------


def test_health_probe_writes_reads_back_and_keeps_the_table_small(db: Sql) -> None:
    res = db.rpc("health_probe", source="test")
    latest = max(r["version"] for r in db.q("select version from supabase_migrations.schema_migrations"))
    assert res["read_back"] is True and res["latest_migration"] == latest and res["wrote"] >= 1
    with db.acting("service_role") as c:
        c.execute("select public.health_probe('loop') from generate_series(1, 150)")
    assert db.one("select count(*) from private.health_checks") <= 100
