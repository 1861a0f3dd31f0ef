"""Temporal AttendAffectNet and Feature+Temporal (Mixed) AttendAffectNet
(Thao et al. 2020, sections III-C-c and III-C-d): sequence models.

Both take windows of ``T`` consecutive segments, ``(n, T, dim_k)`` per
feature (the engine builds them: :mod:`aanbench.samples`), and predict the
value of each window's last segment. The networks and the choices the
paper leaves open (decoder layers, which stream is self-attention input
and which memory, post-norm, feed-forward width, causality) are in
:mod:`aanbench_plugins.models._temporal_aan_net`; this module trains them
with aanbench's shared trainer (Adam, ``MSE + (1 - r)``, early stopping on
validation samples carved from the training samples).

What the decoder is fed as "previous outputs" is the ``feedback`` parameter
(validated: anything else is a clear error; recorded in results as every
model parameter): ``"teacher"`` (the paper's teacher forcing, the default),
``"none"`` (no label feedback: the constant ``start_value`` at every
position, in training and at test) or ``"scheduled"`` (scheduled sampling,
annealed over ``anneal_epochs`` towards the model's own outputs); see
:mod:`aanbench_plugins.models._temporal_aan_net` and
``docs/temporal_models.md`` (the model card, with the ablation). For
``teacher`` and ``scheduled`` the spec's ``wants_row_labels`` has the
runner hand ``fit`` the labels of each fitting window's member rows
(``train_y_rows``, ``(n, T)``); the trainer passes them as the network's
extra last input in training batches only. With ``none`` the model hands
the trainer no labels at all. Label feedback where every fitting window's
earlier rows carry the window's own label (EIMT16) is refused: it would
feed the target itself. The validation loss, like every
prediction, is computed in evaluation mode, where the network is re-run for
each position and fed its own earlier outputs: no label (validation or
test) reaches a prediction.

Every choice the paper leaves open, and why (the network's are also in
:mod:`aanbench_plugins.models._temporal_aan_net`):

1. Decoder layers: ``layers = 1``. The paper describes one decoder block
   (two heads, a one-linear feed-forward) and gives no count; with
   ``d = 40`` and a few thousand windows a deeper stack only adds
   parameters. A parameter.
2. Which stream is which: the previous outputs are the decoder's
   self-attention input and the segment features its memory (the cross-
   attention keys and values), as the shifted outputs and the encoded
   source in the original Transformer decoder, whose output embedding the
   paper says the repeated previous outputs replace.
3. The first position's "previous output": ``start_value = "train-mean"``,
   the mean label of the fitting samples, so it lies inside the label range
   of any dataset (EIMT16 1-5, COGNIMUSE -1..1, where 0 would be outside the
   EIMT16 range); a number fixes it. The value used is stored in the model
   file.
4. Feed-forward width at ``d = 40``: one linear map ``d -> d`` (the paper's
   "one linear transformation"; the residual needs ``d`` out).
5. The first segments of a movie, which have fewer than 4 predecessors: the
   registry's cognimuse and demo experiments pad the window with copies of
   the movie's first segment (``sequence_start = "pad"``; their teacher-
   forced previous outputs are that segment's label), so every segment is
   predicted and the temporal models are scored on exactly the samples
   Feature AAN and the baselines are. ``sequence_start = "drop"`` (the
   dataset's declared default) scores only segments with 4 predecessors.
6. Causality: every attention (self and cross) is masked to positions
   ``<= t``, so a later segment never changes an earlier position's output;
   the engine's windows end at the predicted segment, so a run is causal
   too (no future segment is ever in a window).
7. Post-norm residual blocks (a pre-norm block's layer norm removes the
   repeated scalar entirely), with the authors' layer norm (eps 1e-6);
   ``inner_dropout = 0.1`` inside the blocks (the original Transformer's
   rate); the paper's dropout (0.5) is ``dropout``, on the decoder's outputs
   before the one-neuron layer.
8. Validation loss (early stopping) is computed as test predictions are:
   evaluation mode, autoregressive on the model's own outputs, no labels.
9. Labels are fed as previous outputs as given (not standardised), as
   Feature AAN's targets; a member row without a label (NaN) is fed as
   ``start_value``.
10. EIMT16: the 4 sub-segments of an excerpt all carry the excerpt's label
    (the window is labelled by their mean, the same value), so teacher
    forcing would feed the decoder the training target itself (the model
    learns to copy it and collapses at test time, issue 24). EIMT16 has no
    earlier output of its own for a sub-segment, and an earlier excerpt's
    output would make a test excerpt's prediction depend on another
    excerpt; so on EIMT16 "previous outputs" are none: the registry's
    eimt16-temporal experiments set ``feedback = "none"``, and label
    feedback on such windows is refused.
11. Feature+Temporal: the per-segment encoder is Feature AttendAffectNet's
    (6 layers, 2 heads, tokens of 8, ReLU feed-forward, dropout 0.1, a final
    layer norm), as the authors' published Feature AAN; its ``K`` encoded
    tokens are concatenated (``d = 8 K``) for the same decoder. The
    training values (lr, batch, epochs, patience, dropout) are Temporal
    AAN's (the paper's section IV-B values for the temporal models).
12. EIMT16: the paper gives the window length (4), lr (0.01) and batch
    sizes; the maximum epochs (1000), dropout (0.5) and patience (30) are
    COGNIMUSE's. The demo (whose clips carry no times and are independent
    draws within a movie) takes windows of 5 clips of one movie in store
    order, padded as COGNIMUSE; there the temporal context carries no
    signal: the demo shows the pipeline, not a temporal gain.

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import FitReport, ModelSpec
from aanbench.paramspec import TRAINER_PARAM_SPECS, Float, Int
from aanbench.pluginkit.torchmodel import TorchModel

NET_KEYS = ("width", "heads", "layers", "dropout", "inner_dropout", "eps", "feedback", "anneal_epochs")
FEATURE_NET_KEYS = NET_KEYS + ("feature_layers", "feature_heads", "feature_dropout")

DEFAULTS: dict[str, Any] = {
    "width": 8, "heads": 2, "layers": 1, "dropout": 0.5, "inner_dropout": 0.1, "eps": 1e-6,
    "start_value": "train-mean", "feedback": "teacher", "anneal_epochs": 20,
    "lr": 1e-3, "max_epochs": 1000, "patience": 30, "batch_size": 30, "weight_decay": 0.0,
}
FEATURE_DEFAULTS: dict[str, Any] = {**DEFAULTS, "feature_layers": 6, "feature_heads": 2, "feature_dropout": 0.1}
PARAM_SPECS = {**TRAINER_PARAM_SPECS, "width": Int(ge=1, le=4096), "heads": Int(ge=1), "layers": Int(ge=1, le=64),
               "dropout": Float(ge=0, lt=1), "inner_dropout": Float(ge=0, lt=1), "eps": Float(gt=0),
               "start_value": Float(choices=("train-mean",))}
FEATURE_PARAM_SPECS = {**PARAM_SPECS, "feature_layers": Int(ge=1, le=64), "feature_heads": Int(ge=1),
                       "feature_dropout": Float(ge=0, lt=1)}

KINDS = {"temporal-aan": NET_KEYS, "feature-temporal-aan": FEATURE_NET_KEYS}


def _net_class(kind: str):
    from aanbench_plugins.models._temporal_aan_net import FeatureTemporalAANNet, TemporalAANNet

    return {"temporal-aan": TemporalAANNet, "feature-temporal-aan": FeatureTemporalAANNet}[kind]


FEEDBACK = ("teacher", "none", "scheduled")  # as _temporal_aan_net.FEEDBACK (this module imports no torch)


def _check_feedback(kind: str, params: Mapping[str, Any]) -> None:
    fb = params["feedback"]
    if not isinstance(fb, str) or fb not in FEEDBACK:
        raise ValueError(f"{kind}: parameter feedback must be one of {', '.join(repr(f) for f in FEEDBACK)}, "
                         f"not {fb!r}")
    ae = params["anneal_epochs"]
    if isinstance(ae, bool) or not isinstance(ae, int) or ae < 1:
        raise ValueError(f"{kind}: parameter anneal_epochs must be a whole number >= 1, not {ae!r}")


def _refuse_target_feedback(feedback: str, fed: np.ndarray, y: np.ndarray) -> None:
    """Label feedback where every fitting window's earlier rows carry the
    window's own label (EIMT16's sub-segments of one excerpt): the decoder
    would be fed the training target itself. A clear error."""
    if fed.shape[1] < 2 or not len(fed):
        return
    earlier = fed[:, :-1].astype(np.float64)
    target = np.asarray(y, dtype=np.float64)[:, None]
    if bool(np.all(np.isclose(earlier, target, rtol=0.0, atol=1e-6))):
        raise ValueError(
            f"feedback = {feedback!r}: every fitting window's earlier rows carry the window's own label "
            "(sub-segments of one item, as EIMT16's 4 sub-segments of an excerpt), so the decoder would be fed "
            "the training target itself; use feedback = 'none' (the registry's eimt16-temporal setting, see "
            "docs/temporal_models.md)")


def _start_value(given: Any, train_y: np.ndarray) -> float:
    if isinstance(given, str):
        if given != "train-mean":
            raise ValueError(f"start_value must be a number or 'train-mean', not {given!r}")
        y = np.asarray(train_y, dtype=np.float64)
        y = y[np.isfinite(y)]
        return float(y.mean()) if len(y) else 0.0
    return float(given)


class TemporalAAN(TorchModel):
    """One model per target; ``kind`` is ``temporal-aan`` or ``feature-temporal-aan``."""

    def __init__(self, kind: str, params: Mapping[str, Any], dims: Sequence[int]) -> None:
        self.name = kind
        self.kind = kind
        defaults = FEATURE_DEFAULTS if kind == "feature-temporal-aan" else DEFAULTS
        self.params = {**defaults, **dict(params)}
        _check_feedback(kind, self.params)
        self.dims = [int(d) for d in dims]
        self.start = None if isinstance(self.params["start_value"], str) else float(self.params["start_value"])
        self.net = None

    def _net_config(self) -> dict[str, Any]:
        return {"dims": self.dims, "start_value": self.start, **{k: self.params[k] for k in KINDS[self.kind]}}

    def torch_fit(self, train_y, *, seed: int, train_y_rows=None, val_y_rows=None):
        """Build the (seeded) network and say how to train it (teacher-forcing
        labels as the training extra): the opt-in of :mod:`aanbench.batched`
        (also what :meth:`fit` trains)."""
        import torch

        from aanbench.batched import TorchFit
        from aanbench.training import TrainConfig

        self.start = _start_value(self.params["start_value"], train_y)
        torch.manual_seed(seed)
        self.net = _net_class(self.kind)(**self._net_config())
        teacher = None
        if train_y_rows is not None and self.params["feedback"] != "none":  # "none": labels never handed over
            teacher = np.asarray(train_y_rows, dtype=np.float32).copy()
            if teacher.ndim != 2 or len(teacher) != len(train_y):
                raise ValueError(f"train_y_rows of shape {teacher.shape} does not match {len(train_y)} windows")
            teacher[~np.isfinite(teacher)] = self.start
            _refuse_target_feedback(self.params["feedback"], teacher, train_y)
        # val_y_rows is not used: the validation loss is computed autoregressively, as at test time.
        tc = TrainConfig(lr=float(self.params["lr"]), max_epochs=int(self.params["max_epochs"]),
                         patience=int(self.params["patience"]), batch_size=int(self.params["batch_size"]),
                         weight_decay=float(self.params["weight_decay"]))
        return TorchFit(self.net, tc, teacher)

    def fit(self, train_x, train_y, val_x, val_y, *, seed: int, train_y_rows=None, val_y_rows=None) -> FitReport:
        from aanbench.training import train_torch

        tf = self.torch_fit(train_y, seed=seed, train_y_rows=train_y_rows, val_y_rows=val_y_rows)
        if tf.extra is not None and tf.extra.shape != (len(train_y), np.asarray(train_x[0]).shape[1]):
            raise ValueError(f"train_y_rows of shape {tf.extra.shape} does not match windows "
                             f"{np.asarray(train_x[0]).shape[:2]}")
        return train_torch(tf.net, train_x, train_y, val_x, val_y, tf.config, seed, train_extra=tf.extra,
                           device=self.device)

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self._net_config(), "state_dict": self.weights()}


def restore(state: Mapping[str, Any]) -> TemporalAAN:
    kind = str(state["kind"])
    cfg = dict(state["config"])
    dims = cfg.pop("dims")
    return TemporalAAN(kind, dict(cfg), dims).restored(_net_class(kind)(dims, **cfg), state["state_dict"])


@hookimpl
def aanbench_models():
    return [
        ModelSpec(
            name="temporal-aan",
            description="Temporal AttendAffectNet: Transformer decoder over consecutive segments (paper III-C-c)",
            build=lambda params, dims: TemporalAAN("temporal-aan", params, dims),
            restore=restore, params=DEFAULTS, param_specs=PARAM_SPECS, input="sequences", wants_row_labels=True,
            stackable=True,
        ),
        ModelSpec(
            name="feature-temporal-aan",
            description="Feature+Temporal (Mixed) AttendAffectNet: feature self-attention per segment, "
                        "then the temporal decoder (paper III-C-d)",
            build=lambda params, dims: TemporalAAN("feature-temporal-aan", params, dims),
            restore=restore, params=FEATURE_DEFAULTS, param_specs=FEATURE_PARAM_SPECS, input="sequences",
            wants_row_labels=True, stackable=True,
        ),
    ]
