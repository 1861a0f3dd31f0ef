"""The live copies of a stack (:class:`Stack`: flat ``(K, P)`` parameters,
Adam state, each copy's data indices and standardisation) and one Adam step
over them (:func:`adam_step`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aanbench.batched.contract import BatchJob

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

# torch's one-pass Adam kernel (what ``torch.optim.Adam(fused=True)`` calls); None on a
# torch without it (then :func:`adam_step` takes the elementwise formula)
FUSED_ADAM = getattr(torch, "_fused_adam_", None)


def pad(arrays: list[np.ndarray], fill: float = 0) -> np.ndarray:
    """Stack arrays of different lengths (first axis), padding with ``fill``."""
    n = max(len(a) for a in arrays)
    out = np.full((len(arrays), n) + arrays[0].shape[1:], fill, dtype=arrays[0].dtype)
    for k, a in enumerate(arrays):
        out[k, : len(a)] = a
    return out


class Stack:
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
        self.fit = torch.from_numpy(pad([np.asarray(j.fit, np.int64) for j in jobs]))
        self.fit_y = torch.from_numpy(pad([np.asarray(j.fit_y, np.float32) for j in jobs]))
        extras = [j.torch_fit.extra for j in jobs]
        self.extra = None
        if any(e is not None for e in extras):
            if any(e is None for e in extras):
                raise ValueError("batched training: either every job of a stack has a training extra or none")
            for e, j in zip(extras, jobs):
                if len(e) != len(j.fit_y):
                    raise ValueError(f"train_extra has {len(e)} rows for {len(j.fit_y)} training samples")
            self.extra = torch.from_numpy(pad([np.asarray(e, np.float32) for e in extras]))
        have_val = [j.val is not None and j.val_y is not None and len(j.val_y) >= 2 for j in jobs]
        self.have_val = np.array(have_val)
        if any(have_val):
            vals = [np.asarray(j.val if h else j.fit[:2], np.int64) for j, h in zip(jobs, have_val)]
            vys = [np.asarray(j.val_y if h else j.fit_y[:2], np.float32) for j, h in zip(jobs, have_val)]
            self.n_val = np.array([len(v) for v in vals])
            self.val = torch.from_numpy(pad(vals))
            self.val_y = torch.from_numpy(pad(vys))
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


def adam_step(st: "Stack", grad: torch.Tensor, active: torch.Tensor, lr: float, wd: float,
              fused: bool = True) -> None:
    """One Adam step (as ``torch.optim.Adam``: L2 weight decay added to the
    gradient, bias-corrected moments) on the rows of the live copies that
    take a step (``active``, ``(K,)`` bool); a masked copy's row, moments and
    step count stay as they are. ``grad``: ``(K, P)``, overwritten.

    With torch's fused kernel (:data:`FUSED_ADAM`; ``fused`` and the kernel
    exists, else the elementwise formula) each copy's row is one
    tensor of the kernel's list with its own step count: one pass over the
    parameters, moments and gradient (the elementwise formula takes about
    ten passes over ``(K, P)``: 16x slower at the Temporal model's 24 x 61,529,
    measured)."""
    b1, b2 = ADAM_BETAS
    st.steps += active.to(st.steps.dtype)
    if fused and FUSED_ADAM is not None:
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
