"""What the benchmarks share: results, a throwaway migrated database, function servers run as
functions-framework runs them, the zero-latency model server, and a bounded HTTP load driver."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from functions.auth import mint_dev_token
from functions.dev import localdb, migrate

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
FUNCTIONS_SOURCE = ROOT / "functions" / "main.py"
NOOP_SOURCE = BENCH_DIR / "noop_app.py"
HOST = "127.0.0.1"

# Secrets of the throwaway servers only (development environment, loopback, deleted after the run).
BENCH_JWT_SECRET = "bench-only-jwt-secret-0123456789-0123456789-0123456789"  # noqa: S105
BENCH_SERVICE_SECRET = "bench-only-service-secret-0123456789-0123456789-012345"  # noqa: S105
BENCH_MODEL = "bench-model"
BENCH_PLAN = "bench"
SERVICE_CLAIMS = json.dumps({"role": "service_role"})


# -- results -------------------------------------------------------------------------------------------

@dataclass
class Result:
    """One row of the table: a measurement, its floor from the same run, and the target on their ratio."""

    name: str
    measured: float
    unit: str
    floor: float | None = None
    floor_unit: str = ""
    ratio: float | None = None
    ratio_suffix: str = ""
    ratio_text: str | None = None
    target: str = "-"
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, benchmark: str, error: BaseException) -> Result:
        return cls(f"{benchmark}: FAILED", math.nan, "", details={"error": f"{type(error).__name__}: {error}"})

    def row(self) -> list[str]:
        if math.isnan(self.measured):
            return [self.name, self.details.get("error", "error")[:80], "-", "-", self.target, "**no**"]
        floor = "-" if self.floor is None else fmt(self.floor, self.floor_unit or self.unit)
        ratio = "-" if self.ratio is None else f"{fmt_number(self.ratio)}{self.ratio_suffix}"
        if self.ratio_text is not None:
            ratio = self.ratio_text
        met = "-" if self.met is None else ("yes" if self.met else "**no**")
        return [self.name, fmt(self.measured, self.unit), floor, ratio, self.target, met]

    def as_json(self) -> dict[str, Any]:
        measured = None if math.isnan(self.measured) else self.measured
        return {"benchmark": self.name, "measured": measured, "unit": self.unit, "floor": self.floor,
                "floor_unit": self.floor_unit or self.unit, "ratio": self.ratio, "target": self.target,
                "met": self.met, "details": self.details}


def fmt_number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt(value: float, unit: str) -> str:
    return f"{fmt_number(value)} {unit}".strip()


def markdown_table(results: Sequence[Result]) -> str:
    header = ["benchmark", "measured", "floor", "ratio", "target", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r.row()) + " |" for r in results]
    return "\n".join(lines)


# -- statistics ----------------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def log(message: str) -> None:
    print(f"  . {message}", file=sys.stderr, flush=True)


# -- the database --------------------------------------------------------------------------------------

def _with_database(url: str, database: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@dataclass
class BenchDatabase:
    """A migrated database on a throwaway embedded Postgres, with a bench plan and a bench model."""

    url: str
    server: Any
    workdir: Path

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection in autocommit mode (setup, bulk loads, checks)."""
        return psycopg.connect(self.url, autocommit=True, **kwargs)

    def postmaster(self) -> psutil.Process:
        return psutil.Process(int(self.server.get_pid()))

    def create_users(self, count: int, *, prefix: str, balance_usd: float | None = None,
                     plan: str = BENCH_PLAN) -> list[uuid.UUID]:
        """`count` auth users (the triggers make profiles and billing accounts) on `plan`, optionally
        topped up to a large balance through `public.top_up` as the service role."""
        with self.connect() as conn:
            rows = conn.execute(
                "insert into auth.users (id, email) select gen_random_uuid(), %s || g || '@bench.test'"
                " from generate_series(1, %s) g returning id", (f"{prefix}-", count)).fetchall()
            ids = [row[0] for row in rows]
            conn.execute("update public.profiles set plan_id = %s where id = any(%s)", (plan, ids))
            if balance_usd is not None:
                with service_role(conn):
                    for uid in ids:
                        conn.execute("select public.top_up(%s, %s, %s, 'grant')",
                                     (uid, Decimal(str(balance_usd)), f"bench-{uid}"))
        return ids


@contextlib.contextmanager
def bench_database(label: str) -> Iterator[BenchDatabase]:
    """Start an embedded Postgres in a temporary directory, create and migrate a database, register the
    bench plan and model; stop the server and delete everything afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        server = localdb.start(workdir / "pgdata", cleanup="delete")
        try:
            admin = localdb.url_of(server)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier("bench")))
            url = _with_database(admin, "bench")
            migrate.prepare(url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "insert into public.model_prices (model, provider, input_usd_per_mtok, output_usd_per_mtok,"
                    " max_output_tokens) values (%s, 'openai', 0.1, 0.2, 4096)", (BENCH_MODEL,))
                conn.execute(
                    "insert into public.plans (id, name, monthly_quota_usd, requests_per_minute, signup_grant_usd)"
                    " values (%s, 'Bench', 1e6, 1000000, 0)", (BENCH_PLAN,))
            log(f"{label}: Postgres started and migrated in {time.perf_counter() - started:.1f} s")
            yield BenchDatabase(url, server, workdir)
        finally:
            server.cleanup()


@contextlib.contextmanager
def service_role(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """One transaction as PostgREST (and functions/db/postgres.py) runs an RPC for the service role."""
    with conn.transaction():
        conn.execute("select set_config('role', 'service_role', true), set_config('request.jwt.claims', %s, true)",
                     (SERVICE_CLAIMS,))
        yield conn


# -- processes -----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


_INHERITED_BLOCKLIST = ("DATABASE_URL", "DB_", "SUPABASE_", "JWT_", "MODEL_", "OPENAI_", "ANTHROPIC_", "CORS_",
                        "SERVICE_SECRET", "FUNCTION_", "PORT", "HOST", "WORKERS", "THREADS", "ENVIRONMENT",
                        "MAX_BODY_BYTES", "GUNICORN_", "LOG_LEVEL", "HISTORY_", "DEFAULT_MAX_TOKENS", "K_")


def function_env(database_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a function server: this process's, minus anything that configures the functions,
    plus the bench database and secrets (functions-framework's own defaults for workers and threads)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_BLOCKLIST)}
    # The repository root on the path, so `functions` imports whether or not the project is pip-installed.
    path = [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    env |= {"ENVIRONMENT": "development", "SUPABASE_JWT_SECRET": BENCH_JWT_SECRET,
            "SERVICE_SECRET": BENCH_SERVICE_SECRET, "PYTHONPATH": os.pathsep.join(path)}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env | extra


def functions_framework_command() -> list[str]:
    script = Path(sys.executable).with_name("functions-framework")
    return [str(script)] if script.exists() else [sys.executable, "-m", "functions_framework"]


def process_tree_cpu(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its live children."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process we started (gunicorn's master stops its worker), then SIGKILL it and its
    children by pid if it does not exit in time."""
    if proc.poll() is not None:
        return
    children: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        children = psutil.Process(proc.pid).children(recursive=True)
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Subprocess:
    """A server process on a loopback port, its output in a log file, stopped on exit."""

    def __init__(self, name: str, command: list[str], *, port: int, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.env = dict(env)
        self.log_path = log_dir / f"{name}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start the process; return the perf_counter reading taken just before the fork."""
        log_file = self.log_path.open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log_file,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log_file.close()
        return started

    def wait_answering(self, timeout: float = 60.0, poll: float = 0.005) -> tuple[int, bytes]:
        """Poll GET / until the server answers with any HTTP status; return that first answer."""
        assert self.proc is not None
        deadline = time.perf_counter() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return http_get(self.port, "/", timeout=max(timeout, 1.0))
            except (ConnectionError, http.client.HTTPException, OSError):
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{self.name} did not answer in {timeout} s:\n{self.log_tail()}") from None
                time.sleep(poll)

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        try:
            return process_tree_cpu(psutil.Process(self.proc.pid))
        except psutil.Error:
            return 0.0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def __enter__(self) -> Subprocess:
        self.start()
        try:
            self.wait_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def function_server(target: str, source: Path, env: Mapping[str, str], log_dir: Path) -> Subprocess:
    """`functions-framework --target <target> --source <source>` on 127.0.0.1 (gunicorn, one worker,
    functions-framework's default threads: 4 per CPU)."""
    port = free_port()
    command = [*functions_framework_command(), "--target", target, "--source", str(source),
               "--host", HOST, "--port", str(port)]
    return Subprocess(f"ff-{target}", command, port=port, env=env, log_dir=log_dir)


def model_server(log_dir: Path) -> Subprocess:
    """The zero-latency OpenAI-compatible model server (bench/modelserver.py) in its own process."""
    port = free_port()
    command = [sys.executable, "-m", "bench.modelserver", "--host", HOST, "--port", str(port)]
    return Subprocess("model", command, port=port, env=os.environ, log_dir=log_dir)


def user_token(user_id: uuid.UUID) -> str:
    return mint_dev_token(user_id, secret=BENCH_JWT_SECRET)


def gunicorn_threads() -> int:
    """What functions-framework gives gunicorn when THREADS is not set."""
    return (os.cpu_count() or 1) * 4


# -- HTTP load -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


RequestFactory = Callable[[int, int], HttpRequest]  # (client index, request number) -> request


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    first_error: str | None = None

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    @classmethod
    def merge(cls, parts: Sequence[LoadResult]) -> LoadResult:
        """Rounds of the same load as one: counts and times added, latencies pooled."""
        return cls(sum(p.requests for p in parts), sum(p.errors for p in parts), sum(p.seconds for p in parts),
                   [ms for p in parts for ms in p.latencies_ms],
                   next((p.first_error for p in parts if p.first_error), None))

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "seconds": round(self.seconds, 3),
                "rps": round(self.rps, 1), "p50_ms": round(self.p(50), 3), "p90_ms": round(self.p(90), 3),
                "p99_ms": round(self.p(99), 3), "first_error": self.first_error}


def drive(port: int, factory: RequestFactory, *, total: int, concurrency: int, expect_status: int = 200,
          timeout: float = 60.0) -> LoadResult:
    """Send exactly `total` requests from `concurrency` threads, each with its own keep-alive connection
    (stdlib http.client, the transport under urllib, without urllib's per-request overhead)."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    barrier = threading.Barrier(concurrency + 1)

    def client(index: int) -> None:
        nonlocal errors, first_error
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        mine: list[float] = []
        barrier.wait()
        while (n := next(counter)) < total:
            request = factory(index, n)
            started = time.perf_counter()
            try:
                conn.request(request.method, request.path, body=request.body, headers=dict(request.headers))
                response = conn.getresponse()
                body = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
                status, body = -1, repr(exc).encode()
            elapsed = (time.perf_counter() - started) * 1000
            if status == expect_status:
                mine.append(elapsed)
            else:
                with lock:
                    errors += 1
                    first_error = first_error or f"HTTP {status}: {body[:500]!r}"
        conn.close()
        with lock:
            latencies.extend(mine)

    seconds = run_released([threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)],
                           barrier)
    if not latencies:
        raise RuntimeError(f"every request failed; first error: {first_error}")
    return LoadResult(total, errors, seconds, latencies, first_error)


def run_released(threads: list[threading.Thread], barrier: threading.Barrier) -> float:
    """Start `threads`, release them together through `barrier` (whose last party is the caller), and return
    the seconds from the release until every thread has finished."""
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


class CpuMeter:
    """CPU seconds spent by named processes (and their children) inside start()/stop() windows, added up
    over every window."""

    CLIENT = "client (this process)"

    def __init__(self, processes: Mapping[str, Callable[[], float]]) -> None:
        self.processes = dict(processes)
        self._start: dict[str, float] = {}
        self._wall = 0.0
        self.used: dict[str, float] = {name: 0.0 for name in [*self.processes, self.CLIENT, "wall"]}

    def _read(self) -> dict[str, float]:
        now = {name: read() for name, read in self.processes.items()}
        now[self.CLIENT] = time.process_time()
        return now

    def start(self) -> None:
        self._start = self._read()
        self._wall = time.perf_counter()

    def stop(self) -> None:
        for name, value in self._read().items():
            self.used[name] += max(value - self._start[name], 0.0)
        self.used["wall"] += time.perf_counter() - self._wall

    def per_request_ms(self, requests: int) -> dict[str, float]:
        return {name: round(seconds * 1000 / requests, 3) for name, seconds in self.used.items()}
