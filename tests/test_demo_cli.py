"""`aanbench demo`'s speed levers keep its numbers: clips made by several
processes are the same files; runs trained several at a time in worker
processes (``ProcessFits``) give the predictions local fits give, started
longest first; ``demo --rerun`` trains everything again (the same numbers
with one process as with two) and the demo ends with its table of where
the time went. Real clips, decoding, openSMILE, Zarr and training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_cli
from smalldemo import CLIPS, copy_run, small_demo, small_demo_run  # noqa: F401  (fixtures)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_clips_made_by_two_processes_are_the_files_one_makes(tmp_path):
    from aanbench_plugins.datasets.demo import make_demo

    seen = []
    make_demo(tmp_path / "one", clips=6, workers=1)
    make_demo(tmp_path / "two", clips=6, workers=2, progress=lambda done, total: seen.append((done, total)))
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len([k for k in one if k.endswith(".mp4")]) == 6
    assert one.keys() == two.keys() and all(one[k] == two[k] for k in one), \
        [k for k in one if one[k] != two.get(k)]
    assert seen[-1] == (6, 6) and [d for d, _ in seen] == list(range(1, 7))
    # a killed run: the missing clips are made again by the pool, the same bytes
    (tmp_path / "two" / "clips" / "m02_c002.mp4").unlink()
    (tmp_path / "two" / "labels.csv").unlink()
    make_demo(tmp_path / "two", clips=6, workers=2)
    assert _files(tmp_path / "two") == one
    r = run_cli("datasets", "make-demo", tmp_path / "cli", "--clips", "6", "-j", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _files(tmp_path / "cli") == one


def _predictions(out: Path) -> dict:
    got = {}
    for f in sorted(out.glob("demo/*/seed*.json")):
        d = json.loads(f.read_text())
        got[d["experiment"]] = (d["predictions"], {t: v["metrics"] for t, v in d["targets"].items()})
    return got


@pytest.mark.slow  # 4 experiments x 2 paths on the small demo
def test_process_fits_give_the_predictions_of_local_fits(small_demo, tmp_path):  # noqa: F811
    from aanbench.backends.fits_processes import ProcessFits
    from aanbench.workflows.benchmark import BenchmarkEvents, benchmark

    some = ["feature-aan-video", "mean", "ridge", "temporal-aan-video"]  # stacked rows and sequences, sklearn, none

    class Order(BenchmarkEvents):
        def __init__(self) -> None:
            self.started_: list[str] = []
            self.finished_: list[str] = []

        def started(self, experiment, seed):
            self.started_.append(experiment)

        def finished(self, run):
            self.finished_.append(run.experiment)

    local = benchmark("demo", small_demo["store"], tmp_path / "local", tmp_path / "local.md", experiments=some)
    order = Order()
    rank = {"mean": 0, "ridge": 1, "feature-aan-video": 2, "temporal-aan-video": 3}
    with ProcessFits(2, priority=lambda exp: rank[exp.name]) as fits:
        pooled = benchmark("demo", small_demo["store"], tmp_path / "pool", tmp_path / "pool.md", experiments=some,
                           backend=fits, events=order)
    assert not local.failures and not pooled.failures
    assert order.started_ == ["temporal-aan-video", "feature-aan-video", "ridge", "mean"]  # longest first
    assert sorted(order.finished_) == some
    a, b = _predictions(tmp_path / "local"), _predictions(tmp_path / "pool")
    assert sorted(a) == sorted(b) == some
    for name in some:
        assert a[name] == b[name], name  # bit for bit
    # a side job shares the pool; a run that fails is reported and the others go on
    with ProcessFits(2) as fits:
        job = fits.submit(sorted, [3, 1, 2])
        again = benchmark("demo", small_demo["store"], tmp_path / "pool", tmp_path / "pool.md",
                          experiments=["mean"], backend=fits, rerun=True)
        assert job.result() == [1, 2, 3]
    assert [r.experiment for r in again.runs] == ["mean"] and not again.resumed


def _moved(csv: str, old: Path, new: Path) -> str:
    """A curve CSV written in work folder ``old``, as it reads in its copy
    ``new``: the paths it names moved, and the film's store group (named
    from the film's path) masked."""
    return re.sub(r"\(store group [^)]*\)", "(store group)", csv.replace(str(old), str(new)))


def _timings(stdout: str) -> dict[str, float]:
    """The rows of the demo's closing table: step -> seconds."""
    rows = {}
    for line in stdout.split("where the time went:", 1)[1].splitlines():
        m = re.match(r"^[│|]\s*(.+?)\s*[│|]\s*([0-9.]+)\s*[│|]$", line.strip())
        if m:
            rows[m.group(1)] = float(m.group(2))
    return rows


@pytest.mark.slow  # a rerun of every demo experiment on the small demo (the first run is shared)
@pytest.mark.xdist_group("small-demo-run")  # with the other tests of the one run (tests/test_demo.py)
def test_demo_rerun_trains_again_with_the_same_numbers_and_says_where_the_time_went(small_demo_run, tmp_path):  # noqa: F811
    first = small_demo_run  # `demo --clips 36 -j 2` on a copy of the small demo's data and store
    assert first["returncode"] == 0, first["stdout"][-3000:] + first["stderr"][-3000:]
    run = copy_run(first, tmp_path / "run")
    work, lb = run["work"], run["board"]
    rows = _timings(first["stdout"])
    names = list(rows)
    assert names[0] == "clips (2 workers)" and names[1] == "extraction (2 workers)", names
    n = len(list((work / "results").glob("demo/*/seed*.json")))
    assert n >= 11 and f"training ({n} of {n} experiments, 2 at a time)" in rows, names
    assert {"boards", "curve (waiting for it after the boards)", "emobase2010 (summed over workers)",
            "the curve, drawn beside the training"} <= set(names), names
    assert "load average" in first["stdout"]
    before = _predictions(work / "results")
    stamps = {p: p.stat().st_mtime_ns for p in (work / "results").glob("demo/*/seed*.json")}
    curve = _moved((work / "curve" / "demo-test-movies.mp4.curve.csv").read_text(), first["work"], work)

    again = run_cli("demo", "--workdir", work, "--leaderboard", lb, "--clips", CLIPS, "-j", "1", "--rerun")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    rows = _timings(again.stdout)
    assert f"training ({n} of {n} experiments)" in rows and "curve (bundle, film, extraction, plots)" in rows, rows
    assert not re.search(r"^resumed ", again.stdout, re.M)
    assert all(p.stat().st_mtime_ns > t for p, t in stamps.items())  # every results file written again
    assert _predictions(work / "results") == before  # one process or two: the same numbers
    assert _moved((work / "curve" / "demo-test-movies.mp4.curve.csv").read_text(), first["work"], work) == curve
