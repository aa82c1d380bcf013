"""functions-framework targets: `functions-framework --source functions/main.py --target <name>`.

Each target imports its module on its first request, so an instance pays only for what it serves
(a deployed function is one target per instance).
"""

from __future__ import annotations

from typing import Any

import flask
import functions_framework

from functions import runtime

TARGETS = ("chat", "compile", "usage", "keys", "refresh_views", "health")

# Validate the configuration when the instance starts, not at its first request: with
# ENVIRONMENT=production, unsafe settings stop the process here with every problem named.
runtime.settings()


@functions_framework.http
def chat(request: flask.Request) -> flask.Response:
    from functions.chat import handle

    return handle(request)


@functions_framework.http
def compile(request: flask.Request) -> flask.Response:
    from functions.compile import handle

    return handle(request)


@functions_framework.http
def usage(request: flask.Request) -> flask.Response:
    from functions.usage import handle

    return handle(request)


@functions_framework.http
def keys(request: flask.Request) -> flask.Response:
    from functions.keys import handle

    return handle(request)


@functions_framework.http
def refresh_views(request: flask.Request) -> flask.Response:
    from functions.refresh_views import handle

    return handle(request)


@functions_framework.http
def health(request: flask.Request) -> flask.Response:
    from functions.health import handle

    return handle(request)


@functions_framework.cloud_event
def refresh_views_event(cloud_event: Any) -> None:
    from functions.refresh_views import on_event

    on_event(cloud_event)
