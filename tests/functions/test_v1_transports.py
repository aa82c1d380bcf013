"""The compatible API over both database transports (postgres, and supabase's PostgREST client with respx
routing its calls to the same real database): each protocol, plain and streamed, settles once and marks its
usage row; a replay of the same key is not charged again; an API key's call records the key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.books import check_books
from tests.support.pg import Sql, create_api_key

MODEL = "offline-dev"
BODIES = {
    "/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "over both transports"}]},
    "/messages": {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "over both transports"}]},
}


def streamed_text(text: str) -> str:
    """The answer's text from either protocol's events."""
    events = [json.loads(line[5:]) for line in text.splitlines()
              if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    return "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices") or []) + \
        "".join(e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta")


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_each_protocol_settles_once_over_each_transport(api: Any, path: str, stream: bool) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    key = create_api_key(db, "transport test", uid)
    body = {**BODIES[path], "stream": stream}
    headers = {"Authorization": f"Bearer {key['key']}", "Idempotency-Key": f"k-{path}-{stream}"}
    first = api.post("v1", body, path=path, headers=headers)
    assert first.status_code == 200, first.text
    text = first.text
    if stream:
        assert "You said: over both transports" in streamed_text(text)
        assert text.rstrip().endswith("data: [DONE]" if path == "/chat/completions" else '{"type":"message_stop"}')
    else:
        assert "You said: over both transports" in text
    again = api.post("v1", body, path=path, headers=headers)
    assert again.status_code == 200 and ("You said" in again.text)
    [usage] = db.q("select * from public.usage_logs where user_id = %s", (uid,))
    assert (usage["service"], usage["protocol"], str(usage["api_key_id"])) == (
        "v1", "anthropic" if path == "/messages" else "openai", key["id"])
    assert db.one("select count(*) from public.credit_ledger where user_id = %s and kind = 'charge'", (uid,)) == 1
    check_books(db)
