"""The temporal models' ``feedback`` setting (issue 24): what the decoder is
fed as its previous outputs. ``none`` never reads a training label in the
decoder input (a spy on the decoder and a label-shuffle check, sequential and
batched); on EIMT16 the fed value is never the target (label feedback on
windows whose rows all carry the window's label is refused, the registry's
eimt16-temporal experiments feed none); ``scheduled`` is seeded and anneals;
unknown values are clear errors; the batched stack and the sequential trainer
give the same fits for every setting (without dropout, as
tests/test_batched.py checks for the teacher setting); the 6-layer variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aanbench.batched import train_batched
from aanbench.plugin_manager import get_plugins
from aanbench_plugins.models import _temporal_aan_net as tnet

from test_batched import NO_DROPOUT, _jobs_and_sequential

QUICK = {"max_epochs": 4, "patience": 4, "batch_size": 12, "lr": 0.01}


def _data(seed: int = 1, n: int = 48, t: int = 5):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, t, 4)).astype(np.float32)]
    y = rng.uniform(-1, 1, size=n).astype(np.float32)
    rows = rng.uniform(-1, 1, size=(n, t)).astype(np.float32)
    rows[:, -1] = y
    return xs, y, rows


class _Spy:
    """Records the previous-outputs stream of every decoder pass (``TemporalDecoder.run``)."""

    def __init__(self, monkeypatch) -> None:
        self.fed: list[torch.Tensor] = []
        real = tnet.TemporalDecoder.run

        def run(decoder, segments, previous, last=False):
            self.fed.append(previous.detach().clone())
            return real(decoder, segments, previous, last)

        monkeypatch.setattr(tnet.TemporalDecoder, "run", run)


@pytest.mark.parametrize("model", ["temporal-aan", "feature-temporal-aan"])
def test_unknown_feedback_and_bad_anneal_epochs_are_clear_errors(model):
    spec = get_plugins().model(model)
    with pytest.raises(ValueError, match=rf"{model}: parameter feedback must be one of 'teacher', 'none', "
                                         r"'scheduled', not 'teachers'"):
        spec.build({"feedback": "teachers"}, [4])
    with pytest.raises(ValueError, match="anneal_epochs must be a whole number >= 1, not 0"):
        spec.build({"feedback": "scheduled", "anneal_epochs": 0}, [4])
    with pytest.raises(ValueError, match="feedback must be one of"):
        tnet.TemporalAANNet([4], feedback="sometimes")
    assert spec.params["feedback"] == "teacher"  # the paper's, the default (recorded with every result's params)


@pytest.mark.parametrize("model", ["temporal-aan", "feature-temporal-aan"])
def test_feedback_none_never_reads_a_training_label_in_the_decoder_input(model, monkeypatch):
    """(c) A spy on the decoder: with ``feedback = "none"`` every pass, in
    training, validation and prediction, is fed the one constant start value
    at every position; the model hands the trainer no labels; and fits given
    other member-row labels (negated, or none at all) are identical. With
    ``teacher`` the spy sees the labels (the spy can see them)."""
    xs, y, rows = _data()
    spec = get_plugins().model(model)
    params = {**QUICK, "feedback": "none"}
    spy = _Spy(monkeypatch)
    m = spec.build(params, [4])
    assert m.torch_fit(y[:40], seed=0, train_y_rows=rows[:40]).extra is None
    m = spec.build(params, [4])
    m.fit([x[:40] for x in xs], y[:40], [x[40:] for x in xs], y[40:], seed=0, train_y_rows=rows[:40])
    pred = m.predict(xs)
    fed = torch.cat([f.reshape(-1) for f in spy.fed])
    assert len(spy.fed) > 8 and torch.all(fed == fed[0])
    assert float(fed[0]) == pytest.approx(float(y[:40].mean()), abs=1e-6)  # start_value: the fitting mean
    for other in (-rows[:40], None):
        m2 = spec.build(params, [4])
        m2.fit([x[:40] for x in xs], y[:40], [x[40:] for x in xs], y[40:], seed=0, train_y_rows=other)
        np.testing.assert_array_equal(m2.predict(xs), pred)
    spy.fed.clear()
    t = spec.build({**QUICK, "max_epochs": 1}, [4])
    t.fit([x[:40] for x in xs], y[:40], None, None, seed=0, train_y_rows=rows[:40])
    teacher_fed = torch.cat([f for f in spy.fed if f.shape[0] == 12])  # training batches of 12
    assert not torch.all(teacher_fed == teacher_fed[0, 0])


def test_feedback_none_in_a_stack_never_reads_the_labels_either():
    """The batched stack with ``none``: jobs hand no training extra, and
    negated member-row labels change no weight."""
    params = {**QUICK, "feedback": "none"}
    spec = get_plugins().model("temporal-aan")
    xs, y, rows = _data(n=60)
    from aanbench.batched import BatchJob

    weights = []
    for r in (rows, -rows):
        rows2d = [xs[0].reshape(-1, 4)]  # each window's rows are its own: (n * T, 4)
        members = np.arange(60 * 5).reshape(60, 5)
        m = spec.build(params, [4])
        tf = m.torch_fit(y[:48], seed=3, train_y_rows=r[:48])
        assert tf.extra is None
        job = BatchJob(tf, 3, rows2d, [rows2d[0].mean(0)], [rows2d[0].std(0)], members[:48], y[:48],
                       members[48:], y[48:])
        train_batched([job])
        weights.append([p.detach().clone() for p in tf.net.parameters()])
    for a, b in zip(*weights):
        assert torch.equal(a, b)


def _eimt16_like(n_excerpts: int = 30, seed: int = 0):
    """Windows of 4 sub-segments of one excerpt, every row carrying the excerpt's label."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(1, 5, size=n_excerpts).astype(np.float32)
    xs = [rng.normal(size=(n_excerpts, 4, 4)).astype(np.float32) + y[:, None, None] * 0.3]
    return xs, y, np.repeat(y[:, None], 4, axis=1)


@pytest.mark.parametrize("feedback", ["teacher", "scheduled"])
def test_label_feedback_on_eimt16_windows_is_refused_it_would_feed_the_target(feedback):
    """(d) On EIMT16's windows (4 sub-segments of one excerpt, each carrying the
    excerpt's label) teacher forcing would feed the target itself: refused with
    a clear error, in the sequential and the batched path (``torch_fit``)."""
    xs, y, rows = _eimt16_like()
    spec = get_plugins().model("temporal-aan")
    m = spec.build({**QUICK, "feedback": feedback}, [4])
    with pytest.raises(ValueError, match="would be fed the training target itself; use feedback = 'none'"):
        m.fit(xs, y, None, None, seed=0, train_y_rows=rows)
    with pytest.raises(ValueError, match="training target itself"):
        spec.build({**QUICK, "feedback": feedback}, [4]).torch_fit(y, seed=0, train_y_rows=rows)
    # COGNIMUSE-like windows (labels that change between segments, the first ones padded) are fed as before
    xs2, y2, rows2 = _data()
    rows2[:3] = y2[:3, None]  # a movie's padded first windows: constant, and that is fine
    spec.build({**QUICK, "feedback": feedback}, [4]).fit(xs2, y2, None, None, seed=0, train_y_rows=rows2)


def test_eimt16_fed_value_is_never_the_target(monkeypatch):
    """(d) Every registry experiment of the temporal models feeds none on
    eimt16-temporal, and fitting there (spied) feeds one constant, whatever the
    windows' labels: never any window's target."""
    from aanbench.registry import load_registry

    reg = load_registry()
    names = [n for n, e in reg.experiments.items()
             if reg.experiment(n, "eimt16-temporal").model in ("temporal-aan", "feature-temporal-aan")]
    assert {"temporal-aan", "feature-temporal-aan", "temporal-aan-scheduled", "temporal-aan-6"} <= set(names)
    for n in names:
        assert reg.experiment(n, "eimt16-temporal").params["feedback"] == "none", n
    assert reg.experiment("temporal-aan", "cognimuse").params.get("feedback", "teacher") == "teacher"
    assert reg.experiment("temporal-aan-scheduled", "cognimuse").params["feedback"] == "scheduled"
    xs, y, rows = _eimt16_like()
    spy = _Spy(monkeypatch)
    spec = get_plugins().model("temporal-aan")
    m = spec.build({**QUICK, "feedback": "none"}, [4])
    m.fit([x[:24] for x in xs], y[:24], [x[24:] for x in xs], y[24:], seed=0, train_y_rows=rows[:24])
    fed = torch.cat([f.reshape(-1) for f in spy.fed])
    assert torch.all(fed == fed[0])
    assert np.sum(np.isclose(y, float(fed[0]), atol=1e-6)) == 0  # (not by accident any excerpt's label either)


def test_scheduled_sampling_anneals_is_seeded_and_differs_from_teacher_forcing():
    """``start_epoch`` sets the teacher-forcing probability: 1 at epoch 1, 0
    after ``anneal_epochs``; the same seed gives the same numbers; the coins
    reach training (another model than teacher forcing)."""
    net = tnet.TemporalAANNet([4], feedback="scheduled", anneal_epochs=4)
    ps = []
    for e in (1, 2, 3, 5, 9):
        net.start_epoch(e)
        ps.append(net.decoder.coins.p)
    assert ps == [1.0, 0.75, 0.5, 0.0, 0.0]
    xs, y, rows = _data()
    spec = get_plugins().model("temporal-aan")
    preds = {}
    for name, fb, seed in (("a", "scheduled", 0), ("b", "scheduled", 0), ("c", "scheduled", 1),
                           ("t", "teacher", 0)):
        m = spec.build({**QUICK, "max_epochs": 6, "feedback": fb, "anneal_epochs": 3}, [4])
        m.fit(xs, y, None, None, seed=seed, train_y_rows=rows)
        preds[name] = m.predict(xs)
    np.testing.assert_array_equal(preds["a"], preds["b"])
    assert not np.array_equal(preds["a"], preds["c"]) and not np.allclose(preds["a"], preds["t"])


def test_scheduled_coins_feed_labels_or_the_networks_own_outputs():
    """With the coins all heads the decoder is teacher forced; all tails, fed
    its own (teacher-forced) outputs of the previous positions, not the labels."""
    torch.manual_seed(0)
    net = tnet.TemporalAANNet([4], feedback="scheduled", dropout=0.0, inner_dropout=0.0)
    teacher = tnet.TemporalAANNet([4], dropout=0.0, inner_dropout=0.0)
    teacher.load_state_dict(net.state_dict())
    xs, _, rows = _data(n=6)
    x, lab = torch.from_numpy(xs[0]), torch.from_numpy(rows)
    net.train(), teacher.train()
    net.start_epoch(1)
    torch.testing.assert_close(net(x, lab), teacher(x, lab))
    net.start_epoch(10**6)
    own = teacher.sequence_outputs(x, lab).detach()
    torch.testing.assert_close(net(x, lab), teacher(x, own))  # fed: start, own_0 .. own_{T-2}


@pytest.mark.parametrize("model, feedback", [("temporal-aan", "none"), ("temporal-aan", "scheduled"),
                                             ("feature-temporal-aan", "none")])
def test_stack_steps_each_copy_as_it_trains_alone_for_every_feedback(model, feedback):
    """As tests/test_batched.py's check for teacher forcing: without dropout a
    stacked copy follows its one-at-a-time twin (scheduled sampling with
    ``anneal_epochs = 1``: labels in epoch 1, own outputs after, so no coin is
    random and the paths can agree)."""
    params = {"max_epochs": 8, "patience": 3, "batch_size": 16, "lr": 0.005, "feedback": feedback,
              "anneal_epochs": 1, **NO_DROPOUT[model]}
    jobs, alone = _jobs_and_sequential(model, params, sizes=(61, 80, 97))
    reports = train_batched(jobs)
    for job, rep, (one, one_rep, xs) in zip(jobs, reports, alone):
        assert (rep.epochs, rep.best_epoch) == (one_rep.epochs, one_rep.best_epoch)
        with torch.no_grad():
            got = job.torch_fit.net(*map(torch.from_numpy, xs)).numpy()
            want = one.net(*map(torch.from_numpy, xs)).numpy()
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_six_layer_decoder_variant():
    """``temporal-aan-6``: six decoder layers (the default one), trained and
    evaluated as the one-layer decoder; its state round-trips."""
    from aanbench.registry import load_registry

    reg = load_registry()
    assert reg.experiment("temporal-aan-6", "cognimuse").params["layers"] == 6
    assert reg.experiment("temporal-aan", "cognimuse").params["layers"] == 1
    spec = get_plugins().model("temporal-aan")
    xs, y, rows = _data()
    m = spec.build({**QUICK, "layers": 6, "max_epochs": 2}, [4])
    m.fit(xs, y, None, None, seed=0, train_y_rows=rows)
    assert len(m.net.decoder.layers) == 6
    back = spec.restore(m.state())
    np.testing.assert_array_equal(back.predict(xs), m.predict(xs))


@pytest.mark.parametrize("feedback", ["teacher", "scheduled"])
def test_a_stacked_copy_ignores_another_copys_labels_with_dropout_and_coins(feedback):
    """Item 4 at the stack's level, dropout on (and scheduled sampling's coin
    flips): permuting one copy's fitting and validation labels (so it trains,
    and may stop, otherwise) leaves the other copies' weights
    bit for bit as they were."""
    params = {"max_epochs": 10, "patience": 2, "batch_size": 16, "lr": 0.01, "feedback": feedback,
              "anneal_epochs": 4}
    runs = []
    for permute in (False, True):
        jobs, _ = _jobs_and_sequential("temporal-aan", params, sizes=(61, 80, 97))
        if permute:
            j = jobs[1]
            perm = np.random.default_rng(0).permutation(len(j.fit_y))
            j.fit_y = j.fit_y[perm]
            j.torch_fit.extra = j.torch_fit.extra[perm]
            j.val_y = j.val_y[::-1].copy()
        reports = train_batched(jobs)
        runs.append((reports, [[p.detach().clone() for p in j.torch_fit.net.parameters()] for j in jobs]))
    (ra, wa), (rb, wb) = runs
    assert any(not torch.equal(p, q) for p, q in zip(wa[1], wb[1]))  # the permuted copy changed
    for i in (0, 2):
        assert (ra[i].epochs, ra[i].best_epoch) == (rb[i].epochs, rb[i].best_epoch)
        for p, q in zip(wa[i], wb[i]):
            assert torch.equal(p, q)
