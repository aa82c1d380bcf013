"""Supabase as it really is: migrations applied as the non-superuser `postgres`, `auth.users` owned by
`supabase_auth_admin`, the API roles' timeouts, and exactly the table privileges `anon` and
`authenticated` hold in public (the catalog, compared with the table below, so any drift fails)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from functions.dev import migrate
from tests.support.pg import Sql
from tests.support.rows import TABLES

# What each API role may do on each table in public: table-level privileges, and column-level ones as
# PRIV(col, ...) with the columns sorted. Anything the browser does not do directly is absent; RLS then
# keeps each row to its owner (tests/db/test_db_rls.py). anon holds nothing anywhere.
_SELECT = ["SELECT"]
EXPECTED: dict[str, dict[str, list[str]]] = {
    "anon": {table: [] for table in TABLES},
    "authenticated": {
        "plans": _SELECT,
        "model_prices": _SELECT,
        "profiles": ["SELECT", "UPDATE(display_name)"],
        "api_keys": ["SELECT(created_at, expires_at, id, last_used_at, name, prefix, revoked_at, scopes, user_id)"],
        "billing_accounts": _SELECT,
        "holds": _SELECT,
        "credit_ledger": _SELECT,
        "usage_logs": _SELECT,
        "chat_sessions": ["INSERT(title)", "SELECT", "UPDATE(deleted_at, title)"],
        "chat_messages": _SELECT,
        "chat_session_summaries": _SELECT,
        "projects": ["INSERT(description, name)", "SELECT", "UPDATE(deleted_at, description, name)"],
        "project_files": ["INSERT(content, path, project_id, user_id)", "SELECT", "UPDATE(content, deleted_at, path)"],
        "project_thoughts": ["INSERT(content, project_id)", "SELECT"],
        "code_gen_requests": _SELECT,
    },
}

_PRIVILEGES = """
with grantee as (select oid, rolname from pg_roles where rolname = %(role)s)
select c.relname as table_name, x.privilege_type as privilege, null::text as column_name
from pg_class c, aclexplode(c.relacl) x, grantee g
where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f')
  and x.grantee in (g.oid, 0)
union all
select c.relname, x.privilege_type, a.attname
from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped,
     aclexplode(a.attacl) x, grantee g
where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f')
  and x.grantee in (g.oid, 0)
"""


def privileges_of(db: Sql, role: str) -> dict[str, list[str]]:
    """What `role` and PUBLIC were granted on each table in public, read from the ACLs in the catalog."""
    table_level: dict[str, set[str]] = {}
    columns: dict[tuple[str, str], set[str]] = {}
    for r in db.q(_PRIVILEGES, {"role": role}):
        if r["column_name"] is None:
            table_level.setdefault(r["table_name"], set()).add(r["privilege"])
        else:
            columns.setdefault((r["table_name"], r["privilege"]), set()).add(r["column_name"])
    out: dict[str, list[str]] = {t: [] for t in _public_tables(db)}
    for table, privs in table_level.items():
        out[table].extend(privs)
    for (table, priv), cols in columns.items():
        if priv not in table_level.get(table, set()):
            out[table].append(f"{priv}({', '.join(sorted(cols))})")
    return {t: sorted(p) for t, p in out.items()}


def _public_tables(db: Sql) -> set[str]:
    rows = db.q("select relname from pg_class where relnamespace = 'public'::regnamespace"
                " and relkind in ('r', 'p', 'v', 'm', 'f')")
    return {r["relname"] for r in rows}


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_api_role_privileges_on_public_tables_are_exactly_the_design(db: Sql, role: str) -> None:
    assert set(EXPECTED[role]) == set(TABLES)
    assert privileges_of(db, role) == {t: sorted(p) for t, p in EXPECTED[role].items()}


def test_api_roles_hold_no_sequence_in_public(db: Sql) -> None:
    sequences = db.q("select c.oid::regclass::text as seq from pg_class c where c.relnamespace = 'public'::regnamespace"
                     " and c.relkind = 'S' and (has_sequence_privilege('anon', c.oid, 'usage, select, update')"
                     " or has_sequence_privilege('authenticated', c.oid, 'usage, select, update'))")
    assert sequences == []


def test_a_table_created_later_by_postgres_is_closed_to_the_api_roles(db_url: str, db: Sql) -> None:
    """Default privileges: a future migration must grant what the browser needs; service_role keeps all."""
    with psycopg.connect(migrate.as_role(db_url, migrate.MIGRATOR_ROLE), autocommit=True) as conn:
        conn.execute("create table public.later (id bigint generated always as identity primary key, note text)")
    for role in ("anon", "authenticated"):
        assert not db.one("select has_any_column_privilege(%s, 'public.later', 'select, insert, update, references')",
                          (role,)), role
        assert not db.one("select has_table_privilege(%s, 'public.later', 'delete, truncate, trigger')", (role,))
        assert not db.one("select has_sequence_privilege(%s, 'public.later_id_seq', 'usage')", (role,))
    assert db.one("select has_table_privilege('service_role', 'public.later', 'select, insert, update, delete')")


def test_the_browser_never_chooses_a_session_id(db: Sql) -> None:
    """A user who knows another user's id cannot occupy their named session uuid5(user, name)."""
    a, b = db.make_user(), db.make_user()
    theirs = uuid.uuid5(b, "work")
    for statement, params in [
        ("insert into public.chat_sessions (id, title) values (%s, 'mine now')", (theirs,)),
        ("insert into public.chat_sessions (id, user_id, title) values (%s, %s, 'mine now')", (theirs, a)),
        ("update public.chat_sessions set id = %s where user_id = %s", (theirs, a)),
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.acting("authenticated", a) as c:
            c.execute(statement, params)
    with db.acting("authenticated", a) as c:
        row = c.execute("insert into public.chat_sessions (title) values ('t') returning id, user_id").fetchone()
    assert row["user_id"] == a and row["id"] != theirs
    # B's named session is still B's to create, under an id the database makes.
    hold = db.rpc("begin_chat_turn", user_id=b, request_id="r-work", model="offline-dev", provider=None,
                  fixed_chars=2, max_output_tokens=5, session_name="work", legacy_session_id=theirs)
    turn = db.rpc("settle_chat_turn", hold_id=hold["hold_id"], user_message="hi",
                  assistant_message="hello", input_tokens=1, output_tokens=1)
    assert turn["session_id"] == hold["session_id"] != str(theirs)
    assert db.one("select user_id from public.chat_sessions where name = 'work'") == b


# The stand-in is Supabase as it is ------------------------------------------------------------------------


def test_migrations_ran_as_the_non_superuser_postgres(db: Sql) -> None:
    role = db.one("select rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolreplication, rolbypassrls,"
                  " rolinherit from pg_roles where rolname = 'postgres'")
    assert role == {"rolsuper": False, "rolcreatedb": True, "rolcreaterole": True, "rolcanlogin": True,
                    "rolreplication": True, "rolbypassrls": True, "rolinherit": True}
    owners = db.q("select distinct pg_get_userbyid(c.relowner) as owner from pg_class c"
                  " where c.relnamespace in ('public'::regnamespace, 'private'::regnamespace,"
                  " 'supabase_migrations'::regnamespace) and c.relkind in ('r', 'p', 'v', 'm', 'S')")
    assert [r["owner"] for r in owners] == ["postgres"]
    functions = db.q("select distinct pg_get_userbyid(p.proowner) as owner from pg_proc p"
                     " where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)")
    assert [r["owner"] for r in functions] == ["postgres"]


@pytest.fixture
def as_postgres(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrate.as_role(db_url, migrate.MIGRATOR_ROLE), autocommit=True) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == ("postgres", "postgres")
        yield conn


@pytest.mark.parametrize("statement", [
    "alter table auth.users add column nickname text",
    "create function auth.helper() returns int language sql as 'select 1'",
    "create table auth.extra (id int)",
    "create event trigger no_drops on sql_drop execute function private.touch_updated_at()",
    "alter default privileges for role supabase_admin grant all on tables to anon",
    "drop table auth.identities",
])
def test_postgres_cannot_do_what_it_cannot_on_supabase(as_postgres: psycopg.Connection[Any], statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_postgres.execute(statement)


def test_postgres_may_create_a_trigger_on_auth_users_and_write_users(as_postgres: psycopg.Connection[Any]) -> None:
    """The usual new-user pattern (the profile trigger of the migrations is one) and the seed's inserts."""
    as_postgres.execute("create function private.noop() returns trigger language plpgsql set search_path = ''"
                        " as 'begin return new; end'")
    as_postgres.execute("create trigger noop after insert on auth.users for each row execute function private.noop()")
    uid = uuid.uuid4()
    as_postgres.execute("insert into auth.users (id, email) values (%s, 'x@example.test')", (uid,))
    assert as_postgres.execute("select count(*) from public.profiles where id = %s", (uid,)).fetchone() == (1,)


def test_auth_users_is_owned_by_supabase_auth_admin_with_rls_and_no_invented_defaults(db: Sql) -> None:
    for table in ("auth.users", "auth.identities"):
        meta = db.one("select pg_get_userbyid(relowner) as owner, relrowsecurity as rls,"
                      " (select count(*) from pg_policy where polrelid = %s::regclass) as policies"
                      " from pg_class where oid = %s::regclass", (table, table))
        assert meta == {"owner": "supabase_auth_admin", "rls": True, "policies": 0}, table
    defaults = db.q("select column_name from information_schema.columns where table_schema = 'auth'"
                    " and table_name = 'users' and column_default is not null"
                    " and column_name in ('id', 'aud', 'role', 'instance_id', 'raw_app_meta_data',"
                    " 'raw_user_meta_data', 'created_at', 'updated_at', 'email_confirmed_at')")
    assert defaults == []
    for role in ("service_role", "anon", "authenticated"):
        assert not db.one("select has_table_privilege(%s, 'auth.users', 'select')", (role,)), role
    assert db.one("select has_table_privilege('postgres', 'auth.users', 'select, insert, update, delete, trigger')")
    assert not db.one("select has_schema_privilege('postgres', 'auth', 'create')")


def test_api_roles_have_supabases_timeouts(db: Sql) -> None:
    rows = db.q("select r.rolname, unnest(s.setconfig) as setting from pg_db_role_setting s"
                " join pg_roles r on r.oid = s.setrole where s.setdatabase = 0"
                " and r.rolname in ('anon', 'authenticated', 'authenticator')")
    assert sorted((r["rolname"], r["setting"]) for r in rows) == [
        ("anon", "statement_timeout=3s"),
        ("authenticated", "statement_timeout=8s"),
        ("authenticator", "lock_timeout=8s"),
        ("authenticator", "statement_timeout=8s"),
    ]


def test_seeded_demo_user_is_written_as_supabase_auth_writes_one(db: Sql) -> None:
    user = db.one("select instance_id::text, aud, role, raw_app_meta_data, email_confirmed_at is not null as confirmed,"
                  " created_at is not null as created, confirmation_token, recovery_token from auth.users"
                  " where email = 'demo@example.com'")
    assert user == {"instance_id": "00000000-0000-0000-0000-000000000000", "aud": "authenticated",
                    "role": "authenticated", "raw_app_meta_data": {"provider": "email", "providers": ["email"]},
                    "confirmed": True, "created": True, "confirmation_token": "", "recovery_token": ""}
    identity = db.one("select i.provider, i.provider_id = u.id::text as by_id, i.email from auth.identities i"
                      " join auth.users u on u.id = i.user_id where u.email = 'demo@example.com'")
    assert identity == {"provider": "email", "by_id": True, "email": "demo@example.com"}


# pg_cron enabled later ---------------------------------------------------------------------------------


def test_schedule_jobs_explains_itself_without_pg_cron(db: Sql) -> None:
    with pytest.raises(psycopg.Error) as caught:
        db.q("select private.schedule_jobs()")
    assert caught.value.sqlstate == "55000"
    assert "pg_cron" in str(caught.value)


def test_schedule_jobs_schedules_the_two_jobs_once_pg_cron_is_there(
    db: Sql, as_postgres: psycopg.Connection[Any]
) -> None:
    """pg_cron is not in this build: its `cron.schedule` (replace-by-name) is stood in by a table and a function."""
    db.q("create schema cron; create table cron.job (jobid bigint generated always as identity, jobname text unique,"
         " schedule text, command text);"
         " create function cron.schedule(job_name text, schedule text, command text) returns bigint language sql"
         " as $$ insert into cron.job (jobname, schedule, command) values (job_name, schedule, command)"
         " on conflict (jobname) do update set schedule = excluded.schedule, command = excluded.command"
         " returning jobid $$; grant usage on schema cron to postgres; grant all on cron.job to postgres;")
    first = as_postgres.execute("select private.schedule_jobs()").fetchone()[0]  # type: ignore[index]
    again = as_postgres.execute("select private.schedule_jobs()").fetchone()[0]  # type: ignore[index]
    assert set(first) == {"refresh-usage-views", "expire-stale-holds"} and first == again
    assert db.q("select jobname, schedule, command from cron.job order by jobname") == [
        {"jobname": "expire-stale-holds", "schedule": "*/5 * * * *",
         "command": "select public.expire_stale_holds(900)"},
        {"jobname": "refresh-usage-views", "schedule": "*/10 * * * *",
         "command": "select public.refresh_usage_views()"},
    ]
    for role, allowed in (("anon", False), ("authenticated", False), ("service_role", True), ("postgres", True)):
        assert db.one("select has_function_privilege(%s, 'private.schedule_jobs()', 'execute')", (role,)) is allowed
