"""Recurrent baselines (plugins/models/recurrent.py): `lstm` (many-to-one,
2 x 64) and `bilstm` (one bidirectional LSTM per feature array, learned
temporal and modality weights): shapes, learning from the order of a
window, same seed same numbers, a weights-only round trip, and `aanbench run
lstm|bilstm demo` on engine windows of a small generated demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aanbench_plugins.models import recurrent as rc

from conftest import run_aanbench
from smalldemo import small_demo  # noqa: F401  (fixture)


def _windows(n=240, T=5, seed=0):
    """Two feature arrays; the label is the last step's first feature of
    array 0 minus the first step's of array 1: it needs the order of the
    window and both arrays."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, T, 4)).astype(np.float32)
    b = rng.normal(size=(n, T, 3)).astype(np.float32)
    y = (0.8 * a[:, -1, 0] - 0.5 * b[:, 0, 1] + 0.05 * rng.normal(size=n)).astype(np.float32)
    return [a, b], y


FAST = {"max_epochs": 60, "patience": 60, "batch_size": 32, "lr": 0.01}


@pytest.mark.parametrize("kind", ["lstm", "bilstm"])
def test_shapes_learning_and_weights_only_round_trip(tmp_path, kind):
    xs, y = _windows()
    tr, va, te = slice(0, 160), slice(160, 200), slice(200, 240)
    m = rc.RecurrentModel(kind, {**FAST, "input_dropout": 0.0} if kind == "bilstm" else FAST, [4, 3])
    rep = m.fit([x[tr] for x in xs], y[tr], [x[va] for x in xs], y[va], seed=0)
    assert 1 <= rep.best_epoch <= rep.epochs <= FAST["max_epochs"]
    pred = m.predict([x[te] for x in xs])
    assert pred.shape == (40,) and pred.dtype == np.float32
    assert float(np.mean((pred - y[te]) ** 2)) < 0.5 * float(np.var(y[te])), f"{kind} did not learn"
    torch.save(m.state(), tmp_path / "m.pt")
    back = rc.restore(torch.load(tmp_path / "m.pt", weights_only=True))
    np.testing.assert_allclose(back.predict([x[te] for x in xs]), pred, rtol=1e-6, atol=1e-6)


def test_lstm_is_two_layers_of_64_and_bilstm_one_bidirectional_lstm_per_feature():
    xs, y = _windows(n=40)
    lstm = rc.RecurrentModel("lstm", {"max_epochs": 1}, [4, 3])
    lstm.fit(xs, y, None, None, seed=0)
    assert lstm.net.lstm.num_layers == 2 and lstm.net.lstm.hidden_size == 64 and lstm.net.lstm.input_size == 7
    bi = rc.RecurrentModel("bilstm", {"max_epochs": 1}, [4, 3])
    bi.fit(xs, y, None, None, seed=0)
    assert [(l.input_size, l.bidirectional) for l in bi.net.lstms] == [(4, True), (3, True)]
    values, weights = bi.net.per_modality(*[torch.from_numpy(x) for x in xs])
    assert values.shape == (40, 2) and weights.shape == (40, 5, 2)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(40, 2))  # temporal weights: a softmax over steps
    w = bi.net.fusion_weights()
    assert w.shape == (2,) and float(w.detach().sum()) == pytest.approx(1.0)
    torch.testing.assert_close(bi.net(*[torch.from_numpy(x) for x in xs]), values @ w)


@pytest.mark.parametrize("kind", ["lstm", "bilstm"])
def test_same_seed_same_numbers_other_seed_other_numbers(kind):
    xs, y = _windows(n=120)
    preds = []
    for seed in (3, 3, 4):
        m = rc.RecurrentModel(kind, {"max_epochs": 5, "patience": 5}, [4, 3])
        m.fit([x[:80] for x in xs], y[:80], [x[80:100] for x in xs], y[80:100], seed=seed)
        preds.append(m.predict([x[100:] for x in xs]))
    np.testing.assert_array_equal(preds[0], preds[1])
    assert not np.array_equal(preds[0], preds[2])


def test_refuses_rows():
    xs, y = _windows(n=20)
    m = rc.RecurrentModel("lstm", {"max_epochs": 1}, [4, 3])
    with pytest.raises(ValueError, match=r"expected windows \(n, T, 4\)"):
        m.fit([x[:, -1] for x in xs], y, None, None, seed=0)


@pytest.mark.parametrize("experiment", ["lstm", "bilstm"])
def test_runs_through_aanbench_run_on_the_demo(small_demo, tmp_path, experiment):
    r = run_aanbench("run", experiment, "demo", "--store", small_demo["store"], "--out", tmp_path / "results",
                     "--protocol", "fixed", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "results" / "demo" / experiment / "seed0.json").read_text())
    assert doc["model_input"] == "sequences"
    assert {k: doc["samples"][k] for k in ("length", "stride", "label", "start")} == \
        {"length": 5, "stride": 1, "label": "last", "start": "pad"}
    # padded windows: one prediction per test clip, the same items as a row model scores
    n_test = small_demo["n_test"]
    for target in ("valence", "arousal"):
        preds = [p for p in doc["predictions"] if p["target"] == target]
        assert len(preds) == n_test and len({p["item_id"] for p in preds}) == n_test
        assert np.isfinite([p["y_pred"] for p in preds]).all()
        assert doc["targets"][target]["metrics"]["n"] == n_test
