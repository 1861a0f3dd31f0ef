"""Issue 27 (items 1, 4-7) through the in-process command line: the named
models are listed and accepted by name (`predict`, `models info`); `weights
add FOLDER`; `datasets make-fixture`; on a generated EIMT16 copy whose store
holds only the weight-free features, `run mean eimt16` and `benchmark eimt16
--features weightfree-both` work, a benchmark without those features says in
a short table which experiments were skipped for which missing extractor,
and a second identical benchmark rewrites no results file (`--rerun`
does); `run`/`train` take `--protocol` and the demo's default is
leave-one-movie-out; `predict` warns for a demo-trained model and writes
label and split columns (`--with-labels`); `leaderboard --format`."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aanbench.curve import DEMO_WARNING

from smalldemo import small_demo  # noqa: F401  (fixture)
from test_weights import _file, tiny_plugin  # noqa: F401  (fixture)

WEIGHTFREE = "affect,emobase2010,logmel"
OPT = ["--option", "official_counts=false"]


def invoke(*args):
    from aanbench.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def files_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every results file: (inode, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*.json"))}


@pytest.fixture(scope="module")
def eimt16(tmp_path_factory):
    """`datasets make-fixture eimt16`, then the weight-free features only (no
    weight files anywhere: the weights folder is an empty one)."""
    work = tmp_path_factory.mktemp("eimt16-noweights")
    saved = os.environ.get("AANBENCH_WEIGHTS")
    os.environ["AANBENCH_WEIGHTS"] = str(work / "no-weights")  # an empty weights folder; restored below
    r = invoke("datasets", "make-fixture", "eimt16", work / "fx")
    assert r.exit_code == 0, r.output
    assert "official layout" in r.output and "aanbench run mean eimt16 --option official_counts=false" in r.output
    store = work / "store"
    r = invoke("extract", "eimt16", "--root", work / "fx", *OPT, "--store", store, "--extractors", WEIGHTFREE)
    assert r.exit_code == 0, r.output
    yield {"work": work, "root": work / "fx", "store": store}
    if saved is None:
        os.environ.pop("AANBENCH_WEIGHTS", None)
    else:
        os.environ["AANBENCH_WEIGHTS"] = saved


def fixture_labels(root: Path) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """(train, test) labels by excerpt, as the EIMT16 loader reads the fixture's official files."""
    from aanbench_plugins.datasets.eimt16 import Eimt16

    items = Eimt16().configure(official_counts="false").items(root)
    labels = {s: {i.id: (i.labels["valence"], i.labels["arousal"]) for i in items if i.split == s}
              for s in ("train", "test")}
    return labels["train"], labels["test"]


@pytest.mark.slow
def test_mean_runs_on_eimt16_without_any_features_of_the_paper(eimt16, tmp_path):
    out = tmp_path / "res"
    r = invoke("run", "mean", "eimt16", *OPT, "--store", eimt16["store"], "--out", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "eimt16" / "mean" / "seed0.json").read_text())
    assert doc["feature_set"] == "none" and doc["features"] == [] and doc["protocol"] == "fixed"
    train, test = fixture_labels(eimt16["root"])
    assert len(train) == 12 and len(test) == 4
    for k, target in enumerate(("valence", "arousal")):
        # validation is carved from training data and both are training data: the mean of all 12
        mean = float(np.mean([v[k] for v in train.values()]))
        want = float(np.mean([(v[k] - mean) ** 2 for v in test.values()]))
        m = doc["targets"][target]["metrics"]
        assert m["n"] == 4 and m["mse"] == pytest.approx(want, rel=1e-5)
        preds = {p["item_id"]: p["y_pred"] for p in doc["predictions"] if p["target"] == target}
        assert sorted(preds) == sorted(test) and np.allclose(list(preds.values()), mean, atol=1e-5)


@pytest.mark.slow
def test_benchmark_on_weightfree_features_resumes_and_reports_what_it_skipped(eimt16, tmp_path):
    out, lb = tmp_path / "res", tmp_path / "lb" / "eimt16.md"
    only = "mean,ridge,random-forest,temporal-aan"
    args = ["benchmark", "eimt16", *OPT, "--store", eimt16["store"], "--out", out, "--leaderboard", lb,
            "--experiments", only, "--features", "weightfree-both"]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    ran = sorted(p.parent.name for p in (out / "eimt16").glob("*/seed0.json"))
    assert ran == ["mean", "random-forest", "ridge"]
    docs = {e: json.loads((out / "eimt16" / e / "seed0.json").read_text()) for e in ran}
    assert docs["ridge"]["feature_set"] == "weightfree-both" and docs["mean"]["feature_set"] == "none"
    assert [f["name"] for f in docs["ridge"]["features"]] == ["affect", "emobase2010", "logmel"]
    # the random forests are regrouped by modality on the new set: video (affect), audio (emobase2010, logmel)
    assert docs["random-forest"]["params"]["valence"]["fusion_groups"] == [[0], [1, 2]]
    board = lb.read_text()
    assert "weightfree-both" in board and "| ridge" in board
    # temporal-aan takes sequences and eimt16 declares no windows: skipped with that reason, not failed
    row = next(line for line in r.output.splitlines() if line.strip("│ ").startswith("temporal-aan"))
    assert "skipped" in row and "declares no windows" in row

    before = files_state(out)
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert files_state(out) == before  # nothing retrained, nothing rewritten
    assert r.output.count("resumed") >= 3 and "0 runs, 3 resumed" in r.output
    assert "| ridge" in lb.read_text()  # the board still holds the resumed runs

    r = invoke(*args, "--experiments", "ridge", "--rerun")
    assert r.exit_code == 0, r.output
    after = files_state(out)
    assert after["eimt16/ridge/seed0.json"] != before["eimt16/ridge/seed0.json"]
    assert after["eimt16/mean/seed0.json"] == before["eimt16/mean/seed0.json"]
    # another configuration (another protocol is not possible here: EIMT16 has no movies in its test split)
    r = invoke(*args[:-2], "--experiments", "ridge", "--features", "weightfree-audio")
    assert r.exit_code == 0, r.output
    assert len(list((out / "eimt16" / "ridge").glob("seed0-*.json"))) == 1  # beside the first, never over it
    assert files_state(out)["eimt16/ridge/seed0.json"] == after["eimt16/ridge/seed0.json"]


def test_run_and_train_without_the_paper_features_name_every_missing_one_and_the_way_on(eimt16, tmp_path):
    """They stopped at the first missing extractor (resnet50), without the
    others or the weight-free set the store holds."""
    for cmd, out in ((["run", "feature-aan-video"], ["--out", tmp_path / "o"]),
                     (["train", "feature-aan"], ["--out", tmp_path / "m.pt"])):
        r = invoke(*cmd, "eimt16", *OPT, "--store", eimt16["store"], *out)
        text = " ".join(r.output.split())
        assert r.exit_code == 2, r.output
        want = "resnet50, flownets, i3d" if cmd[1] == "feature-aan-video" else "resnet50, flownets, i3d, vggish"
        assert f"has no {want} for eimt16 (it has affect, emobase2010, logmel)" in text, text
        assert f"--extractors {want.replace(', ', ',')}`" in text and "`aanbench weights`" in text
        assert "run on a feature set the store holds: --features weightfree-both" in text, text
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_benchmark_without_the_paper_features_says_which_extractors_are_missing(eimt16, tmp_path):
    out = tmp_path / "res"
    r = invoke("benchmark", "eimt16", *OPT, "--store", eimt16["store"], "--out", out,
               "--leaderboard", tmp_path / "lb.md", "--experiments", "feature-aan,feature-aan-video,ridge,mean")
    assert r.exit_code == 0, r.output  # mean reads no features: the sanity row runs
    assert sorted(p.parent.name for p in (out / "eimt16").glob("*/seed0.json")) == ["mean"]
    table = [line for line in r.output.splitlines() if "features not in" in line]
    assert len(table) == 3, r.output[-3000:]
    for line in table:
        assert "skipped" in line and "resnet50" in line and len(line) < 300
    assert any("vggish" in line and line.strip("│ ").startswith("ridge") for line in table)
    assert not any("vggish" in line for line in table if line.strip("│ ").startswith("feature-aan-video"))

    # nothing at all can run: exit 2, a few short lines, the table, the way out
    r = invoke("benchmark", "eimt16", *OPT, "--store", eimt16["store"], "--out", out,
               "--leaderboard", tmp_path / "lb2.md", "--experiments", "feature-aan,ridge")
    assert r.exit_code == 2
    assert "nothing ran" in r.output and "--features weightfree-both" in r.output
    assert max(len(line) for line in r.output.splitlines()) < 300
    assert not (tmp_path / "lb2.md").exists()


def test_a_single_modality_experiment_keeps_its_modality_on_another_feature_set(eimt16, tmp_path):
    """`--features weightfree-both` ran feature-aan-video on the audio too,
    in a row linked to the paper's video-only number."""
    from aanbench.contracts import AanbenchError
    from aanbench.registry import load_registry
    from aanbench.workflows._shared import configure_experiment, resolve_dataset
    from aanbench.workflows.benchmark import benchmark_experiments

    reg = load_registry(None)
    video = configure_experiment(reg.experiment("feature-aan-video", "eimt16"), reg, features="weightfree-both")
    assert (video.feature_set, video.features) == ("weightfree-video", ("affect",))
    audio = configure_experiment(reg.experiment("temporal-aan-audio", "cognimuse"), reg, features="weightfree-both")
    assert (audio.feature_set, audio.features) == ("weightfree-audio", ("emobase2010", "logmel"))
    both = configure_experiment(reg.experiment("feature-aan", "eimt16"), reg, features="weightfree-both")
    assert (both.feature_set, both.features) == ("weightfree-both", ("affect", "emobase2010", "logmel"))
    with pytest.raises(AanbenchError, match="feature-aan-audio reads audio features only, and feature set "
                                            "weightfree-video .affect. has none"):
        configure_experiment(reg.experiment("feature-aan-audio", "eimt16"), reg, features="weightfree-video")
    # a part no registry set names (this order is none's) gets the set's name and the part
    custom = tmp_path / "registry.toml"
    custom.write_text('[feature_sets]\nmixed = ["logmel", "affect", "emobase2010"]\n')
    reg2 = load_registry(custom)
    part = configure_experiment(reg2.experiment("feature-aan-audio", "eimt16"), reg2, features="mixed")
    assert (part.feature_set, part.features) == ("mixed (audio part)", ("logmel", "emobase2010"))

    ds = resolve_dataset("eimt16", OPT[1:])
    run, skipped = benchmark_experiments(ds, eimt16["store"], only=["feature-aan-audio", "feature-aan-video"],
                                         features="weightfree-video")
    assert [e.name for e in run] == ["feature-aan-video"]
    assert [(s.experiment, "reads audio features only" in s.reason) for s in skipped] == [("feature-aan-audio", True)]
    r = invoke("run", "feature-aan-audio", "eimt16", *OPT, "--store", eimt16["store"], "--out", tmp_path / "o",
               "--features", "weightfree-video")
    assert r.exit_code == 2 and "reads audio features only" in r.output and not (tmp_path / "o").exists()


def test_unknown_feature_set_protocol_and_format_are_refused_before_any_work(tmp_path):
    for args, msg in ((["--features", "nope"], "no feature set 'nope'"),
                      (["--protocol", "nope"], "unknown protocol 'nope'"),
                      (["--format", "xlsx"], "--format: expected one of md, csv, json")):
        for cmd in (["benchmark", "demo"], ["run", "ridge", "demo"]) if "--format" not in args else (["benchmark", "demo"],):
            r = invoke(*cmd, "--store", tmp_path / "none", "--out", tmp_path / "o", *args)
            assert r.exit_code == 2 and msg in r.output, (cmd, args, r.output)
    assert not (tmp_path / "o").exists() and not (tmp_path / "none").exists()
    r = invoke("leaderboard", "demo", "--results", tmp_path, "--format", "xlsx")
    assert r.exit_code == 2 and "--format" in r.output


# --------------------------------------------------------------------------
# the demo: one protocol everywhere; predict's warning and label columns


def test_run_defaults_to_leave_one_movie_out_on_the_demo_and_takes_protocol(small_demo, tmp_path):  # noqa: F811
    r = invoke("datasets", "--json")
    assert {d["name"]: d["protocol"] for d in json.loads(r.output)}["demo"] == "leave-one-group-out"
    out = tmp_path / "res"
    r = invoke("run", "mean", "demo", "--store", small_demo["store"], "--out", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "demo" / "mean" / "seed0.json").read_text())
    n_clips = 12 * len(small_demo["movies"])
    assert doc["protocol"] == "leave-one-group-out" and doc["targets"]["valence"]["metrics"]["n"] == n_clips
    r = invoke("run", "mean", "demo", "--store", small_demo["store"], "--out", out, "--protocol", "fixed", "--json")
    assert r.exit_code == 0, r.output
    fixed = json.loads(r.output)
    assert fixed["protocol"] == "fixed" and fixed["metrics"]["valence"]["n"] == small_demo["n_test"]
    assert Path(fixed["results"]).name.startswith("seed0-")  # another configuration: beside the first
    md = tmp_path / "board.json"
    r = invoke("leaderboard", "demo", "--results", out, "--out", md, "--format", "json")
    assert r.exit_code == 0, r.output
    board = json.loads(md.read_text())
    assert sorted(s["protocol"] for s in board["sections"]) == ["fixed", "leave-one-group-out"]


def test_predict_warns_for_a_demo_model_and_writes_labels_and_split(small_demo, tmp_path):  # noqa: F811
    bundle = tmp_path / "ridge.pt"
    r = invoke("train", "ridge", "demo", "--store", small_demo["store"], "--out", bundle, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    # leave-one-group-out's final model: every movie but the clips the demo marks test
    pool = 12 * len(small_demo["movies"]) - small_demo["n_test"]
    assert info["fits"]["valence"]["n_fit"] + info["fits"]["valence"]["n_val"] == pool
    # what `models info` says: the training pool of the group's samples, and no epochs for ridge
    shown = " ".join(invoke("models", "info", bundle).output.split())
    assert f"demo ({pool} of its {12 * len(small_demo['movies'])} samples, group demo/default)" in shown, shown
    assert "validation samples (fitted without epochs)" in shown and "best epoch" not in shown
    csv_path = tmp_path / "p.csv"
    r = invoke("predict", bundle, "--store", small_demo["store"], "--dataset", "demo", "--out", csv_path,
               "--with-labels")
    assert r.exit_code == 0, r.output
    output = " ".join(r.output.split())
    assert DEMO_WARNING in output
    rows = read_csv(csv_path)
    for t in ("valence", "arousal"):  # predictions outside the training labels' range (-1 to 1) are counted
        values = [float(row[t]) for row in rows]
        n_out = sum(abs(v) > 1 for v in values)
        said = f"{n_out} of {len(values)} {t} predictions lie outside the training labels' range"
        assert (said in output) == (n_out > 0), (t, n_out, output[-2000:])
    from types import SimpleNamespace

    from aanbench.modelfile import load_any
    from aanbench.plugin_manager import get_plugins
    from aanbench.workflows.predict import range_warnings

    fake = SimpleNamespace(targets=["valence", "arousal"],
                           values={"valence": np.array([0.5, 3.0, np.nan, -1.0]), "arousal": np.array([0.1, -0.2])})
    assert range_warnings(load_any(bundle), fake, get_plugins()) == [
        "1 of 3 valence predictions lie outside the training labels' range (valence: training labels -1 to 1 "
        "(demo dataset plugin)): the model is extrapolating"]
    assert list(rows[0]) == ["item_id", "start", "end", "valence", "arousal", "valence_label", "arousal_label",
                             "split", "group", "reason"]
    labels = {r["clip_id"]: r for r in read_csv(small_demo["data"] / "labels.csv")}
    assert len(rows) == len(labels)
    for row in rows:
        truth = labels[row["item_id"]]
        assert row["split"] == truth["split"] and row["group"] == truth["movie"]
        assert float(row["valence_label"]) == pytest.approx(float(truth["valence"]), abs=1e-6)
    # scoring the test rows of the CSV gives a finite MSE (what the columns are for)
    test = [row for row in rows if row["split"] == "test"]
    assert len(test) == small_demo["n_test"]
    assert np.isfinite(np.mean([(float(t["valence"]) - float(t["valence_label"])) ** 2 for t in test]))
    # without --with-labels: the columns as before
    r = invoke("predict", bundle, "--store", small_demo["store"], "--dataset", "demo", "--out", csv_path, "--json")
    assert r.exit_code == 0
    assert list(read_csv(csv_path)[0]) == ["item_id", "start", "end", "valence", "arousal", "reason"]
    # a model that reads no features: trained and applied without any
    mean = tmp_path / "mean.pt"
    assert invoke("train", "mean", "demo", "--store", small_demo["store"], "--out", mean).exit_code == 0
    r = invoke("predict", mean, "--store", small_demo["store"], "--dataset", "demo", "--out", csv_path)
    assert r.exit_code == 0, r.output
    values = {float(row["valence"]) for row in read_csv(csv_path)}
    assert len(values) == 1


# --------------------------------------------------------------------------
# named models, weights add FOLDER


def test_models_list_and_info_by_name():
    r = invoke("models", "list", "--json")
    assert r.exit_code == 0, r.output
    rows = {m["name"]: m for m in json.loads(r.output)}
    assert sorted(rows) == ["aan-cognimuse", "aan-cognimuse-audio", "aan-cognimuse-video"]
    assert rows["aan-cognimuse-audio"]["features"] == ["vggish", "emobase2010"]
    assert all(m["licence"] == "MIT" and m["predicts"] for m in rows.values())
    r = invoke("models", "list")
    assert r.exit_code == 0 and all(n in r.output for n in rows) and "MIT" in r.output
    r = invoke("models", "info", "aan-cognimuse-video", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["features"] == ["resnet50", "flownets", "i3d"] and info["named"]["name"] == "aan-cognimuse-video"
    r = invoke("models", "info", "no-such-model")
    assert r.exit_code == 2 and "aan-cognimuse" in r.output


def test_predict_with_a_named_model(tmp_path):
    """`predict aan-cognimuse`: the published sample features imported into a
    store, the named model applied by name (no weight files: predict reads
    stored features)."""
    from test_named_models import SAMPLE_FILES, TEST_VECTOR, VENDORED

    store = tmp_path / "store"
    for extractor, fname in SAMPLE_FILES.items():
        r = invoke("store", "import-h5", "--store", store, "--dataset", "mdb", "--extractor", extractor,
                   VENDORED / "sample_inputs" / fname)
        assert r.exit_code == 0, r.output
    out = tmp_path / "p.csv"
    r = invoke("predict", "aan-cognimuse", "--store", store, "--dataset", "mdb", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    assert "aan-cognimuse" in json.loads(r.output)["model"]
    got = np.array([float(row["arousal"]) for row in read_csv(out)])
    assert np.abs(got - TEST_VECTOR).max() < 1e-5


def test_weights_add_a_folder_of_downloads(tmp_path, tiny_plugin):  # noqa: F811
    src, wf = tiny_plugin
    downloads = tmp_path / "dl"
    _file(downloads / "notes.txt", b"not weights")
    (downloads / "sub").mkdir()
    os.replace(src, downloads / "sub" / "saved-under-another-name.bin")
    folder = tmp_path / "weights"
    r = invoke("weights", "add", downloads, "--weights-dir", folder)
    assert r.exit_code == 0, r.output
    assert (folder / wf.filename).is_file() and "placed" in r.output and "notes.txt: not a known weight file" in r.output
    # a file named like a weight file whose bytes differ is refused: exit 2
    _file(downloads / wf.filename, b"a broken download")
    r = invoke("weights", "add", downloads, "--weights-dir", folder)
    assert r.exit_code == 2 and "differs from" in r.output and "refused" in r.output
    # a folder without any weight file: exit 2
    empty = tmp_path / "nothing"
    _file(empty / "readme.txt", b"hello")
    r = invoke("weights", "add", empty, "--weights-dir", folder)
    assert r.exit_code == 2 and "no known weight file" in r.output


def test_demo_scores_with_the_demo_datasets_own_protocol():
    from aanbench.workflows import plugins
    from aanbench.workflows.demo import DEMO_PROTOCOL

    assert DEMO_PROTOCOL == plugins().dataset("demo").protocol == "leave-one-group-out"


SLOW_REGISTRY = """
[experiments.zz-slow-aan]
extends = "feature-aan"
description = "a Feature AAN long enough to be interrupted"
datasets.demo.max_epochs = 400
datasets.demo.patience = 400
"""


@pytest.mark.slow
def test_benchmark_continues_after_ctrl_c(small_demo, tmp_path):  # noqa: F811
    """Ctrl-C while the third run trains: the two runs already written stay,
    and the same command reads them back and trains only the third."""
    import signal
    import subprocess
    import time

    from conftest import AANBENCH, default_sigint

    reg = tmp_path / "slow.toml"
    reg.write_text(SLOW_REGISTRY)
    out = tmp_path / "res"
    args = [*AANBENCH, "benchmark", "demo", "--store", str(small_demo["store"]), "--out", str(out), "--registry",
            str(reg), "--experiments", "mean,ridge,zz-slow-aan", "--leaderboard", str(tmp_path / "lb.md")]
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, preexec_fn=default_sigint)
    first = [out / "demo" / e / "seed0.json" for e in ("mean", "ridge")]
    try:
        deadline = time.monotonic() + 300
        while not all(p.is_file() for p in first):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the first two runs did not finish"
            time.sleep(0.2)
        time.sleep(1.0)  # into the third run's training
        assert proc.poll() is None, "the benchmark ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        text = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, text[-3000:]
    assert not (out / "demo" / "zz-slow-aan").exists() and not (tmp_path / "lb.md").exists()
    before = files_state(out)
    assert sorted(before) == ["demo/mean/seed0.json", "demo/ridge/seed0.json"]

    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = files_state(out)
    assert {k: after[k] for k in before} == before  # read back, not rewritten
    assert "demo/zz-slow-aan/seed0.json" in after
    assert "1 run, 2 resumed" in r.stdout and (tmp_path / "lb.md").is_file()
