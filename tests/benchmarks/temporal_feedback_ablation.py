"""Ablation of the temporal models' decoder feedback and depth (issue 24):
``feedback`` teacher / none / scheduled, and 1 vs 6 decoder layers, on two
synthetic datasets shaped like the paper's, several seeds.

- ``eimt16``: EIMT16-like. Independent excerpts, one label each
  (N(0, 0.465^2), the spread quoted in issue 24), each excerpt cut into 4
  sub-segments that all carry the excerpt's label (windows of 4 within one
  excerpt, labelled by the mean = that label); each sub-segment's features
  are a noisy linear image of the label.
- ``cognimuse``: COGNIMUSE-like. Movies of consecutive 5-s segments whose
  label follows an AR(1) process (phi 0.97, stationary sd 0.4); each
  segment's features a noisy linear image of its label; windows of 5
  consecutive segments labelled by the last, the first 4 of a movie padded
  with copies of its first segment (as the registry's cognimuse setting).

Whole excerpts / movies go to the test set; validation (early stopping) is
carved from the training windows. Each fit is the plugin's network
(:class:`TemporalAANNet`) trained by aanbench's sequential trainer
(:func:`aanbench.training.train_torch`, Adam, MSE + (1 - r), early
stopping, best epoch) with the paper's dropout (0.5); test predictions are
autoregressive (``teacher`` / ``scheduled``) or fed the constant start value
(``none``), as in the plugin. The teacher runs on ``eimt16`` bypass the
plugin's refusal (it refuses exactly this: the fed value is the target) to
measure what the refusal prevents.

Run (prints a Markdown table; ``--quick`` for a smoke run)::

    PYTHONPATH=.pyshim python tests/benchmarks/temporal_feedback_ablation.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

from aanbench.training import TrainConfig, predict_torch, train_torch
from aanbench_plugins.models._temporal_aan_net import TemporalAANNet

DIMS = (6, 3)


def _features(y: np.ndarray, rng: np.random.Generator, noise: float) -> list[np.ndarray]:
    """Two features per row, each a noisy linear image of the row's label."""
    out = []
    for d in DIMS:
        w = rng.normal(size=d)
        out.append((y[:, None] * w[None, :] + noise * rng.normal(size=(len(y), d))).astype(np.float32))
    return out


def eimt16_like(seed: int, n_excerpts: int = 240, n_test: int = 80, noise: float = 1.0):
    """Rows (4 per excerpt), windows ``(n, 4)``, window labels, row labels, test flags."""
    rng = np.random.default_rng(1000 + seed)
    y_ex = rng.normal(scale=0.465, size=n_excerpts).astype(np.float32)
    y_rows = np.repeat(y_ex, 4)
    feats = _features(y_rows, rng, noise)
    windows = np.arange(4 * n_excerpts).reshape(n_excerpts, 4)
    test = np.zeros(n_excerpts, bool)
    test[rng.permutation(n_excerpts)[:n_test]] = True
    return feats, windows, y_ex, y_rows, test


def cognimuse_like(seed: int, movies: int = 6, length: int = 160, test_movies: int = 2, phi: float = 0.97,
                   sd: float = 0.4, noise: float = 1.5):
    rng = np.random.default_rng(2000 + seed)
    ys, windows, test, base = [], [], [], 0
    for m in range(movies):
        y = np.empty(length)
        y[0] = rng.normal(scale=sd)
        for t in range(1, length):
            y[t] = phi * y[t - 1] + rng.normal(scale=sd * np.sqrt(1 - phi**2))
        ys.append(y)
        run = np.concatenate([np.repeat(0, 4), np.arange(length)]) + base
        windows += [run[e - 4 : e + 1] for e in range(4, len(run))]
        test += [m >= movies - test_movies] * length
        base += length
    y_rows = np.concatenate(ys).astype(np.float32)
    feats = _features(y_rows, rng, noise)
    windows = np.asarray(windows)
    return feats, windows, y_rows[windows[:, -1]], y_rows, np.asarray(test)


def fit_predict(data, feedback: str, layers: int, seed: int, max_epochs: int, patience: int):
    feats, windows, y, y_rows, test = data
    train = np.flatnonzero(~test)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(train)
    n_val = max(2, len(train) // 10)
    val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    rows_fit = np.unique(windows[fit])
    mean = [f[rows_fit].mean(0) for f in feats]
    std = [f[rows_fit].std(0) + 1e-8 for f in feats]
    xs = [((f - m) / s).astype(np.float32) for f, m, s in zip(feats, mean, std)]

    def take(idx):
        return [x[windows[idx]] for x in xs]

    torch.manual_seed(seed)
    net = TemporalAANNet(list(DIMS), layers=layers, start_value=float(y[fit].mean()), feedback=feedback,
                         anneal_epochs=max(1, max_epochs // 3))
    extra = None if feedback == "none" else y_rows[windows[fit]].astype(np.float32)
    cfg = TrainConfig(lr=0.002, max_epochs=max_epochs, patience=patience, batch_size=30)
    rep = train_torch(net, take(fit), y[fit], take(val), y[val], cfg, seed, train_extra=extra)
    pred = predict_torch(net, take(np.flatnonzero(test)))
    yt = y[test]
    mse = float(np.mean((pred - yt) ** 2))
    r = float(np.corrcoef(pred, yt)[0, 1]) if pred.std() > 0 else float("nan")
    return {"mse": mse, "r": r, "pred_sd": float(pred.std()), "true_sd": float(yt.std()),
            "var": float(yt.var()), "epochs": rep.best_epoch}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="one seed, 6 epochs (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.max_epochs, args.patience = [0], 6, 3
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    makers = {"eimt16-like": eimt16_like, "cognimuse-like": cognimuse_like}
    rows = []
    for dname, make in makers.items():
        for layers in (1, 6):
            for feedback in ("teacher", "none", "scheduled"):
                res = [fit_predict(make(s), feedback, layers, s, args.max_epochs, args.patience) for s in args.seeds]
                rows.append((dname, layers, feedback, res))
                print(f"# {dname} layers={layers} {feedback}: "
                      f"mse {np.mean([r['mse'] for r in res]):.3f} ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
    print(f"Seeds {args.seeds}; max_epochs {args.max_epochs}, patience {args.patience}; "
          f"{time.perf_counter() - t0:.0f} s on {platform.machine()} ({os.cpu_count()} CPUs), torch "
          f"{torch.__version__}, one thread.\n")
    print("| data | decoder layers | feedback | test MSE (mean ± sd) | Pearson r | prediction sd / true sd "
          "| test-label variance | best epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for dname, layers, feedback, res in rows:
        def ms(key):
            v = np.array([r[key] for r in res], dtype=float)
            return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"
        ratio = np.mean([r["pred_sd"] / r["true_sd"] for r in res])
        print(f"| {dname} | {layers} | {feedback} | {ms('mse')} | {ms('r')} | {ratio:.2f} | "
              f"{np.mean([r['var'] for r in res]):.3f} | {np.mean([r['epochs'] for r in res]):.0f} |")


if __name__ == "__main__":
    main()
