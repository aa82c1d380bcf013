"""Faults: the database unreachable before or after the model call, a connection killed mid-settle."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from functions.db.postgres import PostgresDatabase
from functions.providers import Offline
from tests.support.fnsupport import Api
from tests.support.pg import Sql
from tests.support.pgapi import dead_pool, postgres_api, use_pool


@pytest.fixture
def pg(fn_env: None, db: Sql, monkeypatch: pytest.MonkeyPatch) -> tuple[Api, PostgresDatabase, Sql]:
    return postgres_api(db, monkeypatch, max_size=4)


def test_database_down_before_the_model_call_is_503_and_the_model_is_never_called(
    pg: tuple[Api, PostgresDatabase, Sql], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    api, database, db = pg
    uid = db.make_user(balance=5)
    calls: list[str] = []
    async def never(*a: Any, **k: Any) -> None:
        calls.append("called")

    monkeypatch.setattr(Offline, "complete", never)
    broken = api.run(dead_pool(tmp_path))
    live = use_pool(api, database, broken)
    try:
        r = api.post("chat", {"message": "hello"}, user=uid)
    finally:
        use_pool(api, database, live)
        api.run(broken.close())
    assert r.status_code == 503 and r.json["error"]["code"] == "database_unavailable"
    assert calls == []
    assert db.one("select count(*) from public.holds where user_id = %s", (uid,)) == 0


def test_database_down_after_the_model_call_keeps_the_hold_for_expiry_and_never_charges_twice(
    pg: tuple[Api, PostgresDatabase, Sql], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    api, database, db = pg
    uid = db.make_user(balance=5)
    real = Offline.complete
    live = api.run(database.pools.get())
    attempts: list[float] = []
    broken_pools: list[AsyncConnectionPool] = []

    async def model_then_outage(self: Offline, *args: Any) -> Any:
        answer = await real(self, *args)
        broken = await dead_pool(tmp_path)
        broken_pools.append(broken)
        original = broken.connection

        def counting(*a: Any, **k: Any) -> Any:
            attempts.append(time.monotonic())
            return original(*a, **k)

        broken.connection = counting  # type: ignore[method-assign]
        database.pools.replace(broken)
        return answer

    monkeypatch.setattr(Offline, "complete", model_then_outage)
    body = {"message": "hello", "client_message_id": "retry-me"}
    r = api.post("chat", body, user=uid)
    assert r.status_code == 503
    assert len(attempts) == 3  # settle: 3 bounded attempts, then 503; the hold is left for the expiry
    hold = db.one("select status, amount_usd from public.holds where user_id = %s", (uid,))
    assert hold["status"] == "open"
    assert db.one("select held_usd from public.billing_accounts where user_id = %s", (uid,)) == hold["amount_usd"]

    use_pool(api, database, live)  # the database is back; the client retries with the same id
    for pool in broken_pools:
        api.run(pool.close())
    monkeypatch.setattr(Offline, "complete", real)
    again = api.post("chat", body, user=uid)
    assert again.status_code == 409 and again.json["error"]["code"] == "request_in_progress"

    db.q("update public.holds set last_seen_at = now() - interval '1 hour' where user_id = %s", (uid,))
    assert api.service("refresh_views").json["expired_holds"]["expired"] == 1
    after = api.post("chat", body, user=uid)
    assert after.status_code == 409 and after.json["error"]["code"] == "request_failed"
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == 0
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 0
    assert db.one("select held_usd from public.billing_accounts where user_id = %s", (uid,)) == 0


def test_connection_killed_in_the_middle_of_a_settle_leaves_nothing_half_written(
    pg: tuple[Api, PostgresDatabase, Sql]
) -> None:
    api, _database, db = pg
    uid = db.make_user(balance=5)
    # Slow the assistant message insert down so there is a settle in flight to kill.
    db.q("""
        create function public.test_slow_insert() returns trigger language plpgsql as $$
        begin
          if new.role = 'assistant' then perform pg_sleep(0.4); end if;
          return new;
        end $$;
        create trigger test_slow_insert before insert on public.chat_messages
          for each row execute function public.test_slow_insert();
    """)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 10
        while not killed and time.monotonic() < deadline:
            rows = db.q("select pid from pg_stat_activity where query like '%%settle_chat_turn%%' "
                        "and state = 'active' and pid <> pg_backend_pid()")
            for row in rows:
                if db.one("select pg_terminate_backend(%s)", (row["pid"],)):
                    killed.append(row["pid"])
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    r = api.post("chat", {"message": "survive the kill"}, user=uid)
    thread.join()
    assert killed, "no settle was killed: the test did not test anything"
    # The killed transaction rolled back whole; the transport retried the idempotent settle once more.
    assert r.status_code == 200, r.json
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 2
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 1
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == 1
    acct = db.one("select balance_usd, held_usd from public.billing_accounts where user_id = %s", (uid,))
    assert acct["held_usd"] == 0
    assert acct["balance_usd"] == db.one("select sum(amount_usd) from public.credit_ledger where user_id = %s", (uid,))
