"""Checks of training on a torch device (``--device cuda``) for a machine that
has one; this project's CI has none (tests/test_batched.py's CUDA test is
skipped there, and needs Zarr, which a bare GPU machine may lack).

For Feature, Temporal and Feature+Temporal AttendAffectNet, without dropout,
on small random data (three fits of 61, 80 and 97 samples, each with its own
standardisation, seed and validation set; one fit's validation labels are
noise so it stops early):

1. the batched stack on the device, twice: bit for bit the same weights;
2. the stack on the device against the stack on the CPU: same stopping and
   best epochs, predictions within ``--atol`` (default 2e-4, the tolerance
   of tests/test_batched.py for a stacked copy against its sequential twin);
3. ``train_torch`` (a model's own ``fit``) on the device, twice (bit for bit)
   and against the CPU (within ``--atol``);
4. prediction on the device against prediction on the CPU.

Prints one line per check and exits 1 if any fails. Needs only numpy, torch,
pluggy and aanbench. Run: ``python tests/benchmarks/device_check.py [--device cuda]``
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("AANBENCH_PLUGINS", "feature_aan,temporal_aan")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from aanbench.batched import BatchJob, train_batched  # noqa: E402
from aanbench.plugin_manager import get_plugins  # noqa: E402
from aanbench.training import resolve_device  # noqa: E402

NO_DROPOUT = {"feature-aan": {"dropout": 0.0, "head_dropout": 0.0},
              "temporal-aan": {"dropout": 0.0, "inner_dropout": 0.0},
              "feature-temporal-aan": {"dropout": 0.0, "inner_dropout": 0.0, "feature_dropout": 0.0}}


def _data(model: str, params: dict, device: str | None):
    """Jobs (batched) and single models (sequential) on random data."""
    rng = np.random.default_rng(0)
    n, T = 160, 3
    rows = [rng.normal(size=(n, 6)).astype(np.float32), (rng.normal(size=(n, 3)) * 20 + 5).astype(np.float32)]
    y = np.tanh(rows[0][:, 0] + 0.03 * rows[1][:, 1]).astype(np.float32)
    noise = np.random.default_rng(9).normal(size=n).astype(np.float32)
    windows = np.stack([np.clip(np.arange(n) - T + 1 + t, 0, None) for t in range(T)], 1)
    spec = get_plugins().model(model)
    seqs = spec.input == "sequences"
    members = windows if seqs else np.arange(n)
    jobs, singles = [], []
    for k, (size, seed) in enumerate(zip((61, 80, 97), (3, 4, 5))):
        order = np.random.default_rng(100 + k).permutation(n)
        fit, val = np.sort(order[:size]), np.sort(order[-40:])
        yv = noise if k == 1 else y
        mean, std = [r[fit].mean(0) for r in rows], [r[fit].std(0) for r in rows]
        xs = [((r - m) / s).astype(np.float32) for r, m, s in zip(rows, mean, std)]
        labels = {"train_y_rows": y[windows[fit]]} if seqs else {}
        m = spec.build(params, [6, 3])
        jobs.append(BatchJob(m.torch_fit(y[fit], seed=seed, **labels), seed, rows, mean, std, members[fit], y[fit],
                             members[val], yv[val]))
        one = spec.build(params, [6, 3])
        one.device = device or "cpu"
        singles.append((one, [x[members[fit]] for x in xs], y[fit], [x[members[val]] for x in xs], yv[val], seed,
                        labels, [x[members] for x in xs]))
    return jobs, singles


def _weights(net) -> list[torch.Tensor]:
    return [v.detach().clone() for v in net.state_dict().values()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--atol", type=float, default=2e-4)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    dev = str(resolve_device(args.device))
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.startswith('cuda') else 'CPU'}), "
          f"torch {torch.__version__}")
    failed = 0

    def check(ok: bool, what: str) -> None:
        nonlocal failed
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)

    for model in NO_DROPOUT:
        params = {"max_epochs": args.epochs, "patience": 3, "batch_size": 16, "lr": 0.01 if model != "feature-temporal-aan"
                  else 0.002, **NO_DROPOUT[model]}
        cpu, singles = _data(model, params, None)
        gpu1, _ = _data(model, params, dev)
        gpu2, _ = _data(model, params, dev)
        rc, r1, r2 = train_batched(cpu), train_batched(gpu1, device=dev), train_batched(gpu2, device=dev)
        same = all(torch.equal(a, b) for j1, j2 in zip(gpu1, gpu2)
                   for a, b in zip(_weights(j1.torch_fit.net), _weights(j2.torch_fit.net)))
        check(same and [(r.epochs, r.best_epoch) for r in r1] == [(r.epochs, r.best_epoch) for r in r2],
              f"{model}: stack on {dev} twice, same weights bit for bit")
        check([(r.epochs, r.best_epoch) for r in r1] == [(r.epochs, r.best_epoch) for r in rc],
              f"{model}: stack on {dev} and on cpu stop at the same epochs "
              f"{[(r.epochs, r.best_epoch) for r in r1]} / {[(r.epochs, r.best_epoch) for r in rc]}")
        diff = 0.0
        for a, c, s in zip(gpu1, cpu, singles):
            with torch.no_grad():
                got = a.torch_fit.net(*map(torch.from_numpy, s[7])).numpy()
                want = c.torch_fit.net(*map(torch.from_numpy, s[7])).numpy()
            diff = max(diff, float(np.abs(got - want).max()))
        check(diff <= args.atol, f"{model}: stack on {dev} vs on cpu, largest prediction difference {diff:.2e}")
        # the one-at-a-time trainer and prediction
        seq = []
        for rep in range(2):
            _, s2 = _data(model, params, dev)
            one, xf, yf, xv, yv, seed, labels, xall = s2[0]
            r = one.fit(xf, yf, xv, yv, seed=seed, **labels)
            seq.append((one, r, xall))
        _, s0 = _data(model, params, None)
        cpu_one, xf, yf, xv, yv, seed, labels, xall = s0[0]
        rcpu = cpu_one.fit(xf, yf, xv, yv, seed=seed, **labels)
        (g1, rg1, _), (g2, rg2, _) = seq
        check(all(torch.equal(a, b) for a, b in zip(_weights(g1.net), _weights(g2.net))),
              f"{model}: train_torch on {dev} twice, same weights bit for bit")
        check(all(v.device.type == "cpu" for v in g1.net.state_dict().values()),
              f"{model}: the network trained on {dev} is back on the cpu")
        p_dev, p_cpu = g1.predict(xall), cpu_one.predict(xall)
        check((rg1.epochs, rg1.best_epoch) == (rcpu.epochs, rcpu.best_epoch)
              and float(np.abs(p_dev - p_cpu).max()) <= args.atol,
              f"{model}: train_torch on {dev} vs cpu, epochs {(rg1.epochs, rg1.best_epoch)} / "
              f"{(rcpu.epochs, rcpu.best_epoch)}, largest prediction difference {np.abs(p_dev - p_cpu).max():.2e}")
        g1.device = "cpu"
        p_on_cpu = g1.predict(xall)
        check(float(np.abs(p_dev - p_on_cpu).max()) <= 1e-5,
              f"{model}: one network predicting on {dev} and on cpu, difference {np.abs(p_dev - p_on_cpu).max():.2e}")
    print("all checks passed" if not failed else f"{failed} check(s) FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
