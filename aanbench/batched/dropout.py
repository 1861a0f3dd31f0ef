"""A stack's dropout masks (and scheduled sampling's coin flips) from random
bits drawn per copy and step, each copy from its own stream
(:class:`MaskPool`); the template's ``nn.Dropout`` modules replaced to use it."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from aanbench.batched.folding import swap_modules


def stream_seed(seed: int, position: int) -> int:
    """The seed of the dropout stream of the job at ``position`` (its index in
    the list given to :func:`~aanbench.batched.train_batched`) with ``seed``:
    a 63-bit value derived from both (``numpy.random.SeedSequence``), so jobs
    with one seed (a fold's valence and arousal fits, the folds of a run)
    draw apart, and nothing about the other jobs enters it."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(position)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class MaskPool:
    """Random bits for the stack's dropout masks, each copy's from its own
    generator (seeded by :func:`stream_seed` from its job's seed and
    position), drawn once per training step that copy takes.

    Torch's dropout draws a float per element (``bernoulli_``), which on the
    CPU costs more than the rest of the dropout (measured: 4.2 ms for 720,000
    elements, the Feature AAN stack's masks per step, against 0.6 ms for the
    same number of 16-bit values). Here each copy's step gets ``size``
    16-bit values from one ``random_`` call on its generator (each ``int64``
    draw gives four; 15 bits of each are kept, as ``random_`` leaves an
    ``int64``'s top bit 0), and each dropout call of the step takes the next
    slice of its copy's row: an element is kept when its value is at least
    ``round(p * 2**15)`` (probability within 2**-16 of ``1 - p``).

    ``size`` (values one copy's step uses) is counted once before training
    (:meth:`counting`: a forward pass whose masks keep everything). A copy
    draws only on the steps it takes (not on a step masked because its epoch
    has fewer batches than another copy's), so its stream, and so its
    masks, depend on its own seed, position, data and steps only: never on
    which other copies share the stack, their data, or when they stop.

    ``bits`` during a step: ``(K, size)`` with the copies folded into the
    batch (the dropped tensor's first axis holds the copies' samples,
    copy-major), or one copy's ``(size,)`` row under ``vmap``."""

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.device = torch.device(device)
        self.gens = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]  # by job
        self.size = 0
        self.bits: torch.Tensor | None = None
        self.offset = 0
        self._counting = False

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Within: dropout keeps every element and counts the values a copy's
        step uses; after: ``size`` is that count."""
        self._counting, self.offset = True, 0
        try:
            yield
        finally:
            self._counting = False
            self.size = self.offset

    def empty(self, k: int) -> torch.Tensor:
        """Bits for a pass without dropout (evaluation, counting): ``(k, 0)``."""
        return torch.zeros(k, 0, dtype=torch.int16, device=self.device)

    def draw(self, jobs: Sequence[int], active: Sequence[bool]) -> torch.Tensor:
        """The bits of one training step, ``(k, size)`` int16: the row of copy
        ``i`` (job ``jobs[i]``) from its generator where ``active[i]``, zeros
        (unused: the step is masked for that copy) elsewhere."""
        words = torch.zeros(len(jobs), (self.size + 3) // 4, dtype=torch.int64, device=self.device)
        if self.size:
            for i, (j, on) in enumerate(zip(jobs, active)):
                if on:
                    words[i].random_(generator=self.gens[int(j)])
        return words.view(torch.int16)[:, : self.size].bitwise_and_(0x7FFF)

    def keep(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """A boolean mask of ``x``'s shape: True with probability ``1 - p``."""
        bits = self.bits
        if bits is None:
            raise RuntimeError("MaskPool.keep outside a stack's step")
        folded = bits.dim() == 2
        n = x.numel() // bits.shape[0] if folded else x.numel()
        start, self.offset = self.offset, self.offset + n
        if self._counting:
            return torch.ones(x.shape, dtype=torch.bool, device=x.device)
        if self.offset > bits.shape[-1]:
            raise RuntimeError(f"a stack's step used more dropout values ({self.offset}) than counted "
                               f"({bits.shape[-1]}): its network's dropout calls vary between steps")
        part = bits[:, start : start + n] if folded else bits[start : start + n]
        threshold = round(p * 32768)
        if threshold > 32767:  # p = 1 (a coin that never shows heads): 32768 is no int16
            return torch.zeros(x.shape, dtype=torch.bool, device=x.device)
        return part.reshape(x.shape) >= threshold


class PoolDropout(nn.Module):
    """``nn.Dropout`` in the stack's template, its masks from a :class:`MaskPool`."""

    def __init__(self, p: float, pool: MaskPool) -> None:
        super().__init__()
        self.p, self.pool = float(p), pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x * (self.pool.keep(x, self.p) * (1.0 / (1.0 - self.p)))


def pool_dropouts(net: nn.Module, pool: MaskPool) -> int:
    """Replace ``net``'s ``nn.Dropout`` modules (0 < p < 1) by :class:`PoolDropout`,
    and give modules with a ``mask_pool`` attribute (other random draws of a
    training step, e.g. scheduled sampling's coin flips) the pool; how many
    dropouts were replaced."""
    for mod in net.modules():
        if hasattr(mod, "mask_pool") and not isinstance(mod, PoolDropout):
            mod.mask_pool = pool
    return swap_modules(net, lambda m: PoolDropout(m.p, pool) if type(m) is nn.Dropout and 0.0 < m.p < 1.0
                         and not m.inplace else None)
