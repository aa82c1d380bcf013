"""`chat`: POST sends a message and answers with the model's reply (the whole turn saved and billed
atomically); GET lists the caller's sessions, or one session's messages, newest first, with cursors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import flask

from functions import billing
from functions.errors import Unprocessable
from functions.http import Context, endpoint
from functions.providers import Message, get_provider
from functions.schemas import ChatListQuery, ChatRequest, CursorError, decode_cursor, encode_cursor

SYSTEM_PROMPT = "You are a helpful assistant for programming and data work. Answer concisely."


def session_uuid(user_id: uuid.UUID, session_id: str | None) -> tuple[uuid.UUID | None, bool]:
    """(session UUID, must it exist already). UUIDs name existing sessions; any other string maps to a
    UUIDv5 scoped by the user, so two users' "main" are different sessions; None starts a new one."""
    if session_id is None:
        return None, False
    try:
        return uuid.UUID(session_id), True
    except ValueError:
        return uuid.uuid5(user_id, session_id), False


@endpoint("chat", methods=("GET", "POST"))
def handle(ctx: Context) -> flask.Response | Mapping[str, Any]:
    """Send a message (POST) or list sessions and messages (GET)."""
    principal = ctx.authenticate_user()
    if ctx.request.method == "GET":
        return _list(ctx)
    body = ctx.json_body(ChatRequest)
    if body.stream:
        from functions.streaming import stream_chat

        return stream_chat(ctx, body)
    return send(ctx, body, principal.user_id)


def prepare_turn(ctx: Context, body: ChatRequest) -> tuple[uuid.UUID | None, list[Message], int]:
    """Session id, the messages for the model (system, history within budget, the new message), max_tokens."""
    assert ctx.principal is not None
    session, must_exist = session_uuid(ctx.principal.user_id, body.session_id)
    history: list[Message] = []
    if session is not None:
        history = ctx.db.rpc("chat_history", {
            "session_id": session, "max_chars": ctx.settings.history_max_chars, "must_exist": must_exist,
            "user_id": ctx.principal.user_id}, ctx.principal.caller)
    messages: list[Message] = [{"role": "system", "content": SYSTEM_PROMPT}, *history,
                               {"role": "user", "content": body.message}]
    return session, messages, body.max_tokens or ctx.settings.default_max_tokens


def send(ctx: Context, body: ChatRequest, user_id: uuid.UUID) -> Mapping[str, Any]:
    session, messages, max_tokens = prepare_turn(ctx, body)
    started = time.monotonic()
    hold = billing.begin(ctx, operation="chat", request_key=body.client_message_id or ctx.request_id,
                         model=body.model, prompt_chars=sum(len(m["content"]) for m in messages),
                         max_tokens=max_tokens)
    if hold.status == "settled" and hold.result is not None:
        return response(hold.result, hold.provider, replay=True)
    provider = get_provider(hold.provider, ctx.settings)
    done = billing.call_model(ctx, hold, started, lambda: provider.complete(hold.model, messages, max_tokens))
    result = billing.settle(ctx, hold, "settle_chat_turn", {
        "session_id": session, "user_message": body.message, "assistant_message": done.text,
        "input_tokens": done.input_tokens, "output_tokens": done.output_tokens,
        "client_message_id": body.client_message_id}, started)
    return response(result, hold.provider, replay=bool(result.get("replay")))


def response(result: Mapping[str, Any], provider: str, *, replay: bool) -> dict[str, Any]:
    """The answer to a turn, the same whether it was just settled or replayed from the hold."""
    return {
        "request_id": result["request_id"], "session_id": result["session_id"],
        "user_message_id": result["user_message_id"], "message_id": result["assistant_message_id"],
        "content": result["content"], "model": result["model"], "provider": provider,
        "usage": {"input_tokens": result["input_tokens"], "output_tokens": result["output_tokens"],
                  "cost_usd": result["cost_usd"]},
        "balance_usd": result["balance_usd"], "partial": bool(result.get("partial")), "replay": replay,
    }


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


def _list(ctx: Context) -> dict[str, Any]:
    assert ctx.principal is not None
    query = ctx.query(ChatListQuery)
    user = ctx.principal.user_id
    try:
        if query.session_id is None:
            after = decode_cursor(query.cursor, {"t", "id"}) if query.cursor else None
            if after is not None:
                after = {"t": _timestamp(after["t"]), "id": _uuid(after["id"])}
            items = ctx.db.rpc("list_sessions", {
                "limit": query.limit, "before_at": after and after["t"], "before_id": after and after["id"],
                "user_id": user}, ctx.principal.caller)
            last = items[-1] if len(items) == query.limit else None
            cursor = encode_cursor({"t": last["last_message_at"], "id": last["id"]}) if last else None
        else:
            session, _ = session_uuid(user, query.session_id)
            after = decode_cursor(query.cursor, {"seq"}) if query.cursor else None
            if after is not None and (type(after["seq"]) is not int or not 0 < after["seq"] < 2**31):
                raise CursorError("cursor is not one this API issued")
            items = ctx.db.rpc("list_messages", {
                "session_id": session, "limit": query.limit, "before_seq": after and after["seq"],
                "user_id": user}, ctx.principal.caller)
            cursor = encode_cursor({"seq": items[-1]["seq"]}) if len(items) == query.limit else None
    except CursorError as exc:
        raise Unprocessable(f"cursor: {exc}", code="validation_error",
                            details=[{"field": "cursor", "message": str(exc), "type": "cursor"}]) from exc
    return {"items": items, "next_cursor": cursor}
