"""The floor of the HTTP benchmarks: an async functions-framework target that does nothing.

`functions-framework --target noop --source bench/noop_app.py` serves it exactly as the real targets are
served (ASGI mode: gunicorn with one uvicorn worker), so the difference is the handlers' work.
"""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response


@functions_framework.aio.http
async def noop(request: Request) -> Response:
    return Response('{"ok": true}', status_code=200, media_type="application/json")
