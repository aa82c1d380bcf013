"""`python -m bench [--quick] [--only NAME ...]`: run the benchmarks, print a markdown table of ratios
measured in the same run, and write every number to bench/results/latest.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench import billing, coldstart, handler, ingest, streams, usage_summary
from bench.common import BENCH_DIR, Result, markdown_table

Benchmark = Callable[[bool], list[Result]]

BENCHMARKS: dict[str, tuple[Benchmark, str]] = {
    "handler": (handler.run, "chat turns/s through the HTTP server vs a no-op target"),
    "billing": (billing.run, "begin_chat_turn + settle_chat_turn on one hot user vs a single-row update"),
    "usage": (usage_summary.run, "usage_summary on 1.2M usage rows vs a group-by over usage_logs"),
    "ingest": (ingest.run, "events/s through POST /usage vs COPY of the same rows"),
    "coldstart": (coldstart.run, "first answered request of the health target vs a no-op target"),
    "streams": (streams.run, "64 and 512 concurrent 5 s streams: first delta and done vs the model, LiteLLM, Portkey"),
}
DEFAULT_OUTPUT = BENCH_DIR / "results" / "latest.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(),
            "platform": platform.platform(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def background_cpu_pct(seconds: float = 0.5) -> float:
    """The whole machine's CPU use while this run is idle between benchmarks (its servers are stopped):
    other work sharing the machine, which adds noise to absolute numbers (ratios are measured in the same
    conditions on both sides, which limits but does not remove its effect)."""
    return float(psutil.cpu_percent(interval=seconds))


BUSY_PCT = 25.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under a minute)")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    args = parser.parse_args(argv)

    if args.list:
        for name, (_, description) in BENCHMARKS.items():
            print(f"{name:10} {description}")
        return 0

    selected = args.only or list(BENCHMARKS)
    results: list[Result] = []
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    background: dict[str, float] = {}
    started = time.perf_counter()
    for name in BENCHMARKS:
        if name not in selected:
            continue
        print(f"== {name}{' (quick)' if args.quick else ''}: {BENCHMARKS[name][1]}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        background[name] = background_cpu_pct()
        try:
            results.extend(BENCHMARKS[name][0](args.quick))
        except Exception as exc:
            traceback.print_exc()
            failures[name] = f"{type(exc).__name__}: {exc}"
            results.append(Result.failed(name, exc))
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"   {name} took {timings[name]:.1f} s (machine busy before it: {background[name]:.0f}% CPU)",
              file=sys.stderr, flush=True)
    total = time.perf_counter() - started

    table = markdown_table(results)
    print(table)
    print(f"\n{'quick' if args.quick else 'full'} run, {total:.0f} s, {os.cpu_count()} CPUs ({cpu_model()})")
    background["after_run"] = background_cpu_pct()
    busiest = max(background.values())
    if busiest > BUSY_PCT:
        print(f"note: other work was using up to {busiest:.0f}% of the machine's CPU between benchmarks; absolute "
              "numbers are noisy (background_cpu_pct in the JSON)")

    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "benchmarks": selected,
        "machine": machine(),
        "seconds": round(total, 1),
        "seconds_per_benchmark": timings,
        "background_cpu_pct": background,
        "failures": failures,
        "table_markdown": table,
        "results": [r.as_json() for r in results],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results written to {args.output}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
