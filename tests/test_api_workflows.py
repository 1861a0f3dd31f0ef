"""The workflows from Python (`aanbench.api`), as a notebook calls them: a
benchmark of the small demo in a fresh interpreter, which must not import
the CLI's Typer or Rich, and whose returned runs hold the metrics written to
their results files."""

from __future__ import annotations

import json
import re
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from smalldemo import small_demo  # noqa: F401  (fixture)

SCRIPT = textwrap.dedent("""
    import json, sys
    from aanbench.api import BenchmarkEvents, benchmark

    class Seen(BenchmarkEvents):
        def __init__(self):
            self.runs_started, self.runs_finished, self.fits = [], [], 0

        def started(self, experiment, seed):
            self.runs_started.append([experiment, seed])

        def progress(self, done, total, what):
            self.fits += 1

        def finished(self, run):
            self.runs_finished.append(run.experiment)

    seen = Seen()
    store, out, lb = sys.argv[1:4]
    res = benchmark("demo", store, out, lb, experiments=["ridge", "mean"], seeds=[0, 1],
                    protocol="fixed", events=seen)
    print(json.dumps({
        "ui_modules": sorted(m for m in ("typer", "rich", "click") if m in sys.modules),
        "leaderboard": str(res.leaderboard), "figure": str(res.figure),
        "runs": [{"experiment": r.experiment, "seed": r.seed, "path": str(r.path), "metrics": r.metrics}
                 for r in res.runs],
        "skipped": res.skipped, "failed": res.failed,
        "events": {"started": seen.runs_started, "finished": seen.runs_finished, "fits": seen.fits},
    }))
""")


@pytest.mark.slow
def test_benchmark_from_python_without_typer_or_rich(small_demo, tmp_path):
    lb = tmp_path / "lb" / "demo.md"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(small_demo["store"]), str(tmp_path / "res"), str(lb)],
                       capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["ui_modules"] == [], got["ui_modules"]  # the application layer needs no CLI library
    assert got["failed"] is False and got["skipped"] == []
    runs = got["runs"]
    assert sorted((x["experiment"], x["seed"]) for x in runs) == [("mean", 0), ("mean", 1), ("ridge", 0), ("ridge", 1)]
    assert sorted(got["events"]["started"]) == [["mean", 0], ["mean", 1], ["ridge", 0], ["ridge", 1]]
    assert sorted(got["events"]["finished"]) == ["mean", "mean", "ridge", "ridge"] and got["events"]["fits"] >= 4
    for x in runs:
        doc = json.loads(open(x["path"]).read())
        assert doc["experiment"] == x["experiment"] and doc["seed"] == x["seed"]
        for target, m in x["metrics"].items():
            assert m == doc["targets"][target]["metrics"]
            preds = [p for p in doc["predictions"] if p["target"] == target]
            assert m["n"] == len(preds) == small_demo["n_test"]  # the fixed split's test clips
            err = np.array([p["y_true"] - p["y_pred"] for p in preds])
            assert np.isfinite(m["mse"]) and m["mse"] == pytest.approx(float(np.mean(err ** 2)), rel=1e-6)
    text = lb.read_text()
    for e in ("ridge", "mean"):  # one ranked row per experiment, its two seeds aggregated
        assert re.search(rf"^\|\s+\d+ \| {e}\s+\|.*\| 0, 1\s+\|", text, re.M), e
    assert (tmp_path / "lb" / "demo.png").stat().st_size > 10_000
