"""Results files keyed by dataset, experiment and seed (a changed
configuration goes beside, never over), and leaderboards that read every
results file, duplicates included."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from aanbench.contracts import AanbenchError
from aanbench.leaderboard import render_markdown, results_table, run_labels, write_leaderboard
from aanbench.protocols import get_protocol
from aanbench.runner import RESULTS_FORMAT, read_results, write_results


def doc(experiment: str = "ridge", seed: int = 0, alpha: float = 1.0, mse: float = 0.5) -> dict:
    preds = [{"item_id": f"m1_{k}", "start": 5.0 * k, "end": 5.0 * k + 5, "group": "m1", "fold": "test",
              "target": t, "y_true": 0.1 * k, "y_pred": 0.1 * k + seed * 0.01} for t in ("valence", "arousal")
             for k in range(4)]
    metrics = {"n": 4, "mse": mse, "mse_ci": [mse - 0.1, mse + 0.1], "pearson_r": 0.9, "pearson_r_ci": None,
               "ccc": 0.8}
    return {"format": RESULTS_FORMAT, "experiment": experiment, "model": "ridge", "model_version": "1",
            "dataset": "demo", "dataset_config": {}, "items_sha256": "x", "feature_set": "f", "protocol": "fixed",
            "samples": {"length": 1}, "params": {"valence": {"alpha": alpha}}, "settings": {},
            "features": [{"key": "a@1"}], "seed": seed,
            "targets": {"valence": {"metrics": metrics, "folds": {}}, "arousal": {"metrics": metrics, "folds": {}}},
            "predictions": preds}


def test_results_are_keyed_by_dataset_experiment_and_seed(tmp_path: Path) -> None:
    p0 = write_results(doc(seed=0), tmp_path)
    p1 = write_results(doc(seed=1), tmp_path)
    assert (p0, p1) == (tmp_path / "demo/ridge/seed0.json", tmp_path / "demo/ridge/seed1.json")
    assert write_results(doc(seed=0, mse=0.4), tmp_path) == p0  # same configuration: a rerun replaces it
    assert json.loads(p0.read_text())["targets"]["valence"]["metrics"]["mse"] == 0.4
    p2 = write_results(doc(seed=0, alpha=10.0), tmp_path)  # another configuration: beside, not over
    assert p2.parent == p0.parent and p2.name.startswith("seed0-") and p0.is_file()
    assert write_results(doc(seed=0, alpha=10.0), tmp_path) == p2
    assert write_results(doc(), tmp_path / "one.json") == tmp_path / "one.json"
    assert len(read_results([tmp_path])) == 4
    assert sorted(d["seed"] for d in read_results([tmp_path / "demo"], "demo")) == [0, 0, 1]
    assert read_results([tmp_path], "eimt16") == []


def test_leaderboard_never_trips_on_duplicates(tmp_path: Path) -> None:
    docs = [doc(seed=0), doc(seed=1, mse=0.3), doc("mean", mse=0.9)]
    twice = docs + [copy.deepcopy(docs[0])]
    assert run_labels(docs) == ["ridge (seed 0)", "ridge (seed 1)", "mean"]
    labels = run_labels(twice)
    assert len(set(labels)) == 4
    table = results_table(twice)
    assert len(table) == 8 and table[table.target == "valence"].iloc[0]["run"] == "ridge (seed 1)"
    md, fig = write_leaderboard("demo", twice, tmp_path / "lb.md")
    text = md.read_text()
    assert re.search(r"\|\s+\d \| ridge\s+\|.*\| 0, 1\s+\|", text) and fig.stat().st_size > 5000  # seeds: one row
    assert "1 results file(s) repeating a seed" in text
    with pytest.raises(AanbenchError, match="no results"):
        render_markdown("demo", [])


def test_unlabelled_dataset_says_what_to_do() -> None:
    with pytest.raises(AanbenchError, match="unlabelled: nothing to train.*aanbench predict"):
        get_protocol("none")
