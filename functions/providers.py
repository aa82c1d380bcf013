"""Model providers over httpx: OpenAI-compatible chat completions, the Anthropic Messages API, and an
offline development provider (deterministic, named as such in every answer, refused in production).

Each provider turns transport trouble into `errors.BadGateway` (502) or `errors.GatewayTimeout` (504),
after retrying connect errors, 429 and 5xx with backoff and jitter a bounded number of times (never 4xx);
the provider's own error message, shortened and with anything key-like removed, goes with it.

Usage comes back in one accounting for both protocols (`Usage`): OpenAI's `prompt_tokens` include the
cached tokens and its `completion_tokens` the reasoning tokens; Anthropic reports input, cache reads and
cache writes as three separate counts, and in a stream takes the latest value of each field.

Base URLs: `OPENAI_BASE_URL` is what the OpenAI SDK takes (`https://api.openai.com/v1`; a bare host gets
`/v1`); `ANTHROPIC_BASE_URL` is what the Anthropic SDK takes (`https://api.anthropic.com`; a trailing
`/v1` is accepted too).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, TypedDict
from urllib.parse import urlsplit

import anyio
import httpx
import stamina

from functions.errors import BadGateway, GatewayTimeout
from functions.loops import PerLoop
from functions.settings import Settings

log = logging.getLogger(__name__)

OFFLINE_NOTICE = "[offline development model: not a real model]"


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Usage:
    """Tokens of one call, one accounting for every protocol. Each input token is in exactly one of the
    three input classes; reasoning tokens are part of `output_tokens`."""

    input_tokens: int = 0  # input neither read from nor written to the prompt cache
    cached_input_tokens: int = 0  # read from the prompt cache
    cache_write_tokens: int = 0  # written to the prompt cache
    output_tokens: int = 0  # all output, reasoning included
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        counts = asdict(self).values()
        if any(type(n) is not int or n < 0 for n in counts) or self.reasoning_tokens > self.output_tokens:
            raise ValueError("token counts must be whole numbers >= 0, reasoning within output")

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def as_args(self) -> dict[str, int]:
        """The counts as the settle RPCs take them."""
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    model: str
    provider: str
    finish_reason: str | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer: its `text`; for a relayed protocol stream also the provider's event as
    it came (`raw`, the JSON of one SSE `data:` line, and `event`, its SSE event name where the protocol has
    one) and the characters of output that are not text (`other_chars`: tool-call arguments, thinking),
    which count as delivered too."""

    text: str
    raw: str | None = None
    other_chars: int = 0
    event: str | None = None


Options = Mapping[str, Any]  # sampling options in the provider's own names (temperature, top_p, stop...)


class Provider(Protocol):
    name: str

    async def complete(self, model: str, messages: Sequence[Message], max_tokens: int,
                       options: Options | None = None) -> Completion: ...

    def stream(self, model: str, messages: Sequence[Message], max_tokens: int,
               options: Options | None = None) -> AsyncIterator[Delta | Completion]:
        """Yield deltas, then one Completion with the whole text and the token counts (an async generator:
        close it with `aclose()` when leaving early)."""
        ...


class _Retryable(Exception):
    """A provider answer worth another try (429, 5xx)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        super().__init__(f"HTTP {response.status_code}")


def _approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _count(value: Any) -> int:
    """A token count from a provider: a whole number >= 0 (None counts as 0)."""
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise ValueError(f"bad token count {value!r}")
    return value


def openai_usage(raw: Any) -> Usage:
    """OpenAI's usage object: prompt_tokens include cached_tokens, completion_tokens include reasoning."""
    prompt, completion = _count(raw["prompt_tokens"]), _count(raw["completion_tokens"])
    cached = _count((raw.get("prompt_tokens_details") or {}).get("cached_tokens"))
    reasoning = _count((raw.get("completion_tokens_details") or {}).get("reasoning_tokens"))
    if cached > prompt:
        raise ValueError("cached_tokens above prompt_tokens")
    return Usage(prompt - cached, cached, 0, completion, reasoning)


_ANTHROPIC_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")


def anthropic_usage(latest: dict[str, int]) -> Usage:
    """Anthropic's usage: input, cache reads and cache writes are separate counts that add up."""
    return Usage(latest.get("input_tokens", 0), latest.get("cache_read_input_tokens", 0),
                 latest.get("cache_creation_input_tokens", 0), latest.get("output_tokens", 0))


def _merge_anthropic_usage(latest: dict[str, int], raw: Any) -> None:
    """Keep the latest non-null value of each usage field (message_start, then message_delta)."""
    if raw is None:
        return
    for name in _ANTHROPIC_FIELDS:
        if raw.get(name) is not None:
            latest[name] = _count(raw[name])


_SECRETS = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|(?:api[_-]?key|key)\s*[=:]\s*\S+)", re.IGNORECASE)


async def provider_message(response: httpx.Response, *secrets: str | None) -> str | None:
    """The provider's own explanation of an error answer, shortened, with anything key-like removed."""
    try:
        await response.aread()
        text = response.text
    except (httpx.HTTPError, UnicodeDecodeError):
        return None
    message: Any = text
    try:
        body = json.loads(text)
        error = body.get("error") if isinstance(body, dict) else None
        message = (error.get("message") if isinstance(error, dict) else error) or body.get("message") or text
    except (ValueError, AttributeError):
        pass
    message = " ".join(str(message).split())
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[redacted]")
    message = _SECRETS.sub("[redacted]", message)
    return (message[:297] + "...") if len(message) > 300 else (message or None)


_LIMITS = httpx.Limits(max_connections=2000, max_keepalive_connections=200)


class _HttpProvider:
    name = "http"
    label = "HTTP"  # the provider's name in messages

    def __init__(self, base_url: str, headers: dict[str, str], settings: Settings, secret: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.attempts = settings.model_attempts
        timeout = httpx.Timeout(settings.model_timeout_seconds, connect=settings.model_connect_timeout_seconds)

        async def make() -> httpx.AsyncClient:
            # Hundreds of open streams per instance: the connection limit is the upstream's, not ours.
            return httpx.AsyncClient(headers=headers, timeout=timeout, limits=_LIMITS)

        self.clients: PerLoop[httpx.AsyncClient] = PerLoop(make, _close_client)

    async def _send_once(self, url: str, payload: dict[str, Any], stream: bool,
                         headers: Mapping[str, str] | None = None) -> httpx.Response:
        client = await self.clients.get()
        response = await client.send(client.build_request("POST", url, json=payload, headers=headers), stream=stream)
        if response.status_code == 429 or response.status_code >= 500:
            await response.aclose()
            raise _Retryable(response)
        return response

    async def _send(self, path: str, payload: dict[str, Any], *, stream: bool,
                    headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST, retrying connect errors, 429 and 5xx (never other 4xx); the first answer below 400.

        With `stream`, only the opening is retried (nothing has been delivered yet) and the caller closes
        the response. The first attempt runs without the retry machinery around it.
        """
        url = f"{self.base_url}{path}"
        retryable = (httpx.ConnectError, httpx.RemoteProtocolError, _Retryable)
        try:
            try:
                response = await self._send_once(url, payload, stream, headers)
            except retryable:
                if self.attempts <= 1:
                    raise
                async for attempt in stamina.retry_context(on=retryable, attempts=self.attempts - 1,
                                                           wait_initial=0.2, wait_max=5.0):
                    with attempt:
                        response = await self._send_once(url, payload, stream, headers)
        except httpx.TimeoutException as exc:
            raise GatewayTimeout(f"The {self.label} provider did not answer in time") from exc
        except _Retryable as exc:
            raise await self._refused(exc.response, "failed") from exc
        except httpx.HTTPError as exc:
            raise BadGateway(f"The {self.label} provider could not be reached: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise await self._refused(response, "refused the request")
        return response

    async def _refused(self, response: httpx.Response, what: str) -> BadGateway:
        """A 502 carrying the provider's status and its own message; logged, since the caller only sees ours."""
        message = await provider_message(response, self.secret)
        await response.aclose()
        log.warning(json.dumps({"event": "provider_error", "provider": self.name, "provider_status":
                                response.status_code, "provider_message": message}))
        text = f"The {self.label} provider {what} (HTTP {response.status_code})" + (f": {message}" if message else "")
        details: dict[str, Any] = {"provider_status": response.status_code}
        if message:
            details["provider_message"] = message
        return BadGateway(text, details=details)

    async def _post(self, path: str, payload: dict[str, Any],
                    headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        response = await self._send(path, payload, stream=False, headers=headers)
        try:
            body = response.json()
        except ValueError as exc:
            raise _malformed(self.label, "a JSON body") from exc
        if not isinstance(body, dict):
            raise BadGateway(f"The {self.label} provider answered with an unexpected body",
                             code="malformed_model_response")
        return body

    async def _stream_lines(self, path: str, payload: dict[str, Any],
                            headers: Mapping[str, str] | None = None) -> AsyncGenerator[str, None]:
        response = await self._send(path, payload, stream=True, headers=headers)
        try:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    yield line[5:].strip()
        except httpx.TimeoutException as exc:
            raise GatewayTimeout(f"The {self.label} provider did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise BadGateway(f"The {self.label} provider's stream failed: {type(exc).__name__}") from exc
        finally:
            with anyio.CancelScope(shield=True):  # a cancelled stream (client gone) still frees the connection
                await response.aclose()


def openai_base(url: str) -> str:
    """OPENAI_BASE_URL as the OpenAI SDK takes it; a bare host gets /v1."""
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def anthropic_base(url: str) -> str:
    """ANTHROPIC_BASE_URL as the Anthropic SDK takes it (no /v1); a trailing /v1 is dropped."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def _malformed(provider: str, what: str) -> BadGateway:
    return BadGateway(f"The {provider} provider's answer is missing {what}", code="malformed_model_response")


class OpenAICompatible(_HttpProvider):
    """Any endpoint speaking OpenAI's chat-completions API (OpenAI, Azure-style gateways, vLLM, Ollama...)."""

    name = "openai"
    label = "OpenAI"

    def __init__(self, settings: Settings) -> None:
        key = settings.secret("openai_api_key")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        super().__init__(openai_base(settings.openai_base_url), headers, settings, key)

    async def complete(self, model: str, messages: Sequence[Message], max_tokens: int,
                       options: Options | None = None) -> Completion:
        payload = {**(options or {}), "model": model, "messages": list(messages), "max_tokens": max_tokens}
        return openai_completion(await self._post("/chat/completions", payload), model)

    def stream(self, model: str, messages: Sequence[Message], max_tokens: int,
               options: Options | None = None) -> AsyncIterator[Delta | Completion]:
        """Deltas of the answer's text, then the Completion (see `_chunks`)."""
        payload = {**(options or {}), "model": model, "messages": list(messages), "max_tokens": max_tokens}
        return self._chunks(payload, sum(len(m["content"]) for m in messages), relay=False)

    async def forward(self, payload: dict[str, Any], headers: Mapping[str, str] | None = None,
                      ) -> tuple[dict[str, Any], Completion]:
        """A chat-completions request passed through as the client wrote it: the provider's body unchanged,
        with its text and usage read for the bill."""
        body = await self._post("/chat/completions", payload, headers)
        return body, openai_completion(body, str(body.get("model") or payload["model"]))

    def forward_stream(self, payload: dict[str, Any], headers: Mapping[str, str] | None = None,
                       ) -> AsyncIterator[Delta | Completion]:
        """A streamed chat-completions request passed through: each chunk as a Delta carrying the provider's
        event (`raw`), then the Completion once `[DONE]` arrives (not relayed: the caller ends the stream
        after the settle)."""
        return self._chunks(payload, len(json.dumps(payload.get("messages"))), relay=True, headers=headers)

    async def _chunks(self, payload: dict[str, Any], prompt_chars: int, *, relay: bool,
                      headers: Mapping[str, str] | None = None) -> AsyncIterator[Delta | Completion]:
        """A chat-completions stream, usage always asked for (`include_usage`): chunks of
        `choices[0].delta.content`, a usage chunk (its `choices` empty or an empty delta), then `[DONE]`.
        Yields a Delta per text piece, or with `relay` one per chunk carrying the chunk as it came (`raw`),
        then a Completion with the whole text, the usage and the finish reason. A stream that ends before
        `[DONE]` or a `finish_reason` was cut off: it raises, it is not a complete answer."""
        payload = {**payload, "stream": True,
                   "stream_options": {**(payload.get("stream_options") or {}), "include_usage": True}}
        parts: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        done = False
        async with contextlib.aclosing(self._stream_lines("/chat/completions", payload, headers)) as lines:
            async for data in lines:
                if data == "[DONE]":
                    done = True
                    break
                pieces, event_usage, event_finish, tool_chars = self._stream_event(data)
                usage = event_usage or usage
                finish = event_finish or finish
                parts.extend(pieces)
                if relay:
                    yield Delta("".join(pieces), raw=data, other_chars=tool_chars)
                else:
                    for piece in pieces:
                        yield Delta(piece)
        if not done and finish is None:
            raise BadGateway(f"The {self.label} provider's stream ended before the model finished",
                             code="malformed_model_response")
        text = "".join(parts)
        model = str(payload["model"])
        if usage is None:  # a server that ignores include_usage: estimate, and say so in the log
            log.warning(json.dumps({"event": "usage_estimated", "provider": self.name, "model": model}))
            usage = Usage(_approx_tokens("x" * prompt_chars), 0, 0, _approx_tokens(text))
        yield Completion(text, usage, model, self.name, finish)

    def _stream_event(self, data: str) -> tuple[list[str], Usage | None, str | None, int]:
        """(text pieces, usage if this chunk carries it, finish reason, characters of tool-call names and
        arguments: output that is not text) of one chunk."""
        try:
            event = json.loads(data)
            if not isinstance(event, dict):
                raise TypeError("not an object")
            if event.get("error"):
                error = event["error"]
                message = error.get("message") if isinstance(error, dict) else error
                raise BadGateway(f"The {self.label} provider's stream failed: {str(message)[:200]}")
            usage = openai_usage(event["usage"]) if event.get("usage") else None
            pieces: list[str] = []
            finish: str | None = None
            tool_chars = 0
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                finish = choice.get("finish_reason") or finish
                if piece:
                    if not isinstance(piece, str):
                        raise TypeError("content is not text")
                    pieces.append(piece)
                tool_chars += _tool_call_chars(delta.get("tool_calls"))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise _malformed(self.label, "a well-formed stream event") from exc
        return pieces, usage, finish, tool_chars


def openai_completion(body: Mapping[str, Any], model: str) -> Completion:
    """The text, usage and finish reason of a chat.completion body (a provider's, or one stored for a replay)."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"] or ""
        usage = openai_usage(body["usage"])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise _malformed(OpenAICompatible.label, "choices[0].message.content or a valid usage") from exc
    if not isinstance(text, str):
        raise _malformed(OpenAICompatible.label, "a text answer")
    return Completion(text, usage, model, OpenAICompatible.name, choice.get("finish_reason"))


def anthropic_completion(body: Mapping[str, Any], model: str) -> Completion:
    """The text, usage and stop reason of a Messages body (a provider's, or one stored for a replay)."""
    try:
        text = "".join(block["text"] for block in body["content"] if block.get("type") == "text")
        latest: dict[str, int] = {}
        _merge_anthropic_usage(latest, body["usage"])
        usage = anthropic_usage(latest)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _malformed(Anthropic.label, "content or a valid usage") from exc
    return Completion(text, usage, model, Anthropic.name, body.get("stop_reason"))


def _tool_call_chars(calls: Any) -> int:
    """Characters of the tool-call names and arguments of one chunk's delta (anything unexpected counts 0)."""
    functions = [c.get("function") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    return sum(len(v) for f in functions if isinstance(f, dict)
               for v in (f.get("name"), f.get("arguments")) if isinstance(v, str))


def anthropic_conversation(messages: Sequence[Message]) -> tuple[str, list[dict[str, str]]]:
    """(system, messages) as the Messages API accepts them: system prompts in `system`, and turns that
    start with the user and alternate (leading assistant turns dropped, consecutive turns of one role joined)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns: list[dict[str, str]] = []
    for m in messages:
        if m["role"] == "system" or (m["role"] == "assistant" and not turns):
            continue
        if turns and turns[-1]["role"] == m["role"]:
            turns[-1]["content"] += "\n\n" + m["content"]
        else:
            turns.append({"role": m["role"], "content": m["content"]})
    return system, turns


class Anthropic(_HttpProvider):
    """The Anthropic Messages API."""

    name = "anthropic"
    label = "Anthropic"
    version = "2023-06-01"

    def __init__(self, settings: Settings) -> None:
        key = settings.secret("anthropic_api_key")
        headers = {"anthropic-version": self.version, **({"x-api-key": key} if key else {})}
        super().__init__(anthropic_base(settings.anthropic_base_url), headers, settings, key)

    @staticmethod
    def _payload(model: str, messages: Sequence[Message], max_tokens: int, options: Options | None = None,
                 ) -> dict[str, Any]:
        system, turns = anthropic_conversation(messages)
        payload: dict[str, Any] = {**(options or {}), "model": model, "max_tokens": max_tokens, "messages": turns}
        if system:
            payload["system"] = system
        return payload

    async def complete(self, model: str, messages: Sequence[Message], max_tokens: int,
                       options: Options | None = None) -> Completion:
        body = await self._post("/v1/messages", self._payload(model, messages, max_tokens, options))
        return anthropic_completion(body, model)

    def stream(self, model: str, messages: Sequence[Message], max_tokens: int,
               options: Options | None = None) -> AsyncIterator[Delta | Completion]:
        """Deltas of the answer's text, then the Completion (see `_events`)."""
        return self._events(self._payload(model, messages, max_tokens, options), relay=False)

    async def forward(self, payload: dict[str, Any], headers: Mapping[str, str] | None = None,
                      ) -> tuple[dict[str, Any], Completion]:
        """A Messages request passed through as the client wrote it (with its `anthropic-beta` header, if
        any): the provider's body unchanged, with its text and usage read for the bill."""
        body = await self._post("/v1/messages", payload, headers)
        return body, anthropic_completion(body, str(body.get("model") or payload["model"]))

    def forward_stream(self, payload: dict[str, Any], headers: Mapping[str, str] | None = None,
                       ) -> AsyncIterator[Delta | Completion]:
        """A streamed Messages request passed through: each event as a Delta carrying it (`raw`), then the
        Completion once `message_stop` arrives (not relayed: the caller ends the stream after the settle)."""
        return self._events(payload, relay=True, headers=headers)

    async def _events(self, payload: dict[str, Any], *, relay: bool, headers: Mapping[str, str] | None = None,
                      ) -> AsyncIterator[Delta | Completion]:
        """A Messages stream: message_start (usage), content_block_delta (text, tool input, thinking),
        message_delta (usage again, stop reason), message_stop. Each usage field keeps its latest non-null
        value: some servers send `input_tokens: 0` at the start and the real count in message_delta. Yields a
        Delta per text piece, or with `relay` one per event carrying it as it came (`raw`, with the
        characters of tool input and thinking), then the Completion. A stream that ends before message_stop
        was cut off: it raises."""
        payload = {**payload, "stream": True}
        parts: list[str] = []
        latest: dict[str, int] = {}
        stop: str | None = None
        stopped = False
        async with contextlib.aclosing(self._stream_lines("/v1/messages", payload, headers)) as lines:
            async for data in lines:
                try:
                    event = json.loads(data)
                    kind = event.get("type")
                    text, other = "", 0
                    if kind == "message_start":
                        _merge_anthropic_usage(latest, event["message"].get("usage"))
                    elif kind == "content_block_delta":
                        delta = event["delta"]
                        if delta.get("type") == "text_delta":
                            text = delta["text"]
                            if not isinstance(text, str):
                                raise TypeError("text is not text")
                        other = sum(len(delta.get(k) or "") for k in ("partial_json", "thinking"))
                    elif kind == "message_delta":
                        _merge_anthropic_usage(latest, event.get("usage"))
                        stop = (event.get("delta") or {}).get("stop_reason", stop)
                    elif kind == "message_stop":
                        stopped = True
                        break
                    elif kind == "error":
                        error = event.get("error") or {}
                        raise BadGateway(f"The {self.label} provider's stream failed: {error.get('type', 'unknown')}: "
                                         f"{str(error.get('message', ''))[:200]}")
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise _malformed(self.label, "a well-formed stream event") from exc
                parts.append(text)
                if relay:
                    yield Delta(text, raw=data, other_chars=other, event=kind if isinstance(kind, str) else None)
                elif text:
                    yield Delta(text)
        if not stopped:
            raise BadGateway(f"The {self.label} provider's stream ended before the model finished",
                             code="malformed_model_response")
        try:
            usage = anthropic_usage(latest)
        except ValueError as exc:
            raise _malformed(self.label, "a valid usage") from exc
        yield Completion("".join(parts), usage, str(payload["model"]), self.name, stop)


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

    def completion(self, model: str, messages: Sequence[Message], max_tokens: int) -> Completion:
        """The answer, computed at once (no I/O)."""
        text = self._answer(messages, max_tokens)
        prompt = sum(len(m["content"]) for m in messages)
        return Completion(text, Usage(_approx_tokens("x" * prompt), 0, 0, _approx_tokens(text)), model, self.name,
                          "stop")

    async def complete(self, model: str, messages: Sequence[Message], max_tokens: int,
                       options: Options | None = None) -> Completion:
        return self.completion(model, messages, max_tokens)

    async def stream(self, model: str, messages: Sequence[Message], max_tokens: int,
                     options: Options | None = None) -> AsyncIterator[Delta | Completion]:
        done = self.completion(model, messages, max_tokens)
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
    """Close and forget the cached providers (tests change settings between cases)."""
    with _lock:
        providers = list(_providers.values())
        _providers.clear()
    for provider in providers:
        if isinstance(provider, _HttpProvider):
            provider.clients.close_all()


async def aclose_providers() -> None:
    """Close this event loop's provider clients."""
    for provider in list(_providers.values()):
        if isinstance(provider, _HttpProvider):
            await provider.clients.aclose()


async def _close_client(client: httpx.AsyncClient) -> None:
    await client.aclose()
