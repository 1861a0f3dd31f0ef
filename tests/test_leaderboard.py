"""Leaderboards from results documents: the header names the ranking metric
and what the bootstrap resampled; a paired comparison against the best row
marks rows the data cannot tell apart from it; numeric columns align; `n/a`
where r is undefined; mean ± sd over seeds; reported rows in their own
section for EIMT16/COGNIMUSE (none for the demo) with the re-run twin
linked; the figure has one panel per movie, seconds on x, truth first."""

from __future__ import annotations

import re

import numpy as np
import pytest

from aanbench.leaderboard import compare_to_best, figure, render_markdown, results_table, write_leaderboard
from aanbench.metrics import evaluate, group_spread
from aanbench.runner import RESULTS_FORMAT

MOVIES, PER = 6, 30


def _truth(seed=0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.cumsum(rng.normal(size=PER)) * 0.3 for _ in range(MOVIES)])
    groups = np.repeat([f"m{k}" for k in range(MOVIES)], PER)
    return y, groups


def _doc(experiment, pred, y, groups, seed=0, dataset="demo", fingerprint="cfg"):
    preds, targets = [], {}
    for target in ("valence", "arousal"):
        preds += [{"item_id": f"{g}_{i % PER}", "start": 5.0 * (i % PER), "end": 5.0 * (i % PER) + 5,
                   "group": g, "fold": g, "target": target, "y_true": float(a), "y_pred": float(b)}
                  for i, (g, a, b) in enumerate(zip(groups, y, pred))]
        m = evaluate(y, pred, groups=groups, seed=seed)
        targets[target] = {"metrics": m, "folds": {g: {} for g in set(groups)}}
    return {"format": RESULTS_FORMAT, "experiment": experiment, "model": experiment, "feature_set": "both",
            "dataset": dataset, "protocol": "leave-one-group-out", "seed": seed, "config_fingerprint": fingerprint,
            "features": [{"key": "a@1"}], "targets": targets, "predictions": preds}


def _docs(dataset="demo"):
    y, g = _truth()
    rng = np.random.default_rng(1)
    good = y + 0.3 * rng.normal(size=len(y))
    twin = good + 0.01 * rng.normal(size=len(y))  # the same model but for a little noise
    return [_doc("feature-aan", good, y, g, dataset=dataset), _doc("ridge", twin, y, g, dataset=dataset),
            _doc("random", rng.normal(size=len(y)), y, g, dataset=dataset),
            _doc("mean", np.full(len(y), y.mean()), y, g, dataset=dataset)], y, g


def _tables(text):
    """Each markdown table as a list of its lines."""
    out, cur = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def test_header_names_ranking_metric_and_resampled_units_and_marks_indistinguishable_rows():
    docs, y, g = _docs()
    text = render_markdown("demo", docs)
    assert "Ranked by MSE" in text
    assert f"Intervals resample whole groups (movies), {MOVIES} units" in text
    assert f"test predictions per row: {MOVIES * PER} from {MOVIES} movie(s)" in text
    rows = {r.split("|")[2].strip(): [c.strip() for c in r.split("|")[1:-1]]
            for r in _tables(text)[0][2:]}
    best = min(("feature-aan", "ridge"), key=lambda e: np.mean((np.array(
        [p["y_pred"] for p in docs[0 if e == "feature-aan" else 1]["predictions"][:len(y)]]) - y) ** 2))
    other = "ridge" if best == "feature-aan" else "feature-aan"
    assert rows[best][0] == "1" and rows[best][7] == "best"
    assert rows[other][7] == "≈ / ≈"  # a hair apart: not distinguishable
    assert rows["random"][7] == "worse / worse"
    assert rows["mean"][7] == "worse / n/a" and rows["mean"][5] == "n/a"  # r undefined for a constant
    assert "nan" not in text.lower().replace("n/a", "")


def test_paired_comparison_uses_the_same_items_and_groups():
    docs, y, g = _docs()
    df = results_table(docs)
    sub = df[df.target == "valence"]
    cmp = compare_to_best(docs, sub, "valence", n_boot=200)
    assert all(c["n"] == len(y) for c in cmp.values())
    assert {c.get("resampled") for i, c in cmp.items() if i != sub.index[0]} == {"groups"}


def test_numeric_columns_align():
    docs, _, _ = _docs()
    for table in _tables(render_markdown("demo", docs)):
        assert len({len(line) for line in table}) == 1, table
        bars = {tuple(m.start() for m in re.finditer(r"\|", line)) for line in table}
        assert len(bars) == 1, table
    mse_cells = [line.split("|")[5] for line in _tables(render_markdown("demo", docs))[0][2:]]
    assert len({c.index(".") for c in mse_cells}) == 1  # decimal points one above the other


def test_per_movie_spread_and_seeds():
    docs, y, g = _docs()
    pred = np.array([p["y_pred"] for p in docs[0]["predictions"][:len(y)]])
    spread = group_spread(y, pred, g)["pearson_r"]
    text = render_markdown("demo", docs)
    assert f"{spread['mean']: .3f} ± {spread['sd']:.3f}" in text
    assert "Over seeds" not in text
    rng = np.random.default_rng(5)
    again = _doc("feature-aan", pred + 0.05 * rng.normal(size=len(y)), y, g, seed=1)
    text = render_markdown("demo", docs + [again])
    assert "## Over seeds" in text
    mses = [np.mean((pred - y) ** 2), np.mean((np.array([p["y_pred"] for p in again["predictions"][:len(y)]]) - y) ** 2)]
    line = next(l for l in text.splitlines() if l.startswith("| feature-aan") and "0, 1" in l)
    assert f"{np.mean(mses): .3f} ± {np.std(mses, ddof=1):.3f}" in line


@pytest.mark.parametrize("dataset", ["eimt16", "cognimuse"])
def test_reported_rows_in_their_own_section_and_twin_linked(dataset):
    docs, _, _ = _docs(dataset)
    text = render_markdown(dataset, docs)
    ranked, reported = text.split("## Reported, not re-run")
    assert "Feature AAN, video+audio" in reported and "re-run here as `feature-aan`" in reported
    assert "Yi, Wang & Li" in reported or "Sivaprasad" in reported
    ranking_rows = [l for t in _tables(ranked) for l in t[2:]]
    assert len(ranking_rows) == 2 * len(docs)  # published numbers never enter the ranking
    assert any("feature-aan ([reported](#reported-not-re-run): Feature AAN, video+audio" in l for l in ranking_rows)


def test_demo_has_no_reported_section():
    docs, _, _ = _docs()
    assert "Reported" not in render_markdown("demo", docs)


def test_figure_one_panel_per_movie_seconds_truth_first(tmp_path):
    docs, y, g = _docs()
    fig, groups = figure(docs)
    assert groups == [f"m{k}" for k in range(MOVIES)]
    axes = fig.get_axes()
    assert len(axes) == 2 * MOVIES
    for ax in axes:
        assert ax.lines[0].get_label() == "true"
        np.testing.assert_array_equal(ax.lines[0].get_xdata(), 5.0 * np.arange(PER))
        assert "seconds" in ax.get_xlabel()
    fig, groups = figure(docs, group="m3")
    assert groups == ["m3"] and len(fig.get_axes()) == 2
    md, png = write_leaderboard("demo", docs, tmp_path / "lb.md", group="m2")
    assert png.stat().st_size > 5000 and "(lb.png)" in md.read_text()
