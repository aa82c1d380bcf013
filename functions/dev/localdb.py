"""The embedded Postgres the project starts itself when no DATABASE_URL is given.

Uses the `pgserver` wheel (PostgreSQL 16), kept under a git-ignored folder (`.local/pgdata`, or
`LOCAL_PGDATA`) and reused between runs. Imported only by the local run command, the tests and the
benchmarks.

The cluster is laid out like a Supabase database: `initdb -U supabase_admin` makes the bootstrap
superuser `supabase_admin`, so the `postgres` role the stand-in creates can be the non-superuser that
`supabase db push` runs migrations as (a bootstrap superuser can never be demoted).

Run as root, pgserver switches to a system user of its own (`pgserver`) that it creates with `useradd`
on first use; two processes doing that at once race (useradd exit 9, or initdb failing on permissions).
Every start here therefore runs under one machine-wide file lock, and the system user is created under
that lock before pgserver is called.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from functions.dev.migrate import MIGRATOR_ROLE, ROOT

DEFAULT_DATA_DIR = ROOT / ".local" / "pgdata"
LOCK_FILE = Path("/tmp/assistant-backend-pgserver.lock")  # noqa: S108 - machine-wide on purpose
SYSTEM_USER = "pgserver"  # the name pgserver itself uses when run as root
ADMIN_ROLE = "supabase_admin"  # the bootstrap superuser, as on Supabase
_LAYOUT_MARKER = ".assistant_layout"  # written after our initdb; absent in clusters made by pgserver itself

_started: list[Any] = []


@contextmanager
def machine_lock(path: Path = LOCK_FILE) -> Iterator[None]:
    """Hold an exclusive flock on `path` (shared by every process on the machine) for the block."""
    try:  # no O_CREAT on an existing file: /tmp's protected_regular refuses it for another user's file
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _create_user_unlocked(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    subprocess.run(["useradd", "-s", "/bin/bash", name], check=True, capture_output=True, text=True)  # noqa: S603, S607
    return pwd.getpwnam(name)


def ensure_system_user(name: str = SYSTEM_USER, *, lock_path: Path = LOCK_FILE) -> pwd.struct_passwd:
    """The system user `name`, created with `useradd` (root only) under the machine-wide lock if missing."""
    with machine_lock(lock_path):
        return _create_user_unlocked(name)


def data_dir_default() -> Path:
    """`LOCAL_PGDATA` if set, else `.local/pgdata` in the repository."""
    return Path(os.environ.get("LOCAL_PGDATA") or DEFAULT_DATA_DIR)


def start(data_dir: Path | None = None, *, cleanup: str | None = "stop") -> Any:
    """Start (or reuse) the cluster in `data_dir` and return the pgserver handle."""
    if "XDG_RUNTIME_DIR" not in os.environ:  # pgserver keeps its lock file there; must be private (0700)
        runtime = ROOT / ".local" / "run"
        runtime.mkdir(parents=True, exist_ok=True)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        import pgserver  # heavy and local-only: imported on use
    except ImportError as exc:
        raise RuntimeError("the embedded Postgres needs the `local` extra: pip install -e '.[local]'") from exc

    target = Path(data_dir or data_dir_default()).expanduser().resolve()
    target.mkdir(parents=True, exist_ok=True)
    with machine_lock():
        system_user = _create_user_unlocked(SYSTEM_USER).pw_name if os.geteuid() == 0 else None
        if not (target / "PG_VERSION").exists():
            _initdb(target, system_user)
        elif not (target / _LAYOUT_MARKER).exists():
            raise RuntimeError(
                f"{target} was made by an older version (bootstrap superuser `postgres`); the stand-in now needs"
                f" `supabase_admin`. Reset it: stop the server, then rm -rf {target}")
        _forget_dead_handles(target)
        server = pgserver.get_server(target, cleanup_mode=cleanup)  # type: ignore[attr-defined]
    _started.append(server)
    return server


def _initdb(target: Path, system_user: str | None) -> None:
    """initdb with `supabase_admin` as the bootstrap superuser (pgserver then finds PG_VERSION and skips its own)."""
    from pgserver._commands import POSTGRES_BIN_PATH

    if system_user is not None:
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

        entry = pwd.getpwnam(system_user)
        ensure_prefix_permissions(target)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)  # g+rx, o+rx
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)  # g+r, o+r
        os.chown(target, entry.pw_uid, entry.pw_gid)
    subprocess.run(  # noqa: S603
        [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(target), "-U", ADMIN_ROLE, "--auth=trust",
         "--auth-local=trust", "--encoding=utf8"],
        check=True, capture_output=True, text=True, user=system_user,
    )
    (target / _LAYOUT_MARKER).write_text(f"bootstrap superuser: {ADMIN_ROLE}\n")


def _forget_dead_handles(target: Path) -> None:
    """Drop pids of processes that are gone from pgserver's handle list (a killed server left them), so
    the last live handle stops the cluster again."""
    handles = target / ".handle_pids.json"
    if not handles.exists():
        return
    pids = json.loads(handles.read_text() or "[]")
    handles.write_text(json.dumps([p for p in pids if _alive(p)]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_started() -> None:
    """Release every cluster this process started (pgserver stops it when no other process holds it)."""
    while _started:
        _started.pop().cleanup()


def url_of(server: Any, database: str = "postgres", user: str = ADMIN_ROLE) -> str:
    """A libpq URL for `database` as `user` on the embedded server (a unix socket only, trust auth)."""
    return str(server.get_postmaster_info().get_uri(user=user, database=database))


def psql_command(server: Any, database: str = "postgres", user: str = MIGRATOR_ROLE) -> str:
    """The shell command that opens psql (bundled with pgserver) on the embedded server."""
    from pgserver._commands import POSTGRES_BIN_PATH

    return f"{POSTGRES_BIN_PATH / 'psql'} '{url_of(server, database, user)}'"
