"""Apply the Supabase stand-in (`sql/`), the migrations and the seed to a Postgres database.

The stand-in is applied as a superuser (as Supabase's own init scripts are); the migrations and the seed
then run as the non-superuser role `postgres`, the role `supabase db push` uses, so a migration that needs
more than `postgres` may do on Supabase fails here too.

Migrations (listed by `functions.migrations`) are recorded in `supabase_migrations.schema_migrations` as
the Supabase CLI records them (version = the file name's timestamp), so a database migrated here and one
migrated with `supabase db push` agree on what has been applied.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from functions.migrations import migrations

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP_DIR = ROOT / "sql"
SEED_FILE = ROOT / "supabase" / "seed.sql"

MIGRATOR_ROLE = "postgres"  # the role `supabase db push` applies migrations as: not a superuser
_LOCK_KEY = 0x5B_A5E_0001  # advisory lock: one migrator at a time

log = logging.getLogger(__name__)


def apply_bootstrap(conn: psycopg.Connection) -> None:
    """Create what Supabase provides (roles, auth schema, default privileges). Plain Postgres only."""
    for path in sorted(BOOTSTRAP_DIR.glob("*.sql")):
        with conn.transaction():
            conn.execute(path.read_text())


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply each pending migration in its own transaction; return the versions applied."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "create schema if not exists supabase_migrations;"
            "create table if not exists supabase_migrations.schema_migrations"
            " (version text primary key, statements text[], name text)"
        )
        done = {row[0] for row in conn.execute("select version from supabase_migrations.schema_migrations")}
        for migration in migrations():
            if migration.version in done:
                continue
            sql = migration.path.read_text()
            with conn.transaction():
                conn.execute(sql)
                conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, statements, name)"
                    " values (%s, %s, %s)",
                    (migration.version, [sql], migration.name),
                )
            log.info("applied migration %s_%s", migration.version, migration.name)
            applied.append(migration.version)
    return applied


def apply_seed(conn: psycopg.Connection) -> None:
    """Load plans, model prices and the demo user (idempotent)."""
    with conn.transaction():
        conn.execute(SEED_FILE.read_text())


def as_role(url: str, role: str) -> str:
    """`url` with the login role replaced by `role` (and no password: the stand-in trusts local logins)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    info["user"] = role
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def _connect_as_migrator(admin_url: str) -> psycopg.Connection:
    """A connection whose user is `postgres`: a login as it, or else (a server that wants its password)
    the admin session switched to it with SET ROLE."""
    try:
        return psycopg.connect(as_role(admin_url, MIGRATOR_ROLE), autocommit=True)
    except psycopg.OperationalError:
        log.warning("cannot log in as %s; applying migrations after SET ROLE %s", MIGRATOR_ROLE, MIGRATOR_ROLE)
        conn = psycopg.connect(admin_url, autocommit=True)
        conn.execute(f"set role {MIGRATOR_ROLE}")
        return conn


def prepare(url: str, *, bootstrap: bool = True, seed: bool = True) -> list[str]:
    """Bring the database at `url` up to date. With `bootstrap` (plain Postgres only, never Supabase),
    `url` is a superuser's: the stand-in is applied as it, then migrations and seed as `postgres`.
    Without, everything runs as the user of `url` (on Supabase, `postgres`)."""
    if bootstrap:
        with psycopg.connect(url, autocommit=True) as admin:
            apply_bootstrap(admin)
        conn = _connect_as_migrator(url)
    else:
        conn = psycopg.connect(url, autocommit=True)
    with conn:
        applied = apply_migrations(conn)
        if seed:
            apply_seed(conn)
    return applied
