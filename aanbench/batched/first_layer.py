"""A stack's inputs: each step's rows gathered and standardised per copy
(:func:`gather`), or, for networks with per-feature ``projections``
(:class:`~aanbench.batched.contract.ProjectedNet`), the gathered first layer
(:class:`Stem`, a custom autograd Function :class:`GatheredLinear`) with each
copy's standardisation folded into its projection (see :mod:`aanbench.batched`)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from aanbench.batched.contract import ProjectedNet
from aanbench.batched.stack import Stack
from aanbench.batched.threads import Threads


def gather(rows: list[torch.Tensor], mean: list[torch.Tensor], std: list[torch.Tensor],
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


def same_rows(idx: torch.Tensor) -> list[tuple[int, int]]:
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


def over_runs(rows: torch.Tensor, idx: torch.Tensor, bounds: list[tuple[int, int]], runs: list[tuple[int, int]],
               product: Callable[..., None], threads: Threads | None, unique: bool = False) -> None:
    """For each run ``(a, b)`` of copies with the same rows (:func:`same_rows`):
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

    (threads or Threads()).share(work, list(range(len(runs))))


class GatheredLinear(torch.autograd.Function):
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
    (:func:`same_rows`) at a time: their rows (all features) are gathered
    once into an ``(M, D)`` buffer (small enough to stay in cache for the
    products) and each feature's columns multiplied by the run's weights side
    by side, ``(M, D_f) @ (D_f, G*O_f)``, straight into the run's output
    columns; gathered again in the backward pass (never a ``(K, M, D)``
    tensor; buffers kept from the forward pass, measured, were no faster: a
    step's 42 MB at COGNIMUSE size come back from memory). ``threads``
    (:class:`Threads` or None) share the runs out. Without gradients (in
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
        ctx.runs = runs = same_rows(idx)
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
        over_runs(rows, idx, bounds, runs, product, threads, unique=not any(ctx.needs_input_grad))
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

            over_runs(rows, idx, ctx.bounds, ctx.runs, product, ctx.threads)
        out: list[torch.Tensor | None] = [None] * 7
        for f, (gw, gb) in enumerate(zip(gws, gbs)):
            gw.addcmul_(gb[:, :, None], ctx.shifts[f][:, None, :], value=-1)
            std = ctx.stds[f][:, None, :]
            slot = None if ctx.grad_outs is None else ctx.grad_outs[f]
            out += [gw.div_(std) if slot is None else torch.div(gw, std, out=slot), gb]
        return tuple(out)


class Stem:
    """The stack's first layer for networks with per-feature ``projections``
    and ``from_projections`` (:class:`~aanbench.batched.contract.ProjectedNet`;
    see :mod:`aanbench.batched`)."""

    @staticmethod
    def fits(net: nn.Module, rows: Sequence[np.ndarray]) -> bool:
        """Whether ``net`` is a :class:`~aanbench.batched.contract.ProjectedNet`
        whose projections read the stack's feature arrays ``rows``."""
        if not isinstance(net, ProjectedNet):
            return False
        proj = net.projections
        return (callable(net.from_projections) and isinstance(proj, nn.ModuleList)
                and len(proj) == len(rows) and all(isinstance(p, nn.Linear) and p.bias is not None
                                                   and p.in_features == r.shape[1] for p, r in zip(proj, rows)))

    def __init__(self, rows: list[torch.Tensor], center: list[torch.Tensor], threads: Threads | None = None) -> None:
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

    def shifts(self, st: "Stack") -> list[torch.Tensor]:
        """Each copy's mean minus the centre, by feature (kept while the stack's
        means are the same tensors)."""
        if self._shifts is None or any(a is not b for a, b in zip(self._shifts[0], st.mean)):
            self._shifts = (list(st.mean), [m - c for m, c in zip(st.mean, self.center)])
        return self._shifts[1]

    def project(self, st: "Stack", params: dict[str, torch.Tensor], members: torch.Tensor,
                grads: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Each copy's projected, standardised inputs of ``members`` ((K, B[, T]) rows):
        ``(K, B[, T], out_k)`` per feature. ``grads``: views of the caller's flat
        gradient by parameter name; the projection weights' gradients are
        written there."""
        idx = members.reshape(members.shape[0], -1)
        n = len(self.bounds)
        names = [f"projections.{f}.weight" for f in range(n)]
        wb = [t for f in range(n) for t in (params[names[f]], params[f"projections.{f}.bias"])]
        outs = GatheredLinear.apply(self.joined, idx, self.bounds, st.std, self.shifts(st), self.threads,
                                     None if grads is None else [grads[x] for x in names], *wb)
        return [y.view(*members.shape, y.shape[-1]) for y in outs]


class Rest(nn.Module):
    """``forward`` = the wrapped network's ``from_projections`` (for ``functional_call``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.net.from_projections(*xs)
