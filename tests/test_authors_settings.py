"""The registry's Feature AttendAffectNet experiments use the network
settings of the authors' published models (converted from the reference
files with the restricted unpickler): the five-feature model a ReLU
feed-forward and no head activation, the single-modality models the
tanh-skip feed-forward and tanh before the head."""

from __future__ import annotations

from pathlib import Path

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
