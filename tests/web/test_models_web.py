"""The models page's API against a real station: training, evaluation, gate, override, rollback, shadow, thresholds,
golden sets.

Everything is real: a Station replaying images through a folder camera and an Ultralytics ONNX
model, the station's SQLite database, a training run through models.jobs (a subprocess running
Ultralytics), evaluation workers running the production path, the registry's gate, the hot swap.
See tests/fixtures_models_web.py for the images and models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from station.app import Station
from station.web import create_app
from tests.fixtures_models_web import ModelsLine, review_recorded_images, run_parts, snapshot, wait_for
from tests.model_factory import DET_NAMES, detecting_model, tiny_model

from .helpers import login

N_SCENES = 24


@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    return {"good": detecting_model(), "weak": tiny_model("detect")}


@pytest.fixture
def line(tmp_path: Path, models: dict[str, Path]) -> Iterator[ModelsLine]:
    ln = ModelsLine(tmp_path, models["weak"], N_SCENES, 101, golden=("g1", 36, 202))
    yield ln
    ln.station.stop()


@pytest.fixture
def client(line: ModelsLine) -> Iterator[TestClient]:
    with TestClient(create_app(line.station)) as c:
        yield c


def h(csrf: str) -> dict[str, str]:
    return {"X-CSRF-Token": csrf}


def wait_eval(client: TestClient, eval_id: str, timeout_s: float = 120) -> dict[str, Any]:
    def done() -> Any:
        r = client.get(f"/api/models/evaluations/{eval_id}").json()
        return r if r["state"]["status"] != "running" else None

    res = wait_for(done, timeout_s, f"evaluation {eval_id}")
    assert res["state"]["status"] == "succeeded", res
    return res


def evaluate(client: TestClient, csrf: str, sha: str) -> dict[str, Any]:
    r = client.post(f"/api/models/{sha}/evaluate", json={}, headers=h(csrf))
    assert r.status_code == 202, r.text
    return wait_eval(client, r.json()["eval_id"])


def sha12(station: Station) -> str:
    return station.inspector.model_id.rsplit(":", 1)[-1]


def wait_model(station: Station, sha: str) -> None:
    wait_for(lambda: sha.startswith(sha12(station)), 30, f"the line to run {sha[:12]}")


@pytest.mark.slow
def test_train_evaluate_gate_override_rollback(line: ModelsLine, client: TestClient, models: dict[str, Path]) -> None:
    st = line.station
    run_parts(st, N_SCENES)
    assert review_recorded_images(st, line.truth) == N_SCENES
    snap_id = snapshot(st, "scenes-1")
    qa = login(client, "qa")

    over = client.get("/api/models").json()
    weak = over["current"]
    assert over["running"]["is_current"] and weak.startswith(
        over["running"]["sha12"]
    )  # the configured model became current
    assert [m["status"] for m in over["models"]] == ["current"]
    good = line.register(models["good"], "model_factory")
    assert [g["golden_id"] for g in client.get("/api/models/golden").json()] == [line.golden.golden_id]
    assert client.get("/api/models/snapshots").json()[0]["id"] == snap_id

    # -- a real training run from the web API, through the job runner ------------------------------
    bad = client.post("/api/models/train", json={"snapshot_id": snap_id, "imgsz": 70}, headers=h(qa))
    assert bad.status_code == 422 and "multiple of 32" in bad.text
    assert client.post("/api/models/train", json={"snapshot_id": 999}, headers=h(qa)).status_code == 404
    r = client.post(
        "/api/models/train",
        json={"snapshot_id": snap_id, "epochs": 2, "imgsz": 64, "batch": 8, "val_fraction": 0.25},
        headers=h(qa),
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    busy = client.post("/api/models/train", json={"snapshot_id": snap_id, "epochs": 1, "imgsz": 64}, headers=h(qa))
    assert busy.status_code == 409 and "one job at a time" in busy.text
    seen: list[dict[str, Any]] = []

    def finished() -> Any:
        j = client.get(f"/api/models/jobs/{job_id}").json()
        seen.append(j)
        return j if j["status"] != "running" else None

    job = wait_for(finished, 240, "the training job")
    assert job["status"] == "succeeded", client.get(f"/api/models/jobs/{job_id}/log").json()["text"][-3000:]
    phases = [s["phase"] for s in seen]
    assert "train" in phases or "evaluate" in phases or "register" in phases  # progress was visible while it ran
    assert [e["epoch"] for e in job["epochs"]] == [1, 2] and {"box_loss", "cls_loss"} <= set(job["epochs"][0]["losses"])
    assert {"precision", "recall", "mAP50"} <= set(job["epochs"][-1]["metrics"])
    assert "job_dir" not in job and "log_path" not in job
    trained = job["result"]["sha256"]
    assert job["result"]["registered"] and job["result"]["comparison"]["current"]["model_sha"] == weak
    log = client.get(f"/api/models/jobs/{job_id}/log").json()
    assert "Ultralytics" in log["text"] and log["finished"]
    part = client.get(f"/api/models/jobs/{job_id}/log", params={"offset": 0}).json()
    assert part["offset"] == 0 and part["next_offset"] == min(part["size"], 65536)
    rec = {m["sha256"]: m for m in client.get("/api/models").json()["models"]}[trained]
    assert (
        rec["status"] == "candidate"
        and rec["trained_by"] == "qa"
        and rec["dataset_snapshot"].startswith(f"labeling:{snap_id}:")
    )
    assert rec["input_hw"] == [64, 64] and rec["names"] == list(DET_NAMES) and line.golden.golden_id in rec["golden"]
    assert ("qa", "model_train_start", None) in line.audit("model_train")

    # -- evaluate the good model against the current (weak) one --------------------------------------
    ev = evaluate(client, qa, good)
    gid = line.golden.golden_id
    cand, cur = ev["candidate"], ev["current"]
    assert cand["model_sha"] == good and cur["model_sha"] == weak and cand["golden_id"] == cur["golden_id"] == gid
    assert cand["n_images"] == 36 and cand["n_good"] == 12
    for k in ("precision", "recall", "mAP50", "escape_rate", "false_reject_rate"):
        assert k in cand and k in cur
    assert set(cand["per_class"]) == set(DET_NAMES) and cand["confusion"]["labels"] == [*DET_NAMES, "background"]
    # measured: the 40-epoch model lets fewer defective parts through than the 1-epoch one
    assert cand["escape_rate"] < cur["escape_rate"], (cand["escape_rate"], cur["escape_rate"])
    assert ev["escape_not_worse"] and ev["images"], ev
    img = ev["images"][0]
    assert img["candidate"]["outcome"] != img["current"]["outcome"] and img["thumb"].startswith(
        f"/api/models/evaluations/{ev['state']['eval_id']}/images/"
    )
    t = client.get(img["thumb"])
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg" and t.content[:2] == b"\xff\xd8"
    assert client.get(f"/api/models/evaluations/{ev['state']['eval_id']}/images/999").status_code == 404
    # one evaluation at a time: a second start while one runs is refused
    r1 = client.post(f"/api/models/{weak}/evaluate", json={}, headers=h(qa))
    busy_ev = client.post(f"/api/models/{good}/evaluate", json={}, headers=h(qa))
    assert r1.status_code == 202 and busy_ev.status_code == 409
    wait_eval(client, r1.json()["eval_id"])

    # -- promotion: qa may not, admin may; the gate accepts the better model ----------------------------
    assert client.post(f"/api/models/{good}/promote", json={}, headers=h(qa)).status_code == 403
    boss = login(client, "boss")
    r = client.post(f"/api/models/{good}/promote", json={}, headers=h(boss))
    assert r.status_code == 200, r.text
    assert r.json()["gate"]["passed"] and not r.json()["overridden"] and r.json()["swap"]["status"] == "loading"
    wait_model(st, good)

    # -- the trained 2-epoch model is worse than the good one: refused, audited ------------------------
    esc = {
        m["sha256"]: m["golden"][gid]["escape_rate"]
        for m in client.get("/api/models").json()["models"]
        if gid in m["golden"]
    }
    assert esc[trained] > esc[good], esc  # measured precondition of the refusal
    r = client.post(f"/api/models/{trained}/promote", json={}, headers=h(boss))
    assert r.status_code == 409 and "worse than the current model" in r.json()["detail"]
    assert sha12(st) == good[:12]  # the line keeps running the good model
    no_reason = client.post(f"/api/models/{trained}/promote", json={"override": True}, headers=h(boss))
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    r = client.post(
        f"/api/models/{trained}/promote", json={"override": True, "reason": "trial on the night shift"}, headers=h(boss)
    )
    assert r.status_code == 200 and r.json()["overridden"] and not r.json()["gate"]["passed"]
    wait_model(st, trained)
    assert line.audit("model_promote") == [
        ("system", "model_promote", "first model: the station's starting model"),
        ("boss", "model_promote", None),
        ("boss", "model_promote_refused", None),
        ("boss", "model_promote_override", "trial on the night shift"),
    ]

    # -- roll back in one action: the old sha is current again and the line runs it ----------------------
    model_id_before = st.inspector.model_id
    r = client.post("/api/models/rollback", json={"reason": "night shift trial over"}, headers=h(boss))
    assert r.status_code == 200 and r.json()["model"]["sha256"] == good and r.json()["model"]["status"] == "current"
    wait_model(st, good)
    assert st.inspector.model_id != model_id_before and st.inspector.model_id.endswith(good[:12])
    # rollback to any earlier version: the first (weak) model
    r = client.post("/api/models/rollback", json={"sha256": weak, "reason": "compare"}, headers=h(boss))
    assert r.status_code == 200 and client.get("/api/models").json()["current"] == weak
    wait_model(st, weak)
    statuses = {m["sha256"]: m["status"] for m in client.get("/api/models").json()["models"]}
    assert statuses == {weak: "current", good: "retired", trained: "retired"}
    hist = [
        x
        for x in client.get("/api/models/history").json()
        if x["action"].startswith(("model_promote", "model_rollback"))
    ]
    assert [x["action"] for x in hist[:2]] == ["model_rollback", "model_rollback"] and hist[1][
        "reason"
    ] == "night shift trial over"
    # promote, override, rollback, rollback: each one loaded on the line; the audit row is written
    # once the swap's callback runs, just after the new model is in place
    wait_for(
        lambda: len([a for a in line.audit("model_swap") if a[1] == "model_swap"]) >= 4, 10, "4 model_swap audit rows"
    )
    swaps = [a for a in line.audit("model_swap") if a[1] == "model_swap"]
    assert len(swaps) == 4
    assert client.post(f"/api/models/{'ab' * 32}/promote", json={}, headers=h(boss)).status_code == 404


def test_freeze_a_reviewed_snapshot_as_a_golden_set(line: ModelsLine, client: TestClient) -> None:
    """A QA engineer freezes a dataset snapshot as a new golden set (audited); it is listed beside the first one
    and can be named by its id; a taken name, a bad name and an unknown snapshot are refused."""
    st = line.station
    run_parts(st, N_SCENES)
    assert review_recorded_images(st, line.truth) == N_SCENES
    snap_id = snapshot(st, "scenes-golden")
    qa = login(client, "qa")
    r = client.post("/api/models/golden", json={"snapshot_id": snap_id, "name": "frozen-1"}, headers=h(qa))
    assert r.status_code in (200, 201), r.text
    g = r.json()
    assert g["name"] == "frozen-1" and g["n"] == N_SCENES and g["names"] == list(DET_NAMES)
    listed = {x["golden_id"]: x for x in client.get("/api/models/golden").json()}
    assert set(listed) == {line.golden.golden_id, g["golden_id"]}
    assert listed[g["golden_id"]]["source"]["snapshot_id"] == snap_id and listed[g["golden_id"]]["n"] == N_SCENES
    again = client.post("/api/models/golden", json={"snapshot_id": snap_id, "name": "frozen-1"}, headers=h(qa))
    assert again.status_code == 409 and "never overwritten" in again.text
    bad = client.post("/api/models/golden", json={"snapshot_id": snap_id, "name": "../x"}, headers=h(qa))
    assert bad.status_code == 422
    missing = client.post("/api/models/golden", json={"snapshot_id": 999999, "name": "frozen-2"}, headers=h(qa))
    assert missing.status_code == 404
    assert line.audit("golden_freeze") == [("qa", "golden_freeze", None)]


def test_shadow_mode_from_the_web(line: ModelsLine, client: TestClient, models: dict[str, Path]) -> None:
    st = line.station
    good = line.register(models["good"], "model_factory")
    qa = login(client, "qa")
    assert client.get("/api/models/shadow").json()["model_sha"] is None
    r = client.post(f"/api/models/{good}/shadow", json={"queue_size": 64}, headers=h(qa))
    assert r.status_code == 201 and r.json()["running"] and r.json()["model_sha"] == good
    assert client.post(f"/api/models/{good}/shadow", json={}, headers=h(qa)).status_code == 409
    run_parts(st, N_SCENES)
    wait_for(lambda: client.get("/api/models/shadow").json()["running"]["recorded"] >= N_SCENES, 60, "shadow verdicts")
    view = client.get("/api/models/shadow").json()
    run = view["running"]
    assert (run["received"], run["dropped"], run["errors"]) == (N_SCENES, 0, 0)
    # the good model flags shapes the weak production model passes: disagreements are listed with images
    assert view["summary"]["n"] == N_SCENES and view["summary"]["differs"] == len(view["disagreements"]) > 0
    d = view["disagreements"][0]
    assert d["production_outcome"] == "PASS" and d["shadow_outcome"] != "PASS" and d["image_ids"] and d["defects"]
    assert {c.PASS for c in [st.counters.snapshot()]} == {
        N_SCENES
    }  # the line itself passed every part: the shadow acted on none
    stop = client.post("/api/models/shadow/stop", headers=h(qa)).json()
    assert stop["stopped"]["recorded"] == N_SCENES and st.shadow is None
    assert client.post("/api/models/shadow/stop", headers=h(qa)).json() == {"running": False, "stopped": None}
    after = client.get("/api/models/shadow").json()
    assert after["running"] is None and after["last"]["recorded"] == N_SCENES and after["summary"]["n"] == N_SCENES
    assert [a[1] for a in line.audit("shadow_")] == ["shadow_start", "shadow_stop"]


def test_threshold_tuning_apply_restart_reset(line: ModelsLine, client: TestClient, models: dict[str, Path]) -> None:
    st = line.station
    qa = login(client, "qa")
    weak = client.get("/api/models").json()["current"]
    ev = evaluate(client, qa, weak)  # the current model alone
    assert ev["current"] is None and ev["candidate"]["model_sha"] == weak
    eval_id = ev["state"]["eval_id"]
    before = client.get("/api/models/rules").json()
    assert before["override"] is None and before["effective"] == before["configured"]
    target = 0.25
    p = client.post(
        f"/api/models/evaluations/{eval_id}/tune",
        json={"target_escape_rate": target, "model": "candidate"},
        headers=h(qa),
    )
    assert p.status_code == 200, p.text
    prop = p.json()
    assert prop["running_on_line"] and set(prop["after"]["thresholds"]) == set(DET_NAMES)
    if prop["achieved"]:
        assert prop["after"]["escape_rate"] <= target
    else:
        assert prop["after"]["escape_rate"] >= prop["floor_escape_rate"]
    # what it costs: lowering thresholds never lowers the false-reject rate
    assert (
        prop["after"]["false_reject_rate"] >= prop["before"]["false_reject_rate"]
        or prop["after"]["escape_rate"] > prop["before"]["escape_rate"]
    )
    assert client.get("/api/models/rules").json()["override"] is None  # a proposal changes nothing
    body = {"eval_id": eval_id, "model": "candidate", "target_escape_rate": target, "reason": "weekly tuning"}
    assert client.post("/api/models/rules", json=body, headers=h(qa)).status_code == 403
    boss = login(client, "boss")
    r = client.post("/api/models/rules", json=body, headers=h(boss))
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["effective"] == prop["after"]["thresholds"] and view["override"]["user"] == "boss"
    assert view["config_hash"] == f"{st.config_hash}+r{view['override']['id']}"
    for name, th in prop["after"]["thresholds"].items():
        assert st.decider.rules.for_class(name).reject_conf == pytest.approx(th["reject_conf"])
    run_parts(st, 2)  # the next parts are decided by the new thresholds and say so
    db = line.db()
    try:
        hashes = [r[0] for r in db.execute("SELECT config_hash FROM inspections ORDER BY part_id DESC LIMIT 2")]
        audit = db.execute(
            "SELECT user, action, reason, after FROM audit WHERE object_type = 'rules' ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    assert hashes == [view["config_hash"]] * 2
    assert [(a[0], a[1], a[2]) for a in audit] == [("boss", "rules_override", "weekly tuning")]
    assert json.loads(audit[0][3]) == prop["after"]["thresholds"]

    # kept across a restart of the station
    client.close()
    st.stop()
    st2 = Station(line.cfg)
    try:
        assert st2.decider.config_hash == view["config_hash"]
        assert rules_of(st2) == prop["after"]["thresholds"]
        st2.start()
        with TestClient(create_app(st2)) as c2:
            boss2 = login(c2, "boss")
            assert (
                c2.post("/api/models/rules/reset", json={"reason": "x"}, headers=h(boss2)).status_code == 422
            )  # reason too short
            r = c2.post("/api/models/rules/reset", json={"reason": "back to the config"}, headers=h(boss2))
            assert (
                r.status_code == 200 and r.json()["override"] is None and r.json()["effective"] == before["configured"]
            )
            assert st2.decider.config_hash == st2.config_hash
            assert c2.post("/api/models/rules/reset", json={"reason": "again"}, headers=h(boss2)).status_code == 409
    finally:
        st2.stop()
        line.station = Station(line.cfg)  # the fixture stops this one
        line.station.start()
    assert rules_of(line.station) == before["configured"]


def rules_of(st: Station) -> dict[str, dict[str, float]]:
    return {
        n: {
            "reject_conf": st.decider.rules.for_class(n).reject_conf,
            "uncertain_conf": st.decider.rules.for_class(n).uncertain_conf,
        }
        for n in DET_NAMES
    }


def test_models_page_needs_qa(line: ModelsLine, client: TestClient) -> None:
    r = client.get("/models", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/models"
    login(client, "op")
    assert client.get("/models").status_code == 403 and "qa role" in client.get("/models").text
    assert client.get("/api/models").status_code == 403
    login(client, "qa")
    page = client.get("/models")
    assert page.status_code == 200 and "/static/models.js" in page.text
    for path in (
        "/api/models",
        "/api/models/golden",
        "/api/models/jobs",
        "/api/models/evaluations",
        "/api/models/rules",
        "/api/models/shadow",
    ):
        assert client.get(path).status_code == 200, path
    assert client.get("/api/models/jobs/20250101-000000-abcdef").status_code == 404
    assert client.get("/api/models/jobs/..%2F..%2Fetc").status_code in (404, 422)
    assert client.get("/api/models/evaluations/not-an-id").status_code == 422
