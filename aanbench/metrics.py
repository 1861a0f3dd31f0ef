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


def evaluate(y: np.ndarray, p: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """All metrics with percentile bootstrap CIs over items.

    Returns ``{"n": n, "mse": v, "mse_ci": [lo, hi], "pearson_r": ..., ...}``.
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    n = len(y)
    out: dict = {"n": int(n)}
    for name, fn in METRICS.items():
        out[name] = fn(y, p) if n else float("nan")
    if n >= 3 and n_boot > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_boot, n))
        lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
        for name, fn in METRICS.items():
            vals = np.array([fn(y[i], p[i]) for i in idx])
            vals = vals[np.isfinite(vals)]
            out[f"{name}_ci"] = [float(np.percentile(vals, lo_q)), float(np.percentile(vals, hi_q))] if len(vals) else None
    return out
