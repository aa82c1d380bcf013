"""The LiteLLM harness itself: the proxy starts, answers both protocols streamed and not, and still answers
exactly what `tests/support/transcripts/litellm_*` recorded; every transcript's `.expected.json` follows the
README's accounting.

The billing tests against the proxy build on this (`from tests.support.litellm_proxy import litellm_proxy_fixture`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.litellm_proxy import LITELLM_VERSION, REQUESTS, LiteLLMProxy, litellm_proxy_fixture, send  # noqa: F401
from tests.support.usage_reference import FIELDS, TRANSCRIPTS, expected_path, extract, parse_sse, transcripts

VOLATILE = {"id", "created"}  # fresh on every answer; everything else must match the recording byte for byte


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in VOLATILE else _stable(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _shape(raw: bytes, streamed: bool) -> Any:
    """The answer with ids and timestamps blanked: events in order (with their names) or the JSON body."""
    if not streamed:
        return _stable(json.loads(raw))
    return [(name, data if data == "[DONE]" else _stable(json.loads(data))) for name, data in parse_sse(raw)]


def _recording(case: str) -> Path:
    found = [p for p in (TRANSCRIPTS / f"litellm_{case}.sse", TRANSCRIPTS / f"litellm_{case}.json") if p.exists()]
    assert len(found) == 1, f"no recording for {case}: run python -m tests.support.transcripts.record"
    return found[0]


def test_proxy_starts_and_serves_the_configured_models(litellm_proxy: LiteLLMProxy) -> None:
    assert httpx.get(f"{litellm_proxy.base_url}/health/liveliness", timeout=5).status_code == 200
    models = httpx.get(f"{litellm_proxy.base_url}/v1/models", headers=litellm_proxy.openai_headers, timeout=5)
    assert models.status_code == 200
    names = {m["id"] for m in models.json()["data"]}
    assert {litellm_proxy.openai_model, litellm_proxy.anthropic_model, litellm_proxy.anthropic_canned_model} <= names
    assert litellm_proxy.version == LITELLM_VERSION


def test_proxy_refuses_a_wrong_key(litellm_proxy: LiteLLMProxy) -> None:
    path, body = REQUESTS["openai"]
    answer = httpx.post(litellm_proxy.base_url + path, json=body, timeout=10,
                        headers={"Authorization": "Bearer sk-not-the-master-key"})
    assert answer.status_code in {400, 401}, answer.text


@pytest.mark.parametrize("case", list(REQUESTS))
def test_live_answer_matches_its_recording(litellm_proxy: LiteLLMProxy, case: str) -> None:
    recording = _recording(case)
    streamed = recording.suffix == ".sse"
    status, content_type, raw = send(litellm_proxy, case)
    assert status == 200, raw[:500]
    assert content_type.startswith("text/event-stream") == streamed, content_type
    assert _shape(raw, streamed) == _shape(recording.read_bytes(), streamed)
    assert extract(raw, streamed) == json.loads(expected_path(recording).read_text())


def test_anthropic_stream_reports_input_only_in_message_delta(litellm_proxy: LiteLLMProxy) -> None:
    """What made streamed Anthropic turns under-bill: `message_start` says 0 input tokens, `message_delta` the truth."""
    _, _, raw = send(litellm_proxy, "anthropic_stream")
    events = {name: json.loads(data) for name, data in parse_sse(raw)}
    assert events["message_start"]["message"]["usage"]["input_tokens"] == 0
    assert events["message_delta"]["usage"]["input_tokens"] > 0


def test_openai_stream_without_include_usage_has_no_usage(litellm_proxy: LiteLLMProxy) -> None:
    path, body = REQUESTS["openai_stream"]
    body = {k: v for k, v in body.items() if k != "stream_options"}
    with httpx.stream("POST", litellm_proxy.base_url + path, json=body, headers=litellm_proxy.openai_headers,
                      timeout=30) as answer:
        raw = answer.read()
    chunks = [json.loads(d) for _, d in parse_sse(raw) if d != "[DONE]"]
    assert chunks
    assert all(not c.get("usage") for c in chunks)


# --- the transcripts (no proxy needed) ------------------------------------------------------------------------

ALL = transcripts()


def test_every_recorded_case_and_hand_made_case_is_there() -> None:
    names = {p.stem for p in ALL}
    assert {f"litellm_{case}" for case in REQUESTS} <= names
    assert {"openai_cached_reasoning", "openai_cached_reasoning_stream", "openai_usage_in_choice_chunk_stream",
            "anthropic_cache", "anthropic_cache_stream", "anthropic_cache_stream_delta_output_only",
            "anthropic_usage_in_delta_only_stream"} <= names


@pytest.mark.parametrize("transcript", ALL, ids=[p.name for p in ALL])
def test_expected_usage_follows_the_readme(transcript: Path) -> None:
    expected = json.loads(expected_path(transcript).read_text())
    assert tuple(expected) == FIELDS
    assert extract(transcript.read_bytes(), transcript.suffix == ".sse") == expected


@pytest.mark.parametrize("transcript", [p for p in ALL if p.suffix == ".sse"],
                         ids=[p.name for p in ALL if p.suffix == ".sse"])
def test_event_streams_are_framed_as_their_protocol(transcript: Path) -> None:
    raw = transcript.read_bytes()
    assert raw.endswith(b"\n\n")
    events = parse_sse(raw)
    if events[0][0] is None:  # OpenAI: data-only events, usage last before [DONE], null on every other chunk
        assert events[-1] == (None, "[DONE]")
        chunks = [json.loads(d) for _, d in events[:-1]]
        assert chunks[-1]["usage"]
        assert all(not c.get("usage") for c in chunks[:-1])
        assert len(chunks[-1]["choices"]) <= 1
        assert all(not ch.get("delta") for ch in chunks[-1]["choices"])
    else:  # Anthropic: every event named as its type, message_start first and message_stop last
        assert all(name == json.loads(data)["type"] for name, data in events)
        assert events[0][0] == "message_start"
        assert events[-1][0] == "message_stop"
        assert [n for n, _ in events].count("message_delta") == 1
