"""Torch part of the I3D extractor (:mod:`aanbench_plugins.extractors.i3d`): the RGB
I3D network with TensorFlow "SAME" padding, and the input scaling. Imported
when the extractor loads; see that module for the details."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # the batch norms' epsilon (TensorFlow's, as the Kinetics checkpoint was trained)


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


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet(x: torch.Tensor) -> torch.Tensor:
    """``uint8 (N, T, H, W, 3)`` RGB tensor -> ``float32 (N, 3, T, H, W)``
    normalised with the ImageNet mean and std, ``(x / 255 - mean) / std``:
    the AttendAffectNet authors' I3D input (not the original [-1, 1])."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1, 1)
    return ((x.float() / 255.0).permute(0, 4, 1, 2, 3) - mean).div_(std).contiguous()


def scale_frames(frames: np.ndarray) -> torch.Tensor:
    """One clip ``uint8 (T, H, W, 3)`` -> ``float32 (3, T, H, W)`` in [-1, 1]."""
    return scale(torch.from_numpy(np.ascontiguousarray(frames))[None])[0]
