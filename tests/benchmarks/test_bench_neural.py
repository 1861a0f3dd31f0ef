"""Frames per second of the four neural extractors, batched against
unbatched, on the CPU (and on a CUDA GPU when there is one).

Networks are random (same cost as the official weights), saved to a file
and loaded through ``resolve`` and ``Extractor.load`` like real weights.
Media are already decoded (224 x 224 frames; 16 kHz audio).

- batched: one ``extract`` call with all items (``ctx.batch_size`` = number
  of items), their inputs pooled into shared forward passes of up to the
  extractor's ``max_inputs_per_pass`` for the device (on the CPU: 8 frames,
  1 clip, 8 frame pairs, 16 patches; the sizes that ran fastest on 2 cores);
- unbatched: one item per call and one network input per forward pass
  (frame, clip, frame pair or log-mel patch).

Run with ``pytest tests/benchmarks --benchmark-enable``; each result's
``extra_info`` holds ``frames_per_call`` (video frames, or seconds of audio
for VGGish), so frames per second = ``frames_per_call / mean``. Without
``--benchmark-enable`` each case runs once as a plain test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aanbench.contracts import Item, LoadContext, Media, WeightFile
from aanbench.weights import resolve, sha256_of
from aanbench_plugins.extractors.flownets import FlowNetSExtractor
from aanbench_plugins.extractors.i3d import I3DExtractor
from aanbench_plugins.extractors.resnet50 import ResNet50Extractor
from aanbench_plugins.extractors.vggish import VGGishExtractor

ITEMS = 2
# frames per item (I3D: one 16-frame clip, the temporal sub-segment size); VGGish: seconds of audio
SIZES = {"resnet50": 8, "i3d": 16, "flownets": 8, "vggish": 5}
# when run as a plain test (benchmarks disabled): just prove each case works
QUICK = {"resnet50": 2, "i3d": 8, "flownets": 2, "vggish": 1}
CLASSES = {"resnet50": ResNet50Extractor, "i3d": I3DExtractor, "flownets": FlowNetSExtractor, "vggish": VGGishExtractor}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """A random network of each kind saved as a state dict, with its SHA-256."""
    folder = tmp_path_factory.mktemp("bench-weights")
    torch.manual_seed(0)
    out = {}
    for name, cls in CLASSES.items():
        wf = cls.weight_file
        ex = cls() if name == "vggish" else cls(frames=2)
        torch.save(ex.build().state_dict(), folder / wf.filename)
        out[name] = WeightFile(wf.filename, sha256_of(folder / wf.filename), "benchmark (random network)")
    return folder, out


def _media(name: str, ex, i: int, n: int) -> Media:
    rng = np.random.default_rng(i)
    if name == "vggish":
        audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n * 16000) / 16000) + rng.normal(0, 0.05, n * 16000))
        return Media(item=Item(f"b{i}", None), duration=float(n), audio={16000: audio.astype(np.float32)})
    frames = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    return Media(item=Item(f"b{i}", None), duration=n / 25.0, video={ex.needs.video_key(): frames})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["batched", "unbatched"])
@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.slow
def test_bench_neural(benchmark, weight_files, name: str, mode: str, device: str) -> None:
    folder, files = weight_files
    cls = CLASSES[name]
    n = (QUICK if benchmark.disabled else SIZES)[name]
    ex = cls() if name == "vggish" else cls(frames=n)
    ex.weights = (files[name],)
    ex.load(LoadContext(device=device, weights=resolve(ex, folder), batch_size=ITEMS if mode == "batched" else 1))
    if mode == "unbatched":
        ex.max_inputs_per_pass = {"cpu": 1, "cuda": 1}
    media = [_media(name, ex, i, n) for i in range(ITEMS)]

    def run() -> np.ndarray:
        if mode == "batched":
            return ex.extract(media)
        return np.concatenate([ex.extract([m]) for m in media])

    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "items_per_call": ITEMS,
        "frames_per_call": ITEMS * n,
        "unit": "seconds of audio" if name == "vggish" else "frames",
        "inputs_per_pass": ex.per_pass(),
    })
    out = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert out.shape == (ITEMS, ex.dim) and np.isfinite(out).all()
