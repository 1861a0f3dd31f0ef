"""A stack's template with its copies folded into the batch dimension
(networks with ``stack_fold = True``, :class:`~aanbench.batched.contract.FoldableNet`)
instead of under ``vmap``; :func:`swap_modules`, the template surgery it shares
with :mod:`aanbench.batched.dropout`."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from aanbench.batched.contract import FoldAware


def swap_modules(net: nn.Module, swap: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace each submodule of ``net`` for which ``swap`` returns a module; how many."""
    swapped = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            new = swap(child)
            if new is not None:
                setattr(parent, name, new)
                swapped += 1
    return swapped


class StackLinear(nn.Module):
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


def fold_copies(net: nn.Module) -> None:
    """Prepare a stack's template (a network with ``stack_fold = True``, a
    :class:`~aanbench.batched.contract.FoldableNet`) to run its ``K`` copies
    folded into the batch: ``nn.Linear`` -> :class:`StackLinear`, modules with
    a ``folded`` flag (:class:`~aanbench.batched.contract.FoldAware`) get it set
    to True.

    A folded network promises that every other parameterised module takes
    ``(K, ...)`` parameters itself (e.g. the AAN networks' layer norm), that
    buffers of shape ``(K, ...)`` are handled (e.g. the temporal decoder's
    start value), and that samples never mix. Under ``vmap`` each of the
    many small operations of these networks costs more (measured: the Feature
    AAN encoder's forward and backward pass over 24 copies x 30 samples,
    29 ms under ``vmap``, 23 ms folded), and attention can keep the samples
    innermost (see ``stacked_attention`` in the AAN networks' shared attention
    module, ``aanbench_plugins.models._attention``)."""
    swap_modules(net, lambda m: StackLinear(m) if type(m) is nn.Linear else None)
    for mod in net.modules():
        if isinstance(mod, FoldAware):
            mod.folded = True
