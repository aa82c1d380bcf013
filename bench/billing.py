"""2. Billing under contention: begin_charge + settle_chat_turn pairs per second on ONE hot user from 8
concurrent clients, against a single-row update of the same billing row at the same concurrency.

Each client has its own connection. The pairs go through `PostgresDatabase.rpc` (one pool of one
connection per client), exactly as the functions call them: one transaction per RPC, as service_role
with PostgREST's claims. The floor is the cheapest write that takes the same row lock: one autocommit
UPDATE of the hot row. Both sides run twice, interleaved, and their counts and times are summed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.common import BENCH_MODEL, BenchDatabase, Result, bench_database, log, percentile
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


FULL = Scale(pairs_per_client=120, updates_per_client=200, rounds=2)
QUICK = Scale(pairs_per_client=15, updates_per_client=30, rounds=1)


@dataclass
class Tally:
    operations: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] | None = None

    def add(self, operations: int, seconds: float, latencies: list[float]) -> None:
        self.operations += operations
        self.seconds += seconds
        self.latencies_ms = (self.latencies_ms or []) + latencies

    @property
    def rate(self) -> float:
        return self.operations / self.seconds

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms or [0.0]
        return {"operations": self.operations, "seconds": round(self.seconds, 3), "per_second": round(self.rate, 1),
                "p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3)}


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

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} clients failed") from failures[0]
    return seconds, latencies


def pair_worker(database: PostgresDatabase, user_id: uuid.UUID) -> Callable[[], None]:
    """One chat turn's billing as the chat function does it, minus the model call."""

    def work() -> None:
        hold = database.rpc("begin_charge", {
            "user_id": user_id, "request_id": str(uuid.uuid4()), "operation": "chat", "model": BENCH_MODEL,
            "prompt_chars": 120, "max_output_tokens": 256, "calls": 1}, SERVICE)
        database.rpc("settle_chat_turn", {
            "hold_id": hold["hold_id"], "session_id": None, "user_message": "How do I reverse a list?",
            "assistant_message": "Use reversed(xs) or xs[::-1].", "input_tokens": 30, "output_tokens": 12,
            "latency_ms": 1, "client_message_id": None}, SERVICE)

    return work


def update_worker(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> Callable[[], None]:
    def work() -> None:
        conn.execute(FLOOR_SQL, (user_id,))

    return work


def run(quick: bool) -> list[Result]:
    scale = QUICK if quick else FULL
    with bench_database("billing") as db:
        [user] = db.create_users(1, prefix="billing", balance_usd=1_000_000)
        return _measure(db, user, scale)


def _measure(db: BenchDatabase, user: uuid.UUID, scale: Scale) -> list[Result]:
    databases = [PostgresDatabase(db.url, min_size=1, max_size=1) for _ in range(CLIENTS)]
    connections = [db.connect() for _ in range(CLIENTS)]
    try:
        pairs = [pair_worker(d, user) for d in databases]
        updates = [update_worker(c, user) for c in connections]
        concurrently(pairs, 3)  # warm up: pools open, plans cached
        concurrently(updates, 3)
        pair_tally, floor_tally = Tally(), Tally()
        for round_no in range(scale.rounds):
            seconds, lat = concurrently(updates, scale.updates_per_client)
            floor_tally.add(CLIENTS * scale.updates_per_client, seconds, lat)
            seconds, lat = concurrently(pairs, scale.pairs_per_client)
            pair_tally.add(CLIENTS * scale.pairs_per_client, seconds, lat)
            log(f"round {round_no + 1}: {pair_tally.rate:.0f} pairs/s, {floor_tally.rate:.0f} updates/s")
        with db.connect() as conn:
            row = conn.execute(
                "select a.balance_usd, a.held_usd, (select count(*) from public.holds h where h.user_id = a.user_id"
                " and h.status = 'settled'), current_setting('synchronous_commit')"
                " from public.billing_accounts a where a.user_id = %s", (user,)).fetchone()
        assert row is not None
        balance, held, settled, synchronous_commit = row
        expected = CLIENTS * (3 + scale.rounds * scale.pairs_per_client)
        if held != 0 or settled != expected:
            raise RuntimeError(f"billing left {held} held and {settled} settled holds, expected 0 and {expected}")
    finally:
        for database in databases:
            database.close()
        for conn in connections:
            conn.close()

    ratio = pair_tally.rate / floor_tally.rate
    details = {"clients": CLIENTS, "pairs": pair_tally.summary(), "floor_updates": floor_tally.summary(),
               "transactions_per_pair": 2, "synchronous_commit": synchronous_commit,
               "final_balance_usd": str(balance), "settled_holds": settled}
    return [Result("2 billing: begin+settle pairs/s, 1 hot user (8 clients)", pair_tally.rate, "pairs/s",
                   floor_tally.rate, "updates/s", ratio=ratio, target=f">= {TARGET_RATIO}",
                   met=ratio >= TARGET_RATIO, details=details)]
