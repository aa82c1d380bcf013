"""`keys` through its functions-framework app, over both transports: create with the user's token, use the
key as `Bearer sk_...` and as `X-API-Key`, scopes, expiry, revoke; a key cannot manage keys."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.pg import Sql


def create(api: Any, user: uuid.UUID, **body: Any) -> dict[str, Any]:
    r = api.post("keys", {"name": "laptop", **body}, user=user)
    assert r.status_code == 201, r.json
    assert r.headers["Cache-Control"] == "no-store"
    created: dict[str, Any] = r.json
    return created


def as_key(key: str, style: str = "bearer") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if style == "bearer" else {"X-API-Key": key}


def error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.json)
    body: dict[str, Any] = r.json["error"]
    assert body["code"] == code, body
    assert body["message"][0].isupper() and body["message"].endswith("."), body["message"]
    return body


def test_create_answers_the_key_once_and_list_never_shows_it(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    created = create(api, uid, name="ci runner")
    assert set(created) == {"id", "name", "prefix", "scopes", "expires_at", "created_at", "key"}
    assert created["key"].startswith(f"sk_{created['prefix']}_") and created["name"] == "ci runner"
    assert created["scopes"] == ["models", "usage:read"] and created["expires_at"] is None
    assert db.one("select user_id from public.api_keys where id = %s", (created["id"],)) == uid

    listed = api.get("keys", user=uid)
    assert listed.status_code == 200, listed.json
    (item,) = listed.json["items"]
    assert item["id"] == created["id"] and item["status"] == "active" and item["prefix"] == created["prefix"]
    assert "key" not in item and created["key"][16:] not in listed.get_data(as_text=True)
    assert api.get("keys", user=db.make_user()).json == {"items": []}  # another user sees none of them


@pytest.mark.parametrize("style", ["bearer", "x-api-key"])
def test_a_created_key_calls_chat_compile_and_usage(api: Any, style: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    key = create(api, uid)["key"]
    chat = api.post("chat", {"message": "from a script"}, headers=as_key(key, style))
    assert chat.status_code == 200, chat.json
    assert db.one("select user_id from public.chat_sessions where id = %s", (chat.json["session_id"],)) == uid
    compiled = api.post("compile", {"task": "add two numbers", "language": "python"}, headers=as_key(key, style))
    assert compiled.status_code == 200, compiled.json
    usage = api.get("usage", headers=as_key(key, style))
    assert usage.status_code == 200 and usage.json["totals"]["requests"] == 2


@pytest.mark.parametrize("style", ["bearer", "x-api-key"])
def test_a_usage_read_key_reads_usage_and_is_refused_the_models(api: Any, style: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    key = create(api, uid, scopes=["usage:read"])["key"]
    assert api.get("usage", headers=as_key(key, style)).status_code == 200
    for target, body in (("chat", {"message": "hi"}), ("compile", {"task": "x", "language": "sql"})):
        refused = error(api.post(target, body, headers=as_key(key, style)), 403, "insufficient_scope")
        assert "'models'" in refused["message"]
        assert refused["details"] == {"required_scope": "models", "key_scopes": ["usage:read"]}
    assert api.get("chat", headers=as_key(key, style)).status_code == 403  # history belongs to the models scope
    assert db.one("select count(*) from public.holds where user_id = %s", (uid,)) == 0


def test_a_models_key_chats_and_is_refused_usage(api: Any, caplog: pytest.LogCaptureFixture) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    created = create(api, uid, scopes=["models"])
    key = created["key"]
    assert api.post("chat", {"message": "hi"}, headers=as_key(key)).status_code == 200
    logger = logging.getLogger("functions.request")
    logger.addHandler(caplog.handler)
    try:
        refused = error(api.get("usage", headers=as_key(key, "x-api-key")), 403, "insufficient_scope")
    finally:
        logger.removeHandler(caplog.handler)
    assert "'usage:read'" in refused["message"] and refused["details"]["required_scope"] == "usage:read"
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if '"function": "usage"' in r.getMessage()]
    assert line["error_code"] == "insufficient_scope" and line["user_id"] == str(uid)
    assert line["api_key_id"] == created["id"] and key not in json.dumps(line)


def test_an_expired_key_is_401_and_listed_as_expired(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    created = create(api, uid, expires_in_days=30)
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    assert api.get("usage", headers=as_key(created["key"])).status_code == 200

    db.q("update public.api_keys set expires_at = now() - interval '1 minute' where id = %s", (created["id"],))
    expired = error(api.get("usage", headers=as_key(created["key"])), 401, "api_key_expired")
    assert "expired" in expired["message"] and expired["details"]["reason"].startswith("the key expired at")
    error(api.post("chat", {"message": "hi"}, headers=as_key(created["key"], "x-api-key")), 401, "api_key_expired")
    assert api.get("keys", user=uid).json["items"][0]["status"] == "expired"


def test_expires_at_is_kept_as_given(api: Any) -> None:
    uid = api.db.make_user()
    until = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    created = create(api, uid, expires_at=until.isoformat())
    assert datetime.fromisoformat(created["expires_at"]) == until


def test_revoke_stops_the_key_and_is_idempotent(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    created = create(api, uid)
    key = created["key"]
    assert api.get("usage", headers=as_key(key)).status_code == 200

    revoked = api.delete("keys", f"/{created['id']}", user=uid)
    assert revoked.status_code == 200, revoked.json
    assert revoked.json["id"] == created["id"] and revoked.json["revoked_at"]
    error(api.get("usage", headers=as_key(key)), 401, "invalid_api_key")
    error(api.post("chat", {"message": "hi"}, headers=as_key(key, "x-api-key")), 401, "invalid_api_key")
    assert api.delete("keys", f"/{created['id']}", user=uid).json == revoked.json  # the first revocation stands
    assert api.get("keys", user=uid).json["items"][0]["status"] == "revoked"


def test_revoking_a_key_that_is_not_yours_is_404(api: Any) -> None:
    db: Sql = api.db
    owner, other = db.make_user(), db.make_user()
    created = create(api, owner)
    for path in (f"/{created['id']}", f"/{uuid.uuid4()}", "/not-a-uuid"):
        body = error(api.delete("keys", path, user=other), 404, "api_key_not_found")
        assert body["message"] == "No API key with this id belongs to you."
    assert db.one("select revoked_at from public.api_keys where id = %s", (created["id"],)) is None


@pytest.mark.parametrize("style", ["bearer", "x-api-key"])
def test_a_key_cannot_create_list_or_revoke_keys(api: Any, style: str) -> None:
    db: Sql = api.db
    uid = db.make_user()
    created = create(api, uid)
    headers = as_key(created["key"], style)
    attempts = [api.post("keys", {"name": "minted by a key"}, headers=headers), api.get("keys", headers=headers),
                api.delete("keys", f"/{created['id']}", headers=headers)]
    for r in attempts:
        body = error(r, 403, "access_token_required")
        assert body["message"] == "An API key cannot create, list or revoke keys: sign in and use your access token."
    assert db.one("select count(*) from public.api_keys where user_id = %s", (uid,)) == 1
    assert db.one("select revoked_at from public.api_keys where id = %s", (created["id"],)) is None


def test_keys_need_credentials(api: Any) -> None:
    error(api.get("keys"), 401, "missing_credentials")
    error(api.post("keys", {"name": "x"}), 401, "missing_credentials")


@pytest.mark.parametrize(("body", "field", "code"), [
    ({}, "name", "validation_error"),
    ({"name": ""}, "name", "validation_error"),
    ({"name": "k", "scopes": []}, "scopes", "validation_error"),
    ({"name": "k", "scopes": ["keys"]}, "scopes.0", "validation_error"),
    ({"name": "k", "expires_in_days": 0}, "expires_in_days", "validation_error"),
    ({"name": "k", "secret": "mine"}, "secret", "validation_error"),
    ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "invalid_expiry"),
    ({"name": "k", "expires_at": "2999-01-01T00:00:00Z", "expires_in_days": 2}, "expires_at", "invalid_expiry"),
])
def test_invalid_key_requests_are_422_naming_the_field(api: Any, body: dict[str, Any], field: str, code: str) -> None:
    db: Sql = api.db
    uid = db.make_user()
    refused = error(api.post("keys", body, user=uid), 422, code)
    assert any(f["field"] == field for f in refused["details"]["fields"]), refused
    assert db.one("select count(*) from public.api_keys where user_id = %s", (uid,)) == 0


def test_undocumented_methods_on_keys_are_405_with_the_right_allow(api: Any) -> None:
    uid = api.db.make_user()
    r = api.delete("keys", "/", user=uid)
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "POST", "OPTIONS"}
    r = api.get("keys", user=uid, path=f"/{uuid.uuid4()}")
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"DELETE", "OPTIONS"}
    assert r.json["error"]["message"] == "This path answers DELETE only."


def test_the_browser_can_still_manage_keys_through_postgrest(api: Any) -> None:
    """`rpc/create_api_key` called as PostgREST receives it from a browser (the user's JWT, JSON arguments),
    and the key it answers works on the functions within its scopes."""
    import httpx

    from tests.support import fnsupport
    from tests.support.postgrest import PostgrestEmulator

    db: Sql = api.db
    uid = db.make_user(balance=5)
    emulator = PostgrestEmulator(db.url, fnsupport.JWT_SECRET)
    headers = {"apikey": fnsupport.role_key("anon"), "Authorization": f"Bearer {fnsupport.token(uid)}"}

    def rpc(name: str, args: dict[str, Any]) -> httpx.Response:
        return emulator(httpx.Request("POST", f"{fnsupport.SUPABASE_URL}/rest/v1/rpc/{name}", headers=headers,
                                      json=args))

    try:
        created = rpc("create_api_key", {"p_name": "from the browser", "p_scopes": ["models"],
                                         "p_expires_in_days": 10})
        assert created.status_code == 200, created.json()
        key = created.json()["key"]
        assert created.json()["scopes"] == ["models"]
        assert api.post("chat", {"message": "hi"}, headers=as_key(key)).status_code == 200
        assert api.get("usage", headers=as_key(key)).status_code == 403
        listed = rpc("list_api_keys", {}).json()
        assert [k["name"] for k in listed] == ["from the browser"] and "key" not in listed[0]
        bad = rpc("create_api_key", {"p_name": "x", "p_scopes": ["keys"]})
        assert bad.status_code == 422 and bad.json()["message"] == "invalid_scopes"  # PostgREST: code is the SQLSTATE
        assert rpc("revoke_api_key", {"p_key_id": created.json()["id"]}).status_code == 200
        error(api.get("chat", headers=as_key(key)), 401, "invalid_api_key")
    finally:
        emulator.close()


def test_paths_below_a_key_are_404(api: Any) -> None:
    uid = api.db.make_user()
    r = api.delete("keys", f"/{uuid.uuid4()}/more", user=uid)
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    assert r.json["error"]["message"].startswith("The keys function has no path /")
