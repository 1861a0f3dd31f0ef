"""Batched training: many independent fits of one torch network, stepped together.

The AttendAffectNet models are tiny; one mini-batch step costs far more in
Python and dispatcher overhead than in arithmetic. :func:`train_batched`
stacks ``K`` copies of a network (same architecture, different weights,
data, targets or folds) and steps them as one: ``torch.func.functional_call``
with the stacked ``(K, ...)`` parameters runs the ``K`` forward passes as
batched operations, either with the copies folded into the batch dimension
(networks that declare ``stack_fold``, see :func:`~aanbench.batched.folding.fold_copies`: the AAN
networks) or under ``torch.func.vmap`` (any other network), and one fused
Adam step (:func:`~aanbench.batched.stack.adam_step`) updates every copy's parameters.

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

What differs from the one-at-a-time trainer: dropout masks (and any other
random draw of a step that goes through the pool, e.g. scheduled sampling's
coin flips) come from each copy's own stream, a generator seeded from its
job's seed and position in the list of jobs, as 16-bit values drawn on each
step the copy takes (:class:`~aanbench.batched.dropout.MaskPool`: the
template's ``nn.Dropout`` modules are replaced), not from torch's global
generator in each fit's sequence; and batched kernels sum in another order.
The same jobs and seeds give the same numbers; they are not bit-identical to
sequential fits (see ``tests/test_batched.py``: pooled metrics agree within
the bootstrap interval).

Each copy is independent of the others: its data order, dropout stream,
Adam state, early stopping and validation are its own, a copy that stops
early draws nothing more, and a copy whose epoch has fewer batches than
another's draws nothing on the masked steps; so a copy's numbers do not
depend on the other copies' data, labels, early stopping or removal from
the stack (``tests/test_independent_copies.py``; the shared first layer's
rounding centre is the first job's fitting mean, which changes only
rounding, and only if the first job's fitting rows change).

Requirements on the network: ``forward(*xs)`` (and ``forward(*xs, extra)``
in training when a job has ``fit_extra``) gives ``(batch,)``, each sample's
output depends on that sample only (no batch norm), and whatever differs
between copies is a parameter or a buffer (a plain Python attribute is taken
from the first copy). Buffers are constants of each copy (not trained).
The network's side of this contract is written as protocols in
:mod:`aanbench.batched.contract` (:class:`StackableNet`, what the AAN networks
implement, and its parts). A module with a ``stacked`` attribute has it set to True in the stack (it
may choose formulas that suit the stack's larger tensors: the AAN networks'
layer norm and softmax do).

Inputs never exist as ``K`` standardised copies of the data: a job holds row
indices into shared feature arrays and its own mean and std; each step
gathers the rows of its batch and standardises them (``(x - mean) / std``,
float32, as :class:`aanbench.runner.Standardizer`).

Networks whose first layers are one linear map per feature (``projections``,
an ``nn.ModuleList`` of ``nn.Linear``, layer ``k`` reading feature ``k``
only) and that offer ``from_projections(*projected[, extra])`` (the rest of
``forward``) get a faster first layer (:class:`~aanbench.batched.first_layer.Stem`): each copy's
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

The package, one module per mechanism:

- :mod:`~aanbench.batched.contract`: the jobs (:class:`BatchJob`), a model's
  opt-in (:class:`BatchableModel`, :class:`TorchFit`; a model plugin declares
  it with ``ModelSpec(stackable=True)``) and the network protocols;
- :mod:`~aanbench.batched.stack`: the live copies' flat parameters, Adam
  state and data indices, and the stack's Adam step;
- :mod:`~aanbench.batched.first_layer`: the inputs, gathered and
  standardised, or the gathered first layer (a custom autograd Function);
- :mod:`~aanbench.batched.threads`: the first layer's thread pool;
- :mod:`~aanbench.batched.dropout`: each copy's stream of dropout mask bits;
- :mod:`~aanbench.batched.folding`: copies folded into the batch;
- :mod:`~aanbench.batched.loop`: the training loop, grouping and validation.
"""

from aanbench.batched.contract import (
    BatchableModel,
    BatchJob,
    FoldableNet,
    FoldAware,
    ProjectedNet,
    StackableNet,
    StackAware,
    TorchFit,
)
from aanbench.batched.loop import group_jobs, train_batched
from aanbench.batched.threads import default_threads

__all__ = [
    "BatchJob", "BatchableModel", "FoldAware", "FoldableNet", "ProjectedNet", "StackAware", "StackableNet",
    "TorchFit", "default_threads", "group_jobs", "train_batched",
]
