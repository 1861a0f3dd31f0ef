"""Example third-party sequence model, used only by the tests: each window
``(n, T, dim_k)`` is averaged over time and fed to ridge regression.

It refuses anything but sequences, so a test that runs it shows that the
engine built windows and handed them over as ``(n, T, dim_k)`` arrays.
Not registered by this package's pyproject (the plugin listing tests expect
exactly its extractor); tests/test_engine_cli.py gives it an entry point.
"""

from typing import Any, Mapping, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import FitReport, Model, ModelSpec


class MeanOverTimeRidge(Model):
    name = "example-seq-ridge"

    def __init__(self, params: Mapping[str, Any], dims: Sequence[int]) -> None:
        self.alpha = float(params.get("alpha", 1.0))
        self.dims = [int(d) for d in dims]
        self.w: np.ndarray | None = None
        self.b = 0.0
        self.window = 0

    def _inputs(self, xs) -> np.ndarray:
        if len(xs) != len(self.dims):
            raise ValueError(f"expected {len(self.dims)} feature arrays, got {len(xs)}")
        for x, d in zip(xs, self.dims):
            if x.ndim != 3 or x.shape[2] != d:
                raise ValueError(f"expected windows (n, T, {d}), got shape {x.shape}")
        self.window = int(xs[0].shape[1])
        return np.concatenate([np.asarray(x, dtype=np.float64).mean(axis=1) for x in xs], axis=1)

    def fit(self, train_x, train_y, val_x, val_y, *, seed: int) -> FitReport:
        x, y = self._inputs(train_x), np.asarray(train_y, dtype=np.float64)
        xm, ym = x.mean(0), y.mean()
        xc = x - xm
        self.w = np.linalg.solve(xc.T @ xc + self.alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
        self.b = float(ym - xm @ self.w)
        return FitReport()

    def predict(self, x) -> np.ndarray:
        if self.w is None:
            raise RuntimeError("model is not trained")
        return (self._inputs(x) @ self.w + self.b).astype(np.float32)

    def state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "dims": self.dims, "w": self.w.tolist(), "b": self.b}


def restore(state: Mapping[str, Any]) -> MeanOverTimeRidge:
    m = MeanOverTimeRidge({"alpha": state["alpha"]}, state["dims"])
    m.w, m.b = np.asarray(state["w"], dtype=np.float64), float(state["b"])
    return m


@hookimpl
def aanbench_models():
    return [ModelSpec("example-seq-ridge", "Mean over each window's rows, then ridge (tests only)",
                      lambda p, d: MeanOverTimeRidge(p, d), restore=restore, params={"alpha": 1.0},
                      input="sequences")]
