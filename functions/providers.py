"""Model providers over httpx: OpenAI-compatible chat completions, the Anthropic Messages API, and an
offline development provider (deterministic, named as such in every answer, refused in production).

Each provider turns transport trouble into `errors.BadGateway` (502) or `errors.GatewayTimeout` (504),
after retrying connect errors, 429 and 5xx with backoff and jitter a bounded number of times (never 4xx).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict

import httpx
import stamina

from functions.errors import BadGateway, GatewayTimeout
from functions.settings import Settings

log = logging.getLogger(__name__)

OFFLINE_NOTICE = "[offline development model: not a real model]"


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    provider: str
    finish_reason: str | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer."""

    text: str


class Provider(Protocol):
    name: str

    def complete(self, model: str, messages: Sequence[Message], max_tokens: int) -> Completion: ...

    def stream(self, model: str, messages: Sequence[Message], max_tokens: int) -> Iterator[Delta | Completion]:
        """Yield deltas, then one Completion with the whole text and the token counts."""
        ...


class _Retryable(Exception):
    """A provider answer worth another try (429, 5xx)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        super().__init__(f"HTTP {response.status_code}")


def _approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


class _HttpProvider:
    name = "http"

    def __init__(self, base_url: str, headers: dict[str, str], settings: Settings,
                 client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.attempts = settings.model_attempts
        self.client = client or httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(settings.model_timeout_seconds, connect=settings.model_connect_timeout_seconds),
        )
        if client is not None:
            self.client.headers.update(headers)

    def _send(self, path: str, payload: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST, retrying connect errors, 429 and 5xx (never other 4xx); the first answer below 400.

        With `stream`, only the opening is retried (nothing has been delivered yet) and the caller closes
        the response.
        """
        url = f"{self.base_url}{path}"
        try:
            for attempt in stamina.retry_context(on=(httpx.ConnectError, httpx.RemoteProtocolError, _Retryable),
                                                 attempts=self.attempts, wait_initial=0.2, wait_max=5.0):
                with attempt:
                    response = self.client.send(self.client.build_request("POST", url, json=payload), stream=stream)
                    if response.status_code == 429 or response.status_code >= 500:
                        response.close()
                        raise _Retryable(response)
        except httpx.TimeoutException as exc:
            raise GatewayTimeout(f"{self.name} did not answer in time") from exc
        except _Retryable as exc:
            raise BadGateway(f"{self.name} answered HTTP {exc.response.status_code}",
                             details={"provider_status": exc.response.status_code}) from exc
        except httpx.HTTPError as exc:
            raise BadGateway(f"{self.name} could not be reached: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            response.close()
            raise BadGateway(f"{self.name} refused the request (HTTP {response.status_code})",
                             details={"provider_status": response.status_code})
        return response

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = self._send(path, payload, stream=False)
        try:
            body = response.json()
        except ValueError as exc:
            raise _malformed(self.name, "a JSON body") from exc
        if not isinstance(body, dict):
            raise BadGateway(f"{self.name} answered with an unexpected body", code="malformed_model_response")
        return body

    def _stream_lines(self, path: str, payload: dict[str, Any]) -> Iterator[str]:
        response = self._send(path, payload, stream=True)
        try:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    yield line[5:].strip()
        except httpx.TimeoutException as exc:
            raise GatewayTimeout(f"{self.name} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise BadGateway(f"{self.name} stream failed: {type(exc).__name__}") from exc
        finally:
            response.close()


def _malformed(provider: str, what: str) -> BadGateway:
    return BadGateway(f"{provider} answer is missing {what}", code="malformed_model_response")


class OpenAICompatible(_HttpProvider):
    """Any endpoint speaking OpenAI's chat-completions API (OpenAI, Azure-style gateways, vLLM, Ollama...)."""

    name = "openai"

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        key = settings.secret("openai_api_key")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        super().__init__(settings.openai_base_url, headers, settings, client)

    def complete(self, model: str, messages: Sequence[Message], max_tokens: int) -> Completion:
        body = self._post("/chat/completions", {"model": model, "messages": list(messages), "max_tokens": max_tokens})
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
            usage = body["usage"]
            tokens_in, tokens_out = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise _malformed(self.name, "choices[0].message.content or usage") from exc
        if not isinstance(text, str) or tokens_in < 0 or tokens_out < 0:
            raise _malformed(self.name, "a text answer")
        return Completion(text, tokens_in, tokens_out, model, self.name, choice.get("finish_reason"))

    def stream(self, model: str, messages: Sequence[Message], max_tokens: int) -> Iterator[Delta | Completion]:
        """Chunks of `choices[0].delta.content`, then a usage chunk (`include_usage`), then `[DONE]`. A stream
        that ends before `[DONE]` or a `finish_reason` was cut off: it raises, it is not a complete answer."""
        payload = {"model": model, "messages": list(messages), "max_tokens": max_tokens, "stream": True,
                   "stream_options": {"include_usage": True}}
        parts: list[str] = []
        usage: tuple[int, int] | None = None
        finish: str | None = None
        done = False
        for data in self._stream_lines("/chat/completions", payload):
            if data == "[DONE]":
                done = True
                break
            pieces, event_usage, event_finish = self._stream_event(data)
            usage = event_usage or usage
            finish = event_finish or finish
            for piece in pieces:
                parts.append(piece)
                yield Delta(piece)
        if not done and finish is None:
            raise BadGateway(f"{self.name} stream ended before the model finished", code="malformed_model_response")
        text = "".join(parts)
        prompt_chars = sum(len(m["content"]) for m in messages)
        tokens_in, tokens_out = usage or (_approx_tokens("x" * prompt_chars), _approx_tokens(text))
        yield Completion(text, tokens_in, tokens_out, model, self.name, finish)

    def _stream_event(self, data: str) -> tuple[list[str], tuple[int, int] | None, str | None]:
        """(text pieces, (input, output) tokens if this chunk carries usage, finish reason) of one chunk."""
        try:
            event = json.loads(data)
            if not isinstance(event, dict):
                raise TypeError("not an object")
            if event.get("error"):
                raise BadGateway(f"{self.name} stream error: {str(event['error'])[:200]}")
            usage = None
            if event.get("usage"):
                usage = int(event["usage"]["prompt_tokens"]), int(event["usage"]["completion_tokens"])
                if min(usage) < 0:
                    raise ValueError("negative token count")
            pieces: list[str] = []
            finish: str | None = None
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                finish = choice.get("finish_reason") or finish
                if piece:
                    if not isinstance(piece, str):
                        raise TypeError("content is not text")
                    pieces.append(piece)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise _malformed(self.name, "a well-formed stream event") from exc
        return pieces, usage, finish


class Anthropic(_HttpProvider):
    """The Anthropic Messages API."""

    name = "anthropic"
    version = "2023-06-01"

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        key = settings.secret("anthropic_api_key")
        headers = {"anthropic-version": self.version, **({"x-api-key": key} if key else {})}
        super().__init__(settings.anthropic_base_url, headers, settings, client)

    @staticmethod
    def _payload(model: str, messages: Sequence[Message], max_tokens: int) -> dict[str, Any]:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        payload: dict[str, Any] = {
            "model": model, "max_tokens": max_tokens,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"],
        }
        if system:
            payload["system"] = system
        return payload

    def complete(self, model: str, messages: Sequence[Message], max_tokens: int) -> Completion:
        body = self._post("/v1/messages", self._payload(model, messages, max_tokens))
        try:
            text = "".join(block["text"] for block in body["content"] if block.get("type") == "text")
            usage = body["usage"]
            tokens_in, tokens_out = int(usage["input_tokens"]), int(usage["output_tokens"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _malformed(self.name, "content or usage") from exc
        if tokens_in < 0 or tokens_out < 0:
            raise _malformed(self.name, "non-negative token counts")
        return Completion(text, tokens_in, tokens_out, model, self.name, body.get("stop_reason"))

    def stream(self, model: str, messages: Sequence[Message], max_tokens: int) -> Iterator[Delta | Completion]:
        """message_start (input tokens), content_block_delta (text), message_delta (output tokens, stop reason),
        message_stop. A stream that ends before message_stop was cut off: it raises."""
        payload = self._payload(model, messages, max_tokens) | {"stream": True}
        parts: list[str] = []
        tokens_in = tokens_out = 0
        stop: str | None = None
        stopped = False
        for data in self._stream_lines("/v1/messages", payload):
            try:
                event = json.loads(data)
                kind = event.get("type")
                piece: str | None = None
                if kind == "message_start":
                    tokens_in = int(event["message"]["usage"]["input_tokens"])
                elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                    piece = event["delta"]["text"]
                    if not isinstance(piece, str):
                        raise TypeError("text is not text")
                elif kind == "message_delta":
                    tokens_out = int((event.get("usage") or {}).get("output_tokens", tokens_out))
                    stop = (event.get("delta") or {}).get("stop_reason", stop)
                elif kind == "message_stop":
                    stopped = True
                elif kind == "error":
                    error = event.get("error") or {}
                    raise BadGateway(f"anthropic stream error: {error.get('type', 'unknown')}")
                if min(tokens_in, tokens_out) < 0:
                    raise ValueError("negative token count")
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _malformed(self.name, "a well-formed stream event") from exc
            if piece:
                parts.append(piece)
                yield Delta(piece)
            if stopped:
                break
        if not stopped:
            raise BadGateway(f"{self.name} stream ended before the model finished", code="malformed_model_response")
        yield Completion("".join(parts), tokens_in, tokens_out, model, self.name, stop)


class Offline:
    """Deterministic answers for local development and tests. Every answer says it is not a real model."""

    name = "offline"

    def _answer(self, messages: Sequence[Message], max_tokens: int) -> str:
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if "LANGUAGE: sql" in system:
            text = f"-- {OFFLINE_NOTICE}\nselect 1 as answer;"
        elif "LANGUAGE: python" in system:
            task = " ".join(last.split())[:200].replace('"""', "'''").replace("\\", "/")
            text = f'# {OFFLINE_NOTICE}\ndef solve():\n    """{task}"""\n    return None\n'
        else:
            turns = sum(1 for m in messages if m["role"] == "user")
            text = f"{OFFLINE_NOTICE} You said: {last[:500]} (turn {turns} of this session)"
        return text[: max_tokens * 4]

    def complete(self, model: str, messages: Sequence[Message], max_tokens: int) -> Completion:
        text = self._answer(messages, max_tokens)
        prompt = sum(len(m["content"]) for m in messages)
        return Completion(text, _approx_tokens("x" * prompt), _approx_tokens(text), model, self.name, "stop")

    def stream(self, model: str, messages: Sequence[Message], max_tokens: int) -> Iterator[Delta | Completion]:
        done = self.complete(model, messages, max_tokens)
        for i in range(0, len(done.text), 16):
            yield Delta(done.text[i : i + 16])
        yield done


_lock = threading.Lock()
_providers: dict[str, Provider] = {}


def get_provider(name: str, settings: Settings) -> Provider:
    """The process-wide provider for a model's provider name (clients are created once and reused)."""
    if name == "offline" and settings.environment == "production":
        raise BadGateway("the offline development provider is disabled in production", code="provider_unavailable")
    with _lock:
        if name not in _providers:
            if name == "openai":
                _providers[name] = OpenAICompatible(settings)
            elif name == "anthropic":
                _providers[name] = Anthropic(settings)
            elif name == "offline":
                _providers[name] = Offline()
            else:
                raise BadGateway(f"no provider named {name!r}", code="provider_unavailable")
        return _providers[name]


def reset_providers() -> None:
    """Forget the cached providers (tests change settings between cases)."""
    with _lock:
        _providers.clear()
