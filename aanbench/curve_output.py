"""The files of an emotion curve (:class:`aanbench.curve.FilmCurve`):
``<film>.curve.csv`` (comment lines, then ``start,end,<targets>,reason``),
``<film>.curve.png`` (targets over time, the valence-arousal plane) and
``<film>.curve.html`` (one self-contained page)."""

from __future__ import annotations

import base64
import csv
import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aanbench.csvformat import number_cell

if TYPE_CHECKING:
    from aanbench.curve import FilmCurve


def _shown(v: float) -> str:
    """A number as the HTML page shows it (6 significant digits; the CSV
    keeps every digit: :func:`aanbench.csvformat.number_cell`)."""
    v = float(v)
    return "" if not math.isfinite(v) else f"{v:.6g}"


def write_curve_csv(res: FilmCurve, path: Path) -> Path:
    """``# `` comment lines (film, models, windows), then ``start,end,<targets>,reason``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write(f"# aanbench emotion curve of {res.film.name}: {res.window:g} s windows, hop {res.hop:g} s "
                f"(store group {res.group})\n")
        for line in res.provenance_lines():
            f.write(f"# model {line}\n")
        for w in res.warnings:
            f.write(f"# warning: {w}\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["start", "end", *res.targets, "reason"])
        for i in range(len(res.reasons)):
            w.writerow([number_cell(res.start[i]), number_cell(res.end[i]),
                        *(number_cell(res.values[t][i]) for t in res.targets),
                        res.reasons[i]])
    tmp.replace(path)
    return path


def read_curve_csv(path: str | Path):
    """The CSV as a ``pandas.DataFrame`` (comment lines skipped)."""
    import pandas as pd

    return pd.read_csv(path, comment="#", keep_default_na=False, na_values=[""])


def moving_average(t: np.ndarray, y: np.ndarray, seconds: float) -> np.ndarray:
    """Centred moving average of ``y`` (sampled at times ``t``) over
    ``seconds``, ignoring NaN; NaN where no finite value lies in reach."""
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = np.full(y.shape, np.nan)
    ok = np.isfinite(y) & np.isfinite(t)
    for i in range(len(t)):
        if not np.isfinite(t[i]):
            continue
        sel = ok & (np.abs(t - t[i]) <= seconds / 2.0 + 1e-9)
        if sel.any():
            out[i] = y[sel].mean()
    return out


COLOURS = {"valence": "tab:blue", "arousal": "tab:red"}


def plot_curve(res: FilmCurve, path: Path, smooth: float | None = None) -> Path:
    """The PNG: targets over time (left), the valence-arousal plane (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    mid = (res.start + res.end) / 2.0
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2.2, 1]})
    for t in res.targets:
        y = res.values[t].astype(np.float64)
        c = COLOURS.get(t)
        ax.plot(mid, y, marker="o", ms=3, lw=1.0, alpha=0.55 if smooth else 1.0, color=c, label=t)
        if smooth:
            ax.plot(mid, moving_average(mid, y, smooth), lw=2.2, color=c, label=f"{t} ({smooth:g} s average)")
    for t in res.targets if res.truth else []:
        xs = [x for s, e, _ in res.truth for x in (s, e)]  # type: ignore[union-attr]
        ys = [lab.get(t, np.nan) for _, _, lab in res.truth for _ in (0, 1)]  # type: ignore[union-attr]
        ax.plot(xs, ys, ls="--", lw=1.2, color=COLOURS.get(t), alpha=0.8, label=f"{t} (known label)")
    bad = [i for i, r in enumerate(res.reasons) if r and np.isfinite(mid[i])]
    for i in bad:
        ax.axvspan(res.start[i], res.end[i], color="0.85", lw=0)
    if bad:
        ax.plot([], [], color="0.85", lw=6, label="failed windows")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel("time in the film (s, window centres)")
    ax.set_ylabel("predicted value")
    ax.set_title(f"{res.window:g} s windows, hop {res.hop:g} s")
    if res.targets:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)

    if "valence" in res.values and "arousal" in res.values:
        v = res.values["valence"].astype(np.float64)
        a = res.values["arousal"].astype(np.float64)
        ok = np.isfinite(v) & np.isfinite(a) & np.isfinite(mid)
        lim = max(1.0, float(np.nanmax(np.abs(np.concatenate([v[ok], a[ok]])))) if ok.any() else 1.0) * 1.05
        theta = np.linspace(0, 2 * np.pi, 200)
        ax2.plot(np.cos(theta), np.sin(theta), color="0.8", lw=0.8)
        ax2.axhline(0.0, color="0.6", lw=0.6)
        ax2.axvline(0.0, color="0.6", lw=0.6)
        if ok.sum() >= 1:
            pts = np.stack([v[ok], a[ok]], axis=1)
            tt = mid[ok]
            if len(pts) >= 2:
                segs = np.stack([pts[:-1], pts[1:]], axis=1)
                lc = LineCollection(segs, cmap="viridis", linewidths=1.6)
                lc.set_array((tt[:-1] + tt[1:]) / 2.0)
                ax2.add_collection(lc)
            sc = ax2.scatter(pts[:, 0], pts[:, 1], c=tt, cmap="viridis", s=14, zorder=3)
            fig.colorbar(sc, ax=ax2, label="time (s)")
        ax2.set_xlim(-lim, lim)
        ax2.set_ylim(-lim, lim)
        ax2.set_aspect("equal")
        ax2.set_xlabel("valence")
        ax2.set_ylabel("arousal")
        ax2.set_title("valence-arousal plane")
    else:
        ax2.axis("off")
        ax2.text(0.5, 0.5, "the valence-arousal plane needs\nmodels for both targets\n"
                 f"(these predict {', '.join(res.targets) or 'nothing'})", ha="center", va="center")
    fig.suptitle(res.title(), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_curve_html(res: FilmCurve, path: Path, png: Path) -> Path:
    """One self-contained page: the PNG as base64, provenance, warnings, values."""
    e = html.escape
    img = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    rows = []
    for i in range(len(res.reasons)):
        cells = [_shown(res.start[i]), _shown(res.end[i]), *(_shown(res.values[t][i]) for t in res.targets),
                 res.reasons[i]]
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    prov = []
    for m in res.models:
        p = m.payload
        prov.append(
            "<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in (
                ", ".join(p.targets), m.experiment, m.dataset, p.model, ", ".join(m.features),
                p.seed if p.seed is not None else "?", m.path)) + "</tr>")
    warn = "".join(f'<p class="warning">warning: {e(w)}</p>' for w in res.warnings)
    failed = len(res.failed)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{e(res.film.name)}: emotion curve</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
.warning {{ color: #a40; font-weight: bold; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>Emotion curve: {e(res.film.name)}</h1>
<p>{e(res.title())}</p>
{warn}
<img id="curve" alt="valence and arousal of {e(res.film.name)} over time, and its path in the valence-arousal plane"
 src="data:image/png;base64,{img}">
<h2>Model</h2>
<table><tr><th>predicts</th><th>experiment</th><th>training dataset</th><th>model</th><th>features</th><th>seed</th><th>file</th></tr>
{''.join(prov)}</table>
<p>{len(res.reasons)} windows of {res.window:g} s, hop {res.hop:g} s; {failed} failed. Made by aanbench curve
(store group {e(res.group)}).</p>
<h2>Values</h2>
<table><tr><th>start (s)</th><th>end (s)</th>{''.join(f'<th>{e(t)}</th>' for t in res.targets)}<th>reason</th></tr>
{''.join(rows)}</table>
<script>
(function () {{
  var img = document.getElementById("curve");
  function mark() {{ document.body.setAttribute("data-plot", img.complete && img.naturalWidth > 0 ? "loaded" : "missing"); }}
  if (img.complete) mark(); else {{ img.onload = mark; img.onerror = mark; }}
}})();
</script>
</body></html>
"""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
