"""Fixtures: one real Postgres per test process, a migrated template database, a fresh clone per test.

With DATABASE_URL set (a superuser on a plain Postgres), that server is used instead of the embedded one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from functions.dev import migrate
from tests.support.pg import Sql

TEMPLATE = "app_template"


def _swap_db(url: str, database: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    """In the xdist controller (or a run without workers), create the embedded Postgres's system user once
    before any worker starts; `localdb.start` also serializes it, this only keeps the workers from waiting."""
    if hasattr(config, "workerinput") or os.environ.get("DATABASE_URL") or os.geteuid() != 0:
        return
    from functions.dev import localdb

    localdb.ensure_system_user()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The admin (superuser) URL of the Postgres server the tests use; migrations run as `postgres`."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    from functions.dev import localdb

    # Not under pytest's numbered temp folders: pytest prunes old ones, and a concurrent run could
    # remove a live data directory.
    base = Path(tempfile.mkdtemp(prefix="assistant-pg-"))
    server = localdb.start(base / "data", cleanup="delete")
    yield localdb.url_of(server)
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    """A database with the bootstrap, every migration and the seed applied, used as a template."""
    name = f"{TEMPLATE}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = _swap_db(server_url, name)
    migrate.prepare(url)
    return url


@pytest.fixture
def db_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh clone of the migrated template for one test."""
    template = psycopg.conninfo.conninfo_to_dict(template_url)["dbname"]
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template {}").format(
            sql.Identifier(name), sql.Identifier(str(template))))
    yield _swap_db(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def db(db_url: str) -> Iterator[Sql]:
    """A superuser connection to this test's database that can act as any API role."""
    s = Sql(db_url)
    yield s
    s.close()


# -- the functions ------------------------------------------------------------------------------------

TEST_ENV = {
    "ENVIRONMENT": "test",
    "SUPABASE_JWT_SECRET": "",  # filled below
    "SERVICE_SECRET": "",
    "JWT_ISSUER": "",
    "CORS_ALLOWED_ORIGINS": "",
    "REPLAY_WAIT_SECONDS": "5",
    "OPENAI_BASE_URL": "https://llm.test/v1",
    "OPENAI_API_KEY": "sk-test-openai",
    "ANTHROPIC_BASE_URL": "https://anthropic.test",
    "ANTHROPIC_API_KEY": "sk-test-anthropic",
    "MODEL_TIMEOUT_SECONDS": "2",
}


@pytest.fixture
def fn_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A clean, test-only environment for the functions; singletons reset before and after."""
    import stamina

    from functions import runtime
    from tests.support import fnsupport

    values = TEST_ENV | {"SUPABASE_JWT_SECRET": fnsupport.JWT_SECRET, "SERVICE_SECRET": fnsupport.SERVICE_SECRET,
                         "JWT_ISSUER": fnsupport.ISSUER, "CORS_ALLOWED_ORIGINS": fnsupport.ORIGIN}
    for key in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "MODEL_PROVIDER", "DB_TRANSPORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    runtime.reset()
    with stamina.set_testing(True, attempts=3, cap=True):  # retries without the waits
        yield
    fnsupport.close_all()  # each Api's loop: its pools and clients closed on it, then the loop
    runtime.reset()


@pytest.fixture(params=["postgres", "supabase"])
def api(request: pytest.FixtureRequest, fn_env: None, db: Sql) -> Iterator[Any]:
    """The functions over the postgres transport, or over the supabase transport with respx routing
    `/rest/v1/rpc/<name>` to the same real database."""
    import respx

    from functions import runtime
    from functions.db.postgres import PostgresDatabase
    from tests.support import fnsupport
    from tests.support.postgrest import PostgrestEmulator

    with respx.mock(assert_all_called=False) as router:
        emulator = None
        if request.param == "postgres":  # connected as `postgres`, as a deployed DATABASE_URL is
            runtime.install(PostgresDatabase(migrate.as_role(db.url, migrate.MIGRATOR_ROLE), max_size=8))
        else:
            from functions.db.supabase import SupabaseDatabase

            emulator = PostgrestEmulator(migrate.as_role(db.url, "authenticator"), fnsupport.JWT_SECRET)
            router.post(url__regex=rf"^{fnsupport.SUPABASE_URL}/rest/v1/rpc/").mock(side_effect=emulator)
            runtime.install(SupabaseDatabase(fnsupport.SUPABASE_URL, fnsupport.role_key("service_role"),
                                             fnsupport.role_key("anon")))
        client = fnsupport.Api(request.param)
        client.db = db  # type: ignore[attr-defined]
        client.router = router  # type: ignore[attr-defined]
        client.emulator = emulator  # type: ignore[attr-defined]
        yield client
        client.close()
        runtime.reset()
        if emulator is not None:
            emulator.close()
