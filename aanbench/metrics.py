"""Evaluation metrics: MSE, Pearson r, concordance correlation (CCC), and
their per-unit sums (the intervals built on them, and ``evaluate``, are in
:mod:`aanbench.stats`). Inputs are 1-d arrays of equal length."""

from __future__ import annotations

import numpy as np


def mse(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return float(np.mean((y - p) ** 2))


def pearson(y: np.ndarray, p: np.ndarray) -> float:
    """Pearson r; NaN when either side is constant (r is undefined there)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    yc, pc = y - y.mean(), p - p.mean()
    vy, vp = (yc**2).sum(), (pc**2).sum()
    # a constant side leaves only rounding error: r undefined (as _metrics_from_sums)
    if vy <= 1e-20 * max((y**2).sum(), 1e-300) or vp <= 1e-20 * max((p**2).sum(), 1e-300):
        return float("nan")
    den = np.sqrt(vy * vp)
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

# Sufficient statistics: every metric here is a function of the sums (n,
# sum y, sum p, sum y^2, sum p^2, sum y p, sum (y - p)^2), so leaving one
# unit (movie) out is a subtraction of its sums (aanbench.stats).
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


MIN_GROUP_R = 3  # a group's Pearson r needs 3 predictions: with 2 it is +1 or -1 whatever the model


def group_spread(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> dict:
    """Per-group (per-movie) metrics: mean and sample sd over groups of each
    metric, and the per-group values (NaN where a metric is undefined; a
    group's Pearson r where it has fewer than :data:`MIN_GROUP_R`
    predictions, as a sequence model's 2 per movie give)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    g = np.asarray(groups).astype(str)
    names = sorted(set(g.tolist()))
    per = {name: {m: (float("nan") if m == "pearson_r" and int((g == name).sum()) < MIN_GROUP_R
                      else fn(y[g == name], p[g == name])) for m, fn in METRICS.items()} for name in names}
    out: dict = {"groups": per}
    for m in METRICS:
        vals = np.array([per[name][m] for name in names], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[m] = {"mean": float(vals.mean()) if len(vals) else float("nan"),
                  "sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"), "k": int(len(vals))}
    return out
