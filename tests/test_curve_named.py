"""`curve --model NAME`: the published COGNIMUSE models by name. Without the
extractors' weight files the command names each one (exit 2); with random
networks written in the official files' layouts (as tests/test_neural_extractors.py
writes them, each pointed at by its real SHA-256) it draws a curve: the
plumbing (real decoding, the four neural extractors, openSMILE, the Zarr
store, the shipped bundle), not the numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aanbench.contracts import WeightFile
from aanbench.curve_output import read_curve_csv
from aanbench.weights import sha256_of

from conftest import make_clip, run_aanbench

FOUR = ("resnet50-0676ba61.pth", "rgb_imagenet.pt", "flownets_EPE1.951.pth", "vggish-10086976.pth")


@pytest.mark.slow
def test_named_model_without_weights_exits_2_naming_the_four_files(tmp_path):
    film = make_clip(tmp_path / "film.mp4", seconds=4.0, size=(120, 160))
    empty = tmp_path / "no-weights"
    empty.mkdir()
    out = tmp_path / "curves"
    r = run_aanbench("curve", film, "--model", "aan-cognimuse", "--store", tmp_path / "s", "--out", out,
                     env={"AANBENCH_WEIGHTS": str(empty)})
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr
    for name in FOUR:
        assert name in err, (name, err)
    assert "expected SHA-256" in err and "aanbench weights add" in err and "aan-cognimuse" in err
    assert not out.exists()  # nothing computed, nothing written
    # --weights-dir is the folder named
    r = run_aanbench("curve", film, "--model", "aan-cognimuse-audio", "--store", tmp_path / "s", "--out", out,
                     "--weights-dir", empty)
    assert r.returncode == 2 and "vggish-10086976.pth" in r.stderr and "resnet50" not in r.stderr


def test_unknown_model_name_lists_the_named_models(tmp_path):
    film = make_clip(tmp_path / "film.mp4", seconds=2.0)
    r = run_aanbench("curve", film, "--model", "aan-nothing", "--out", tmp_path / "o")
    assert r.returncode == 2 and "aan-cognimuse" in r.stderr and "not a named model" in r.stderr


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    """The four files in their official layouts, random networks."""
    import torch
    import torchvision

    from aanbench_plugins.extractors import _flownets_net as fl_net
    from aanbench_plugins.extractors import _i3d_net as i3_net
    from aanbench_plugins.extractors import _vggish_net as vg_net

    def no_counters(net):
        return {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(no_counters(torchvision.models.resnet50(weights=None)), folder / FOUR[0])
    torch.save(no_counters(i3_net.InceptionI3d()), folder / FOUR[1], _use_new_zipfile_serialization=False)
    net = fl_net.FlowNetS()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else torch.nn.init.uniform_(p, -0.05, 0.05)
    torch.save({"epoch": 300, "arch": "flownets", "state_dict": net.state_dict(), "div_flow": 20},
               folder / FOUR[2], _use_new_zipfile_serialization=False)
    torch.save(vg_net.VGGishNet().state_dict(), folder / FOUR[3])
    return folder


@pytest.mark.slow
def test_named_model_with_weights_in_the_official_layouts_draws_a_curve(random_weights, tmp_path):
    from aanbench.plugin_manager import get_plugins
    from aanbench.workflows import curve, load_models

    plugins = get_plugins()
    saved = {}
    for name in ("resnet50", "i3d", "flownets", "vggish"):  # the test files' own SHA-256, as a user's files
        ex = plugins.extractors[name]
        saved[name] = ex.weights
        wf = ex.weight_file
        ex.weights = (WeightFile(wf.filename, sha256_of(random_weights / wf.filename), "test file", wf.description),)
    try:
        film = make_clip(tmp_path / "film.mp4", seconds=6.0, fps=10, size=(120, 160))
        models = load_models(["aan-cognimuse"])
        assert models[0].path.startswith("aan-cognimuse (") and models[0].dataset == "cognimuse"
        [res] = curve([film], models, store=tmp_path / "s", out_dir=tmp_path / "o", window=3.0, workers=1,
                      weights_dir=random_weights)
    finally:
        for name, w in saved.items():
            plugins.extractors[name].weights = w
    assert res.failed == [] and sorted(res.targets) == ["arousal", "valence"]
    df = read_curve_csv(res.csv)
    assert list(zip(df.start, df.end)) == [(0.0, 3.0), (3.0, 6.0)]
    assert np.isfinite(df[["valence", "arousal"]].to_numpy()).all()
    head = res.csv.read_text()
    assert "# scale valence: training labels -1 to 1" in head and "named model" not in head.split("\n")[0]
    assert res.png.is_file() and res.html.is_file()
    assert not res.warnings  # not a demo model
