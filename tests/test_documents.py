"""The typed documents at the seams (issue 22): model bundles
(:class:`aanbench.bundle.ModelBundle`) and results documents
(:class:`aanbench.results.RunResult`) read every layout aanbench has written
(files written here as the old code wrote them, from the git history),
round-trip, and refuse newer formats with an error naming the file; one CSV
number format; the runner free of the plugin kit."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aanbench.bundle import BUNDLE_FORMAT, MODEL_FORMAT, ModelBundle, TargetModel
from aanbench.contracts import AanbenchError, Item, OnDevice, SequenceSpec
from aanbench.csvformat import number_cell
from aanbench.features import Standardizer
from aanbench.leaderboard import results_table
from aanbench.modelfile import load_any, load_model, save_bundle, save_model
from aanbench.plugin_manager import get_plugins
from aanbench.predict import predict_group
from aanbench.registry import ExperimentConfig
from aanbench.results import RESULTS_FORMAT, RunResult, TargetResult
from aanbench.runner import config_fingerprint, read_results, run_experiment, train_bundle, write_results
from aanbench.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# A small store and a real (ridge) training on it


def _store(tmp_path: Path, n: int = 60):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(n, 5)).astype(np.float32)
    b = (rng.normal(size=(n, 3)) * 20 + 4).astype(np.float32)
    val = np.tanh(a[:, 0] + 0.1 * rng.normal(size=n))
    aro = np.tanh(0.05 * (b[:, 1] - 4) + 0.1 * rng.normal(size=n))
    items = [Item(f"i{i:03d}", None, start=2.0 * (i % 10), end=2.0 * (i % 10) + 2.0,
                  labels={"valence": float(val[i]), "arousal": float(aro[i])},
                  group=f"m{i // 10}", split="train" if i < 40 else "test") for i in range(n)]
    g = FeatureStore(tmp_path / "store").ensure_group("docs", items, chunk_rows=16)
    for name, x in (("fa", a), ("fb", b)):
        g.import_rows(f"{name}@imported", x, {"extractor": name, "version": "imported", "dim": 0, "config": {},
                                               "weights": {}, "libraries": {}, "source": "test"})
    return g


class _Dataset:
    name = "docs"
    targets = ("valence", "arousal")
    protocol = "fixed"
    segmentation = "default"

    def config(self) -> dict:
        return {}


def _exp(**params) -> ExperimentConfig:
    return ExperimentConfig(name="docs-ridge", model="ridge", description="ridge on fa+fb", feature_set="ab",
                            features=("fa", "fb"), params=params, protocol=None, seed=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    g = _store(tmp)
    plugins = get_plugins()
    return g, plugins, train_bundle(_exp(), _Dataset(), g, plugins), run_experiment(_exp(), _Dataset(), g, plugins)


# --------------------------------------------------------------------------
# Model bundles


def test_bundle_round_trips_through_its_file_and_predicts_the_same(trained, tmp_path):
    g, plugins, bundle, _ = trained
    assert isinstance(bundle, ModelBundle) and set(bundle.targets) == {"valence", "arousal"}
    assert all(isinstance(t.standardize, Standardizer) for t in bundle.targets.values())
    path = save_bundle(tmp_path / "b.pt", bundle)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == BUNDLE_FORMAT and set(raw["targets"]["valence"]) == {
        "state", "standardize", "params", "settings", "fit"}
    back = load_any(path)
    assert back == bundle and back.source_format == BUNDLE_FORMAT and back.path == str(path)
    assert back.samples == SequenceSpec() and back.feature_keys == ["fa@imported", "fb@imported"]
    assert back.to_payload().keys() == raw.keys()
    # the payload-dict view readers written against the old dict still use
    assert back["targets"]["arousal"]["fit"] == bundle.targets["arousal"].fit
    assert back["samples"] == raw["samples"] and back["source_format"] == BUNDLE_FORMAT
    a, b = predict_group(bundle, g, plugins), predict_group(back, g, plugins)
    for t in ("valence", "arousal"):
        np.testing.assert_array_equal(a.values[t], b.values[t])
        assert np.isfinite(a.values[t]).all()
    # the same bundle given as its payload dict
    np.testing.assert_array_equal(predict_group(raw, g, plugins).values["valence"], a.values["valence"])


def test_a_changed_bundle_is_not_equal(trained):
    _, _, bundle, _ = trained
    other = load_any_like(bundle)
    assert other == bundle
    other.targets["valence"].standardize.mean[0][0] += 1.0
    assert other != bundle


def load_any_like(bundle: ModelBundle) -> ModelBundle:
    return ModelBundle.from_payload(bundle.to_payload(), "copy")


def _old_single_target_payload(std: bool = True) -> dict:
    """``aanbench.model/1`` as the first runner wrote it (commit 1db932a/2f2ee79:
    no input, samples or dims; feature keys in the provenance)."""
    rng = np.random.default_rng(0)
    return {
        "format": MODEL_FORMAT, "model": "ridge", "target": "arousal", "features": ["fa", "fb"],
        "standardize": {"mean": [torch.from_numpy(rng.normal(size=5).astype(np.float32)),
                                 torch.zeros(3)],
                        "std": [torch.ones(5), torch.full((3,), 2.0)]} if std else None,
        "state": {"coef": torch.arange(8, dtype=torch.float64), "intercept": 0.25},
        "provenance": {"experiment": "e1", "dataset": "docs", "fold": "test", "seed": 4,
                       "feature_keys": ["fa@imported", "fb@imported"]},
    }


def test_first_single_target_model_file_loads_as_a_bundle_of_one(tmp_path):
    old = _old_single_target_payload()
    path = tmp_path / "old.pt"
    torch.save(old, path)
    b = load_any(path)
    assert b.source_format == MODEL_FORMAT and list(b.targets) == ["arousal"]
    assert b.samples == SequenceSpec(1, 1, "group", "last", "drop") and b.input == "rows" and b.dims == []
    assert b.feature_keys == ["fa@imported", "fb@imported"] and b.seed == 4
    assert b.experiment == {"name": "e1"} and b.dataset == {"name": "docs"}
    t = b.targets["arousal"]
    np.testing.assert_array_equal(t.standardize.std[1], np.full(3, 2.0, np.float32))
    assert torch.equal(t.state["coef"], old["state"]["coef"])
    # written back in the single-target layout: the old keys unchanged, windows and dims now recorded
    save_model(tmp_path / "again.pt", b)
    again = load_model(tmp_path / "again.pt")
    for k in ("format", "model", "target", "features", "provenance"):
        assert again[k] == old[k]
    assert again["samples"] == SequenceSpec().to_dict() and again["input"] == "rows"
    assert load_any(tmp_path / "again.pt") == b


def test_run_save_models_file_with_windows_and_a_converted_file_without_standardiser(tmp_path):
    new = {**_old_single_target_payload(std=False), "input": "sequences", "dims": [5, 3],
           "samples": {"length": 3, "stride": 1, "scope": "file", "label": "mean", "start": "pad"}}
    path = tmp_path / "seq.pt"
    torch.save(new, path)
    b = load_any(path)
    assert b.sequences and b.dims == [5, 3] and b.samples == SequenceSpec(3, 1, "file", "mean", "pad")
    t = b.targets["arousal"]
    assert t.standardize is None and b["targets"]["arousal"]["standardize"] is None
    ident = t.scaler([5, 3])
    assert [m.tolist() for m in ident.mean] == [[0.0] * 5, [0.0] * 3]
    assert b.to_model_payload().keys() == new.keys()


@pytest.mark.parametrize("payload, message", [
    ({"format": "aanbench.bundle/2", "model": "ridge"}, "aanbench.bundle/2 is not one this aanbench reads"),
    ({"format": "aanbench.model/7"}, "aanbench.model/7 is not one this aanbench reads"),
    ({"format": "something/1"}, "not an aanbench model file"),
    ([1, 2, 3], "not an aanbench model file"),
    ({"format": BUNDLE_FORMAT, "model": "ridge", "features": [], "samples": {}, "targets": {}}, "damaged"),
    ({"format": MODEL_FORMAT, "model": "ridge", "target": "arousal", "features": []}, r"lacks \['state'\]"),
])
def test_newer_or_damaged_model_files_are_refused_naming_the_file(tmp_path, payload, message):
    path = tmp_path / "m.pt"
    torch.save(payload, path)
    with pytest.raises(AanbenchError, match=message) as err:
        load_any(path)
    assert str(path) in str(err.value)


def test_unknown_keys_of_the_same_version_are_kept(trained, tmp_path):
    _, _, bundle, _ = trained
    payload = {**bundle.to_payload(), "note": "added by a later 1.x"}
    torch.save(payload, tmp_path / "x.pt")
    b = load_any(tmp_path / "x.pt")
    assert b.extra == {"note": "added by a later 1.x"} and b.to_payload()["note"] == "added by a later 1.x"


# --------------------------------------------------------------------------
# Results documents


def _first_results_doc() -> dict:
    """A results file as the first runner wrote it (commit 2f2ee79): no
    model_input, dataset_config, items_sha256, samples, settings, device,
    n_samples, per_group, config_fingerprint, nor prediction start/end."""
    rng = np.random.default_rng(2)
    y = rng.normal(size=12)
    p = y + 0.3 * rng.normal(size=12)
    preds = [{"item_id": f"i{i}", "group": f"m{i % 4}", "fold": "test", "target": "valence", "y_true": float(y[i]),
              "y_pred": float(p[i])} for i in range(12)]
    return {
        "format": RESULTS_FORMAT, "aanbench_version": "0.1.0", "experiment": "ridge", "description": "old",
        "model": "ridge", "model_version": "1", "dataset": "demo", "group": "demo/default", "feature_set": "ab",
        "features": [{"name": "fa", "key": "fa@1", "provenance": {}}], "protocol": "fixed", "seed": 0,
        "params": {"valence": {"alpha": 1.0}},
        "targets": {"valence": {"metrics": {"mse": float(np.mean((y - p) ** 2)), "pearson_r": 0.9, "ccc": 0.8,
                                            "n": 12, "mse_ci": [0.05, 0.2]},
                                "folds": {"test": {"mse": 0.1}}, "fits": [{"fold": "test", "n_fit": 30}],
                                "n_items": 40, "n_unusable": 0}},
        "predictions": preds,
        "seconds": 0.5,
    }


def test_first_results_file_loads_round_trips_and_keeps_its_fingerprint(tmp_path):
    old = _first_results_doc()
    path = tmp_path / "demo" / "ridge" / "seed0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(old, indent=1))
    [doc] = read_results([tmp_path], "demo")
    assert isinstance(doc, RunResult) and doc.file == str(path) and doc["_file"] == str(path)
    assert doc.samples is None and doc.settings is None and doc.device is None and doc.model_input is None
    t = doc.targets["valence"]
    assert isinstance(t, TargetResult) and t.n_samples is None and t.per_group is None and t.n_items == 40
    assert doc.to_payload() == old  # nothing added, nothing lost
    assert "samples" not in doc and doc.get("config_fingerprint", "?") == "?"
    assert config_fingerprint(doc) == config_fingerprint(old)
    assert len(doc.predictions_of("valence")) == 12 and doc.predictions_of("arousal") == []
    table = results_table([doc])  # the leaderboard reads it
    assert table.loc[0, "mse"] == pytest.approx(old["targets"]["valence"]["metrics"]["mse"])


def test_a_run_round_trips_through_its_results_file(trained, tmp_path):
    _, _, _, doc = trained
    assert isinstance(doc, RunResult) and doc.samples["n"] == 60 and doc.device == "cpu"
    doc.command = "aanbench run docs-ridge docs"
    path = write_results(doc, tmp_path)
    assert path == tmp_path / "docs" / "docs-ridge" / "seed3.json"
    raw = json.loads(path.read_text())
    assert list(raw)[:3] == ["format", "aanbench_version", "experiment"] and list(raw)[-3:] == [
        "seconds", "command", "config_fingerprint"]
    [back] = read_results([path])
    assert back == doc and back.config_fingerprint == config_fingerprint(raw)
    assert back["targets"]["arousal"]["metrics"]["n"] == doc.targets["arousal"].metrics["n"] == 20
    # a dict written as before is checked and written the same way
    assert write_results(raw, tmp_path / "again.json").read_text() == path.read_text()


def test_newer_or_damaged_results_files_are_refused_naming_them(tmp_path):
    (tmp_path / "notes.json").write_text(json.dumps({"something": "else"}))  # not results: passed over
    assert read_results([tmp_path]) == []
    newer = tmp_path / "new.json"
    newer.write_text(json.dumps({**_first_results_doc(), "format": "aanbench.results/2"}))
    with pytest.raises(AanbenchError, match="aanbench.results/2 is not one this aanbench reads") as err:
        read_results([tmp_path])
    assert str(newer) in str(err.value)
    newer.write_text(json.dumps({k: v for k, v in _first_results_doc().items() if k != "targets"}))
    with pytest.raises(AanbenchError, match=r"new.json: a damaged results file \(lacks \['targets'\]\)"):
        read_results([newer])
    newer.write_text("{not json")  # cut short (e.g. a writer killed): skipped with a warning naming it
    with pytest.warns(UserWarning, match="new.json: not a readable results file, skipped"):
        assert read_results([newer]) == []


# --------------------------------------------------------------------------
# One CSV number format; the runner without the plugin kit


def test_csv_numbers_round_trip_exactly():
    x = np.float32(0.3)
    assert number_cell(x) == "0.30000001192092896" and np.float32(float(number_cell(x))) == x
    for v in (1e-12, 123456789.125, -0.1, 2.0):
        assert float(number_cell(v)) == v
    assert number_cell(math.nan) == "" and number_cell(np.float32("inf")) == ""


def test_predict_and_curve_write_csv_through_the_one_formatter():
    for mod in ("aanbench/predict.py", "aanbench/curve_output.py"):
        src = (ROOT / mod).read_text()
        assert "number_cell" in src and "def _cell" not in src, mod


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_runner_needs_no_plugin_kit_and_predict_no_runner():
    assert not {m for m in _imports(ROOT / "aanbench/runner.py") if m.startswith("aanbench.pluginkit")}
    assert "aanbench.runner" not in _imports(ROOT / "aanbench/predict.py")
    from aanbench.pluginkit.torchmodel import TorchModel

    assert isinstance(TorchModel(), OnDevice)  # what the runner sets the device through
    assert not isinstance(get_plugins().model("ridge").build({**get_plugins().model("ridge").params}, [5, 3]),
                          OnDevice)


def test_target_model_payload_view():
    t = TargetModel({"w": torch.ones(2)}, Standardizer([np.zeros(2, np.float32)], [np.ones(2, np.float32)]))
    assert set(t) == {"state", "standardize"} and t.get("fit") is None
    assert torch.equal(t["standardize"]["std"][0], torch.ones(2))
    with pytest.raises(KeyError):
        t["nothing"]
