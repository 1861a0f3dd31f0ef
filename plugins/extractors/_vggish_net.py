"""Torch part of the VGGish extractor (:mod:`aanbench_plugins.extractors.vggish`): the
VGGish network. Imported when the extractor loads; see that module for the
details."""

from __future__ import annotations

import torch
from torch import nn


class VGGishNet(nn.Module):
    """VGGish: ``forward(x)`` takes ``float32 (N, 1, 96, 64)`` log-mel
    patches and returns ``(N, 128)`` embeddings after the final ReLU."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 128), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TF's NHWC flattening
        return self.embeddings(x)
