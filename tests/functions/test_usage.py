"""usage: the caller's summary (GET) and the service-only batch ingest (POST)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.pg import Sql


def events(uid: uuid.UUID, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"event_id": str(uuid.uuid4()), "user_id": str(uid), "service": "notebook", "operation": "run",
             "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5, "cost_usd": "0.000100", **extra}
            for _ in range(n)]


def test_summary_groups_the_callers_usage_and_reports_quota_and_balance(api: Any) -> None:
    db: Sql = api.db
    uid, other = db.make_user(balance=5), db.make_user(balance=5)
    api.post("chat", {"message": "hi"}, user=uid)
    api.post("compile", {"task": "x", "language": "sql"}, user=uid)
    api.post("chat", {"message": "not mine"}, user=other)
    r = api.get("usage", user=uid, query_string={"group_by": "operation"})
    assert r.status_code == 200, r.json
    body = r.json
    assert {row["key"]: row["requests"] for row in body["rows"]} == {"chat": 1, "compile": 1}
    spent = db.one("select month_spend_usd from public.billing_accounts where user_id = %s", (uid,))
    assert body["account"]["month_spend_usd"] == pytest.approx(float(spent))
    assert body["account"]["quota_left_usd"] == pytest.approx(100 - float(spent))
    assert body["totals"]["requests"] == 2


def test_summary_serves_the_rollup_and_rows_not_yet_rolled_up(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    assert api.service("usage", {"events": events(uid, 3, created_at=old)}).status_code == 200
    assert api.service("refresh_views").status_code == 200
    api.service("usage", {"events": events(uid, 2)})  # not rolled up yet, still counted
    body = api.get("usage", user=uid, query_string={"group_by": "day"}).json
    days = {row["key"]: row["requests"] for row in body["rows"]}
    assert days[(datetime.now(UTC) - timedelta(days=3)).date().isoformat()] == 3
    assert days[datetime.now(UTC).date().isoformat()] == 2
    assert db.one("select sum(requests) from private.daily_usage_rollup where user_id = %s", (uid,)) == 3


@pytest.mark.parametrize(("query", "field"), [
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-13-01"}, "to"),
    ({"group_by": "hour"}, "group_by"),
    ({"bogus": "1"}, "bogus"),
])
def test_summary_bad_query_is_422_naming_the_field(api: Any, query: dict[str, str], field: str) -> None:
    uid = api.db.make_user(balance=5)
    r = api.get("usage", user=uid, query_string=query)
    assert r.status_code == 422 and any(d["field"] == field for d in r.json["error"]["details"]["fields"])


def test_summary_reversed_range_is_422(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    r = api.get("usage", user=uid, query_string={"from": "2026-05-02", "to": "2026-05-01"})
    assert r.status_code == 422 and r.json["error"]["code"] == "invalid_range"


def test_ingest_inserts_once_and_ignores_duplicates(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    batch = events(uid, 1000)
    first = api.service("usage", {"events": batch})
    assert first.status_code == 200 and first.json == {"received": 1000, "inserted": 1000, "duplicates": 0}
    again = api.service("usage", {"events": batch[:10] + events(uid, 5)})
    assert again.json == {"received": 15, "inserted": 5, "duplicates": 10}
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 1005


def test_ingest_over_1000_events_is_422_and_writes_nothing(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    r = api.service("usage", {"events": events(uid, 1001)})
    assert r.status_code == 422 and r.json["error"]["details"]["fields"][0]["field"] == "events"
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 0


def test_ingest_with_an_unknown_user_is_422_and_writes_nothing(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    r = api.service("usage", {"events": events(uid, 3) + events(uuid.uuid4(), 1)})
    assert r.status_code == 422 and r.json["error"]["code"] == "unknown_user"
    assert db.one("select count(*) from public.usage_logs") == 0


@pytest.mark.parametrize(("change", "field"), [
    ({"event_id": "x"}, "events.0.event_id"),
    ({"input_tokens": -1}, "events.0.input_tokens"),
    ({"status": "maybe"}, "events.0.status"),
    ({"cost_usd": "0.0000001"}, "events.0.cost_usd"),
])
def test_ingest_bad_event_is_422_naming_the_field(api: Any, change: dict[str, Any], field: str) -> None:
    uid = api.db.make_user(balance=5)
    r = api.service("usage", {"events": [events(uid, 1)[0] | change]})
    assert r.status_code == 422 and any(d["field"] == field for d in r.json["error"]["details"]["fields"])


def test_ingest_needs_the_service_secret(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    assert api.post("usage", {"events": events(uid, 1)}, user=uid).status_code == 401
    assert api.post("usage", {"events": events(uid, 1)}).status_code == 401
