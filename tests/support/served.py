"""Every function served over real HTTP as deployed: `functions.dev.serve.build_app()` on uvicorn in a thread,
on a free loopback port. The caller installs the database it wants (`runtime.install`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def served_functions() -> Iterator[str]:
    """The functions' base URL (each target under /<target>) while the block runs; the server stops after."""
    from functions.dev.serve import build_app, serve_in_thread

    server, thread, port = serve_in_thread(build_app())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
