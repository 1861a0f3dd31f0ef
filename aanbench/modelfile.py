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

:func:`load_any` reads either and returns the bundle layout, so ``predict``
and ``models info`` treat them alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aanbench.contracts import AanbenchError

FORMAT = "aanbench.model/1"
BUNDLE_FORMAT = "aanbench.bundle/1"
REQUIRED = ("format", "model", "target", "features", "state")
BUNDLE_REQUIRED = ("format", "model", "targets", "features", "samples")


def _save(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def save_model(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a single-target model file."""
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"model payload lacks {missing}")
    return _save(path, payload)


def save_bundle(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a model bundle."""
    missing = [k for k in BUNDLE_REQUIRED if k not in payload]
    if missing or payload.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"bundle payload lacks {missing or ['format ' + BUNDLE_FORMAT]}")
    return _save(path, payload)


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AanbenchError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AanbenchError(
            f"{path}: not an aanbench model file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "Legacy AttendAffectNet checkpoints must first be converted with `aanbench models import-aan`."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, BUNDLE_FORMAT):
        raise AanbenchError(f"{path}: not an aanbench model file (format {FORMAT} or {BUNDLE_FORMAT} expected)")
    return payload


def load_model(path: str | Path) -> dict[str, Any]:
    """Read a single-target model file safely (``weights_only=True``)."""
    payload = _read(path)
    if payload["format"] != FORMAT:
        raise AanbenchError(f"{path}: a model bundle, not a single-target model file (format {FORMAT})")
    return payload


def load_any(path: str | Path) -> dict[str, Any]:
    """Read a bundle or a single-target model file (``weights_only=True``) and
    return it in the bundle layout (a single-target file becomes a bundle of
    one target; ``"source_format"`` says which it was)."""
    payload = _read(path)
    if payload["format"] == BUNDLE_FORMAT:
        missing = [k for k in BUNDLE_REQUIRED if k not in payload]
        if missing or not isinstance(payload["targets"], dict) or not payload["targets"]:
            raise AanbenchError(f"{path}: a damaged model bundle (lacks {missing or ['targets']})")
        return {**payload, "source_format": BUNDLE_FORMAT}
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise AanbenchError(f"{path}: a damaged model file (lacks {missing})")
    prov = dict(payload.get("provenance") or {})
    return {
        "format": BUNDLE_FORMAT,
        "source_format": FORMAT,
        "model": payload["model"],
        "model_version": payload.get("model_version", ""),
        "input": payload.get("input", "rows"),
        "targets": {payload["target"]: {"state": payload["state"], "standardize": payload.get("standardize")}},
        "features": list(payload["features"]),
        "feature_keys": list(prov.get("feature_keys") or []),
        "dims": list(payload.get("dims") or []),
        "samples": payload.get("samples") or {"length": 1, "stride": 1, "scope": "group", "label": "last",
                                              "start": "drop"},
        "experiment": {"name": prov.get("experiment", "")},
        "dataset": {"name": prov.get("dataset", "")},
        "provenance": prov,
        "seed": prov.get("seed"),
    }
