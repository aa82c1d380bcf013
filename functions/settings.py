"""Configuration from the environment, validated once per process (at instance start: `functions.main`).

Every field is read from the variable of its name in upper case (any case matches), or from a keyword
argument (`Settings(environment="production")`, which wins over the environment). Values are checked
against their declared kind and bounds and, in production, against the rules that make a deployment safe;
every problem is reported at once as a `pydantic.ValidationError`, the same error pydantic raises.

Plain Python on purpose: pydantic (and pydantic-settings) would be the largest import of a cold start for
targets whose requests never parse a body (health, refresh_views): about 60 ms of a ~170 ms no-op start.
pydantic_core is imported only to raise the error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, ClassVar, Literal, NoReturn

# Local development only: the HS256 secret the local run command signs the demo user's token with.
# Refused when ENVIRONMENT=production.
DEV_JWT_SECRET = "local-development-jwt-secret-not-for-production-use-0123456789"  # noqa: S105
DEV_SERVICE_SECRET = "local-development-service-secret-not-for-production-0123456789"  # noqa: S105

_JWT_ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")


class SecretStr:
    """A secret that does not show in reprs or logs (as pydantic's `SecretStr`, which is also accepted as
    input); `get_secret_value()` reveals it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')" if self._value else "SecretStr('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _Invalid(ValueError):
    """A value that is not of its field's kind or out of its bounds (the message ends a sentence)."""


# -- field kinds: each parses a raw value (a string from the environment, or a Python value) or raises ----

Parse = Callable[[Any], Any]


def _unset_if_empty(parse: Parse) -> Parse:
    """An empty or blank string is no value at all (so production refuses it rather than trusting '')."""

    def parse_or_none(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse(value)

    return parse_or_none


def _choice(*choices: str) -> Parse:
    def parse(value: Any) -> str:
        if value not in choices:
            raise _Invalid("Input should be " + " or ".join(repr(c) for c in choices))
        return str(value)

    return parse


def _number(kind: type[int] | type[float], *, gt: float | None = None, ge: float | None = None,
            le: float | None = None) -> Parse:
    def parse(value: Any) -> int | float:
        number: int | float
        if isinstance(value, bool):
            raise _Invalid(f"Input should be a valid {'integer' if kind is int else 'number'}")
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            raise _Invalid(f"Input should be a valid {'integer' if kind is int else 'number'}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise _Invalid("Input should be a valid integer")
        if isinstance(number, float) and not math.isfinite(number):
            raise _Invalid("Input should be a finite number")
        if gt is not None and not number > gt:
            raise _Invalid(f"Input should be greater than {gt}")
        if ge is not None and not number >= ge:
            raise _Invalid(f"Input should be greater than or equal to {ge}")
        if le is not None and not number <= le:
            raise _Invalid(f"Input should be less than or equal to {le}")
        return number

    return parse


def _text(*, min_length: int = 0, max_length: int | None = None) -> Parse:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid("Input should be a valid string")
        if len(value) < min_length:
            raise _Invalid(f"String should have at least {min_length} characters")
        if max_length is not None and len(value) > max_length:
            raise _Invalid(f"String should have at most {max_length} characters")
        return value

    return parse


def _secret(value: Any) -> SecretStr:
    if isinstance(value, str):
        return SecretStr(value)
    reveal = getattr(value, "get_secret_value", None)  # ours, or pydantic's SecretStr
    if callable(reveal):
        return SecretStr(str(reveal()))
    raise _Invalid("Input should be a valid string")


def _comma_list(check: Callable[[list[str]], list[str]] | None = None) -> Parse:
    """A list from a comma-separated string (blank parts dropped), or a list of strings as it is."""

    def parse(value: Any) -> list[str]:
        if isinstance(value, str):
            items = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            items = list(value)
        else:
            raise _Invalid("Input should be a valid list of strings")
        return check(items) if check else items

    return parse


def _known_algorithms(value: list[str]) -> list[str]:
    bad = [a for a in value if a not in _JWT_ALGORITHMS]
    if bad or not value:
        raise _Invalid(f"jwt_algorithms must be a subset of {sorted(_JWT_ALGORITHMS)}")
    return value


_SECRET = _unset_if_empty(_secret)


def _optional(parse: Parse) -> Parse:
    return lambda value: None if value is None else parse(value)


# name -> (default, parse). The class below declares the same names with their types.
_FIELDS: dict[str, tuple[Any, Parse]] = {
    "environment": ("development", _choice("development", "test", "production")),
    "database_url": (None, _unset_if_empty(_text())),
    "db_transport": ("auto", _choice("auto", "postgres", "supabase")),
    "db_pool_max_size": (10, _number(int, ge=1, le=200)),
    "db_attempts": (3, _number(int, ge=1, le=10)),
    "supabase_url": (None, _unset_if_empty(_text())),
    "database_read_url": (None, _unset_if_empty(_text())),
    "supabase_read_url": (None, _unset_if_empty(_text())),
    "supabase_service_role_key": (None, _SECRET),
    "supabase_anon_key": (None, _SECRET),
    "supabase_jwt_secret": (None, _SECRET),
    "jwt_jwks_url": (None, _optional(_text())),
    "jwt_algorithms": (("ES256", "RS256"), _comma_list(_known_algorithms)),
    "jwt_issuer": (None, _optional(_text())),
    "jwt_audience": ("authenticated", _text()),
    "jwks_cache_seconds": (600, _number(int, ge=0, le=600)),
    "service_secret": (None, _SECRET),
    "model_provider": ("offline", _choice("offline", "openai", "anthropic")),
    "default_model": (None, _unset_if_empty(_text(min_length=1, max_length=100))),
    "openai_base_url": ("https://api.openai.com/v1", _text()),
    "openai_api_key": (None, _SECRET),
    "anthropic_base_url": ("https://api.anthropic.com", _text()),
    "anthropic_api_key": (None, _SECRET),
    "model_timeout_seconds": (60.0, _number(float, gt=0, le=600)),
    "model_connect_timeout_seconds": (5.0, _number(float, gt=0, le=60)),
    "model_attempts": (3, _number(int, ge=1, le=10)),
    "cors_allowed_origins": ((), _comma_list()),
    "max_body_bytes": (1024 * 1024, _number(int, ge=1024, le=16 * 1024 * 1024)),
    "history_max_chars": (24000, _number(int, ge=0, le=400000)),
    "default_max_tokens": (1024, _number(int, ge=1, le=200000)),
    "hold_expiry_seconds": (900, _number(int, ge=60)),
    "hold_heartbeat_seconds": (30.0, _number(float, gt=0, le=600)),
    "replay_wait_seconds": (20.0, _number(float, ge=0, le=120)),
    "usage_retention_months": (None, _unset_if_empty(_number(int, ge=1, le=1200))),
    "log_level": ("INFO", _text()),
}


_SECRETS = frozenset(name for name, (_, parse) in _FIELDS.items() if parse is _SECRET)


class Settings:
    """The process's configuration. Frozen: read it, never change it (tests build a new one)."""

    model_fields: ClassVar[Mapping[str, Any]] = {name: default for name, (default, _) in _FIELDS.items()}

    environment: Literal["development", "test", "production"]

    # Database: DATABASE_URL -> postgres transport; SUPABASE_URL + key -> supabase transport;
    # neither -> the embedded local Postgres (development and test only).
    database_url: str | None
    db_transport: Literal["auto", "postgres", "supabase"]
    db_pool_max_size: int  # 1..200
    db_attempts: int  # 1..10
    supabase_url: str | None
    # Optional read replicas for usage summaries and chat listings (never billing): DATABASE_READ_URL for
    # the postgres transport, SUPABASE_READ_URL (the replica's API URL) for the supabase transport.
    database_read_url: str | None
    supabase_read_url: str | None
    supabase_service_role_key: SecretStr | None
    supabase_anon_key: SecretStr | None

    # Identity
    supabase_jwt_secret: SecretStr | None  # legacy HS256 projects
    jwt_jwks_url: str | None  # default: <SUPABASE_URL>/auth/v1/.well-known/jwks.json
    jwt_algorithms: list[str]  # comma-separated in the environment; a subset of HS256, RS256, ES256, EdDSA
    jwt_issuer: str | None  # default: <SUPABASE_URL>/auth/v1
    jwt_audience: str
    jwks_cache_seconds: int  # 0..600
    service_secret: SecretStr | None

    # Model providers
    model_provider: Literal["offline", "openai", "anthropic"]
    # The model of a request that names none: DEFAULT_MODEL, else MODEL_PROVIDER's default in model_prices.
    default_model: str | None  # 1..100 characters
    openai_base_url: str
    openai_api_key: SecretStr | None
    anthropic_base_url: str
    anthropic_api_key: SecretStr | None
    model_timeout_seconds: float  # (0, 600]
    model_connect_timeout_seconds: float  # (0, 60]
    model_attempts: int  # 1..10

    # HTTP
    cors_allowed_origins: list[str]  # comma-separated in the environment
    # 1 MiB: a batch of 1,000 usage events is about 330 KB; a 32,000-character chat message at most 128 KB.
    max_body_bytes: int  # 1 KiB..16 MiB

    # Behaviour
    history_max_chars: int  # 0..400000
    default_max_tokens: int  # 1..200000
    hold_expiry_seconds: int  # >= 60
    # A live stream reports its progress this often (and before its first delta), which keeps its hold alive.
    hold_heartbeat_seconds: float  # (0, 600]
    replay_wait_seconds: float  # 0..120
    # Whole months of raw usage_logs kept before the current one (the daily rollup is kept for ever);
    # unset: the value stored in the database (private.usage_settings, 13 unless changed).
    usage_retention_months: int | None  # 1..1200
    log_level: str

    def __init__(self, **values: Any) -> None:
        """Each field from `values`, else its environment variable, else its default; every bad value and,
        in production, every unsafe setting is reported in one `pydantic.ValidationError`."""
        environ = {key.lower(): value for key, value in os.environ.items()}
        errors: list[tuple[str | None, Any, str]] = []
        for name, (default, parse) in _FIELDS.items():
            if name in values:
                raw = values[name]
            elif name in environ:
                raw = environ[name]
            else:
                object.__setattr__(self, name, list(default) if isinstance(default, tuple) else default)
                continue
            try:
                object.__setattr__(self, name, parse(raw))
            except _Invalid as exc:
                errors.append((name, raw, str(exc)))
        if errors:
            _raise(errors)
        problems = self._production_problems()
        if problems:
            _raise([(None, None, "refusing to start in production: " + "; ".join(problems))])

    def _production_problems(self) -> list[str]:
        if self.environment != "production":
            return []
        problems = []
        if self.model_provider == "offline":
            problems.append("MODEL_PROVIDER=offline is a development provider")
        if self.model_provider == "openai" and self.openai_api_key is None:
            problems.append("OPENAI_API_KEY is missing")
        if self.model_provider == "anthropic" and self.anthropic_api_key is None:
            problems.append("ANTHROPIC_API_KEY is missing")
        if self.supabase_jwt_secret is None and self.jwks_url is None:
            problems.append("no JWT configuration: set SUPABASE_URL (JWKS) or SUPABASE_JWT_SECRET")
        if self.supabase_jwt_secret is not None and self.supabase_jwt_secret.get_secret_value() == DEV_JWT_SECRET:
            problems.append("SUPABASE_JWT_SECRET is the development secret")
        if self.service_secret is None or self.service_secret.get_secret_value() == DEV_SERVICE_SECRET:
            problems.append("SERVICE_SECRET is missing or the development secret")
        if not self.cors_allowed_origins or "*" in self.cors_allowed_origins:
            problems.append("CORS_ALLOWED_ORIGINS must list the frontend origins (no '*')")
        if self.database_url is None and not (self.supabase_url and self.supabase_service_role_key):
            problems.append("no database: set DATABASE_URL or SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        return problems

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"Settings are frozen: {name} cannot be changed")

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS) + ")"

    @property
    def jwks_url(self) -> str | None:
        if self.jwt_jwks_url:
            return self.jwt_jwks_url
        return f"{self.supabase_url.rstrip('/')}/auth/v1/.well-known/jwks.json" if self.supabase_url else None

    @property
    def issuer(self) -> str | None:
        if self.jwt_issuer:
            return self.jwt_issuer
        return f"{self.supabase_url.rstrip('/')}/auth/v1" if self.supabase_url else None

    @property
    def transport(self) -> Literal["postgres", "supabase", "local"]:
        if self.db_transport == "supabase" or (
            self.db_transport == "auto" and self.database_url is None and self.supabase_url
            and self.supabase_service_role_key
        ):
            return "supabase"
        return "postgres" if self.database_url else "local"

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None


def _raise(errors: list[tuple[str | None, Any, str]]) -> NoReturn:
    """A `pydantic.ValidationError` (pydantic_core's class, which pydantic re-exports) naming each field."""
    from pydantic_core import PydanticCustomError, ValidationError

    raise ValidationError.from_exception_data("Settings", [
        {"type": PydanticCustomError("value_error", message.replace("{", "{{").replace("}", "}}")),
         "loc": (name,) if name else (), "input": "**********" if name in _SECRETS and raw is not None else raw}
        for name, raw, message in errors])


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once; tests clear the cache after changing the environment)."""
    return Settings()
