"""Request and response bodies of the functions (pydantic v2). Input models forbid unknown fields, so a
misspelled field is a 422 that names it. The OpenAPI document is generated from these models."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

RequestKey = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:\-]+$")]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:/\-]+$")]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


# -- chat -----------------------------------------------------------------------------------------------

class ChatRequest(Input):
    message: Annotated[Text, StringConstraints(min_length=1, max_length=32000)]
    session_id: Annotated[Text, StringConstraints(min_length=1, max_length=200)] | None = None
    model: ModelName | None = None
    max_tokens: Annotated[int, Field(ge=1, le=16384)] | None = None
    client_message_id: RequestKey | None = None
    stream: bool = False


class ChatListQuery(Input):
    session_id: Annotated[Text, StringConstraints(min_length=1, max_length=200)] | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=400)] | None = None


class TokenUsage(BaseModel):
    """What a call used and cost. Each input token is in one of the three input classes; reasoning tokens
    are part of `output_tokens`. Each class is priced from `model_prices`."""

    input_tokens: int = Field(description="Input tokens neither read from nor written to the prompt cache.")
    cached_input_tokens: int = Field(default=0, description="Input tokens read from the prompt cache.")
    cache_write_tokens: int = Field(default=0, description="Input tokens written to the prompt cache.")
    output_tokens: int = Field(description="All output tokens, reasoning included.")
    reasoning_tokens: int = Field(default=0, description="Of the output tokens, those spent reasoning.")
    cost_usd: float

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> TokenUsage:
        return cls.model_validate({k: result.get(k, 0) for k in cls.model_fields})


class ChatResponse(BaseModel):
    """The answer to a chat turn: the same whether it was just settled or replayed from the hold."""

    request_id: str
    session_id: uuid.UUID
    session_name: str | None = None
    user_message_id: uuid.UUID
    message_id: uuid.UUID
    content: str
    model: str
    provider: str
    usage: TokenUsage
    balance_usd: float
    partial: bool = False
    replay: bool = False

    @classmethod
    def from_result(cls, result: dict[str, Any], *, provider: str, session_name: str | None,
                    replay: bool) -> ChatResponse:
        """Built from the settle's result (`settle_chat_turn`, stored on the hold for replays)."""
        return cls(request_id=result["request_id"], session_id=result["session_id"], session_name=session_name,
                   user_message_id=result["user_message_id"], message_id=result["assistant_message_id"],
                   content=result["content"], model=result["model"], provider=provider,
                   usage=TokenUsage.from_result(result), balance_usd=result["balance_usd"],
                   partial=bool(result.get("partial")), replay=replay)


# -- compile --------------------------------------------------------------------------------------------

class CompileRequest(Input):
    task: Annotated[Text, StringConstraints(min_length=1, max_length=20000)]
    language: Literal["python", "sql"]
    context: Annotated[Text, StringConstraints(max_length=50000)] | None = None
    project_id: uuid.UUID | None = None
    model: ModelName | None = None
    max_tokens: Annotated[int, Field(ge=1, le=8192)] | None = None


class Diagnostic(BaseModel):
    line: int | None = None
    column: int | None = None
    message: str


class CompileResponse(BaseModel):
    id: uuid.UUID
    request_id: str
    language: Literal["python", "sql"]
    code: str
    valid: bool
    diagnostics: list[Diagnostic]
    repaired: bool
    model: str
    provider: str
    usage: TokenUsage
    balance_usd: float
    replay: bool = False

    @classmethod
    def from_result(cls, result: dict[str, Any], *, provider: str, replay: bool) -> CompileResponse:
        """Built from the settle's result (`settle_compile`, stored on the hold for replays)."""
        return cls(id=result["id"], request_id=result["request_id"], language=result["language"],
                   code=result["code"], valid=result["valid"], diagnostics=result["diagnostics"],
                   repaired=result["repaired"], model=result["model"], provider=provider,
                   usage=TokenUsage.from_result(result), balance_usd=result["balance_usd"], replay=replay)


# -- usage ----------------------------------------------------------------------------------------------

class UsageQuery(Input):
    from_: date | None = Field(default=None, alias="from")
    to: date | None = None
    group_by: Literal["day", "model", "operation", "service", "day_model"] = "day"

    model_config = ConfigDict(extra="forbid", populate_by_name=False)


# Per-event bounds that match reality (ingest_usage checks the same in SQL): no context window or output
# limit of today's models comes near 10M tokens of one class, and no single call costs $1,000.
MAX_EVENT_TOKENS = 10_000_000
MAX_EVENT_COST_USD = Decimal(1000)
EventTokens = Annotated[int, Field(ge=0, le=MAX_EVENT_TOKENS)]


class UsageEvent(Input):
    """One usage event from another service; `created_at` at most a day ahead (and, checked in SQL, within
    the raw retention)."""

    event_id: uuid.UUID
    user_id: uuid.UUID
    service: Annotated[Text, StringConstraints(min_length=1, max_length=50)]
    operation: Annotated[Text, StringConstraints(min_length=1, max_length=50)]
    model: Annotated[Text, StringConstraints(min_length=1, max_length=100)] | None = None
    input_tokens: EventTokens = 0
    cached_input_tokens: EventTokens = 0
    cache_write_tokens: EventTokens = 0
    output_tokens: EventTokens = 0
    reasoning_tokens: EventTokens = 0
    cost_usd: Annotated[Decimal, Field(ge=0, le=MAX_EVENT_COST_USD, decimal_places=6)] = Decimal(0)
    latency_ms: Annotated[int, Field(ge=0, le=2_000_000_000)] | None = None
    status: Literal["succeeded", "failed"] = "succeeded"
    error_code: Annotated[Text, StringConstraints(max_length=100)] | None = None
    request_id: Annotated[Text, StringConstraints(max_length=200)] | None = None
    created_at: datetime | None = None

    @field_validator("created_at")
    @classmethod
    def _not_far_ahead(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is not None and value > datetime.now(UTC) + timedelta(days=1):
            raise ValueError("created_at is more than a day ahead")
        return value


class IngestRequest(Input):
    events: Annotated[list[UsageEvent], Field(min_length=1, max_length=1000)]


class IngestResponse(BaseModel):
    received: int
    inserted: int
    duplicates: int


class UsageRow(BaseModel):
    key: str
    day: date | None = None  # group_by=day_model only
    model: str | None = None  # group_by=day_model only
    requests: int
    failures: int
    input_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int
    reasoning_tokens: int = 0
    cost_usd: float


class UsageResponse(BaseModel):
    from_: date = Field(alias="from")
    to: date
    group_by: str
    rows: list[UsageRow]
    totals: dict[str, Any]
    account: dict[str, Any] | None
    view_covers_before: date | None


# -- responses of the listing, scheduled and probe operations, and the error envelope ---------------------

class ChatSessionItem(BaseModel):
    """One of the caller's sessions, as `GET /chat` lists them (newest activity first)."""

    id: uuid.UUID
    name: str | None = Field(default=None, description="The name the session was started with, if any.")
    title: str | None
    last_message_at: datetime
    created_at: datetime
    message_count: int


class ChatMessageItem(BaseModel):
    """One message of a session, as `GET /chat?session_id=` lists them (newest first, by `seq`)."""

    id: uuid.UUID
    seq: int
    role: Literal["system", "user", "assistant"]
    content: str
    model: str | None
    status: Literal["complete", "partial"]
    input_tokens: int | None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None
    reasoning_tokens: int | None = None
    created_at: datetime


class ChatListResponse(BaseModel):
    """Sessions (no `session_id` given) or one session's messages; pass `next_cursor` back as `cursor`."""

    items: list[ChatSessionItem] | list[ChatMessageItem]
    next_cursor: str | None


class ChatDelta(BaseModel):
    """The `data` of a streamed chat's `delta` event: the next piece of the reply."""

    text: str


class ViewRefresh(BaseModel):
    """One run of the usage rollup: rows added since the last run, partitions made and dropped."""

    view: str
    covers_before: date
    duration_ms: int
    rows_rolled_up: int | None = None
    keys_updated: int | None = None
    partitions_created: list[str] | None = None
    partitions_dropped: list[str] | None = None
    event_ids_forgotten: int | None = None
    retention_months: int | None = None
    raw_kept_from: datetime | None = None
    retention: str | None = Field(default=None, description="Set when retention was skipped (and why).")


class ExpiredHolds(BaseModel):
    expired: int
    hold_ids: list[uuid.UUID]


class RefreshViewsResponse(BaseModel):
    refreshed: list[ViewRefresh]
    expired_holds: ExpiredHolds
    duration_ms: float


class HealthDatabase(BaseModel):
    ok: bool
    latest_migration: str | None
    expected_migration: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model_provider: str
    default_model: str | None = Field(description="The model of a request that names none.")
    transport: str
    database: HealthDatabase


class ModelInfo(BaseModel):
    """One active model of `model_prices`, USD per million tokens of each class."""

    model: str
    provider: Literal["openai", "anthropic", "offline"]
    is_default: bool = Field(description="The default of its provider.")
    input_usd_per_mtok: float
    cached_input_usd_per_mtok: float
    cache_write_usd_per_mtok: float
    output_usd_per_mtok: float
    max_output_tokens: int


class ModelList(BaseModel):
    items: list[ModelInfo]
    default_model: str | None


class FieldProblem(BaseModel):
    field: str = Field(description="The field's name (dotted for nested fields; `body` for the whole body).")
    message: str = Field(description="What the field must be, e.g. `must be at most 32000 characters`.")
    type: str = Field(description="Machine-readable kind of problem, e.g. `string_too_long`, `missing`.")


class ErrorDetails(BaseModel):
    """The one shape of `details`: an object; `fields` and `reason` as described, plus facts of the error."""

    model_config = ConfigDict(extra="allow")

    fields: list[FieldProblem] | None = Field(default=None, description="One entry per invalid input field.")
    reason: str | None = Field(default=None, description="The database's own explanation, verbatim.")


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable, e.g. `validation_error`, `insufficient_credits`.")
    message: str = Field(description="For people: sentences naming the field or thing, with the values that "
                                     "matter, e.g. `Field 'message' must be at most 32000 characters.`")
    request_id: str = Field(description="The request's id, also in the `X-Request-Id` response header.")
    details: ErrorDetails | None = Field(
        default=None, description="Present on some errors; always an object: `fields` (invalid input fields), "
                                  "`reason` (the database's explanation) and facts of that error, e.g. "
                                  "`provider_status`, `failing`, `required_scope`.")


class Error(BaseModel):
    """The envelope of every failure (`functions.errors.ApiError.body`)."""

    error: ErrorBody


# -- API keys -------------------------------------------------------------------------------------------

KeyScope = Literal["models", "usage:read"]


class KeyCreateRequest(Input):
    name: Annotated[Text, StringConstraints(min_length=1, max_length=100)] = Field(
        description="A label for you, e.g. the machine or script that uses the key.")
    scopes: Annotated[list[KeyScope], Field(min_length=1, max_length=2)] | None = Field(
        default=None, description="`models` (chat, compile) and/or `usage:read` (GET /usage); default both. "
                                  "No key may manage keys.")
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="The key stops working this many days from now. Not with `expires_at`.")
    expires_at: datetime | None = Field(
        default=None, description="The key stops working at this instant (within 3650 days). Not with "
                                  "`expires_in_days`. Neither: the key does not expire.")


class ApiKeyItem(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The 12 hex digits after `sk_`, to recognise a key; never the secret.")
    scopes: list[KeyScope]
    expires_at: datetime | None
    status: Literal["active", "expired", "revoked"]
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class ApiKeyCreated(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[KeyScope]
    expires_at: datetime | None
    created_at: datetime
    key: str = Field(description="The key itself (`sk_<prefix>_<secret>`), shown this once: only its hash is "
                                 "stored. Send it as `Authorization: Bearer sk_...` or `X-API-Key`.")


class KeyListResponse(BaseModel):
    items: list[ApiKeyItem] = Field(description="The caller's keys, newest first, revoked and expired included.")


class KeyRevoked(BaseModel):
    id: uuid.UUID
    revoked_at: datetime = Field(description="When the key was revoked (the first revocation stands).")


# -- cursors --------------------------------------------------------------------------------------------

class CursorError(ValueError):
    pass


def encode_cursor(values: dict[str, Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, keys: set[str]) -> dict[str, Any]:
    """The values of a cursor made by `encode_cursor` with exactly `keys`; CursorError otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CursorError("cursor is not one this API issued") from exc
    if not isinstance(values, dict) or set(values) != keys:
        raise CursorError("cursor is not one this API issued")
    return values
