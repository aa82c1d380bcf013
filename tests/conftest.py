"""Fixtures: one real Postgres per test process, a migrated template database, a fresh clone per test.

With DATABASE_URL set (a superuser on a plain Postgres), that server is used instead of the embedded one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from functions import migrate
from tests.pg import Sql

TEMPLATE = "app_template"


def _swap_db(url: str, database: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The admin URL of the Postgres server the tests use."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    from functions import localdb

    server = localdb.start(Path(tmp_path_factory.mktemp("pg")) / "data", cleanup="delete")
    yield localdb.url_of(server)
    server.cleanup()


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
        conn.execute(sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(str(template))))
    yield _swap_db(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def db(db_url: str) -> Iterator[Sql]:
    """A superuser connection to this test's database that can act as any API role."""
    s = Sql(db_url)
    yield s
    s.close()
