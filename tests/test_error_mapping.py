"""Both transports turn a database error into the same HTTP status."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from functions.db.supabase import _map
from functions.errors import from_sqlstate
from tests.postgrest import pgrst_status


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
