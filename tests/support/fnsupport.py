"""Calling the functions as the frontend would: each target's functions-framework ASGI app, driven by an
httpx client over ASGITransport on an event loop of the test's own (a thread), over one of the two
transports, with tokens signed by the test project's secret.

One loop per `Api`: the app's pools and clients live on it, as they live on uvicorn's loop when deployed.
Requests from several threads at once run concurrently on that loop (the race tests). respx patches
httpcore, which ASGITransport does not use, so it intercepts the app's outbound calls (providers,
PostgREST) and never the test client's own."""

from __future__ import annotations

import asyncio
import json as jsonlib
import threading
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
from functions_framework.aio import create_asgi_app

JWT_SECRET = "test-project-jwt-secret-with-more-than-32-bytes-0123456789"
SERVICE_SECRET = "test-service-secret-with-more-than-32-bytes-0123456789"
SUPABASE_URL = "https://project-ref.supabase.test"
ISSUER = f"{SUPABASE_URL}/auth/v1"
ORIGIN = "http://localhost:5173"
SOURCE = str(Path(__file__).resolve().parents[2] / "functions" / "main.py")
HOST = "http://functions.test"
T = TypeVar("T")

_apps: dict[str, Any] = {}
_open: list[Api] = []


def app(target: str) -> Any:
    """The functions-framework ASGI app of one target, built once per test process."""
    if target not in _apps:
        _apps[target] = create_asgi_app(target, SOURCE)
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


class Response:
    """What a test reads of an answer (the names Flask's test responses had)."""

    def __init__(self, status_code: int, headers: httpx.Headers, data: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.data = data

    @property
    def mimetype(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip()

    @property
    def text(self) -> str:
        return self.data.decode()

    def get_data(self, as_text: bool = False) -> Any:
        return self.text if as_text else self.data

    @property
    def json(self) -> Any:
        if self.mimetype != "application/json" or not self.data:
            return None
        return jsonlib.loads(self.data)

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.data[:300]!r}>"


class LiveStream:
    """A streamed answer read chunk by chunk as a server would send it; `disconnect()` is the client leaving
    (the ASGI `http.disconnect` uvicorn sends), after which the app must finish on its own."""

    def __init__(self, api: Api, scope: dict[str, Any], body: bytes, stall_after: int | None = None) -> None:
        self.api = api
        self.stall_after = stall_after  # body chunks accepted before sends block (a client that stopped reading)
        self.status_code = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: asyncio.Queue[bytes | None] | None = None
        self._gone: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.api.run(self._start(scope, body))

    async def _start(self, scope: dict[str, Any], body: bytes) -> None:
        self._chunks = asyncio.Queue()
        self._gone = asyncio.Event()
        sent_body = False
        started = asyncio.Event()
        accepted = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            assert self._gone is not None
            await self._gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            assert self._chunks is not None
            if message["type"] == "http.response.start":
                self.status_code = message["status"]
                self.headers = list(message.get("headers", []))
                started.set()
            elif message["type"] == "http.response.body":
                nonlocal accepted
                if self.stall_after is not None and accepted >= self.stall_after:
                    await asyncio.Event().wait()  # blocked until the task is cancelled (the client leaves)
                if message.get("body"):
                    accepted += 1
                    await self._chunks.put(message["body"])
                if not message.get("more_body", False):
                    await self._chunks.put(None)

        async def run() -> None:
            try:
                await app(scope["target"])(scope["asgi"], receive, send)
            finally:
                started.set()
                assert self._chunks is not None
                await self._chunks.put(None)

        self._task = asyncio.get_running_loop().create_task(run())
        await started.wait()

    def next_chunk(self, timeout: float = 30) -> bytes | None:
        """The next body chunk, or None at the end."""
        async def get() -> bytes | None:
            assert self._chunks is not None
            return await asyncio.wait_for(self._chunks.get(), timeout)
        return self.api.run(get())

    def disconnect(self, timeout: float = 30) -> None:
        """The client goes away; returns once the app has finished with the request."""
        async def leave() -> None:
            assert self._gone is not None and self._task is not None
            self._gone.set()
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        self.api.run(leave())


class Api:
    """Requests to the functions as one user (or none)."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._lock = threading.Lock()

    # -- the loop -------------------------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="api-loop", daemon=True)
                self._thread.start()
                self._loop = loop
                _open.append(self)
            return self._loop

    def run(self, coro: Awaitable[T], timeout: float = 120) -> T:
        """Run `coro` on this Api's loop (where the app's pools live) and return its result."""
        loop = self._ensure_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the pools and clients made on this loop, then the loop."""
        if self._loop is None:
            return
        from functions import runtime

        async def shutdown() -> None:
            for client in self._clients.values():
                await client.aclose()
            await runtime.aclose()

        try:
            self.run(shutdown(), timeout=30)
        finally:
            loop, thread = self._loop, self._thread
            self._loop = None
            loop.call_soon_threadsafe(loop.stop)
            assert thread is not None
            thread.join(timeout=30)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            if self in _open:
                _open.remove(self)

    # -- requests -------------------------------------------------------------------------------------------

    def _client(self, target: str) -> httpx.AsyncClient:
        if target not in self._clients:
            self._clients[target] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app(target)),
                                                      base_url=HOST, timeout=120)
        return self._clients[target]

    def _headers(self, user: uuid.UUID | str | None, headers: dict[str, str] | None) -> dict[str, str]:
        all_headers = dict(headers or {})
        if user is not None and "Authorization" not in all_headers:
            all_headers["Authorization"] = f"Bearer {token(user)}"
        return all_headers

    def call(self, method: str, target: str, **kwargs: Any) -> Response:
        return self.run(self.acall(method, target, **kwargs))

    async def acall(self, method: str, target: str, *, user: uuid.UUID | str | None = None,
                    headers: dict[str, str] | None = None, path: str = "/", json: Any = None, data: Any = None,
                    query_string: dict[str, Any] | str | None = None) -> Response:
        """A request from code already running on this Api's loop (a patched model, say)."""
        all_headers = self._headers(user, headers)
        params = query_string if isinstance(query_string, dict) else None
        url = path + (f"?{query_string}" if isinstance(query_string, str) else "")
        content: Any = data.encode() if isinstance(data, str) else data
        if isinstance(data, list):  # pieces of a chunked body: sent without a Content-Length
            content = _pieces(data)

        r = await self._client(target).request(method, url, headers=all_headers, json=json, content=content,
                                               params=params)
        return Response(r.status_code, r.headers, r.content)

    def post(self, target: str, body: Any = None, **kwargs: Any) -> Response:
        if body is not None:
            kwargs["json"] = body
        return self.call("POST", target, **kwargs)

    def get(self, target: str, **kwargs: Any) -> Response:
        return self.call("GET", target, **kwargs)

    def delete(self, target: str, path: str, **kwargs: Any) -> Response:
        return self.call("DELETE", target, path=path, **kwargs)

    def service(self, target: str, body: Any = None, **kwargs: Any) -> Response:
        headers = {"Authorization": f"Bearer {SERVICE_SECRET}", **kwargs.pop("headers", {})}
        return self.post(target, body, headers=headers, **kwargs)

    async def aservice(self, target: str, body: Any = None) -> Response:
        """`service` from code already running on this Api's loop."""
        return await self.acall("POST", target, json=body, headers={"Authorization": f"Bearer {SERVICE_SECRET}"})

    def stream(self, target: str, body: Any, *, user: uuid.UUID | str | None = None,
               headers: dict[str, str] | None = None, stall_after: int | None = None) -> LiveStream:
        """POST `body` and read the answer as it is sent (see LiveStream); with `stall_after`, the client stops
        reading after that many chunks, so the server's next send blocks."""
        all_headers = {"content-type": "application/json", **self._headers(user, headers)}
        raw = jsonlib.dumps(body).encode()
        all_headers["content-length"] = str(len(raw))
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/", "raw_path": b"/", "root_path": "",
                 "query_string": b"", "server": ("functions.test", 80), "client": ("127.0.0.1", 50000),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in all_headers.items()]}
        return LiveStream(self, {"target": target, "asgi": scope}, raw, stall_after)


async def _pieces(chunks: list[bytes]) -> Any:
    for chunk in chunks:
        yield chunk


def close_all() -> None:
    """Close every Api still open (fixtures call it at teardown)."""
    for api in list(_open):
        api.close()


