"""Torch part of the FlowNetS extractor (:mod:`aanbench_plugins.extractors.flownets`):
FlowNetS without batch norm (parameter names of ClementPinard/FlowNetPytorch)
and the frame-pair inputs. Imported when the extractor loads; see that
module for the details."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_ENCODER = [  # name, in, out, kernel, stride
    ("conv1", 6, 64, 7, 2),
    ("conv2", 64, 128, 5, 2),
    ("conv3", 128, 256, 5, 2),
    ("conv3_1", 256, 256, 3, 1),
    ("conv4", 256, 512, 3, 2),
    ("conv4_1", 512, 512, 3, 1),
    ("conv5", 512, 512, 3, 2),
    ("conv5_1", 512, 512, 3, 1),
    ("conv6", 512, 1024, 3, 2),
    ("conv6_1", 1024, 1024, 3, 1),
]


def _conv(cin: int, cout: int, k: int, s: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, padding=(k - 1) // 2, bias=True), nn.LeakyReLU(0.1))


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.LeakyReLU(0.1))


class FlowNetS(nn.Module):
    """FlowNetS without batch norm. ``encode(x)``: ``float32 (N, 6, H, W)``
    -> ``conv6_1`` output ``(N, 1024, H/64, W/64)`` (rounded up). The
    expanding part is built so the official file loads strictly; it is
    never run here."""

    def __init__(self) -> None:
        super().__init__()
        for name, cin, cout, k, s in _ENCODER:
            self.add_module(name, _conv(cin, cout, k, s))
        self.deconv5 = _deconv(1024, 512)
        self.deconv4 = _deconv(1026, 256)
        self.deconv3 = _deconv(770, 128)
        self.deconv2 = _deconv(386, 64)
        self.predict_flow6 = nn.Conv2d(1024, 2, 3, 1, 1, bias=False)
        self.predict_flow5 = nn.Conv2d(1026, 2, 3, 1, 1, bias=False)
        self.predict_flow4 = nn.Conv2d(770, 2, 3, 1, 1, bias=False)
        self.predict_flow3 = nn.Conv2d(386, 2, 3, 1, 1, bias=False)
        self.predict_flow2 = nn.Conv2d(194, 2, 3, 1, 1, bias=False)
        self.upsampled_flow6_to_5 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)
        self.upsampled_flow5_to_4 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)
        self.upsampled_flow4_to_3 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)
        self.upsampled_flow3_to_2 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False)

    def encode(self, x: torch.Tensor, upto: str = "conv6_1") -> torch.Tensor:
        """The contracting part from ``conv1`` up to and including ``upto``."""
        names = [name for name, *_ in _ENCODER]
        if upto not in names:
            raise ValueError(f"unknown FlowNetS layer {upto!r}")
        for name in names[: names.index(upto) + 1]:
            x = self._modules[name](x)  # type: ignore[misc]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)


def _scaled(x: torch.Tensor, mean_rgb: tuple[float, float, float]) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` -> ``float32 (N, 3, H, W)``: ``x / 255 - mean``."""
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return x - torch.tensor(mean_rgb, device=x.device).view(1, 3, 1, 1)


def pair_inputs(first: torch.Tensor, second: torch.Tensor, mean_rgb: tuple[float, float, float]) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` first and second frames -> ``float32 (N, 6, H, W)``:
    first frame's scaled RGB, then the second's."""
    return torch.cat([_scaled(first, mean_rgb), _scaled(second, mean_rgb)], dim=1)


def frame_pairs(frames: np.ndarray, mean_rgb: tuple[float, float, float]) -> torch.Tensor:
    """``uint8 (T, H, W, 3)`` RGB -> ``float32 (T-1, 6, H, W)``: frame t and
    frame t+1 stacked on channels, each ``x / 255 - mean`` per channel."""
    x = torch.from_numpy(np.ascontiguousarray(frames))
    return pair_inputs(x[:-1], x[1:], mean_rgb)
