"""Calling the functions as the frontend would: each target's functions-framework app (Flask test
client) over one of the two transports, with tokens signed by the test project's secret."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from flask.testing import FlaskClient
from functions_framework import create_app

from functions.main import TARGETS

JWT_SECRET = "test-project-jwt-secret-with-more-than-32-bytes-0123456789"
SERVICE_SECRET = "test-service-secret-with-more-than-32-bytes-0123456789"
SUPABASE_URL = "https://project-ref.supabase.test"
ISSUER = f"{SUPABASE_URL}/auth/v1"
ORIGIN = "http://localhost:5173"
SOURCE = str(Path(__file__).resolve().parent.parent / "functions" / "main.py")

_apps: dict[str, Any] = {}


def app(target: str) -> Any:
    """The functions-framework app of one target, built once per test process."""
    if target not in _apps:
        _apps[target] = create_app(target, SOURCE)
    return _apps[target]


def token(user_id: uuid.UUID | str, *, secret: str = JWT_SECRET, ttl: int = 3600, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": str(user_id), "aud": "authenticated", "role": "authenticated",
                              "iss": ISSUER, "iat": now, "exp": now + ttl}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, secret, algorithm="HS256")


def role_key(role: str) -> str:
    """A Supabase API key (legacy JWT form) for `anon` or `service_role`."""
    now = int(time.time())
    return jwt.encode({"role": role, "iss": "supabase", "iat": now, "exp": now + 3600}, JWT_SECRET, algorithm="HS256")


class Api:
    """Requests to the functions as one user (or none)."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.clients: dict[str, FlaskClient] = {t: app(t).test_client() for t in TARGETS}

    def call(self, method: str, target: str, *, user: uuid.UUID | str | None = None,
             headers: dict[str, str] | None = None, path: str = "/", **kwargs: Any) -> Any:
        all_headers = dict(headers or {})
        if user is not None and "Authorization" not in all_headers:
            all_headers["Authorization"] = f"Bearer {token(user)}"
        return self.clients[target].open(path, method=method, headers=all_headers, **kwargs)

    def post(self, target: str, body: Any = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs["json"] = body
        return self.call("POST", target, **kwargs)

    def get(self, target: str, **kwargs: Any) -> Any:
        return self.call("GET", target, **kwargs)

    def delete(self, target: str, path: str, **kwargs: Any) -> Any:
        return self.call("DELETE", target, path=path, **kwargs)

    def service(self, target: str, body: Any = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {SERVICE_SECRET}", **kwargs.pop("headers", {})}
        return self.post(target, body, headers=headers, **kwargs)
