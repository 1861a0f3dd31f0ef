"""Extended COGNIMUSE from fixture trees in the documented layouts:
stream parsing, 5-s segment labels against hand-computed means, truncation
to the shortest stream, choice of stream by option, the dataset check, the
movie groups, and leave-one-movie-out folds over the items."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from aanbench.contracts import AanbenchError
from aanbench.pluginkit.datacheck import MANIFEST_NAME, render_check
from aanbench.plugin_manager import Plugins
from aanbench.protocols import LeaveOneGroupOut, carve_validation
from aanbench_plugins.datasets import cognimuse as cognimuse_module
from aanbench_plugins.datasets.cognimuse import MOVIES, Cognimuse, movie_code

from fixtures_official import COGNIMUSE_TOKENS, write_cognimuse

SECONDS = 32.0  # 800 frames: 6 full 5-s segments, the last 2 s dropped
CODES = ["ABE", "BMI", "CHI", "CRA", "DEP", "FNE", "GLA", "LOR", "MDB", "NCO", "RAT", "SIL"]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """All 12 movies in the official annotation layout; intended_2 is 7
    frames shorter than the other streams; video-only clips (fast)."""
    return write_cognimuse(tmp_path_factory.mktemp("cognimuse") / "copy", seconds=SECONDS,
                           frames_short={"intended_2": 7}, audio=False)


def copy_of(fx, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(fx.root, dst)
    (dst / MANIFEST_NAME).unlink(missing_ok=True)
    return dst


def report(check) -> str:
    buf = io.StringIO()
    render_check(check, Console(file=buf, width=200, force_terminal=False))
    return buf.getvalue()


def hand_segment_means(streams: list[np.ndarray], frames_per_segment: int = 125) -> list[tuple[float, float]]:
    """Plain-Python reference: truncate to the shortest stream, average the
    streams frame by frame, then average each full segment's frames."""
    n = min(len(s) for s in streams)
    out = []
    for k in range(n // frames_per_segment):
        sv = sa = 0.0
        for f in range(k * frames_per_segment, (k + 1) * frames_per_segment):
            sv += sum(float(s[f][0]) for s in streams) / len(streams)
            sa += sum(float(s[f][1]) for s in streams) / len(streams)
        out.append((sv / frames_per_segment, sa / frames_per_segment))
    return out


# ------------------------------------------------------------------ movies


def test_movie_codes_tokens_and_year_folders():
    assert MOVIES == tuple(CODES)
    for code, token in COGNIMUSE_TOKENS.items():
        assert movie_code(token) == code and movie_code(code.lower()) == code
    assert movie_code("2004LOR") == "LOR" and movie_code("1999SIL") == "SIL"
    assert movie_code("Emotion Annotation") is None and movie_code("intended") is None


def test_items_carry_the_movie_group_and_cover_the_12_movies(official):
    items = Cognimuse().items(official.root)
    assert len(items) == 12 * 6
    assert sorted({it.group for it in items}) == CODES
    assert [it.id for it in items[:7]] == [f"ABE_{k:04d}" for k in range(6)] + ["BMI_0000"]
    for it in items:
        code, k = it.id.split("_")
        assert it.group == code and it.split == ""
        assert (it.start, it.end) == (5.0 * int(k), 5.0 * int(k) + 5.0)
        assert it.path == official.video[code]
    assert Cognimuse.protocol == "leave-one-group-out"


def test_segment_labels_equal_hand_computed_means_of_the_intended_streams(official):
    items = {it.id: it for it in Cognimuse().items(official.root)}
    for code in ("BMI", "SIL"):
        streams = [official.streams[(code, f"intended_{k}")] for k in (1, 2, 3)]
        expected = hand_segment_means(streams)
        assert len(expected) == 6  # 793 frames after truncation: the partial 7th segment is dropped
        for k, (v, a) in enumerate(expected):
            it = items[f"{code}_{k:04d}"]
            assert it.labels["valence"] == pytest.approx(v, abs=1e-9)
            assert it.labels["arousal"] == pytest.approx(a, abs=1e-9)


def test_small_hand_example_and_truncation_to_the_shortest_stream(tmp_path):
    """Two movies, per-movie folder layout. GLA: three intended passes that
    are constant per segment, so the means can be written down; CHI: one
    stream stops after 2 segments and 10 frames, so CHI has 2 segments."""
    n = 3 * 125 + 20
    p1 = np.zeros((n, 2))
    p2 = np.zeros((n, 2))
    p3 = np.zeros((n, 2))
    p1[:125] = (0.2, -0.3)
    p2[:125] = (0.4, -0.3)
    p3[:125] = (0.9, 0.0)   # segment 0: valence (0.2+0.4+0.9)/3 = 0.5, arousal -0.2
    p1[125:250, 0] = np.r_[np.full(100, 1.0), np.full(25, -1.0)]  # segment 1 valence: (100-25)/125/3 = 0.2
    p1[250:375] = (-0.6, 0.6)   # segment 2: valence -0.2, arousal 0.2
    p1[375:] = 1.0              # the partial 4th segment: dropped
    short = np.full((2 * 125 + 10, 2), 0.3)
    fx = write_cognimuse(
        tmp_path / "copy", movies=["CHI", "GLA"], seconds=n * 0.04, layout="per-movie", experienced=(),
        values={("GLA", "intended_1"): p1, ("GLA", "intended_2"): p2, ("GLA", "intended_3"): p3,
                ("CHI", "intended_2"): short}, audio=False)
    assert (fx.root / "GLA" / "emotion" / "intended_1.dat").is_file()
    ds = Cognimuse(movies="CHI,GLA")
    items = {it.id: it for it in ds.items(fx.root)}
    assert sorted(items) == ["CHI_0000", "CHI_0001", "GLA_0000", "GLA_0001", "GLA_0002"]
    assert items["GLA_0000"].labels == pytest.approx({"valence": 0.5, "arousal": -0.2})
    assert items["GLA_0001"].labels == pytest.approx({"valence": 0.2, "arousal": 0.0})
    assert items["GLA_0002"].labels == pytest.approx({"valence": -0.2, "arousal": 0.2})
    chi = [fx.streams[("CHI", f"intended_{k}")] for k in (1, 2, 3)]
    for k, (v, a) in enumerate(hand_segment_means(chi)):
        assert items[f"CHI_{k:04d}"].labels == pytest.approx({"valence": v, "arousal": a})
    assert items["GLA_0000"].path == fx.video["GLA"] and fx.video["GLA"].name == "video.mp4"
    # all 12 are expected unless the movies option says otherwise
    with pytest.raises(AanbenchError, match=r"no intended annotation"):
        Cognimuse().items(fx.root)


def test_annotation_stream_is_chosen_by_option(official):
    exp = {it.id: it for it in Cognimuse(annotation="experienced").items(official.root)}
    streams = [official.streams[("DEP", s)] for s in ("subj1_1", "subj1_2", "subj2_1")]
    for k, (v, a) in enumerate(hand_segment_means(streams)):
        assert exp[f"DEP_{k:04d}"].labels == pytest.approx({"valence": v, "arousal": a})
    one = {it.id: it for it in Cognimuse().configure(streams="intended_2").items(official.root)}
    for k, (v, a) in enumerate(hand_segment_means([official.streams[("DEP", "intended_2")]])):
        assert one[f"DEP_{k:04d}"].labels == pytest.approx({"valence": v, "arousal": a})
    default = {it.id: it for it in Cognimuse().items(official.root)}
    assert default["DEP_0000"].labels != exp["DEP_0000"].labels != one["DEP_0000"].labels


# ------------------------------------------------------------------- check


def test_complete_copy_checks_ok(tmp_path, official):
    root = copy_of(official, tmp_path)
    check = Cognimuse().check(root)
    assert check.ok, report(check)
    assert check.expected == check.found == {"movies with annotations": 12, "movies with a video": 12}
    assert check.manifest.state == "written" and check.manifest.files == 12 * 3 + 12
    assert any("truncated to 793" in n for n in check.notes)
    assert any("no audio stream" in w for w in check.warnings)  # video-only fixture clips


def test_check_reports_missing_video_short_video_and_out_of_range_values(tmp_path):
    bad = np.zeros((int(SECONDS / 0.04) - 3, 2))
    bad[40, 0] = 1.25  # one valence frame above 1
    fx = write_cognimuse(tmp_path / "copy", movies=CODES, seconds=SECONDS, missing_video=["NCO"],
                         video_seconds={"RAT": 12.0}, values={("GLA", "intended_1"): bad},
                         experienced=(), audio=False)
    check = Cognimuse().check(fx.root)
    assert not check.ok
    assert check.found == {"movies with annotations": 12, "movies with a video": 11}
    assert len(check.missing) == 1 and check.missing[0].startswith("NCO (No Country for Old Men): no video file")
    assert any(e.startswith("Data/2008RAT/RAT.mp4: video lasts 12.00 s but the annotations cover 30.00 s")
               for e in check.errors)
    [frame] = [p for p in check.label_problems if "frame" in p.item_id]
    assert frame.item_id == "COGNIMUSEdatabase/Emotion Annotation/intended/intended_1_Gladiator.dat frame 40"
    assert (frame.target, frame.value, frame.low, frame.high) == ("valence", 1.25, -1.0, 1.0)
    text = report(check)
    assert "NOT OK" in text and "NCO (No Country for Old Men): no video file" in text
    # items still load: a movie without a video keeps its items, with no path
    items = Cognimuse().items(fx.root)
    assert {it.path for it in items if it.group == "NCO"} == {None}


def test_missing_annotations_and_unplaced_streams(tmp_path, official):
    root = copy_of(official, tmp_path)
    for p in root.rglob("intended_*_Ratatouille.dat"):
        p.unlink()
    (root / "stray").mkdir()
    (root / "stray" / "intended_1_Casablanca.dat").write_text("0.00 0.1 0.2\n")
    check = Cognimuse().check(root)
    assert not check.ok
    assert check.found["movies with annotations"] == 11
    assert check.missing == ["RAT (Ratatouille): no intended annotation (intended_<k>_Ratatouille.dat)"]
    assert any("stray/intended_1_Casablanca.dat: an annotation stream of no known movie" in w for w in check.warnings)
    with pytest.raises(AanbenchError, match="RAT"):
        Cognimuse().items(root)
    eleven = Cognimuse(movies=[c for c in CODES if c != "RAT"])
    sub = eleven.check(root)
    assert sub.ok, report(sub)  # the stray stream is only a warning
    assert sub.manifest.missing == []  # RAT's video is out of scope, not gone
    assert {it.group for it in eleven.items(root)} == set(CODES) - {"RAT"}


def test_malformed_stream_is_an_error(tmp_path, official):
    root = copy_of(official, tmp_path)
    path = next(root.rglob("intended_3_Crash.dat"))
    lines = path.read_text().splitlines()
    lines[10] = "0.40 oops 0.1"
    path.write_text("\n".join(lines) + "\n")
    check = Cognimuse().check(root)
    assert not check.ok
    assert any("intended_3_Crash.dat line 11: not numeric" in e for e in check.errors)
    with pytest.raises(AanbenchError, match="line 11"):
        Cognimuse().items(root)


# ----------------------------------------------------------- folds, options


def test_leave_one_movie_out_never_puts_the_test_movie_in_training_or_validation(official):
    items = Cognimuse().items(official.root)
    groups = np.array([it.group for it in items])
    splits = np.array([it.split for it in items])
    folds = list(LeaveOneGroupOut().folds(splits, groups))
    assert [f.name for f in folds] == CODES
    for fold in folds:
        assert set(groups[fold.test]) == {fold.name}
        fit, val = carve_validation(fold.train, groups, 0.1, seed=0)
        assert fold.name not in set(groups[fit]) | set(groups[val])
        assert len(fit) + len(val) + len(fold.test) == len(items)


# Windows of 5 consecutive segments: tests/test_samples.py (built by the engine).


def test_configure_and_options():
    base = Cognimuse()
    assert base.config() == {"annotation": "intended", "streams": "mean", "movies": "all",
                             "segment_seconds": 5.0}
    exp = base.configure(annotation="experienced")
    assert exp is not base and exp.annotation == "experienced" and base.annotation == "intended"
    assert base.configure(movies="bmi,2004LOR").movies == ("BMI", "LOR")
    two = base.configure(segment_seconds="2")
    assert (two.segmentation, two.frames_per_segment) == ("2s", 50)
    with pytest.raises(AanbenchError, match=r"no option 'stream'.*allowed: annotation, movies, segment_seconds"):
        base.configure(stream="intended_1")
    with pytest.raises(AanbenchError, match="annotation must be one of"):
        base.configure(annotation="felt")
    with pytest.raises(AanbenchError, match="not intended streams"):
        base.configure(streams="subj1_1")
    with pytest.raises(AanbenchError, match="unknown movie"):
        base.configure(movies="BMI,XYZ")
    with pytest.raises(AanbenchError, match="multiple of 0.04"):
        base.configure(segment_seconds="2.5")


def test_plugin_registers_the_dataset():
    p = Plugins()
    p.register(cognimuse_module)
    ds = p.dataset("cognimuse")
    assert ds.label_range == {"valence": (-1.0, 1.0), "arousal": (-1.0, 1.0)}
    assert ds.segmentation == "default" and ds.card == "datasets/cognimuse.md"
