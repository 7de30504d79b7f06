"""``/users`` and ``/users/{user_id}/history``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from avrec.serve.dependencies import Service
from avrec.serve.schemas import ERROR_RESPONSES, ProfileQ, UserP

router = APIRouter(tags=["users"], responses=ERROR_RESPONSES)


@router.get("/users/{user_id}/history")
def history(service: Service, user_id: UserP,
            limit: Annotated[int, Query(ge=1, le=10_000)] = 100, profile: ProfileQ = None) -> dict[str, Any]:
    """A user's feedback (newest first) and training history."""
    return service.history(user_id, limit=limit, profile=profile)


@router.get("/users")
def users(service: Service, limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
          offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """User ids the service knows (the model's, then new users from the store)."""
    return service.users(limit=limit, offset=offset)
