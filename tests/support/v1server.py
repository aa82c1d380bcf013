"""What the compatible-API tests share: the functions served by uvicorn as deployed (on the real database),
SDK clients pointed at them, and the books they must leave balanced."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from functions import runtime
from functions.db.postgres import PostgresDatabase
from functions.dev import migrate
from tests.support.books import check_books
from tests.support.pg import Sql, create_api_key
from tests.support.served import served_functions


@dataclass
class Server:
    url: str  # the root: the Anthropic SDK's base_url; the OpenAI SDK's is url + "/v1"
    db: Sql
    clients: list[Any] = field(default_factory=list)  # sync clients, closed with the server

    def _keep(self, client: Any) -> Any:
        self.clients.append(client)
        return client

    def key(self, user: uuid.UUID, scopes: list[str] | None = None) -> str:
        return str(create_api_key(self.db, "sdk test", user, scopes=json.dumps(scopes or ["models"]))["key"])

    def openai(self, key: str, **kwargs: Any) -> openai.OpenAI:
        return self._keep(openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs))

    def async_openai(self, key: str, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs)

    def anthropic(self, key: str, **kwargs: Any) -> anthropic.Anthropic:
        return self._keep(anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, **kwargs))

    def async_anthropic(self, key: str, **kwargs: Any) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.url, api_key=key, max_retries=0, **kwargs)


@pytest.fixture(name="server")
def server_fixture(fn_env: None, db: Sql) -> Iterator[Server]:
    """The functions on uvicorn (one port, every target under /<target>), on the real database."""
    runtime.install(PostgresDatabase(migrate.as_role(db.url, migrate.MIGRATOR_ROLE), max_size=8))
    with served_functions() as url:
        served = Server(url, db)
        yield served
        for client in served.clients:
            client.close()


def charges(db: Sql, user: uuid.UUID) -> list[dict[str, Any]]:
    return db.q("select * from public.credit_ledger where user_id = %s and kind = 'charge' order by id", (user,))


def usage_rows(db: Sql, user: uuid.UUID) -> list[dict[str, Any]]:
    return db.q("select * from public.usage_logs where user_id = %s order by id", (user,))


def settled_books(db: Sql, user: uuid.UUID) -> None:
    """The money invariants for everyone (tests.support.books.check_books: ledger = balance, held = open holds,
    each settled hold charged once), and no hold of this user left open."""
    check_books(db)
    assert db.one("select count(*) from public.holds where user_id = %s and status = 'open'", (user,)) == 0


AI_SDK = Path(__file__).resolve().parent.parent / "clients" / "ai-sdk"


@pytest.fixture(name="ai_sdk", scope="session")
def ai_sdk_fixture() -> Path:
    """The harness with its node_modules (`npm ci` once; xdist workers wait for each other on a file lock)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed for the AI SDK test (this machine's image has them)")
    with open(AI_SDK / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (AI_SDK / "node_modules" / ".package-lock.json").exists():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=AI_SDK, check=True,
                           timeout=600)
    return AI_SDK
