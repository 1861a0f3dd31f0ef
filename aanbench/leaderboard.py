"""Leaderboards: markdown tables (one per target, as the paper's Tables I
and II) and a figure of predicted against true values over the test movies
(as its Figures 5 and 6), generated from results files, never edited by hand.

Each table is ranked by MSE; intervals resample whole movies where the
predictions come from at least 3 (:func:`aanbench.metrics.evaluate`); a
paired bootstrap against the best row marks the rows the data cannot tell
apart from it (:func:`compare_to_best`). Published numbers for the dataset
(:mod:`aanbench.reported`) follow in their own section, never ranked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aanbench import atomicio
from aanbench.contracts import AanbenchError
from aanbench.metrics import group_spread, paired_difference


def run_labels(docs: list[dict[str, Any]]) -> list[str]:
    """A name per results document: the experiment, with its seed when the
    experiment appears more than once, and its configuration fingerprint when
    that is still ambiguous."""
    def count(keys: list) -> dict:
        out: dict = {}
        for k in keys:
            out[k] = out.get(k, 0) + 1
        return out

    exp = [d["experiment"] for d in docs]
    n_exp = count(exp)
    labels = [e if n_exp[e] == 1 else f"{e} (seed {d.get('seed')})" for e, d in zip(exp, docs)]
    n_lab = count(labels)
    labels = [lab if n_lab[lab] == 1 else f"{lab[:-1] if lab.endswith(')') else lab + ' ('}, "
              f"config {d.get('config_fingerprint', '?')[:8]})" for lab, d in zip(labels, docs)]
    n_lab = count(labels)
    seen: dict = {}
    out = []
    for lab in labels:  # identical files given twice: number them
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if n_lab[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


def _spread(d: dict[str, Any], target: str) -> dict[str, Any] | None:
    """Per-group (per-movie) spread of a run's metrics: as recorded by the
    runner, else computed from its predictions (older results files)."""
    t = d.get("targets", {}).get(target, {})
    if t.get("per_group"):
        return t["per_group"]
    preds = [p for p in d.get("predictions", []) if p.get("target") == target]
    groups = {str(p.get("group", "")) for p in preds}
    if len(groups) < 3 or "" in groups:  # as the runner: per-movie spread where movies are resampled
        return None
    return group_spread(np.array([p["y_true"] for p in preds]), np.array([p["y_pred"] for p in preds]),
                        np.array([str(p["group"]) for p in preds]))


def results_table(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (results file, target) with pooled metrics and CIs; ``run``
    names the file (see :func:`run_labels`)."""
    rows = []
    for i, (d, label) in enumerate(zip(docs, run_labels(docs))):
        for target, t in d.get("targets", {}).items():
            m = t["metrics"]
            spread = _spread(d, target)
            rows.append({
                "target": target,
                "run": label,
                "doc": i,
                "experiment": d["experiment"],
                "model": d["model"],
                "features": d["feature_set"],
                "mse": _num(m.get("mse")),
                "mse_ci": m.get("mse_ci"),
                "pearson_r": _num(m.get("pearson_r")),
                "pearson_r_ci": m.get("pearson_r_ci"),
                "ccc": _num(m.get("ccc")),
                "ccc_ci": m.get("ccc_ci"),
                "n": m.get("n"),
                "resampled": m.get("resampled", "items"),
                "n_units": m.get("n_units", m.get("n")),
                "group_r": None if spread is None else spread["pearson_r"],
                "protocol": d["protocol"],
                "folds": len(t.get("folds", {})),
                "seed": d.get("seed"),
                "config": d.get("config_fingerprint", ""),
            })
    if not rows:
        return pd.DataFrame(columns=["target", "run", "experiment", "model", "features", "mse", "pearson_r", "ccc",
                                     "n"])
    df = pd.DataFrame(rows)
    return df.sort_values(["target", "mse", "run"], kind="stable").reset_index(drop=True)


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _fmt(v: Any, ci: Any = None, digits: int = 3) -> str:
    """``v [lo, hi]`` with a sign column, so that numbers align; ``n/a`` where undefined."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    s = f"{v: .{digits}f}"
    if ci:
        s += f" [{ci[0]: .{digits}f}, {ci[1]: .{digits}f}]"
    return s


def _mean_sd(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or not np.isfinite(_num(stat.get("mean"))):
        return "n/a"
    sd = _num(stat.get("sd"))
    return f"{stat['mean']: .{digits}f} ± {sd:.{digits}f}" if np.isfinite(sd) else f"{stat['mean']: .{digits}f}"


def _table(head: list[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
    """A markdown table whose columns are padded to one width (numbers right-aligned)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in numeric else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if i in numeric else "-" * w for i, w in enumerate(widths)) + " |"
    return [line(head), rule] + [line(r) for r in rows]


def _pred_frame(d: dict[str, Any], target: str) -> pd.DataFrame:
    preds = [p for p in d.get("predictions", []) if p.get("target") == target]
    if not preds:
        return pd.DataFrame(columns=["key", "group", "y_true", "y_pred"])
    df = pd.DataFrame(preds)
    df["key"] = _keys(preds)
    return df.drop_duplicates("key").set_index("key")


def _keys(preds: list[dict[str, Any]]) -> list[str]:
    """What identifies a prediction across runs: item and start."""
    return [f"{p['item_id']}@{p.get('start')}" for p in preds]


def compare_to_best(docs: list[dict[str, Any]], sub: pd.DataFrame, target: str, n_boot: int = 1000,
                    seed: int = 0) -> dict[int, dict[str, Any]]:
    """Paired bootstrap of each row against the table's best (first) row, on
    the predictions both scored (the same items), resampling the same units
    (whole groups when there are at least 3, else items): per row index
    ``{"mse": "best"|"≈"|"worse"|"better", "pearson_r": ..., "n": n}``."""
    out: dict[int, dict[str, Any]] = {}
    if sub.empty:
        return out
    best = sub.iloc[0]
    fb = _pred_frame(docs[int(best["doc"])], target)
    for idx, r in sub.iterrows():
        if idx == sub.index[0]:
            out[idx] = {"mse": "best", "pearson_r": "best", "n": len(fb)}
            continue
        fr = _pred_frame(docs[int(r["doc"])], target)
        keys = fb.index.intersection(fr.index)
        if len(keys) < 3:
            out[idx] = {"mse": "n/a", "pearson_r": "n/a", "n": len(keys)}
            continue
        a, b = fr.loc[keys], fb.loc[keys]
        groups = b["group"].astype(str).to_numpy() if "group" in b else None
        if groups is not None and (groups == "").any():
            groups = None
        diff = paired_difference(b["y_true"].to_numpy(), a["y_pred"].to_numpy(), b["y_pred"].to_numpy(),
                                 groups=groups, n_boot=n_boot, seed=seed)
        cell = {"n": len(keys), "resampled": diff["resampled"]}
        for m, lower_better in (("mse", True), ("pearson_r", False)):
            e = diff[m]
            if e["distinguishable"] is None:
                cell[m] = "n/a"
            elif not e["distinguishable"]:
                cell[m] = "≈"
            else:
                worse = e["difference"] > 0 if lower_better else e["difference"] < 0
                cell[m] = "worse" if worse else "better"
        out[idx] = cell
    return out


def _resampling_note(sub: pd.DataFrame) -> str:
    kinds = sorted({(str(r["resampled"]), int(r["n_units"]) if pd.notna(r["n_units"]) else 0)
                    for _, r in sub.iterrows()})
    parts = [f"whole groups (movies), {k} units" if what == "groups" else f"single items, {k} units"
             for what, k in kinds]
    return "; ".join(parts)


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


def _seed_summary(docs: list[dict[str, Any]], targets: list[str]) -> list[str]:
    """Mean ± sd over seeds of each experiment configuration run with several seeds."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in docs:
        by.setdefault((d["experiment"], d.get("config_fingerprint", "")), []).append(d)
    several = {k: v for k, v in by.items() if len({d.get("seed") for d in v}) > 1}
    if not several:
        return []
    head = ["experiment", "seeds"]
    for t in targets:
        head += [f"{t} MSE", f"{t} r"]
    rows = []
    for (exp, _), ds in sorted(several.items()):
        cells = [exp, ", ".join(str(s) for s in sorted({d.get("seed") for d in ds}))]
        for t in targets:
            for m in ("mse", "pearson_r"):
                vals = np.array([_num(d["targets"].get(t, {}).get("metrics", {}).get(m)) for d in ds])
                vals = vals[np.isfinite(vals)]
                cells.append(_mean_sd({"mean": float(vals.mean()) if len(vals) else float("nan"),
                                       "sd": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")}))
        rows.append(cells)
    return ["", "## Over seeds", "", "Mean ± sd over the seeds of each experiment run with several seeds.", "",
            *_table(head, rows, set(range(2, len(head))))]


def render_markdown(dataset: str, docs: list[dict[str, Any]], figure: str | None = None, command: str = "",
                    n_boot: int = 1000) -> str:
    df = results_table(docs)
    if df.empty:
        raise AanbenchError(f"no results for dataset {dataset!r}")
    lines = [f"# Leaderboard: {dataset}", ""]
    protocols = sorted(set(df["protocol"]))
    folds = sorted({int(f) for f in df["folds"]} - {0})
    nf = f" ({', '.join(map(str, folds))} fold{'s' if folds != [1] else ''})" if folds else ""
    lines.append(
        f"Protocol: {', '.join(protocols)}{nf}. "
        "Ranked by MSE (lower is better); higher Pearson r and CCC are better. Metrics over all pooled test "
        "predictions, 95% bootstrap intervals in brackets; the resampled units are named above each table "
        "(whole movies where there are at least 3: segments of one movie are not independent).")
    lines += ["", "`vs best`: a paired bootstrap of each row against the best row, on the predictions both "
              "made and resampling the same units: `≈` where the interval of the difference (MSE, then r) holds "
              "0, so the data cannot tell the row from the best; `worse`/`better` where it does not. "
              "Per-movie r: mean ± sd over the test movies of each movie's own r."]
    if command:
        lines += ["", f"Regenerate with: `{command}`"]
    twins = _twins(dataset)
    targets = sorted(set(df["target"]), key=lambda t: (t != "valence", t))
    for target in targets:
        sub = df[df["target"] == target]
        cmp = compare_to_best(docs, sub, target, n_boot=n_boot)
        n_groups = sorted({len({p.get("group") for p in docs[int(i)].get("predictions", [])
                                if p.get("target") == target}) for i in sub["doc"]})
        lines += ["", f"## {target.capitalize()}", "",
                  f"Intervals resample {_resampling_note(sub)}; "
                  f"test predictions per row: {', '.join(str(int(n)) for n in sorted(set(sub['n'])))} "
                  f"from {', '.join(map(str, n_groups))} movie(s).", ""]
        head = ["rank", "experiment", "model", "features", "MSE", "Pearson r", "CCC", "vs best (MSE / r)",
                "per-movie r", "n"]
        rows = []
        for rank, (idx, r) in enumerate(sub.iterrows(), 1):
            name = str(r["run"])
            if r["experiment"] in twins:
                name += f" ([reported](#reported-not-re-run): {'; '.join(twins[r['experiment']])})"
            c = cmp.get(idx, {})
            vs = "best" if c.get("mse") == "best" else f"{c.get('mse', 'n/a')} / {c.get('pearson_r', 'n/a')}"
            rows.append([str(rank), name, str(r["model"]), str(r["features"]), _fmt(r["mse"], r["mse_ci"]),
                         _fmt(r["pearson_r"], r["pearson_r_ci"]), _fmt(r["ccc"], r.get("ccc_ci")), vs,
                         _mean_sd(r["group_r"]), str(int(r["n"]))])
        lines += _table(head, rows, {0, 4, 5, 6, 8, 9})
    lines += _seed_summary(docs, targets)
    if figure:
        lines += ["", "## Predicted against true values", "", f"![predicted against true]({figure})"]
    from aanbench.reported import reported_markdown

    reported = reported_markdown(dataset, tuple(targets), ran={d["experiment"] for d in docs})
    if reported:
        lines += ["", reported.rstrip("\n")]
    lines += ["", "Features per experiment:", ""]
    seen = set()
    for d in sorted(docs, key=lambda d: d["experiment"]):
        if d["experiment"] in seen:
            continue
        seen.add(d["experiment"])
        keys = ", ".join(f["key"] for f in d.get("features", []))
        lines.append(f"- {d['experiment']}: {keys} (seed {d.get('seed')})")
    return "\n".join(lines) + "\n"


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
                          for p in d.get("predictions", [])])
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
        preds = [str(p.get("group")) for d in docs for p in d.get("predictions", [])]
        if not preds:
            raise AanbenchError("no predictions to plot")
        group = sorted(set(preds))[0]
    return plot_groups(docs, out, group=group, experiments=experiments)[0]


def write_leaderboard(dataset: str, docs: list[dict[str, Any]], out_md: Path, group: str | None = None,
                      command: str = "") -> tuple[Path, Path]:
    out_md = Path(out_md)
    fig_path = out_md.with_suffix(".png")
    text = render_markdown(dataset, docs, figure=fig_path.name, command=command)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    atomicio.write_with(fig_path, lambda tmp: plot_groups(docs, tmp, group=group))
    atomicio.write_text(out_md, text)
    return out_md, fig_path
