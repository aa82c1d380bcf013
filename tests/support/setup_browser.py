"""Make sure Debian's Chromium is there for the browser tests: `python -m tests.support.setup_browser`.

Playwright drives the system Chromium (its own browser download is not reachable from CI). As root
with apt available it installs the `chromium` package; otherwise it says what to do and exits 0, and
the browser tests report themselves as skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CHROMIUM = "/usr/bin/chromium"


def main() -> int:
    if os.path.exists(CHROMIUM):
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("browser tests need Debian's chromium: sudo apt-get install -y chromium", file=sys.stderr)
        return 0
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], check=True, env=env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
