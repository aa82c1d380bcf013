"""OpenAI chat completions (`POST /v1/chat/completions`) as this API speaks it to clients.

Errors: `{"error": {"message", "type", "param", "code"}}` with OpenAI's statuses and types, so the official
SDK raises the class its users already catch: an exhausted balance or monthly quota is 429
`insufficient_quota` (as OpenAI answers it), marked `x-should-retry: false` so the SDK does not retry it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from functions.errors import ApiError, BadRequest, fields_detail
from functions.protocols import (
    CallRequest,
    json_error,
    last_user_text,
    refuse_untranslated,
    retry_headers,
    sse_data,
    text_of,
)
from functions.providers import Completion, Message, Usage, openai_completion

name: Literal["openai"] = "openai"

# Request headers passed through to a provider of this protocol (none: chat completions needs none).
FORWARDED_HEADERS: tuple[str, ...] = ()

# What a call to a model of the other protocol (Anthropic) carries over; anything else is refused there.
TRANSLATED = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
              "top_p", "stop", "n"}
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "seed"}


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class OpenAIStreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """A chat-completions request. Fields not named here pass through to a model of this protocol."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=100)
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: OpenAIStreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=1)  # one answer per call: the hold covers one


Request = ChatCompletionRequest


def call_request(request: ChatCompletionRequest) -> CallRequest:
    body = request.model_dump(mode="json", exclude_unset=True)
    user_text, images = last_user_text(request.messages)
    options = {k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None}
    if body.get("stop") is not None:
        options["stop_sequences"] = [body["stop"]] if isinstance(body["stop"], str) else body["stop"]
    return CallRequest(body, request.model, bool(request.stream), request.max_completion_tokens or request.max_tokens,
                       user_text, images, bool(request.stream_options and request.stream_options.include_usage),
                       options)


def conversation(request: CallRequest, target: str) -> tuple[list[Message], dict[str, Any]]:
    """The text conversation and options for a model of the other protocol; 400 naming what is not carried."""
    refuse_untranslated(request.body, TRANSLATED | IGNORED, target)
    messages: list[Message] = []
    for i, m in enumerate(request.body["messages"]):
        role = m["role"]
        if role not in ("system", "developer", "user", "assistant") or m.get("tool_calls") or m.get("function_call"):
            raise BadRequest(f"Field 'messages.{i}' is a {role} turn with tool calls or results; a {target} model "
                             "is sent text conversations only.", code="not_translatable",
                             details=fields_detail(f"messages.{i}", "must be a text turn", "not_translatable"))
        text, _ = text_of(m.get("content"), f"messages.{i}.content", refuse=True)
        messages.append({"role": "system" if role == "developer" else role, "content": text})
    return messages, dict(request.options)


def passthrough_payload(request: CallRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """The client's request for a model of this protocol, with the output bounded by the hold."""
    payload = {**request.body, "model": model}
    if "max_tokens" in payload:
        payload["max_tokens"] = max_tokens
    if "max_completion_tokens" in payload or "max_tokens" not in payload:
        payload["max_completion_tokens"] = max_tokens
    payload.pop("stream", None)
    payload.pop("stream_options", None)
    return payload


_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "refusal": "content_filter"}


def usage_body(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
    return {"prompt_tokens": prompt, "completion_tokens": usage.output_tokens,
            "total_tokens": prompt + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


def body(completion: Completion, message_id: str) -> dict[str, Any]:
    """A chat.completion for an answer made here (translated, or the whole of a stream)."""
    finish = _FINISH.get(completion.finish_reason or "", completion.finish_reason or "stop")
    return {"id": message_id, "object": "chat.completion", "created": int(time.time()), "model": completion.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text, "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage_body(completion.usage)}


def completion_of(stored: Mapping[str, Any]) -> Completion:
    """A stored chat.completion read back (to end a stream, or replay it as one)."""
    return openai_completion(stored, str(stored.get("model")))


class Renderer:
    """chat.completion.chunk events for an answer made here."""

    def __init__(self, message_id: str, model: str, include_usage: bool) -> None:
        self.base = {"id": message_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self.include_usage = include_usage
        self.started = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        chunk: dict[str, Any] = {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                           "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return sse_data(chunk)

    def delta(self, text: str) -> str:
        first = "" if self.started else self._chunk({"role": "assistant", "content": ""})
        self.started = True
        return first + self._chunk({"content": text})

    def done(self, completion: Completion) -> str:
        first = "" if self.started else self._chunk({"role": "assistant", "content": ""})
        finish = _FINISH.get(completion.finish_reason or "", completion.finish_reason or "stop")
        end = first + self._chunk({}, finish)
        if self.include_usage:
            end += sse_data({**self.base, "choices": [], "usage": usage_body(completion.usage)})
        return end + stream_end()


def renderer(message_id: str, model: str, include_usage: bool) -> Renderer:
    return Renderer(message_id, model, include_usage)


_USAGE = re.compile(r'"usage"\s*:\s*\{')


def relay(raw: str, event: str | None, include_usage: bool) -> str:
    """A provider's chunk as the client gets it: unchanged, except the usage it did not ask for (this API
    always asks the provider for usage, to bill it)."""
    if include_usage or not _USAGE.search(raw):  # most chunks carry none, or `"usage": null`: sent as they came
        return sse_data(raw)
    chunk = json.loads(raw)
    if not chunk.get("choices"):
        return ""  # the usage-only chunk
    chunk.pop("usage", None)
    return sse_data(chunk)


def stream_end() -> str:
    return sse_data("[DONE]")


def _shape(error: ApiError) -> tuple[int, str, str | None, str | None]:
    """(status, type, code, param) of an error as OpenAI answers it."""
    fields = (error.details or {}).get("fields") or []
    param = fields[0]["field"] if fields else None
    if error.code in ("insufficient_credits", "quota_exceeded"):
        return 429, "insufficient_quota", "insufficient_quota", None
    if error.code == "rate_limited":
        return 429, "requests", "rate_limit_exceeded", None
    if error.code == "unknown_model":
        return 404, "invalid_request_error", "model_not_found", "model"
    if error.status in (400, 422):
        return 400, "invalid_request_error", error.code, param
    if error.status == 401:
        return 401, "invalid_request_error", "invalid_api_key" if "api_key" in error.code else error.code, None
    if error.status == 403:
        return 403, "permission_error", error.code, None
    if error.status < 500:
        return error.status, "invalid_request_error", error.code, param
    return error.status, "server_error", error.code, None


def error_object(error: ApiError) -> dict[str, Any]:
    _, kind, code, param = _shape(error)
    return {"message": error.message, "type": kind, "param": param, "code": code}


def error_event(error: ApiError, request_id: str) -> str:
    return sse_data({"error": error_object(error)})


def error_response(error: ApiError, request_id: str) -> Response:
    status = _shape(error)[0]
    return json_error({"error": error_object(error)}, status, retry_headers(error))


def models_body(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": [model_body(m) for m in models]}


def model_body(model: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": model["model"], "object": "model", "created": 0, "owned_by": model["provider"]}
