"""A zero-latency OpenAI-compatible model server for the benchmarks: `python -m bench.modelserver --port N`.

POST .../chat/completions answers at once with a fixed completion that includes `usage`; GET / answers
200 (readiness); anything else is 404. HTTP/1.1 with keep-alive on asyncio, so it costs the machine as
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
            self.buffer = self.buffer[end + 4 + length:]
            method, path, *_ = [*head.split(" ", 2), "", ""]
            if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                self.transport.write(ANSWERS["completion"])
            elif method == "GET" and path == "/":
                self.transport.write(ANSWERS["ready"])
            else:
                self.transport.write(ANSWERS["missing"])


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ModelProtocol, host, port, backlog=512)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
