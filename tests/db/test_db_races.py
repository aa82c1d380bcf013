"""The billing invariants under real concurrency at the SQL level: real threads, each with its own
connection, calling the RPCs as `service_role` the way PostgREST would, started together by a barrier."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from functions.db import as_sql_literal
from tests.support.books import check_books
from tests.support.pg import Sql

HOLD = Decimal("0.002")  # worst case of prompt_chars=1000, max_output_tokens=500 on offline-dev ($1 / $2 per Mtok)
SERVICE_CLAIMS = json.dumps({"role": "service_role"})


def call(conn: psycopg.Connection[Any], name: str, **args: Any) -> Any:
    """One RPC in one transaction as service_role; returns its result or raises psycopg.Error."""
    named = ", ".join(f"p_{k} => %s" for k in args)
    with conn.transaction():
        conn.execute("set local role service_role")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (SERVICE_CLAIMS,))
        row = conn.execute(f"select public.{name}({named})", [as_sql_literal(v) for v in args.values()]).fetchone()
    assert row is not None
    return row[0]


def race(url: str, n: int, work: Callable[[psycopg.Connection[Any], int], Any]) -> list[Any]:
    """Run work(conn, i) in n threads, each on its own connection, released at once by a barrier.
    A database error becomes its SQLSTATE in the result list; anything else fails the test."""
    barrier = threading.Barrier(n, timeout=60)
    results: list[Any] = [None] * n
    crashes: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                barrier.wait()
                try:
                    results[i] = work(conn, i)
                except psycopg.Error as exc:
                    results[i] = exc.sqlstate
        except BaseException as exc:
            crashes.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not crashes, crashes
    return results


def charge_turn(conn: psycopg.Connection[Any], uid: uuid.UUID, request_id: str, *, input_tokens: int = 1000,
                output_tokens: int = 500) -> dict[str, Any]:
    """begin_charge then settle_chat_turn, as the chat function does (defaults: cost == the hold)."""
    hold = call(conn, "begin_charge", user_id=uid, request_id=request_id, operation="chat", model="offline-dev",
                prompt_chars=1000, max_output_tokens=500)
    turn = call(conn, "settle_chat_turn", hold_id=hold["hold_id"], user_message="race",
                assistant_message="done", input_tokens=input_tokens, output_tokens=output_tokens)
    return {"hold": hold, "turn": turn}


@pytest.fixture(autouse=True)
def _books_balance_after_each_race(db: Sql) -> Iterator[None]:
    yield
    check_books(db)


def test_concurrent_charges_never_overdraw(db: Sql) -> None:
    uid = db.make_user(balance=float(10 * HOLD))  # exactly ten worst-case holds
    results = race(db.url, 50, lambda conn, i: charge_turn(conn, uid, f"r-{i}"))
    wins = [r for r in results if isinstance(r, dict)]
    assert Counter(r for r in results if not isinstance(r, dict)) == {"PT402": 40}
    assert len(wins) == 10  # cost == hold, so the available credit only ever shrinks by whole holds
    acct = db.one("select balance_usd, held_usd, month_spend_usd from public.billing_accounts where user_id = %s",
                  (uid,))
    assert acct == {"balance_usd": 0, "held_usd": 0, "month_spend_usd": 10 * HOLD}
    assert db.one("select count(*) from public.usage_logs where user_id = %s and status = 'succeeded'", (uid,)) == 10
    assert db.one("select count(*) from public.holds where user_id = %s", (uid,)) == 10
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 20
    assert db.one("select min(balance_after) from public.credit_ledger where user_id = %s", (uid,)) == 0


def test_the_same_request_sent_twenty_times_at_once_is_charged_once(db: Sql) -> None:
    uid = db.make_user(balance=1)
    results = race(db.url, 20, lambda conn, i: charge_turn(conn, uid, "one-request"))
    assert all(isinstance(r, dict) for r in results), results
    assert len({r["hold"]["hold_id"] for r in results}) == 1
    assert sorted(r["hold"]["replay"] for r in results) == [False] + [True] * 19
    turns = {json.dumps({k: v for k, v in r["turn"].items() if k != "replay"}, sort_keys=True) for r in results}
    assert len(turns) == 1  # every caller got the same turn: same session, messages, usage row
    assert sum(not r["turn"]["replay"] for r in results) == 1
    assert db.one("select count(*) from public.holds where user_id = %s", (uid,)) == 1
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == 1
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 1
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 2
    assert db.one("select balance_usd from public.billing_accounts where user_id = %s", (uid,)) == 1 - HOLD


@pytest.mark.parametrize("output_tokens", [500, 100], ids=["cost-equals-hold", "cost-below-hold"])
def test_concurrent_charges_never_exceed_the_monthly_quota(db: Sql, output_tokens: int) -> None:
    db.q("insert into public.plans (id, name, monthly_quota_usd, requests_per_minute) values"
         " ('racer', 'Racer', %s, 1000)", (10 * HOLD,))
    uid = db.make_user(balance=10, plan="racer")
    results = race(db.url, 50, lambda conn, i: charge_turn(conn, uid, f"q-{i}", output_tokens=output_tokens))
    wins = [r for r in results if isinstance(r, dict)]
    assert {r for r in results if not isinstance(r, dict)} == {"PT402"}
    spend = db.one("select month_spend_usd from public.billing_accounts where user_id = %s", (uid,))
    assert spend <= 10 * HOLD
    assert spend == sum(Decimal(str(w["turn"]["cost_usd"])) for w in wins)
    if output_tokens == 500:
        assert len(wins) == 10
    else:  # cheaper turns leave room for more, but never past the quota
        assert len(wins) >= 10
    assert db.one("select held_usd from public.billing_accounts where user_id = %s", (uid,)) == 0


def test_expiry_racing_settles_closes_each_hold_exactly_once(db: Sql) -> None:
    users = [db.make_user(balance=1) for _ in range(2)]
    holds = []
    with db.acting("service_role") as c:
        for uid in users:
            for i in range(10):
                holds.append(c.execute(
                    "select public.begin_charge(%s, %s, 'chat', 'offline-dev', 1000, 500) ->> 'hold_id' as id",
                    (uid, f"old-{i}")).fetchone()["id"])
    db.q("update public.holds set created_at = now() - interval '1 hour', last_seen_at = now() - interval '1 hour'")
    expirers = 5

    def work(conn: psycopg.Connection[Any], i: int) -> Any:
        if i < expirers:
            return call(conn, "expire_stale_holds", older_than_seconds=900)
        return call(conn, "settle_chat_turn", hold_id=holds[i - expirers], user_message="late",
                    assistant_message="answer", input_tokens=1000, output_tokens=500)

    results = race(db.url, expirers + len(holds), work)
    assert all(isinstance(r, dict) for r in results[:expirers]), results[:expirers]
    expired_lists = [r["hold_ids"] for r in results[:expirers]]
    expired = [h for ids in expired_lists for h in ids]
    assert len(expired) == len(set(expired))  # no hold expired twice
    settled = {holds[i] for i, r in enumerate(results[expirers:]) if isinstance(r, dict)}
    refused = {holds[i] for i, r in enumerate(results[expirers:]) if r == "PT409"}
    assert settled | refused == set(holds) and not settled & refused
    assert set(expired) == refused and not settled & set(expired)
    status = {str(r["id"]): r["status"] for r in db.q("select id, status from public.holds")}
    assert {h: status[h] for h in settled} == dict.fromkeys(settled, "settled")
    assert {h: status[h] for h in refused} == dict.fromkeys(refused, "expired")
    charged = db.one("select count(*) from public.credit_ledger where kind = 'charge'")
    assert charged == len(settled)
    assert db.one("select sum(held_usd) from public.billing_accounts where user_id = any(%s)", (users,)) == 0
