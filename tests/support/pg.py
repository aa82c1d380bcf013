"""Test helpers for talking to the real database as Supabase's API roles would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from functions.db import as_sql_literal


class Sql:
    """A superuser connection that can act as anon, authenticated (a given user) or service_role.

    Each `as_*` block is one transaction with `set local role` and `request.jwt.claims`, exactly as
    PostgREST runs a request; the block rolls back if it raises.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)

    def close(self) -> None:
        self.conn.close()

    def q(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        """Run as the superuser (setup and checks that bypass RLS)."""
        cur = self.conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []

    def one(self, query: str, params: Any = None) -> Any:
        rows = self.q(query, params)
        assert len(rows) == 1, rows
        return next(iter(rows[0].values())) if len(rows[0]) == 1 else rows[0]

    @contextmanager
    def acting(self, role: str, user_id: uuid.UUID | str | None = None) -> Iterator[psycopg.Connection[Any]]:
        claims: dict[str, Any] = {"role": role}
        if user_id is not None:
            claims |= {"sub": str(user_id), "aud": "authenticated"}
        with self.conn.transaction():
            self.conn.execute(f"set local role {role}")
            self.conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            yield self.conn

    def rpc(self, name: str, /, *, as_role: str = "service_role", as_user: Any = None, **args: Any) -> Any:
        """Call public.<name>(p_x => ...) as `as_role` (and user `as_user`); returns the result value."""
        named = ", ".join(f"p_{k} => %s" for k in args)
        values = [as_sql_literal(v) for v in args.values()]
        with self.acting(as_role, as_user) as conn:
            row = conn.execute(f"select public.{name}({named}) as r", values).fetchone()
        assert row is not None
        return row["r"]  # type: ignore[call-overload]

    def make_user(self, email: str | None = None, *, balance: float | None = None, plan: str = "pro") -> uuid.UUID:
        """Insert an auth user (the triggers make the profile and billing account); set plan and balance."""
        uid = uuid.uuid4()
        self.q("insert into auth.users (id, email) values (%s, %s)", (uid, email or f"{uid}@example.test"))
        self.q("update public.profiles set plan_id = %s where id = %s", (plan, uid))
        if balance is not None:
            current = self.one("select balance_usd from public.billing_accounts where user_id = %s", (uid,))
            delta = round(balance - float(current), 6)
            if delta:
                kind = "top_up" if delta > 0 else "adjustment"
                self.rpc("top_up", user_id=uid, amount_usd=delta, payment_ref=f"test-{uid}", kind=kind)
        return uid


# Rows several database test files need --------------------------------------------------------------------


def create_api_key(db: Sql, name: str | None, user_id: uuid.UUID | None, *, as_user: uuid.UUID | None = None,
                   **args: Any) -> Any:
    """`create_api_key` as the service (or as `as_user`); its `p_name` clashes with `Sql.rpc`'s `name`.
    `args` are further arguments (`scopes`, `expires_at`, `expires_in_days`), sent as PostgREST would."""
    role = "service_role" if as_user is None else "authenticated"
    extra = "".join(f", p_{k} => %s" for k in args)
    values = [name, user_id, *(as_sql_literal(v) for v in args.values())]
    with db.acting(role, as_user) as c:
        row = c.execute(f"select public.create_api_key(p_name => %s, p_user_id => %s{extra}) as r", values).fetchone()
    return row["r"]


def seed_user_rows(db: Sql, uid: uuid.UUID) -> dict[str, Any]:
    """Give `uid` at least one row in every user-owned table, through the RPCs and the browser's writes."""
    key = create_api_key(db, "ci", uid)
    hold = db.rpc("begin_charge", user_id=uid, request_id=f"chat-{uid}", operation="chat", model="offline-dev",
                  prompt_chars=20, max_output_tokens=20)
    turn = db.rpc("settle_chat_turn", hold_id=hold["hold_id"], user_message="hi",
                  assistant_message="hello", input_tokens=5, output_tokens=5)
    with db.acting("authenticated", uid) as c:
        project = c.execute("insert into public.projects (name) values ('p') returning id").fetchone()["id"]
        c.execute("insert into public.project_thoughts (project_id, content) values (%s, 'a note')", (project,))
    files = db.rpc("save_project_files", as_role="authenticated", as_user=uid, project_id=project,
                   files=[{"path": "a.py", "content": "x = 1"}])
    compile_hold = db.rpc("begin_charge", user_id=uid, request_id=f"compile-{uid}", operation="compile",
                          model="offline-dev", prompt_chars=20, max_output_tokens=20)
    compiled = db.rpc("settle_compile", hold_id=compile_hold["hold_id"], task="one", language="python",
                      code="x = 1", valid=True, diagnostics=[], input_tokens=5, output_tokens=5, project_id=project)
    open_hold = db.rpc("begin_charge", user_id=uid, request_id=f"open-{uid}", operation="chat",
                       model="offline-dev", prompt_chars=20, max_output_tokens=20)
    return {"key": key, "session": turn["session_id"], "project": project, "file": files[0]["id"],
            "compile": compiled["id"], "open_hold": open_hold["hold_id"]}
