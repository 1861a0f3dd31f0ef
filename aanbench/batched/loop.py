"""The training loop of a stack (:func:`train_batched`), how jobs are grouped
into stacks (:func:`group_jobs`) and ordered within one (:func:`stack_order`),
the per-copy loss and validation."""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from aanbench.batched.contract import BatchJob, FoldableNet, StackAware
from aanbench.batched.dropout import MaskPool, pool_dropouts, stream_seed
from aanbench.batched.first_layer import Rest, Stem, gather
from aanbench.batched.folding import fold_copies
from aanbench.batched.stack import Stack, adam_step
from aanbench.batched.threads import Threads, default_threads
from aanbench.contracts import FitReport
from aanbench.training import device_scope, no_cycle_collection

# Largest gathered input of one forward pass, in float32 values (validation
# runs in chunks of samples below it): 16 M values = 64 MB.
MAX_GATHER = 16_000_000


def weighted_loss(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per copy ``MSE + (1 - r)`` over the samples of weight 1: ``(K, B)`` -> ``(K,)``.
    With all weights 1 it is :func:`aanbench.training.mse_pearson_loss` of each row."""
    n = w.sum(1).clamp_min(1.0)
    mse = (w * (pred - y) ** 2).sum(1) / n
    pc = pred - ((w * pred).sum(1) / n)[:, None]
    yc = y - ((w * y).sum(1) / n)[:, None]
    r = (w * pc * yc).sum(1) / (torch.sqrt((w * pc**2).sum(1) * (w * yc**2).sum(1)) + eps)
    return mse + (1.0 - r)


def train_batched(jobs: Sequence[BatchJob], device: Any = None, threads: int | None = None, *,
                  fold: bool = True, fused_adam: bool = True) -> list[FitReport]:
    """Train every job's network in place (its best validation epoch's weights,
    or the last epoch's without validation) and return one report per job.
    All jobs must share the training configuration and the architecture;
    :func:`group_jobs` splits a mixed list into such stacks. A report's
    ``seconds`` is the stack's wall time divided by the number of jobs.
    ``device``: the torch device to train on (default the CPU).

    Torch runs on one CPU thread while the stack trains (restored after), as
    :func:`aanbench.training.train_torch`. ``threads`` (default
    :func:`default_threads`: every CPU this process may use) are the CPU
    first layer's threads (:class:`Stem`, where most of the arithmetic is):
    its copies' products are spread over them, each product still on one
    thread, so the same seeds give the same numbers with any ``threads``.

    ``fold``: run a network that allows it (``stack_fold = True``,
    :class:`~aanbench.batched.contract.FoldableNet`) with the copies folded
    into the batch dimension (False: always under ``vmap``). ``fused_adam``:
    torch's one-pass Adam kernel where this torch has one (False: the
    elementwise formula; see :func:`~aanbench.batched.stack.adam_step`).
    Both give the same fits up to rounding; they exist to compare the paths."""
    jobs = list(jobs)
    if not jobs:
        return []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    workers = Threads(default_threads() if threads is None else threads)
    try:
        with device_scope(device) as dev, no_cycle_collection():
            return _train_batched(jobs, dev, workers, fold=fold, fused_adam=fused_adam)
    finally:
        workers.close()
        torch.set_num_threads(before)


def group_jobs(jobs: Sequence[BatchJob]) -> list[list[int]]:
    """Indices of ``jobs`` grouped into stacks: same training configuration,
    network class, parameter shapes and feature arrays."""
    groups: dict[Any, list[int]] = {}
    for i, j in enumerate(jobs):
        net = j.torch_fit.net
        key = (j.torch_fit.config, type(net), tuple((n, tuple(p.shape)) for n, p in net.named_parameters()),
               tuple(id(r) for r in j.rows), np.asarray(j.fit).ndim, j.torch_fit.extra is None, stack_key(net))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def stack_key(net: nn.Module) -> Any:
    """What copies of a stack must share beyond parameter shapes: the network's
    ``stack_key()`` where it has one (plain attributes, e.g. the temporal
    models' feedback mode, which the stack takes from the first copy)."""
    key = getattr(net, "stack_key", None)
    return key() if callable(key) else None


def stack_order(jobs: Sequence[BatchJob]) -> np.ndarray:
    """The jobs' order in the stack: jobs that draw the same batches (same
    seed, same fitting samples, e.g. one fold's valence and arousal fits)
    side by side, so that the first layer gathers their rows once (see
    :func:`same_rows`); otherwise the given order."""
    runs: dict[Any, list[int]] = {}
    for i, j in enumerate(jobs):
        fit = np.ascontiguousarray(j.fit)
        runs.setdefault((int(j.seed), fit.shape, fit.tobytes()), []).append(i)
    return np.array([i for run in runs.values() for i in run], dtype=np.int64)


def _train_batched(jobs: list[BatchJob], device: torch.device, threads: Threads | None = None, *,
                   fold: bool = True, fused_adam: bool = True) -> list[FitReport]:
    t0 = time.perf_counter()
    cfg = jobs[0].torch_fit.config
    for j in jobs:
        if j.torch_fit.config != cfg:
            raise ValueError(f"batched training needs one training configuration per stack: {j.torch_fit.config} "
                             f"differs from {cfg}")
        if any(a is not b for a, b in zip(j.rows, jobs[0].rows)) or len(j.rows) != len(jobs[0].rows):
            raise ValueError("batched training needs the same feature arrays for every job of a stack")
        if stack_key(j.torch_fit.net) != stack_key(jobs[0].torch_fit.net):
            raise ValueError(f"batched training needs one network setting per stack: {stack_key(j.torch_fit.net)} "
                             f"differs from {stack_key(jobs[0].torch_fit.net)}")
    for j in jobs:
        for mod in j.torch_fit.net.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                raise ValueError("batched training: batch norm makes samples depend on each other; "
                                 "train this model sequentially")
    from torch.func import functional_call, vmap

    template = copy.deepcopy(jobs[0].torch_fit.net).to(device)
    for mod in template.modules():  # a module may compute otherwise for a stack's larger tensors
        if isinstance(mod, StackAware):
            mod.stacked = True
    order = stack_order(jobs)
    st = Stack([jobs[j] for j in order], template, device)
    st.ids = order  # the job of each copy
    rows = [torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32)).to(device) for r in jobs[0].rows]
    stem = Stem(rows, [m[0].clone() for m in st.mean], threads) if Stem.fits(template, jobs[0].rows) else None
    if stem is not None:
        rows = stem.rows  # the centred copy; the raw arrays are not used again
    # each job's dropout stream keyed by its seed and position in ``jobs``
    pool = MaskPool([stream_seed(j.seed, i) for i, j in enumerate(jobs)], device)
    pool_dropouts(template, pool)
    folded = fold and isinstance(template, FoldableNet) and bool(template.stack_fold)
    if folded:
        fold_copies(template)
    start_epoch = getattr(template, "start_epoch", None)
    gens = [torch.Generator().manual_seed(int(j.seed)) for j in jobs]
    rest = Rest(template)

    def forward(params, buffers, bits, *xs):
        pool.bits, pool.offset = bits, 0
        if stem is not None:
            return functional_call(rest, ({f"net.{n}": v for n, v in params.items()},
                                          {f"net.{n}": v for n, v in buffers.items()}), xs)
        return functional_call(template, (params, buffers), xs)

    def fforward(params, buffers, bits, *xs):
        # the copies folded into the batch: (K, B, ...) -> (K * B, ...), copy-major; bits (K, size)
        k = xs[0].shape[0]
        return forward(params, buffers, bits, *(x.reshape(-1, *x.shape[2:]) for x in xs)).view(k, -1)

    def inputs(params: dict[str, torch.Tensor], members: torch.Tensor,
               out: list[torch.Tensor] | None = None,
               grads: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        if stem is not None:
            return stem.project(st, params, members, grads)
        return gather(rows, st.mean, st.std, members, out)

    vforward = fforward if folded else vmap(forward, randomness="different")
    lr, wd = float(cfg.lr), float(cfg.weight_decay)
    bs = max(2, int(cfg.batch_size))
    n_jobs = len(jobs)
    best = np.full(n_jobs, np.inf)
    best_epoch = np.zeros(n_jobs, dtype=int)
    epochs = np.zeros(n_jobs, dtype=int)
    best_flat = torch.empty_like(st.flat)  # by job
    best_flat[torch.from_numpy(order).to(device)] = st.flat
    epoch = 0
    buffers: list[torch.Tensor] | None = None  # the gathered inputs of a step (overwritten after its backward)
    grad: torch.Tensor | None = None  # the flat gradient of a step, (K, P), and its views by parameter
    slots: dict[str, torch.Tensor] = {}
    # the dropout values one copy's step uses, counted on a step's shapes (every step has bs samples)
    with torch.no_grad(), pool.counting():
        template.train()
        kk = torch.arange(len(st.ids), device=device)[:, None]
        idx = torch.zeros(len(st.ids), bs, dtype=torch.long, device=device)
        xs = inputs(st.params(st.flat), st.fit[kk, idx])
        if st.extra is not None:
            xs.append(st.extra[kk, idx])
        vforward(st.params(st.flat), st.buffers, pool.empty(len(st.ids)), *xs)
    for epoch in range(1, int(cfg.max_epochs) + 1):
        # each live copy's batches this epoch: (K, S, bs) positions into its fitting samples
        k = len(st.ids)
        perms = [torch.randperm(int(n), generator=gens[j]) for n, j in zip(st.n_fit, st.ids)]
        n_batches = [math.ceil(int(n) / bs) for n in st.n_fit]
        steps = max(n_batches)
        pos = torch.zeros(k, steps * bs, dtype=torch.long)
        wt = torch.zeros(k, steps * bs)
        for i, p in enumerate(perms):
            pos[i, : len(p)] = p
            wt[i, : len(p)] = 1.0
        pos, wt = pos.view(k, steps, bs), wt.view(k, steps, bs)
        live = wt.sum(2) >= 2  # (K, S): a step with fewer than 2 samples is skipped, as train_torch does
        live_cpu = live.numpy().copy()  # which copies draw dropout values at each step
        # a masked step still runs through the network: give it real samples so its (unused) loss is finite
        dummy = ~live
        if dummy.any():
            first = pos[:, 0, :]
            pos = torch.where(dummy[:, :, None], first[:, None, :], pos)
        pos, wt, live = pos.to(device), wt.to(device), live.to(device)
        kk = torch.arange(k, device=device)[:, None]
        template.train()
        if callable(start_epoch):
            start_epoch(epoch)
        for s in range(steps):
            active = live[:, s]
            idx = pos[:, s]
            w = torch.where(active[:, None], wt[:, s], torch.ones_like(wt[:, s]))
            members = st.fit[kk, idx]
            if stem is None and (buffers is None or buffers[0].shape[:-1] != members.shape):
                # (re)allocated when the stack shrinks
                buffers = [torch.empty(*members.shape, r.shape[1], device=device) for r in rows]
            # each parameter a leaf of its own (a view of the flat row block): the gradient of one
            # flat leaf would cost a full (K, P) zero tensor per parameter in the slicing's backward
            leaves = {name: v.detach().requires_grad_(True) for name, v in st.params(st.flat).items()}
            if grad is None or grad.shape != st.flat.shape:
                grad = torch.empty_like(st.flat)  # the step's flat gradient (reallocated when the stack shrinks)
                slots = st.params(grad)
            xs = inputs(leaves, members, buffers, slots)
            if st.extra is not None:
                xs.append(st.extra[kk, idx])
            pred = vforward(leaves, st.buffers, pool.draw(st.ids, live_cpu[:, s]), *xs)
            loss = (weighted_loss(pred, st.fit_y[kk, idx], w) * active.to(pred.dtype)).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            with torch.no_grad():
                for g, slot in zip(grads, slots.values()):
                    if g is None:
                        slot.zero_()
                    elif g.data_ptr() != slot.data_ptr() or g.stride() != slot.stride():
                        slot.copy_(g)  # (the first layer's weights write theirs in place)
                adam_step(st, grad, active, lr, wd, fused=fused_adam)
        epochs[st.ids] = epoch
        if not st.have_val.any():
            continue
        vloss = validation_loss(st, rows, template, vforward, inputs,
                                 per_copy_gather=stem is None or device.type != "cpu")
        stop = np.zeros(k, dtype=bool)
        for i, j in enumerate(st.ids):
            if not st.have_val[i]:
                continue
            if vloss[i] < best[j] - 1e-9:
                best[j], best_epoch[j] = vloss[i], epoch
                best_flat[j] = st.flat[i]
            elif epoch - best_epoch[j] >= cfg.patience:
                stop[i] = True
        if stop.all():
            break
        if stop.any():
            st.select(np.flatnonzero(~stop))
    final = st.flat
    seconds = (time.perf_counter() - t0) / n_jobs
    reports = []
    for j, job in enumerate(jobs):
        has_val = bool(has_validation(job))
        if has_val:
            row = best_flat[j]
        else:
            i = int(np.flatnonzero(st.ids == j)[0])
            row = final[i]
            best_epoch[j] = epochs[j]
        state = st.state_of(row)
        net = job.torch_fit.net
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(state[n])
        net.eval()
        job.report = FitReport(epochs=int(epochs[j]), best_epoch=int(best_epoch[j]),
                               best_val_loss=float(best[j]) if has_val else None, seconds=seconds)
        reports.append(job.report)
    return reports


def has_validation(job: BatchJob) -> bool:
    return job.val is not None and job.val_y is not None and len(job.val_y) >= 2


def validation_loss(st: Stack, rows: list[torch.Tensor], template: nn.Module, vforward, inputs,
                     per_copy_gather: bool = True) -> np.ndarray:
    """Each live copy's loss on its whole validation set (evaluation mode), ``(K,)``.
    In chunks of samples whose gathered inputs stay below :data:`MAX_GATHER`
    values: ``K`` copies' (``per_copy_gather``), or one copy's (the CPU first
    layer, which gathers one run of copies at a time into its own buffer)."""
    k = len(st.ids)
    n = st.val.shape[1]
    per_sample = sum(int(r.shape[1]) for r in rows) * (int(np.prod(st.val.shape[2:])) if st.val.dim() > 2 else 1)
    chunk = max(1, MAX_GATHER // max(1, (k if per_copy_gather else 1) * per_sample))
    template.eval()
    preds = []
    params = st.params(st.flat)
    no_bits = torch.zeros(k, 0, dtype=torch.int16, device=st.flat.device)  # no dropout in evaluation mode
    with torch.no_grad():
        for c0 in range(0, n, chunk):
            xs = inputs(params, st.val[:, c0 : c0 + chunk])
            preds.append(vforward(params, st.buffers, no_bits, *xs))
        pred = torch.cat(preds, 1)
        n_val = torch.from_numpy(st.n_val).to(pred.device)
        w = (torch.arange(n, device=pred.device)[None, :] < n_val[:, None]).to(pred.dtype)
        loss = weighted_loss(pred, st.val_y, w)
    return loss.cpu().numpy().astype(np.float64)
