"""Anthropic Messages (`POST /v1/messages`) as this API speaks it to clients.

Errors: `{"type": "error", "error": {"type", "message"}, "request_id"}` with Anthropic's statuses and types:
an exhausted balance or monthly quota is 402 `billing_error`, a rate limit 429 `rate_limit_error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from functions.errors import ApiError
from functions.protocols import (
    CallRequest,
    json_error,
    last_user_text,
    refuse_untranslated,
    retry_headers,
    sse_data,
    text_of,
)
from functions.providers import Completion, Message, Usage, anthropic_completion

name: Literal["anthropic"] = "anthropic"

# Request headers passed through to a provider of this protocol.
FORWARDED_HEADERS = ("anthropic-beta",)

# What a call to a model of the other protocol (OpenAI) carries over; anything else is refused there.
TRANSLATED = {"model", "messages", "system", "max_tokens", "stream", "temperature", "top_p", "stop_sequences"}
IGNORED = {"metadata", "service_tier"}


class AnthropicMessageParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesRequest(BaseModel):
    """A Messages request. Fields not named here pass through to a model of this protocol."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=100)
    messages: list[AnthropicMessageParam] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = None


Request = MessagesRequest


def call_request(request: MessagesRequest) -> CallRequest:
    body = request.model_dump(mode="json", exclude_unset=True)
    user_text, images = last_user_text(request.messages)
    options = {k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None}
    if body.get("stop_sequences"):
        options["stop"] = body["stop_sequences"]
    return CallRequest(body, request.model, bool(request.stream), request.max_tokens, user_text, images, False, options)


def conversation(request: CallRequest, target: str) -> tuple[list[Message], dict[str, Any]]:
    """The text conversation and options for a model of the other protocol; 400 naming what is not carried."""
    refuse_untranslated(request.body, TRANSLATED | IGNORED, target)
    messages: list[Message] = []
    if request.body.get("system"):
        messages.append({"role": "system", "content": text_of(request.body["system"], "system", refuse=True)[0]})
    for i, m in enumerate(request.body["messages"]):
        text, _ = text_of(m["content"], f"messages.{i}.content", refuse=True)
        messages.append({"role": m["role"], "content": text})
    return messages, dict(request.options)


def passthrough_payload(request: CallRequest, model: str, max_tokens: int) -> dict[str, Any]:
    payload = {**request.body, "model": model, "max_tokens": max_tokens}
    payload.pop("stream", None)
    return payload


_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
         "content_filter": "refusal"}


def usage_body(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cached_input_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens}


def _stop(completion: Completion) -> str:
    return _STOP.get(completion.finish_reason or "", completion.finish_reason or "end_turn")


def body(completion: Completion, message_id: str) -> dict[str, Any]:
    """A message for an answer made here (translated, or the whole of a stream)."""
    return {"id": message_id, "type": "message", "role": "assistant", "model": completion.model,
            "content": [{"type": "text", "text": completion.text}], "stop_reason": _stop(completion),
            "stop_sequence": None, "usage": usage_body(completion.usage)}


def completion_of(stored: Mapping[str, Any]) -> Completion:
    """A stored message read back (to end a stream, or replay it as one)."""
    return anthropic_completion(stored, str(stored.get("model")))


class Renderer:
    """Messages stream events for an answer made here: message_start, one text block, message_delta (stop
    reason and every usage count), message_stop."""

    def __init__(self, message_id: str, model: str, include_usage: bool) -> None:
        self.message_id = message_id
        self.model = model
        self.started = False

    def _start(self) -> str:
        if self.started:
            return ""
        self.started = True
        message: dict[str, Any] = {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return (sse_data({"type": "message_start", "message": message}, "message_start")
                + sse_data({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                           "content_block_start"))

    def delta(self, text: str) -> str:
        return self._start() + sse_data({"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": text}}, "content_block_delta")

    def done(self, completion: Completion) -> str:
        return (self._start()
                + sse_data({"type": "content_block_stop", "index": 0}, "content_block_stop")
                + sse_data({"type": "message_delta", "delta": {"stop_reason": _stop(completion), "stop_sequence": None},
                            "usage": usage_body(completion.usage)}, "message_delta")
                + stream_end())


def renderer(message_id: str, model: str, include_usage: bool) -> Renderer:
    return Renderer(message_id, model, include_usage)


def relay(raw: str, event: str | None, include_usage: bool) -> str:
    """A provider's event as the client gets it: unchanged, under its own event name (its `type`)."""
    return sse_data(raw, event)


def stream_end() -> str:
    return sse_data({"type": "message_stop"}, "message_stop")


_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error"}


def _shape(error: ApiError) -> tuple[int, str]:
    """(status, type) of an error as Anthropic answers it."""
    status = 400 if error.status == 422 else 404 if error.code == "unknown_model" else error.status
    kind = _TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return status, kind


def error_object(error: ApiError) -> dict[str, Any]:
    return {"type": _shape(error)[1], "message": error.message}


def error_event(error: ApiError, request_id: str) -> str:
    return sse_data({"type": "error", "error": error_object(error), "request_id": request_id}, "error")


def error_response(error: ApiError, request_id: str) -> Response:
    return json_error({"type": "error", "error": error_object(error), "request_id": request_id}, _shape(error)[0],
                      retry_headers(error))


def models_body(models: list[dict[str, Any]]) -> dict[str, Any]:
    data = [model_body(m) for m in models]
    return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def model_body(model: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "model", "id": model["model"], "display_name": model["model"],
            "created_at": "1970-01-01T00:00:00Z"}
