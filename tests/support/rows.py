"""Row models: one pydantic model per table in `public`, mirroring the migrations column for column.

The migrations are the schema; these models are its Python mirror, and `tests/db/test_db_schema.py`
compares them with the live catalog (names, order-free; nullability; Postgres type; the allowed values
of `check (x in (...))` columns), so a migration that changes a table without changing its model here
fails CI. Rules of the mirror:

- nullable column  <=> `X | None`; nothing else is optional;
- `uuid` -> `uuid.UUID`, `timestamptz` -> `datetime`, `date` -> `date`, `text` -> `str`, `boolean` -> `bool`,
  `jsonb` -> `dict[str, Any]`, `list[Any]` or `Any`;
- `integer`, `bigint` and `numeric(p,s)` carry their exact Postgres type as a `PgType` marker (and the
  bounds Postgres enforces) because the Python type alone (`int`, `Decimal`) does not say which;
- a text column restricted by `check (col in (...))` is a `Literal` of exactly those values;
- a `text[]` column restricted by `check (col <@ array[...])` is a `list` of such a `Literal`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class PgType:
    """The column's Postgres type as `format_type()` prints it, where the Python type is ambiguous."""

    name: str


Int4 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1), PgType("integer")]
Int8 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1), PgType("bigint")]
Money = Annotated[Decimal, Field(max_digits=14, decimal_places=6), PgType("numeric(14,6)")]

HoldStatus = Literal["open", "settled", "released", "expired"]
Protocol = Literal["openai", "anthropic"]
Operation = Literal["chat", "compile"]
ApiKeyScope = Literal["models", "usage:read"]


class Row(BaseModel):
    """Base of every row model: unknown columns are an error, rows are values."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Plan(Row):
    """`public.plans`: monthly quota, request rate and sign-up grant of a subscription plan."""

    id: str
    name: str
    monthly_quota_usd: Money
    requests_per_minute: Int4
    signup_grant_usd: Money
    created_at: datetime
    updated_at: datetime


class ModelPrice(Row):
    """`public.model_prices`: USD per million input/output tokens of one model."""

    model: str
    provider: Literal["openai", "anthropic", "offline"]
    input_usd_per_mtok: Money
    output_usd_per_mtok: Money
    max_output_tokens: Int4
    cached_input_usd_per_mtok: Money | None
    cache_write_usd_per_mtok: Money | None
    is_default: bool
    active: bool
    created_at: datetime
    updated_at: datetime


class Profile(Row):
    """`public.profiles`: one per auth user, created by trigger; plan and status."""

    id: uuid.UUID
    email: str | None
    display_name: str | None
    plan_id: str
    status: Literal["active", "paused", "blocked"]
    created_at: datetime
    updated_at: datetime


class ApiKey(Row):
    """`public.api_keys`: a programmatic key, stored as a sha256 hash with a 12-hex prefix."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    key_hash: str
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    scopes: list[ApiKeyScope]
    expires_at: datetime | None


class BillingAccount(Row):
    """`public.billing_accounts`: balance, open holds and this month's spend of one user."""

    user_id: uuid.UUID
    balance_usd: Money
    held_usd: Money
    month_spend_usd: Money
    period_start: date
    rate_window_start: datetime | None
    rate_window_count: Int4
    created_at: datetime
    updated_at: datetime


class Hold(Row):
    """`public.holds`: the worst-case reservation of one model call, idempotent on request id."""

    id: uuid.UUID
    user_id: uuid.UUID
    request_id: str
    operation: Operation
    model: str
    amount_usd: Money
    status: HoldStatus
    charged_usd: Money | None
    result: dict[str, Any] | None
    created_at: datetime
    closed_at: datetime | None
    session_id: uuid.UUID | None
    session_name: str | None
    prompt_chars: Int4 | None
    delivered_chars: Int4
    last_seen_at: datetime | None
    protocol: Protocol | None
    api_key_id: uuid.UUID | None


class CreditLedgerEntry(Row):
    """`public.credit_ledger`: one append-only money movement; a user's amounts sum to the balance."""

    id: Int8
    user_id: uuid.UUID
    kind: Literal["top_up", "charge", "refund", "grant", "adjustment"]
    amount_usd: Money
    balance_after: Money
    idempotency_key: str
    hold_id: uuid.UUID | None
    description: str | None
    created_at: datetime


class UsageLog(Row):
    """`public.usage_logs`: one model call or ingested event, partitioned by month; `event_id` is unique
    across partitions (`private.usage_event_ids`); `xact_id` is the writing transaction (rollup watermark)."""

    id: Int8
    event_id: uuid.UUID
    user_id: uuid.UUID
    service: str
    operation: str
    model: str | None
    input_tokens: Int4
    output_tokens: Int4
    cost_usd: Money
    latency_ms: Int4 | None
    status: Literal["succeeded", "failed"]
    error_code: str | None
    request_id: str | None
    hold_id: uuid.UUID | None
    created_at: datetime
    cached_input_tokens: Int4
    cache_write_tokens: Int4
    reasoning_tokens: Int4
    xact_id: Int8
    protocol: Protocol | None
    api_key_id: uuid.UUID | None


class ChatSession(Row):
    """`public.chat_sessions`: a conversation, soft-deleted with `deleted_at`."""

    id: uuid.UUID
    user_id: uuid.UUID
    title: str | None
    last_message_at: datetime
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    name: str | None


class ChatMessage(Row):
    """`public.chat_messages`: one turn of a session, in order by `seq`."""

    id: uuid.UUID
    session_id: uuid.UUID
    user_id: uuid.UUID
    seq: Int4
    role: Literal["system", "user", "assistant"]
    content: str
    model: str | None
    input_tokens: Int4 | None
    output_tokens: Int4 | None
    status: Literal["complete", "partial"]
    request_id: str | None
    client_message_id: str | None
    hold_id: uuid.UUID | None
    created_at: datetime
    cached_input_tokens: Int4 | None
    cache_write_tokens: Int4 | None
    reasoning_tokens: Int4 | None


class ChatSessionSummary(Row):
    """`public.chat_session_summaries`: running totals and a preview of the latest exchange."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    summary: str
    message_count: Int4
    input_tokens: Int8
    output_tokens: Int8
    cost_usd: Money
    updated_at: datetime


class Project(Row):
    """`public.projects`: a user's code project, soft-deleted with `deleted_at`."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class ProjectFile(Row):
    """`public.project_files`: a file of a project; one live row per path."""

    id: uuid.UUID
    project_id: uuid.UUID
    user_id: uuid.UUID
    path: str
    content: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class ProjectThought(Row):
    """`public.project_thoughts`: a note kept about a project."""

    id: uuid.UUID
    project_id: uuid.UUID
    user_id: uuid.UUID
    content: str
    created_at: datetime


class CodeGenRequest(Row):
    """`public.code_gen_requests`: one compile call, its code, whether it parses and its cost."""

    id: uuid.UUID
    user_id: uuid.UUID
    project_id: uuid.UUID | None
    hold_id: uuid.UUID | None
    request_id: str
    task: str
    language: Literal["python", "sql"]
    code: str
    valid: bool
    diagnostics: list[Any]
    repaired: bool
    model: str
    input_tokens: Int4
    output_tokens: Int4
    cost_usd: Money
    created_at: datetime
    cached_input_tokens: Int4
    cache_write_tokens: Int4
    reasoning_tokens: Int4


TABLES: dict[str, type[BaseModel]] = {
    "plans": Plan,
    "model_prices": ModelPrice,
    "profiles": Profile,
    "api_keys": ApiKey,
    "billing_accounts": BillingAccount,
    "holds": Hold,
    "credit_ledger": CreditLedgerEntry,
    "usage_logs": UsageLog,
    "chat_sessions": ChatSession,
    "chat_messages": ChatMessage,
    "chat_session_summaries": ChatSessionSummary,
    "projects": Project,
    "project_files": ProjectFile,
    "project_thoughts": ProjectThought,
    "code_gen_requests": CodeGenRequest,
}
"""Table name in `public` -> its row model."""

__all__ = [
    "TABLES",
    "ApiKey",
    "BillingAccount",
    "ChatMessage",
    "ChatSession",
    "ChatSessionSummary",
    "CodeGenRequest",
    "CreditLedgerEntry",
    "Hold",
    "Int4",
    "Int8",
    "ModelPrice",
    "Money",
    "PgType",
    "Plan",
    "Profile",
    "Project",
    "ProjectFile",
    "ProjectThought",
    "Row",
    "UsageLog",
]
