"""Named models (aanbench.named_models): the authors' published COGNIMUSE
checkpoints shipped as package data, listed, resolved by name or path, their
extractors' weights checked; the shipped bundles equal a fresh conversion of
the vendored checkpoints; the vendored reference fails loudly when changed."""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Extractor, MediaRequest, WeightFile
from aanbench.modelfile import BUNDLE_FORMAT, load_any, save_model
from aanbench.named_models import (MODELS_DIR, check_weights, get_model, list_models, read_index, resolve_model,
                                   resolve_models)
from aanbench.plugin_manager import Plugins, get_plugins
from aanbench.predict import predict_group
from aanbench.store import FeatureStore
from aanbench_plugins.commands._aan_legacy_convert import predict_arrays

from reference import ENV_VAR, VENDORED, convert_named, reference_dir

REPO = Path(__file__).resolve().parents[1]
NAMES = ["aan-cognimuse", "aan-cognimuse-audio", "aan-cognimuse-video"]
# The four neural weight files (extractor -> file, SHA-256), as registry.toml declares them.
NEURAL = {
    "resnet50": ("resnet50-0676ba61.pth", "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a"),
    "i3d": ("rgb_imagenet.pt", "2609088c2e8c868187c9921c50bc225329a9057ed75e76120e0b4a397a2c7538"),
    "flownets": ("flownets_EPE1.951.pth", "d98505dc749c35f0d4b4ce0536b4f64797ec22ea194a5f743af97dc3f778447d"),
    "vggish": ("vggish-10086976.pth", "10086976245803799d9194e9a73d9b6c1549c71d1b80106f5cade5608a561f4b"),
}
# The published test vector (README of the reference): arousal of the video_audio model on the samples.
TEST_VECTOR = np.array([0.29236588, 0.58557498, 0.67334878, 0.68817770, 0.21161681,
                        -0.04671094, 0.64316833, 0.69974601, 0.71532798, 0.72236204], dtype=np.float32)
SAMPLE_FILES = {"resnet50": "resnet50_sample.h5", "flownets": "flownet_sample.h5", "i3d": "i3d_sample.h5",
                "vggish": "vggish_sample.h5", "emobase2010": "emobase_sample.h5"}


# --------------------------------------------------------------------------
# the list


def test_the_three_named_models_are_listed_with_what_they_are():
    models = {m.name: m for m in list_models()}
    assert sorted(models) == NAMES
    assert models["aan-cognimuse"].features == ("resnet50", "flownets", "i3d", "vggish", "emobase2010")
    assert models["aan-cognimuse-video"].features == ("resnet50", "flownets", "i3d")
    assert models["aan-cognimuse-audio"].features == ("vggish", "emobase2010")
    for m in models.values():
        assert m.predicts == ("arousal", "valence") and m.model == "feature-aan"
        assert m.dataset == "cognimuse" and "MDB" in m.training_data and "held out" in m.training_data
        assert m.label_range == (-1.0, 1.0)
        assert m.licence == "MIT" and "ivyha010/AttendAffectNet" in m.attribution
        assert m.path.is_file() and m.path.parent == MODELS_DIR
        d = m.to_dict()
        assert d["name"] == m.name and d["features"] == list(m.features) and d["licence"] == "MIT"
    # the licence and attribution travel beside the files
    assert (MODELS_DIR / "LICENSE").read_bytes() == (VENDORED / "LICENSE").read_bytes()
    attribution = (MODELS_DIR / "ATTRIBUTION.md").read_text()
    for m in models.values():
        assert m.file in attribution and all(src in attribution for src in m.sources.values())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(AanbenchError) as err:
        get_model("aan-eimt16")
    assert all(n in str(err.value) for n in NAMES)


def test_a_malformed_index_names_the_model_and_field(tmp_path):
    bad = tmp_path / "models.toml"
    bad.write_text('[models.x]\nfile = "x.pt"\nsummary = "s"\n')
    with pytest.raises(AanbenchError, match=r"model 'x' lacks .*features"):
        read_index(bad)
    bad.write_text("[models.x\n")
    with pytest.raises(AanbenchError, match="not valid TOML"):
        read_index(bad)


def test_package_data_globs_ship_every_file_of_the_models_folder():
    with open(REPO / "pyproject.toml", "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    assert "aanbench.data.models" in tool["packages"]
    globs = tool["package-data"]["aanbench.data.models"]
    files = sorted(p.name for p in MODELS_DIR.iterdir() if p.is_file())
    assert {"models.toml", "LICENSE", "ATTRIBUTION.md", *(f"{n}.pt" for n in NAMES)} <= set(files)
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert unshipped == []


# --------------------------------------------------------------------------
# the shipped files cannot drift from the vendored checkpoints


# What may differ between two conversions of the same checkpoint: the
# converting software's version strings (per-target provenance).
VOLATILE = {"converted_by", "torch_version"}


def _assert_same(a, b, where="bundle"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict), where
        keys = set(a) | set(b)
        if where.endswith(("provenance.targets.arousal", "provenance.targets.valence")):
            keys -= VOLATILE
        assert {k for k in keys if k not in a} == set() and {k for k in keys if k not in b} == set(), where
        for k in sorted(keys):
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("name", NAMES)
def test_shipped_bundle_equals_a_fresh_conversion_of_the_vendored_checkpoints(name):
    nm = get_model(name)
    shipped = torch.load(nm.path, map_location="cpu", weights_only=True)
    fresh = convert_named(name)
    _assert_same(shipped, fresh)
    assert shipped["format"] == BUNDLE_FORMAT and list(shipped["targets"]) == ["arousal", "valence"]
    for t, src in nm.sources.items():
        prov = shipped["provenance"]["targets"][t]
        assert prov["source_file"] == src
        assert prov["source_sha256"] == hashlib.sha256((VENDORED / "trained_models" / src).read_bytes()).hexdigest()


def test_a_changed_weight_is_caught_by_the_comparison():
    fresh = convert_named("aan-cognimuse-audio")
    changed = convert_named("aan-cognimuse-audio")
    sd = changed["targets"]["valence"]["state"]["state_dict"]
    key = next(iter(sd))
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] += 1e-6
    with pytest.raises(AssertionError, match="valence"):
        _assert_same(changed, fresh)


# --------------------------------------------------------------------------
# the vendored reference: present, unchanged, else a loud failure


def test_reference_is_the_vendored_copy_and_a_damaged_copy_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert reference_dir() == VENDORED
    copy = tmp_path / "ref"
    shutil.copytree(VENDORED, copy)
    monkeypatch.setenv(ENV_VAR, str(copy))
    assert reference_dir() == copy
    (copy / "sample_inputs" / "vggish_sample.h5").unlink()
    with open(copy / "trained_models" / get_model("aan-cognimuse").sources["arousal"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(FileNotFoundError) as err:
        reference_dir()
    msg = str(err.value)
    assert "vggish_sample.h5: missing" in msg and "video_audio.pth: SHA-256 differs" in msg and ENV_VAR in msg


# --------------------------------------------------------------------------
# resolving --model: a file or a name


def test_resolve_a_name_a_file_and_neither(tmp_path, monkeypatch):
    r = resolve_model("aan-cognimuse")
    assert r.named is get_model("aan-cognimuse") and r.targets == ["arousal", "valence"]
    assert r.payload["features"] == list(r.named.features) and r.payload["dataset"]["name"] == "cognimuse"
    assert "aan-cognimuse" in r.source and str(r.named.path) in r.source

    # a single-target model file resolves as before (load_any's bundle layout)
    single = {k: v for k, v in convert_named("aan-cognimuse-audio")["targets"]["valence"].items()}
    path = save_model(tmp_path / "v.model", {"format": "aanbench.model/1", "model": "feature-aan",
                                             "target": "valence", "features": ["vggish", "emobase2010"],
                                             **single})
    r = resolve_model(path)
    assert r.named is None and r.targets == ["valence"] and r.source == str(path)

    # an existing file wins over a name
    monkeypatch.chdir(tmp_path)
    shutil.copy(path, tmp_path / "aan-cognimuse")
    assert resolve_model("aan-cognimuse").named is None

    with pytest.raises(AanbenchError) as err:
        resolve_model(tmp_path / "absent.pt")
    assert "no such model file, and not a named model" in str(err.value) and "aan-cognimuse-video" in str(err.value)
    with pytest.raises(AanbenchError, match="not a model file"):
        resolve_model(tmp_path)


def test_two_models_for_one_target_are_refused():
    with pytest.raises(AanbenchError, match="both predict arousal"):
        resolve_models(["aan-cognimuse", "aan-cognimuse-video"])
    assert [r.named.name for r in resolve_models(["aan-cognimuse-audio"])] == ["aan-cognimuse-audio"]


def test_named_bundle_predicts_both_targets_through_the_engine_and_gives_the_test_vector(tmp_path, cli):
    """The path `predict --model aan-cognimuse` takes: the five sample feature
    files imported into a store, the named bundle applied by predict_group."""
    store = tmp_path / "store"
    for extractor, fname in SAMPLE_FILES.items():
        r = cli("store", "import-h5", "--store", store, "--dataset", "mdb", "--extractor", extractor,
                VENDORED / "sample_inputs" / fname)
        assert r.exit_code == 0, r.output
    bundle = resolve_model("aan-cognimuse").payload
    preds = predict_group(bundle, FeatureStore(store, mode="r").open_group("mdb", "default"), get_plugins())
    assert preds.targets == ["arousal", "valence"] and preds.n_left_out == 0
    diff = float(np.abs(preds.values["arousal"] - TEST_VECTOR).max())
    print(f"max |aan-cognimuse arousal - published test vector| = {diff:.3g}")
    assert diff < 1e-5
    # valence: the same numbers as the converter's own prediction of the valence checkpoint
    samples = {}
    for name, fname in SAMPLE_FILES.items():
        with h5py.File(VENDORED / "sample_inputs" / fname, "r") as f:
            samples[name] = np.asarray(f["default"][()], dtype=np.float32)
    ref = predict_arrays({"features": bundle["features"], "state": bundle["targets"]["valence"]["state"]},
                         [samples[f] for f in bundle["features"]])
    assert np.abs(preds.values["valence"] - ref).max() < 1e-6
    assert np.abs(preds.values["valence"] - preds.values["arousal"]).max() > 1e-2  # two different models


# --------------------------------------------------------------------------
# the extractors' weights


def test_resolving_aan_cognimuse_without_weights_names_the_four_files(tmp_path):
    folder = tmp_path / "weights"
    with pytest.raises(AanbenchError) as err:
        resolve_model("aan-cognimuse", require_weights=True, weights_dir=folder)
    msg = str(err.value)
    print(msg)
    assert msg.startswith("model aan-cognimuse needs 4 pretrained weight files")
    for extractor, (fname, digest) in NEURAL.items():
        assert f"{fname} (extractor {extractor}" in msg and digest in msg
        assert str(folder / fname) in msg
    for name in ("ResNet-50", "I3D", "FlowNetS", "VGGish"):
        assert name in msg
    for source in ("https://download.pytorch.org/models/resnet50-0676ba61.pth",
                   "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"):
        assert source in msg
    assert f"aanbench weights add <folder> --weights-dir {folder}" in msg
    assert "emobase2010" not in msg  # openSMILE needs no weight file


def test_audio_model_needs_vggish_only_and_a_wrong_file_is_named_with_its_hash(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "vggish-10086976.pth").write_bytes(b"an interrupted download")
    monkeypatch.setenv("AANBENCH_WEIGHTS", str(folder))  # the default folder when none is given
    with pytest.raises(AanbenchError) as err:
        resolve_model("aan-cognimuse-audio", require_weights=True)
    msg = str(err.value)
    assert "needs 1 pretrained weight file that is not" in msg
    assert hashlib.sha256(b"an interrupted download").hexdigest() in msg and NEURAL["vggish"][1] in msg
    assert not any(NEURAL[e][0] in msg for e in ("resnet50", "i3d", "flownets"))
    # narrowed to the extractors still to run (e.g. the store already holds vggish): nothing needed
    assert resolve_model("aan-cognimuse-audio", require_weights=True, features=["emobase2010"]).named is not None


class _Weighted(Extractor):
    name = "tiny-weighted-nm"
    modality = "audio"
    dim = 1
    needs = MediaRequest(audio_rate=16000)

    def __init__(self, wf: WeightFile) -> None:
        self.weights = (wf,)

    def extract(self, batch):
        return np.zeros((len(batch), 1), np.float32)


def test_check_weights_returns_the_verified_paths_and_names_uninstalled_extractors(tmp_path):
    data = b"tiny weights" * 50
    wf = WeightFile("tiny-nm.pt", hashlib.sha256(data).hexdigest(), "https://example.org/tiny-nm.pt", "Tiny net")

    class Plugin:
        @hookimpl
        def aanbench_extractors(self):
            return [_Weighted(wf)]

    plugins = Plugins()
    plugins.register(Plugin())
    folder = tmp_path / "w"
    with pytest.raises(AanbenchError, match="tiny-nm.pt .extractor tiny-weighted-nm: Tiny net.: missing"):
        check_weights(["tiny-weighted-nm"], weights_dir=folder, plugins=plugins)
    folder.mkdir()
    (folder / "tiny-nm.pt").write_bytes(data)
    assert check_weights(["tiny-weighted-nm"], weights_dir=folder, plugins=plugins) == {"tiny-nm.pt":
                                                                                        folder / "tiny-nm.pt"}
    with pytest.raises(AanbenchError, match="extractor resnet50 is not installed"):
        check_weights(["resnet50"], weights_dir=folder, plugins=plugins)


def test_models_load_with_weights_only_and_hold_no_code():
    for m in list_models():
        payload = torch.load(m.path, map_location="cpu", weights_only=True)
        assert payload["format"] == BUNDLE_FORMAT and payload["targets"]["arousal"]["standardize"] is None
        assert load_any(m.path)["source_format"] == BUNDLE_FORMAT
