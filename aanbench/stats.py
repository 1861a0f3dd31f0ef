"""Intervals and comparisons that hold with few movies (issue 23).

Segments of one movie are alike, so the unit of independent evidence is
the movie (the *cluster*), and a test set has few of them (12 for
COGNIMUSE). With 12 clusters a percentile bootstrap of whole movies
covers the truth about 90% of the time at a nominal 95%; here instead:

- **r and CCC**: Fisher z of the estimate, a leave-one-cluster-out
  (jackknife) standard error of z, t quantiles with G - 1 degrees of
  freedom, transformed back;
- **MSE**: the jackknife standard error of log MSE and t_{G-1}, transformed
  back (the MSE of a few movies is skewed: on its own scale the interval
  covered about 91% in the simulation, on the log scale about 94%).

Comparisons (:func:`paired_test`) take the difference of the two models'
statistics on the same items, Fisher z for r and CCC and the MSE itself
(a difference of MSEs is a mean of per-movie differences, symmetric when the
models are equal), with the jackknife standard error of the difference
(the same movie left out of both) and t_{G-1}; :func:`holm` adjusts the
p-values of a table's rows for their number.

Several seeds of one configuration make one statistic, the mean over seeds
(of z for r and CCC); its standard error adds the seeds' own spread
(variance over seeds / number of seeds) to the jackknife over movies of
the seed mean, so the interval accounts for both.

Below :data:`MIN_CLUSTERS` movies the same method is used and called
approximate; below 3 movies (or with no movie known) single items are the
units, which treats them as independent: those intervals are too narrow
wherever items of one movie are alike.

Everything is computed from per-cluster sufficient statistics
(:func:`aanbench.metrics._unit_sums`), so leaving one cluster out is a
subtraction; ``tests/benchmarks/interval_coverage.py`` measures coverage
and the false-positive rate of :func:`paired_test` through these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

from aanbench.metrics import METRICS, _metrics_from_sums, _unit_sums

MIN_CLUSTERS = 8  # below this, intervals are marked approximate
MIN_GROUPS = 3  # below this, items are the units (treated as independent)
LEVEL = 0.95
FISHER = ("pearson_r", "ccc")  # metrics on the Fisher z scale
_ZCLIP = 1 - 1e-12


@dataclass(frozen=True)
class Clusters:
    """The resampling units of one set of predictions: ``codes`` (one per
    prediction, 0 .. k-1), ``k`` units, ``unit`` ``"movies"`` or ``"items"``,
    ``approximate`` (fewer than :data:`MIN_CLUSTERS` movies)."""

    codes: np.ndarray
    k: int
    unit: str
    approximate: bool

    @property
    def df(self) -> int:
        return max(self.k - 1, 1)

    def describe(self) -> str:
        """One plain sentence for a leaderboard header."""
        if self.unit == "items":
            return (f"items treated as independent ({self.k} items, t with {self.df} df): no or fewer than "
                    f"{MIN_GROUPS} source movies are known, so these intervals are too narrow wherever items of "
                    "one movie are alike")
        s = f"leave-one-movie-out jackknife over {self.k} movies, t with {self.df} df"
        if self.approximate:
            s += f" (approximate: fewer than {MIN_CLUSTERS} movies, the standard error itself is uncertain)"
        return s


def clusters(n: int, groups: np.ndarray | None) -> Clusters:
    """The units for ``n`` predictions with these group labels (``None`` or
    empty labels: no movie known)."""
    if groups is not None:
        g = np.asarray(groups).astype(str)
        if len(g) != n:
            raise ValueError(f"{len(g)} group labels for {n} predictions")
        if (g == "").any() or (g == "None").any():
            groups = None
        else:
            _, codes = np.unique(g, return_inverse=True)
            k = int(codes.max()) + 1 if n else 0
            if k >= MIN_GROUPS:
                return Clusters(codes.reshape(-1), k, "movies", k < MIN_CLUSTERS)
    return Clusters(np.arange(n), n, "items", False)


def _as_seeds(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return p[None, :] if p.ndim == 1 else p


def _transform(name: str, v: np.ndarray) -> np.ndarray:
    """The scale of the interval: Fisher z for r and CCC, log for MSE."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if name in FISHER:
            return np.arctanh(np.clip(v, -_ZCLIP, _ZCLIP))
        return np.log(v)


def _back(name: str, v: float) -> float:
    return float(np.tanh(v)) if name in FISHER else float(np.exp(v))


def _loo(y: np.ndarray, P: np.ndarray, cl: Clusters) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per seed: the full-data metric ``(S,)`` and leave-one-cluster-out
    metrics ``(S, k)``, for every metric."""
    full: dict[str, list] = {m: [] for m in METRICS}
    loo: dict[str, list] = {m: [] for m in METRICS}
    for p in P:
        sums = _unit_sums(y, p, cl.codes)  # (k, 7): every code 0 .. k-1 occurs
        total = sums.sum(axis=0, keepdims=True)
        f = _metrics_from_sums(total)
        lo = _metrics_from_sums(total - sums)
        for m in METRICS:
            full[m].append(f[m][0])
            loo[m].append(lo[m])
    return ({m: np.array(v, dtype=np.float64) for m, v in full.items()},
            {m: np.array(v, dtype=np.float64).reshape(len(P), cl.k) for m, v in loo.items()})


def _jack_var(loo_mean: np.ndarray) -> float:
    """Jackknife variance from the ``k`` leave-one-out values."""
    k = len(loo_mean)
    return float((k - 1) / k * np.sum((loo_mean - loo_mean.mean()) ** 2))


def _seed_var(full_t: np.ndarray) -> float:
    """Variance of the seed mean due to the seeds (0 for one seed)."""
    return float(full_t.var(ddof=1) / len(full_t)) if len(full_t) > 1 else 0.0


def interval(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None, *, level: float = LEVEL,
             cl: Clusters | None = None) -> dict[str, Any]:
    """Metrics with small-cluster intervals.

    ``p``: predictions ``(n,)``, or ``(S, n)`` for S seeds of one
    configuration on the same items (rows aligned with ``y``). Returns
    ``{"n", "seeds", "unit", "k", "df", "approximate", "method",
    <metric>: {"value": mean over seeds, "seed_sd": sd over seeds or None,
    "ci": [lo, hi] or None, "se": standard error on the interval's scale}}``.
    """
    y = np.asarray(y, dtype=np.float64)
    P = _as_seeds(p)
    n = len(y)
    cl = cl or clusters(n, groups)
    out: dict[str, Any] = {"n": int(n), "seeds": int(len(P)), "unit": cl.unit, "k": int(cl.k), "df": cl.df,
                           "approximate": cl.approximate, "method": cl.describe()}
    if n == 0:
        for m in METRICS:
            out[m] = {"value": None, "seed_sd": None, "ci": None, "se": None}
        return out
    full, loo = _loo(y, P, cl)
    tq = float(_st.t.ppf((1 + level) / 2, cl.df))
    for m in METRICS:
        vals = full[m]
        entry: dict[str, Any] = {"value": _f(vals.mean()) if np.isfinite(vals).all() else None,
                                 "seed_sd": _f(vals.std(ddof=1)) if len(vals) > 1 and np.isfinite(vals).all()
                                 else None, "ci": None, "se": None}
        ft, lt = _transform(m, vals), _transform(m, loo[m])
        if n >= 3 and cl.k >= 2 and np.isfinite(ft).all() and np.isfinite(lt).all():
            se = float(np.sqrt(_jack_var(lt.mean(axis=0)) + _seed_var(ft)))
            c = float(ft.mean())
            lo, hi = _back(m, c - tq * se), _back(m, c + tq * se)
            entry["ci"], entry["se"] = [lo, hi], se
        out[m] = entry
    return out


def paired_test(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, groups: np.ndarray | None = None, *,
                cl: Clusters | None = None) -> dict[str, Any]:
    """Two-sided test of ``metric(a) == metric(b)`` on the same items (rows
    aligned with ``y``; ``(S, n)`` for several seeds): the difference of the
    seed means (of Fisher z for r and CCC; MSE on its own scale), its standard error from the
    leave-one-cluster-out differences (paired: the same cluster left out of
    both) plus each side's seed spread, and t with k - 1 df. Returns
    ``{"n", "unit", "k", <metric>: {"difference": a - b (on the metric's own
    scale), "t", "p"}}`` (``p`` None where undefined)."""
    y = np.asarray(y, dtype=np.float64)
    A, B = _as_seeds(p_a), _as_seeds(p_b)
    n = len(y)
    cl = cl or clusters(n, groups)
    out: dict[str, Any] = {"n": int(n), "unit": cl.unit, "k": int(cl.k), "df": cl.df}
    if n < 3 or cl.k < 2:
        for m in METRICS:
            out[m] = {"difference": None, "t": None, "p": None}
        return out
    fa, la = _loo(y, A, cl)
    fb, lb = _loo(y, B, cl)
    for m in METRICS:
        diff = float(fa[m].mean() - fb[m].mean())
        tf = _transform if m in FISHER else (lambda _m, v: v)
        ta, tb = tf(m, fa[m]), tf(m, fb[m])
        lta, ltb = tf(m, la[m]), tf(m, lb[m])
        entry: dict[str, Any] = {"difference": diff if np.isfinite(diff) else None, "t": None, "p": None}
        if all(np.isfinite(x).all() for x in (ta, tb, lta, ltb)):
            d = float(ta.mean() - tb.mean())
            se = float(np.sqrt(_jack_var(lta.mean(axis=0) - ltb.mean(axis=0)) + _seed_var(ta) + _seed_var(tb)))
            if se > 0:
                t = d / se
                entry["t"], entry["p"] = float(t), float(2 * _st.t.sf(abs(t), cl.df))
            else:
                entry["t"], entry["p"] = (0.0, 1.0) if d == 0 else (float(np.sign(d) * np.inf), 0.0)
        out[m] = entry
    return out


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error control across
    the given tests); ``None`` stays ``None`` and is not counted."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def _f(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def evaluate(y: np.ndarray, p: np.ndarray, *, groups: np.ndarray | None = None, n_boot: int = 1000,
             seed: int = 0, level: float = 0.95) -> dict:
    """All metrics with the leaderboard's small-cluster intervals
    (:func:`aanbench.stats.interval`): Fisher z (r, CCC) or log (MSE) with a
    leave-one-group-out jackknife standard error and t quantiles with G - 1
    degrees of freedom, ``groups`` being e.g. the movie of each prediction.
    With fewer than 3 groups (or ``groups=None``) single items are the units,
    which treats them as independent, and the result says so.

    ``n_boot=0``: no intervals (per-fold metrics). The intervals are
    deterministic; ``n_boot`` (positive: intervals) and ``seed`` are kept for
    the callers of the former bootstrap.

    Returns ``{"n": n, "resampled": "groups"|"items", "n_units": k,
    "interval": how, "mse": v, "mse_ci": [lo, hi], "pearson_r": ..., "ccc": ...}``.
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    n = len(y)
    out: dict = {"n": int(n)}
    for name, fn in METRICS.items():
        out[name] = fn(y, p) if n else float("nan")
    iv = interval(y, p, groups, level=level)
    out["resampled"] = "groups" if iv["unit"] == "movies" else "items"
    out["n_units"] = iv["k"]
    out["interval"] = iv["method"]
    if n >= 3 and n_boot > 0:
        for name in METRICS:
            out[f"{name}_ci"] = iv[name]["ci"]
    return out
