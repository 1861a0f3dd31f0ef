"""Rows whose extraction failed are left out of a run, and the run's
configuration fingerprint says which (``failed_rows``: per array, count and
item-id hash), on a real demo store (real clips, real decoding, Zarr): after
the user mends the clip and runs `extract --retry-failed`, `benchmark` trains
again on every row instead of resuming the run that was scored without it,
and a store whose failed rows are unchanged is still resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

CLIPS = 12  # 3 movies of 4 clips (leave-one-movie-out)
RIDGE = ("--experiments", "ridge", "--features", "weightfree-video")  # affect only: a cheap store


def _bench(store: Path, out: Path):
    """Run the benchmark; its stdout and the results document it wrote or read
    (a run of another configuration goes beside the first, ``seed0-<fingerprint>.json``)."""
    r = run_cli("benchmark", "demo", "--store", store, "--out", out, *RIDGE, "--leaderboard", out / "lb.md")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    newest = max((out / "demo" / "ridge").glob("seed0*.json"), key=lambda p: p.stat().st_mtime_ns)
    return r, json.loads(newest.read_text())


@pytest.mark.slow  # about 8 s: a demo, three extractions, three benchmarks
def test_a_mended_clip_is_trained_on_and_not_resumed_from_the_run_without_it(tmp_path: Path) -> None:
    data, store, out = tmp_path / "data", tmp_path / "store", tmp_path / "res"
    r = run_cli("datasets", "make-demo", data, "--clips", CLIPS)
    assert r.returncode == 0, r.stderr
    clip = sorted((data / "clips").glob("m01_*.mp4"))[1]
    good = clip.read_bytes()
    clip.write_bytes(good[:300])  # a truncated download
    r = run_cli("extract", "demo", "--root", data, "--store", store, "-e", "affect")
    assert r.returncode != 2 and clip.stem in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]

    first, doc = _bench(store, out)
    [rec] = doc["failed_rows"]
    assert rec["rows"] == 1 and rec["items"] == [clip.stem] and rec["array"].startswith("affect@")
    scored = {p["item_id"] for p in doc["predictions"]}
    assert clip.stem not in scored and len(scored) == CLIPS - 1

    again, same = _bench(store, out)  # nothing changed: read back, not trained again
    assert ", 1 resumed" in again.stdout, again.stdout[-2000:]
    assert same["config_fingerprint"] == doc["config_fingerprint"]

    clip.write_bytes(good)  # mended
    r = run_cli("extract", "demo", "--root", data, "--store", store, "-e", "affect", "--retry-failed")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    mended, new = _bench(store, out)
    assert "1 run, 0 resumed" in mended.stdout, mended.stdout[-2000:]
    assert "failed_rows" not in new and new["config_fingerprint"] != doc["config_fingerprint"]
    assert {p["item_id"] for p in new["predictions"]} == scored | {clip.stem}
    assert "|  12 |" in (out / "lb.md").read_text()  # the board scores the run on every clip
