"""The generated demo dataset: real MP4 clips (H.264 + AAC), deterministic
from a seed, labels that follow what is seen and heard, the official layout
and the ``demo`` Dataset plugin."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from aanbench.contracts import AanbenchError, Item, MediaRequest
from aanbench.media import decode_media
from aanbench_plugins.datasets import demo as demo
from aanbench_plugins.datasets.demo import DemoDataset, demo_recipe, label_values, make_demo, render_clip

CLIPS = 40  # enough for the label-follows-factors correlations; 3 movies (2 train, 1 test)
FULL = MediaRequest(frames=0, fps=25.0)  # every frame at the native rate
MOTION = MediaRequest(fps=8.0, short_side=64)
AUDIO = MediaRequest(audio_rate=16000)


def _decode(path: Path, request: MediaRequest):
    # video and audio in separate calls: each call decodes only what it is asked for
    return decode_media(Item(id=path.stem, path=path), [request])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("demo") / "demo", seed=0, clips=CLIPS)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """Eight clips with seed 7, made once; tests that change it copy it first."""
    return make_demo(tmp_path_factory.mktemp("small") / "demo", seed=7, clips=8)


# ------------------------------------------------------------------ layout


def test_default_recipe_is_ten_movies_of_twelve_with_eight_train_two_test():
    r = demo_recipe()
    assert r["seed"] == 0 and r["clips"] == 120
    assert [len(m["clips"]) for m in r["movies"]] == [12] * 10
    assert len(r["split"]["train"]) == 8 and len(r["split"]["test"]) == 2
    assert set(r["split"]["train"]).isdisjoint(r["split"]["test"])
    ids = [c for m in r["movies"] for c in m["clips"]]
    assert len(set(ids)) == 120
    # movies look different from one another
    styles = {(tuple(m["shape_kinds"]), m["saturation"], m["pattern_period"]) for m in r["movies"]}
    assert len(styles) == 10


def test_layout_files_and_columns(demo_dir: Path):
    recipe = json.loads((demo_dir / "demo.json").read_text())
    assert recipe == json.loads(json.dumps(demo_recipe(0, CLIPS)))
    labels = _rows(demo_dir / "labels.csv")
    factors = _rows(demo_dir / "factors.csv")
    assert list(labels[0]) == ["clip_id", "file", "movie", "split", "valence", "arousal"]
    assert list(factors[0]) == list(demo.FACTOR_COLUMNS)
    assert len(labels) == len(factors) == CLIPS
    assert [r["clip_id"] for r in labels] == [r["clip_id"] for r in factors]
    movie_split = {m["movie"]: m["split"] for m in recipe["movies"]}
    for r in labels:
        assert (demo_dir / r["file"]).is_file()
        assert r["file"] == f"clips/{r['clip_id']}.mp4"
        assert r["split"] == movie_split[r["movie"]]
    assert {r["split"] for r in labels} == {"train", "test"}
    assert len({r["movie"] for r in labels}) == 3
    # no temporary file left behind
    assert not [p for p in (demo_dir / "clips").iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in (demo_dir / "clips").iterdir()) == sorted(f"{r['clip_id']}.mp4" for r in labels)


def test_each_clip_is_h264_and_aac_of_four_seconds(demo_dir: Path):
    for cid in ("m01_c001", "m02_c005", "m03_c013"):
        path = demo_dir / "clips" / f"{cid}.mp4"
        with av.open(str(path)) as c:
            assert [s.codec_context.name for s in c.streams.video] == ["h264"]
            assert [s.codec_context.name for s in c.streams.audio] == ["aac"]
            assert c.streams.audio[0].rate == 16000
        video = _decode(path, FULL)
        frames = video.frames_for(FULL)
        assert video.duration == pytest.approx(4.0, abs=0.05)
        assert video.native_fps == pytest.approx(25.0)
        assert frames.shape == (100, 120, 160, 3) and frames.dtype == np.uint8
        audio = _decode(path, AUDIO)
        assert audio.duration == pytest.approx(4.0, abs=0.05)
        sig = audio.audio_for(AUDIO)
        assert sig.shape == (64000,)
        # the decoded level is the one factors.csv records (AAC is not lossless)
        row = next(r for r in _rows(demo_dir / "factors.csv") if r["clip_id"] == cid)
        level = 20 * np.log10(np.sqrt(np.mean(sig.astype(np.float64) ** 2)))
        assert level == pytest.approx(float(row["loudness_dbfs"]), abs=1.0)


# ------------------------------------------------------------------ labels


def test_labels_in_range_spread_and_reproduced_from_factors(demo_dir: Path):
    labels = _rows(demo_dir / "labels.csv")
    factors = {r["clip_id"]: r for r in _rows(demo_dir / "factors.csv")}
    y = np.array([[float(r["valence"]), float(r["arousal"])] for r in labels])
    assert np.all(np.abs(y) <= 1.0)
    assert np.all(y.std(axis=0) > 0.3)  # spread over much of [-1, 1]
    assert np.all(y.min(axis=0) < -0.5) and np.all(y.max(axis=0) > 0.5)
    for r in labels:
        f = factors[r["clip_id"]]
        parsed = {k: (f[k] if k == "mode" else int(f[k]) if k == "cuts" else float(f[k]))
                  for k in ("speed_u", "cuts", "loudness_u", "tempo_u", "brightness_u", "warmth_u",
                            "mode", "arousal_noise", "valence_noise")}
        valence, arousal = label_values(parsed)
        assert float(r["valence"]) == pytest.approx(valence, abs=1e-6)
        assert float(r["arousal"]) == pytest.approx(arousal, abs=1e-6)


def test_label_formula_moves_with_each_factor():
    base = {"speed_u": 0.5, "cuts": 3, "loudness_u": 0.5, "tempo_u": 0.5, "brightness_u": 0.5,
            "warmth_u": 0.5, "mode": "minor", "arousal_noise": 0.0, "valence_noise": 0.0}
    v0, a0 = label_values(base)
    for key, high in (("speed_u", 0.9), ("cuts", 6), ("loudness_u", 0.9), ("tempo_u", 0.9)):
        v, a = label_values({**base, key: high})
        assert a > a0 + 0.05 and v == v0, key
    for key, high in (("brightness_u", 0.9), ("warmth_u", 0.9), ("mode", "major")):
        v, a = label_values({**base, key: high})
        assert v > v0 + 0.05 and a == a0, key
    assert label_values({**base, "speed_u": 1.0, "cuts": 7, "loudness_u": 1.0, "tempo_u": 1.0,
                         "arousal_noise": 0.3})[1] == 1.0  # clipped to the range


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def test_labels_follow_what_is_seen_and_heard(demo_dir: Path):
    """Over the 40 decoded clips: arousal with frame-difference motion + RMS
    loudness, valence with brightness; and each descriptor with its factor."""
    items = DemoDataset().items(demo_dir)
    motion, bright, rms = [], [], []
    for it in items:
        fr = _decode(it.path, MOTION).frames_for(MOTION).astype(np.float32) / 255.0
        luma = fr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        motion.append(np.abs(np.diff(luma, axis=0)).mean())
        bright.append(fr.max(axis=-1).mean())
        sig = _decode(it.path, AUDIO).audio_for(AUDIO).astype(np.float64)
        rms.append(20 * np.log10(np.sqrt(np.mean(sig**2))))
    motion, bright, rms = map(np.array, (motion, bright, rms))
    valence = np.array([it.labels["valence"] for it in items])
    arousal = np.array([it.labels["arousal"] for it in items])
    factors = {r["clip_id"]: r for r in _rows(demo_dir / "factors.csv")}
    speed = np.array([float(factors[it.id]["speed_u"]) for it in items])
    level = np.array([float(factors[it.id]["loudness_dbfs"]) for it in items])
    target_v = np.array([float(factors[it.id]["brightness_v"]) for it in items])

    def r(a, b):
        return float(np.corrcoef(a, b)[0, 1])

    assert r(arousal, _zscore(motion) + _zscore(rms)) > 0.6
    assert r(valence, bright) > 0.45
    assert abs(r(arousal, bright)) < 0.4  # brightness is a valence cue, not an arousal cue
    assert r(speed, motion) > 0.7
    assert r(level, rms) > 0.98
    assert np.abs(bright - target_v).max() < 0.03  # mean HSV value is the brightness factor


# ------------------------------------------------------------ determinism


def _x264_mbtree_on(path: Path) -> bool:
    """Whether the clip's H.264 stream was encoded with x264's mb-tree rate
    control (x264 writes its settings into the stream). With the libx264 in
    PyAV 18.1, mb-tree encodes of identical frames differ from one encode to
    the next within one process, so decoded frames of two runs can differ by
    a few levels; ``mbtree=0`` makes them identical."""
    return b"mbtree=1" in path.read_bytes()


def _assert_same_decoded_frames(a: Path, b: Path, source: np.ndarray) -> None:
    fa = _decode(a, FULL).frames_for(FULL)
    fb = _decode(b, FULL).frames_for(FULL)
    # both are faithful encodes of the same rendered frames
    assert np.abs(fa.astype(int) - source).mean() < 3.0
    assert np.abs(fb.astype(int) - source).mean() < 3.0
    if _x264_mbtree_on(a) or _x264_mbtree_on(b):
        pytest.xfail("aanbench.pluginkit.mediawrite.write_clip encodes with x264 mb-tree, whose output is not "
                     "reproducible within one process; needs x264-params mbtree=0 for identical frames")
    assert np.array_equal(fa, fb)


def test_same_seed_same_dataset_other_seed_other_dataset(small: Path, tmp_path: Path):
    again = make_demo(tmp_path / "again", seed=7, clips=8)
    other = make_demo(tmp_path / "other", seed=8, clips=8)
    for name in ("labels.csv", "factors.csv", "demo.json"):
        assert (again / name).read_bytes() == (small / name).read_bytes(), name
    assert (other / "labels.csv").read_bytes() != (small / "labels.csv").read_bytes()
    # what is encoded is the same, array for array
    index, cid = 6, "m02_c003"
    one = render_clip(demo_recipe(7, 8), index)
    two = render_clip(demo_recipe(7, 8), index)
    assert one.clip_id == cid
    assert np.array_equal(one.frames, two.frames) and np.array_equal(one.audio, two.audio)
    assert one.factors == two.factors
    clip = f"clips/{cid}.mp4"
    assert np.abs(_decode(other / clip, FULL).frames_for(FULL).astype(int) - one.frames).mean() > 10.0
    assert np.array_equal(_decode(again / clip, AUDIO).audio_for(AUDIO), _decode(small / clip, AUDIO).audio_for(AUDIO))
    _assert_same_decoded_frames(small / clip, again / clip, one.frames)


def test_clip_does_not_depend_on_how_many_clips_are_made(small: Path, tmp_path: Path):
    """Clip i is drawn from (seed, i): the factors of the first clips agree
    whatever the total (only the movie grouping may differ)."""
    more = make_demo(tmp_path / "more", seed=7, clips=9)
    cols = [c for c in demo.FACTOR_COLUMNS if c not in ("clip_id", "movie")]
    a = [[r[c] for c in cols] for r in _rows(small / "factors.csv")]
    b = [[r[c] for c in cols] for r in _rows(more / "factors.csv")][:8]
    assert a == b


# ------------------------------------------------- idempotence and resume


def _mtimes(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


def test_second_run_does_nothing(small: Path):
    before = _mtimes(small)
    calls: list[tuple[int, int]] = []
    assert make_demo(small, seed=7, clips=8, progress=lambda d, t: calls.append((d, t))) == small
    assert _mtimes(small) == before
    assert calls == [(8, 8)]


def test_killed_run_resumes_with_missing_clips_only(small: Path, tmp_path: Path):
    d = tmp_path / "demo"
    shutil.copytree(small, d)
    (d / "clips" / "m01_c002.mp4").unlink()
    (d / "labels.csv").unlink()
    (d / "clips" / ".m01_c003.mp4.part").write_bytes(b"half a clip")  # left by a killed run
    before = _mtimes(d)
    calls: list[tuple[int, int]] = []
    make_demo(d, seed=7, clips=8, progress=lambda k, n: calls.append((k, n)))
    after = _mtimes(d)
    assert (d / "labels.csv").read_bytes() == (small / "labels.csv").read_bytes()
    assert not (d / "clips" / ".m01_c003.mp4.part").exists()
    assert "clips/m01_c002.mp4" in after
    untouched = [k for k in before if k.startswith("clips/m") and k != "clips/m01_c002.mp4"]
    assert untouched and all(after[k] == before[k] for k in untouched)
    assert calls[-1] == (8, 8) and len(calls) == 8
    restored = "clips/m01_c002.mp4"
    _assert_same_decoded_frames(d / restored, small / restored, render_clip(demo_recipe(7, 8), 1).frames)


def test_other_recipe_in_the_folder_is_refused(small: Path):
    before = _mtimes(small)
    with pytest.raises(AanbenchError, match="different demo.*'seed': 7.*'seed': 8"):
        make_demo(small, seed=8, clips=8)
    with pytest.raises(AanbenchError, match="different demo.*'clips': 8.*'clips': 9"):
        make_demo(small, seed=7, clips=9)
    assert _mtimes(small) == before


def test_foreign_folder_and_bad_arguments_are_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(AanbenchError, match="not empty"):
        make_demo(tmp_path, seed=0, clips=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(AanbenchError, match="at least 4 clips"):
        make_demo(tmp_path / "a", clips=3)
    with pytest.raises(AanbenchError, match="seed"):
        make_demo(tmp_path / "b", seed=-1, clips=4)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "demo.json").write_text("{not json")
    with pytest.raises(AanbenchError, match="cannot read the demo recipe"):
        make_demo(tmp_path / "c", clips=4)


# ------------------------------------------------------------------ items()


def test_items_from_labels_csv(demo_dir: Path):
    items = DemoDataset().items(demo_dir)
    rows = _rows(demo_dir / "labels.csv")
    assert [it.id for it in items] == [r["clip_id"] for r in rows]
    for it, r in zip(items, rows):
        assert it.path == demo_dir / r["file"] and it.path.is_file()
        assert it.group == r["movie"] and it.split == r["split"]
        assert it.labels == {"valence": float(r["valence"]), "arousal": float(r["arousal"])}
        assert it.start is None and it.end is None
    ds = DemoDataset()
    assert ds.name == "demo" and ds.protocol == "leave-one-group-out" and ds.card == "datasets/demo.md"
    assert dict(ds.label_range) == {"valence": (-1.0, 1.0), "arousal": (-1.0, 1.0)}
    assert (Path(__file__).resolve().parents[1] / ds.card).is_file()


HEADER = "clip_id,file,movie,split,valence,arousal\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("clip_id,file,movie,split,valence\nx,clips/x.mp4,m01,train,0.1\n", "missing column.*arousal"),
        (HEADER + "x,clips/x.mp4,m01,train,high,0.1\n", "line 2: valence 'high' is not a number"),
        (HEADER + "x,clips/x.mp4,m01,dev,0.1,0.1\n", "line 2: split must be train or test"),
        (HEADER + "x,clips/x.mp4,m01,train,0.1,0.1\nx,clips/y.mp4,m01,test,0.2,0.2\n", "line 3: duplicate clip_id 'x'"),
        (HEADER + "x,clips/x.mp4,m01,train,0.1,1.5\n", "line 2: arousal 1.5 outside"),
        (HEADER + "x,clips/x.mp4,m01,train,nan,0.5\n", "line 2: valence nan outside"),
        (HEADER + "x,clips/x.mp4,m01,train,0.1\n", "line 2: expected 6 fields"),
        (HEADER + ",clips/x.mp4,m01,train,0.1,0.1\n", "line 2: empty clip_id"),
        (HEADER, "no clips listed"),
    ],
)
def test_malformed_labels_csv_is_an_error_naming_the_file(tmp_path: Path, text: str, message: str):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(AanbenchError, match=message) as err:
        DemoDataset().items(tmp_path)
    assert str(tmp_path / "labels.csv") in str(err.value)


def test_missing_labels_csv_says_how_to_make_the_demo(tmp_path: Path):
    with pytest.raises(AanbenchError, match="no labels.csv in .*make-demo") as err:
        DemoDataset().items(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


# ------------------------------------------------------- plugin and CLI


def test_registered_through_the_entry_point(monkeypatch: pytest.MonkeyPatch):
    from aanbench.plugin_manager import Plugins

    monkeypatch.setenv("AANBENCH_PLUGINS", "demo")
    plugins = Plugins()
    plugins.load_entry_points()
    assert [(r.name, r.error) for r in plugins.records] == [("demo", None)]
    assert isinstance(plugins.dataset("demo"), DemoDataset)


def test_make_demo_command(tmp_path: Path):
    from typer.testing import CliRunner

    from aanbench.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["datasets", "make-demo", str(out), "--clips", "4", "--seed", "3"])
    assert res.exit_code == 0, res.output
    ref = make_demo(tmp_path / "ref", seed=3, clips=4)
    assert (out / "labels.csv").read_bytes() == (ref / "labels.csv").read_bytes()
    res = runner.invoke(app, ["datasets", "make-demo", str(out), "--clips", "5", "--seed", "3"])
    assert res.exit_code == 2
    assert "different demo" in res.output
