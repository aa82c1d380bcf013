"""A small reference reader of provider answers: the normalized usage of `tests/support/transcripts/README.md`.

It is the yardstick the transcripts' `.expected.json` files are checked against, not the application's reader
(that one lives in `functions/`); keep it obviously correct rather than fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"
FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "text")


def parse_sse(raw: bytes) -> list[tuple[str | None, str]]:
    """Server-sent events as (event name or None, data), per the SSE framing: blank lines end an event."""
    events: list[tuple[str | None, str]] = []
    text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        if data:
            events.append((name, "\n".join(data)))
    return events


def protocol_of(raw: bytes, streamed: bool) -> str:
    if streamed:
        names = {name for name, _ in parse_sse(raw)}
        return "anthropic" if "message_start" in names else "openai"
    body = json.loads(raw)
    return "anthropic" if body.get("type") == "message" else "openai"


def _openai(usage: dict[str, Any] | None, text: str) -> dict[str, Any]:
    usage = usage or {}
    prompt = usage.get("prompt_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": prompt - cached, "cached_input_tokens": cached, "cache_write_tokens": 0,
            "output_tokens": usage.get("completion_tokens") or 0, "reasoning_tokens": reasoning, "text": text}


def _anthropic(usage: dict[str, Any], text: str) -> dict[str, Any]:
    return {"input_tokens": usage.get("input_tokens") or 0,
            "cached_input_tokens": usage.get("cache_read_input_tokens") or 0,
            "cache_write_tokens": usage.get("cache_creation_input_tokens") or 0,
            "output_tokens": usage.get("output_tokens") or 0, "reasoning_tokens": 0, "text": text}


def extract(raw: bytes, streamed: bool) -> dict[str, Any]:
    """The normalized usage and answer text of one raw answer body."""
    protocol = protocol_of(raw, streamed)
    if not streamed:
        body = json.loads(raw)
        if protocol == "openai":
            return _openai(body.get("usage"), body["choices"][0]["message"].get("content") or "")
        text = "".join(b["text"] for b in body["content"] if b.get("type") == "text")
        return _anthropic(body.get("usage") or {}, text)
    parts: list[str] = []
    if protocol == "openai":
        usage: dict[str, Any] | None = None
        for _, data in parse_sse(raw):
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) == 0:
                    parts.append((choice.get("delta") or {}).get("content") or "")
            if chunk.get("usage"):
                usage = chunk["usage"]
        return _openai(usage, "".join(parts))
    latest: dict[str, Any] = {}
    for name, data in parse_sse(raw):
        event = json.loads(data)
        kind = event.get("type", name)
        if kind == "message_start":
            found = event["message"].get("usage") or {}
        elif kind == "message_delta":
            found = event.get("usage") or {}
        else:
            found = {}
            if kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                parts.append(event["delta"]["text"])
        latest.update({k: v for k, v in found.items() if v is not None})  # the latest non-null value of each field
    return _anthropic(latest, "".join(parts))


def transcripts() -> list[Path]:
    """Every recorded or hand-assembled answer body (not the expectations)."""
    return sorted(p for p in TRANSCRIPTS.iterdir()
                  if p.suffix in {".sse", ".json"} and not p.name.endswith(".expected.json"))


def expected_path(transcript: Path) -> Path:
    return transcript.with_name(transcript.stem + ".expected.json")
