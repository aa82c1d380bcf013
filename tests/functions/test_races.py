"""The billing invariants under real concurrency, through the chat function: real threads, real
connections (postgres transport, pool of 16), real locks in the database."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from functions import runtime
from functions.chat import SYSTEM_PROMPT
from functions.db.postgres import PostgresDatabase
from functions.providers import Offline
from tests.support.books import books_balance
from tests.support.fnsupport import Api
from tests.support.pg import Sql
from tests.support.pgapi import race

MESSAGE = "race me"


@pytest.fixture
def pg_api(fn_env: None, db: Sql) -> Api:
    runtime.install(PostgresDatabase(db.url, max_size=16))
    client = Api("postgres")
    client.db = db  # type: ignore[attr-defined]
    return client


def exact_price_model(db: Sql) -> tuple[int, Decimal]:
    """A model whose worst-case hold equals the real charge of one turn: input is free, and max_tokens
    is exactly the number of output tokens the offline model produces for MESSAGE."""
    done = Offline().completion("race-model", [{"role": "system", "content": SYSTEM_PROMPT},
                                             {"role": "user", "content": MESSAGE}], 1000)
    db.q("insert into public.model_prices (model, provider, input_usd_per_mtok, output_usd_per_mtok, "
         "max_output_tokens) values ('race-model', 'offline', 0, 1000, 4096)")
    return done.usage.output_tokens, Decimal(done.usage.output_tokens) * 1000 / 1_000_000


def test_50_concurrent_turns_on_a_balance_for_10(pg_api: Api) -> None:
    db: Sql = pg_api.db  # type: ignore[attr-defined]
    max_tokens, per_turn = exact_price_model(db)
    uid = db.make_user(balance=float(per_turn * 10))
    results = race(50, lambda i: pg_api.post("chat", {"message": MESSAGE, "model": "race-model",
                                                      "max_tokens": max_tokens}, user=uid))
    statuses = Counter(r.status_code for r in results)
    assert statuses[200] == 10, statuses
    assert statuses[402] == 40, statuses
    acct = books_balance(db, uid)
    assert acct["balance_usd"] == 0
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 20
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 10


def test_same_request_id_20_times_at_once_is_one_turn_one_charge_same_answer(pg_api: Api) -> None:
    db: Sql = pg_api.db  # type: ignore[attr-defined]
    uid = db.make_user(balance=5)
    body = {"message": "only once", "client_message_id": f"dup-{uuid.uuid4()}"}
    results = race(20, lambda i: pg_api.post("chat", body, user=uid))
    assert {r.status_code for r in results} == {200}
    assert len({r.json["message_id"] for r in results}) == 1
    assert sum(1 for r in results if not r.json["replay"]) == 1
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 2
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == 1
    books_balance(db, uid)


def test_monthly_quota_raced_is_never_exceeded(pg_api: Api) -> None:
    db: Sql = pg_api.db  # type: ignore[attr-defined]
    max_tokens, per_turn = exact_price_model(db)
    db.q("insert into public.plans (id, name, monthly_quota_usd, requests_per_minute) "
         "values ('tiny', 'Tiny', %s, 1000)", (per_turn * 7,))
    uid = db.make_user(balance=100, plan="tiny")
    results = race(30, lambda i: pg_api.post("chat", {"message": MESSAGE, "model": "race-model",
                                                      "max_tokens": max_tokens}, user=uid))
    statuses = Counter(r.status_code for r in results)
    assert statuses[200] == 7, statuses
    assert {r.json["error"]["code"] for r in results if r.status_code == 402} == {"quota_exceeded"}
    acct = books_balance(db, uid)
    assert acct["month_spend_usd"] == per_turn * 7


def test_hold_expiring_while_its_settle_is_in_flight_is_never_charged(pg_api: Api, monkeypatch: Any) -> None:
    """The scheduler expires the hold while the model is answering: the settle finds it closed (409),
    nothing is saved or charged; a turn whose settle wins is charged once and the expiry skips it."""
    db: Sql = pg_api.db  # type: ignore[attr-defined]
    uid = db.make_user(balance=5)
    real = Offline.complete

    async def slow_model(self: Offline, model: str, messages: Any, max_tokens: int) -> Any:
        db.q("update public.holds set last_seen_at = now() - interval '1 hour' where user_id = %s and status = 'open'",
             (uid,))
        assert (await pg_api.aservice("refresh_views")).json["expired_holds"]["expired"] == 1
        return await real(self, model, messages, max_tokens)

    monkeypatch.setattr(Offline, "complete", slow_model)
    r = pg_api.post("chat", {"message": "too slow"}, user=uid)
    assert r.status_code == 409 and r.json["error"]["code"] == "hold_closed"
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 0
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == 0
    assert db.one("select status from public.holds where user_id = %s", (uid,)) == "expired"
    books_balance(db, uid)


def test_expiry_racing_many_settles_charges_each_turn_at_most_once(pg_api: Api) -> None:
    db: Sql = pg_api.db  # type: ignore[attr-defined]
    uid = db.make_user(balance=5)
    stop = threading.Event()

    def expire_loop() -> None:
        scheduler = Sql(db.url)
        while not stop.is_set():
            scheduler.q("update public.holds set last_seen_at = now() - interval '1 hour' where status = 'open'")
            scheduler.rpc("expire_stale_holds", older_than_seconds=60)
        scheduler.close()

    expirer = threading.Thread(target=expire_loop)
    expirer.start()
    try:
        results = race(16, lambda i: pg_api.post("chat", {"message": f"m{i}"}, user=uid))
    finally:
        stop.set()
        expirer.join()
    statuses = Counter(r.status_code for r in results)
    assert set(statuses) <= {200, 409}, statuses
    assert statuses[409] > 0, "the expiry never won a race: the test did not test anything"
    holds = Counter(row["status"] for row in db.q("select status from public.holds where user_id = %s", (uid,)))
    assert holds["settled"] == statuses[200] and holds["expired"] == statuses[409]
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == \
        statuses[200]
    assert db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 2 * statuses[200]
    books_balance(db, uid)
