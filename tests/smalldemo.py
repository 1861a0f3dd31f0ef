"""A small generated demo (real clips, real decoding, openSMILE, Zarr) with
the weight-free features the registry's demo experiments use; built once per
test run and shared by the tests that need a demo store
(tests/test_benchmark.py, test_demo.py, test_recurrent.py, test_run_ray.py, ...).
Built in this process (run_cli): no fresh process is needed for it.

``small_demo_run``: one `aanbench demo` on a copy of it (every demo
experiment, the boards, the curve), shared by tests/test_demo.py and
tests/test_demo_cli.py, which go on from copies of its work folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import run_cli, save_result, saved_result, shared_build

CLIPS = 36  # 3 movies of 12 clips (leave-one-movie-out by default; --protocol fixed: m01, m02 train, m03 test)


def _build(work: Path) -> None:
    """Make the data and extract the store into ``work``."""
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


def build(work: Path) -> dict:
    """Build a small demo in ``work`` (for scripts: tests/benchmarks/ray_fit_ratio.py)."""
    _build(work)
    return describe(work)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> dict:
    """Built once per test run, shared with the other xdist workers
    (:func:`conftest.shared_build`). Tests read it; one that changes the data
    or the store works on a copy."""
    return describe(shared_build(tmp_path_factory, "small-demo", _build))


def _build_run(folder: Path, demo: dict) -> None:
    work = folder / "w"
    shutil.copytree(demo["data"], work / "data")
    shutil.copytree(demo["store"], work / "store")
    r = run_cli("demo", "--workdir", work, "--leaderboard", folder / "leaderboards" / "demo.md", "--clips", CLIPS,
                "-j", "2")
    save_result(folder, r)


def copy_run(run: dict, dest: Path) -> dict:
    """A copy of the run's folder in ``dest`` (for a test that runs `demo` again in it)."""
    shutil.copytree(run["folder"], dest)
    return run | {"folder": dest, "work": dest / "w", "board": dest / "leaderboards" / "demo.md"}


@pytest.fixture(scope="session")
def small_demo_run(small_demo, tmp_path_factory) -> dict:
    """`aanbench demo --clips 36 -j 2` in a work folder holding a copy of the
    small demo's data and store (the clips `demo` makes: seed 0), run once per
    test run: ``{"folder", "work", "board", "returncode", "stdout", "stderr"}``.
    Read it; a test that runs `demo` again works on :func:`copy_run`."""
    folder = shared_build(tmp_path_factory, "small-demo-run", lambda f: _build_run(f, small_demo))
    return {"folder": folder, "work": folder / "w", "board": folder / "leaderboards" / "demo.md",
            **saved_result(folder)}
