"""The `postgres` transport: psycopg 3's async pool; each call is one transaction that sets the role and
`request.jwt.claims` exactly as PostgREST does, so SQL sees the same `auth.uid()` and grants.

One round trip per call: the two statements (set the caller, call the RPC) go out as one simple-protocol
query, and statements of one query string run in one implicit transaction, so `set_config(..., true)` holds
for the call and vanishes with its commit or rollback. The values are quoted by psycopg (libpq's escaping)
as literals of unknown type, so Postgres casts each to the parameter's declared type, as it would a bound
parameter; the SQL text of each RPC and argument set is built once. One Query message costs both sides
less than the extended protocol's Parse/Bind/Execute pair in a pipeline (about a third less CPU per call
in this process). Named prepared statements are opt-in (`prepare`, which keeps server-side binding in a
pipeline): Supabase's transaction-mode pooler may not keep them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from functions.db import SERVICE, Caller, as_sql_literal, check_rpc_name
from functions.errors import ServiceUnavailable, from_sqlstate
from functions.loops import PerLoop

log = logging.getLogger(__name__)

# Failures worth another try: the connection, the pool, or a serialization/deadlock abort. Every RPC
# that writes is idempotent on its request id, so a retry after an ambiguous commit changes nothing.
_SET_CALLER = "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)"
_RETRYABLE = (psycopg.OperationalError, PoolTimeout, pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


class PostgresDatabase:
    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 5.0,
        attempts: int = 3, statement_timeout_ms: int = 15000, prepare: bool = False,
    ) -> None:
        self.url = url
        self.attempts = attempts
        self.prepare = prepare
        self._sql: dict[tuple[str, tuple[str, ...]], str] = {}
        self._pool_args: dict[str, Any] = {
            "min_size": min_size, "max_size": max_size, "timeout": connect_timeout,
            # autocommit: each call is its own implicit transaction (see the module docstring), never nested in
            # one left open, so a role set for one request cannot outlive it on a reused connection. No check on
            # checkout: a dead connection fails the call, which is retried on a fresh one.
            "kwargs": {"autocommit": True, "connect_timeout": max(int(connect_timeout), 1),
                       "options": f"-c statement_timeout={statement_timeout_ms}",
                       "prepare_threshold": 0 if prepare else None},
        }
        self.pools: PerLoop[AsyncConnectionPool] = PerLoop(self._make_pool, _close_pool)

    async def _make_pool(self) -> AsyncConnectionPool:
        pool = AsyncConnectionPool(self.url, open=False, **self._pool_args)
        await pool.open(wait=False)
        return pool

    async def rpc(self, name: str, args: Mapping[str, Any], caller: Caller = SERVICE) -> Any:
        query = self._call_sql(name, tuple(args))
        params = [as_sql_literal(value) for value in args.values()]
        claims = (caller.role, json.dumps(caller.claims()))
        try:
            try:  # the common case, without a retry wrapper around it
                return await self._run(query, params, claims)
            except _RETRYABLE as exc:
                log.info("database call failed (%s); retrying", type(exc).__name__)
            import stamina  # only after a failure: not a cost of every instance's start
            async for attempt in stamina.retry_context(on=_RETRYABLE, attempts=max(self.attempts - 1, 1),
                                                       wait_initial=0.05, wait_max=1.0, wait_jitter=0.1):
                with attempt:
                    return await self._run(query, params, claims)
        except _RETRYABLE as exc:
            log.warning("database unavailable after %s attempts: %s", self.attempts, type(exc).__name__)
            raise ServiceUnavailable("The database is unavailable; try again shortly.",
                                     code="database_unavailable") from exc
        except psycopg.Error as exc:
            diag = exc.diag
            raise from_sqlstate(exc.sqlstate, diag.message_primary or "", diag.message_detail) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(self, query: str, params: list[str | None], claims: tuple[str, str]) -> Any:
        pool = await self.pools.get()
        async with pool.connection() as conn:
            if self.prepare:
                async with conn.pipeline():  # both statements in one round trip, one implicit transaction
                    await conn.execute(_SET_CALLER, claims, prepare=True)
                    cur: psycopg.AsyncCursor[Any] = await conn.execute(query, params, prepare=True)
            else:  # one Query message: both statements, one implicit transaction
                cur = psycopg.AsyncClientCursor(conn)
                await cur.execute(f"{_SET_CALLER}; {query}", [*claims, *params], prepare=False)
                cur.nextset()  # the RPC's result
            row = await cur.fetchone()
            return row[0] if row else None

    def _call_sql(self, name: str, keys: tuple[str, ...]) -> str:
        """`select public.<name>(p_a => %s, ...)`, built once per RPC and argument set. The values go as
        text of unknown type, so Postgres casts each to the parameter's declared type (as PostgREST does)."""
        query = self._sql.get((name, keys))
        if query is None:
            check_rpc_name(name)
            call_args = ", ".join(f"p_{check_rpc_name(key)} => %s" for key in keys)
            query = self._sql[(name, keys)] = f"select public.{name}({call_args})"
        return query

    async def aclose(self) -> None:
        await self.pools.aclose()

    def close(self) -> None:
        self.pools.close_all()


async def _close_pool(pool: AsyncConnectionPool) -> None:
    await pool.close()
