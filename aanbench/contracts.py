"""The small typed objects that flow between aanbench's stages, and the
contracts that extractor, dataset and model plugins implement.

Data flows one way::

    Dataset.items() -> Item -> decode_media() -> Media -> Extractor.extract()
        -> rows in the FeatureStore -> samples (SequenceSpec)
        -> Model.fit()/predict() -> results

Units: times in seconds, audio in Hz, frames as ``uint8`` RGB arrays of shape
``(T, H, W, 3)``, features as ``float32`` arrays of shape ``(n_items, dim)``;
a model sees ``(n, dim_k)`` (rows) or ``(n, T, dim_k)`` (sequences).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

TARGETS: tuple[str, ...] = ("valence", "arousal")


class AanbenchError(Exception):
    """An expected error: printed as a one-line message, never a traceback.

    ``exit_code`` 2 means usage or configuration error (the CLI's contract).
    """

    exit_code = 2


class ItemError(Exception):
    """One item cannot be processed (corrupt file, no audio stream, too short).

    Raised by decoders and extractors; the batch records the reason for that
    item and goes on.
    """


# --------------------------------------------------------------------------
# Items and media


@dataclass(frozen=True)
class Item:
    """One unit that gets one feature row per extractor.

    ``start``/``end`` delimit a ``[start, end)`` window in seconds inside the
    media file; ``None`` means the file's beginning / end.  ``labels`` maps a
    target name (``valence``, ``arousal``) to its value; ``group`` is the
    movie the item comes from (for leave-one-movie-out); ``split`` is the
    dataset's fixed split (``train``, ``test``) or ``""`` when it has none.
    """

    id: str
    path: Path | None
    start: float | None = None
    end: float | None = None
    labels: Mapping[str, float] = field(default_factory=dict)
    group: str = ""
    split: str = ""


@dataclass(frozen=True)
class MediaRequest:
    """What an extractor needs decoded for each item.

    Video: either ``frames`` (T frames sampled uniformly over the window) or
    ``fps`` (frames sampled at that rate over the window); frames are resized
    so the shorter side is ``short_side`` pixels (``None`` keeps the native
    size) and then centre-cropped to ``crop`` x ``crop`` (``None``: no crop).
    Audio: ``audio_rate`` in Hz, mono float32 in [-1, 1] (``None``: no audio).
    """

    frames: int = 0
    fps: float | None = None
    short_side: int | None = None
    crop: int | None = None
    audio_rate: int | None = None

    @property
    def wants_video(self) -> bool:
        return self.frames > 0 or self.fps is not None

    @property
    def wants_audio(self) -> bool:
        return self.audio_rate is not None

    def video_key(self) -> tuple:
        """Key under which ``Media`` keeps this request's frames."""
        return (self.frames, self.fps, self.short_side, self.crop)

    def frame_count(self, duration: float) -> int:
        """Number of frames this request samples from a window of ``duration`` s."""
        if self.frames > 0:
            return self.frames
        if self.fps is not None:
            return max(1, int(math.floor(duration * self.fps + 1e-9)))
        return 0


@dataclass
class Media:
    """Decoded media of one item, serving every extractor of a run.

    ``video[request.video_key()]`` is ``uint8 (T, H, W, 3)`` RGB;
    ``audio[rate]`` is ``float32 (n_samples,)`` mono.
    """

    item: Item
    duration: float
    video: dict[tuple, np.ndarray] = field(default_factory=dict)
    audio: dict[int, np.ndarray] = field(default_factory=dict)
    native_fps: float | None = None

    def frames_for(self, request: MediaRequest) -> np.ndarray:
        return self.video[request.video_key()]

    def audio_for(self, request: MediaRequest) -> np.ndarray:
        if request.audio_rate is None:
            raise KeyError("request asks for no audio")
        return self.audio[request.audio_rate]


# --------------------------------------------------------------------------
# Extractors


@dataclass(frozen=True)
class WeightFile:
    """A pretrained weight file an extractor needs, placed by the user.

    aanbench never downloads it: the user places ``filename`` in the weights
    folder; it is verified against ``sha256`` before any work starts.
    ``source`` says where to obtain it on a connected machine.
    """

    filename: str
    sha256: str
    source: str
    description: str = ""


@dataclass
class LoadContext:
    """What an extractor gets when it loads: the torch device name, the
    resolved (already verified) weight paths by file name, and a batch size."""

    device: str = "cpu"
    weights: Mapping[str, Path] = field(default_factory=dict)
    batch_size: int = 8


class Extractor:
    """Contract of an extractor plugin.

    Subclass it and return instances from the ``aanbench_extractors`` hook.
    Constructing one must be cheap: heavy work (building networks, reading
    weights) belongs in :meth:`load`, which runs once per worker.

    Attributes
    ----------
    name: identifier used in the CLI, the store and ``registry.toml``.
    version: bump it whenever the numbers it produces change; the store
        refuses to mix rows from two versions.
    modality: ``"video"`` or ``"audio"``.
    dim: length of the feature vector.
    needs: the media it wants decoded (see :class:`MediaRequest`).
    weights: pretrained files it needs (empty for weight-free extractors).
    deterministic: same input, same output bit for bit on one machine.
    """

    name: str = ""
    version: str = "1"
    modality: str = "video"
    dim: int = 0
    needs: MediaRequest = MediaRequest()
    weights: tuple[WeightFile, ...] = ()
    description: str = ""
    deterministic: bool = True
    uses_gpu: bool = False

    def config(self) -> dict[str, Any]:
        """JSON-able settings that determine the output (kept as provenance)."""
        return {"needs": _request_dict(self.needs)}

    def load(self, ctx: LoadContext) -> None:
        """Build the network / read weights. Called once per worker."""

    def extract(self, batch: Sequence[Media]) -> np.ndarray:
        """Return ``float32 (len(batch), dim)``; raise :class:`ItemError` for
        a problem that belongs to a single item."""
        raise NotImplementedError


def _request_dict(req: MediaRequest) -> dict[str, Any]:
    return {
        "frames": req.frames,
        "fps": req.fps,
        "short_side": req.short_side,
        "crop": req.crop,
        "audio_rate": req.audio_rate,
    }


# --------------------------------------------------------------------------
# Samples: rows, or windows of consecutive rows


SCOPES = ("file", "group")
WINDOW_LABELS = ("last", "mean")
START_POLICIES = ("drop", "pad")


@dataclass(frozen=True)
class SequenceSpec:
    """How the engine turns stored rows into the samples a model sees.

    A sample is a window of ``length`` consecutive rows (``length == 1``: a
    single row, what row models take). Rows are taken within a ``scope``:
    ``"file"`` (one media file) or ``"group"`` (one group, i.e. movie); a
    window never crosses a scope, a group or a split. Inside a scope the rows
    are ordered by start time (an open start counts as 0 s; ties keep the
    store order), and a window starts every ``stride`` rows. Nor does a
    window span a gap in time: where a scope's row starts later after the
    previous row's end than the scope's usual distance (0 for contiguous
    segments) plus half a row's length (at least 0.5 s), say where a
    segment is missing, the rows after it begin a new run, with its own
    ``start`` rule.

    ``label``: a window carries the labels of its ``"last"`` row, or the
    ``"mean"`` of its rows' labels (for windows whose rows share one label,
    such as the sub-segments of one excerpt).

    ``start``: at the beginning of a scope, ``"drop"`` makes the first window
    end at row ``length - 1`` (the first rows start no window of their own);
    ``"pad"`` repeats the scope's first row in front so that a window ends at
    every ``stride``-th row from the first (with stride 1: one prediction per
    row). Rows after the last full stride start no window.

    Sample ids: a single-row sample keeps its item's id; a window is named
    after its last row, or after the parent ``P`` when its rows are exactly
    the sub-items ``P#0``, ``P#1``, ... of one parent that no other window
    shares (EIMT16 temporal: ``ACCEDE00000``). A sample spans ``[start, end)``
    = its first row's start to its last row's end, in seconds.

    A dataset whose media files are independent excerpts
    (:attr:`Dataset.independent_excerpts`, EIMT16) admits only the ``"file"``
    scope for windows of more than one row.

    Windows are not part of a dataset's stored configuration: a dataset
    declares its paper windows (:attr:`Dataset.windows`), an experiment may
    override them, and the same store serves all of them.
    """

    length: int = 1
    stride: int = 1
    scope: str = "group"
    label: str = "last"
    start: str = "drop"

    def __post_init__(self) -> None:
        for name in ("length", "stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AanbenchError(f"sequence {name} must be an integer >= 1, not {v!r}")
        for name, allowed in (("scope", SCOPES), ("label", WINDOW_LABELS), ("start", START_POLICIES)):
            if getattr(self, name) not in allowed:
                raise AanbenchError(f"sequence {name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")

    @property
    def is_rows(self) -> bool:
        """One row per sample (what row models take)."""
        return self.length == 1 and self.stride == 1

    def to_dict(self) -> dict[str, Any]:
        return {"length": self.length, "stride": self.stride, "scope": self.scope, "label": self.label,
                "start": self.start}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SequenceSpec":
        unknown = set(d) - {"length", "stride", "scope", "label", "start"}
        if unknown:
            raise AanbenchError(f"sequence spec: unknown key(s) {sorted(unknown)}")
        return cls(**{k: (int(v) if k in ("length", "stride") else str(v)) for k, v in d.items()})


ROWS = SequenceSpec()


# --------------------------------------------------------------------------
# Datasets


class Dataset:
    """Contract of a dataset plugin.

    ``items(root)`` parses the user's copy (official layout) below ``root``
    and returns the items in a stable order.  ``label_range`` gives each
    target's nominal range.  ``protocol`` is the dataset's default evaluation
    protocol: ``"fixed"`` (train/test split carried by ``Item.split``) or
    ``"leave-one-group-out"`` (folds over ``Item.group``).

    ``windows`` declares the paper's windows for sequence models (a
    :class:`SequenceSpec`, ``None``: none declared); it is not part of
    :meth:`config`, so it never changes the store group.

    ``independent_excerpts``: each media file is an independent excerpt
    (EIMT16: excerpts of different films, one label each), so no window may
    span two files, at training or test; the engine refuses a window scope
    wider than ``"file"`` rather than cross (:mod:`aanbench.samples`).
    ``False``: the files' rows are consecutive parts of longer works
    (COGNIMUSE, the demo), and windows may follow the spec's scope.
    """

    name: str = ""
    version: str = "1"
    description: str = ""
    targets: tuple[str, ...] = TARGETS
    label_range: Mapping[str, tuple[float, float]] = {}
    protocol: str = "fixed"
    segmentation: str = "default"
    card: str = ""  # path of its card under datasets/, relative to the repo
    # Frames per item for video extractors that can resample (None: their default).
    video_frames: int | None = None
    # The paper's windows for sequence models (not stored configuration).
    windows: SequenceSpec | None = None
    # Each media file an independent excerpt: no window spans two files.
    independent_excerpts: bool = False

    def items(self, root: Path) -> list[Item]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able options that change the items or labels (e.g. which
        annotation stream). Kept with the store group; a run whose dataset
        config differs from the stored one is refused."""
        return {}

    # Optional methods a dataset may offer:
    #   configure(**options) -> Dataset   a configured copy (CLI --option KEY=VALUE);
    #                                     unknown keys raise AanbenchError
    #   check(root) -> aanbench.pluginkit.datacheck.DatasetCheck   (`aanbench datasets check`)
    #   generate(root, seed=..., clips=...) -> Path      for generated datasets (`aanbench demo`)


# --------------------------------------------------------------------------
# Models


class Model:
    """Contract of a model: one model predicts one target.

    Inputs arrive standardised with training statistics (the engine does
    that), as a list of arrays in the order of the experiment's feature set:
    ``float32 (n, dim_k)`` for a row model, ``float32 (n, T, dim_k)`` (T rows
    per window, oldest first) for a sequence model (see
    :attr:`ModelSpec.input`).  ``fit`` may use ``val`` (carved from the
    training data only) for early stopping; it never sees test data. A
    sequence model whose spec sets :attr:`ModelSpec.wants_row_labels` also
    gets ``train_y_rows`` / ``val_y_rows`` keywords (see there).
    """

    name: str = ""

    def fit(
        self,
        train_x: Sequence[np.ndarray],
        train_y: np.ndarray,
        val_x: Sequence[np.ndarray] | None,
        val_y: np.ndarray | None,
        *,
        seed: int,
    ) -> "FitReport":
        raise NotImplementedError

    def predict(self, x: Sequence[np.ndarray]) -> np.ndarray:
        """``float32 (n,)`` predictions."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """A ``torch.save``-able dict of tensors and plain values that
        :meth:`ModelSpec.restore` turns back into this model."""
        raise NotImplementedError


@runtime_checkable
class OnDevice(Protocol):
    """A model that trains and predicts on a torch device the engine chooses
    (``aanbench run --device cuda``): the runner sets ``device`` (``"cpu"``,
    ``"cuda:0"``, ...) on each model it builds before ``fit``. Models without
    the attribute run where they like (the CPU). The plugin kit's
    ``TorchModel`` implements it."""

    device: str


@dataclass
class FitReport:
    epochs: int = 0
    best_epoch: int = 0
    best_val_loss: float | None = None
    seconds: float = 0.0


MODEL_INPUTS = ("rows", "sequences")


@dataclass(frozen=True)
class ModelSpec:
    """A model plugin: ``build(params, dims)`` makes an untrained model for
    inputs of the given dimensions (``dims[k]`` = ``dim_k`` of feature array
    ``k``); ``restore(state)`` rebuilds one saved with :meth:`Model.state`.
    ``params`` lists every parameter the model accepts with its default; the
    registry refuses others. The runner's own settings (``val_fraction``,
    ``sequence_length``, ``sequence_stride``, ...; see
    :data:`aanbench.runner.RUNNER_SETTINGS`) are accepted for every model and
    never reach ``build``.

    ``input``: ``"rows"`` (one ``(n, dim_k)`` array per feature) or
    ``"sequences"`` (``(n, T, dim_k)`` windows built by the engine from the
    dataset's declared windows or the experiment's ``sequence_*`` settings).

    ``wants_row_labels`` (sequence models only): ``fit`` also receives the
    labels of each window's member rows, oldest first, as the keywords
    ``train_y_rows`` and ``val_y_rows`` (``float32 (n, T)``; NaN where a
    member row is unlabelled; with ``start = "pad"`` the padded positions
    carry the repeated first row's label), e.g. for teacher forcing. Only
    for the fitting and validation samples, both carved from training data;
    ``predict`` never receives labels.

    ``stackable``: the models ``build`` makes can be trained in a stack by
    the batched trainer (they have ``torch_fit``, see
    :class:`aanbench.batched.BatchableModel`; their networks may implement
    :class:`aanbench.batched.StackableNet` for its fast paths). The runner
    batches such a model's fits unless asked for sequential training; a
    model without the flag is always trained one fit at a time.

    ``needs_features``: ``False`` for a model that reads no features (the
    training-mean predictor): it runs on any store group with labels, every
    labelled sample is usable, and its ``fit`` / ``predict`` receive one
    ``(n, 0)`` array (no columns) so that they know ``n``.
    """

    name: str
    description: str
    build: Callable[[Mapping[str, Any], Sequence[int]], Model]
    restore: Callable[[Mapping[str, Any]], Model] | None = None
    version: str = "1"
    params: Mapping[str, Any] = field(default_factory=dict)  # accepted parameters and defaults
    param_specs: Mapping[str, Any] = field(default_factory=dict)  # key -> aanbench.paramspec.Param (type, range)
    input: str = "rows"
    wants_row_labels: bool = False
    stackable: bool = False
    needs_features: bool = True

    def __post_init__(self) -> None:
        if self.input not in MODEL_INPUTS:
            raise TypeError(f"model {self.name!r}: input must be one of {MODEL_INPUTS}, not {self.input!r}")
        if self.wants_row_labels and self.input != "sequences":
            raise TypeError(f"model {self.name!r}: wants_row_labels needs input='sequences'")
