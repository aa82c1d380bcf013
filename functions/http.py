"""What every function shares at the HTTP edge: request ids, CORS, the body limit, JSON parsing with
pydantic (422 naming the field), the error envelope, and one structured log line per request.

Handlers are async and get a Starlette request (functions-framework's ASGI mode); streams are
`SSEResponse`s, whose body is closed (and so billed) however the response ends."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from functions import runtime
from functions.db import Database
from functions.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from functions.settings import Settings

if TYPE_CHECKING:
    import pydantic

    from functions.auth import Principal

# pydantic is imported where a body or query is parsed, not with this module: targets whose requests carry
# neither (health, refresh_views) start without it.
M = TypeVar("M", bound="pydantic.BaseModel")
Handler = Callable[["Context"], Awaitable["Response | Mapping[str, Any]"]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,200}$")
_ALLOWED_HEADERS = ("Authorization, Content-Type, X-Request-Id, X-API-Key, X-Service-Secret, apikey, Idempotency-Key, "
                    "X-Session-Id, anthropic-version, anthropic-beta")

log = logging.getLogger("functions.request")


def _configure_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


_configure_logging()


@dataclass
class Context:
    """One request: its id, settings, the caller once authenticated, and what the log line reports."""

    request: Request
    request_id: str
    function: str
    settings: Settings
    principal: Principal | None = None
    log_fields: dict[str, Any] = field(default_factory=dict)
    body_bytes: int = 0  # the size of the JSON body read by `json_body`

    @property
    def db(self) -> Database:
        return runtime.database()

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path(self) -> str:
        """The path below the function's root (`/models`, `/<id>`; `/` for the root), mounted or not."""
        return route_path(self.request.scope)

    async def authenticate_user(self) -> Principal:
        """The caller, allowed to use this function (an API key only within its scopes); else 401/403."""
        principal = await runtime.authenticator().identify(self.request.headers, self.db)
        self.log_fields["user_id"] = str(principal.user_id)  # logged even when the scope check refuses it
        self.log_fields["auth"] = principal.method
        if principal.key_id is not None:
            self.log_fields["api_key_id"] = str(principal.key_id)
        principal.require(self.function)
        self.principal = principal
        return principal

    def authenticate_service(self) -> None:
        runtime.authenticator().service(self.request.headers)
        self.log_fields["auth"] = "service"

    async def json_body(self, model: type[M]) -> M:
        """The body parsed into `model`: 415 if not JSON, 400 if malformed, 422 naming each bad field."""
        if not _is_json(self.request.headers.get("content-type", "")):
            raise UnsupportedMediaType("Send the body as JSON, with Content-Type: application/json.",
                                       code="unsupported_media_type")
        limit = self.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.request.stream():  # bounded even for chunked bodies with no Content-Length
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
            chunks.append(chunk)
        raw = b"".join(chunks)
        self.body_bytes = size
        import pydantic

        # pydantic parses and validates in one pass (Rust); malformed JSON, invalid UTF-8, unpaired surrogate
        # escapes and absurd nesting all come back as `json_invalid`.
        try:
            return model.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            invalid = next((e for e in exc.errors(include_url=False) if e["type"] == "json_invalid"), None)
            if invalid is None:
                raise _unprocessable(exc) from None
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("The request body is not valid UTF-8.", code="invalid_utf8") from None
            raise BadRequest(f"The request body is not valid JSON: {invalid['msg'].removeprefix('Invalid JSON: ')}.",
                             code="invalid_json") from None

    def query(self, model: type[M]) -> M:
        """The query string parsed into `model` (422 naming each bad field)."""
        params: dict[str, str] = {}
        for key, value in self.request.query_params.multi_items():
            params.setdefault(key, value)  # the first of repeated parameters
        return validate(model, params, where="Query parameter")


def route_path(scope: Scope) -> str:
    """The request path below the app's mount point (Starlette keeps the full path in `path`)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def _is_json(content_type: str) -> bool:
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def validate(model: type[M], data: Any, *, where: str = "Field") -> M:
    """`data` validated into `model`; 422 naming each bad field (`where`: "Field" or "Query parameter")."""
    import pydantic

    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _unprocessable(exc, where) from None


# What a field must be, by pydantic error type; the context values (`{max_length}`...) come from pydantic.
_MUST: dict[str, str] = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this request",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must be at least {min_length} characters",
    "too_long": "must have at most {max_length} items",
    "too_short": "must have at least {min_length} items",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "literal_error": "must be {expected}",
    "enum": "must be {expected}",
    "string_pattern_mismatch": "must match the pattern {pattern}",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "decimal_parsing": "must be a number",
    "decimal_type": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "uuid_type": "must be a UUID",
    "uuid_parsing": "must be a UUID",
    "date_type": "must be a date (YYYY-MM-DD)",
    "date_parsing": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "must be a date (YYYY-MM-DD) without a time",
    "datetime_type": "must be a date and time (ISO 8601)",
    "datetime_parsing": "must be a date and time (ISO 8601)",
    "datetime_from_date_parsing": "must be a date and time (ISO 8601)",
    "timezone_aware": "must be a date and time with a time zone",
}


def _kind(err: Any) -> str:
    """The pydantic error type; a length check applied to a string after a validator counts characters, which
    pydantic reports as a list's `too_long`/`too_short`."""
    kind = str(err["type"])
    return f"string_{kind}" if kind in ("too_long", "too_short") and isinstance(err.get("input"), str) else kind


def _must(err: Any) -> str:
    """What the field must be, as the end of a sentence that starts with the field's name."""
    kind = _kind(err)
    ctx = err.get("ctx") or {}
    if kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind in ("string_too_long", "too_long") and ctx.get("max_length") == 1:
        return "must have at most one " + ("character" if kind == "string_too_long" else "item")
    template = _MUST.get(kind)
    if template is not None:
        try:
            return template.format(**ctx)
        except (KeyError, IndexError):
            pass
    text = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ").rstrip(".")
    if text.startswith(("must ", "is ")):
        return text
    for prefix in ("Input should", "String should", "List should", "Value should", "Decimal input should"):
        if text.startswith(prefix):
            return "must" + text.removeprefix(prefix)
    return f"is not valid: {text[:1].lower()}{text[1:]}" if text else "is not valid"


def _unprocessable(exc: pydantic.ValidationError, where: str = "Field") -> Unprocessable:
    """A 422 whose message says, in a sentence, what each bad field must be; `details.fields` lists them."""
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": _must(err), "type": _kind(err)}
        for err in exc.errors(include_url=False)  # the input is read (str or not), never sent back
    ]
    parts = [f"the request body {p['message']}" if p["field"] == "body" else f"'{p['field']}' {p['message']}"
             for p in problems]
    if len(parts) == 1:
        message = parts[0] if problems[0]["field"] == "body" else f"{where} {parts[0]}"
    else:
        message = f"{len(parts)} problems: " + "; ".join(parts)
    return Unprocessable(message, code="validation_error", details={"fields": problems})


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=str, ensure_ascii=False), status_code=status,
                    media_type="application/json")


class SSEResponse(StreamingResponse):
    """Server-Sent Events. However the response ends (finished, the client gone and the task cancelled,
    a failed send), the body's async generator is closed here, shielded, so its cleanup (the partial
    settle of a stream) always runs; Starlette alone would leave a generator suspended at a yield."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._body = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()  # type: ignore[attr-defined]


def _request_id(request: Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.match(given) else str(uuid.uuid4())


def _cors_origin(settings: Settings, origin: str | None) -> str | None:
    """The value for Access-Control-Allow-Origin, or None when the origin is not allowed."""
    if not origin:
        return None
    allowed = settings.cors_allowed_origins
    if origin in allowed or "*" in allowed:
        return origin
    if not allowed and settings.environment != "production":
        return origin  # development with no list: any origin, so a local page works
    return None


def _route(routes: Mapping[str, tuple[str, ...]], path: str) -> tuple[str, ...]:
    """The methods `path` answers: an exact route, else a `/*` route for one path segment; none: 404."""
    path = path.rstrip("/")
    if path in routes:
        return routes[path]
    parent, _, segment = path.rpartition("/")
    return routes.get(f"{parent}/*", ()) if segment else ()


def endpoint(function: str, methods: Iterable[str], subpaths: Mapping[str, Iterable[str]] | None = None,
             render_error: Callable[[Context, ApiError], Response] | None = None,
             ) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler with everything in this module's docstring. The function answers `methods` at its
    root and each of `subpaths` (e.g. `{"/models": ["GET"]}`, or `{"/*": ["DELETE"]}` for any one path
    segment such as an id) with its own methods; other paths are 404. `render_error` answers errors in
    another body than this API's envelope (the compatible API speaks its protocols' own)."""
    routes = {"": tuple(m.upper() for m in methods)} | {
        path.rstrip("/"): tuple(m.upper() for m in ms) for path, ms in (subpaths or {}).items()}

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            started = time.perf_counter()
            request_id = _request_id(request)
            settings = runtime.settings()
            path = route_path(request.scope)
            allowed_methods = _route(routes, path)
            ctx = Context(request, request_id, function, settings)
            origin = request.headers.get("Origin")
            allow_origin = _cors_origin(settings, origin)
            error: ApiError | None = None
            try:
                if request.method == "OPTIONS":
                    if origin and allow_origin is None:
                        raise Forbidden(f"The origin {origin} may not call this function (CORS).",
                                        code="cors_origin_not_allowed")
                    response = Response(status_code=204)
                    response.headers["Access-Control-Allow-Methods"] = ", ".join((*allowed_methods, "OPTIONS"))
                    response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
                    response.headers["Access-Control-Max-Age"] = "600"
                else:
                    if not allowed_methods:
                        raise NotFound(f"The {function} function has no path {path}.", code="not_found")
                    if request.method not in allowed_methods:
                        raise MethodNotAllowed(f"This path answers {' or '.join(allowed_methods)} only.")
                    length = request.headers.get("content-length", "")
                    if length.isdigit() and int(length) > settings.max_body_bytes:
                        raise PayloadTooLarge(f"The request body is over the limit of {settings.max_body_bytes} bytes.")
                    result = await handler(ctx)
                    response = result if isinstance(result, Response) else json_response(result)
            except ApiError as exc:
                error = exc
            except Exception:
                log.exception(json.dumps({"function": function, "request_id": ctx.request_id, "event": "unhandled"}))
                error = InternalError("Something went wrong on our side; the request id identifies it in the logs.")
            request_id = ctx.request_id  # a handler may adopt the body's idempotency key as the request id
            if error is not None:
                response = (render_error(ctx, error) if render_error is not None
                            else json_response(error.body(request_id), error.status))
                if isinstance(error, MethodNotAllowed):
                    response.headers["Allow"] = ", ".join((*allowed_methods, "OPTIONS"))
                ctx.log_fields["error_code"] = error.code
            response.headers["X-Request-Id"] = request_id
            if allow_origin:
                response.headers["Access-Control-Allow-Origin"] = allow_origin
                response.headers["Access-Control-Expose-Headers"] = "X-Request-Id"
                response.headers.append("Vary", "Origin")
            _log_line(ctx, request.method, response.status_code, started,
                      streamed=isinstance(response, StreamingResponse))
            return response

        serve.__name__ = function
        serve.__doc__ = handler.__doc__
        return serve

    return wrap


def _log_line(ctx: Context, method: str, status: int, started: float, *, streamed: bool) -> None:
    line = {"function": ctx.function, "request_id": ctx.request_id, "method": method, "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2), **ctx.log_fields}
    if streamed:
        line["streamed"] = True
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    log.log(level, json.dumps(line, default=str))
