"""Usage at scale (issue 11): the incremental rollup, monthly partitions with retention, event ids unique
across partitions, per-event bounds no tenant can get around, RLS on every new table and partition, and
reads that go to a replica when one is configured."""

from __future__ import annotations

import random
import threading
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.schemas import MAX_EVENT_COST_USD, MAX_EVENT_TOKENS
from tests.support.pg import Sql

TOKENS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def today(db: Sql) -> date:
    value: date = db.one("select (now() at time zone 'utc')::date")
    return value


def at(db: Sql, days_ago: int, hour: int = 12) -> str:
    """An ISO instant `days_ago` UTC days before today, at `hour` UTC."""
    return str(db.one("select (date_trunc('day', now() at time zone 'utc') - make_interval(days => %s)"
                      " + make_interval(hours => %s)) at time zone 'utc'", (days_ago, hour)))


def event(uid: uuid.UUID, **extra: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "user_id": str(uid), "service": "etl", "operation": "embed",
            "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 2, "cost_usd": "0.000010"} | extra


def summary(db: Sql, uid: uuid.UUID, start: date, end: date, group_by: str = "day") -> dict[str, Any]:
    result: dict[str, Any] = db.rpc("usage_summary", as_role="authenticated", as_user=uid,
                                    **{"from": start, "to": end, "group_by": group_by})
    return result


def direct(db: Sql, uid: uuid.UUID, start: date, end: date, group_by: str) -> dict[str, dict[str, Any]]:
    """The same numbers aggregated straight from the raw rows, in Python."""
    rows = db.q("select (created_at at time zone 'utc')::date as day, service, operation, coalesce(model, '') as model,"
                " status, cost_usd, " + ", ".join(TOKENS) + " from public.usage_logs where user_id = %s", (uid,))
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if not start <= r["day"] <= end:
            continue
        key = {"day": str(r["day"]), "model": r["model"], "operation": r["operation"], "service": r["service"],
               "day_model": f"{r['day']} {r['model']}"}[group_by]
        agg = out.setdefault(key, {"requests": 0, "failures": 0, "cost_usd": Decimal(0)} | dict.fromkeys(TOKENS, 0))
        agg["requests"] += 1
        agg["failures"] += r["status"] == "failed"
        agg["cost_usd"] += r["cost_usd"]
        for t in TOKENS:
            agg[t] += r[t]
    return out


def as_map(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: {"requests": r["requests"], "failures": r["failures"], "cost_usd": Decimal(str(r["cost_usd"]))}
            | {t: r[t] for t in TOKENS} for r in result["rows"]}


def rollup_equals_raw(db: Sql) -> None:
    """After a refresh with no writer running, the rollup is exactly the raw rows, key by key."""
    key = "user_id, day, service, operation, model"
    raw = db.q(f"select {key}, requests, failures, cost_usd, input_tokens, output_tokens from ("
               " select user_id, (created_at at time zone 'utc')::date as day, service, operation,"
               " coalesce(model, '') as model, count(*) as requests, count(*) filter (where status = 'failed')"
               " as failures, sum(cost_usd) as cost_usd, sum(input_tokens) as input_tokens,"
               f" sum(output_tokens) as output_tokens from public.usage_logs group by 1, 2, 3, 4, 5) r order by {key}")
    rolled = db.q(f"select {key}, requests, failures, cost_usd, input_tokens, output_tokens"
                  f" from private.daily_usage_rollup order by {key}")
    assert rolled == raw


# -- the incremental rollup ---------------------------------------------------------------------------------


def test_late_events_for_a_closed_day_appear_after_the_next_refresh(db: Sql) -> None:
    uid = db.make_user()
    db.rpc("ingest_usage", events=[event(uid, created_at=at(db, 5))])
    assert db.rpc("refresh_usage_views")["rows_rolled_up"] == 1
    five_ago = today(db) - timedelta(days=5)
    # Days later, an event for that closed day arrives: counted at once (read live), and once.
    db.rpc("ingest_usage", events=[event(uid, created_at=at(db, 5, hour=3), cost_usd="1")])
    assert summary(db, uid, five_ago, five_ago)["totals"]["requests"] == 2
    assert db.one("select sum(requests) from private.daily_usage_rollup where user_id = %s", (uid,)) == 1
    refreshed = db.rpc("refresh_usage_views")
    assert refreshed["rows_rolled_up"] == 1 and refreshed["keys_updated"] == 1
    assert db.one("select requests, cost_usd from private.daily_usage_rollup where user_id = %s and day = %s",
                  (uid, five_ago)) == {"requests": 2, "cost_usd": Decimal("1.000010")}
    after = summary(db, uid, five_ago, five_ago)
    assert after["totals"]["requests"] == 2 and Decimal(str(after["totals"]["cost_usd"])) == Decimal("1.00001")
    assert db.rpc("refresh_usage_views")["rows_rolled_up"] == 0  # nothing new: nothing done


def test_a_refresh_touches_only_what_was_written_since_the_last_one(db: Sql) -> None:
    uid = db.make_user()
    db.rpc("ingest_usage", events=[event(uid, created_at=at(db, d)) for d in range(30) for _ in range(3)])
    assert db.rpc("refresh_usage_views")["rows_rolled_up"] == 90
    db.rpc("ingest_usage", events=[event(uid)])
    refreshed = db.rpc("refresh_usage_views")
    assert (refreshed["rows_rolled_up"], refreshed["keys_updated"]) == (1, 1)
    rollup_equals_raw(db)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(
    data=st.lists(st.tuples(
        st.integers(0, 2),  # which user
        st.integers(0, 70),  # days ago
        st.sampled_from(["chat", "compile", "embed"]),
        st.sampled_from(["gpt-4o-mini", "claude-haiku-4-5", None]),
        st.integers(0, 5000),  # tokens
        st.decimals(min_value=0, max_value=5, places=6),
        st.booleans(),  # failed
        st.booleans(),  # refresh after this event
    ), min_size=1, max_size=40),
    who=st.integers(0, 2), start=st.integers(0, 80), span=st.integers(0, 80),
    group_by=st.sampled_from(["day", "model", "operation", "service", "day_model"]),
)
def test_summary_equals_a_direct_aggregation_of_the_raw_rows(
    db: Sql, data: list[tuple[Any, ...]], who: int, start: int, span: int, group_by: str,
) -> None:
    users = [db.make_user() for _ in range(3)]
    for u, days_ago, op, model, tokens, cost, failed, refresh in data:
        db.rpc("ingest_usage", events=[event(users[u], created_at=at(db, days_ago, hour=tokens % 24), operation=op,
                                             service=op, model=model, input_tokens=tokens, output_tokens=tokens // 3,
                                             reasoning_tokens=tokens // 7, cached_input_tokens=tokens // 2,
                                             cost_usd=str(cost), status="failed" if failed else "succeeded")])
        if refresh:
            db.rpc("refresh_usage_views")
    end = today(db) - timedelta(days=start)
    begin = end - timedelta(days=span)
    got = summary(db, users[who], begin, end, group_by)
    want = direct(db, users[who], begin, end, group_by)
    assert as_map(got) == want
    assert got["totals"]["requests"] == sum(v["requests"] for v in want.values())


def test_concurrent_writers_and_refreshes_count_every_row_once(db: Sql) -> None:
    """Transactions commit out of id order while refreshes run: the watermark still takes each row once."""
    users = [db.make_user(balance=50) for _ in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(uid: uuid.UUID) -> None:
        conn = Sql(db.url)
        rnd = random.Random(str(uid))
        try:
            for _ in range(15):
                conn.rpc("ingest_usage", events=[event(uid, created_at=at(db, rnd.randint(0, 40)))
                                                 for _ in range(rnd.randint(1, 20))])
                hold = conn.rpc("begin_charge", user_id=uid, request_id=str(uuid.uuid4()), operation="chat",
                                model="offline-dev", prompt_chars=10, max_output_tokens=10)
                conn.rpc("settle_chat_turn", hold_id=hold["hold_id"], user_message="a", assistant_message="b",
                         input_tokens=3, output_tokens=4)
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    def refresher() -> None:
        conn = Sql(db.url)
        try:
            while not stop.is_set():
                conn.rpc("refresh_usage_views")
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(u,)) for u in users]
    refreshers = [threading.Thread(target=refresher) for _ in range(2)]
    for t in threads + refreshers:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in refreshers:
        t.join()
    assert errors == []
    for uid in users:  # never stale, never twice, before the last refresh
        assert summary(db, uid, today(db) - timedelta(days=40), today(db))["totals"]["requests"] == db.one(
            "select count(*) from public.usage_logs where user_id = %s", (uid,))
    db.rpc("refresh_usage_views")
    rollup_equals_raw(db)


# -- partitions, event ids, retention ------------------------------------------------------------------------


def test_usage_logs_is_partitioned_by_month_with_partitions_ahead(db: Sql) -> None:
    assert db.one("select relkind from pg_class where oid = 'public.usage_logs'::regclass") == "p"
    db.rpc("refresh_usage_views")
    names = {r["relname"] for r in db.q("select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                                        " where i.inhparent = 'public.usage_logs'::regclass")}
    month = today(db).replace(day=1)
    for ahead in range(4):  # this month and three ahead
        m = (month + timedelta(days=32 * ahead)).replace(day=1)
        assert f"usage_logs_y{m:%Y}m{m:%m}" in names
    assert "usage_logs_default" in names
    uid = db.make_user()
    db.rpc("ingest_usage", events=[event(uid)])
    assert db.one("select tableoid::regclass::text from public.usage_logs where user_id = %s", (uid,)) == (
        f"private.usage_logs_y{month:%Y}m{month:%m}")


def test_rows_caught_by_the_default_partition_move_into_their_month(db: Sql) -> None:
    uid = db.make_user()
    db.q("insert into public.usage_logs (user_id, service, operation, status, created_at)"
         " values (%s, 's', 'o', 'succeeded', '2031-05-17T10:00:00Z')", (uid,))
    assert db.one("select count(*) from private.usage_logs_default") == 1
    assert db.one("select private.ensure_usage_partitions('2031-05-01', '2031-05-31')") == ["usage_logs_y2031m05"]
    assert db.one("select count(*) from private.usage_logs_default") == 0
    assert db.one("select tableoid::regclass::text from public.usage_logs where user_id = %s", (uid,)) == (
        "private.usage_logs_y2031m05")
    assert db.one("select relrowsecurity from pg_class where oid = 'private.usage_logs_y2031m05'::regclass")


def test_ingest_is_idempotent_across_partitions(db: Sql) -> None:
    uid = db.make_user(balance=5)
    first = event(uid, created_at=at(db, 45))  # another month than today
    assert db.rpc("ingest_usage", events=[first])["inserted"] == 1
    again = [first | {"created_at": at(db, 0)}, first | {"created_at": None}, first]
    assert db.rpc("ingest_usage", events=[{k: v for k, v in e.items() if v is not None} for e in again]) == {
        "received": 3, "inserted": 0, "duplicates": 3}
    # The event id of a billed call cannot be ingested a second time either.
    hold = db.rpc("begin_charge", user_id=uid, request_id="r1", operation="chat", model="offline-dev",
                  prompt_chars=10, max_output_tokens=10)
    db.rpc("settle_chat_turn", hold_id=hold["hold_id"], user_message="a", assistant_message="b",
           input_tokens=1, output_tokens=1)
    billed = db.one("select event_id from public.usage_logs where hold_id = %s", (hold["hold_id"],))
    assert db.rpc("ingest_usage", events=[event(uid, event_id=str(billed), created_at=at(db, 45))])["inserted"] == 0
    assert db.one("select count(*) from public.usage_logs where event_id = %s", (first["event_id"],)) == 1
    # A writer other than ingest that repeats an event id is refused, not silently dropped.
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.q("insert into public.usage_logs (event_id, user_id, service, operation, status, created_at)"
             " values (%s, %s, 's', 'o', 'succeeded', now() - interval '40 days')", (first["event_id"], uid))


def test_retention_drops_raw_partitions_but_keeps_the_rollup(db: Sql) -> None:
    uid = db.make_user()
    old_day = today(db) - timedelta(days=70)  # at least two months back
    old = [event(uid, created_at=at(db, 70), cost_usd="0.5") for _ in range(3)]
    db.rpc("ingest_usage", events=[*old, event(uid)])
    old_part = f"usage_logs_y{old_day:%Y}m{old_day:%m}"
    assert db.rpc("refresh_usage_views")["partitions_dropped"] == []  # 13 months kept by default

    refreshed = db.rpc("refresh_usage_views", retention_months=1)  # this month and the one before
    assert old_part in refreshed["partitions_dropped"] and refreshed["retention_months"] == 1
    assert refreshed["event_ids_forgotten"] >= 3
    assert db.one("select to_regclass(%s)", (f"private.{old_part}",)) is None
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 1
    got = summary(db, uid, old_day, today(db))
    assert got["totals"]["requests"] == 4 and Decimal(str(got["totals"]["cost_usd"])) == Decimal("1.50001")
    assert db.one("select raw_retention_months from private.usage_settings") == 1  # kept for the next runs
    # An event older than what is kept is refused (it would land in no partition's rollup).
    with pytest.raises(psycopg.Error) as err:
        db.rpc("ingest_usage", events=[event(uid, created_at=at(db, 70))])
    assert err.value.sqlstate == "PT422" and err.value.diag.message_primary == "event_out_of_bounds"
    with pytest.raises(psycopg.Error) as err:
        db.rpc("refresh_usage_views", retention_months=0)
    assert err.value.sqlstate == "PT422"


def test_retention_waits_for_no_one(db: Sql, db_url: str) -> None:
    """A busy usage_logs (a lock held elsewhere) skips the drop for this run; the rollup still happens."""
    uid = db.make_user()
    db.rpc("ingest_usage", events=[event(uid, created_at=at(db, 70))])
    with psycopg.connect(db_url) as holder:
        holder.execute("lock table public.usage_logs in access share mode")
        holder.execute("select count(*) from public.usage_logs")
        refreshed = db.rpc("refresh_usage_views", retention_months=1)
    assert refreshed["partitions_dropped"] == [] and "skipped" in refreshed["retention"]
    assert refreshed["rows_rolled_up"] == 1
    assert db.rpc("refresh_usage_views")["partitions_dropped"] != []


# -- no single tenant can break it --------------------------------------------------------------------------


def test_the_overflow_batch_is_refused(db: Sql) -> None:
    uid = db.make_user()
    batch = [event(uid, cost_usd="99999999.999999") for _ in range(1000)]
    with pytest.raises(psycopg.Error) as err:
        db.rpc("ingest_usage", events=batch)
    assert err.value.sqlstate == "PT422" and err.value.diag.message_primary == "event_out_of_bounds"
    for field, value in [("cost_usd", str(MAX_EVENT_COST_USD + Decimal("0.000001"))),
                         ("input_tokens", MAX_EVENT_TOKENS + 1), ("reasoning_tokens", MAX_EVENT_TOKENS + 1),
                         ("created_at", str(datetime.fromisoformat(at(db, -2))))]:
        with pytest.raises(psycopg.Error) as err:
            db.rpc("ingest_usage", events=[event(uid, **{field: value})])
        assert err.value.sqlstate == "PT422", field
    at_bounds = event(uid, cost_usd=str(MAX_EVENT_COST_USD), **dict.fromkeys(TOKENS, MAX_EVENT_TOKENS))
    assert db.rpc("ingest_usage", events=[at_bounds])["inserted"] == 1
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 1


def test_the_overflow_batch_over_http_is_422_naming_the_field(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    r = api.service("usage", {"events": [event(uid, cost_usd="99999999.999999") for _ in range(1000)]})
    assert r.status_code == 422 and any(d["field"] == "events.0.cost_usd" for d in r.json["error"]["details"]["fields"])
    r = api.service("usage", {"events": [event(uid, input_tokens=MAX_EVENT_TOKENS + 1)]})
    assert r.status_code == 422 and r.json["error"]["details"]["fields"][0]["field"] == "events.0.input_tokens"


def test_rows_that_overflowed_the_old_view_are_absorbed_and_refresh_works_for_everyone(db: Sql) -> None:
    """11,000 rows at the column's maximum cost for one user and day (more than the issue's overflow, and
    past any bound ingest allows: a writer gone wrong) sum exactly, and everyone's refresh and summary work."""
    heavy, other = db.make_user(), db.make_user()
    db.q("insert into public.usage_logs (user_id, service, operation, model, status, cost_usd, input_tokens,"
         " created_at) select %s, 'etl', 'embed', 'm', 'succeeded', 99999999.999999, 2147483647,"
         " now() - interval '2 days' from generate_series(1, 11000)", (heavy,))
    db.rpc("ingest_usage", events=[event(other, created_at=at(db, 2))])
    db.rpc("ingest_usage", events=[event(heavy, cost_usd=str(MAX_EVENT_COST_USD), input_tokens=MAX_EVENT_TOKENS)
                                   for _ in range(1000)])
    assert db.rpc("refresh_usage_views")["rows_rolled_up"] == 12001
    day = today(db) - timedelta(days=2)
    row = db.one("select cost_usd, input_tokens from private.daily_usage_rollup where user_id = %s and day = %s",
                 (heavy, day))
    assert row == {"cost_usd": Decimal("99999999.999999") * 11000, "input_tokens": 2147483647 * 11000}
    got = summary(db, heavy, day, today(db))
    assert Decimal(str(got["totals"]["cost_usd"])) == Decimal("99999999.999999") * 11000 + 1000 * MAX_EVENT_COST_USD
    assert summary(db, other, day, today(db))["totals"]["requests"] == 1
    db.rpc("ingest_usage", events=[event(other)])
    assert db.rpc("refresh_usage_views")["rows_rolled_up"] == 1


# -- RLS on every new table and partition ------------------------------------------------------------------


def _new_relations(db: Sql) -> list[str]:
    return [r["name"] for r in db.q(
        "select c.oid::regclass::text as name from pg_class c where c.relnamespace = 'private'::regnamespace"
        " and c.relkind = 'r' and (c.relispartition or c.relname in"
        " ('daily_usage_rollup', 'usage_event_ids', 'usage_settings', 'view_refreshes'))")]


def test_every_new_table_and_partition_has_rls_and_is_closed_to_the_api_roles(db: Sql) -> None:
    db.rpc("refresh_usage_views")
    relations = _new_relations(db)
    assert len(relations) >= 4 + 17  # the tables, the default and 17 monthly partitions
    for name in relations:
        assert db.one("select relrowsecurity from pg_class where oid = %s::regclass", (name,)), name
        for role in ("anon", "authenticated"):
            assert not db.one("select has_table_privilege(%s, %s, 'select, insert, update, delete')",
                              (role, name)), (role, name)
    owned = [n for n in relations if n.startswith("private.usage_logs_") or n == "private.daily_usage_rollup"]
    for name in owned:
        policies = db.q("select polname, polcmd, polroles::regrole[]::text[] as roles from pg_policy"
                        " where polrelid = %s::regclass", (name,))
        assert [(p["polcmd"], p["roles"]) for p in policies] == [("r", ["authenticated"])], name


def test_a_user_reads_only_their_own_rows_of_partitions_and_rollup_even_if_granted(db: Sql) -> None:
    """Defence in depth: were a partition or the rollup granted to the browser, RLS would still hold."""
    a, b = db.make_user(), db.make_user()
    db.rpc("ingest_usage", events=[event(a), event(b), event(b)])
    db.rpc("refresh_usage_views")
    month = today(db).replace(day=1)
    for table in (f"private.usage_logs_y{month:%Y}m{month:%m}", "private.daily_usage_rollup"):
        with db.conn.transaction(force_rollback=True):
            db.conn.execute(f"grant select on {table} to authenticated, anon")
            db.conn.execute("set local role authenticated")
            db.conn.execute("select set_config('request.jwt.claims', %s, true)",
                            (f'{{"sub": "{a}", "role": "authenticated"}}',))
            owners = {r["user_id"] for r in db.conn.execute(f"select user_id from {table}").fetchall()}
            assert owners == {a}, table
        with db.conn.transaction(force_rollback=True):
            db.conn.execute(f"grant select on {table} to anon")
            db.conn.execute("set local role anon")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # anon has no usage on schema private
                db.conn.execute(f"select user_id from {table}")


def test_through_the_parent_a_user_reads_only_their_own_rows_in_every_partition(db: Sql) -> None:
    a, b = db.make_user(), db.make_user()
    db.rpc("ingest_usage", events=[event(u, created_at=at(db, d)) for u in (a, b) for d in (0, 40, 100)])
    with db.acting("authenticated", a) as c:
        rows = c.execute("select user_id, tableoid::regclass::text as part from public.usage_logs").fetchall()
    assert {r["user_id"] for r in rows} == {a} and len({r["part"] for r in rows}) == 3
    with db.acting("anon") as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute("select count(*) from public.usage_logs")


# -- reads that may go to a replica ---------------------------------------------------------------------------


class Recording:
    """A database port that records the RPCs it serves and forwards them."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, defaultdict(int)

    async def rpc(self, name: str, args: Any, caller: Any = None) -> Any:
        self.calls[name] += 1
        return await (self.inner.rpc(name, args, caller) if caller is not None else self.inner.rpc(name, args))

    async def aclose(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_usage_and_listings_read_from_the_replica_and_billing_never_does(api: Any) -> None:
    from functions import runtime

    primary = runtime.database()
    replica = Recording(primary)
    runtime.install(primary, replica)  # type: ignore[arg-type]
    uid = api.db.make_user(balance=5)
    assert api.post("chat", {"message": "hi", "session_id": "work"}, user=uid).status_code == 200
    assert api.get("usage", user=uid).json["totals"]["requests"] == 1
    assert api.get("chat", user=uid).status_code == 200
    assert api.get("chat", user=uid, query_string={"session_id": "work"}).json["items"]
    assert api.service("usage", {"events": [event(uid)]}).status_code == 200
    assert dict(replica.calls) == {"usage_summary": 1, "list_sessions": 1, "list_messages": 1}


def test_read_database_follows_the_configuration(fn_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions import runtime
    from functions.db.postgres import PostgresDatabase
    from functions.db.supabase import SupabaseDatabase

    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@primary.invalid/postgres")
    runtime.reset()
    assert runtime.read_database() is runtime.database()  # no replica: the primary
    monkeypatch.setenv("DATABASE_READ_URL", "postgresql://postgres@replica.invalid/postgres")
    runtime.reset()
    replica = runtime.read_database()
    assert isinstance(replica, PostgresDatabase) and replica is not runtime.database()
    assert "replica.invalid" in replica.url  # not connected: pools open on first use

    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.test")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-key")
    monkeypatch.setenv("SUPABASE_READ_URL", "https://ref-rr-eu.supabase.test")
    runtime.reset()
    read = runtime.read_database()
    assert isinstance(read, SupabaseDatabase) and read.rest_url == "https://ref-rr-eu.supabase.test/rest/v1"
    assert isinstance(runtime.database(), SupabaseDatabase) and runtime.database() is not read
    runtime.reset()
