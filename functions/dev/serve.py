"""Serve every function on one local port for the frontend: `python -m functions.dev.serve`.

Starts the embedded Postgres (or uses DATABASE_URL), applies sql/, the migrations and the seed, mounts
each functions-framework target's ASGI app under /<target> (one Starlette app on uvicorn, as a deployed
target runs), and prints the URLs, a development token for the seeded
demo user, the service secret and the psql command for the embedded database (which Ctrl+C or SIGTERM
stops together with the server). The demo page is served from a second port, so the browser calls the
functions cross-origin exactly as a deployed frontend does (CORS included). Development only: refuses
ENVIRONMENT=production.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

DEMO_USER_ID = "00000000-0000-4000-8000-00000000d3e0"
SOURCE = Path(__file__).resolve().parent.parent / "main.py"
DEMO_DIR = Path(__file__).with_name("demo")


def build_demo_app(functions_url: str, demo_token: str | None) -> Any:
    """The demo page (static files) plus /config.js telling it where the functions are."""
    import json

    from werkzeug.middleware.shared_data import SharedDataMiddleware

    config = f"window.DEMO_CONFIG = {json.dumps({'functionsUrl': functions_url, 'demoToken': demo_token})};\n"

    def config_or_404(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/config.js":
            start_response("200 OK", [("Content-Type", "text/javascript"), ("Cache-Control", "no-store")])
            return [config.encode()]
        if environ.get("PATH_INFO") in ("", "/"):
            start_response("302 Found", [("Location", "/index.html")])
            return [b""]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    return SharedDataMiddleware(config_or_404, {"/": str(DEMO_DIR)}, cache=False)


def build_app() -> Any:
    """One ASGI app with each target's functions-framework app mounted under /<target>; closes this loop's
    pools and clients when it shuts down."""
    from functions_framework.aio import create_asgi_app
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Mount, Route

    from functions import runtime
    from functions.main import TARGETS

    mounts = [Mount(f"/{t}", app=create_asgi_app(t, str(SOURCE))) for t in TARGETS]  # type: ignore[no-untyped-call]
    os.environ.pop("FUNCTION_TARGET", None)  # in case the framework wrote it; it names one target, not all

    async def index(request: Request) -> Response:
        return PlainTextResponse("functions: " + ", ".join(f"/{t}" for t in TARGETS) + "\n")

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": {"code": "not_found", "message": "No function is served at this path."}},
                            status_code=404)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await runtime.aclose()

    app = Starlette(routes=[Route("/", index), *mounts], exception_handlers={404: not_found}, lifespan=lifespan)
    targets = {f"/{t}" for t in TARGETS}

    async def root_for_bare_target(scope: Any, receive: Any, send: Any) -> None:
        """A request to /chat reaches the chat app at its root (a Mount alone would redirect to /chat/)."""
        if scope["type"] == "http" and scope["path"] in targets:
            scope = dict(scope, path=scope["path"] + "/", raw_path=scope["path"].encode() + b"/")
        await app(scope, receive, send)

    return root_for_bare_target


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, threading.Thread, int]:
    """Serve an ASGI app with uvicorn in a daemon thread (tests, the demo page); (server, thread, port).
    Stop it with `server.should_exit = True` and join the thread."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.01)
    return server, thread, int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--demo-port", type=int, default=int(os.environ.get("DEMO_PORT", "8081")),
                        help="port of the demo page (0: do not serve it)")
    parser.add_argument("--data-dir", help="embedded Postgres data folder (default: LOCAL_PGDATA or .local/pgdata)")
    args = parser.parse_args(argv)
    if args.data_dir:
        os.environ["LOCAL_PGDATA"] = args.data_dir
    demo_origin = f"http://{args.host}:{args.demo_port}"
    if args.demo_port and "CORS_ALLOWED_ORIGINS" not in os.environ:
        os.environ["CORS_ALLOWED_ORIGINS"] = demo_origin

    from functions import runtime

    if runtime.settings().environment == "production":
        raise SystemExit("functions.dev.serve is for development; deploy each target with functions-framework")
    # SIGTERM ends the server the way Ctrl+C does, so the embedded Postgres is stopped with it (by default
    # SIGTERM kills the process without running any cleanup, and the cluster outlives it). SIGINT is set
    # too: a process started in the background by a non-interactive shell inherits SIGINT *ignored*.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        _serve(args, demo_origin)
    except KeyboardInterrupt:
        pass
    finally:
        from functions.dev import localdb

        runtime.reset()  # close the pool before the cluster stops
        localdb.stop_started()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace, demo_origin: str) -> None:
    from functions import runtime
    from functions.auth import mint_dev_token

    settings = runtime.settings()
    runtime.database()  # start the embedded Postgres and migrate before the first request
    app = build_app()
    base = f"http://{args.host}:{args.port}"
    token = mint_dev_token(DEMO_USER_ID, email="demo@example.com")
    from functions.main import TARGETS

    print("Functions (offline development model unless MODEL_PROVIDER is set):", flush=True)
    for target in TARGETS:
        print(f"  {base}/{target}", flush=True)
    print(f"OpenAI SDK base_url: {base}/v1; Anthropic SDK base_url: {base} (an API key or the token below)",
          flush=True)
    print(f"\nDemo user {DEMO_USER_ID} token (24 h):\n  export TOKEN={token}", flush=True)
    secret = runtime.authenticator().service_secret
    print(f"Service secret for refresh_views and usage ingest:\n  export SERVICE_SECRET={secret}", flush=True)
    if settings.transport == "local":
        from functions.dev import localdb

        server = localdb.start()  # the handle runtime.database() started
        print(f"\nEmbedded Postgres ({server.pgdata}; stopped with this server):\n  {localdb.psql_command(server)}",
              flush=True)
    import uvicorn
    from werkzeug.serving import make_server

    if args.demo_port:
        demo = make_server(args.host, args.demo_port, build_demo_app(base, token), threaded=True)
        threading.Thread(target=demo.serve_forever, daemon=True).start()
        print(f"\nDemo page: {demo_origin}/index.html", flush=True)
    # uvicorn handles SIGINT/SIGTERM itself (graceful shutdown, the lifespan closes the pools), then raises the
    # signal again, which ends in KeyboardInterrupt in `main` and stops the embedded Postgres.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5,
                lifespan="on")


if __name__ == "__main__":
    main()
