"""The ``models`` command: dataset, golden, train, export, quantize, evaluate, tune, register, list, promote, rollback,
build-default.

Only ``train``, ``export`` and ``build-default`` need the ``train`` extra (torch, ultralytics, onnx);
``train`` and ``build-default`` run the training in a worker subprocess and print its progress.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import SHIPPED_DIRS
from .commands import (
    DEFAULT_DB,
    ProgressPrinter,
    cmd_build_default,
    cmd_current,
    cmd_dataset,
    cmd_evaluate,
    cmd_export,
    cmd_golden,
    cmd_history,
    cmd_import_elpv,
    cmd_learn_anomaly,
    cmd_list,
    cmd_promote,
    cmd_quantize,
    cmd_register,
    cmd_rollback,
    cmd_train,
    cmd_tune,
)

__all__ = ["ProgressPrinter", "build_parser", "main"]  # ProgressPrinter: also importable from here


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``models`` command."""
    p = argparse.ArgumentParser(
        prog="models",
        description="Model lifecycle: dataset, golden set, train, export, evaluate, tune, register, promote, "
        "roll back.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def command(fn: Callable[[argparse.Namespace], int], name: str, **kw: Any) -> argparse.ArgumentParser:
        """The sub-command ``name``, run by ``fn``."""
        sp = sub.add_parser(name, **kw)
        sp.set_defaults(fn=fn)
        return sp

    def db_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--db", type=Path, default=DEFAULT_DB, help="station database (default data/station.db)")
        sp.add_argument(
            "--store", type=Path, default=None, help="model file store (default: models/ next to the database)"
        )

    def registry_args(sp: argparse.ArgumentParser) -> None:
        """A command that may register a model: ``--user`` names who in the audit trail, then :func:`db_args`."""
        sp.add_argument("--user", default="cli")
        db_args(sp)

    def synth_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--product", default="machined", choices=["machined", "pcb"])
        sp.add_argument("--defect-rate", type=float, default=0.5)
        sp.add_argument("--mark-rate", type=float, default=0.0, help="fraction of parts with a harmless ink mark")

    sp = command(cmd_dataset, "dataset", help="render a synthetic YOLO dataset")
    sp.add_argument("out", type=Path)
    sp.add_argument("--train", type=int, required=True)
    sp.add_argument("--val", type=int, required=True)
    sp.add_argument("--test", type=int, default=0)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument(
        "--input-hw",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="resize frames as a letterbox into HxW does",
    )
    sp.add_argument("--crop", type=int, default=None, help="then cut a CROPxCROP window around the part")
    synth_args(sp)

    sp = command(cmd_golden, "golden", help="freeze a golden set (synthetic, or a split of a YOLO dataset)")
    sp.add_argument("out", type=Path)
    sp.add_argument("--n", type=int, default=200)
    sp.add_argument("--seed", type=int, default=777)
    sp.add_argument("--from-yaml", type=Path, default=None, help="freeze a split of this data.yaml instead")
    sp.add_argument("--split", default="test")
    synth_args(sp)

    sp = command(cmd_train, "train", help="train a model (a background job with progress; Ctrl-C cancels)")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data", default=None, help="YOLO data.yaml, or a classify dataset folder (train/ val/ of class folders)"
    )
    src.add_argument(
        "--synthetic", type=int, nargs=3, metavar=("N_TRAIN", "N_VAL", "SEED"), help="render a synthetic dataset first"
    )
    sp.add_argument(
        "--model",
        default="yolov8n.yaml",
        help="architecture .yaml, a parent .pt/.onnx to fine-tune, or efficientnet-lite0/1/2 "
        "(classify: ImageNet weights, fine-tuned in torch)",
    )
    sp.add_argument("--epochs", type=int, default=50)
    sp.add_argument("--imgsz", type=int, default=640)
    sp.add_argument("--batch", type=int, default=16)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--hyp",
        default=None,
        help="more Ultralytics train arguments as JSON, e.g. '{\"mosaic\": 0}' (efficientnet-lite0: the fields of "
        "models.train_classify.FinetuneHyp, e.g. '{\"freeze\": 5}')",
    )
    sp.add_argument("--export-imgsz", type=int, nargs=2, default=None, metavar=("H", "W"))
    sp.add_argument("--golden", default=None, help="evaluate the new model on this golden set")
    sp.add_argument(
        "--current", default=None, help="compare with this model (default with --register: the current model)"
    )
    sp.add_argument("--register", action="store_true", help="register the new model as a candidate in --db")
    sp.add_argument("--jobs-dir", type=Path, default=Path("data/jobs"))
    registry_args(sp)

    sp = command(cmd_export, "export", help="export weights to ONNX with lineage metadata")
    sp.add_argument("weights", type=Path)
    sp.add_argument("out", type=Path)
    sp.add_argument("--imgsz", type=int, nargs="+", default=[640], help="N or H W")
    sp.add_argument("--lineage", default=None, help='JSON object, e.g. \'{"dataset_snapshot": "..."}\'')
    sp.add_argument(
        "--golden",
        type=Path,
        default=None,
        help="golden set for the export parity check (default: fixed synthetic frames)",
    )

    sp = command(
        cmd_quantize, "quantize", help="INT8 copy of an ONNX model (NNCF, calibrated on a golden set): a new candidate"
    )
    sp.add_argument("model", help="FP32 ONNX file (or a registered sha256 with --use-db)")
    sp.add_argument("out", type=Path, help="the INT8 ONNX file to write")
    sp.add_argument(
        "--golden",
        required=True,
        type=Path,
        help="golden set of the model's product: its good and bad images calibrate",
    )
    sp.add_argument("--subset", type=int, default=300, help="calibration images at most (good and bad alternated)")
    sp.add_argument(
        "--form",
        choices=["openvino", "qdq"],
        default="openvino",
        help="openvino: the INT8 OpenVINO form inside a copy of the FP32 file (fast, default); qdq: an ONNX QDQ graph "
        "for onnxruntime",
    )
    sp.add_argument("--register", action="store_true", help="register the INT8 file as a candidate in --db")
    sp.add_argument("--use-db", action="store_true", help="MODEL is a registered sha256")
    registry_args(sp)

    sp = command(
        cmd_evaluate,
        "evaluate",
        help="evaluate a candidate (and the current model) on a golden set via the production path",
    )
    sp.add_argument("--candidate", required=True, help="ONNX file (or a registered sha256 with --use-db)")
    sp.add_argument(
        "--current", default=None, help="ONNX file to compare with (default with --use-db: the registry's current)"
    )
    sp.add_argument(
        "--golden", required=True, type=Path, help="golden set; for a classify model a split of class folders"
    )
    sp.add_argument("--config", default=None, help="station config: its rules, calibration and inspector settings")
    sp.add_argument(
        "--good-classes", nargs="+", default=None, help="classify: the good classes (replaces rules.good_classes)"
    )
    sp.add_argument("--use-db", action="store_true", help="resolve models through the registry in --db")
    sp.add_argument(
        "--record",
        action="store_true",
        help="with --use-db: store the results in the registry (for the promotion gate)",
    )
    sp.add_argument("--json", default=None, help="also write the comparison as JSON here")
    db_args(sp)

    sp = command(
        cmd_import_elpv,
        "import-elpv",
        help="the ELPV solar cells (pip elpv-dataset) as a classify dataset: seeded split",
    )
    sp.add_argument("--out", type=Path, required=True, help="new folder for train/ val/ test/ class folders")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--fractions", type=float, nargs=3, default=[0.7, 0.15, 0.15], metavar=("TRAIN", "VAL", "TEST"))

    sp = command(
        cmd_tune, "tune", help="per-class thresholds for a target escape rate, and the false rejects they cost"
    )
    sp.add_argument("--model", required=True)
    sp.add_argument("--golden", required=True, type=Path)
    sp.add_argument("--target", type=float, required=True, help="target escape rate, e.g. 0.01")
    sp.add_argument("--config", default=None)

    sp = command(cmd_register, "register", help="register an ONNX model as a candidate")
    sp.add_argument("onnx", type=Path)
    sp.add_argument("--weights", type=Path, default=None, help="its .pt (default: same stem next to it, if present)")
    sp.add_argument("--dataset-snapshot", default=None)
    sp.add_argument("--parent-sha", default=None)
    registry_args(sp)

    sp = command(
        cmd_learn_anomaly,
        "learn-anomaly",
        help="learn an anomaly model from a folder of good images (no labels; seconds)",
    )
    sp.add_argument("folder", type=Path, help="good images of one camera view (one size; 50-200 recommended)")
    sp.add_argument("out", type=Path, help="the ONNX model to write")
    sp.add_argument("--long-side", type=int, default=256, help="working size of the frame's long side (default 256)")
    sp.add_argument(
        "--target-frr", type=float, default=0.01, help="false-reject rate on good parts the threshold is set for"
    )
    sp.add_argument(
        "--features",
        choices=("filters", "pretrained"),
        default="pretrained",
        help="filters: fixed filter bank; pretrained: ImageNet CNN features, shipped (docs/no_labels.md: which when)",
    )
    sp.add_argument("--register", action="store_true", help="also register it as a candidate in the station's registry")
    registry_args(sp)

    sp = command(cmd_list, "list", help="registered models")
    sp.add_argument("--status", default=None, choices=["candidate", "current", "retired"])
    db_args(sp)

    sp = command(cmd_current, "current", help="the current model")
    db_args(sp)

    sp = command(cmd_promote, "promote", help="make a candidate current (gated on the golden-set escape rate)")
    sp.add_argument("sha")
    sp.add_argument("--user", required=True)
    sp.add_argument("--override", action="store_true", help="promote despite the gate (needs --reason; audited)")
    sp.add_argument("--reason", default=None)
    sp.add_argument(
        "--golden-id", default=None, help="gate on this golden set (default: the latest both were evaluated on)"
    )
    db_args(sp)

    sp = command(cmd_rollback, "rollback", help="make a previous model current again")
    sp.add_argument("sha", nargs="?", default=None, help="default: the model the last change replaced")
    sp.add_argument("--user", required=True)
    sp.add_argument("--reason", default=None)
    db_args(sp)

    sp = command(cmd_history, "history", help="promotions, refusals, overrides and rollbacks (audit trail)")
    db_args(sp)

    sp = command(cmd_build_default, "build-default", help="reproduce a shipped model (about 90 min on 2 CPU cores)")
    sp.add_argument(
        "--product",
        default="machined",
        choices=sorted(SHIPPED_DIRS),
        help="which product of the synthetic line, each with its recipe (models.default_model.RECIPES); machined "
        "ships as models/default/, pcb as models/pcb/",
    )
    sp.add_argument("--out", default=None, help="default: the product's shipped folder")
    sp.add_argument("--work", default=None, help="working folder (dataset, jobs, test set)")
    sp.add_argument("--quick", action="store_true", help="a tiny smoke run of the whole script (useless model)")
    sp.add_argument(
        "--from-job",
        default=None,
        metavar="JOB_DIR",
        help="finish a build whose training job already succeeded (test + card)",
    )
    sp.add_argument(
        "--retest",
        action="store_true",
        help="no training: test the shipped model again at its recipe's rules (after a change of the shipped rules) "
        "and rewrite its card's test",
    )
    sp.add_argument(
        "--check-only",
        action="store_true",
        help="no detector training: rebuild the recipe's template check (template.npz, verifier.onnx) beside the "
        "shipped model, then test the two together and rewrite the card's test",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``models`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from .golden import GoldenSetError
    from .jobs import JobError
    from .registry import RegistryError

    try:
        return int(args.fn(args) or 0)
    except (RegistryError, JobError, GoldenSetError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
