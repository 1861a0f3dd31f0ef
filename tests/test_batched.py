"""Batched training (aanbench.batched): many fits stepped together, each as
faithful as when trained alone; the runner's default for models that opt in,
``sequential=True`` (``--sequential``) the one-at-a-time path."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import numpy as np
import pytest
import torch

from aanbench.batched import BatchJob, group_jobs, train_batched
from aanbench.contracts import Item
from aanbench.plugin_manager import get_plugins
from aanbench.registry import ExperimentConfig
from aanbench.runner import run_experiment, train_bundle
from aanbench.store import FeatureStore
from aanbench.training import mse_pearson_loss

NO_DROPOUT = {"feature-aan": {"dropout": 0.0, "head_dropout": 0.0},
              "temporal-aan": {"dropout": 0.0, "inner_dropout": 0.0},
              "feature-temporal-aan": {"dropout": 0.0, "inner_dropout": 0.0, "feature_dropout": 0.0}}


def _rows(n: int = 160, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [rng.normal(size=(n, 6)).astype(np.float32), (rng.normal(size=(n, 3)) * 20 + 5).astype(np.float32)]
    y = np.tanh(rows[0][:, 0] + 0.03 * rows[1][:, 1]).astype(np.float32)
    return rows, y


def _jobs_and_sequential(model: str, params: dict, sizes=(60, 80, 100), seeds=(3, 4, 5), with_val=(True,) * 3):
    """Jobs for the batched trainer and, for each, the same fit by the model's own
    (one-at-a-time) ``fit`` on the same standardised inputs. The second job's
    validation labels are noise (it stops early)."""
    rows, y = _rows()
    noise = np.random.default_rng(9).normal(size=len(y)).astype(np.float32)
    n, T = len(y), 3
    windows = np.stack([np.clip(np.arange(n) - T + 1 + t, 0, None) for t in range(T)], 1)  # (n, T) member rows
    spec = get_plugins().model(model)
    sequences = spec.input == "sequences"
    members = windows if sequences else np.arange(n)
    jobs, alone = [], []
    for k, (size, seed, has_val) in enumerate(zip(sizes, seeds, with_val)):
        order = np.random.default_rng(100 + k).permutation(n)
        fit, val = np.sort(order[:size]), np.sort(order[-40:])
        yv = noise if k == 1 else y
        mean = [r[fit].mean(0) for r in rows]  # each job its own standardisation
        std = [r[fit].std(0) for r in rows]
        xs = [((r - m) / s).astype(np.float32) for r, m, s in zip(rows, mean, std)]
        labels = {"train_y_rows": y[windows[fit]]} if sequences else {}
        m = spec.build(params, [6, 3])
        jobs.append(BatchJob(m.torch_fit(y[fit], seed=seed, **labels), seed, rows, mean, std, members[fit], y[fit],
                             members[val] if has_val else None, yv[val] if has_val else None))
        one = spec.build(params, [6, 3])
        rep = one.fit([x[members[fit]] for x in xs], y[fit], [x[members[val]] for x in xs] if has_val else None,
                      yv[val] if has_val else None, seed=seed, **labels)
        alone.append((one, rep, [x[members] for x in xs]))
    return jobs, alone


@pytest.mark.parametrize("model, epochs, lr, folded", [
    ("feature-aan", 25, 0.01, True), ("temporal-aan", 25, 0.01, True),
    # 7 attention layers amplify rounding at lr 0.01 (0.4 % apart after 12 epochs): a calmer rate
    ("feature-temporal-aan", 12, 0.002, True),
    # the same networks under vmap (the path of networks that do not declare stack_fold)
    ("feature-aan", 25, 0.01, False), ("temporal-aan", 25, 0.01, False)])
def test_stack_steps_each_copy_as_it_trains_alone(model: str, epochs: int, lr: float, folded: bool) -> None:
    """Without dropout (the one random draw the stack shares) a stacked copy
    follows its one-at-a-time twin step for step: different numbers of
    fitting samples (and of batches per epoch, last batches of other sizes),
    own standardisation, own seed and data order, own early stopping; with
    the copies folded into the batch and under ``vmap``."""
    params = {"max_epochs": epochs, "patience": 3, "batch_size": 16, "lr": lr, **NO_DROPOUT[model]}
    jobs, alone = _jobs_and_sequential(model, params, sizes=(61, 80, 97))
    reports = train_batched(jobs, fold=folded)
    # the copy with noise for validation labels stopped early, and the stack went on without it
    assert reports[1].epochs < max(r.epochs for r in reports)
    for job, rep, (one, one_rep, xs) in zip(jobs, reports, alone):
        assert (rep.epochs, rep.best_epoch) == (one_rep.epochs, one_rep.best_epoch)
        assert rep.best_val_loss == pytest.approx(one_rep.best_val_loss, abs=1e-4)
        with torch.no_grad():
            got = job.torch_fit.net(*map(torch.from_numpy, xs)).numpy()
            want = one.net(*map(torch.from_numpy, xs)).numpy()
        np.testing.assert_allclose(got, want, atol=2e-4)


@pytest.mark.parametrize("model", ["feature-aan", "temporal-aan"])
def test_elementwise_adam_follows_the_fused_kernel(model: str) -> None:
    """The stack's Adam step takes torch's fused kernel where torch has one and
    the elementwise formula otherwise: both are torch.optim.Adam, with masked
    steps (fits of 61, 80 and 97 samples in batches of 16) and weight decay."""
    from aanbench.batched.stack import FUSED_ADAM

    assert FUSED_ADAM is not None, "this torch has no fused Adam: the comparison would be void"
    params = {"max_epochs": 6, "patience": 3, "batch_size": 16, "lr": 0.01, "weight_decay": 1e-3,
              **NO_DROPOUT[model]}
    fused, alone = _jobs_and_sequential(model, params, sizes=(61, 80, 97))
    elementwise, _ = _jobs_and_sequential(model, params, sizes=(61, 80, 97))
    before = [p.detach().clone() for p in fused[0].torch_fit.net.parameters()]
    rep_fused = train_batched(fused)
    assert any(not torch.equal(p, q) for p, q in zip(before, fused[0].torch_fit.net.parameters()))
    rep_elementwise = train_batched(elementwise, fused_adam=False)
    for a, b, ra, rb, (_, _, xs) in zip(fused, elementwise, rep_fused, rep_elementwise, alone):
        assert (ra.epochs, ra.best_epoch) == (rb.epochs, rb.best_epoch)
        # outputs, not weights: a parameter whose gradient is only rounding (an attention key's
        # bias: softmax ignores it) takes Adam steps of random sign in either path
        with torch.no_grad():
            got = a.torch_fit.net(*map(torch.from_numpy, xs)).numpy()
            want = b.torch_fit.net(*map(torch.from_numpy, xs)).numpy()
        np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("model", ["feature-aan", "temporal-aan"])
def test_jobs_sharing_batches_sit_side_by_side_and_threads_keep_the_numbers(model: str) -> None:
    """Two folds x two targets, given fold-minor (as a runner gives targets x
    folds): the stack puts each fold's two fits side by side (one gather for
    both), still hands each job its own weights (each as it trains alone,
    dropout off), and the first layer's worker threads leave every weight
    bit for bit as on one thread."""
    rows, y = _rows()
    y2 = np.tanh(rows[1][:, 2] * 0.05 - rows[0][:, 3]).astype(np.float32)
    n, T = len(y), 3
    windows = np.stack([np.clip(np.arange(n) - T + 1 + t, 0, None) for t in range(T)], 1)
    spec = get_plugins().model(model)
    sequences = spec.input == "sequences"
    members = windows if sequences else np.arange(n)
    params = {"max_epochs": 4, "patience": 4, "batch_size": 16, "lr": 0.01, **NO_DROPOUT[model]}
    folds = [(np.arange(0, 100), np.arange(100, 130), 3), (np.arange(40, 140), np.arange(0, 30), 4)]

    def jobs() -> list[BatchJob]:
        out = []
        for target in (y, y2):
            for fit, val, seed in folds:
                mean, std = [r[fit].mean(0) for r in rows], [r[fit].std(0) for r in rows]
                labels = {"train_y_rows": target[windows[fit]]} if sequences else {}
                tf = spec.build(params, [6, 3]).torch_fit(target[fit], seed=seed, **labels)
                out.append(BatchJob(tf, seed, rows, mean, std, members[fit], target[fit], members[val], target[val]))
        return out

    from aanbench.batched.loop import stack_order

    one, three = jobs(), jobs()
    assert stack_order(one).tolist() == [0, 2, 1, 3]
    train_batched(one, threads=1)
    train_batched(three, threads=3)
    for a, b in zip(one, three):
        sa, sb = a.torch_fit.net.state_dict(), b.torch_fit.net.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for i, job in enumerate(one):
        alone = jobs()[i]
        train_batched([alone])
        x = [torch.from_numpy(((r - m) / s).astype(np.float32)[members[:20]])
             for r, m, s in zip(rows, job.mean, job.std)]
        with torch.no_grad():
            np.testing.assert_allclose(job.torch_fit.net(*x).numpy(), alone.torch_fit.net(*x).numpy(), atol=2e-4)


def test_stackable_flag_says_which_models_have_torch_fit_and_the_aan_networks_are_stackable_nets() -> None:
    """``ModelSpec.stackable`` (what the runner asks instead of building a
    probe model) agrees with the models each installed spec builds: the
    flagged ones have ``torch_fit``, the others do not; the AAN networks
    implement the network side of the contract (``StackableNet``), a plain
    module does not."""
    from aanbench.batched import BatchableModel, FoldableNet, ProjectedNet, StackableNet

    plugins = get_plugins()
    flagged = set()
    for name, spec in plugins.models.items():
        model = spec.build({}, [6, 3])
        assert spec.stackable == isinstance(model, BatchableModel), name
        if spec.stackable:
            flagged.add(name)
            # (rows that differ from their window's label: constant ones would be refused as the target itself)
            rows = np.arange(40, dtype=np.float32).reshape(8, 5)
            labels = {"train_y_rows": rows} if spec.wants_row_labels else {}
            net = model.torch_fit(rows[:, -1].copy(), seed=0, **labels).net
            assert isinstance(net, StackableNet), name
    assert {"feature-aan", "temporal-aan", "feature-temporal-aan"} <= flagged
    plain = torch.nn.Linear(3, 1)
    assert not isinstance(plain, FoldableNet) and not isinstance(plain, ProjectedNet)


def test_first_layer_threads_default_to_the_cpus_this_process_may_use() -> None:
    """The default of the stack's first-layer threads (``train_batched``,
    ``plan_run``, the CLI's ``--threads``) is every CPU the process's affinity
    allows, not the machine's count."""
    import os

    from aanbench.batched import default_threads

    assert default_threads() == len(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert default_threads() == 1
    finally:
        os.sched_setaffinity(0, before)


def test_early_stopped_copy_keeps_its_best_epoch_weights() -> None:
    """A copy whose validation labels are noise stops early while a copy
    without validation trains on: the stopped one ends with the weights of
    its best epoch (its validation loss is the recorded best), the other
    with its last epoch's."""
    rows, y = _rows()
    noise = np.random.default_rng(7).normal(size=len(y)).astype(np.float32)
    spec = get_plugins().model("feature-aan")
    params = {"max_epochs": 60, "patience": 3, "batch_size": 16, "lr": 0.02}
    mean, std = [r.mean(0) for r in rows], [r.std(0) for r in rows]
    fit, val = np.arange(120), np.arange(120, 160)
    stopper = BatchJob(spec.build(params, [6, 3]).torch_fit(y[fit], seed=1), 1, rows, mean, std, fit, y[fit],
                       val, noise[val])
    runner = BatchJob(spec.build(params, [6, 3]).torch_fit(y[fit], seed=2), 2, rows, mean, std, fit, y[fit])
    a, b = train_batched([stopper, runner])
    assert a.epochs < 60 and b.epochs == b.best_epoch == 60
    assert a.best_epoch == a.epochs - 3 and a.best_val_loss is not None and b.best_val_loss is None
    net = stopper.torch_fit.net
    assert not net.training
    xs = [torch.from_numpy(((r[val] - m) / s).astype(np.float32)) for r, m, s in zip(rows, mean, std)]
    with torch.no_grad():
        loss = float(mse_pearson_loss(net(*xs), torch.from_numpy(noise[val])))
    assert loss == pytest.approx(a.best_val_loss, rel=1e-5)


def test_jobs_with_other_training_settings_go_to_other_stacks() -> None:
    rows, y = _rows()
    spec = get_plugins().model("feature-aan")
    mean, std = [r.mean(0) for r in rows], [r.std(0) for r in rows]
    fit = np.arange(100)

    def job(batch: int) -> BatchJob:
        tf = spec.build({"batch_size": batch, "max_epochs": 2}, [6, 3]).torch_fit(y[fit], seed=0)
        return BatchJob(tf, 0, rows, mean, std, fit, y[fit])

    jobs = [job(20), job(40), job(20)]
    assert group_jobs(jobs) == [[0, 2], [1]]
    with pytest.raises(ValueError, match="one training configuration"):
        train_batched(jobs)


# --------------------------------------------------------------------------
# Through the runner: all folds and targets of a run at once


class _Movies:
    name = "synthetic-movies"
    targets = ("valence", "arousal")
    protocol = "leave-one-group-out"
    segmentation = "default"

    def config(self) -> dict:
        return {}


def _movie_store(tmp_path: Path, movies: int = 6, per_movie: int = 30):
    """Movies of different lengths (so folds differ in training-set size)."""
    rng = np.random.default_rng(11)
    lengths = [per_movie + 3 * j for j in range(movies)]
    n = sum(lengths)
    a = rng.normal(size=(n, 6)).astype(np.float32)
    b = (rng.normal(size=(n, 4)) * 30 + 10).astype(np.float32)
    # noisy labels, as emotion ratings are (r about 0.7 at best)
    val = np.tanh(a[:, 0] + 0.5 * a[:, 1] + 0.8 * rng.normal(size=n))
    aro = np.tanh(0.03 * (b[:, 0] - 10) - 0.5 * a[:, 2] + 0.8 * rng.normal(size=n))
    group = np.repeat([f"m{j}" for j in range(movies)], lengths)
    pos = np.concatenate([np.arange(k) for k in lengths])
    items = [Item(f"{group[i]}_{pos[i]:03d}", None, start=5.0 * pos[i], end=5.0 * pos[i] + 5,
                  labels={"valence": float(val[i]), "arousal": float(aro[i])}, group=str(group[i]), split="")
             for i in range(n)]
    g = FeatureStore(tmp_path / "store").ensure_group("synthetic-movies", items, chunk_rows=16)
    prov = lambda name: {"extractor": name, "version": "imported", "dim": 0, "config": {}, "weights": {},  # noqa: E731
                         "libraries": {}, "source": "test"}
    g.import_rows("fa@imported", a, prov("fa"))
    g.import_rows("fb@imported", b, prov("fb"))
    return g


def _exp(model: str, **params) -> ExperimentConfig:
    return ExperimentConfig(name=f"b-{model}", model=model, description="", feature_set="ab", features=("fa", "fb"),
                            params=params, protocol=None, seed=5)


def _preds(doc: dict) -> dict:
    return {(p["item_id"], p["target"]): p["y_pred"] for p in doc["predictions"]}


@pytest.mark.slow  # nine runs of a 5-fold Feature AAN (three seeds of each path)
def test_batched_run_is_seeded_and_agrees_with_the_sequential_run(tmp_path: Path) -> None:
    plugins = get_plugins()
    g = _movie_store(tmp_path, movies=5, per_movie=24)
    exp = _exp("feature-aan", max_epochs=25, patience=6, batch_size=16, lr=0.01)
    first = run_experiment(exp, _Movies(), g, plugins)
    again = run_experiment(exp, _Movies(), g, plugins)
    assert _preds(first) == _preds(again) and len(_preds(first)) == 2 * g.n_items
    fits = first["targets"]["valence"]["fits"]
    assert [f["fold"] for f in fits] == [f"m{j}" for j in range(5)]
    assert len({f["n_fit"] + f["n_val"] for f in fits}) == 5  # folds of different sizes, one stack
    seq = run_experiment(exp, _Movies(), g, plugins, sequential=True)
    assert _preds(seq) != _preds(first)  # dropout draws differ: two paths, not one
    # One run's metrics move with its dropout draws about as much as the bootstrap interval is
    # wide (measured over 5 seeds: arousal r 0.59-0.70 sequential, 0.63-0.71 batched), so the
    # paths' means over three seeds must be closer than half of either path's interval (seed 5's).
    others = [dataclasses.replace(exp, seed=seed) for seed in (6, 7)]
    batched_runs = [first] + [run_experiment(e, _Movies(), g, plugins) for e in others]
    seq_runs = [seq] + [run_experiment(e, _Movies(), g, plugins, sequential=True) for e in others]
    for target in ("valence", "arousal"):
        b, s = first["targets"][target]["metrics"], seq["targets"][target]["metrics"]
        assert s["pearson_r"] > 0.4, f"sequential run did not learn {target}"
        for metric in ("pearson_r", "mse", "ccc"):
            b_mean = float(np.mean([r["targets"][target]["metrics"][metric] for r in batched_runs]))
            s_mean = float(np.mean([r["targets"][target]["metrics"][metric] for r in seq_runs]))
            half = min(s[f"{metric}_ci"][1] - s[f"{metric}_ci"][0], b[f"{metric}_ci"][1] - b[f"{metric}_ci"][0]) / 2
            assert abs(b_mean - s_mean) <= half, (target, metric, b_mean, s_mean, half)


@pytest.mark.parametrize("model, params", [
    ("feature-aan", {"max_epochs": 15, "patience": 4, "batch_size": 16, "lr": 0.01, **NO_DROPOUT["feature-aan"]}),
    ("temporal-aan", {"max_epochs": 10, "patience": 4, "batch_size": 16, "lr": 0.01, "sequence_length": 3,
                      "sequence_start": "pad", **NO_DROPOUT["temporal-aan"]}),
])
def test_runner_hands_the_stack_what_a_sequential_fit_gets(tmp_path: Path, model: str, params: dict) -> None:
    """Without dropout the batched and sequential runs give the same
    predictions (to float rounding): same validation carving, standardiser,
    windows, teacher-forcing labels, seeds and early stopping."""
    plugins = get_plugins()
    g = _movie_store(tmp_path, movies=4, per_movie=20)
    exp = _exp(model, **params)
    batched = run_experiment(exp, _Movies(), g, plugins)
    seq = run_experiment(exp, _Movies(), g, plugins, sequential=True)
    pb, ps = _preds(batched), _preds(seq)
    assert pb.keys() == ps.keys()
    np.testing.assert_allclose([pb[k] for k in ps], [ps[k] for k in ps], atol=5e-4)
    for t in ("valence", "arousal"):
        assert [(f["epochs"], f["best_epoch"]) for f in batched["targets"][t]["fits"]] == \
               [(f["epochs"], f["best_epoch"]) for f in seq["targets"][t]["fits"]]


def test_train_bundle_batches_its_targets(tmp_path: Path) -> None:
    plugins = get_plugins()
    g = _movie_store(tmp_path, movies=4, per_movie=20)
    exp = _exp("feature-aan", max_epochs=8, patience=4, batch_size=16, **NO_DROPOUT["feature-aan"])
    batched = train_bundle(exp, _Movies(), g, plugins)
    seq = train_bundle(exp, _Movies(), g, plugins, sequential=True)
    for t in ("valence", "arousal"):
        assert batched["targets"][t]["fit"] == seq["targets"][t]["fit"] | {
            "best_val_loss": batched["targets"][t]["fit"]["best_val_loss"]}
        for k, v in seq["targets"][t]["state"]["state_dict"].items():
            # Adam's normalised steps magnify rounding where a gradient is near 0: a few 1e-3 differences
            torch.testing.assert_close(batched["targets"][t]["state"]["state_dict"][k], v, atol=5e-3, rtol=1e-2)


# --------------------------------------------------------------------------
# The command line, on a small generated demo (real clips, decoding, Zarr)

DEMO_REGISTRY = """
[feature_sets]
batched-test = ["logmel", "affect"]

[experiments.batched-aan]
model = "feature-aan"
description = "a short Feature AttendAffectNet"
features = "batched-test"
protocol = "fixed"  # the demo's own split (its default is now leave-one-movie-out: 4x the fits)
params = { max_epochs = 20, patience = 6, batch_size = 16, lr = 0.005, val_fraction = 0.2 }
"""


@pytest.mark.slow  # eleven CLI runs of a Feature AAN on a 48-clip demo
def test_run_and_sequential_run_on_the_demo_agree(tmp_path: Path) -> None:
    import json

    from conftest import run_cli

    r = run_cli("datasets", "make-demo", tmp_path / "data", "--clips", "48")
    assert r.returncode == 0, r.stderr
    r = run_cli("extract", "demo", "--root", tmp_path / "data", "--store", tmp_path / "store", "-e",
                "logmel,affect")
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "registry.toml").write_text(DEMO_REGISTRY)
    docs = {}
    runs = [("batched", []), ("again", []), ("sequential", ["--sequential"])]
    # five seeds of each path: one run moves with its dropout draws (see the test above); each copy of a stack
    # draws from its own stream, the sequential fit from the global generator, so only their means compare
    SEEDS = (1, 2, 3, 4)
    runs += [(f"{path}-{seed}", ["--seed", str(seed)] + extra) for seed in SEEDS
             for path, extra in (("batched", []), ("sequential", ["--sequential"]))]
    for name, extra in runs:
        r = run_cli("run", "batched-aan", "demo", "--store", tmp_path / "store", "--out",
                    tmp_path / f"{name}.json", "--registry", tmp_path / "registry.toml", "--json", *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        docs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert _preds(docs["batched"]) == _preds(docs["again"])  # same seed, same numbers
    assert _preds(docs["batched"]).keys() == _preds(docs["sequential"]).keys()
    assert _preds(docs["batched"]) != _preds(docs["batched-1"])  # --seed took effect
    for target in docs["batched"]["targets"]:
        b, s = docs["batched"]["targets"][target]["metrics"], docs["sequential"]["targets"][target]["metrics"]
        for metric in ("pearson_r", "mse"):
            means = {path: float(np.mean([docs[n]["targets"][target]["metrics"][metric]
                                          for n in (path, *(f"{path}-{s}" for s in SEEDS))]))
                     for path in ("batched", "sequential")}
            half = min(s[f"{metric}_ci"][1] - s[f"{metric}_ci"][0], b[f"{metric}_ci"][1] - b[f"{metric}_ci"][0]) / 2
            assert abs(means["batched"] - means["sequential"]) <= half, (target, metric, means, half)


# --------------------------------------------------------------------------
# Devices (--device)


def test_stack_on_an_explicit_cpu_device_matches_the_default_and_keeps_cpu_nets(tmp_path: Path) -> None:
    params = {"max_epochs": 6, "patience": 3, "batch_size": 16, "lr": 0.01}
    first, _ = _jobs_and_sequential("temporal-aan", params, sizes=(61, 80, 97))
    second, alone = _jobs_and_sequential("temporal-aan", params, sizes=(61, 80, 97))
    r1, r2 = train_batched(first), train_batched(second, device="cpu")
    assert [(a.epochs, a.best_epoch, a.best_val_loss) for a in r1] == [(b.epochs, b.best_epoch, b.best_val_loss)
                                                                      for b in r2]
    for a, b in zip(first, second):
        sa, sb = a.torch_fit.net.state_dict(), b.torch_fit.net.state_dict()
        assert all(torch.equal(sa[k], sb[k]) and sb[k].device.type == "cpu" for k in sa)
    # through the runner: device recorded in the results document, and "cpu" is the default path
    g = _movie_store(tmp_path, movies=4, per_movie=20)
    exp = _exp("feature-aan", max_epochs=4, patience=3, batch_size=16, lr=0.01)
    doc = run_experiment(exp, _Movies(), g, get_plugins(), device="cpu")
    assert doc["device"] == "cpu"
    assert _preds(doc) == _preds(run_experiment(exp, _Movies(), g, get_plugins()))
    bundle = train_bundle(exp, _Movies(), g, get_plugins(), device="cpu")
    assert bundle["provenance"]["device"] == "cpu"
    assert all(v.device.type == "cpu" for t in bundle["targets"].values() for v in t["state"]["state_dict"].values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model", ["feature-aan", "temporal-aan"])
def test_stack_on_cuda_is_seeded_and_follows_the_cpu_stack(model: str) -> None:
    """On a GPU: the same jobs give the same numbers twice; without dropout a
    copy trained on the GPU follows its CPU twin (kernels sum in another order)."""
    params = {"max_epochs": 10, "patience": 3, "batch_size": 16, "lr": 0.01, **NO_DROPOUT[model]}
    cpu, alone = _jobs_and_sequential(model, params, sizes=(61, 80, 97))
    gpu1, _ = _jobs_and_sequential(model, params, sizes=(61, 80, 97))
    gpu2, _ = _jobs_and_sequential(model, params, sizes=(61, 80, 97))
    rc, r1, r2 = train_batched(cpu), train_batched(gpu1, device="cuda"), train_batched(gpu2, device="cuda")
    assert [(r.epochs, r.best_epoch) for r in r1] == [(r.epochs, r.best_epoch) for r in rc]
    for a, b, c, (_, _, xs) in zip(gpu1, gpu2, cpu, alone):
        sa, sb = a.torch_fit.net.state_dict(), b.torch_fit.net.state_dict()
        assert all(torch.equal(sa[k], sb[k]) and sa[k].device.type == "cpu" for k in sa)
        with torch.no_grad():
            got = a.torch_fit.net(*map(torch.from_numpy, xs)).numpy()
            want = c.torch_fit.net(*map(torch.from_numpy, xs)).numpy()
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_gathered_first_layer_matches_gather_then_product() -> None:
    """The stack's first layer (every feature's rows gathered side by side,
    once per run of neighbouring copies with the same rows, each copy's
    standardisation folded into its weights) against the plain formula
    ``((x_f - shift_f) / std_f) W_f^T + b_f`` per feature, values and gradients
    (float64, and torch's numerical gradient check); the weight gradients
    written into given views of a flat gradient; threads give the same bits."""
    from aanbench.batched.first_layer import GatheredLinear, same_rows
    from aanbench.batched.threads import Threads

    torch.manual_seed(0)
    dims, outs = [7, 4], [3, 2]
    bounds = [(0, 7), (7, 11)]
    rows = torch.randn(50, 11, dtype=torch.float64)
    idx = torch.randint(0, 50, (5, 6))
    idx[2] = idx[0]  # not neighbours: gathered apart
    idx[4] = idx[3]
    assert same_rows(idx) == [(0, 1), (1, 2), (2, 3), (3, 5)]
    assert same_rows(idx[3:]) == [(0, 2)] and same_rows(idx[:1]) == [(0, 1)]
    wb = []
    for d, o in zip(dims, outs):
        wb += [torch.randn(5, o, d, dtype=torch.float64, requires_grad=True),
               torch.randn(5, o, dtype=torch.float64, requires_grad=True)]
    stds = [torch.rand(5, d, dtype=torch.float64) + 0.5 for d in dims]
    shifts = [torch.randn(5, d, dtype=torch.float64) for d in dims]

    def layer(*wb, threads=None, grad_outs=None):
        return GatheredLinear.apply(rows, idx, bounds, stds, shifts, threads, grad_outs, *wb)

    got = layer(*wb)
    refs = [torch.einsum("kmd,kod->kmo", (rows[idx][..., lo:hi] - sh[:, None]) / s[:, None], w) + b[:, None]
            for (lo, hi), s, sh, w, b in zip(bounds, stds, shifts, wb[0::2], wb[1::2])]
    for y, ref in zip(got, refs):
        torch.testing.assert_close(y, ref)
    gs = [torch.randn_like(y) for y in got]
    want = torch.autograd.grad(refs, wb, gs)
    for g, exp in zip(torch.autograd.grad(got, wb, gs), want):
        torch.testing.assert_close(g, exp)
    assert torch.autograd.gradcheck(lambda *wb: layer(*wb), tuple(wb))
    flat = torch.full((5, 60), float("nan"), dtype=torch.float64)  # a flat gradient: weights at 4..25 and 30..38
    slots = [flat[:, 4:25].view(5, 3, 7), flat[:, 30:38].view(5, 2, 4)]
    grads = torch.autograd.grad(layer(*wb, grad_outs=slots), wb, gs)
    for g, slot, exp in zip(grads[0::2], slots, want[0::2]):
        assert g.data_ptr() == slot.data_ptr()
        torch.testing.assert_close(slot, exp)
    assert flat[:, :4].isnan().all() and flat[:, 25:30].isnan().all() and flat[:, 38:].isnan().all()
    threads = Threads(3)  # the runs shared out over three threads: the same numbers, bit for bit
    try:
        shared, single = layer(*wb, threads=threads), layer(*wb)
        assert all(torch.equal(a, b) for a, b in zip(shared, single))
        for a, b in zip(torch.autograd.grad(shared, wb, gs), torch.autograd.grad(single, wb, gs)):
            assert torch.equal(a, b)
        # without gradients (validation) each distinct row of a run is multiplied once: rows repeated
        # within a copy (a movie's overlapping windows) give the formula's values in every position
        idx[:, 4] = idx[:, 1]
        idx[:, 5] = idx[:, 1]
        refs = [torch.einsum("kmd,kod->kmo", (rows[idx][..., lo:hi] - sh[:, None]) / s[:, None], w) + b[:, None]
                for (lo, hi), s, sh, w, b in zip(bounds, stds, shifts, wb[0::2], wb[1::2])]
        with torch.no_grad():
            for th in (None, threads):
                for y, ref in zip(layer(*(t.detach() for t in wb), threads=th), refs):
                    torch.testing.assert_close(y, ref)
    finally:
        threads.close()


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_stack_dropout_masks_keep_each_element_with_probability_one_minus_p(p: float) -> None:
    """The stack's dropout (masks from 16-bit values drawn per copy and step,
    see ``aanbench.batched.dropout.MaskPool``): a counting pass sizes a step;
    every position keeps its element with probability ``1 - p`` (each of the
    four values an ``int64`` draw gives, checked apart), masks differ between
    copies and steps, kept elements are scaled by ``1 / (1 - p)``, and
    evaluation mode passes the input through. Under ``vmap`` (a row per
    copy) and folded (the copies' samples copy-major on the first axis)."""
    from torch.func import vmap

    from aanbench.batched.dropout import MaskPool, pool_dropouts

    k, n = 4, 250_000
    pool = MaskPool([11, 12, 13, 14], torch.device("cpu"))
    net = torch.nn.Sequential(torch.nn.Dropout(p), torch.nn.Linear(4, 4), torch.nn.Dropout(0.0))
    assert pool_dropouts(net, pool) == 1  # p = 0 is left as it is
    drop = net[0]
    x = torch.ones(n)

    def step(bits, x):
        pool.bits, pool.offset = bits, 0
        return drop(x)

    f = vmap(step, in_dims=(0, None), randomness="different")
    with pool.counting():
        assert torch.equal(f(pool.empty(k), x), torch.full((k, n), 1 / (1 - p)))  # counting keeps all
    assert pool.size == n
    first = f(pool.draw(range(k), [True] * k), x)
    second = f(pool.draw(range(k), [True] * k), x)
    folded = step(pool.draw(range(k), [True] * k), torch.ones(k * n)).view(k, n)  # (K * n,) copy-major
    for out in (first, second, folded):
        kept = out != 0
        values = torch.unique(out).tolist()
        assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p))
        sd = (p * (1 - p) / (k * n / 4)) ** 0.5
        for r in range(4):
            assert abs(kept[:, r::4].float().mean().item() - (1 - p)) < 6 * sd
        assert not torch.equal(kept[0], kept[1])
    assert not torch.equal(first != 0, second != 0)
    drop.eval()
    assert torch.equal(drop(x), x)


def test_each_copy_draws_its_own_stream_on_its_own_steps_only() -> None:
    """A copy's dropout values depend on its seed and position only: a pool of
    other jobs, or a step where another copy is masked or gone, gives it the
    same values; a masked copy draws nothing (its next step gets what its
    skipped step would have had); seed and position both key the stream."""
    from aanbench.batched.dropout import MaskPool, stream_seed

    cpu = torch.device("cpu")

    def pool(seeds):
        p = MaskPool(seeds, cpu)
        p.size = 1000
        return p

    alone = pool([stream_seed(7, 1)])
    a1, a2 = alone.draw([0], [True])[0], alone.draw([0], [True])[0]
    many = pool([stream_seed(s, i) for i, s in enumerate((5, 7, 9))])
    m1 = many.draw([0, 1, 2], [True, True, False])
    assert torch.equal(m1[1], a1) and not m1[2].any()  # the masked copy: zeros, nothing drawn
    m2 = many.draw([1, 2], [True, True])  # copy 0 stopped and was removed
    assert torch.equal(m2[0], a2)
    fresh = pool([stream_seed(s, i) for i, s in enumerate((5, 7, 9))])
    assert torch.equal(m2[1], fresh.draw([2], [True])[0])  # job 2's first draw, one step later
    assert len({stream_seed(7, 0), stream_seed(7, 1), stream_seed(8, 0)}) == 3


@pytest.mark.parametrize("d_k, causal", [(4, False), (4, True), (20, False), (20, True)])
def test_stacked_attention_is_scaled_dot_product_attention(d_k: int, causal: bool) -> None:
    """The folded stack's attention (samples innermost, broadcast products;
    one key position at a time for wider heads; one query position in the
    given layout), with its inputs apart or packed side by side, against
    torch's ``scaled_dot_product_attention`` per head, values and gradients."""
    from aanbench_plugins.models._attention import stacked_attention

    torch.manual_seed(0)
    n, t, heads = 7, 5, 2
    q, k, v = (torch.randn(n, t, heads * d_k, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(t, t, dtype=torch.bool).tril() if causal else None

    def split(x):
        return x.view(n, x.shape[1], heads, d_k).transpose(1, 2)

    for queries in (slice(None), slice(t - 1, t), slice(1, 2)):  # every position, the last, one early
        m = None if mask is None else mask[queries]
        qs = q[:, queries]
        want = torch.nn.functional.scaled_dot_product_attention(split(qs), split(k), split(v), attn_mask=m)
        want = want.transpose(1, 2).reshape(n, qs.shape[1], heads * d_k)
        kv = torch.cat([k, v], -1)
        forms = [stacked_attention(qs, k, v, heads, torch.nn.Identity(), m),
                 stacked_attention(qs, kv, None, heads, torch.nn.Identity(), m)]
        if queries == slice(None):
            forms.append(stacked_attention(torch.cat([q, k, v], -1), None, None, heads, torch.nn.Identity(), m))
        g = torch.randn_like(want)
        wg = torch.autograd.grad(want, [q, k, v], g)
        for got in forms:
            torch.testing.assert_close(got, want)
            for a, b in zip(torch.autograd.grad(got, [q, k, v], g), wg):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize("tq, causal", [(1, False), (5, True), (5, False)])
def test_stream_self_attention_is_the_attention_over_the_repeated_stream(tq: int, causal: bool) -> None:
    """The temporal decoder's first self-attention in a folded stack, computed
    from its input's structure (``x[n, t] = stream[n, t] + pe[t]``, the scalar
    repeated over ``d``), against the general attention over that ``x``: each
    copy its own weights, values and gradients (weights and stream)."""
    import copy

    from torch.func import functional_call

    from aanbench.batched.folding import fold_copies
    from aanbench_plugins.models._attention import MultiHeadAttention
    from aanbench_plugins.models._temporal_aan_net import positional_encoding

    torch.manual_seed(1)
    k, per, t, d, heads = 3, 4, 5, 12, 2
    copies = [MultiHeadAttention(d, heads, 0.0).double() for _ in range(k)]
    folded = copy.deepcopy(copies[0])
    fold_copies(folded)
    params = {n: torch.stack([dict(c.named_parameters())[n].detach() for c in copies]).requires_grad_(True)
              for n, _ in copies[0].named_parameters()}
    stream = torch.randn(k * per, t, dtype=torch.float64, requires_grad=True)
    pe = positional_encoding(t, d)
    mask = torch.ones(t, t, dtype=torch.bool).tril()[t - tq:] if causal else None


    class Stream(torch.nn.Module):  # forward = the folded module's stream_attention
        def __init__(self) -> None:
            super().__init__()
            self.m = folded

        def forward(self, *args):
            return self.m.stream_attention(*args)

    got = functional_call(Stream(), {f"m.{n}": v for n, v in params.items()}, (stream, pe, tq, mask))
    x = stream[..., None] + pe
    want = torch.cat([functional_call(c, {n: v[i] for n, v in params.items()},
                                      (x[i * per:(i + 1) * per, t - tq:], x[i * per:(i + 1) * per], mask))
                      for i, c in enumerate(copies)])
    assert got.shape == (k * per, tq, d)
    g = torch.randn_like(want)
    leaves = [stream, *params.values()]
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(want, leaves, g)):
        torch.testing.assert_close(a, b)
