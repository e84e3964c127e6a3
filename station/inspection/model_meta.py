"""Read and check an Ultralytics ONNX export without importing onnx, torch or ultralytics.

The file is read once; its bytes are hashed (sha256 -> ``model_id``) and walked with a small
protobuf wire-format reader to get the ``metadata_props`` Ultralytics writes (names, imgsz,
stride, task, ...) and to refuse external-data references (a model must be one self-contained
file). The same bytes are what onnxruntime loads, so what was hashed is what runs.
"""

from __future__ import annotations

import ast
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .base import ModelLoadError

log = logging.getLogger(__name__)

TASKS = ("detect", "segment", "classify", "anomaly")  # anomaly: learned from good parts (station.inspection.anomaly)

# ONNX protobuf field numbers (onnx/onnx.proto3)
_MODEL_IR_VERSION, _MODEL_GRAPH, _MODEL_METADATA, _MODEL_FUNCTIONS = 1, 7, 14, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_FUNCTION_NODE = 7
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2


@dataclass(frozen=True)
class ModelMeta:
    """What the station needs to know about an Ultralytics ONNX export."""

    path: Path
    sha256: str
    model_id: str
    task: str
    names: tuple[str, ...]
    imgsz: tuple[int, int]  # (height, width) of the exported input
    stride: int
    channels: int = 3
    end2end: bool = False
    batch: int = 1
    dynamic: bool = False
    size_bytes: int = 0
    ultralytics_version: str = ""
    description: str = ""
    date: str = ""
    raw: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


class _ProtoError(ValueError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _ProtoError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value) of one protobuf message; value is int or memoryview."""
    pos, end = 0, len(buf)
    val: int | memoryview
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise _ProtoError("field number 0")
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise _ProtoError("truncated fixed64")
            val, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise _ProtoError(f"length {n} runs past the end of the data")
            val, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            if pos + 4 > end:
                raise _ProtoError("truncated fixed32")
            val, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise _ProtoError(f"unsupported wire type {wire}")
        yield num, wire, val


def _submessages(buf: memoryview, number: int) -> Iterator[memoryview]:
    for num, wire, val in _fields(buf):
        if num == number and wire == 2:
            yield val


def _tensor_external(tensor: memoryview) -> str | None:
    """The tensor's name if it references external data, else None."""
    name, external = "", False
    for num, wire, val in _fields(tensor):
        if num == _TENSOR_NAME and wire == 2:
            name = bytes(val).decode("utf-8", "replace")
        elif num == _TENSOR_DATA_LOCATION and wire == 0 and val == 1 or num == _TENSOR_EXTERNAL_DATA and wire == 2:
            external = True
    return (name or "<unnamed>") if external else None


def _graph_external(graph: memoryview, depth: int = 0) -> list[str]:
    if depth > 16:
        raise _ProtoError("graphs nested too deeply")
    found: list[str] = []
    for num, wire, val in _fields(graph):
        if wire != 2:
            continue
        if num == _GRAPH_INITIALIZER:
            name = _tensor_external(val)
            if name:
                found.append(name)
        elif num == _GRAPH_SPARSE_INIT:
            found += _sparse_external(val)
        elif num == _GRAPH_NODE:
            found += _node_external(val, depth)
    return found


def _sparse_external(sparse: memoryview) -> list[str]:
    out = []
    for num, wire, val in _fields(sparse):
        if num in (_SPARSE_VALUES, _SPARSE_INDICES) and wire == 2:
            name = _tensor_external(val)
            if name:
                out.append(name)
    return out


def _node_external(node: memoryview, depth: int) -> list[str]:
    found: list[str] = []
    for attr in _submessages(node, _NODE_ATTRIBUTE):
        for num, wire, val in _fields(attr):
            if wire != 2:
                continue
            if num in (_ATTR_T, _ATTR_TENSORS):
                name = _tensor_external(val)
                if name:
                    found.append(name)
            elif num in (_ATTR_G, _ATTR_GRAPHS):
                found += _graph_external(val, depth + 1)
            elif num in (_ATTR_SPARSE, _ATTR_SPARSES):
                found += _sparse_external(val)
    return found


def scan_model_bytes(data: bytes) -> tuple[dict[str, str], list[str]]:
    """Walk a serialized ONNX ModelProto.

    Returns (metadata_props as a dict, names of tensors stored as external data).
    Raises ValueError when the bytes are not a well-formed ONNX model.
    """
    buf = memoryview(data)
    meta: dict[str, str] = {}
    external: list[str] = []
    has_ir = has_graph = False
    for num, wire, val in _fields(buf):
        if num == _MODEL_IR_VERSION and wire == 0:
            has_ir = True
        elif num == _MODEL_GRAPH and wire == 2:
            has_graph = True
            external += _graph_external(val)
        elif num == _MODEL_METADATA and wire == 2:
            key = value = ""
            for n2, w2, v2 in _fields(val):
                if w2 == 2 and n2 == 1:
                    key = bytes(v2).decode("utf-8", "replace")
                elif w2 == 2 and n2 == 2:
                    value = bytes(v2).decode("utf-8", "replace")
            meta[key] = value
        elif num == _MODEL_FUNCTIONS and wire == 2:
            for node in _submessages(val, _FUNCTION_NODE):
                external += _node_external(node, 0)
    if not has_ir or not has_graph:
        raise _ProtoError("no ir_version or no graph: not an ONNX ModelProto")
    return meta, external


OPENVINO_XML, OPENVINO_BIN = "station_openvino_ir_xml", "station_openvino_ir_bin"  # models/quantize.py writes them
_TENSOR_RAW_DATA = 9


def embedded_initializers(data: bytes, names: Sequence[str]) -> dict[str, bytes]:
    """The raw bytes of the top-level graph initializers called ``names`` (those present).

    ``models quantize`` carries the INT8 OpenVINO form of a model in two uint8 initializers no node
    reads (:data:`OPENVINO_XML`, :data:`OPENVINO_BIN`), so one file (one sha256) holds both forms.
    """
    want, found = set(names), {}
    for num, wire, graph in _fields(memoryview(data)):
        if num != _MODEL_GRAPH or wire != 2:
            continue
        for tensor in _submessages(graph, _GRAPH_INITIALIZER):
            name, raw = "", None
            for n2, w2, v2 in _fields(tensor):
                if n2 == _TENSOR_NAME and w2 == 2:
                    name = bytes(v2).decode("utf-8", "replace")
                elif n2 == _TENSOR_RAW_DATA and w2 == 2:
                    raw = v2
            if name in want and raw is not None:
                found[name] = bytes(raw)
    return found


def read_model_bytes(path: Path) -> bytes:
    """Read the whole model file; a missing or unreadable file is a :class:`ModelLoadError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"model file {path} does not exist: check `inspector.model` in the config") from None
    except OSError as e:
        raise ModelLoadError(f"model file {path} cannot be read: {e}") from e
    if not data:
        raise ModelLoadError(f"model file {path} is empty")
    return data


def _literal(path: Path, key: str, raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError) as e:
        raise ModelLoadError(f"model {path}: metadata field {key!r} is not a literal ({raw[:60]!r}): {e}") from e


def _parse_names(path: Path, raw: str) -> tuple[str, ...]:
    names = _literal(path, "names", raw)
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise ModelLoadError(f"model {path}: metadata 'names' must be a non-empty dict of class index -> name")
    try:
        idx = sorted(int(k) for k in names)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"model {path}: metadata 'names' has a non-integer class index") from e
    if idx != list(range(len(idx))):
        raise ModelLoadError(f"model {path}: metadata 'names' indices are not 0..{len(idx) - 1}: {idx[:10]}")
    return tuple(str(names[k] if k in names else names[str(k)]) for k in idx)


def _parse_imgsz(path: Path, raw: str) -> tuple[int, int]:
    v = _literal(path, "imgsz", raw)
    if isinstance(v, int):
        v = [v, v]
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)):
        raise ModelLoadError(f"model {path}: metadata 'imgsz' must be [height, width], got {raw!r}")
    return int(v[0]), int(v[1])


def meta_from_props(path: Path, data: bytes, props: Mapping[str, str]) -> ModelMeta:
    """Build :class:`ModelMeta` from the file's bytes and its metadata_props."""
    missing = [k for k in ("task", "names", "imgsz", "stride") if k not in props]
    if missing:
        have = ", ".join(sorted(props)) or "none"
        raise ModelLoadError(
            f"model {path} is not an Ultralytics export: metadata {', '.join(missing)} missing (has: {have}); "
            "export it with `YOLO(weights).export(format='onnx')`"
        )
    task = props["task"].strip()
    if task not in TASKS:
        raise ModelLoadError(f"model {path}: task {task!r} is not supported (supported: {', '.join(TASKS)})")
    try:
        stride = int(props["stride"])
        channels = int(props.get("channels", "3"))
        batch = int(props.get("batch", "1"))
    except ValueError as e:
        raise ModelLoadError(f"model {path}: metadata stride/channels/batch is not an integer: {e}") from e
    args = _literal(path, "args", props["args"]) if "args" in props else {}
    args = args if isinstance(args, dict) else {}
    end2end = str(props.get("end2end", "False")).strip() == "True" or bool(args.get("nms", False))
    sha = hashlib.sha256(data).hexdigest()
    return ModelMeta(
        path=path,
        sha256=sha,
        model_id=f"{path.stem}:{sha[:12]}",
        task=task,
        names=_parse_names(path, props["names"]),
        imgsz=_parse_imgsz(path, props["imgsz"]),
        stride=stride,
        channels=channels,
        end2end=end2end,
        batch=batch,
        dynamic=bool(args.get("dynamic", False)),
        size_bytes=len(data),
        ultralytics_version=props.get("version", ""),
        description=props.get("description", ""),
        date=props.get("date", ""),
        raw=MappingProxyType(dict(props)),
    )


def parse_model(path: Path, data: bytes) -> ModelMeta:
    """Check the bytes are one self-contained Ultralytics ONNX model and return its metadata."""
    try:
        props, external = scan_model_bytes(data)
    except _ProtoError as e:
        raise ModelLoadError(
            f"model file {path} is not a valid ONNX model (corrupt or truncated? {len(data)} bytes): {e}"
        ) from e
    if external:
        shown = ", ".join(external[:5]) + (" ..." if len(external) > 5 else "")
        raise ModelLoadError(
            f"model {path} stores {len(external)} tensor(s) as external data ({shown}); a model must be one "
            "self-contained file: re-export without external data (models under 2 GB always fit)"
        )
    return meta_from_props(Path(path), data, props)


def read_model_meta(path: Path | str) -> ModelMeta:
    """Read and check an Ultralytics ONNX export's metadata (raises :class:`ModelLoadError`)."""
    path = Path(path)
    return parse_model(path, read_model_bytes(path))


def _dim(d: Any) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def check_io(
    meta: ModelMeta,
    inputs: Sequence[tuple[str, Sequence[Any]]],
    outputs: Sequence[tuple[str, Sequence[Any]]],
) -> None:
    """Refuse a model whose input/output shapes do not fit its task (raises :class:`ModelLoadError`).

    ``inputs``/``outputs`` are (name, shape) with ints for fixed dims and str/None for dynamic ones,
    as onnxruntime's ``NodeArg.shape`` gives them.
    """
    p, nc = meta.path, len(meta.names)
    if len(inputs) != 1:
        raise ModelLoadError(f"model {p}: expected 1 input (images), found {len(inputs)}")
    name, shape = inputs[0]
    if len(shape) != 4:
        raise ModelLoadError(f"model {p}: input {name!r} must be rank 4 (N, C, H, W), got shape {list(shape)}")
    c = _dim(shape[1])
    if c not in (1, 3) or c != meta.channels:
        raise ModelLoadError(
            f"model {p}: input {name!r} has {shape[1]} channels; expected {meta.channels} (1 or 3) per its metadata"
        )
    for axis, want in ((2, meta.imgsz[0]), (3, meta.imgsz[1])):
        got = _dim(shape[axis])
        if got is not None and got != want:
            raise ModelLoadError(
                f"model {p}: input {name!r} shape {list(shape)} disagrees with metadata imgsz {meta.imgsz}"
            )

    def bad(msg: str) -> ModelLoadError:
        shapes = ", ".join(f"{n}{list(s)}" for n, s in outputs)
        return ModelLoadError(f"model {p} ({meta.task}, {nc} classes): {msg}; outputs are {shapes}")

    if meta.task == "anomaly":
        if len(outputs) != 1 or len(outputs[0][1]) != 4 or _dim(outputs[0][1][1]) not in (None, 1):
            raise bad("an anomaly model must have one output (N, 1, h, w): its anomaly map")
        return
    if meta.task == "classify":
        if len(outputs) != 1 or len(outputs[0][1]) != 2 or _dim(outputs[0][1][1]) not in (None, nc):
            raise bad(f"a classify model must have one output (N, {nc})")
        return
    want_n = 2 if meta.task == "segment" else 1
    if len(outputs) != want_n:
        raise bad(f"expected {want_n} output(s)")
    out0 = outputs[0][1]
    if len(out0) != 3:
        raise bad("output0 must be rank 3")
    nm = 0
    if meta.task == "segment":
        protos = outputs[1][1]
        if len(protos) != 4 or _dim(protos[1]) is None:
            raise bad("output1 (mask prototypes) must be (N, nm, mh, mw)")
        nm = int(protos[1])
    if meta.end2end:
        if _dim(out0[2]) not in (None, 6 + nm):
            raise bad(f"an end-to-end output0 must be (N, max_det, {6 + nm})")
    elif _dim(out0[1]) not in (None, 4 + nc + nm):
        raise bad(f"output0 must be (N, {4 + nc + nm}, anchors) = 4 box + {nc} classes + {nm} mask coefficients")
