"""refresh_views (HTTP and CloudEvent) and the health probe."""

from __future__ import annotations

import json
from typing import Any

from functions import runtime
from functions.db.postgres import PostgresDatabase
from tests.support.fnsupport import SOURCE
from tests.support.pg import Sql


def test_refresh_views_refreshes_and_expires_stale_holds(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    hold = db.rpc("begin_charge", user_id=uid, request_id="stale", operation="chat", model="offline-dev",
                  prompt_chars=10, max_output_tokens=10)
    db.q("update public.holds set last_seen_at = now() - interval '2 hours' where id = %s", (hold["hold_id"],))
    r = api.service("refresh_views")
    assert r.status_code == 200, r.json
    assert r.json["expired_holds"]["hold_ids"] == [hold["hold_id"]]
    assert r.json["refreshed"][0]["view"] == "daily_usage_rollup"
    assert db.one("select held_usd from public.billing_accounts where user_id = %s", (uid,)) == 0
    assert db.one("select status from public.holds where id = %s", (hold["hold_id"],)) == "expired"


def test_refresh_views_refuses_users(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    assert api.post("refresh_views", user=uid).status_code == 401
    assert api.get("refresh_views", headers={"Authorization": "Bearer x"}).status_code == 405


def test_refresh_views_runs_as_a_cloudevent_target(api: Any) -> None:
    import httpx
    from functions_framework.aio import create_asgi_app

    app = create_asgi_app("refresh_views_event", SOURCE, "cloudevent")
    event = {"specversion": "1.0", "type": "google.cloud.pubsub.topic.v1.messagePublished",
             "source": "//pubsub.googleapis.com/projects/p/topics/refresh", "id": "evt-1",
             "data": {"message": {"data": ""}}}

    async def deliver() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn.test") as client:
            return await client.post("/", content=json.dumps(event),
                                     headers={"Content-Type": "application/cloudevents+json"})

    r = api.run(deliver())
    assert r.status_code == 200
    assert api.db.one("select refreshed_at > now() - interval '1 minute' from private.view_refreshes") is True


def test_health_writes_and_reads_back(api: Any) -> None:
    r = api.get("health")
    assert r.status_code == 200, r.json
    assert r.json["database"]["ok"] is True
    assert r.json["database"]["latest_migration"] == api.db.one(
        "select max(version) from supabase_migrations.schema_migrations")
    assert r.json["model_provider"] == "offline"
    assert api.db.one("select count(*) from private.health_checks") == 1


def test_health_is_503_naming_the_database_when_it_is_down(fn_env: None, tmp_path: Any) -> None:
    from tests.support.fnsupport import Api

    runtime.install(PostgresDatabase(f"postgresql://postgres@/postgres?host={tmp_path}", connect_timeout=0.5,
                                     attempts=2))
    r = Api("postgres").get("health")
    assert r.status_code == 503
    assert r.json["error"]["code"] == "unhealthy"
    assert r.json["error"]["details"]["failing"] == ["database"]


def test_health_is_503_when_migrations_are_behind(api: Any) -> None:
    api.db.q("delete from supabase_migrations.schema_migrations where version = "
             "(select max(version) from supabase_migrations.schema_migrations)")
    r = api.get("health")
    assert r.status_code == 503 and "migrations" in r.json["error"]["details"]["failing"]
