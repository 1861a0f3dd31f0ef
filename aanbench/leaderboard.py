"""Leaderboards: markdown tables (one per target, as the paper's Tables I
and II) and a figure of predicted against true values over one group (as its
Figures 5 and 6), generated from results files, never edited by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aanbench.contracts import AanbenchError


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


def results_table(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (results file, target) with pooled metrics and CIs; ``run``
    names the file (see :func:`run_labels`)."""
    rows = []
    for d, label in zip(docs, run_labels(docs)):
        for target, t in d.get("targets", {}).items():
            m = t["metrics"]
            rows.append({
                "target": target,
                "run": label,
                "experiment": d["experiment"],
                "model": d["model"],
                "features": d["feature_set"],
                "mse": m.get("mse"),
                "mse_ci": m.get("mse_ci"),
                "pearson_r": m.get("pearson_r"),
                "pearson_r_ci": m.get("pearson_r_ci"),
                "ccc": m.get("ccc"),
                "n": m.get("n"),
                "protocol": d["protocol"],
                "folds": len(t.get("folds", {})),
                "seed": d.get("seed"),
            })
    if not rows:
        return pd.DataFrame(columns=["target", "run", "experiment", "model", "features", "mse", "pearson_r", "ccc",
                                     "n"])
    df = pd.DataFrame(rows)
    return df.sort_values(["target", "mse", "run"], kind="stable").reset_index(drop=True)


def _fmt(v: Any, ci: Any = None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    s = f"{v:.{digits}f}"
    if ci:
        s += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return s


def render_markdown(dataset: str, docs: list[dict[str, Any]], figure: str | None = None, command: str = "") -> str:
    df = results_table(docs)
    if df.empty:
        raise AanbenchError(f"no results for dataset {dataset!r}")
    lines = [f"# Leaderboard: {dataset}", ""]
    protocols = sorted(set(df["protocol"]))
    lines.append(f"Protocol: {', '.join(protocols)}. Metrics over all pooled test predictions; "
                 "95% bootstrap confidence intervals in brackets. Lower MSE is better; higher r and CCC are better.")
    if command:
        lines += ["", f"Regenerate with: `{command}`"]
    for target in sorted(set(df["target"]), key=lambda t: (t != "valence", t)):
        sub = df[df["target"] == target]
        lines += ["", f"## {target.capitalize()}", "",
                  "| rank | experiment | model | features | MSE | Pearson r | CCC | n |",
                  "| ---: | --- | --- | --- | --- | --- | ---: | ---: |"]
        for rank, (_, r) in enumerate(sub.iterrows(), 1):
            lines.append(
                f"| {rank} | {r['run']} | {r['model']} | {r['features']} | {_fmt(r['mse'], r['mse_ci'])} | "
                f"{_fmt(r['pearson_r'], r['pearson_r_ci'])} | {_fmt(r['ccc'])} | {int(r['n'])} |"
            )
    if figure:
        lines += ["", "## Predicted against true values", "", f"![predicted against true]({figure})"]
    lines += ["", "Features per experiment:", ""]
    seen = set()
    for d in sorted(docs, key=lambda d: d["experiment"]):
        if d["experiment"] in seen:
            continue
        seen.add(d["experiment"])
        keys = ", ".join(f["key"] for f in d.get("features", []))
        lines.append(f"- {d['experiment']}: {keys} (seed {d.get('seed')})")
    return "\n".join(lines) + "\n"


def plot_group(docs: list[dict[str, Any]], out: Path, group: str | None = None, experiments: list[str] | None = None) -> str:
    """Predicted and true values over the items of one group, one panel per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preds = pd.DataFrame([{**p, "experiment": label} for d, label in zip(docs, run_labels(docs))
                          for p in d.get("predictions", [])])
    if preds.empty:
        raise AanbenchError("no predictions to plot")
    if group is None:
        group = sorted(preds["group"].unique())[0]
    sub = preds[preds["group"] == group]
    if sub.empty:
        raise AanbenchError(f"no predictions for group {group!r} (groups: {sorted(preds['group'].unique())})")
    exps = experiments or sorted(sub["experiment"].unique())
    targets = sorted(sub["target"].unique(), key=lambda t: (t != "valence", t))
    fig, axes = plt.subplots(len(targets), 1, figsize=(9, 3.2 * len(targets)), squeeze=False)
    for ax, target in zip(axes[:, 0], targets):
        t = sub[sub["target"] == target]
        truth = t.drop_duplicates("item_id").set_index("item_id")["y_true"]
        order = list(truth.index)
        x = np.arange(len(order))
        ax.plot(x, truth.loc[order].to_numpy(), color="black", linewidth=2.2, label="true")
        for e in exps:
            te = t[t["experiment"] == e].drop_duplicates("item_id").set_index("item_id")
            if te.empty:
                continue
            ax.plot(x, te.reindex(order)["y_pred"].to_numpy(), linewidth=1.2, alpha=0.85, label=e)
        ax.set_title(f"{target} — group {group}")
        ax.set_xlabel("sample (in dataset order)")
        ax.set_ylabel(target)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=3, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return group


def write_leaderboard(dataset: str, docs: list[dict[str, Any]], out_md: Path, group: str | None = None,
                      command: str = "") -> tuple[Path, Path]:
    out_md = Path(out_md)
    fig_path = out_md.with_suffix(".png")
    plot_group(docs, fig_path, group=group)
    text = render_markdown(dataset, docs, figure=fig_path.name, command=command)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    return out_md, fig_path
