"""The ELPV classify import (models/elpv.py) and threshold choice (models/evaluate_classify.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.cli import main as models_main
from models.elpv import cells, classify_label, classify_split
from models.evaluate_classify import choose_threshold

pytest.importorskip("elpv_dataset")


def test_split_is_fixed_stratified_disjoint_and_leaves_out_the_unsure_cells() -> None:
    all_cells = cells()
    a, b = classify_split(0, all_cells=all_cells), classify_split(0, all_cells=all_cells)
    assert {k: [c.path for c, _ in v] for k, v in a.items()} == {k: [c.path for c, _ in v] for k, v in b.items()}
    paths = [c.path for v in a.values() for c, _ in v]
    assert len(paths) == len(set(paths))  # by image: no cell in two splits
    kept = {c.path for c in all_cells if abs(c.probability - 1 / 3) > 1e-6}
    assert set(paths) == kept and len(kept) < len(all_cells)  # every 0, 2/3 and 1 cell, no 1/3 cell
    for v in a.values():
        assert all(lab == ("functional" if c.probability == 0 else "defective") == classify_label(c) for c, lab in v)
    # stratified: each split holds its fraction of every class x cell type
    total = Counter((lab, c.cell_type) for v in a.values() for c, lab in v)
    for split, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        got = Counter((lab, c.cell_type) for c, lab in a[split])
        assert set(got) == set(total)
        assert all(abs(got[k] - frac * total[k]) <= 1 for k in total), (split, got)
    other = classify_split(1, all_cells=all_cells)
    assert {c.path for c, _ in other["test"]} != {c.path for c, _ in a["test"]}
    with pytest.raises(ValueError, match="fractions"):
        classify_split(0, (0.5, 0.5, 0.5), all_cells=all_cells)


def test_import_writes_class_folders_and_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "elpv"
    assert models_main(["import-elpv", "--out", str(out)]) == 0
    assert "ELPV classify dataset" in capsys.readouterr().out
    m = json.loads((out / "dataset.json").read_text())
    for split in ("train", "val", "test"):
        for name in ("defective", "functional"):
            n = sum(v for k, v in m["counts"][split].items() if k.startswith(name))
            assert len(list((out / split / name).glob("*.png"))) == n > 0
    # the 1/3 cells are in no split: in soft/, each with its own probability as the training target
    unsure = {f"{c.path.stem}_{c.cell_type}.png": c.probability for c in cells() if classify_label(c) is None}
    targets = json.loads((out / "soft_labels.json").read_text())["targets"]
    assert {Path(k).name for k in targets} == set(unsure) == {p.name for p in (out / "soft").glob("*.png")}
    for rel, t in targets.items():
        assert t == {"defective": pytest.approx(unsure[Path(rel).name]), "functional": pytest.approx(2 / 3)}
    assert not set(unsure) & {p.name for p in out.glob("[tv]*/*/*.png")}
    assert sum(m["counts"]["soft"].values()) == len(unsure) > 0
    with pytest.raises(FileExistsError, match="not empty"):
        models_main(["import-elpv", "--out", str(out)])


def test_threshold_maximises_balanced_accuracy_between_scores() -> None:
    p = np.array([0.05, 0.1, 0.2, 0.45, 0.5, 0.7, 0.9, 0.95])
    d = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    t, ba = choose_threshold(p, d)
    assert ba == 1.0 and t == pytest.approx(0.475)  # halfway between the classes, not on a score
    d2 = np.array([0, 0, 0, 1, 0, 1, 1, 1], bool)  # one overlap: the lower threshold wins the tie
    t2, ba2 = choose_threshold(p, d2)
    assert ba2 == pytest.approx(0.875) and t2 == pytest.approx(0.325)
    with pytest.raises(ValueError, match="good and defective"):
        choose_threshold(p, np.ones(8, bool))
