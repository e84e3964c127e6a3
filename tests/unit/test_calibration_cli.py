"""``python -m calibration``: calibrate into the station database, list, roll back; refusals exit 2 with the reasons."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import yaml

from calibration.__main__ import main
from tests.calib_views import CHARUCO, views

GRID = ["--cols", "8", "--rows", "6", "--square-mm", "18"]  # the board of tests.calib_views.CHARUCO
CHARUCO_BOARD = ["--target", "charuco", *GRID, "--marker-mm", "13"]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, list[str]]:
    cfg = tmp_path / "line.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"name": "line-9", "store": {"db_path": str(tmp_path / "s.db"), "images_dir": str(tmp_path / "img")}}
        )
    )
    files = []
    for name, img in views(CHARUCO, blur=(6,)):
        cv2.imwrite(str(tmp_path / name), img)
        files.append(str(tmp_path / name))
    return cfg, files


def test_calibrate_list_rollback(setup, capsys) -> None:
    cfg, files = setup
    board = [*CHARUCO_BOARD, "-c", str(cfg), "--user", "alice"]
    assert main(["calibrate", *files, *board]) == 0
    out = capsys.readouterr().out
    assert out.startswith("line-9/cam0: version 1 in force, id cal-") and "6/7 views used" in out
    assert main(["calibrate", *files[:6], *board, "--reason", "again"]) == 0
    assert main(["list", "-c", str(cfg), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert listing["in_force"] == 2 and [v["version"] for v in listing["versions"]] == [2, 1]
    assert [i["used"] for i in listing["versions"][1]["images"]] == [True] * 6 + [False]
    assert main(["rollback", "1", "-c", str(cfg), "--user", "alice", "--reason", "back"]) == 0
    assert "calibration version 1 (cal-" in capsys.readouterr().out
    assert main(["rollback", "1", "-c", str(cfg), "--user", "alice"]) == 2
    assert "already in force" in capsys.readouterr().err


def test_refused_calibration_exits_2_with_the_reasons(setup, capsys) -> None:
    cfg, files = setup
    rc = main(["calibrate", *files[:3], *CHARUCO_BOARD, "-c", str(cfg), "--user", "alice"])
    assert rc == 2 and "too few usable views: 3 of 3 (need 5)" in capsys.readouterr().err
    assert main(["calibrate", *files, *GRID, "--camera", "cam9", "-c", str(cfg), "--user", "a"]) == 2
    assert "--camera cam9: not a camera of line-9" in capsys.readouterr().err
