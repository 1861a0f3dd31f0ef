"""EIMT16 (LIRIS-ACCEDE + MediaEval 2016 test set) from fixture trees in the
official layouts: parsing, the dataset check and its report, the temporal
variant, options, and extraction + Feature AAN end to end through the CLI."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from rich.console import Console

from aanbench.contracts import AanbenchError
from aanbench.pluginkit.datacheck import MANIFEST_NAME, cache_manifest_path, render_check, run_check, to_json
from aanbench.media import decode_media
from aanbench.plugin_manager import Plugins
from aanbench_plugins.datasets import eimt16 as eimt16_module
from aanbench_plugins.datasets.eimt16 import Eimt16, parse_test_labels

from fixtures_official import write_eimt16

MISSING = "ACCEDE00005"
OUT_OF_RANGE = ("MEDIAEVAL16_00002", "arousal", 5.7)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A complete copy (no missing video, labels in range)."""
    return write_eimt16(tmp_path_factory.mktemp("eimt16") / "copy")


@pytest.fixture(scope="module")
def flawed(tmp_path_factory):
    """A copy with a missing training video and a test label out of range."""
    return write_eimt16(tmp_path_factory.mktemp("eimt16-flawed") / "copy", missing=[MISSING],
                        out_of_range=[OUT_OF_RANGE], seed=1)


def copy_of(fx, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(fx.root, dst)
    (dst / MANIFEST_NAME).unlink(missing_ok=True)
    return dst


def subset() -> Eimt16:
    """The fixture is a subset: expect exactly what its label files list."""
    return Eimt16().configure(official_counts="false")


def report(check) -> str:
    buf = io.StringIO()
    render_check(check, Console(file=buf, width=200, force_terminal=False))
    return buf.getvalue()


# ------------------------------------------------------------------ parsing


def test_fixture_files_are_in_the_official_form(flawed):
    raw = flawed.test_labels.read_bytes()
    assert b"\n" not in raw and raw.count(b"\r") == len(flawed.test) - 1 and not raw.endswith(b"\r")
    head = flawed.ranking.read_text().splitlines()[0].split("\t")
    assert head == ["id", "name", "valenceRank", "arousalRank", "valenceValue", "arousalValue",
                    "valenceVariance", "arousalVariance"]
    # the folders are doubled, as unzip tools produce
    assert flawed.ranking.parent.parent.name == flawed.ranking.parent.parent.parent.name == "LIRIS-ACCEDE-annotations"


def test_cr_only_test_label_file_is_parsed(flawed):
    rows, problems = parse_test_labels(flawed.test_labels)
    assert problems == []
    assert [r.stem for r in rows] == flawed.test
    for r in rows:
        assert (r.valence, r.arousal) == pytest.approx(flawed.labels[r.stem])


def test_items_ids_order_splits_groups_and_labels(flawed):
    items = Eimt16().items(flawed.root)
    assert [it.id for it in items] == flawed.train + flawed.test
    assert [it.split for it in items] == ["train"] * len(flawed.train) + ["test"] * len(flawed.test)
    for it in items:
        v, a = flawed.labels[it.id]
        assert it.labels == {"valence": pytest.approx(v), "arousal": pytest.approx(a)}
        assert it.start is None and it.end is None
        if it.split == "train":
            assert it.group == flawed.groups[it.id]  # from <movie> in ACCEDEdescription.xml, without .mp4
        else:
            assert it.group == "test"  # no description of the test excerpts in the copy
    assert {it.group for it in items if it.split == "train"} == {"20_Mississippi", "Big_Buck_Bunny", "Sintel"}


def test_items_find_files_below_doubled_folders_and_beside_the_labels(flawed):
    items = {it.id: it for it in Eimt16().items(flawed.root)}
    for stem, path in flawed.video.items():
        assert items[stem].path == path
    # a missing video keeps its item, pointing where its neighbours are
    gone = items[MISSING]
    assert not gone.path.exists() and gone.path.parent == flawed.data_dir


def test_out_of_range_labels_are_kept_as_given(flawed):
    items = {it.id: it for it in Eimt16().items(flawed.root)}
    stem, target, value = OUT_OF_RANGE
    assert items[stem].labels[target] == pytest.approx(value)


def test_other_line_endings_and_a_flat_tree(tmp_path, pristine):
    """All files side by side in one folder, CRLF test labels with a final newline."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in pristine.root.rglob("*"):
        if p.is_file() and p.name != MANIFEST_NAME:
            shutil.copy(p, flat / p.name)
    text = (flat / pristine.test_labels.name).read_bytes().replace(b"\r", b"\r\n") + b"\r\n"
    (flat / pristine.test_labels.name).write_bytes(text)
    items = Eimt16().items(flat)
    assert [it.id for it in items] == pristine.train + pristine.test
    assert all(it.path.parent == flat and it.path.exists() for it in items)


def test_missing_annotation_file_is_named(tmp_path, pristine):
    root = copy_of(pristine, tmp_path)
    next(root.rglob("ACCEDEdescription.xml")).unlink()
    with pytest.raises(AanbenchError, match="ACCEDEdescription.xml not found"):
        Eimt16().items(root)
    check = subset().check(root)
    assert not check.ok
    assert "ACCEDEdescription.xml (annotation file)" in check.missing
    assert check.found["annotation files"] == 2


# -------------------------------------------------------------------- check


def test_check_reports_the_missing_video_and_the_label_out_of_range(tmp_path, flawed):
    root = copy_of(flawed, tmp_path)
    check = subset().check(root)
    assert not check.ok
    assert check.missing == [f"{MISSING}.mp4 (training excerpt)"]
    assert check.expected["training excerpts (ACCEDE*.mp4)"] == len(flawed.train)
    assert check.found["training excerpts (ACCEDE*.mp4)"] == len(flawed.train) - 1
    assert check.found["test excerpts (MEDIAEVAL16_*.mp4)"] == len(flawed.test)
    assert check.unreadable == []
    [problem] = check.label_problems
    assert (problem.item_id, problem.target, problem.value, problem.low, problem.high) == (*OUT_OF_RANGE, 1.0, 5.0)
    assert check.manifest.state == "written"
    assert Path(check.manifest.path) == root / MANIFEST_NAME
    text = report(check)
    assert "NOT OK" in text and f"{MISSING}.mp4 (training excerpt)" in text
    assert "MEDIAEVAL16_00002: arousal = 5.7, outside [1, 5]" in text
    doc = to_json(check)
    assert doc["ok"] is False and doc["missing"] == check.missing
    assert doc["label_problems"] == [{"item_id": "MEDIAEVAL16_00002", "target": "arousal", "value": 5.7,
                                      "range": [1.0, 5.0]}]
    json.dumps(doc)  # JSON-able


def test_run_check_exit_status_and_json(tmp_path, pristine, flawed):
    good = copy_of(pristine, tmp_path / "good")
    bad = copy_of(flawed, tmp_path / "bad")
    buf = io.StringIO()
    assert run_check(subset(), good, False, Console(file=buf, width=200)) == 0
    assert "eimt16" in buf.getvalue() and "OK" in buf.getvalue()
    buf = io.StringIO()
    assert run_check(subset(), bad, True, Console(file=buf, width=200)) == 1
    doc = json.loads(buf.getvalue())
    assert doc["ok"] is False and doc["found"]["training excerpts (ACCEDE*.mp4)"] == len(flawed.train) - 1


def test_complete_copy_is_ok_and_official_counts_are_expected_by_default(tmp_path, pristine):
    root = copy_of(pristine, tmp_path)
    check = subset().check(root)
    assert check.ok, report(check)
    assert check.missing == [] and check.label_problems == [] and check.errors == []
    assert check.manifest.files == len(pristine.train) + len(pristine.test) + 4  # + 4 annotation files
    # without the subset option the 9,800 / 1,200 official excerpts are expected
    full = Eimt16().check(root)
    assert not full.ok
    assert full.expected["training excerpts (ACCEDE*.mp4)"] == 9800
    assert full.expected["test excerpts (MEDIAEVAL16_*.mp4)"] == 1200
    assert full.found["training excerpts (ACCEDE*.mp4)"] == len(pristine.train)
    assert len(full.missing) == 9800 - len(pristine.train) + 1200 - len(pristine.test)
    assert any("has no labels for 9788 of the 9,800 official excerpts" in e for e in full.errors)
    assert "... and" in report(full)  # long lists are cut for people


def test_unreadable_videos_are_reported_with_their_reason(tmp_path, pristine):
    root = copy_of(pristine, tmp_path)
    (root / "MEDIAEVAL16-Global" / "MEDIAEVAL16_00001.mp4").write_bytes(b"")
    (root / "MEDIAEVAL16-Global" / "MEDIAEVAL16_00003.mp4").write_bytes(b"this is not an mp4 file" * 50)
    check = subset().check(root)
    assert not check.ok
    reasons = {u.path: u.reason for u in check.unreadable}
    assert reasons["MEDIAEVAL16-Global/MEDIAEVAL16_00001.mp4"] == "empty file (0 bytes)"
    assert reasons["MEDIAEVAL16-Global/MEDIAEVAL16_00003.mp4"].startswith("cannot open")
    assert check.missing == []


def test_manifest_detects_changed_moved_and_new_files(tmp_path, pristine):
    root = copy_of(pristine, tmp_path)
    first = subset().check(root)
    assert first.ok and first.manifest.state == "written"
    again = subset().check(root)
    assert again.ok and again.manifest.state == "unchanged"

    # a video moved elsewhere below the root: same bytes, fine
    src = root / "MEDIAEVAL16-Global" / "MEDIAEVAL16_00000.mp4"
    (root / "moved").mkdir()
    src.rename(root / "moved" / src.name)
    moved = subset().check(root)
    assert moved.ok, report(moved)
    assert moved.manifest.moved == [("MEDIAEVAL16-Global/MEDIAEVAL16_00000.mp4", "moved/MEDIAEVAL16_00000.mp4")]

    # a label file edited: changed, not ok, and it stays flagged
    ranking = next(root.rglob("ACCEDEranking.txt"))
    ranking.write_text(ranking.read_text().replace("\t0.1\t", "\t0.2\t"))
    changed = subset().check(root)
    assert not changed.ok and changed.manifest.state == "changed"
    assert changed.manifest.changed == [ranking.relative_to(root).as_posix()]
    assert not subset().check(root).ok
    assert "Changed since the manifest was written" in report(changed)


def test_manifest_goes_to_the_cache_when_the_root_cannot_take_it(tmp_path, pristine, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = copy_of(pristine, tmp_path)
    (root / MANIFEST_NAME).mkdir()  # a folder where the manifest file would go: cannot be written
    check = subset().check(root)
    expected = cache_manifest_path("eimt16", root)
    assert str(expected).startswith(str(tmp_path / "home" / ".cache" / "aanbench" / "manifests" / "eimt16-"))
    assert check.manifest.state == "written" and Path(check.manifest.path) == expected
    assert "not writable" in check.manifest.note
    assert subset().check(root).manifest.state == "unchanged"


# ----------------------------------------------------------------- temporal


def test_temporal_variant_splits_each_excerpt_into_four_equal_parts(flawed):
    ds = Eimt16(segmentation="temporal4")
    assert (ds.name, ds.segmentation) == ("eimt16-temporal", "temporal4")
    items = ds.items(flawed.root)
    assert len(items) == 4 * (len(flawed.train) + len(flawed.test))
    by_parent: dict[str, list] = {}
    for it in items:
        parent, k = it.id.split("#")
        by_parent.setdefault(parent, []).append((int(k), it))
    assert list(by_parent) == flawed.train + flawed.test
    for parent, parts in by_parent.items():
        assert [k for k, _ in parts] == [0, 1, 2, 3]
        whole = flawed.labels[parent]
        for _, it in parts:
            assert (it.labels["valence"], it.labels["arousal"]) == pytest.approx(whole)
        if parent == MISSING:
            assert all(it.start is None and it.end is None for _, it in parts)
            continue
        with av.open(str(parts[0][1].path)) as c:
            d = c.duration / 1e6
        edges = [it.start for _, it in parts] + [parts[-1][1].end]
        assert edges == pytest.approx([0, d / 4, d / 2, 3 * d / 4, d])
        assert all(it.end - it.start == pytest.approx(d / 4) for _, it in parts)
    # the windows that group them back per excerpt: tests/test_samples.py


def test_temporal_windows_decode(pristine):
    from aanbench.contracts import MediaRequest

    items = Eimt16(segmentation="temporal4").items(pristine.root)[:4]
    req = MediaRequest(frames=2, audio_rate=16000)
    for it in items:
        media = decode_media(it, [req])
        assert media.duration == pytest.approx(it.end - it.start)
        assert media.frames_for(req).shape == (2, 48, 64, 3)
        assert abs(media.audio_for(req).size - round((it.end - it.start) * 16000)) <= 1


# ------------------------------------------------------------------ options


def test_configure_returns_a_configured_copy_and_names_unknown_keys():
    base = Eimt16()
    t = base.configure(segmentation="temporal4")
    assert t is not base and t.name == "eimt16-temporal" and base.name == "eimt16"
    assert base.configure(official_counts="no").official_counts is False
    with pytest.raises(AanbenchError, match=r"no option 'stream'.*allowed: official_counts, segmentation"):
        base.configure(stream="x")
    with pytest.raises(AanbenchError, match="unknown segmentation"):
        base.configure(segmentation="temporal9")
    with pytest.raises(AanbenchError, match="expected true or false"):
        base.configure(official_counts="maybe")


def test_plugin_registers_both_variants():
    p = Plugins()
    p.register(eimt16_module)
    assert p.dataset("eimt16").protocol == "fixed"
    assert p.dataset("eimt16-temporal").segmentation == "temporal4"
    assert p.dataset("eimt16").label_range == {"valence": (1.0, 5.0), "arousal": (1.0, 5.0)}


def test_root_that_does_not_exist_is_a_usage_error(tmp_path):
    with pytest.raises(AanbenchError, match="does not exist"):
        Eimt16().check(tmp_path / "nowhere")


# --------------------------------------------------------- end to end (CLI)


@pytest.mark.slow
def test_cli_check_extract_and_run_feature_aan(tmp_path, pristine, cli):
    """`aanbench datasets check`, `aanbench extract eimt16` and `aanbench run`
    of a feature-aan variant on the fixture. No pretrained weights exist offline,
    so a user's experiments file extends feature-aan onto the weight-free
    features with capped epochs; everything else is the real path."""
    root = copy_of(pristine, tmp_path)
    r = cli("datasets", "check", "eimt16", "--root", root, "--option", "official_counts=false", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["ok"] is True
    r = cli("datasets", "check", "eimt16", "--root", root)  # official counts: incomplete
    # Captured output is not a terminal: never wrapped, whatever $COLUMNS or the
    # length of the temporary path, so the verdict and the path stay whole.
    assert r.exit_code == 1 and f"NOT OK: eimt16 at {root}\n" in r.output, r.output

    # The user's experiments file adds to the built-in registry: a quick
    # feature-aan on the weight-free features, everything else inherited.
    reg = tmp_path / "mine.toml"
    reg.write_text('[experiments.feature-aan-quick]\nextends = "feature-aan"\n'
                   '[experiments.feature-aan-quick.datasets.eimt16]\n'
                   'features = "weightfree-both"\nmax_epochs = 3\npatience = 2\n')

    store, out = tmp_path / "store", tmp_path / "results"
    r = cli("extract", "eimt16", "--root", root, "--store", store, "--extractors", "affect,emobase2010,logmel")
    assert r.exit_code == 0, r.output
    r = cli("run", "feature-aan-quick", "eimt16", "--store", store, "--out", out, "--registry", reg)
    assert r.exit_code == 0, r.output
    [result] = list(out.rglob("*.json"))
    doc = json.loads(result.read_text())
    assert doc["dataset"] == "eimt16" and doc["protocol"] == "fixed" and doc["experiment"] == "feature-aan-quick"
    # inherited from the built-in feature-aan's eimt16 settings, capped by the user's file
    assert doc["params"]["valence"]["batch_size"] == 20 and doc["params"]["arousal"]["batch_size"] == 40
    assert doc["params"]["valence"]["lr"] == 0.01 and doc["params"]["valence"]["max_epochs"] == 3
    for target in ("valence", "arousal"):
        m = doc["targets"][target]["metrics"]
        assert m["n"] == len(pristine.test) and np.isfinite(m["mse"])
        preds = [p for p in doc["predictions"] if p["target"] == target]
        assert sorted(p["item_id"] for p in preds) == pristine.test  # only test excerpts are predicted
        for p in preds:
            assert p["y_true"] == pytest.approx(pristine.labels[p["item_id"]][0 if target == "valence" else 1],
                                                rel=1e-6)
