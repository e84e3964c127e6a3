"""The ELPV data set (``pip install elpv-dataset``): 2,624 real electroluminescence images of solar cells.

Each 300x300 Mono8 cell has a defect probability (0, 1/3, 2/3 or 1, from experts) and a cell type
(``mono`` or ``poly``). Read straight from the installed package's ``labels.csv`` and PNG files
with OpenCV (the package's own loader needs Pillow).

The no-labels protocol used by the anomaly bench and tests (:func:`anomaly_split`): per cell
type, learn from half of the functional cells (probability 0, seeded permutation), test on the
other half against the cells with probability 1.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from station import serialize


class ElpvMissing(RuntimeError):
    """The elpv-dataset package is not installed."""


@dataclass(frozen=True)
class ElpvCell:
    path: Path
    probability: float
    cell_type: str  # "mono" | "poly"

    def image(self) -> np.ndarray:
        img = cv2.imread(str(self.path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise OSError(f"cannot read {self.path}")
        return img


def data_dir() -> Path:
    """Folder holding ``labels.csv`` and ``images/`` of the installed package."""
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or spec.origin is None:
        raise ElpvMissing("the ELPV images come from `pip install elpv-dataset` (in the test extra)")
    return Path(spec.origin).parent / "data"


def cells() -> list[ElpvCell]:
    """Every cell of the data set, in the file's order."""
    root = data_dir()
    out = []
    for line in (root / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append(ElpvCell(root / parts[0], float(parts[1]), parts[2]))
    return out


@dataclass(frozen=True)
class AnomalySplit:
    learn: list[ElpvCell]  # half of the functional cells
    good: list[ElpvCell]  # the other half: must pass
    bad: list[ElpvCell]  # probability 1: must be found


def anomaly_split(cell_type: str, seed: int = 0, all_cells: list[ElpvCell] | None = None) -> AnomalySplit:
    """Per cell type: learn from half of the functional cells (seeded), test on the rest vs probability-1 cells."""
    cs = [c for c in (all_cells or cells()) if c.cell_type == cell_type]
    if not cs:
        raise ValueError(f"no ELPV cells of type {cell_type!r} (types: mono, poly)")
    good = [c for c in cs if c.probability == 0.0]
    bad = [c for c in cs if c.probability == 1.0]
    order = np.random.default_rng(seed).permutation(len(good))
    half = len(good) // 2
    return AnomalySplit([good[i] for i in order[:half]], [good[i] for i in order[half:]], bad)


def auroc(good_scores: np.ndarray | list[float], bad_scores: np.ndarray | list[float]) -> float:
    """Area under the ROC curve: the chance that a random bad part scores above a random good one (ties count half)."""
    g, b = np.asarray(good_scores, np.float64), np.asarray(bad_scores, np.float64)
    if len(g) == 0 or len(b) == 0:
        raise ValueError("AUROC needs good and bad scores")
    s = np.concatenate([g, b])
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    for v in np.unique(s):  # average ranks over ties
        idx = s == v
        if idx.sum() > 1:
            ranks[idx] = ranks[idx].mean()
    return float((ranks[len(g) :].sum() - len(b) * (len(b) + 1) / 2) / (len(g) * len(b)))


def zscore_template_scores(learn: list[np.ndarray], test: list[np.ndarray]) -> np.ndarray:
    """The plain baseline: per-pixel mean/std template, score = 99.5th percentile of |z| over the image."""
    x = np.stack(learn).astype(np.float32)
    mu, sd = x.mean(0), x.std(0) + 2.0
    return np.array([np.percentile(np.abs(t.astype(np.float32) - mu) / sd, 99.5) for t in test])


# --------------------------------------------------------------------------- classify dataset import

CLASSIFY_NAMES = ("defective", "functional")  # class id = index (Ultralytics sorts the class folders by name)
DEFECTIVE_MIN_P = 2 / 3  # probability >= 2/3: defective; 0: functional; 1/3: in no split (soft targets)
SPLITS = ("train", "val", "test")
CLASSIFY_MANIFEST = "dataset.json"
SOFT_LABELS = "soft_labels.json"  # images with class probabilities as training targets (models.train_classify)
SOFT_DIR = "soft"  # beside train/val/test: Ultralytics' classify loader never reads it


def classify_label(c: ElpvCell) -> str | None:
    """``defective`` (probability >= 2/3), ``functional`` (probability 0), None (1/3: a soft target only)."""
    if c.probability >= DEFECTIVE_MIN_P - 1e-6:
        return "defective"
    if c.probability == 0.0:
        return "functional"
    return None


def classify_split(
    seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), all_cells: list[ElpvCell] | None = None
) -> dict[str, list[tuple[ElpvCell, str]]]:
    """A fixed, seeded split by image, stratified by class and cell type: ``{split: [(cell, class), ...]}``.

    Each stratum (class x cell type) is permuted with its own seeded generator and cut by ``fractions``
    (train, val, test), so a cell's split depends only on the seed and the stratum's content.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions {fractions!r}: give three positive numbers (train, val, test) that sum to 1")
    out: dict[str, list[tuple[ElpvCell, str]]] = {s: [] for s in SPLITS}
    labelled = [(c, classify_label(c)) for c in (all_cells or cells())]
    for k, (name, ctype) in enumerate((n, t) for n in CLASSIFY_NAMES for t in ("mono", "poly")):
        stratum = sorted((c for c, lab in labelled if lab == name and c.cell_type == ctype), key=lambda c: c.path.name)
        order = np.random.default_rng([seed, k]).permutation(len(stratum))
        n_train = int(round(fractions[0] * len(stratum)))
        n_val = int(round(fractions[1] * len(stratum)))
        for pos, i in enumerate(order):
            split = "train" if pos < n_train else "val" if pos < n_train + n_val else "test"
            out[split].append((stratum[i], name))
    return out


def import_classify_dataset(
    out_dir: Path | str, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> Path:
    """Write the ELPV cells as an Ultralytics classify dataset; returns the folder (``models train --data``).

    Layout ``<out>/{train,val,test}/{defective,functional}/<cell>.png`` (the original PNG bytes,
    copied) and ``<out>/dataset.json``: the split parameters, counts per split/class/cell type and a
    content id over every file (the dataset snapshot id in the model's lineage). ``test`` is never read
    by training: it is the held-back split for the final figures; ``val`` is for tuning.
    """
    from .golden import content_id, sha256_file  # models.golden imports nothing heavy

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: give a new folder for the ELPV import")
    all_cells = cells()
    placed = [(split, f"{split}/{name}", name, c) for split, v in classify_split(seed, fractions, all_cells).items()
              for c, name in v]  # fmt: skip
    unsure = sorted((c for c in all_cells if classify_label(c) is None), key=lambda c: c.path.name)
    placed += [("soft", SOFT_DIR, "unsure", c) for c in unsure]
    files: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {}
    soft: dict[str, dict[str, float]] = {}
    for split, folder, kind, cell in placed:
        rel = f"{folder}/{cell.path.stem}_{cell.cell_type}.png"
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(cell.path.read_bytes())
        files[rel] = sha256_file(dst)
        key = f"{kind}_{cell.cell_type}"
        n = counts.setdefault(split, {})
        n[key] = n.get(key, 0) + 1
        if split == "soft":
            soft[rel] = {"defective": round(cell.probability, 6), "functional": round(1.0 - cell.probability, 6)}
    (out / SOFT_LABELS).write_text(serialize.dumps({"format": 1, "targets": soft}, indent=1) + "\n")
    manifest = {
        "format": 1,
        "kind": "classify",
        "source": "elpv-dataset",
        "snapshot": content_id(files),
        "names": list(CLASSIFY_NAMES),
        "seed": seed,
        "fractions": list(fractions),
        "rule": "defective: probability >= 2/3; functional: probability 0; probability 1/3 in no split, "
        "soft targets in soft_labels.json",
        "counts": counts,
    }
    (out / CLASSIFY_MANIFEST).write_text(serialize.dumps(manifest, indent=1) + "\n")
    return out
