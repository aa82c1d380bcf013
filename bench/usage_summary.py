"""3. Usage summary at 1,000,000+ usage rows.

Loads ~1.2M rows into public.usage_logs (time-ordered, as an append-only log is written) over 60 days:
10% for one heavy account, the rest spread over ~1,000 typical users (~18 rows per user per day). Then
rolls them up with `public.refresh_usage_views()` as service_role (timed with every row new and again
with nothing new, against a full group-by of the table), and measures the p50 of
`public.usage_summary(from, to, 'day', user)` for a 30-day range ending today for random typical users,
against the same rows computed from usage_logs with a plain group-by that uses the (user_id, created_at)
index. Both run as service_role in one transaction each, as an RPC does; only the query is timed.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from bench.common import BenchDatabase, Result, bench_database, log, percentile, service_role

TARGET_SPEEDUP = 100.0
TARGET_P50_MS = 5.0
DAYS = 60
RANGE_DAYS = 30
HEAVY_SHARE = 0.10
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5"]

SUMMARY_SQL = "select public.usage_summary(p_from => %s, p_to => %s, p_group_by => 'day', p_user_id => %s)"
RAW_SQL = """
select (u.created_at at time zone 'utc')::date as day,
       count(*) as requests,
       count(*) filter (where u.status = 'failed') as failures,
       sum(u.input_tokens)::bigint as input_tokens,
       sum(u.output_tokens)::bigint as output_tokens,
       sum(u.cost_usd)::numeric(18,6) as cost_usd
from public.usage_logs u
where u.user_id = %(user)s
  and u.created_at >= (%(from)s::date::timestamp at time zone 'utc')
  and u.created_at < ((%(to)s::date + 1)::timestamp at time zone 'utc')
group by 1
order by 1
"""
LOAD_SQL = """
insert into public.usage_logs (user_id, service, operation, model, input_tokens, output_tokens, cost_usd,
                               latency_ms, status, error_code, created_at)
select case when r.pick < %(heavy_share)s then %(heavy)s::uuid
            else (%(users)s::uuid[])[1 + floor(r.who * %(n_users)s)::int] end,
       r.op, r.op, (%(models)s::text[])[1 + floor(r.m * 3)::int],
       r.tin, r.tout, round((r.tin * 0.15 + r.tout * 0.6) / 1000000, 6), (40 + r.lat * 4000)::int,
       case when r.lat < 0.02 then 'failed' else 'succeeded' end,
       case when r.lat < 0.02 then 'model_error' end,
       now() - make_interval(secs => (%(total)s - r.g) * %(step)s)
from (
  select g, random() as pick, random() as who, random() as m, random() as lat,
         case when random() < 0.7 then 'chat' else 'compile' end as op,
         (random() * 3000)::int as tin, (random() * 800)::int as tout
  from generate_series(1, %(total)s) g
) r
"""


@dataclass(frozen=True)
class Scale:
    users: int
    rows: int
    samples: int
    heavy_samples: int


FULL = Scale(users=999, rows=1_200_000, samples=500, heavy_samples=40)
QUICK = Scale(users=99, rows=60_000, samples=40, heavy_samples=10)


def _timed(conn: psycopg.Connection[Any], query: str, params: Any) -> tuple[float, list[Any]]:
    """Run `query` as service_role (one transaction, as an RPC); milliseconds of the query alone."""
    with service_role(conn):
        started = time.perf_counter()
        rows = conn.execute(query, params).fetchall()
        return (time.perf_counter() - started) * 1000, rows


def _summary(conn: psycopg.Connection[Any], user: uuid.UUID, since: date, to: date) -> tuple[float, list[Any]]:
    return _timed(conn, SUMMARY_SQL, (since, to, user))


def _raw(conn: psycopg.Connection[Any], user: uuid.UUID, since: date, to: date) -> tuple[float, list[Any]]:
    return _timed(conn, RAW_SQL, {"user": user, "from": since, "to": to})


def _same_answer(summary: dict[str, Any], raw: list[Any]) -> bool:
    expected = [(str(day), req, fail, tin, tout, Decimal(cost)) for day, req, fail, tin, tout, cost in raw]
    got = [(r["key"], r["requests"], r["failures"], r["input_tokens"], r["output_tokens"],
            Decimal(str(r["cost_usd"]))) for r in summary["rows"]]
    return got == expected


def _refresh(conn: psycopg.Connection[Any]) -> float:
    with service_role(conn):
        started = time.perf_counter()
        conn.execute("select public.refresh_usage_views()").fetchone()
    return time.perf_counter() - started


def _load(db: BenchDatabase, scale: Scale) -> tuple[list[uuid.UUID], uuid.UUID, dict[str, Any]]:
    typical = db.create_users(scale.users, prefix="usage")
    [heavy] = db.create_users(1, prefix="heavy")
    started = time.perf_counter()
    with db.connect() as conn:
        # Setup, not measured: no commit flush, and no per-row foreign-key trigger (every user id comes from
        # public.profiles by construction; usage_logs has no other trigger). Indexes are maintained as usual.
        conn.execute("set synchronous_commit = off")
        conn.execute("set session_replication_role = replica")
        conn.execute(LOAD_SQL, {"heavy_share": HEAVY_SHARE, "heavy": heavy, "users": typical,
                                "n_users": len(typical), "models": MODELS, "total": scale.rows,
                                "step": DAYS * 86400 / scale.rows})
        loaded = time.perf_counter() - started
        conn.execute("reset session_replication_role")
        orphans = conn.execute("select count(*) from public.usage_logs u"
                               " where not exists (select from public.profiles p where p.id = u.user_id)").fetchone()
        if orphans is None or orphans[0]:
            raise RuntimeError(f"bulk load produced usage rows without a profile: {orphans}")
        conn.execute("vacuum (analyze) public.usage_logs")
        row = conn.execute("select count(*), pg_total_relation_size('public.usage_logs'),"
                           " min(created_at), max(created_at) from public.usage_logs").fetchone()
    assert row is not None
    count, size, first, last = row
    log(f"loaded {count:,} usage rows ({size / 2**20:.0f} MiB with indexes) in {loaded:.1f} s")
    return typical, heavy, {"rows": count, "users": len(typical) + 1, "days": DAYS, "heavy_share": HEAVY_SHARE,
                            "table_and_indexes_mib": round(size / 2**20, 1), "load_seconds": round(loaded, 1),
                            "first_created_at": str(first), "last_created_at": str(last)}


def _measure_queries(conn: psycopg.Connection[Any], users: list[uuid.UUID], since: date, to: date,
                     samples: int, rng: random.Random) -> dict[str, Any]:
    summary_ms: list[float] = []
    raw_ms: list[float] = []
    rows_per_user: list[int] = []
    mismatches = 0
    for i in range(samples):
        user = rng.choice(users)
        if i % 2:
            t_summary, summary = _summary(conn, user, since, to)
            t_raw, raw = _raw(conn, user, since, to)
        else:
            t_raw, raw = _raw(conn, user, since, to)
            t_summary, summary = _summary(conn, user, since, to)
        summary_ms.append(t_summary)
        raw_ms.append(t_raw)
        rows_per_user.append(sum(r[1] for r in raw))
        if not _same_answer(summary[0][0], raw):
            mismatches += 1
    if mismatches:
        raise RuntimeError(f"usage_summary and the raw group-by disagree for {mismatches} of {samples} users")
    return {"samples": samples, "summary_p50_ms": percentile(summary_ms, 50),
            "summary_p99_ms": percentile(summary_ms, 99), "raw_p50_ms": percentile(raw_ms, 50),
            "raw_p99_ms": percentile(raw_ms, 99), "usage_rows_in_range_p50": percentile(rows_per_user, 50),
            "answers_compared": samples, "mismatches": mismatches}


def run(quick: bool) -> list[Result]:
    scale = QUICK if quick else FULL
    rng = random.Random(20261122)
    with bench_database("usage") as db:
        typical, heavy, data = _load(db, scale)
        with db.connect() as conn:
            first_refresh = _refresh(conn)
            steady_refresh = _refresh(conn)
            # The rollup is incremental (bench/usage_scale.py measures it at 1M and 10M rows); the floor
            # here is the full aggregation a from-scratch rebuild does, as the materialized view did.
            started = time.perf_counter()
            conn.execute("select user_id, (created_at at time zone 'utc')::date, service, operation, model, count(*),"
                         " sum(cost_usd) from public.usage_logs group by 1, 2, 3, 4, 5").fetchall()
            plain_refresh = time.perf_counter() - started
            view_rows = conn.execute("select count(*) from private.daily_usage_rollup").fetchone()
            log(f"refresh: {first_refresh:.2f} s from empty, {steady_refresh:.2f} s steady; "
                f"full aggregation {plain_refresh:.2f} s")

            to = datetime.now(UTC).date()
            since = to - timedelta(days=RANGE_DAYS - 1)
            plan = conn.execute("explain " + RAW_SQL, {"user": typical[0], "from": since, "to": to}).fetchall()
            _measure_queries(conn, typical, since, to, 20, rng)  # warm up caches and plans
            measured = _measure_queries(conn, typical, since, to, scale.samples, rng)
            heavy_measured = _measure_queries(conn, [heavy], since, to, scale.heavy_samples, rng)
    log(f"typical user: summary p50 {measured['summary_p50_ms']:.2f} ms, raw p50 {measured['raw_p50_ms']:.2f} ms "
        f"({measured['usage_rows_in_range_p50']:.0f} rows in range)")

    raw_plan = "\n".join(r[0] for r in plan)
    common = {"data": data, "range_days": RANGE_DAYS, "from": str(since), "to": str(to),
              "view_rows": view_rows[0] if view_rows else None, "raw_query": RAW_SQL.strip(), "raw_plan": raw_plan}
    speedup = measured["raw_p50_ms"] / measured["summary_p50_ms"]
    heavy_speedup = heavy_measured["raw_p50_ms"] / heavy_measured["summary_p50_ms"]
    met = speedup >= TARGET_SPEEDUP and measured["summary_p50_ms"] < TARGET_P50_MS
    rows_label = f"{data['rows'] / 1e6:.2f}M rows" if data["rows"] >= 1e6 else f"{data['rows'] / 1e3:.0f}k rows"
    return [
        Result(f"3 usage: usage_summary p50, typical user, 30 d ({rows_label})", measured["summary_p50_ms"], "ms",
               measured["raw_p50_ms"], ratio=speedup, ratio_suffix="x",
               target=f">= {TARGET_SPEEDUP:.0f}x and p50 < {TARGET_P50_MS:.0f} ms", met=met,
               details=common | {"typical": measured}),
        Result("3 usage: usage_summary p50, heavy user (10% of rows), 30 d", heavy_measured["summary_p50_ms"], "ms",
               heavy_measured["raw_p50_ms"], ratio=heavy_speedup, ratio_suffix="x",
               details={"heavy": heavy_measured}),
        Result("3 usage: refresh_usage_views(), first (every row new)", first_refresh, "s", plain_refresh,
               ratio=first_refresh / plain_refresh, ratio_suffix="x of full aggregation",
               details={"from_empty_s": first_refresh, "full_aggregation_s": plain_refresh}),
        Result("3 usage: refresh_usage_views(), steady state (nothing new)", steady_refresh, "s", plain_refresh,
               ratio=steady_refresh / plain_refresh, ratio_suffix="x of full aggregation",
               details={"steady_s": steady_refresh, "full_aggregation_s": plain_refresh}),
    ]
