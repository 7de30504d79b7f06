"""Model versions through the API: ``GET /admin/versions`` and ``POST /admin/versions/promote|rollback``.

The versions are those ``avrec update`` writes (:mod:`avrec.models.versions`); a promotion or rollback
switches the pointer under the folder's lock and reloads the service at once (the watcher would too).
"""

from __future__ import annotations

from typing import Any

from avrec.errors import DataError
from avrec.models.versions import VersionHome, is_home
from avrec.serve.errors import Conflict, NotFound, ServiceError
from avrec.serve.service import RecommenderService


def list_versions(service: RecommenderService) -> dict[str, Any]:
    """The versions, the pointer, what this server serves, and the promotion history (newest last)."""
    serving = service.state.version
    if service.model_dir is None or not is_home(service.model_dir):
        return {"versioned": False, "current": None, "serving": serving, "versions": [], "history": []}
    home = VersionHome(service.model_dir)
    return {"versioned": True, "current": home.current(), "serving": serving, "versions": home.versions(),
            "history": home.registry()["history"]}


def switch_version(service: RecommenderService, action: str, version: str | None, reason: str) -> dict[str, Any]:
    """Promote ``version`` (or roll back to it, or to the previous one) and reload; 404/409 on bad requests."""
    if service.model_dir is None or not is_home(service.model_dir):
        raise ServiceError("this model folder has no versions (the first `avrec update` creates them)")
    home = VersionHome(service.model_dir)
    try:
        with home.lock():
            if action == "promote":
                assert version is not None
                moved = home.promote(version, reason)
            else:
                moved = home.rollback(version, reason)
    except DataError as e:
        text = str(e)
        if "another update" in text:
            raise Conflict(text) from None
        if "no version" in text or "not on disk" in text:
            raise NotFound(text) from None
        raise ServiceError(text) from None
    service.reload()
    return {**moved, "serving": service.state.version}
