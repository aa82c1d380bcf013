"""Both transports turn a database error into the same HTTP status."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.db.supabase import _map
from functions.errors import BY_STATUS, MESSAGES, ApiError, from_sqlstate, message_for
from tests.support.postgrest import pgrst_status
from tests.support.rows import Profile


@pytest.mark.parametrize(("sqlstate", "status"), [
    ("PT402", 402), ("PT403", 403), ("PT404", 404), ("PT409", 409), ("PT422", 422), ("PT429", 429),
    ("23505", 409), ("23503", 409), ("23514", 400), ("22P02", 400), ("22P05", 400), ("42501", 403),
    ("XX000", 500), ("P0002", 500),
])
def test_postgres_and_supabase_transports_map_sqlstates_alike(sqlstate: str, status: int) -> None:
    direct = from_sqlstate(sqlstate, "some_error", None)
    over_http = _map(SimpleNamespace(code=sqlstate, message="some_error", details=None))
    assert direct.status == over_http.status == status
    if status < 500:
        assert pgrst_status(sqlstate, "authenticated") == status  # and PostgREST itself agrees


def test_unexpected_database_errors_do_not_leak_their_message() -> None:
    error = from_sqlstate("XX000", "disk on fire at /var/lib/postgresql", None)
    assert error.status == 500 and "disk" not in error.message


@pytest.mark.parametrize("code", ["PGRST202", "503", "520"])
def test_postgrest_and_gateway_codes_are_not_sqlstates(code: str) -> None:
    assert _map(SimpleNamespace(code=code, message="x", details=None)).status == 500


# -- every error reads as a sentence ----------------------------------------------------------------------

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
_RAISE_MESSAGE = re.compile(r"message\s*=\s*(?P<value>[^,;\n]+)", re.IGNORECASE)
_CODE_LITERAL = re.compile(r"^'(?P<code>[a-z][a-z0-9_]*)'(?:\s*\|\|\s*(?P<suffix>\w+))?\s*$")


def _is_sentence(text: str) -> bool:
    return bool(text) and text[0].isupper() and text.endswith((".", "?", "!")) and "{" not in text


def raised_codes() -> dict[str, set[str]]:
    """Every code SQL raises as an API error (`errcode = 'PTnnn', message = '...'`) in the migrations, with the
    files raising it. A code built
    as `'account_' || v_status` expands to each status a profile can have that is refused (all but active)."""
    statuses = set(typing.get_args(Profile.model_fields["status"].annotation)) - {"active"}
    expansions = {"account_": {f"account_{s}" for s in statuses}}
    found: dict[str, set[str]] = {}
    for path in sorted(MIGRATIONS.glob("*.sql")):
        for statement in re.findall(r"raise\s+exception\s+using\b[^;]*;", path.read_text(), re.IGNORECASE):
            if not re.search(r"errcode\s*=\s*'PT\d{3}'", statement, re.IGNORECASE):
                continue  # not an API error (e.g. an operator-only function's own sentence)
            for m in _RAISE_MESSAGE.finditer(statement):
                literal = _CODE_LITERAL.match(m["value"].strip())
                assert literal, f"{path.name}: SQL must raise a snake_case code literal, not {m['value']!r}"
                if literal["suffix"]:
                    assert literal["code"] in expansions, f"{path.name}: unknown computed code {m['value']!r}"
                    codes = expansions[literal["code"]]
                else:
                    codes = {literal["code"]}
                for code in codes:
                    found.setdefault(code, set()).add(path.name)
    return found


def test_every_code_sql_raises_has_a_sentence() -> None:
    """New SQL errors cannot ship as bare codes: each `message = '<code>'` needs an entry in errors.MESSAGES."""
    codes = raised_codes()
    assert len(codes) >= 40, sorted(codes)  # the walk itself works
    missing = {code: sorted(files) for code, files in codes.items() if code not in MESSAGES}
    assert missing == {}, f"add a sentence to functions/errors.py MESSAGES for: {missing}"


@pytest.mark.parametrize("code", sorted(MESSAGES))
def test_each_sentence_reads_well_with_and_without_the_sql_detail(code: str) -> None:
    plain = message_for(code)
    with_detail = message_for(code, "the values, 1 < 2")
    assert _is_sentence(plain) and _is_sentence(with_detail), (plain, with_detail)
    assert ("(the values, 1 < 2)" in with_detail) == ("{detail}" in MESSAGES[code])
    assert "  " not in plain and " ." not in plain and " ;" not in plain


def test_sql_errors_carry_code_sentence_and_reason() -> None:
    error = from_sqlstate("PT402", "insufficient_credits", "available 0.200000 < this call 0.500000")
    assert error.status == 402 and error.code == "insufficient_credits"
    assert error.message == ("Your balance cannot cover this call (available 0.200000 < this call 0.500000); "
                             "top up to continue.")
    assert error.details == {"reason": "available 0.200000 < this call 0.500000"}
    named = from_sqlstate("PT422", "invalid_message", "message: 1 to 32000 characters")
    assert named.details == {"reason": "message: 1 to 32000 characters",
                             "fields": [{"field": "message", "message": "1 to 32000 characters",
                                         "type": "invalid_message"}]}
    assert from_sqlstate("PT404", "session_not_found", None).details is None


@given(st.text(st.characters(codec="ascii"), max_size=80),
       st.sampled_from(sorted(BY_STATUS.values(), key=lambda c: c.status)))
def test_every_api_error_message_is_a_sentence(text: str, cls: type[ApiError]) -> None:
    """Whatever a raise site passes, the message starts with no lowercase letter and ends a sentence."""
    message = cls(text).message
    assert message and not message[0].islower() and message.endswith((".", "?", "!")), message
    assert _is_sentence(cls().message)


@pytest.mark.parametrize("details", [None, [], {}, [{"field": "x", "message": "m", "type": "t"}], {"a": 1}, "why"])
def test_details_always_have_one_shape(details: Any) -> None:
    shaped = ApiError("x", details=details).details
    assert shaped is None or isinstance(shaped, dict)
    if isinstance(details, list) and details:
        assert shaped == {"fields": details}
    if isinstance(details, str):
        assert shaped == {"reason": "why"}


# -- the same through the functions, over both transports ---------------------------------------------------

def test_a_too_long_message_is_a_sentence_naming_the_field_in_characters(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    r = api.post("chat", {"message": "x" * 32001}, user=uid)
    assert r.status_code == 422
    error = r.json["error"]
    assert error["message"] == "Field 'message' must be at most 32000 characters."
    assert error["details"] == {"fields": [
        {"field": "message", "message": "must be at most 32000 characters", "type": "string_too_long"}]}


def test_several_bad_fields_are_listed_in_one_sentence(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    r = api.post("chat", {"message": "", "max_tokens": 0, "mesage": "typo"}, user=uid)
    error = r.json["error"]
    assert r.status_code == 422 and error["message"].startswith("3 problems: ")
    for part in ("'message' must not be empty", "'max_tokens' must be at least 1",
                 "'mesage' is not a field of this request"):
        assert part in error["message"], error["message"]
    assert {f["field"] for f in error["details"]["fields"]} == {"message", "max_tokens", "mesage"}


def test_a_bad_query_parameter_is_named_as_one(api: Any) -> None:
    r = api.get("usage", user=api.db.make_user(), query_string={"group_by": "week"})
    assert r.status_code == 422
    assert r.json["error"]["message"].startswith("Query parameter 'group_by' must be 'day', 'model'")


def test_a_sql_error_reads_as_a_sentence_with_its_values(api: Any) -> None:
    r = api.get("usage", user=api.db.make_user(), query_string={"from": "2026-03-01", "to": "2026-02-01"})
    assert r.status_code == 422, r.json
    assert r.json["error"] | {"request_id": None} == {
        "code": "invalid_range", "message": "The date range is not valid (from must be on or before to).",
        "request_id": None, "details": {"reason": "from must be on or before to"}}


def test_an_unknown_session_says_why(api: Any) -> None:
    r = api.get("chat", user=api.db.make_user(), query_string={"session_id": "6f1c0e4e-0000-4000-8000-000000000000"})
    assert r.status_code == 404 and r.json["error"]["code"] == "session_not_found"
    assert r.json["error"]["message"] == message_for("session_not_found", r.json["error"]["details"]["reason"])
    assert r.json["error"]["message"].startswith("The session was not found (no live session 6f1c0e4e-")
