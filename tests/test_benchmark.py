"""`aanbench benchmark`: every registry experiment whose features are in the
store runs (the others are skipped with the reason, in a short table),
results record what the intervals used and the per-movie spread, the
leaderboard holds every run and, for EIMT16 and COGNIMUSE, the reported rows
in their own section."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from aanbench.metrics import group_spread
from aanbench.reported import load_reported

from conftest import run_cli
from smalldemo import small_demo  # noqa: F401  (fixture)

QUICK = """
[experiments.quick-aan]
extends = "feature-aan"
datasets.demo.max_epochs = 3
datasets.demo.patience = 3

[experiments.needs-neural]
model = "ridge"
description = "ridge on features the demo store does not hold"
features = "video"
"""


def test_benchmark_runs_what_the_store_allows_and_skips_the_rest(small_demo, tmp_path):
    reg = tmp_path / "mine.toml"
    reg.write_text(QUICK)
    lb = tmp_path / "lb" / "demo.md"
    only = "quick-aan,needs-neural,ridge,mean,linear,lstm"
    r = run_cli("benchmark", "demo", "--store", small_demo["store"], "--out", tmp_path / "res",
                "--registry", reg, "--experiments", only, "--protocol", "leave-one-group-out",
                "--seeds", "0,1", "--leaderboard", lb)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the summary table: one short row per experiment, the skipped one with its missing extractors
    assert re.search(r"needs-neural\s+│ skipped\s+│ features not in .*: resnet50, flownets, i3d", r.stdout), \
        r.stdout[-3000:]
    assert re.search(r"quick-aan\s+│ ran\s+│ 0, 1", r.stdout), r.stdout[-3000:]
    ran = sorted(p.parent.name + "/" + p.name for p in (tmp_path / "res" / "demo").glob("*/seed*.json"))
    assert ran == [f"{e}/seed{s}.json" for e in ("linear", "lstm", "mean", "quick-aan", "ridge") for s in (0, 1)]
    n_movies = len(small_demo["movies"])
    for f in (tmp_path / "res" / "demo").glob("*/seed0.json"):
        doc = json.loads(f.read_text())
        assert doc["protocol"] == "leave-one-group-out"
        for target, t in doc["targets"].items():
            m = t["metrics"]
            assert m["n"] == 12 * n_movies and m["resampled"] == "groups" and m["n_units"] == n_movies
            assert m["ccc_ci"] is not None
            preds = [p for p in doc["predictions"] if p["target"] == target]
            want = group_spread(np.array([p["y_true"] for p in preds]), np.array([p["y_pred"] for p in preds]),
                                np.array([p["group"] for p in preds]))
            got = t["per_group"]["pearson_r"]
            if doc["experiment"] == "mean":
                assert got["mean"] is None  # r undefined for a constant prediction in every movie
            else:
                assert got["mean"] == pytest.approx(want["pearson_r"]["mean"]) and got["k"] == n_movies
    text = lb.read_text()
    assert "Ranked by MSE" in text and f"jackknife over {n_movies} movies" in text
    assert "### Per seed" in text and "Reported" not in text
    for e in ("quick-aan", "ridge", "mean", "linear", "lstm"):  # one row per experiment, its seeds aggregated
        assert re.search(rf"^\|\s+\d+ \| {e}\s+\|.*\| 0, 1\s+\|", text, re.M), e
    assert "| needs-neural" not in text and lb.with_suffix(".png").stat().st_size > 10_000


def test_benchmark_refuses_an_unknown_experiment_and_a_bad_seed_list(small_demo, tmp_path):
    r = run_cli("benchmark", "demo", "--store", small_demo["store"], "--out", tmp_path, "--experiments", "nope")
    assert r.returncode == 2 and "no experiment nope" in r.stdout + r.stderr
    r = run_cli("benchmark", "demo", "--store", small_demo["store"], "--out", tmp_path, "--seeds", "0,x")
    assert r.returncode == 2 and "--seeds" in r.stdout + r.stderr


OFFICIAL = """
[feature_sets]
wf = ["affect"]

[experiments.wf-aan]
extends = "feature-aan"
datasets.{ds}.features = "wf"
datasets.{ds}.max_epochs = 3
datasets.{ds}.patience = 3

[experiments.wf-mean]
extends = "mean"
datasets.{ds}.features = "wf"
"""


@pytest.mark.parametrize("dataset", ["eimt16", "cognimuse"])
def test_official_layout_leaderboard_holds_the_reported_rows(tmp_path, dataset):
    from fixtures_official import write_cognimuse, write_eimt16  # the official-layout fixtures

    if dataset == "eimt16":
        root, opts = write_eimt16(tmp_path / "copy").root, []
    else:
        movies = ("BMI", "CHI", "CRA", "GLA")
        root = write_cognimuse(tmp_path / "copy", movies=movies, seconds=32.0, experienced=(), audio=False).root
        opts = ["-o", "movies=" + ",".join(movies)]
    store = tmp_path / "store"
    r = run_cli("extract", dataset, "--root", root, "--store", store, "-e", "affect", *opts)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    reg = tmp_path / "mine.toml"
    reg.write_text(OFFICIAL.replace("{ds}", dataset))
    lb = tmp_path / f"{dataset}.md"
    r = run_cli("benchmark", dataset, "--store", store, "--out", tmp_path / "res", "--registry", reg,
                "--experiments", "wf-aan,wf-mean,feature-aan", "--leaderboard", lb, *opts)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = lb.read_text()
    ranked, reported = text.split("## Reported, not re-run")
    for method in load_reported(dataset)["method"]:
        assert method.replace("|", "/") in reported
    assert re.search(r"feature-aan\s+│ skipped\s+│ features not in", r.stdout)  # the paper's features: not here
    assert "aanbench experiment `feature-aan`" in reported  # its twin, named (re-run links: test_leaderboard.py)
    assert "| wf-aan " in ranked and "| wf-mean " in ranked
    if dataset == "eimt16":  # the official files name no source film of the test excerpts: said in the header
        assert "items treated as independent" in ranked and "none for the MediaEval 2016 test excerpts" in ranked
    assert not re.search(r"^\|\s+\d+ \| feature-aan", ranked, re.M)  # published rows are never ranked
