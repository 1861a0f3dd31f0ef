"""The full demo (`aanbench demo`, 120 clips, every demo experiment), run
once per test run in a fresh process and shared by the two tests that need
it: tests/test_demo.py (the issue's bar) and tests/test_reproduce_demo.py
(the committed board, number for number). It is the suite's longest single
piece of work (the demo's own time, about 3-4 minutes on two cores); both
tests carry ``xdist_group("full-demo")`` so one worker runs them one after
the other while the other workers go on."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_aanbench, save_result, saved_result, shared_build


def _build(folder: Path) -> None:
    r = run_aanbench("demo", "--workdir", folder / "w", "--leaderboard", folder / "leaderboards" / "demo.md",
                     timeout=3600)
    save_result(folder, r)


@pytest.fixture(scope="session")
def full_demo(tmp_path_factory) -> dict:
    """``{"work", "board", "returncode", "stdout", "stderr"}`` of the one full demo run."""
    folder = shared_build(tmp_path_factory, "full-demo", _build)
    return {"work": folder / "w", "board": folder / "leaderboards" / "demo.md", **saved_result(folder)}
