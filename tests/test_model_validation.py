"""Model files are validated field by field before use (issue 25, item 7):
a 0-byte, truncated, malformed or oversized bundle, or one whose state does
not fit its model, is refused with "FILE: not a valid aanbench model: WHY"
(exit 2 on the command line): no raw KeyError/TypeError/IndexError, nothing
allocated from a declared size, and never torch's advice to load the file
with ``weights_only=False``. Real bundles from a real (ridge) training,
damaged one field at a time."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from test_documents import _Dataset, _exp, _store
from aanbench.contracts import AanbenchError
from aanbench.modelfile import load_any, save_bundle, save_model
from aanbench.plugin_manager import get_plugins
from aanbench.predict import predict_group
from aanbench.runner import train_bundle


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("valid")
    g = _store(tmp)
    bundle = train_bundle(_exp(), _Dataset(), g, get_plugins())
    path = save_bundle(tmp / "good.pt", bundle)
    return g, path, torch.load(path, weights_only=True)


def _set(p: dict, dotted: str, value) -> dict:
    p = copy.deepcopy(p)
    *head, last = dotted.split(".")
    d = p
    for k in head:
        d = d[k]
    if value is _DROP:
        del d[last]
    else:
        d[last] = value
    return p


_DROP = object()

# (what is changed, the value, words the message must hold)
MALFORMED = [
    ("model", 7, "model must be a non-empty name"),
    ("model", "", "model must be a non-empty name"),
    ("targets", [], "lacks ['targets']"),
    ("targets", {"valence": "not a table"}, "target valence lacks its state"),
    ("targets.valence.state", [1, 2], "targets.valence.state must be a table"),
    ("targets.valence.state.w", object, "targets.valence.state.w holds"),
    ("targets.valence.standardize", {"mean": [torch.zeros(5)]}, "standardize must be a table with mean and std"),
    ("targets.valence.standardize.mean", [torch.zeros(5)], "one vector per feature (2)"),
    ("targets.valence.standardize.std", [torch.ones(5), torch.ones(4)], "std[1] has shape [4], expected [3]"),
    ("targets.valence.standardize.std", [torch.ones(5), torch.zeros(3)], "std[1] holds values that are not positive"),
    ("targets.valence.standardize.mean", [torch.zeros(5), torch.full((3,), float("nan"))], "not finite"),
    ("targets.valence.standardize.mean", [torch.zeros(5), torch.zeros(3, 2)], "has shape [3, 2]"),
    ("targets.valence.params", "lr=1", "targets.valence.params must be a table"),
    ("features", "fa,fb", "features must be a list of names"),
    ("features", [], "dims lists 2 sizes for 0 feature(s)"),  # no features is a model's right (mean), with no dims
    ("features", ["fa", 3], "features holds 3"),
    ("features", [f"f{i}" for i in range(1000)], "at most 64"),
    ("feature_keys", ["fa@imported"], "feature_keys lists 1 keys for 2 feature(s)"),
    ("dims", [5], "dims lists 1 sizes for 2 feature(s)"),
    ("dims", [5, "3"], "dims holds '3'"),
    ("dims", [5, 10**12], "each must be an integer from 1 to"),
    ("dims", [5, -3], "each must be an integer from 1 to"),
    ("samples", "rows", "samples must be a table"),
    ("samples.length", 10**9, "samples.length = 1000000000; must be an integer from 1 to 4096"),
    ("samples.length", 1e9, "samples.length = 1000000000.0"),
    ("samples.stride", 0, "samples.stride = 0"),
    ("samples.scope", 3, "samples.scope must be a name"),
    ("samples.scope", "galaxy", "windows"),
    ("input", "images", "input must be rows or sequences"),
    ("seed", -1, "seed must be an integer >= 0"),
    ("seed", "zero", "seed must be an integer >= 0"),
    ("dataset", [1], "dataset must be a table"),
    ("samples", _DROP, "lacks ['samples']"),
]


@pytest.mark.parametrize("field, value, words", MALFORMED, ids=[f"{f}={'<dropped>' if v is _DROP else repr(v)}"[:40] for f, v, _ in MALFORMED])
def test_malformed_bundles_are_refused_field_by_field(good, tmp_path: Path, field, value, words) -> None:
    _, _, payload = good
    if value is object:
        value = {1, 2}  # a set: not a tensor, number, text or container a model state holds
        path = tmp_path / "m.pt"
        torch.save(_set(payload, field, value), path)
        # weights_only refuses a set before aanbench sees it: refused either way, never with a raw error
        with pytest.raises(AanbenchError, match="not a valid aanbench model"):
            load_any(path)
        from aanbench.bundle import ModelBundle

        with pytest.raises(AanbenchError, match="holds a set"):
            ModelBundle.from_payload(_set(payload, field, value), "payload")
        return
    path = tmp_path / "m.pt"
    torch.save(_set(payload, field, value), path)
    with pytest.raises(AanbenchError) as err:
        load_any(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: not a valid aanbench model: "), msg
    assert words in msg, msg
    assert "weights_only" not in msg


def test_a_model_file_with_malformed_fields_is_refused_too(good, tmp_path: Path) -> None:
    g, path, payload = good
    bundle = load_any(path)
    one = bundle.with_samples(bundle.samples)
    one.targets = {"valence": bundle.targets["valence"]}
    single = tmp_path / "single.pt"
    save_model(single, one)
    raw = torch.load(single, weights_only=True)
    assert load_any(single).source_format == "aanbench.model/1"
    for field, value, words in [("target", 5, "target must be a non-empty name"),
                                ("state", "weights", "targets.valence.state must be a table"),
                                ("provenance", 3, "provenance must be a table"),
                                ("samples.length", 10**9, "samples.length = 1000000000"),
                                ("state", _DROP, "lacks ['state']")]:
        bad = tmp_path / "bad.pt"
        torch.save(_set(raw, field, value), bad)
        with pytest.raises(AanbenchError, match="not a valid aanbench model") as err:
            load_any(bad)
        assert words in str(err.value) and str(bad) in str(err.value), (field, str(err.value))


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "pickle-with-code", "not-a-dict"])
def test_unreadable_files_are_refused_without_weights_only_advice(good, tmp_path: Path, kind) -> None:
    _, path, _ = good
    bad = tmp_path / f"{kind}.pt"
    raw = path.read_bytes()
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    elif kind == "garbage":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "pickle-with-code":
        torch.save({"format": "aanbench.bundle/1", "hook": np.random.default_rng(0)}, bad)  # needs the unpickler
    else:
        torch.save([1, 2, 3], bad)
    with pytest.raises(AanbenchError) as err:
        load_any(bad)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: not a valid aanbench model: "), msg
    assert "weights_only" not in msg and "weights only" not in msg.lower()
    if kind == "empty":
        assert "empty (0 bytes)" in msg
    if kind == "pickle-with-code":
        assert "other than tensors and plain containers" in msg
    r = run_cli("models", "info", bad)
    assert r.returncode == 2 and "not a valid aanbench model" in r.stderr and bad.name in r.stderr
    assert "weights_only" not in r.stderr and "Traceback" not in r.stderr + r.stdout


def test_a_state_that_does_not_fit_its_dims_is_refused_before_predicting(good, tmp_path: Path) -> None:
    g, path, payload = good
    plugins = get_plugins()
    assert np.isfinite(predict_group(load_any(path), g, plugins).values["valence"]).all()  # the good one predicts
    for state, words in [({**payload["targets"]["valence"]["state"], "w": [0.1, 0.2]}, "does not fit model 'ridge'"),
                         ({"alpha": 1.0}, "does not fit model 'ridge'")]:
        bad = tmp_path / "state.pt"
        torch.save(_set(payload, "targets.valence.state", state), bad)
        with pytest.raises(AanbenchError) as err:
            predict_group(load_any(bad), g, plugins)
        msg = str(err.value)
        assert msg.startswith(f"{bad}: not a valid aanbench model: target valence: ") and words in msg, msg


def test_a_torch_state_declaring_other_dims_is_refused_on_reading(good, tmp_path: Path) -> None:
    _, _, payload = good
    state = {"config": {"dims": [5, 4], "d_model": 8}, "state_dict": {"w": torch.zeros(8, 4)}}
    bad = tmp_path / "cfg.pt"
    torch.save(_set(payload, "targets.valence.state", state), bad)
    with pytest.raises(AanbenchError, match=r"state.config.dims \[5, 4\] differ from the file's dims \[5, 3\]"):
        load_any(bad)


def test_pickle_payload_is_never_unpickled(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    bad = tmp_path / "boom.pt"
    with open(bad, "wb") as f:
        pickle.dump({"format": "aanbench.bundle/1", "x": Boom()}, f)
    with pytest.raises(AanbenchError, match="not a valid aanbench model"):
        load_any(bad)
    assert not (tmp_path / "ran").exists()
