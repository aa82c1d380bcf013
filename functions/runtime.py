"""Process-wide singletons: settings, the database port, the authenticator. Created on first use and
reused by every request of the process. What they hold that belongs to an event loop (pools, HTTP
clients) is made per loop, inside it (`functions.loops`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from functions.db import Database
from functions.settings import Settings, get_settings

if TYPE_CHECKING:
    from functions.auth import Authenticator

_lock = threading.Lock()
_database: Database | None = None
_read_database: Database | None = None  # the read replica, when one is configured
_read_checked = False
_authenticator: Authenticator | None = None


def settings() -> Settings:
    return get_settings()


def database() -> Database:
    """The configured transport: postgres (DATABASE_URL), supabase (SUPABASE_URL + key), or the local
    embedded Postgres, started and migrated on first use (development and test only)."""
    global _database
    with _lock:
        if _database is None:
            _database = _open(settings())
        return _database


def read_database() -> Database:
    """Where reads that may lag go (usage summaries, session and message listings): the replica named by
    DATABASE_READ_URL (postgres transport) or SUPABASE_READ_URL (supabase transport), else the primary.
    Billing never calls this: holds, settles and ingest always go to `database()`."""
    global _read_database, _read_checked
    with _lock:
        if not _read_checked:
            _read_database = _open_read(settings())
            _read_checked = True
        replica = _read_database
    return replica if replica is not None else database()


def _open_read(s: Settings) -> Database | None:
    """The replica's transport (the same kind as the primary's), or None when none is configured."""
    if s.transport == "supabase":
        if not s.supabase_read_url:
            return None
        from functions.db.supabase import SupabaseDatabase

        key = s.secret("supabase_service_role_key")
        assert key is not None
        return SupabaseDatabase(s.supabase_read_url, key, s.secret("supabase_anon_key"), attempts=s.db_attempts)
    if not s.database_read_url:
        return None
    from functions.db.postgres import PostgresDatabase

    return PostgresDatabase(s.database_read_url, max_size=s.db_pool_max_size, attempts=s.db_attempts)


def _open(s: Settings) -> Database:
    transport = s.transport
    if transport == "supabase":
        from functions.db.supabase import SupabaseDatabase  # lazy: supabase-py is heavy to import

        db: Database = SupabaseDatabase.from_settings(s)
        return db
    from functions.db.postgres import PostgresDatabase

    if transport == "local":
        if s.environment == "production":
            raise RuntimeError("no database configured in production")
        from functions.dev import localdb, migrate

        admin_url = localdb.url_of(localdb.start())
        migrate.prepare(admin_url)
        url = migrate.as_role(admin_url, migrate.MIGRATOR_ROLE)  # as a deployed DATABASE_URL would: postgres
    else:
        assert s.database_url is not None
        url = s.database_url
    return PostgresDatabase(url, max_size=s.db_pool_max_size, attempts=s.db_attempts)


def authenticator() -> Authenticator:
    global _authenticator
    with _lock:
        if _authenticator is None:
            from functions.auth import Authenticator  # lazy: jwt and httpx are not needed by every target

            _authenticator = Authenticator(settings())
        return _authenticator


async def aclose() -> None:
    """Close what the running event loop holds (pools, HTTP clients); the singletons stay."""
    from functions.providers import aclose_providers

    if _database is not None:
        await _database.aclose()
    if _read_database is not None:
        await _read_database.aclose()
    if _authenticator is not None:
        await _authenticator.aclose()
    await aclose_providers()


def reset() -> None:
    """Close and drop every singleton (tests change the environment between cases)."""
    global _database, _read_database, _read_checked, _authenticator
    with _lock:
        if _database is not None:
            _database.close()
        if _read_database is not None:
            _read_database.close()
        if _authenticator is not None:
            _authenticator.close()
        _database = None
        _read_database = None
        _read_checked = False
        _authenticator = None
    get_settings.cache_clear()
    from functions.providers import reset_providers

    reset_providers()


def install(db: Database, read: Database | None = None) -> None:
    """Use `db` as this process's database (tests, and the local server which opens it itself), and
    `read` for the reads that may lag (default: `db` too)."""
    global _database, _read_database, _read_checked
    with _lock:
        _database = db
        _read_database = read
        _read_checked = True
