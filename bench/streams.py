"""6. Concurrent long streams per instance: N streamed chat turns started at once against one server process,
each a 5-second model answer (`bench/modelserver.py --stream-seconds 5`: first token at once, 20 tokens).

Measured from one asyncio client (httpx), per stream: time to the first delta and time to the end, from the
moment all N were started. Sides, each in the same run against the same model stub:
- floor: the model stub itself (when its first token reaches a client, and when its answer ends);
- the project: `functions-framework --target chat` (one uvicorn worker, as deployed), full billing and
  persistence (begin_chat_turn, touch_hold before the first delta, settle_chat_turn), 64 users;
- the project's compatible API: `--target v1`, `POST /chat/completions` in the OpenAI protocol passed through
  to the stub (billed: begin_api_call, touch_hold, settle_api_call; not persisted), the same request the
  peers get;
- peers, pure pass-through to the same stub (they neither bill nor persist): the LiteLLM proxy (its own
  venv, `tests/support/litellm_proxy.ensure_venv`, one worker, no database) and, when npm installed it in
  `.local/portkey`, the Portkey gateway (node).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    BENCH_MODEL,
    FUNCTIONS_SOURCE,
    HOST,
    ROOT,
    Result,
    Subprocess,
    bench_database,
    free_port,
    function_env,
    functions_framework_command,
    log,
    percentile,
    user_token,
)

STREAM_SECONDS = 5.0
V1_SIDE = "project: v1 chat completions, billed (OpenAI protocol, pass-through)"
USERS = 64
PORTKEY = ROOT / ".local" / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


@dataclass
class Run:
    """One side at one concurrency: seconds to the first delta and to the end of each stream."""

    side: str
    streams: int
    first: list[float]
    done: list[float]
    failed: int
    cpu_seconds: float | None = None

    def summary(self) -> dict[str, Any]:
        return {"streams": self.streams, "failed": self.failed,
                "first_delta_p50_s": round(percentile(self.first, 50), 3) if self.first else None,
                "first_delta_p99_s": round(percentile(self.first, 99), 3) if self.first else None,
                "all_done_s": round(max(self.done), 3) if self.done else None,
                "server_cpu_s": None if self.cpu_seconds is None else round(self.cpu_seconds, 2)}


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str], t0: float,
               marker: bytes) -> tuple[float, float]:
    first = -1.0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for chunk in response.aiter_bytes():
            if first < 0 and marker in chunk:
                first = time.perf_counter() - t0
    if first < 0:
        raise RuntimeError(f"{url}: no delta in the stream")
    return first, time.perf_counter() - t0


async def _drive(url: str, n: int, body_of: Any, headers_of: Any, marker: bytes) -> tuple[list[float], list[float],
                                                                                           int]:
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(_one(client, url, body_of(i), headers_of(i), t0, marker) for i in range(n)),
                                       return_exceptions=True)
    ok = [r for r in results if isinstance(r, tuple)]
    errors = [r for r in results if not isinstance(r, tuple)]
    if errors:
        log(f"  {len(errors)} of {n} streams failed: {errors[0]!r}")
    return [f for f, _ in ok], [d for _, d in ok], len(errors)


def drive(side: str, url: str, n: int, body_of: Any, headers_of: Any, marker: bytes,
          server: Subprocess | None = None) -> Run:
    cpu0 = server.cpu_seconds() if server is not None else None
    first, done, failed = asyncio.run(_drive(url, n, body_of, headers_of, marker))
    cpu = server.cpu_seconds() - cpu0 if server is not None and cpu0 is not None else None
    run = Run(side, n, first, done, failed, cpu)
    log(f"  {side} x{n}: {run.summary()}")
    return run


@contextlib.contextmanager
def litellm(model_port: int, log_dir: Path) -> Iterator[Subprocess | None]:
    """The LiteLLM proxy as a pass-through to the model stub, or None when it cannot be installed."""
    sys.path.insert(0, str(ROOT))
    from tests.support import litellm_proxy

    try:
        python = litellm_proxy.ensure_venv()
    except Exception as exc:
        log(f"LiteLLM unavailable: {exc}")
        yield None
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    port = free_port()
    (workdir / "config.yaml").write_text(
        "model_list:\n"
        f"  - model_name: {BENCH_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{BENCH_MODEL}\n"
        f"      api_base: http://{HOST}:{model_port}/v1\n"
        "      api_key: bench-not-a-key\n"
        "general_settings:\n"
        "  master_key: sk-bench-master\n")
    env = litellm_proxy._proxy_env(workdir)
    config = str(workdir / "config.yaml")
    server = Subprocess("litellm", [str(python), "-m", "litellm.proxy.proxy_cli", "--config", config,
                                    "--host", HOST, "--port", str(port), "--telemetry", "False", "--num_workers", "1"],
                        port=port, env=env, log_dir=log_dir)
    try:
        with server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def portkey(log_dir: Path) -> Iterator[Subprocess | None]:
    node = shutil.which("node")
    if node is None or not PORTKEY.exists():
        log("Portkey gateway not installed (npm install @portkey-ai/gateway in .local/portkey); skipped")
        yield None
        return
    port = free_port()
    server = Subprocess("portkey", [node, str(PORTKEY), f"--port={port}", "--headless"], port=port,
                        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(ROOT))},
                        log_dir=log_dir)
    with server:
        yield server


def run(quick: bool) -> list[Result]:
    counts = (64,) if quick else (64, 512)
    body = {"model": BENCH_MODEL, "messages": [{"role": "user", "content": "Tell me a story."}], "stream": True,
            "max_tokens": 256}
    runs: dict[tuple[str, int], Run] = {}
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp, bench_database("streams") as db:
        log_dir = Path(tmp)
        model_port = free_port()
        model = Subprocess("model", [sys.executable, "-m", "bench.modelserver", "--port", str(model_port),
                                     "--stream-seconds", str(STREAM_SECONDS)], port=model_port,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, log_dir=log_dir)
        users = db.create_users(USERS, prefix="streams", balance_usd=1_000_000)
        tokens = [user_token(u) for u in users]
        chat_port = free_port()
        env = function_env(db.url, MODEL_PROVIDER="openai", OPENAI_BASE_URL=f"http://{HOST}:{model_port}/v1",
                           OPENAI_API_KEY="bench-not-a-key", DB_POOL_MAX_SIZE="20", MODEL_TIMEOUT_SECONDS="60",
                           PORT=str(chat_port), HOST=HOST)
        chat = Subprocess("chat", [*functions_framework_command(), "--target", "chat", "--source",
                                   str(FUNCTIONS_SOURCE), "--host", HOST, "--port", str(chat_port)],
                          port=chat_port, env=env, log_dir=log_dir)
        v1_port = free_port()
        v1 = Subprocess("v1", [*functions_framework_command(), "--target", "v1", "--source", str(FUNCTIONS_SOURCE),
                               "--host", HOST, "--port", str(v1_port)],
                        port=v1_port, env={**env, "PORT": str(v1_port)}, log_dir=log_dir)
        with model, chat, v1, litellm(model_port, log_dir) as lite, portkey(log_dir) as pk:
            sides: list[tuple[str, str, Any, Any, bytes, Subprocess | None]] = [
                ("model stub (floor)", f"http://{HOST}:{model_port}/v1/chat/completions", lambda i: body,
                 lambda i: {}, b"tok0", None),
                ("project: chat, billed and persisted", f"http://{HOST}:{chat_port}/",
                 lambda i: {"message": f"Tell me a story ({i}).", "model": BENCH_MODEL, "stream": True,
                            "max_tokens": 256, "client_message_id": str(uuid.uuid4())},
                 lambda i: {"Authorization": f"Bearer {tokens[i % USERS]}"}, b"event: delta", chat),
                (V1_SIDE, f"http://{HOST}:{v1_port}/chat/completions", lambda i: body,
                 lambda i: {"Authorization": f"Bearer {tokens[i % USERS]}"}, b"tok0", v1),
            ]
            if lite is not None:
                sides.append(("LiteLLM proxy (pass-through)", f"http://{HOST}:{lite.port}/v1/chat/completions",
                              lambda i: body, lambda i: {"Authorization": "Bearer sk-bench-master"}, b"tok0", lite))
            if pk is not None:
                sides.append(("Portkey gateway (pass-through)", f"http://{HOST}:{pk.port}/v1/chat/completions",
                              lambda i: body, lambda i: {"Authorization": "Bearer bench-not-a-key",
                                                         "x-portkey-provider": "openai",
                                                         "x-portkey-custom-host": f"http://{HOST}:{model_port}/v1"},
                              b"tok0", pk))
            for name, url, body_of, headers_of, marker, server in sides:  # warm up each side once
                drive(name, url, 4, body_of, headers_of, marker, server)
            for n in counts:
                for name, url, body_of, headers_of, marker, server in sides:
                    runs[(name, n)] = drive(name, url, n, body_of, headers_of, marker, server)
        with db.connect() as conn:
            open_holds = conn.execute("select count(*) from public.holds where status = 'open'").fetchone()
    return _results(runs, counts, open_holds[0] if open_holds else -1)


def _overhead_ratio(peer: Run | None, ours: Run, floor: Run) -> float | None:
    """The overhead above the model's own timing, the peer's over ours: the smaller of the two ratios, at the
    first delta (p99) and at the end (all done); None when the peer did not run."""
    if peer is None or not peer.first or not peer.done:
        return None
    floor_p99, floor_done = (percentile(floor.first, 99) if floor.first else 0.0), max(floor.done)
    return min((percentile(peer.first, 99) - floor_p99) / max(percentile(ours.first, 99) - floor_p99, 1e-3),
               (max(peer.done) - floor_done) / max(max(ours.done) - floor_done, 1e-3))


def _results(runs: dict[tuple[str, int], Run], counts: tuple[int, ...], open_holds: int) -> list[Result]:
    results: list[Result] = []
    floor_name = "model stub (floor)"
    project = "project: chat, billed and persisted"
    for n in counts:
        floor = runs[(floor_name, n)]
        ours = runs[(project, n)]
        if not ours.first:
            results.append(Result(f"6 streams x{n}: FAILED", float("nan"), "", details={"error": "no stream ended"}))
            continue
        p50, p99, done = percentile(ours.first, 50), percentile(ours.first, 99), max(ours.done)
        floor_p99 = percentile(floor.first, 99) if floor.first else 0.0
        lite = runs.get(("LiteLLM proxy (pass-through)", n))
        details = {side: r.summary() for (side, m), r in runs.items() if m == n} | {"open_holds_after": open_holds}
        met_first = p99 - floor_p99 <= 0.5 and ours.failed == 0
        met_done = done <= STREAM_SECONDS + 1.0
        vs_lite = _overhead_ratio(lite, ours, floor)
        target = "p99 <= model + 0.5 s; done <= 6 s; >= 2x LiteLLM"
        met = met_first and met_done and (vs_lite is None or vs_lite >= 2.0)
        results.append(Result(
            f"6 streams x{n} (5 s answers, 1 worker): first delta p50 / p99, all done", p99, "s",
            floor_p99, "s", ratio_text=f"p50 {p50:.2f} s, done {done:.2f} s"
            + ("" if vs_lite is None else f"; LiteLLM/ours {vs_lite:.2f}x"),
            target=target, met=met, details=details))
        compat = runs.get((V1_SIDE, n))
        if compat is not None and compat.first:
            c99, c_done = percentile(compat.first, 99), max(compat.done)
            vs = _overhead_ratio(lite, compat, floor)
            results.append(Result(
                f"6 streams x{n}: v1 (same request as the peers), billed", c99, "s", floor_p99, "s",
                ratio_text=f"p50 {percentile(compat.first, 50):.2f} s, done {c_done:.2f} s, failed {compat.failed}"
                + ("" if vs is None else f"; LiteLLM/ours {vs:.2f}x"), details=compat.summary()))
        for side in ("LiteLLM proxy (pass-through)", "Portkey gateway (pass-through)"):
            peer = runs.get((side, n))
            if peer is not None and peer.first:
                results.append(Result(f"6 streams x{n}: {side}, neither bills nor persists",
                                      percentile(peer.first, 99), "s", floor_p99, "s",
                                      ratio_text=f"p50 {percentile(peer.first, 50):.2f} s, done {max(peer.done):.2f} s,"
                                                 f" failed {peer.failed}", details=peer.summary()))
    return results


if __name__ == "__main__":
    print(json.dumps([r.as_json() for r in run("--quick" in sys.argv)], indent=1, default=str))
