"""Usage at scale (issue 11): what the scheduled refresh, the summary and retention cost as history grows.

For each history size (1M and 10M rows by default; `python -m bench.usage_scale --rows N ...`), a fresh
embedded Postgres gets N usage rows at 20,000 a day going backwards from yesterday (so 10M rows are ~500
days, 17 monthly partitions), over 2,000 users with a heavy tail (user k gets a share ~ 1/k^1.1, the
heaviest ~10%), retention set long enough to keep it all. The history is rolled up once (not measured).
Then, three times: 20,000 new rows for today (5% of them late events for the past week) are written through
the normal insert path (trigger, indexes) and `refresh_usage_views()` is timed; its floor is the same
group-by over just those 20,000 rows. `usage_summary` p50 for a 30-day range, typical and heaviest user,
with 2,000 rows not yet rolled up. Finally the oldest month that has rows is dropped: the DROP itself, and the whole
retention run (`refresh_usage_views(p_retention_months)`, which also forgets that month's event ids, at most
20,000 per run).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import BENCH_DIR, bench_database, log, percentile, service_role

PER_DAY = 20_000
USERS = 2_000
LOAD_CHUNK = 1_000_000

# Rows `%(n)s` rows ending `%(end_days)s` days before today, PER_DAY a day, heavy-tailed users.
LOAD_SQL = """
insert into public.usage_logs (user_id, service, operation, model, input_tokens, output_tokens, cost_usd,
                               latency_ms, status, error_code, created_at)
select (%(users)s::uuid[])[1 + least(floor(exp(ln(%(n_users)s::float8) * r.who * 1.0) - 1)::int, %(n_users)s - 1)],
       r.op, r.op, (%(models)s::text[])[1 + floor(r.m * 3)::int],
       r.tin, r.tout, round((r.tin * 0.15 + r.tout * 0.6) / 1000000, 6), (40 + r.lat * 4000)::int,
       case when r.lat < 0.02 then 'failed' else 'succeeded' end,
       case when r.lat < 0.02 then 'model_error' end,
       %(end)s::timestamptz - make_interval(secs => (r.g::float8 / %(per_day)s) * 86400)
from (
  select g, random() as who, random() as m, random() as lat,
         case when random() < 0.7 then 'chat' else 'compile' end as op,
         (random() * 3000)::int as tin, (random() * 800)::int as tout
  from generate_series(%(first)s, %(last)s) g
) r
"""
NEW_DAY_SQL = """
insert into public.usage_logs (user_id, service, operation, model, input_tokens, output_tokens, cost_usd, status,
                               created_at)
select (%(users)s::uuid[])[1 + least(floor(exp(ln(%(n_users)s::float8) * random())) - 1, %(n_users)s - 1)::int],
       'chat', 'chat', 'gpt-4o-mini', 100, 50, 0.000045, 'succeeded',
       case when g %% 20 = 0 then now() - make_interval(days => 1 + g %% 7)  -- 5%% late events
            else now() - make_interval(secs => g %% 3600) end
from generate_series(1, %(n)s) g
"""
SUMMARY_SQL = "select public.usage_summary(p_from => %s, p_to => %s, p_group_by => 'day', p_user_id => %s)"
FLOOR_SQL = """
select user_id, (created_at at time zone 'utc')::date, service, operation, coalesce(model, ''), count(*),
       count(*) filter (where status = 'failed'), sum(input_tokens), sum(output_tokens), sum(cost_usd)
from public.usage_logs where xact_id >= %s group by 1, 2, 3, 4, 5
"""

OLDEST_WITH_ROWS = """
select min(c.relname) from pg_inherits i join pg_class c on c.oid = i.inhrelid
where i.inhparent = 'public.usage_logs'::regclass and c.relname ~ '^usage_logs_y' and c.reltuples > 0
"""


def _timed(conn: psycopg.Connection[Any], query: str, params: Any = None) -> float:
    with service_role(conn):
        started = time.perf_counter()
        conn.execute(query, params).fetchall()
        return (time.perf_counter() - started) * 1000


def _load(conn: psycopg.Connection[Any], users: list[uuid.UUID], rows: int) -> dict[str, Any]:
    days = -(-rows // PER_DAY)
    end = (datetime.now(UTC) - timedelta(days=1)).replace(hour=23, minute=59, second=0, microsecond=0)
    first_day = (end - timedelta(days=days)).date()
    conn.execute("update private.usage_settings set raw_retention_months = 1200")
    conn.execute("select private.ensure_usage_partitions(%s, %s)", (first_day, datetime.now(UTC).date()))
    started = time.perf_counter()
    conn.execute("set synchronous_commit = off")
    conn.execute("set session_replication_role = replica")  # setup only: no FK or event-id trigger per row
    for first in range(1, rows + 1, LOAD_CHUNK):
        last = min(first + LOAD_CHUNK - 1, rows)
        conn.execute(LOAD_SQL, {"users": users, "n_users": len(users), "models": ["gpt-4o-mini", "gpt-4o",
                     "claude-haiku-4-5"], "end": end, "per_day": PER_DAY, "first": first, "last": last})
        log(f"loaded {last:,} rows ({time.perf_counter() - started:.0f} s)")
    conn.execute("reset session_replication_role")
    conn.execute("insert into private.usage_event_ids (event_id, created_at)"
                 " select event_id, created_at from public.usage_logs")
    conn.execute("vacuum (analyze) public.usage_logs")
    conn.execute("vacuum (analyze) private.usage_event_ids")
    loaded = time.perf_counter() - started
    with service_role(conn):
        started = time.perf_counter()
        conn.execute("select public.refresh_usage_views()").fetchone()
        initial = time.perf_counter() - started
    conn.execute("vacuum (analyze) private.daily_usage_rollup")
    size = conn.execute("select pg_total_relation_size('public.usage_logs')"
                        " + coalesce((select sum(pg_total_relation_size(inhrelid)) from pg_inherits"
                        " where inhparent = 'public.usage_logs'::regclass), 0)").fetchone()
    parts = conn.execute("select count(*) from pg_inherits where inhparent = 'public.usage_logs'::regclass").fetchone()
    assert size is not None
    assert parts is not None
    log(f"{rows:,} rows in {parts[0]} partitions, {size[0] / 2**30:.2f} GiB; load {loaded:.0f} s, "
        f"initial rollup {initial:.1f} s")
    return {"rows": rows, "days": days, "partitions": parts[0], "gib": round(size[0] / 2**30, 2),
            "load_s": round(loaded, 1), "initial_rollup_s": round(initial, 2), "first_day": str(first_day)}


def measure(rows: int, samples: int = 200, heavy_samples: int = 40) -> dict[str, Any]:
    """Every number for one history size, on its own throwaway Postgres."""
    rng = random.Random(11)
    with bench_database(f"usage-scale-{rows}") as db:
        users = db.create_users(USERS, prefix="scale")
        with db.connect() as conn:
            data = _load(conn, users, rows)
            refresh_s: list[float] = []
            floor_s: list[float] = []
            for _ in range(3):
                lo = conn.execute("select rolled_up_before_xact from private.view_refreshes").fetchone()
                assert lo is not None
                conn.execute(NEW_DAY_SQL, {"users": users, "n_users": len(users), "n": PER_DAY})
                floor_s.append(_timed(conn, FLOOR_SQL, (lo[0],)) / 1000)
                with service_role(conn):
                    started = time.perf_counter()
                    out = conn.execute("select public.refresh_usage_views()").fetchone()
                    refresh_s.append(time.perf_counter() - started)
                assert out is not None
                assert out[0]["rows_rolled_up"] == PER_DAY, out
            log(f"refresh of {PER_DAY:,} new rows: {[round(s, 3) for s in refresh_s]} s "
                f"(floor: group-by of those rows {[round(s, 3) for s in floor_s]} s)")

            conn.execute(NEW_DAY_SQL, {"users": users, "n_users": len(users), "n": 2000})  # not rolled up
            to = datetime.now(UTC).date()
            since = to - timedelta(days=29)
            typical = users[len(users) // 2:]
            heavy = users[0]
            for _ in range(20):
                _timed(conn, SUMMARY_SQL, (since, to, rng.choice(typical)))
            typical_ms = [_timed(conn, SUMMARY_SQL, (since, to, rng.choice(typical))) for _ in range(samples)]
            heavy_ms = [_timed(conn, SUMMARY_SQL, (since, to, heavy)) for _ in range(heavy_samples)]
            heavy_rows = conn.execute("select count(*) from public.usage_logs where user_id = %s and created_at >= %s",
                                      (heavy, since)).fetchone()
            log(f"usage_summary p50: typical {percentile(typical_ms, 50):.2f} ms, heavy {percentile(heavy_ms, 50):.2f}"
                f" ms ({heavy_rows[0] if heavy_rows else '?':,} raw rows in range)")

            oldest = conn.execute(OLDEST_WITH_ROWS).fetchone()
            assert oldest is not None
            month_rows = conn.execute(f"select count(*) from private.{oldest[0]}").fetchone()
            assert month_rows is not None
            started = time.perf_counter()
            conn.execute(f"drop table private.{oldest[0]}")
            drop_s = time.perf_counter() - started
            second = conn.execute(OLDEST_WITH_ROWS).fetchone()
            assert second is not None
            month = datetime.strptime(second[0][12:], "%Ym%m").date()
            now = datetime.now(UTC).date()
            keep = (now.year - month.year) * 12 + now.month - month.month - 1  # drops exactly that month
            with service_role(conn):
                started = time.perf_counter()
                out = conn.execute("select public.refresh_usage_views(%s)", (keep,)).fetchone()
                retention_s = time.perf_counter() - started
            assert out is not None
            log(f"drop of {oldest[0]} ({month_rows[0]:,} rows): {drop_s * 1000:.0f} ms; retention run dropping "
                f"{out[0]['partitions_dropped']}: {retention_s * 1000:.0f} ms "
                f"({out[0]['event_ids_forgotten']:,} event ids forgotten)")
    return {"data": data, "refresh_new_day_s": refresh_s, "refresh_median_s": statistics.median(refresh_s),
            "floor_groupby_new_rows_s": floor_s, "floor_median_s": statistics.median(floor_s),
            "summary_typical_p50_ms": percentile(typical_ms, 50), "summary_heavy_p50_ms": percentile(heavy_ms, 50),
            "heavy_rows_in_range": heavy_rows[0] if heavy_rows else None,
            "drop_month_ms": drop_s * 1000, "dropped_month_rows": month_rows[0],
            "retention_run_ms": retention_s * 1000, "retention_run": out[0]}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| history | partitions | table + indexes | refresh of 20,000 new rows (median of 3) | floor: group-by of"
             " those rows | usage_summary p50 typical / heavy | drop one month (rows) | retention run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        d = r["data"]
        lines.append(f"| {d['rows'] / 1e6:g}M | {d['partitions']} | {d['gib']} GiB"
                     f" | {r['refresh_median_s'] * 1000:.0f} ms"
                     f" | {r['floor_median_s'] * 1000:.0f} ms | {r['summary_typical_p50_ms']:.2f} /"
                     f" {r['summary_heavy_p50_ms']:.2f} ms | {r['drop_month_ms']:.0f} ms ({r['dropped_month_rows']:,})"
                     f" | {r['retention_run_ms']:.0f} ms |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="history size (repeat); default 1M and 10M")
    args = parser.parse_args()
    results = [measure(n) for n in (args.rows or [1_000_000, 10_000_000])]
    out = BENCH_DIR / "results" / "usage_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(table(results))


if __name__ == "__main__":
    main()
