"""ONNX export: Ultralytics' own exporter (or :func:`models.efficientnet.export_onnx` for a checkpoint of the
torch classify backend, same metadata), plus lineage in the model's metadata.

Ultralytics writes ``names``, ``imgsz``, ``stride``, ``task`` (and more) into the ONNX
``metadata_props``; the station reads them from there (:mod:`station.inspection.model_meta`). This
module keeps those and adds the model's lineage - dataset snapshot id, parent model sha256, training
seed, and any other key given - as ``lineage_<key>`` properties plus one ``lineage`` JSON property,
so a model file alone says where it came from. Every export must compute what its weights compute
(:mod:`models.parity`), or it fails.

Reading lineage (:func:`read_lineage`) needs neither onnx nor torch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from station import serialize

log = logging.getLogger(__name__)

LINEAGE_KEY = "lineage"
LINEAGE_PREFIX = "lineage_"
PARITY_IMAGES = 16  # golden images the parity check runs (half defective when the set has them)
STRIDE = 32  # ONNX inputs are multiples of the models' stride


def imgsz_problem(imgsz: int) -> str | None:
    """Why a square ``imgsz`` cannot be exported (None: it can); training and the web form check it up front."""
    if imgsz % STRIDE == 0:
        return None
    lo = imgsz // STRIDE * STRIDE
    return f"imgsz must be a multiple of {STRIDE} (got {imgsz}); use {max(lo, STRIDE)} or {lo + STRIDE}"


class ExportError(RuntimeError):
    """The export failed; the message names the file and the fix."""


def export_onnx(
    best_pt: Path | str,
    out_path: Path | str,
    imgsz: int | Sequence[int],
    *,
    lineage: Mapping[str, Any] | None = None,
    simplify: bool = True,
    keep_weights: bool = True,
    parity_golden: Path | str | None = None,
    tta: bool | None = None,
) -> Path:
    """Export ``best_pt`` to a static-shape ONNX file at ``out_path`` with lineage metadata.

    ``imgsz`` is an int (square) or (height, width), multiples of the model stride (32). ``lineage``
    typically holds ``dataset_snapshot``, ``parent_sha``, ``train_seed``. ``simplify`` runs onnxslim
    (offline). ``keep_weights`` copies the ``.pt`` next to the ONNX file with the same stem, so the
    model can later be fine-tuned from (ONNX weights cannot be trained). ``tta``: a torch classify checkpoint
    exported with (True) or without (False) its 8 test-time views (None: as trained, ``hyp.tta``). Returns
    ``out_path``.

    Every export is checked against its weights (:mod:`models.parity`) on up to ``PARITY_IMAGES``
    images of the golden set ``parity_golden`` (good and bad), else on fixed synthetic frames; on a
    mismatch the file is deleted and :class:`ExportError` says where it differs.
    """
    best_pt = Path(best_pt)
    out = Path(out_path)
    if not best_pt.is_file():
        raise ExportError(f"weights {best_pt} do not exist (train first, or give the path of best.pt)")
    size = [int(imgsz), int(imgsz)] if isinstance(imgsz, int) else [int(v) for v in imgsz]
    if len(size) != 2 or any(v % STRIDE or v <= 0 for v in size):
        raise ExportError(f"imgsz {imgsz!r}: give an int or (height, width), multiples of {STRIDE}")
    os.environ["YOLO_OFFLINE"] = "1"
    import onnx  # lazy: export only

    from . import efficientnet

    out.parent.mkdir(parents=True, exist_ok=True)
    # the exporters write beside their input: Ultralytics' writes <weights>.onnx next to the weights, which would
    # overwrite (and then remove) a model already there (models/pcb/model.onnx beside models/pcb/model.pt), so
    # both work in a folder of their own
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as work:
        if efficientnet.is_checkpoint(best_pt):  # a classify network fine-tuned by models.train_classify
            produced = efficientnet.export_onnx(best_pt, Path(work) / "model.onnx", size, tta=tta)
        else:
            from ultralytics import YOLO

            src = Path(work) / best_pt.name
            shutil.copyfile(best_pt, src)
            model = YOLO(str(src))  # the task (detect, segment, classify) comes from the checkpoint
            produced = Path(
                model.export(format="onnx", imgsz=size, simplify=simplify, dynamic=False, nms=False, device="cpu")
            )
        proto = onnx.load(str(produced))
    props = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in ("names", "imgsz", "stride", "task") if k not in props]
    if missing:
        raise ExportError(
            f"the ONNX export of {best_pt} lacks metadata {missing}; this Ultralytics version is not supported"
        )
    lin = {str(k): v for k, v in dict(lineage or {}).items()}  # None kept in the JSON: "no parent" is lineage too
    per_key = {f"{LINEAGE_PREFIX}{k}": lineage_text(v) for k, v in lin.items() if v is not None}
    set_props(proto, {**per_key, LINEAGE_KEY: serialize.dumps(lin, canonical=True)})
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    _check_parity(best_pt, out, parity_golden)
    if keep_weights:
        pt = out.with_suffix(".pt")
        if pt.resolve() != best_pt.resolve():
            shutil.copyfile(best_pt, pt)
    log.info("exported %s -> %s (imgsz %s, lineage %s)", best_pt, out, size, lin)
    return out


def _check_parity(best_pt: Path, out: Path, golden: Path | str | None) -> None:
    """The export parity check; deletes ``out`` and raises ExportError on a mismatch."""
    from .parity import ParityError, check_parity

    images, source = None, ""
    if golden is not None:
        from .golden import iter_images, load_golden

        gs = load_golden(golden)
        bad = [it for it in gs.items if it.defective][: PARITY_IMAGES // 2]
        good = [it for it in gs.items if not it.defective][: PARITY_IMAGES - len(bad)]
        images, source = [img for _, img in iter_images(bad + good)], f"golden set {gs.golden_id}"
    try:
        check_parity(best_pt, out, images, source=source)
    except ParityError as e:
        out.unlink(missing_ok=True)
        raise ExportError(f"export parity check failed, {out} deleted: {e}") from e


def lineage_text(v: Any) -> str:
    """A lineage value as a metadata_props string: strings as they are, anything else as sorted JSON."""
    return v if isinstance(v, str) else serialize.dumps(v, canonical=True)


def set_props(proto: Any, values: Mapping[str, str]) -> None:
    """Set (replace) metadata_props keys of an onnx ModelProto."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    for k, v in [*keep, *values.items()]:
        e = proto.metadata_props.add()
        e.key, e.value = k, v


def read_lineage(raw: Mapping[str, str]) -> dict[str, Any]:
    """The lineage dict from a model's metadata_props (``ModelMeta.raw``); {} when it has none."""
    blob = raw.get(LINEAGE_KEY)
    if blob:
        try:
            d = json.loads(blob)
            if isinstance(d, dict):
                return d
        except ValueError:
            log.warning("model metadata 'lineage' is not JSON: ignored")
    return {k[len(LINEAGE_PREFIX) :]: v for k, v in raw.items() if k.startswith(LINEAGE_PREFIX)}
