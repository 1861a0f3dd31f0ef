"""Baselines every leaderboard carries: the training-mean predictor and
ridge regression on the concatenated (standardised) features."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import FitReport, Model, ModelSpec
from aanbench.paramspec import Float, ListOf


class MeanPredictor(Model):
    """Predicts the mean of the training targets for every item. It reads no
    features (``needs_features=False``): it runs on any labelled store group."""

    name = "mean"

    def __init__(self, params: Mapping[str, Any] | None = None, dims: Sequence[int] = ()) -> None:
        self.mean: float | None = None

    def fit(self, train_x, train_y, val_x, val_y, *, seed: int) -> FitReport:
        y = np.asarray(train_y, dtype=np.float64)
        if val_y is not None and len(val_y):
            y = np.concatenate([y, np.asarray(val_y, dtype=np.float64)])  # both are training data
        self.mean = float(y.mean())
        return FitReport()

    def predict(self, x) -> np.ndarray:
        if self.mean is None:
            raise RuntimeError("model is not trained")
        return np.full(len(x[0]), self.mean, dtype=np.float32)

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean}


class Ridge(Model):
    """Ridge regression; the penalty is chosen on the validation rows
    (carved from training data), then refit on all training rows."""

    name = "ridge"

    def __init__(self, params: Mapping[str, Any], dims: Sequence[int]) -> None:
        self.alphas = [float(a) for a in params.get("alphas", RIDGE_DEFAULTS["alphas"])]
        self.alpha: float | None = None
        self.w: np.ndarray | None = None
        self.b = 0.0

    @staticmethod
    def _solve(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
        xm, ym = x.mean(0), y.mean()
        xc, yc = x - xm, y - ym
        u, s, vt = np.linalg.svd(xc, full_matrices=False)
        w = vt.T @ ((s / (s**2 + alpha)) * (u.T @ yc))
        return w, float(ym - xm @ w)

    def fit(self, train_x, train_y, val_x, val_y, *, seed: int) -> FitReport:
        x = np.concatenate([np.asarray(a, dtype=np.float64) for a in train_x], axis=1)
        y = np.asarray(train_y, dtype=np.float64)
        best_alpha, best = self.alphas[0], float("inf")
        if val_x is not None and val_y is not None and len(val_y):
            vx = np.concatenate([np.asarray(a, dtype=np.float64) for a in val_x], axis=1)
            for a in self.alphas:
                w, b = self._solve(x, y, a)
                err = float(np.mean((vx @ w + b - val_y) ** 2))
                if err < best:
                    best_alpha, best = a, err
            x = np.concatenate([x, vx])
            y = np.concatenate([y, np.asarray(val_y, dtype=np.float64)])
        self.alpha = best_alpha
        self.w, self.b = self._solve(x, y, best_alpha)
        return FitReport(best_val_loss=best if np.isfinite(best) else None)

    def predict(self, x) -> np.ndarray:
        if self.w is None:
            raise RuntimeError("model is not trained")
        xx = np.concatenate([np.asarray(a, dtype=np.float64) for a in x], axis=1)
        return (xx @ self.w + self.b).astype(np.float32)

    def state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "w": None if self.w is None else self.w.tolist(), "b": self.b}


def _restore_mean(state: Mapping[str, Any]) -> MeanPredictor:
    m = MeanPredictor()
    m.mean = float(state["mean"])
    return m


def _restore_ridge(state: Mapping[str, Any]) -> Ridge:
    m = Ridge({}, [])
    m.alpha, m.w, m.b = state["alpha"], np.asarray(state["w"], dtype=np.float64), float(state["b"])
    return m


RIDGE_DEFAULTS: dict[str, Any] = {"alphas": [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]}


@hookimpl
def aanbench_models():
    return [
        ModelSpec("mean", "Training-mean predictor (sanity floor)", lambda p, d: MeanPredictor(p, d),
                  restore=_restore_mean, params={}, needs_features=False),
        ModelSpec("ridge", "Ridge regression on concatenated standardised features", lambda p, d: Ridge(p, d),
                  restore=_restore_ridge, params=RIDGE_DEFAULTS, param_specs={"alphas": ListOf(Float(gt=0))}),
    ]
