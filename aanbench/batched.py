"""Batched training: many independent fits of one torch network, stepped together.

The AttendAffectNet models are tiny; one mini-batch step costs far more in
Python and dispatcher overhead than in arithmetic. :func:`train_batched`
stacks ``K`` copies of a network (same architecture, different weights,
data, targets or folds) and steps them as one: ``torch.func.functional_call``
with the stacked ``(K, ...)`` parameters runs the ``K`` forward passes as
batched operations, either with the copies folded into the batch dimension
(networks that declare ``stack_fold``, see :func:`_fold_copies`: the AAN
networks) or under ``torch.func.vmap`` (any other network), and one fused
Adam step (:func:`_adam_step`) updates every copy's parameters.

Each copy keeps everything the shared trainer (:func:`aanbench.training.train_torch`)
gives a single fit:

- its own initial weights (the network its model built, seeded), its own
  fitting and validation samples, its own standardisation;
- its own data order: a generator seeded with its seed draws a permutation of
  its fitting samples each epoch, exactly as ``train_torch`` does, and the
  batches are cut the same way (a last batch of one sample is skipped);
- its own Adam state and step count (Adam is elementwise, so Adam on the
  stacked parameters is Adam on each copy; lr, betas and weight decay are
  the same for the whole stack, as :class:`~aanbench.training.TrainConfig`
  must be);
- its own early stopping and best-epoch weights. A copy that stops is taken
  out of the stack at the end of that epoch: it is never updated again.

Copies whose fitting sets differ in size have different numbers of batches
per epoch; a shorter copy's missing steps, and the padding of a short last
batch, are masked (weight 0 in the loss, no Adam update, its step count
unchanged), so each copy takes exactly the steps it would take alone.

What differs from the one-at-a-time trainer: dropout masks are drawn for the
whole stack from torch's global generator (seeded with the first job's seed),
not in each fit's sequence, as 16-bit values drawn once per step
(:class:`_MaskPool`: the template's ``nn.Dropout`` modules are replaced), and
batched kernels sum in another order. The
same jobs and seeds give the same numbers; they are not bit-identical to
sequential fits (see ``tests/test_batched.py``: pooled metrics agree within
the bootstrap interval).

Requirements on the network: ``forward(*xs)`` (and ``forward(*xs, extra)``
in training when a job has ``fit_extra``) gives ``(batch,)``, each sample's
output depends on that sample only (no batch norm), and whatever differs
between copies is a parameter or a buffer (a plain Python attribute is taken
from the first copy). Buffers are constants of each copy (not trained).
A module with a ``stacked`` attribute has it set to True in the stack (it
may choose formulas that suit the stack's larger tensors: the AAN networks'
layer norm and softmax do).

Inputs never exist as ``K`` standardised copies of the data: a job holds row
indices into shared feature arrays and its own mean and std; each step
gathers the rows of its batch and standardises them (``(x - mean) / std``,
float32, as :class:`aanbench.runner.Standardizer`).

Networks whose first layers are one linear map per feature (``projections``,
an ``nn.ModuleList`` of ``nn.Linear``, layer ``k`` reading feature ``k``
only) and that offer ``from_projections(*projected[, extra])`` (the rest of
``forward``) get a faster first layer (:class:`_Stem`): each copy's
standardisation is folded into its projection, ``((x - m) / s) W^T + b =
(x - c) (W / s)^T + (b - ((m - c) / s) W^T)`` (exact in real arithmetic; ``c``,
the first job's fitting mean, centres the shared rows once per stack: the
folded bias then stays small where the fits' means are close, instead of
cancelling large raw values), and on the CPU each copy's batch rows are
gathered into a small buffer that stays in cache for its product, in the
forward pass and again in the backward pass, instead of writing, dividing
and re-reading a ``(K, batch, window, dim)`` standardised tensor each step;
copies whose batches hold the same rows (the valence and arousal fits of a
fold) share one gather and one wider product.
The stack holds one centred float32 copy of the feature arrays (the size of
the arrays themselves). The trained weights are the network's own ``W`` and
``b``: the model predicts on standardised inputs as before.

Devices: ``train_batched(jobs, device="cuda")`` runs the stack on that torch
device (see :func:`aanbench.training.resolve_device`): the shared feature
arrays, the stack's parameters, Adam state, standardisations and sample
indices go there once; each epoch's data order is drawn on the CPU (the same
generators as on the CPU) and moved once per epoch; each step gathers its
batch on the device. The jobs' networks stay on the CPU and receive their
final weights there.
"""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn

from aanbench.contracts import FitReport
from aanbench.training import TrainConfig, device_scope, no_cycle_collection

# Largest gathered input of one forward pass, in float32 values (validation
# runs in chunks of samples below it): 16 M values = 64 MB.
MAX_GATHER = 16_000_000
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass
class TorchFit:
    """What a model hands the batched trainer: its built (seeded, untrained)
    network, the training configuration, and the extra training input (e.g.
    teacher-forcing labels, ``(n_fit, ...)``) or None."""

    net: nn.Module
    config: TrainConfig
    extra: np.ndarray | None = None


@runtime_checkable
class BatchableModel(Protocol):
    """A model that can be trained in a stack (opt-in): ``torch_fit`` builds
    its network for the given fitting labels and returns a :class:`TorchFit`
    (the model keeps the network, which the trainer trains in place: after
    training, ``predict`` and ``state`` work as after ``fit``). Keywords are
    the ones the runner passes ``fit`` (``train_y_rows`` / ``val_y_rows``
    for models whose spec wants row labels)."""

    def torch_fit(self, train_y: np.ndarray, *, seed: int, **labels: Any) -> TorchFit: ...


@dataclass
class BatchJob:
    """One fit in a stack.

    ``rows``: the shared feature arrays, ``float32 (n_rows, dim_k)`` (the same
    objects for every job of a stack); ``mean`` / ``std``: this job's
    standardisation, ``(dim_k,)`` each. ``fit`` / ``val``: the row of each
    fitting / validation sample, ``(n,)`` for row models or ``(n, T)`` (a
    window's member rows, oldest first) for sequence models; ``fit_y`` /
    ``val_y``: their labels ``(n,)``. ``fit_extra``: the extra training input
    of each fitting sample, or None."""

    torch_fit: TorchFit
    seed: int
    rows: Sequence[np.ndarray]
    mean: Sequence[np.ndarray]
    std: Sequence[np.ndarray]
    fit: np.ndarray
    fit_y: np.ndarray
    val: np.ndarray | None = None
    val_y: np.ndarray | None = None
    report: FitReport | None = field(default=None, init=False)


def _weighted_loss(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per copy ``MSE + (1 - r)`` over the samples of weight 1: ``(K, B)`` -> ``(K,)``.
    With all weights 1 it is :func:`aanbench.training.mse_pearson_loss` of each row."""
    n = w.sum(1).clamp_min(1.0)
    mse = (w * (pred - y) ** 2).sum(1) / n
    pc = pred - ((w * pred).sum(1) / n)[:, None]
    yc = y - ((w * y).sum(1) / n)[:, None]
    r = (w * pc * yc).sum(1) / (torch.sqrt((w * pc**2).sum(1) * (w * yc**2).sum(1)) + eps)
    return mse + (1.0 - r)


def _pad(arrays: list[np.ndarray], fill: float = 0) -> np.ndarray:
    """Stack arrays of different lengths (first axis), padding with ``fill``."""
    n = max(len(a) for a in arrays)
    out = np.full((len(arrays), n) + arrays[0].shape[1:], fill, dtype=arrays[0].dtype)
    for k, a in enumerate(arrays):
        out[k, : len(a)] = a
    return out


class _Stack:
    """The live copies: flat parameters ``(K, P)``, Adam state, data indices."""

    def __init__(self, jobs: list[BatchJob], template: nn.Module, device: torch.device) -> None:
        self.device = device
        names = [n for n, _ in template.named_parameters()]
        self.names = names
        self.shapes = [p.shape for _, p in template.named_parameters()]
        self.sizes = [int(p.numel()) for _, p in template.named_parameters()]
        self.buffer_names = [n for n, _ in template.named_buffers()]
        flats, bufs = [], {n: [] for n in self.buffer_names}
        for j in jobs:
            params = dict(j.torch_fit.net.named_parameters())
            if [n for n in params] != names or any(params[n].shape != s for n, s in zip(names, self.shapes)):
                raise ValueError("batched training needs one architecture for the whole stack; "
                                 f"job with seed {j.seed} has other parameters")
            flats.append(torch.cat([params[n].detach().reshape(-1) for n in names]))
            jb = dict(j.torch_fit.net.named_buffers())
            for n in self.buffer_names:
                bufs[n].append(jb[n].detach())
        self.flat = torch.stack(flats)  # (K, P)
        self.buffers = {n: torch.stack(v) for n, v in bufs.items()}
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat)
        self.steps = torch.zeros(len(jobs), dtype=torch.float32)  # as torch.optim.Adam's step
        self.ids = np.arange(len(jobs))  # job index of each live copy
        self.mean = [torch.from_numpy(np.stack([np.asarray(j.mean[f], np.float32) for j in jobs]))
                     for f in range(len(jobs[0].rows))]
        self.std = [torch.from_numpy(np.stack([np.asarray(j.std[f], np.float32) for j in jobs]))
                    for f in range(len(jobs[0].rows))]
        self.n_fit = np.array([len(j.fit_y) for j in jobs])
        self.fit = torch.from_numpy(_pad([np.asarray(j.fit, np.int64) for j in jobs]))
        self.fit_y = torch.from_numpy(_pad([np.asarray(j.fit_y, np.float32) for j in jobs]))
        extras = [j.torch_fit.extra for j in jobs]
        self.extra = None
        if any(e is not None for e in extras):
            if any(e is None for e in extras):
                raise ValueError("batched training: either every job of a stack has a training extra or none")
            for e, j in zip(extras, jobs):
                if len(e) != len(j.fit_y):
                    raise ValueError(f"train_extra has {len(e)} rows for {len(j.fit_y)} training samples")
            self.extra = torch.from_numpy(_pad([np.asarray(e, np.float32) for e in extras]))
        have_val = [j.val is not None and j.val_y is not None and len(j.val_y) >= 2 for j in jobs]
        self.have_val = np.array(have_val)
        if any(have_val):
            vals = [np.asarray(j.val if h else j.fit[:2], np.int64) for j, h in zip(jobs, have_val)]
            vys = [np.asarray(j.val_y if h else j.fit_y[:2], np.float32) for j, h in zip(jobs, have_val)]
            self.n_val = np.array([len(v) for v in vals])
            self.val = torch.from_numpy(_pad(vals))
            self.val_y = torch.from_numpy(_pad(vys))
        for name in ("flat", "m", "v", "steps", "fit", "fit_y", "extra", "val", "val_y"):
            if getattr(self, name, None) is not None:
                setattr(self, name, getattr(self, name).to(device))
        self.buffers = {n: b.to(device) for n, b in self.buffers.items()}
        self.mean = [m.to(device) for m in self.mean]
        self.std = [s.to(device) for s in self.std]

    def select(self, keep: np.ndarray) -> None:
        """Keep only the live copies at positions ``keep``."""
        kt = torch.from_numpy(keep).to(self.device)
        self.flat, self.m, self.v, self.steps = self.flat[kt], self.m[kt], self.v[kt], self.steps[kt]
        self.buffers = {n: b[kt] for n, b in self.buffers.items()}
        self.ids = self.ids[keep]
        self.have_val = self.have_val[keep]
        self.mean = [m[kt] for m in self.mean]
        self.std = [s[kt] for s in self.std]
        self.n_fit = self.n_fit[keep]
        self.fit, self.fit_y = self.fit[kt], self.fit_y[kt]
        if self.extra is not None:
            self.extra = self.extra[kt]
        if self.have_val.any():
            self.n_val, self.val, self.val_y = self.n_val[keep], self.val[kt], self.val_y[kt]

    def params(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, off = {}, 0
        k = flat.shape[0]
        for n, s, size in zip(self.names, self.shapes, self.sizes):
            out[n] = flat[:, off : off + size].reshape(k, *s)
            off += size
        return out

    def state_of(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        out, off = {}, 0
        for n, s, size in zip(self.names, self.shapes, self.sizes):
            out[n] = row[off : off + size].reshape(s).clone()
            off += size
        return out


def _gather(rows: list[torch.Tensor], mean: list[torch.Tensor], std: list[torch.Tensor],
            members: torch.Tensor, out: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Standardised inputs of the samples ``members`` (``(K, B)`` or ``(K, B, T)``
    row indices): one ``(K, B[, T], dim_k)`` tensor per feature, written into
    ``out`` (reused buffers of that shape) when given."""
    shape = (members.shape[0],) + (1,) * (members.dim() - 1) + (-1,)
    flat = members.reshape(-1)
    xs = []
    for f, (r, m, s) in enumerate(zip(rows, mean, std)):
        if out is None:
            x = torch.index_select(r, 0, flat)
        else:
            x = torch.index_select(r, 0, flat, out=out[f].view(-1, r.shape[1]))
        xs.append(x.view(*members.shape, r.shape[1]).sub_(m.view(shape)).div_(s.view(shape)))
    return xs


def _same_rows(idx: torch.Tensor) -> list[tuple[int, int]]:
    """Runs ``[start, stop)`` of neighbouring copies of ``idx`` ``(K, M)`` with
    identical rows (e.g. the valence and arousal fits of one fold: same
    samples, same seed, so the same batches; :func:`_train_batched` puts such
    copies side by side), covering ``0 .. K`` in order."""
    k = idx.shape[0]
    if k == 1:
        return [(0, 1)]
    differs = torch.nonzero((idx[1:] != idx[:-1]).any(1)).flatten().add_(1).tolist()
    bounds = [0, *differs, k]
    return list(zip(bounds[:-1], bounds[1:]))


class _Threads:
    """The CPU first layer's threads while a stack trains
    (``train_batched(threads=n)``): the calling thread and ``n - 1`` workers."""

    def __init__(self, n: int = 1) -> None:
        self.n = max(1, int(n))
        self.pool = ThreadPoolExecutor(self.n - 1, thread_name_prefix="aanbench-stem") if self.n > 1 else None

    def share(self, work: Callable[[Sequence[tuple[int, int]]], None], runs: list[tuple[int, int]]) -> None:
        """``work(runs)``, or ``work`` on consecutive shares of the runs at once,
        one share per thread. Each run's products are the same single-threaded
        calls either way (torch releases the interpreter lock inside them), so
        the numbers do not depend on the number of threads, only the wall
        time does."""
        n = min(self.n, len(runs))
        if self.pool is None or n < 2:
            work(runs)
            return
        cut = [round(i * len(runs) / n) for i in range(n + 1)]
        futures = [self.pool.submit(work, runs[cut[i]:cut[i + 1]]) for i in range(1, n)]
        work(runs[: cut[1]])
        for f in futures:
            f.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _over_runs(rows: torch.Tensor, idx: torch.Tensor, bounds: list[tuple[int, int]], runs: list[tuple[int, int]],
               product: Callable[..., None], threads: _Threads | None, unique: bool = False) -> None:
    """For each run ``(a, b)`` of copies with the same rows (:func:`_same_rows`):
    their rows ``rows[idx[a]]`` gathered into a reused ``(M, D)`` buffer, then
    ``product(columns, i)`` with the buffer's column blocks ``bounds`` (views)
    and the run's position ``i`` in ``runs``; the runs shared out over
    ``threads``, a buffer each.

    ``unique``: each distinct row gathered once (e.g. the windows of one
    movie in validation, where each segment is a member of up to 5 windows),
    and ``product(columns, i, inverse)`` gets the distinct rows' columns and
    each of the ``M`` positions' index among them (``torch.unique``'s inverse)."""
    m, d = idx.shape[1], rows.shape[1]
    sel = idx.unbind(0)  # one call for every copy's index row (slicing in Python costs more per run)

    def work(part: Sequence[int]) -> None:
        with torch.no_grad():  # grad mode is per thread: a worker's is on, as inside autograd it is not
            buf = torch.empty(m, d, dtype=rows.dtype)
            cols = [buf[:, lo:hi] for lo, hi in bounds]
            for i in part:
                if unique:
                    distinct, inverse = torch.unique(sel[runs[i][0]], return_inverse=True)
                    torch.index_select(rows, 0, distinct, out=buf[: len(distinct)])
                    product([c[: len(distinct)] for c in cols], i, inverse)
                else:
                    torch.index_select(rows, 0, sel[runs[i][0]], out=buf)
                    product(cols, i)

    (threads or _Threads()).share(work, list(range(len(runs))))


class _GatheredLinear(torch.autograd.Function):
    """The stack's first layer, every feature at once: for feature ``f`` (the
    columns ``bounds[f]`` of ``rows``) and copy ``k``,
    ``out_f[k] = ((rows[idx[k], f] - shift_f[k]) / std_f[k]) @ weight_f[k].T + bias_f[k]``
    (``rows`` ``(N, D)``: the features' centred rows side by side, shared by
    the copies; ``shift_f``: each copy's mean minus that centre; idx ``(K, M)``,
    weight_f ``(K, O_f, D_f)``, bias_f ``(K, O_f)``, std_f and shift_f
    ``(K, D_f)`` -> a ``(K, M, O_f)`` output per feature), computed as
    ``rows[idx[k], f] @ w_f[k].T + (bias_f[k] - w_f[k] . shift_f[k])`` with
    ``w_f = weight_f / std_f``: the copy's standardisation folded into its weight.

    On the CPU one run of neighbouring copies with the same rows
    (:func:`_same_rows`) at a time: their rows (all features) are gathered
    once into an ``(M, D)`` buffer (small enough to stay in cache for the
    products) and each feature's columns multiplied by the run's weights side
    by side, ``(M, D_f) @ (D_f, G*O_f)``, straight into the run's output
    columns; gathered again in the backward pass (never a ``(K, M, D)``
    tensor; buffers kept from the forward pass, measured, were no faster: a
    step's 42 MB at COGNIMUSE size come back from memory). ``threads``
    (:class:`_Threads` or None) share the runs out. Without gradients (in
    validation) each run's distinct rows are gathered and multiplied once
    (a movie's windows of 5 segments hold each segment up to 5 times).
    Elsewhere one gather and batched products.

    The backward pass gives each weight's gradient ``(G^T x - gb shift^T) / std``
    (``G``: the output's gradient, ``gb``: its sum over the rows) in three
    passes over the ``(K, O, D)`` weights (the products, one in-place
    outer-product update, the division), written into ``grad_outs[f]`` (a
    ``(K, O_f, D_f)`` view of the caller's flat gradient) when given: no
    temporaries of that size and no copy into the flat gradient. No gradient
    for the rows, std or shift.

    ``apply(rows, idx, bounds, stds, shifts, threads, grad_outs, w_0, b_0, w_1, b_1, ...)``
    with ``bounds`` ``[(start, stop), ...]``, ``stds``, ``shifts`` and
    ``grad_outs`` (or None) lists by feature; returns the outputs by feature."""

    @staticmethod
    def forward(ctx, rows, idx, bounds, stds, shifts, threads, grad_outs, *wb):  # type: ignore[override]
        ws = [w / s[:, None, :] for w, s in zip(wb[0::2], stds)]
        # (a batched matrix-vector product is 7x slower here than the product and sum)
        bs = [b - (w * sh[:, None, :]).sum(-1) for w, b, sh in zip(ws, wb[1::2], shifts)]
        ctx.save_for_backward(rows, idx)
        ctx.bounds, ctx.stds, ctx.shifts, ctx.threads, ctx.grad_outs = bounds, stds, shifts, threads, grad_outs
        if rows.device.type != "cpu":
            x = rows[idx]
            return tuple(torch.baddbmm(b[:, None, :], x[..., lo:hi], w.transpose(1, 2))
                         for (lo, hi), w, b in zip(bounds, ws, bs))
        k, m = idx.shape
        ctx.runs = runs = _same_rows(idx)
        outs, parts = [], []
        for w, b in zip(ws, bs):
            o, d = w.shape[1], w.shape[2]
            out = torch.empty(m, k * o, dtype=rows.dtype)  # samples-major: a run's outputs are columns
            outs.append(out.view(m, k, o).transpose(0, 1))
            # each run's weights, bias and output columns as views made in one call each
            sizes = [(c - a) * o for a, c in runs]
            parts.append(list(zip(w.view(k * o, d).t().split(sizes, 1), b.reshape(k * o).split(sizes),
                                  out.split(sizes, 1))))

        def product(cols: list[torch.Tensor], i: int, inverse: torch.Tensor | None = None) -> None:
            for x, part in zip(cols, parts):
                wt, b, out = part[i]
                if inverse is None:
                    torch.addmm(b, x, wt, out=out)  # (M, D_f) @ (D_f, G*O_f): the run's products at once
                else:  # the distinct rows' products, then each position's
                    out.copy_(torch.addmm(b, x, wt).index_select(0, inverse))

        # without gradients (validation) each distinct row once: a sequence model's windows share rows
        _over_runs(rows, idx, bounds, runs, product, threads, unique=not any(ctx.needs_input_grad))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        rows, idx = ctx.saved_tensors
        k, m = idx.shape
        gbs = [g.sum(1) for g in grads]
        if rows.device.type != "cpu":
            x = rows[idx]
            gws = [torch.bmm(g.transpose(1, 2), x[..., lo:hi]) for g, (lo, hi) in zip(grads, ctx.bounds)]
        else:
            gws, parts = [], []
            for g, (lo, hi) in zip(grads, ctx.bounds):
                o, d = g.shape[2], hi - lo
                gw = torch.empty(k, o, d, dtype=rows.dtype)
                gws.append(gw)
                sizes = [(c - a) * o for a, c in ctx.runs]
                # samples-major, as the forward's output; each run's rows of G^T and of the gradient
                parts.append(list(zip(g.transpose(0, 1).reshape(m, k * o).t().split(sizes),
                                      gw.view(k * o, d).split(sizes))))

            def product(cols: list[torch.Tensor], i: int) -> None:
                for x, part in zip(cols, parts):
                    gt, gw = part[i]
                    torch.mm(gt, x, out=gw)  # (G*O_f, M) @ (M, D_f)

            _over_runs(rows, idx, ctx.bounds, ctx.runs, product, ctx.threads)
        out: list[torch.Tensor | None] = [None] * 7
        for f, (gw, gb) in enumerate(zip(gws, gbs)):
            gw.addcmul_(gb[:, :, None], ctx.shifts[f][:, None, :], value=-1)
            std = ctx.stds[f][:, None, :]
            slot = None if ctx.grad_outs is None else ctx.grad_outs[f]
            out += [gw.div_(std) if slot is None else torch.div(gw, std, out=slot), gb]
        return tuple(out)


class _Stem:
    """The stack's first layer for networks with per-feature ``projections``
    and ``from_projections`` (see the module's docstring)."""

    @staticmethod
    def fits(net: nn.Module, rows: Sequence[np.ndarray]) -> bool:
        proj = getattr(net, "projections", None)
        return (callable(getattr(net, "from_projections", None)) and isinstance(proj, nn.ModuleList)
                and len(proj) == len(rows) and all(isinstance(p, nn.Linear) and p.bias is not None
                                                   and p.in_features == r.shape[1] for p, r in zip(proj, rows)))

    def __init__(self, rows: list[torch.Tensor], center: list[torch.Tensor], threads: _Threads | None = None) -> None:
        self.center = center
        # the features' centred rows side by side (a run's rows are gathered in one call), written
        # feature by feature: no second copy of the arrays at any time
        cuts = np.cumsum([0] + [int(r.shape[1]) for r in rows]).tolist()
        self.bounds = list(zip(cuts[:-1], cuts[1:]))
        self.joined = torch.empty(rows[0].shape[0], cuts[-1], dtype=rows[0].dtype, device=rows[0].device)
        for r, c, (lo, hi) in zip(rows, center, self.bounds):
            torch.sub(r, c, out=self.joined[:, lo:hi])
        self.rows = [self.joined[:, lo:hi] for lo, hi in self.bounds]  # views, by feature
        self.threads = threads
        self._shifts: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def shifts(self, st: "_Stack") -> list[torch.Tensor]:
        """Each copy's mean minus the centre, by feature (kept while the stack's
        means are the same tensors)."""
        if self._shifts is None or any(a is not b for a, b in zip(self._shifts[0], st.mean)):
            self._shifts = (list(st.mean), [m - c for m, c in zip(st.mean, self.center)])
        return self._shifts[1]

    def project(self, st: "_Stack", params: dict[str, torch.Tensor], members: torch.Tensor,
                grads: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Each copy's projected, standardised inputs of ``members`` ((K, B[, T]) rows):
        ``(K, B[, T], out_k)`` per feature. ``grads``: views of the caller's flat
        gradient by parameter name; the projection weights' gradients are
        written there."""
        idx = members.reshape(members.shape[0], -1)
        n = len(self.bounds)
        names = [f"projections.{f}.weight" for f in range(n)]
        wb = [t for f in range(n) for t in (params[names[f]], params[f"projections.{f}.bias"])]
        outs = _GatheredLinear.apply(self.joined, idx, self.bounds, st.std, self.shifts(st), self.threads,
                                     None if grads is None else [grads[x] for x in names], *wb)
        return [y.view(*members.shape, y.shape[-1]) for y in outs]


class _MaskPool:
    """Random bits for the stack's dropout masks, drawn once per training step.

    Torch's dropout draws a float per element (``bernoulli_``), which on the
    CPU costs more than the rest of the dropout (measured: 4.2 ms for 720,000
    elements, the Feature AAN stack's masks per step, against 0.6 ms for the
    same number of 16-bit values). Here one ``random_`` call per step fills
    ``(K, size)`` 16-bit values for the whole stack (each ``int64`` draw
    gives four; 15 bits of each are kept, as ``random_`` leaves an
    ``int64``'s top bit 0), and each dropout call of the step takes the next
    slice of its copy's row: an element is kept when its value is at least
    ``round(p * 2**15)`` (probability within 2**-16 of ``1 - p``). The first
    step counts the values a step needs and draws its masks with
    ``rand_like``; from then on the pool holds that many (a smaller last
    batch uses fewer). Drawn from torch's global generator, seeded by the
    stack: the same seed gives the same masks."""

    def __init__(self) -> None:
        self.size = 0
        self.needed = 0
        self.bits: torch.Tensor | None = None
        self.offset = 0

    def draw(self, k: int, device: torch.device) -> torch.Tensor:
        """The bits of one training step, ``(k, size)`` int16 (``(k, 1)`` before the first count)."""
        self.size = max(self.size, self.needed)
        if self.size == 0:
            return torch.zeros(k, 1, dtype=torch.int16, device=device)
        words = torch.empty(k, (self.size + 3) // 4, dtype=torch.int64, device=device).random_()
        return words.view(torch.int16).bitwise_and_(0x7FFF)

    def keep(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """A boolean mask of ``x``'s shape: True with probability ``1 - p``."""
        n = x.numel()
        start, self.offset = self.offset, self.offset + n
        self.needed = max(self.needed, self.offset)
        if self.bits is None or self.offset > self.size:
            return torch.rand_like(x) >= p
        return self.bits[start : start + n].view(x.shape) >= round(p * 32768)


class _PoolDropout(nn.Module):
    """``nn.Dropout`` in the stack's template, its masks from a :class:`_MaskPool`."""

    def __init__(self, p: float, pool: _MaskPool) -> None:
        super().__init__()
        self.p, self.pool = float(p), pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x * (self.pool.keep(x, self.p) * (1.0 / (1.0 - self.p)))


def _swap_modules(net: nn.Module, swap: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace each submodule of ``net`` for which ``swap`` returns a module; how many."""
    swapped = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            new = swap(child)
            if new is not None:
                setattr(parent, name, new)
                swapped += 1
    return swapped


def _pool_dropouts(net: nn.Module, pool: _MaskPool) -> int:
    """Replace ``net``'s ``nn.Dropout`` modules (0 < p < 1) by :class:`_PoolDropout`; how many."""
    return _swap_modules(net, lambda m: _PoolDropout(m.p, pool) if type(m) is nn.Dropout and 0.0 < m.p < 1.0
                         and not m.inplace else None)


# Run a stack whose network allows it (``stack_fold = True``) with the copies folded
# into the batch dimension instead of under ``vmap`` (False: always ``vmap``).
FOLD_COPIES = True


class _StackLinear(nn.Module):
    """``nn.Linear`` in a folded stack's template: weight ``(K, out, in)`` and
    bias ``(K, out)`` (the stack's parameters, through ``functional_call``);
    the input's rows are the ``K`` copies' samples, copy-major."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, shape = self.weight, x.shape
        x3 = x.reshape(w.shape[0], -1, shape[-1])
        if self.bias is None:
            y = torch.bmm(x3, w.transpose(1, 2))
        else:
            y = torch.baddbmm(self.bias[:, None, :], x3, w.transpose(1, 2))
        return y.reshape(*shape[:-1], w.shape[1])


def _fold_copies(net: nn.Module) -> None:
    """Prepare a stack's template (a network with ``stack_fold = True``) to run
    its ``K`` copies folded into the batch: ``nn.Linear`` -> :class:`_StackLinear`,
    modules with a ``folded`` attribute get it set to True.

    A folded network promises that every other parameterised module takes
    ``(K, ...)`` parameters itself (e.g. the AAN networks' layer norm), that
    buffers of shape ``(K, ...)`` are handled (e.g. the temporal decoder's
    start value), and that samples never mix. Under ``vmap`` each of the
    many small operations of these networks costs more (measured: the Feature
    AAN encoder's forward and backward pass over 24 copies x 30 samples,
    29 ms under ``vmap``, 23 ms folded), and attention can keep the samples
    innermost (see ``stacked_attention`` in the AAN networks)."""
    _swap_modules(net, lambda m: _StackLinear(m) if type(m) is nn.Linear else None)
    for mod in net.modules():
        if hasattr(mod, "folded"):
            mod.folded = True


class _Rest(nn.Module):
    """``forward`` = the wrapped network's ``from_projections`` (for ``functional_call``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.net.from_projections(*xs)


def default_threads() -> int:
    """The default threads of a stack's first layer (see :func:`train_batched`):
    the CPUs this process may run on (:func:`aanbench.backends.usable_cpus`)."""
    from aanbench.backends import usable_cpus

    return usable_cpus()


def train_batched(jobs: Sequence[BatchJob], device: Any = None, threads: int | None = None) -> list[FitReport]:
    """Train every job's network in place (its best validation epoch's weights,
    or the last epoch's without validation) and return one report per job.
    All jobs must share the training configuration and the architecture;
    :func:`group_jobs` splits a mixed list into such stacks. A report's
    ``seconds`` is the stack's wall time divided by the number of jobs.
    ``device``: the torch device to train on (default the CPU).

    Torch runs on one CPU thread while the stack trains (restored after), as
    :func:`aanbench.training.train_torch`. ``threads`` (default
    :func:`default_threads`: every CPU this process may use) are the CPU
    first layer's threads (:class:`_Stem`, where most of the arithmetic is):
    its copies' products are spread over them, each product still on one
    thread, so the same seeds give the same numbers with any ``threads``."""
    jobs = list(jobs)
    if not jobs:
        return []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    workers = _Threads(default_threads() if threads is None else threads)
    try:
        with device_scope(device) as dev, no_cycle_collection():
            return _train_batched(jobs, dev, workers)
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
               tuple(id(r) for r in j.rows), np.asarray(j.fit).ndim, j.torch_fit.extra is None)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _stack_order(jobs: Sequence[BatchJob]) -> np.ndarray:
    """The jobs' order in the stack: jobs that draw the same batches (same
    seed, same fitting samples, e.g. one fold's valence and arousal fits)
    side by side, so that the first layer gathers their rows once (see
    :func:`_same_rows`); otherwise the given order."""
    runs: dict[Any, list[int]] = {}
    for i, j in enumerate(jobs):
        fit = np.ascontiguousarray(j.fit)
        runs.setdefault((int(j.seed), fit.shape, fit.tobytes()), []).append(i)
    return np.array([i for run in runs.values() for i in run], dtype=np.int64)


def _train_batched(jobs: list[BatchJob], device: torch.device, threads: _Threads | None = None) -> list[FitReport]:
    t0 = time.perf_counter()
    cfg = jobs[0].torch_fit.config
    for j in jobs:
        if j.torch_fit.config != cfg:
            raise ValueError(f"batched training needs one training configuration per stack: {j.torch_fit.config} "
                             f"differs from {cfg}")
        if any(a is not b for a, b in zip(j.rows, jobs[0].rows)) or len(j.rows) != len(jobs[0].rows):
            raise ValueError("batched training needs the same feature arrays for every job of a stack")
    for j in jobs:
        for mod in j.torch_fit.net.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                raise ValueError("batched training: batch norm makes samples depend on each other; "
                                 "train this model sequentially")
    from torch.func import functional_call, vmap

    template = copy.deepcopy(jobs[0].torch_fit.net).to(device)
    for mod in template.modules():  # a module may compute otherwise for a stack's larger tensors
        if hasattr(mod, "stacked"):
            mod.stacked = True
    order = _stack_order(jobs)
    st = _Stack([jobs[j] for j in order], template, device)
    st.ids = order  # the job of each copy
    rows = [torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32)).to(device) for r in jobs[0].rows]
    stem = _Stem(rows, [m[0].clone() for m in st.mean], threads) if _Stem.fits(template, jobs[0].rows) else None
    if stem is not None:
        rows = stem.rows  # the centred copy; the raw arrays are not used again
    pool = _MaskPool()
    _pool_dropouts(template, pool)
    folded = FOLD_COPIES and bool(getattr(template, "stack_fold", False))
    if folded:
        _fold_copies(template)
    torch.manual_seed(jobs[0].seed)
    gens = [torch.Generator().manual_seed(int(j.seed)) for j in jobs]
    rest = _Rest(template)

    def forward(params, buffers, bits, *xs):
        pool.bits, pool.offset = bits, 0
        if stem is not None:
            return functional_call(rest, ({f"net.{n}": v for n, v in params.items()},
                                          {f"net.{n}": v for n, v in buffers.items()}), xs)
        return functional_call(template, (params, buffers), xs)

    def fforward(params, buffers, bits, *xs):
        # the copies folded into the batch: (K, B, ...) -> (K * B, ...), copy-major; bits (1, size)
        k = xs[0].shape[0]
        return forward(params, buffers, bits[0], *(x.reshape(-1, *x.shape[2:]) for x in xs)).view(k, -1)

    def inputs(params: dict[str, torch.Tensor], members: torch.Tensor,
               out: list[torch.Tensor] | None = None,
               grads: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        if stem is not None:
            return stem.project(st, params, members, grads)
        return _gather(rows, st.mean, st.std, members, out)

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
        # a masked step still runs through the network: give it real samples so its (unused) loss is finite
        dummy = ~live
        if dummy.any():
            first = pos[:, 0, :]
            pos = torch.where(dummy[:, :, None], first[:, None, :], pos)
        pos, wt, live = pos.to(device), wt.to(device), live.to(device)
        kk = torch.arange(k, device=device)[:, None]
        template.train()
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
            pred = vforward(leaves, st.buffers, pool.draw(1 if folded else k, device), *xs)
            loss = (_weighted_loss(pred, st.fit_y[kk, idx], w) * active.to(pred.dtype)).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            with torch.no_grad():
                for g, slot in zip(grads, slots.values()):
                    if g is None:
                        slot.zero_()
                    elif g.data_ptr() != slot.data_ptr() or g.stride() != slot.stride():
                        slot.copy_(g)  # (the first layer's weights write theirs in place)
                _adam_step(st, grad, active, lr, wd)
        epochs[st.ids] = epoch
        if not st.have_val.any():
            continue
        vloss = _validation_loss(st, rows, template, vforward, inputs,
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
        has_val = bool(_has_val(job))
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


# torch's one-pass Adam kernel (what ``torch.optim.Adam(fused=True)`` calls); None on a
# torch without it, or set to None to take the elementwise formula below
FUSED_ADAM = getattr(torch, "_fused_adam_", None)


def _adam_step(st: "_Stack", grad: torch.Tensor, active: torch.Tensor, lr: float, wd: float) -> None:
    """One Adam step (as ``torch.optim.Adam``: L2 weight decay added to the
    gradient, bias-corrected moments) on the rows of the live copies that
    take a step (``active``, ``(K,)`` bool); a masked copy's row, moments and
    step count stay as they are. ``grad``: ``(K, P)``, overwritten.

    With torch's fused kernel (:data:`FUSED_ADAM`) each copy's row is one
    tensor of the kernel's list with its own step count: one pass over the
    parameters, moments and gradient (the elementwise formula takes about
    ten passes over ``(K, P)``: 16x slower at the Temporal model's 24 x 61,529,
    measured)."""
    b1, b2 = ADAM_BETAS
    st.steps += active.to(st.steps.dtype)
    if FUSED_ADAM is not None:
        on = range(len(active)) if bool(active.all()) else torch.nonzero(active).flatten().tolist()
        rows = [(st.flat[i], grad[i], st.m[i], st.v[i], st.steps[i]) for i in on]
        if rows:
            p, g, m, v, t = (list(x) for x in zip(*rows))
            FUSED_ADAM(p, g, m, v, [], t, lr=lr, beta1=b1, beta2=b2, weight_decay=wd, eps=ADAM_EPS,
                       amsgrad=False, maximize=False)
        return
    a = active[:, None]
    g = grad.masked_fill_(~a, 0.0)
    if wd:
        g.add_(st.flat * a, alpha=wd)
    t = st.steps.double().clamp_min(1.0)
    af = a.to(g.dtype)
    bias2_sqrt = torch.sqrt(1 - b2**t).to(torch.float32)[:, None]
    step_size = (lr / (1 - b1**t)).to(torch.float32)[:, None]
    st.m.lerp_(g, (1 - b1) * af)
    st.v.mul_(torch.where(a, b2, 1.0)).addcmul_(g, g, value=1 - b2)
    denom = st.v.sqrt().div_(bias2_sqrt).add_(ADAM_EPS)
    st.flat.addcdiv_(st.m * (step_size * af), denom, value=-1.0)


def _has_val(job: BatchJob) -> bool:
    return job.val is not None and job.val_y is not None and len(job.val_y) >= 2


def _validation_loss(st: _Stack, rows: list[torch.Tensor], template: nn.Module, vforward, inputs,
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
    no_bits = torch.zeros(k, 1, dtype=torch.int16, device=st.flat.device)  # no dropout in evaluation mode
    with torch.no_grad():
        for c0 in range(0, n, chunk):
            xs = inputs(params, st.val[:, c0 : c0 + chunk])
            preds.append(vforward(params, st.buffers, no_bits, *xs))
        pred = torch.cat(preds, 1)
        n_val = torch.from_numpy(st.n_val).to(pred.device)
        w = (torch.arange(n, device=pred.device)[None, :] < n_val[:, None]).to(pred.dtype)
        loss = _weighted_loss(pred, st.val_y, w)
    return loss.cpu().numpy().astype(np.float64)
