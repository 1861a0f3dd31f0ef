"""The plugin door: built-ins and a third-party distribution load the same
way; a broken plugin is listed with its error while the rest keep working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_clip, run_aanbench
from aanbench.store import FeatureStore

PLUGIN_SRC = REPO / "tests" / "thirdparty_plugin"


def test_builtins_are_listed_through_entry_points(cli) -> None:
    r = cli("plugins", "--json")
    rows = json.loads(r.output)
    got = {(x["kind"], x["name"]): x for x in rows}
    for kind, name in [("extractor", "emobase2010"), ("extractor", "affect"), ("extractor", "logmel"),
                       ("dataset", "demo"), ("dataset", "files"), ("model", "feature-aan"), ("model", "ridge"),
                       ("model", "mean")]:
        assert (kind, name) in got, f"{kind} {name} missing"
        assert got[(kind, name)]["origin"] == "built-in"
    # a plugin that only adds CLI commands is listed too
    assert ("commands", "aan_legacy") in got


def test_plugin_filter_env_keeps_tests_hermetic() -> None:
    r = run_aanbench("plugins", "--json", env={"AANBENCH_PLUGINS": "baselines"})
    rows = json.loads(r.stdout)
    assert {x["name"] for x in rows} == {"mean", "ridge"}


@pytest.fixture(scope="module")
def installed_plugin():
    """pip-install the example third-party package into this environment."""
    pip = [sys.executable, "-m", "pip"]
    r = subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(PLUGIN_SRC)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    yield "aanbench-example-plugin"
    subprocess.run([*pip, "uninstall", "-y", "-q", "aanbench-example-plugin"], capture_output=True, text=True)


def test_third_party_plugin_lists_and_extracts(installed_plugin: str, tmp_path: Path) -> None:
    r = run_aanbench("plugins", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    mine = [x for x in rows if x["origin"] == installed_plugin]
    assert {(x["kind"], x["name"]) for x in mine} == {("extractor", "example-colour"), ("error", "example_broken")}
    broken = next(x for x in mine if x["kind"] == "error")
    assert "broken on purpose" in broken["error"]
    assert any(x["name"] == "affect" for x in rows)  # the rest still works

    media = tmp_path / "media"
    for i, level in enumerate((30, 130, 230)):
        make_clip(media / f"c{i}.mp4", level=level)
    store = tmp_path / "store"
    r = run_aanbench("extract", "files", "--root", media, "--store", store, "--extractors", "example-colour")
    assert r.returncode == 0, r.stdout + r.stderr
    g = FeatureStore(store, mode="r").open_group("files")
    arr = g.feature("example-colour@1")
    values = arr.read()
    assert values.shape == (3, 3)
    # mean colour follows the clip's background level (the moving square adds a little)
    assert np.all(np.diff(values[:, 0]) > 80)
    assert abs(values[0, 1] - 30) < 15
    assert arr.provenance["plugin_version"] == "0.3.1"
