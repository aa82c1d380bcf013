"""The embedded Postgres: its start is safe when processes race on a fresh machine, and the local server
takes it down with it."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.dev.migrate import ROOT

RACERS = 8
ROUNDS = 10
STAGGER = 0.01  # seconds between racers; a useradd takes 20-80 ms here

# One process per round forks the racers (separate processes, each with its own lock descriptor, as
# xdist workers are); each waits for the common start plus its own small delay, then runs the code path
# every start takes for the system user. Prints each failure and exits 1 if any racer failed.
_RACERS = """
import os, sys, time
from pathlib import Path
from functions.dev import localdb
lock, racers, stagger, names = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
failed = False
for name in names:
    start = time.monotonic() + 0.05
    children = []
    for i in range(racers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                time.sleep(max(start - time.monotonic(), 0) + i * stagger)
                localdb.ensure_system_user(name, lock_path=lock)
            except Exception as exc:
                print(name, i, repr(exc), getattr(exc, "stderr", ""), file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        children.append(pid)
    failed |= any(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children)
sys.exit(1 if failed else 0)
"""


@pytest.fixture
def throwaway_users() -> Iterator[list[str]]:
    """System user names that do not exist yet; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating system users needs root (pgserver only creates its user when run as root)")
    names = [f"asbtest{secrets.token_hex(6)}" for _ in range(ROUNDS)]
    for name in names:
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
    yield names
    for name in names:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)


def test_processes_racing_to_create_the_system_user_all_succeed(throwaway_users: list[str], tmp_path: Path) -> None:
    """What two xdist workers on a fresh machine do. Without the lock, some useradd calls fail with exit 9
    ("already exists") in roughly one round in three on this machine, so ten rounds catch it almost
    always; with it, every racer succeeds in every round."""
    # Staggered by a few ms: a racer whose own check misses the user while another's useradd is
    # committing it is the one that fails without the lock.
    done = subprocess.run([sys.executable, "-c", _RACERS, str(tmp_path / "lock"), str(RACERS), str(STAGGER),
                           *throwaway_users], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert [pwd.getpwnam(name).pw_name for name in throwaway_users] == throwaway_users


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """Running: exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _gone_within(pid: int, seconds: float) -> bool:
    """The postmaster removes its pid file (which ends `pg_ctl -w stop`) just before it exits."""
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_local_server_stops_its_postgres(tmp_path: Path, sig: signal.Signals) -> None:
    data = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "SUPABASE_", "MODEL_", "PYTEST_", "CORS_", "JWT_", "SERVICE_"))}
    env |= {"ENVIRONMENT": "development", "LOCAL_PGDATA": str(data), "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    # Started with SIGINT ignored, as a background job of a non-interactive shell (CI) is: the server must
    # still stop on it.
    server = subprocess.Popen([sys.executable, "-m", "functions.dev.serve", "--port", str(port), "--demo-port", "0"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    postmaster = 0
    try:
        assert server.stdout is not None
        lines = []
        for line in server.stdout:
            lines.append(line)
            if "psql" in line:
                break
        assert any("psql" in line for line in lines), "".join(lines)
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        assert _alive(postmaster)
        server.send_signal(sig)
        assert server.wait(timeout=60) == 0, server.stdout.read()
        assert _gone_within(postmaster, 10)
        assert not (data / "postmaster.pid").exists()
        assert json.loads((data / ".handle_pids.json").read_text()) == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if postmaster and _alive(postmaster):  # a failed run must not leave its cluster running
            os.kill(postmaster, signal.SIGINT)
        if server.stdout is not None:
            server.stdout.close()
