"""The stored rows of an experiment's features and their standardiser:
what the runner fits on and what :mod:`aanbench.predict` applies a saved
model to.

- :class:`FeatureMatrix` / :func:`load_features`: one ``float32 (n_items,
  dim_k)`` array per feature read from a store group, with the rows valid in
  every array;
- :class:`Standardizer`: per-feature mean/std fit on training rows only (its
  payload is what model files keep under ``standardize``);
- :func:`predict_samples`: a fitted model's predictions for some samples,
  their rows standardised first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aanbench.plugin_manager import Plugins
from aanbench.samples import Samples
from aanbench.store import DatasetGroup


@dataclass
class Standardizer:
    """Per-feature mean/std, fit on training rows only."""

    mean: list[np.ndarray]
    std: list[np.ndarray]

    @classmethod
    def fit(cls, xs: list[np.ndarray]) -> "Standardizer":
        means = [x.mean(0) for x in xs]
        stds = [x.std(0) for x in xs]
        stds = [np.where(s > 1e-8, s, 1.0) for s in stds]
        return cls([m.astype(np.float32) for m in means], [s.astype(np.float32) for s in stds])

    @classmethod
    def identity(cls, dims: list[int] | tuple[int, ...]) -> "Standardizer":
        """Mean 0, std 1: leaves the features as stored (``standardize = false``)."""
        return cls([np.zeros(int(d), np.float32) for d in dims], [np.ones(int(d), np.float32) for d in dims])

    def apply(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        return [((x - m) / s).astype(np.float32) for x, m, s in zip(xs, self.mean, self.std)]

    def to_payload(self) -> dict[str, Any]:
        import torch

        return {"mean": [torch.from_numpy(np.asarray(m, dtype=np.float32)) for m in self.mean],
                "std": [torch.from_numpy(np.asarray(s, dtype=np.float32)) for s in self.std]}

    @classmethod
    def from_payload(cls, sd: dict[str, Any]) -> "Standardizer":
        # copies: the payload's tensors may share memory with another standardiser's arrays
        return cls([np.asarray(a, dtype=np.float32).copy() for a in sd["mean"]],
                   [np.asarray(a, dtype=np.float32).copy() for a in sd["std"]])


@dataclass
class FeatureMatrix:
    """The stored rows of an experiment's features: one ``float32 (n_items,
    dim_k)`` array per feature, ``dims[k]`` = ``dim_k`` (from the store), and
    ``valid`` = rows valid in every array."""

    names: list[str]
    keys: list[str]
    values: list[np.ndarray]
    valid: np.ndarray
    provenance: list[dict[str, Any]] = field(default_factory=list)
    dims: list[int] = field(default_factory=list)
    oks: list[np.ndarray] = field(default_factory=list)  # per array: row valid
    errors: list[np.ndarray] = field(default_factory=list)  # per array: why not ('' when valid)


def load_features(group: DatasetGroup, names: tuple[str, ...] | list[str], plugins: Plugins,
                  keys: list[str] | None = None) -> FeatureMatrix:
    """Read the arrays of ``names`` (or exactly ``keys`` where the group holds
    them: a bundle's trained-on arrays)."""
    out_keys, values, provs, dims, oks, errors = [], [], [], [], [], []
    valid = np.ones(group.n_items, dtype=bool)
    for i, name in enumerate(names):
        key = keys[i] if keys and i < len(keys) and keys[i] else None
        if key and key in group.feature_keys():
            arr = group.feature(key)
        else:
            installed = plugins.extractors.get(name)
            arr = group.resolve_feature(name, installed.version if installed else None)
        out_keys.append(arr.key)
        values.append(arr.read())
        ok = arr.ok()
        valid &= ok
        provs.append(arr.provenance)
        dims.append(arr.dim)
        oks.append(ok)
        errors.append(np.where(ok, "", arr.errors()))
    return FeatureMatrix(list(names), out_keys, values, valid, provs, dims, oks, errors)


def no_features(n_items: int) -> FeatureMatrix:
    """The features of a model that reads none (``ModelSpec.needs_features``
    False): every row valid, and one ``float32 (n_items, 0)`` array so that
    the model's ``fit`` and ``predict`` know how many samples they get."""
    n = int(n_items)
    return FeatureMatrix(names=[], keys=[], values=[np.zeros((n, 0), dtype=np.float32)],
                         valid=np.ones(n, dtype=bool), provenance=[], dims=[0], oks=[], errors=[])


def predict_samples(model: Any, scaler: Standardizer, samples: Samples, values: list[np.ndarray],
                    idx: np.ndarray, sequences: bool) -> np.ndarray:
    """``float32 (len(idx),)`` predictions of a fitted model for samples ``idx``."""
    if not len(idx):
        return np.zeros(0, dtype=np.float32)
    rows = samples.rows(idx)
    std = [np.zeros_like(v) for v in values]
    for s, v, m, sd in zip(std, values, scaler.mean, scaler.std):
        s[rows] = (v[rows] - m) / sd
    x = samples.take(std, idx, sequences=sequences)
    return np.asarray(model.predict(x), dtype=np.float32).reshape(-1)
