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

from conftest import run_cli
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
    r = run_cli("run", experiment, "demo", "--store", small_demo["store"], "--out", tmp_path / "results",
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


# ------------------------------------------------------------------------
# EIMT16: a test excerpt's prediction depends on that excerpt alone


QUICK = "max_epochs = 4\npatience = 4\nval_fraction = 0.2\n"


@pytest.fixture(scope="module")
def eimt16_twice(tmp_path_factory):
    """An official-layout EIMT16 copy extracted as eimt16-temporal (store
    ``s1``), then one test excerpt's media replaced and the copy extracted
    again (store ``s2``). Weight-free features that read 1-s sub-segments
    quickly (openSMILE would dominate the time)."""
    from aanbench_plugins.datasets.fixtures import tiny_clip, write_eimt16
    from typer.testing import CliRunner

    from aanbench.cli import app

    tmp = tmp_path_factory.mktemp("eimt16-twice")
    fx = write_eimt16(tmp / "copy", n_train=12, n_test=5, seconds=4.0, seed=2)
    reg = tmp / "mine.toml"
    text = '[feature_sets]\nquick-both = ["affect", "logmel"]\n'
    for kind in ("lstm", "bilstm"):
        text += (f'[experiments.{kind}-quick]\nextends = "{kind}"\nfeatures = "quick-both"\n'
                 f'[experiments.{kind}-quick.datasets.eimt16-temporal]\n{QUICK}'
                 f'[experiments.{kind}-across]\nextends = "{kind}"\nfeatures = "quick-both"\n'
                 f'[experiments.{kind}-across.datasets.eimt16-temporal]\nsequence_length = 4\n'
                 'sequence_scope = "group"\n'
                 f'[experiments.{kind}-whole]\nextends = "{kind}"\nfeatures = "quick-both"\n')
    reg.write_text(text)
    runner = CliRunner()

    def extract(store, dataset="eimt16-temporal"):
        r = runner.invoke(app, ["extract", dataset, "--root", str(fx.root), "--store", str(store),
                                "--extractors", "affect,logmel"], catch_exceptions=False)
        assert r.exit_code == 0, r.output

    extract(tmp / "s1")
    changed = fx.test[2]
    tiny_clip(fx.video[changed], fx.seconds, seed=9999)  # other colour, motion and tone; same length
    extract(tmp / "s2")
    extract(tmp / "s2", "eimt16")
    return {"fx": fx, "reg": reg, "tmp": tmp, "changed": changed}


def _test_predictions(cli, store, out, reg, experiment):
    r = cli("run", experiment, "eimt16-temporal", "--store", store, "--out", out, "--registry", reg)
    assert r.exit_code == 0, r.output
    [result] = list(out.rglob("*.json"))
    doc = json.loads(result.read_text())
    assert doc["samples"]["scope"] == "file" and doc["samples"]["length"] == 4  # one excerpt's sub-segments
    return {(p["target"], p["item_id"]): p["y_pred"] for p in doc["predictions"]}


@pytest.mark.parametrize("kind", ["lstm", "bilstm"])
@pytest.mark.slow
def test_eimt16_test_prediction_depends_on_its_own_excerpt_only(eimt16_twice, tmp_path, cli, kind):
    """On an official-layout EIMT16 copy, replacing one test excerpt's media
    (then extracting and running again, same seed) changes that excerpt's
    prediction and leaves every other test excerpt's prediction unchanged,
    bit for bit: windows are the 4 sub-segments of one excerpt, and no
    window spans two (windows across the test set are refused)."""
    fx, reg, tmp, changed = (eimt16_twice[k] for k in ("fx", "reg", "tmp", "changed"))
    before = _test_predictions(cli, tmp / "s1", tmp_path / "r1", reg, f"{kind}-quick")
    after = _test_predictions(cli, tmp / "s2", tmp_path / "r2", reg, f"{kind}-quick")

    assert set(before) == set(after) == {(t, s) for t in ("valence", "arousal") for s in fx.test}
    for target in ("valence", "arousal"):
        assert before[(target, changed)] != after[(target, changed)]  # the test can see a change
        for s in fx.test:
            if s != changed:
                assert after[(target, s)] == before[(target, s)], (target, s)

    # windows across excerpts are refused, not built
    r = cli("run", f"{kind}-across", "eimt16-temporal", "--store", tmp / "s2", "--out", tmp_path / "r3",
            "--registry", reg)
    assert r.exit_code != 0 and "independent excerpts" in r.output, r.output
    # on one-item-per-excerpt eimt16 the experiment points to eimt16-temporal
    r = cli("run", f"{kind}-whole", "eimt16", "--store", tmp / "s2", "--out", tmp_path / "r4", "--registry", reg)
    assert r.exit_code != 0 and "use eimt16-temporal" in r.output, r.output
