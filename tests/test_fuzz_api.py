"""Schemathesis against the server's own ``/openapi.json`` (issue 15), in-process over ASGI.

Every documented route gets a bounded number of generated requests, valid ones (schemathesis' positive
mode) and invalid ones (negative mode: wrong types, missing fields, out-of-range values), sent with the API
key so the write routes are reached too, against a small fitted model with its event store in tmp. The
checks: no 5xx (``not_a_server_error``), every response body matches the documented schema
(``response_schema_conformance``) and its status code is one the route documents
(``status_code_conformance``). The long run is ``benchmarks/fuzz_api.py`` (it calls :func:`fuzz`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from serve_fixtures import fit_tiny

KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("AVREC_FUZZ_EXAMPLES", "12"))


def fuzz_app(tmp: Path, search: bool = False) -> tuple[Any, Any]:
    """(app, service) over a tiny itemknn model, writes behind ``KEY``, the store in ``tmp``."""
    from avrec.serve import EventStore, RecommenderService, ServeConfig, create_app

    service = RecommenderService(fit_tiny(tmp / "model", "itemknn"), EventStore(tmp / "events.sqlite3"),
                                 ServeConfig(api_key=KEY, search=search, watch_interval=0,
                                             cache_dir=str(tmp / "cache")))
    if search:
        service.state.search_ready.wait(120)
    return create_app(service, watch=False), service


def fuzz(app: Any, examples: int, seed: int = 15) -> dict[str, Any]:
    """Run schemathesis over every operation of ``app``'s schema, ``examples`` per operation and mode.

    Returns ``{"operations": [{label, mode, examples, failures: [...]}, ...]}``; a failure is the check's
    message with the request that caused it (the failing examples do not stop the others).
    """
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            count, failures = _fuzz_operation(operation, mode, examples, seed)
            report.append({"label": operation.label, "mode": mode.value, "examples": count,
                           "failures": sorted(set(failures))})
    return {"operations": report}


def _fuzz_operation(operation: Any, mode: Any, examples: int, seed: int) -> tuple[int, list[str]]:
    """(requests sent, failures) for one operation in one generation mode."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    checks = [not_a_server_error, response_schema_conformance, status_code_conformance]
    failures: list[str] = []
    count = 0

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        nonlocal count
        count += 1
        try:
            case.call_and_validate(headers={"X-API-Key": KEY}, checks=checks)
        except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - every failing check is collected
            text = f"{type(e).__name__}: {e}".strip()
            failures.append(f"{case.method} {case.formatted_path} query={case.query} "
                            f"body={getattr(case, 'body', None)!r}: {text[:1500]}")

    try:
        run()
    except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - e.g. no negative case can be generated
        if "unsatisfiable" not in f"{type(e).__name__} {e}".lower():
            failures.append(f"generation: {type(e).__name__}: {e}"[:1500])
    return count, failures


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, service = fuzz_app(tmp_path_factory.mktemp("fuzz"), search=True)
    yield app
    service.close()


def test_every_route_answers_within_its_schema(app):
    report = fuzz(app, EXAMPLES)["operations"]
    labels = {op["label"] for op in report}
    assert {"GET /recommend", "POST /feedback", "GET /health", "POST /items"} <= labels, labels
    assert sum(op["examples"] for op in report) >= len(report) * 2  # the generator reached every route
    failed = [f"{op['label']} [{op['mode']}]: {f}" for op in report for f in op["failures"]]
    assert not failed, "\n\n".join(failed[:10]) + f"\n\n({len(failed)} failures in all)"
