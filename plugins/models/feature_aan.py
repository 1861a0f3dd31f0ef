"""Feature AttendAffectNet (Thao et al. 2020, section III-C-b).

Each feature vector of an item is projected by its own linear layer to a
``d_model``-dimensional token; a stack of self-attention encoder layers
(pre-norm residual blocks as in the authors' implementation, with their
``LayerNorm`` that divides by the unbiased standard deviation plus ``eps``)
attends across the feature tokens; the tokens are averaged, passed through
dropout (and ``tanh`` in the authors' single-modality variants) and a linear
layer gives one value. One model per target.

The authors' published checkpoints differ in the encoder's feed-forward block:
the five-feature model uses ``drop(relu(w(x)))`` (``feed_forward="relu"``),
the single-modality models ``w(drop(x + tanh(x)))`` (``feed_forward="tanh_skip"``).

Importing this module does not import torch (every CLI call loads all
plugins): the network (``FeatureAANNet`` and its layers) lives in
:mod:`aanbench_plugins.models._feature_aan_net`, imported when a model is built,
trained or restored .
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence


from aanbench import hookimpl
from aanbench.contracts import FitReport, ModelSpec
from aanbench.paramspec import TRAINER_PARAM_SPECS, Float, Int, Str
from aanbench.pluginkit.torchmodel import TorchModel

if TYPE_CHECKING:
    from aanbench_plugins.models._feature_aan_net import FeatureAANNet

# FeatureAANNet's options besides ``dims`` (what a model file's config holds)
NET_KEYS = ("d_model", "heads", "layers", "dropout", "head_dropout", "eps", "head_activation", "feed_forward")


# --------------------------------------------------------------------------
# The model plugin: training through aanbench's shared trainer.

DEFAULTS: dict[str, Any] = {
    "d_model": 8, "heads": 2, "layers": 6, "dropout": 0.1, "head_dropout": 0.1, "eps": 1e-6,
    "head_activation": "none", "feed_forward": "relu",
    "lr": 5e-4, "max_epochs": 500, "patience": 30, "batch_size": 30, "weight_decay": 0.0,
}

PARAM_SPECS = {**TRAINER_PARAM_SPECS, "d_model": Int(ge=1, le=4096), "heads": Int(ge=1), "layers": Int(ge=1, le=64),
               "dropout": Float(ge=0, lt=1), "head_dropout": Float(ge=0, lt=1), "eps": Float(gt=0),
               "head_activation": Str(), "feed_forward": Str()}


class FeatureAAN(TorchModel):
    name = "feature-aan"

    def __init__(self, params: Mapping[str, Any], dims: Sequence[int]) -> None:
        self.params = {**DEFAULTS, **dict(params)}
        self.dims = [int(d) for d in dims]
        self.net: FeatureAANNet | None = None

    def _net_config(self) -> dict[str, Any]:
        return {"dims": self.dims, **{k: self.params[k] for k in NET_KEYS}}

    def torch_fit(self, train_y, *, seed: int, **_labels):
        """Build the (seeded) network and say how to train it: the opt-in of
        :mod:`aanbench.batched` (also what :meth:`fit` trains)."""
        import torch

        from aanbench.batched import TorchFit
        from aanbench.training import TrainConfig
        from aanbench_plugins.models._feature_aan_net import FeatureAANNet

        torch.manual_seed(seed)
        self.net = FeatureAANNet(**self._net_config())
        tc = TrainConfig(lr=float(self.params["lr"]), max_epochs=int(self.params["max_epochs"]),
                         patience=int(self.params["patience"]), batch_size=int(self.params["batch_size"]),
                         weight_decay=float(self.params["weight_decay"]))
        return TorchFit(self.net, tc)

    def fit(self, train_x, train_y, val_x, val_y, *, seed: int) -> FitReport:
        from aanbench.training import train_torch

        tf = self.torch_fit(train_y, seed=seed)
        return train_torch(tf.net, train_x, train_y, val_x, val_y, tf.config, seed, device=self.device)

    def state(self) -> dict[str, Any]:
        return {"config": self._net_config(), "state_dict": self.weights()}


def restore(state: Mapping[str, Any]) -> FeatureAAN:
    from aanbench_plugins.models._feature_aan_net import FeatureAANNet

    cfg = dict(state["config"])
    dims = cfg.pop("dims")
    return FeatureAAN(cfg, dims).restored(FeatureAANNet(dims, **cfg), state["state_dict"])


@hookimpl
def aanbench_models():
    return [ModelSpec(
        name="feature-aan",
        description="Feature AttendAffectNet: self-attention across the feature vectors (paper III-C-b)",
        build=lambda params, dims: FeatureAAN(params, dims),
        restore=restore,
        params=DEFAULTS,
        stackable=True,
        param_specs=PARAM_SPECS,
    )]
