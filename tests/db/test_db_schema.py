"""The schema itself: row models against the live catalog (drift), the checks of Supabase's database
linter (splinter) as catalog queries, and the migrations applied by plain psql and by the runner."""

from __future__ import annotations

import re
import subprocess
import types
import typing
import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from functions.dev import migrate
from tests.support.pg import Sql, seed_user_rows
from tests.support.rows import TABLES, PgType

ROOT = Path(__file__).resolve().parents[2]
PSQL = ROOT / ".venv/lib/python3.11/site-packages/pgserver/pginstall/bin/psql"

# Security definer functions in public that the browser (authenticated) may call; each checks the caller.
AUTHENTICATED_DEFINER_ALLOW_LIST = {"create_api_key", "list_api_keys", "revoke_api_key", "usage_summary"}

_PLAIN_TYPES: dict[Any, str] = {
    uuid.UUID: "uuid",
    datetime: "timestamp with time zone",
    date: "date",
    str: "text",
    bool: "boolean",
    Any: "jsonb",
    dict: "jsonb",
    list: "jsonb",
}
_MARKED_TYPES: dict[Any, re.Pattern[str]] = {
    int: re.compile(r"^(smallint|integer|bigint)$"),
    Decimal: re.compile(r"^numeric\(\d+,\d+\)$"),
}
_ENUM_CHECK = re.compile(r"^CHECK \(\((\w+) = ANY \(ARRAY\[(.*)\]\)\)\)$")
_ARRAY_CHECK = re.compile(r"^CHECK \(\((\w+) <@ ARRAY\[(.*)\]\)\)$")


def _public_tables(db: Sql) -> set[str]:
    rows = db.q("select c.relname from pg_class c where c.relnamespace = 'public'::regnamespace"
                " and c.relkind in ('r', 'p')")
    return {r["relname"] for r in rows}


def describe(annotation: Any) -> tuple[str, bool, frozenset[str] | None]:
    """(Postgres type, nullable, allowed values or None) that a row model field annotation stands for."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        assert len(args) == 1, f"one type per column, got {annotation}"
        annotation = args[0]
    marker: PgType | None = None
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        marker = next((e for e in extras if isinstance(e, PgType)), None)
        annotation = base
    if typing.get_origin(annotation) is typing.Literal:
        values = typing.get_args(annotation)
        assert all(isinstance(v, str) for v in values), annotation
        return "text", nullable, frozenset(values)
    if typing.get_origin(annotation) is list and typing.get_args(annotation) != (Any,):
        (item,) = typing.get_args(annotation)
        item_type, _, values = describe(item)
        assert item_type == "text", f"only text[] columns are mirrored as lists, got {annotation}"
        return "text[]", nullable, values
    base = typing.get_origin(annotation) or annotation
    if base in _MARKED_TYPES:
        assert marker is not None, f"{annotation} needs a PgType marker (which integer/numeric type?)"
        assert _MARKED_TYPES[base].match(marker.name), f"{marker} is not a Postgres type for {base}"
        return marker.name, nullable, None
    assert base in _PLAIN_TYPES, f"no Postgres type for {annotation}"
    assert marker is None or marker.name == _PLAIN_TYPES[base], (marker, base)
    return _PLAIN_TYPES[base], nullable, None


# (a) drift ---------------------------------------------------------------------------------------------


def test_every_public_table_has_a_row_model_and_every_model_a_table(db: Sql) -> None:
    assert _public_tables(db) == set(TABLES)


def test_row_models_match_the_live_catalog(db: Sql) -> None:
    columns = db.q(
        "select c.relname as table, a.attname as column, format_type(a.atttypid, a.atttypmod) as type,"
        " not a.attnotnull as nullable"
        " from pg_attribute a join pg_class c on c.oid = a.attrelid"
        " where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')"
        " and a.attnum > 0 and not a.attisdropped"
    )
    # information_schema agrees with pg_attribute on names and nullability (a cheap second opinion).
    info = db.q("select table_name as table, column_name as column, is_nullable = 'YES' as nullable"
                " from information_schema.columns where table_schema = 'public'")
    assert {(r["table"], r["column"], r["nullable"]) for r in info} == {
        (r["table"], r["column"], r["nullable"]) for r in columns}

    enums: dict[tuple[str, str], frozenset[str]] = {}
    for r in db.q("select conrelid::regclass::text as table, pg_get_constraintdef(oid) as def from pg_constraint"
                  " where contype = 'c' and connamespace = 'public'::regnamespace and cardinality(conkey) = 1"):
        m = _ENUM_CHECK.match(r["def"]) or _ARRAY_CHECK.match(r["def"])
        if m:
            enums[(r["table"], m[1])] = frozenset(re.findall(r"'([^']*)'::text", m[2]))

    live: dict[str, dict[str, tuple[str, bool, frozenset[str] | None]]] = {}
    for r in columns:
        live.setdefault(r["table"], {})[r["column"]] = (
            r["type"], r["nullable"], enums.get((r["table"], r["column"])))

    problems = []
    for table, model in sorted(TABLES.items()):
        hints = typing.get_type_hints(model, include_extras=True)
        fields = {name: describe(hints[name]) for name in model.model_fields}
        catalog = live.get(table, {})
        for name in sorted(set(catalog) | set(fields)):
            if name not in fields:
                problems.append(f"{table}.{name}: column has no field in {model.__name__}")
            elif name not in catalog:
                problems.append(f"{table}.{name}: field of {model.__name__} is not a column")
            elif fields[name] != catalog[name]:
                problems.append(f"{table}.{name}: model {fields[name]} != database {catalog[name]}")
        for name, field in model.model_fields.items():
            if not field.is_required():
                problems.append(f"{table}.{name}: row fields are never optional (a row has every column)")
    assert not problems, "\n".join(problems)


def test_real_rows_of_every_table_validate_against_their_model(db: Sql) -> None:
    seed_user_rows(db, db.make_user(balance=5))
    for table, model in TABLES.items():
        rows = db.q(sql.SQL("select * from public.{}").format(sql.Identifier(table)).as_string(db.conn))
        assert rows, f"no rows in {table} to validate"
        for row in rows:
            model.model_validate(row)


def test_describe_rejects_an_unmarked_integer() -> None:
    with pytest.raises(AssertionError, match="PgType"):
        describe(int)
    assert describe(dict[str, Any] | None) == ("jsonb", True, None)
    assert describe(list[Any]) == ("jsonb", False, None)
    assert describe(list[typing.Literal["a", "b"]]) == ("text[]", False, frozenset({"a", "b"}))
    assert describe(list[str] | None) == ("text[]", True, None)


# (b) what splinter checks ------------------------------------------------------------------------------


def test_rls_enabled_and_a_policy_on_every_public_table(db: Sql) -> None:
    """splinter 0013 (rls_disabled_in_public) and no exposed table without policies."""
    rows = db.q(
        "select c.relname, c.relrowsecurity,"
        " (select count(*) from pg_policy p where p.polrelid = c.oid) as policies"
        " from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')"
    )
    assert len(rows) == len(TABLES)
    assert [r["relname"] for r in rows if not r["relrowsecurity"]] == []
    assert [r["relname"] for r in rows if r["policies"] == 0] == []


def test_functions_have_an_immutable_search_path(db: Sql) -> None:
    """splinter 0011 (function_search_path_mutable); definer functions pin it to ''."""
    rows = db.q(
        "select p.oid::regprocedure::text as fn, p.prosecdef, coalesce(p.proconfig, '{}') as config"
        " from pg_proc p where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)"
        " and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')"
    )
    assert rows
    mutable = [r["fn"] for r in rows if not any(c.startswith("search_path=") for c in r["config"])]
    assert mutable == []
    definer_not_empty = [r["fn"] for r in rows if r["prosecdef"] and 'search_path=""' not in r["config"]]
    assert definer_not_empty == []


_WRAPPED = re.compile(r"\( SELECT auth\.(uid|jwt|role)\(\) AS \1\)")
_AUTH_CALL = re.compile(r"auth\.(uid|jwt|role)\(\)|current_setting\(", re.IGNORECASE)


def test_policies_evaluate_auth_functions_once_per_statement(db: Sql) -> None:
    """splinter 0003 (auth_rls_initplan): auth.uid() and friends only inside (select ...)."""
    policies = db.q("select tablename, policyname, qual, with_check from pg_policies where schemaname = 'public'")
    assert policies
    assert any(_WRAPPED.search(p["qual"] or "") for p in policies), "pattern no longer matches pg's deparse"
    per_row = [
        (p["tablename"], p["policyname"], text)
        for p in policies
        for text in (p["qual"], p["with_check"])
        if text and _AUTH_CALL.search(_WRAPPED.sub("", text))
    ]
    assert per_row == []


def test_no_security_definer_views_in_public(db: Sql) -> None:
    """splinter 0010 (security_definer_view): every view in public is security_invoker."""
    rows = db.q(
        "select c.relname from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind = 'v'"
        " and not coalesce(c.reloptions, '{}') && array['security_invoker=true', 'security_invoker=on']"
    )
    assert rows == []


def test_materialized_views_are_not_served(db: Sql) -> None:
    """splinter 0016 (materialized_view_in_api); the private ones are not readable by the API roles."""
    assert db.q("select relname from pg_class where relnamespace = 'public'::regnamespace and relkind = 'm'") == []
    private = db.q("select c.oid::regclass::text as name from pg_class c"
                   " where c.relnamespace = 'private'::regnamespace and c.relkind in ('m', 'r', 'v')")
    names = {r["name"] for r in private}
    assert {"private.daily_usage_rollup", "private.usage_logs_default", "private.usage_event_ids"} <= names
    for role in ("anon", "authenticated"):
        for r in private:
            assert not db.one("select has_table_privilege(%s, %s, 'select')", (role, r["name"])), (role, r)
    assert not db.one("select has_schema_privilege('anon', 'private', 'usage')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.acting("authenticated", uuid.uuid4()) as c:
        c.execute("select * from private.daily_usage_rollup")


def test_definer_functions_in_public_are_executable_only_by_whom_they_should(db: Sql) -> None:
    """splinter 0028/0029: no definer function for anon; for authenticated exactly the allow-list."""
    rows = db.q(
        "select p.proname, p.prosecdef,"
        " has_function_privilege('anon', p.oid, 'execute') as anon,"
        " has_function_privilege('authenticated', p.oid, 'execute') as authenticated,"
        " has_function_privilege('public', p.oid, 'execute') as public"
        " from pg_proc p where p.pronamespace = 'public'::regnamespace"
    )
    assert [r["proname"] for r in rows if r["anon"]] == []  # nothing in public at all, definer or not
    assert [r["proname"] for r in rows if r["public"]] == []
    assert {r["proname"] for r in rows if r["prosecdef"] and r["authenticated"]} == AUTHENTICATED_DEFINER_ALLOW_LIST


def test_every_foreign_key_is_indexed(db: Sql) -> None:
    """splinter 0001 (unindexed_foreign_keys). A partial index does not count: the cascade from the
    parent must find every child row, deleted or not."""
    fks = db.q("select conrelid, conrelid::regclass::text as table, conname, conkey::int[] as cols"
               " from pg_constraint where contype = 'f' and connamespace = 'public'::regnamespace")
    indexes: dict[int, list[list[int]]] = {}
    for ix in db.q("select indrelid, string_to_array(indkey::text, ' ')::int[] as cols from pg_index"
                   " where indpred is null and indisvalid"):
        indexes.setdefault(ix["indrelid"], []).append(ix["cols"])
    assert fks
    unindexed = [
        (fk["table"], fk["conname"]) for fk in fks
        if not any(sorted(ix[: len(fk["cols"])]) == sorted(fk["cols"]) for ix in indexes.get(fk["conrelid"], []))
    ]
    assert unindexed == []


# (c) migrations ----------------------------------------------------------------------------------------


def _url_of(server_url: str, database: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@pytest.fixture
def empty_db(server_url: str) -> typing.Iterator[str]:
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    yield _url_of(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def _psql(url: str, path: Path) -> None:
    done = subprocess.run(
        [str(PSQL), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, f"{path.name}: {done.stderr}"
    assert "ERROR" not in done.stderr, done.stderr


def test_every_migration_applies_with_plain_psql(empty_db: str) -> None:
    assert PSQL.exists()
    bootstrap = sorted((ROOT / "sql").glob("*.sql"))
    for path in [*bootstrap, *bootstrap]:  # the bootstrap says it is idempotent
        _psql(empty_db, path)
    files = migrate.migrations()
    assert [m.path.name for m in files] == sorted(p.name for p in (ROOT / "supabase" / "migrations").glob("*.sql"))
    assert len(files) >= 8
    as_postgres = migrate.as_role(empty_db, migrate.MIGRATOR_ROLE)  # as `supabase db push`: not a superuser
    for m in files:
        _psql(as_postgres, m.path)
    _psql(as_postgres, migrate.SEED_FILE)
    _psql(as_postgres, migrate.SEED_FILE)  # seed is idempotent too
    with psycopg.connect(empty_db) as conn:
        tables = {r[0] for r in conn.execute(
            "select relname from pg_class where relnamespace = 'public'::regnamespace and relkind in ('r', 'p')")}
        assert tables == set(TABLES)


def test_migration_runner_is_idempotent_and_records_versions(empty_db: str) -> None:
    versions = [m.version for m in migrate.migrations()]
    assert versions == sorted(versions)
    assert [m.path.name[:14] for m in migrate.migrations()] == versions
    assert migrate.prepare(empty_db) == versions
    assert migrate.prepare(empty_db) == []
    with psycopg.connect(empty_db) as conn:
        recorded = [r[0] for r in conn.execute(
            "select version from supabase_migrations.schema_migrations order by version")]
        assert recorded == versions
        names = [r[0] for r in conn.execute("select name from supabase_migrations.schema_migrations order by version")]
        assert names == [m.name for m in migrate.migrations()]
        assert conn.execute("select count(*) from auth.users").fetchone() == (1,)  # the seed ran once


def test_template_database_recorded_every_migration(db: Sql) -> None:
    recorded = [r["version"] for r in db.q("select version from supabase_migrations.schema_migrations order by 1")]
    assert recorded == [p.name.split("_", 1)[0] for p in sorted((ROOT / "supabase/migrations").glob("*.sql"))]
