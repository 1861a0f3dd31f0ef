"""Leaderboards: ranked tables (one per protocol and target, as the paper's
Tables I and II) and a figure of predicted against true values over the
test movies (as its Figures 5 and 6), generated from results files, never
edited by hand.

- One ranked row per experiment, configuration and protocol: the seeds of
  one configuration are aggregated (mean over seeds, the seeds' sd, an
  interval that accounts for movies and seeds); per-seed numbers follow in a
  detail table. Protocols (fixed split, leave-one-movie-out) get their own
  sections and are never ranked together.
- Intervals: :func:`aanbench.stats.interval` (Fisher z or log MSE with a
  leave-one-movie-out jackknife standard error and t quantiles with G - 1
  degrees of freedom), computed again from the predictions.
- `vs best`: :func:`aanbench.stats.paired_test` of each row against the
  table's best row (lowest mean MSE over seeds, chosen on these data), on
  the predictions both made, Holm-adjusted across the table's rows.

:func:`build_board` gathers every number into one plain dictionary;
:func:`render` writes it as markdown, CSV or JSON (the JSON holds every
number the markdown shows, and :func:`board_markdown` of the loaded JSON
gives the same markdown). Published numbers for the dataset
(:mod:`aanbench.reported`) follow in their own section, never ranked."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aanbench import atomicio
from aanbench.contracts import AanbenchError
from aanbench.metrics import METRICS, group_spread
from aanbench.provenance import header_line
from aanbench.results import RunResult
from aanbench.stats import MIN_CLUSTERS, holm, interval, paired_test

BOARD_FORMAT = "aanbench-leaderboard/1"
FORMATS = ("md", "csv", "json")
ALPHA = 0.05

# ---------------------------------------------------------------------------
# Reading results documents: the only place that knows their fields. Every
# document is read as a typed :class:`aanbench.results.RunResult` (a plain
# payload dict is read as a results file is).


def _run(d: Any) -> RunResult:
    return d if isinstance(d, RunResult) else RunResult.from_payload(d)


def doc_experiment(d: Any) -> str:
    return str(_run(d).experiment)


def doc_protocol(d: Any) -> str:
    return str(_run(d).protocol or "?")


def doc_seed(d: Any) -> Any:
    return _run(d).seed


def doc_config(d: Any) -> str:
    """The configuration fingerprint (computed where the file has none, and
    where it records skipped damaged rows: see
    :func:`aanbench.runner.recorded_fingerprint`)."""
    from aanbench.runner import recorded_fingerprint

    return recorded_fingerprint(_run(d))


def doc_skipped(d: Any) -> list[dict[str, Any]]:
    """The stored rows the run left out as damaged (``--skip-damaged``):
    ``[{"array", "rows"}, ...]``, empty for a run that left none out."""
    return [{"array": str(x.get("array")), "rows": x.get("rows")} for x in _run(d).skipped_damaged or []
            if isinstance(x, dict)]


def _skipped_text(skipped: list[dict[str, Any]]) -> str:
    return ", ".join(f"{x['array']}: {x['rows']} row(s)" for x in skipped)


def doc_config_fields(d: Any) -> dict[str, Any]:
    """What makes a configuration (for saying how two of one experiment differ)."""
    from aanbench.runner import CONFIG_KEYS

    r = _run(d)
    out = {k: r.get(k) for k in CONFIG_KEYS if k != "protocol"}
    out["features"] = [f.get("key") for f in r.features]
    skipped = doc_skipped(d)
    out["damaged_rows_left_out"] = _skipped_text(skipped) if skipped else "none"
    return out


def doc_describe(d: Any) -> dict[str, str]:
    """Model, feature set and feature keys."""
    r = _run(d)
    return {"model": str(r.model or "?"), "features": str(r.feature_set or "?"),
            "feature_keys": ", ".join(str(f.get("key")) for f in r.features)}


def doc_targets(d: Any) -> list[str]:
    return list(_run(d).targets)


def doc_folds(d: Any, target: str) -> int:
    t = _run(d).targets.get(target)
    return 0 if t is None else len(t.folds)


def doc_stored_metrics(d: Any, target: str) -> dict[str, Any]:
    t = _run(d).targets.get(target)
    return {} if t is None else dict(t.metrics)


def doc_predictions(d: Any, target: str) -> list[dict[str, Any]]:
    """``[{item_id, start, group, y_true, y_pred}, ...]`` of one target."""
    return _run(d).predictions_of(target)


# ---------------------------------------------------------------------------


def run_labels(docs: list[dict[str, Any]]) -> list[str]:
    """A name per results document: the experiment, with its seed when the
    experiment appears more than once, and its configuration fingerprint when
    that is still ambiguous (figure legends)."""
    def count(keys: list) -> dict:
        out: dict = {}
        for k in keys:
            out[k] = out.get(k, 0) + 1
        return out

    exp = [doc_experiment(d) for d in docs]
    n_exp = count(exp)
    labels = [e if n_exp[e] == 1 else f"{e} (seed {doc_seed(d)})" for e, d in zip(exp, docs)]
    n_lab = count(labels)
    labels = [lab if n_lab[lab] == 1 else f"{lab[:-1] if lab.endswith(')') else lab + ' ('}, "
              f"config {doc_config(d)[:8]})" for lab, d in zip(labels, docs)]
    n_lab = count(labels)
    seen: dict = {}
    out = []
    for lab in labels:  # identical files given twice: number them
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if n_lab[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


def results_table(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (results file, target) with the metrics the file records
    (``run``: see :func:`run_labels`), sorted by target and MSE."""
    rows = []
    for i, (d, label) in enumerate(zip(docs, run_labels(docs))):
        for target in doc_targets(d):
            m = doc_stored_metrics(d, target)
            rows.append({"target": target, "run": label, "doc": i, "experiment": doc_experiment(d),
                         **{k: v for k, v in doc_describe(d).items() if k != "feature_keys"},
                         "mse": _num(m.get("mse")), "pearson_r": _num(m.get("pearson_r")),
                         "ccc": _num(m.get("ccc")), "n": m.get("n"), "protocol": doc_protocol(d),
                         "seed": doc_seed(d), "config": doc_config(d)})
    if not rows:
        return pd.DataFrame(columns=["target", "run", "experiment", "model", "features", "mse", "pearson_r", "ccc",
                                     "n"])
    return pd.DataFrame(rows).sort_values(["target", "mse", "run"], kind="stable").reset_index(drop=True)


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if np.isfinite(v) else None
    return v


# ---------------------------------------------------------------------------
# Gathering: one row per (protocol, experiment, configuration) and target


def _key(p: dict[str, Any]) -> str:
    """What identifies a prediction across runs: item and start."""
    return f"{p['item_id']}@{p.get('start')}"


def _keys(preds: list[dict[str, Any]]) -> list[str]:
    return [_key(p) for p in preds]


def _seed_frame(d: Any, target: str, cache: dict | None = None) -> pd.DataFrame:
    """One run's predictions of ``target`` indexed by key (cached per build)."""
    if cache is not None:
        hit = cache.get((id(d), target))
        if hit is None:
            hit = cache[(id(d), target)] = _seed_frame(d, target)
        return hit
    preds = doc_predictions(d, target)
    if not preds:
        return pd.DataFrame(columns=["group", "y_true", "y_pred"])
    df = pd.DataFrame({"group": ["" if p.get("group") is None else str(p["group"]) for p in preds],
                       "y_true": np.array([p["y_true"] for p in preds], dtype=np.float64),
                       "y_pred": np.array([p["y_pred"] for p in preds], dtype=np.float64)},
                      index=pd.Index(_keys(preds), name="key"))
    return df[~df.index.duplicated()]


def _aligned(docs: list[Any], target: str,
             cache: dict | None = None) -> tuple[pd.Index, np.ndarray, np.ndarray, np.ndarray] | None:
    """The predictions every seed made (same keys), their truth and groups,
    and ``(S, n)`` predictions; None where a seed has none."""
    frames = [_seed_frame(d, target, cache) for d in docs]
    if any(f.empty for f in frames):
        return None
    keys = frames[0].index
    for f in frames[1:]:
        keys = keys.intersection(f.index, sort=False)
    if not len(keys):
        return None
    first = frames[0].loc[keys]
    return (keys, first["y_true"].to_numpy(dtype=np.float64), first["group"].to_numpy(),
            np.stack([f.loc[keys, "y_pred"].to_numpy(dtype=np.float64) for f in frames]))


def _flatten(v: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(v, dict):
        out: dict[str, str] = {}
        for k, x in v.items():
            out.update(_flatten(x, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(v, default=str) if not isinstance(v, str) else v}


def _config_notes(groups: dict[tuple[str, str, str], list[Any]]) -> dict[tuple[str, str, str], str]:
    """For experiments with several configurations in one protocol: how each
    differs from the others (``alpha=10.0``; the fingerprint where no field
    tells them apart)."""
    notes: dict[tuple[str, str, str], str] = {}
    by_exp: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for key in groups:
        by_exp.setdefault((key[0], key[1]), []).append(key)
    for keys in by_exp.values():
        if len(keys) < 2:
            continue
        flat = {k: _flatten(doc_config_fields(groups[k][0])) for k in keys}
        paths = sorted({p for f in flat.values() for p in f})
        differ = [p for p in paths if len({flat[k].get(p, "—") for k in keys}) > 1]
        for k in keys:
            shown = [f"{p.removeprefix('params.').removeprefix('settings.')}={flat[k].get(p, '—')}"
                     for p in differ[:3]]
            more = f" (+{len(differ) - 3} more)" if len(differ) > 3 else ""
            notes[k] = (", ".join(shown) + more if shown else "") + f"; config {k[2][:8]}"
    return notes


def _row(group_docs: list[Any], target: str, cache: dict) -> dict[str, Any]:
    """One ranked row's numbers for one target."""
    al = _aligned(group_docs, target, cache)
    out: dict[str, Any] = {"seeds": [doc_seed(d) for d in group_docs],
                           "folds": max(doc_folds(d, target) for d in group_docs)}
    if al is None:  # no predictions: the numbers the files record, no interval
        stored = [doc_stored_metrics(d, target) for d in group_docs]
        out.update({"n": stored[0].get("n"), "unit": None, "k": None, "df": None, "approximate": None,
                    "method": "no predictions in the results file: no interval", "movies": None})
        for m in METRICS:
            vals = np.array([_num(s.get(m)) for s in stored])
            out[m] = {"value": float(vals.mean()) if np.isfinite(vals).all() else None,
                      "seed_sd": float(vals.std(ddof=1)) if len(vals) > 1 and np.isfinite(vals).all() else None,
                      "ci": None, "se": None}
        out["per_seed"] = [{m: _num(s.get(m)) for m in METRICS} for s in stored]
        out["per_movie_r"] = None
        return out
    keys, y, groups, P = al
    iv = interval(y, P, groups)
    out.update({k: iv[k] for k in ("n", "unit", "k", "df", "approximate", "method")})
    out["movies"] = len(set(groups.tolist()) - {""})
    for m in METRICS:
        out[m] = iv[m]
    out["per_seed"] = [{m: float(fn(y, p)) for m, fn in METRICS.items()} for p in P]
    if iv["unit"] == "movies":
        spreads = [group_spread(y, p, groups)["pearson_r"] for p in P]
        means = np.array([s["mean"] for s in spreads])
        sds = np.array([s["sd"] for s in spreads])
        out["per_movie_r"] = {"mean": float(means.mean()) if np.isfinite(means).all() else None,
                              "sd": float(sds.mean()) if np.isfinite(sds).all() else None}
    else:
        out["per_movie_r"] = None
    return out


def _compare(best: dict[str, Any], other: dict[str, Any], target: str, cache: dict) -> dict[str, Any]:
    """``paired_test`` of ``other`` against ``best`` on the predictions both made."""
    a, b = _aligned(other["docs"], target, cache), _aligned(best["docs"], target, cache)
    if a is None or b is None:
        return {"n": 0, "mse": {"difference": None, "p": None}, "pearson_r": {"difference": None, "p": None},
                "ccc": {"difference": None, "p": None}}
    ka, kb = a[0], b[0]
    keys = kb.intersection(ka, sort=False)
    ia, ib = ka.get_indexer(keys), kb.get_indexer(keys)
    res = paired_test(b[1][ib], a[3][:, ia], b[3][:, ib], b[2][ib])
    return {"n": res["n"], "unit": res["unit"], "k": res["k"],
            **{m: {"difference": res[m]["difference"], "p": res[m]["p"]} for m in METRICS}}


def _mark(diff: float | None, p: float | None, lower_better: bool) -> str:
    if p is None or diff is None:
        return "n/a"
    if p >= ALPHA:
        return "≈"
    return "worse" if (diff > 0) == lower_better else "better"


def build_board(dataset: str, docs: list[dict[str, Any]], command: str = "") -> dict[str, Any]:
    """Every number of the leaderboard of ``docs``, as plain data (see the
    module docstring); JSON-safe."""
    if not docs:
        raise AanbenchError(f"no results for dataset {dataset!r}")
    docs = [_run(d) for d in docs]  # typed once
    groups: dict[tuple[str, str, str], list[Any]] = {}
    duplicates = 0
    for d in docs:
        key = (doc_protocol(d), doc_experiment(d), doc_config(d))
        have = groups.setdefault(key, [])
        if any(doc_seed(x) == doc_seed(d) for x in have):
            duplicates += 1  # the same seed of the same configuration twice: the first is kept
            continue
        have.append(d)
    for v in groups.values():
        v.sort(key=lambda d: (doc_seed(d) is None, str(doc_seed(d))))
    notes = _config_notes(groups)
    twins = _twins(dataset)
    cache: dict = {}  # each run's prediction frames, built once
    sections = []
    for protocol in sorted({k[0] for k in groups}):
        keys = [k for k in groups if k[0] == protocol]
        targets = sorted({t for k in keys for d in groups[k] for t in doc_targets(d)},
                         key=lambda t: (t != "valence", t))
        tables = []
        for target in targets:
            rows = []
            for k in keys:
                ds = [d for d in groups[k] if target in doc_targets(d)]
                if not ds:
                    continue
                desc = doc_describe(ds[0])
                rows.append({"experiment": k[1], "config": k[2], "config_note": notes.get(k, ""),
                             "model": desc["model"], "features": desc["features"], "protocol": protocol,
                             "reported_as": twins.get(k[1], []), "skipped_damaged": doc_skipped(ds[0]),
                             "docs": ds, **_row(ds, target, cache)})

            def rank_key(r: dict[str, Any]) -> tuple:
                v = r["mse"]["value"]
                return (v is None, v if v is not None else 0.0, r["experiment"], r["config_note"])

            rows.sort(key=rank_key)
            best = rows[0]
            raw = {m: [None] * len(rows) for m in ("mse", "pearson_r")}
            cmps: list[dict[str, Any] | None] = [None]
            for i, r in enumerate(rows[1:], 1):
                c = _compare(best, r, target, cache)
                cmps.append(c)
                for m in raw:
                    raw[m][i] = c[m]["p"]
            adj = {m: holm(raw[m]) for m in raw}
            for i, r in enumerate(rows):
                r["rank"] = i + 1
                if i == 0:
                    r["vs_best"] = {"best": True}
                else:
                    c = cmps[i]
                    r["vs_best"] = {"best": False, "n": c["n"]}
                    for m, lower in (("mse", True), ("pearson_r", False)):
                        r["vs_best"][m] = {"difference": c[m]["difference"], "p": c[m]["p"], "p_holm": adj[m][i],
                                           "mark": _mark(c[m]["difference"], adj[m][i], lower)}
                del r["docs"]
            tables.append({"target": target, "rows": rows, "methods": sorted({r["method"] for r in rows}),
                           "units": sorted({(r["unit"] or "none") for r in rows})})
        per_seed = []
        for k in sorted(keys, key=lambda k: (k[1], notes.get(k, ""))):
            for d in groups[k]:
                entry: dict[str, Any] = {"experiment": k[1], "config": k[2], "config_note": notes.get(k, ""),
                                         "seed": doc_seed(d), "skipped_damaged": doc_skipped(d), "targets": {}}
                for t in targets:
                    if t not in doc_targets(d):
                        continue
                    al = _aligned([d], t, cache)
                    if al is None:
                        sm = doc_stored_metrics(d, t)
                        entry["targets"][t] = {m: _num(sm.get(m)) for m in METRICS} | {"n": sm.get("n")}
                    else:
                        entry["targets"][t] = {m: float(fn(al[1], al[3][0])) for m, fn in METRICS.items()}
                        entry["targets"][t]["n"] = len(al[1])
                per_seed.append(entry)
        sections.append({"protocol": protocol, "tables": tables, "per_seed": per_seed})
    features = {}
    for d in sorted(docs, key=doc_experiment):
        features.setdefault(doc_experiment(d), doc_describe(d)["feature_keys"])
    return _clean({"format": BOARD_FORMAT, "dataset": dataset, "command": command, "alpha": ALPHA,
                   "min_clusters": MIN_CLUSTERS, "duplicates_ignored": duplicates, "sections": sections,
                   "features": features, "ran": sorted({doc_experiment(d) for d in docs}),
                   "environment": header_line([d.environment for d in docs])})


def _twins(dataset: str) -> dict[str, list[str]]:
    from aanbench.reported import load_reported

    df = load_reported(dataset)
    out: dict[str, list[str]] = {}
    if df is None:
        return out
    for _, r in df.iterrows():
        if r["twin"]:
            out.setdefault(str(r["twin"]), []).append(str(r["method"]))
    return out


# ---------------------------------------------------------------------------
# Writing


def _fmt(v: Any, digits: int = 3) -> str:
    """A number with a sign column, so that numbers align; ``n/a`` where undefined."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v: .{digits}f}"


def _cell(stat: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean ± seed sd [lo, hi]``."""
    if not stat or stat.get("value") is None:
        return "n/a"
    s = _fmt(stat["value"], digits)
    if stat.get("seed_sd") is not None:
        s += f" ± {stat['seed_sd']:.{digits}f}"
    if stat.get("ci"):
        s += f" [{_fmt(stat['ci'][0], digits)}, {_fmt(stat['ci'][1], digits)}]"
    return s


def _pcell(c: dict[str, Any] | None) -> str:
    if not c or c.get("p_holm") is None:
        return "n/a"
    p = c["p_holm"]
    return f"{c['mark']} ({'<0.001' if p < 0.001 else f'{p:.3f}'})"


def _table(head: list[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
    """A GitHub markdown table whose columns are padded to one width
    (numbers right-aligned); every delimiter cell holds at least three
    hyphens, so that any width renders."""
    widths = [max(3, len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "/").rjust(w) if i in numeric else c.replace("|", "/").ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if i in numeric else "-" * w for i, w in enumerate(widths)) + " |"
    return [line(head), rule] + [line(r) for r in rows]


SKIPPED_MARK = "†"  # a row trained and scored without stored rows whose bytes were damaged (--skip-damaged)


def _name(r: dict[str, Any]) -> str:
    name = r["experiment"]
    if r.get("skipped_damaged"):
        name += f" {SKIPPED_MARK}"
    if r.get("config_note"):
        name += f" ({r['config_note']})"
    if r.get("reported_as"):
        name += f" ([reported](#reported-not-re-run): {'; '.join(r['reported_as'])})"
    return name


def _skipped_note(rows: list[dict[str, Any]]) -> list[str]:
    """The footnote of a table with rows marked :data:`SKIPPED_MARK`."""
    marked = [r for r in rows if r.get("skipped_damaged")]
    if not marked:
        return []
    each = "; ".join(f"{r['experiment']}" + (f" ({r['config_note']})" if r.get("config_note") else "")
                     + f": {_skipped_text(r['skipped_damaged'])}" for r in marked)
    return ["", f"{SKIPPED_MARK} Trained and scored without stored rows whose bytes were damaged (checksum "
            f"mismatch; `--skip-damaged`): {each}. Such a row saw fewer data than the others and is not "
            "comparable with them; rerun `aanbench extract` on the store to recompute the rows "
            "(`aanbench store verify` lists them)."]


def _seeds(r: dict[str, Any]) -> str:
    return ", ".join(str(s) for s in r["seeds"])


def _units_sentence(dataset: str, table: dict[str, Any]) -> str:
    rows = table["rows"]
    s = "Intervals: " + "; ".join(table["methods"]) + "."
    if "items" in table["units"] and dataset.startswith("eimt16"):
        s += (" EIMT16: the official files name the source film of training excerpts only "
              "(`<movie>` in ACCEDEdescription.xml), none for the MediaEval 2016 test excerpts, so the test "
              "excerpts are one group and each excerpt is its own unit: excerpts of one film are alike, "
              "so these intervals are too narrow (see datasets/eimt16.md).")
    ns = sorted({int(r["n"]) for r in rows if r["n"] is not None})
    mv = sorted({int(r["movies"]) for r in rows if r.get("movies") is not None})
    s += f" Test predictions per row: {', '.join(map(str, ns))}"
    if mv:
        s += f" from {', '.join(map(str, mv))} group(s) (movies)"
    return s + "."


def board_markdown(board: dict[str, Any], figure: str | None = None) -> str:
    """The leaderboard as GitHub markdown, from :func:`build_board`'s data
    (or the JSON of :func:`render`, loaded)."""
    dataset = board["dataset"]
    lines = [f"# Leaderboard: {dataset}", ""]
    protocols = [s["protocol"] for s in board["sections"]]
    lines.append(
        f"Protocols: {', '.join(protocols)}; each has its own section and protocols are never ranked together. "
        "One row per experiment and configuration: its seeds are aggregated (the mean over seeds, ± the seeds' "
        "sd where there are several); per-seed numbers follow each section. Ranked by MSE (lower is better); "
        "higher Pearson r and CCC are better.")
    lines += ["", f"Intervals (95%, in brackets) are computed from the predictions: Fisher z for r and CCC, log for "
              "MSE, with a leave-one-movie-out jackknife standard error and t quantiles with G - 1 degrees of freedom "
              "(G test movies); with several seeds the seeds' spread is added, so an interval accounts for both "
              "movies and seeds. In simulation (tests/benchmarks/interval_coverage.py, 12 movies) they cover the "
              f"truth about 95% (r) and 94% (MSE) of the time. Below {board['min_clusters']} movies they are "
              "approximate; below 3 movies (or with no movie known) single items are the units and the intervals "
              "are too narrow: each table says which applies."]
    lines += ["", "`vs best`: the row against the table's best row (lowest mean MSE), on the predictions both made: "
              "a paired test of the difference (MSE, and Fisher z of r) with the same jackknife over movies, the "
              "p-values Holm-adjusted across the table's rows (in parentheses); `≈` where the adjusted p is at least "
              f"{board['alpha']}, so the data cannot tell the row from the best, else `worse`/`better`. The best "
              "row was chosen on these same test data, which favours it. Per-movie r: mean ± sd over the test "
              "movies of each movie's own r (averaged over seeds), over the movies with at least 3 predictions "
              "(with 2, r is +1 or -1 whatever the model): n/a where none has."]
    if board.get("environment"):
        lines += ["", board["environment"]]
    if board.get("duplicates_ignored"):
        lines += ["", f"{board['duplicates_ignored']} results file(s) repeating a seed of a configuration were "
                  "ignored (the first of each is used)."]
    if board.get("command"):
        lines += ["", f"Regenerate with: `{board['command']}`"]
    for sec in board["sections"]:
        lines += ["", f"## Protocol: {sec['protocol']}"]
        for table in sec["tables"]:
            target = table["target"]
            folds = sorted({int(r["folds"]) for r in table["rows"] if r.get("folds")})
            nf = f" ({', '.join(map(str, folds))} fold{'s' if folds != [1] else ''})" if folds else ""
            lines += ["", f"### {target.capitalize()} ({sec['protocol']})", "",
                      f"Protocol {sec['protocol']}{nf}. {_units_sentence(dataset, table)}", ""]
            head = ["rank", "experiment", "model", "features", "protocol", "seeds", "MSE", "Pearson r", "CCC",
                    "vs best MSE (Holm p)", "vs best r (Holm p)", "per-movie r", "n"]
            rows = []
            for r in table["rows"]:
                vb = r["vs_best"]
                pm = r.get("per_movie_r")
                pmr = (f"{_fmt(pm['mean'])} ± {pm['sd']:.3f}" if pm and pm.get("mean") is not None
                       and pm.get("sd") is not None else _fmt(pm["mean"]) if pm else "n/a")
                rows.append([str(r["rank"]), _name(r), r["model"], r["features"], r["protocol"], _seeds(r),
                             _cell(r["mse"]), _cell(r["pearson_r"]), _cell(r["ccc"]),
                             "best" if vb.get("best") else _pcell(vb.get("mse")),
                             "best" if vb.get("best") else _pcell(vb.get("pearson_r")), pmr,
                             str(r["n"]) if r["n"] is not None else "n/a"])
            lines += _table(head, rows, {0, 6, 7, 8, 11, 12})
            lines += _skipped_note(table["rows"])
        if sec["per_seed"]:
            targets = [t["target"] for t in sec["tables"]]
            head = ["experiment", "seed"] + [f"{t} {m}" for t in targets for m in ("MSE", "r", "CCC")]
            rows = []
            for e in sec["per_seed"]:
                name = (e["experiment"] + (f" {SKIPPED_MARK}" if e.get("skipped_damaged") else "")
                        + (f" ({e['config_note']})" if e.get("config_note") else ""))
                cells = [name, str(e["seed"])]
                for t in targets:
                    v = e["targets"].get(t, {})
                    cells += [_fmt(v.get("mse")), _fmt(v.get("pearson_r")), _fmt(v.get("ccc"))]
                rows.append(cells)
            lines += ["", f"### Per seed ({sec['protocol']})", "",
                      "Each seed's own metrics on all its test predictions (not ranked).", "",
                      *_table(head, rows, set(range(1, len(head))))]
    if figure:
        lines += ["", "## Predicted against true values", "", f"![predicted against true]({figure})"]
    from aanbench.reported import reported_markdown

    targets = tuple(sorted({t["target"] for s in board["sections"] for t in s["tables"]},
                           key=lambda t: (t != "valence", t)))
    reported = reported_markdown(dataset, targets, ran=set(board.get("ran", [])))
    if reported:
        lines += ["", reported.rstrip("\n")]
    lines += ["", "Features per experiment:", ""]
    for exp, keys in board["features"].items():
        lines.append(f"- {exp}: {keys or 'none (the model reads no features)'}")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["dataset", "protocol", "target", "rank", "experiment", "config", "config_note", "model", "features",
               "seeds", "n", "movies", "units", "interval"]
for _m in ("mse", "pearson_r", "ccc"):
    CSV_COLUMNS += [_m, f"{_m}_seed_sd", f"{_m}_lo", f"{_m}_hi"]
CSV_COLUMNS += ["vs_best_mse_p_holm", "vs_best_mse", "vs_best_r_p_holm", "vs_best_r", "per_movie_r_mean",
                "per_movie_r_sd", "damaged_rows_left_out"]


def board_csv(board: dict[str, Any]) -> str:
    """The ranked rows as CSV (one line per row and target; per-seed numbers
    are in the markdown and JSON)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for sec in board["sections"]:
        for table in sec["tables"]:
            for r in table["rows"]:
                row: dict[str, Any] = {"dataset": board["dataset"], "protocol": sec["protocol"],
                                       "target": table["target"], "rank": r["rank"], "experiment": r["experiment"],
                                       "config": r["config"], "config_note": r["config_note"], "model": r["model"],
                                       "features": r["features"], "seeds": " ".join(map(str, r["seeds"])),
                                       "n": r["n"], "movies": r.get("movies"), "units": r["unit"],
                                       "interval": r["method"]}
                for m in ("mse", "pearson_r", "ccc"):
                    st = r[m]
                    row[m], row[f"{m}_seed_sd"] = st["value"], st["seed_sd"]
                    row[f"{m}_lo"], row[f"{m}_hi"] = (st["ci"] or [None, None])
                vb = r["vs_best"]
                for m, col in (("mse", "mse"), ("pearson_r", "r")):
                    c = vb.get(m) or {}
                    row[f"vs_best_{col}_p_holm"] = c.get("p_holm")
                    row[f"vs_best_{col}"] = "best" if vb.get("best") else c.get("mark")
                pm = r.get("per_movie_r") or {}
                row["per_movie_r_mean"], row["per_movie_r_sd"] = pm.get("mean"), pm.get("sd")
                row["damaged_rows_left_out"] = " ".join(f"{x['array']}:{x['rows']}"
                                                        for x in r.get("skipped_damaged") or [])
                w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def render(dataset: str, docs: list[dict[str, Any]], fmt: str = "md", *, figure: str | None = None,
           command: str = "") -> str:
    """The leaderboard of ``docs`` as ``md`` (GitHub markdown), ``csv`` (the
    ranked rows) or ``json`` (:func:`build_board`'s data: every number the
    markdown shows; ``board_markdown(json.loads(text))`` gives the markdown)."""
    if fmt not in FORMATS:
        raise AanbenchError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    board = build_board(dataset, docs, command=command)
    if fmt == "json":
        return json.dumps({**board, "figure": figure}, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    if fmt == "csv":
        return board_csv(board)
    return board_markdown(board, figure=figure)


def render_markdown(dataset: str, docs: list[dict[str, Any]], figure: str | None = None, command: str = "") -> str:
    """The markdown leaderboard (``render(..., fmt="md")``)."""
    return render(dataset, docs, "md", figure=figure, command=command)


MAX_PANELS = 12


def plot_groups(docs: list[dict[str, Any]], out: Path, group: str | None = None,
                experiments: list[str] | None = None) -> list[str]:
    """Predicted and true values over the test movies: one row of panels per
    group (movie; at most 12, or only ``group``), one column per target; x
    in seconds from the samples' start (in the movie's order of samples
    where no start is known); the true curve is drawn first. Returns the
    groups drawn."""
    import matplotlib.pyplot as plt

    fig, groups = figure(docs, group=group, experiments=experiments)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72, metadata={"Software": None})
    plt.close(fig)
    return groups


def figure(docs: list[dict[str, Any]], group: str | None = None,
           experiments: list[str] | None = None) -> tuple[Any, list[str]]:
    """The matplotlib figure of :func:`plot_groups` and its groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preds = pd.DataFrame([{**p, "experiment": label} for d, label in zip(docs, run_labels(docs))
                          for p in _run(d).predictions])
    if preds.empty:
        raise AanbenchError("no predictions to plot")
    preds["group"] = preds["group"].astype(str)
    all_groups = sorted(preds["group"].unique())
    if group is not None:
        if group not in all_groups:
            raise AanbenchError(f"no predictions for group {group!r} (groups: {all_groups})")
        groups = [group]
    else:
        groups = all_groups[:MAX_PANELS]
    exps = experiments or list(dict.fromkeys(run_labels(docs)))
    targets = sorted(preds["target"].unique(), key=lambda t: (t != "valence", t))
    fig, axes = plt.subplots(len(groups), len(targets), figsize=(6.5 * len(targets), 2.6 * len(groups) + 0.8),
                             squeeze=False)
    cmap = plt.get_cmap("tab20")
    handles: dict[str, Any] = {}
    for gi, g in enumerate(groups):
        for ti, target in enumerate(targets):
            ax = axes[gi, ti]
            t = preds[(preds["group"] == g) & (preds["target"] == target)].copy()
            t["key"] = _keys(t.to_dict("records"))
            truth = t.drop_duplicates("key")
            seconds = truth["start"].notna().all()
            truth = truth.sort_values("start", kind="stable") if seconds else truth
            order = list(truth["key"])
            x = truth["start"].to_numpy(dtype=float) if seconds else np.arange(len(order))
            (h,) = ax.plot(x, truth["y_true"].to_numpy(), color="black", linewidth=2.2, label="true", zorder=1)
            handles["true"] = h
            for ei, e in enumerate(exps):
                te = t[t["experiment"] == e].drop_duplicates("key").set_index("key")
                if te.empty:
                    continue
                (h,) = ax.plot(x, te.reindex(order)["y_pred"].to_numpy(), linewidth=1.1, alpha=0.85,
                               color=cmap(ei % 20), label=e, zorder=2)
                handles[e] = h
            ax.set_title(f"{target}, movie {g}", fontsize=9)
            ax.set_xlabel("seconds from the sample's start" if seconds else "sample (in movie order)", fontsize=8)
            ax.set_ylabel(target, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    shown = "" if len(groups) == len(all_groups) else f" (first {len(groups)} of {len(all_groups)} movies)"
    fig.suptitle(f"Predicted against true values{shown}", fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(6, len(handles)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06 if len(groups) < 4 else 0.03, 1, 0.98))
    return fig, groups


def plot_group(docs: list[dict[str, Any]], out: Path, group: str | None = None,
               experiments: list[str] | None = None) -> str:
    """One group's figure (see :func:`plot_groups`); returns the group."""
    if group is None:
        preds = [str(p.get("group")) for d in docs for p in _run(d).predictions]
        if not preds:
            raise AanbenchError("no predictions to plot")
        group = sorted(set(preds))[0]
    return plot_groups(docs, out, group=group, experiments=experiments)[0]


def write_leaderboard(dataset: str, docs: list[dict[str, Any]], out: Path, group: str | None = None,
                      command: str = "", fmt: str = "md") -> tuple[Path, Path]:
    """Write the leaderboard of ``docs`` to ``out`` in ``fmt`` (``md``,
    ``csv`` or ``json``, see :func:`render`) and the figure of predicted
    against true values beside it (``out`` with suffix ``.png``; the
    markdown links it), each atomically. Returns (leaderboard, figure)."""
    out = Path(out)
    if fmt not in FORMATS:
        raise AanbenchError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    fig_path = out.with_suffix(".png")
    text = render(dataset, docs, fmt, figure=fig_path.name, command=command)  # errors before any file is written
    out.parent.mkdir(parents=True, exist_ok=True)
    atomicio.write_with(fig_path, lambda tmp: plot_groups(docs, tmp, group=group))
    atomicio.write_text(out, text)
    return out, fig_path
