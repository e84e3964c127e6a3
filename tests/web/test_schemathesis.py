"""Property-based fuzzing of the whole REST API with schemathesis (4.x), in-process through ASGI.

Every operation of /openapi.json gets generated requests (valid and invalid), sent with a logged-in
admin session and its CSRF token, against a real station whose synthetic line has recorded parts.
The check: no response is a server error (5xx), whatever the input.

Left out (see EXCLUDED): ``GET /api/events`` (a live event stream that never ends), ``POST /api/logout``
(it would end the session every other request needs), and the model routes that start background
training / evaluation / shadow work; their roles are covered by test_security.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from station.app import Station
from station.web import auth, create_app
from tests.fixtures_review import query, recorded_station

from .helpers import login

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
EXAMPLES = 12  # per operation and phase: the whole run stays well under a minute on 2 cores
EXCLUDED = {
    "/api/events": "a live event stream that never ends",
    "/api/logout": "would end the session every other request needs",
    # these start background work (training, evaluation or shadow inference with torch / onnxruntime):
    # a fuzzer that guesses a valid snapshot id or model sha would keep both cores busy for minutes
    "/api/models/train": "starts a training job",
    "/api/models/{sha}/evaluate": "starts an evaluation",
    "/api/models/{sha}/shadow": "starts shadow inference",
}


@pytest.fixture
def fuzz_target(make_station: Callable[..., Station]) -> Iterator[tuple[FastAPI, Station]]:
    """The app of a station with recorded parts, a reviewed image and a snapshot (so ids 1, 2, ... exist)."""
    import labeling
    from station.store.db import open_db

    station = recorded_station(make_station, parts=8)
    image_id = query(station, "SELECT MIN(id) FROM images")[0][0]
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        labeling.mark_reviewed(db, "seed", image_id)
        labeling.create_snapshot(db, "seed", class_names=list(station.inspector.names))
    finally:
        db.close()
    app = create_app(station)
    yield app, station
    app.state.web.db.close()


@pytest.fixture
def api_schema(fuzz_target: tuple[FastAPI, Station]) -> Any:
    app, _ = fuzz_target
    return schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path=list(EXCLUDED))


@pytest.fixture
def admin_session(fuzz_target: tuple[FastAPI, Station]) -> dict[str, Any]:
    """Cookies and headers of a logged-in admin (every role-gated route is reachable)."""
    app, _ = fuzz_target
    c = TestClient(app)  # no `with`: the app's lifespan would close its database at exit
    csrf = login(c, "boss")
    return {"cookies": {auth.SESSION_COOKIE: c.cookies.get(auth.SESSION_COOKIE)}, "headers": {auth.CSRF_HEADER: csrf}}


def fuzz_operation(op: Any, mode: GenerationMode, session: dict[str, Any], seen: set[int]) -> None:
    """Run EXAMPLES generated cases of one operation; raises on the first server error (shrunk by hypothesis).

    ``seen`` collects the status codes answered.
    """

    @given(case=op.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
    )
    def run(case: Any) -> None:
        headers = {**(case.headers or {}), **session["headers"]}
        response = case.call_and_validate(headers=headers, cookies=session["cookies"], checks=[not_a_server_error])
        seen.add(response.status_code)

    run()


def test_no_server_error_on_any_route(api_schema: Any, admin_session: dict[str, Any]) -> None:
    """Valid and invalid generated requests to every operation: never a 5xx.

    (``schemathesis.pytest.from_fixture`` would give one subtest per operation, but it does not run
    under pytest 9, so the operations are walked here with the Python API: ``APIOperation.as_strategy``.)
    """
    failures: list[str] = []
    statuses: dict[str, set[int]] = {}
    for result in api_schema.get_all_operations():
        op = result.ok()
        seen = statuses.setdefault(op.label, set())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_operation(op, mode, admin_session, seen)
            except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
                continue
            except Exception as exc:  # noqa: BLE001 - every operation runs; all failures are reported together
                failures.append(f"{op.label} [{mode.value}]: {exc}")
    assert not failures, "\n\n".join(failures)
    assert len(statuses) >= 30
    # the session really was logged in: role-gated operations answered beyond 401/403
    for label in (
        "GET /api/review/queue",
        "GET /api/review/images/{image_id}",
        "POST /api/review/images/{image_id}/labels",
        "GET /api/review/stats",
        "GET /api/users",
    ):
        assert statuses[label] - {401, 403}, (label, statuses[label])
    assert 200 in statuses["GET /api/review/queue"] and 422 in statuses["GET /api/review/queue"]


def test_the_fuzzer_reaches_the_review_api(fuzz_target: tuple[FastAPI, Station], api_schema: Any) -> None:
    """The schema the fuzzer walks holds the review, dataset and statistics operations."""
    ops = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in api_schema.get_all_operations())}
    for needed in (
        "GET /api/review/queue",
        "POST /api/review/images/{image_id}/labels",
        "PATCH /api/review/images/{image_id}/labels/{label_id}",
        "DELETE /api/review/images/{image_id}/labels/{label_id}",
        "POST /api/review/import",
        "GET /api/review/stats",
        "GET /api/review/snapshots/{snapshot_id}/yolo",
        "POST /api/login",
        "POST /api/line/pause",
    ):
        assert needed in ops, needed
    assert not any(op.split(" ", 1)[1] in EXCLUDED for op in ops)
