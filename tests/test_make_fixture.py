"""`make_fixture` (what `aanbench datasets make-fixture eimt16|cognimuse DIR`
runs): a generated copy in the official layout that the real loaders and
checks accept, a note saying it is generated, and commands that work on it."""

from __future__ import annotations

import json

import pytest

from aanbench.contracts import AanbenchError
from aanbench.pluginkit.datacheck import MANIFEST_NAME
from aanbench_plugins.datasets import fixtures
from aanbench_plugins.datasets.cognimuse import Cognimuse
from aanbench_plugins.datasets.eimt16 import Eimt16
from aanbench_plugins.datasets.fixtures import FIXTURE_NOTE, make_fixture

import fixtures_official


def test_the_tests_writers_are_the_packaged_ones():
    assert fixtures_official.write_eimt16 is fixtures.write_eimt16_fixture is fixtures.write_eimt16
    assert fixtures_official.write_cognimuse is fixtures.write_cognimuse_fixture is fixtures.write_cognimuse


def test_eimt16_fixture_checks_ok_and_its_commands_run(tmp_path, cli):
    root = tmp_path / "eimt16"
    made = make_fixture("eimt16", root)
    assert made.dataset == "eimt16" and made.root == root and made.n_videos == 16 and made.n_annotation_files == 4
    assert made.options == ["official_counts=false"]
    note = (root / FIXTURE_NOTE).read_text()
    assert "GENERATED" in note and all(c in note for c in made.try_next)
    assert "--option official_counts=false" in note

    items = Eimt16().configure(official_counts="false").items(root)
    assert len(items) == 16 and sum(i.split == "test" for i in items) == 4
    assert {i.group for i in items if i.split == "train"} == {"20_Mississippi", "Big_Buck_Bunny", "Sintel"}

    # the printed commands, as a user runs them (check, then extract the weight-free features)
    check_cmd, extract_cmd, mean_cmd, bench_cmd = made.try_next
    assert check_cmd.startswith("aanbench datasets check eimt16 ")
    r = cli(*check_cmd.split()[1:], "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["ok"] is True and doc["found"]["training excerpts (ACCEDE*.mp4)"] == 12
    assert (root / MANIFEST_NAME).is_file()
    # the same command with one extractor (logmel) to keep the test short
    args = extract_cmd.split()[1:]
    args[args.index("--extractors") + 1] = "logmel"
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "eimt16-store" / "zarr.json").is_file()
    # the sanity row needs no features at all
    r = cli(*mean_cmd.split()[1:])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "eimt16-results" / "eimt16" / "mean" / "seed0.json").is_file()
    assert "--features weightfree-both" in bench_cmd


@pytest.mark.slow
def test_cognimuse_fixture_checks_ok(tmp_path):
    root = tmp_path / "cognimuse"
    made = make_fixture("cognimuse", root, seed=3)
    assert made.n_videos == 12 and made.n_annotation_files == 12 * 6 and made.options == []
    check = Cognimuse().check(root)
    assert check.ok, check.errors
    assert check.found == {"movies with annotations": 12, "movies with a video": 12}
    assert not any("no audio stream" in w for w in check.warnings)  # clips with sound, for the audio extractors
    items = Cognimuse().items(root)
    assert len(items) == 12 * 6 and {i.group for i in items} == set(fixtures.COGNIMUSE_TOKENS)
    assert "aanbench datasets check cognimuse --root" in (root / FIXTURE_NOTE).read_text()


def test_make_fixture_refuses_other_datasets_and_folders_with_files(tmp_path):
    with pytest.raises(AanbenchError, match="no fixture for dataset 'demo'; fixtures exist for cognimuse, eimt16"):
        make_fixture("demo", tmp_path / "x")
    full = tmp_path / "my-real-copy"
    full.mkdir()
    (full / "ACCEDEranking.txt").write_text("real data")
    with pytest.raises(AanbenchError, match="not empty"):
        make_fixture("eimt16", full)
    assert sorted(p.name for p in full.iterdir()) == ["ACCEDEranking.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(AanbenchError, match="not a folder"):
        make_fixture("cognimuse", tmp_path / "file")
    assert not (tmp_path / "x").exists()
