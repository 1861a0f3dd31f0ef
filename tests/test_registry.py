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


# ---------------------------------------------------------------- what a user writes wins (issue 25)

CHILDREN = """
[feature_sets]
colour-audio = ["mean-colour", "emobase2010"]
[experiments.quick]
extends = "feature-aan"
params.max_epochs = 20
[experiments.quicker]
extends = "quick"
params.patience = 3
datasets.demo.max_epochs = 7
[experiments.ridge-colour]
extends = "ridge"
features = "colour-audio"
"""


def test_the_childs_own_settings_beat_the_parents_dataset_section(tmp_path: Path) -> None:
    reg = load_registry(_write(tmp_path, CHILDREN))
    quick = reg.experiment("quick", "demo")
    assert quick.params["max_epochs"] == 20  # the child's params beat feature-aan's datasets.demo.max_epochs = 30
    assert quick.params["batch_size"] == 64 and quick.params["lr"] == 0.003  # the parent's demo section still applies
    assert quick.feature_set == "weightfree-both"
    assert reg.experiment("quick", "cognimuse").params["max_epochs"] == 20
    quicker = reg.experiment("quicker", "demo")
    assert quicker.params["max_epochs"] == 7 and quicker.params["patience"] == 3  # the child's dataset section first
    assert reg.experiment("quicker", "eimt16").params["max_epochs"] == 20
    assert reg.experiment("ridge-colour", "demo").features == ("mean-colour", "emobase2010")
    assert reg.experiment("ridge", "demo").feature_set == "weightfree-both"  # the parent is unchanged


def test_resolved_settings_say_where_each_came_from(tmp_path: Path) -> None:
    path = _write(tmp_path, CHILDREN)
    reg = load_registry(path)
    s = reg.resolve_settings("quicker", "demo")
    assert (s["max_epochs"].value, s["max_epochs"].source) == (7, f"experiments.quicker.datasets.demo ({path})")
    assert s["patience"].source == f"experiments.quicker.params ({path})"
    assert (s["lr"].value, s["lr"].source) == (0.003, "experiments.feature-aan.datasets.demo (built-in)")
    assert s["d_model"].source == "experiments.feature-aan.params (built-in)"
    assert (s["model"].value, s["model"].source) == ("feature-aan", "experiments.feature-aan (built-in)")
    assert s["seed"].source == "[defaults] seed"
    exp = reg.experiment("quicker", "demo")
    assert exp.sources["max_epochs"] == s["max_epochs"].source
    eimt = reg.resolve_settings("feature-aan", "eimt16")
    assert eimt["batch_size"].value == {"valence": 20, "arousal": 40}


def test_builtin_experiments_resolve_as_before() -> None:
    """The built-in children set nothing their parent's dataset sections set,
    so the new precedence changes none of them."""
    reg = load_registry()
    for name in reg.experiments:
        for dataset in ("demo", "cognimuse", "eimt16", "eimt16-temporal"):
            exp = reg.experiment(name, dataset)
            merged = reg.experiments[name]
            old = {**merged.get("params", {}),
                   **{k: v for k, v in merged.get("datasets", {}).get(dataset, {}).items()
                      if k not in ("features", "protocol", "seed")}}
            assert dict(exp.params) == old, (name, dataset)
            if dataset == "eimt16-temporal" and "feedback" in exp.params:  # never the target itself (issue 24)
                assert exp.params["feedback"] == "none", name


def _readme_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = text.split("```toml\n")[1:]
    return [b.split("```", 1)[0] for b in blocks]


def test_readme_registry_examples_resolve_to_what_they_promise(tmp_path: Path) -> None:
    blocks = _readme_blocks()
    mine = next(b for b in blocks if "feature-aan-quick" in b)
    reg = load_registry(_write(tmp_path, mine))
    for dataset in ("demo", "cognimuse", "eimt16"):
        quick = reg.experiment("feature-aan-quick", dataset)
        base = reg.experiment("feature-aan", dataset)
        assert quick.params["max_epochs"] == 20  # "... with fewer epochs"
        assert {k: v for k, v in quick.params.items() if k != "max_epochs"} == \
            {k: v for k, v in base.params.items() if k != "max_epochs"}  # "the paper's settings per dataset"
        colour = reg.experiment("ridge-colour", dataset)
        assert colour.feature_set == "colour-audio" and colour.features == ("mean-colour", "emobase2010")
    median = next(b for b in blocks if "[experiments.median]" in b)
    exp = load_registry(_write(tmp_path, median)).experiment("median", "demo")
    assert exp.model == "median" and exp.feature_set == "weightfree-both"


# ---------------------------------------------------------------- validated settings and safe names (issue 25)

def _checked(tmp_path: Path, text: str, name: str = "x", dataset: str = "demo"):
    from aanbench.paramspec import RUNNER_PARAM_SPECS
    from aanbench.plugin_manager import get_plugins
    from aanbench.registry import check_params
    from aanbench.runner import RUNNER_SETTINGS

    path = _write(tmp_path, text)
    exp = load_registry(path).experiment(name, dataset)
    spec = get_plugins().model(exp.model)
    check_params(exp, {**spec.params, **RUNNER_SETTINGS}, specs={**RUNNER_PARAM_SPECS, **spec.param_specs})
    return path


@pytest.mark.parametrize("model,key,value,allowed", [
    ("feature-aan", "max_epochs", "-5", "an integer >= 1"),
    ("feature-aan", "batch_size", "0", "an integer >= 1"),
    ("feature-aan", "lr", "0.0", "a number > 0 and <= 10"),
    ("feature-aan", "val_fraction", "5.0", "a number >= 0 and < 1"),
    ("feature-aan", "val_fraction", "1.0", "a number >= 0 and < 1"),
    ("feature-aan", "val_fraction", "-0.1", "a number >= 0 and < 1"),
    ("feature-aan", "dropout", "1.5", "a number >= 0 and < 1"),
    ("ridge", "alphas", "[]", "a non-empty list of numbers > 0"),
    ("ridge", "alphas", "[1.0, -2.0]", "a non-empty list of numbers > 0"),
    ("temporal-aan", "sequence_length", "1e9", "an integer >= 1 and <= 4096"),
    ("temporal-aan", "sequence_start", '"middle"', "one of 'drop', 'pad'"),
    ("feature-aan", "max_epochs", '"ten"', "an integer >= 1"),
    ("feature-aan", "batch_size", "{ valence = 20, arousal = -1 }", "an integer >= 1"),
])
def test_bad_values_are_refused_naming_file_experiment_key_value_and_what_is_allowed(
        tmp_path: Path, model: str, key: str, value: str, allowed: str) -> None:
    text = f'[experiments.x]\nmodel = "{model}"\nfeatures = "both"\n[experiments.x.params]\n{key} = {value}\n'
    with pytest.raises(AanbenchError) as err:
        _checked(tmp_path, text)
    msg = str(err.value)
    assert err.value.exit_code == 2 and "\n" not in msg
    assert msg.startswith(f"{tmp_path / 'registry.toml'}: experiments.x: {key} = ") and f"allowed: {allowed}" in msg, msg
    assert f"(set in experiments.x.params ({tmp_path / 'registry.toml'}))" in msg


def test_a_negative_seed_and_good_values_at_the_edges(tmp_path: Path) -> None:
    with pytest.raises(AanbenchError, match=r"experiments.x: seed = -1: out of range; allowed: an integer >= 0"):
        _checked(tmp_path, '[experiments.x]\nmodel = "ridge"\nfeatures = "both"\nseed = -1\n')
    _checked(tmp_path, '[experiments.x]\nmodel = "feature-aan"\nfeatures = "both"\nseed = 0\n'
                       '[experiments.x.params]\nmax_epochs = 1\nbatch_size = 1\nval_fraction = 0.5\n'
                       'sequence_length = 4096\n')
    reg = load_registry()  # every built-in experiment passes on every dataset it names
    for name in reg.experiments:
        for dataset in ["demo", *reg.experiments[name].get("datasets", {})]:
            from aanbench.paramspec import RUNNER_PARAM_SPECS
            from aanbench.plugin_manager import get_plugins
            from aanbench.registry import check_params
            from aanbench.runner import RUNNER_SETTINGS

            exp = reg.experiment(name, dataset)
            spec = get_plugins().models.get(exp.model)
            if spec is not None:
                check_params(exp, {**spec.params, **RUNNER_SETTINGS},
                             specs={**RUNNER_PARAM_SPECS, **spec.param_specs})


@pytest.mark.parametrize("toml_key,kind", [
    ('[experiments."../../../escaped-exp"]', "experiment"),
    ('[experiments.".hidden"]', "experiment"),
    ('[experiments."a b"]', "experiment"),
])
def test_unsafe_experiment_names_are_refused(tmp_path: Path, toml_key: str, kind: str) -> None:
    with pytest.raises(AanbenchError, match=f"{kind} name .* is not allowed") as err:
        load_registry(_write(tmp_path, f'{toml_key}\nmodel = "ridge"\nfeatures = "both"\n'))
    assert err.value.exit_code == 2


def test_unsafe_feature_set_and_dataset_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AanbenchError, match=r"feature_sets\.\.\./x: feature set name '\.\./x' is not allowed"):
        load_registry(_write(tmp_path, '[feature_sets]\n"../x" = ["affect"]\n'))
    with pytest.raises(AanbenchError, match="dataset name '../d' is not allowed"):
        load_registry(_write(tmp_path, '[experiments.x]\nmodel = "ridge"\nfeatures = "both"\n'
                                       '[experiments.x.datasets."../d"]\nalphas = [1.0]\n'))
