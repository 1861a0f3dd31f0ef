"""Batched against one-at-a-time training of all folds and both targets of a
run, at COGNIMUSE size, for Feature and Temporal AttendAffectNet.

Random features of the paper's size: 12 movies x 360 5-s segments, the five
paper features (ResNet-50 2048, FlowNetS 1024, I3D 1024, VGGish 128,
emobase2010 1582). Leave-one-movie-out: 12 folds x 2 targets (valence,
arousal) = 24 fits; in each fold one training movie is the validation split
(the runner's 10 %, whole movies) and 10 movies (3,600 samples) are fitted,
each fit with its own standardisation. Feature AAN takes single rows, the
temporal model windows of 5 segments (padded at a movie's start), with the
teacher-forcing labels. Paper hyper-parameters (batch 30, lr from the
registry), ``--epochs`` epochs (no early stopping).

Sequential: each fit through the model's ``fit`` (today's shared trainer,
``aanbench.training.train_torch``) on its standardised inputs; ``--seq-fits
N`` times only N of the 24 fits and scales the time by 24/N (the fits have
the same size; said in the output). Batched: the 24 fits as one stack
(``aanbench.batched.train_batched``). Data preparation is not timed on either
side (the batched path's per-step gathering and standardising is).

``--device cuda`` runs both paths on a GPU (each fit's inputs, or the
stack's feature arrays, moved there once; timed with
``torch.cuda.synchronize``); ``--threads N`` gives the batched stack's first
layer N CPU threads (``train_batched(threads=N)``: the same numbers, more
cores; the sequential baseline stays today's trainer, one thread).
``--check-repeat`` trains the stack a second time and says whether every
copy's weights came out bit for bit the same (seeded determinism on the
device). Needs only numpy, torch, pluggy and aanbench (the two model plugins
are the only plugins loaded), so it runs on a machine without zarr, Ray,
PyAV or openSMILE.

``--baseline-tree DIR`` also times the sequential path with the aanbench
code of another checkout (``git worktree add DIR 05cd9c0``: the trainer as
it stood when the batched trainer was asked for, before any of the speed
work, which also made the one-at-a-time networks faster) and prints the
batched stack's ratio to it as well, in the same run; that tree's code runs
in a child process (CPU only).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/batched_training_ratio.py [--epochs 2] [--seq-fits 24]
[--device cpu|cuda] [--threads 1] [--check-repeat] [--baseline-tree DIR]``
"""

from __future__ import annotations

import argparse
import os
import time

# only the two model plugins: the others import PyAV, Zarr, ... (absent on a bare GPU machine)
os.environ.setdefault("AANBENCH_PLUGINS", "feature_aan,temporal_aan")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from aanbench.contracts import SequenceSpec  # noqa: E402
from aanbench.plugin_manager import get_plugins  # noqa: E402
from aanbench.samples import build_samples  # noqa: E402

DIMS = [2048, 1024, 1024, 128, 1582]
MOVIES, SEGMENTS = 12, 360
TARGETS = ("valence", "arousal")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per fit (default 2)")
    ap.add_argument("--seq-fits", type=int, default=24, help="sequential fits timed (of 24; default all)")
    ap.add_argument("--models", default="feature-aan,temporal-aan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="torch device of both paths: cpu (default), cuda, cuda:N")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of the batched stack's first layer (default 1)")
    ap.add_argument("--check-repeat", action="store_true",
                    help="train the stack twice and say whether the weights are bit for bit the same")
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="also time the sequential path with the code of this checkout (CPU)")
    ap.add_argument("--sequential-only", action="store_true", help=argparse.SUPPRESS)  # the baseline child
    args = ap.parse_args()
    if args.sequential_only:
        device = torch.device("cpu")
    else:
        from aanbench.training import resolve_device

        device = resolve_device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rng = np.random.default_rng(args.seed)
    n = MOVIES * SEGMENTS
    rows = [rng.normal(size=(n, d)).astype(np.float32) for d in DIMS]
    labels = {t: np.tanh(rng.normal(size=n)).astype(np.float32) for t in TARGETS}
    groups = [f"m{i // SEGMENTS:02d}" for i in range(n)]
    starts = np.array([5.0 * (i % SEGMENTS) for i in range(n)])
    ids = [f"{g}_{i % SEGMENTS:04d}" for i, g in enumerate(groups)]
    windows = build_samples(ids, groups, [""] * n, [""] * n, starts, starts + 5,
                            SequenceSpec(length=5, stride=1, scope="group", label="last", start="pad"))
    movie = np.array([int(g[1:]) for g in windows.group])
    fits = []  # (target, fit samples, validation samples, mean, std)
    for t in TARGETS:
        for f in range(MOVIES):
            val_movie = (f + 1) % MOVIES
            fit = np.flatnonzero((movie != f) & (movie != val_movie))
            val = np.flatnonzero(movie == val_movie)
            used = windows.rows(fit)
            mean = [r[used].mean(0) for r in rows]
            std = [np.where(s > 1e-8, s, 1.0).astype(np.float32) for s in (r[used].std(0) for r in rows)]
            fits.append((t, fit, val, mean, std))
    if args.sequential_only:  # the baseline tree's trainer: seconds per model as JSON
        plugins = get_plugins()
        print(json.dumps({name: sequential_seconds(plugins.model(name), name, args, fits, windows, rows, labels,
                                                   device, lambda: None)
                          for name in args.models.split(",")}))
        return
    baseline = run_baseline_tree(args) if args.baseline_tree else None
    load = os.getloadavg()
    print(f"{MOVIES} movies x {SEGMENTS} segments, dims {DIMS}; {len(fits)} fits (12 folds x 2 targets) of "
          f"{len(fits[0][1])} fitting + {len(fits[0][2])} validation samples; {args.epochs} epochs each; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({where}); torch {torch.__version__}; sequential: today's trainer (train_torch, "
          f"1 CPU thread on the CPU); batched stack: {args.threads} CPU thread(s) in its first layer, else 1")

    from aanbench.batched import BatchJob, train_batched

    plugins = get_plugins()
    for name in args.models.split(","):
        spec = plugins.model(name)
        sequences = spec.input == "sequences"
        p = {**PARAMS[name], "max_epochs": args.epochs, "patience": args.epochs + 1}
        members = windows.members if sequences else windows.members[:, -1]

        def extra(t, idx):
            return {"train_y_rows": labels[t][windows.members[idx]]} if sequences else {}

        # sequential: today's trainer, one fit at a time
        n_seq = max(1, min(args.seq_fits, len(fits)))
        seq_total = sequential_seconds(spec, name, args, fits, windows, rows, labels, device, sync)

        # batched: all 24 fits in one stack
        def stack() -> tuple[float, list[BatchJob]]:
            sync()
            t0 = time.perf_counter()
            jobs = []
            for t, fit, val, mean, std in fits:
                y = windows.labels(labels[t])
                tf = spec.build(p, DIMS).torch_fit(y[fit], seed=args.seed, **extra(t, fit))
                jobs.append(BatchJob(tf, args.seed, rows, mean, std, members[fit], y[fit], members[val], y[val]))
            train_batched(jobs, device=device, threads=args.threads)
            sync()
            return time.perf_counter() - t0, jobs

        batched_s, jobs = stack()
        how = "measured" if n_seq == len(fits) else f"{n_seq} fits measured, x {len(fits) / n_seq:g}"
        print(f"{name:14s} sequential {seq_total:8.1f} s ({how}; {seq_total / len(fits) / args.epochs:.2f} "
              f"s/epoch/fit)  batched {batched_s:8.1f} s  ratio {seq_total / batched_s:.2f}x", flush=True)
        if baseline is not None:
            print(f"{name:14s} sequential at {args.baseline_tree} {baseline[name]:8.1f} s ({how})  "
                  f"ratio of the batched stack to it {baseline[name] / batched_s:.2f}x", flush=True)
        if args.check_repeat:
            again_s, again = stack()
            same = all(torch.equal(a, b) for j1, j2 in zip(jobs, again)
                       for a, b in zip(j1.torch_fit.net.state_dict().values(), j2.torch_fit.net.state_dict().values()))
            print(f"{name:14s} batched again {again_s:8.1f} s: weights of all {len(jobs)} copies "
                  f"{'bit for bit the same' if same else 'DIFFER'}", flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


PARAMS = {"feature-aan": {"lr": 5e-4, "batch_size": 30}, "temporal-aan": {"lr": 1e-3, "batch_size": 30}}


def sequential_seconds(spec, name, args, fits, windows, rows, labels, device, sync) -> float:
    """Seconds of the 24 fits one at a time through the model's ``fit`` (the
    first ``--seq-fits`` timed, scaled to 24)."""
    sequences = spec.input == "sequences"
    p = {**PARAMS[name], "max_epochs": args.epochs, "patience": args.epochs + 1}
    members = windows.members if sequences else windows.members[:, -1]
    n_seq = max(1, min(args.seq_fits, len(fits)))
    seq_s = 0.0
    for t, fit, val, mean, std in fits[:n_seq]:
        y = windows.labels(labels[t])
        xs = [((r - m) / s).astype(np.float32) for r, m, s in zip(rows, mean, std)]
        xf = [x[members[fit]] for x in xs]
        xv = [x[members[val]] for x in xs]
        del xs
        model = spec.build(p, DIMS)
        model.device = str(device)
        extra = {"train_y_rows": labels[t][windows.members[fit]]} if sequences else {}
        sync()
        t0 = time.perf_counter()
        model.fit(xf, y[fit], xv, y[val], seed=args.seed, **extra)
        sync()
        seq_s += time.perf_counter() - t0
        del xf, xv
    return seq_s * len(fits) / n_seq


def run_baseline_tree(args) -> dict[str, float]:
    """The sequential seconds of each model with the code of ``--baseline-tree``
    (its ``aanbench`` and ``plugins`` put first on a child's import path, as
    ``aanbench`` and ``aanbench_plugins``)."""
    tree = args.baseline_tree.resolve()
    if not (tree / "aanbench" / "__init__.py").is_file() or not (tree / "plugins").is_dir():
        raise SystemExit(f"--baseline-tree {tree}: not an aanbench checkout (needs aanbench/ and plugins/)")
    with tempfile.TemporaryDirectory(prefix="aanbench-baseline-") as tmp:
        (Path(tmp) / "aanbench").symlink_to(tree / "aanbench")
        (Path(tmp) / "aanbench_plugins").symlink_to(tree / "plugins")
        env = {**os.environ, "PYTHONPATH": tmp + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, os.path.abspath(__file__), "--sequential-only", "--epochs", str(args.epochs),
               "--seq-fits", str(args.seq_fits), "--models", args.models, "--seed", str(args.seed)]
        done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"--baseline-tree {tree}: the sequential run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
