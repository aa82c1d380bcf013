"""`health`: a probe that writes and reads back through the database, reports the latest migration
applied (503 if it is behind the migrations this code ships with) and the model provider configured."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from functions.db import SERVICE
from functions.errors import ApiError, ServiceUnavailable
from functions.http import Context, endpoint, json_response
from functions.models import default_model


@functools.cache
def expected_migration() -> str | None:
    """The newest migration shipped with this code, when the migrations folder is deployed with it (read once
    per instance: the files do not change under a running process)."""
    from functions.migrations import MIGRATIONS_DIR, migrations

    shipped = migrations() if MIGRATIONS_DIR.is_dir() else []
    return shipped[-1].version if shipped else None


@endpoint("health", methods=("GET",))
async def handle(ctx: Context) -> Response | Mapping[str, Any]:
    """200 when the database answers a write and a read; 503 naming the failing part otherwise."""
    checks: dict[str, Any] = {"model_provider": ctx.settings.model_provider, "transport": ctx.settings.transport}
    failing: list[str] = []
    try:
        probe = await ctx.db.rpc("health_probe", {"source": "health"}, SERVICE)
        checks["database"] = {"ok": bool(probe["read_back"]), "latest_migration": probe["latest_migration"]}
        if not probe["read_back"]:
            failing.append("database")
        checks["default_model"] = await default_model(ctx.db, ctx.settings)
        expected = expected_migration()
        if expected is not None and (probe["latest_migration"] or "") < expected:
            failing.append("migrations")
            checks["database"]["expected_migration"] = expected
    except ApiError as exc:
        failing.append("database")
        checks["database"] = {"ok": False, "error": exc.code}
    except Exception as exc:  # the probe must answer even when the database layer itself is broken
        failing.append("database")
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    if failing:
        error = ServiceUnavailable(f"Unhealthy: {', '.join(failing)} failed the probe.", code="unhealthy",
                                   details={"failing": failing, **checks})
        ctx.log_fields["error_code"] = "unhealthy"
        return json_response(error.body(ctx.request_id), error.status)
    return {"status": "ok", **checks}
