"""2. Database-only chat turns: begin_chat_turn + settle_chat_turn (a turn's two round trips, no HTTP, no
model) per second on ONE hot user from 8 concurrent clients, against a single-row update of the same billing
row at the same concurrency (the commit floor).

Each client has its own connection and its own event loop. The pairs go through the async
`PostgresDatabase.rpc` (one pool of one connection per client), exactly as the functions call them:
one transaction per RPC, as service_role with PostgREST's claims. The floor is the cheapest write that
takes the same row lock: one autocommit
UPDATE of the hot row. Both sides run in alternating rounds; counts and times are summed.

A second, diagnostic scenario runs the same with each client on its own user (no shared row), which
separates the cost of the hot row's lock from the cost of a pair itself.

What the ratio can reach: a pair is two transactions (two commits, so 0.5 is the most a commit-bound pair
could reach) of about ten row writes, their index entries, foreign-key checks and triggers, against one HOT
update. Postgres CPU per pair and per floor update, and this process's CPU per pair (the client), are in the
details (`postgres_cpu_ms`, `client_cpu_ms`): where the machine's cores are the limit, as on a shared
2-core machine, turns/s cannot exceed cores / (CPU per pair), whatever the locks do.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.common import (
    BENCH_MODEL,
    BenchDatabase,
    Result,
    bench_database,
    log,
    percentile,
    process_tree_cpu,
    run_released,
)
from functions.db import SERVICE
from functions.db.postgres import PostgresDatabase

TARGET_RATIO = 0.5
CLIENTS = 8
FLOOR_SQL = "update public.billing_accounts set balance_usd = balance_usd - 0.000001 where user_id = %s"


@dataclass(frozen=True)
class Scale:
    pairs_per_client: int
    updates_per_client: int
    rounds: int


FULL = Scale(pairs_per_client=100, updates_per_client=500, rounds=3)
QUICK = Scale(pairs_per_client=15, updates_per_client=60, rounds=1)


@dataclass
class Tally:
    operations: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] | None = None
    postgres_cpu: float = 0.0
    client_cpu: float = 0.0

    def add(self, operations: int, seconds: float, latencies: list[float], postgres_cpu: float = 0.0,
            client_cpu: float = 0.0) -> None:
        self.operations += operations
        self.seconds += seconds
        self.latencies_ms = (self.latencies_ms or []) + latencies
        self.postgres_cpu += postgres_cpu
        self.client_cpu += client_cpu

    @property
    def rate(self) -> float:
        return self.operations / self.seconds

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms or [0.0]
        return {"operations": self.operations, "seconds": round(self.seconds, 3), "per_second": round(self.rate, 1),
                "p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3),
                "postgres_cpu_ms": round(self.postgres_cpu * 1000 / max(self.operations, 1), 3),
                "client_cpu_ms": round(self.client_cpu * 1000 / max(self.operations, 1), 3)}


def concurrently(workers: list[Callable[[], None]], count: int) -> tuple[float, list[float]]:
    """Run each worker `count` times in its own thread, all released together; (seconds, latencies)."""
    barrier = threading.Barrier(len(workers) + 1)
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def loop(work: Callable[[], None]) -> None:
        mine: list[float] = []
        barrier.wait()
        try:
            for _ in range(count):
                t0 = time.perf_counter()
                work()
                mine.append((time.perf_counter() - t0) * 1000)
        except BaseException as exc:
            failures.append(exc)
        with lock:
            latencies.extend(mine)

    seconds = run_released([threading.Thread(target=loop, args=(w,), daemon=True) for w in workers], barrier)
    if failures:
        raise RuntimeError(f"{len(failures)} clients failed") from failures[0]
    return seconds, latencies


def pair_worker(database: PostgresDatabase, loop: asyncio.AbstractEventLoop,
                user_id: uuid.UUID) -> Callable[[], None]:
    """One chat turn's database work as the chat function does it (same RPCs, same arguments), minus the model
    call; on this client's own event loop."""

    async def turn() -> None:
        hold = await database.rpc("begin_chat_turn", {
            "user_id": user_id, "request_id": str(uuid.uuid4()), "model": BENCH_MODEL, "provider": "openai",
            "fixed_chars": 120, "max_output_tokens": 256, "history_max_chars": 24000}, SERVICE)
        await database.rpc("settle_chat_turn", {
            "hold_id": hold["hold_id"], "latency_ms": 1, "user_message": "How do I reverse a list?",
            "assistant_message": "Use reversed(xs) or xs[::-1].", "input_tokens": 30, "cached_input_tokens": 0,
            "cache_write_tokens": 0, "output_tokens": 12, "reasoning_tokens": 0, "client_message_id": None,
            "partial": False}, SERVICE)

    def work() -> None:
        loop.run_until_complete(turn())

    return work


def update_worker(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> Callable[[], None]:
    def work() -> None:
        conn.execute(FLOOR_SQL, (user_id,))

    return work


@dataclass
class Scenario:
    """Pairs and floor updates from CLIENTS connections, client i working on users[i % len(users)]."""

    label: str
    users: list[uuid.UUID]
    pairs: list[Callable[[], None]]
    updates: list[Callable[[], None]]
    pair_tally: Tally = field(default_factory=Tally)
    floor_tally: Tally = field(default_factory=Tally)
    pair_rounds: list[float] = field(default_factory=list)

    def round(self, scale: Scale, db: BenchDatabase) -> None:
        for tally, workers, count in ((self.floor_tally, self.updates, scale.updates_per_client),
                                      (self.pair_tally, self.pairs, scale.pairs_per_client)):
            postgres, client = process_tree_cpu(db.postmaster()), time.process_time()
            seconds, lat = concurrently(workers, count)
            tally.add(CLIENTS * count, seconds, lat, process_tree_cpu(db.postmaster()) - postgres,
                      time.process_time() - client)
        self.pair_rounds.append(round(CLIENTS * scale.pairs_per_client / seconds, 1))  # this round's pairs

    @property
    def ratio(self) -> float:
        return self.pair_tally.rate / self.floor_tally.rate

    def details(self) -> dict[str, Any]:
        return {"clients": CLIENTS, "users": len(self.users), "pairs": self.pair_tally.summary(),
                "pairs_per_second_by_round": self.pair_rounds, "floor_updates": self.floor_tally.summary(),
                "transactions_per_pair": 2}


def run(quick: bool) -> list[Result]:
    scale = QUICK if quick else FULL
    with bench_database("billing") as db:
        users = db.create_users(1 + CLIENTS, prefix="billing", balance_usd=1_000_000)
        databases = [PostgresDatabase(db.url, min_size=1, max_size=1) for _ in range(CLIENTS)]
        loops = [asyncio.new_event_loop() for _ in range(CLIENTS)]
        connections = [db.connect() for _ in range(CLIENTS)]
        try:
            scenarios = []
            for label, group in (("hot", users[:1]), ("spread", users[1:])):
                pairs = [pair_worker(d, loops[i], group[i % len(group)]) for i, d in enumerate(databases)]
                updates = [update_worker(c, group[i % len(group)]) for i, c in enumerate(connections)]
                concurrently(pairs, 3)  # warm up: pools open, plans cached
                concurrently(updates, 3)
                scenarios.append(Scenario(label, group, pairs, updates))
            hot, spread = scenarios
            for round_no in range(scale.rounds):  # alternate so drift in the machine's load hits every side
                for scenario in scenarios:
                    scenario.round(scale, db)
                log(f"round {round_no + 1}: one hot user {hot.pair_rounds[-1]:.0f} pairs/s; "
                    f"{CLIENTS} users {spread.pair_rounds[-1]:.0f} pairs/s")
        finally:
            for database, loop in zip(databases, loops, strict=True):
                loop.run_until_complete(database.aclose())
                loop.close()
            for conn in connections:
                conn.close()
        with db.connect() as conn:
            rows = conn.execute(
                "select count(*) filter (where h.status = 'settled'), count(*) filter (where h.status = 'open'),"
                " current_setting('synchronous_commit') from public.holds h").fetchone()
            held = conn.execute("select count(*) from public.billing_accounts where held_usd <> 0").fetchone()
    assert rows is not None
    assert held is not None
    settled, still_open, synchronous_commit = rows
    expected = 2 * CLIENTS * (3 + scale.rounds * scale.pairs_per_client)
    if settled != expected or still_open or held[0]:
        raise RuntimeError(f"billing left {still_open} open holds, {held[0]} accounts with money held and "
                           f"{settled} settled holds (expected {expected})")

    common = {"synchronous_commit": synchronous_commit, "settled_holds": settled}
    return [
        Result(f"2 database-only chat turns/s (2 round trips), 1 hot user ({CLIENTS} clients)", hot.pair_tally.rate,
               "turns/s",
               hot.floor_tally.rate, "updates/s", ratio=hot.ratio, target=f">= {TARGET_RATIO}",
               met=hot.ratio >= TARGET_RATIO, details=hot.details() | common),
        Result(f"2 billing: same, {CLIENTS} users, no shared row (diagnostic)", spread.pair_tally.rate, "pairs/s",
               spread.floor_tally.rate, "updates/s", ratio=spread.ratio, details=spread.details()),
    ]
