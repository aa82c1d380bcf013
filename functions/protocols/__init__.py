"""The wire protocols of the compatible API (`functions.v1`): OpenAI chat completions and Anthropic Messages.

Each protocol module holds, for its protocol only: the request as validated from the client, the text
conversation it translates to (for a model of the other protocol), the bodies and stream events it answers
with, and its error body. `Wire` is what `functions.v1` needs of either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from starlette.responses import Response

from functions.errors import ApiError, BadRequest, fields_detail
from functions.providers import Completion, Message

ProtocolName = Literal["openai", "anthropic"]


@dataclass
class CallRequest:
    """A validated request in either protocol: what the hold, the provider and the settle need of it."""

    body: dict[str, Any]  # as the client sent it (pass-through)
    model: str
    stream: bool
    max_tokens: int | None  # as asked; None: the server's default
    user_text: str  # the last user turn's text, saved as the session's user message
    image_parts: int = 0
    include_usage: bool = False  # OpenAI streams: a final usage chunk was asked for
    options: dict[str, Any] = field(default_factory=dict)  # sampling options, translated for the other protocol


class StreamRenderer(Protocol):
    """The protocol's stream events for an answer made here (a translated call, or a replay)."""

    def delta(self, text: str) -> str: ...

    def done(self, completion: Completion) -> str: ...


class Wire(Protocol):
    """One protocol, as `functions.v1` uses it."""

    name: ProtocolName
    Request: type[Any]  # the pydantic model of a request body
    FORWARDED_HEADERS: tuple[str, ...]  # request headers a pass-through call carries to the provider

    def call_request(self, request: Any) -> CallRequest: ...

    def conversation(self, request: CallRequest, target: str) -> tuple[list[Message], dict[str, Any]]: ...

    def passthrough_payload(self, request: CallRequest, model: str, max_tokens: int) -> dict[str, Any]: ...

    def body(self, completion: Completion, message_id: str) -> dict[str, Any]: ...

    def completion_of(self, body: Mapping[str, Any]) -> Completion: ...

    def renderer(self, message_id: str, model: str, include_usage: bool) -> StreamRenderer: ...

    def relay(self, raw: str, event: str | None, include_usage: bool) -> str: ...

    def stream_end(self) -> str: ...

    def error_event(self, error: ApiError, request_id: str) -> str: ...

    def error_response(self, error: ApiError, request_id: str) -> Response: ...

    def models_body(self, models: list[dict[str, Any]]) -> dict[str, Any]: ...

    def model_body(self, model: Mapping[str, Any]) -> dict[str, Any]: ...


def sse_data(data: Any, event: str | None = None) -> str:
    """One Server-Sent Event (`data` as compact JSON, or verbatim when already a string)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


def json_error(body: dict[str, Any], status: int, headers: Mapping[str, str]) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, media_type="application/json",
                    headers=dict(headers))


def retry_headers(error: ApiError) -> dict[str, str]:
    """Tell the official SDKs (which retry 408/409/429/5xx by themselves) not to retry what cannot succeed
    by waiting: no money, a blocked account, a request id already used. A rate limit says when to retry."""
    if error.code in ("insufficient_credits", "quota_exceeded", "request_failed", "request_id_reused") \
            or error.code.startswith("account_"):
        return {"x-should-retry": "false"}
    if error.code == "rate_limited":
        return {"retry-after": "60", "x-should-retry": "true"}
    return {}


def text_of(content: Any, where: str, *, refuse: bool) -> tuple[str, int]:
    """(the text of a message's content, its non-text parts). Content is a string or a list of parts with a
    `type`; with `refuse`, a non-text part is a 400 naming it (translation carries text only)."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    texts: list[str] = []
    others = 0
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
            continue
        if refuse:
            raise BadRequest(
                f"Field '{where}.{i}' is a {kind or 'non-text'} part; a model of the other protocol is sent text "
                "only: send text, or pick a model of this protocol.", code="not_translatable",
                details=fields_detail(f"{where}.{i}", "must be a text part", "not_translatable"))
        others += 1
    return "".join(texts), others


def refuse_untranslated(body: Mapping[str, Any], carried: set[str], target: str) -> None:
    """400 naming the first field of `body` that a call translated for a `target` model would drop."""
    for key, value in body.items():
        if key not in carried and value is not None:
            raise BadRequest(f"Field '{key}' cannot be carried to a {target} model, which is sent text "
                             "conversations only; leave it out or pick a model of this protocol.",
                             code="not_translatable", details=fields_detail(key, "is not translated",
                                                                            "not_translatable"))


def last_user_text(messages: Sequence[Any]) -> tuple[str, int]:
    """(the text of the last user turn, the non-text parts of all turns) of validated messages (`role`,
    `content`): what a session saves as the user's message, and what the hold counts as images."""
    last = next((m for m in reversed(messages) if m.role == "user"), None)
    text = text_of(last.content, "messages", refuse=False)[0] if last else ""
    return text, sum(text_of(m.content, "messages", refuse=False)[1] for m in messages)
