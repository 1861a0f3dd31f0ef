"""Bootstrap intervals that hold on clustered, autocorrelated data (issue 11 §4).

Simulated COGNIMUSE-like data: 12 movies x 360 consecutive segments, each
movie an AR(1) series (phi = 0.97) for the target and one for the model's
error, so segments of a movie are strongly dependent. The "95%" interval
on Pearson r from resampling single items covers the true r far less often
than 95%; resampling whole movies comes close to it."""

from __future__ import annotations

import numpy as np
import pytest

from aanbench.metrics import ccc, evaluate, group_spread, mse, paired_difference, pearson


def _ar1(rng, n, phi):
    e = rng.normal(size=n) * np.sqrt(1 - phi**2)
    x = np.empty(n)
    x[0] = rng.normal()
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def _movies(rng, movies=12, segs=360, phi=0.97, rho=0.6):
    ys, ps, gs = [], [], []
    for m in range(movies):
        y = _ar1(rng, segs, phi)
        p = rho * y + np.sqrt(1 - rho**2) * _ar1(rng, segs, phi)
        ys.append(y), ps.append(p), gs.append(np.full(segs, f"movie{m}"))
    return np.concatenate(ys), np.concatenate(ps), np.concatenate(gs)


def test_sufficient_statistics_bootstrap_matches_the_plain_metrics():
    rng = np.random.default_rng(0)
    y, p, g = _movies(rng, movies=5, segs=40)
    ev = evaluate(y, p, groups=g, n_boot=200, seed=1)
    assert ev["mse"] == pytest.approx(mse(y, p)) and ev["pearson_r"] == pytest.approx(pearson(y, p))
    assert ev["ccc"] == pytest.approx(ccc(y, p))
    assert ev["resampled"] == "groups" and ev["n_units"] == 5
    for m in ("mse", "pearson_r", "ccc"):
        lo, hi = ev[f"{m}_ci"]
        assert lo <= ev[m] <= hi
    assert evaluate(y, p, groups=g, n_boot=200, seed=1) == ev  # seeded
    assert evaluate(y, p, n_boot=200, seed=1)["resampled"] == "items"
    assert evaluate(y, p, groups=np.where(g == "movie0", "a", "b"), n_boot=50)["resampled"] == "items"  # < 3 groups


def test_clustered_bootstrap_covers_the_truth_and_the_item_bootstrap_does_not():
    rng = np.random.default_rng(2026)
    truth = 0.6  # y and p are built with correlation rho = 0.6 in every movie and overall
    hits = {"groups": 0, "items": 0}
    sims = 60
    for s in range(sims):
        y, p, g = _movies(rng)
        for kind in hits:
            ev = evaluate(y, p, groups=g if kind == "groups" else None, n_boot=400, seed=s)
            lo, hi = ev["pearson_r_ci"]
            hits[kind] += lo <= truth <= hi
    cover = {k: v / sims for k, v in hits.items()}
    # measured with this seed: groups 0.85, items 0.18 (12 clusters make even
    # the cluster bootstrap a little narrow; items are hopeless)
    print("coverage of the nominal 95% interval on r:", cover)
    assert cover["groups"] >= 0.8, cover
    assert cover["items"] <= 0.5, cover


def test_paired_difference_tells_a_clearly_better_model_apart_and_not_a_twin():
    rng = np.random.default_rng(5)
    y, p, g = _movies(rng, rho=0.8)
    worse = 0.3 * y + rng.normal(size=len(y))
    d = paired_difference(y, p, worse, groups=g, n_boot=400)
    assert d["mse"]["difference"] < 0 and d["mse"]["distinguishable"] is True
    assert d["pearson_r"]["distinguishable"] is True and d["ccc"]["ci"] is not None
    # an equally good model with its own errors: the data cannot rank the two
    twin = 0.8 * y + 0.6 * np.concatenate([_ar1(rng, 360, 0.97) for _ in range(12)])
    d = paired_difference(y, p, twin, groups=g, n_boot=400)
    assert d["pearson_r"]["distinguishable"] is False and d["mse"]["distinguishable"] is False


def test_group_spread_by_hand():
    y = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 5.0, 6.0, 7.0])
    p = np.array([0.0, 1.0, 2.0, 2.0, 1.0, 0.0, 5.0, 6.5, 7.0])
    g = np.array(["a"] * 3 + ["b"] * 3 + ["c"] * 3)
    s = group_spread(y, p, g)
    rs = [pearson(y[g == k], p[g == k]) for k in "abc"]
    assert rs[0] == pytest.approx(1.0) and rs[1] == pytest.approx(-1.0)
    assert s["pearson_r"]["mean"] == pytest.approx(np.mean(rs))
    assert s["pearson_r"]["sd"] == pytest.approx(np.std(rs, ddof=1))
    assert s["groups"]["c"]["mse"] == pytest.approx(0.25 / 3)
