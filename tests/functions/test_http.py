"""The HTTP edge every function shares: request ids, CORS, body limit, content type, JSON, methods, logs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.support.fnsupport import ORIGIN
from tests.support.pg import Sql


def test_request_id_is_generated_when_missing_or_malformed(api: Any) -> None:
    r = api.get("health")
    assert len(r.headers["X-Request-Id"]) == 36
    bad = api.get("health", headers={"X-Request-Id": "has spaces and ; semicolons"})
    assert bad.headers["X-Request-Id"] != "has spaces and ; semicolons"


def test_preflight_from_an_allowed_origin(api: Any) -> None:
    r = api.call("OPTIONS", "chat", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    assert "Origin" in r.headers["Vary"]


def test_preflight_from_another_origin_is_refused(api: Any) -> None:
    r = api.call("OPTIONS", "chat", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403
    assert "Access-Control-Allow-Origin" not in r.headers


def test_answers_carry_cors_headers_for_allowed_origins_only(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    ok = api.get("usage", user=uid, headers={"Origin": ORIGIN})
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-Id" in ok.headers["Access-Control-Expose-Headers"]
    other = api.get("usage", user=uid, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    denied = api.post("chat", {"message": "x"}, headers={"Origin": ORIGIN})
    assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_oversized_body_is_413_and_nothing_written(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    r = api.post("chat", data="x" * (1100 * 1024), user=uid, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json["error"]["code"] == "payload_too_large"
    assert db.one("select count(*) from public.holds") == 0


def test_chunked_oversized_body_is_413(api: Any) -> None:
    uid = api.db.make_user(balance=5)

    # No Content-Length: a chunked body, read piece by piece until the limit is passed.
    r = api.post("chat", data=[b"x" * (100 * 1024)] * 11, user=uid, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_non_json_body_is_415(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    r = api.post("chat", data="message=hi", user=uid, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415


@pytest.mark.parametrize(("raw", "code"), [
    (b"{not json", "invalid_json"),
    (b'{"message": "\xff\xfe"}', "invalid_utf8"),
])
def test_malformed_body_is_400(api: Any, raw: bytes, code: str) -> None:
    uid = api.db.make_user(balance=5)
    r = api.post("chat", data=raw, user=uid, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"]["code"] == code


def test_body_that_is_not_an_object_is_422(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    r = api.post("chat", data="[1, 2]", user=uid, headers={"Content-Type": "application/json"})
    assert r.status_code == 422


def test_wrong_method_is_405_with_allow(api: Any) -> None:
    r = api.call("DELETE", "chat")
    assert r.status_code == 405 and "POST" in r.headers["Allow"]


def test_one_structured_log_line_per_request_without_secrets(api: Any, caplog: pytest.LogCaptureFixture) -> None:
    uid = api.db.make_user(balance=5)
    logger = logging.getLogger("functions.request")
    logger.addHandler(caplog.handler)
    try:
        r = api.post("chat", {"message": "my secret prompt"}, user=uid)
    finally:
        logger.removeHandler(caplog.handler)
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "functions.request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["function"] == "chat" and line["status"] == 200 and line["user_id"] == str(uid)
    assert line["request_id"] == r.headers["X-Request-Id"]
    assert line["tokens_in"] > 0 and line["cost_usd"] > 0 and line["latency_ms"] >= 0
    text = caplog.text
    assert "my secret prompt" not in text and "Bearer" not in text
