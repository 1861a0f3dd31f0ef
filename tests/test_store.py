"""The feature store's packed layout: staged work chunks, packing at the end
of a run, fast whole-array reads that agree with Zarr's, stores written in
the older one-file-per-chunk layout, and the writer lock's file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import make_clip, run_aanbench
from aanbench.contracts import AanbenchError, Item
from aanbench.extraction import plan_extraction
from aanbench.plugin_manager import get_plugins
from aanbench.store import LAYOUT_PACKED, FeatureStore, shard_rows_for

N, CHUNK = 50, 4  # 13 work chunks, the last one short


def _items(n: int = N) -> list[Item]:
    return [Item(id=f"it{i:03d}", path=None, labels={"valence": float(i)}, group=f"g{i % 3}", split="train")
            for i in range(n)]


def _prov(name: str, dim: int) -> dict:
    return {"extractor": name, "version": "1", "dim": dim}


def _group(tmp_path: Path, n: int = N):
    return FeatureStore(tmp_path / "store").ensure_group("ds", _items(n), chunk_rows=CHUNK, targets=["valence"])


def _zarr_data(store: Path, key: str) -> np.ndarray:
    """The packed data as plain zarr reads it (no aanbench code)."""
    return zarr.open_group(str(store / "ds" / "default" / "features" / key), mode="r")["data"][:]


def _write(arr, g, chunks, values) -> None:
    for c in chunks:
        rows = g.chunk_slice(c)
        arr.write_chunk(c, rows, values[rows], np.ones(rows.stop - rows.start, bool), [""] * (rows.stop - rows.start))


def test_staged_chunks_are_read_then_packed_into_shards(tmp_path: Path) -> None:
    g = _group(tmp_path)
    rng = np.random.default_rng(1)
    values = rng.standard_normal((N, 7)).astype(np.float32)
    arr = g.create_feature("f@1", 7, _prov("f", 7))
    assert arr.layout == LAYOUT_PACKED
    with g.writer_lock():
        _write(arr, g, [0, 1, 5, 12], values)
        arr.mark_chunk_failed(g.chunk_slice(3), "decoder crashed")
        # before packing: the staged chunks are what a reader (and resume) sees
        assert np.flatnonzero(arr.done()).tolist() == [0, 1, 5, 12]
        assert np.isnan(_zarr_data(tmp_path / "store", "f@1")).all()  # nothing packed yet
        got = arr.read()
        for c in (0, 1, 5, 12):
            np.testing.assert_array_equal(got[g.chunk_slice(c)], values[g.chunk_slice(c)])
        assert np.isnan(got[g.chunk_slice(2)]).all()
        assert list(arr.errors()[g.chunk_slice(3)]) == ["decoder crashed"] * CHUNK
    # the lock's exit packed them
    assert not (arr.dir / "staging").exists()
    packed = _zarr_data(tmp_path / "store", "f@1")
    np.testing.assert_array_equal(packed, arr.read(), strict=True)
    for c in range(g.n_chunks):
        rows = g.chunk_slice(c)
        if c in (0, 1, 5, 12):
            np.testing.assert_array_equal(packed[rows], values[rows])
        else:
            assert np.isnan(packed[rows]).all()
    assert np.flatnonzero(arr.done()).tolist() == [0, 1, 5, 12]
    ok = arr.ok()
    assert ok[g.chunk_slice(0)].all() and not ok[g.chunk_slice(3)].any() and not ok[g.chunk_slice(2)].any()
    assert list(arr.errors()[g.chunk_slice(3)]) == ["decoder crashed"] * CHUNK
    # a second run adds chunks into the same shards, keeping the first run's
    with g.writer_lock():
        _write(arr, g, [2, 3, 4, 6, 7, 8, 9, 10, 11], values)
    np.testing.assert_array_equal(arr.read(), values)
    np.testing.assert_array_equal(_zarr_data(tmp_path / "store", "f@1"), values)
    assert arr.done().all() and arr.ok().all() and all(e == "" for e in arr.errors())


def test_fast_read_agrees_with_zarr_across_several_shards(tmp_path: Path, monkeypatch) -> None:
    import aanbench.store as st

    monkeypatch.setattr(st, "SHARD_BYTES", 3 * CHUNK * 16 * 4)  # 3 chunks per shard: 5 shard files
    g = _group(tmp_path)
    arr = g.create_feature("f@1", 16, _prov("f", 16))
    values = np.random.default_rng(2).standard_normal((N, 16)).astype(np.float32)
    values[g.chunk_slice(4)] = np.nan  # an all-NaN chunk is not stored by zarr: must read as NaN
    with g.writer_lock():
        _write(arr, g, [c for c in range(g.n_chunks) if c != 7], values)
    assert arr.data.shards == (12, 16) and len(list((arr.dir / "data" / "c").iterdir())) == 5
    fast = arr._read_packed(threads=3)
    assert fast is not None  # the layout is the one the fast path knows
    expect = values.copy()
    expect[g.chunk_slice(7)] = np.nan
    np.testing.assert_array_equal(fast, expect)
    np.testing.assert_array_equal(fast, _zarr_data(tmp_path / "store", "f@1"))
    # a corrupted shard index marks exactly that shard's rows damaged (NaN, not ok, the file named)
    shard = arr.dir / "data" / "c" / "1" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    got = arr.read()
    assert np.isnan(got[12:24]).all()
    np.testing.assert_array_equal(np.delete(got, range(12, 24), 0), np.delete(expect, range(12, 24), 0))
    ok, err = arr.ok(), arr.errors()
    assert not ok[12:24].any() and all(e == f"checksum mismatch in {shard}" for e in err[12:24])
    assert ok[:12].all() and not any(err[:12])


def test_read_features_and_import_rows(tmp_path: Path) -> None:
    g = _group(tmp_path)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((N, 5)).astype(np.float32)
    b = rng.standard_normal((N, 9)).astype(np.float32)
    b[7, 2] = np.inf
    g.import_rows("a@1", a, _prov("a", 5))
    g.import_rows("b@2", b, _prov("b", 9))
    got = g.read_features(["b", "a@1"])
    np.testing.assert_array_equal(got[1], a)
    np.testing.assert_array_equal(got[0], b)
    assert not g.feature("b@2").ok()[7] and g.feature("b@2").ok().sum() == N - 1
    assert "non-finite" in g.feature("b@2").errors()[7]
    assert g.feature("a@1").done().all()
    assert not (g.feature("a@1").dir / "staging").exists()


def test_shard_size_is_whole_work_chunks() -> None:
    assert shard_rows_for(32, 2048, 11000) == 8192  # 64 MiB of 2048-d rows
    assert shard_rows_for(32, 128, 11000) == 11008  # whole array in one shard, chunk-padded
    assert shard_rows_for(32, 10**7, 11000) == 32  # never less than one work chunk


def _old_layout_group(tmp_path: Path, values: np.ndarray, done_chunks: list[int]):
    """A group whose feature array is written as the store did before the
    packed layout: one zstd-compressed file per work chunk for data, ok,
    error and one file per done marker, no ``layout`` attribute."""
    g = _group(tmp_path)
    n, dim = values.shape
    fg = g.group.create_group("features/old@1")
    fg.create_array("data", shape=(n, dim), chunks=(CHUNK, dim), dtype="float32", fill_value=float("nan"),
                    dimension_names=["item", "feature"])
    fg.create_array("ok", shape=(n,), chunks=(CHUNK,), dtype="bool", fill_value=False, dimension_names=["item"])
    fg.create_array("error", shape=(n,), chunks=(CHUNK,), dtype=str, fill_value="", dimension_names=["item"])
    fg.create_array("done", shape=(g.n_chunks,), chunks=(1,), dtype="bool", fill_value=False,
                    dimension_names=["chunk"])
    fg.attrs["provenance"] = _prov("old", dim)
    for c in done_chunks:
        rows = g.chunk_slice(c)
        fg["data"][rows] = values[rows]
        fg["ok"][rows] = True
        fg["error"][rows] = np.array([""] * (rows.stop - rows.start), dtype=object).astype(str)
        fg["done"][c] = True
    return g


def test_store_in_the_old_layout_is_read_and_resumed_in_place(tmp_path: Path) -> None:
    values = np.random.default_rng(4).standard_normal((N, 6)).astype(np.float32)
    g = _old_layout_group(tmp_path, values, [0, 1, 2])
    g = FeatureStore(tmp_path / "store", mode="r").open_group("ds")
    arr = g.feature("old@1")
    assert arr.layout == "chunk-files" and not arr.packed
    np.testing.assert_array_equal(arr.read()[:12], values[:12])
    assert np.isnan(arr.read()[12:]).all()
    assert np.flatnonzero(arr.done()).tolist() == [0, 1, 2]
    # resume: the rest is written in the old layout, never mixed with the new one
    g = FeatureStore(tmp_path / "store").open_group("ds")
    arr = g.create_feature("old@1", 6, _prov("old", 6))
    with g.writer_lock():
        _write(arr, g, range(3, g.n_chunks), values)
    assert not (arr.dir / "staging").exists()
    assert zarr.open_array(str(arr.dir / "data"), mode="r").chunks == (CHUNK, 6)
    np.testing.assert_array_equal(arr.read(), values)
    assert arr.done().all() and arr.ok().all()
    # a new extractor in the same group gets the packed layout
    assert g.create_feature("new@1", 3, _prov("new", 3)).layout == LAYOUT_PACKED


def test_unknown_layout_is_refused_by_name(tmp_path: Path) -> None:
    g = _group(tmp_path)
    arr = g.create_feature("f@1", 3, _prov("f", 3))
    arr.group.attrs["layout"] = "packed-shards/9"
    g = FeatureStore(tmp_path / "store", mode="r").open_group("ds")
    with pytest.raises(AanbenchError, match=r"f@1: layout 'packed-shards/9' is not one this aanbench reads"):
        g.feature("f@1").read()


def test_writer_lock_refuses_a_second_writer_and_leaves_no_file(tmp_path: Path) -> None:
    g = _group(tmp_path)
    lock = tmp_path / "store" / "ds" / "default" / ".writer.lock"
    with g.writer_lock():
        assert lock.is_file()
        other = FeatureStore(tmp_path / "store").open_group("ds")
        with pytest.raises(AanbenchError, match="another run is writing ds/default"):
            with other.writer_lock():
                pass
    assert not lock.exists()
    with g.writer_lock():  # free again
        pass
    assert not lock.exists()


def test_plain_zarr_reads_an_extracted_store_without_warnings(tmp_path: Path) -> None:
    media = tmp_path / "media"
    for i in range(5):
        make_clip(media / f"c{i}.mp4", level=40 * i + 10)
    store = tmp_path / "store"
    r = run_aanbench("extract", "files", "--root", str(media), "--store", str(store), "--extractors", "affect",
                     "--chunk-rows", "2")
    assert r.returncode == 0, r.stderr
    gdir = store / "files" / "default"
    assert not (gdir / ".writer.lock").exists()
    key = FeatureStore(store, mode="r").open_group("files").resolve_feature("affect").key
    assert not (gdir / "features" / key / "staging").exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        root = zarr.open_group(str(store), mode="r")
        names = [k for k, _ in root.members(max_depth=None)]
        data = zarr.open_group(str(gdir), mode="r")[f"features/{key}/data"][:]
    assert [str(w.message) for w in caught] == []
    assert f"files/default/features/{key}/data" in names
    fa = FeatureStore(store, mode="r").open_group("files").feature(key)
    np.testing.assert_array_equal(data, fa.read())
    assert data.shape == (5, fa.dim) and np.isfinite(data).all()
    # the whole feature array is a handful of files
    files = [p for p in (gdir / "features" / key).rglob("*") if p.is_file()]
    assert len(files) == 8, sorted(str(p.relative_to(gdir)) for p in files)


def test_planner_resumes_from_staged_chunks_of_a_killed_run(tmp_path: Path) -> None:
    """A run killed outright leaves staged chunks (and its lock file): the next
    plan counts them as done, and the next run packs them."""
    media = tmp_path / "media"
    for i in range(6):
        make_clip(media / f"c{i}.mp4", level=30 * i + 10)
    plugins = get_plugins()
    ds = plugins.dataset("files")
    items = ds.items(media)
    ex = plugins.extractor("affect")
    store = FeatureStore(tmp_path / "store")
    plan = plan_extraction(store, "files", items, [ex], {}, chunk_rows=2, weights_dir=str(tmp_path))
    assert len(plan.units) == 3
    from aanbench.extraction import LoadedExtractors, execute_unit

    loaded = LoadedExtractors(plan.job)
    execute_unit(plan.job, plan.units[1], loaded)  # then "killed": no pack
    (plan.group.store.root / "files" / "default" / ".writer.lock").write_text("pid 1 on gone")
    plan2 = plan_extraction(store, "files", items, [ex], {}, chunk_rows=2, weights_dir=str(tmp_path))
    assert [u.chunk for u in plan2.units] == [0, 2]
    from aanbench.backends.local import LocalBackend
    from aanbench.extraction import run_plan

    run_plan(plan2, LocalBackend())
    arr = FeatureStore(tmp_path / "store", mode="r").open_group("files").resolve_feature("affect")
    assert arr.done().all() and arr.ok().all() and not (arr.dir / "staging").exists()
    assert not (tmp_path / "store" / "files" / "default" / ".writer.lock").exists()


def test_listing_passes_over_the_partial_files_of_interrupted_writes(tmp_path: Path) -> None:
    """An interrupted write leaves zarr's temporary ``*.partial`` file beside a
    group's members (e.g. after Ctrl-C): listings give the members without
    zarr's warning about it, whatever warning filters are in force."""
    g = _group(tmp_path)
    g.create_feature("f@1", 3, _prov("f", 3))
    root = tmp_path / "store"
    for d in (root, root / "ds", root / "ds" / "default" / "features", root / "ds" / "default" / "labels"):
        (d / "zarr.0123456789abcdef.partial").write_bytes(b"{")
    store = FeatureStore(root, mode="r")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert store.group_paths() == ["ds/default"]
        opened = store.open_group("ds")
        assert opened.feature_keys() == ["f@1"] and opened.targets() == ["valence"]
    assert [str(w.message) for w in seen if "partial" in str(w.message)] == []
