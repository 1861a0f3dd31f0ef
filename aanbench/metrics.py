"""Evaluation metrics: MSE, Pearson r, concordance correlation (CCC), with
bootstrap confidence intervals. Inputs are 1-d arrays of equal length."""

from __future__ import annotations

import numpy as np


def mse(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return float(np.mean((y - p) ** 2))


def pearson(y: np.ndarray, p: np.ndarray) -> float:
    """Pearson r; NaN when either side is constant (r is undefined there)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    yc, pc = y - y.mean(), p - p.mean()
    den = np.sqrt((yc**2).sum() * (pc**2).sum())
    if den == 0 or not np.isfinite(den):
        return float("nan")
    return float((yc * pc).sum() / den)


def ccc(y: np.ndarray, p: np.ndarray) -> float:
    """Lin's concordance correlation coefficient."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    cov = np.mean((y - y.mean()) * (p - p.mean()))
    den = y.var() + p.var() + (y.mean() - p.mean()) ** 2
    if den == 0:
        return float("nan")
    return float(2 * cov / den)


METRICS = {"mse": mse, "pearson_r": pearson, "ccc": ccc}

# Bootstrap through sufficient statistics: every metric here is a function
# of the sums (n, sum y, sum p, sum y^2, sum p^2, sum y p, sum (y - p)^2), so
# a resample is a count per resampling unit and its sums are a matrix product.
_STATS = 7


def _unit_sums(y: np.ndarray, p: np.ndarray, units: np.ndarray) -> np.ndarray:
    """``(n_units, 7)`` sums per resampling unit (``units``: 0 .. n_units-1)."""
    cols = np.stack([np.ones_like(y), y, p, y * y, p * p, y * p, (y - p) ** 2], axis=1)
    out = np.zeros((int(units.max()) + 1, _STATS))
    np.add.at(out, units, cols)
    return out


def _metrics_from_sums(t: np.ndarray) -> dict[str, np.ndarray]:
    """Metric values for each row of ``t`` (``(B, 7)`` sums); NaN where undefined."""
    n, sy, sp, syy, spp, syp, sd2 = (t[:, i] for i in range(_STATS))
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mp = sy / n, sp / n
        vy, vp, cov = syy / n - my**2, spp / n - mp**2, syp / n - my * mp
        # a constant side leaves only rounding error in E[x^2] - E[x]^2: call it 0 (r undefined)
        vy = np.where(vy <= 1e-10 * np.abs(syy / n), 0.0, vy)
        vp = np.where(vp <= 1e-10 * np.abs(spp / n), 0.0, vp)
        den = np.sqrt(np.clip(vy, 0, None) * np.clip(vp, 0, None))
        r = np.where(den > 1e-15, cov / den, np.nan)
        cden = vy + vp + (my - mp) ** 2
        c = np.where(cden > 1e-15, 2 * cov / cden, np.nan)
        return {"mse": sd2 / n, "pearson_r": np.clip(r, -1, 1), "ccc": c}


def _units(n: int, groups: np.ndarray | None) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.arange(n), n
    _, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return inv.reshape(-1), int(inv.max()) + 1 if n else 0


def _counts(rng: np.random.Generator, n_units: int, n_boot: int) -> np.ndarray:
    """``(n_boot, n_units)`` how often each unit is drawn in each resample."""
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(np.float64)


def _ci(vals: np.ndarray, level: float) -> list[float] | None:
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return None
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return [float(np.percentile(vals, lo_q)), float(np.percentile(vals, hi_q))]


def evaluate(y: np.ndarray, p: np.ndarray, *, groups: np.ndarray | None = None, n_boot: int = 1000,
             seed: int = 0, level: float = 0.95) -> dict:
    """All metrics with percentile bootstrap CIs.

    ``groups`` (one label per prediction, e.g. the movie): the bootstrap
    resamples whole groups, which keeps the dependence between consecutive
    segments of one movie (resampling single items of autocorrelated series
    gives intervals far too narrow); ``None``: items are resampled. With
    fewer than 3 groups, items are resampled and the result says so.

    Returns ``{"n": n, "resampled": "groups"|"items", "n_units": k, "mse": v,
    "mse_ci": [lo, hi], "pearson_r": ..., "ccc": ..., ...}``.
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    n = len(y)
    out: dict = {"n": int(n)}
    for name, fn in METRICS.items():
        out[name] = fn(y, p) if n else float("nan")
    if groups is not None and len(np.unique(np.asarray(groups).astype(str))) < 3:
        groups = None
    units, k = _units(n, groups)
    out["resampled"] = "groups" if groups is not None else "items"
    out["n_units"] = int(k)
    if n >= 3 and n_boot > 0:
        sums = _unit_sums(y, p, units)
        boot = _metrics_from_sums(_counts(np.random.default_rng(seed), k, n_boot) @ sums)
        for name in METRICS:
            out[f"{name}_ci"] = _ci(boot[name], level)
    return out


def paired_difference(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, *, groups: np.ndarray | None = None,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Paired bootstrap of ``metric(a) - metric(b)`` on the same targets:
    each resample draws the same units (groups, or items) for both. For each
    metric: the difference, its interval, and ``"distinguishable"`` (False
    when the interval holds 0, i.e. the data cannot tell the two apart)."""
    y = np.asarray(y, dtype=np.float64)
    pa, pb = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
    n = len(y)
    if groups is not None and len(np.unique(np.asarray(groups).astype(str))) < 3:
        groups = None
    units, k = _units(n, groups)
    out: dict = {"n": int(n), "resampled": "groups" if groups is not None else "items", "n_units": int(k)}
    counts = _counts(np.random.default_rng(seed), k, n_boot) if n >= 3 and n_boot > 0 else None
    for name, fn in METRICS.items():
        d = fn(y, pa) - fn(y, pb)
        entry: dict = {"difference": float(d), "ci": None, "distinguishable": None}
        if counts is not None:
            ma = _metrics_from_sums(counts @ _unit_sums(y, pa, units))[name]
            mb = _metrics_from_sums(counts @ _unit_sums(y, pb, units))[name]
            ci = _ci(ma - mb, level)
            entry["ci"] = ci
            entry["distinguishable"] = None if ci is None else bool(ci[0] > 0 or ci[1] < 0)
        out[name] = entry
    return out


def group_spread(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> dict:
    """Per-group (per-movie) metrics: mean and sample sd over groups of each
    metric, and the per-group values (NaN where a metric is undefined)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    g = np.asarray(groups).astype(str)
    names = sorted(set(g.tolist()))
    per = {name: {m: fn(y[g == name], p[g == name]) for m, fn in METRICS.items()} for name in names}
    out: dict = {"groups": per}
    for m in METRICS:
        vals = np.array([per[name][m] for name in names], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[m] = {"mean": float(vals.mean()) if len(vals) else float("nan"),
                  "sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"), "k": int(len(vals))}
    return out
