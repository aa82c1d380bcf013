"""compile: code checked to parse, diagnostics, billing and records like a chat turn."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from functions.compile import check, extract_code
from tests.support.pg import Sql


@pytest.mark.parametrize("language", ["python", "sql"])
def test_compile_returns_code_that_parses_and_is_billed_once(api: Any, language: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    r = api.post("compile", {"task": "sum the numbers in a list", "language": language}, user=uid)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["valid"] is True and body["diagnostics"] == [] and body["provider"] == "offline"
    assert check(language, body["code"]) == []
    row = db.one("select language, code, valid, cost_usd, request_id from public.code_gen_requests where user_id = %s",
                 (uid,))
    assert row["code"] == body["code"] and row["valid"] is True and row["language"] == language
    assert row["cost_usd"] == Decimal(str(body["usage"]["cost_usd"]))
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == 1
    assert db.one("select operation from public.usage_logs where user_id = %s", (uid,)) == "compile"


def test_compile_in_a_project_of_another_user_is_404_and_not_billed(api: Any) -> None:
    db: Sql = api.db
    alice, bob = db.make_user(balance=5), db.make_user(balance=5)
    project = db.one("insert into public.projects (user_id, name) values (%s, 'p') returning id", (alice,))
    r = api.post("compile", {"task": "x", "language": "sql", "project_id": str(project)}, user=bob)
    assert r.status_code == 404 and r.json["error"]["code"] == "project_not_found"
    assert db.one("select count(*) from public.holds where user_id = %s", (bob,)) == 0
    ok = api.post("compile", {"task": "x", "language": "sql", "project_id": str(project)}, user=alice)
    assert ok.status_code == 200
    assert db.one("select project_id from public.code_gen_requests where user_id = %s", (alice,)) == project


@pytest.mark.parametrize(("body", "field"), [
    ({"language": "python"}, "task"),
    ({"task": "x", "language": "rust"}, "language"),
    ({"task": "x", "language": "python", "project_id": "nope"}, "project_id"),
    ({"task": "x", "language": "python", "extra": 1}, "extra"),
    ({"task": "", "language": "sql"}, "task"),
])
def test_compile_bad_input_is_422_naming_the_field(api: Any, body: dict[str, Any], field: str) -> None:
    uid = api.db.make_user(balance=5)
    r = api.post("compile", body, user=uid)
    assert r.status_code == 422 and any(d["field"] == field for d in r.json["error"]["details"]["fields"])


def test_compile_same_request_id_is_replayed_not_rebilled(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    headers = {"X-Request-Id": f"compile-{uuid.uuid4()}"}
    a = api.post("compile", {"task": "x", "language": "sql"}, user=uid, headers=headers)
    b = api.post("compile", {"task": "x", "language": "sql"}, user=uid, headers=headers)
    assert a.json["id"] == b.json["id"] and b.json["replay"] is True
    assert db.one("select count(*) from public.code_gen_requests where user_id = %s", (uid,)) == 1


def test_parsers_report_line_and_column() -> None:
    assert check("python", "def f(:\n    pass")[0]["line"] == 1
    sql_problem = check("sql", "select 1;\nselect from where;")[0]
    assert sql_problem["line"] == 2 and "where" in sql_problem["message"]
    assert check("sql", "select 1") == []
    assert check("python", "   ") != []


def test_extract_code_takes_the_first_fenced_block() -> None:
    assert extract_code("Here:\n```python\nx = 1\n```\nthanks") == "x = 1"
    assert extract_code("select 1;") == "select 1;"


def test_a_request_id_reused_across_operations_is_409_not_a_replay(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    assert api.post("chat", {"message": "hi", "client_message_id": "shared-id"}, user=uid).status_code == 200
    r = api.post("compile", {"task": "x", "language": "sql"}, user=uid, headers={"X-Request-Id": "shared-id"})
    assert r.status_code == 409 and r.json["error"]["code"] == "request_id_reused"
    assert db.one("select count(*) from public.code_gen_requests where user_id = %s", (uid,)) == 0
