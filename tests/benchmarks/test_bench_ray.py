"""1 against 2 Ray workers on CPU-bound extraction (weight-free extractors).

``pytest tests/benchmarks --benchmark-enable`` times the 2-worker run and
stores both runs' measurements, and the ratios, in ``extra_info``. Without
``--benchmark-enable`` it runs once as a plain test, on 4 clips rather than
CLIPS (the code is checked, nothing is timed); either way one Ray instance
is shared by both runs so that only the work is compared. The fuller
measurement, end to end with Ray start-up, is
``tests/benchmarks/ray_scaling.py`` (see docs/ray.md for the numbers).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

sys.path.insert(0, str(Path(__file__).parent))
from ray_scaling import make_dataset, run_ray, same_values  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CLIPS = 12
CHUNK_ROWS = 2
EXTRACTORS = ["affect", "logmel", "emobase2010"]


@pytest.fixture(scope="module")
def session():
    assert not ray.is_initialized()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 << 20)
    yield
    ray.shutdown()


def test_bench_ray_one_vs_two_workers(benchmark, session, tmp_path: Path) -> None:
    clips = 4 if benchmark.disabled else CLIPS
    root = make_dataset(tmp_path / "demo", clips)
    one = run_ray(root, tmp_path / "ray1", EXTRACTORS, CHUNK_ROWS, workers=1)
    two = benchmark.pedantic(run_ray, args=(root, tmp_path / "ray2", EXTRACTORS, CHUNK_ROWS, 2),
                             rounds=1, iterations=1)
    for w, s in ((1, one), (2, two)):
        assert s["units"] == clips // CHUNK_ROWS and s["unit_errors"] == 0 and s["item_failures"] == 0, (w, s)
        assert s["pools"]["cpu"]["actors"] == w
    assert same_values(tmp_path / "ray1", tmp_path / "ray2")
    benchmark.extra_info.update(
        ratio_work_phase=one["work_s"] / two["work_s"],
        ratio_run=one["run_s"] / two["run_s"],
        one_worker={k: v for k, v in one.items() if isinstance(v, (int, float))},
        two_workers={k: v for k, v in two.items() if isinstance(v, (int, float))},
    )
