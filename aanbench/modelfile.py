"""aanbench's own model file: one ``torch.save`` of plain containers and
tensors, loadable with ``torch.load(weights_only=True)``.

Layout (``format`` = ``aanbench.model/1``)::

    {
      "format": "aanbench.model/1",
      "model": "feature-aan",              # ModelSpec name (a model plugin)
      "target": "arousal",                 # what it predicts
      "features": ["resnet50", ...],       # extractor names, in input order
      "standardize": None | {"mean": [Tensor(dim_k)], "std": [Tensor(dim_k)]},
      "state": {...},                      # Model.state(): config + state_dict
      "provenance": {...},                 # where it came from (JSON-able)
    }
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aanbench.contracts import AanbenchError

FORMAT = "aanbench.model/1"
REQUIRED = ("format", "model", "target", "features", "state")


def save_model(path: str | Path, payload: dict[str, Any]) -> Path:
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"model payload lacks {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_model(path: str | Path) -> dict[str, Any]:
    """Read a model file safely (``weights_only=True``); never runs code from it."""
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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AanbenchError(f"{path}: not an aanbench model file (format {FORMAT} expected)")
    return payload
