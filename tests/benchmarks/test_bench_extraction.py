"""Extraction throughput (items per second, all weight-free extractors in one
pass against each alone) and Feature AttendAffectNet training time.

Run: ``.venv/bin/python -m pytest tests/benchmarks/test_bench_extraction.py --benchmark-enable``
(as plain tests, with benchmarks disabled, each case runs once, on 2 clips
rather than N_CLIPS: the code is checked, nothing is timed).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import make_clip  # noqa: E402

from aanbench.contracts import Item  # noqa: E402
from aanbench.backends.local import LocalBackend
from aanbench.extraction import plan_extraction, run_plan  # noqa: E402
from aanbench.plugin_manager import get_plugins  # noqa: E402
from aanbench.store import FeatureStore  # noqa: E402

N_CLIPS = 8


@pytest.fixture(scope="module")
def clips(tmp_path_factory, request) -> list[Item]:
    d = tmp_path_factory.mktemp("bench-clips")
    timed = not request.config.getoption("benchmark_disable") or request.config.getoption("benchmark_enable")
    return [Item(f"c{i}", make_clip(d / f"c{i}.mp4", level=20 * i + 20, seconds=4.0, fps=25, size=(120, 160),
                                    tone_hz=220 + 40 * i)) for i in range(N_CLIPS if timed else 2)]


@pytest.mark.parametrize("names", [("affect",), ("logmel",), ("emobase2010",), ("affect", "logmel", "emobase2010")],
                         ids=lambda n: "+".join(n))
@pytest.mark.slow
def test_extraction_items_per_second(benchmark, clips, tmp_path, names) -> None:
    plugins = get_plugins()
    exs = [plugins.extractor(n) for n in names]
    counter = itertools.count()

    def setup():
        store = FeatureStore(tmp_path / f"s{next(counter)}")
        plan = plan_extraction(store, "bench", clips, exs, {}, chunk_rows=4, weights_dir=str(tmp_path))
        return (plan,), {}

    def run(plan):
        return run_plan(plan, LocalBackend(1))

    rep = benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    assert all(rep.items_ok[n] == len(clips) for n in names)
    if benchmark.stats:
        benchmark.extra_info["items_per_second"] = len(clips) / benchmark.stats["mean"]


def test_feature_aan_training_time(benchmark) -> None:
    spec = get_plugins().model("feature-aan")
    rng = np.random.default_rng(0)
    dims = (23, 1582, 134)
    xs = [rng.normal(size=(96, d)).astype(np.float32) for d in dims]
    y = np.tanh(xs[0][:, 0] + 0.3 * rng.normal(size=96)).astype(np.float32)
    params = {"max_epochs": 50, "patience": 1000, "batch_size": 30, "lr": 5e-4}

    def fit():
        m = spec.build(params, dims)
        return m.fit([x[:84] for x in xs], y[:84], [x[84:] for x in xs], y[84:], seed=0)

    report = benchmark.pedantic(fit, rounds=2, iterations=1)
    assert report.epochs == 50
    if benchmark.stats:
        benchmark.extra_info["seconds_per_epoch"] = benchmark.stats["mean"] / 50
