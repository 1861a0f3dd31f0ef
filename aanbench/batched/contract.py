"""What the batched trainer and its callers exchange: a model's opt-in
(:class:`BatchableModel`, :class:`TorchFit`), one fit of a stack (:class:`BatchJob`),
and the network side of the contract (:class:`StackableNet`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn

from aanbench.contracts import FitReport
from aanbench.training import TrainConfig


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


# --------------------------------------------------------------------------
# The network side: what a network may declare to take the stack's fast paths.
# A network that declares none of it still trains in a stack (under ``vmap``),
# as long as each sample's output depends on that sample only (no batch norm)
# and whatever differs between copies is a parameter or a buffer.


@runtime_checkable
class StackAware(Protocol):
    """A module (the network or any submodule) with a ``stacked`` flag: the
    stack's template sets it True, and the module may then choose formulas
    that suit the stack's larger tensors (the AAN networks' layer norm and
    softmax do). The numbers of one copy must not change beyond rounding."""

    stacked: bool


@runtime_checkable
class FoldAware(Protocol):
    """A module with a ``folded`` flag, set True in a folded stack's template
    (see :class:`FoldableNet`): its parameters then arrive as ``(K, ...)``
    (one row per copy) and its input's batch holds the ``K`` copies' samples,
    copy-major. Attention modules use it to keep the samples innermost."""

    folded: bool


@runtime_checkable
class FoldableNet(Protocol):
    """A network that may run with the stack's copies folded into the batch
    dimension instead of under ``vmap`` (``stack_fold = True``;
    :func:`aanbench.batched.folding.fold_copies`). It promises: every
    ``nn.Linear`` may be replaced by a stacked linear map (``(K, out, in)``
    weights); every other parameterised module takes ``(K, ...)`` parameters
    itself (is :class:`FoldAware` or handles a leading copy axis, e.g. a
    layer norm); buffers of shape ``(K, ...)`` are handled; samples never
    mix."""

    stack_fold: bool

    def forward(self, *xs: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ProjectedNet(Protocol):
    """A network whose first layers are one linear map per feature
    (``projections``: an ``nn.ModuleList`` of ``nn.Linear`` with bias, layer
    ``k`` reading feature ``k`` only) and whose ``from_projections(*projected[, extra])``
    is the rest of ``forward``: the stack computes the projections itself, with
    each copy's standardisation folded in
    (:class:`aanbench.batched.first_layer.Stem`)."""

    projections: nn.ModuleList

    def from_projections(self, *projected: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class StackableNet(FoldableNet, ProjectedNet, Protocol):
    """The whole network side of the batched trainer's contract, what the AAN
    networks implement: copies folded into the batch (:class:`FoldableNet`),
    the gathered first layer (:class:`ProjectedNet`), and submodules that
    are :class:`StackAware` / :class:`FoldAware` where they compute otherwise
    for a stack. ``forward(*xs)`` (and ``forward(*xs, extra)`` in training
    when a job has a training extra) gives ``(batch,)``."""
