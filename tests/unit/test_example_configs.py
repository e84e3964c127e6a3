"""Every shipped example config validates; bad configs name the field and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from station.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deploy" / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path: Path):
    cfg = load_config(path)
    assert cfg.name


def test_examples_exist():
    assert len(EXAMPLES) >= 2


def test_check_config_names_field_and_fix(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "cameras:\n  - {type: synthetic, id: cam0, widht: 640}\nreject: {travel_ms: 100, safety_margin_ms: "
        "150}\ninspector: {type: nosuch}\n"
    )
    out = subprocess.run([sys.executable, "-m", "station", "check-config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "cameras.0.synthetic.widht: unknown key" in out.stderr
    assert "reject: Value error, safety_margin_ms (150.0) must be smaller than travel_ms (100.0)" in out.stderr
    assert "inspector: unknown type 'nosuch'" in out.stderr


def test_yaml_errors_are_clear(tmp_path: Path):
    p = tmp_path / "x.yaml"
    p.write_text("cameras: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p)


def test_good_config_prints_ok():
    out = subprocess.run(
        [sys.executable, "-m", "station", "check-config", str(EXAMPLES[0])], capture_output=True, text=True
    )
    assert out.returncode == 0 and ": ok (config hash" in out.stdout
