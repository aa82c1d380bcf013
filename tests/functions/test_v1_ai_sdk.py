"""The compatible API driven by Vercel's AI SDK under Node (`ai` with `@ai-sdk/openai-compatible`, pinned in
tests/clients/ai-sdk, installed from the npm registry by `npm ci` on first use): a streamed and a plain text
generation against the functions served by uvicorn, billed once, with the usage the SDK reports."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support.v1server import (  # noqa: F401  (fixtures)
    Server,
    ai_sdk_fixture,
    charges,
    server_fixture,
    settled_books,
    usage_rows,
)

MODEL = "offline-dev"


def run_sdk(harness: Path, server: Server, key: str, prompt: str, **env: str) -> dict[str, Any]:
    out = subprocess.run(["node", "stream.mjs"], cwd=harness, capture_output=True, text=True, timeout=120, check=False,
                         env=os.environ | {"BASE_URL": f"{server.url}/v1", "API_KEY": key, "MODEL": MODEL,
                                           "PROMPT": prompt} | env)
    assert out.stdout.strip(), out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["exit"] = out.returncode
    return result


def test_ai_sdk_streams_a_text_generation_billed_once(ai_sdk: Path, server: Server) -> None:
    user = server.db.make_user(balance=5)
    result = run_sdk(ai_sdk, server, server.key(user), "Hello from the AI SDK")
    assert result["exit"] == 0, result
    assert "You said: Hello from the AI SDK" in result["text"] and result["chunks"] >= 1
    assert result["finishReason"] == "stop"
    [usage] = usage_rows(server.db, user)
    assert (result["usage"]["inputTokens"], result["usage"]["outputTokens"]) == (usage["input_tokens"],
                                                                                 usage["output_tokens"])
    assert usage["protocol"] == "openai" and len(charges(server.db, user)) == 1
    settled_books(server.db, user)


def test_ai_sdk_generate_with_an_idempotency_key_and_a_session(ai_sdk: Path, server: Server) -> None:
    user = server.db.make_user(balance=5)
    key = server.key(user)
    first = run_sdk(ai_sdk, server, key, "once", MODE="generate", IDEMPOTENCY_KEY="ai-sdk-1", SESSION_ID="ai-sdk")
    again = run_sdk(ai_sdk, server, key, "once", MODE="generate", IDEMPOTENCY_KEY="ai-sdk-1", SESSION_ID="ai-sdk")
    assert first["exit"] == again["exit"] == 0 and first["text"] == again["text"]
    assert len(charges(server.db, user)) == 1
    assert server.db.one("select count(*) from public.chat_messages m join public.chat_sessions s"
                         " on s.id = m.session_id where s.user_id = %s and s.name = 'ai-sdk'", (user,)) == 2
    broke = server.db.make_user(balance=0)
    refused = run_sdk(ai_sdk, server, server.key(broke), "no money")
    assert refused["exit"] == 1 and refused["status"] == 429
    assert json.loads(refused["body"])["error"]["code"] == "insufficient_quota"
    settled_books(server.db, user)
