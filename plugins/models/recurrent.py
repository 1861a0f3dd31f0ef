"""Recurrent baselines on windows of consecutive rows (sequence models).

Both run on the windows the engine builds (``input="sequences"``): the
dataset's declared windows, or the experiment's ``sequence_*`` settings.
COGNIMUSE: 5 consecutive 5-s segments of one movie (stride 1, labelled by
the last). EIMT16: only as ``eimt16-temporal``, whose windows are the 4
sub-segments of one excerpt, in time order, so a prediction depends on
that excerpt alone; the excerpts are independent
(:attr:`~aanbench.contracts.Dataset.independent_excerpts`), and the engine
refuses any window that would span two of them, at training or test.

``lstm``: a many-to-one LSTM *regressor*, 2 layers, hidden size 64, the
last time step's hidden state through a linear layer to one value; the
feature vectors of a step are concatenated. Same shape as the LSTM of the
AttendAffectNet authors' 2019 paper (Thao, Herremans & Roig, ICCVW 2019;
ivyha010/emotionprediction, ``RGB_OF_Audio/LSTM``), and like it over
windows of 5 consecutive COGNIMUSE segments labelled by the last, but not
that model: theirs is a 7-class *classifier* (cross-entropy on discretised
labels), projects each modality to 128 dimensions before the LSTM, and is
trained with SGD (lr 0.005, weight decay 0.005, batch 128, patience 25)
with early stopping on the held-out movie itself; here it regresses the
value with aanbench's trainer, features standardised by default. It never
ran on EIMT16.

``bilstm``: after Yi, Wang & Li's adaptive fusion recurrent network (AFRN,
IEEE TMM): one bidirectional LSTM per feature array (modality) with input
dropout; a fully connected layer shared over time gives a value per time
step, which are pooled with learned temporal weights (a softmax over the
window's steps of a learned score of each hidden state); the per-modality
values are fused with learned modality weights (a softmax over one learned
weight per feature array). Like AFRN on EIMT16 it runs over time steps
within one excerpt. Not AFRN: AFRN's inputs are TSN Inception-v3 RGB and
flow and VGGish over 18 steps per excerpt, hidden size 1024, a sigmoid
output on labels rescaled to [0, 1], Adam lr 1e-4 for 5 epochs with the
checkpoint chosen on the test set; here aanbench's features over 4
sub-segments, hidden 64 (``hidden``) to train on a CPU, labels as given,
and aanbench's trainer.

Both are trained by aanbench's shared trainer (:mod:`aanbench.training`:
Adam, loss MSE + (1 - r), early stopping on validation carved from the
training samples).

Importing this module does not import torch (every CLI call loads all
plugins); the networks are defined when a model is built.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import FitReport, ModelSpec
from aanbench.paramspec import TRAINER_PARAM_SPECS, Float, Int
from aanbench.pluginkit.torchmodel import TorchModel

TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "max_epochs": 200, "patience": 20, "batch_size": 32,
                                  "weight_decay": 0.0}
LSTM_DEFAULTS: dict[str, Any] = {"hidden": 64, "layers": 2, "dropout": 0.0, **TRAIN_DEFAULTS}
BILSTM_DEFAULTS: dict[str, Any] = {"hidden": 64, "input_dropout": 0.3, **TRAIN_DEFAULTS}
PARAM_SPECS = {**TRAINER_PARAM_SPECS, "hidden": Int(ge=1, le=65536), "layers": Int(ge=1, le=64),
               "dropout": Float(ge=0, lt=1), "input_dropout": Float(ge=0, lt=1)}
NET_KEYS = {"lstm": ("hidden", "layers", "dropout"), "bilstm": ("hidden", "input_dropout")}


def _networks():
    """The torch modules (defined on first use, so importing the plugin stays light)."""
    import torch
    from torch import nn

    class LSTMNet(nn.Module):
        """Many-to-one LSTM over the concatenated features of each step."""

        def __init__(self, dims: Sequence[int], hidden: int, layers: int, dropout: float) -> None:
            super().__init__()
            self.lstm = nn.LSTM(int(sum(dims)), int(hidden), num_layers=int(layers), batch_first=True,
                                dropout=float(dropout) if int(layers) > 1 else 0.0)
            self.head = nn.Linear(int(hidden), 1)

        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(torch.cat(xs, dim=-1))
            return self.head(out[:, -1]).squeeze(-1)

    class BiLSTMFusionNet(nn.Module):
        """One bidirectional LSTM per feature array; learned temporal and modality weights."""

        def __init__(self, dims: Sequence[int], hidden: int, input_dropout: float) -> None:
            super().__init__()
            h = int(hidden)
            self.drop = nn.Dropout(float(input_dropout))
            self.lstms = nn.ModuleList(nn.LSTM(int(d), h, batch_first=True, bidirectional=True) for d in dims)
            self.step_value = nn.Linear(2 * h, 1)  # shared over time and modalities
            self.step_score = nn.ModuleList(nn.Linear(2 * h, 1) for _ in dims)  # temporal weights
            self.modality = nn.Parameter(torch.zeros(len(dims)))  # fusion weights (softmax)

        def per_modality(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """``(batch, K)`` per-modality values and ``(batch, T, K)`` temporal weights."""
            values, weights = [], []
            for x, lstm, score in zip(xs, self.lstms, self.step_score):
                h, _ = lstm(self.drop(x))
                w = torch.softmax(score(h).squeeze(-1), dim=1)  # (batch, T)
                values.append((w * self.step_value(h).squeeze(-1)).sum(dim=1))
                weights.append(w)
            return torch.stack(values, dim=1), torch.stack(weights, dim=2)

        def fusion_weights(self) -> torch.Tensor:
            return torch.softmax(self.modality, dim=0)

        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            values, _ = self.per_modality(*xs)
            return values @ self.fusion_weights()

    return {"lstm": LSTMNet, "bilstm": BiLSTMFusionNet}


class RecurrentModel(TorchModel):
    """``lstm`` or ``bilstm`` on windows ``(n, T, dim_k)``, one array per feature."""

    def __init__(self, kind: str, params: Mapping[str, Any], dims: Sequence[int]) -> None:
        if kind not in NET_KEYS:
            raise ValueError(f"unknown recurrent model {kind!r} (known: {', '.join(NET_KEYS)})")
        self.name = kind
        defaults = LSTM_DEFAULTS if kind == "lstm" else BILSTM_DEFAULTS
        self.params = {**defaults, **dict(params)}
        self.dims = [int(d) for d in dims]
        self.net: Any = None

    def _net_config(self) -> dict[str, Any]:
        return {"dims": self.dims, **{k: self.params[k] for k in NET_KEYS[self.name]}}

    def _build(self) -> Any:
        return _networks()[self.name](**self._net_config())

    def _check(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(xs) != len(self.dims):
            raise ValueError(f"{self.name}: expected {len(self.dims)} feature arrays, got {len(xs)}")
        out = []
        for k, (x, d) in enumerate(zip(xs, self.dims)):
            x = np.asarray(x, dtype=np.float32)
            if x.ndim != 3 or x.shape[2] != d:
                raise ValueError(f"{self.name}: feature array {k}: expected windows (n, T, {d}), got {x.shape} "
                                 "(a sequence model: the engine builds the windows)")
            out.append(x)
        return out

    def fit(self, train_x, train_y, val_x, val_y, *, seed: int) -> FitReport:
        import torch

        from aanbench.training import TrainConfig, train_torch

        torch.manual_seed(seed)
        self.net = self._build()
        p = self.params
        tc = TrainConfig(lr=float(p["lr"]), max_epochs=int(p["max_epochs"]), patience=int(p["patience"]),
                         batch_size=int(p["batch_size"]), weight_decay=float(p["weight_decay"]))
        return train_torch(self.net, self._check(train_x), train_y,
                           None if val_x is None else self._check(val_x), val_y, tc, seed, device=self.device)

    def predict(self, x) -> np.ndarray:
        self.trained_net()
        return super().predict(self._check(x))

    def state(self) -> dict[str, Any]:
        return {"kind": self.name, "config": self._net_config(), "state_dict": self.weights()}


def restore(state: Mapping[str, Any]) -> RecurrentModel:
    cfg = dict(state["config"])
    dims = cfg.pop("dims")
    model = RecurrentModel(str(state["kind"]), cfg, dims)
    return model.restored(model._build(), state["state_dict"])


@hookimpl
def aanbench_models():
    return [
        ModelSpec(name="lstm",
                  description="Many-to-one LSTM regressor, 2 layers, hidden 64, on the engine's windows "
                              "(shaped like the AttendAffectNet authors' 2019 LSTM, a 7-class classifier)",
                  build=lambda params, dims: RecurrentModel("lstm", params, dims), restore=restore,
                  params=LSTM_DEFAULTS, param_specs=PARAM_SPECS, input="sequences"),
        ModelSpec(name="bilstm",
                  description="One bidirectional LSTM per feature array, learned temporal and modality "
                              "fusion weights, on the engine's windows (after Yi, Wang & Li's AFRN, not AFRN)",
                  build=lambda params, dims: RecurrentModel("bilstm", params, dims), restore=restore,
                  params=BILSTM_DEFAULTS, param_specs=PARAM_SPECS, input="sequences"),
    ]
