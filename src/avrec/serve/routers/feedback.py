"""``POST /feedback``: one event or a batch, answered once durable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from avrec.serve.dependencies import WRITE, Service
from avrec.serve.schemas import ERROR_RESPONSES, FeedbackBatch, FeedbackBody, FeedbackResponse

router = APIRouter(tags=["write"], responses=ERROR_RESPONSES)


@router.post("/feedback", response_model=FeedbackResponse, dependencies=WRITE)
def feedback(service: Service, body: Annotated[FeedbackBody, Body()]):
    """Store one event or ``{"events": [...]}``; answered once the events are durable."""
    events = body.events if isinstance(body, FeedbackBatch) else [body]
    return service.feedback([e.model_dump() for e in events])
