"""Items per second of the weight-free extractors on 4-second clips
(extraction only; media already decoded: 32 frames of 64x114 at 8 fps,
64,000 audio samples at 16 kHz).

Run with ``pytest tests/benchmarks --benchmark-enable``; pytest-benchmark's
``OPS`` column is items per second (one item per call). Without
``--benchmark-enable`` each runs once as a plain test.
"""

from __future__ import annotations

import numpy as np
import pytest

from aanbench.contracts import Item, Media
from aanbench_plugins.extractors.affect import AffectDescriptors
from aanbench_plugins.extractors.emobase2010 import Emobase2010
from aanbench_plugins.extractors.logmel import LogmelStats

SR = 16000
SECONDS = 4.0


def _clip_media() -> Media:
    rng = np.random.default_rng(0)
    t_frames = int(SECONDS * 8)
    frames = rng.integers(0, 60, (t_frames, 64, 114, 3), dtype=np.uint8)
    for i in range(t_frames):  # a moving coloured square and a cut half-way
        x0 = (4 * i) % 90
        frames[i, 20:44, x0 : x0 + 24] = (220, 120, 40) if i < t_frames // 2 else (40, 90, 220)
    t = np.arange(int(SECONDS * SR)) / SR
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + rng.normal(0, 0.05, t.size)).astype(np.float32)
    key = AffectDescriptors.needs.video_key()
    return Media(item=Item("bench", None), duration=SECONDS, video={key: frames}, audio={SR: audio})


@pytest.fixture(scope="module")
def media() -> Media:
    return _clip_media()


@pytest.mark.parametrize("cls", [Emobase2010, AffectDescriptors, LogmelStats], ids=lambda c: c.name)
def test_bench_extractor_alone(benchmark, media: Media, cls) -> None:
    ex = cls()
    ex.load(None)
    benchmark.extra_info["clip_seconds"] = SECONDS
    out = benchmark(ex.extract, [media])
    assert out.shape == (1, ex.dim) and np.isfinite(out).all()


def test_bench_all_three_together(benchmark, media: Media) -> None:
    exs = [Emobase2010(), AffectDescriptors(), LogmelStats()]
    for e in exs:
        e.load(None)

    def run() -> list[np.ndarray]:
        return [e.extract([media]) for e in exs]

    outs = benchmark(run)
    assert [o.shape[1] for o in outs] == [1582, 23, 134]
