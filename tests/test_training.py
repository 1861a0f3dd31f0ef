"""Metrics, protocols and the experiment runner: scientific hygiene (test
data never influences training, model selection or normalisation) and
seeded reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from aanbench.contracts import Item
from aanbench.metrics import ccc, mse, pearson
from aanbench.stats import evaluate
from aanbench.plugin_manager import get_plugins
from aanbench.protocols import FixedSplit, LeaveOneGroupOut, carve_validation
from aanbench.registry import ExperimentConfig
from aanbench.runner import run_experiment
from aanbench.store import FeatureStore


def test_metrics_against_references() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    p = 0.5 * y + rng.normal(scale=0.5, size=200) + 0.3
    assert mse(y, p) == pytest.approx(np.mean((y - p) ** 2))
    assert pearson(y, p) == pytest.approx(stats.pearsonr(y, p)[0], abs=1e-12)
    # Lin's CCC by its definition
    sxy = np.mean((y - y.mean()) * (p - p.mean()))
    assert ccc(y, p) == pytest.approx(2 * sxy / (y.var() + p.var() + (y.mean() - p.mean()) ** 2))
    assert ccc(y, y) == pytest.approx(1.0) and ccc(y, y + 1) < 1.0
    assert np.isnan(pearson(y, np.zeros_like(y)))
    ev = evaluate(y, p, seed=1)
    lo, hi = ev["pearson_r_ci"]
    assert lo < ev["pearson_r"] < hi and ev["n"] == 200
    assert evaluate(y, p, seed=1) == ev  # seeded bootstrap


def test_leave_one_group_out_and_validation_carving() -> None:
    groups = np.array(list("AAABBBCCCDDDEEE"))
    splits = np.array([""] * 15)
    folds = list(LeaveOneGroupOut().folds(splits, groups))
    assert [f.name for f in folds] == list("ABCDE")
    for f in folds:
        assert set(groups[f.test]) == {f.name} and f.name not in set(groups[f.train])
        fit, val = carve_validation(f.train, groups, 0.25, seed=3)
        assert not set(val) & set(f.test) and not set(fit) & set(f.test)
        assert set(fit) | set(val) == set(f.train) and not set(fit) & set(val)
        assert not set(groups[val]) & set(groups[fit])  # whole movies go to validation
    (fold,) = FixedSplit().folds(np.array(["train"] * 10 + ["test"] * 5), groups)
    assert list(fold.test) == list(range(10, 15))


def _synthetic_store(tmp_path: Path, n_train: int = 80, n_test: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    a = rng.normal(size=(n, 6)).astype(np.float32)
    b = rng.normal(size=(n, 4)).astype(np.float32) * 50 + 10
    val = np.tanh(a[:, 0] + 0.5 * a[:, 1] + 0.1 * rng.normal(size=n))
    aro = np.tanh(0.02 * (b[:, 0] - 10) - 0.5 * a[:, 2] + 0.1 * rng.normal(size=n))
    items = [Item(f"i{i:03d}", None, labels={"valence": float(val[i]), "arousal": float(aro[i])},
                  group=f"m{i % 10}" if i < n_train else f"t{i % 2}", split="train" if i < n_train else "test")
             for i in range(n)]
    store = FeatureStore(tmp_path / "store")
    g = store.ensure_group("synthetic", items, chunk_rows=16)
    prov = lambda name: {"extractor": name, "version": "imported", "dim": 0, "config": {}, "weights": {},  # noqa: E731
                         "libraries": {}, "source": "test"}
    g.import_rows("fa@imported", a, prov("fa"))
    g.import_rows("fb@imported", b, prov("fb"))
    return store, g, items


class _Dataset:
    name = "synthetic"
    targets = ("valence", "arousal")
    protocol = "fixed"
    segmentation = "default"

    def config(self) -> dict:
        return {}


def _exp(model: str, **params) -> ExperimentConfig:
    return ExperimentConfig(name=f"t-{model}", model=model, description="", feature_set="ab", features=("fa", "fb"),
                            params=params, protocol=None, seed=7)


AAN = dict(max_epochs=60, patience=10, batch_size=16, lr=0.005)


@pytest.mark.parametrize("model, params", [("ridge", {}), ("feature-aan", AAN)])
@pytest.mark.slow
def test_runner_is_seeded_and_test_labels_never_leak(tmp_path: Path, model: str, params: dict) -> None:
    plugins = get_plugins()
    store, g, items = _synthetic_store(tmp_path)
    doc1 = run_experiment(_exp(model, **params), _Dataset(), g, plugins)
    doc2 = run_experiment(_exp(model, **params), _Dataset(), g, plugins)
    p1 = [(p["item_id"], p["target"], p["y_pred"]) for p in doc1["predictions"]]
    assert p1 == [(p["item_id"], p["target"], p["y_pred"]) for p in doc2["predictions"]]
    assert {p["item_id"] for p in doc1["predictions"]} == {it.id for it in items if it.split == "test"}
    r = doc1["targets"]["valence"]["metrics"]["pearson_r"]
    assert r > 0.7, f"{model} should learn the synthetic valence (r={r:.2f})"

    # scramble the test labels: training, model selection and predictions must not change
    store2 = FeatureStore(tmp_path / "store2")
    rng = np.random.default_rng(99)
    scrambled = [Item(it.id, None, labels={k: (float(rng.normal()) if it.split == "test" else v)
                                           for k, v in it.labels.items()}, group=it.group, split=it.split)
                 for it in items]
    g2 = store2.ensure_group("synthetic", scrambled, chunk_rows=16)
    for key in ("fa@imported", "fb@imported"):
        arr = g.feature(key)
        g2.import_rows(key, arr.read(), arr.provenance)
    doc3 = run_experiment(_exp(model, **params), _Dataset(), g2, plugins)
    assert p1 == [(p["item_id"], p["target"], p["y_pred"]) for p in doc3["predictions"]]


def test_normalisation_is_fit_on_training_rows_only(tmp_path: Path) -> None:
    plugins = get_plugins()
    store, g, items = _synthetic_store(tmp_path)
    base = run_experiment(_exp("ridge"), _Dataset(), g, plugins)
    # blow up the features of half the test items; the other test items' predictions must not move
    a = g.feature("fa@imported").read()
    test_idx = [i for i, it in enumerate(items) if it.split == "test"]
    changed = test_idx[::2]
    a[changed] *= 1000.0
    store2 = FeatureStore(tmp_path / "s2")
    g2 = store2.ensure_group("synthetic", items, chunk_rows=16)
    g2.import_rows("fa@imported", a, g.feature("fa@imported").provenance)
    g2.import_rows("fb@imported", g.feature("fb@imported").read(), g.feature("fb@imported").provenance)
    after = run_experiment(_exp("ridge"), _Dataset(), g2, plugins)
    keep = {items[i].id for i in test_idx[1::2]}
    before_p = {(p["item_id"], p["target"]): p["y_pred"] for p in base["predictions"] if p["item_id"] in keep}
    after_p = {(p["item_id"], p["target"]): p["y_pred"] for p in after["predictions"] if p["item_id"] in keep}
    assert before_p == after_p
    moved = [p for p in after["predictions"] if p["item_id"] == items[changed[0]].id]
    assert any(abs(m["y_pred"] - b["y_pred"]) > 1e-3 for m in moved for b in base["predictions"]
               if b["item_id"] == m["item_id"] and b["target"] == m["target"])


def test_mean_baseline_predicts_training_mean(tmp_path: Path) -> None:
    store, g, items = _synthetic_store(tmp_path)
    doc = run_experiment(_exp("mean"), _Dataset(), g, get_plugins())
    train_val = np.mean([it.labels["valence"] for it in items if it.split == "train"])
    preds = {p["y_pred"] for p in doc["predictions"] if p["target"] == "valence"}
    assert len(preds) == 1 and preds.pop() == pytest.approx(train_val, abs=1e-6)


# --------------------------------------------------------------------------
# Sequence models: windows built by the engine


def _seq_plugins():
    """The installed plugins plus the example sequence model (tests/thirdparty_plugin)."""
    import sys

    from aanbench.plugin_manager import Plugins

    sys.path.insert(0, str(Path(__file__).parent / "thirdparty_plugin"))
    try:
        from aanbench_example import meanseq
    finally:
        sys.path.pop(0)
    plugins = Plugins()
    plugins.load_entry_points()
    plugins.register(meanseq)
    return plugins


def _timed_store(tmp_path: Path, name: str = "store", bump: dict | None = None, labels_of=None, bad_rows=()):
    """8 movies x 10 segments of 5 s (6 train movies, 2 test); each label
    depends on the features of the segment and its two predecessors."""
    rng = np.random.default_rng(3)
    movies = [f"m{j}" for j in range(8)]
    n = 10 * len(movies)
    a = rng.normal(size=(n, 5)).astype(np.float32)
    items = []
    for i in range(n):
        j, k = divmod(i, 10)
        ctx = a[max(i - 2, j * 10) : i + 1, 0].mean()
        v = float(np.tanh(ctx + 0.05 * rng.normal()))
        items.append(Item(f"{movies[j]}_{k:02d}", Path(f"/media/{movies[j]}.mp4"), start=5.0 * k, end=5.0 * k + 5,
                          labels={"valence": v if labels_of is None else labels_of(i, v)}, group=movies[j],
                          split="train" if j < 6 else "test"))
    for i, factor in (bump or {}).items():
        a[i] *= factor
    g = FeatureStore(tmp_path / name).ensure_group("synthetic", items, chunk_rows=16)
    prov = {"extractor": "fa", "version": "imported", "dim": 5, "config": {}, "weights": {}, "libraries": {},
            "source": "test"}
    arr = g.import_rows("fa@imported", a, prov)
    if bad_rows:
        arr.mark_chunk_failed(slice(bad_rows[0], bad_rows[1]), "broken on purpose")
    return g, items


class _TimedDataset(_Dataset):
    targets = ("valence",)


def _seq_exp(**params) -> ExperimentConfig:
    return ExperimentConfig(name="t-seq", model="example-seq-ridge", description="", feature_set="a",
                            features=("fa",), params={"alpha": 1.0, "sequence_length": 3, **params},
                            protocol=None, seed=0)


def test_sequence_runs_use_engine_windows_without_leaks(tmp_path: Path) -> None:
    plugins = _seq_plugins()
    g, items = _timed_store(tmp_path)
    doc = run_experiment(_seq_exp(), _TimedDataset(), g, plugins)
    preds = {p["item_id"]: p for p in doc["predictions"]}
    # windows of 3 segments inside each test movie, named by their last segment, spanning [5(k-2), 5k+5)
    assert sorted(preds) == [f"m{j}_{k:02d}" for j in (6, 7) for k in range(2, 10)]
    assert (preds["m6_02"]["start"], preds["m6_02"]["end"]) == (0.0, 15.0)
    assert doc["samples"]["length"] == 3 and doc["targets"]["valence"]["metrics"]["pearson_r"] > 0.8
    # a row model on the same data cannot see the context: windows help
    row = run_experiment(ExperimentConfig(name="t-ridge", model="ridge", description="", feature_set="a",
                                          features=("fa",), params={}, protocol=None, seed=0),
                         _TimedDataset(), g, plugins)
    assert row["targets"]["valence"]["metrics"]["pearson_r"] < doc["targets"]["valence"]["metrics"]["pearson_r"]

    # scrambled test labels change nothing but y_true
    g2, _ = _timed_store(tmp_path, "s2", labels_of=lambda i, v: (-v if i >= 60 else v))
    doc2 = run_experiment(_seq_exp(), _TimedDataset(), g2, plugins)
    assert [p["y_pred"] for p in doc2["predictions"]] == [p["y_pred"] for p in doc["predictions"]]

    # features of movie m7 blown up: m6's windows (and the standardiser, fit on training rows) are untouched
    g3, _ = _timed_store(tmp_path, "s3", bump={i: 100.0 for i in range(70, 80)})
    doc3 = run_experiment(_seq_exp(), _TimedDataset(), g3, plugins)
    same = [(p["item_id"], p["y_pred"]) for p in doc3["predictions"] if p["item_id"].startswith("m6")]
    assert same == [(p["item_id"], p["y_pred"]) for p in doc["predictions"] if p["item_id"].startswith("m6")]

    # a window with an invalid row is not usable: rows 64-65 (m6_04, m6_05) broken -> 4 windows of m6 go
    g4, _ = _timed_store(tmp_path, "s4", bad_rows=(64, 66))
    doc4 = run_experiment(_seq_exp(), _TimedDataset(), g4, plugins)
    gone = set(preds) - {p["item_id"] for p in doc4["predictions"]}
    assert gone == {"m6_04", "m6_05", "m6_06", "m6_07"}
    assert doc4["targets"]["valence"]["n_unusable"] == 4


# --------------------------------------------------------------------------
# Devices (--device): the CPU explicitly, and the clear error for CUDA where torch has none


def _tiny_fit(device=None):
    import torch

    from aanbench.training import TrainConfig, train_torch

    rng = np.random.default_rng(3)
    x = [rng.normal(size=(80, 6)).astype(np.float32), rng.normal(size=(80, 3)).astype(np.float32)]
    y = np.tanh(x[0][:, 0]).astype(np.float32)
    model = get_plugins().model("feature-aan").build({"dropout": 0.0, "head_dropout": 0.0}, [6, 3])
    tf = model.torch_fit(y[:60], seed=4)
    rep = train_torch(tf.net, [a[:60] for a in x], y[:60], [a[60:] for a in x], y[60:],
                      TrainConfig(lr=0.01, max_epochs=6, patience=3, batch_size=16), 4, device=device)
    return model, rep, x, {k: v.clone() for k, v in tf.net.state_dict().items()}, torch


def test_training_and_prediction_on_an_explicit_cpu_device_match_the_default() -> None:
    from aanbench.training import predict_torch, resolve_device

    assert resolve_device(None).type == resolve_device("cpu").type == "cpu"
    m0, r0, x, s0, torch = _tiny_fit()
    m1, r1, _, s1, _ = _tiny_fit("cpu")
    assert (r0.epochs, r0.best_epoch, r0.best_val_loss) == (r1.epochs, r1.best_epoch, r1.best_val_loss)
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)
    assert all(v.device.type == "cpu" for v in s1.values())  # the trained net is a CPU net
    m1.device = "cpu"
    np.testing.assert_array_equal(m0.predict(x), m1.predict(x))
    np.testing.assert_array_equal(predict_torch(m1.net, x, device="cpu"), m0.predict(x))
    assert m1.state()["state_dict"]["head.weight"].device.type == "cpu"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error_before_any_work(tmp_path: Path) -> None:
    import torch
    from typer.testing import CliRunner

    from aanbench.cli import app
    from aanbench.contracts import AanbenchError
    from aanbench.runner import check_device
    from aanbench.training import predict_torch, resolve_device

    for dev in ("cuda", "cuda:1"):
        with pytest.raises(AanbenchError, match=f"--device '{dev}': torch reports no usable CUDA device"):
            resolve_device(dev)
        with pytest.raises(AanbenchError, match="no usable CUDA device"):
            check_device(dev)
    with pytest.raises(AanbenchError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(AanbenchError, match="cpu or cuda, not meta"):
        resolve_device("meta")
    assert check_device("cpu") == "cpu"
    # the trainer refuses before touching the network
    model = get_plugins().model("feature-aan").build({}, [6, 3])
    net = model.torch_fit(np.zeros(4, np.float32), seed=0).net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    from aanbench.training import TrainConfig, train_torch

    x = [np.zeros((4, 6), np.float32), np.zeros((4, 3), np.float32)]
    with pytest.raises(AanbenchError, match="no usable CUDA device"):
        train_torch(net, x, np.arange(4, dtype=np.float32), None, None, TrainConfig(max_epochs=1), 0, device="cuda")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(AanbenchError, match="no usable CUDA device"):
        predict_torch(net, x, device="cuda")
    # the commands refuse before opening the store (which does not exist: that would be another error)
    for args in (["run", "feature-aan", "demo"], ["train", "feature-aan", "demo"], ["benchmark", "demo"]):
        res = CliRunner().invoke(app, [*args, "--store", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                                       "--device", "cuda"])
        assert res.exit_code == 2, res.output
        assert "--device 'cuda': torch reports no usable CUDA device" in res.output
        assert not (tmp_path / "none").exists() and not (tmp_path / "o").exists()


def test_training_pauses_the_cycle_collector_and_restores_it() -> None:
    """Training loops run with Python's cyclic collector paused and leave it
    as they found it, also when the loop fails."""
    import gc

    from aanbench.training import no_cycle_collection

    assert gc.isenabled()
    with no_cycle_collection():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with no_cycle_collection():
            raise RuntimeError("a failing fit")
    assert gc.isenabled()
    gc.disable()
    try:
        with no_cycle_collection():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
