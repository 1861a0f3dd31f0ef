"""Torch part of Feature AttendAffectNet (:mod:`aanbench_plugins.models.feature_aan`):
the network. Imported when a model is built, trained or restored; see that
module for the details."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from aanbench_plugins.models._attention import AuthorsLayerNorm, MultiHeadAttention

FEED_FORWARDS = ("relu", "tanh_skip")  # the encoder's feed-forward blocks (see EncoderLayer)


class EncoderLayer(nn.Module):
    """Pre-norm block: ``x + drop(attn(norm(x)))`` then ``x + drop(ff(norm(x)))``;
    the feed-forward ``ff(h)`` is one linear layer ``w``: ``drop(relu(w(h)))``
    for ``feed_forward="relu"``, ``w(drop(h + tanh(h)))`` for ``"tanh_skip"``
    (both as the authors)."""

    def __init__(self, d_model: int, heads: int, dropout: float, eps: float, feed_forward: str = "relu") -> None:
        super().__init__()
        if feed_forward not in FEED_FORWARDS:
            raise ValueError(f"feed_forward must be one of {FEED_FORWARDS}, not {feed_forward!r}")
        self.feed_forward = feed_forward
        self.attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = nn.Linear(d_model, d_model)
        self.ff_dropout = nn.Dropout(dropout)
        self.norm1 = AuthorsLayerNorm(d_model, eps)
        self.norm2 = AuthorsLayerNorm(d_model, eps)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop1(self.attn(self.norm1(x)))
        h = self.norm2(x)
        if self.feed_forward == "relu":
            h = self.ff_dropout(torch.relu(self.ff(h)))
        else:
            h = self.ff(self.ff_dropout(h + torch.tanh(h)))
        return x + self.drop2(h)


class FeatureAANNet(nn.Module):
    """``forward(*features)``: each ``(batch, dim_k)`` -> ``(batch,)``."""

    # aanbench.batched may fold a stack's copies into the batch: every parameterised module is an
    # nn.Linear or an AuthorsLayerNorm, samples never mix, attention knows ``folded``
    stack_fold = True

    def __init__(
        self,
        dims: Sequence[int],
        d_model: int = 8,
        heads: int = 2,
        layers: int = 6,
        dropout: float = 0.1,
        head_dropout: float = 0.1,
        eps: float = 1e-6,
        head_activation: str = "none",
        feed_forward: str = "relu",
    ) -> None:
        super().__init__()
        if head_activation not in ("none", "tanh"):
            raise ValueError(f"head_activation must be 'none' or 'tanh', not {head_activation!r}")
        self.dims = list(dims)
        self.projections = nn.ModuleList(nn.Linear(d, d_model) for d in dims)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, heads, dropout, eps, feed_forward) for _ in range(layers))
        self.norm = AuthorsLayerNorm(d_model, eps)
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(d_model, 1)
        self.head_activation = head_activation

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        if len(features) != len(self.projections):
            raise ValueError(f"expected {len(self.projections)} feature tensors, got {len(features)}")
        return self.from_projections(*[proj(f) for proj, f in zip(self.projections, features)])

    def from_projections(self, *projected: torch.Tensor) -> torch.Tensor:
        """``forward`` after the first layer: each feature already through its
        projection, ``(batch, d_model)`` (:mod:`aanbench.batched` computes the
        projections itself)."""
        tokens = torch.stack(list(projected), dim=1)
        for layer in self.layers:
            tokens = layer(tokens)
        pooled = self.norm(tokens).mean(dim=1)
        if self.head_activation == "tanh":
            pooled = torch.tanh(pooled)
        return self.head(self.head_dropout(pooled)).squeeze(-1)
