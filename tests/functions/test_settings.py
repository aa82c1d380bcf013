"""Configuration: production refuses to start unless it is safe; environment lists parse."""

from __future__ import annotations

from collections.abc import Iterator

import pydantic
import pytest

from functions.settings import DEV_JWT_SECRET, DEV_SERVICE_SECRET, Settings, get_settings

PRODUCTION = {
    "ENVIRONMENT": "production",
    "MODEL_PROVIDER": "anthropic",
    "ANTHROPIC_API_KEY": "sk-ant-live-key",
    "SUPABASE_URL": "https://abcdefgh.supabase.co",
    "SUPABASE_SERVICE_ROLE_KEY": "service-role-key-from-the-dashboard",
    "SERVICE_SECRET": "a-real-service-secret-with-more-than-32-bytes-0123456789",
    "CORS_ALLOWED_ORIGINS": "https://app.example.com",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """An environment with none of the settings' variables set (whatever the machine or CI has)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def production(env: pytest.MonkeyPatch, **changes: str | None) -> None:
    """The complete production configuration, with `changes` applied (None unsets a variable)."""
    for key, value in (PRODUCTION | changes).items():
        if value is None:
            env.delenv(key, raising=False)
        else:
            env.setenv(key, value)


def refusal(env: pytest.MonkeyPatch, **changes: str | None) -> str:
    production(env, **changes)
    with pytest.raises(pydantic.ValidationError) as info:
        Settings()
    message = str(info.value)
    assert "refusing to start in production" in message
    return message


def test_complete_production_configuration_is_accepted(env: pytest.MonkeyPatch) -> None:
    production(env)
    s = get_settings()
    assert s.environment == "production" and s.model_provider == "anthropic"
    assert s.jwks_url == "https://abcdefgh.supabase.co/auth/v1/.well-known/jwks.json"
    assert s.issuer == "https://abcdefgh.supabase.co/auth/v1"
    assert s.transport == "supabase"
    assert s.cors_allowed_origins == ["https://app.example.com"]


def test_production_with_legacy_secret_and_database_url_is_accepted(env: pytest.MonkeyPatch) -> None:
    production(env, SUPABASE_URL=None, SUPABASE_SERVICE_ROLE_KEY=None, MODEL_PROVIDER="openai",
               OPENAI_API_KEY="sk-live-openai", DATABASE_URL="postgresql://app@db.internal/app",
               SUPABASE_JWT_SECRET="the-projects-own-legacy-jwt-secret-with-more-than-32-bytes")
    s = Settings()
    assert s.jwks_url is None and s.transport == "postgres"


@pytest.mark.parametrize("provider", ["offline", None], ids=["explicit", "default"])
def test_production_refuses_the_offline_provider(env: pytest.MonkeyPatch, provider: str | None) -> None:
    assert "MODEL_PROVIDER=offline" in refusal(env, MODEL_PROVIDER=provider)


@pytest.mark.parametrize(("provider", "missing"), [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")])
def test_production_refuses_a_provider_without_its_key(env: pytest.MonkeyPatch, provider: str, missing: str) -> None:
    assert f"{missing} is missing" in refusal(env, MODEL_PROVIDER=provider, OPENAI_API_KEY=None,
                                              ANTHROPIC_API_KEY=None)


def test_production_refuses_to_start_without_jwt_configuration(env: pytest.MonkeyPatch) -> None:
    message = refusal(env, SUPABASE_URL=None, SUPABASE_SERVICE_ROLE_KEY=None,
                      DATABASE_URL="postgresql://app@db.internal/app")
    assert "no JWT configuration" in message


@pytest.mark.parametrize("origins", ["*", "", " , ", "https://app.example.com,*"])
def test_production_refuses_an_open_cors_list(env: pytest.MonkeyPatch, origins: str) -> None:
    assert "CORS_ALLOWED_ORIGINS" in refusal(env, CORS_ALLOWED_ORIGINS=origins)


def test_production_refuses_a_missing_cors_list(env: pytest.MonkeyPatch) -> None:
    assert "CORS_ALLOWED_ORIGINS" in refusal(env, CORS_ALLOWED_ORIGINS=None)


def test_production_refuses_the_development_jwt_secret(env: pytest.MonkeyPatch) -> None:
    assert "SUPABASE_JWT_SECRET is the development secret" in refusal(env, SUPABASE_JWT_SECRET=DEV_JWT_SECRET)


@pytest.mark.parametrize("secret", [DEV_SERVICE_SECRET, None], ids=["development", "missing"])
def test_production_refuses_the_development_or_a_missing_service_secret(env: pytest.MonkeyPatch,
                                                                        secret: str | None) -> None:
    assert "SERVICE_SECRET is missing or the development secret" in refusal(env, SERVICE_SECRET=secret)


def test_production_refuses_to_start_without_a_database(env: pytest.MonkeyPatch) -> None:
    assert "no database" in refusal(env, SUPABASE_SERVICE_ROLE_KEY=None)


def test_production_names_every_problem_at_once(env: pytest.MonkeyPatch) -> None:
    env.setenv("ENVIRONMENT", "production")
    with pytest.raises(pydantic.ValidationError) as info:
        get_settings()
    message = str(info.value)
    for problem in ("MODEL_PROVIDER=offline", "no JWT configuration", "SERVICE_SECRET", "CORS_ALLOWED_ORIGINS",
                    "no database"):
        assert problem in message


def test_development_starts_with_nothing_configured(env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.environment, s.model_provider, s.transport) == ("development", "offline", "local")
    assert s.cors_allowed_origins == [] and s.jwt_algorithms == ["ES256", "RS256"]


def test_comma_separated_lists_parse_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("CORS_ALLOWED_ORIGINS", " https://app.example.com , http://localhost:5173,,")
    env.setenv("JWT_ALGORITHMS", "ES256, EdDSA")
    s = Settings()
    assert s.cors_allowed_origins == ["https://app.example.com", "http://localhost:5173"]
    assert s.jwt_algorithms == ["ES256", "EdDSA"]


@pytest.mark.parametrize("algorithms", ["none", "HS512", "ES256,none", "", " , "])
def test_unknown_or_empty_jwt_algorithms_are_refused(env: pytest.MonkeyPatch, algorithms: str) -> None:
    env.setenv("JWT_ALGORITHMS", algorithms)
    with pytest.raises(pydantic.ValidationError, match="jwt_algorithms"):
        Settings()


@pytest.mark.parametrize(("name", "value"), [("MODEL_TIMEOUT_SECONDS", "0"), ("JWKS_CACHE_SECONDS", "3600"),
                                             ("ENVIRONMENT", "prod"), ("MODEL_PROVIDER", "gemini")])
def test_out_of_range_values_are_refused(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(pydantic.ValidationError, match=name.lower()):
        Settings()


@pytest.mark.parametrize("name", ["SERVICE_SECRET", "SUPABASE_JWT_SECRET"])
def test_an_empty_secret_counts_as_missing(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "")
    assert Settings(environment="development").secret(name.lower()) is None


def test_production_refuses_an_empty_service_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"MODEL_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "k", "SUPABASE_URL": "https://r.supabase.co",
                       "SUPABASE_SERVICE_ROLE_KEY": "k", "CORS_ALLOWED_ORIGINS": "https://app.example",
                       "SERVICE_SECRET": "  "}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(pydantic.ValidationError, match="SERVICE_SECRET is missing"):
        Settings(environment="production")
