"""Training time per epoch: Temporal (and Feature+Temporal) AttendAffectNet
against Feature AttendAffectNet, on the same COGNIMUSE-sized random samples.

One leave-one-movie-out fold of COGNIMUSE: 11 training movies x 360 5-s
segments (30 min each), the five paper features (ResNet-50 2048, FlowNetS
1024, I3D 1024, VGGish 128, emobase2010 1582). The last movie is the
validation split (about the runner's 10 %, whole movies), the other 10 are
fitted. Feature AAN takes single rows; the temporal models take windows of
5 consecutive segments built by the engine (labelled by the last, padded at
a movie's start: one window per segment, as the registry's cognimuse
experiments), so every model sees the same 3,600 fitting and 360 validation
samples. Paper hyper-parameters (batch 30; lr from the registry).

An epoch = one pass over the fitting samples plus the validation loss
(autoregressive for the temporal models: 5 passes of the decoder). Prints
seconds per epoch of each model and the ratios to Feature AAN.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/temporal_epoch_time.py [--epochs 3]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aanbench.plugin_manager import get_plugins
from aanbench.samples import build_samples
from aanbench.contracts import SequenceSpec

DIMS = [2048, 1024, 1024, 128, 1582]
MOVIES, SEGMENTS = 11, 360


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed per model (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    n = MOVIES * SEGMENTS
    values = [rng.normal(size=(n, d)).astype(np.float32) for d in DIMS]
    y_rows = np.tanh(rng.normal(size=n)).astype(np.float32)
    groups = [f"m{i // SEGMENTS:02d}" for i in range(n)]
    starts = np.array([5.0 * (i % SEGMENTS) for i in range(n)])
    ids = [f"{g}_{i % SEGMENTS:04d}" for i, g in enumerate(groups)]
    windows = build_samples(ids, groups, [""] * n, [""] * n, starts, starts + 5,
                            SequenceSpec(length=5, stride=1, scope="group", label="last", start="pad"))
    val = windows.group == f"m{MOVIES - 1:02d}"
    fit = ~val

    plugins = get_plugins()
    results: dict[str, float] = {}
    runs = [
        ("feature-aan", {"lr": 5e-4, "batch_size": 30}, False),
        ("temporal-aan", {"lr": 1e-3, "batch_size": 30}, True),
        ("feature-temporal-aan", {"lr": 1e-3, "batch_size": 30}, True),
    ]
    print(f"{MOVIES} movies x {SEGMENTS} segments, dims {DIMS}: {int(fit.sum())} fitting + {int(val.sum())} "
          f"validation samples, {args.epochs} epochs each")
    for name, params, sequences in runs:
        spec = plugins.model(name)
        model = spec.build({**params, "max_epochs": args.epochs, "patience": args.epochs + 1}, DIMS)
        y = windows.labels(y_rows)
        idx_fit, idx_val = np.flatnonzero(fit), np.flatnonzero(val)
        xf = windows.take(values, idx_fit, sequences=True)
        xv = windows.take(values, idx_val, sequences=True)
        extra = {}
        if not sequences:  # rows: the windows' last rows are exactly the segments
            xf, xv = [x[:, -1] for x in xf], [x[:, -1] for x in xv]
        else:
            extra = {"train_y_rows": y_rows[windows.members[idx_fit]], "val_y_rows": y_rows[windows.members[idx_val]]}
        t0 = time.perf_counter()
        report = model.fit(xf, y[idx_fit], xv, y[idx_val], seed=args.seed, **extra)
        wall = time.perf_counter() - t0
        results[name] = report.seconds / max(1, report.epochs)
        print(f"{name:22s} {results[name]:8.3f} s/epoch  ({report.epochs} epochs, {wall:.1f} s)")
    base = results["feature-aan"]
    for name in ("temporal-aan", "feature-temporal-aan"):
        print(f"ratio {name} / feature-aan: {results[name] / base:.2f}")


if __name__ == "__main__":
    main()
