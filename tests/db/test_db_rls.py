"""Row-level security and grants, tried the way the browser would: as `authenticated` (user A) against
user B's rows, and as `anon`, on every table in public and every RPC.

Probes that only try to break in run against one database per module (`world`) and always roll back;
tests in which the browser writes successfully get a fresh database (`db`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support.pg import Sql, create_api_key, seed_user_rows
from tests.support.rows import TABLES

# Who owns a row of each table; the shared catalog tables (readable by every signed-in user) have no owner.
OWNER_COLUMN = {
    "profiles": "id",
    "billing_accounts": "user_id",
    "credit_ledger": "user_id",
    "holds": "user_id",
    "api_keys": "user_id",
    "usage_logs": "user_id",
    "chat_sessions": "user_id",
    "chat_messages": "user_id",
    "chat_session_summaries": "user_id",
    "code_gen_requests": "user_id",
    "projects": "user_id",
    "project_files": "user_id",
    "project_thoughts": "user_id",
}
SHARED = {"plans", "model_prices"}

# The most harmful update a browser could try on each table.
HARMFUL_UPDATE = {
    "profiles": "plan_id = 'team', status = 'active'",
    "billing_accounts": "balance_usd = balance_usd + 1000",
    "credit_ledger": "amount_usd = 1000",
    "holds": "status = 'released', closed_at = now()",
    "api_keys": "revoked_at = now()",
    "usage_logs": "cost_usd = 0",
    "chat_sessions": "title = 'pwned'",
    "chat_messages": "content = 'pwned'",
    "chat_session_summaries": "summary = 'pwned'",
    "code_gen_requests": "code = 'pwned'",
    "projects": "name = 'pwned'",
    "project_files": "content = 'pwned'",
    "project_thoughts": "content = 'pwned'",
    "plans": "monthly_quota_usd = 1000000",
    "model_prices": "input_usd_per_mtok = 0, output_usd_per_mtok = 0",
}
# Updates an owner may make to their own rows; tried on the other user's rows too.
OWNER_UPDATE = {
    "profiles": "display_name = 'pwned'",
    "chat_sessions": "deleted_at = now()",
    "projects": "deleted_at = now()",
    "project_files": "deleted_at = now()",
}

# Service-only RPCs, called by a signed-in user for themselves with plausible arguments.
SERVICE_ONLY_CALLS = {
    "begin_charge": "public.begin_charge(%(uid)s, 'r-own', 'chat', 'offline-dev', 10, 10)",
    "begin_chat_turn": "public.begin_chat_turn(%(uid)s, 'r-own', 'offline-dev', null, 10, 10)",
    "touch_hold": "public.touch_hold(%(hold)s, 1000)",
    "settle_chat_turn": "public.settle_chat_turn(%(hold)s, 'hi', 'hello', 1, 1)",
    "settle_compile": "public.settle_compile(%(hold)s, 'task', 'python', 'x = 1', true, '[]', 1, 1)",
    "release_hold": "public.release_hold(%(hold)s, 'model_error')",
    "expire_stale_holds": "public.expire_stale_holds(1)",
    "top_up": "public.top_up(%(uid)s, 1000, 'free-money')",
    "ingest_usage": "public.ingest_usage('[]')",
    "refresh_usage_views": "public.refresh_usage_views()",
    "authenticate_api_key": "public.authenticate_api_key(%(key)s)",
    "health_probe": "public.health_probe()",
    "begin_api_call": "public.begin_api_call(%(uid)s, 'v1:r-own', 'openai', 'offline-dev', 10, 10)",
    "settle_api_call": "public.settle_api_call(%(hold)s, 1, 1, 0, 0, 0, null, '{}')",
}
BROWSER_RPCS = {
    "create_api_key", "list_api_keys", "revoke_api_key", "usage_summary", "chat_history", "list_sessions",
    "list_messages", "check_project", "save_project_files", "delete_project_file", "list_models",
}


# Helpers ------------------------------------------------------------------------------------------------


def probe(db: Sql, role: str, uid: uuid.UUID | None, statement: str, params: Any = None) -> list[Any] | str:
    """Run `statement` as `role` and always roll back: the rows it returned (RETURNING), or its SQLSTATE."""
    rows: list[Any] = []
    try:
        with db.acting(role, uid) as c:
            cur = c.execute(statement, params)
            rows = cur.fetchall() if cur.description else [None] * cur.rowcount
            raise psycopg.Rollback()
    except psycopg.Error as exc:
        return exc.sqlstate or "?"
    return rows


def fingerprint(db: Sql, table: str) -> str:
    """A hash of every row of `table`, to show that nothing changed."""
    query = sql.SQL("select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from public.{} t")
    return str(db.one(query.format(sql.Identifier(table)).as_string(db.conn)))


def clone_database(server_url: str, template_url: str) -> str:
    """A new database cloned from the migrated template; the caller drops it with `drop_database`."""
    template = psycopg.conninfo.conninfo_to_dict(template_url)["dbname"]
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template {}").format(sql.Identifier(name),
                                                                      sql.Identifier(str(template))))
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def drop_database(server_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(str(name))))


@dataclass
class World:
    db: Sql
    a: uuid.UUID
    b: uuid.UUID
    mine: dict[str, Any]
    theirs: dict[str, Any]


@pytest.fixture(scope="module")
def world(server_url: str, template_url: str) -> Iterator[World]:
    """Users A and B with rows in every table, shared by the probes of this module (which roll back)."""
    url = clone_database(server_url, template_url)
    db = Sql(url)
    a, b = db.make_user(balance=5), db.make_user(balance=5)
    yield World(db, a, b, seed_user_rows(db, a), seed_user_rows(db, b))
    db.close()
    drop_database(server_url, url)


def _q(db: Sql, template: str, table: str) -> str:
    owner = sql.Identifier(OWNER_COLUMN.get(table, "id"))
    return sql.SQL(template).format(t=sql.Identifier(table), o=owner).as_string(db.conn)


# Reading and changing another user's rows ---------------------------------------------------------------


def test_every_public_table_is_classified() -> None:
    assert set(OWNER_COLUMN) | SHARED == set(TABLES)
    assert set(HARMFUL_UPDATE) == set(TABLES)


@pytest.mark.parametrize("table", sorted(OWNER_COLUMN))
def test_user_cannot_read_update_or_delete_another_users_rows(world: World, table: str) -> None:
    db, a, b = world.db, world.a, world.b
    own = db.one(_q(db, "select count(*) from public.{t} where {o} = %s", table), (a,))
    theirs = db.one(_q(db, "select count(*) from public.{t} where {o} = %s", table), (b,))
    assert own > 0 and theirs > 0, "seed both users"
    before = fingerprint(db, table)
    with db.acting("authenticated", a) as c:
        # count(*) needs no column privilege, so this works even on api_keys (key_hash is not granted).
        seen = c.execute(_q(db, "select count(*) as n from public.{t} where {o} = %s", table), (b,)).fetchone()
        assert seen["n"] == 0
        assert c.execute(_q(db, "select count(*) as n from public.{t}", table)).fetchone()["n"] == own

    for assignment in {HARMFUL_UPDATE[table], OWNER_UPDATE.get(table, HARMFUL_UPDATE[table])}:
        aimed = probe(db, "authenticated", a, _q(db, f"update public.{{t}} set {assignment} where {{o}} = %s"
                                                     " returning {o}", table), (b,))
        assert aimed in ([], "42501"), (assignment, aimed)
        # Without a filter, the update reaches the caller's own rows at most.
        unfiltered = probe(db, "authenticated", a, _q(db, f"update public.{{t}} set {assignment} returning {{o}}",
                                                      table))
        assert unfiltered == "42501" or {r[OWNER_COLUMN[table]] for r in unfiltered} <= {a}, unfiltered
    assert probe(db, "authenticated", a, _q(db, "delete from public.{t} where {o} = %s returning {o}", table),
                 (b,)) in ([], "42501")
    unfiltered = probe(db, "authenticated", a, _q(db, "delete from public.{t} returning {o}", table))
    assert unfiltered == "42501" or {r[OWNER_COLUMN[table]] for r in unfiltered} <= {a}
    assert fingerprint(db, table) == before


@pytest.mark.parametrize("table", sorted(SHARED))
def test_shared_catalog_tables_are_read_only_for_users(world: World, table: str) -> None:
    db = world.db
    with db.acting("authenticated", world.a) as c:
        assert c.execute(_q(db, "select count(*) as n from public.{t}", table)).fetchone()["n"] > 0
    assert probe(db, "authenticated", world.a, _q(db, f"update public.{{t}} set {HARMFUL_UPDATE[table]}", table)) in (
        [], "42501")
    assert probe(db, "authenticated", world.a, _q(db, "delete from public.{t}", table)) in ([], "42501")
    insert = {
        "plans": "insert into public.plans (id, name, monthly_quota_usd) values ('mine', 'Mine', 1000000)",
        "model_prices": "insert into public.model_prices (model, provider, input_usd_per_mtok, output_usd_per_mtok)"
                        " values ('free-model', 'offline', 0, 0)",
    }[table]
    assert probe(db, "authenticated", world.a, insert) == "42501"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_anon_sees_and_changes_nothing(world: World, table: str) -> None:
    db = world.db
    assert db.one(_q(db, "select count(*) from public.{t}", table)) > 0
    assert probe(db, "anon", None, _q(db, "select 1 from public.{t}", table)) in ([], "42501")
    assert probe(db, "anon", None, _q(db, f"update public.{{t}} set {HARMFUL_UPDATE[table]}", table)) in ([], "42501")
    assert probe(db, "anon", None, _q(db, "delete from public.{t}", table)) in ([], "42501")
    # A copy of a real row under a new primary key: refused by the grant or by RLS, never by a constraint.
    row = db.one(_q(db, "select to_jsonb(t) from public.{t} t limit 1", table))
    for key in db.q("select a.attname, format_type(a.atttypid, a.atttypmod) as type from pg_index i"
                    " join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)"
                    " where i.indrelid = %s::regclass and i.indisprimary", (f"public.{table}",)):
        row[key["attname"]] = {"uuid": str(uuid.uuid4()), "bigint": 10**12}.get(key["type"], "anon_row")
    insert = _q(db, "insert into public.{t} overriding system value"
                    " select * from jsonb_populate_record(null::public.{t}, %s)", table)
    assert probe(db, "anon", None, insert, (psycopg.types.json.Jsonb(row),)) == "42501"


# RPCs ----------------------------------------------------------------------------------------------------


def test_anon_cannot_call_any_rpc(world: World) -> None:
    functions = world.db.q("select proname, pronargs from pg_proc where pronamespace = 'public'::regnamespace")
    assert {f["proname"] for f in functions} == set(SERVICE_ONLY_CALLS) | BROWSER_RPCS
    for f in functions:
        call = f"select public.{f['proname']}({', '.join(['null'] * f['pronargs'])})"
        assert probe(world.db, "anon", None, call) == "42501", f["proname"]


@pytest.mark.parametrize("name", sorted(SERVICE_ONLY_CALLS))
def test_user_cannot_call_service_only_rpcs(world: World, name: str) -> None:
    params = {"uid": world.a, "hold": world.mine["open_hold"], "key": world.mine["key"]["key"]}
    assert probe(world.db, "authenticated", world.a, f"select {SERVICE_ONLY_CALLS[name]}", params) == "42501"


def test_functions_executable_by_authenticated_are_exactly_the_browser_rpcs(world: World) -> None:
    rows = world.db.q("select proname from pg_proc where pronamespace = 'public'::regnamespace"
                      " and has_function_privilege('authenticated', oid, 'execute')")
    assert {r["proname"] for r in rows} == BROWSER_RPCS


def test_user_rpcs_refuse_another_users_objects(world: World) -> None:
    db, a, b, theirs = world.db, world.a, world.b, world.theirs
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("list_messages", {"session_id": theirs["session"]}, "PT404"),
        ("chat_history", {"session_id": theirs["session"]}, "PT404"),
        ("check_project", {"project_id": theirs["project"]}, "PT404"),
        ("delete_project_file", {"file_id": theirs["file"]}, "PT404"),
        ("save_project_files", {"project_id": theirs["project"], "files": [{"path": "evil.py"}]}, "PT404"),
        ("revoke_api_key", {"key_id": theirs["key"]["id"]}, "PT404"),
        ("list_api_keys", {"user_id": b}, "PT403"),
        ("usage_summary", {"from": "2020-01-01", "to": "2020-01-02", "user_id": b}, "PT403"),
        ("list_sessions", {"user_id": b}, "PT403"),
        ("list_messages", {"session_id": theirs["session"], "user_id": b}, "PT403"),
    ]
    before = {t: fingerprint(db, t) for t in TABLES}
    for name, args, state in calls:
        with pytest.raises(psycopg.Error) as err:
            db.rpc(name, as_role="authenticated", as_user=a, **args)
        assert err.value.sqlstate == state, name
    with pytest.raises(psycopg.Error) as err:
        create_api_key(db, "mine-now", b, as_user=a)
    assert err.value.sqlstate == "PT403"
    # Without must_exist, another user's session looks like a new one: empty, nothing leaked.
    assert db.rpc("chat_history", as_role="authenticated", as_user=a, session_id=theirs["session"],
                  must_exist=False) == []
    assert before == {t: fingerprint(db, t) for t in TABLES}


def test_api_key_hash_is_not_readable_by_users(world: World) -> None:
    db, a = world.db, world.a
    assert probe(db, "authenticated", a, "select key_hash from public.api_keys") == "42501"
    assert probe(db, "authenticated", a, "select * from public.api_keys") == "42501"
    with db.acting("authenticated", a) as c:
        rows = c.execute("select id, user_id, name, prefix, last_used_at, revoked_at, created_at"
                         " from public.api_keys").fetchall()
    assert [r["user_id"] for r in rows] == [a]
    listed = db.rpc("list_api_keys", as_role="authenticated", as_user=a)
    assert listed and all(set(k) == {"id", "name", "prefix", "scopes", "expires_at", "status",
                                              "last_used_at", "revoked_at", "created_at"}
                          for k in listed)


# What the browser may and may not write -----------------------------------------------------------------


def test_user_creates_and_updates_own_projects_files_thoughts_and_sessions(db: Sql) -> None:
    a = db.make_user()
    with db.acting("authenticated", a) as c:
        project = c.execute("insert into public.projects (name, description) values ('site', 'd')"
                            " returning id, user_id").fetchone()
        assert project["user_id"] == a  # from the column default auth.uid()
        assert c.execute("update public.projects set name = 'site2' where id = %s", (project["id"],)).rowcount == 1
        file = c.execute("insert into public.project_files (project_id, path, content) values (%s, 'a.py', 'x')"
                         " returning id", (project["id"],)).fetchone()
        assert c.execute("update public.project_files set content = 'y' where id = %s", (file["id"],)).rowcount == 1
        c.execute("insert into public.project_thoughts (project_id, content) values (%s, 'idea')", (project["id"],))
        session = c.execute("insert into public.chat_sessions (title) values ('t') returning id, user_id").fetchone()
        assert session["user_id"] == a
        assert c.execute("update public.chat_sessions set title = 'renamed', deleted_at = now() where id = %s",
                         (session["id"],)).rowcount == 1
        assert c.execute("update public.profiles set display_name = 'Ada' where id = %s", (a,)).rowcount == 1
    saved = db.rpc("save_project_files", as_role="authenticated", as_user=a, project_id=project["id"],
                   files=[{"path": "a.py", "content": "z"}, {"path": "b.py", "content": "w"}])
    assert [f["path"] for f in saved] == ["a.py", "b.py"]
    assert saved[0]["id"] == str(file["id"])
    assert db.one("select content from public.project_files where id = %s", (file["id"],)) == "z"
    assert db.one("select count(*) from public.project_files where project_id = %s", (project["id"],)) == 2
    assert db.one("select title from public.chat_sessions where id = %s", (session["id"],)) == "renamed"
    assert db.one("select count(*) from public.project_thoughts where user_id = %s", (a,)) == 1
    assert db.one("select display_name from public.profiles where id = %s", (a,)) == "Ada"


def test_user_cannot_write_into_another_users_project_or_as_another_user(world: World) -> None:
    db, a, b, theirs = world.db, world.a, world.b, world.theirs["project"]
    attempts = [
        ("insert into public.project_files (project_id, path) values (%s, 'evil.py')", (theirs,)),
        ("insert into public.project_files (project_id, user_id, path) values (%s, %s, 'evil.py')", (theirs, b)),
        ("insert into public.project_thoughts (project_id, content) values (%s, 'evil')", (theirs,)),
        ("insert into public.project_thoughts (project_id, user_id, content) values (%s, %s, 'evil')", (theirs, b)),
        ("insert into public.projects (user_id, name) values (%s, 'evil')", (b,)),
        ("insert into public.chat_sessions (user_id, title) values (%s, 'evil')", (b,)),
        ("update public.projects set user_id = %s where user_id = %s", (b, a)),
        ("update public.chat_sessions set user_id = %s where user_id = %s", (b, a)),
        ("update public.project_files set project_id = %s where user_id = %s", (theirs, a)),
        ("update public.project_files set user_id = %s where user_id = %s", (b, a)),
    ]
    for statement, params in attempts:
        assert probe(db, "authenticated", a, statement, params) == "42501", statement


def test_user_cannot_write_backend_tables_or_own_plan_and_status(world: World) -> None:
    db, a = world.db, world.a
    refused = [
        "insert into public.billing_accounts (user_id, balance_usd) values (gen_random_uuid(), 1000)",
        "update public.billing_accounts set balance_usd = 1000 where user_id = %(a)s",
        "insert into public.credit_ledger (user_id, kind, amount_usd, balance_after, idempotency_key)"
        " values (%(a)s, 'top_up', 1000, 1000, 'free')",
        "insert into public.holds (user_id, request_id, operation, model, amount_usd)"
        " values (%(a)s, 'x', 'chat', 'offline-dev', 0)",
        "update public.holds set status = 'released', closed_at = now() where user_id = %(a)s",
        "insert into public.usage_logs (user_id, service, operation, status) values (%(a)s, 's', 'o', 'failed')",
        "update public.usage_logs set cost_usd = 0 where user_id = %(a)s",
        "insert into public.chat_messages (session_id, user_id, seq, role, content)"
        " values (%(session)s, %(a)s, 99, 'assistant', 'forged')",
        "update public.chat_messages set content = 'edited' where user_id = %(a)s",
        "insert into public.chat_session_summaries (session_id, user_id) values (%(session)s, %(a)s)",
        "insert into public.code_gen_requests (user_id, request_id, task, language, code, valid, model,"
        " input_tokens, output_tokens, cost_usd) values (%(a)s, 'x', 't', 'sql', 'select 1', true, 'm', 0, 0, 0)",
        "update public.code_gen_requests set cost_usd = 0 where user_id = %(a)s",
        "insert into public.api_keys (user_id, name, prefix, key_hash)"
        " values (%(a)s, 'k', '000000000000', repeat('0', 64))",
        "update public.api_keys set revoked_at = null where user_id = %(a)s",
        "update public.profiles set plan_id = 'team' where id = %(a)s",
        "update public.profiles set status = 'active' where id = %(a)s",
        "insert into public.profiles (id) values (gen_random_uuid())",
        "update public.project_thoughts set content = 'x' where user_id = %(a)s",
        # No hard deletes of one's own rows either (soft delete with deleted_at instead).
        "delete from public.billing_accounts where user_id = %(a)s",
        "delete from public.credit_ledger where user_id = %(a)s",
        "delete from public.holds where user_id = %(a)s",
        "delete from public.usage_logs where user_id = %(a)s",
        "delete from public.chat_messages where user_id = %(a)s",
        "delete from public.api_keys where user_id = %(a)s",
        "delete from public.projects where user_id = %(a)s",
        "delete from public.project_files where user_id = %(a)s",
        "delete from public.project_thoughts where user_id = %(a)s",
        "delete from public.chat_sessions where user_id = %(a)s",
    ]
    params = {"a": a, "session": world.mine["session"]}
    for statement in refused:
        assert probe(db, "authenticated", a, statement, params) == "42501", statement
    # profiles: no delete grant (and no delete policy) for the API roles.
    assert probe(db, "authenticated", a, "delete from public.profiles where id = %(a)s returning id", params) == "42501"


def test_a_forged_service_role_claim_does_not_make_a_user_the_service(db: Sql) -> None:
    """The role comes from `set role` (what PostgREST switched to), never from claims SQL could set."""
    a, b = db.make_user(balance=1), db.make_user(balance=1)
    forged = json.dumps({"role": "service_role", "sub": str(a)})

    def forge_then_list_b() -> None:
        with db.acting("authenticated", a) as conn:
            conn.execute("select set_config('request.jwt.claims', %s, true)", (forged,))
            conn.execute("select public.list_sessions(p_user_id => %s)", (b,))

    with pytest.raises(psycopg.Error) as caught:
        forge_then_list_b()
    assert caught.value.sqlstate == "PT403"
