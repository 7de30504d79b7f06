"""The catalogue: ``GET /items/{item_id}``, ``GET /items/{item_id}/summary`` and ``POST /items``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from avrec.serve.dependencies import WRITE, Service
from avrec.serve.schemas import ERROR_RESPONSES, ItemP, ItemsBatch, ItemsBody, ItemsResponse, ProfileQ

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/items/{item_id}", tags=["catalogue"])
def get_item(service: Service, item_id: ItemP, profile: ProfileQ = None) -> dict[str, Any]:
    """One item's metadata (a 404 for an item the content rules block)."""
    return service.item(item_id, profile=profile)


@router.get("/items/{item_id}/summary", tags=["catalogue"])
def get_summary(service: Service, item_id: ItemP, profile: ProfileQ = None) -> dict[str, Any]:
    """A short extractive summary: a metadata line and the item's most central sentences, each listed in
    ``sources``; disallowed terms masked; a 404 for an item the content rules block."""
    return service.summary(item_id, profile=profile)


@router.post("/items", response_model=ItemsResponse, dependencies=WRITE, tags=["write"])
def add_items(service: Service, body: Annotated[ItemsBody, Body()]):
    """Add one item or ``{"items": [...]}`` to the catalogue, searchable (and recommendable) at once."""
    items = body.items if isinstance(body, ItemsBatch) else [body]
    return service.add_items([it.record() for it in items])
