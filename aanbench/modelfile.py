"""aanbench's own model files: one ``torch.save`` of plain containers and
tensors, loadable with ``torch.load(weights_only=True)`` (never runs code).

Two formats.

A model bundle (``aanbench.bundle/1``), written by ``aanbench train``: every
target of one experiment on one dataset::

    {
      "format": "aanbench.bundle/1",
      "model": "feature-aan", "model_version": "1",   # ModelSpec (a model plugin)
      "input": "rows" | "sequences",
      "targets": {                                    # one entry per target
        "valence": {"state": {...},                   # Model.state()
                    "standardize": {"mean": [Tensor(dim_k)], "std": [Tensor(dim_k)]},
                    "params": {...}, "settings": {...}, "fit": {...}},
        "arousal": {...},
      },
      "features": ["resnet50", ...],                  # extractor names, input order
      "feature_keys": ["resnet50@1", ...],            # the store arrays trained on
      "dims": [2048, ...],
      "samples": {"length": 1, "stride": 1, "scope": ..., "label": ..., "start": ...},
      "experiment": {"name", "description", "feature_set", "protocol", "registry"},
      "dataset": {"name", "version", "config", "group", "items_sha256", "n_items", "n_samples"},
      "provenance": {"features": [{"name", "key", "provenance"}], "aanbench_version"},
      "seed": 0,
    }

The standardiser (training statistics of the fitting samples' rows) is kept
per target: each target's model carves its own validation split.

A single-target model file (``aanbench.model/1``), written by ``run
--save-models`` (one per target and fold) and by ``models import-aan``::

    {
      "format": "aanbench.model/1",
      "model": "feature-aan", "target": "arousal",
      "features": ["resnet50", ...],
      "standardize": None | {"mean": [...], "std": [...]},
      "state": {...},
      "provenance": {...},
      # optional (run --save-models): "input", "samples", "dims"
    }

:func:`load_any` reads either (and every older layout) into a typed
:class:`aanbench.bundle.ModelBundle`, so ``predict``, ``curve`` and ``models
info`` treat them alike; :func:`save_bundle` and :func:`save_model` write a
:class:`~aanbench.bundle.ModelBundle` in the two layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aanbench.bundle import BUNDLE_FORMAT, BUNDLE_REQUIRED, MODEL_FORMAT, ModelBundle
from aanbench.bundle import MODEL_REQUIRED as REQUIRED
from aanbench.contracts import AanbenchError

FORMAT = MODEL_FORMAT
__all__ = ["BUNDLE_FORMAT", "BUNDLE_REQUIRED", "FORMAT", "REQUIRED", "ModelBundle", "load_any", "load_model",
           "save_bundle", "save_model"]


def _save(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def save_model(path: str | Path, bundle: ModelBundle) -> Path:
    """Write a one-target bundle as a single-target model file (``aanbench.model/1``);
    a payload dict is checked by reading it as a bundle first."""
    if not isinstance(bundle, ModelBundle):
        bundle = ModelBundle.from_payload(bundle, str(path))
    return _save(path, bundle.to_model_payload())


def save_bundle(path: str | Path, bundle: ModelBundle) -> Path:
    """Write a model bundle (``aanbench.bundle/1``); a payload dict is checked
    by reading it as a bundle first."""
    if not isinstance(bundle, ModelBundle):
        bundle = ModelBundle.from_payload(bundle, str(path))
    return _save(path, bundle.to_payload())


def _read(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise AanbenchError(f"{path}: no such model file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AanbenchError(
            f"{path}: not an aanbench model file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "Legacy AttendAffectNet checkpoints must first be converted with `aanbench models import-aan`."
        ) from None


def load_model(path: str | Path) -> dict[str, Any]:
    """The raw payload of a single-target model file (``weights_only=True``),
    checked as :func:`load_any` checks it: what the legacy converter's
    ``build_net``/``predict_arrays`` take. Everything else reads files with
    :func:`load_any`."""
    payload = _read(path)
    bundle = ModelBundle.from_payload(payload, str(path))  # clear errors: damaged, newer, not ours
    if bundle.source_format != FORMAT:
        raise AanbenchError(f"{path}: a model bundle, not a single-target model file (format {FORMAT})")
    return payload


def load_any(path: str | Path) -> ModelBundle:
    """Read a bundle or a single-target model file (``weights_only=True``,
    never runs code from it) as a :class:`ModelBundle` (a single-target file
    becomes a bundle of one target; ``source_format`` says which it was)."""
    return ModelBundle.from_payload(_read(path), str(path))
