"""Operations: ``POST /admin/reload``, model versions (``/admin/versions``), ``/health`` and ``/metrics``
(Prometheus text format)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import PlainTextResponse

from avrec.serve.dependencies import WRITE, Service
from avrec.serve.schemas import ERROR_RESPONSES, PromoteRequest, RollbackRequest

router = APIRouter(responses=ERROR_RESPONSES)


@router.post("/admin/reload", dependencies=WRITE, tags=["admin"])
def reload(service: Service) -> dict[str, Any]:
    """Load the model folder again and swap it in without dropping requests."""
    return service.reload()


@router.get("/admin/versions", tags=["admin"])
def versions(service: Service) -> dict[str, Any]:
    """The model versions `avrec update` wrote, with probe NDCG@10, status and the promotion history."""
    from avrec.serve.versioning import list_versions

    return list_versions(service)


@router.post("/admin/versions/promote", dependencies=WRITE, tags=["admin"])
def promote(service: Service, body: Annotated[PromoteRequest, Body()]) -> dict[str, Any]:
    """Serve ``version`` now (the pointer is switched atomically and the model reloaded)."""
    from avrec.serve.versioning import switch_version

    return switch_version(service, "promote", body.version, body.reason)


@router.post("/admin/versions/rollback", dependencies=WRITE, tags=["admin"])
def rollback(service: Service, body: Annotated[RollbackRequest, Body()]) -> dict[str, Any]:
    """Serve ``to``, or the version before the current one."""
    from avrec.serve.versioning import switch_version

    return switch_version(service, "rollback", body.to, body.reason)


@router.get("/health", tags=["operations"])
def health(service: Service) -> dict[str, Any]:
    return service.health()


@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
def prometheus(request: Request, service: Service) -> PlainTextResponse:
    text = request.app.state.metrics.render(service)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
