"""The small typed objects that flow between aanbench's stages, and the
contracts that extractor, dataset and model plugins implement.

Data flows one way::

    Dataset.items() -> Item -> decode_media() -> Media -> Extractor.extract()
        -> rows in the FeatureStore -> Model.fit()/predict() -> results

Units: times in seconds, audio in Hz, frames as ``uint8`` RGB arrays of shape
``(T, H, W, 3)``, features as ``float32`` arrays of shape ``(n_items, dim)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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
# Datasets


class Dataset:
    """Contract of a dataset plugin.

    ``items(root)`` parses the user's copy (official layout) below ``root``
    and returns the items in a stable order.  ``label_range`` gives each
    target's nominal range.  ``protocol`` is the dataset's default evaluation
    protocol: ``"fixed"`` (train/test split carried by ``Item.split``) or
    ``"leave-one-group-out"`` (folds over ``Item.group``).
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
    that), as a list of ``float32 (n, dim_k)`` arrays in the order of the
    experiment's feature set.  ``fit`` may use ``val`` (carved from the
    training data only) for early stopping; it never sees test data.
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


@dataclass
class FitReport:
    epochs: int = 0
    best_epoch: int = 0
    best_val_loss: float | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    """A model plugin: ``build(params, dims)`` makes an untrained model for
    inputs of the given dimensions; ``restore(state)`` rebuilds one saved
    with :meth:`Model.state`. ``params`` lists every parameter the model
    accepts with its default; the registry refuses others."""

    name: str
    description: str
    build: Callable[[Mapping[str, Any], Sequence[int]], Model]
    restore: Callable[[Mapping[str, Any]], Model] | None = None
    version: str = "1"
    params: Mapping[str, Any] = field(default_factory=dict)  # accepted parameters and defaults
