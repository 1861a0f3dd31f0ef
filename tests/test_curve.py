"""`aanbench curve`: the emotion curve of a film, on a film joined from
generated demo clips with known labels (real MP4 writing and decoding, real
extraction into a real Zarr store, a real model bundle), the page opened in
a real headless Chromium; truncated and unreadable films; single-target
model files (``run --save-models``, ``models import-aan``); a sequence model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from aanbench.curve_output import read_curve_csv
from aanbench.workflows.curve import demo_film, film_dataset
from aanbench.filmdecode import film_windows, probe_duration
from aanbench.pluginkit.mediawrite import remux_faststart
from aanbench.store import FeatureStore

from conftest import REPO, run_aanbench, run_cli

CLIPS = 32  # two movies of 16 clips: m01 train, m02 test (64 s)

REGISTRY = """
[feature_sets]
curve-test = ["logmel", "affect"]

[experiments.curve-ridge]
model = "ridge"
description = "ridge on logmel and affect"
features = "curve-test"

[experiments.curve-seq]
model = "example-seq-ridge"
description = "mean over 3 consecutive clips of a movie, then ridge"
features = "curve-test"
params = { alpha = 10.0, sequence_length = 3, val_fraction = 0.0 }
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("curve")
    r = run_cli("datasets", "make-demo", work / "data", "--clips", CLIPS)
    assert r.returncode == 0, r.stderr
    r = run_cli("extract", "demo", "--root", work / "data", "--store", work / "store", "-e", "logmel,affect")
    assert r.returncode == 0, r.stdout + r.stderr
    (work / "registry.toml").write_text(REGISTRY)
    bundle = work / "ridge.pt"
    r = run_cli("train", "curve-ridge", "demo", "--store", work / "store", "--out", bundle,
                "--registry", work / "registry.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    film, truth = demo_film(work / "data", work / "films" / "test-movie.mp4", split="test")
    return {"work": work, "bundle": bundle, "film": film, "truth": truth, "registry": work / "registry.toml"}


def _comments(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("#")]


def test_joined_film_has_the_clips_one_after_another(demo):
    assert len(demo["truth"]) == 16
    assert [(s, e) for s, e, _ in demo["truth"]] == [(4.0 * i, 4.0 * i + 4.0) for i in range(16)]
    assert probe_duration(demo["film"]) == pytest.approx(64.0, abs=0.1)


def test_curve_writes_csv_png_and_html_one_row_per_window(demo, tmp_path):
    out = tmp_path / "curves"
    r = run_cli("curve", demo["film"], "--model", demo["bundle"], "--window", 4, "--store", tmp_path / "s",
                "--out", out, "--smooth", 12)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trained on the generated demo dataset" in r.stderr  # the honesty warning
    csv_path = out / "test-movie.mp4.curve.csv"
    df = read_curve_csv(csv_path)
    want = film_windows(probe_duration(demo["film"]), 4, 4)
    assert len(want) == 16
    assert list(df.columns) == ["start", "end", "valence", "arousal", "reason"]
    assert list(zip(df.start, df.end)) == [(float(s), float(e)) for s, e in want]
    assert np.isfinite(df[["valence", "arousal"]].to_numpy()).all()
    assert df.reason.isna().all()
    head = "\n".join(_comments(csv_path))
    assert "experiment curve-ridge" in head and "trained on demo" in head and "seed 0" in head
    assert "warning" in head
    # the windows are the clips: the predictions follow the clips' known labels somewhat
    truth = np.array([lab["arousal"] for _, _, lab in demo["truth"]])
    assert np.corrcoef(truth, df.arousal.to_numpy())[0, 1] > 0.3
    png = out / "test-movie.mp4.curve.png"
    with av.open(str(png)) as c:  # a real PNG of a plot
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape[0] > 300 and frame.shape[1] > 800 and frame.std() > 10
    page = (out / "test-movie.mp4.curve.html").read_text()
    assert "data:image/png;base64," in page and "curve-ridge" in page and "http" not in page.replace(
        "http-equiv", "")
    # the store group holds the film's windows with their times
    ds = film_dataset(demo["film"], 4.0, 4.0)
    assert ds.segmentation.startswith("curve-test-movie-") and ds.segmentation.endswith("-w4-h4")
    group = FeatureStore(tmp_path / "s", mode="r").open_group("files", ds.segmentation)
    t = group.item_table()
    assert t.id.tolist()[:2] == ["test-movie.mp4@0-4", "test-movie.mp4@4-8"]
    assert t.start.tolist() == [s for s, _ in want] and t.end.tolist() == [e for _, e in want]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (.ci/run installs Debian's chromium)")
def test_the_page_shows_the_plot_in_a_headless_browser(demo, tmp_path):
    out = tmp_path / "curves"
    r = run_cli("curve", demo["film"], "--model", demo["bundle"], "--window", 4, "--store", tmp_path / "s",
                "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    page = out / "test-movie.mp4.curve.html"
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}"]
    # no network at view time: the page opens with networking off
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-plot="loaded"' in dom.stdout, dom.stdout[-2000:] + dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1400,1000", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    with av.open(str(shot)) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)
    # not a blank page: the plot's coloured lines are on it (blue valence, red arousal)
    blue = (img[..., 2] > 150) & (img[..., 0] < 80)
    red = (img[..., 0] > 170) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert blue.sum() > 200 and red.sum() > 200, (blue.sum(), red.sum())


def test_rerun_reuses_the_store(demo, tmp_path):
    from aanbench.curve import load_models
    from aanbench.workflows import film_curve

    models = load_models([demo["bundle"]])
    calls = []
    a = film_curve(demo["film"], models, store=tmp_path / "s", out_dir=tmp_path / "o", window=4,
                   on_progress=calls.append)
    assert sum(c.unit.n_items for c in calls) == 16
    calls.clear()
    b = film_curve(demo["film"], models, store=tmp_path / "s", out_dir=tmp_path / "o", window=4,
                   on_progress=calls.append)
    assert calls == []  # nothing extracted again
    assert np.array_equal(a.values["valence"], b.values["valence"])


def test_truncated_film_reports_the_lost_windows_and_keeps_the_others(demo, tmp_path):
    fast = remux_faststart(demo["film"], tmp_path / "fast.mp4")
    cut = tmp_path / "cut.mp4"
    data = fast.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "curves"
    r = run_cli("curve", cut, "--model", demo["bundle"], "--window", 4, "--store", tmp_path / "s",
                "--out", out)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "windows failed" in r.stdout
    df = read_curve_csv(out / "cut.mp4.curve.csv")
    assert len(df) == 16  # every window of the film's header duration is listed
    bad = df.reason.notna()
    assert 0 < bad.sum() < 16
    assert df[~bad].valence.notna().all() and df[bad].valence.isna().all()
    assert df.reason[bad].str.contains("media ends at").all()
    first_bad = int(np.flatnonzero(bad.to_numpy())[0])
    assert not bad.to_numpy()[:first_bad].any() and bad.to_numpy()[first_bad:].all()  # the tail is lost
    assert (out / "cut.mp4.curve.png").is_file() and (out / "cut.mp4.curve.html").is_file()


def test_unreadable_film_is_reported(demo, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a film" * 1000)
    out = tmp_path / "curves"
    r = run_cli("curve", bad, "--model", demo["bundle"], "--store", tmp_path / "s", "--out", out)
    assert r.returncode == 1, r.stdout + r.stderr
    df = read_curve_csv(out / "broken.mp4.curve.csv")
    assert len(df) == 1 and "not a media file" in df.reason[0]


def test_configuration_errors_exit_2(demo, tmp_path):
    r = run_cli("curve", demo["film"], "--model", tmp_path / "missing.pt", "--out", tmp_path)
    assert r.returncode == 2 and "no such model file" in r.stderr
    r = run_cli("curve", demo["film"], "--model", demo["bundle"], "--window", 0, "--out", tmp_path)
    assert r.returncode == 2 and "positive" in r.stderr
    r = run_cli("curve", tmp_path / "nofilm.mp4", "--model", demo["bundle"], "--out", tmp_path)
    assert r.returncode == 2 and "no such film" in r.stderr
    r = run_cli("curve", demo["film"], "--model", demo["bundle"], "--model", demo["bundle"], "--out", tmp_path)
    assert r.returncode == 2 and "both predict" in r.stderr
    other = tmp_path / "other" / demo["film"].name
    other.parent.mkdir()
    shutil.copy(demo["film"], other)
    r = run_cli("curve", demo["film"], other, "--model", demo["bundle"], "--out", tmp_path)
    assert r.returncode == 2 and "same name" in r.stderr


def test_single_target_model_files_from_run_save_models(demo, tmp_path):
    models = tmp_path / "models"
    r = run_cli("run", "curve-ridge", "demo", "--store", demo["work"] / "store", "--out", tmp_path / "res",
                "--registry", demo["registry"], "--save-models", models)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(models.rglob("*"))
    arousal = [p for p in files if p.is_file() and "arousal" in p.name]
    assert arousal, files
    out = tmp_path / "curves"
    r = run_cli("curve", demo["film"], "--model", arousal[0], "--window", 4, "--store", tmp_path / "s",
                "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    df = read_curve_csv(out / "test-movie.mp4.curve.csv")
    assert list(df.columns) == ["start", "end", "arousal", "reason"] and len(df) == 16
    assert df.arousal.notna().all()


def _reference_models() -> Path:
    here = REPO.parent / "shared" / "reference" / "attendaffectnet" / "trained_models"
    return here if here.is_dir() else Path("/work/shared/reference/attendaffectnet/trained_models")


@pytest.mark.skipif(not _reference_models().is_dir(), reason="AttendAffectNet reference checkpoints not found")
def test_converted_published_checkpoint_draws_a_curve_from_stored_features(demo, tmp_path):
    """A checkpoint converted by `models import-aan` takes features whose
    extractors need weight files we cannot have here; with the film's window
    features already in the store (imported), curve needs no extractor."""
    ckpt = _reference_models() / "MDB_arousal_COGNIMUSE_attention_model_Feature_AAN_video_audio.pth"
    model = tmp_path / "arousal.pt"
    r = run_cli("models", "import-aan", ckpt, "--out", model)
    assert r.returncode == 0, r.stdout + r.stderr
    from aanbench.modelfile import load_any

    payload = load_any(model)
    dims = payload["targets"]["arousal"]["state"]["config"]["dims"]
    ds = film_dataset(demo["film"], 5.0, 5.0)
    items = ds.items(demo["film"])
    store = FeatureStore(tmp_path / "s")
    group = store.ensure_group(ds.name, items, segmentation=ds.segmentation, chunk_rows=32,
                               dataset_config=ds.config())
    rng = np.random.default_rng(0)
    for name, dim in zip(payload["features"], dims):
        group.import_rows(f"{name}@imported", rng.normal(size=(len(items), dim)).astype(np.float32),
                          {"extractor": name, "version": "imported", "dim": dim, "source": "test rows"})
    out = tmp_path / "curves"
    r = run_cli("curve", demo["film"], "--model", model, "--store", tmp_path / "s", "--out", out,
                env={"AANBENCH_WEIGHTS": str(tmp_path / "no-weights")})
    assert r.returncode == 0, r.stdout + r.stderr
    df = read_curve_csv(out / "test-movie.mp4.curve.csv")
    assert list(df.columns) == ["start", "end", "arousal", "reason"]
    assert len(df) == len(items) and df.arousal.notna().all() and df.arousal.std() > 0


@pytest.mark.slow  # fresh processes (a plugin found on PYTHONPATH)
def test_sequence_model_gets_one_prediction_per_window(demo, tmp_path):
    site = tmp_path / "site"
    dist = site / "aanbench_example_seq-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aanbench-example-seq\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aanbench]\nexample_seq = aanbench_example.meanseq\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO / "tests" / "thirdparty_plugin"),
                                          os.environ.get("PYTHONPATH", "")])}
    bundle = tmp_path / "seq.pt"
    # a fresh process: the sequence model is a plugin found on this PYTHONPATH
    r = run_aanbench("train", "curve-seq", "demo", "--store", demo["work"] / "store", "--out", bundle,
                     "--registry", demo["registry"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "curves"
    r = run_aanbench("curve", demo["film"], "--model", bundle, "--window", 4, "--store", tmp_path / "s",
                     "--out", out, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sequences of 3 windows" in r.stdout
    df = read_curve_csv(out / "test-movie.mp4.curve.csv")
    assert len(df) == 16 and df.valence.notna().all() and df.arousal.notna().all()


def test_demo_curve_draws_the_test_movies_with_a_bundle_trained_on_the_others(demo, tmp_path):
    """What `aanbench demo` calls last (aanbench.workflows.demo_curve)."""
    from aanbench.workflows import demo_curve

    work = tmp_path / "demo"
    res = demo_curve(work, demo["work"] / "store", data=demo["work"] / "data", experiment="curve-ridge",
                     registry=demo["registry"])
    assert res.csv == work / "curve" / "demo-test-movies.mp4.curve.csv"
    assert res.png.is_file() and res.html.is_file() and not res.failed
    assert res.warnings and "demo" in res.warnings[0]
    df = read_curve_csv(res.csv)
    truth = read_curve_csv(work / "curve" / "truth.csv")
    assert len(df) == len(truth) == 16
    assert np.allclose(df[["start", "end"]].to_numpy(), truth[["start", "end"]].to_numpy())
    bundle = json.loads(run_cli("models", "info", work / "curve" / "demo-curve-ridge.pt", "--json").stdout)
    assert bundle["dataset"]["name"] == "demo" and bundle["experiment"]["name"] == "curve-ridge"
