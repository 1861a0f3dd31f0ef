"""Coverage of the leaderboard's 95% intervals, and how often `vs best` calls
two equal models different (issue 23), by simulation.

Each simulated test set: 12 movies x 360 consecutive segments; the target
and each model's error are AR(1) series (phi 0.97) within a movie. Two
scenarios, SIMS simulations each:

- ``homogeneous``: p = 0.6 y + 0.8 e (unit variances): true pooled r 0.6,
  true MSE 0.8;
- ``heterogeneous``: every movie has its own level of the target
  (a_m ~ N(0, 0.5^2)) and its own bias of the model (c_m ~ N(0, 0.3^2)):
  y = a_m + u, p = 0.6 y + c_m + sqrt(0.71) e: true pooled r 0.6
  (over the population of movies), true MSE 1.0.

For each: the interval of r and of MSE from :func:`aanbench.stats.interval`
(what the leaderboard shows), and a second model, equal to the first by
construction (its own error series and biases), compared with
:func:`aanbench.stats.paired_test` and :func:`aanbench.stats.holm`, as the
leaderboard's `vs best` column does (MSE, Holm-adjusted p < 0.05).

Run: ``python tests/benchmarks/interval_coverage.py [--sims 2000] [--seed 0]``.
The last line reads ``coverage_r=<x> coverage_mse=<x> false_positive=<x>``
(pooled over both scenarios). Goal: coverages 0.93-0.97, false positives
at most 0.06.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.signal import lfilter

from aanbench.stats import clusters, holm, interval, paired_test

MOVIES, SEGS, PHI, RHO = 12, 360, 0.97, 0.6
HET = {"a_sd": 0.5, "c_sd": 0.3, "b": 0.6, "e_sd": float(np.sqrt(0.71))}


def ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float = PHI) -> np.ndarray:
    """Stationary unit-variance AR(1) series along the last axis, all at once."""
    e = rng.normal(size=shape)
    x0 = rng.normal(size=shape[:-1] + (1,))
    return lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], e, axis=-1, zi=phi * x0)[0]


def simulate(rng: np.random.Generator, sims: int, heterogeneous: bool) -> tuple[np.ndarray, ...]:
    """``(sims, MOVIES * SEGS)`` target and two equal models' predictions."""
    u, ea, eb = (ar1(rng, (sims, MOVIES, SEGS)) for _ in range(3))
    if not heterogeneous:
        y = u
        pa, pb = RHO * y + np.sqrt(1 - RHO**2) * ea, RHO * y + np.sqrt(1 - RHO**2) * eb
    else:
        a = rng.normal(0, HET["a_sd"], size=(sims, MOVIES, 1))
        ca, cb = (rng.normal(0, HET["c_sd"], size=(sims, MOVIES, 1)) for _ in range(2))
        y = a + u
        pa = HET["b"] * y + ca + HET["e_sd"] * ea
        pb = HET["b"] * y + cb + HET["e_sd"] * eb
    shape = (sims, MOVIES * SEGS)
    return y.reshape(shape), pa.reshape(shape), pb.reshape(shape)


def truth(heterogeneous: bool) -> tuple[float, float]:
    """(pooled r, MSE) over the population of movies."""
    if not heterogeneous:
        return RHO, (1 - RHO) ** 2 + (1 - RHO**2)
    vy = 1 + HET["a_sd"] ** 2
    b, ve = HET["b"], HET["e_sd"] ** 2 + HET["c_sd"] ** 2
    return b * vy / np.sqrt(vy * (b * b * vy + ve)), (1 - b) ** 2 * vy + ve


def run(sims: int, seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(MOVIES), SEGS).astype(str)
    cl = clusters(len(groups), groups)
    out = {}
    for het in (False, True):
        y, pa, pb = simulate(rng, sims, het)
        r_true, mse_true = truth(het)
        hit_r = hit_mse = fp = 0
        for s in range(sims):
            iv = interval(y[s], pa[s], cl=cl)
            lo, hi = iv["pearson_r"]["ci"]
            hit_r += lo <= r_true <= hi
            lo, hi = iv["mse"]["ci"]
            hit_mse += lo <= mse_true <= hi
            test = paired_test(y[s], pa[s], pb[s], cl=cl)
            adjusted = holm([test["mse"]["p"]])[0]
            fp += adjusted is not None and adjusted < 0.05
        out["heterogeneous" if het else "homogeneous"] = {
            "coverage_r": hit_r / sims, "coverage_mse": hit_mse / sims, "false_positive": fp / sims}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sims", type=int, default=2000, help="simulations per scenario (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = run(args.sims, args.seed)
    for name, r in res.items():
        print(f"{name}: " + " ".join(f"{k}={v:.3f}" for k, v in r.items()))
    pooled = {k: np.mean([r[k] for r in res.values()]) for k in ("coverage_r", "coverage_mse", "false_positive")}
    print(f"{2 * args.sims} simulations ({MOVIES} movies x {SEGS} segments, phi {PHI}) in "
          f"{time.perf_counter() - t0:.1f} s")
    print(" ".join(f"{k}={v:.3f}" for k, v in pooled.items()))


if __name__ == "__main__":
    main()
