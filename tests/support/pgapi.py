"""The functions over the postgres transport with a real pool, for the race, fault and delivered-output
tests: a pool of a chosen size, a dead pool swapped in on the app's loop, requests started together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from functions import runtime
from functions.db.postgres import PostgresDatabase
from tests.support.fnsupport import Api
from tests.support.pg import Sql


def postgres_api(db: Sql, monkeypatch: pytest.MonkeyPatch, *, max_size: int) -> tuple[Api, PostgresDatabase, Sql]:
    """The functions over the postgres transport with a pool of `max_size`, retries kept short."""
    monkeypatch.setenv("REPLAY_WAIT_SECONDS", "0.3")
    runtime.reset()
    database = PostgresDatabase(db.url, max_size=max_size)
    runtime.install(database)
    return Api("postgres"), database, db


async def dead_pool(tmp_path: Any) -> AsyncConnectionPool:
    """A pool whose every connection attempt fails (no server at that socket), opened on the running loop."""
    pool = AsyncConnectionPool(f"postgresql://postgres@/postgres?host={tmp_path}", min_size=0, max_size=1,
                               timeout=0.5, kwargs={"connect_timeout": 1}, open=False)
    await pool.open()
    return pool


def use_pool(api: Api, database: PostgresDatabase, pool: AsyncConnectionPool | None) -> AsyncConnectionPool:
    """Make `pool` the database's pool on the Api's loop (None: a dead one); returns the one it replaced."""

    async def swap() -> AsyncConnectionPool:
        live = await database.pools.get()
        database.pools.replace(pool)
        return live

    assert pool is not None
    return api.run(swap())


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results
