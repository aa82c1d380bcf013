"""`usage`: GET the caller's usage for a date range (grouped by day, model, operation or service) with
month spend, quota left and balance, read from the replica when one is configured; POST (service secret
only) ingests a batch of up to 1,000 events into the primary."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from starlette.responses import Response

from functions import runtime
from functions.db import SERVICE, RawJson
from functions.http import Context, endpoint
from functions.schemas import IngestRequest, UsageEvent, UsageQuery

DEFAULT_DAYS = 30
_EVENTS = TypeAdapter(list[UsageEvent])


@endpoint("usage", methods=("GET", "POST"))
async def handle(ctx: Context) -> Response | Mapping[str, Any]:
    """Summary for the caller (GET) or batch ingest for services (POST)."""
    if ctx.method == "POST":
        ctx.authenticate_service()
        batch = await ctx.json_body(IngestRequest)
        events = RawJson(_EVENTS.dump_json(batch.events, exclude_none=True).decode())  # one Rust pass, no dicts
        result: dict[str, Any] = await ctx.db.rpc("ingest_usage", {"events": events}, SERVICE)
        ctx.log_fields.update(events=result["received"], inserted=result["inserted"])
        return result
    principal = await ctx.authenticate_user()
    query = ctx.query(UsageQuery)
    to = query.to or datetime.now(UTC).date()
    default_span = timedelta(days=DEFAULT_DAYS - 1)
    since = query.from_ or (to - default_span if to >= date.min + default_span else date.min)  # no overflow
    summary: dict[str, Any] = await runtime.read_database().rpc("usage_summary", {  # a replica when configured
        "from": since, "to": to, "group_by": query.group_by, "user_id": principal.user_id}, principal.caller)
    return summary
