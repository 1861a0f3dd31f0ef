"""The one trainer shared by aanbench's torch models.

Adam; loss ``MSE + (1 - Pearson r)`` per mini-batch; early stopping on a
validation split carved from training data (never the test set); the
weights of the best validation epoch are kept. Seeded: the same seed gives
the same numbers.

Devices: training and prediction run on a torch device (``"cpu"``, the
default, or ``"cuda"`` / ``"cuda:N"``; :func:`resolve_device` checks it
before any work). Inputs are moved to the device once per fit (each step
gathers its batch there); the network is back on the CPU when training ends,
so saved states load anywhere. On CUDA, :func:`device_scope` asks torch for
deterministic algorithms (``torch.use_deterministic_algorithms`` with
``warn_only``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``), so the same seed gives
the same numbers on one GPU model and software stack; CUDA kernels sum in
another order than the CPU's, so GPU numbers differ from CPU numbers in the
last bits (and, through training, a little more).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from aanbench.contracts import AanbenchError, FitReport

def resolve_device(device: Any = None) -> torch.device:
    """``"cpu"`` (or None), ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`
    -> :class:`torch.device`; a clear :class:`AanbenchError` for anything else,
    or for CUDA where torch has none (called before any work)."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device))
    except (RuntimeError, ValueError) as exc:
        raise AanbenchError(f"--device {device!r}: not a torch device (use cpu, cuda or cuda:N)") from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise AanbenchError(f"--device {device!r}: aanbench trains on cpu or cuda, not {dev.type}")
    if not torch.cuda.is_available():
        raise AanbenchError(f"--device {device!r}: torch reports no usable CUDA device here "
                            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda or 'none'}); "
                            "use --device cpu")
    index = 0 if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise AanbenchError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


@contextlib.contextmanager
def device_scope(device: Any = None) -> Iterator[torch.device]:
    """The resolved device; on CUDA, deterministic algorithms for the scope
    (torch's setting restored after it). ``CUBLAS_WORKSPACE_CONFIG`` must be
    set before cuBLAS starts, so it is set (unless already set) here, before
    the first CUDA computation of the process."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        yield dev
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    was, was_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.cuda.device(dev):
            yield dev
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


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


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a training loop runs
    (restored after). Each step allocates many short-lived objects (tensors,
    autograd nodes) that reference counting frees; they trigger collections
    that traverse every object of the process and find nothing to free
    (measured: 3 % of a batched Temporal AttendAffectNet epoch)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _tensors(xs: Sequence[np.ndarray], device: torch.device | None = None) -> list[torch.Tensor]:
    return [torch.as_tensor(np.asarray(x, dtype=np.float32), device=device) for x in xs]


def train_torch(
    net: nn.Module,
    train_x: Sequence[np.ndarray],
    train_y: np.ndarray,
    val_x: Sequence[np.ndarray] | None,
    val_y: np.ndarray | None,
    cfg: TrainConfig,
    seed: int,
    train_extra: np.ndarray | None = None,
    device: Any = None,
) -> FitReport:
    """Train ``net`` (whose ``forward(*xs)`` gives ``(batch,)``) in place.

    ``train_extra`` (``(n, ...)``, one row per training sample, e.g. the
    labels of a window's rows for teacher forcing) is passed as an extra last
    input in the training batches only, ``net(*xs, extra)``; the validation
    loss (and prediction) is computed from ``net(*xs)`` in evaluation mode.

    A network with a ``start_epoch(epoch)`` method has it called before each
    training epoch (1-based; e.g. the temporal models' scheduled sampling),
    as the batched trainer does.

    On the CPU it runs on one thread: these models are tiny, and torch's
    thread pool costs far more than it saves on them (measured 0.03 s against
    1.4 s per epoch on a busy 2-core machine). On ``device`` (see
    :func:`resolve_device`) the inputs go to the device once, the data order
    is drawn on the CPU (the same batches as on the CPU), and ``net`` is back
    on the CPU at the end.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with device_scope(device) as dev, no_cycle_collection():
            try:
                return _train(net.to(dev), train_x, train_y, val_x, val_y, cfg, seed, train_extra, dev)
            finally:
                net.to("cpu")
    finally:
        torch.set_num_threads(threads)


def _train(net, train_x, train_y, val_x, val_y, cfg: TrainConfig, seed: int, train_extra=None,
           device: torch.device | None = None) -> FitReport:
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    xs = _tensors(train_x, device)
    if train_extra is not None:
        if len(train_extra) != len(train_y):
            raise ValueError(f"train_extra has {len(train_extra)} rows for {len(train_y)} training samples")
        xs = xs + _tensors([train_extra], device)
    y = torch.as_tensor(np.asarray(train_y, dtype=np.float32), device=device)
    have_val = val_x is not None and val_y is not None and len(val_y) >= 2
    if have_val:
        vxs = _tensors(val_x, device)  # type: ignore[arg-type]
        vy = torch.as_tensor(np.asarray(val_y, dtype=np.float32), device=device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(y)
    bs = max(2, int(cfg.batch_size))
    best = float("inf")
    best_state = copy.deepcopy(net.state_dict())
    best_epoch = 0
    epoch = 0
    start_epoch = getattr(net, "start_epoch", None)
    for epoch in range(1, int(cfg.max_epochs) + 1):
        net.train()
        if callable(start_epoch):
            start_epoch(epoch)
        perm = torch.randperm(n, generator=gen).to(device)
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


def predict_torch(net: nn.Module, xs: Sequence[np.ndarray], batch: int = 4096, device: Any = None) -> np.ndarray:
    """``net``'s outputs for inputs ``xs`` (evaluation mode), computed on
    ``device``; ``net`` itself stays where it is (a copy goes to the device)."""
    with device_scope(device) as dev:
        net.eval()
        run = net if dev.type == "cpu" else copy.deepcopy(net).to(dev)
        ts = _tensors(xs)
        n = len(ts[0]) if ts else 0
        out = []
        with torch.inference_mode():
            for b0 in range(0, n, batch):
                out.append(run(*[t[b0 : b0 + batch].to(dev) for t in ts]).reshape(-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
