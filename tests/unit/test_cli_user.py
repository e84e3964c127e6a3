"""`station user` manages web users in the station database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from station.store.db import open_db
from station.web.auth import verify_user


def run(cfg: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "station", "user", *args, "-c", str(cfg)], input=stdin, capture_output=True, text=True
    )


def test_user_lifecycle(tmp_path: Path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({"store": {"db_path": str(tmp_path / "s.db"), "images_dir": str(tmp_path / "img")}}))
    assert run(cfg, "add", "quinn", "--role", "qa", "--password-stdin", stdin="correct horse battery\n").returncode == 0
    db = open_db(tmp_path / "s.db")
    assert (user := verify_user(db, "quinn", "correct horse battery")) is not None and user.role == "qa"
    db.close()
    dup = run(cfg, "add", "quinn", "--password-stdin", stdin="another long password\n")
    assert dup.returncode == 2 and "quinn" in dup.stderr
    assert run(cfg, "passwd", "quinn", "--password-stdin", stdin="a new long password\n").returncode == 0
    assert run(cfg, "role", "quinn", "--role", "admin").returncode == 0
    out = run(cfg, "list")
    assert "quinn" in out.stdout and "admin" in out.stdout
    db = open_db(tmp_path / "s.db")
    assert verify_user(db, "quinn", "correct horse battery") is None
    assert (user := verify_user(db, "quinn", "a new long password")) is not None and user.role == "admin"
    db.close()
