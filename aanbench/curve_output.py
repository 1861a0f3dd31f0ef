"""The files of an emotion curve (:class:`aanbench.curve.FilmCurve`):
``<film>.curve.csv`` (comment lines, then ``start,end,<targets>,reason``),
``<film>.curve.png`` (targets over time, the valence-arousal plane) and
``<film>.curve.html`` (one self-contained page)."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import urllib.parse
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
    """``# `` comment lines (film, models, scale, warnings, notes), then
    ``start,end,<targets>,outside_range,reason`` (``outside_range``: the
    targets whose value lies outside their training labels' range, ``;``-joined)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write(f"# aanbench emotion curve of {res.film.name}: {res.window:g} s windows, hop {res.hop:g} s "
                f"(store group {res.group})\n")
        for line in res.provenance_lines():
            f.write(f"# model {line}\n")
        for t in res.targets:
            n_out = int(res.outside(t).sum())
            f.write(f"# scale {res.scale.describe(t)}"
                    + (f"; {n_out} values outside it (outside_range column)" if n_out else "") + "\n")
        for w in res.warnings:
            f.write(f"# warning: {w}\n")
        for note in res.notes:
            f.write(f"# note: {note}\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["start", "end", *res.targets, "outside_range", "reason"])
        for i in range(len(res.reasons)):
            w.writerow([number_cell(res.start[i]), number_cell(res.end[i]),
                        *(number_cell(res.values[t][i]) for t in res.targets),
                        res.outside_cell(i), res.reasons[i]])
    tmp.replace(path)
    return path


def read_curve_csv(path: str | Path):
    """The CSV as a ``pandas.DataFrame`` (comment lines skipped)."""
    import pandas as pd

    return pd.read_csv(path, comment="#", keep_default_na=False, na_values=[""])


def moving_average(t: np.ndarray, y: np.ndarray, seconds: float) -> np.ndarray:
    """Centred moving average of ``y`` (sampled at times ``t``) over
    ``seconds``, within each run of finite values: a window without a value
    (failed, NaN) ends a run, so the average never bridges it; NaN there."""
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = np.full(y.shape, np.nan)
    ok = np.isfinite(y) & np.isfinite(t)
    run = np.cumsum(~ok)  # windows of one run of finite values share a number
    for i in range(len(t)):
        if not ok[i]:
            continue
        sel = ok & (run == run[i]) & (np.abs(t - t[i]) <= seconds / 2.0 + 1e-9)
        out[i] = y[sel].mean()
    return out


def axis_range(res: FilmCurve) -> tuple[float, float] | None:
    """The y range the plots show by default: every target's training label
    range (their union) with a 10 % margin; ``None`` when no range is known."""
    rs = [res.scale.ranges[t] for t in res.targets if t in res.scale.ranges]
    if not rs:
        return None
    lo, hi = min(r[0] for r in rs), max(r[1] for r in rs)
    pad = 0.1 * (hi - lo)
    return lo - pad, hi + pad


COLOURS = {"valence": "tab:blue", "arousal": "tab:red"}


def plot_curve(res: FilmCurve, path: Path, smooth: float | None = None) -> Path:
    """The PNG: targets over time (left), the valence-arousal plane (right).

    The y-axis shows the whole training label range (:func:`axis_range`,
    dotted lines at its ends, stated in the axis label); values outside it
    are marked with a black cross, drawn at the axis edge when beyond it
    (the note under the plot gives how many and the extreme). A moving
    average never bridges a failed window (:func:`moving_average`). The
    demo warning is printed under the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    mid = (res.start + res.end) / 2.0
    yr = axis_range(res)
    footer: list[tuple[str, str]] = [(f"warning: {w}", "#aa4400") for w in res.warnings]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8 + 0.28 * (len(footer) + 1)),
                                  gridspec_kw={"width_ratios": [2.2, 1]})
    beyond: list[str] = []
    for t in res.targets:
        y = res.values[t].astype(np.float64)
        c = COLOURS.get(t)
        ax.plot(mid, y, marker="o", ms=3, lw=1.0, alpha=0.55 if smooth else 1.0, color=c, label=t)
        if smooth:
            ax.plot(mid, moving_average(mid, y, smooth), lw=2.2, color=c, label=f"{t} ({smooth:g} s average)")
        out = res.outside(t)
        if out.any():
            shown = np.clip(y[out], *yr) if yr else y[out]
            ax.scatter(mid[out], shown, marker="X", s=46, color=c, edgecolors="black", linewidths=0.8, zorder=4,
                       label=f"{t} outside the training range ({int(out.sum())})")
            if yr is not None:
                far = out & ((y < yr[0]) | (y > yr[1]))
                if far.any():
                    ext = y[far][np.argmax(np.abs(y[far]))]
                    beyond.append(f"{int(far.sum())} {t} values beyond the axis (drawn at its edge; extreme {ext:.4g})")
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
    ranges = {res.scale.ranges[t] for t in res.targets if t in res.scale.ranges}
    for lo, hi in ranges:
        for v in (lo, hi):
            ax.axhline(v, color="0.35", lw=0.9, ls=":")
    if yr is not None:
        ax.set_ylim(*yr)
    span = res.end[np.isfinite(res.end)]
    if span.size and span.max() > 0:  # the whole film, from 0 (one short window is not a 0.1-s axis around its centre)
        ax.set_xlim(0.0, float(span.max()))
    ax.set_xlabel("time in the film (s, window centres)")
    if len(ranges) == 1 and all(t in res.scale.ranges for t in res.targets):
        t0 = res.targets[0]
        lo, hi = next(iter(ranges))
        units = res.scale.units.get(t0, "")
        ax.set_ylabel(f"predicted value\n(training labels {lo:g} to {hi:g}{', ' + units if units else ''})",
                      fontsize=9)
    else:
        ax.set_ylabel("predicted value")
    for t in res.targets:
        footer.append((f"scale {res.scale.describe(t)}", "0.25"))
    footer.extend((b, "black") for b in beyond)
    ax.set_title(f"{res.window:g} s windows, hop {res.hop:g} s")
    if res.targets:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)

    if "valence" in res.values and "arousal" in res.values:
        v = res.values["valence"].astype(np.float64)
        a = res.values["arousal"].astype(np.float64)
        ok = np.isfinite(v) & np.isfinite(a) & np.isfinite(mid)
        if yr is not None:
            lo_, hi_ = yr
        else:
            lim = max(1.0, float(np.nanmax(np.abs(np.concatenate([v[ok], a[ok]])))) if ok.any() else 1.0) * 1.05
            lo_, hi_ = -lim, lim
        vr, ar = res.scale.ranges.get("valence"), res.scale.ranges.get("arousal")
        if vr and ar:
            ax2.add_patch(matplotlib.patches.Rectangle((vr[0], ar[0]), vr[1] - vr[0], ar[1] - ar[0], fill=False,
                                                       ls=":", color="0.35", lw=0.9))
        else:
            theta = np.linspace(0, 2 * np.pi, 200)
            ax2.plot(np.cos(theta), np.sin(theta), color="0.8", lw=0.8)
        ax2.axhline((ar[0] + ar[1]) / 2 if ar else 0.0, color="0.6", lw=0.6)
        ax2.axvline((vr[0] + vr[1]) / 2 if vr else 0.0, color="0.6", lw=0.6)
        if ok.sum() >= 1:
            pts = np.stack([np.clip(v[ok], lo_, hi_), np.clip(a[ok], lo_, hi_)], axis=1)
            tt = mid[ok]
            if len(pts) >= 2:
                segs = np.stack([pts[:-1], pts[1:]], axis=1)
                lc = LineCollection(segs, cmap="viridis", linewidths=1.6)
                lc.set_array((tt[:-1] + tt[1:]) / 2.0)
                ax2.add_collection(lc)
            sc = ax2.scatter(pts[:, 0], pts[:, 1], c=tt, cmap="viridis", s=14, zorder=3)
            off = (res.outside("valence") | res.outside("arousal"))[ok]
            if off.any():
                ax2.scatter(pts[off, 0], pts[off, 1], marker="X", s=46, facecolors="none", edgecolors="black",
                            linewidths=0.8, zorder=4, label="outside the training range")
                ax2.legend(loc="lower right", fontsize=7)
            fig.colorbar(sc, ax=ax2, label="time (s)")
        ax2.set_xlim(lo_, hi_)
        ax2.set_ylim(lo_, hi_)
        ax2.set_aspect("equal")
        ax2.set_xlabel("valence")
        ax2.set_ylabel("arousal")
        ax2.set_title("valence-arousal plane")
    else:
        ax2.axis("off")
        ax2.text(0.5, 0.5, "the valence-arousal plane needs\nmodels for both targets\n"
                 f"(these predict {', '.join(res.targets) or 'nothing'})", ha="center", va="center")
    fig.suptitle(res.title(), fontsize=10)
    h = fig.get_figheight()
    bottom = (0.28 * len(footer) + 0.1) / h
    fig.tight_layout(rect=(0, bottom, 1, 1))
    for k, (text, colour) in enumerate(footer):
        fig.text(0.01, bottom - (0.28 * (k + 1)) / h, text, fontsize=8.5, color=colour, ha="left", va="bottom",
                 weight="bold" if text.startswith("warning") else "normal")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
        ".mkv": "video/x-matroska", ".ogg": "video/ogg", ".avi": "video/x-msvideo", ".mpg": "video/mpeg",
        ".mpeg": "video/mpeg", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac",
        ".m4a": "audio/mp4"}


def _codecs(film: Path) -> str:
    """``h264 video, aac audio in mp4`` (what the page tells a browser that cannot play it); '' if unreadable."""
    import av

    try:
        with av.open(str(film)) as c:
            from aanbench.media import is_cover_art

            parts = [f"{s.codec_context.name} {s.type}" for s in c.streams
                     if s.type in ("video", "audio") and not is_cover_art(s)]
            return f"{', '.join(parts)} in {film.suffix.lstrip('.') or 'a file'}"
    except Exception:  # noqa: BLE001 - only a hint on the page
        return ""


def _json_number(v: float) -> float | None:
    v = float(v)
    return round(v, 6) if math.isfinite(v) else None


def page_data(res: FilmCurve) -> dict:
    """What the page's script draws: windows, values per target (``null``
    for none), outside-range flags, training ranges, reasons, colours."""
    ends = [float(x) for x in res.end if np.isfinite(x)]
    return {
        "film": res.film.name,
        "duration": max(ends) if ends else 0.0,
        "targets": res.targets,
        "start": [_json_number(x) for x in res.start],
        "end": [_json_number(x) for x in res.end],
        "values": {t: [_json_number(x) for x in res.values[t]] for t in res.targets},
        "outside": {t: [bool(x) for x in res.outside(t)] for t in res.targets},
        "ranges": {t: list(res.scale.ranges[t]) for t in res.targets if t in res.scale.ranges},
        "scale": {t: res.scale.describe(t) for t in res.targets},
        "reasons": list(res.reasons),
        "colours": {"valence": "#1f77b4", "arousal": "#d62728"},
    }


PAGE_SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("curve-data").textContent);
  var video = document.getElementById("film");
  var body = document.body;
  var NS = "http://www.w3.org/2000/svg";
  var W = 900, H = 190, L = 62, R = 12, T = 12, B = 28;
  var dur = D.duration > 0 ? D.duration : 1;
  var n = D.start.length;
  var cursors = [];
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function xOf(t) { return L + (t / dur) * (W - L - R); }
  function tOf(x) { return Math.max(0, Math.min(dur, (x - L) / (W - L - R) * dur)); }
  function fmt(v) { return v === null ? "none" : (Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 0.001) ? v.toExponential(3) : v.toFixed(3)); }
  function windowAt(t) {
    var best = -1, bd = Infinity;
    for (var i = 0; i < n; i++) {
      if (D.start[i] === null) continue;
      var d = t < D.start[i] ? D.start[i] - t : (t > D.end[i] ? t - D.end[i] : 0);
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  }
  var tip = document.getElementById("tip");
  var points = 0;
  D.targets.forEach(function (tg) {
    var box = document.createElement("div");
    box.className = "plot";
    document.getElementById("curves").appendChild(box);
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, width: "100%", "data-target": tg, role: "img",
                         "aria-label": tg + " over time"}, box);
    var vals = D.values[tg].filter(function (v) { return v !== null; });
    var rng = D.ranges[tg];
    var lo, hi;
    if (rng) { var pad = 0.1 * (rng[1] - rng[0]); lo = rng[0] - pad; hi = rng[1] + pad; }
    else { lo = Math.min.apply(null, vals.concat([-1])); hi = Math.max.apply(null, vals.concat([1])); }
    function yOf(v) { return T + (1 - (Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo)) * (H - T - B); }
    el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#bbb"}, svg);
    for (var i = 0; i < n; i++) {
      if (D.reasons[i] && D.start[i] !== null) {
        var r = el("rect", {x: xOf(D.start[i]), y: T, width: Math.max(1, xOf(D.end[i]) - xOf(D.start[i])),
                            height: H - T - B, fill: "#d9d9d9", "class": "failed"}, svg);
        el("title", {}, r).textContent = D.start[i] + "-" + D.end[i] + " s failed: " + D.reasons[i];
      }
    }
    if (rng) {
      [rng[0], rng[1]].forEach(function (v) {
        el("line", {x1: L, x2: W - R, y1: yOf(v), y2: yOf(v), stroke: "#555", "stroke-dasharray": "2,3",
                    "class": "range"}, svg);
        el("text", {x: L - 4, y: yOf(v) + 4, "text-anchor": "end", "font-size": 11}, svg).textContent = v;
      });
    }
    if (lo < 0 && hi > 0) el("line", {x1: L, x2: W - R, y1: yOf(0), y2: yOf(0), stroke: "#999", "stroke-width": 0.6}, svg);
    for (var s = 0; s <= 10; s++) {
      var tt = dur * s / 10;
      el("text", {x: xOf(tt), y: H - 8, "text-anchor": "middle", "font-size": 10}, svg).textContent = tt.toFixed(tt < 10 ? 1 : 0);
    }
    el("text", {x: 4, y: T + 10, "font-size": 12, fill: D.colours[tg] || "#333"}, svg).textContent = tg;
    // the line, broken at windows without a value (never bridging a failure)
    var run = [];
    function flush() {
      if (run.length > 1) el("polyline", {points: run.join(" "), fill: "none", stroke: D.colours[tg] || "#333",
                                          "stroke-width": 1.6, "class": "curve"}, svg);
      run = [];
    }
    for (var i = 0; i < n; i++) {
      var v = D.values[tg][i];
      if (v === null || D.start[i] === null) { flush(); continue; }
      var x = xOf((D.start[i] + D.end[i]) / 2), y = yOf(v);
      run.push(x.toFixed(1) + "," + y.toFixed(1));
      var out = D.outside[tg][i];
      el("circle", {cx: x, cy: y, r: out ? 4.5 : 2.4, fill: out ? "#000" : (D.colours[tg] || "#333"),
                    "class": out ? "point outside" : "point", "data-i": i}, svg);
      points++;
    }
    flush();
    var cur = el("line", {x1: L, x2: L, y1: T, y2: H - B, stroke: "#0a0", "stroke-width": 2, "class": "cursor"}, svg);
    cursors.push(cur);
    function timeOfEvent(ev) {
      var rect = svg.getBoundingClientRect();
      return tOf((ev.clientX - rect.left) / rect.width * W);
    }
    svg.addEventListener("mousemove", function (ev) {
      var t = timeOfEvent(ev), i = windowAt(t);
      if (i < 0) return;
      var parts = D.targets.map(function (k) {
        return k + " " + fmt(D.values[k][i]) + (D.outside[k][i] ? " (outside the training range)" : "");
      });
      tip.textContent = D.start[i] + "-" + D.end[i] + " s: " + parts.join(", ") + (D.reasons[i] ? "; failed: " + D.reasons[i] : "");
      tip.style.left = (ev.pageX + 12) + "px";
      tip.style.top = (ev.pageY + 12) + "px";
      tip.style.display = "block";
      body.setAttribute("data-hover", String(i));
    });
    svg.addEventListener("mouseleave", function () { tip.style.display = "none"; });
    svg.addEventListener("click", function (ev) {
      var t = timeOfEvent(ev);
      body.setAttribute("data-clicked", t.toFixed(3));
      moveCursor(t);
      if (video && !video.error) { try { video.currentTime = t; } catch (e) { /* not seekable yet */ } }
    });
  });
  function moveCursor(t) {
    var x = xOf(Math.max(0, Math.min(dur, t)));
    cursors.forEach(function (c) { c.setAttribute("x1", x); c.setAttribute("x2", x); });
    body.setAttribute("data-cursor", t.toFixed(3));
  }
  function follow() { moveCursor(video.currentTime); }
  function loop() { follow(); if (!video.paused && !video.ended) window.requestAnimationFrame(loop); }
  var why = document.getElementById("novideo");
  function cannotPlay(reason) {
    why.textContent = "This browser cannot play " + D.film + " (" + reason + "): the curves below still work " +
      "(hover for values, click to place the cursor); open the film in a media player to watch it.";
    why.style.display = "block";
    body.setAttribute("data-video", "error");
  }
  if (video) {
    video.addEventListener("timeupdate", follow);
    video.addEventListener("seeked", follow);
    video.addEventListener("play", loop);
    video.addEventListener("loadedmetadata", function () { body.setAttribute("data-video", "ok"); });
    video.addEventListener("error", function () {
      var e = video.error, codes = {1: "loading aborted", 2: "network error", 3: "decoding failed",
                                    4: "codec or file not supported, or the file is not found next to this page"};
      cannotPlay((e && codes[e.code] ? codes[e.code] : "unknown error") + "; " + video.getAttribute("data-codecs"));
    }, true);
    var src = video.querySelector("source");
    if (src) src.addEventListener("error", function () {
      cannotPlay("codec or file not supported, or the file is not found next to this page; " + video.getAttribute("data-codecs"));
    });
    var mime = video.getAttribute("data-mime");
    if (mime && video.canPlayType(mime) === "") cannotPlay("this browser plays no " + mime + " files; " + video.getAttribute("data-codecs"));
  }
  moveCursor(0);
  body.setAttribute("data-points", String(points));
  body.setAttribute("data-curves", "drawn");
})();
"""


def write_curve_html(res: FilmCurve, path: Path, png: Path) -> Path:
    """One self-contained page (no network): the film in an HTML5 ``<video>``
    linked by its path relative to the page (never embedded), the curves of
    every target drawn in the page (inline SVG by a small inline script:
    values on hover, failed windows shaded, values outside the training
    range marked, a cursor that follows playback, a click seeks the film;
    where the browser cannot play the film the page says why and the curves
    still work), the scale, provenance, warnings, the static PNG (base64)
    and the values."""
    e = html.escape
    path = Path(path)
    img = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    rows = []
    for i in range(len(res.reasons)):
        cells = [_shown(res.start[i]), _shown(res.end[i]), *(_shown(res.values[t][i]) for t in res.targets),
                 res.outside_cell(i), res.reasons[i]]
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    prov = []
    for m in res.models:
        p = m.payload
        prov.append(
            "<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in (
                ", ".join(p.targets), m.experiment, m.dataset, p.model, ", ".join(m.features),
                p.seed if p.seed is not None else "?", m.path)) + "</tr>")
    warn = "".join(f'<p class="warning">warning: {e(w)}</p>' for w in res.warnings)
    scale = "".join(f"<li>{e(res.scale.describe(t))}" + (
        f": <b>{int(res.outside(t).sum())} values outside it</b> (black dots)" if res.outside(t).any() else "")
        + "</li>" for t in res.targets)
    notes = "".join(f'<p class="note">note: {e(n)}</p>' for n in res.notes)
    failed = len(res.failed)
    rel = os.path.relpath(res.film.resolve(), path.parent.resolve())
    src = urllib.parse.quote(Path(rel).as_posix())
    mime = MIME.get(res.film.suffix.lower(), "")
    data = json.dumps(page_data(res), allow_nan=False).replace("</", "<\\/")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{e(res.film.name)}: emotion curve</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
.warning {{ color: #a40; font-weight: bold; }}
#novideo {{ display: none; color: #a40; border: 1px solid #a40; padding: 0.5em; }}
video {{ width: 100%; max-height: 60vh; background: #000; }}
.plot svg {{ display: block; cursor: crosshair; }}
#tip {{ position: absolute; display: none; background: #ffffe8; border: 1px solid #999; padding: 2px 6px;
        font-size: 0.85em; pointer-events: none; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>Emotion curve: {e(res.film.name)}</h1>
<p>{e(res.title())}</p>
{warn}
<video id="film" controls preload="metadata" data-mime="{e(mime)}" data-codecs="{e(_codecs(res.film))}">
<source src="{e(src)}"{f' type="{e(mime)}"' if mime else ''}>
</video>
<p id="novideo" role="alert"></p>
<p>The film ({e(rel)}, linked beside this page, not copied into it) and its curves: hover for the values, click to
seek the film there; the green line follows playback. Grey bands: failed windows. Dotted lines: the range of the
training labels; black dots: values outside it.</p>
<div id="curves"></div>
<div id="tip"></div>
<h2>Scale</h2>
<ul>{scale}</ul>
{notes}
<h2>Model</h2>
<table><tr><th>predicts</th><th>experiment</th><th>training dataset</th><th>model</th><th>features</th><th>seed</th><th>file</th></tr>
{''.join(prov)}</table>
<p>{len(res.reasons)} windows of {res.window:g} s, hop {res.hop:g} s; {failed} failed. Made by aanbench curve
(store group {e(res.group)}).</p>
<h2>Plot</h2>
<img id="curve" alt="valence and arousal of {e(res.film.name)} over time, and its path in the valence-arousal plane"
 src="data:image/png;base64,{img}">
<h2>Values</h2>
<table><tr><th>start (s)</th><th>end (s)</th>{''.join(f'<th>{e(t)}</th>' for t in res.targets)}<th>outside range</th><th>reason</th></tr>
{''.join(rows)}</table>
<script type="application/json" id="curve-data">{data}</script>
<script>{PAGE_SCRIPT}</script>
<script>
(function () {{
  var img = document.getElementById("curve");
  function mark() {{ document.body.setAttribute("data-plot", img.complete && img.naturalWidth > 0 ? "loaded" : "missing"); }}
  if (img.complete) mark(); else {{ img.onload = mark; img.onerror = mark; }}
}})();
</script>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
