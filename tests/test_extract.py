"""Extraction into the Zarr store through the CLI: bad inputs recorded while
the batch completes, exit codes, resume after a kill, provenance guard,
writer lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import AANBENCH, make_clip, run_cli, store_json
from aanbench.store import FeatureStore
from aanbench_plugins.extractors.emobase2010 import Emobase2010


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Good clips plus a corrupt file, a zero-byte file and a video without audio."""
    d = tmp_path / "media"
    for i in range(5):
        make_clip(d / f"good{i}.mp4", level=40 * i + 20)
    make_clip(d / "silent_film.mp4", audio=False)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    (d / "empty.mp4").write_bytes(b"")
    return d


def test_bad_items_are_recorded_and_the_batch_completes(messy_folder: Path, tmp_path: Path, cli) -> None:
    store = tmp_path / "store"
    r = cli("extract", "files", "--root", messy_folder, "--store", store, "--extractors", "affect,logmel",
            "--chunk-rows", "3")
    assert r.exit_code == 1, r.output  # finished, but some items failed
    assert "item failures" in r.output
    info = store_json(store)
    (group,) = info["groups"]
    arrays = {a["extractor"]: a for a in group["arrays"]}
    assert group["n_items"] == 8
    for name in ("affect", "logmel"):
        assert arrays[name]["items_done"] == 8
    aff = {f["item_id"]: f["reason"] for f in arrays["affect"]["failures"]}
    mel = {f["item_id"]: f["reason"] for f in arrays["logmel"]["failures"]}
    assert set(aff) == {"corrupt.mp4", "empty.mp4"}
    assert "0 bytes" in aff["empty.mp4"]
    assert aff["corrupt.mp4"].startswith("corrupt MP4: no valid box at byte 24: "), aff["corrupt.mp4"]
    assert aff["corrupt.mp4"].count("corrupt.mp4") == 1 and "Errno" not in aff["corrupt.mp4"]
    # no audio stream fails the audio extractor only; its video features are kept
    assert set(mel) == {"corrupt.mp4", "empty.mp4", "silent_film.mp4"}
    assert "no audio stream" in mel["silent_film.mp4"]
    g = FeatureStore(store, mode="r").open_group("files")
    ids = g.item_ids()
    ok = g.feature("affect@2").ok()
    assert ok[ids.index("silent_film.mp4")]
    data = g.feature("affect@2").read()
    assert np.isfinite(data[ok]).all() and np.isnan(data[~ok]).all()


def test_missing_file_is_recorded(tmp_path: Path, cli) -> None:
    from aanbench.contracts import Item
    from aanbench.backends.local import LocalBackend
    from aanbench.extraction import plan_extraction, run_plan
    from aanbench.plugin_manager import get_plugins

    make_clip(tmp_path / "a.mp4")
    items = [Item("a", tmp_path / "a.mp4"), Item("gone", tmp_path / "gone.mp4")]
    ex = get_plugins().extractor("affect")
    plan = plan_extraction(FeatureStore(tmp_path / "s"), "adhoc", items, [ex], {}, chunk_rows=2, weights_dir=str(tmp_path))
    rep = run_plan(plan, LocalBackend())
    assert [(f.item_id, f.reason.split(":")[0]) for f in rep.failures] == [("gone", "file not found")]
    assert rep.items_ok == {"affect": 1}


def test_store_info_json_and_table(messy_folder: Path, tmp_path: Path, cli) -> None:
    store = tmp_path / "store"
    cli("extract", "files", "--root", messy_folder, "--store", store, "--extractors", "affect")
    r = cli("store", "info", store)
    assert r.exit_code == 0
    assert "affect@2" in r.output and "corrupt.mp4" in r.output
    r = cli("store", "info", store, "--json")
    doc = json.loads(r.output)
    assert doc["groups"][0]["arrays"][0]["shape"] == [8, 23]


def test_usage_errors_exit_2_without_traceback(tmp_path: Path, cli) -> None:
    r = cli("extract", "files", "--root", tmp_path, "--store", tmp_path / "s", "--extractors", "nope")
    assert r.exit_code == 2
    assert "unknown extractor 'nope'" in r.output and "Traceback" not in r.output
    r = cli("extract", "no-such-dataset", "--root", tmp_path, "--store", tmp_path / "s")
    assert r.exit_code == 2 and "unknown dataset" in r.output
    r = cli("store", "info", tmp_path / "nothing-here")
    assert r.exit_code == 2 and "not an aanbench feature store" in r.output


def test_rerun_skips_done_chunks_and_provenance_guard(messy_folder: Path, tmp_path: Path, cli) -> None:
    from aanbench.cpus import usable_cpus

    store = tmp_path / "store"
    r = cli("extract", "files", "--root", messy_folder, "--store", store, "--extractors", "affect", "--chunk-rows", "3")
    assert "backend local (1 worker)" in r.output
    # one worker of several CPUs on several chunks: the output says how to use them
    assert ("`-j N` extracts N at once" in r.output) == (usable_cpus() > 1), r.output
    chunk_file = store / "files" / "default" / "features" / "affect@2" / "data" / "c" / "0" / "0"
    before = chunk_file.stat().st_mtime_ns
    r = cli("extract", "files", "--root", messy_folder, "--store", store, "--extractors", "affect")
    assert "0 chunks to compute" in r.output
    assert chunk_file.stat().st_mtime_ns == before
    # an array made with another configuration is never written into
    arr = zarr.open_group(str(store / "files" / "default" / "features" / "affect@2"), mode="r+")
    prov = dict(arr.attrs["provenance"])
    prov["config"] = {**prov["config"], "fps": 99}
    arr.attrs["provenance"] = prov
    snapshot = FeatureStore(store, mode="r").open_group("files").feature("affect@2").read()
    r = cli("extract", "files", "--root", messy_folder, "--store", store, "--extractors", "affect", "--retry-failed")
    assert r.exit_code == 2
    assert "different config" in r.output and "left untouched" in r.output
    assert "(config fps 99 -> " in " ".join(r.output.split())  # what changed, not a dump of both configs
    after = FeatureStore(store, mode="r").open_group("files").feature("affect@2").read()
    np.testing.assert_array_equal(np.nan_to_num(snapshot, nan=-1), np.nan_to_num(after, nan=-1))
    # a complete array has nothing to write, so nothing to mix: adding another extractor to the
    # store (after an upgrade changed what made the first) works, and the first is read as it is
    r = cli("extract", "files", "--root", messy_folder, "--store", store, "--extractors", "affect,logmel")
    assert r.exit_code in (0, 1), r.output  # 1: the messy folder's bad files fail, as before
    assert "affect@2 is complete and was made by other versions (config fps 99 -> " in " ".join(r.output.split())
    g = FeatureStore(store, mode="r").open_group("files")
    assert g.resolve_feature("logmel").done().all() and g.feature("affect@2").provenance["config"]["fps"] == 99
    np.testing.assert_array_equal(np.nan_to_num(g.feature("affect@2").read(), nan=-1), np.nan_to_num(after, nan=-1))


def test_second_writer_is_refused(messy_folder: Path, tmp_path: Path, cli) -> None:
    store = tmp_path / "store"
    cli("extract", "files", "--root", messy_folder, "--store", store, "--extractors", "affect")
    group = FeatureStore(store).open_group("files")
    with group.writer_lock():  # as if another extraction were running
        r = run_cli("extract", "files", "--root", messy_folder, "--store", store, "--extractors", "affect",
                    "--retry-failed")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "another run is writing files/default" in r.stderr
    assert "Traceback" not in r.stderr


def _done_chunks(store: Path, key: str) -> int:
    # a run writes each finished chunk's done marker into the array's staging
    # group (one file per chunk) and packs them when it ends
    d = store / "files" / "default" / "features" / key / "staging" / "done"
    return len([p for p in d.iterdir() if p.name.startswith("c.")]) if d.is_dir() else 0


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing_and_matches_uninterrupted(tmp_path: Path) -> None:
    media = tmp_path / "media"
    for i in range(8):
        make_clip(media / f"clip{i:02d}.mp4", level=8 * i + 10, tone_hz=200 + 30 * i, seconds=2.0)
    args = ["extract", "files", "--root", str(media), "--extractors", "emobase2010,affect", "--chunk-rows", "1"]
    emo = f"emobase2010@{Emobase2010.version}"

    # uninterrupted reference run
    ref = tmp_path / "ref"
    r = run_cli(*args, "--store", ref)
    assert r.returncode == 0, r.stderr

    # killed run
    store = tmp_path / "store"
    # a fresh process: it is killed (SIGKILL) part-way
    proc = subprocess.Popen([*AANBENCH, *args, "--store", str(store)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while _done_chunks(store, emo) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = _done_chunks(store, emo)
    assert 0 < done_at_kill < 8, f"kill landed at {done_at_kill} of 8 chunks"
    killed = FeatureStore(store, mode="r").open_group("files")
    done_both = killed.feature(emo).done() & killed.feature("affect@2").done()
    assert done_both.sum() >= 1
    finished = np.flatnonzero(done_both)
    staged = {k: killed.feature(k).read()[killed.chunk_slice(int(finished[0]))] for k in (emo, "affect@2")}

    r = run_cli(*args, "--store", store)
    assert r.returncode == 0, r.stderr
    # chunks finished before the kill are not computed again
    assert f"{8 - len(finished)} chunks to compute" in r.stdout, r.stdout
    assert not (store / "files" / "default" / "features" / emo / "staging").exists()
    after = FeatureStore(store, mode="r").open_group("files")
    for k, v in staged.items():
        np.testing.assert_array_equal(after.feature(k).read()[after.chunk_slice(int(finished[0]))], v)
    a = FeatureStore(ref, mode="r").open_group("files")
    b = FeatureStore(store, mode="r").open_group("files")
    assert a.item_ids() == b.item_ids()
    for key in (emo, "affect@2"):
        np.testing.assert_array_equal(a.feature(key).read(), b.feature(key).read())
        assert a.feature(key).ok().all() and b.feature(key).ok().all()
        assert b.feature(key).done().all()


def test_parallel_local_workers_give_the_same_store(tmp_path: Path, cli) -> None:
    media = tmp_path / "media"
    for i in range(6):
        make_clip(media / f"c{i}.mp4", level=30 * i)
    one, two = tmp_path / "one", tmp_path / "two"
    cli("extract", "files", "--root", media, "--store", one, "--extractors", "affect,logmel", "--chunk-rows", "2")
    r = run_cli("extract", "files", "--root", media, "--store", two, "--extractors", "affect,logmel",
                "--chunk-rows", "2", "--workers", "2")
    assert r.returncode == 0, r.stderr
    for key in ("affect@2", "logmel@1"):
        np.testing.assert_array_equal(FeatureStore(one, mode="r").open_group("files").feature(key).read(),
                                      FeatureStore(two, mode="r").open_group("files").feature(key).read())


def test_default_chunks_give_every_worker_work_and_a_store_keeps_its_chunking(tmp_path: Path) -> None:
    """Without --chunk-rows a chunk holds 32 items, or fewer so that each
    worker gets one (5 films and 2 workers: chunks of 3, not one chunk that
    one worker extracts while the other waits); a group keeps the chunking
    it was created with, whatever a later run's workers; --chunk-rows wins."""
    from aanbench.extraction import default_chunk_rows

    assert [default_chunk_rows(n, w) for n, w in [(5, 2), (5, 1), (100, 2), (64, 2), (65, 4), (0, 3), (7, None)]] \
        == [3, 32, 32, 32, 17, 1, 32]
    media = tmp_path / "media"
    for i in range(5):
        make_clip(media / f"c{i}.mp4", level=40 * i, seconds=1.0)

    def extract(store: Path, *extra: str):
        r = run_cli("extract", "files", "--root", media, "--store", store, "-e", "logmel", *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        return " ".join(r.stdout.split()), FeatureStore(store, mode="r").open_group("files")

    out, g = extract(tmp_path / "two", "-j", "2")
    assert "files: 5 items, 2 chunks of 3;" in out and (g.chunk_rows, g.n_chunks) == (3, 2)
    out, g = extract(tmp_path / "two", "-j", "1")  # resumed: the chunking is the group's
    assert "2 chunks of 3; extractors logmel; 0 chunks to compute" in out and g.chunk_rows == 3
    out, g = extract(tmp_path / "one", "-j", "1")
    assert (g.chunk_rows, g.n_chunks) == (32, 1)
    out, g = extract(tmp_path / "asked", "-j", "2", "--chunk-rows", "1")
    assert (g.chunk_rows, g.n_chunks) == (1, 5)
    for store in ("one", "asked"):
        np.testing.assert_array_equal(FeatureStore(tmp_path / store, mode="r").open_group("files").feature("logmel@1").read(),
                                      FeatureStore(tmp_path / "two", mode="r").open_group("files").feature("logmel@1").read())


def test_missing_weights_stop_before_any_work(tmp_path: Path, cli) -> None:
    media = tmp_path / "media"
    make_clip(media / "a.mp4")
    empty = tmp_path / "weights"
    empty.mkdir()
    store = tmp_path / "store"
    r = cli("extract", "files", "--root", media, "--store", store, "--extractors", "i3d", "--weights-dir", empty)
    assert r.exit_code == 2
    out = " ".join(r.output.split())  # undo line wrapping
    assert "rgb_imagenet.pt" in out and "is missing" in out
    assert "2609088c2e8c868187c9921c50bc225329a9057ed75e76120e0b4a397a2c7538" in r.output.replace("\n", "")
    assert str(empty / "rgb_imagenet.pt") in out and "aanbench weights" in out
    assert "Traceback" not in r.output
    assert not store.exists()


def test_dataset_frames_per_item_reach_video_extractors(tmp_path: Path) -> None:
    from aanbench.contracts import Item
    from aanbench.extraction import plan_extraction
    from aanbench.plugin_manager import get_plugins

    make_clip(tmp_path / "a.mp4")
    ex = get_plugins().extractor("resnet50")
    plan = plan_extraction(FeatureStore(tmp_path / "s"), "d", [Item("a", tmp_path / "a.mp4")], [ex], {},
                           chunk_rows=1, weights_dir=str(tmp_path), video_frames=125)
    assert plan.job.sampling == {"resnet50": {"frames": 125}}
    prov = plan.group.feature("resnet50@" + ex.version).provenance
    assert prov["config"]["needs"]["frames"] == 125
    assert get_plugins().dataset("cognimuse").video_frames == 125
    assert get_plugins().dataset("eimt16").video_frames == 64
    assert get_plugins().dataset("eimt16-temporal").video_frames == 16
