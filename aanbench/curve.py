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
    """Load model files or named models (``aanbench models list``,
    :func:`aanbench.named_models.resolve_models`: an existing file wins over
    a name); two models predicting the same target are refused, and so is
    a model that cannot predict (:func:`aanbench.predict.check_bundle`: its
    plugin is not installed, or a state does not fit). Whether the
    extractors' weight files are there is checked where they are needed
    (:func:`aanbench.workflows.curve`: only for features the store lacks)."""
    from aanbench.bundle import ModelBundle
    from aanbench.named_models import resolve_models
    from aanbench.plugin_manager import get_plugins
    from aanbench.predict import check_bundle

    if not paths:
        raise AanbenchError("curve needs a model (--model FILE or NAME; see `aanbench models list`)")
    out = []
    plugins = get_plugins()
    for r in resolve_models(paths):
        payload = r.payload if isinstance(r.payload, ModelBundle) else ModelBundle.from_payload(r.payload, r.source)
        try:  # one that cannot predict is refused now, not after the film's extraction
            check_bundle(payload, plugins)
        except AanbenchError as exc:
            msg = str(exc)
            raise AanbenchError(msg if msg.startswith(str(r.source)) else f"{r.source}: {msg}") from None
        out.append(CurveModel(payload, r.source))
    return out


@dataclass
class _HeaderPayload:
    features: list[str]
    feature_keys: list[str]


@dataclass
class ModelHeader:
    """What a model file says about its input, read without torch
    (:func:`peek_model`): enough to plan and run the extraction
    (``payload.features``, ``payload.feature_keys``) while the model itself
    loads (:class:`ModelsLoading`)."""

    payload: _HeaderPayload
    path: str
    experiment: str = "?"
    dataset: str = "?"
    targets: list[str] = field(default_factory=list)
    model: str = "?"  # the model plugin's name


class _Opaque:
    """What the header reader makes of every object a pickle names: nothing
    (no class or function from the file is ever looked up or run)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


MAX_HEADER_PICKLE = 64 << 20  # a data.pkl larger than this is left to the real loader


def peek_model(path: str | Path) -> ModelHeader | None:
    """The input (features, their store keys), experiment and dataset names
    of a model file (``torch.save`` zip of a bundle or a single-target
    model), read from its pickle with an unpickler that resolves no global
    at all (each becomes an inert placeholder) and skips the tensors'
    data, so without torch (2 CPU-s to import). ``None`` when the file is
    not such a zip or its fields are not plain names: the caller then
    simply loads it (:func:`load_models`), which validates everything and
    reports any problem."""
    import io
    import pickle
    import zipfile

    class _Reader(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:  # never the file's classes
            return _Opaque

        def persistent_load(self, pid: Any) -> Any:  # tensor storages: not read
            return None

    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1 or z.getinfo(names[0]).file_size > MAX_HEADER_PICKLE:
                return None
            payload = _Reader(io.BytesIO(z.read(names[0]))).load()
    except Exception:
        return None
    if not isinstance(payload, dict):
        return None
    from aanbench.bundle import BUNDLE_FORMAT, MODEL_FORMAT

    if payload.get("format") not in (BUNDLE_FORMAT, MODEL_FORMAT) or not isinstance(payload.get("model"), str):
        return None  # loaded before any work, which says what is wrong with it

    def names_of(v: Any) -> list[str] | None:
        return list(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else None

    features = names_of(payload.get("features"))
    keys = names_of(payload.get("feature_keys", []))
    targets = payload.get("targets")
    targets = names_of(list(targets)) if isinstance(targets, dict) else names_of([payload.get("target")])
    if features is None or keys is None or not targets:
        return None
    exp, ds = payload.get("experiment"), payload.get("dataset")
    return ModelHeader(_HeaderPayload(features, keys), str(path),
                       str(exp.get("name") or "?") if isinstance(exp, dict) else "?",
                       str(ds.get("name") or "?") if isinstance(ds, dict) else "?", targets, payload["model"])


class ModelsLoading:
    """Model files loading in a thread (:func:`load_models`, which imports
    torch) while their headers (:func:`peek_model`) already serve the
    extraction. :meth:`start` starts the thread (the curve workflow does so
    once the extraction is planned and the workers have their windows, so
    the two do not share this process's interpreter lock while planning);
    :meth:`result` starts it if need be, waits and returns the models (or
    raises what loading raised); :meth:`check` raises a loading error early."""

    def __init__(self, paths: Sequence[str | Path], headers: list[ModelHeader]) -> None:
        self.headers = headers
        self._paths = list(paths)
        self._models: list[CurveModel] | None = None
        self._error: BaseException | None = None
        self._thread: Any = None

    def start(self) -> None:
        import threading

        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="aanbench-model-load", daemon=True)
            self._thread.start()

    @property
    def loading(self) -> bool:
        """Started and not finished."""
        return self._thread is not None and self._thread.is_alive()

    def _load(self) -> None:
        try:
            self._models = load_models(self._paths)
        except BaseException as exc:  # raised in the caller's thread by result()
            self._error = exc

    def check(self) -> None:
        """Raise what loading raised, if it has finished with an error (does
        not wait): the curve workflow calls it after each extracted chunk, so
        that a model file which fails to load stops the extraction early
        (the chunks already saved stay in the store) rather than after the
        whole film."""
        if self._error is not None:
            raise self._error

    def result(self) -> list[CurveModel]:
        self.start()
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._models is not None
        return self._models


def peek_models(paths: Sequence[str | Path]) -> list[ModelHeader] | None:
    """The headers (:func:`peek_model`) of ``paths`` when every one is a
    model file whose header can be read without torch, names a known file
    format and an installed model plugin, and no two predict the same
    target, else ``None`` (load them with :func:`load_models`, which
    reports what is wrong before any work)."""
    if not paths:
        return None
    from aanbench.plugin_manager import get_plugins  # loads no torch

    installed = get_plugins().models
    headers = []
    for p in paths:
        if not Path(str(p)).expanduser().is_file():
            return None  # a named model: resolved by load_models
        h = peek_model(Path(str(p)).expanduser())
        if h is None or h.model not in installed:
            return None
        h.path = str(p)
        headers.append(h)
    targets = [t for h in headers for t in h.targets]
    if len(set(targets)) != len(targets):
        return None
    return headers


def start_loading(paths: Sequence[str | Path], headers: list[ModelHeader] | None = None) -> ModelsLoading | None:
    """:class:`ModelsLoading` for ``paths`` (their ``headers``, else
    :func:`peek_models`), or ``None`` where :func:`peek_models` gives none."""
    headers = headers if headers is not None else peek_models(paths)
    return ModelsLoading(paths, headers) if headers is not None else None


def demo_warnings(models: Sequence[CurveModel]) -> list[str]:
    return [f"{m.path or m.experiment}: {DEMO_WARNING}" for m in models if m.dataset == "demo"]


# --------------------------------------------------------------------------
# Scale


@dataclass
class CurveScale:
    """The scale of the predictions: the range of the labels each target's
    model was trained on (``ranges``: target -> ``(low, high)``), their
    ``units`` and where that came from (``source``). A target without a
    known range is absent from ``ranges``."""

    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)

    def outside(self, target: str, values: np.ndarray) -> np.ndarray:
        """``bool`` per value: finite and outside the training labels' range."""
        v = np.asarray(values, dtype=np.float64)
        if target not in self.ranges:
            return np.zeros(v.shape, dtype=bool)
        lo, hi = self.ranges[target]
        with np.errstate(invalid="ignore"):
            return np.isfinite(v) & ((v < lo) | (v > hi))

    def extrapolating(self, target: str, n_out: int, n: int, noun: str = "values") -> str:
        """The warning for ``n_out`` of ``n`` ``noun`` of ``target`` outside
        the training labels' range (``curve`` and ``predict`` say it alike)."""
        return (f"{n_out} of {n} {target} {noun} lie outside the training labels' range "
                f"({self.describe(target)}): the model is extrapolating")

    def describe(self, target: str) -> str:
        """``valence: training labels -1 to 1 (units; from <dataset>)``, or why unknown."""
        if target not in self.ranges:
            return f"{target}: range of the training labels unknown"
        lo, hi = self.ranges[target]
        extra = "; ".join(x for x in (self.units.get(target, ""), self.source.get(target, "")) if x)
        return f"{target}: training labels {lo:g} to {hi:g}" + (f" ({extra})" if extra else "")


def label_scale(models: Sequence[CurveModel], plugins: Any = None) -> CurveScale:
    """Each target's training label range and units: from the bundle's
    dataset info (``label_range``, ``label_units``: named models carry them),
    else from the training dataset's plugin (its ``label_range`` per target,
    ``label_units`` if it declares them)."""
    scale = CurveScale()
    for m in models:
        info = m.payload.dataset or {}
        rng, units = info.get("label_range"), str(info.get("label_units") or "")
        ds_plugin = None
        if not rng:
            if plugins is None:
                from aanbench.plugin_manager import get_plugins

                plugins = get_plugins()
            ds_plugin = plugins.datasets.get(m.dataset) if m.dataset else None
            rng = getattr(ds_plugin, "label_range", None) or None
            units = units or str(getattr(ds_plugin, "label_units", "") or "")
        for t in m.payload.targets:
            r = rng.get(t) if isinstance(rng, dict) else rng
            try:
                lo, hi = (float(x) for x in r)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                continue
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                continue
            scale.ranges[t] = (lo, hi)
            scale.units[t] = units
            scale.source[t] = f"{m.dataset} dataset" + (" plugin" if ds_plugin is not None else "")
    return scale


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
    scale: CurveScale = field(default_factory=CurveScale)  # the training labels' range per target
    error: str = ""  # why the file is not a film (no windows, no files written)

    @property
    def targets(self) -> list[str]:
        return list(self.values)

    @property
    def failed(self) -> list[tuple[float, float, str]]:
        return [(float(self.start[i]), float(self.end[i]), r) for i, r in enumerate(self.reasons) if r]

    def outside(self, target: str) -> np.ndarray:
        """``bool`` per window: ``target``'s value lies outside its training labels' range."""
        return self.scale.outside(target, self.values[target])

    def outside_cell(self, i: int) -> str:
        """The targets of window ``i`` outside their training range, ``;``-joined (CSV column ``outside_range``)."""
        return ";".join(t for t in self.targets if self.outside(t)[i])

    def provenance_lines(self) -> list[str]:
        return [m.describe() for m in self.models]

    def title(self) -> str:
        who = "; ".join(f"{m.experiment} trained on {m.dataset}" for m in self.models)
        return f"{self.film.name}: {who}"
