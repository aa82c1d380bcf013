"""A zero-latency OpenAI-compatible model server for the benchmarks: `python -m bench.modelserver --port N`.

POST .../chat/completions answers at once with a fixed completion that includes `usage`; with
`"stream": true` it streams the answer as OpenAI does (chunked SSE): the first token at once, the rest spread
evenly over `--stream-seconds` (default 5), then a usage chunk and `[DONE]`. GET / answers 200 (readiness);
anything else is 404. HTTP/1.1 with keep-alive on asyncio, so it costs the machine as
little CPU as a stdlib server can. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json

COMPLETION = json.dumps({
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": "bench-model",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Use reversed(xs) or the slice xs[::-1]."}}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 12, "total_tokens": 36},
}).encode()


def _response(status: str, body: bytes) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n")
    return head.encode() + body


ANSWERS = {
    "completion": _response("200 OK", COMPLETION),
    "ready": _response("200 OK", b'{"ok": true}'),
    "missing": _response("404 Not Found", b'{"error": "not found"}'),
}


STREAM_CHUNKS = 20
STREAM_SECONDS = 5.0


def _chunk(payload: dict[str, object] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    event = f"data: {data}\n\n".encode()
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"


def _delta(text: str, finish: str | None = None) -> bytes:
    return _chunk({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench-model",
                   "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]})


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: keep-alive\r\n\r\n")
STREAM_TAIL = (_delta("", "stop")
               + _chunk({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                         "model": "bench-model", "choices": [],
                         "usage": {"prompt_tokens": 24, "completion_tokens": STREAM_CHUNKS,
                                   "total_tokens": 24 + STREAM_CHUNKS}})
               + _chunk("[DONE]") + b"0\r\n\r\n")


async def _stream(transport: asyncio.Transport) -> None:
    """One streamed answer: a token at once, then one every STREAM_SECONDS / (STREAM_CHUNKS - 1)."""
    transport.write(STREAM_HEAD + _delta("tok0 "))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(1, STREAM_CHUNKS):
        await asyncio.sleep(max(0.0, start + STREAM_SECONDS * i / (STREAM_CHUNKS - 1) - loop.time()))
        if transport.is_closing():
            return
        transport.write(_delta(f"tok{i} "))
    transport.write(STREAM_TAIL)


_tasks: set[asyncio.Task[None]] = set()


class ModelProtocol(asyncio.Protocol):
    """Parses pipelined HTTP/1.1 requests with Content-Length bodies and answers each immediately."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return  # the body is still arriving
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, path, *_ = [*head.split(" ", 2), "", ""]
            if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                if b'"stream":true' in body.replace(b" ", b""):
                    task = asyncio.get_running_loop().create_task(_stream(self.transport))
                    _tasks.add(task)
                    task.add_done_callback(_tasks.discard)
                else:
                    self.transport.write(ANSWERS["completion"])
            elif method == "GET" and path == "/":
                self.transport.write(ANSWERS["ready"])
            else:
                self.transport.write(ANSWERS["missing"])


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ModelProtocol, host, port, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    global STREAM_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stream-seconds", type=float, default=STREAM_SECONDS)
    args = parser.parse_args()
    STREAM_SECONDS = args.stream_seconds
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
