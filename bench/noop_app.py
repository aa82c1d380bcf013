"""The floor of the HTTP benchmarks: a functions-framework target that does nothing.

`functions-framework --target noop --source bench/noop_app.py` serves it exactly as the real targets are
served (gunicorn, one worker, functions-framework's threads), so the difference is the handlers' work.
"""

from __future__ import annotations

import flask
import functions_framework


@functions_framework.http
def noop(request: flask.Request) -> flask.Response:
    return flask.Response('{"ok": true}', status=200, mimetype="application/json")
