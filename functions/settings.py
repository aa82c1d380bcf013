"""Configuration from the environment, validated once per process."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Local development only: the HS256 secret the local run command signs the demo user's token with.
# Refused when ENVIRONMENT=production.
DEV_JWT_SECRET = "local-development-jwt-secret-not-for-production-use-0123456789"  # noqa: S105
DEV_SERVICE_SECRET = "local-development-service-secret-not-for-production-0123456789"  # noqa: S105


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"

    # Database: DATABASE_URL -> postgres transport; SUPABASE_URL + key -> supabase transport;
    # neither -> the embedded local Postgres (development and test only).
    database_url: str | None = None
    db_transport: Literal["auto", "postgres", "supabase"] = "auto"
    db_pool_max_size: int = Field(default=10, ge=1, le=200)
    db_attempts: int = Field(default=3, ge=1, le=10)
    supabase_url: str | None = None
    # Optional read replicas for usage summaries and chat listings (never billing): DATABASE_READ_URL for
    # the postgres transport, SUPABASE_READ_URL (the replica's API URL) for the supabase transport.
    database_read_url: str | None = None
    supabase_read_url: str | None = None
    supabase_service_role_key: SecretStr | None = None
    supabase_anon_key: SecretStr | None = None

    # Identity
    supabase_jwt_secret: SecretStr | None = None  # legacy HS256 projects
    jwt_jwks_url: str | None = None  # default: <SUPABASE_URL>/auth/v1/.well-known/jwks.json
    jwt_algorithms: Annotated[list[str], NoDecode] = ["ES256", "RS256"]
    jwt_issuer: str | None = None  # default: <SUPABASE_URL>/auth/v1
    jwt_audience: str = "authenticated"
    jwks_cache_seconds: int = Field(default=600, ge=0, le=600)
    service_secret: SecretStr | None = None

    # Model providers
    model_provider: Literal["offline", "openai", "anthropic"] = "offline"
    # The model of a request that names none: DEFAULT_MODEL, else MODEL_PROVIDER's default in model_prices.
    default_model: str | None = Field(default=None, min_length=1, max_length=100)
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_api_key: SecretStr | None = None
    model_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    model_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    model_attempts: int = Field(default=3, ge=1, le=10)

    # HTTP
    cors_allowed_origins: Annotated[list[str], NoDecode] = []
    # 1 MiB: a batch of 1,000 usage events is about 330 KB; a 32,000-character chat message at most 128 KB.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)

    # Behaviour
    history_max_chars: int = Field(default=24000, ge=0, le=400000)
    default_max_tokens: int = Field(default=1024, ge=1, le=200000)
    hold_expiry_seconds: int = Field(default=900, ge=60)
    # A live stream reports its progress this often (and before its first delta), which keeps its hold alive.
    hold_heartbeat_seconds: float = Field(default=30.0, gt=0, le=600)
    replay_wait_seconds: float = Field(default=20.0, ge=0, le=120)
    # Whole months of raw usage_logs kept before the current one (the daily rollup is kept for ever);
    # unset: the value stored in the database (private.usage_settings, 13 unless changed).
    usage_retention_months: int | None = Field(default=None, ge=1, le=1200)
    log_level: str = "INFO"

    @field_validator("cors_allowed_origins", "jwt_algorithms", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        allowed = {"HS256", "RS256", "ES256", "EdDSA"}
        bad = [a for a in value if a not in allowed]
        if bad or not value:
            raise ValueError(f"jwt_algorithms must be a subset of {sorted(allowed)}")
        return value

    @field_validator("supabase_jwt_secret", "service_secret", "supabase_service_role_key", "supabase_anon_key",
                     "openai_api_key", "anthropic_api_key", "database_url", "supabase_url", "default_model",
                     "database_read_url", "supabase_read_url", "usage_retention_months",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable is no value at all (so production refuses it rather than trusting '')."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.environment != "production":
            return self
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
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once; tests clear the cache after changing the environment)."""
    return Settings()
