"""The database port: call an RPC by name with JSON-able arguments as a given caller, get JSON back.

Two transports implement it: `postgres` (psycopg pool, role and claims set per transaction as PostgREST
does) and `supabase` (PostgREST over HTTP with supabase-py's postgrest client). Both raise
`functions.errors.ApiError` subclasses mapped from the same SQLSTATEs.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

Role = Literal["anon", "authenticated", "service_role"]
_RPC_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Caller:
    """Who a database call runs as. `access_token` is the caller's own Supabase JWT, when there is one."""

    role: Role
    user_id: uuid.UUID | None = None
    access_token: str | None = None

    def claims(self) -> dict[str, Any]:
        """The JWT claims PostgREST would put in `request.jwt.claims` for this caller."""
        claims: dict[str, Any] = {"role": self.role}
        if self.user_id is not None:
            claims |= {"sub": str(self.user_id), "aud": "authenticated"}
        return claims


SERVICE = Caller("service_role")


class RawJson(str):
    """JSON text already serialized (and validated) by the caller: sent to the RPC as it is."""


def as_sql_literal(value: Any) -> str | None:
    """A value as PostgREST hands it to SQL: text that Postgres casts to the parameter's declared type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    if isinstance(value, (int, float, Decimal, uuid.UUID, date, datetime, str)):
        return value.isoformat() if isinstance(value, (date, datetime)) else str(value)
    raise TypeError(f"cannot send {type(value).__name__} to an RPC")


def check_rpc_name(name: str) -> str:
    if not _RPC_NAME.match(name):
        raise ValueError(f"not an RPC name: {name!r}")
    return name


class Database(Protocol):
    """What every function needs from the database."""

    async def rpc(self, name: str, args: Mapping[str, Any], caller: Caller = SERVICE) -> Any:
        """Call `public.<name>` with `p_<key>` arguments as `caller`; return its JSON result."""
        ...

    async def aclose(self) -> None:
        """Close what this event loop holds (its pool or HTTP client)."""
        ...

    def close(self) -> None:
        """Close what every event loop holds, from outside them (process exit, tests)."""
        ...
