"""registry.toml: the shipped file loads; every kind of mistake is refused
with a message that names the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from aanbench.contracts import AanbenchError
from aanbench.registry import load_registry

GOOD = """
[feature_sets]
a = ["affect"]
[experiments.x]
model = "ridge"
features = "a"
[experiments.x.params]
alphas = [1.0]
"""


def test_shipped_registry_has_the_papers_settings() -> None:
    reg = load_registry()
    cog = reg.experiment("feature-aan", "cognimuse")
    assert cog.features == ("resnet50", "flownets", "i3d", "vggish", "emobase2010")
    assert cog.params_for("valence")["lr"] == 0.0005 and cog.params_for("arousal")["batch_size"] == 30
    assert cog.params["layers"] == 6 and cog.params["heads"] == 2 and cog.params["d_model"] == 8
    assert cog.params["max_epochs"] == 500 and cog.params["patience"] == 30 and cog.params["dropout"] == 0.1
    eimt = reg.experiment("feature-aan", "eimt16")
    assert eimt.params_for("arousal")["batch_size"] == 40 and eimt.params_for("valence")["batch_size"] == 20
    assert eimt.params_for("valence")["lr"] == 0.01
    assert reg.experiment("feature-aan-video", "eimt16").features == ("resnet50", "flownets", "i3d")
    assert reg.experiment("feature-aan-audio", "demo").features == ("emobase2010", "logmel")
    assert reg.experiment("feature-aan", "demo").feature_set == "weightfree-both"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "registry.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, key, problem", [
    ('bogus = 1\n' + GOOD, "bogus", "unknown section"),
    (GOOD.replace('features = "a"', 'features = "nope"'), "experiments.x.features", "unknown feature set 'nope'"),
    (GOOD.replace('model = "ridge"', 'model = "ridge"\nlearning_rate = 3'), "experiments.x.learning_rate", "unknown key"),
    (GOOD.replace('model = "ridge"\n', ''), "experiments.x.model", "missing"),
    (GOOD + '[experiments.x.datasets.demo]\nbatch_size = { happy = 3 }\n', "experiments.x.datasets.demo.batch_size",
     "unknown target"),
    (GOOD + '[experiments.y]\nextends = "z"\n[experiments.z]\nextends = "y"\n', "extends", "cycle"),
    (GOOD.replace('a = ["affect"]', 'a = []'), "feature_sets.a", "non-empty list"),
    (GOOD + '[weights."f.pth"]\nextractor = "x"\n', 'weights.f.pth.sha256', "missing"),
    ("[feature_sets\n", "", "not valid TOML"),
])
def test_registry_errors_name_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(AanbenchError) as ei:
        load_registry(_write(tmp_path, text))
    msg = str(ei.value)
    assert key in msg and problem in msg and str(tmp_path) in msg


def test_missing_registry_file(tmp_path: Path) -> None:
    with pytest.raises(AanbenchError, match="registry file not found"):
        load_registry(tmp_path / "absent.toml")


def test_unknown_model_parameter_refused_at_run(tmp_path: Path, cli) -> None:
    reg = _write(tmp_path, GOOD.replace("alphas = [1.0]", "alphas = [1.0]\nalpah = 2"))
    r = cli("experiments", "--registry", reg)
    assert r.exit_code == 0 and "ridge" in r.output
    from aanbench.plugin_manager import get_plugins
    from aanbench.registry import check_params

    exp = load_registry(reg).experiment("x", "demo")
    with pytest.raises(AanbenchError, match="no parameter 'alpah'"):
        check_params(exp, get_plugins().model("ridge").params, reg)


def test_cli_reports_registry_error_with_exit_2(tmp_path: Path, cli) -> None:
    reg = _write(tmp_path, GOOD.replace('features = "a"', 'features = "nope"'))
    r = cli("experiments", "--registry", reg)
    assert r.exit_code == 2
    assert "experiments.x.features" in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------- the user's file adds to the built-in registry

MINE = """
[defaults]
seed = 7
[feature_sets]
mine = ["affect", "logmel"]
[experiments.feature-aan-mine]
extends = "feature-aan"
description = "feature-aan on my features"
features = "mine"
[experiments.feature-aan-mine.datasets.eimt16]
max_epochs = 3
[experiments.ridge-audio]
extends = "ridge"
features = "weightfree-audio"
"""


def test_user_file_adds_to_the_builtin_registry(tmp_path: Path) -> None:
    reg = load_registry(_write(tmp_path, MINE))
    assert {"feature-aan", "ridge", "mean", "feature-aan-mine", "ridge-audio"} <= set(reg.experiments)
    mine = reg.experiment("feature-aan-mine", "eimt16")
    assert mine.features == ("affect", "logmel") and mine.model == "feature-aan"
    # the built-in eimt16 settings are inherited, the user's override wins
    assert mine.params_for("arousal")["batch_size"] == 40 and mine.params["max_epochs"] == 3
    assert mine.params["layers"] == 6 and mine.seed == 7 and mine.source == tmp_path / "registry.toml"
    assert reg.experiment("ridge-audio", "cognimuse").features == ("emobase2010", "logmel")  # a built-in set
    builtin = reg.experiment("feature-aan", "eimt16")
    assert builtin.params["max_epochs"] == 500 and builtin.source == reg.builtin_path
    assert reg.origin("feature-aan") == "built-in" and reg.origin("ridge-audio") == str(tmp_path / "registry.toml")


def test_user_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AANBENCH_REGISTRY", str(_write(tmp_path, MINE)))
    assert "ridge-audio" in load_registry().experiments
    monkeypatch.setenv("AANBENCH_REGISTRY", str(tmp_path / "gone.toml"))
    with pytest.raises(AanbenchError, match=r"registry file not found: .*gone.toml \(named by \$AANBENCH_REGISTRY\)"):
        load_registry()


@pytest.mark.parametrize("text, key", [
    ('[experiments.ridge]\nmodel = "mean"\nfeatures = "both"\n', "experiments.ridge"),
    ('[feature_sets]\nboth = ["affect"]\n', "feature_sets.both"),
    ('[weights."rgb_imagenet.pt"]\nextractor = "i3d"\nsha256 = "00"\nsource = "x"\n', "weights.rgb_imagenet.pt"),
])
def test_user_file_cannot_redefine_a_builtin_name(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(AanbenchError) as ei:
        load_registry(_write(tmp_path, text))
    msg = str(ei.value)
    assert key in msg and "already defined in the built-in registry" in msg and str(tmp_path) in msg


def test_user_file_extends_an_unknown_experiment(tmp_path: Path) -> None:
    with pytest.raises(AanbenchError, match=r"experiments\.x\.extends: no experiment 'nope' \(here or built in\)"):
        load_registry(_write(tmp_path, '[experiments.x]\nextends = "nope"\n'))


def test_experiments_lists_both_with_their_origin(tmp_path: Path, cli) -> None:
    import json

    mine = _write(tmp_path, MINE)
    r = cli("experiments", "--registry", mine, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    rows = {e["name"]: e for e in doc["experiments"]}
    assert rows["feature-aan"]["origin"] == "built-in"
    assert rows["feature-aan-mine"]["origin"] == str(mine) and rows["feature-aan-mine"]["extends"] == "feature-aan"
    assert rows["feature-aan-mine"]["features"] == ["affect", "logmel"]
    assert doc["files"][-1] == str(mine) and doc["files"][0].endswith("registry.toml")
    r = cli("experiments", "--registry", mine)
    line = next(ln for ln in r.output.splitlines() if "ridge-audio" in ln)
    assert str(mine) in line  # the origin, whole, on the experiment's row


def test_readme_model_plugin_runs_from_a_user_experiments_file(tmp_path: Path) -> None:
    """The README's "Running a new model" example, as written: its plugin
    module and its experiments file, run through `aanbench run` on a demo
    store group (written through the store API, random features)."""
    import re
    import subprocess
    import sys

    import numpy as np

    from aanbench.contracts import Item
    from aanbench.plugin_manager import get_plugins
    from aanbench.store import FeatureStore
    from conftest import REPO

    text = (REPO / "README.md").read_text()
    section = text[text.index("### Running a new model"):]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    toml = re.findall(r"```toml\n(.*?)```", section, re.S)[0]
    (tmp_path / "median_plugin.py").write_text(code)
    (tmp_path / "mine.toml").write_text(toml)

    demo = get_plugins().dataset("demo")
    items = [Item(id=f"c{i}", path=None, labels={"valence": 0.1 * i, "arousal": 0.05 * (i % 4)},
                  group=f"m{i // 3}", split="test" if i >= 9 else "train") for i in range(12)]
    g = FeatureStore(tmp_path / "store").ensure_group("demo", items, segmentation=demo.segmentation, chunk_rows=12,
                                                      dataset_version=demo.version, dataset_config=demo.config())
    rng = np.random.default_rng(0)
    for name in load_registry().feature_sets["weightfree-both"]:
        ex = get_plugins().extractor(name)
        arr = g.create_feature(f"{name}@{ex.version}", 4, {"extractor": name, "version": ex.version, "dim": 4})
        arr.write_chunk(0, slice(0, 12), rng.normal(size=(12, 4)).astype(np.float32), np.ones(12, bool), [""] * 12)

    script = ("import sys; sys.path.insert(0, sys.argv[1]); import median_plugin\n"
              "from aanbench.plugin_manager import get_plugins; get_plugins().register(median_plugin)\n"
              "from aanbench.cli import app; app(sys.argv[2:], prog_name='aanbench')\n")
    args = re.findall(r"^aanbench run median demo (.*)$", section, re.M)[0].split()
    assert args[:2] == ["--registry", "mine.toml"]  # the command the README shows, with this test's paths
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path), "run", "median", "demo", "--registry", "mine.toml",
                        "--store", str(tmp_path / "store"), "--out", str(tmp_path / "results"), "--protocol", "fixed",
                        "--json"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    [result] = (tmp_path / "results").rglob("*.json")
    import json

    doc = json.loads(result.read_text())
    assert doc["model"] == "median" and doc["experiment"] == "median"
    preds = [p for p in doc["predictions"] if p["target"] == "valence"]
    # the training median, after the runner carved one of the 3 training movies off for validation
    assert len(preds) == 3 and len({p["y_pred"] for p in preds}) == 1
    assert min(abs(preds[0]["y_pred"] - m) for m in (0.25, 0.4, 0.55)) < 1e-6
