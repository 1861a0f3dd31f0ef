"""The registry's Feature AttendAffectNet experiments use the network
settings of the authors' published models (converted from the reference
files with the restricted unpickler): the five-feature model a ReLU
feed-forward and no head activation, the single-modality models the
tanh-skip feed-forward and tanh before the head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aanbench.registry import load_registry
from aanbench_plugins.commands._aan_legacy_convert import convert_checkpoint
from aanbench_plugins.models.feature_aan import DEFAULTS, NET_KEYS

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "attendaffectnet" / "trained_models"
if not REF.is_dir():  # a clone elsewhere: the shared folder of this workplace
    REF = Path("/work/shared/reference/attendaffectnet/trained_models")


@pytest.mark.parametrize("experiment,suffix,features", [
    ("feature-aan", "video_audio", ("resnet50", "flownets", "i3d", "vggish", "emobase2010")),
    ("feature-aan-video", "only_video", ("resnet50", "flownets", "i3d")),
    ("feature-aan-audio", "only_audio", ("vggish", "emobase2010")),
])
@pytest.mark.parametrize("target", ["valence", "arousal"])
def test_registry_network_settings_equal_the_published_models(tmp_path, experiment, suffix, features, target):
    src = REF / f"MDB_{target}_COGNIMUSE_attention_model_Feature_AAN_{suffix}.pth"
    assert src.is_file(), f"reference model missing: {src}"
    payload = torch.load(convert_checkpoint(src, tmp_path / "m.pt"), weights_only=True)
    published = payload["state"]["config"]
    assert tuple(payload["features"]) == features
    exp = load_registry().experiment(experiment, "cognimuse")
    assert exp.features == features
    ours = {**DEFAULTS, **exp.params_for(target)}
    for key in NET_KEYS:
        assert ours[key] == published[key], f"{experiment}: {key} = {ours[key]!r}, published {published[key]!r}"


def test_validation_fraction_rounds_to_the_nearest_whole_movie():
    from aanbench.protocols import carve_validation

    groups = np.repeat([f"m{i}" for i in range(11)], 360)  # COGNIMUSE: 11 training movies x 360 segments
    train = np.arange(len(groups))
    for seed in range(5):
        fit, val = carve_validation(train, groups, 0.1, seed)
        assert len(set(groups[val])) == 1 and len(val) == 360  # 9.1%, not two movies (18%)
        fit, val = carve_validation(train, groups, 0.25, seed)
        assert len(set(groups[val])) == 3  # 2.75 movies -> 3
    # unequal movies: the nearest size wins, at least one movie
    groups = np.array(["a"] * 50 + ["b"] * 10 + ["c"] * 10 + ["d"] * 30)
    for seed in range(5):
        _, val = carve_validation(np.arange(100), groups, 0.01, seed)
        assert len(set(groups[val])) == 1


def test_raw_features_as_the_authors_fed_them(tmp_path):
    """standardize = false: the model sees the stored values; the default
    standardises with training statistics."""
    from aanbench.contracts import FitReport, Item, Model, ModelSpec
    from aanbench.plugin_manager import get_plugins
    from aanbench.registry import ExperimentConfig
    from aanbench.runner import run_experiment
    from aanbench.store import FeatureStore

    seen = {}

    class Spy(Model):
        name = "spy"

        def __init__(self, params, dims):
            pass

        def fit(self, train_x, train_y, val_x, val_y, *, seed):
            seen.setdefault("fit", []).append(train_x[0].copy())
            return FitReport()

        def predict(self, x):
            return np.zeros(len(x[0]), np.float32)

        def state(self):
            return {}

    rng = np.random.default_rng(0)
    a = (rng.normal(size=(60, 3)) * 40 + 100).astype(np.float32)
    items = [Item(f"i{i:02d}", None, labels={"valence": float(i % 7), "arousal": 0.0}, group=f"m{i % 6}",
                  split="train" if i < 40 else "test") for i in range(60)]
    g = FeatureStore(tmp_path / "s").ensure_group("synthetic", items, chunk_rows=16)
    g.import_rows("fa@imported", a, {"extractor": "fa", "version": "imported", "dim": 3, "config": {},
                                      "weights": {}, "libraries": {}, "source": "test"})
    plugins = get_plugins()
    plugins.models["spy"] = ModelSpec("spy", "test spy", lambda p, d: Spy(p, d))

    class DS:
        name, targets, protocol, segmentation = "synthetic", ("valence",), "fixed", "default"

        def config(self):
            return {}

    try:
        for standardize in (False, True):
            seen.clear()
            exp = ExperimentConfig(name="spy", model="spy", description="", feature_set="a", features=("fa",),
                                   params={"standardize": standardize, "val_fraction": 0.0}, protocol=None, seed=0)
            run_experiment(exp, DS(), g, plugins)
            x = seen["fit"][0]
            if standardize:
                assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
            else:
                np.testing.assert_array_equal(np.sort(x, axis=0), np.sort(a[:40], axis=0))
    finally:
        plugins.models.pop("spy", None)
