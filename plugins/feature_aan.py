"""Feature AttendAffectNet (Thao et al. 2020, section III-C-b).

Each feature vector of an item is projected by its own linear layer to a
``d_model``-dimensional token; a stack of self-attention encoder layers
(pre-norm residual blocks as in the authors' implementation, with their
``LayerNorm`` that divides by the unbiased standard deviation plus ``eps``)
attends across the feature tokens; the tokens are averaged, passed through
dropout (and ``tanh`` in the authors' single-modality variants) and a linear
layer gives one value. One model per target.

The authors' published checkpoints differ in the encoder's feed-forward block:
the five-feature model uses ``drop(relu(w(x)))`` (``feed_forward="relu"``),
the single-modality models ``w(drop(x + tanh(x)))`` (``feed_forward="tanh_skip"``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from aanbench import hookimpl
from aanbench.contracts import ModelSpec


class AuthorsLayerNorm(nn.Module):
    """``a * (x - mean) / (std + eps) + b`` with the unbiased std (as the authors)."""

    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.weight * (x - mean) / (std + self.eps) + self.bias


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads = heads
        self.d_k = d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.d_k).transpose(1, 2)
        k = self.k(x).view(b, t, self.heads, self.d_k).transpose(1, 2)
        v = self.v(x).view(b, t, self.heads, self.d_k).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
        attn = self.dropout(scores.softmax(dim=-1))
        y = (attn @ v).transpose(1, 2).reshape(b, t, self.heads * self.d_k)
        return self.out(y)


FEED_FORWARDS = ("relu", "tanh_skip")


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
        self.attn = MultiHeadSelfAttention(d_model, heads, dropout)
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
        tokens = torch.stack([proj(f) for proj, f in zip(self.projections, features)], dim=1)
        for layer in self.layers:
            tokens = layer(tokens)
        pooled = self.norm(tokens).mean(dim=1)
        if self.head_activation == "tanh":
            pooled = torch.tanh(pooled)
        return self.head(self.head_dropout(pooled)).squeeze(-1)


NET_KEYS = ("d_model", "heads", "layers", "dropout", "head_dropout", "eps", "head_activation", "feed_forward")


# --------------------------------------------------------------------------
# The model plugin: training through aanbench's shared trainer.

from aanbench.contracts import FitReport, Model  # noqa: E402
from aanbench.training import TrainConfig, predict_torch, train_torch  # noqa: E402

DEFAULTS: dict[str, Any] = {
    "d_model": 8, "heads": 2, "layers": 6, "dropout": 0.1, "head_dropout": 0.1, "eps": 1e-6,
    "head_activation": "none", "feed_forward": "relu",
    "lr": 5e-4, "max_epochs": 500, "patience": 30, "batch_size": 30, "weight_decay": 0.0,
    "val_fraction": 0.1,
}


class FeatureAAN(Model):
    name = "feature-aan"

    def __init__(self, params: Mapping[str, Any], dims: Sequence[int]) -> None:
        self.params = {**DEFAULTS, **dict(params)}
        self.dims = [int(d) for d in dims]
        self.net: FeatureAANNet | None = None

    def _net_config(self) -> dict[str, Any]:
        return {"dims": self.dims, **{k: self.params[k] for k in NET_KEYS}}

    def fit(self, train_x, train_y, val_x, val_y, *, seed: int) -> FitReport:
        torch.manual_seed(seed)
        cfg = self._net_config()
        self.net = FeatureAANNet(**cfg)
        tc = TrainConfig(lr=float(self.params["lr"]), max_epochs=int(self.params["max_epochs"]),
                         patience=int(self.params["patience"]), batch_size=int(self.params["batch_size"]),
                         weight_decay=float(self.params["weight_decay"]))
        return train_torch(self.net, train_x, train_y, val_x, val_y, tc, seed)

    def predict(self, x) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("model is not trained")
        return predict_torch(self.net, x)

    def state(self) -> dict[str, Any]:
        if self.net is None:
            raise RuntimeError("model is not trained")
        return {"config": self._net_config(), "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}


def restore(state: Mapping[str, Any]) -> FeatureAAN:
    cfg = dict(state["config"])
    dims = cfg.pop("dims")
    model = FeatureAAN(cfg, dims)
    model.net = FeatureAANNet(dims, **cfg)
    model.net.load_state_dict(state["state_dict"], strict=True)
    model.net.eval()
    return model


@hookimpl
def aanbench_models():
    return [ModelSpec(
        name="feature-aan",
        description="Feature AttendAffectNet: self-attention across the feature vectors (paper III-C-b)",
        build=lambda params, dims: FeatureAAN(params, dims),
        restore=restore,
        params=DEFAULTS,
    )]
