"""Intervals that hold on clustered, autocorrelated data (issues 11 and 23).

Simulated COGNIMUSE-like data: 12 movies x 360 consecutive segments, each
movie an AR(1) series (phi = 0.97) for the target and one for the model's
error, so segments of a movie are strongly dependent. The "95%" interval
on Pearson r that treats single items as independent covers the true r far
less often than 95%; the leave-one-movie-out jackknife with t_{G-1} comes
close to it (the full simulation: tests/benchmarks/interval_coverage.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from aanbench.metrics import ccc, group_spread, mse, pearson
from aanbench.stats import evaluate
from aanbench.stats import MIN_CLUSTERS, clusters, holm, interval, paired_test
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


def _jack(vals):
    k = len(vals)
    return (k - 1) / k * np.sum((vals - vals.mean()) ** 2)


def test_interval_by_hand_fisher_z_log_mse_jackknife_and_t():
    rng = np.random.default_rng(0)
    y, p, g = _movies(rng, movies=5, segs=40)
    iv = interval(y, p, g)
    assert (iv["unit"], iv["k"], iv["df"], iv["approximate"]) == ("movies", 5, 4, True)
    tq = st.t.ppf(0.975, 4)
    names = sorted(set(g))
    loo_r = np.array([pearson(y[g != m], p[g != m]) for m in names])
    z, se = np.arctanh(pearson(y, p)), np.sqrt(_jack(np.arctanh(loo_r)))
    assert iv["pearson_r"]["value"] == pytest.approx(pearson(y, p))
    assert iv["pearson_r"]["ci"] == pytest.approx([np.tanh(z - tq * se), np.tanh(z + tq * se)])
    loo_m = np.log([mse(y[g != m], p[g != m]) for m in names])
    lm, se = np.log(mse(y, p)), np.sqrt(_jack(loo_m))
    assert iv["mse"]["ci"] == pytest.approx([np.exp(lm - tq * se), np.exp(lm + tq * se)])
    loo_c = np.arctanh([ccc(y[g != m], p[g != m]) for m in names])
    assert iv["ccc"]["se"] == pytest.approx(np.sqrt(_jack(loo_c)))
    assert iv["pearson_r"]["seed_sd"] is None
    assert interval(y, p, g) == iv  # deterministic


def test_seeds_add_their_spread_to_the_jackknife_of_the_seed_mean():
    rng = np.random.default_rng(1)
    y, p, g = _movies(rng, movies=9, segs=30)
    P = np.stack([p, p + 0.2 * rng.normal(size=len(p)), p + 0.2 * rng.normal(size=len(p))])
    iv = interval(y, P, g)
    names = sorted(set(g))
    z_full = np.arctanh([pearson(y, q) for q in P])
    z_loo = np.array([[np.arctanh(pearson(y[g != m], q[g != m])) for m in names] for q in P])
    se = np.sqrt(_jack(z_loo.mean(axis=0)) + z_full.var(ddof=1) / 3)
    assert iv["pearson_r"]["se"] == pytest.approx(se)
    assert iv["pearson_r"]["value"] == pytest.approx(np.mean([pearson(y, q) for q in P]))
    assert iv["pearson_r"]["seed_sd"] == pytest.approx(np.std([pearson(y, q) for q in P], ddof=1))
    assert iv["seeds"] == 3 and iv["approximate"] is False  # 9 >= MIN_CLUSTERS


def test_units_movies_approximate_or_items():
    g = np.repeat([f"m{k}" for k in range(MIN_CLUSTERS)], 3)
    assert clusters(len(g), g).unit == "movies" and not clusters(len(g), g).approximate
    assert clusters(len(g), g).describe() == f"leave-one-movie-out jackknife over {MIN_CLUSTERS} movies, t with 7 df"
    few = clusters(9, np.repeat(["a", "b", "c"], 3))
    assert (few.unit, few.k, few.approximate) == ("movies", 3, True) and "approximate" in few.describe()
    for groups in (None, np.repeat(["a", "b"], 3), np.array(["a", "", "b", "c", "c", "a"])):
        cl = clusters(6, groups)
        assert (cl.unit, cl.k, cl.df) == ("items", 6, 5) and "too narrow" in cl.describe()


def test_evaluate_uses_the_same_intervals():
    rng = np.random.default_rng(0)
    y, p, g = _movies(rng, movies=5, segs=40)
    ev = evaluate(y, p, groups=g, seed=1)
    iv = interval(y, p, g)
    assert ev["mse"] == pytest.approx(mse(y, p)) and ev["pearson_r"] == pytest.approx(pearson(y, p))
    assert ev["ccc"] == pytest.approx(ccc(y, p))
    assert ev["resampled"] == "groups" and ev["n_units"] == 5 and ev["interval"] == iv["method"]
    for m in ("mse", "pearson_r", "ccc"):
        assert ev[f"{m}_ci"] == pytest.approx(iv[m]["ci"])
        lo, hi = ev[f"{m}_ci"]
        assert lo <= ev[m] <= hi
    assert evaluate(y, p, n_boot=200, seed=1)["resampled"] == "items"
    assert evaluate(y, p, groups=np.where(g == "movie0", "a", "b"))["resampled"] == "items"  # < 3 groups
    assert "mse_ci" not in evaluate(y, p, groups=g, n_boot=0)


def test_movie_jackknife_covers_the_truth_and_independent_items_do_not():
    rng = np.random.default_rng(2026)
    truth = 0.6  # y and p are built with correlation rho = 0.6 in every movie and overall
    hits = {"groups": 0, "items": 0}
    sims = 60
    for s in range(sims):
        y, p, g = _movies(rng)
        for kind in hits:
            lo, hi = interval(y, p, g if kind == "groups" else None)["pearson_r"]["ci"]
            hits[kind] += lo <= truth <= hi
    cover = {k: v / sims for k, v in hits.items()}
    print("coverage of the nominal 95% interval on r:", cover)
    assert cover["groups"] >= 0.85, cover
    assert cover["items"] <= 0.5, cover


def test_paired_test_tells_a_clearly_better_model_apart_and_not_a_twin():
    rng = np.random.default_rng(5)
    y, p, g = _movies(rng, rho=0.8)
    worse = 0.3 * y + rng.normal(size=len(y))
    d = paired_test(y, p, worse, g)
    assert d["mse"]["difference"] < 0 and d["mse"]["p"] < 0.01
    assert d["pearson_r"]["difference"] > 0 and d["pearson_r"]["p"] < 0.01 and d["ccc"]["p"] is not None
    assert d["unit"] == "movies" and d["k"] == 12
    # an equally good model with its own errors: the data cannot rank the two
    twin = 0.8 * y + 0.6 * np.concatenate([_ar1(rng, 360, 0.97) for _ in range(12)])
    d = paired_test(y, p, twin, g)
    assert d["pearson_r"]["p"] > 0.05 and d["mse"]["p"] > 0.05
    # by hand: the MSE difference, its paired jackknife standard error, t with 11 df
    names = sorted(set(g))
    dl = np.array([mse(y[g != m], p[g != m]) - mse(y[g != m], twin[g != m]) for m in names])
    t = (mse(y, p) - mse(y, twin)) / np.sqrt(_jack(dl))
    assert d["mse"]["t"] == pytest.approx(t) and d["mse"]["p"] == pytest.approx(2 * st.t.sf(abs(t), 11))
    same = paired_test(y, p, p, g)
    assert same["mse"]["p"] == 1.0 and same["mse"]["difference"] == 0.0


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([]) == [] and holm([None]) == [None]
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


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
    # two predictions per movie (a sequence model's): each movie's r would be +1 or -1 whatever the
    # model predicts, so it is undefined there and the spread has no movie to average
    y2, p2, g2 = np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.3, 0.2, 0.1, 0.9]), np.array(["a", "a", "b", "b"])
    assert sorted(pearson(y2[g2 == k], p2[g2 == k]) for k in "ab") == pytest.approx([-1.0, 1.0])
    s2 = group_spread(y2, p2, g2)
    assert np.isnan(s2["groups"]["a"]["pearson_r"]) and s2["pearson_r"]["k"] == 0
    assert np.isnan(s2["pearson_r"]["mean"]) and s2["groups"]["a"]["mse"] == pytest.approx((0.09 + 0.64) / 2)
