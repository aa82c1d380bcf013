"""The `supabase` transport: RPCs through PostgREST with supabase-py's postgrest client.

One shared `httpx.AsyncClient` per event loop; the caller's headers are set per request (never
`client.auth(token)` on a shared client: concurrent requests would see each other's tokens). Users with their own
access token call as themselves; API-key users and the backend call with the service key, and the RPCs
take the user id as an argument (`private.effective_user` in SQL decides which applies).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from functions.db import SERVICE, Caller, RawJson, as_sql_literal, check_rpc_name
from functions.errors import ApiError, ServiceUnavailable, Unauthorized, from_sqlstate
from functions.loops import PerLoop
from functions.settings import Settings

log = logging.getLogger(__name__)

_GATEWAY_RETRY = {"502", "503", "504", "520"}


class _Gateway(Exception):
    """PostgREST or its gateway answered with a transient failure."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, RawJson):
        return json.loads(value)
    if value is None or isinstance(value, (bool, int, float, str, dict, list)):
        return value
    return as_sql_literal(value)


class SupabaseDatabase:
    def __init__(self, url: str, service_key: str, anon_key: str | None = None, *, attempts: int = 3,
                 ) -> None:
        from postgrest import AsyncPostgrestClient  # lazy: part of supabase-py, slow to import

        self._client_cls = AsyncPostgrestClient
        self.rest_url = url.rstrip("/") + "/rest/v1"
        self.service_key = service_key
        self.anon_key = anon_key or service_key
        self.attempts = attempts
        self.clients: PerLoop[httpx.AsyncClient] = PerLoop(_make_client, _close_client)

    @classmethod
    def from_settings(cls, s: Settings) -> SupabaseDatabase:
        assert s.supabase_url is not None
        key = s.secret("supabase_service_role_key")
        assert key is not None
        return cls(s.supabase_url, key, s.secret("supabase_anon_key"), attempts=s.db_attempts)

    def _headers(self, caller: Caller) -> dict[str, str]:
        if caller.role == "authenticated" and caller.access_token:
            return {"apikey": self.anon_key, "Authorization": f"Bearer {caller.access_token}"}
        return {"apikey": self.service_key, "Authorization": f"Bearer {self.service_key}"}

    async def rpc(self, name: str, args: Mapping[str, Any], caller: Caller = SERVICE) -> Any:
        check_rpc_name(name)
        params = {f"p_{check_rpc_name(k)}": _jsonable(v) for k, v in args.items()}
        client = self._client_cls(self.rest_url, headers=self._headers(caller), http_client=await self.clients.get(),
                                  retry_enabled=False)
        try:
            try:  # the common case, without a retry wrapper around it
                return await self._call(client, name, params)
            except (httpx.TransportError, _Gateway) as exc:
                log.info("supabase call failed (%s); retrying", exc)
            import stamina  # only after a failure
            async for attempt in stamina.retry_context(on=(httpx.TransportError, _Gateway),
                                                       attempts=max(self.attempts - 1, 1),
                                                       wait_initial=0.05, wait_max=1.0, wait_jitter=0.1):
                with attempt:
                    return await self._call(client, name, params)
        except (httpx.TransportError, _Gateway) as exc:
            log.warning("supabase unavailable after %s attempts: %s", self.attempts, exc)
            raise ServiceUnavailable("The database is unavailable; try again shortly.",
                                     code="database_unavailable") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _call(client: Any, name: str, params: dict[str, Any]) -> Any:
        from postgrest import APIError

        try:
            return (await client.rpc(name, params).execute()).data
        except APIError as exc:
            if str(exc.code) in _GATEWAY_RETRY:
                raise _Gateway(str(exc.code)) from exc
            raise _map(exc) from exc

    async def aclose(self) -> None:
        await self.clients.aclose()

    def close(self) -> None:
        self.clients.close_all()


async def _make_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0))


async def _close_client(client: httpx.AsyncClient) -> None:
    await client.aclose()


def _map(exc: Any) -> ApiError:
    code = str(exc.code or "")
    if code in {"PGRST301", "PGRST302", "PGRST303"}:
        return Unauthorized("The database refused the credentials.", code="invalid_token")
    if code.startswith("PGRST") or (code.isdigit() and len(code) == 3):  # an HTTP status, not a SQLSTATE
        log.error("postgrest error %s: %s", code, exc.message)
        return from_sqlstate(None, "", None)
    return from_sqlstate(code, exc.message or "", exc.details)
