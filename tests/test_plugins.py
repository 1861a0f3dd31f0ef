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
    assert ("commands", "import_aan") in got


def test_plugin_filter_env_keeps_tests_hermetic() -> None:
    r = run_aanbench("plugins", "--json", env={"AANBENCH_PLUGINS": "baselines"})  # fresh process: fresh discovery
    rows = json.loads(r.stdout)
    assert {x["name"] for x in rows} == {"mean", "ridge"}


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """pip-install the example third-party package into a folder of its own,
    which the tests' fresh processes get on their import path: the same door
    (its entry points, found through its installed metadata) without
    installing into the shared environment, where the other test processes
    running meanwhile read half-written metadata (a `plugins` that failed on
    a distribution without a name)."""
    site = tmp_path_factory.mktemp("plugin-site")
    pip = [sys.executable, "-m", "pip"]
    r = subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", "--target", str(site),
                        str(PLUGIN_SRC)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert list(site.glob("aanbench_example_plugin-*.dist-info"))  # installed metadata, as pip installs it anywhere
    return "aanbench-example-plugin", {"PYTHONPATH": str(site)}


def test_third_party_plugin_lists_and_extracts(installed_plugin: tuple, tmp_path: Path) -> None:
    # fresh processes: plugin discovery finds the package pip just installed
    name, env = installed_plugin
    r = run_aanbench("plugins", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    mine = [x for x in rows if x["origin"] == name]
    assert {(x["kind"], x["name"]) for x in mine} == {("extractor", "example-colour"), ("error", "example_broken")}
    broken = next(x for x in mine if x["kind"] == "error")
    assert "broken on purpose" in broken["error"]
    assert any(x["name"] == "affect" for x in rows)  # the rest still works

    media = tmp_path / "media"
    for i, level in enumerate((30, 130, 230)):
        make_clip(media / f"c{i}.mp4", level=level)
    store = tmp_path / "store"
    r = run_aanbench("extract", "files", "--root", media, "--store", store, "--extractors", "example-colour", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    g = FeatureStore(store, mode="r").open_group("files")
    arr = g.feature("example-colour@1")
    values = arr.read()
    assert values.shape == (3, 3)
    # mean colour follows the clip's background level (the moving square adds a little)
    assert np.all(np.diff(values[:, 0]) > 80)
    assert abs(values[0, 1] - 30) < 15
    assert arr.provenance["plugin_version"] == "0.3.1"


# Every CLI call and every worker loads all plugins: doing so must not import
# torch or torchvision (seconds of start-up); they come in when a torch
# plugin is used. Checked in a fresh interpreter, with every plugin enabled.
_NO_TORCH_SCRIPT = r"""
import json, sys
from pathlib import Path

from typer.testing import CliRunner

import aanbench.cli
from aanbench.plugin_manager import get_plugins

def torch_state():
    return {"torch": "torch" in sys.modules, "torchvision": "torchvision" in sys.modules}

out = {}
p = get_plugins()
out["after_get_plugins"] = torch_state()
out["extractors"] = sorted(p.extractors)
out["models"] = sorted(p.models)
out["datasets"] = sorted(p.datasets)
out["builtin_errors"] = {r.name: r.error for r in p.records if r.error and r.distribution == "aanbench"}
runner = CliRunner()
out["help_exit"] = runner.invoke(aanbench.cli.app, ["--help"]).exit_code
out["plugins_exit"] = runner.invoke(aanbench.cli.app, ["plugins"]).exit_code
out["import_aan_help_exit"] = runner.invoke(aanbench.cli.app, ["models", "import-aan", "--help"]).exit_code
out["after_cli"] = torch_state()
root, store = Path(sys.argv[1]), Path(sys.argv[2])
r = runner.invoke(aanbench.cli.app, ["extract", "files", "--root", str(root), "--store", str(store),
                                     "--extractors", "affect,logmel,emobase2010"])
out["extract_exit"], out["extract_output"] = r.exit_code, r.output[-2000:]
out["after_extract"] = torch_state()
# a plugin module's unknown attribute is a plain AttributeError (no lazy
# forwarding), and the networks import torch only from their own modules
import aanbench_plugins.extractors.i3d as i3d
try:
    i3d.no_such_name
except AttributeError:
    out["unknown_name"] = "AttributeError"
out["after_unknown_name"] = torch_state()
from aanbench_plugins.extractors._i3d_net import InceptionI3d
from aanbench_plugins.models._feature_aan_net import FeatureAANNet
from aanbench_plugins.commands._aan_legacy_convert import convert_checkpoint
out["networks"] = [InceptionI3d.__name__, FeatureAANNet.__name__, convert_checkpoint.__name__]
out["after_networks"] = torch_state()
print(json.dumps(out))
"""


def test_loading_all_plugins_does_not_import_torch(tmp_path: Path) -> None:
    import os

    media = tmp_path / "media"
    media.mkdir()
    make_clip(media / "a.mp4", seconds=2.0)
    env = {k: v for k, v in os.environ.items() if k not in ("AANBENCH_PLUGINS", "AANBENCH_DISABLE_PLUGINS")}
    r = subprocess.run([sys.executable, "-c", _NO_TORCH_SCRIPT, str(media), str(tmp_path / "store")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    no_torch = {"torch": False, "torchvision": False}
    assert out["builtin_errors"] == {}
    assert {"affect", "emobase2010", "flownets", "i3d", "logmel", "resnet50", "vggish"} <= set(out["extractors"])
    assert {"feature-aan", "mean", "ridge"} <= set(out["models"])
    assert {"cognimuse", "demo", "eimt16", "eimt16-temporal", "files"} <= set(out["datasets"])
    assert out["after_get_plugins"] == no_torch
    assert (out["help_exit"], out["plugins_exit"], out["import_aan_help_exit"]) == (0, 0, 0)
    assert out["after_cli"] == no_torch
    assert out["extract_exit"] == 0, out["extract_output"]
    assert out["after_extract"] == no_torch
    assert out["unknown_name"] == "AttributeError"
    assert out["after_unknown_name"] == no_torch
    assert out["networks"] == ["InceptionI3d", "FeatureAANNet", "convert_checkpoint"]
    assert out["after_networks"]["torch"] is True  # the check itself can see torch being imported


def test_a_distribution_without_a_name_does_not_break_plugin_discovery(tmp_path: Path) -> None:
    """Metadata without a Name (half written by a pip running meanwhile, or
    left by an interrupted one): every command failed with "'<' not
    supported between instances of 'NoneType' and 'str'" while sorting the
    entry points."""
    dist = tmp_path / "site" / "half_written-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\n")  # no Name, no Version yet
    (dist / "entry_points.txt").write_text("[aanbench]\nhalf_written = no_such_module_here\n")
    r = run_aanbench("plugins", "--json", env={"PYTHONPATH": str(tmp_path / "site")})
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert any(x["name"] == "affect" for x in rows)  # the rest load as before
    half = [x for x in rows if x["name"] == "half_written"]
    assert len(half) == 1 and half[0]["origin"] == "?" and "no_such_module_here" in half[0]["error"], half
