"""1. Handler overhead: chat turns per second through the real HTTP server against a no-op target.

Both targets run as functions-framework runs them (gunicorn, one worker, its default threads) on
127.0.0.1 and get the same POST from the same client. The chat turn is complete: JWT check, pydantic,
`begin_charge`, a call to a zero-latency OpenAI-compatible model server on loopback, `settle_chat_turn`
(messages, usage row, ledger, balance) and the JSON answer. Each turn starts a new session (no history).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from bench.common import (
    BENCH_MODEL,
    FUNCTIONS_SOURCE,
    HOST,
    NOOP_SOURCE,
    BenchDatabase,
    CpuMeter,
    HttpRequest,
    LoadResult,
    RequestFactory,
    Result,
    Subprocess,
    bench_database,
    drive,
    function_env,
    function_server,
    gunicorn_threads,
    log,
    model_server,
    process_tree_cpu,
    user_token,
)

TARGET_RATIO = 0.5
TARGET_CPU_MS = 1.5  # function server CPU per fully billed, persisted turn (issue 10)
CONCURRENCY = 8
MESSAGE = "How do I reverse a list in Python?"


@dataclass(frozen=True)
class Scale:
    noop_requests: int  # per round
    chat_requests: int
    latency_requests: int
    rounds: int
    warmup: int


FULL = Scale(noop_requests=3000, chat_requests=1200, latency_requests=150, rounds=3, warmup=100)
QUICK = Scale(noop_requests=600, chat_requests=200, latency_requests=40, rounds=1, warmup=20)


@dataclass
class Target:
    """One function server under test, and what its rounds measured."""

    name: str
    server: Subprocess
    requests: int
    meter: CpuMeter
    loads: list[LoadResult] = field(default_factory=list)
    latencies: list[LoadResult] = field(default_factory=list)

    def round(self, factory: RequestFactory, latency_requests: int) -> None:
        self.meter.start()
        self.loads.append(drive(self.server.port, factory, total=self.requests, concurrency=CONCURRENCY))
        self.meter.stop()
        self.latencies.append(drive(self.server.port, factory, total=latency_requests, concurrency=1))

    @property
    def load(self) -> LoadResult:
        return LoadResult.merge(self.loads)

    @property
    def latency(self) -> LoadResult:
        return LoadResult.merge(self.latencies)

    def cpu_ms_per_request(self) -> dict[str, float]:
        return self.meter.per_request_ms(self.load.requests)


def _meter(server: Subprocess, db: BenchDatabase, model: Subprocess) -> CpuMeter:
    return CpuMeter({"function server": server.cpu_seconds, "postgres": lambda: process_tree_cpu(db.postmaster()),
                     "model server": model.cpu_seconds})


def run(quick: bool) -> list[Result]:
    scale = QUICK if quick else FULL
    with bench_database("handler") as db, model_server(db.workdir) as model:
        users = db.create_users(CONCURRENCY, prefix="handler", balance_usd=1_000_000)
        tokens = [user_token(u) for u in users]
        env = function_env(db.url, OPENAI_BASE_URL=f"http://{HOST}:{model.port}/v1", OPENAI_API_KEY="bench-key")
        body = json.dumps({"message": MESSAGE, "model": BENCH_MODEL, "max_tokens": 64}).encode()

        def request(client: int, _n: int) -> HttpRequest:
            return HttpRequest("POST", "/", body, {"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {tokens[client % len(tokens)]}"})

        with function_server("noop", NOOP_SOURCE, env, db.workdir) as noop_server, \
                function_server("chat", FUNCTIONS_SOURCE, env, db.workdir) as chat_server:
            noop = Target("noop", noop_server, scale.noop_requests, _meter(noop_server, db, model))
            chat = Target("chat", chat_server, scale.chat_requests, _meter(chat_server, db, model))
            for target in (noop, chat):
                drive(target.server.port, request, total=scale.warmup, concurrency=CONCURRENCY)
            for round_no in range(scale.rounds):  # alternate, so drift in the machine's load hits both
                for target in (noop, chat) if round_no % 2 == 0 else (chat, noop):
                    target.round(request, scale.latency_requests)
                log(f"round {round_no + 1}: noop {noop.loads[-1].rps:.0f} req/s, chat {chat.loads[-1].rps:.0f} "
                    f"turns/s at {CONCURRENCY} clients")
        with db.connect() as conn:
            row = conn.execute("select (select count(*) from public.holds where status = 'settled'),"
                               " (select count(*) from public.chat_messages),"
                               " (select count(*) from public.usage_logs)").fetchone()
        assert row is not None
        settled, messages, usage_rows = row
        expected = scale.warmup + scale.rounds * (scale.chat_requests + scale.latency_requests)
        if settled != expected or messages != 2 * expected or usage_rows != expected:
            raise RuntimeError(f"chat turns not all recorded: {settled} settled holds, {messages} messages, "
                               f"{usage_rows} usage rows for {expected} turns")

    ratio = chat.load.rps / noop.load.rps
    chat_cpu = chat.cpu_ms_per_request()
    noop_cpu = noop.cpu_ms_per_request()
    details = {
        "clients": CONCURRENCY, "gunicorn_workers": 1, "gunicorn_threads": gunicorn_threads(),
        "noop": noop.load.summary(), "chat": chat.load.summary(),
        "noop_1_client": noop.latency.summary(), "chat_1_client": chat.latency.summary(),
        "rounds": scale.rounds, "cpu_ms_per_request": {"noop": noop_cpu, "chat": chat_cpu},
        "turns_recorded": {"settled_holds": settled, "messages": messages, "usage_rows": usage_rows},
    }
    added_p50 = chat.latency.p(50) - noop.latency.p(50)
    added_p99 = chat.latency.p(99) - noop.latency.p(99)
    return [
        Result("1 handler: chat turns/s via HTTP (8 clients)", chat.load.rps, "turns/s", noop.load.rps, "req/s",
               ratio=ratio, target=f">= {TARGET_RATIO}", met=ratio >= TARGET_RATIO, details=details),
        Result("1 handler: function CPU per fully billed, persisted turn", chat_cpu["function server"], "ms",
               noop_cpu["function server"], ratio_text=f"+{chat_cpu['postgres']:.2f} ms Postgres",
               target=f"<= {TARGET_CPU_MS} ms", met=chat_cpu["function server"] <= TARGET_CPU_MS,
               details={"chat": chat_cpu, "noop": noop_cpu}),
        Result("1 handler: chat latency p50 (1 client)", chat.latency.p(50), "ms", noop.latency.p(50),
               ratio=chat.latency.p(50) / noop.latency.p(50), ratio_text=f"+{added_p50:.2f} ms added",
               details={"added_ms": added_p50}),
        Result("1 handler: chat latency p99 (1 client)", chat.latency.p(99), "ms", noop.latency.p(99),
               ratio=chat.latency.p(99) / noop.latency.p(99), ratio_text=f"+{added_p99:.2f} ms added",
               details={"added_ms": added_p99}),
    ]
