"""``/similar/{item_id}`` and ``/search`` (natural language, optionally personalised)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.exceptions import HTTPException

from avrec.serve.dependencies import Inline, Service
from avrec.serve.fastpath import similar_body
from avrec.serve.handlers import durable_bytes
from avrec.serve.schemas import (
    ERROR_RESPONSES,
    ID_MAX_LENGTH,
    ID_PATTERN,
    ItemP,
    K,
    ProfileQ,
    SearchResponse,
    SimilarResponse,
)
from avrec.serve.stores.group_commit import PendingWrites

router = APIRouter(tags=["recommend"], responses=ERROR_RESPONSES)


@router.get("/similar/{item_id}", response_model=SimilarResponse, response_model_exclude_unset=True)
async def similar(
    service: Service, inline: Inline, item_id: ItemP, k: K = 10, profile: ProfileQ = None,
    by: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                             description="model (default), text, or a modality: audio, video, image, ...")] = "model",
):
    """Items most similar to one item: by the model, by text, or by one modality (``?by=audio``)."""
    # plainly valid requests are answered by avrec.serve.fastpath, the same way
    pending = PendingWrites(asyncio.get_running_loop())
    out = await similar_body(service, inline, item_id, k, profile, by, pending)
    return await durable_bytes(out, pending)


@router.get("/search", response_model=SearchResponse, response_model_exclude_unset=True)
def search(
    service: Service,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="a natural-language request")],
    k: K = 10,
    user_id: Annotated[str | None, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)] = None,
    personal_weight: Annotated[float | None, Query(ge=0, le=1)] = None,
    details: bool = False,
    profile: ProfileQ = None,
):
    """Items matching a sentence, through the text encoder; ``user_id`` blends in that user's scores."""
    if not q.strip():
        raise HTTPException(422, "invalid request: query.q: must not be blank")
    return service.search(q, k=k, user_id=user_id, personal_weight=personal_weight, details=details,
                          profile=profile)
