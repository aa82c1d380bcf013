"""functions-framework targets: `functions-framework --source functions/main.py --target <name>`.

Every target is async (`functions_framework.aio`): the framework serves it on uvicorn (ASGI mode is
detected from the decorator), and an open stream costs a socket and a little memory, not a thread.
Each target imports its module on its first request, so an instance pays only for what it serves
(a deployed function is one target per instance).
"""

from __future__ import annotations

from typing import Any

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from functions import runtime

TARGETS = ("chat", "compile", "usage", "keys", "v1", "refresh_views", "health")

# Validate the configuration when the instance starts, not at its first request: with
# ENVIRONMENT=production, unsafe settings stop the process here with every problem named.
runtime.settings()


@functions_framework.aio.http
async def chat(request: Request) -> Response:
    from functions.chat import handle

    return await handle(request)


@functions_framework.aio.http
async def compile(request: Request) -> Response:
    from functions.compile import handle

    return await handle(request)


@functions_framework.aio.http
async def usage(request: Request) -> Response:
    from functions.usage import handle

    return await handle(request)


@functions_framework.aio.http
async def keys(request: Request) -> Response:
    from functions.keys import handle

    return await handle(request)


@functions_framework.aio.http
async def v1(request: Request) -> Response:
    from functions.v1 import handle

    return await handle(request)


@functions_framework.aio.http
async def refresh_views(request: Request) -> Response:
    from functions.refresh_views import handle

    return await handle(request)


@functions_framework.aio.http
async def health(request: Request) -> Response:
    from functions.health import handle

    return await handle(request)


@functions_framework.aio.cloud_event
async def refresh_views_event(cloud_event: Any) -> None:
    from functions.refresh_views import on_event

    await on_event(cloud_event)
