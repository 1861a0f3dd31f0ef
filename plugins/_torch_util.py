"""Shared plumbing of the neural extractors (ResNet-50, I3D, FlowNetS, VGGish).

- :func:`read_checkpoint` reads a weight file with ``torch.load(...,
  weights_only=True)``: torch's restricted unpickler, which rebuilds tensors,
  ordered dicts and plain values and refuses every other class. It reads
  the current zip format and the legacy (pre-1.6) format alike, so no
  official file here needs the ordinary unpickler.
- :func:`load_strict` loads a state dict with ``strict=True`` and turns a
  mismatch into a readable :class:`AanbenchError`.
- :class:`NeuralExtractor` holds what the four share: frame sampling set at
  construction, device choice, batching of network inputs across items.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from aanbench.contracts import AanbenchError, Extractor, LoadContext, Media, MediaRequest, WeightFile


def read_checkpoint(path: Path, what: str) -> Any:
    """Read a ``torch.save`` file with torch's restricted unpickler onto the CPU.

    ``what`` names the file in errors. A file that holds anything but
    tensors, containers and plain values is refused, never executed.
    """
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise AanbenchError(
            f"{what}: cannot read {path} as tensors only ({type(exc).__name__}: {first}); "
            f"it is not the expected weight file, or it is damaged"
        ) from None


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state, strict=True)``; a key or shape
    mismatch becomes an :class:`AanbenchError` that lists the first keys."""
    if not isinstance(state, Mapping):
        raise AanbenchError(f"{what}: expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        short = "; ".join(line.strip() for line in lines[:4])[:600]
        raise AanbenchError(f"{what}: the weights do not fit the network ({short})") from None


def fill_batch_counters(state: Mapping[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Copy of ``state`` with a zero ``num_batches_tracked`` for each
    BatchNorm of ``net`` that the file lacks. Files saved before PyTorch
    0.4.1 have none (``rgb_imagenet.pt``; torchvision's
    ``resnet50-0676ba61.pth`` also holds 267 entries, without them). The
    counters only count training steps; nothing else is added, so every
    other key must still match strictly."""
    out = dict(state)
    for name, mod in net.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
            key = f"{name}.num_batches_tracked"
            if key not in out:
                out[key] = torch.tensor(0, dtype=torch.long)
    return out


def torch_device(name: str) -> torch.device:
    """``torch.device`` for ``name`` (``cpu``, ``cuda``, ``cuda:1``, ``auto``);
    ``AanbenchError`` when CUDA is asked for and absent."""
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AanbenchError(f"device {name!r} asked for, but torch sees no CUDA GPU here (use --device cpu)")
    return dev


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices ``[0, size), [size, 2*size), ...`` covering ``range(n)``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def run_in_passes(
    n: int,
    make: Callable[[slice, torch.device], torch.Tensor],
    fn: Callable[[torch.Tensor], torch.Tensor],
    per_pass: int,
    device: torch.device,
) -> torch.Tensor:
    """Run ``fn`` over ``n`` network inputs in passes of at most
    ``per_pass``: ``make(slice, device)`` builds a pass's inputs on
    ``device`` (so only one pass of float inputs exists at a time, and
    uint8 pixels cross to a GPU rather than floats); results are
    concatenated on the CPU as float32, ``(n, ...)``."""
    outs = [fn(make(sl, device)).float().cpu() for sl in chunks(n, per_pass)]
    return torch.cat(outs) if outs else torch.zeros(0)


def frames_tensor(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """Items' ``uint8 (T_i, H, W, 3)`` frames as one ``uint8 (sum T_i, H, W, 3)`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(frames)))


def mean_by_item(per_input: torch.Tensor, counts: Sequence[int]) -> np.ndarray:
    """Average consecutive rows of ``per_input`` (``(sum(counts), dim)``)
    into one row per item: ``float32 (len(counts), dim)``."""
    rows = []
    start = 0
    for c in counts:
        rows.append(per_input[start : start + c].double().mean(dim=0))
        start += c
    return torch.stack(rows).float().numpy()


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
    short_side: int | None = 256
    crop: int | None = 224
    max_inputs_per_pass: Mapping[str, int] = {"cpu": 64, "cuda": 256}

    def __init__(self, frames: int = 64, fps: float | None = None) -> None:
        if fps is None and frames < self.min_frames():
            raise ValueError(f"{self.name}: needs at least {self.min_frames()} frames, got {frames}")
        self.frames = 0 if fps is not None else int(frames)
        self.fps = fps
        self.needs = self._request()
        self.weights = (self.weight_file,)
        self.net: nn.Module | None = None
        self.device = torch.device("cpu")
        self.batch_size = 8

    # -------------------------------------------------------------- config
    def min_frames(self) -> int:
        return 1

    def _request(self) -> MediaRequest:
        return MediaRequest(frames=self.frames, fps=self.fps, short_side=self.short_side, crop=self.crop)

    def with_sampling(self, frames: int = 0, fps: float | None = None) -> "NeuralExtractor":
        """A copy that samples ``frames`` per item (or ``fps`` frames per
        second); it shares this one's weights and, once loaded, its network."""
        other = type(self)(frames=frames, fps=fps)
        other.weights = self.weights  # keeps a test's or user's override
        other.net, other.device, other.batch_size = self.net, self.device, self.batch_size
        return other

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["weights"] = {wf.filename: wf.sha256 for wf in self.weights}
        cfg.update(self.preprocessing())
        return cfg

    def preprocessing(self) -> dict[str, Any]:
        """The constants that shape the numbers (kept in provenance)."""
        return {}

    # ---------------------------------------------------------------- load
    def load(self, ctx: LoadContext) -> None:
        """Build the network with random init, load the verified weight file
        strictly, move it to ``ctx.device``, evaluation mode."""
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
        self._require_loaded()
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for sl in chunks(len(batch), self.batch_size):
                if sl.stop > sl.start:
                    out[sl] = self.extract_group(list(batch[sl]))
        return out

    def extract_group(self, group: Sequence[Media]) -> np.ndarray:
        raise NotImplementedError
