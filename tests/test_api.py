"""The notebook API (aanbench.api) and `aanbench store export`, on a real
Zarr store written through the store's own API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from aanbench.api import open_features
from aanbench.contracts import AanbenchError, Item
from aanbench.store import FeatureStore

N = 7


def _write_store(root: Path) -> dict[str, np.ndarray]:
    items = [Item(id=f"clip{i}", path=Path(f"/media/clip{i}.mp4"), start=float(i), end=float(i) + 4.0,
                  labels={"valence": 0.1 * i, "arousal": -0.2 * i}, group=f"movie{i % 3}",
                  split="test" if i >= 5 else "train") for i in range(N)]
    g = FeatureStore(root).ensure_group("demo", items, chunk_rows=4)
    rng = np.random.default_rng(0)
    values = {"affect": rng.normal(size=(N, 3)).astype(np.float32), "logmel": rng.normal(size=(N, 5)).astype(np.float32)}
    for name, v in values.items():
        arr = g.create_feature(f"{name}@1", v.shape[1], {"extractor": name, "version": "1", "dim": v.shape[1]})
        for c in range(g.n_chunks):
            rows = g.chunk_slice(c)
            ok = np.ones(rows.stop - rows.start, dtype=bool)
            errs = [""] * len(ok)
            if name == "logmel" and c == 0:
                ok[1], errs[1] = False, "no audio stream"
            arr.write_chunk(c, rows, v[rows], ok, errs)
    return values


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "feats"
    return root, _write_store(root)


def test_open_features_gives_arrays_items_and_labels(store) -> None:
    root, values = store
    f = open_features(root, "demo")
    assert list(f.arrays) == ["affect", "logmel"] and f.keys == {"affect": "affect@1", "logmel": "logmel@1"}
    np.testing.assert_array_equal(f.arrays["affect"], values["affect"])
    assert np.isnan(f.arrays["logmel"][1]).all() and f.errors["logmel"][1] == "no audio stream"
    np.testing.assert_array_equal(f.arrays["logmel"][2:], values["logmel"][2:])
    assert list(f.items["id"]) == [f"clip{i}" for i in range(N)] and f.items["start"][3] == 3.0
    assert list(f.items["split"]).count("test") == 2
    np.testing.assert_allclose(f.labels["valence"], 0.1 * np.arange(N), rtol=1e-6)
    x, valid = f.matrix()
    assert x.shape == (N, 8) and valid.tolist() == [i != 1 for i in range(N)]
    x, valid = f.matrix(["affect"])
    assert x.shape == (N, 3) and valid.all()


def test_frame_one_row_per_item(store) -> None:
    root, values = store
    df = open_features(root, "demo", "logmel").frame()
    assert list(df.columns) == ["id", "group", "split", "path", "start", "end", "arousal", "valence",
                                *[f"logmel_{j}" for j in range(5)]]
    assert len(df) == N and df.loc[1, ["logmel_0"]].isna().all()
    df = open_features(root, "demo", ["affect", "logmel"]).frame(valid_only=True)
    assert "clip1" not in set(df["id"]) and len(df) == N - 1
    np.testing.assert_array_equal(df[[f"affect_{j}" for j in range(3)]].to_numpy(), values["affect"][[0, 2, 3, 4, 5, 6]])


def test_unknown_extractor_and_group_name_the_problem(store) -> None:
    root, _ = store
    with pytest.raises(AanbenchError, match="no features from extractor 'vggish'"):
        open_features(root, "demo", ["vggish"])
    with pytest.raises(AanbenchError, match="no group eimt16/default"):
        open_features(root, "eimt16")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_store_export_tables(store, tmp_path: Path, cli, suffix: str) -> None:
    root, values = store
    out = tmp_path / f"x{suffix}"
    r = cli("store", "export", root, "--dataset", "demo", "--out", out)
    assert r.exit_code == 0, r.output
    assert f"wrote {N} rows of demo/default to {out}" in r.output
    df = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert len(df) == N and list(df["id"]) == [f"clip{i}" for i in range(N)]
    np.testing.assert_allclose(df[[f"logmel_{j}" for j in range(5)]].to_numpy()[2:], values["logmel"][2:], rtol=1e-6)
    assert np.isnan(df["logmel_0"][1])


def test_store_export_hdf5_round_trips_through_import_h5(store, tmp_path: Path, cli) -> None:
    root, values = store
    out = tmp_path / "x.h5"
    r = cli("store", "export", root, "--dataset", "demo", "--out", out, "-e", "affect", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"path": str(out), "format": "hdf5", "group": "demo/default", "rows": N,
                                    "arrays": {"affect@1": 3}}
    with h5py.File(out, "r") as f:
        assert [s.decode() if isinstance(s, bytes) else s for s in f["items/id"][:]] == [f"clip{i}" for i in range(N)]
        assert json.loads(f["features/affect@1"].attrs["provenance"])["extractor"] == "affect"
        assert f["ok/affect@1"][:].all() and "logmel@1" not in f["features"]
    r = cli("store", "import-h5", out, "--store", tmp_path / "again", "--dataset", "copy", "--extractor", "affect",
            "--key", "features/affect@1")
    assert r.exit_code == 0, r.output
    back = FeatureStore(tmp_path / "again", mode="r").open_group("copy").feature("affect@imported").read()
    np.testing.assert_array_equal(back, values["affect"])


def test_store_export_refuses_unknown_suffix_and_missing_pyarrow(store, tmp_path: Path, cli, monkeypatch) -> None:
    root, _ = store
    r = cli("store", "export", root, "--dataset", "demo", "--out", tmp_path / "x.txt")
    assert r.exit_code == 2 and "cannot tell the format from the suffix '.txt'" in r.output
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    r = cli("store", "export", root, "--dataset", "demo", "--out", tmp_path / "x.parquet")
    assert r.exit_code == 2 and "writing Parquet needs the pyarrow package" in r.output
    assert not (tmp_path / "x.parquet").exists()
