"""Importing the published AttendAffectNet checkpoints (legacy torch pickles)
safely, and reproducing their predictions.

Reference data: ``tests/data/attendaffectnet`` (the authors' published
models, sample features and a ten-value test vector from the original
implementation, vendored with their MIT licence; see ``tests/reference.py``).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from aanbench.contracts import AanbenchError
from aanbench.pluginkit.legacy_pickle import MAGIC_NUMBER, PROTOCOL_VERSION, Record, load_legacy
from aanbench.modelfile import load_model
from aanbench_plugins.commands._aan_legacy_convert import build_net, convert_checkpoint, predict_arrays

from reference import reference_dir


# The vendored copy (tests/data/attendaffectnet, or $AANBENCH_REFERENCE), every
# file checked against its SHA-256: missing files fail the module, never skip it.
REF = reference_dir()
MODELS = REF / "trained_models"

VIDEO_AUDIO_AROUSAL = "MDB_arousal_COGNIMUSE_attention_model_Feature_AAN_video_audio.pth"
ALL_SIX = [f"MDB_{t}_COGNIMUSE_attention_model_Feature_AAN_{v}.pth"
           for t in ("arousal", "valence") for v in ("video_audio", "only_audio", "only_video")]

# The README's test vector (original implementation, eval mode).
TEST_VECTOR = np.array([0.29236588, 0.58557498, 0.67334878, 0.68817770, 0.21161681,
                        -0.04671094, 0.64316833, 0.69974601, 0.71532798, 0.72236204], dtype=np.float32)

SAMPLE_FILES = {  # aanbench extractor name -> sample file
    "resnet50": "resnet50_sample.h5",
    "flownets": "flownet_sample.h5",
    "i3d": "i3d_sample.h5",
    "vggish": "vggish_sample.h5",
    "emobase2010": "emobase_sample.h5",
}


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    out = {}
    for name, fname in SAMPLE_FILES.items():
        with h5py.File(REF / "sample_inputs" / fname, "r") as f:
            out[name] = np.asarray(f["default"][()], dtype=np.float32)
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    out_dir = tmp_path_factory.mktemp("converted")
    return {name: convert_checkpoint(MODELS / name, out_dir / (name[:-4] + ".model")) for name in ALL_SIX}


# --------------------------------------------------------------------------
# (a) the published test vector


def test_video_audio_arousal_reproduces_the_published_test_vector(converted, samples):
    payload = load_model(converted[VIDEO_AUDIO_AROUSAL])
    assert payload["model"] == "feature-aan" and payload["target"] == "arousal"
    assert payload["features"] == ["resnet50", "flownets", "i3d", "vggish", "emobase2010"]
    assert payload["standardize"] is None
    pred = predict_arrays(payload, [samples[f] for f in payload["features"]])
    diff = float(np.abs(pred - TEST_VECTOR).max())
    print(f"max |prediction - test vector| = {diff:.3g}")
    assert pred.shape == (10,)
    assert diff < 1e-5


# --------------------------------------------------------------------------
# (b) all six: convert, load safely, predict; each variant follows its source


def _np_layernorm(x, a, b, eps):
    mean = x.mean(-1, keepdims=True)
    std = x.std(-1, ddof=1, keepdims=True)
    return a * (x - mean) / (std + eps) + b


def _np_linear(rec: Record, x):
    return x @ rec.parameters["weight"].double().numpy().T + rec.parameters["bias"].double().numpy()


def _authors_forward_numpy(top: Record, projection_names, inputs, ffn_tanh_skip: bool, head_tanh: bool):
    """The authors' forward pass written out again in numpy (float64), straight
    from the record tree: an implementation independent of FeatureAANNet."""
    tokens = np.stack([_np_linear(top.child(n), x.astype(np.float64)) for n, x in zip(projection_names, inputs)],
                      axis=1)  # (batch, n_tokens, d_model)
    enc = top.child("encoder")

    def norm(rec):
        return lambda x: _np_layernorm(x, rec.parameters["a_2"].double().numpy(),
                                       rec.parameters["b_2"].double().numpy(), rec.get("eps"))

    for layer in enc.child("layers").modules.values():
        attn = layer.child("self_attn")
        h, d_k = attn.get("h"), attn.get("d_k")
        q_l, k_l, v_l, o_l = attn.child("linears").modules.values()
        y = norm(layer.child("sublayer").child("0").child("norm"))(tokens)
        b, t, _ = y.shape
        q, k, v = (_np_linear(l, y).reshape(b, t, h, d_k).transpose(0, 2, 1, 3) for l in (q_l, k_l, v_l))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d_k)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        att = (p @ v).transpose(0, 2, 1, 3).reshape(b, t, h * d_k)
        tokens = tokens + _np_linear(o_l, att)
        y = norm(layer.child("sublayer").child("1").child("norm"))(tokens)
        w = layer.child("feed_forward").child("w")
        tokens = tokens + (_np_linear(w, y + np.tanh(y)) if ffn_tanh_skip else np.maximum(_np_linear(w, y), 0))
    pooled = norm(enc.child("norm"))(tokens).mean(axis=1)
    if head_tanh:
        pooled = np.tanh(pooled)
    return _np_linear(top.child("linear"), pooled)[:, 0]


PROJECTIONS = {  # the authors' module names, in their forward's input order
    "video_audio": ["linear1", "linear2", "linear3", "linear4", "linear5"],
    "only_audio": ["reduced_4", "reduced_5"],
    "only_video": ["reduced_1", "reduced_2", "reduced_3"],
}
FEATURES = {
    "video_audio": ["resnet50", "flownets", "i3d", "vggish", "emobase2010"],
    "only_audio": ["vggish", "emobase2010"],
    "only_video": ["resnet50", "flownets", "i3d"],
}


@pytest.mark.parametrize("name", ALL_SIX)
def test_each_checkpoint_converts_loads_safely_and_follows_its_own_source(name, converted, samples):
    variant = next(v for v in FEATURES if name.endswith(f"_{v}.pth"))
    payload = torch.load(converted[name], map_location="cpu", weights_only=True)
    assert payload["features"] == FEATURES[variant]
    assert payload["target"] == ("arousal" if "_arousal_" in name else "valence")
    assert payload["provenance"]["source_file"] == name
    assert len(payload["provenance"]["source_sha256"]) == 64
    net = build_net(payload)
    assert not net.training
    x = [torch.from_numpy(samples[f]) for f in payload["features"]]
    with torch.no_grad():
        pred = net(*x).numpy()
    assert pred.shape == (10,) and np.isfinite(pred).all()

    # What the stored source text says, read here as plain text.
    ck = load_legacy(MODELS / name)
    top_src = ck.sources[ck.obj.type_name]
    ffn_src = next(s for t, s in ck.sources.items() if t.endswith(".PositionwiseFeedForward"))
    head_tanh = "F.tanh(temp2" in top_src
    ffn_tanh_skip = "self.w(self.dropout(x + F.tanh(x)))" in ffn_src
    assert head_tanh == (variant != "video_audio")
    assert ffn_tanh_skip == (variant != "video_audio")
    assert ("self.src_embed(" in top_src) is False  # stored, never used

    ref = _authors_forward_numpy(ck.obj, PROJECTIONS[variant], [samples[f] for f in FEATURES[variant]],
                                 ffn_tanh_skip, head_tanh)
    diff = float(np.abs(pred - ref).max())
    print(f"{name}: max |ours - numpy re-implementation of the stored source| = {diff:.3g}")
    assert diff < 1e-5

    # The variant options matter: the other choice gives other numbers.
    cfg = payload["state"]["config"]
    assert cfg["head_activation"] == ("tanh" if head_tanh else "none")
    assert cfg["feed_forward"] == ("tanh_skip" if ffn_tanh_skip else "relu")
    for key, other in (("head_activation", "none" if head_tanh else "tanh"),
                       ("feed_forward", "relu" if ffn_tanh_skip else "tanh_skip")):
        changed = {**payload, "state": {**payload["state"], "config": {**cfg, key: other}}}
        with torch.no_grad():
            alt = build_net(changed)(*x).numpy()
        assert np.abs(alt - pred).max() > 1e-3, f"{key}={other} would not change {name}'s output"


def test_converted_file_is_plain_tensors_and_containers(converted):
    # weights_only=True succeeds only for tensors and plain containers; the
    # legacy original cannot be read that way at all.
    payload = torch.load(converted[VIDEO_AUDIO_AROUSAL], map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in payload["state"]["state_dict"].values())
    with pytest.raises(Exception):
        torch.load(MODELS / VIDEO_AUDIO_AROUSAL, map_location="cpu", weights_only=True)


def test_target_comes_from_the_file_name_or_the_option(tmp_path):
    renamed = tmp_path / "some_model_only_audio.pth"
    renamed.write_bytes((MODELS / ALL_SIX[1]).read_bytes())
    with pytest.raises(AanbenchError, match="--target"):
        convert_checkpoint(renamed, tmp_path / "a.model")
    out = convert_checkpoint(renamed, tmp_path / "a.model", target="valence")
    assert load_model(out)["target"] == "valence"
    with pytest.raises(AanbenchError, match="file name says arousal"):
        convert_checkpoint(MODELS / ALL_SIX[0], tmp_path / "b.model", target="valence")


@pytest.mark.parametrize("old,new,what", [
    # same-length edits of the stored source text (data in the pickle)
    (b"self.dropout(F.relu(self.w(x)))", b"self.dropout(F.tanh(self.w(x)))", "PositionwiseFeedForward"),
    (b"/ (std + self.eps) + self.b_2", b"/ (std - self.eps) + self.b_2", "LayerNorm"),
    (b"reduced5 = self.linear5(src5)", b"reduced5 = self.linear5(src4)", "['src5'] do not go through"),
    (b"reduced1 = self.linear1(src1)", b"reduced1 = self.linear2(src1)", "two inputs share"),
])
def test_a_forward_that_differs_from_the_supported_ones_is_refused(tmp_path, old, new, what):
    data = (MODELS / VIDEO_AUDIO_AROUSAL).read_bytes()
    assert data.count(old) >= 1 and len(old) == len(new)
    edited = tmp_path / VIDEO_AUDIO_AROUSAL
    edited.write_bytes(data.replace(old, new))
    with pytest.raises(AanbenchError) as err:
        convert_checkpoint(edited, tmp_path / "x.model")
    print(err.value)
    assert what in str(err.value)
    assert not (tmp_path / "x.model").exists()


# --------------------------------------------------------------------------
# (c) malicious pickles are refused and never run


def _legacy_file(path: Path, obj_pickle: bytes, keys: list[str] | None = None) -> Path:
    sys_info = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    path.write_bytes(pickle.dumps(MAGIC_NUMBER, protocol=2) + pickle.dumps(PROTOCOL_VERSION, protocol=2)
                     + pickle.dumps(sys_info, protocol=2) + obj_pickle + pickle.dumps(keys or [], protocol=2))
    return path


class _Call:
    """Pickles as ``func(*args)``: what an attacker puts in a checkpoint."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _Smuggled:
    """A "module" persistent id naming a callable, as if it were a pickled class."""

    def __init__(self, func):
        self.func = func

    def __call__(self, *args):  # only so that pickle accepts it as a reduce callable
        raise AssertionError("never called")


class _SmugglingPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Smuggled):
            return ("module", obj.func, "evil.py", "class Evil: pass")
        return None


def _smuggled_call(func, *args) -> bytes:
    buf = io.BytesIO()

    class _Via:
        def __reduce__(self):
            return _Smuggled(func), args

    _SmugglingPickler(buf, protocol=2).dump({"model": _Via()})
    return buf.getvalue()


@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "nested exec", "smuggled as module class",
                                 "subprocess"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    import subprocess

    if how == "os.system":
        obj = pickle.dumps(_Call(os.system, cmd), protocol=2)
    elif how == "builtins.exec":
        obj = pickle.dumps(_Call(exec, code), protocol=2)
    elif how == "nested exec":
        obj = pickle.dumps({"state": [1, 2, {"x": _Call(exec, code)}]}, protocol=2)
    elif how == "subprocess":
        obj = pickle.dumps(_Call(subprocess.call, ["touch", str(marker)]), protocol=2)
    else:
        obj = _smuggled_call(os.system, cmd)
    path = _legacy_file(tmp_path / "evil.pth", obj)
    with pytest.raises(AanbenchError) as err:
        load_legacy(path)
    msg = str(err.value)
    print(msg)
    assert "evil.pth" in msg and "refused" in msg
    # names the global the pickle asks for (protocol 2 writes subprocess as "commands")
    assert {"os.system": "system", "builtins.exec": "exec", "nested exec": "exec",
            "smuggled as module class": "system", "subprocess": "commands.call"}[how] in msg
    with pytest.raises(AanbenchError):
        convert_checkpoint(path, tmp_path / "out.model", target="arousal")
    assert not marker.exists()
    assert not (tmp_path / "out.model").exists()


def _u(text: str) -> bytes:  # BINUNICODE opcode
    raw = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def test_an_unknown_pickled_class_becomes_an_inert_record(tmp_path):
    # A class from a module that is not on the machine, declared the way torch
    # declares pickled modules (with source text), then called with an argument.
    marker = tmp_path / "pwned"
    source = "class Payload:\n    def __init__(self, cmd):\n        import os; os.system(cmd)\n"
    obj = (b"\x80\x02(" + _u("module") + b"cevilpkg_not_installed\nPayload\n" + _u("evil.py") + _u(source)
           + b"tQ" + _u(f"touch {marker}") + b"\x85R.")
    path = _legacy_file(tmp_path / "evil.pth", obj)
    ck = load_legacy(path)
    assert isinstance(ck.obj, Record)
    assert ck.obj.type_name == "evilpkg_not_installed.Payload"
    assert ck.obj.args == (f"touch {marker}",)
    assert ck.sources == {"evilpkg_not_installed.Payload": source}
    assert "evilpkg_not_installed" not in sys.modules
    with pytest.raises(AanbenchError):
        convert_checkpoint(path, tmp_path / "out.model", target="arousal")
    assert not marker.exists()


def test_the_crafted_file_would_run_with_an_ordinary_unpickler(tmp_path):
    # Shows the crafted payload is live: unpickling the object pickle the
    # ordinary way (only in this test, on our own bytes) does create the marker.
    marker = tmp_path / "ran"
    obj = pickle.dumps(_Call(exec, f"open({str(marker)!r}, 'w').close()"), protocol=2)
    path = _legacy_file(tmp_path / "evil.pth", obj)
    with pytest.raises(AanbenchError):
        load_legacy(path)
    assert not marker.exists()
    pickle.loads(obj)
    assert marker.exists()


# --------------------------------------------------------------------------
# (d) files that are not legacy checkpoints


def test_zip_format_torch_file_is_refused(tmp_path):
    path = tmp_path / "modern.pt"
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(AanbenchError, match="zip-format"):
        load_legacy(path)
    with pytest.raises(AanbenchError, match="zip-format"):
        convert_checkpoint(path, tmp_path / "x.model", target="arousal")


@pytest.mark.parametrize("kind", ["random", "random after a pickle header", "plain pickle", "empty"])
def test_non_checkpoint_files_are_refused(tmp_path, kind):
    rng = np.random.default_rng(3)
    data = {
        "random": b"\x17" + rng.bytes(4096),
        "random after a pickle header": b"\x80\x02" + rng.bytes(4096),
        "plain pickle": pickle.dumps({"weights": [1.0, 2.0]}, protocol=2),
        "empty": b"",
    }[kind]
    path = tmp_path / "junk.pth"
    path.write_bytes(data)
    with pytest.raises(AanbenchError, match="not a legacy torch checkpoint"):
        load_legacy(path)


@pytest.mark.parametrize("cut", [10, 1000, 60000])
def test_truncated_checkpoint_is_refused(tmp_path, cut):
    data = (MODELS / VIDEO_AUDIO_AROUSAL).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:-cut])
    with pytest.raises(AanbenchError, match="truncated|not a"):
        load_legacy(path)


def test_legacy_reader_returns_inert_records_with_source_text():
    ck = load_legacy(MODELS / VIDEO_AUDIO_AROUSAL)
    top = ck.obj
    assert isinstance(top, Record) and top.type_name == "model_1_correct_5_words_pooling.Encoder_FullyConnected"
    assert "def forward(self, src1, src2, src3, src4, src5)" in top.source
    lin = top.child("linear1")
    assert lin.type_name == "torch.nn.modules.linear.Linear"
    assert lin.get("in_features") == 2048 and tuple(lin.parameters["weight"].shape) == (8, 2048)
    assert lin.parameters["weight"].dtype == torch.float32
    assert not callable(top) and not hasattr(top, "forward")
    with pytest.raises(AttributeError):
        top.training = True


def test_reader_rebuilds_tensors_and_containers_of_any_legacy_file(tmp_path):
    # torch can still write the legacy format: the reader is generic, not AAN-specific.
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    obj = {"f32": torch.randn(3, 5), "transposed": base.t(), "slice": base[1:, 2:], "whole": base,
           "i64": torch.arange(7), "half": torch.ones(2, dtype=torch.float16), "bool": torch.tensor([True, False]),
           "od": OrderedDict(a=1, b=[1.5, "x"]), "param": torch.nn.Parameter(torch.full((2,), 3.0))}
    path = tmp_path / "plain.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    got = load_legacy(path).obj
    assert set(got) == set(obj)
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and torch.equal(got[key], value.detach()), key
        else:
            assert got[key] == value and type(got[key]) is type(value)

    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    path = tmp_path / "module.pt"
    torch.save(module, path, _use_new_zipfile_serialization=False)
    rec = load_legacy(path).obj
    assert rec.type_name == "torch.nn.modules.container.Sequential"
    assert torch.equal(rec.child("0").parameters["weight"], module[0].weight.detach())
    assert "class Linear" in rec.child("0").source


def test_storage_larger_than_the_file_is_refused_before_allocating(tmp_path):
    numel = pickle.dumps(10**12, protocol=2)[2:-1]  # a LONG1 opcode
    obj = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((" + _u("storage") + b"ctorch\nFloatStorage\n"
           + _u("0") + _u("cpu") + numel + b"NtQK\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR.")
    path = _legacy_file(tmp_path / "huge.pth", obj, keys=["0"])
    with pytest.raises(AanbenchError, match="more than the file holds"):
        load_legacy(path)


# --------------------------------------------------------------------------
# CLI command through the aanbench_commands hook


def test_import_aan_command_registers_and_converts(tmp_path):
    import typer
    from typer.testing import CliRunner

    from aanbench_plugins.commands import import_aan as aan_legacy

    cli = SimpleNamespace(root=typer.Typer(), store=typer.Typer(), models=typer.Typer(), datasets=typer.Typer())
    aan_legacy.aanbench_commands(cli=cli)

    @cli.models.command("noop")  # a second command keeps Typer in sub-command mode
    def _noop() -> None:
        pass

    out = tmp_path / "m.model"
    res = CliRunner().invoke(cli.models, ["import-aan", str(MODELS / VIDEO_AUDIO_AROUSAL), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert load_model(out)["target"] == "arousal"
    res = CliRunner().invoke(cli.models, ["import-aan", str(MODELS / ALL_SIX[1]), "--out", str(out),
                                          "--target", "valence"])
    assert isinstance(res.exception, AanbenchError)


# --------------------------------------------------------------------------
# The whole path through aanbench's CLI: import the five sample feature files
# into a store, convert the checkpoint, predict.


def test_cli_import_convert_predict_reproduces_the_test_vector(tmp_path):
    from typer.testing import CliRunner

    from aanbench.cli import app

    runner = CliRunner()
    store = tmp_path / "store"
    for extractor, fname in SAMPLE_FILES.items():
        res = runner.invoke(app, ["store", "import-h5", "--store", str(store), "--dataset", "mdb",
                                  "--extractor", extractor, str(REF / "sample_inputs" / fname)])
        assert res.exit_code == 0, res.output
    model = tmp_path / "va.model"
    res = runner.invoke(app, ["models", "import-aan", str(MODELS / VIDEO_AUDIO_AROUSAL), "--out", str(model)])
    assert res.exit_code == 0, res.output
    csv = tmp_path / "pred.csv"
    res = runner.invoke(app, ["predict", str(model), "--store", str(store), "--dataset", "mdb", "--out", str(csv)])
    assert res.exit_code == 0, res.output
    lines = csv.read_text().splitlines()
    assert lines[0] == "item_id,start,end,arousal,reason"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == [str(i) for i in range(10)]
    pred = np.array([float(r[3]) for r in rows], dtype=np.float32)
    diff = float(np.abs(pred - TEST_VECTOR).max())
    print(f"CLI path: max |prediction - test vector| = {diff:.3g}")
    assert diff < 1e-5

    # A malicious checkpoint through the CLI: one-line refusal, exit status 2.
    marker = tmp_path / "pwned"
    evil = _legacy_file(tmp_path / "evil.pth", pickle.dumps(_Call(os.system, f"touch {marker}"), protocol=2))
    res = runner.invoke(app, ["models", "import-aan", str(evil), "--out", str(tmp_path / "e.model"),
                              "--target", "arousal"])
    assert res.exit_code == 2
    assert "refused" in res.output and "posix.system" in res.output
    assert not marker.exists() and not (tmp_path / "e.model").exists()
