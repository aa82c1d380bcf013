"""The billed model call, shared by chat and compile: begin (hold) -> call the model -> settle or release.

The rules themselves (locks, quota, balance, idempotency) are in SQL; this module only sequences the
RPCs and decides what happens to a hold when something in between fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from functions.db import SERVICE
from functions.errors import ApiError, Conflict, ServiceUnavailable
from functions.http import Context

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Hold:
    id: str
    model: str
    provider: str
    status: str
    replay: bool
    result: dict[str, Any] | None


def _hold(row: dict[str, Any]) -> Hold:
    return Hold(row["hold_id"], row["model"], row["provider"], row["status"], row["replay"], row.get("result"))


def begin(ctx: Context, *, operation: str, request_key: str, model: str | None, prompt_chars: int,
          max_tokens: int, calls: int = 1) -> Hold:
    """Place the worst-case hold, or find the one this request key already has.

    A replay of a settled request comes back with its stored `result`. A replay of a request still in
    flight waits for it (up to REPLAY_WAIT_SECONDS), then answers 409. A replay of a failed request is 409.
    """
    assert ctx.principal is not None
    args = {"user_id": ctx.principal.user_id, "request_id": request_key, "operation": operation, "model": model,
            "prompt_chars": prompt_chars, "max_output_tokens": max_tokens, "calls": calls}
    deadline = time.monotonic() + ctx.settings.replay_wait_seconds
    pause = 0.05
    while True:
        hold = _hold(ctx.db.rpc("begin_charge", args, SERVICE))
        ctx.log_fields["model"] = hold.model
        if not hold.replay or hold.status == "settled":
            return hold
        if hold.status != "open":
            reason = (hold.result or {}).get("error_code", hold.status)
            raise Conflict(f"request {request_key} already failed ({reason}); send it with a new id",
                           code="request_failed", details={"hold_status": hold.status, "reason": reason})
        if time.monotonic() >= deadline:
            raise Conflict(f"request {request_key} is still in progress", code="request_in_progress")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def release(ctx: Context, hold: Hold, error: ApiError, started: float, *, record_usage: bool = True) -> None:
    """Close the hold without a charge. If even that fails, the scheduled expiry closes it; log it."""
    try:
        ctx.db.rpc("release_hold", {"hold_id": hold.id, "error_code": error.code,
                                    "latency_ms": _ms(started), "record_usage": record_usage}, SERVICE)
    except ApiError as exc:
        log.error("hold %s not released (%s); expiry will close it", hold.id, exc.code)


def call_model(ctx: Context, hold: Hold, started: float, call: Callable[[], T]) -> T:
    """Run the model call; on any failure release the hold (usage row with status failed) and re-raise."""
    try:
        return call()
    except ApiError as exc:
        release(ctx, hold, exc, started)
        raise
    except Exception as exc:
        release(ctx, hold, ApiError("model call failed", code="model_error"), started)
        raise exc


def settle(ctx: Context, hold: Hold, rpc: str, args: dict[str, Any], started: float) -> dict[str, Any]:
    """Record the result and the charge in one transaction.

    Database unreachable: the hold stays open until the scheduled expiry releases it, so nothing is
    charged (a retry with the same key gets 409 and must use a new key). Any other failure releases the
    hold without a usage row: no message, no usage, no charge is left behind.
    """
    try:
        result: dict[str, Any] = ctx.db.rpc(rpc, {"hold_id": hold.id, "latency_ms": _ms(started), **args}, SERVICE)
    except ServiceUnavailable:
        log.error("settle of hold %s failed: database unavailable; expiry will release it", hold.id)
        raise
    except ApiError as exc:
        release(ctx, hold, exc, started, record_usage=False)
        raise
    ctx.log_fields.update(tokens_in=result.get("input_tokens"), tokens_out=result.get("output_tokens"),
                          cost_usd=result.get("cost_usd"))
    return result


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
