"""The commands of the ``models`` CLI (:mod:`models.cli` has the argument parser): one ``cmd_*`` a sub-command.

Each takes the parsed arguments and returns the exit status; the heavy libraries are imported inside the
command that needs them (torch and ultralytics only for ``train``, ``export`` and ``build-default``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from station import serialize

log = logging.getLogger(__name__)

DEFAULT_DB = Path("data/station.db")


@contextlib.contextmanager
def _db(path: Path | str) -> Iterator[Any]:
    """The station database at ``path`` (``--db``), closed on the way out."""
    from station.store.db import open_db

    db = open_db(path)
    try:
        yield db
    finally:
        db.close()


def _current_model_path(db_path: Path | str) -> str | None:
    """The file of the registered current model, None when there is none."""
    from . import registry

    with _db(db_path) as db:
        cur = registry.current(db)
    return str(cur.path) if cur else None


def _store(args: argparse.Namespace) -> Path:
    return Path(args.store) if args.store else Path(args.db).resolve().parent / "models"


def _camera_setup(config: str | None) -> dict[str, Any]:
    """The calibrations and drawn regions in force in the station database of ``config`` ({} without a config)."""
    if not config:
        return {}
    from station.camera_setup import load_file
    from station.config import load_config

    cfg = load_config(Path(config))
    return load_file(cfg.store.db_path, cfg.name, [c.id for c in cfg.cameras])


def _rules_and_inspector(config: str | None) -> tuple[Any, Any, Any]:
    """(rules, calibration, onnx or anomaly inspector config or None) from a station config file, or the defaults."""
    from station.config import CalibrationConfig, RulesConfig

    if not config:
        return RulesConfig(), CalibrationConfig(), None
    from station.config import load_config

    cfg = load_config(Path(config))
    insp = cfg.inspector if cfg.inspector.type in ("onnx", "anomaly") else None
    return cfg.rules, cfg.calibration, insp


# --------------------------------------------------------------------------- progress printing


class ProgressPrinter:
    """Prints job events as one updating terminal line per epoch."""

    def __init__(self, stream: Any = None, width: int = 30):
        self.stream = stream or sys.stdout
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._open_line = False

    def _line(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
            self._open_line = not final
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, state: Any, ev: Mapping[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "phase":
            if self._open_line:
                self.stream.write("\n")
                self._open_line = False
            self.stream.write(f"[{ev.get('phase')}]\n")
            self.stream.flush()
        elif kind == "progress":
            ph = ev.get("phase")
            frac = float(ev.get("fraction") or 0.0)
            bar = "#" * int(round(frac * self.width))
            losses = " ".join(f"{k}={v:.3g}" for k, v in (ev.get("losses") or {}).items())
            m = ev.get("metrics") or {}
            mets = " ".join(f"{k}={m[k]:.3f}" for k in ("precision", "recall", "mAP50", "top1") if k in m)
            eta = ev.get("eta_s")
            eta_s = f" eta {int(eta // 60)}m{int(eta % 60):02d}s" if eta else ""
            if ph == "batch":
                self._line(
                    f"epoch {ev['epoch']}/{ev['epochs']} "
                    f"[{bar:<{self.width}}] batch {ev['batch']}/{ev['batches']} {losses}{eta_s}",
                    False,
                )
            elif ph == "epoch":
                self._line(
                    f"epoch {ev['epoch']}/{ev['epochs']} [{bar:<{self.width}}] {losses} | val {mets}{eta_s}", True
                )
            elif ph == "final":
                self._line(f"best weights: val {mets}", True)
        elif kind in ("error", "cancelled"):
            self._line(f"{kind}: {ev.get('message')}", True)
        elif kind == "finished":
            self._line(f"job {state.job_id} {ev.get('status')} (log: {state.log_path})", True)


def _run_job(runner: Any, spec: Any) -> Any:
    """Start a job, print its progress, cancel it on Ctrl-C; returns the final state."""
    printer = ProgressPrinter()
    state = runner.start(spec, printer)
    print(f"job {state.job_id} started (pid {state.pid}); log {state.log_path}")
    try:
        while not state.finished:
            runner.wait(state.job_id, timeout=0.5)
    except KeyboardInterrupt:
        print("\ncancelling (waiting for the worker to stop at the next batch) ...")
        runner.cancel(state.job_id)
        runner.wait(state.job_id)
    return state


# --------------------------------------------------------------------------- commands


def cmd_dataset(args: argparse.Namespace) -> int:
    from station.config.camera import SyntheticCameraConfig

    from .dataset import TrainView, make_synthetic_dataset

    cam = SyntheticCameraConfig(product=args.product, defect_rate=args.defect_rate, harmless_mark_rate=args.mark_rate)
    view = TrainView(tuple(args.input_hw) if args.input_hw else None, args.crop)
    y = make_synthetic_dataset(args.out, args.train, args.val, args.seed, cam, n_test=args.test, view=view)
    print(y)
    return 0


def cmd_golden(args: argparse.Namespace) -> int:
    if args.from_yaml:
        from .golden import freeze_split

        gs = freeze_split(args.from_yaml, args.split, args.out)
    else:
        from station.config.camera import SyntheticCameraConfig

        from .dataset import make_golden_set

        cam = SyntheticCameraConfig(
            product=args.product, defect_rate=args.defect_rate, harmless_mark_rate=args.mark_rate
        )
        gs = make_golden_set(args.out, args.n, args.seed, cam)
    print(f"golden set {gs.golden_id}: {len(gs)} images ({gs.n_defective} defective) in {gs.root}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .jobs import JobRunner, JobSpec

    current = args.current
    if args.register and not current:
        current = _current_model_path(args.db)
    synthetic = None
    if args.synthetic:
        n_train, n_val, seed = args.synthetic
        synthetic = {"n_train": n_train, "n_val": n_val, "seed": seed}
    spec = JobSpec(
        data_yaml=args.data,
        synthetic=synthetic,
        model=args.model,
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        seed=args.seed,
        hyp=json.loads(args.hyp) if args.hyp else {},
        export_imgsz=tuple(args.export_imgsz) if args.export_imgsz else None,
        golden=args.golden,
        current_model=current,
        db=str(args.db) if args.register else None,
        store_dir=str(_store(args)) if args.register else None,
        trained_by=args.user,
    )
    runner = JobRunner(args.jobs_dir)
    state = _run_job(runner, spec)
    if state.status != "succeeded":
        print(f"training {state.status}: {state.error}", file=sys.stderr)
        return 1 if state.status == "failed" else 130
    r = state.result or {}
    print(f"model: {r.get('onnx')} (sha256 {str(r.get('sha256'))[:12]})")
    if r.get("registered"):
        print(f"registered as candidate {r['registered']['sha256'][:12]}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    lineage = json.loads(args.lineage) if args.lineage else {}
    out = export_onnx(
        args.weights,
        args.out,
        args.imgsz if len(args.imgsz) == 2 else args.imgsz[0],
        lineage=lineage,
        parity_golden=args.golden,
    )
    print(out)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_int8

    rep = quantize_int8(
        _resolve_model(args.model, args.db if args.use_db else None),
        args.out,
        args.golden,
        subset_size=args.subset,
        form=args.form,
    )
    print(
        f"INT8 model {rep.path}: {rep.n_calibration} calibration images ({rep.n_defective} defective) of golden set "
        f"{rep.golden_id}, parent {rep.parent_sha[:12]}, {rep.seconds:.0f} s"
    )
    if args.register:
        from . import registry

        with _db(args.db) as db:
            rec = registry.register(
                db, rep.path, store_dir=_store(args), trained_by=args.user, parent_sha=rep.parent_sha
            )
        print(
            f"registered as candidate {rec.sha256[:12]}; next: `models evaluate --candidate {rec.sha256[:12]} --use-db "
            "--golden DIR --config STATION.yaml` (the line's runtime: inspector.runtime openvino or auto), then "
            "`models promote`"
        )
    return 0


def _resolve_model(arg: str, db_path: Path | None) -> str:
    """A model given as a file path, or as a registered sha256 (prefix) when --db is given."""
    if Path(arg).is_file():
        return arg
    if db_path is not None:
        from . import registry

        with _db(db_path) as db:
            return str(registry.get(db, arg).path)
    raise SystemExit(f"model {arg}: no such file (give --db to name a registered model by its sha256)")


def cmd_import_elpv(args: argparse.Namespace) -> int:
    from .elpv import import_classify_dataset

    out = import_classify_dataset(args.out, seed=args.seed, fractions=tuple(args.fractions))
    m = json.loads((out / "dataset.json").read_text())
    print(
        f"ELPV classify dataset {m['snapshot']} in {out}: "
        + ", ".join(f"{k} {sum(v.values())}" for k, v in m["counts"].items())
    )
    return 0


def _evaluate_classify(args: argparse.Namespace, cand: str, rules: Any, calib: Any, insp: Any) -> int:
    from .evaluate_classify import evaluate_classify

    if args.good_classes:
        rules = rules.model_copy(update={"good_classes": list(args.good_classes)})
    try:
        res = evaluate_classify(cand, args.golden, rules=rules, calibration=calib, inspector_cfg=insp)
    except ValueError as e:
        print(f"models evaluate: {e}", file=sys.stderr)
        return 2
    print(res.table())
    if args.json:
        Path(args.json).write_text(serialize.dumps(res.summary(), indent=1) + "\n")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from station.inspection.model_meta import read_model_meta

    from .eval_compare import compare

    rules, calib, insp = _rules_and_inspector(args.config)
    cand = _resolve_model(args.candidate, args.db if args.use_db else None)
    if read_model_meta(cand).task == "classify":  # a split of class folders; verdict figures, no boxes
        return _evaluate_classify(args, cand, rules, calib, insp)
    current = None
    if args.current:
        current = _resolve_model(args.current, args.db if args.use_db else None)
    elif args.use_db:
        current = _current_model_path(args.db)
    if current is not None and Path(current).resolve() == Path(cand).resolve():
        current = None  # the candidate is the current model: nothing to compare with
    comp = compare(
        cand, current, args.golden, rules=rules, calibration=calib, inspector_cfg=insp, setup=_camera_setup(args.config)
    )
    print(comp.table())
    if args.json:
        Path(args.json).write_text(serialize.dumps(comp.summary(), indent=1) + "\n")
    if args.use_db and args.record:
        from . import registry

        with _db(args.db) as db:
            for res in (comp.candidate, comp.current):
                if res is None:
                    continue
                try:
                    registry.record_evaluation(db, res.model_sha, res.summary())
                    print(f"recorded evaluation of {res.model_sha[:12]} on golden set {res.golden_id}")
                except registry.RegistryError as e:
                    print(f"not recorded for {res.model_sha[:12]}: {e} (register it first)", file=sys.stderr)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .eval_tuning import tune_thresholds
    from .evaluate import evaluate

    rules, calib, insp = _rules_and_inspector(args.config)
    setup = _camera_setup(args.config)
    res = evaluate(args.model, args.golden, rules=rules, calibration=calib, inspector_cfg=insp, setup=setup)
    t = tune_thresholds(
        res, args.target, calibration=calib, min_conf=insp.conf if insp is not None else None, setup=setup
    )
    print(t.table())
    print("\nrules (paste under `rules:` in the station config):")
    import yaml

    print(yaml.safe_dump(t.rules.model_dump(mode="json"), sort_keys=False))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from . import registry

    with _db(args.db) as db:
        rec = registry.register(
            db,
            args.onnx,
            store_dir=_store(args),
            trained_by=args.user,
            weights=args.weights,
            dataset_snapshot=args.dataset_snapshot,
            parent_sha=args.parent_sha,
        )
    print(f"registered {rec.sha256} ({rec.status}) -> {rec.path}")
    return 0


def cmd_learn_anomaly(args: argparse.Namespace) -> int:
    """Learn an anomaly model from a folder of good images (seconds), optionally register it as a candidate."""
    from .anomaly import AnomalyLearnError, LearnSettings, learn_folder

    s = LearnSettings(long_side=args.long_side, target_frr=args.target_frr, features=args.features)
    try:
        res = learn_folder(args.folder, args.out, s)
    except AnomalyLearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    q = sorted(res.loo_scores)
    print(
        f"learned {res.path} from {res.n_images} good images in {res.seconds:.1f} s; "
        f"threshold {res.threshold:.4f} (good parts' leave-one-out scores: median {q[len(q) // 2]:.4f}, max "
        f"{q[-1]:.4f})"
    )
    if args.register:
        from . import registry

        with _db(args.db) as db:
            rec = registry.register(db, res.path, store_dir=_store(args), trained_by=args.user)
        print(f"registered {rec.sha256} ({rec.status}) -> {rec.path}")
    return 0


def _fmt_record(r: Any) -> str:
    golden = r.metrics.get("golden") or {}
    esc = ", ".join(f"{g}: escape {v.get('escape_rate')}" for g, v in golden.items())
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
    return f"{r.sha256[:12]}  {r.status:<9} {when}  {r.task} {list(r.names)} {list(r.input_hw or [])}  {esc}"


def cmd_list(args: argparse.Namespace) -> int:
    from . import registry

    with _db(args.db) as db:
        for r in registry.list_models(db, args.status):
            print(_fmt_record(r))
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    from . import registry

    with _db(args.db) as db:
        r = registry.current(db)
    if r is None:
        print("no current model")
        return 1
    print(_fmt_record(r))
    print(r.path)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from . import registry

    with _db(args.db) as db:
        try:
            r = registry.promote(
                db, args.sha, args.user, reason=args.reason, override=args.override, golden_id=args.golden_id
            )
        except registry.PromotionRefused as e:
            print(str(e), file=sys.stderr)
            return 3
    print(
        f"current model: {r.sha256} -> {r.path}\n(a running station loads it with its model swap: web UI or POST "
        "/api/model/swap)"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from . import registry

    with _db(args.db) as db:
        r = registry.rollback(db, args.sha, args.user, reason=args.reason)
    print(f"current model: {r.sha256} -> {r.path}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from . import registry

    with _db(args.db) as db:
        for h in registry.history(db):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["t_wall"]))
            print(f"{when} {h['user']:<12} {h['action']:<24} {str(h['object_id'])[:12]}  {h['reason'] or ''}")
    return 0


def cmd_build_default(args: argparse.Namespace) -> int:
    from . import SHIPPED_DIRS
    from .default_model import QUICK, RECIPES, build_default, finish_default, rebuild_template_check, retest_default

    recipe = dataclasses.replace(QUICK, product=args.product) if args.quick else RECIPES[args.product]
    out = Path(args.out) if args.out else SHIPPED_DIRS[args.product]
    t0 = time.monotonic()
    command = (
        "models build-default"
        + (f" --product {args.product}" if args.product != "machined" else "")
        + (" --quick" if args.quick else "")
    )
    work = Path(args.work) if args.work else None
    if args.check_only:
        card = rebuild_template_check(out, work, recipe, on_event=ProgressPrinter())
    elif args.retest:
        card = retest_default(out, work, recipe)
    elif args.from_job:
        card = finish_default(Path(args.from_job), out, work, recipe, command=command)
    else:
        card = build_default(out, work, recipe, on_event=ProgressPrinter(), command=command)
    m = card["test"]["metrics"]
    print(
        f"\n{args.product} model {card['sha256'][:12]} in {out} ({time.monotonic() - t0:.0f} s): "
        f"test precision {m['precision']}, recall {m['recall']}, escape {m['escape_rate']}, false reject "
        f"{m['false_reject_rate']}"
    )
    return 0
