"""Deployment pieces that can be checked here: production refuses unsafe settings at start, the
functions-framework targets load without `functions.dev`, and supabase/config.toml is what the CLI expects."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _start(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = ("from functions_framework import create_app; "
            f"create_app({target!r}, {str(ROOT / 'functions' / 'main.py')!r}); print('loaded')")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE", "DATABASE", "CORS", "SERVICE"))}
    return subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_production_with_unsafe_settings_refuses_to_start_and_names_each_problem() -> None:
    result = _start("chat", {"ENVIRONMENT": "production", "CORS_ALLOWED_ORIGINS": "*"})
    assert result.returncode != 0
    for problem in ("MODEL_PROVIDER=offline", "no JWT configuration", "CORS_ALLOWED_ORIGINS", "SERVICE_SECRET"):
        assert problem in result.stderr


def test_production_with_a_complete_configuration_starts() -> None:
    result = _start("chat", {
        "ENVIRONMENT": "production", "MODEL_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "sk-ant-x",
        "SUPABASE_URL": "https://ref.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "service-key",
        "SERVICE_SECRET": "s" * 40, "CORS_ALLOWED_ORIGINS": "https://app.example.com"})
    assert result.returncode == 0, result.stderr
    assert "loaded" in result.stdout


@pytest.mark.parametrize("target", ["chat", "compile", "usage", "refresh_views", "health"])
def test_every_http_target_loads_in_development(target: str) -> None:
    assert _start(target, {"ENVIRONMENT": "development"}).returncode == 0


def test_supabase_config_exposes_only_public_and_seeds_from_seed_sql() -> None:
    config = tomllib.loads((ROOT / "supabase" / "config.toml").read_text())
    assert config["api"]["schemas"] == ["public"]
    assert config["db"]["seed"]["sql_paths"] == ["./seed.sql"]
    assert (ROOT / "supabase" / "seed.sql").is_file()
    assert config["project_id"]


@pytest.mark.parametrize("target", ["chat", "compile", "usage", "keys", "refresh_views", "health",
                                    "refresh_views_event"])
def test_every_target_is_served_in_asgi_mode(target: str) -> None:
    """The framework's own entry point (what the buildpack runs) picks its ASGI app for every target, so a
    stream holds a socket on uvicorn, not a thread."""
    code = ("from functions_framework import create_app; "
            f"app = create_app({target!r}, {str(ROOT / 'functions' / 'main.py')!r}); "
            "print(type(app).__module__.split('.')[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "ENVIRONMENT": "development"}, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "starlette"


_NO_DEV = """
import asyncio, importlib, sys
import httpx
from functions_framework.aio import create_asgi_app
from functions.main import TARGETS

async def call_each_target():
    for target in TARGETS:  # each target's first request imports its module, as a deployed instance does
        app = create_asgi_app(target, SOURCE)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn.test") as client:
            answer = await client.request("PUT", "/")  # refused before any database work
        assert answer.status_code in (401, 404, 405), (target, answer.status_code, answer.text)
    create_asgi_app("refresh_views_event", SOURCE)

asyncio.run(call_each_target())
for name in TARGETS:
    importlib.import_module(f"functions.{name}")
from functions import health, runtime
health.expected_migration()  # what a health request reads once the database answered
runtime.database(), runtime.read_database(), runtime.authenticator()  # DATABASE_URL set, as deployed
print(sorted(m for m in sys.modules if m == "functions.dev" or m.startswith("functions.dev.")))
"""


def test_deployed_targets_never_import_functions_dev(tmp_path: Path) -> None:
    """What only local runs and tooling use (`functions/dev/`) is never imported by a deployed function: not by
    `main.py`, not by a target's first request, not by health's migration check, not by the runtime when a
    database is configured."""
    code = f"SOURCE = {str(ROOT / 'functions' / 'main.py')!r}\n" + _NO_DEV
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE", "DATABASE", "CORS", "SERVICE"))}
    env = clean | {"ENVIRONMENT": "development", "DATABASE_URL": f"postgresql://postgres@/postgres?host={tmp_path}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
