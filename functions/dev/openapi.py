"""The OpenAPI 3.1 document of every function, generated from the pydantic models in `functions.schemas`.

Request bodies and query strings use the models' validation schemas, responses their serialization schemas;
every `$defs` entry becomes a component. The committed copy is `docs/openapi.json`; a test fails when it
differs from what this module generates, so regenerate it after changing a model:

    python -m functions.dev.openapi            # writes docs/openapi.json
    python -m functions.dev.openapi --check    # exit status 1 when the committed copy is stale

CORS preflight (`OPTIONS`) is answered by every function but is not part of the document.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from functions import schemas

OPENAPI_VERSION = "3.1.0"
API_VERSION = "0.1.0"
DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REF_TEMPLATE = "#/components/schemas/{model}"
REGENERATE = "python -m functions.dev.openapi"

Mode = Literal["validation", "serialization"]
JsonObject = dict[str, Any]

# Every failure shares one envelope (the `Error` schema); what each status means for these functions.
ERROR_REASONS: dict[int, str] = {
    400: "Malformed request: the body is not valid JSON or UTF-8, or the database rejected a value.",
    401: "Missing, expired, forged or revoked credentials (an access token or an API key).",
    402: "The monthly quota is spent or the balance cannot cover the worst case of this call.",
    403: "The account is blocked or paused (model calls, API keys), an API key was used outside its scopes "
         "or to manage keys, or the role may not do this.",
    404: "A named session, project or API key does not exist or is not the caller's.",
    405: "The function does not answer this method (the `Allow` header lists the ones it does).",
    409: "A request with this id is still running, or failed: send it again with a new id.",
    413: "The body is over the limit (`MAX_BODY_BYTES`, 256 KiB by default).",
    415: "The body is not `application/json`.",
    422: "A field is invalid; the message and `details` name each one.",
    429: "The plan's requests per minute are used up.",
    502: "The model provider failed or answered something unusable; nothing was charged.",
    503: "The database (or the signing keys) is unavailable, or the health probe failed.",
    504: "The model provider timed out; nothing was charged.",
}
_STATUS_NAMES = {
    400: "BadRequest", 401: "Unauthorized", 402: "PaymentRequired", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 413: "PayloadTooLarge", 415: "UnsupportedMediaType",
    422: "ValidationError", 429: "TooManyRequests", 502: "BadGateway", 503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

USER_SECURITY: list[JsonObject] = [{"bearerAuth": []}, {"apiKeyAuth": []}]
TOKEN_SECURITY: list[JsonObject] = [{"bearerAuth": []}]  # the user's access token only, never an API key
SERVICE_SECURITY: list[JsonObject] = [{"serviceBearer": []}, {"serviceSecretHeader": []}]

# Statuses each kind of operation can answer besides its success.
_JSON_BODY = [400, 413, 415, 422]
_USER = [401, 403, 503]
_MODEL_CALL = [402, 404, 409, 429, 502, 504]


class _SchemaGenerator(GenerateJsonSchema):
    """pydantic's generator, with decimal strings constrained by their `max_digits` / `decimal_places`
    (pydantic's documented opt-in), so the document does not admit `"0.1234567"` for a 6-place amount."""

    def get_decimal_pattern(self, schema: core_schema.DecimalSchema) -> str | None:
        return self.build_decimal_pattern(schema)


class _Components:
    """Collects component schemas; a name defined twice with different schemas is an error, not a silent
    overwrite (a model whose validation and serialization schemas differ must not share a component)."""

    def __init__(self) -> None:
        self.schemas: dict[str, JsonObject] = {}

    def add(self, name: str, schema: JsonObject) -> None:
        if name in self.schemas and self.schemas[name] != schema:
            raise ValueError(f"component {name!r} has two different schemas (validation and serialization?)")
        self.schemas[name] = schema

    def model_schema(self, model: type[BaseModel], mode: Mode) -> JsonObject:
        """The model's schema with its `$defs` moved into the components."""
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, schema_generator=_SchemaGenerator, mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            self.add(name, definition)
        return schema

    def ref(self, model: type[BaseModel], mode: Mode) -> JsonObject:
        """A reference to the model, added as a component of its own."""
        self.add(model.__name__, self.model_schema(model, mode))
        return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _drop_null(schema: JsonObject) -> JsonObject:
    """A query parameter is absent rather than null: `anyOf: [X, null]` becomes X (keeping title, description)."""
    schema = copy.deepcopy(schema)
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [option for option in options if option != {"type": "null"}]
        if len(kept) == 1 and len(kept) < len(options):
            del schema["anyOf"]
            schema = {**kept[0], **schema}
    if schema.get("default", 0) is None:
        del schema["default"]
    return schema


def query_parameters(components: _Components, model: type[BaseModel]) -> list[JsonObject]:
    """One `in: query` parameter per field of a query model (validation mode, by alias)."""
    schema = components.model_schema(model, "validation")
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = _drop_null(prop)
        parameter: JsonObject = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            parameter["description"] = prop.pop("description")
        parameter["schema"] = prop
        parameters.append(parameter)
    return parameters


def _json(schema: JsonObject) -> JsonObject:
    return {"application/json": {"schema": schema}}


def _success(description: str, schema: JsonObject, **extra_content: JsonObject) -> JsonObject:
    return {"description": description, "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
            "content": {**_json(schema), **extra_content}}


def _sse_event_schema(events: dict[str, JsonObject]) -> JsonObject:
    """The schema of each Server-Sent Event (what OpenAPI 3.2 calls the `itemSchema` of
    `text/event-stream`): its `event` name, and its `data` as JSON of the schema that event carries."""
    return {
        "description": "Each event of the stream: " + ", ".join(f"`{name}`" for name in events)
                       + "; `data` is one line of JSON.",
        "oneOf": [
            {"type": "object", "required": ["event", "data"],
             "properties": {"event": {"const": name},
                            "data": {"type": "string", "contentMediaType": "application/json",
                                     "contentSchema": schema}}}
            for name, schema in events.items()
        ],
    }


def _errors(*statuses: int) -> dict[str, JsonObject]:
    return {str(status): {"$ref": f"#/components/responses/{_STATUS_NAMES[status]}"} for status in sorted(statuses)}


def _operation(operation_id: str, summary: str, description: str, *, security: list[JsonObject],
               responses: dict[str, JsonObject], body: JsonObject | None = None,
               parameters: list[JsonObject] | None = None) -> JsonObject:
    operation: JsonObject = {"operationId": operation_id, "summary": summary, "description": description,
                             "security": security}
    operation["parameters"] = [{"$ref": "#/components/parameters/XRequestId"}, *(parameters or [])]
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    operation["responses"] = responses
    return operation


# -- the compatible API (/v1): the protocols' own shapes, written out (they are not this API's models) ----------

_INT = {"type": "integer", "minimum": 0}
_OPENAI_USAGE: JsonObject = {
    "type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT,
                   "prompt_tokens_details": {"type": ["object", "null"]},
                   "completion_tokens_details": {"type": ["object", "null"]}}}
V1_SCHEMAS: dict[str, JsonObject] = {
    "OpenAIChatCompletion": {
        "description": "OpenAI's `chat.completion`: as the provider sent it (pass-through) or made here.",
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
            "model": {"type": "string"}, "usage": _OPENAI_USAGE,
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["index", "message"],
                "properties": {"index": {"type": "integer"}, "finish_reason": {"type": ["string", "null"]},
                               "message": {"type": "object", "required": ["role"],
                                           "properties": {"role": {"const": "assistant"},
                                                          "content": {"type": ["string", "null"]}}}}}}}},
    "AnthropicMessage": {
        "description": "Anthropic's `message`: as the provider sent it (pass-through) or made here.",
        "type": "object", "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
        "properties": {
            "id": {"type": "string"}, "type": {"const": "message"}, "role": {"const": "assistant"},
            "model": {"type": "string"}, "stop_reason": {"type": ["string", "null"]},
            "content": {"type": "array", "items": {"type": "object", "required": ["type"]}},
            "usage": {"type": "object", "required": ["input_tokens", "output_tokens"],
                      "properties": {"input_tokens": _INT, "output_tokens": _INT}}}},
    "OpenAIModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
            "$ref": "#/components/schemas/OpenAIModel"}}}},
    "OpenAIModel": {
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                       "owned_by": {"type": "string", "description": "The provider of the model."}}},
    "AnthropicModelList": {
        "type": "object", "required": ["data", "has_more", "first_id", "last_id"],
        "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/AnthropicModel"}},
                       "has_more": {"type": "boolean"}, "first_id": {"type": ["string", "null"]},
                       "last_id": {"type": ["string", "null"]}}},
    "AnthropicModel": {
        "type": "object", "required": ["type", "id", "display_name", "created_at"],
        "properties": {"type": {"const": "model"}, "id": {"type": "string"}, "display_name": {"type": "string"},
                       "created_at": {"type": "string"}}},
    "OpenAIError": {
        "description": "OpenAI's error body. An exhausted balance or monthly quota is 429 `insufficient_quota` "
                       "(with `x-should-retry: false`); a rate limit 429 `rate_limit_exceeded`; an unknown model "
                       "404 `model_not_found`; an invalid field 400 `invalid_request_error` naming it in `param`.",
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"],
                                 "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                                "param": {"type": ["string", "null"]},
                                                "code": {"type": ["string", "null"]}}}}},
    "AnthropicError": {
        "description": "Anthropic's error body. An exhausted balance or monthly quota is 402 `billing_error`; a "
                       "rate limit 429 `rate_limit_error`; an invalid field 400 `invalid_request_error`.",
        "type": "object", "required": ["type", "error", "request_id"],
        "properties": {"type": {"const": "error"}, "request_id": {"type": "string"},
                       "error": {"type": "object", "required": ["type", "message"],
                                 "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}},
}
_SSE_DATA: JsonObject = {"type": "object", "required": ["data"], "properties": {
    "event": {"type": "string"}, "data": {"type": "string", "description": "JSON, or `[DONE]` (OpenAI)."}}}
V1_ERROR_STATUSES = {
    "openai": [400, 401, 403, 404, 405, 409, 413, 415, 429, 502, 503, 504],
    "anthropic": [400, 401, 402, 403, 404, 405, 409, 413, 415, 429, 502, 503, 504],
}
V1_ERROR_RESPONSES: dict[str, JsonObject] = {
    "OpenAIError": {"description": "An error in OpenAI's shape.",
                    "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
                    "content": _json({"$ref": "#/components/schemas/OpenAIError"})},
    "AnthropicError": {"description": "An error in Anthropic's shape.",
                       "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
                       "content": _json({"$ref": "#/components/schemas/AnthropicError"})},
    "V1Error": {"description": "An error in OpenAI's shape, or Anthropic's when the request has `anthropic-version`.",
                "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
                "content": _json({"oneOf": [{"$ref": "#/components/schemas/OpenAIError"},
                                            {"$ref": "#/components/schemas/AnthropicError"}]})},
}
V1_PARAMETERS: dict[str, JsonObject] = {
    "IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                       "description": "The call's idempotency key (else `X-Request-Id`): the same key answers the "
                                      "stored answer and is charged once."},
    "XSessionId": {"name": "X-Session-Id", "in": "header", "required": False, "schema": {"type": "string"},
                   "description": "Also save the exchange as a turn of this chat session (a session's UUID, or a "
                                  "name, created on first use), in the same transaction as the charge."},
    "AnthropicVersion": {"name": "anthropic-version", "in": "header", "required": False, "schema": {"type": "string"},
                         "description": "Sent by the Anthropic SDK; on /v1/models it selects Anthropic's shape."},
}


def _v1_errors(kind: str, protocol: str) -> dict[str, JsonObject]:
    return {str(status): {"$ref": f"#/components/responses/{kind}"} for status in V1_ERROR_STATUSES[protocol]}


def _v1_operations(c: _Components) -> dict[str, JsonObject]:
    """The compatible API: OpenAI chat completions, Anthropic Messages and the models, in their own shapes."""
    from functions.protocols import anthropic, openai

    for name, schema in V1_SCHEMAS.items():
        c.add(name, schema)
    ref = {name: {"$ref": f"#/components/schemas/{name}"} for name in V1_SCHEMAS}
    headers = [{"$ref": "#/components/parameters/IdempotencyKey"}, {"$ref": "#/components/parameters/XSessionId"}]
    billed = ("Billed as chat is: the worst case held before the provider is called, the reported usage settled "
              "once. A model whose provider speaks this protocol gets the request as written (tools, content "
              "parts, unknown fields) and its answer comes back as sent; a model of the other protocol gets the "
              "text conversation translated (anything else is refused with 400 `not_translatable`).")
    chat = _operation(
        "v1_chat_completions", "OpenAI chat completions",
        f"{billed} With `stream: true`, Server-Sent Events of `chat.completion.chunk` ending with `[DONE]`, and a "
        "final usage chunk when `stream_options.include_usage` is true; an error mid-stream is a `data:` event "
        "with `error`.",
        security=USER_SECURITY, body=c.ref(openai.Request, "validation"), parameters=headers,
        responses={"200": _success("The completion, or its event stream.", ref["OpenAIChatCompletion"],
                                   **{"text/event-stream": {"schema": _SSE_DATA}}),
                   **_v1_errors("OpenAIError", "openai")})
    messages = _operation(
        "v1_messages", "Anthropic Messages",
        f"{billed} With `stream: true`, Server-Sent Events (`message_start` ... `message_stop`); an error "
        "mid-stream is an `error` event.",
        security=USER_SECURITY, body=c.ref(anthropic.Request, "validation"),
        parameters=[*headers, {"$ref": "#/components/parameters/AnthropicVersion"}],
        responses={"200": _success("The message, or its event stream.", ref["AnthropicMessage"],
                                   **{"text/event-stream": {"schema": _SSE_DATA}}),
                   **_v1_errors("AnthropicError", "anthropic")})
    models = _operation(
        "v1_models", "List the models (OpenAI's or Anthropic's shape)",
        "The active models of `model_prices`: OpenAI's list, or Anthropic's when `anthropic-version` is sent.",
        security=USER_SECURITY, parameters=[{"$ref": "#/components/parameters/AnthropicVersion"}],
        responses={"200": _success("The models.", {"oneOf": [ref["OpenAIModelList"], ref["AnthropicModelList"]]}),
                   **{str(s): {"$ref": "#/components/responses/V1Error"} for s in (401, 403, 405, 503)}})
    model = _operation(
        "v1_model", "One model (OpenAI's or Anthropic's shape)", "404 when no active model has this id.",
        security=USER_SECURITY,
        parameters=[{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "The model's id."}, {"$ref": "#/components/parameters/AnthropicVersion"}],
        responses={"200": _success("The model.", {"oneOf": [ref["OpenAIModel"], ref["AnthropicModel"]]}),
                   **{str(s): {"$ref": "#/components/responses/V1Error"} for s in (401, 403, 404, 405, 503)}})
    return {"chat_completions": chat, "messages": messages, "models": models, "model": model}


def build() -> JsonObject:
    """The whole document, deterministic for a given set of models."""
    c = _Components()
    error_ref = c.ref(schemas.Error, "serialization")

    chat_send = _operation(
        "chat_send", "Send a message and get the model's reply",
        "Saves the user message, the reply, a usage row and the charge in one transaction. A `session_id` "
        "that is a UUID must name an existing session of the caller (else 404); any other string names a "
        "session of the caller's own (created on first use); none starts a new session. With `stream: true` "
        "the answer is Server-Sent Events: `delta` events (`{\"text\": ...}`) while the model writes, then one "
        "`done` event with the same object a plain POST answers, or an `error` event with the `error` member "
        "of the error envelope. A retry with the same `client_message_id` (or `X-Request-Id`) answers the "
        "stored reply with `replay: true` and is not billed again.",
        security=USER_SECURITY,
        body=c.ref(schemas.ChatRequest, "validation"),
        responses={
            "200": _success("The reply (JSON), or the event stream when `stream` is true.",
                            c.ref(schemas.ChatResponse, "serialization"),
                            **{"text/event-stream": {"schema": _sse_event_schema({
                                "delta": c.ref(schemas.ChatDelta, "serialization"),
                                "done": c.ref(schemas.ChatResponse, "serialization"),
                                "error": c.ref(schemas.ErrorBody, "serialization"),
                            })}}),
            **_errors(*_JSON_BODY, *_USER, *_MODEL_CALL),
        },
    )
    chat_list = _operation(
        "chat_list", "List sessions, or one session's messages",
        "Without `session_id`: the caller's sessions, newest activity first. With it: that session's "
        "messages, newest first. `next_cursor` is null on the last page.",
        security=USER_SECURITY,
        parameters=query_parameters(c, schemas.ChatListQuery),
        responses={"200": _success("A page of sessions or messages.", c.ref(schemas.ChatListResponse,
                                                                              "serialization")),
                   **_errors(400, 404, 422, *_USER)},
    )
    chat_models = _operation(
        "chat_models", "List the models a request may name",
        "The active models of `model_prices` with their prices per million tokens (cached input and cache "
        "writes at their own prices), defaults first; `default_model` answers a request that names none "
        "(`DEFAULT_MODEL`, else `MODEL_PROVIDER`'s default).",
        security=USER_SECURITY,
        responses={"200": _success("The models.", c.ref(schemas.ModelList, "serialization")), **_errors(*_USER)},
    )
    compile_ = _operation(
        "compile", "Turn a task into Python or SQL code that parses",
        "The code is checked to parse (Python's compiler, PostgreSQL's parser), never run; one repair round "
        "when it does not. Billed like a chat turn; a retry with the same `X-Request-Id` answers the stored "
        "result with `replay: true`.",
        security=USER_SECURITY,
        body=c.ref(schemas.CompileRequest, "validation"),
        responses={"200": _success("The code, whether it parses, and diagnostics.",
                                   c.ref(schemas.CompileResponse, "serialization")),
                   **_errors(*_JSON_BODY, *_USER, *_MODEL_CALL)},
    )
    usage_summary = _operation(
        "usage_summary", "The caller's usage and costs",
        "Usage for `from`..`to` (UTC days, inclusive, at most 367 days; default the last 30 days), grouped by "
        "day, model, operation or service, with month spend, quota left and balance.",
        security=USER_SECURITY,
        parameters=query_parameters(c, schemas.UsageQuery),
        responses={"200": _success("The summary.", c.ref(schemas.UsageResponse, "serialization")),
                   **_errors(400, 422, *_USER)},
    )
    usage_ingest = _operation(
        "usage_ingest", "Ingest usage events from other services (service secret)",
        "Up to 1,000 events, idempotent on `event_id`: an event already stored is counted in `duplicates`.",
        security=SERVICE_SECURITY,
        body=c.ref(schemas.IngestRequest, "validation"),
        responses={"200": _success("How many events were new.", c.ref(schemas.IngestResponse, "serialization")),
                   **_errors(*_JSON_BODY, 401, 409, 503)},
    )
    keys_create = _operation(
        "keys_create", "Create an API key (shown once)",
        "The answer holds the key itself, the only time it is ever sent (only its hash is stored). `scopes`: "
        "`models` (chat, compile) and/or `usage:read` (GET /usage), default both; optional expiry. The user's "
        "access token only: an API key cannot create, list or revoke keys (403 `access_token_required`).",
        security=TOKEN_SECURITY,
        body=c.ref(schemas.KeyCreateRequest, "validation"),
        responses={"201": _success("The new key, with its secret.", c.ref(schemas.ApiKeyCreated, "serialization")),
                   **_errors(*_JSON_BODY, *_USER)},
    )
    keys_list = _operation(
        "keys_list", "List the caller's API keys",
        "Newest first, with status `active`, `expired` or `revoked`; never a secret. The user's access token only.",
        security=TOKEN_SECURITY,
        responses={"200": _success("The keys.", c.ref(schemas.KeyListResponse, "serialization")),
                   **_errors(*_USER)},
    )
    keys_revoke = _operation(
        "keys_revoke", "Revoke an API key",
        "The key stops working at once (401 `invalid_api_key`). Revoking it again answers the first revocation. "
        "The user's access token only.",
        security=TOKEN_SECURITY,
        parameters=[{"name": "key_id", "in": "path", "required": True, "description": "The key's `id`.",
                     "schema": {"type": "string", "format": "uuid"}}],
        responses={"200": _success("The revoked key.", c.ref(schemas.KeyRevoked, "serialization")),
                   **_errors(404, *_USER)},
    )
    refresh_views = _operation(
        "refresh_views", "Refresh the usage views and expire stale holds (service secret)",
        "The scheduled job; also a CloudEvent target. Takes no body.",
        security=SERVICE_SECURITY,
        responses={"200": _success("What was refreshed and expired.",
                                   c.ref(schemas.RefreshViewsResponse, "serialization")),
                   **_errors(401, 503)},
    )
    health = _operation(
        "health", "Probe: a database write and read-back, and the migration level",
        "503 with `details.failing` naming the failing part.",
        security=[],
        responses={"200": _success("Healthy.", c.ref(schemas.HealthResponse, "serialization")),
                   **_errors(503)},
    )

    v1 = _v1_operations(c)

    responses = {
        _STATUS_NAMES[status]: {
            "description": reason,
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
            "content": _json(error_ref),
        }
        for status, reason in ERROR_REASONS.items()
    }
    responses |= V1_ERROR_RESPONSES
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Assistant backend functions",
            "version": API_VERSION,
            "description": (
                "Serverless functions of an AI coding and data assistant on Supabase. Each path is one "
                "functions-framework target (deployed with its own URL; `python -m functions.dev.serve` mounts "
                "them all under one origin). Every failure answers the `Error` envelope with the request id; "
                "a method a function does not answer is 405 with an `Allow` header. Generated by "
                f"`{REGENERATE}` from `functions/schemas.py`."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "local: python -m functions.dev.serve"}],
        "paths": {
            "/chat": {"post": chat_send, "get": chat_list},
            "/chat/models": {"get": chat_models},
            "/compile": {"post": compile_},
            "/usage": {"get": usage_summary, "post": usage_ingest},
            "/keys": {"get": keys_list, "post": keys_create},
            "/keys/{key_id}": {"delete": keys_revoke},
            "/refresh_views": {"post": refresh_views},
            "/health": {"get": health},
            "/v1/chat/completions": {"post": v1["chat_completions"]},
            "/v1/messages": {"post": v1["messages"]},
            "/v1/models": {"get": v1["models"]},
            "/v1/models/{model_id}": {"get": v1["model"]},
        },
        "components": {
            "schemas": dict(sorted(c.schemas.items())),
            "responses": responses,
            "parameters": {
                **V1_PARAMETERS,
                "XRequestId": {
                    "name": "X-Request-Id", "in": "header", "required": False,
                    "description": "Your id for the request, echoed back and the idempotency key of a billed "
                                   "call without `client_message_id`. Used when it is 1 to 200 characters of "
                                   "`A-Za-z0-9._:-`; any other value is replaced by a new UUID, never refused.",
                    "schema": {"type": "string"},
                },
            },
            "headers": {
                "XRequestId": {"description": "The request's id.", "required": True, "schema": {"type": "string"}},
            },
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "A Supabase access token of the user."},
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                               "description": "A user's API key (`sk_...`, from `POST /keys`); also accepted as a "
                                              "bearer token. Only within its scopes: `models` for /chat, "
                                              "/compile and /v1, `usage:read` for GET /usage."},
                "serviceBearer": {"type": "http", "scheme": "bearer",
                                  "description": "The service secret (`SERVICE_SECRET`), never a user token."},
                "serviceSecretHeader": {"type": "apiKey", "in": "header", "name": "X-Service-Secret",
                                        "description": "The service secret, as a header of its own."},
            },
        },
    }


def render(document: JsonObject | None = None) -> str:
    """The document as committed: indented JSON with a final newline."""
    return json.dumps(build() if document is None else document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or check) the OpenAPI document of the functions.")
    parser.add_argument("--output", type=Path, default=DOCUMENT_PATH, help=f"default: {DOCUMENT_PATH}")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is stale; regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
