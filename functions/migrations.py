"""The migration files shipped with this code (`supabase/migrations/`), in the order they apply.

Read by `health` (the newest version it expects the database to have) and by the migration runner
(`functions.dev.migrate`), which applies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"

_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in the order they apply; a misnamed file is an error, not skipped."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file name must be YYYYMMDDHHMMSS_name.sql: {path.name}")
        found.append(Migration(match["version"], match["name"], path))
    return found
