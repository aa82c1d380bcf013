"""Authentication through the functions: access tokens (HS256 secret and JWKS with rotation), API keys,
the service secret, and the parsers that turn caller input into ids (property tests)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from functions import auth, runtime
from functions.chat import session_ref
from functions.db import SERVICE, Caller
from functions.errors import Unauthorized
from functions.schemas import CursorError, decode_cursor, encode_cursor
from functions.settings import DEV_JWT_SECRET, DEV_SERVICE_SECRET, Settings
from tests.support import fnsupport
from tests.support.fnsupport import ISSUER, JWT_SECRET, SERVICE_SECRET, SUPABASE_URL, token
from tests.support.pg import Sql

JWKS_URL = f"{SUPABASE_URL}/auth/v1/.well-known/jwks.json"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(user: uuid.UUID | str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": str(user), "aud": "authenticated", "role": "authenticated", "iss": ISSUER,
                              "iat": now, "exp": now + 3600}
    return claims | overrides


def unsigned(user: uuid.UUID | str) -> str:
    """An `alg: none` token: a valid-looking payload and no signature."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_claims(user)).encode())}."


def hmac_signed(claims: dict[str, Any], key: bytes, alg: str = "HS256", **header: Any) -> str:
    """An HMAC-signed token made by hand (PyJWT refuses asymmetric key material as an HMAC secret, as it
    should, and warns about short HS512 keys)."""
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    head = _b64(json.dumps({"alg": alg, "typ": "JWT", **header}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{_b64(signature)}"


def swap_payload(signed: str, claims: dict[str, Any]) -> str:
    """A signed token with its payload replaced (the signature no longer matches)."""
    head, _, signature = signed.split(".")
    return f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def assert_401(response: Any, code: str | None = None) -> None:
    assert response.status_code == 401, response.json
    error = response.json["error"]
    assert error["request_id"] == response.headers["X-Request-Id"]
    if code is not None:
        assert error["code"] == code


# -- access tokens with the project's HS256 secret (the test project's configuration) ---------------------

class UntouchableDatabase:
    """A database port that fails the request if anything reaches it: rejected callers never get that far."""

    calls: list[str]

    def __init__(self) -> None:
        self.calls = []

    async def rpc(self, name: str, args: Mapping[str, Any], caller: Caller = SERVICE) -> Any:
        self.calls.append(name)
        raise AssertionError(f"the database was called ({name}) for a caller that should have been refused")

    async def aclose(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def edge(fn_env: None) -> Iterator[Any]:
    """The functions with the test project's HS256 configuration and a database nothing may reach."""
    database = UntouchableDatabase()
    runtime.install(database)
    yield fnsupport.Api("none")
    assert database.calls == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "Bearer "},
                                     {"Authorization": "Basic dXNlcjpwYXNz"}, {"X-API-Key": ""}],
                         ids=["none", "empty", "empty-bearer", "basic", "empty-api-key"])
def test_missing_credentials_are_401_missing_credentials(edge: Any, headers: dict[str, str]) -> None:
    assert_401(edge.post("chat", {"message": "hi"}, headers=headers), "missing_credentials")
    assert_401(edge.get("usage", headers=headers), "missing_credentials")


def test_expired_token_is_401_token_expired_before_any_database_work(edge: Any) -> None:
    assert_401(edge.post("chat", {"message": "hi"}, headers=bearer(token(uuid.uuid4(), ttl=-60))), "token_expired")


BAD_TOKENS: dict[str, Callable[[uuid.UUID], str]] = {
    "alg-none": unsigned,
    "wrong-secret": lambda u: token(u, secret="another-projects-secret-with-more-than-32-bytes-0123456789"),
    "wrong-aud": lambda u: token(u, aud="anon"),
    "wrong-iss": lambda u: token(u, iss="https://other-project.supabase.test/auth/v1"),
    "future-nbf": lambda u: token(u, nbf=int(time.time()) + 3600),
    "missing-exp": lambda u: token(u, exp=None),
    "missing-sub": lambda u: token(u, sub=None),
    "missing-iat": lambda u: token(u, iat=None),
    "missing-iss": lambda u: token(u, iss=None),
    "missing-aud": lambda u: token(u, aud=None),
    "sub-not-uuid": lambda u: token(u, sub="alice"),
    "service-role": lambda u: token(u, role="service_role"),
    "anon-role": lambda u: token(u, role="anon"),
    "tampered-payload": lambda u: swap_payload(token(u), _claims(uuid.uuid4())),
    "not-a-jwt": lambda u: "this.is.not-a-token",
    "hs512": lambda u: hmac_signed(_claims(u), JWT_SECRET.encode(), "HS512"),
}


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_invalid_access_token_is_401_before_any_database_work(edge: Any, make: Callable[[uuid.UUID], str]) -> None:
    uid = uuid.uuid4()
    assert_401(edge.post("chat", {"message": "hi"}, headers=bearer(make(uid))), "invalid_token")
    assert_401(edge.get("usage", headers=bearer(make(uid))), "invalid_token")
    assert_401(edge.post("compile", {"task": "x", "language": "sql"}, headers=bearer(make(uid))), "invalid_token")


def test_supabase_api_keys_and_the_service_secret_are_not_user_tokens(edge: Any) -> None:
    for credential in (fnsupport.role_key("service_role"), fnsupport.role_key("anon"), SERVICE_SECRET):
        assert_401(edge.post("chat", {"message": "hi"}, headers=bearer(credential)), "invalid_token")


def test_valid_token_within_clock_skew_is_accepted(api: Any) -> None:
    uid = api.db.make_user(balance=5)
    r = api.post("chat", {"message": "hi"}, headers=bearer(token(uid, iat=int(time.time()) + 2)))
    assert r.status_code == 200, r.json


# -- JWKS (asymmetric signing keys), on the postgres transport ---------------------------------------------

class Clock:
    """Stands in for `time` inside functions.auth, so cache ages are set, not waited for."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


@dataclass
class Project:
    """A Supabase project with asymmetric signing keys served from a respx-mocked JWKS endpoint."""

    api: Any
    db: Sql
    route: respx.Route
    clock: Clock
    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)

    def key(self, kid: str) -> ec.EllipticCurvePrivateKey:
        if kid not in self.keys:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        return self.keys[kid]

    def keyset(self, *kids: str) -> dict[str, Any]:
        keys = []
        for kid in kids:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key(kid).public_key()))
            keys.append(jwk | {"kid": kid, "alg": "ES256", "use": "sig", "key_ops": ["verify"]})
        return {"keys": keys}

    def serve(self, *keysets: dict[str, Any]) -> None:
        """Answer the n-th fetch with the n-th key set (the last one from then on)."""
        answers = [httpx.Response(200, json=k) for k in keysets]
        self.route.mock(side_effect=lambda request: answers.pop(0) if len(answers) > 1 else answers[0])

    def token(self, user: uuid.UUID, kid: str, **overrides: Any) -> str:
        return jwt.encode(_claims(user, **overrides), self.key(kid), algorithm="ES256", headers={"kid": kid})

    def chat(self, bearer_token: str) -> Any:
        return self.api.post("chat", {"message": "hi"}, headers=bearer(bearer_token))


@contextmanager
def _project(db: Sql, monkeypatch: pytest.MonkeyPatch, hs256_secret: str | None) -> Iterator[Project]:
    """SUPABASE_URL set (JWKS URL and issuer derived from it); the HS256 secret only when given."""
    from functions.db.postgres import PostgresDatabase

    monkeypatch.setenv("SUPABASE_URL", SUPABASE_URL)
    monkeypatch.delenv("JWT_ISSUER")
    if hs256_secret is None:
        monkeypatch.delenv("SUPABASE_JWT_SECRET")
    else:
        monkeypatch.setenv("SUPABASE_JWT_SECRET", hs256_secret)
    clock = Clock()
    monkeypatch.setattr(auth, "time", clock)
    runtime.reset()
    with respx.mock(assert_all_called=False) as router:
        runtime.install(PostgresDatabase(db.url, max_size=4))
        yield Project(fnsupport.Api("postgres"), db, router.get(JWKS_URL), clock)
        runtime.reset()


@pytest.fixture
def project(fn_env: None, db: Sql, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """A project with asymmetric keys only: ES256/RS256 accepted, HS256 not."""
    with _project(db, monkeypatch, None) as p:
        yield p


@pytest.fixture
def legacy_and_jwks_project(fn_env: None, db: Sql, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """A project in migration: JWKS keys and the legacy HS256 secret both accepted."""
    with _project(db, monkeypatch, JWT_SECRET) as p:
        yield p


def test_es256_token_with_a_known_kid_is_accepted(project: Project) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    t = project.token(uid, "k1")
    r = project.chat(t)
    assert r.status_code == 200, r.json
    assert project.db.one("select count(*) from public.chat_messages where user_id = %s", (uid,)) == 2
    assert project.api.get("usage", headers=bearer(t)).status_code == 200
    assert project.route.call_count == 1  # cached between requests


def test_unknown_kid_refetches_once_and_accepts_a_rotated_key(project: Project) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"), project.keyset("k1", "k2"))
    assert project.chat(project.token(uid, "k1")).status_code == 200
    project.clock.now += 5
    r = project.chat(project.token(uid, "k2"))
    assert r.status_code == 200, r.json
    assert project.route.call_count == 2
    assert project.chat(project.token(uid, "k1")).status_code == 200
    assert project.route.call_count == 2


def test_kid_that_stays_unknown_is_401_after_one_refetch(project: Project) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    assert project.chat(project.token(uid, "k1")).status_code == 200
    project.clock.now += 5
    assert_401(project.chat(project.token(uid, "stranger")), "invalid_token")
    assert project.route.call_count == 2
    # A burst of unknown kids does not hammer the JWKS endpoint.
    assert_401(project.chat(project.token(uid, "stranger")), "invalid_token")
    assert_401(project.chat(project.token(uid, "another-stranger")), "invalid_token")
    assert project.route.call_count == 2


def test_keys_are_refetched_when_the_cache_is_older_than_its_ttl(project: Project) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"), project.keyset("k2"))
    assert project.chat(project.token(uid, "k1")).status_code == 200
    project.clock.now += 601
    assert_401(project.chat(project.token(uid, "k1")), "invalid_token")  # k1 was withdrawn
    assert project.route.call_count == 2


def test_token_without_kid_is_401(project: Project) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    t = jwt.encode(_claims(uid), project.key("k1"), algorithm="ES256")
    assert_401(project.chat(t), "invalid_token")


def test_es256_token_signed_by_another_key_under_a_known_kid_is_401(project: Project) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    forged = jwt.encode(_claims(uid), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"kid": "k1"})
    assert_401(project.chat(forged), "invalid_token")


@pytest.mark.parametrize("overrides", [{"aud": "anon"}, {"iss": "https://elsewhere.test/auth/v1"},
                                       {"sub": "alice"}, {"role": "service_role"}])
def test_es256_token_with_wrong_claims_is_401(project: Project, overrides: dict[str, Any]) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    assert_401(project.chat(project.token(uid, "k1", **overrides)), "invalid_token")


def test_expired_es256_token_is_401_token_expired(project: Project) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    assert_401(project.chat(project.token(uid, "k1", exp=int(time.time()) - 60)), "token_expired")


def test_hs256_token_is_401_when_only_asymmetric_keys_are_configured(project: Project) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    assert_401(project.chat(token(uid)), "invalid_token")
    assert_401(project.chat(token(uid, secret=DEV_JWT_SECRET)), "invalid_token")
    assert project.route.call_count == 0


def test_hs256_token_signed_with_the_public_key_is_401(project: Project) -> None:
    """The key-confusion attack: the public key (which anyone can fetch) used as an HMAC secret."""
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    public = project.key("k1").public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = json.dumps(project.keyset("k1")["keys"][0]).encode()
    for material in (pem, jwk):
        assert_401(project.chat(hmac_signed(_claims(uid), material, kid="k1")), "invalid_token")


def test_public_key_as_hmac_secret_is_401_when_hs256_is_also_configured(legacy_and_jwks_project: Project) -> None:
    project = legacy_and_jwks_project
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    pem = project.key("k1").public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    assert_401(project.chat(hmac_signed(_claims(uid), pem, kid="k1")), "invalid_token")
    assert project.chat(token(uid)).status_code == 200  # the real secret still works
    assert project.chat(project.token(uid, "k1")).status_code == 200


def test_token_whose_alg_does_not_match_the_key_is_401(project: Project) -> None:
    uid = project.db.make_user(balance=5)
    project.serve(project.keyset("k1"))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    t = jwt.encode(_claims(uid), rsa_key, algorithm="RS256", headers={"kid": "k1"})
    assert_401(project.chat(t), "invalid_token")


@pytest.mark.parametrize("answer", [
    httpx.Response(500, text="down"), httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
    httpx.Response(200, text="<html>not json</html>"), httpx.Response(200, json={"keys": []}),
], ids=["500", "connect-error", "timeout", "not-json", "no-keys"])
def test_jwks_endpoint_down_is_503(project: Project, answer: httpx.Response | Exception) -> None:
    uid = project.db.make_user(balance=5)
    if isinstance(answer, Exception):
        project.route.mock(side_effect=answer)
    else:
        project.route.mock(return_value=answer)
    r = project.chat(project.token(uid, "k1"))
    assert r.status_code == 503, r.json
    assert r.json["error"]["code"] == "jwks_unavailable"
    assert project.db.one("select count(*) from public.holds where user_id = %s", (uid,)) == 0


def test_production_never_accepts_the_development_secrets() -> None:
    settings = Settings(environment="production", model_provider="openai", openai_api_key=SecretStr("sk-live"),
                        supabase_url="https://abc.supabase.co", supabase_service_role_key=SecretStr("service-key"),
                        service_secret=SecretStr("a-real-service-secret-with-more-than-32-bytes-0123"),
                        cors_allowed_origins=["https://app.example.com"])
    authenticator = auth.Authenticator(settings)
    dev_token = auth.mint_dev_token(uuid.uuid4())
    with pytest.raises(Unauthorized):
        asyncio.run(authenticator.verify_token(dev_token))
    with pytest.raises(Unauthorized):
        authenticator.service({"Authorization": f"Bearer {DEV_SERVICE_SECRET}"})
    authenticator.service({"Authorization": "Bearer a-real-service-secret-with-more-than-32-bytes-0123"})


# -- API keys ----------------------------------------------------------------------------------------------

def new_key(db: Sql, uid: uuid.UUID) -> dict[str, Any]:
    """create_api_key as the service role would call it. (`db.rpc` cannot pass an argument called `name`:
    it is the name of its own first parameter.)"""
    with db.acting("service_role") as conn:
        row = conn.execute("select public.create_api_key(p_name => %s, p_user_id => %s) as r", ("ci", uid)).fetchone()
    assert row is not None
    created: dict[str, Any] = row["r"]
    assert created["key"].startswith("sk_")
    return created


@pytest.mark.parametrize("style", ["bearer", "x-api-key"])
def test_api_key_works_on_chat_and_usage(api: Any, style: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    key = new_key(db, uid)["key"]
    headers = bearer(key) if style == "bearer" else {"X-API-Key": key}
    r = api.post("chat", {"message": "from a script"}, headers=headers)
    assert r.status_code == 200, r.json
    assert db.one("select user_id from public.chat_sessions where id = %s", (r.json["session_id"],)) == uid
    usage = api.get("usage", headers=headers)
    assert usage.status_code == 200, usage.json
    assert usage.json["totals"]["requests"] == 1


def test_revoked_api_key_is_401(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    created = new_key(db, uid)
    assert api.get("usage", headers={"X-API-Key": created["key"]}).status_code == 200
    db.rpc("revoke_api_key", key_id=created["id"], user_id=uid)
    assert_401(api.post("chat", {"message": "hi"}, headers={"X-API-Key": created["key"]}), "invalid_api_key")
    assert_401(api.get("usage", headers=bearer(created["key"])), "invalid_api_key")
    assert db.one("select count(*) from public.holds where user_id = %s", (uid,)) == 0


@pytest.mark.parametrize("key", ["sk_", "sk_nothex_" + "0" * 64, "sk_" + "0" * 12 + "_" + "0" * 64, "not-a-key",
                                 "sk_" + "a" * 12 + "_" + "b" * 63 + "'"])
def test_malformed_or_unknown_api_key_is_401(api: Any, key: str) -> None:
    assert_401(api.post("chat", {"message": "hi"}, headers={"X-API-Key": key}), "invalid_api_key")
    if key.startswith("sk_"):
        assert_401(api.get("usage", headers=bearer(key)), "invalid_api_key")


def test_api_key_with_a_changed_secret_is_401(api: Any) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    key: str = new_key(db, uid)["key"]
    flipped = key[:-1] + ("0" if key[-1] != "0" else "1")
    assert_401(api.get("usage", headers={"X-API-Key": flipped}), "invalid_api_key")


@pytest.mark.parametrize("status", ["blocked", "paused"])
def test_api_key_of_a_blocked_or_paused_user_is_403(api: Any, status: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    key = new_key(db, uid)["key"]
    db.q("update public.profiles set status = %s where id = %s", (status, uid))
    r = api.post("chat", {"message": "hi"}, headers={"X-API-Key": key})
    assert r.status_code == 403 and r.json["error"]["code"] == f"account_{status}"
    assert api.get("usage", headers=bearer(key)).status_code == 403


# -- service-only operations -------------------------------------------------------------------------------

def _ingest_body(uid: uuid.UUID) -> dict[str, Any]:
    return {"events": [{"event_id": str(uuid.uuid4()), "user_id": str(uid), "service": "indexer",
                        "operation": "embed", "input_tokens": 10}]}


@pytest.mark.parametrize("target", ["usage", "refresh_views"])
def test_service_operations_refuse_users_and_anonymous_callers(api: Any, target: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    body = _ingest_body(uid) if target == "usage" else {}
    key = new_key(db, uid)["key"]
    for headers in ({}, bearer(token(uid)), {"X-API-Key": key}, bearer(key), bearer(fnsupport.role_key("service_role")),
                    bearer(SERVICE_SECRET + "x"), {"X-Service-Secret": SERVICE_SECRET[:-1]}):
        assert_401(api.post(target, body, headers=headers), "service_credentials_required")
    assert db.one("select count(*) from public.usage_logs where user_id = %s", (uid,)) == 0


@pytest.mark.parametrize("target", ["usage", "refresh_views"])
@pytest.mark.parametrize("style", ["bearer", "x-service-secret"])
def test_service_operations_accept_the_service_secret(api: Any, target: str, style: str) -> None:
    db: Sql = api.db
    uid = db.make_user(balance=5)
    body = _ingest_body(uid) if target == "usage" else {}
    headers = bearer(SERVICE_SECRET) if style == "bearer" else {"X-Service-Secret": SERVICE_SECRET}
    r = api.post(target, body, headers=headers)
    assert 200 <= r.status_code < 300, r.json
    if target == "usage":
        assert r.json == {"received": 1, "inserted": 1, "duplicates": 0}


# -- property tests ----------------------------------------------------------------------------------------

def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@given(st.text(min_size=1, max_size=200).filter(lambda s: not _is_uuid(s)), st.uuids(), st.uuids())
def test_non_uuid_session_ids_are_names_with_their_former_per_user_uuid5(
        name: str, alice: uuid.UUID, bob: uuid.UUID) -> None:
    ref = session_ref(alice, name)
    assert ref == {"session_name": name, "legacy_session_id": uuid.uuid5(alice, name)}
    assert ref["legacy_session_id"].version == 5
    if bob != alice:
        assert session_ref(bob, name)["legacy_session_id"] != ref["legacy_session_id"]


@given(st.uuids(), st.uuids())
def test_uuid_session_ids_name_existing_sessions(user: uuid.UUID, session: uuid.UUID) -> None:
    assert session_ref(user, str(session)) == {"session_id": session}
    assert session_ref(user, None) == {}


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=10)
_cursor_like = _json.map(lambda v: _b64(json.dumps(v).encode()))
_KEYSETS = st.sampled_from([frozenset({"t", "id"}), frozenset({"seq"}), frozenset()])


@given(st.one_of(st.text(max_size=400), _cursor_like, st.binary(max_size=300).map(_b64)), _KEYSETS)
def test_decode_cursor_returns_the_keys_asked_for_or_raises_cursor_error(text: str, keys: frozenset[str]) -> None:
    try:
        values = decode_cursor(text, set(keys))
    except CursorError:
        return
    assert isinstance(values, dict) and set(values) == keys


@given(st.dictionaries(st.sampled_from(["t", "id", "seq"]), _json, min_size=1))
def test_decode_cursor_reads_back_what_encode_cursor_wrote(values: dict[str, Any]) -> None:
    assert decode_cursor(encode_cursor(values), set(values)) == values


def test_decode_cursor_on_deeply_nested_json_raises_cursor_error() -> None:
    with pytest.raises(CursorError):
        decode_cursor(_b64(b"[" * 100_000), {"seq"})

