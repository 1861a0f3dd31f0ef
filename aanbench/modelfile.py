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

from aanbench.bundle import BUNDLE_FORMAT, BUNDLE_REQUIRED, MODEL_FORMAT, ModelBundle, invalid
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


MAX_MODEL_BYTES = 4 << 30  # a model file larger than this is refused before reading


def _read(path: str | Path) -> Any:
    """The payload of a model file, loaded with ``weights_only=True`` (never
    runs code); every way the file can fail to read is an
    :class:`AanbenchError` "FILE: not a valid aanbench model: WHY"."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise AanbenchError(f"{path}: no such model file")
    size = path.stat().st_size
    if size == 0:
        raise invalid(str(path), "the file is empty (0 bytes)")
    if size > MAX_MODEL_BYTES:
        raise invalid(str(path), f"the file is {size} bytes, more than the {MAX_MODEL_BYTES} a model file may hold")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            # torch's text advises loading the file with the ordinary unpickler: not repeated here
            raise invalid(str(path), "it holds objects other than tensors and plain containers, which aanbench "
                                     "does not load (that would run code from the file). A legacy AttendAffectNet "
                                     "checkpoint must first be converted with `aanbench models import-aan`") from None
        raise invalid(str(path), f"not a readable torch file ({_first_line(exc)})") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError, TypeError,
            AttributeError, MemoryError) as exc:
        raise invalid(str(path), f"not a readable torch file, truncated or damaged? ({type(exc).__name__}: "
                                 f"{_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    """The first line of an error's text, without any advice about ``weights_only``."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip() and "weights_only" not in ln]
    return (lines[0] if lines else type(exc).__name__)[:200]


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
