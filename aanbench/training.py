"""The one trainer shared by aanbench's torch models.

Adam; loss ``MSE + (1 - Pearson r)`` per mini-batch; early stopping on a
validation split carved from training data (never the test set); the
weights of the best validation epoch are kept. Seeded: the same seed gives
the same numbers.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from aanbench.contracts import FitReport


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 5e-4
    max_epochs: int = 500
    patience: int = 30
    batch_size: int = 30
    weight_decay: float = 0.0


def mse_pearson_loss(pred: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``MSE + (1 - r)`` where r is the Pearson correlation of the batch."""
    mse = torch.mean((pred - y) ** 2)
    pc, yc = pred - pred.mean(), y - y.mean()
    r = (pc * yc).sum() / (torch.sqrt((pc**2).sum() * (yc**2).sum()) + eps)
    return mse + (1.0 - r)


def _tensors(xs: Sequence[np.ndarray]) -> list[torch.Tensor]:
    return [torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in xs]


def train_torch(
    net: nn.Module,
    train_x: Sequence[np.ndarray],
    train_y: np.ndarray,
    val_x: Sequence[np.ndarray] | None,
    val_y: np.ndarray | None,
    cfg: TrainConfig,
    seed: int,
    train_extra: np.ndarray | None = None,
) -> FitReport:
    """Train ``net`` (whose ``forward(*xs)`` gives ``(batch,)``) in place.

    ``train_extra`` (``(n, ...)``, one row per training sample, e.g. the
    labels of a window's rows for teacher forcing) is passed as an extra last
    input in the training batches only, ``net(*xs, extra)``; the validation
    loss (and prediction) is computed from ``net(*xs)`` in evaluation mode.

    Runs on one CPU thread: these models are tiny, and torch's thread pool
    costs far more than it saves on them (measured 0.03 s against 1.4 s per
    epoch on a busy 2-core machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(net, train_x, train_y, val_x, val_y, cfg, seed, train_extra)
    finally:
        torch.set_num_threads(threads)


def _train(net, train_x, train_y, val_x, val_y, cfg: TrainConfig, seed: int, train_extra=None) -> FitReport:
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    xs = _tensors(train_x)
    if train_extra is not None:
        if len(train_extra) != len(train_y):
            raise ValueError(f"train_extra has {len(train_extra)} rows for {len(train_y)} training samples")
        xs = xs + _tensors([train_extra])
    y = torch.as_tensor(np.asarray(train_y, dtype=np.float32))
    have_val = val_x is not None and val_y is not None and len(val_y) >= 2
    if have_val:
        vxs = _tensors(val_x)  # type: ignore[arg-type]
        vy = torch.as_tensor(np.asarray(val_y, dtype=np.float32))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(y)
    bs = max(2, int(cfg.batch_size))
    best = float("inf")
    best_state = copy.deepcopy(net.state_dict())
    best_epoch = 0
    epoch = 0
    for epoch in range(1, int(cfg.max_epochs) + 1):
        net.train()
        perm = torch.randperm(n, generator=gen)
        for b0 in range(0, n, bs):
            idx = perm[b0 : b0 + bs]
            if len(idx) < 2:  # a correlation needs two points
                continue
            opt.zero_grad()
            loss = mse_pearson_loss(net(*[x[idx] for x in xs]), y[idx])
            loss.backward()
            opt.step()
        if have_val:
            net.eval()
            with torch.no_grad():
                vloss = float(mse_pearson_loss(net(*vxs), vy))
            if vloss < best - 1e-9:
                best, best_epoch = vloss, epoch
                best_state = copy.deepcopy(net.state_dict())
            elif epoch - best_epoch >= cfg.patience:
                break
    if have_val:
        net.load_state_dict(best_state)
    else:
        best_epoch = epoch
    net.eval()
    return FitReport(epochs=epoch, best_epoch=best_epoch, best_val_loss=best if have_val else None,
                     seconds=time.perf_counter() - t0)


def predict_torch(net: nn.Module, xs: Sequence[np.ndarray], batch: int = 4096) -> np.ndarray:
    net.eval()
    ts = _tensors(xs)
    n = len(ts[0])
    out = []
    with torch.inference_mode():
        for b0 in range(0, n, batch):
            out.append(net(*[t[b0 : b0 + batch] for t in ts]).reshape(-1).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
