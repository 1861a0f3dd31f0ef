"""What every torch model plugin repeats: predicting with its trained
network and copying that network's weights for :meth:`Model.state`.

Torch-free at import (every CLI call loads all plugins); torch comes in
with the first prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aanbench.contracts import Model


class TorchModel(Model):
    """A :class:`Model` whose trained network is ``self.net`` (``None``
    until fitted or restored)."""

    net: Any = None

    def trained_net(self) -> Any:
        if self.net is None:
            raise RuntimeError("model is not trained")
        return self.net

    def predict(self, x) -> np.ndarray:
        from aanbench.training import predict_torch

        return predict_torch(self.trained_net(), x)

    def weights(self) -> dict[str, Any]:
        """A detached copy of the network's state dict (for :meth:`Model.state`)."""
        return {k: v.detach().clone() for k, v in self.trained_net().state_dict().items()}
