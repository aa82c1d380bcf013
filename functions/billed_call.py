"""The billed model call, the one sequence chat, streamed chat and compile share:
begin (place the hold, or find the request's earlier one) -> call the model -> settle, or release.

It takes plain values (database, settings, user, request key) and knows nothing of HTTP. The rules
themselves (locks, quota, balance, idempotency, what a delivered stream costs) are in SQL; this module
sequences the RPCs and decides what happens to a hold when something in between fails:

- the model fails before anything reached the user: the hold is released, nothing is charged;
- a stream has delivered output: the hold is never released for free. Delivery is put on record
  (`touch_hold`) before the first delta goes out and again every HOLD_HEARTBEAT_SECONDS, which also keeps
  the hold of a live stream from expiring. Whatever ends the stream (the model, the client leaving, a
  provider failure, a settle that fails) ends in a charge for what was delivered; if the database stays
  unreachable, the scheduled expiry charges what was recorded.

Everything here is async. A stream is an async generator that Starlette may cancel (the client left) or
close at any point: its cleanup runs its database calls in a shielded cancel scope, so the partial settle
happens even inside a cancelled task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import anyio

from functions.db import SERVICE, Database
from functions.errors import ApiError, Conflict, InternalError, ServiceUnavailable
from functions.providers import Completion, Delta, Message, Provider, Usage, get_provider
from functions.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
# Writes a streamed call's result: (text, usage or None for a cut stream, partial, the model's finish reason)
# -> the settled result.
Settle = Callable[[str, "Usage | None", bool, "str | None"], Awaitable[dict[str, Any]]]


def usage_args(usage: Usage | None) -> dict[str, int | None]:
    """The token counts as the settle RPCs take them; none (a stream cut short) lets SQL estimate them."""
    return {"input_tokens": None, "output_tokens": None} if usage is None else dict(usage.as_args())


@dataclass(frozen=True)
class Hold:
    """A placed hold (or the request's earlier one, `replay`), with what begin returned alongside it."""

    id: str
    model: str
    provider: str
    status: str
    replay: bool
    result: dict[str, Any] | None
    session_id: str | None = None
    history: list[Message] = field(default_factory=list)

    @property
    def settled_result(self) -> dict[str, Any] | None:
        """The stored answer of a request already settled, for a replay."""
        if self.status == "settled" and self.result is not None and not self.result.get("estimated"):
            return self.result
        return None


@dataclass(frozen=True)
class StreamEvent:
    """What a stream sends: `delta` (text), then `done` (the settled result) or `error` (an ApiError)."""

    kind: Literal["delta", "done", "error"]
    text: str = ""
    raw: str | None = None  # a relayed provider event (pass-through), sent as it came
    raw_event: str | None = None  # its SSE event name, where the protocol has one
    result: dict[str, Any] | None = None
    error: ApiError | None = None


@dataclass
class BilledCall:
    """One billed model call of one user, keyed by its request key (idempotent on it)."""

    db: Database
    settings: Settings
    user_id: uuid.UUID
    request_key: str
    operation: Literal["chat", "compile"]
    log_fields: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    delivered_chars: int = 0  # of a streamed answer, already sent to the user

    # -- begin --------------------------------------------------------------------------------------------

    async def begin(self, rpc: Literal["begin_charge", "begin_chat_turn", "begin_api_call"],
                    args: dict[str, Any]) -> Hold:
        """Place the worst-case hold, or find the one this request key already has.

        A replay of a settled request comes back with its stored `result`. A replay of a request still in
        flight waits for it (up to REPLAY_WAIT_SECONDS), then answers 409. A replay of a failed request is 409.
        """
        args = {"user_id": self.user_id, "request_id": self.request_key, **args}
        if rpc == "begin_charge":
            args["operation"] = self.operation
        deadline = time.monotonic() + self.settings.replay_wait_seconds
        pause = 0.05
        while True:
            row = await self.db.rpc(rpc, args, SERVICE)
            hold = Hold(row["hold_id"], row["model"], row["provider"], row["status"], row["replay"], row.get("result"),
                        row.get("session_id"), row.get("history") or [])
            self.log_fields["model"] = hold.model
            if not hold.replay or hold.settled_result is not None:
                return hold
            if hold.status != "open":
                reason = (hold.result or {}).get("error_code", hold.status)
                raise Conflict(f"Request {self.request_key} already ended without an answer ({reason}); "
                               "send it again with a new id.",
                               code="request_failed", details={"hold_status": hold.status, "reason": reason})
            if time.monotonic() >= deadline:
                raise Conflict(f"Request {self.request_key} is still in progress; try again shortly.",
                               code="request_in_progress")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def provider(self, hold: Hold) -> Provider:
        """The provider of the hold's model; when there is none (unknown, or the offline model in
        production) the hold is released at once, with no usage row: no call was made."""
        try:
            return get_provider(hold.provider, self.settings)
        except ApiError as exc:
            await self.release(hold, exc, record_usage=False)
            raise

    # -- the model call -----------------------------------------------------------------------------------

    async def run(self, hold: Hold, call: Callable[[], Awaitable[T]]) -> T:
        """Run a model call whose answer reaches the user only after the settle: on any failure, release
        the hold (a usage row with status failed, no charge) and re-raise. Cancelled (the client left a
        plain request): released too, shielded from the cancellation."""
        try:
            return await call()
        except ApiError as exc:
            await self.release(hold, exc)
            raise
        except Exception:
            await self.release(hold, ApiError("The model call failed.", code="model_error"))
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.release(hold, ApiError("The client disconnected.", code="client_disconnected"))
            raise

    async def settle(self, hold: Hold, rpc: str, args: dict[str, Any]) -> dict[str, Any]:
        """Record the result and the charge in one transaction (idempotent on the hold).

        Database unreachable: the hold stays open for the scheduled expiry (no charge unless a stream
        recorded delivery). Any other failure releases the hold: nothing is left half-written, and a
        streamed answer already delivered is charged for by release_hold itself.
        """
        try:
            result: dict[str, Any] = await self.db.rpc(
                rpc, {"hold_id": hold.id, "latency_ms": self._ms(), **args}, SERVICE)
        except ServiceUnavailable:
            log.error(json.dumps({"event": "settle_failed", "hold_id": hold.id, "error_code": "database_unavailable",
                                  "then": "left open for the scheduled expiry"}))
            raise
        except ApiError as exc:
            log.error(json.dumps({"event": "settle_failed", "hold_id": hold.id, "error_code": exc.code}))
            await self.release(hold, exc, record_usage=False)
            raise
        self.log_fields.update(tokens_in=result.get("input_tokens"), tokens_cached=result.get("cached_input_tokens"),
                               tokens_cache_write=result.get("cache_write_tokens"),
                               tokens_out=result.get("output_tokens"), tokens_reasoning=result.get("reasoning_tokens"),
                               cost_usd=result.get("cost_usd"))
        return result

    async def release(self, hold: Hold, error: ApiError, *, record_usage: bool = True) -> None:
        """Close the hold without a charge (or, with recorded delivery, for what was delivered). If even
        that fails, the scheduled expiry closes it; log it."""
        try:
            await self.db.rpc("release_hold", {"hold_id": hold.id, "error_code": error.code, "latency_ms": self._ms(),
                                         "record_usage": record_usage, "delivered_chars": self.delivered_chars},
                        SERVICE)
        except ApiError as exc:
            log.error(json.dumps({"event": "release_failed", "hold_id": hold.id, "error_code": exc.code,
                                  "then": "left open for the scheduled expiry"}))

    # -- streams ------------------------------------------------------------------------------------------

    async def stream(self, hold: Hold, items: AsyncIterator[Delta | Completion], settle: Settle,
                     ) -> AsyncIterator[StreamEvent]:
        """Relay a model stream, with delivery on record before the user has it, and end it billed.

        `settle(text, usage, partial, finish_reason)` writes the turn. The generator may be closed at any yield or
        cancelled at any await (the client left): the `finally` then bills what was delivered, shielded
        from the cancellation. `items` is closed here whatever happens.
        """
        parts: list[str] = []
        last_report = 0.0
        reported = False  # delivery is on record before the first event goes out
        finished = False  # once True, the hold has been settled, released, or left to the expiry
        try:
            async with contextlib.aclosing(items):  # type: ignore[type-var]
                async for item in items:
                    if isinstance(item, Completion):
                        finished = True
                        with anyio.CancelScope(shield=True):  # a client leaving now must not cut the settle
                            result = await settle(item.text, item.usage, False, item.finish_reason)
                        yield StreamEvent("done", result=result)
                        return
                    size = len(item.text) + item.other_chars
                    if not size and item.raw is None:
                        continue
                    now = time.monotonic()
                    if not reported or now - last_report >= self.settings.hold_heartbeat_seconds:
                        await self._report(hold, self.delivered_chars + size, first=not reported)
                        last_report, reported = now, True
                    parts.append(item.text)
                    self.delivered_chars += size
                    yield StreamEvent("delta", text=item.text, raw=item.raw, raw_event=item.event)
            raise ApiError("The model stream ended without a final message.", code="malformed_model_response")
        except Exception as exc:
            error = exc if isinstance(exc, ApiError) else InternalError("Internal error.")
            if not isinstance(exc, ApiError):
                log.exception("stream of hold %s broke", hold.id)
            log.warning(json.dumps({"event": "stream_error", "hold_id": hold.id, "error_code": error.code,
                                    "delivered_chars": self.delivered_chars}))
            if not finished:
                finished = True
                await self._end_early(hold, "".join(parts), error, settle)
            yield StreamEvent("error", error=error)
        finally:
            if not finished:  # the client went away: GeneratorExit at a yield, or cancelled at an await
                with anyio.CancelScope(shield=True):
                    await self._end_early(hold, "".join(parts),
                                          ApiError("The client disconnected.", code="client_disconnected"), settle)

    async def _report(self, hold: Hold, delivered_chars: int, *, first: bool) -> None:
        """Put delivery on record before it happens. The first report must succeed (else nothing is sent);
        later ones may fail while the database is away (the stream goes on; the settle records it all)."""
        try:
            status = await self.db.rpc("touch_hold", {"hold_id": hold.id, "delivered_chars": delivered_chars}, SERVICE)
        except ServiceUnavailable:
            if first:
                raise
            log.warning(json.dumps({"event": "heartbeat_failed", "hold_id": hold.id}))
            return
        if status != "open":
            raise Conflict(f"The hold of this request was closed ({status}) while the answer streamed.",
                           code="hold_closed", details={"hold_status": status})

    async def _end_early(self, hold: Hold, text: str, error: ApiError,
                         settle: Settle) -> None:
        """Keep and bill what was delivered, or release the hold when nothing was. The provider reports no
        usage for a stream cut short: the final delivery goes on record (`touch_hold`) and the settle, sent
        no counts, estimates them in SQL from the hold (the one estimate: `private.estimated_tokens`)."""
        self.log_fields["stream_end"] = error.code
        if not self.delivered_chars:
            await self.release(hold, error)
            return
        with contextlib.suppress(ApiError):  # the settle below fails too if the database is away
            await self.db.rpc("touch_hold", {"hold_id": hold.id, "delivered_chars": self.delivered_chars}, SERVICE)
        with contextlib.suppress(ApiError):  # logged by settle; release_hold or the expiry charges the delivered part
            await settle(text, None, True, None)

    def _ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)
