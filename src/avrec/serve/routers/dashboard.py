"""The operations dashboard: ``/dashboard`` (a page beside the user page) and ``/dashboard/data`` (its JSON)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from avrec.serve.dependencies import Service
from avrec.serve.routers.web import STATIC_DIR
from avrec.serve.schemas import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/dashboard", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "dashboard.html")


@router.get("/dashboard/data", tags=["operations"])
def data(service: Service,
         bucket: Annotated[int, Query(ge=60, le=30 * 86400, description="seconds per point of the series")] = 3600,
         since: Annotated[float | None, Query(ge=0, description="only impressions from this epoch second")] = None,
         ) -> dict[str, Any]:
    """Impressions, rewards and reward rate per policy (totals and per ``bucket``), catalogue coverage of
    what was shown, the model versions with probe NDCG and promotion history, and the latest OPE estimates."""
    from avrec.serve.policy_stats import coverage, latest_ope, policy_series, policy_totals
    from avrec.serve.versioning import list_versions

    state = service.state
    log = service.explorer.impressions
    rewards = service.config.rewards
    shown = coverage(log, len(state.catalog), since)
    for m in shown["most_shown"]:
        row = state.catalog_index.get(m["item_id"])
        m["title"] = state.title(row) if row is not None else m["item_id"]
    return {
        "generated_at": time.time(), "bucket": bucket, "since": since,
        "model": state.model.name, "version": state.version, "policy": service.explorer.describe(),
        "policies": policy_totals(log, rewards, since), "series": policy_series(log, rewards, bucket, since),
        "coverage": shown, "versions": list_versions(service),
        "ope": latest_ope(log),
    }
