"""The OpenAPI document: committed copy up to date, valid OpenAPI 3.1, and true of the real server.

Schemathesis generates requests for every operation from the committed document (valid ones, and invalid
ones) and sends them to `functions.dev.serve.build_app()` served over real HTTP on a fresh migrated database.
Every answer must be documented: status, content type, body and the `X-Request-Id` header; none may be a
5xx. Generation is derandomized so CI sees the same cases every run.
"""

from __future__ import annotations

import json
import typing
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions import schemas
from functions.dev import openapi
from tests.support import fnsupport
from tests.support.pg import Sql

DOCUMENT = openapi.DOCUMENT_PATH
MAX_EXAMPLES = 40
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
               response_schema_conformance]
# Credential headers of the security schemes. Generated values would only ever reach the 401 branch, so the
# fuzzing replaces them with real credentials of the right kind (the 401 answers are checked separately).
CREDENTIAL_HEADERS = ("Authorization", "X-API-Key", "X-Service-Secret")
SERVICE_OPERATIONS = {"usage_ingest", "refresh_views"}


def _load_schema() -> Any:
    return schemathesis.openapi.from_dict(json.loads(DOCUMENT.read_text(encoding="utf-8")))


def _operations() -> list[Any]:
    return [result.ok() for result in _load_schema().get_all_operations()]


# Labels from the generated document, so collection works even when the committed copy is stale or missing.
OPERATION_LABELS = [f"{method.upper()} {path}" for path, item in openapi.build()["paths"].items() for method in item]


# -- the document itself ------------------------------------------------------------------------------

def test_committed_document_is_current() -> None:
    assert DOCUMENT.exists(), f"{DOCUMENT} is missing; generate it with `{openapi.REGENERATE}`"
    assert DOCUMENT.read_text(encoding="utf-8") == openapi.render(), (
        f"{DOCUMENT} is out of date with functions/schemas.py; regenerate it with `{openapi.REGENERATE}` "
        "and commit the result"
    )


def test_document_is_valid_openapi_31() -> None:
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.1")
    schema = _load_schema()
    schema.validate()  # the OpenAPI 3.1 meta-schema (schemathesis' own validator; raises when invalid)
    operations = _operations()  # every operation resolves (all $refs found)
    assert sorted(op.label for op in operations) == sorted([
        "POST /chat", "GET /chat", "GET /chat/models", "POST /compile", "GET /usage", "POST /usage", "GET /keys",
        "POST /keys", "DELETE /keys/{key_id}", "POST /refresh_views", "GET /health", "POST /v1/chat/completions",
        "POST /v1/messages", "GET /v1/models", "GET /v1/models/{model_id}"])
    for path, path_item in document["paths"].items():
        assert "options" not in path_item  # CORS preflight is deliberately not part of the document
        for operation in path_item.values():
            statuses = {int(s) for s in operation["responses"] if not s.startswith("2")}
            assert statuses, operation["operationId"]
            assert 500 not in statuses  # an unhandled error is never a documented answer
            for status in statuses:
                ref = operation["responses"][str(status)]["$ref"].rsplit("/", 1)[1]
                if path.startswith("/v1/"):  # the compatible API answers in its protocols' own error bodies
                    assert ref in ("OpenAIError", "AnthropicError", "V1Error")
                    continue
                error = document["components"]["responses"][ref]
                assert error["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_check_command_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n", encoding="utf-8")
    assert openapi.main(["--check", "--output", str(stale)]) == 1
    assert openapi.main(["--output", str(stale)]) == 0
    assert openapi.main(["--check", "--output", str(stale)]) == 0


# -- the real server ----------------------------------------------------------------------------------

@dataclass
class Live:
    url: str
    user: uuid.UUID
    token: str
    session: requests.Session

    def credentials(self, operation_id: str) -> dict[str, str]:
        if operation_id in SERVICE_OPERATIONS:
            return {"Authorization": f"Bearer {fnsupport.SERVICE_SECRET}"}
        if operation_id == "health":
            return {}
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def live(fn_env: None, db: Sql) -> Iterator[Live]:
    """Every function served by `build_app()` over HTTP on a fresh database, with one funded user who
    already has a session with a few turns (so listings have pages and cursors)."""
    from functions import runtime
    from functions.db.postgres import PostgresDatabase
    from tests.support.served import served_functions

    runtime.install(PostgresDatabase(db.url, max_size=8))
    user = db.make_user(balance=500.0, plan="team")  # team: 600 requests a minute, so few 429s
    with served_functions() as url, requests.Session() as session:  # uvicorn, as deployed
        live = Live(url, user, fnsupport.token(user), session)
        for i in range(3):
            answer = session.post(f"{live.url}/chat", json={"message": f"turn {i}", "session_id": "main"},
                                  headers=live.credentials("chat_send"), timeout=30)
            assert answer.status_code == 200, answer.text
        yield live


def error_request_id(path: str, body: Any) -> str | None:
    """The request id an error body carries: this API's envelope and Anthropic's carry it; OpenAI's has none
    (its clients read the `X-Request-Id` header)."""
    if path == "/v1/messages" or (path.startswith("/v1/") and "request_id" in body):
        return str(body["request_id"])
    if path.startswith("/v1/"):
        return None
    return str(body["error"]["request_id"])


def _send(live: Live, case: Any, checks: list[Any]) -> Any:
    operation_id = case.operation.definition.raw["operationId"]
    headers = {k: v for k, v in (case.headers or {}).items() if k not in CREDENTIAL_HEADERS}
    case.headers = {**headers, **live.credentials(operation_id)}
    return case.call_and_validate(base_url=live.url, session=live.session, checks=checks, timeout=30)


def _fuzzed() -> list[Any]:
    """(operation, mode) pairs. Negative cases only where an input can be invalid: `GET /health` and
    `POST /refresh_views` take no body and no query, and their one header (`X-Request-Id`) accepts any
    string, so there is nothing to negate (schemathesis would only find the generation unsatisfiable);
    their credentials are refused in `test_refusals_conform`."""
    pairs = []
    for path, item in openapi.build()["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            pairs.append(pytest.param(label, GenerationMode.POSITIVE, id=f"{label}-positive"))
            takes_input = "requestBody" in operation or any(p.get("in") == "query" for p in operation["parameters"])
            if takes_input:
                pairs.append(pytest.param(label, GenerationMode.NEGATIVE, id=f"{label}-negative"))
    return pairs


@pytest.mark.parametrize(("label", "mode"), _fuzzed())
def test_generated_requests_conform(live: Live, label: str, mode: GenerationMode) -> None:
    """No 5xx for any generated input; every answer conforms to the document. Invalid input must also be
    refused (negative_data_rejection: 400/401/403/404/406/422/...)."""
    method, path = label.split(" ", 1)
    operation = _load_schema()[path][method]
    checks = CONFORMANCE + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _send(live, case, checks)

    run()


def _case(label: str, **parts: Any) -> Any:
    method, path = label.split(" ", 1)
    return _load_schema()[path][method].Case(**parts)


def _sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_success_answers_conform(live: Live) -> None:
    """The success path of each operation, which random inputs rarely reach (an existing session, the
    user's own id in ingested events), checked against the document like the generated cases."""
    group_bys = typing.get_args(schemas.UsageQuery.model_fields["group_by"].annotation)
    cases = [
        _case("POST /chat", body={"message": "hello", "session_id": "main", "max_tokens": 64}),
        _case("GET /chat", query={"limit": 1}),
        _case("GET /chat", query={"session_id": "main", "limit": 2}),
        _case("POST /compile", body={"task": "sum of a list", "language": "python"}),
        _case("POST /compile", body={"task": "top 5 customers", "language": "sql"}),
        *(_case("GET /usage", query={"group_by": group_by}) for group_by in group_bys),
        _case("POST /usage", body={"events": [
            {"event_id": str(uuid.uuid4()), "user_id": str(live.user), "service": "indexer",
             "operation": "embed", "model": "offline-dev", "input_tokens": 10, "cost_usd": "0.000010"}]}),
        _case("POST /refresh_views"),
        _case("GET /health"),
        _case("POST /keys", body={"name": "ci", "scopes": ["usage:read"], "expires_in_days": 30}),
        _case("GET /keys"),
        _case("POST /v1/chat/completions", body={"model": "offline-dev",
                                                 "messages": [{"role": "user", "content": "hi"}]}),
        _case("POST /v1/chat/completions", body={"model": "offline-dev", "stream": True,
                                                 "messages": [{"role": "user", "content": "hi"}]}),
        _case("POST /v1/messages", body={"model": "offline-dev", "max_tokens": 64,
                                         "messages": [{"role": "user", "content": "hi"}]}),
        _case("GET /v1/models"),
        _case("GET /v1/models", headers={"anthropic-version": "2023-06-01"}),
        _case("GET /v1/models/{model_id}", path_parameters={"model_id": "offline-dev"}),
        _case("GET /v1/models/{model_id}", path_parameters={"model_id": "offline-dev"},
              headers={"anthropic-version": "2023-06-01"}),
    ]
    for case in cases:
        response = _send(live, case, CONFORMANCE)
        assert response.status_code in (200, 201), (case.operation.label, response.text)
    created = _send(live, _case("POST /keys", body={"name": "to revoke"}), CONFORMANCE).json()
    revoked = _send(live, _case("DELETE /keys/{key_id}", path_parameters={"key_id": created["id"]}), CONFORMANCE)
    assert revoked.status_code == 200 and revoked.json()["id"] == created["id"]
    assert len(group_bys) >= 4

    listed = _send(live, _case("GET /chat", query={"session_id": "main", "limit": 2}), CONFORMANCE).json()
    assert [m["role"] for m in listed["items"]] == ["assistant", "user"] and listed["next_cursor"]
    ingested = _send(live, _case("POST /usage", body={"events": [
        {"event_id": str(uuid.uuid4()), "user_id": str(live.user), "service": "s", "operation": "o"}]}),
        CONFORMANCE).json()
    assert ingested == {"received": 1, "inserted": 1, "duplicates": 0}

    streamed = _send(live, _case("POST /chat", body={"message": "stream it", "session_id": "main",
                                                           "stream": True}), CONFORMANCE)
    # Each event was validated above (the `done` data as a ChatResponse); the order is checked here.
    assert streamed.headers["content-type"][0].startswith("text/event-stream")
    events = _sse_events(streamed.text)
    assert events[-1][0] == "done" and {name for name, _ in events[:-1]} == {"delta"}
    assert events[-1][1]["content"] == "".join(data["text"] for _, data in events[:-1])


@pytest.mark.parametrize("label", OPERATION_LABELS)
def test_refusals_conform(live: Live, label: str) -> None:
    """Without credentials, with the wrong kind of credentials, and with a body that is not JSON: each a
    documented error with the envelope."""
    method, path = label.split(" ", 1)
    operation_id = _load_schema()[path][method].definition.raw["operationId"]
    path_parameters = {"key_id": str(uuid.uuid4())} if "{key_id}" in path else {}
    if "{model_id}" in path:
        path_parameters = {"model_id": "offline-dev"}
    url = f"{live.url}{path.format(**path_parameters)}"
    attempts: list[dict[str, Any]] = []
    if operation_id != "health":
        attempts.append({"headers": {}})
        wrong = live.credentials("chat_send" if operation_id in SERVICE_OPERATIONS else "refresh_views")
        attempts.append({"headers": wrong})
    if method == "POST" and operation_id != "refresh_views":
        creds = live.credentials(operation_id)
        attempts.append({"headers": {**creds, "Content-Type": "text/plain"}, "data": "hi"})
        attempts.append({"headers": {**creds, "Content-Type": "application/json"}, "data": "{not json"})
        attempts.append({"headers": {**creds, "Content-Type": "application/json"}, "data": b"\xff\xfe"})
    for attempt in attempts:
        response = live.session.request(method, url, timeout=30, **attempt)
        case = _case(label, headers=attempt["headers"], path_parameters=path_parameters or None)
        case.validate_response(response, checks=CONFORMANCE)
        assert 400 <= response.status_code < 500, (attempt, response.status_code, response.text)
        assert error_request_id(path, response.json()) in (response.headers["X-Request-Id"], None)


def test_edge_inputs_conform(live: Live) -> None:
    """Inputs the generators rarely reach that once answered 500: each must be a documented 4xx (or 200)."""
    nul_event = {"event_id": str(uuid.uuid4()), "user_id": str(live.user), "service": "a\u0000b", "operation": "o"}
    raw_json = {"Content-Type": "application/json"}
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("GET /usage", {"params": {"to": "0001-01-05"}}),  # the default 30-day window starts before year 1
        ("GET /usage", {"params": {"from": "9999-12-01", "to": "9999-12-31"}}),
        ("POST /usage", {"json": {"events": [nul_event]}}),  # NUL: Postgres text cannot hold it (22P05)
        ("POST /chat", {"data": '{"message": "\\ud800"}', "headers": raw_json}),  # unpaired surrogate escape
        ("POST /chat", {"data": '{"message": "x", "session_id": "\\udfff"}', "headers": raw_json}),
        ("POST /compile", {"data": '{"task": "\\ud800", "language": "sql"}', "headers": raw_json}),
        ("POST /compile", {"data": "[" * 100_000, "headers": raw_json}),  # nested past the parser's recursion
        ("POST /usage", {"data": '{"events": [' * 50_000, "headers": raw_json}),
    ]
    for label, request in attempts:
        method, path = label.split(" ", 1)
        operation_id = _load_schema()[path][method].definition.raw["operationId"]
        headers = {**live.credentials(operation_id), **request.pop("headers", {})}
        response = live.session.request(method, f"{live.url}{path}", headers=headers, timeout=30, **request)
        _case(label, headers=headers).validate_response(response, checks=CONFORMANCE)
        assert response.status_code < 500, (label, response.text)


@pytest.mark.parametrize("path", list(openapi.build()["paths"]))
def test_undocumented_methods_are_405(live: Live, path: str) -> None:
    """A method a function does not answer is 405 with the envelope and an `Allow` header naming exactly the
    documented methods (plus OPTIONS, the undocumented CORS preflight)."""
    documented = {m.upper() for m in openapi.build()["paths"][path]}
    for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - documented):
        response = live.session.request(method, f"{live.url}{path}", headers=live.credentials("chat_send"),
                                        timeout=30)
        assert response.status_code == 405, (method, response.text)
        assert {m.strip() for m in response.headers["Allow"].split(",")} == documented | {"OPTIONS"}
        body = response.json()
        assert error_request_id(path, body) in (response.headers["X-Request-Id"], None)
        assert body["error"].get("code", "method_not_allowed") == "method_not_allowed"
