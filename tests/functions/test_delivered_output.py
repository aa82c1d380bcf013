"""Delivered output is never free: once a streamed answer's first delta has gone out, the turn ends charged
for what was delivered (never above the hold), whatever happens next. Real threads and connections
(postgres transport), a slow offline model, and the things a user or the platform can do mid-stream:
leave, delete the session, outlive the hold's expiry, lose the database."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest

from functions import runtime
from functions.db.postgres import PostgresDatabase
from functions.providers import Completion, Delta, Offline
from functions.settings import get_settings
from tests.support.books import books_balance
from tests.support.fnsupport import Api
from tests.support.pg import Sql
from tests.support.pgapi import dead_pool, postgres_api, race, use_pool

PIECES = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "stream."]


@pytest.fixture
def pg_api(fn_env: None, db: Sql, monkeypatch: pytest.MonkeyPatch) -> tuple[Api, PostgresDatabase, Sql]:
    return postgres_api(db, monkeypatch, max_size=16)  # 8 concurrent streams and the other actors


@contextmanager
def connection(url: str) -> Iterator[Sql]:
    """A connection of its own, for another actor (the user's browser, the scheduler)."""
    sql = Sql(url)
    try:
        yield sql
    finally:
        sql.close()


def slow_model(monkeypatch: pytest.MonkeyPatch, pause: float, *, before_done: Any = None) -> None:
    """The offline model, streaming PIECES with a pause before each; `before_done()` (or its awaitable) runs
    before the final message (after every delta was sent)."""

    async def stream(self: Offline, model: str, messages: Any, max_tokens: int) -> AsyncIterator[Delta | Completion]:
        for piece in PIECES:
            await asyncio.sleep(pause)
            yield Delta(piece)
        if before_done is not None:
            done = before_done()
            if inspect.isawaitable(done):
                await done
        yield Completion("".join(PIECES), Offline().completion(model, messages, max_tokens).usage, model, "offline")

    monkeypatch.setattr(Offline, "stream", stream)


def events(response: Any) -> list[tuple[str, Any]]:
    out = []
    for block in response.get_data(as_text=True).split("\n\n"):
        if block.strip():
            name, data = block.split("\n", 1)
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def hold_of(db: Sql, uid: uuid.UUID) -> dict[str, Any]:
    row: dict[str, Any] = db.one("select * from public.holds where user_id = %s", (uid,))
    return row


def charges(db: Sql, uid: uuid.UUID) -> list[Decimal]:
    return [r["amount_usd"] for r in db.q("select amount_usd from public.credit_ledger"
                                          " where user_id = %s and kind = 'charge' order by id", (uid,))]


def test_a_client_that_leaves_after_the_first_delta_is_charged_for_what_it_got(
        pg_api: tuple[Api, PostgresDatabase, Sql], monkeypatch: pytest.MonkeyPatch) -> None:
    api, _, db = pg_api
    slow_model(monkeypatch, 0.01)
    uid = db.make_user(balance=5)
    response = api.stream("chat", {"message": "tell me a story", "stream": True}, user=uid)
    first = (response.next_chunk() or b"").decode()  # read as a server sends it
    assert first.startswith("event: delta") and PIECES[0] in first
    response.disconnect()  # the client went away: Starlette cancels the streaming task
    assert hold_of(db, uid)["status"] == "settled", "the settle did not survive the cancellation"
    hold = hold_of(db, uid)
    assert hold["status"] == "settled" and hold["delivered_chars"] == len(PIECES[0])
    [charge] = charges(db, uid)
    assert 0 < -charge <= hold["amount_usd"]
    answer = db.one("select content, status from public.chat_messages where user_id = %s and role = 'assistant'",
                    (uid,))
    assert answer == {"content": PIECES[0], "status": "partial"}
    books_balance(db, uid)


def test_a_client_that_stops_reading_then_leaves_is_charged_for_what_was_sent(
        pg_api: tuple[Api, PostgresDatabase, Sql], monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is blocked sending the second delta when the client leaves: the cancellation lands outside
    the stream's generator (suspended at a yield), and the response closes it, so it still settles."""
    api, _, db = pg_api
    slow_model(monkeypatch, 0.0)
    uid = db.make_user(balance=5)
    response = api.stream("chat", {"message": "tell me a story", "stream": True}, user=uid, stall_after=1)
    assert PIECES[0] in (response.next_chunk() or b"").decode()
    response.disconnect()
    hold = hold_of(db, uid)
    assert hold["status"] == "settled", "the suspended stream was never closed, so never settled"
    delivered = db.one("select content from public.chat_messages where user_id = %s and role = 'assistant'", (uid,))
    assert delivered.startswith(PIECES[0]) and len(charges(db, uid)) == 1
    books_balance(db, uid)


def test_a_client_that_closes_its_connection_to_uvicorn_is_charged_for_what_it_got(
        fn_env: None, db: Sql, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole way, as deployed: uvicorn, a real socket closed by the client after the first delta."""
    import httpx

    from tests.support import fnsupport
    from tests.support.served import served_functions

    runtime.install(PostgresDatabase(db.url, max_size=4))
    slow_model(monkeypatch, 0.2)
    uid = db.make_user(balance=5)
    with served_functions() as url:
        with httpx.Client(timeout=30) as client, client.stream(
                "POST", f"{url}/chat", json={"message": "tell me a story", "stream": True},
                headers={"Authorization": f"Bearer {fnsupport.token(uid)}"}) as answer:
            first = next(answer.iter_text())
            assert first.startswith("event: delta") and PIECES[0] in first
        deadline = time.monotonic() + 20
        while hold_of(db, uid)["status"] == "open" and time.monotonic() < deadline:
            time.sleep(0.05)
    hold = hold_of(db, uid)
    assert hold["status"] == "settled" and hold["delivered_chars"] < len("".join(PIECES))
    answer_row = db.one("select content, status from public.chat_messages where user_id = %s and role = 'assistant'",
                        (uid,))
    assert answer_row["status"] == "partial" and answer_row["content"].startswith(PIECES[0])
    assert len(charges(db, uid)) == 1
    books_balance(db, uid)


def test_deleting_the_session_mid_stream_never_makes_an_answer_free(
        pg_api: tuple[Api, PostgresDatabase, Sql], monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack from the issue: soft-delete your own session (RLS allows it) while answers stream, racing
    the settles. Every stream that got a delta is charged once, its turn saved in the (deleted) session."""
    api, _, db = pg_api
    uid = db.make_user(balance=5)
    session = api.post("chat", {"message": "start"}, user=uid).json["session_id"]
    slow_model(monkeypatch, 0.05)
    streams = 8

    def delete_once_all_are_streaming() -> None:
        """The user, through the API role, as soon as every stream has delivered something."""
        with connection(db.url) as watcher:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and watcher.one(
                    "select count(*) from public.holds where user_id = %s and delivered_chars > 0"
                    " and status = 'open'", (uid,)) < streams:
                time.sleep(0.005)
            with watcher.acting("authenticated", uid) as conn:
                conn.execute("update public.chat_sessions set deleted_at = now() where id = %s", (session,))

    deleter = threading.Thread(target=delete_once_all_are_streaming)
    deleter.start()
    results = race(streams, lambda i: events(api.post(
        "chat", {"message": f"stream {i}", "session_id": session, "stream": True}, user=uid)))
    deleter.join()
    deleted_at = db.one("select deleted_at from public.chat_sessions where id = %s", (session,))
    assert deleted_at is not None
    assert all(r[-1][0] == "done" and r[-1][1]["content"] == "".join(PIECES) for r in results), results
    # The race is real: answers were settled after the session was gone.
    assert db.one("select count(*) from public.chat_messages where session_id = %s and role = 'assistant'"
                  " and created_at > %s", (session, deleted_at)) > 0
    assert len(charges(db, uid)) == 1 + streams  # the first turn, then one charge per stream, none free
    assert db.one("select count(*) from public.chat_messages where session_id = %s", (session,)) == 2 * (1 + streams)
    assert db.one("select count(*) from public.holds where user_id = %s and status <> 'settled'", (uid,)) == 0
    books_balance(db, uid)


def test_a_stream_that_reports_progress_outlives_the_hold_expiry(
        pg_api: tuple[Api, PostgresDatabase, Sql], monkeypatch: pytest.MonkeyPatch) -> None:
    """A live stream keeps its hold alive (HOLD_HEARTBEAT_SECONDS), however often the expiry runs."""
    api, _, db = pg_api
    monkeypatch.setenv("HOLD_HEARTBEAT_SECONDS", "0.2")
    get_settings.cache_clear()
    slow_model(monkeypatch, 0.25)  # 2 s in all, expiry of holds older than 1 s running all along
    uid = db.make_user(balance=5)
    stop = threading.Event()
    expired: list[int] = []

    def expiry() -> None:
        with connection(db.url) as scheduler:
            while not stop.is_set():
                expired.append(scheduler.rpc("expire_stale_holds", older_than_seconds=1)["expired"])
                time.sleep(0.1)

    scheduler = threading.Thread(target=expiry)
    scheduler.start()
    try:
        out = events(api.post("chat", {"message": "a long one", "stream": True}, user=uid))
    finally:
        stop.set()
        scheduler.join()
    assert len(expired) > 10 and sum(expired) == 0
    assert out[-1][0] == "done" and out[-1][1]["partial"] is False
    assert hold_of(db, uid)["status"] == "settled" and len(charges(db, uid)) == 1
    books_balance(db, uid)


def test_a_stream_whose_hold_expires_anyway_is_charged_for_what_was_delivered(
        pg_api: tuple[Api, PostgresDatabase, Sql], monkeypatch: pytest.MonkeyPatch) -> None:
    """No progress reports after the first delta (heartbeat far away): the expiry closes the hold mid-stream,
    and charges the delivery on record instead of releasing it."""
    api, _, db = pg_api
    uid = db.make_user(balance=5)

    def expire_now() -> None:
        db.q("update public.holds set last_seen_at = now() - interval '1 hour' where user_id = %s", (uid,))
        assert db.rpc("expire_stale_holds", older_than_seconds=60)["charged"] == 1

    slow_model(monkeypatch, 0.0, before_done=expire_now)
    out = events(api.post("chat", {"message": "expire me", "stream": True}, user=uid))
    assert [name for name, _ in out][-1] == "error" and out[-1][1]["code"] == "hold_closed"
    hold = hold_of(db, uid)
    assert hold["status"] == "expired" and hold["result"]["error_code"] == "hold_expired_after_delivery"
    [charge] = charges(db, uid)
    assert 0 < -charge == hold["charged_usd"] <= hold["amount_usd"]
    usage = db.one("select status, error_code, output_tokens from public.usage_logs where hold_id = %s", (hold["id"],))
    assert usage["status"] == "succeeded" and usage["output_tokens"] > 0
    books_balance(db, uid)


def test_the_database_lost_after_the_text_was_delivered_is_charged_by_the_expiry(
        pg_api: tuple[Api, PostgresDatabase, Sql], monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Every delta went out, then the database became unreachable (every connection killed, no new one
    possible) past the retries: the hold stays open with its delivery on record, and the scheduled expiry
    charges it once the database is back."""
    api, database, db = pg_api
    uid = db.make_user(balance=5)
    live = api.run(database.pools.get())
    broken: list[Any] = []

    async def lose_the_database() -> None:
        db.q("select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database()"
             " and pid <> pg_backend_pid()")
        broken.append(await dead_pool(tmp_path))
        database.pools.replace(broken[0])

    slow_model(monkeypatch, 0.0, before_done=lose_the_database)
    try:
        out = events(api.post("chat", {"message": "then the lights went out", "stream": True}, user=uid))
    finally:
        use_pool(api, database, live)
        for pool in broken:
            api.run(pool.close())
    assert [name for name, _ in out] == ["delta"] * len(PIECES) + ["error"]
    assert out[-1][1]["code"] == "database_unavailable"
    hold = hold_of(db, uid)
    assert hold["status"] == "open" and hold["delivered_chars"] >= len(PIECES[0]) and charges(db, uid) == []
    db.q("update public.holds set last_seen_at = now() - interval '1 hour' where id = %s", (hold["id"],))
    assert db.rpc("expire_stale_holds", older_than_seconds=60) == {"expired": 1, "charged": 1,
                                                                  "hold_ids": [str(hold["id"])]}
    [charge] = charges(db, uid)
    assert 0 < -charge <= hold["amount_usd"]
    assert db.rpc("expire_stale_holds", older_than_seconds=60)["expired"] == 0  # charged once
    books_balance(db, uid)
