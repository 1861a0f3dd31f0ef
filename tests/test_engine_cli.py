"""The engine through the command line, on a small generated demo (real
clips, real decoding, real Zarr): a third-party sequence model runs through
`aanbench run` on windows built by the engine; `aanbench train` writes one
bundle that `aanbench predict` applies (item_id,start,end,valence,arousal);
left-out items get a reason and exit 1; single-target files keep working;
`aanbench models info`; results keyed by dataset/experiment/seed, read
together by `aanbench leaderboard`."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aanbench.store import FeatureStore

from conftest import REPO, run_aanbench, run_cli

CLIPS = 48  # 4 movies of 12 clips: m01-m03 train, m04 test

REGISTRY = """
[feature_sets]
engine-test = ["logmel", "affect"]

[experiments.engine-seq]
model = "example-seq-ridge"
description = "mean over 3 consecutive clips of a movie, then ridge"
features = "engine-test"
params = { alpha = 10.0, sequence_length = 3, val_fraction = 0.0 }

[experiments.engine-ridge]
model = "ridge"
description = "ridge on the engine-test features"
features = "engine-test"

[experiments.engine-aan]
model = "feature-aan"
description = "a short Feature AttendAffectNet"
features = "engine-test"
params = { max_epochs = 15, patience = 5, batch_size = 16, lr = 0.005, val_fraction = 0.2 }
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A 48-clip demo with logmel and affect features, a registry of test
    experiments, and an environment in which the example sequence model
    (tests/thirdparty_plugin/aanbench_example/meanseq.py) is installed: its
    entry point declared in a distribution's metadata, as pip writes it."""
    work = tmp_path_factory.mktemp("engine")
    r = run_cli("datasets", "make-demo", work / "data", "--clips", CLIPS)
    assert r.returncode == 0, r.stderr
    r = run_cli("extract", "demo", "--root", work / "data", "--store", work / "store", "-e", "logmel,affect")
    assert r.returncode == 0, r.stdout + r.stderr
    site = work / "site"
    dist = site / "aanbench_example_seq-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aanbench-example-seq\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aanbench]\nexample_seq = aanbench_example.meanseq\n")
    path = os.pathsep.join([str(site), str(REPO / "tests" / "thirdparty_plugin"), os.environ.get("PYTHONPATH", "")])
    (work / "registry.toml").write_text(REGISTRY)
    return {"work": work, "store": work / "store", "registry": work / "registry.toml", "env": {"PYTHONPATH": path}}


def aanbench(demo, *args):
    """A fresh process, for what needs the example sequence model: a plugin
    found on the fixture's PYTHONPATH (plugin discovery runs once per process)."""
    return run_aanbench(*args, env=demo["env"])


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def items(demo):
    return FeatureStore(demo["store"], mode="r").open_group("demo").item_table()


@pytest.mark.slow  # fresh processes (a plugin found on PYTHONPATH)
def test_sequence_model_runs_through_run_on_engine_windows(demo, tmp_path):
    r = aanbench(demo, "run", "engine-seq", "demo", "--store", demo["store"], "--out", tmp_path / "results",
                 "--registry", demo["registry"], "--protocol", "fixed", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    path = Path(summary["results"])
    assert path == tmp_path / "results" / "demo" / "engine-seq" / "seed0.json"
    doc = json.loads(path.read_text())
    assert doc["model_input"] == "sequences"
    assert doc["samples"] == {"length": 3, "stride": 1, "scope": "group", "label": "last", "start": "drop", "n": 40}
    t = items(demo)
    test_movies = sorted(set(t.group[t.split == "test"]))
    # windows of 3 clips within a movie: every test clip but the first two of its movie, named by its last clip
    want = sorted(i for g in test_movies for i in t.id[t.group == g].tolist()[2:])
    for target in ("valence", "arousal"):
        preds = [p for p in doc["predictions"] if p["target"] == target]
        assert sorted(p["item_id"] for p in preds) == want
        assert all("start" in p and "end" in p for p in preds)
        labels = dict(zip(t.id, FeatureStore(demo["store"], mode="r").open_group("demo").labels(target)))
        assert all(p["y_true"] == pytest.approx(float(labels[p["item_id"]])) for p in preds)
    assert summary["metrics"]["arousal"]["n"] == len(want)


def test_train_writes_one_bundle_and_predict_applies_it(demo, tmp_path):
    bundle = tmp_path / "aan.pt"
    r = run_cli("train", "engine-aan", "demo", "--store", demo["store"], "--out", bundle,
                "--registry", demo["registry"], "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["bundle"] == str(bundle)  # the demo's default protocol: leave-one-movie-out
    payload = torch.load(bundle, weights_only=True)
    assert payload["format"] == "aanbench.bundle/1" and set(payload["targets"]) == {"valence", "arousal"}
    assert payload["features"] == ["logmel", "affect"] and payload["feature_keys"] == ["logmel@1", "affect@2"]
    assert payload["samples"]["length"] == 1 and payload["seed"] == 0
    assert payload["experiment"]["name"] == "engine-aan" and payload["dataset"]["name"] == "demo"
    t = items(demo)
    n_train = int((t.split == "train").sum())
    for target, v in payload["targets"].items():
        assert v["fit"]["n_fit"] + v["fit"]["n_val"] == n_train  # every movie but those the demo marks test
        assert [m.shape[0] for m in v["standardize"]["mean"]] == payload["dims"]

    out = tmp_path / "pred.csv"
    r = run_cli("predict", bundle, "--store", demo["store"], "--dataset", "demo", "--out", out, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    header, rows = read_csv(out)
    assert header == ["item_id", "start", "end", "valence", "arousal", "reason"]
    assert [row["item_id"] for row in rows] == t.id.tolist()
    assert all(row["reason"] == "" and row["valence"] and row["arousal"] for row in rows)

    # the same numbers as the bundle's network on features standardised with its statistics
    from aanbench_plugins.models.feature_aan import restore

    g = FeatureStore(demo["store"], mode="r").open_group("demo")
    x = [g.feature(k).read() for k in payload["feature_keys"]]
    sd = payload["targets"]["arousal"]["standardize"]
    xs = [(a - m.numpy()) / s.numpy() for a, m, s in zip(x, sd["mean"], sd["std"])]
    want = restore(payload["targets"]["arousal"]["state"]).predict([a.astype(np.float32) for a in xs])
    np.testing.assert_allclose([float(row["arousal"]) for row in rows], want, rtol=1e-5, atol=1e-6)

    info = run_cli("models", "info", bundle, "--json")
    assert info.returncode == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["targets"] == ["valence", "arousal"] and meta["feature_keys"] == ["logmel@1", "affect@2"]
    assert meta["experiment"]["name"] == "engine-aan" and meta["windows"]["length"] == 1
    text = run_cli("models", "info", bundle)
    assert text.returncode == 0 and "logmel@1" in text.stdout and "engine-aan" in text.stdout


@pytest.mark.slow  # fresh processes (a plugin found on PYTHONPATH)
def test_sequence_bundle_rebuilds_its_windows(demo, tmp_path):
    bundle = tmp_path / "seq.pt"
    r = aanbench(demo, "train", "engine-seq", "demo", "--store", demo["store"], "--out", bundle,
                 "--registry", demo["registry"])
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "seq.csv"
    r = aanbench(demo, "predict", bundle, "--store", demo["store"], "--dataset", "demo", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    _, rows = read_csv(out)
    t = items(demo)
    want = [i for g in dict.fromkeys(t.group) for i in t.id[t.group == g].tolist()[2:]]
    assert [row["item_id"] for row in rows] == want  # every movie's windows of 3, as in training


def test_left_out_items_get_a_reason_and_exit_1_and_single_target_files_work(demo, tmp_path):
    models = tmp_path / "models"
    r = run_cli("run", "engine-ridge", "demo", "--store", demo["store"], "--out", tmp_path / "res",
                "--registry", demo["registry"], "--protocol", "fixed", "--save-models", models)
    assert r.returncode == 0, r.stdout + r.stderr
    single = models / "engine-ridge__demo__valence__test.pt"
    assert single.is_file()
    store = tmp_path / "store"
    shutil.copytree(demo["store"], store)
    g = FeatureStore(store).open_group("demo")
    g.feature("affect@2").mark_chunk_failed(slice(0, 3), "decode error: a test reason")
    out = tmp_path / "p.csv"
    r = run_cli("predict", single, "--store", store, "--dataset", "demo", "--out", out)
    assert r.returncode == 1, r.stdout + r.stderr
    header, rows = read_csv(out)
    assert header == ["item_id", "start", "end", "valence", "reason"]
    assert [row["valence"] == "" for row in rows] == [True] * 3 + [False] * (CLIPS - 3)
    assert "affect@2" in rows[0]["reason"] and "a test reason" in rows[0]["reason"]
    info = json.loads(run_cli("models", "info", single, "--json").stdout)
    assert info["format"] == "aanbench.model/1" and info["targets"] == ["valence"]


def test_results_of_two_seeds_sit_side_by_side_and_the_leaderboard_reads_both(demo, tmp_path):
    res = tmp_path / "results"
    base = ["run", "engine-ridge", "demo", "--store", demo["store"], "--out", res, "--registry", demo["registry"]]
    for seed in ("0", "1", "0"):
        r = run_cli(*base, "--seed", seed)
        assert r.returncode == 0, r.stdout + r.stderr
    folder = res / "demo" / "engine-ridge"
    assert sorted(p.name for p in folder.iterdir()) == ["seed0.json", "seed1.json"]  # rerun of seed 0 replaced it
    # a changed configuration never overwrites: it goes beside
    changed = tmp_path / "registry.toml"
    changed.write_text(REGISTRY.replace('features = "engine-test"\n\n[experiments.engine-aan]',
                                        'features = "engine-test"\nparams = { alphas = [1.0] }\n\n'
                                        '[experiments.engine-aan]'))
    r = run_cli("run", "engine-ridge", "demo", "--store", demo["store"], "--out", res, "--registry", changed)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 3 and files[0].startswith("seed0-") and files[1:] == ["seed0.json", "seed1.json"]
    docs = [json.loads((folder / f).read_text()) for f in files]
    assert len({d["config_fingerprint"] for d in docs}) == 2  # two configurations
    lb = tmp_path / "lb.md"
    r = run_cli("leaderboard", "demo", "--results", res, "--out", lb)
    assert r.returncode == 0, r.stdout + r.stderr
    text = lb.read_text()
    # one ranked row per configuration (its seeds aggregated: "0, 1"), named by how the two differ
    rows = [line for line in text.splitlines() if line.startswith("|") and "engine-ridge (" in line]
    ranked = [line for line in rows if "| ridge |" in line]
    assert len(ranked) == 4  # 2 configurations x 2 targets
    assert sum("alphas=[1.0]" in line and "| 0     |" in line for line in ranked) == 2
    assert sum("alphas=[0.1, 1.0" in line and "| 0, 1  |" in line for line in ranked) == 2
