"""Which models exist and which one answers a request that names none.

One rule: `DEFAULT_MODEL` when set; otherwise the `is_default` model of `MODEL_PROVIDER`'s provider in
`public.model_prices` (one default per provider, editable from the dashboard). begin_charge applies the
same rule in SQL; this module only reports it (health, GET /chat/models).
"""

from __future__ import annotations

from typing import Any

from functions.db import SERVICE, Database
from functions.settings import Settings


async def active_models(db: Database) -> list[dict[str, Any]]:
    """The active models with their prices, defaults first."""
    models: list[dict[str, Any]] = await db.rpc("list_models", {}, SERVICE)
    return models


async def default_model(db: Database, settings: Settings, models: list[dict[str, Any]] | None = None) -> str | None:
    """The model a request that names none gets, or None when the configured provider has no default."""
    if settings.default_model:
        return settings.default_model
    listed = await active_models(db) if models is None else models
    return next((m["model"] for m in listed if m["is_default"] and m["provider"] == settings.model_provider), None)
