"""Operations: ``POST /admin/reload``, ``/health`` and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from avrec.serve.dependencies import WRITE, Service

router = APIRouter()


@router.post("/admin/reload", dependencies=WRITE, tags=["admin"])
def reload(service: Service) -> dict[str, Any]:
    """Load the model folder again and swap it in without dropping requests."""
    return service.reload()


@router.get("/health", tags=["operations"])
def health(service: Service) -> dict[str, Any]:
    return service.health()


@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
def prometheus(request: Request, service: Service) -> PlainTextResponse:
    text = request.app.state.metrics.render(service)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
