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

Training uses teacher forcing: the spec sets ``wants_row_labels``, so the
runner hands ``fit`` the labels of each fitting window's member rows
(``train_y_rows``, ``(n, T)``); the trainer passes them as the network's
extra last input in training batches only. The validation loss, like every
prediction, is computed in evaluation mode, where the network is re-run for
each position and fed its own earlier outputs: no label (validation or
test) reaches a prediction.

Choices made here, beyond the network's (each a parameter):

- ``start_value`` (the "previous output" of a window's first position):
  ``"train-mean"`` (default), the mean label of the fitting samples, so the
  start sits inside the label range of any dataset (EIMT16 is 1-5,
  COGNIMUSE -1..1); a number fixes it. Stored in the model file as the
  number used.
- a member row without a label (NaN in ``train_y_rows``) is fed as
  ``start_value`` when teacher forcing.
- labels are fed as given (not standardised), as Feature AAN's targets.
- ``inner_dropout`` 0.1 inside the decoder blocks (the original
  Transformer's rate); the paper's dropout (0.5) is ``dropout``, applied to
  the decoder's outputs before the one-neuron layer.
- Feature+Temporal: the per-segment encoder is Feature AttendAffectNet's
  (6 layers, 2 heads, ``d_model`` 8, dropout 0.1, ReLU feed-forward), as in
  the authors' published Feature AAN.

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import FitReport, Model, ModelSpec

NET_KEYS = ("width", "heads", "layers", "dropout", "inner_dropout", "eps")
FEATURE_NET_KEYS = NET_KEYS + ("feature_layers", "feature_heads", "feature_dropout")

DEFAULTS: dict[str, Any] = {
    "width": 8, "heads": 2, "layers": 1, "dropout": 0.5, "inner_dropout": 0.1, "eps": 1e-6,
    "start_value": "train-mean",
    "lr": 1e-3, "max_epochs": 1000, "patience": 30, "batch_size": 30, "weight_decay": 0.0,
}
FEATURE_DEFAULTS: dict[str, Any] = {**DEFAULTS, "feature_layers": 6, "feature_heads": 2, "feature_dropout": 0.1}

KINDS = {"temporal-aan": NET_KEYS, "feature-temporal-aan": FEATURE_NET_KEYS}


def _net_class(kind: str):
    from aanbench_plugins.models._temporal_aan_net import FeatureTemporalAANNet, TemporalAANNet

    return {"temporal-aan": TemporalAANNet, "feature-temporal-aan": FeatureTemporalAANNet}[kind]


def _start_value(given: Any, train_y: np.ndarray) -> float:
    if isinstance(given, str):
        if given != "train-mean":
            raise ValueError(f"start_value must be a number or 'train-mean', not {given!r}")
        y = np.asarray(train_y, dtype=np.float64)
        y = y[np.isfinite(y)]
        return float(y.mean()) if len(y) else 0.0
    return float(given)


class TemporalAAN(Model):
    """One model per target; ``kind`` is ``temporal-aan`` or ``feature-temporal-aan``."""

    def __init__(self, kind: str, params: Mapping[str, Any], dims: Sequence[int]) -> None:
        self.name = kind
        self.kind = kind
        defaults = FEATURE_DEFAULTS if kind == "feature-temporal-aan" else DEFAULTS
        self.params = {**defaults, **dict(params)}
        self.dims = [int(d) for d in dims]
        self.start = None if isinstance(self.params["start_value"], str) else float(self.params["start_value"])
        self.net = None

    def _net_config(self) -> dict[str, Any]:
        return {"dims": self.dims, "start_value": self.start, **{k: self.params[k] for k in KINDS[self.kind]}}

    def fit(self, train_x, train_y, val_x, val_y, *, seed: int, train_y_rows=None, val_y_rows=None) -> FitReport:
        import torch

        from aanbench.training import TrainConfig, train_torch

        self.start = _start_value(self.params["start_value"], train_y)
        torch.manual_seed(seed)
        cfg = self._net_config()
        self.net = _net_class(self.kind)(**cfg)
        teacher = None
        if train_y_rows is not None:
            teacher = np.asarray(train_y_rows, dtype=np.float32).copy()
            if teacher.shape != (len(train_y), np.asarray(train_x[0]).shape[1]):
                raise ValueError(f"train_y_rows of shape {teacher.shape} does not match windows "
                                 f"{np.asarray(train_x[0]).shape[:2]}")
            teacher[~np.isfinite(teacher)] = self.start
        # val_y_rows is not used: the validation loss is computed autoregressively, as at test time.
        tc = TrainConfig(lr=float(self.params["lr"]), max_epochs=int(self.params["max_epochs"]),
                         patience=int(self.params["patience"]), batch_size=int(self.params["batch_size"]),
                         weight_decay=float(self.params["weight_decay"]))
        return train_torch(self.net, train_x, train_y, val_x, val_y, tc, seed, train_extra=teacher)

    def predict(self, x) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("model is not trained")
        from aanbench.training import predict_torch

        return predict_torch(self.net, x)

    def state(self) -> dict[str, Any]:
        if self.net is None:
            raise RuntimeError("model is not trained")
        return {"kind": self.kind, "config": self._net_config(),
                "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}


def restore(state: Mapping[str, Any]) -> TemporalAAN:
    kind = str(state["kind"])
    cfg = dict(state["config"])
    dims = cfg.pop("dims")
    model = TemporalAAN(kind, {k: v for k, v in cfg.items()}, dims)
    model.net = _net_class(kind)(dims, **cfg)
    model.net.load_state_dict(state["state_dict"], strict=True)
    model.net.eval()
    return model


@hookimpl
def aanbench_models():
    return [
        ModelSpec(
            name="temporal-aan",
            description="Temporal AttendAffectNet: Transformer decoder over consecutive segments (paper III-C-c)",
            build=lambda params, dims: TemporalAAN("temporal-aan", params, dims),
            restore=restore, params=DEFAULTS, input="sequences", wants_row_labels=True,
        ),
        ModelSpec(
            name="feature-temporal-aan",
            description="Feature+Temporal (Mixed) AttendAffectNet: feature self-attention per segment, "
                        "then the temporal decoder (paper III-C-d)",
            build=lambda params, dims: TemporalAAN("feature-temporal-aan", params, dims),
            restore=restore, params=FEATURE_DEFAULTS, input="sequences", wants_row_labels=True,
        ),
    ]
