"""5. Cold start: time from process start to the first answered request.

`functions-framework --target health --source functions/main.py` with DATABASE_URL pointing at the bench
database (first request GET /: the probe writes and reads back through a fresh pool), against the same
for the no-op target in bench/noop_app.py. Runs alternate between the two; the medians are compared.
The clock starts just before the fork and stops when the first HTTP answer has been read, so it counts
interpreter start, imports, gunicorn's worker boot and the first request itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.common import (
    FUNCTIONS_SOURCE,
    NOOP_SOURCE,
    Result,
    Subprocess,
    bench_database,
    function_env,
    function_server,
    log,
    median,
)

TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Scale:
    runs: int


FULL = Scale(runs=9)
QUICK = Scale(runs=2)


def first_answer_seconds(server: Subprocess, expect_status: int) -> float:
    started = server.start()
    try:
        status, body = server.wait_answering(timeout=60.0, poll=0.002)
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    if status != expect_status:
        raise RuntimeError(f"{server.name} answered HTTP {status}: {body[:300]!r}")
    return elapsed


def run(quick: bool) -> list[Result]:
    scale = QUICK if quick else FULL
    health_s: list[float] = []
    noop_s: list[float] = []
    with bench_database("coldstart") as db:
        env = function_env(db.url)
        for i in range(scale.runs + 1):  # the first pair warms the OS file cache and is not counted
            pair = [("noop", NOOP_SOURCE, noop_s), ("health", FUNCTIONS_SOURCE, health_s)]
            if i % 2:
                pair.reverse()
            for target, source, samples in pair:
                seconds = first_answer_seconds(function_server(target, source, env, db.workdir), 200)
                if i:
                    samples.append(seconds)
        with db.connect() as conn:
            probes = conn.execute("select count(*) from private.health_checks").fetchone()
    log(f"cold start: health median {median(health_s):.3f} s, noop median {median(noop_s):.3f} s")
    ratio = median(health_s) / median(noop_s)
    details = {"runs": scale.runs, "health_s": health_s, "noop_s": noop_s,
               "health_probes_written": probes[0] if probes else None,
               "command": "functions-framework --target health --source functions/main.py --host 127.0.0.1"}
    return [Result("5 cold start: health first answer (median)", median(health_s), "s", median(noop_s),
                   ratio=ratio, ratio_suffix="x", target=f"<= {TARGET_RATIO}x", met=ratio <= TARGET_RATIO,
                   details=details)]
