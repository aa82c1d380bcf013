"""`chat`: POST sends a message and answers with the model's reply (the whole turn saved and billed
atomically), or with `stream: true` streams it as Server-Sent Events; GET lists the caller's sessions,
or one session's messages, newest first, with cursors.

Streams: `delta` events while the model writes, then one `done` event (the same body as a plain POST),
or an `error` event. Output that reached the client is always billed (see functions.billed_call).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from starlette.responses import Response

from functions import runtime
from functions.billed_call import BilledCall, StreamEvent, usage_args
from functions.errors import Unprocessable
from functions.http import Context, SSEResponse, endpoint
from functions.models import active_models, default_model
from functions.providers import Message, Usage
from functions.schemas import ChatListQuery, ChatRequest, ChatResponse, CursorError, decode_cursor, encode_cursor

SYSTEM_PROMPT = "You are a helpful assistant for programming and data work. Answer concisely."


def session_ref(user_id: uuid.UUID, session_id: str | None) -> dict[str, Any]:
    """How a client's `session_id` names a session: a UUID is an existing session's id; any other string
    is the session's name (unique per user; created on first use), with the UUIDv5 such sessions had
    before they kept their name; none starts a new session."""
    if session_id is None:
        return {}
    try:
        return {"session_id": uuid.UUID(session_id)}
    except ValueError:
        return {"session_name": session_id, "legacy_session_id": uuid.uuid5(user_id, session_id)}


@endpoint("chat", methods=("GET", "POST"), subpaths={"/models": ("GET",)})
async def handle(ctx: Context) -> Response | Mapping[str, Any]:
    """Send a message (POST), list sessions and messages (GET), or list the models (GET /models)."""
    await ctx.authenticate_user()
    if ctx.method == "GET":
        if ctx.path.rstrip("/") == "/models":
            models = await active_models(ctx.db)
            return {"items": models, "default_model": await default_model(ctx.db, ctx.settings, models)}
        return await _list(ctx)
    body = await ctx.json_body(ChatRequest)
    if body.client_message_id:
        ctx.request_id = body.client_message_id  # one id in the body, the header, the log line and the events
    return await send(ctx, body)


async def send(ctx: Context, body: ChatRequest) -> Response | dict[str, Any]:
    """One turn: hold (with the session and its history), the model, the settle; streamed or not."""
    assert ctx.principal is not None
    call = BilledCall(ctx.db, ctx.settings, ctx.principal.user_id, ctx.request_id, "chat", ctx.log_fields)
    max_tokens = body.max_tokens or ctx.settings.default_max_tokens
    model = body.model or ctx.settings.default_model
    ref = session_ref(ctx.principal.user_id, body.session_id)
    hold = await call.begin("begin_chat_turn", {
        "model": model, "provider": ctx.settings.model_provider, "fixed_chars": len(SYSTEM_PROMPT) + len(body.message),
        "max_output_tokens": max_tokens, "history_max_chars": ctx.settings.history_max_chars, **ref})
    name = ref.get("session_name")

    def answer(result: dict[str, Any], replay: bool) -> dict[str, Any]:
        return ChatResponse.from_result(result, provider=hold.provider, session_name=name,
                                        replay=replay).model_dump(mode="json")

    if (stored := hold.settled_result) is not None:
        return SSEResponse(_one(sse("done", answer(stored, True)))) if body.stream else answer(stored, True)
    messages: list[Message] = [{"role": "system", "content": SYSTEM_PROMPT}, *hold.history,
                               {"role": "user", "content": body.message}]
    provider = await call.provider(hold)

    async def settle(text: str, usage: Usage | None, partial: bool, _finish: str | None = None) -> dict[str, Any]:
        result = await call.settle(hold, "settle_chat_turn", {
            "user_message": body.message, "assistant_message": text, **usage_args(usage),
            "client_message_id": body.client_message_id, "partial": partial})
        return answer(result, bool(result.get("replay")))

    if body.stream:
        events = call.stream(hold, provider.stream(hold.model, messages, max_tokens), settle)
        return SSEResponse(_sse_lines(ctx, events))
    done = await call.run(hold, lambda: provider.complete(hold.model, messages, max_tokens))
    return await settle(done.text, done.usage, False)


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str, ensure_ascii=False)}\n\n"


async def _sse_lines(ctx: Context, events: AsyncIterator[StreamEvent]) -> AsyncIterator[str]:
    """The events as SSE text; closing this generator closes (and so bills) the stream of events."""
    try:
        async for event in events:
            if event.kind == "delta":
                yield sse("delta", {"text": event.text})
            elif event.kind == "done":
                yield sse("done", event.result)
            else:
                assert event.error is not None
                yield sse("error", event.error.body(ctx.request_id)["error"])
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # SSEResponse shields this from cancellation


async def _one(text: str) -> AsyncIterator[str]:
    yield text


def _timestamp(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise CursorError("cursor is not one this API issued") from exc
    if parsed.tzinfo is None:
        raise CursorError("cursor is not one this API issued")
    return parsed


def _uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise CursorError("cursor is not one this API issued") from exc


async def _list(ctx: Context) -> dict[str, Any]:
    assert ctx.principal is not None
    query = ctx.query(ChatListQuery)
    user = ctx.principal.user_id
    try:
        if query.session_id is None:
            after = decode_cursor(query.cursor, {"t", "id"}) if query.cursor else None
            if after is not None:
                after = {"t": _timestamp(after["t"]), "id": _uuid(after["id"])}
            items = await runtime.read_database().rpc("list_sessions", {
                "limit": query.limit, "before_at": after and after["t"], "before_id": after and after["id"],
                "user_id": user}, ctx.principal.caller)
            last = items[-1] if len(items) == query.limit else None
            cursor = encode_cursor({"t": last["last_message_at"], "id": last["id"]}) if last else None
        else:
            after = decode_cursor(query.cursor, {"seq"}) if query.cursor else None
            if after is not None and (type(after["seq"]) is not int or not 0 < after["seq"] < 2**31):
                raise CursorError("cursor is not one this API issued")
            items = await runtime.read_database().rpc("list_messages", {
                **session_ref(user, query.session_id), "limit": query.limit, "before_seq": after and after["seq"],
                "user_id": user}, ctx.principal.caller)
            cursor = encode_cursor({"seq": items[-1]["seq"]}) if len(items) == query.limit else None
    except CursorError as exc:
        raise Unprocessable(f"cursor: {exc}", code="validation_error",
                            details=[{"field": "cursor", "message": str(exc), "type": "cursor"}]) from exc
    return {"items": items, "next_cursor": cursor}
