"""A small generated demo (real clips, real decoding, openSMILE, Zarr) with
the weight-free features the registry's demo experiments use; built once per
test session and shared by the tests that need a demo store
(tests/test_benchmark.py, test_demo.py, test_recurrent.py, test_run_ray.py).
Built in this process (run_cli): no fresh process is needed for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli, shared_build

CLIPS = 36  # 3 movies of 12 clips (leave-one-movie-out by default; --protocol fixed: m01, m02 train, m03 test)


def _build(work: Path) -> None:
    r = run_cli("datasets", "make-demo", work / "data", "--clips", CLIPS)
    assert r.returncode == 0, r.stderr
    r = run_cli("extract", "demo", "--root", work / "data", "--store", work / "store",
                "-e", "affect,emobase2010,logmel")
    assert r.returncode == 0, r.stdout + r.stderr


def describe(work: Path) -> dict:
    store = work / "store"
    labels = (work / "data" / "labels.csv").read_text().splitlines()[1:]
    n_test = sum(1 for line in labels if line.split(",")[3] == "test")
    movies = sorted({line.split(",")[2] for line in labels})
    return {"work": work, "store": store, "data": work / "data", "n_test": n_test, "movies": movies}


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> dict:
    """Built once per test run, shared with the other xdist workers
    (:func:`conftest.shared_build`). Tests read it; one that changes the data
    or the store works on a copy."""
    return describe(shared_build(tmp_path_factory, "small-demo", _build))
