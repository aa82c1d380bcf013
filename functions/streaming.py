"""Streaming chat (`stream: true`): Server-Sent Events. `delta` events while the model writes, then one
`done` event with the message ids, token counts and cost. Billing settles once, at the end:

- the model finishes: the whole turn is settled as for a plain POST;
- the client disconnects, or the provider fails mid-stream: what was generated so far is kept as a
  `partial` answer and billed by its length (never more than the hold); with nothing generated the hold
  is released and nothing is charged; a provider failure ends the stream with an `error` event.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import flask

from functions import billing
from functions.chat import prepare_turn, response
from functions.errors import ApiError, InternalError
from functions.http import Context
from functions.providers import Completion, get_provider
from functions.schemas import ChatRequest

log = logging.getLogger(__name__)


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str, ensure_ascii=False)}\n\n"


def stream_chat(ctx: Context, body: ChatRequest) -> flask.Response:
    session, messages, max_tokens = prepare_turn(ctx, body)
    started = time.monotonic()
    prompt_chars = sum(len(m["content"]) for m in messages)
    hold = billing.begin(ctx, operation="chat", request_key=body.client_message_id or ctx.request_id,
                         model=body.model, prompt_chars=prompt_chars, max_tokens=max_tokens)
    if hold.status == "settled" and hold.result is not None:
        replayed = response(hold.result, hold.provider, replay=True)
        return _sse_response(iter([sse("done", replayed)]))
    provider = get_provider(hold.provider, ctx.settings)

    def settle(text: str, tokens_in: int, tokens_out: int, partial: bool) -> dict[str, Any]:
        result = billing.settle(ctx, hold, "settle_chat_turn", {
            "session_id": session, "user_message": body.message, "assistant_message": text,
            "input_tokens": tokens_in, "output_tokens": tokens_out, "client_message_id": body.client_message_id,
            "partial": partial}, started)
        return response(result, hold.provider, replay=bool(result.get("replay")))

    def events() -> Iterator[str]:
        parts: list[str] = []
        finished = False  # once True, the hold has been settled, released, or left to the expiry
        try:
            for item in provider.stream(hold.model, messages, max_tokens):
                if isinstance(item, Completion):
                    finished = True  # settle closes the hold, or leaves it to the expiry when it fails
                    yield sse("done", settle(item.text, item.input_tokens, item.output_tokens, False))
                    return
                parts.append(item.text)
                yield sse("delta", {"text": item.text})
            raise ApiError("the model stream ended without a final message", code="malformed_model_response")
        except Exception as exc:
            error = exc if isinstance(exc, ApiError) else InternalError("internal error")
            if not isinstance(exc, ApiError):
                log.exception("stream of hold %s broke", hold.id)
            log.warning(json.dumps({"function": ctx.function, "request_id": ctx.request_id, "event": "stream_error",
                                    "error_code": error.code, "delivered_chars": sum(len(p) for p in parts)}))
            if not finished:
                finished = True
                _end_partial(ctx, hold, parts, prompt_chars, error, started, settle)
            yield sse("error", error.body(ctx.request_id)["error"])
        finally:
            if not finished:  # the client went away (GeneratorExit while a delta was being sent)
                _end_partial(ctx, hold, parts, prompt_chars,
                             ApiError("client disconnected", code="client_disconnected"), started, settle)

    return _sse_response(events())


def _end_partial(ctx: Context, hold: billing.Hold, parts: list[str], prompt_chars: int, error: ApiError,
                 started: float, settle: Any) -> None:
    """Keep and bill what was delivered, or release the hold when nothing was."""
    text = "".join(parts)
    ctx.log_fields["stream_end"] = error.code
    if not text:
        billing.release(ctx, hold, error, started)
        return
    try:
        settle(text, math.ceil(prompt_chars / 4), math.ceil(len(text) / 4), True)
    except ApiError as exc:
        log.error("partial turn of hold %s not settled: %s", hold.id, exc.code)


def _sse_response(events: Iterator[str]) -> flask.Response:
    resp = flask.Response(flask.stream_with_context(events), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
