"""Torch plumbing of the neural extractors (ResNet-50, I3D, FlowNetS, VGGish).

Imported only once a neural extractor loads or runs (importing torch costs
seconds); the extractor classes themselves, with their base
:class:`~aanbench_plugins.extractors._neural.NeuralExtractor`, import without torch.

- :func:`read_checkpoint` reads a weight file with ``torch.load(...,
  weights_only=True)``: torch's restricted unpickler, which rebuilds tensors,
  ordered dicts and plain values and refuses every other class. It reads
  the current zip format and the legacy (pre-1.6) format alike, so no
  official file here needs the ordinary unpickler.
- :func:`load_strict` loads a state dict with ``strict=True`` and turns a
  mismatch into a readable :class:`AanbenchError`.
- :func:`run_in_passes`, :func:`frames_tensor`, :func:`mean_by_item`: batching
  of network inputs across items.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from aanbench.contracts import AanbenchError
from aanbench_plugins.extractors._neural import chunks


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
