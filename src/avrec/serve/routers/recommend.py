"""``/recommend`` (a user id, or a history in the body) and ``/explain``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from avrec.serve.dependencies import Inline, Service
from avrec.serve.fastpath import recommend_body
from avrec.serve.handlers import durable_bytes, durable_json
from avrec.serve.schemas import (
    ERROR_RESPONSES,
    ExplainResponse,
    HistoryRequest,
    ItemQ,
    K,
    ProfileQ,
    RecommendResponse,
    UserQ,
)
from avrec.serve.stores.group_commit import PendingWrites

router = APIRouter(tags=["recommend"], responses=ERROR_RESPONSES)


@router.get("/recommend", response_model=RecommendResponse, response_model_exclude_unset=True)
async def recommend(request: Request, service: Service, inline: Inline, user_id: UserQ, k: K = 10,
                    explain: bool = False, details: bool = False, profile: ProfileQ = None):
    """Top-k for a user; unknown users get popular items with ``fallback: true``."""
    # plainly valid requests are answered by avrec.serve.fastpath before FastAPI, the same way as here
    pending = PendingWrites(asyncio.get_running_loop())
    out = await recommend_body(service, inline, user_id, k, explain, details, profile, pending,
                               request.scope.get("avrec.arrived"))
    return await durable_bytes(out, pending)


@router.post("/recommend", response_model=RecommendResponse, response_model_exclude_unset=True)
async def recommend_history(service: Service, inline: Inline, body: HistoryRequest):
    """Top-k for an anonymous or new user from a history given in the body."""
    pending = PendingWrites(asyncio.get_running_loop())
    out = await inline(f"history/{body.explain}/{body.details}", service.recommend_for_history, body.history,
                       k=body.k, exclude=body.exclude, explain=body.explain, details=body.details,
                       user_id=body.user_id, profile=body.profile, pending=pending)
    return await durable_json(out, pending)


@router.get("/explain", response_model=ExplainResponse)
def explain(service: Service, user_id: UserQ, item_id: ItemQ, profile: ProfileQ = None):
    """Why this item for this user: evidence and a sentence."""
    return service.explain(user_id, item_id, profile=profile)
