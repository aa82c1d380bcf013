"""4. Batch ingest: events per second through the usage function's POST (service secret, 1,000 events per
batch, through the real HTTP server as in benchmark 1) against COPY of the same rows into the same table.

One client sends batches one after another; the floor COPYs the same batches (same values, their own
event ids), one COPY per batch in its own transaction. The two alternate batch by batch. The
`ingest_usage` RPC alone (the SQL the function calls, with the JSON the function sends) is measured
too, to split the gap between the database function and the Python in front of it.

A realistic 1,000-event batch is ~330 KB of JSON, over the 256 KiB default MAX_BODY_BYTES, so the server
runs with MAX_BODY_BYTES=1048576 (a documented setting); the details record the body size.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg

from bench.common import (
    BENCH_SERVICE_SECRET,
    FUNCTIONS_SOURCE,
    HOST,
    Result,
    bench_database,
    function_env,
    function_server,
    log,
    process_tree_cpu,
    service_role,
)

TARGET_RATIO = 0.5
BATCH = 1000
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 256 * 1024
COLUMNS = ("event_id", "user_id", "service", "operation", "model", "input_tokens", "output_tokens", "cost_usd",
           "latency_ms", "status", "created_at")
COPY_SQL = f"copy public.usage_logs ({', '.join(COLUMNS)}) from stdin"
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "text-embedding-3-small"]


@dataclass(frozen=True)
class Scale:
    batches: int
    warmup: int


FULL = Scale(batches=40, warmup=3)
QUICK = Scale(batches=4, warmup=1)


def make_batch(users: list[uuid.UUID], rng: random.Random) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    events = []
    for _ in range(BATCH):
        tokens_in, tokens_out = rng.randrange(5000), rng.randrange(1000)
        events.append({
            "event_id": str(uuid.uuid4()), "user_id": str(rng.choice(users)), "service": "etl",
            "operation": "embed", "model": rng.choice(MODELS), "input_tokens": tokens_in, "output_tokens": tokens_out,
            "cost_usd": round((tokens_in * 0.15 + tokens_out * 0.6) / 1e6, 6), "latency_ms": rng.randrange(20, 3000),
            "status": "succeeded", "created_at": (now - timedelta(seconds=rng.randrange(3600))).isoformat(),
        })
    return events


def twin(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rows with their own event ids (event_id is unique)."""
    return [e | {"event_id": str(uuid.uuid4())} for e in events]


def copy_text(events: list[dict[str, Any]]) -> bytes:
    lines = ("\t".join(str(e[c]) for c in COLUMNS) for e in events)
    return ("\n".join(lines) + "\n").encode()


def _copy(conn: psycopg.Connection[Any], data: bytes) -> float:
    started = time.perf_counter()
    with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
        copy.write(data)
    return time.perf_counter() - started


def _post(conn: http.client.HTTPConnection, body: bytes) -> float:
    started = time.perf_counter()
    conn.request("POST", "/", body=body, headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {BENCH_SERVICE_SECRET}"})
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200 or json.loads(payload).get("inserted") != BATCH:
        raise RuntimeError(f"ingest answered HTTP {response.status}: {payload[:300]!r}")
    return elapsed


def _rpc(conn: psycopg.Connection[Any], events_json: str) -> float:
    """What PostgresDatabase.rpc sends for ingest_usage: the events as one JSON text argument."""
    with service_role(conn):
        started = time.perf_counter()
        row = conn.execute("select public.ingest_usage(p_events => %s)", (events_json,)).fetchone()
        elapsed = time.perf_counter() - started
    if row is None or row[0]["inserted"] != BATCH:
        raise RuntimeError(f"ingest_usage inserted {row}")
    return elapsed


def run(quick: bool) -> list[Result]:
    scale = QUICK if quick else FULL
    rng = random.Random(4)
    with bench_database("ingest") as db:
        users = db.create_users(100, prefix="ingest")
        env = function_env(db.url, MAX_BODY_BYTES=str(MAX_BODY_BYTES))
        seconds = {"http": 0.0, "copy": 0.0, "rpc": 0.0}
        cpu = {"http_server": 0.0, "http_postgres": 0.0, "copy_postgres": 0.0, "rpc_postgres": 0.0}
        body_bytes = 0
        with function_server("usage", FUNCTIONS_SOURCE, env, db.workdir) as server, db.connect() as conn:
            client = http.client.HTTPConnection(HOST, server.port, timeout=120)
            postmaster = db.postmaster()
            for k in range(scale.warmup + scale.batches):
                events = make_batch(users, rng)
                body = json.dumps({"events": events}).encode()
                body_bytes = len(body)
                rpc_json = json.dumps(twin(events))
                copy_data = copy_text(twin(events))
                steps = [("copy", partial(_copy, conn, copy_data)), ("http", partial(_post, client, body)),
                         ("rpc", partial(_rpc, conn, rpc_json))]
                if k % 2:
                    steps.reverse()
                for name, step in steps:
                    pg_before, server_before = process_tree_cpu(postmaster), server.cpu_seconds()
                    elapsed = step()
                    if k >= scale.warmup:
                        seconds[name] += elapsed
                        cpu[f"{name}_postgres"] += process_tree_cpu(postmaster) - pg_before
                        if name == "http":
                            cpu["http_server"] += server.cpu_seconds() - server_before
            client.close()
            count = conn.execute("select count(*) from public.usage_logs").fetchone()
        expected = 3 * BATCH * (scale.warmup + scale.batches)
        if count is None or count[0] != expected:
            raise RuntimeError(f"usage_logs has {count} rows, expected {expected}")

    events_total = BATCH * scale.batches
    rates = {name: events_total / s for name, s in seconds.items()}
    log(f"ingest: HTTP {rates['http']:,.0f} events/s, RPC alone {rates['rpc']:,.0f}, COPY {rates['copy']:,.0f}")
    cpu_ms_per_batch = {name: round(value * 1000 / scale.batches, 2) for name, value in cpu.items()}
    details = {"batch_events": BATCH, "batches": scale.batches, "body_bytes": body_bytes,
               "max_body_bytes_default": DEFAULT_MAX_BODY_BYTES, "max_body_bytes_used": MAX_BODY_BYTES,
               "ms_per_batch": {name: round(s * 1000 / scale.batches, 2) for name, s in seconds.items()},
               "cpu_ms_per_batch": cpu_ms_per_batch}
    ratio = rates["http"] / rates["copy"]
    return [
        Result("4 ingest: events/s via POST /usage (1,000/batch)", rates["http"], "events/s", rates["copy"],
               "events/s (COPY)", ratio=ratio, target=f">= {TARGET_RATIO}", met=ratio >= TARGET_RATIO,
               details=details),
        Result("4 ingest: ingest_usage RPC alone (same batches)", rates["rpc"], "events/s", rates["copy"],
               "events/s (COPY)", ratio=rates["rpc"] / rates["copy"],
               details={"ms_per_batch": details["ms_per_batch"]}),
    ]
