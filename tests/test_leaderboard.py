"""Leaderboards from results documents: one ranked row per experiment,
configuration and protocol (seeds aggregated, per-seed numbers in a detail
table), one section per protocol; small-cluster intervals recomputed from
the predictions and said in each table's header; `vs best` Holm-adjusted;
valid GitHub markdown for any width; CSV and JSON carrying the markdown's
numbers; reported rows in their own section for EIMT16/COGNIMUSE (none for
the demo) with the re-run twin linked; the figure has one panel per movie,
seconds on x, truth first."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from aanbench.leaderboard import board_markdown, build_board, figure, render, render_markdown, write_leaderboard
from aanbench.metrics import group_spread, mse
from aanbench.stats import evaluate
from aanbench.runner import RESULTS_FORMAT
from aanbench.stats import holm, interval

MOVIES, PER = 6, 30


def _truth(seed=0, movies=MOVIES, per=PER):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.cumsum(rng.normal(size=per)) * 0.3 for _ in range(movies)])
    groups = np.repeat([f"m{k}" for k in range(movies)], per)
    return y, groups


def _doc(experiment, pred, y, groups, seed=0, dataset="demo", fingerprint="cfg", protocol="leave-one-group-out",
         params=None):
    preds, targets = [], {}
    per = int(np.sum(groups == groups[0]))
    for target in ("valence", "arousal"):
        preds += [{"item_id": f"{g}_{i % per}", "start": 5.0 * (i % per), "end": 5.0 * (i % per) + 5,
                   "group": g, "fold": g, "target": target, "y_true": float(a), "y_pred": float(b)}
                  for i, (g, a, b) in enumerate(zip(groups, y, pred))]
        m = evaluate(y, pred, groups=groups, seed=seed)
        targets[target] = {"metrics": m, "folds": {g: {} for g in set(groups)}}
    return {"format": RESULTS_FORMAT, "experiment": experiment, "model": experiment, "feature_set": "both",
            "dataset": dataset, "protocol": protocol, "seed": seed, "config_fingerprint": fingerprint,
            "params": params or {"valence": {"alpha": 1.0}}, "settings": {},
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


def _cells(line):
    return [c.strip() for c in line.strip()[1:-1].split("|")]


def _rows(table):
    """{experiment: cells} of a ranked table."""
    return {_cells(r)[1].split(" (")[0]: _cells(r) for r in table[2:]}


DELIM = re.compile(r"^:?-+:?$")  # GitHub: at least one hyphen, optional colons (":" alone is not one)


def _assert_valid_markdown_tables(text):
    tables = _tables(text)
    assert tables
    for t in tables:
        head, rule = _cells(t[0]), _cells(t[1])
        assert len(rule) == len(head) and all(DELIM.match(c) for c in rule), t[:2]
        assert all(len(_cells(r)) == len(head) for r in t[2:]), t


def _mixed_docs():
    """A fixed-split run (24 items from 2 movies) and a two-seed
    leave-one-movie-out benchmark (120 items from 12 movies) of three experiments."""
    y, g = _truth(seed=3, movies=12, per=10)
    rng = np.random.default_rng(4)
    docs = []
    for seed in (0, 1):
        docs += [_doc("ridge", y + 0.3 * rng.normal(size=len(y)), y, g, seed=seed),
                 _doc("feature-aan", y + 0.35 * rng.normal(size=len(y)), y, g, seed=seed),
                 _doc("mean", np.full(len(y), y.mean()) + 0.01 * seed, y, g, seed=seed)]
    yf, gf = _truth(seed=5, movies=2, per=12)
    docs += [_doc("ridge", yf + 0.01 * rng.normal(size=len(yf)), yf, gf, protocol="fixed"),
             _doc("mean", np.full(len(yf), yf.mean()), yf, gf, protocol="fixed")]
    return docs


def test_header_names_ranking_metric_and_intervals_and_marks_rows():
    docs, y, g = _docs()
    text = render_markdown("demo", docs)
    assert "Ranked by MSE" in text and "Holm" in text and "chosen on these same test data" in text
    assert f"leave-one-movie-out jackknife over {MOVIES} movies, t with {MOVIES - 1} df (approximate" in text
    assert f"Test predictions per row: {MOVIES * PER} from {MOVIES} group(s) (movies)" in text
    rows = _rows(_tables(text)[0])
    best = min(("feature-aan", "ridge"), key=lambda e: mse(y, np.array(
        [p["y_pred"] for p in docs[0 if e == "feature-aan" else 1]["predictions"][:len(y)]])))
    other = "ridge" if best == "feature-aan" else "feature-aan"
    assert rows[best][0] == "1" and rows[best][9] == "best" and rows[best][10] == "best"
    assert rows[other][9].startswith("≈ (") and rows[other][10].startswith("≈ (")  # a hair apart
    assert rows["random"][9].startswith("worse (") and rows["random"][10].startswith("worse (")
    assert rows["mean"][7] == "n/a" and rows["mean"][10] == "n/a"  # r undefined for a constant
    assert rows["mean"][0] == "4" or rows["random"][0] == "4"
    assert "nan" not in text.lower().replace("n/a", "")


def test_intervals_and_vs_best_are_the_stats_functions_with_holm():
    docs, y, g = _docs()
    board = build_board("demo", docs)
    rows = board["sections"][0]["tables"][0]["rows"]
    for r in rows:
        d = next(d for d in docs if d["experiment"] == r["experiment"])
        p = np.array([x["y_pred"] for x in d["predictions"] if x["target"] == "valence"])
        iv = interval(y, p, g)
        assert r["mse"]["value"] == pytest.approx(iv["mse"]["value"])
        assert r["mse"]["ci"] == pytest.approx(iv["mse"]["ci"])
        if iv["pearson_r"]["ci"] is not None:
            assert r["pearson_r"]["ci"] == pytest.approx(iv["pearson_r"]["ci"])
        assert r["unit"] == "movies" and r["k"] == MOVIES and r["approximate"] is True
    raw = [r["vs_best"]["mse"]["p"] for r in rows[1:]]
    assert [r["vs_best"]["mse"]["p_holm"] for r in rows[1:]] == pytest.approx(holm(raw))
    assert all(a >= b for a, b in zip([r["vs_best"]["mse"]["p_holm"] for r in rows[1:]], raw))


def test_protocols_in_separate_sections_and_seeds_in_one_row():
    docs = _mixed_docs()
    text = render_markdown("demo", docs)
    assert text.count("## Protocol: ") == 2
    fixed, lomo = text.split("## Protocol: fixed")[1].split("## Protocol: leave-one-group-out")
    for section, protocol, n in ((fixed, "fixed", "24"), (lomo, "leave-one-group-out", "120")):
        ranked = [t for t in _tables(section) if _cells(t[0])[0] == "rank"]
        assert len(ranked) == 2  # valence, arousal
        for t in ranked:
            names = [_cells(r)[1] for r in t[2:]]
            assert len(names) == len(set(names))  # no experiment twice
            assert {_cells(r)[4] for r in t[2:]} == {protocol} and {_cells(r)[12] for r in t[2:]} == {n}
    assert "items treated as independent" in fixed and "too narrow" in fixed  # 2 movies
    assert "jackknife over 12 movies, t with 11 df." in lomo
    rows = _rows([t for t in _tables(lomo) if _cells(t[0])[0] == "rank"][0])
    assert rows["ridge"][5] == "0, 1"
    ridge = [d for d in docs if d["experiment"] == "ridge" and d["protocol"] != "fixed"]
    mses = [mse(np.array([p["y_true"] for p in d["predictions"] if p["target"] == "valence"]),
                np.array([p["y_pred"] for p in d["predictions"] if p["target"] == "valence"])) for d in ridge]
    assert rows["ridge"][6].startswith(f"{np.mean(mses):.3f} ± {np.std(mses, ddof=1):.3f} [")
    per_seed = next(t for t in _tables(lomo) if _cells(t[0])[:2] == ["experiment", "seed"])
    got = {(_cells(r)[0], _cells(r)[1]): _cells(r)[2] for r in per_seed[2:]}
    assert got[("ridge", "0")] == f"{mses[0]:.3f}" and got[("ridge", "1")] == f"{mses[1]:.3f}"
    two = build_board("demo", ridge)["sections"][0]["tables"][0]["rows"][0]
    assert two["seeds"] == [0, 1] and two["mse"]["seed_sd"] == pytest.approx(np.std(mses, ddof=1))


def test_configurations_of_one_experiment_say_how_they_differ():
    y, g = _truth()
    rng = np.random.default_rng(2)
    docs = [_doc("ridge", y + 0.3 * rng.normal(size=len(y)), y, g, fingerprint="aaaa1111"),
            _doc("ridge", y + 0.4 * rng.normal(size=len(y)), y, g, fingerprint="bbbb2222",
                 params={"valence": {"alpha": 10.0}})]
    text = render_markdown("demo", docs)
    names = [_cells(r)[1] for r in _tables(text)[0][2:]]
    assert sorted(names) == ["ridge (valence.alpha=1.0; config aaaa1111)",
                             "ridge (valence.alpha=10.0; config bbbb2222)"]


@pytest.mark.parametrize("n_items", [4, 9, 180])
def test_every_table_has_a_valid_delimiter_row(n_items):
    y, g = _truth(movies=1 if n_items < 10 else MOVIES, per=n_items if n_items < 10 else PER)
    rng = np.random.default_rng(0)
    docs = [_doc("a", y + 0.1 * rng.normal(size=len(y)), y, g, dataset="eimt16"),
            _doc("b", y + 0.5 * rng.normal(size=len(y)), y, g, dataset="eimt16", seed=1)]
    for dataset in ("demo", "eimt16", "cognimuse"):
        _assert_valid_markdown_tables(render_markdown(dataset, docs))
    _assert_valid_markdown_tables(render_markdown("demo", _mixed_docs()))


def test_eimt16_board_says_how_its_intervals_treat_excerpts():
    y, _ = _truth(movies=1, per=40)
    g = np.full(len(y), "test")  # no source film of the test excerpts in the official files
    rng = np.random.default_rng(0)
    docs = [_doc("a", y + 0.2 * rng.normal(size=len(y)), y, g, dataset="eimt16", protocol="fixed")]
    text = render_markdown("eimt16", docs)
    assert "items treated as independent (40 items, t with 39 df)" in text
    assert "none for the MediaEval 2016 test excerpts" in text and "too narrow" in text
    films = np.repeat([f"film{k}" for k in range(10)], 4)  # where a copy names the films: they are the units
    text = render_markdown("eimt16", [_doc("a", y + 0.2 * rng.normal(size=len(y)), y, films, dataset="eimt16")])
    assert "jackknife over 10 movies" in text and "items treated as independent" not in text


def test_json_round_trips_and_csv_carries_the_numbers(tmp_path):
    docs = _mixed_docs()
    md = render("demo", docs, "md", figure="lb.png", command="aanbench leaderboard demo")
    loaded = json.loads(render("demo", docs, "json", figure="lb.png", command="aanbench leaderboard demo"))
    assert board_markdown(loaded, figure=loaded["figure"]) == md  # every number of the markdown is in the JSON
    board = build_board("demo", docs, command="aanbench leaderboard demo")
    assert json.loads(json.dumps(board)) == {k: v for k, v in loaded.items() if k != "figure"}
    rows = list(csv.DictReader(io.StringIO(render("demo", docs, "csv"))))
    ranked = [(s["protocol"], t["target"], r) for s in loaded["sections"] for t in s["tables"] for r in t["rows"]]
    assert len(rows) == len(ranked)
    for row, (protocol, target, r) in zip(rows, ranked):
        assert (row["protocol"], row["target"], row["experiment"]) == (protocol, target, r["experiment"])
        assert float(row["mse"]) == pytest.approx(r["mse"]["value"]) and float(row["mse_lo"]) == pytest.approx(
            r["mse"]["ci"][0])
    out, png = write_leaderboard("demo", docs, tmp_path / "lb.json", fmt="json")
    assert json.loads(out.read_text())["sections"] and png.is_file()
    with pytest.raises(Exception, match="--format"):
        render("demo", docs, "html")


def test_per_movie_spread():
    docs, y, g = _docs()
    pred = np.array([p["y_pred"] for p in docs[0]["predictions"][:len(y)]])
    spread = group_spread(y, pred, g)["pearson_r"]
    text = render_markdown("demo", docs)
    assert f"{spread['mean']: .3f} ± {spread['sd']:.3f}" in text


def test_numeric_columns_align():
    docs, _, _ = _docs()
    for table in _tables(render_markdown("demo", docs)):
        assert len({len(line) for line in table}) == 1, table
        bars = {tuple(m.start() for m in re.finditer(r"\|", line)) for line in table}
        assert len(bars) == 1, table
    mse_cells = [_cells(line)[6] for line in _tables(render_markdown("demo", docs))[0][2:]]
    assert len({c.index(".") for c in mse_cells}) == 1  # decimal points one above the other


@pytest.mark.parametrize("dataset", ["eimt16", "cognimuse"])
def test_reported_rows_in_their_own_section_and_twin_linked(dataset):
    docs, _, _ = _docs(dataset)
    text = render_markdown(dataset, docs)
    ranked, reported = text.split("## Reported, not re-run")
    assert "Feature AAN, video+audio" in reported and "re-run here as `feature-aan`" in reported
    assert "Yi, Wang & Li" in reported or "Sivaprasad" in reported
    ranking_rows = [l for t in _tables(ranked) if _cells(t[0])[0] == "rank" for l in t[2:]]
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
