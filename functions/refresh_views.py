"""`refresh_views`: the scheduled job. Rolls up the usage rows written since the last run, creates the
usage partitions ahead and drops those past the retention (USAGE_RETENTION_MONTHS), and expires stale holds
(released, and logged one line per hold). Reachable as HTTP with the service secret and as a CloudEvent
target (Pub/Sub from Cloud Scheduler)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from functions import runtime
from functions.db import SERVICE
from functions.http import Context, endpoint

log = logging.getLogger("functions.refresh_views")


async def run() -> dict[str, Any]:
    """Do the scheduled work once; what it did and how long it took."""
    started = time.perf_counter()
    db = runtime.database()
    older_than = runtime.settings().hold_expiry_seconds
    expired = await db.rpc("expire_stale_holds", {"older_than_seconds": older_than}, SERVICE)
    for hold_id in expired["hold_ids"]:
        log.warning(json.dumps({"event": "hold_expired", "hold_id": hold_id}))
    retention = runtime.settings().usage_retention_months  # unset: the value stored in the database
    refreshed = await db.rpc("refresh_usage_views", {"retention_months": retention} if retention else {}, SERVICE)
    return {"refreshed": [refreshed], "expired_holds": expired,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2)}


@endpoint("refresh_views", methods=("POST",))
async def handle(ctx: Context) -> Response | Mapping[str, Any]:
    """Refresh the usage views and expire stale holds (service secret required)."""
    ctx.authenticate_service()
    result = await run()
    ctx.log_fields.update(expired=result["expired_holds"]["expired"])
    return result


async def on_event(cloud_event: Any) -> None:
    """CloudEvent entry point (Pub/Sub message from Cloud Scheduler): runs the job, logs the outcome.
    Failures raise, so the event is retried by the platform."""
    result = await run()
    log.info(json.dumps({"function": "refresh_views", "trigger": "cloudevent",
                         "event_id": getattr(cloud_event, "get", lambda _k: None)("id"), **result}, default=str))
