"""Base class of the neural extractors (ResNet-50, I3D, FlowNetS, VGGish).

This module does not import torch: every CLI call and every worker loads all
plugins, and importing torch (and torchvision) costs seconds. Torch comes in
with :mod:`aanbench_plugins.extractors._torch_util` when an extractor loads its network.

:class:`NeuralExtractor` holds what the four share: frame sampling set at
construction, device choice, batching of network inputs across items.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from aanbench.contracts import AanbenchError, Extractor, ItemError, LoadContext, Media, MediaRequest, WeightFile

if TYPE_CHECKING:
    import torch
    from torch import nn


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices ``[0, size), [size, 2*size), ...`` covering ``range(n)``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class NeuralExtractor(Extractor):
    """Base of the four pretrained-network extractors.

    Construct with ``frames`` (T frames sampled uniformly over each item's
    window) or ``fps``; the defaults are the paper's 64 frames per EIMT16
    excerpt. ``with_sampling`` gives a copy for another dataset (all 125
    frames of a 5-s COGNIMUSE segment: ``frames=125``; temporal
    sub-segments: ``frames=16``).

    ``ctx.batch_size`` is the number of items whose inputs are pooled into
    one forward pass (frames for ResNet-50, clips for I3D, frame pairs for
    FlowNetS, log-mel patches for VGGish); a pass never exceeds
    ``max_inputs_per_pass`` inputs (``cpu`` / ``cuda`` values), so a batch
    of long items is split into several passes.
    """

    modality = "video"
    uses_gpu = True
    weight_file: WeightFile
    max_inputs_per_pass: Mapping[str, int] = {"cpu": 64, "cuda": 256}
    # Preprocessing recipes by name: each gives the decoder's ``short_side`` and
    # ``crop`` and whatever else the subclass reads from ``self.settings``. The
    # default recipe reproduces the AttendAffectNet authors' scripts
    # (``../shared/design/AUTHORS_PIPELINE.md``); another recipe (the original
    # network's own) is registered as ``<name>-<recipe>`` so both can sit in
    # one store, and provenance records which one made a row.
    recipes: Mapping[str, Mapping[str, Any]] = {"authors": {"short_side": 256, "crop": 224}}
    default_recipe = "authors"

    def __init__(self, frames: int = 64, fps: float | None = None, recipe: str | None = None) -> None:
        recipe = recipe or self.default_recipe
        if recipe not in self.recipes:
            raise ValueError(f"{self.name}: unknown recipe {recipe!r} (known: {', '.join(self.recipes)})")
        self.recipe = recipe
        self.settings: Mapping[str, Any] = dict(self.recipes[recipe])
        self.short_side: int | None = self.settings.get("short_side")
        self.crop: int | None = self.settings.get("crop")
        # an alternative recipe runs only when named (`--extractors i3d-kinetics`)
        self.by_default = recipe == self.default_recipe
        if not self.by_default:
            self.name = f"{type(self).name}-{recipe}"
        if fps is None and frames < self.min_frames():
            raise ValueError(f"{self.name}: needs at least {self.min_frames()} frames, got {frames}")
        self.frames = 0 if fps is not None else int(frames)
        self.fps = fps
        self.needs = self._request()
        self.weights = (self.weight_file,)
        self.net: nn.Module | None = None
        self._device: torch.device | None = None  # torch.device("cpu") until load() picks one
        self.batch_size = 8

    @property
    def device(self) -> "torch.device":
        """The ``torch.device`` the network runs on: the CPU until :meth:`load`
        picks ``ctx.device`` (kept unset until asked for, so that constructing
        an extractor does not import torch)."""
        if self._device is None:
            import torch

            self._device = torch.device("cpu")
        return self._device

    @device.setter
    def device(self, value: "torch.device") -> None:
        self._device = value

    # -------------------------------------------------------------- config
    def min_frames(self) -> int:
        return 1

    def _request(self) -> MediaRequest:
        return MediaRequest(frames=self.frames, fps=self.fps, short_side=self.short_side, crop=self.crop)

    def with_sampling(self, frames: int = 0, fps: float | None = None) -> "NeuralExtractor":
        """A copy that samples ``frames`` per item (or ``fps`` frames per
        second); it shares this one's weights and, once loaded, its network."""
        other = type(self)(frames=frames, fps=fps, recipe=self.recipe)
        other.weights = self.weights  # keeps a test's or user's override
        other.net, other._device, other.batch_size = self.net, self._device, self.batch_size
        return other

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["weights"] = {wf.filename: wf.sha256 for wf in self.weights}
        if getattr(self, "recipe", None):  # VGGish has a single recipe
            cfg["recipe"] = self.recipe
        cfg.update(self.preprocessing())
        return cfg

    def preprocessing(self) -> dict[str, Any]:
        """The constants that shape the numbers (kept in provenance)."""
        return {}

    # ---------------------------------------------------------------- load
    def load(self, ctx: LoadContext) -> None:
        """Build the network with random init, load the verified weight file
        strictly, move it to ``ctx.device``, evaluation mode."""
        from aanbench_plugins.extractors._torch_util import fill_batch_counters, load_strict, read_checkpoint, torch_device

        if self.weight_file.filename not in ctx.weights:
            raise AanbenchError(
                f"extractor {self.name!r}: no verified path for {self.weight_file.filename} "
                f"(resolve the weights with aanbench.weights.resolve before loading)"
            )
        path = Path(ctx.weights[self.weight_file.filename])
        self.device = torch_device(ctx.device)
        self.batch_size = max(1, int(ctx.batch_size))
        net = self.build()
        state = self.state_dict_from(read_checkpoint(path, f"{self.name} weights {path.name}"), net)
        if isinstance(state, Mapping):
            state = fill_batch_counters(state, net)
        load_strict(net, state, f"{self.name} weights {path.name}")
        self.net = net.to(self.device).eval()

    def build(self) -> nn.Module:
        """The full network (random init) whose state dict the file holds."""
        raise NotImplementedError

    def state_dict_from(self, obj: Any, net: nn.Module) -> Mapping[str, torch.Tensor]:
        """Pick the state dict out of what the file holds."""
        return obj

    def per_pass(self) -> int:
        return int(self.max_inputs_per_pass.get(self.device.type, self.max_inputs_per_pass["cpu"]))

    def _require_loaded(self) -> nn.Module:
        if self.net is None:
            raise RuntimeError(f"{self.name}: call load(ctx) before extract()")
        return self.net

    # -------------------------------------------------------------- extract
    def extract(self, batch: Sequence[Media]) -> np.ndarray:
        """``float32 (len(batch), dim)``: items grouped ``ctx.batch_size`` at
        a time, each group's network inputs pooled into shared passes."""
        import torch

        self._require_loaded()
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for sl in chunks(len(batch), self.batch_size):
                if sl.stop > sl.start:
                    out[sl] = self.extract_group(list(batch[sl]))
        return out

    def extract_group(self, group: Sequence[Media]) -> np.ndarray:
        raise NotImplementedError

    def frames_of(self, group: Sequence[Media]) -> list[np.ndarray]:
        """Each item's ``uint8 (T, H, W, 3)`` frames, with at least
        :meth:`min_frames`; :class:`ItemError` names the item otherwise."""
        clips = []
        for m in group:
            f = m.frames_for(self.needs)
            if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] < max(1, self.min_frames()):
                raise ItemError(f"{self.name}: item {m.item.id} needs at least {max(1, self.min_frames())} "
                                f"frame(s) of shape (T, H, W, 3) (got {f.shape})")
            clips.append(f)
        return clips
