"""A PostgREST stand-in for respx: `/rest/v1/rpc/<name>` runs the function in the real test database
the way PostgREST does (JWT verified with the project secret, role and claims set per transaction,
JSON arguments converted by `json_to_record` with the function's declared types), and answers with
PostgREST's status codes and error bodies. Only the HTTP hop is simulated; SQL, grants and RLS are real."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jwt
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

RPC_PATH = re.compile(r"/rest/v1/rpc/(?P<name>[a-z_][a-z0-9_]*)$")


def pgrst_status(sqlstate: str | None, role: str) -> int:
    """PostgREST's mapping of SQLSTATE to HTTP status (the parts this project meets)."""
    if not sqlstate:
        return 500
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    if sqlstate in ("23503", "23505"):
        return 409
    if sqlstate.startswith(("22", "23")) or sqlstate == "P0001":
        return 400
    if sqlstate == "42883":
        return 404
    if sqlstate.startswith(("08", "53", "57")):
        return 503
    return 500


class PostgrestEmulator:
    def __init__(self, db_url: str, jwt_secret: str) -> None:
        self.jwt_secret = jwt_secret
        self.pool = ConnectionPool(db_url, min_size=1, max_size=8, kwargs={"autocommit": True}, open=True)
        self.calls: list[str] = []
        self._signatures: dict[str, list[tuple[str, str]]] = {}

    def close(self) -> None:
        self.pool.close()

    def _signature(self, conn: psycopg.Connection[Any], name: str) -> list[tuple[str, str]] | None:
        if name not in self._signatures:
            row = conn.execute(
                "select p.proargnames, array(select format_type(t, null) from unnest(p.proargtypes) t)"
                " from pg_proc p where p.pronamespace = 'public'::regnamespace and p.proname = %s", (name,)
            ).fetchone()
            if row is None:
                return None
            names, types = row
            self._signatures[name] = list(zip(names or [], types, strict=False))
        return self._signatures[name]

    @staticmethod
    def _error(status: int, code: str, message: str, details: str | None = None) -> httpx.Response:
        return httpx.Response(status, json={"code": code, "message": message, "details": details, "hint": None})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        match = RPC_PATH.search(request.url.path)
        assert match is not None, request.url
        name = match["name"]
        self.calls.append(name)
        auth = request.headers.get("Authorization", "")
        if not request.headers.get("apikey"):
            return self._error(401, "PGRST000", "No API key found in request")
        try:
            claims = jwt.decode(auth.removeprefix("Bearer "), self.jwt_secret, algorithms=["HS256"],
                                options={"verify_aud": False})
        except jwt.PyJWTError as exc:
            return self._error(401, "PGRST301", f"JWT invalid: {exc}")
        role = str(claims.get("role", "anon"))
        args = json.loads(request.content or b"{}")
        with self.pool.connection() as conn:
            signature = self._signature(conn, name)
            if signature is None:
                return self._error(404, "PGRST202", f"Could not find the function public.{name}")
            declared = dict(signature)
            unknown = [k for k in args if k not in declared]
            if unknown:
                return self._error(404, "PGRST202", f"Could not find the function public.{name}({', '.join(args)})")
            keys = list(args)
            record = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(declared[k])) for k in keys)
            call_args = sql.SQL(", ").join(
                sql.SQL("{} := a.{}").format(sql.Identifier(k), sql.Identifier(k)) for k in keys)
            if keys:
                query = sql.SQL("select public.{}({}) from json_to_record(%s::json) as a({})").format(
                    sql.Identifier(name), call_args, record)
                params: tuple[Any, ...] = (json.dumps(args),)
            else:
                query = sql.SQL("select public.{}()").format(sql.Identifier(name))
                params = ()
            try:
                with conn.transaction():
                    conn.execute("select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                                 (role, json.dumps(claims)))
                    row = conn.execute(query, params).fetchone()
            except psycopg.Error as exc:
                diag = exc.diag
                return self._error(pgrst_status(exc.sqlstate, role), exc.sqlstate or "",
                                   diag.message_primary or "", diag.message_detail)
        return httpx.Response(200, json=row[0] if row else None)
