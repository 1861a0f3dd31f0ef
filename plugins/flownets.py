"""FlowNetS encoder (Flying Chairs) motion features, as in AttendAffectNet
section III-A.

The network is FlowNetS without batch normalisation as in
ClementPinard/FlowNetPytorch (our own module with the same parameter names:
``conv1.0.weight`` ... ``conv6_1.0.bias``, ``deconv5.0.weight`` ...,
``predict_flow6.weight`` ..., ``upsampled_flow6_to_5.weight`` ...). The
whole network is loaded with ``strict=True`` from the file's
``state_dict``; only the contracting part runs: ``conv1`` ... ``conv6_1``,
each a convolution (padding ``(k - 1) // 2``) followed by LeakyReLU(0.1).

Input: two consecutive sampled frames stacked on channels (first frame's
RGB, then the second's: 6 channels), each scaled to [0, 1] and reduced by
the per-channel mean (R, G, B) = (0.45, 0.432, 0.411), with standard
deviation 1, which is the training transform of those weights
(FlowNetPytorch ``main.py``). The flow scale (``div_flow`` = 20) divides
the flow targets, not the images, so it does not touch the encoder.

Feature: ``conv6_1``'s 1024 channels averaged over space for each pair,
then over the item's pairs. With T frames sampled per item there are T - 1
pairs: each sampled frame with the next sampled one. When T equals the
number of video frames in the window (all 125 frames of a 5-s COGNIMUSE
segment at 25 fps) these are adjacent video frames, as in the paper; with
fewer frames (64 per EIMT16 excerpt) the pairs are evenly spaced frames
``duration / T`` seconds apart. Frames are the same 256-short-side,
224 x 224 centre crop as ResNet-50 and I3D use, so one decode serves all
three (conv6_1 is then 4 x 4).

Weights: ``flownets_EPE1.951.pth`` as stored (Git LFS) in the
FlowNetPytorch repository; its SHA-256 is the LFS object id. The README's
Google Drive folder offers ``flownets_EPE1.951.pth.tar``; whether those bytes
are identical is not known here: ``aanbench weights add`` matches a file by
its SHA-256, so that download is accepted (under the official name) exactly
when it is the same file. ``flownets_from_caffe.pth`` (the original authors'
Caffe weights, which expect BGR input) is a different file and is not
accepted.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, ItemError, Media, WeightFile
from aanbench_plugins._torch_util import NeuralExtractor, frames_tensor, mean_by_item, run_in_passes

WEIGHTS = WeightFile(
    filename="flownets_EPE1.951.pth",
    sha256="d98505dc749c35f0d4b4ce0536b4f64797ec22ea194a5f743af97dc3f778447d",
    source="https://github.com/ClementPinard/FlowNetPytorch/tree/master/weights",
    description="FlowNetS without batch norm, Flying Chairs, EPE 1.951 (ClementPinard/FlowNetPytorch, "
    "Git LFS file weights/flownets_EPE1.951.pth); 154,706,509 bytes",
)

# per-channel means subtracted after scaling to [0, 1], in R, G, B order
FLOW_MEAN_RGB = (0.45, 0.432, 0.411)

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

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        for name, *_ in _ENCODER:
            x = self._modules[name](x)  # type: ignore[misc]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)


def _scaled(x: torch.Tensor) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` -> ``float32 (N, 3, H, W)``: ``x / 255 - mean``."""
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return x - torch.tensor(FLOW_MEAN_RGB, device=x.device).view(1, 3, 1, 1)


def pair_inputs(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``uint8 (N, H, W, 3)`` first and second frames -> ``float32 (N, 6, H, W)``:
    first frame's scaled RGB, then the second's."""
    return torch.cat([_scaled(first), _scaled(second)], dim=1)


def frame_pairs(frames: np.ndarray) -> torch.Tensor:
    """``uint8 (T, H, W, 3)`` RGB -> ``float32 (T-1, 6, H, W)``: frame t and
    frame t+1 stacked on channels, each ``x / 255 - mean`` per channel."""
    x = torch.from_numpy(np.ascontiguousarray(frames))
    return pair_inputs(x[:-1], x[1:])


class FlowNetSExtractor(NeuralExtractor):
    name = "flownets"
    version = "1"
    modality = "video"
    dim = 1024
    description = "FlowNetS (Flying Chairs) conv6_1 features of consecutive frame pairs, averaged"
    weight_file = WEIGHTS
    # frame pairs per pass; on a 2-core CPU 4-8 per pass ran 7x faster than 1, 16 slower than 8
    max_inputs_per_pass = {"cpu": 8, "cuda": 128}

    def min_frames(self) -> int:
        return 2

    def preprocessing(self) -> dict[str, Any]:
        return {"scale": "x/255", "mean_rgb": list(FLOW_MEAN_RGB), "pairs": "consecutive sampled frames",
                "layer": "conv6_1", "pool": "mean over space, then over pairs"}

    def build(self) -> nn.Module:
        return FlowNetS()

    def state_dict_from(self, obj: Any, net: nn.Module) -> Mapping[str, torch.Tensor]:
        if isinstance(obj, Mapping) and "state_dict" in obj:
            arch = obj.get("arch")
            if arch is not None and arch != "flownets":
                raise AanbenchError(f"{self.name}: the weight file holds architecture {arch!r}, not 'flownets'")
            return obj["state_dict"]
        return obj

    def extract_group(self, group: Sequence[Media]) -> np.ndarray:
        net = self._require_loaded()
        clips = []
        for m in group:
            f = m.frames_for(self.needs)
            if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] < 2:
                raise ItemError(f"{self.name}: item {m.item.id} needs at least 2 frames of shape (T, H, W, 3) (got {f.shape})")
            clips.append(f)
        counts = [c.shape[0] - 1 for c in clips]

        def fn(x: torch.Tensor) -> torch.Tensor:
            return net.encode(x).mean(dim=(2, 3))  # type: ignore[operator]

        def run(cs: list[np.ndarray]) -> torch.Tensor:
            u8 = frames_tensor(cs)
            # index of each pair's first frame in the concatenated frames (never an item's last frame)
            starts = np.concatenate([np.arange(c.shape[0] - 1) + off
                                     for c, off in zip(cs, np.cumsum([0] + [c.shape[0] for c in cs[:-1]]))])
            first = torch.from_numpy(starts)

            def make(sl: slice, dev: torch.device) -> torch.Tensor:
                return pair_inputs(u8[first[sl]].to(dev), u8[first[sl] + 1].to(dev))

            return run_in_passes(len(starts), make, fn, self.per_pass(), self.device)

        if len({c.shape[1:] for c in clips}) == 1:
            per = run(clips)
        else:  # frames of different sizes (no crop asked): one item at a time
            per = torch.cat([run([c]) for c in clips])
        return mean_by_item(per, counts)


@hookimpl
def aanbench_extractors():
    return [FlowNetSExtractor()]
