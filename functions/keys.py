"""`keys`: the caller's API keys. POST creates one (the key is in the answer once, never again), GET lists
them (never a secret), DELETE /keys/<id> revokes one. A user's access token only: an API key cannot
create, list or revoke keys (`functions.auth.Principal.require`).

The RPCs run as the user (`authenticated`, with the user's own token over the supabase transport), exactly
as the browser calls them through PostgREST; scopes and expiry are checked in SQL."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from functions.errors import NotFound
from functions.http import Context, endpoint, json_response
from functions.schemas import KeyCreateRequest


@endpoint("keys", methods=("GET", "POST"), subpaths={"/*": ("DELETE",)})
async def handle(ctx: Context) -> Response | Mapping[str, Any]:
    """List (GET /keys), create (POST /keys) or revoke (DELETE /keys/<id>) the caller's API keys."""
    key_path = ctx.path.strip("/")
    method = ctx.method
    principal = await ctx.authenticate_user()
    if method == "DELETE":
        try:
            key_id = uuid.UUID(key_path)
        except ValueError:
            raise NotFound(code="api_key_not_found") from None
        revoked: dict[str, Any] = await ctx.db.rpc("revoke_api_key", {"key_id": key_id, "user_id": principal.user_id},
                                             principal.caller)
        ctx.log_fields["api_key_revoked"] = str(key_id)
        return revoked
    if method == "GET":
        keys = await ctx.db.rpc("list_api_keys", {"user_id": principal.user_id}, principal.caller)
        return {"items": keys}
    body = await ctx.json_body(KeyCreateRequest)
    created: dict[str, Any] = await ctx.db.rpc("create_api_key", {
        "name": body.name, "scopes": body.scopes, "expires_at": body.expires_at,
        "expires_in_days": body.expires_in_days, "user_id": principal.user_id}, principal.caller)
    ctx.log_fields["api_key_created"] = created["id"]
    response = json_response(created, status=201)
    response.headers["Cache-Control"] = "no-store"  # the only time the key is ever sent
    return response
