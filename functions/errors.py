"""One exception class per HTTP status, the JSON error envelope every failure answers with, and the one
table that turns the codes SQL raises into sentences.

`{"error": {"code": "...", "message": "...", "request_id": "...", "details": {...}}}`

- `code`: machine-readable, snake_case (`insufficient_credits`, `validation_error`).
- `message`: one or more sentences for a person: a capital first, a period last, naming the field or thing.
- `details` (optional): always a JSON object. `fields` is a list of `{field, message, type}`, one per
  invalid input field (`message` says what the field must be, without the field's name); `reason` is the
  database's own explanation, verbatim, when it gave one; other keys are facts of that error
  (`provider_status`, `hold_status`, `failing`, `required_scope`, ...).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_FIELD_DETAIL = re.compile(r"^(?P<field>[a-z][a-z0-9_]*): (?P<message>.+)$")


def sentence(text: str) -> str:
    """`text` as a sentence: stripped, a capital first, ending with a period (or ? or !)."""
    text = text.strip() or "Something went wrong"
    if text[0].islower():
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def fields_detail(field: str, message: str, type_: str) -> dict[str, Any]:
    """`details` naming one invalid field."""
    return {"fields": [{"field": field, "message": message, "type": type_}]}


def _as_details(details: Any) -> dict[str, Any] | None:
    """Any details given to an ApiError, in the one documented shape (an object; see the module doc)."""
    if details is None or details == {} or details == []:
        return None
    if isinstance(details, dict):
        return details
    if isinstance(details, list):
        return {"fields": details}
    return {"reason": str(details)}


class ApiError(Exception):
    """Base: an answer other than success. `code` is machine-readable, `message` is for people."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str | None = None, *, code: str | None = None, details: Any = None) -> None:
        self.code = code or self.default_code
        self.message = sentence(message) if message else message_for(self.code)
        self.details = _as_details(details)
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


# The sentence for each code SQL raises (`raise exception using message = '<code>'`). `{detail}` stands for
# the SQL `detail` in parentheses, or nothing when the database gave none; the detail is also kept verbatim in
# `details.reason`. tests/functions/test_error_mapping.py walks every migration and fails on a code missing here.
MESSAGES: dict[str, str] = {
    # identity and callers (foundation, accounts)
    "not_authenticated": "Sign in first: this call needs a user's access token or the service role.",
    "user_id_required": "A service call must name the user it acts for{detail}.",
    "forbidden": "You may only act for yourself{detail}.",
    "invalid_name": "The key name must be 1 to 100 characters.",
    "invalid_scopes": "The scopes must be one or more of models and usage:read.",
    "invalid_expiry": "The expiry is not valid{detail}.",
    "api_key_not_found": "No API key with this id belongs to you.",
    "invalid_api_key": "The API key is unknown, malformed or revoked.",
    "api_key_expired": "The API key has expired{detail}; create a new one.",
    "account_paused": "Your account is paused: model calls and API keys are refused until it is resumed.",
    "account_blocked": "Your account is blocked: model calls and API keys are refused.",
    # billing
    "account_not_found": "No billing account exists for this user.",
    "append_only": "Ledger and usage rows cannot be changed once written{detail}.",
    "request_id_reused": "This request id was already used for another kind of call{detail}; send a new id.",
    "invalid_request_id": "The request id must be 1 to 200 characters.",
    "invalid_operation": "The operation must be chat or compile.",
    "invalid_protocol": "The protocol must be openai or anthropic.",
    "model_required": "Name the model to call (the model field).",
    "invalid_response": "The answer to store must be a JSON object.",
    "invalid_prompt_chars": "The prompt length must be zero or more characters.",
    "unknown_model": "This model is not available{detail}.",
    "no_default_model": "No default model is set for this provider{detail}; name a model, or ask an operator to "
                        "mark one as the default.",
    "invalid_calls": "A charge covers 1 to 4 model calls{detail}.",
    "invalid_max_tokens": "The max_tokens value is out of range for this model{detail}.",
    "rate_limited": "Too many requests{detail}; wait a minute and try again.",
    "quota_exceeded": "This call would go over your monthly quota{detail}.",
    "insufficient_credits": "Your balance cannot cover this call{detail}; top up to continue.",
    "hold_not_found": "No charge in progress (hold) has this id.",
    "hold_closed": "This charge is already closed{detail}.",
    "wrong_operation": "This charge belongs to another operation{detail}.",
    "invalid_token_counts": "Token counts must be zero or more.",
    "invalid_older_than_seconds": "The age limit (older_than_seconds) must be at least one second.",
    "invalid_kind": "The entry kind must be top_up, grant, refund or adjustment.",
    "invalid_amount": "The amount is not valid{detail}.",
    "invalid_payment_ref": "The payment reference must be 1 to 200 characters.",
    "idempotency_conflict": "This idempotency key was already used with other values{detail}.",
    "would_overdraw": "This adjustment would take the balance below what open charges hold.",
    "invalid_events": "The events are not valid{detail}.",
    "unknown_user": "Some events name users that do not exist{detail}.",
    # chat
    "session_not_found": "The session was not found{detail}: it never existed, was deleted, or belongs to "
                         "another user. Send no session to start a new one.",
    "invalid_session_name": "The session name must be 1 to 200 characters.",
    "session_conflict": "The reply cannot be written to its session{detail}.",
    "invalid_message": "The message must be 1 to 32000 characters.",
    "invalid_assistant_message": "The model's reply could not be stored{detail}.",
    "invalid_delivered_chars": "The delivered length must be zero or more characters.",
    # projects and code
    "project_not_found": "The project was not found{detail}: it never existed, was deleted, or belongs to "
                         "another user.",
    "invalid_files": "The files are not valid{detail}.",
    "file_not_found": "No file with this path exists in the project.",
    # usage
    "invalid_range": "The date range is not valid{detail}.",
    "event_out_of_bounds": "A usage event is outside the bounds a real call can reach{detail}.",
    "invalid_retention": "The retention is not valid{detail}.",
    "invalid_group_by": "The grouping (group_by) must be day, model, operation, service or day_model.",
}


def message_for(code: str, detail: str | None = None) -> str:
    """The sentence for a code from `MESSAGES`, with the detail in parentheses where the sentence takes it;
    a code missing from the table reads as its words."""
    template = MESSAGES.get(code)
    if template is None:
        return sentence(code.replace("_", " "))
    return sentence(template.replace("{detail}", f" ({detail.strip()})" if detail and detail.strip() else ""))


def from_sqlstate(sqlstate: str | None, message: str, detail: Any = None) -> ApiError:
    """The ApiError for a database error, by SQLSTATE: `PTnnn` is HTTP nnn, others as PostgREST maps them.
    A snake_case SQL message is the error's code and its sentence comes from `MESSAGES`."""
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
        return InternalError("The database failed to answer this request.", code="database_error",
                             details={"sqlstate": sqlstate})
    reason = str(detail).strip() if detail else None
    details: dict[str, Any] = {"reason": reason} if reason else {}
    if message and _SNAKE.match(message):
        code = message
        text = message_for(code, reason)
        found = _FIELD_DETAIL.match(reason or "")
        if found and status in (400, 422):
            details |= fields_detail(found["field"], found["message"], code)
    else:
        code = cls.default_code
        text = f"The database refused this request: {message}" if message else code.replace("_", " ")
    return cls(text, code=code, details=details or None)
