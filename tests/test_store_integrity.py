"""Stored bytes are checked on every read: a CRC32C per chunk (``data``'s
inner chunks, ``ok``/``error``/``done``, staged chunks), shard files against
their size and index, metadata against the group. Damage marks exactly the
affected rows invalid with "checksum mismatch in FILE", is not "done" (a
rerun recomputes it), and ``verify_store`` reports it. Real Zarr files,
damaged byte by byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_clip
from aanbench.contracts import AanbenchError, Item
from aanbench.store import FeatureStore, _Damage, verify_store

N, CHUNK, DIM = 50, 4, 6  # 13 work chunks, the last one short


def _items(n: int = N) -> list[Item]:
    return [Item(id=f"it{i:03d}", path=None, labels={"valence": float(i)}, group=f"g{i % 3}", split="train")
            for i in range(n)]


def _store(tmp_path: Path, values: np.ndarray, pack: bool = True, chunks=None):
    g = FeatureStore(tmp_path / "store").ensure_group("ds", _items(len(values)), chunk_rows=CHUNK,
                                                      targets=["valence"])
    arr = g.create_feature("f@1", values.shape[1], {"extractor": "f", "version": "1", "dim": values.shape[1]})
    chunks = range(g.n_chunks) if chunks is None else chunks

    def write() -> None:
        for c in chunks:
            rows = g.chunk_slice(c)
            arr.write_chunk(c, rows, values[rows], np.ones(rows.stop - rows.start, bool),
                            [""] * (rows.stop - rows.start))

    if pack:
        with g.writer_lock():
            write()
    else:
        write()
    return g, arr


def _values(n: int = N, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def test_new_arrays_carry_a_checksum_per_chunk(tmp_path: Path) -> None:
    g, arr = _store(tmp_path, _values())
    meta = json.loads((arr.dir / "data" / "zarr.json").read_text())
    assert meta["codecs"][0]["configuration"]["codecs"][-1] == {"name": "crc32c"}
    for name in ("ok", "error", "done"):
        assert json.loads((arr.dir / name / "zarr.json").read_text())["codecs"][-1] == {"name": "crc32c"}
    assert arr.checksummed
    rep = verify_store(tmp_path / "store")
    assert rep.ok and rep.arrays == 1 and rep.rows == N and not rep.unchecked, rep.lines()


def test_one_flipped_byte_marks_exactly_its_chunk_invalid_on_every_read_path(tmp_path: Path) -> None:
    values = _values()
    g, arr = _store(tmp_path, values)
    shard = arr.dir / "data" / "c" / "0" / "0"
    chunk_bytes = CHUNK * DIM * 4 + 4
    _flip(shard, 5 * chunk_bytes + 3)  # inside inner chunk 5: rows 20-23
    arr = FeatureStore(tmp_path / "store", mode="r").open_group("ds").feature("f@1")
    got = arr.read()
    bad = slice(20, 24)
    assert np.isnan(got[bad]).all()
    keep = np.ones(N, bool)
    keep[bad] = False
    np.testing.assert_array_equal(got[keep], values[keep])
    ok, err = arr.ok(), arr.errors()
    assert ok.tolist() == keep.tolist()
    assert set(err[bad]) == {f"checksum mismatch in {shard}"} and not any(err[keep])
    assert np.flatnonzero(~arr.done()).tolist() == [5]  # the next run recomputes that chunk
    # the Zarr path (used where the fast reader does not apply) finds the same rows
    dmg = _Damage(N)
    zarr_read = arr._chunkwise(arr.data, "data", dmg, np.nan, 1)
    assert np.flatnonzero(dmg.rows).tolist() == list(range(20, 24))
    np.testing.assert_array_equal(np.asarray(zarr_read)[keep], values[keep])
    # read_features (the runner's concurrent reader) too
    (m,) = FeatureStore(tmp_path / "store", mode="r").open_group("ds").read_features(["f@1"])
    assert np.isnan(m[bad]).all()
    rep = verify_store(tmp_path / "store")
    assert not rep.ok and rep.damaged_rows == 4
    assert any(f"checksum mismatch in {shard}: 4 row(s) (20-23)" in p for p in rep.problems), rep.problems


@pytest.mark.parametrize("size", ["empty", "truncated", "grown"])
def test_a_shard_file_of_the_wrong_size_marks_its_rows_invalid(tmp_path: Path, size: str) -> None:
    values = _values()
    g, arr = _store(tmp_path, values)
    shard = arr.dir / "data" / "c" / "0" / "0"
    raw = shard.read_bytes()
    shard.write_bytes({"empty": b"", "truncated": raw[:-7], "grown": raw + b"\0" * 8}[size])
    arr = FeatureStore(tmp_path / "store", mode="r").open_group("ds").feature("f@1")
    assert np.isnan(arr.read()).all()
    assert not arr.ok().any() and set(arr.errors()) == {f"checksum mismatch in {shard}"}
    assert not arr.done().any()


def test_damaged_flags_are_not_trusted(tmp_path: Path) -> None:
    """``ok`` and ``done`` are checked too: a damaged ``ok`` makes every row
    invalid with the file named, a damaged ``done`` makes every chunk undone."""
    g, arr = _store(tmp_path, _values())
    okf = arr.dir / "ok" / "c" / "0"
    _flip(okf, 2)
    assert not arr.ok().any() and set(arr.errors()) == {f"checksum mismatch in {okf}"}
    doner = arr.dir / "done" / "c" / "0"
    _flip(doner, 1)
    assert not arr.done().any()


def test_metadata_that_disagrees_with_the_data_is_refused_by_name(tmp_path: Path) -> None:
    g, arr = _store(tmp_path, _values())
    meta_path = arr.dir / "data" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [N + 10, DIM]  # "a shape grown in zarr.json"
    meta_path.write_text(json.dumps(meta))
    arr = FeatureStore(tmp_path / "store", mode="r").open_group("ds").feature("f@1")
    for call in (arr.read, arr.ok, arr.errors, arr.done):
        with pytest.raises(AanbenchError, match=r"features/f@1/data: metadata says shape \(60, 6\), but the group "
                                                r"holds 50 items"):
            call()
    rep = verify_store(tmp_path / "store")
    assert not rep.ok and "metadata says shape (60, 6)" in rep.problems[0]
    # a label array of the wrong length, and a damaged label file
    lab = tmp_path / "store" / "ds" / "default" / "labels" / "valence"
    _flip(lab / "c" / "0", 3)
    g = FeatureStore(tmp_path / "store", mode="r").open_group("ds")
    with pytest.raises(AanbenchError, match=f"checksum mismatch in {lab / 'c' / '0'}"):
        g.labels("valence")


def test_staged_chunks_are_checked_and_a_damaged_one_is_packed_as_not_done(tmp_path: Path) -> None:
    values = _values()
    g, arr = _store(tmp_path, values, pack=False)  # a run killed before packing
    staged = arr.dir / "staging" / "data" / "c.2.0"
    _flip(staged, 10)
    arr = g.feature("f@1")
    assert np.isnan(arr.read()[8:12]).all() and not arr.ok()[8:12].any()
    assert not arr.done()[2] and arr.done().sum() == g.n_chunks - 1
    with g.writer_lock():  # the next run's end packs the rest; the damaged chunk stays to do
        pass
    arr = g.feature("f@1")
    assert not (arr.dir / "staging").exists()
    assert arr.errors()[8:12].tolist() == [f"checksum mismatch in {staged}"] * 4
    assert np.flatnonzero(~arr.done()).tolist() == [2] and arr.ok().sum() == N - 4
    # rewriting the chunk (what the rerun does) makes the array whole again
    arr = g.create_feature("f@1", DIM, {"extractor": "f", "version": "1", "dim": DIM})
    with g.writer_lock():
        arr.write_chunk(2, g.chunk_slice(2), values[8:12], np.ones(4, bool), [""] * 4)
    arr = g.feature("f@1")
    np.testing.assert_array_equal(arr.read(), values)
    assert arr.ok().all() and arr.done().all() and not any(arr.errors())
    assert verify_store(tmp_path / "store").ok


def test_repacking_a_shard_keeps_its_damage_visible(tmp_path: Path) -> None:
    """A shard rewritten to take new chunks must not turn a damaged old chunk
    into valid NaN: it is recorded as damaged (not ok, not done)."""
    values = _values()
    g, arr = _store(tmp_path, values, chunks=range(0, 10))
    shard = arr.dir / "data" / "c" / "0" / "0"
    _flip(shard, 1 * (CHUNK * DIM * 4 + 4) + 7)  # chunk 1
    arr = g.create_feature("f@1", DIM, {"extractor": "f", "version": "1", "dim": DIM})
    with g.writer_lock():
        for c in range(10, g.n_chunks):
            rows = g.chunk_slice(c)
            arr.write_chunk(c, rows, values[rows], np.ones(rows.stop - rows.start, bool), [""] * (rows.stop - rows.start))
    arr = g.feature("f@1")
    assert np.flatnonzero(~arr.done()).tolist() == [1]
    assert arr.errors()[4:8].tolist() == [f"checksum mismatch in {shard}"] * 4
    assert arr.ok().sum() == N - 4


def test_rerunning_extract_recomputes_damaged_chunks(tmp_path: Path) -> None:
    from aanbench.backends.local import LocalBackend
    from aanbench.extraction import plan_extraction, run_plan
    from aanbench.plugin_manager import get_plugins

    media = tmp_path / "media"
    for i in range(6):
        make_clip(media / f"c{i}.mp4", level=30 * i + 10)
    plugins = get_plugins()
    items = plugins.dataset("files").items(media)
    ex = plugins.extractor("affect")
    store = FeatureStore(tmp_path / "store")
    run_plan(plan_extraction(store, "files", items, [ex], {}, chunk_rows=2, weights_dir=str(tmp_path)),
             LocalBackend())
    arr = store.open_group("files").resolve_feature("affect")
    clean = arr.read()
    shard = arr.dir / "data" / "c" / "0" / "0"
    _flip(shard, (2 * arr.dim * 4 + 4) + 9)  # chunk 1: items 2-3
    assert not arr.ok()[2:4].any()
    plan = plan_extraction(FeatureStore(tmp_path / "store"), "files", items, [ex], {}, chunk_rows=2,
                           weights_dir=str(tmp_path))
    assert [u.chunk for u in plan.units] == [1]
    run_plan(plan, LocalBackend())
    arr = FeatureStore(tmp_path / "store", mode="r").open_group("files").resolve_feature("affect")
    np.testing.assert_array_equal(arr.read(), clean)
    assert arr.ok().all() and arr.done().all()
    assert verify_store(tmp_path / "store").ok


def test_arrays_written_before_checksums_stay_readable(tmp_path: Path) -> None:
    """A packed array without per-chunk CRC32C (older stores) reads as before
    (the fast reader, the shard index still checked); verify lists it."""
    values = _values()
    g = FeatureStore(tmp_path / "store").ensure_group("ds", _items(), chunk_rows=CHUNK, targets=["valence"])
    fg = g.group.create_group("features/old@1")
    fg.create_array("data", shape=(N, DIM), chunks=(CHUNK, DIM), shards=(52, DIM), dtype="float32",
                    fill_value=float("nan"), compressors=None, dimension_names=["item", "feature"])
    fg.create_array("ok", shape=(N,), chunks=(N,), dtype="bool", fill_value=False)
    fg.create_array("error", shape=(N,), chunks=(N,), dtype=str, fill_value="")
    fg.create_array("done", shape=(g.n_chunks,), chunks=(g.n_chunks,), dtype="bool", fill_value=False)
    fg.attrs.update({"provenance": {"extractor": "old", "version": "1", "dim": DIM}, "layout": "packed-shards/1",
                     "chunk_rows": CHUNK})
    fg["data"][:] = values
    fg["ok"][:] = True
    fg["done"][:] = True
    arr = g.feature("old@1")
    assert not arr.checksummed and arr._packed_geometry() is not None
    np.testing.assert_array_equal(arr.read(), values)
    assert arr.ok().all() and arr.done().all()
    rep = verify_store(tmp_path / "store")
    assert rep.ok and rep.unchecked == ["ds/default/features/old@1"]
    assert "without checksums" in "\n".join(rep.lines())


def test_a_chunk_of_valid_rows_gone_from_its_shard_is_damage_an_all_failed_one_is_not(tmp_path: Path) -> None:
    """Zarr leaves out a chunk that is all fill (NaN: every row failed); a
    chunk whose rows say ok must be there."""
    values = _values()
    values[8:12] = np.nan  # chunk 2: all rows failed
    g = FeatureStore(tmp_path / "store").ensure_group("ds", _items(), chunk_rows=CHUNK, targets=["valence"])
    arr = g.create_feature("f@1", DIM, {"extractor": "f", "version": "1", "dim": DIM})
    with g.writer_lock():
        for c in range(g.n_chunks):
            rows = g.chunk_slice(c)
            ok = np.isfinite(values[rows]).all(axis=1)
            arr.write_chunk(c, rows, values[rows], ok, ["" if o else "no audio" for o in ok])
    arr = g.feature("f@1")
    assert arr.done().all() and arr.errors()[8:12].tolist() == ["no audio"] * 4 and verify_store(tmp_path / "store").ok
    # drop chunk 5 from the shard index (as if its bytes were lost): its valid rows are damage
    shard = arr.dir / "data" / "c" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    n_inner = 52 // CHUNK
    index = np.frombuffer(bytes(raw[-(n_inner * 16 + 4):-4]), dtype="<u8").reshape(n_inner, 2).copy()
    index[5] = [2**64 - 1, 2**64 - 1]
    body = index.tobytes()
    from aanbench.store import _crc32c

    raw[-(n_inner * 16 + 4):] = body + _crc32c(body).to_bytes(4, "little")
    shard.write_bytes(bytes(raw))
    arr = g.feature("f@1")
    assert np.flatnonzero(~arr.ok()).tolist() == [8, 9, 10, 11, 20, 21, 22, 23]
    assert arr.errors()[20] == f"checksum mismatch in {shard} (chunk missing)"
    assert np.flatnonzero(~arr.done()).tolist() == [5]
