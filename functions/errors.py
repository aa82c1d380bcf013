"""One exception class per HTTP status, and the JSON error envelope every failure answers with.

`{"error": {"code": "...", "message": "...", "request_id": "...", "details": ...}}`
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """Base: an answer other than success. `code` is machine-readable, `message` is for people."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str | None = None, *, code: str | None = None, details: Any = None) -> None:
        self.code = code or self.default_code
        self.message = message or self.code.replace("_", " ")
        self.details = details
        super().__init__(self.message)

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "request_id": request_id}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadRequest(ApiError):
    status = 400
    default_code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    default_code = "unauthorized"


class PaymentRequired(ApiError):
    status = 402
    default_code = "payment_required"


class Forbidden(ApiError):
    status = 403
    default_code = "forbidden"


class NotFound(ApiError):
    status = 404
    default_code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    default_code = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    default_code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    default_code = "unsupported_media_type"


class Unprocessable(ApiError):
    status = 422
    default_code = "validation_error"


class TooManyRequests(ApiError):
    status = 429
    default_code = "rate_limited"


class InternalError(ApiError):
    status = 500
    default_code = "internal_error"


class BadGateway(ApiError):
    status = 502
    default_code = "model_provider_error"


class ServiceUnavailable(ApiError):
    status = 503
    default_code = "service_unavailable"


class GatewayTimeout(ApiError):
    status = 504
    default_code = "model_provider_timeout"


BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest, Unauthorized, PaymentRequired, Forbidden, NotFound, MethodNotAllowed, Conflict,
        PayloadTooLarge, UnsupportedMediaType, Unprocessable, TooManyRequests, InternalError, BadGateway,
        ServiceUnavailable, GatewayTimeout,
    )
}

# SQLSTATEs that are not PTnnn, mapped as PostgREST maps them.
_SQLSTATE_STATUS = {
    "23503": 409,  # foreign_key_violation
    "23505": 409,  # unique_violation
    "23514": 400,  # check_violation
    "23502": 400,  # not_null_violation
    "22P02": 400,  # invalid_text_representation
    "22023": 400,  # invalid_parameter_value
    "22007": 400,  # invalid_datetime_format
    "22008": 400,  # datetime_field_overflow
    "22003": 400,  # numeric_value_out_of_range
    "22001": 400,  # string_data_right_truncation
    "42501": 403,  # insufficient_privilege (PostgREST: 401 for anon, 403 otherwise)
    "42883": 404,  # undefined_function
    "P0001": 400,  # raise_exception
    "40001": 503,  # serialization_failure: retryable
    "40P01": 503,  # deadlock_detected: retryable
    "57014": 503,  # query_canceled (statement timeout)
    "53300": 503,  # too_many_connections
}


def from_sqlstate(sqlstate: str | None, message: str, details: Any = None) -> ApiError:
    """The ApiError for a database error, by SQLSTATE: `PTnnn` is HTTP nnn, others as PostgREST maps them."""
    status = 500
    if sqlstate and sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        status = int(sqlstate[2:])
    elif sqlstate in _SQLSTATE_STATUS:
        status = _SQLSTATE_STATUS[sqlstate]
    elif sqlstate and sqlstate.startswith(("22", "23")):
        status = 400  # the rest of data_exception / integrity_constraint_violation, as PostgREST (e.g. 22P05: NUL)
    cls = BY_STATUS.get(status, InternalError)
    if cls is InternalError:
        # Never echo an unexpected database message to the caller; it is logged by the handler.
        return InternalError("database error", code="database_error", details={"sqlstate": sqlstate})
    code = message if message and message.replace("_", "").isalnum() and message.islower() else cls.default_code
    return cls(message, code=code, details=details or None)
