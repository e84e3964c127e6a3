"""``python -m labeling`` run as a real subprocess against a recorded database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from labeling import labels as L
from station.contracts import Outcome
from tests.fixtures_labeling import line, part  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labeling", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_snapshot_export_import_from_the_command_line(line, tmp_path) -> None:
    line.record(
        [
            part(i, Outcome.FAIL if i % 2 else Outcome.PASS, [("dent", 0.9, (3.0, 4.0, 20.0, 30.0))] if i % 2 else [])
            for i in range(1, 7)
        ]
    )
    L.bulk_confirm(line.db, "qa", [line.image_id(i) for i in (1, 3, 5)])
    L.bulk_mark_good(line.db, "qa", [line.image_id(i) for i in (2, 4)])
    db = line.db_path

    r = _cli("snapshot", "--db", db, "--name", "nightly", "--user", "ci")
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    assert (snap["name"], snap["n_images"], snap["n_labels"], snap["class_names"]) == ("nightly", 5, 3, ["dent"])
    listed = json.loads(_cli("snapshots", "--db", db).stdout)
    assert [s["sha256"] for s in listed] == [snap["sha256"]]
    export = ("export", "--db", db, "--images", line.images.root, "--snapshot", snap["id"], "--format")

    r = _cli(
        *export,
        "yolo",
        "--out",
        tmp_path / "yolo",
    )
    assert r.returncode == 0, r.stderr
    data_yaml = Path(json.loads(r.stdout)["written"])
    assert yaml.safe_load(data_yaml.read_text())["names"] == {0: "dent"}
    assert len(list((tmp_path / "yolo" / "images").rglob("*.png"))) == 5

    r = _cli(
        *export,
        "coco",
        "--out",
        tmp_path / "coco",
        "--copy",
    )
    assert r.returncode == 0, r.stderr
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert len(coco["images"]) == 5 and len(coco["annotations"]) == 3

    fresh = tmp_path / "fresh.db"
    r = _cli(
        "import",
        "--db",
        fresh,
        "--images",
        tmp_path / "store2",
        "--format",
        "yolo",
        "--data",
        data_yaml,
        "--user",
        "ci",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_new"] == 5
    r = _cli(
        "import",
        "--db",
        tmp_path / "fresh2.db",
        "--images",
        tmp_path / "store3",
        "--format",
        "coco",
        "--coco",
        tmp_path / "coco" / "annotations.json",
        "--images-dir",
        tmp_path / "coco" / "images",
    )
    assert r.returncode == 0, r.stderr
    r = _cli("snapshot", "--db", tmp_path / "fresh2.db", "--user", "ci")
    assert json.loads(r.stdout)["sha256"] == snap["sha256"]

    q = json.loads(_cli("queue", "--db", db, "--limit", "5").stdout)
    assert [i["part_id"] for i in q] == [6]  # the only unreviewed image
    stats = json.loads(_cli("stats", "--db", db, "--tz", "UTC").stdout)
    assert stats["false_positive_rate"]["reviewed"] == 3 and stats["defect_pareto"][0]["class_name"] == "dent"


def test_command_line_errors_name_the_problem(line, tmp_path) -> None:
    r = _cli(
        "export",
        "--db",
        line.db_path,
        "--images",
        line.images.root,
        "--snapshot",
        "7",
        "--format",
        "yolo",
        "--out",
        tmp_path / "x",
    )
    assert r.returncode == 2 and "dataset snapshot 7 does not exist" in r.stderr
    r = _cli("snapshot", "--db", line.db_path)
    assert r.returncode == 2 and "no reviewed images" in r.stderr
    r = _cli("import", "--db", line.db_path, "--images", tmp_path / "s", "--format", "coco")
    assert r.returncode == 2 and "needs --coco" in r.stderr
    r = _cli("snapshot", "--db", line.db_path, "--since", "yesterday")
    assert r.returncode == 2 and "not a time" in r.stderr
