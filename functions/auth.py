"""Who is calling: a Supabase access token (JWT), an API key, or the service secret.

Access tokens are verified by signature with the algorithms fixed by configuration (never the token's
header): asymmetric keys from the project's JWKS (cached at most `JWKS_CACHE_SECONDS`, refetched once on
an unknown `kid` so rotated keys work), or the legacy HS256 secret. `exp`, `iat`, `sub`, `iss` and `aud`
are required. API keys (`sk_...`) are checked by the database. Anything missing, expired, forged or
revoked is 401, and so is an expired API key; a blocked or paused account using an API key is 403, and so is
a key used outside its scopes (`Principal.require`: one check for every function).
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jwt

from functions.db import SERVICE, Caller, Database
from functions.errors import Forbidden, ServiceUnavailable, Unauthorized
from functions.loops import PerLoop
from functions.settings import DEV_JWT_SECRET, DEV_SERVICE_SECRET, Settings

LOCAL_ISSUER = "http://127.0.0.1:54321/auth/v1"  # what `supabase start` issues locally


# The scope an API key needs for each function. A function not listed here refuses API keys altogether:
# `keys` (creating, listing, revoking keys) takes the user's own access token only.
KEY_SCOPES = ("models", "usage:read")
FUNCTION_SCOPES: dict[str, str] = {"chat": "models", "compile": "models", "v1": "models", "usage": "usage:read"}
_TOKEN_ONLY_REASONS = {"keys": "An API key cannot create, list or revoke keys"}
_VERIFIED_MAX = 4096  # verified tokens kept per process (a token and its claims: ~2 KB each)


@dataclass(frozen=True)
class Principal:
    """The authenticated user. An access token may do everything the user may; an API key only what its
    `scopes` allow (`require` is the one check)."""

    user_id: uuid.UUID
    method: Literal["jwt", "api_key"]
    caller: Caller
    scopes: frozenset[str] = frozenset(KEY_SCOPES)
    key_id: uuid.UUID | None = None

    def require(self, function: str) -> None:
        """403 unless this caller may use `function`: any access token; an API key with the function's scope."""
        if self.method == "jwt":
            return
        scope = FUNCTION_SCOPES.get(function)
        if scope is None:
            reason = _TOKEN_ONLY_REASONS.get(function, f"An API key cannot call {function}")
            raise Forbidden(f"{reason}: sign in and use your access token.", code="access_token_required")
        if scope not in self.scopes:
            raise Forbidden(
                f"This API key lacks the '{scope}' scope that {function} needs; its scopes are "
                f"{', '.join(sorted(self.scopes))}.",
                code="insufficient_scope", details={"required_scope": scope, "key_scopes": sorted(self.scopes)})


def _bearer(headers: Any) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return str(token.strip())


class Jwks:
    """The project's signing keys, fetched with httpx and cached; one refetch on an unknown kid. Concurrent
    requests that find the cache stale wait for one fetch."""

    def __init__(self, url: str, ttl: float) -> None:
        self.url = url
        self.ttl = ttl
        self.clients: PerLoop[httpx.AsyncClient] = PerLoop(_make_client, _close_client)
        self._locks: PerLoop[asyncio.Lock] = PerLoop(_make_lock, _forget)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = 0.0

    async def _refresh(self) -> None:
        try:
            response = await (await self.clients.get()).get(self.url)
            response.raise_for_status()
            keyset = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            raise ServiceUnavailable("The signing keys of the project could not be fetched; try again shortly.",
                                     code="jwks_unavailable") from exc
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}
        self._fetched = time.monotonic()

    def _must_fetch(self, kid: str | None) -> bool:
        age = time.monotonic() - self._fetched
        return age > self.ttl or (kid not in self._keys and age > 1.0)

    async def key(self, kid: str | None) -> jwt.PyJWK:
        if self._must_fetch(kid):
            async with await self._locks.get():
                if self._must_fetch(kid):  # not fetched meanwhile by the request we waited for
                    await self._refresh()
        if kid not in self._keys:
            raise Unauthorized("The access token is signed by an unknown key.", code="invalid_token")
        return self._keys[kid]


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        secret = settings.secret("supabase_jwt_secret")
        if secret is None and settings.jwks_url is None and settings.environment != "production":
            secret = DEV_JWT_SECRET
        self.hs_secret = secret
        self.issuer = settings.issuer or LOCAL_ISSUER
        self.jwks = Jwks(settings.jwks_url, settings.jwks_cache_seconds) if settings.jwks_url else None
        algorithms = list(settings.jwt_algorithms)
        if self.hs_secret and "HS256" not in algorithms:
            algorithms.append("HS256")
        self.algorithms = algorithms
        service = settings.secret("service_secret")
        if service is None and settings.environment != "production":
            service = DEV_SERVICE_SECRET
        self.service_secret = service
        # Tokens already verified: token -> (claims, monotonic time until which the entry may answer).
        self._verified: dict[str, tuple[dict[str, Any], float]] = {}

    async def aclose(self) -> None:
        """Close this event loop's JWKS client."""
        if self.jwks is not None:
            await self.jwks.clients.aclose()

    def close(self) -> None:
        if self.jwks is not None:
            self.jwks.clients.close_all()

    # -- users ---------------------------------------------------------------------------------------

    async def user(self, headers: Any, db: Database, function: str) -> Principal:
        """The user behind the request's token or API key, allowed to call `function`; or 401/403."""
        principal = await self.identify(headers, db)
        principal.require(function)
        return principal

    async def identify(self, headers: Any, db: Database) -> Principal:
        """The user behind the request's token or API key (401/403 when there is none or it is refused),
        before any scope check: call `Principal.require` next, or use `user`."""
        api_key = headers.get("X-API-Key") or None
        token = _bearer(headers)
        if api_key is None and token is not None and token.startswith("sk_"):
            api_key, token = token, None
        elif token is None and api_key is not None and not api_key.startswith("sk_") and api_key.count(".") == 2:
            api_key, token = None, api_key  # an access token in x-api-key (the Anthropic SDK's api_key)
        if api_key is not None:
            principal = await self._api_key(api_key, db)
        elif token is None:
            raise Unauthorized("Send an access token or an API key in the Authorization header.",
                               code="missing_credentials")
        else:
            principal = await self._jwt(token)
        return principal

    async def verify_token(self, token: str) -> dict[str, Any]:
        """The claims of a valid access token; 401 otherwise.

        A browser sends the same token with every request for its lifetime, so a verified token's claims are
        kept (keyed by the whole token, signature included) until the token expires, and for a JWKS-signed
        token no longer than the signing keys are cached (a key removed from the JWKS stops counting as
        soon as the key cache would have noticed). Expired entries are checked out, never trusted: the
        full verification runs again and answers 401 `token_expired`."""
        cached = self._verified.get(token)
        if cached is not None:
            if time.monotonic() < cached[1]:
                return dict(cached[0])
            del self._verified[token]
        claims, alg = await self._verify(token)
        self._remember(token, claims, alg)
        return dict(claims)

    def _remember(self, token: str, claims: dict[str, Any], alg: str) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            return
        # PyJWT accepts a token until exp + leeway (wall clock); the entry ends at exp itself, in monotonic time.
        lifetime = exp - time.time()
        if alg != "HS256":  # signed by a JWKS key: no longer than the keys are cached
            lifetime = min(lifetime, self.jwks.ttl if self.jwks is not None else 0.0)
        if lifetime <= 0:
            return
        if len(self._verified) >= _VERIFIED_MAX:  # drop the expired entries, else the oldest one
            now = time.monotonic()
            entries = list(self._verified.items())  # a snapshot: another loop's thread may add meanwhile
            for old in [t for t, (_, until) in entries if until <= now] or [entries[0][0]]:
                self._verified.pop(old, None)
        self._verified[token] = (claims, time.monotonic() + lifetime)

    async def _verify(self, token: str) -> tuple[dict[str, Any], str]:
        """The claims of a valid access token and the algorithm that signed it; 401 otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is malformed.", code="invalid_token") from exc
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise Unauthorized("The access token's signing algorithm is not accepted.", code="invalid_token")
        key: Any
        if alg == "HS256":
            if not self.hs_secret:
                raise Unauthorized("The access token's signing algorithm is not accepted.", code="invalid_token")
            key = self.hs_secret
        else:
            if self.jwks is None:
                raise Unauthorized("The access token's signing algorithm is not accepted.", code="invalid_token")
            key = await self.jwks.key(header.get("kid"))
        try:
            return dict(jwt.decode(
                token, key, algorithms=[alg], audience=self.settings.jwt_audience, issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]}, leeway=5,
            )), str(alg)
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired; sign in again.", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is not valid.", code="invalid_token") from exc

    async def _jwt(self, token: str) -> Principal:
        claims = await self.verify_token(token)
        if claims.get("role", "authenticated") != "authenticated":
            raise Unauthorized("A user's access token is required.", code="invalid_token")
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError as exc:
            raise Unauthorized("The access token's subject is not a user id.", code="invalid_token") from exc
        return Principal(user_id, "jwt", Caller("authenticated", user_id, token))

    async def _api_key(self, key: str, db: Database) -> Principal:
        found = await db.rpc("authenticate_api_key", {"key": key}, SERVICE)  # 401 unknown, revoked or expired
        if found.get("status") != "active":
            raise Forbidden(code=f"account_{found.get('status')}")
        user_id = uuid.UUID(found["user_id"])
        return Principal(user_id, "api_key", Caller("authenticated", user_id, None),
                         frozenset(found.get("scopes") or ()), uuid.UUID(found["key_id"]))

    # -- services ------------------------------------------------------------------------------------

    def service(self, headers: Any) -> None:
        """Pass only the service secret (scheduler, ingest); 401 for anything else, user tokens included."""
        token = _bearer(headers) or headers.get("X-Service-Secret")
        if not token or not self.service_secret or not hmac.compare_digest(
            token.encode(), self.service_secret.encode()
        ):
            raise Unauthorized("This operation needs the service secret.", code="service_credentials_required")


async def _make_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(5.0))


async def _close_client(client: httpx.AsyncClient) -> None:
    await client.aclose()


async def _make_lock() -> asyncio.Lock:
    return asyncio.Lock()


async def _forget(_lock: asyncio.Lock) -> None:
    return None


def mint_dev_token(user_id: uuid.UUID | str, *, secret: str = DEV_JWT_SECRET, issuer: str = LOCAL_ISSUER,
                   ttl_seconds: int = 24 * 3600, email: str | None = None) -> str:
    """An HS256 access token shaped like Supabase's, for local development and tests only."""
    now = int(time.time())
    claims = {"sub": str(user_id), "aud": "authenticated", "role": "authenticated", "iss": issuer,
              "iat": now, "exp": now + ttl_seconds, "email": email, "session_id": str(uuid.uuid4())}
    return jwt.encode(claims, secret, algorithm="HS256")
