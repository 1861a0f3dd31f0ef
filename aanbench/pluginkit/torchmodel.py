"""What every torch model plugin repeats: predicting with its trained
network and copying that network's weights for :meth:`Model.state`.

Torch-free at import (every CLI call loads all plugins); torch comes in
with the first prediction.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from aanbench.contracts import Model


class TorchModel(Model):
    """A :class:`Model` whose trained network is ``self.net`` (``None``
    until fitted or restored). ``device`` (``"cpu"`` unless the runner sets
    another, e.g. ``aanbench run --device cuda``) is where ``fit`` trains
    and ``predict`` computes; ``self.net`` is kept on the CPU between
    calls, so its state loads anywhere."""

    net: Any = None
    device: str = "cpu"

    def restored(self, net: Any, state_dict: Mapping[str, Any]) -> "TorchModel":
        """This model with ``net`` as its trained network, its weights loaded
        from ``state_dict`` (every key, exactly), in evaluation mode: what a
        plugin's ``restore`` ends with."""
        net.load_state_dict(state_dict, strict=True)
        net.eval()
        self.net = net
        return self

    def trained_net(self) -> Any:
        if self.net is None:
            raise RuntimeError("model is not trained")
        return self.net

    def predict(self, x) -> np.ndarray:
        from aanbench.training import predict_torch

        return predict_torch(self.trained_net(), x, device=self.device)

    def weights(self) -> dict[str, Any]:
        """A detached copy of the network's state dict (for :meth:`Model.state`)."""
        return {k: v.detach().clone() for k, v in self.trained_net().state_dict().items()}
