"""Temporal and Feature+Temporal AttendAffectNet through the engine: the
runner hands a sequence model the labels of its fitting windows' rows (never
a test row's), test labels never reach a prediction (a copy with shuffled
test labels gives identical predictions), a later segment never changes an
earlier segment's prediction, same seed same numbers, model files round
trip, and `aanbench run` end to end on the official-layout fixtures of
EIMT16 (temporal segmentation) and COGNIMUSE (leave-one-movie-out).

The networks themselves (positional encoding by hand, shapes, causality,
evaluation without labels): tests/test_temporal_aan_net.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aanbench import hookimpl
from aanbench.contracts import FitReport, Item, Model, ModelSpec
from aanbench.plugin_manager import Plugins, get_plugins
from aanbench.registry import ExperimentConfig
from aanbench.runner import run_experiment
from aanbench.store import FeatureStore
from aanbench_plugins.models import temporal_aan

from fixtures_official import write_cognimuse, write_eimt16

MOVIES = {"m0": "train", "m1": "train", "m2": "train", "m3": "train", "m4": "train", "t0": "test", "t1": "test"}
SEGMENTS = 16
QUICK = dict(max_epochs=8, patience=4, batch_size=16, lr=0.005, sequence_length=5, sequence_start="pad",
             val_fraction=0.2)


def _items(seed: int = 0, scramble_test: int | None = None) -> tuple[list[Item], np.ndarray, np.ndarray]:
    """Movies of consecutive 5-s segments (stored in shuffled order within the
    table, so the engine must sort them by time); valence follows the
    features and its own previous value."""
    rng = np.random.default_rng(seed)
    rows, a_rows, b_rows = [], [], []
    for movie, split in MOVIES.items():
        a = rng.normal(size=(SEGMENTS, 6)).astype(np.float32)
        b = (rng.normal(size=(SEGMENTS, 3)) * 20 + 5).astype(np.float32)
        v = np.zeros(SEGMENTS)
        prev = 0.0
        for k in range(SEGMENTS):
            prev = 0.6 * prev + 0.4 * np.tanh(a[k, 0] + 0.05 * (b[k, 0] - 5)) + 0.05 * rng.normal()
            v[k] = prev
        ar = np.tanh(a[:, 1] - 0.5 * a[:, 2]) + 0.05 * rng.normal(size=SEGMENTS)
        for k in rng.permutation(SEGMENTS):
            rows.append(Item(f"{movie}_{k:04d}", None, start=5.0 * k, end=5.0 * k + 5,
                             labels={"valence": float(v[k]), "arousal": float(ar[k])}, group=movie, split=split))
            a_rows.append(a[k])
            b_rows.append(b[k])
    if scramble_test is not None:
        r2 = np.random.default_rng(scramble_test)
        rows = [Item(it.id, None, it.start, it.end,
                     {t: (float(r2.uniform(-1, 1)) if it.split == "test" else v) for t, v in it.labels.items()},
                     it.group, it.split) for it in rows]
    return rows, np.stack(a_rows), np.stack(b_rows)


def _store(path: Path, items: list[Item], a: np.ndarray, b: np.ndarray):
    g = FeatureStore(path).ensure_group("synthetic", items, chunk_rows=32)
    for name, v in (("fa", a), ("fb", b)):
        g.import_rows(f"{name}@imported", v, {"extractor": name, "version": "imported", "dim": v.shape[1],
                                                "config": {}, "weights": {}, "libraries": {}, "source": "test"})
    return g


class _Dataset:
    name = "synthetic"
    targets = ("valence", "arousal")
    protocol = "fixed"
    segmentation = "default"
    windows = None

    def config(self) -> dict:
        return {}


def _exp(model: str, **params) -> ExperimentConfig:
    return ExperimentConfig(name=f"t-{model}", model=model, description="", feature_set="ab", features=("fa", "fb"),
                            params=params, protocol=None, seed=3)


def _preds(doc) -> list[tuple[str, str, float]]:
    return [(p["item_id"], p["target"], p["y_pred"]) for p in doc["predictions"]]


# --------------------------------------------------------------------------
# The engine's door: member rows' labels for fitting samples only


class _Recorder(Model):
    calls: list[dict] = []

    def __init__(self, params, dims):
        self.params = params

    def fit(self, train_x, train_y, val_x, val_y, *, seed, train_y_rows=None, val_y_rows=None):
        _Recorder.calls.append({"train_x": train_x, "train_y": train_y, "val_y": val_y,
                                "train_y_rows": train_y_rows, "val_y_rows": val_y_rows})
        self.mean = float(np.mean(train_y))
        return FitReport()

    def predict(self, x):
        return np.full(len(x[0]), self.mean, dtype=np.float32)


class _RecorderPlugin:
    @hookimpl
    def aanbench_models(self):
        return [ModelSpec("recorder", "records what fit receives", lambda p, d: _Recorder(p, d),
                          input="sequences", wants_row_labels=True)]


def test_runner_hands_member_row_labels_of_fitting_and_validation_windows_only(tmp_path):
    items, a, b = _items()
    g = _store(tmp_path / "store", items, a, b)
    plugins = Plugins()
    plugins.register(_RecorderPlugin())
    _Recorder.calls = []
    run_experiment(_exp("recorder", sequence_length=5, sequence_start="pad", val_fraction=0.2), _Dataset(), g,
                   plugins)
    assert len(_Recorder.calls) == 2  # one per target, fixed split
    by_label = {("valence", round(it.labels["valence"], 6)): it for it in items}
    by_label.update({("arousal", round(it.labels["arousal"], 6)): it for it in items})
    labels = {(it.group, int(it.id[-4:])): it.labels for it in items}
    test_values = {round(v, 6) for it in items if it.split == "test" for v in it.labels.values()}
    for target, call in zip(("valence", "arousal"), _Recorder.calls):
        rows, y = call["train_y_rows"], call["train_y"]
        assert rows.shape == (len(y), 5) and call["val_y_rows"].shape == (len(call["val_y"]), 5)
        np.testing.assert_array_equal(rows[:, -1], y)  # windows labelled by their last row
        for row in np.concatenate([rows, call["val_y_rows"]]):
            last = by_label[(target, round(float(row[-1]), 6))]
            k = int(last.id[-4:])
            # the 4 segments before it in time, the movie's first repeated where fewer precede it
            want = [labels[(last.group, max(0, j))][target] for j in range(k - 4, k + 1)]
            np.testing.assert_allclose(row, want, rtol=1e-6)
            assert not {round(float(v), 6) for v in row} & test_values
        assert call["train_x"][0].shape == (len(y), 5, 6)


def test_the_flag_needs_sequences():
    with pytest.raises(TypeError, match="wants_row_labels needs input='sequences'"):
        ModelSpec("x", "", lambda p, d: None, wants_row_labels=True)


# --------------------------------------------------------------------------
# Through the runner: seeded, and test labels never reach a prediction


@pytest.mark.parametrize("model", ["temporal-aan", "feature-temporal-aan"])
@pytest.mark.slow
def test_seeded_and_shuffled_test_labels_give_identical_predictions(tmp_path, model):
    plugins = get_plugins()
    items, a, b = _items()
    g = _store(tmp_path / "store", items, a, b)
    exp = _exp(model, **QUICK)
    doc1 = run_experiment(exp, _Dataset(), g, plugins)
    doc2 = run_experiment(exp, _Dataset(), g, plugins)
    assert _preds(doc1) == _preds(doc2)
    test_ids = {it.id for it in items if it.split == "test"}
    assert {p["item_id"] for p in doc1["predictions"]} == test_ids  # padded windows: every test segment
    assert doc1["samples"] == {"length": 5, "stride": 1, "scope": "group", "label": "last", "start": "pad",
                               "n": len(items)}
    assert len({p for _, _, p in _preds(doc1)}) > 2  # not a constant

    scrambled, a2, b2 = _items(scramble_test=42)
    assert [it.labels for it in scrambled if it.split == "test"] != [it.labels for it in items if it.split == "test"]
    g2 = _store(tmp_path / "store2", scrambled, a2, b2)
    doc3 = run_experiment(exp, _Dataset(), g2, plugins)
    assert _preds(doc3) == _preds(doc1)
    assert [p["y_true"] for p in doc3["predictions"]] != [p["y_true"] for p in doc1["predictions"]]


def test_a_later_test_segment_never_changes_an_earlier_prediction(tmp_path):
    """Causal at every level: windows end at their own segment (the engine),
    and the decoder's attention is masked (the network)."""
    plugins = get_plugins()
    items, a, b = _items()
    exp = _exp("temporal-aan", **QUICK)
    base = run_experiment(exp, _Dataset(), _store(tmp_path / "s1", items, a, b), plugins)
    k = 9
    row = next(i for i, it in enumerate(items) if it.id == f"t0_{k:04d}")
    a2 = a.copy()
    a2[row] += 5.0
    changed = run_experiment(exp, _Dataset(), _store(tmp_path / "s2", items, a2, b), plugins)
    before = {(i, t): p for i, t, p in _preds(base)}
    after = {(i, t): p for i, t, p in _preds(changed)}
    for (iid, t), p in before.items():
        movie, j = iid.split("_")
        if movie != "t0" or int(j) < k or int(j) > k + 4:  # windows that do not hold segment k
            assert after[(iid, t)] == p, iid
    assert after[(f"t0_{k:04d}", "valence")] != before[(f"t0_{k:04d}", "valence")]  # the check can fail


def test_model_state_round_trips_through_a_weights_only_file(tmp_path):
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(40, 5, d)).astype(np.float32) for d in (6, 3)]
    y = rng.uniform(1, 5, size=40).astype(np.float32)  # an EIMT16-like scale
    rows = (y[:, None] + rng.normal(scale=0.3, size=(40, 5))).astype(np.float32)  # earlier rows: not the target
    rows[:, -1] = y
    for kind in ("temporal-aan", "feature-temporal-aan"):
        spec = get_plugins().model(kind)
        m = spec.build({"max_epochs": 3, "patience": 2, "batch_size": 8, "feature_layers": 1}
                       if kind == "feature-temporal-aan" else {"max_epochs": 3, "patience": 2, "batch_size": 8},
                       [6, 3])
        m.fit(xs, y, None, None, seed=0, train_y_rows=rows)
        assert m.state()["config"]["start_value"] == pytest.approx(float(y.mean()))  # the training mean
        buf = io.BytesIO()
        torch.save(m.state(), buf)
        buf.seek(0)
        back = spec.restore(torch.load(buf, weights_only=True))
        np.testing.assert_array_equal(back.predict(xs), m.predict(xs))
        assert back.state()["config"]["feedback"] == "teacher"


def test_paper_values_in_the_registry():
    from aanbench.registry import load_registry

    reg = load_registry()
    c = reg.experiment("temporal-aan", "cognimuse").params
    assert (c["lr"], c["max_epochs"], c["dropout"], c["batch_size"], c["patience"], c["sequence_length"]) == \
        (0.001, 1000, 0.5, 30, 30, 5)
    e = reg.experiment("temporal-aan", "eimt16-temporal")
    assert e.params["lr"] == 0.01 and e.params["batch_size"] == {"valence": 20, "arousal": 40}
    assert reg.experiment("feature-temporal-aan", "cognimuse").model == "feature-temporal-aan"
    for name, fs in (("temporal-aan", "weightfree-both"), ("temporal-aan-video", "weightfree-video"),
                     ("temporal-aan-audio", "weightfree-audio"), ("feature-temporal-aan", "weightfree-both")):
        assert reg.experiment(name, "demo").feature_set == fs
    assert reg.experiment("temporal-aan-video", "cognimuse").feature_set == "video"


# --------------------------------------------------------------------------
# End to end through the CLI on the official-layout fixtures

TEST_REGISTRY = """
[feature_sets]
tq = ["affect"]

[experiments.temporal-aan-quick]
extends = "temporal-aan"
datasets.cognimuse.features = "tq"
datasets.cognimuse.max_epochs = 3
datasets.cognimuse.patience = 2
datasets.eimt16-temporal.features = "tq"
datasets.eimt16-temporal.max_epochs = 3
datasets.eimt16-temporal.patience = 2
"""


def test_cli_run_temporal_aan_on_eimt16_temporal_segmentation(tmp_path, cli):
    fx = write_eimt16(tmp_path / "copy", n_train=8, n_test=4)
    reg = tmp_path / "mine.toml"
    reg.write_text(TEST_REGISTRY)
    store, out = tmp_path / "store", tmp_path / "results"
    opt = ("--option", "segmentation=temporal4", "--option", "official_counts=false")
    r = cli("extract", "eimt16", "--root", fx.root, "--store", store, "--extractors", "affect", *opt)
    assert r.exit_code == 0, r.output
    r = cli("run", "temporal-aan-quick", "eimt16", "--store", store, "--out", out, "--registry", reg, *opt)
    assert r.exit_code == 0, r.output
    [path] = list(out.rglob("*.json"))
    doc = json.loads(path.read_text())
    assert (doc["dataset"], doc["protocol"], doc["model"]) == ("eimt16-temporal", "fixed", "temporal-aan")
    assert doc["samples"] == {"length": 4, "stride": 4, "scope": "file", "label": "mean", "start": "drop",
                              "n": len(fx.train) + len(fx.test)}
    assert doc["params"]["valence"]["batch_size"] == 20 and doc["params"]["arousal"]["batch_size"] == 40
    assert doc["params"]["valence"]["lr"] == 0.01
    # (d) on EIMT16 the fed "previous outputs" are never the target: no label feedback, recorded
    assert doc["params"]["valence"]["feedback"] == doc["params"]["arousal"]["feedback"] == "none"
    for target, col in (("valence", 0), ("arousal", 1)):
        preds = [p for p in doc["predictions"] if p["target"] == target]
        assert sorted(p["item_id"] for p in preds) == fx.test  # one prediction per test excerpt
        for p in preds:
            assert p["y_true"] == pytest.approx(fx.labels[p["item_id"]][col], rel=1e-6)
            assert np.isfinite(p["y_pred"])


def test_cli_run_temporal_aan_on_cognimuse_leave_one_movie_out(tmp_path, cli):
    fx = write_cognimuse(tmp_path / "copy", movies=["BMI", "CHI", "GLA"], seconds=32.0, experienced=(),
                         audio=False)
    reg = tmp_path / "mine.toml"
    reg.write_text(TEST_REGISTRY)
    store, out = tmp_path / "store", tmp_path / "results"
    opt = ("--option", "movies=BMI,CHI,GLA")
    r = cli("extract", "cognimuse", "--root", fx.root, "--store", store, "--extractors", "affect", *opt)
    assert r.exit_code == 0, r.output
    r = cli("run", "temporal-aan-quick", "cognimuse", "--store", store, "--out", out, "--registry", reg, *opt)
    assert r.exit_code == 0, r.output
    [path] = list(out.rglob("*.json"))
    doc = json.loads(path.read_text())
    assert (doc["dataset"], doc["protocol"]) == ("cognimuse", "leave-one-group-out")
    assert doc["samples"] == {"length": 5, "stride": 1, "scope": "group", "label": "last", "start": "pad",
                              "n": 3 * 6}
    assert doc["params"]["valence"]["lr"] == 0.001 and doc["params"]["valence"]["dropout"] == 0.5
    for target in ("valence", "arousal"):
        assert [f["fold"] for f in doc["targets"][target]["fits"]] == ["BMI", "CHI", "GLA"]
        preds = [p for p in doc["predictions"] if p["target"] == target]
        # every 5-s segment of every movie predicted once, by the fold that held its movie out
        assert sorted(p["item_id"] for p in preds) == sorted(f"{m}_{k:04d}" for m in fx.movies for k in range(6))
        assert all(p["fold"] == p["item_id"][:3] for p in preds)
    # the stack's first layer on three threads: the same numbers
    r = cli("run", "temporal-aan-quick", "cognimuse", "--store", store, "--out", tmp_path / "threads", "--registry",
            reg, "--threads", "3", *opt)
    assert r.exit_code == 0, r.output
    [again] = list((tmp_path / "threads").rglob("*.json"))
    assert json.loads(again.read_text())["predictions"] == doc["predictions"]
    r = cli("run", "temporal-aan-quick", "cognimuse", "--store", store, "--out", tmp_path / "ray", "--registry",
            reg, "--threads", "2", "--backend", "ray", *opt)
    assert r.exit_code != 0 and "--threads 2 is not available with --backend ray" in r.output


# --------------------------------------------------------------------------
# The shared trainer's extra training input


class _Probe(torch.nn.Module):
    """Records (training mode, number of inputs) of every call."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)
        self.calls: list[tuple[bool, int]] = []

    def forward(self, *inputs):
        self.calls.append((self.training, len(inputs)))
        out = self.lin(inputs[0][:, -1]).squeeze(-1)
        return out + (inputs[1][:, -1] * 0.0 if len(inputs) > 1 else 0.0)


def test_trainer_feeds_the_extra_input_in_training_batches_only():
    from aanbench.training import TrainConfig, predict_torch, train_torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4, 3)).astype(np.float32)
    y = rng.normal(size=30).astype(np.float32)
    net = _Probe()
    rows = np.repeat(y[:, None], 4, axis=1)
    train_torch(net, [x[:24]], y[:24], [x[24:]], y[24:], TrainConfig(max_epochs=2, patience=5, batch_size=8), 0,
                train_extra=rows[:24])
    predict_torch(net, [x])
    assert {c for c in net.calls if c[0]} == {(True, 2)}  # training batches: features + labels
    assert {c for c in net.calls if not c[0]} == {(False, 1)}  # validation and prediction: features only
    assert sum(1 for c in net.calls if not c[0]) == 3  # two validation passes, one prediction
    with pytest.raises(ValueError, match="train_extra has 23 rows for 24 training samples"):
        train_torch(_Probe(), [x[:24]], y[:24], None, None, TrainConfig(max_epochs=1), 0, train_extra=rows[:23])


def test_teacher_forcing_uses_the_row_labels():
    """Training on other previous outputs gives another model: the labels of
    the earlier rows reach the decoder in training."""
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(48, 5, 4)).astype(np.float32)]
    y = rng.uniform(-1, 1, size=48).astype(np.float32)
    rows = rng.uniform(-1, 1, size=(48, 5)).astype(np.float32)
    rows[:, -1] = y
    params = {"max_epochs": 4, "patience": 4, "batch_size": 12, "lr": 0.01}
    spec = get_plugins().model("temporal-aan")
    preds = []
    for r in (rows, -rows, None):
        m = spec.build(params, [4])
        m.fit(xs, y, None, None, seed=0, train_y_rows=r)
        preds.append(m.predict(xs))
    assert not np.allclose(preds[0], preds[1]) and not np.allclose(preds[0], preds[2])
