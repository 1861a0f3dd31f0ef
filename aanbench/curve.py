"""The emotion curve of a film: the models it is drawn with and its result.

:class:`CurveModel` (a loaded model file, :func:`load_models`) and
:class:`FilmCurve` (windows, values per target, reasons, files written).
The workflow that draws a curve is :func:`aanbench.workflows.curve` (one
film: :func:`aanbench.workflows.film_curve`); its files are written by
:mod:`aanbench.curve_output`; films joined from clips by
:mod:`aanbench.filmwrite`::

    from aanbench.api import curve, load_models

    [res] = curve(["film.mp4"], load_models(["model.pt"]), store="curve-store", out_dir="curves")
    res.csv, res.png, res.html, res.failed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aanbench.contracts import AanbenchError

if TYPE_CHECKING:
    from aanbench.bundle import ModelBundle

DEMO_WARNING = ("this model was trained on the generated demo dataset: its predictions mean nothing for real "
                "films (it only knows the demo's synthetic shapes and chords)")


# --------------------------------------------------------------------------
# Models


@dataclass
class CurveModel:
    """One loaded model file (bundle layout, :func:`aanbench.modelfile.load_any`) and where it came from."""

    payload: ModelBundle
    path: str = ""

    @property
    def experiment(self) -> str:
        return str(self.payload.experiment.get("name") or "?")

    @property
    def dataset(self) -> str:
        return str(self.payload.dataset.get("name") or "?")

    @property
    def features(self) -> list[str]:
        return self.payload.input_names

    def describe(self) -> str:
        seed = self.payload.seed
        return (f"{', '.join(self.payload.targets)}: experiment {self.experiment}, trained on {self.dataset}, "
                f"model {self.payload.model}, features {', '.join(self.features)}, seed "
                f"{seed if seed is not None else '?'}" + (f" ({self.path})" if self.path else ""))


def load_models(paths: Sequence[str | Path]) -> list[CurveModel]:
    """Load model files; two files predicting the same target are refused."""
    from aanbench.modelfile import load_any

    if not paths:
        raise AanbenchError("curve needs a model (--model BUNDLE)")
    models = [CurveModel(load_any(p), str(p)) for p in paths]
    seen: dict[str, str] = {}
    for m in models:
        for t in m.payload.targets:
            if t in seen:
                raise AanbenchError(f"{m.path} and {seen[t]} both predict {t}; give one model per target")
            seen[t] = m.path
    return models


def demo_warnings(models: Sequence[CurveModel]) -> list[str]:
    return [f"{m.path or m.experiment}: {DEMO_WARNING}" for m in models if m.dataset == "demo"]


# --------------------------------------------------------------------------
# Result


@dataclass
class FilmCurve:
    """The curve of one film: windows (``start``, ``end`` float64 seconds, NaN
    when the film could not be windowed), one ``float32`` array per target
    (NaN where left out), a reason per window ('' when predicted), and the
    files written."""

    film: Path
    start: np.ndarray
    end: np.ndarray
    values: dict[str, np.ndarray]
    reasons: list[str]
    models: list[CurveModel]
    window: float
    hop: float
    group: str = ""
    csv: Path | None = None
    png: Path | None = None
    html: Path | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extraction_seconds: float = 0.0
    truth: list[tuple[float, float, dict[str, float]]] | None = None  # known labels (demo films), drawn dashed

    @property
    def targets(self) -> list[str]:
        return list(self.values)

    @property
    def failed(self) -> list[tuple[float, float, str]]:
        return [(float(self.start[i]), float(self.end[i]), r) for i, r in enumerate(self.reasons) if r]

    def provenance_lines(self) -> list[str]:
        return [m.describe() for m in self.models]

    def title(self) -> str:
        who = "; ".join(f"{m.experiment} trained on {m.dataset}" for m in self.models)
        return f"{self.film.name}: {who}"
