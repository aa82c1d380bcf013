"""The embedded Postgres the project starts itself when no DATABASE_URL is given.

Uses the `pgserver` wheel (PostgreSQL 16, runs as root by switching to its own user), kept under a
git-ignored folder and reused between runs. Imported only by the local run command and the tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from functions.migrate import ROOT

DEFAULT_DATA_DIR = ROOT / ".local" / "pgdata"


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

    target = Path(data_dir or DEFAULT_DATA_DIR)
    target.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(target, cleanup_mode=cleanup)  # type: ignore[attr-defined]


def url_of(server: Any, database: str = "postgres") -> str:
    """A libpq URL for `database` on the embedded server (it listens on a unix socket only)."""
    return str(server.get_uri(database))
