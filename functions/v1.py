"""`v1`: the OpenAI- and Anthropic-compatible API, one function: `POST /chat/completions` (OpenAI),
`POST /messages` (Anthropic), `GET /models` (either shape: Anthropic's when the request carries
`anthropic-version`, as its SDK does) and `GET /models/<id>`.

Deployed at `https://<host>/v1`, it is the `base_url` of the OpenAI SDK, and `https://<host>` is the
Anthropic SDK's. Callers authenticate with an API key (`Authorization: Bearer sk_...` or `x-api-key`; the key
needs the `models` scope) or a Supabase access token. Every call is a billed call (functions.billed_call):
the worst case is held before the provider is called and the reported usage settled exactly once,
idempotent on `Idempotency-Key` (or `X-Request-Id`). With `X-Session-Id` the exchange is also saved as a
chat turn of that session (a UUID, or a name as `chat` takes it), all or nothing with the charge.

A model whose provider speaks the caller's protocol gets the request as the client wrote it (messages,
system prompt, tools, tool calls, content parts), with its output bounded by the hold; the answer, streamed
or not, comes back as the provider sent it. A model of the other protocol (or the offline development
model) gets the text conversation translated, and anything that cannot be carried is refused, naming it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from starlette.responses import Response

from functions.billed_call import BilledCall, Hold, StreamEvent, usage_args
from functions.chat import session_ref
from functions.errors import ApiError, NotFound
from functions.http import Context, SSEResponse, endpoint
from functions.models import active_models
from functions.protocols import CallRequest, StreamRenderer, Wire
from functions.protocols import anthropic as anthropic_wire
from functions.protocols import openai as openai_wire
from functions.providers import Anthropic, Completion, Message, OpenAICompatible, Usage

IMAGE_PART_CHARS = 6_000  # what the hold counts for each image or file part (its tokens are not its characters)


def wire_of(ctx: Context) -> Wire:
    """The protocol a request speaks: by its path, and for /models by the Anthropic SDK's version header."""
    path = ctx.path.rstrip("/")
    if path == "/messages" or (path.startswith("/models") and "anthropic-version" in ctx.request.headers):
        return cast(Wire, anthropic_wire)
    return cast(Wire, openai_wire)


def render_error(ctx: Context, error: ApiError) -> Response:
    """Every error of this function in its protocol's own body."""
    return wire_of(ctx).error_response(error, ctx.request_id)


@endpoint("v1", methods=(), subpaths={"/chat/completions": ("POST",), "/messages": ("POST",), "/models": ("GET",),
                                      "/models/*": ("GET",)}, render_error=render_error)
async def handle(ctx: Context) -> Response | Mapping[str, Any]:
    """A chat completion (OpenAI), a message (Anthropic), or the models."""
    await ctx.authenticate_user()
    wire = wire_of(ctx)
    if ctx.method == "GET":
        return await _models(ctx, wire)
    return await call(ctx, wire, wire.call_request(await ctx.json_body(wire.Request)))


async def _models(ctx: Context, wire: Wire) -> Mapping[str, Any]:
    models = await active_models(ctx.db)
    path = ctx.path.rstrip("/")
    if path == "/models":
        return wire.models_body(models)
    wanted = path.removeprefix("/models/")
    found = next((m for m in models if m["model"] == wanted), None)
    if found is None:
        raise NotFound(f"No active model is named {wanted}.", code="unknown_model")
    return wire.model_body(found)


def _request_key(ctx: Context) -> str:
    """The idempotency key of the call: `Idempotency-Key`, else the request id; in its own namespace."""
    given = ctx.request.headers.get("Idempotency-Key", "").strip()
    if given:
        ctx.request_id = given[:200]
    return f"v1:{ctx.request_id}"[:200]


async def call(ctx: Context, wire: Wire, request: CallRequest) -> Response | dict[str, Any]:
    """One billed call: hold, the provider (passed through or translated), settle; streamed or not."""
    assert ctx.principal is not None
    principal = ctx.principal
    ctx.log_fields["protocol"] = wire.name
    billed = BilledCall(ctx.db, ctx.settings, principal.user_id, _request_key(ctx), "chat", ctx.log_fields)
    max_tokens = request.max_tokens or ctx.settings.default_max_tokens
    session = ctx.request.headers.get("X-Session-Id", "").strip() or None
    hold = await billed.begin("begin_api_call", {
        "protocol": wire.name, "model": request.model, "max_output_tokens": max_tokens,
        "prompt_chars": ctx.body_bytes + IMAGE_PART_CHARS * request.image_parts,
        "api_key_id": principal.key_id, **session_ref(principal.user_id, session)})
    if (stored := _stored_response(hold)) is not None:
        return _replay(wire, stored, request) if request.stream else stored
    message_id = ("msg_" if wire.name == "anthropic" else "chatcmpl-") + uuid.UUID(hold.id).hex
    payload: dict[str, Any] = {}
    messages: list[Message] = []
    options: dict[str, Any] = {}
    try:
        provider = await billed.provider(hold)
        # A provider of the caller's protocol gets the request as written; any other, the translation.
        same = provider if provider.name == wire.name and isinstance(provider, OpenAICompatible | Anthropic) else None
        if same is not None:
            payload = wire.passthrough_payload(request, hold.model, max_tokens)
        else:
            messages, options = wire.conversation(request, provider.name)
    except ApiError as exc:  # nothing the provider could be sent: refused before any call, not charged
        await billed.release(hold, exc, record_usage=False)
        raise

    async def settle(text: str, usage: Usage | None, partial: bool, finish: str | None,
                     response: dict[str, Any] | None = None) -> dict[str, Any]:
        if response is None:  # a cut stream (no usage reported) is stored without counts; its charge has them
            response = wire.body(Completion(text, usage or Usage(), hold.model, provider.name, finish), message_id)
        return await billed.settle(hold, "settle_api_call", {
            **usage_args(usage), "response": response, "user_message": request.user_text, "assistant_message": text,
            "partial": partial})

    headers = {name: value for name in wire.FORWARDED_HEADERS if (value := ctx.request.headers.get(name))}
    if not request.stream:
        if same is not None:
            forward = same.forward
            raw, done = await billed.run(hold, lambda: forward(payload, headers))
            return _response_of(await settle(done.text, done.usage, False, done.finish_reason, raw))
        done = await billed.run(hold, lambda: provider.complete(hold.model, messages, max_tokens, options))
        return _response_of(await settle(done.text, done.usage, False, done.finish_reason))

    if same is not None:
        items = same.forward_stream(payload, headers)
    else:
        items = provider.stream(hold.model, messages, max_tokens, options)
    events = billed.stream(hold, items, settle)
    return SSEResponse(_sse(ctx, wire, events, renderer=None if same is not None else wire.renderer(
        message_id, hold.model, request.include_usage), include_usage=request.include_usage))


def _stored_response(hold: Hold) -> dict[str, Any] | None:
    stored = hold.settled_result
    return cast(dict[str, Any], stored["response"]) if stored and isinstance(stored.get("response"), dict) else None


def _response_of(result: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], result["response"])


def _replay(wire: Wire, stored: dict[str, Any], request: CallRequest) -> SSEResponse:
    """A settled call asked again as a stream: its stored answer, streamed in one piece."""
    done = wire.completion_of(stored)
    renderer = wire.renderer(str(stored.get("id")), done.model, request.include_usage)

    async def events() -> AsyncIterator[str]:
        yield renderer.delta(done.text) + renderer.done(done)

    return SSEResponse(events())


async def _sse(ctx: Context, wire: Wire, events: AsyncIterator[StreamEvent], *, renderer: StreamRenderer | None,
               include_usage: bool) -> AsyncIterator[str]:
    """The billed stream in the protocol's events: the provider's own events relayed as they came (no
    `renderer`), or events made here; the stream's end (`[DONE]`, `message_stop`) only once it is settled."""
    try:
        async for event in events:
            if event.kind == "delta":
                if renderer is None:
                    assert event.raw is not None
                    text = wire.relay(event.raw, event.raw_event, include_usage)
                else:
                    text = renderer.delta(event.text) if event.text else ""
                if text:
                    yield text
            elif event.kind == "done":
                assert event.result is not None
                if renderer is None:
                    yield wire.stream_end()
                else:
                    yield renderer.done(wire.completion_of(event.result["response"]))
            else:
                assert event.error is not None
                ctx.log_fields["error_code"] = event.error.code
                yield wire.error_event(event.error, ctx.request_id)
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # SSEResponse shields this from cancellation
