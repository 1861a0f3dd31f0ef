"""Torch part of the ResNet-50 extractor (:mod:`aanbench_plugins.extractors.resnet50`):
the ImageNet input normalisation. Imported when the extractor runs."""

from __future__ import annotations

import numpy as np
import torch

# torchvision's ImageNet input normalisation (per channel, R, G, B, after scaling to [0, 1])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """``uint8 (T, H, W, 3)`` RGB tensor -> ``float32 (T, 3, H, W)`` on the
    same device: ``(x / 255 - mean) / std`` with the ImageNet mean and std."""
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def normalise_frames(frames: np.ndarray) -> torch.Tensor:
    """:func:`normalise` of a ``uint8 (T, H, W, 3)`` array, on the CPU."""
    return normalise(torch.from_numpy(np.ascontiguousarray(frames)))
