"""A stack's dropout masks from a pool of random bits drawn once per step
(:class:`MaskPool`), and the template's ``nn.Dropout`` modules replaced to use it."""

from __future__ import annotations

import torch
from torch import nn

from aanbench.batched.folding import swap_modules


class MaskPool:
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
    """Replace ``net``'s ``nn.Dropout`` modules (0 < p < 1) by :class:`PoolDropout`; how many."""
    return swap_modules(net, lambda m: PoolDropout(m.p, pool) if type(m) is nn.Dropout and 0.0 < m.p < 1.0
                         and not m.inplace else None)
