"""functions-framework targets: `functions-framework --source functions/main.py --target <name>`."""

from __future__ import annotations

from typing import Any

import flask
import functions_framework

from functions import chat as _chat
from functions import compile as _compile
from functions import health as _health
from functions import refresh_views as _refresh_views
from functions import runtime
from functions import usage as _usage

TARGETS = ("chat", "compile", "usage", "refresh_views", "health")

# Validate the configuration when the instance starts, not at its first request: with
# ENVIRONMENT=production, unsafe settings stop the process here with every problem named.
runtime.settings()


@functions_framework.http
def chat(request: flask.Request) -> flask.Response:
    return _chat.handle(request)


@functions_framework.http
def compile(request: flask.Request) -> flask.Response:
    return _compile.handle(request)


@functions_framework.http
def usage(request: flask.Request) -> flask.Response:
    return _usage.handle(request)


@functions_framework.http
def refresh_views(request: flask.Request) -> flask.Response:
    return _refresh_views.handle(request)


@functions_framework.http
def health(request: flask.Request) -> flask.Response:
    return _health.handle(request)


@functions_framework.cloud_event
def refresh_views_event(cloud_event: Any) -> None:
    _refresh_views.on_event(cloud_event)
