"""Damaged stored rows (a chunk whose CRC32C fails) and what the numbers
built on them say, on a real demo store (real clips, real decoding, Zarr)
damaged on disk by one flipped byte:

- ``train`` refuses such a store as ``run`` does (exit 2, naming the store,
  group, array, rows and file) unless ``--skip-damaged``, and the bundle
  then records the rows it left out;
- a results file made with ``--skip-damaged`` has its own configuration
  fingerprint (the rows' count and item-id hash are in it): a later
  ``benchmark`` never resumes a clean run from it nor the reverse, files
  written before the fingerprint covered the rows included, and the
  leaderboard marks such rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from conftest import run_cli

CLIPS = 36  # 3 movies of 12 clips: m01, m02 train, m03 test
CHUNK = 8  # rows per inner chunk: the damage hits rows 8-15 (m01_c009 .. m02_c004, training items)
BAD = slice(8, 16)
VIDEO_ONLY = ("--features", "weightfree-video")  # affect only: a cheap store
RIDGE = ("--experiments", "ridge", *VIDEO_ONLY)


def _affect_dir(store: Path) -> Path:
    [arr] = sorted((store / "demo" / "default" / "features").glob("affect@*"))
    return arr


def _inner_chunk_offset(arr: Path, shard: Path, k: int) -> int:
    """Byte offset in ``shard`` of its ``k``-th inner chunk, from the shard
    index at its end (one (offset, nbytes) uint64 pair per inner chunk, then
    the index's CRC32C), as Zarr's sharding codec lays it out."""
    meta = json.loads((arr / "data" / "zarr.json").read_text())
    shard_rows = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    [codec] = [c for c in meta["codecs"] if c["name"] == "sharding_indexed"]
    inner_rows = codec["configuration"]["chunk_shape"][0]
    assert inner_rows == CHUNK and codec["configuration"]["index_location"] == "end"
    n = shard_rows // inner_rows
    raw = shard.read_bytes()
    index = struct.unpack(f"<{2 * n}Q", raw[-(16 * n + 4):-4])
    return index[2 * k]


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("damaged-rows")
    data, clean = base / "data", base / "clean"
    r = run_cli("datasets", "make-demo", data, "--clips", CLIPS)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("extract", "demo", "--root", data, "--store", clean, "-e", "affect", "--chunk-rows", CHUNK)
    assert r.returncode == 0, r.stdout + r.stderr
    damaged = base / "damaged"
    shutil.copytree(clean, damaged)
    arr = _affect_dir(damaged)
    [shard] = sorted(p for p in (arr / "data" / "c").rglob("*") if p.is_file())
    _flip(shard, _inner_chunk_offset(arr, shard, 1) + 9)  # a value byte of rows 8-15
    ids = [line.split(",")[0] for line in (data / "labels.csv").read_text().splitlines()[1:]]
    return {"data": data, "clean": clean, "damaged": damaged, "array": arr.name, "shard": shard,
            "bad_ids": ids[BAD]}


def _said(r) -> str:
    return " ".join((r.stdout + r.stderr).split())


def test_store_verify_sees_the_damage_the_tests_rely_on(stores) -> None:
    r = run_cli("store", "verify", stores["clean"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("store", "verify", stores["damaged"], "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["damaged_rows"] == BAD.stop - BAD.start, doc


def test_train_refuses_damaged_rows_naming_store_feature_rows_and_file(stores, tmp_path: Path) -> None:
    model = tmp_path / "ridge.pt"
    r = run_cli("train", "ridge", "demo", "--store", stores["damaged"], "--out", model, *VIDEO_ONLY)
    assert r.returncode == 2, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert "damaged rows (checksum mismatch)" in said, said
    assert f"store {stores['damaged']}" in said and "group demo/default" in said, said
    assert f"{stores['array']}: 8 row(s)" in said and stores["bad_ids"][0] in said, said
    assert stores["shard"].name in said and "Not trained on" in said and "--skip-damaged" in said, said
    assert "recorded in the model bundle" in said, said
    assert not model.exists()  # nothing written


def test_train_with_skip_damaged_leaves_the_rows_out_and_the_bundle_records_them(stores, tmp_path: Path) -> None:
    from aanbench.modelfile import load_any

    clean_model, skip_model = tmp_path / "clean.pt", tmp_path / "skip.pt"
    r = run_cli("train", "ridge", "demo", "--store", stores["clean"], "--out", clean_model, *VIDEO_ONLY, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    clean = json.loads(r.stdout)
    assert clean["skipped_damaged"] == [] and "damaged" not in r.stderr
    r = run_cli("train", "ridge", "demo", "--store", stores["damaged"], "--out", skip_model, *VIDEO_ONLY, "--json",
                "--skip-damaged")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"warning: 8 damaged row(s) of {stores['array']} left out (--skip-damaged)" in _said(r)
    got = json.loads(r.stdout)
    [rec] = got["skipped_damaged"]
    want_hash = hashlib.sha256("\n".join(sorted(stores["bad_ids"])).encode()).hexdigest()[:16]
    assert rec["array"] == stores["array"] and rec["rows"] == 8 and rec["ids_sha256"] == want_hash
    assert rec["items"] == stores["bad_ids"] and any(stores["shard"].name in f for f in rec["files"])
    # the bundle on disk says so; the clean one says nothing of the kind
    assert load_any(skip_model).dataset["skipped_damaged"] == got["skipped_damaged"]
    assert "skipped_damaged" not in load_any(clean_model).dataset
    # and the rows were left out of training: 8 fewer training samples (fit + validation) per target
    for t, fit in got["fits"].items():
        was = clean["fits"][t]
        assert fit["n_fit"] + fit["n_val"] == was["n_fit"] + was["n_val"] - 8, (t, fit, was)


def _results(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(out.rglob("seed*.json"))}


def test_skipped_rows_have_their_own_fingerprint_and_benchmark_never_mixes_them(stores, tmp_path: Path) -> None:
    out = tmp_path / "results"
    board = tmp_path / "board.md"
    r = run_cli("benchmark", "demo", "--store", stores["clean"], "--out", out, *RIDGE, "--leaderboard", board)
    assert r.returncode == 0, r.stdout + r.stderr
    [(clean_name, clean)] = _results(out).items()
    assert "skipped_damaged" not in clean and "†" not in board.read_text()

    # the damaged store, rows skipped: not resumed from the clean file; written beside it
    r = run_cli("benchmark", "demo", "--store", stores["damaged"], "--out", out, *RIDGE, "--leaderboard", board,
                "--skip-damaged")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed" not in r.stdout.replace("0 resumed", ""), r.stdout
    docs = _results(out)
    assert len(docs) == 2 and docs[clean_name] == clean  # the clean file untouched
    [(skip_name, skip)] = [(n, d) for n, d in docs.items() if n != clean_name]
    assert skip["config_fingerprint"] != clean["config_fingerprint"]
    assert skip_name.endswith(f"-{skip['config_fingerprint']}.json")
    [rec] = skip["skipped_damaged"]
    assert rec["array"] == stores["array"] and rec["rows"] == 8 and rec["ids_sha256"]
    # leave-one-movie-out: every item is tested once, but the damaged items are in neither fits nor predictions
    assert {p["item_id"] for p in skip["predictions"]} == {p["item_id"] for p in clean["predictions"]} - set(
        stores["bad_ids"])
    md = board.read_text()
    assert "ridge †" in md and f"{stores['array']}: 8 row(s)" in md and "--skip-damaged" in md, md

    # each resumes only its own kind
    r = run_cli("benchmark", "demo", "--store", stores["clean"], "--out", out, *RIDGE, "--leaderboard", board)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split()).replace(" ", "")
    assert "resumedridge" in said and clean_name in said and skip_name not in said, r.stdout
    assert "†" not in board.read_text()
    r = run_cli("benchmark", "demo", "--store", stores["damaged"], "--out", out, *RIDGE, "--leaderboard", board,
                "--skip-damaged")
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split()).replace(" ", "")
    assert "resumedridge" in said and skip_name in said, r.stdout
    assert len(_results(out)) == 2  # nothing new written

    # one board of both: two rows, the skipped one marked (markdown, CSV, JSON)
    for fmt in ("md", "csv", "json"):
        lb = tmp_path / f"both.{fmt}"
        r = run_cli("leaderboard", "demo", "--results", out, "--out", lb, "--format", fmt)
        assert r.returncode == 0, r.stdout + r.stderr
        text = lb.read_text()
        if fmt == "md":
            rows = [line for line in text.splitlines() if line.startswith("| ") and "ridge" in line]
            assert sum("ridge †" in line for line in rows) == sum("ridge †" not in line for line in rows) > 0, rows
            assert re.search(r"damaged_rows_left_out=affect@\d+: 8 row\(s\)", text), text
        elif fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            assert sorted(row["damaged_rows_left_out"] for row in rows if row["target"] == "valence") == [
                "", f"{stores['array']}:8"], rows
        else:
            tables = json.loads(text)["sections"][0]["tables"]
            marks = sorted(len(row["skipped_damaged"]) for row in tables[0]["rows"])
            assert marks == [0, 1], tables[0]["rows"]


def test_a_skip_damaged_file_from_before_the_fingerprint_covered_it_is_not_resumed(stores, tmp_path: Path) -> None:
    """A results file written with --skip-damaged by the previous aanbench:
    the rows recorded (without their id hash) but a clean run's fingerprint."""
    out = tmp_path / "results"
    r = run_cli("benchmark", "demo", "--store", stores["damaged"], "--out", out, *RIDGE, "--leaderboard",
                tmp_path / "b.md", "--skip-damaged")
    assert r.returncode == 0, r.stdout + r.stderr
    [path] = list(out.rglob("seed*.json"))
    old = json.loads(path.read_text())
    clean_out = tmp_path / "clean"
    r = run_cli("run", "ridge", "demo", "--store", stores["clean"], "--out", clean_out, *VIDEO_ONLY)
    assert r.returncode == 0, r.stdout + r.stderr
    [clean_path] = list(clean_out.rglob("seed*.json"))
    clean_fp = json.loads(clean_path.read_text())["config_fingerprint"]
    for rec in old["skipped_damaged"]:
        del rec["ids_sha256"]
    old["config_fingerprint"] = clean_fp  # what the previous version wrote
    path.write_text(json.dumps(old, indent=1))

    r = run_cli("benchmark", "demo", "--store", stores["clean"], "--out", out, *RIDGE, "--leaderboard",
                tmp_path / "b.md")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed ridge" not in " ".join(r.stdout.split()), r.stdout
    docs = _results(out)
    assert len(docs) == 2 and json.loads(path.read_text()) == old  # the old file kept, the clean run beside it
    [new] = [d for n, d in docs.items() if n != path.name]
    assert new["config_fingerprint"] == clean_fp and "skipped_damaged" not in new
    # the board does not pool the old file with the clean run: two rows, one marked
    r = run_cli("leaderboard", "demo", "--results", out, "--out", tmp_path / "lb.md")
    rows = [line for line in (tmp_path / "lb.md").read_text().splitlines()
            if line.startswith("| ") and "ridge" in line]
    assert r.returncode == 0 and any("ridge †" in line for line in rows) and any(
        "ridge †" not in line for line in rows), rows


def test_fingerprint_covers_the_skipped_rows_and_leaves_clean_runs_as_they_were() -> None:
    from aanbench.runner import config_fingerprint, recorded_fingerprint

    doc = {"model": "ridge", "model_version": "1", "dataset_config": {}, "items_sha256": "abc", "feature_set": "v",
           "protocol": "fixed", "samples": {"n": 36}, "params": {}, "settings": {},
           "features": [{"key": "affect@2"}]}
    clean = config_fingerprint(doc)
    assert config_fingerprint({**doc, "skipped_damaged": []}) == clean  # no rows left out: as before
    one = {**doc, "skipped_damaged": [{"array": "affect@2", "rows": 8, "ids_sha256": "1" * 16, "items": ["a"]}]}
    other_ids = {**doc, "skipped_damaged": [{"array": "affect@2", "rows": 8, "ids_sha256": "2" * 16}]}
    more = {**doc, "skipped_damaged": [{"array": "affect@2", "rows": 9, "ids_sha256": "1" * 16}]}
    fps = {clean, config_fingerprint(one), config_fingerprint(other_ids), config_fingerprint(more)}
    assert len(fps) == 4
    # the first 20 ids and the files are for people; the fingerprint takes array, count and id hash
    assert config_fingerprint({**one, "skipped_damaged": [{**one["skipped_damaged"][0], "items": ["b"],
                                                           "files": ["x"]}]}) == config_fingerprint(one)
    # a file that records skipped rows under a clean fingerprint stands for what it holds
    assert recorded_fingerprint({**one, "config_fingerprint": clean}) == config_fingerprint(one)
    assert recorded_fingerprint({**doc, "config_fingerprint": "kept"}) == "kept"


def test_mean_reads_no_features_and_is_not_refused_for_damaged_feature_rows(stores, tmp_path: Path) -> None:
    """`mean` reads no features (ModelSpec.needs_features is False), so rows
    damaged in a feature array do not concern it: it runs on every item and
    records no skipped rows, while a model that reads the array is refused."""
    out = tmp_path / "mean.json"
    r = run_cli("run", "mean", "demo", "--store", stores["damaged"], "--out", out, *VIDEO_ONLY)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert not doc.get("skipped_damaged"), doc.get("skipped_damaged")
    assert all(t["metrics"]["n"] == CLIPS for t in doc["targets"].values()), doc["targets"]
    r = run_cli("run", "ridge", "demo", "--store", stores["damaged"], "--out", tmp_path / "ridge.json", *VIDEO_ONLY)
    assert r.returncode == 2 and "damaged rows" in r.stderr, r.stdout + r.stderr
