"""The emotion curve of a film: valence and arousal window by window.

:func:`film_curve` is what ``aanbench curve`` runs; ``demo`` and notebooks
call it the same way::

    from aanbench.curve import film_curve
    from aanbench.modelfile import load_any

    res = film_curve("film.mp4", [load_any("model.pt")], store="curve-store", out_dir="curves")
    res.csv, res.png, res.html, res.failed

Steps: the film is cut into windows by the ``files`` dataset (``window``,
``hop`` seconds; the last partial window is kept when at least half a
window long); the models' features are extracted for those windows into
the store (one group per film, ``files/<segmentation>``, so a rerun reuses
and resumes it; windows are decoded in one pass, see
:mod:`aanbench.filmdecode`); every target of every model is predicted.
Sequence models get windows of the length, scope and labelling their
bundle's sample spec says, with a stride of one window and the film's
first window repeated in front (``start = pad``), so every window has a
prediction. Then per film:

* ``<film>.curve.csv``: comment lines (``#``) naming the film, the models'
  experiment, training dataset, features and seed, then
  ``start,end,<targets>,reason`` (seconds; empty values and a reason for
  windows that failed);
* ``<film>.curve.png``: the targets over time (window centres, seconds),
  an optional centred moving average (``smooth`` seconds), and the
  valence-arousal plane with the path coloured by time;
* ``<film>.curve.html``: one self-contained page (the PNG embedded as
  base64, no network at view time) with the plot, the provenance and the
  values.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from aanbench.contracts import AanbenchError, SequenceSpec
from aanbench.csvformat import number_cell

if TYPE_CHECKING:
    from aanbench.bundle import ModelBundle

DEMO_WARNING = ("this model was trained on the generated demo dataset: its predictions mean nothing for real "
                "films (it only knows the demo's synthetic shapes and chords)")


# --------------------------------------------------------------------------
# Models


@dataclass
class CurveModel:
    """One loaded model file (:func:`aanbench.modelfile.load_any`) and where it came from."""

    payload: ModelBundle
    path: str = ""

    @property
    def experiment(self) -> str:
        return str(self.payload.experiment.get("name") or "?")

    @property
    def dataset(self) -> str:
        return str(self.payload.dataset.get("name") or "?")

    @property
    def features(self) -> list[str]:
        return self.payload.input_names

    def describe(self) -> str:
        seed = self.payload.seed
        return (f"{', '.join(self.payload.targets)}: experiment {self.experiment}, trained on {self.dataset}, "
                f"model {self.payload.model}, features {', '.join(self.features)}, seed "
                f"{seed if seed is not None else '?'}" + (f" ({self.path})" if self.path else ""))


def load_models(paths: Sequence[str | Path]) -> list[CurveModel]:
    """Load model files; two files predicting the same target are refused."""
    from aanbench.modelfile import load_any

    if not paths:
        raise AanbenchError("curve needs a model (--model BUNDLE)")
    models = [CurveModel(load_any(p), str(p)) for p in paths]
    seen: dict[str, str] = {}
    for m in models:
        for t in m.payload.targets:
            if t in seen:
                raise AanbenchError(f"{m.path} and {seen[t]} both predict {t}; give one model per target")
            seen[t] = m.path
    return models


def demo_warnings(models: Sequence[CurveModel]) -> list[str]:
    return [f"{m.path or m.experiment}: {DEMO_WARNING}" for m in models if m.dataset == "demo"]


# --------------------------------------------------------------------------
# The film's windows in the store


def film_segmentation(film: Path, window: float, hop: float) -> str:
    """Store segmentation of ``film``'s windows: ``curve-<stem>-<hash of its
    absolute path and size>-w<window>-h<hop>`` (one group per film and
    windowing; a film replaced by another of another size gets a new group)."""
    film = Path(film).resolve()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", film.stem)[:40] or "film"
    size = film.stat().st_size if film.exists() else 0
    digest = hashlib.sha256(f"{film}\t{size}".encode()).hexdigest()[:8]

    def lab(x: float) -> str:
        return f"{x:.3f}".rstrip("0").rstrip(".")

    return f"curve-{stem}-{digest}-w{lab(window)}-h{lab(hop)}"


def film_dataset(film: Path, window: float, hop: float):
    """The ``files`` dataset configured for ``film``'s windows."""
    from aanbench.plugin_manager import get_plugins

    plugins = get_plugins()
    if "files" not in plugins.datasets:
        raise AanbenchError("curve needs the `files` dataset plugin, which is not installed (see `aanbench plugins`)")
    return plugins.dataset("files").configure(window=window, hop=hop,
                                              segmentation=film_segmentation(film, window, hop))


def _features_to_extract(models: Sequence[CurveModel], store: Path, ds, plugins) -> list[str]:
    """Extractor names whose arrays for this film are missing or not done
    (features already complete in the store need no extractor, nor its weights)."""
    from aanbench.store import FeatureStore

    names: list[str] = []
    for m in models:
        for n in m.payload.features:
            if n not in names:
                names.append(n)
    group = None
    if (Path(store) / "zarr.json").exists():
        try:
            group = FeatureStore(store, mode="r").open_group(ds.name, ds.segmentation)
        except AanbenchError:
            group = None
    if group is None:
        return names
    keys = set(group.feature_keys())
    todo = []
    for n in names:
        trained = [k for m in models for k, f in zip(m.payload.feature_keys, m.payload.features)
                   if f == n and k]
        cand = [k for k in trained if k in keys]
        if not cand:  # as predict resolves it: the installed version if stored, else the only one stored
            ex = plugins.extractors.get(n)
            try:
                cand = [group.resolve_feature(n, ex.version if ex is not None else None).key]
            except AanbenchError:
                cand = []
        if not cand or not group.feature(cand[0]).done().all():
            todo.append(n)
    return todo


# --------------------------------------------------------------------------
# Result


@dataclass
class FilmCurve:
    """The curve of one film: windows (``start``, ``end`` float64 seconds, NaN
    when the film could not be windowed), one ``float32`` array per target
    (NaN where left out), a reason per window ('' when predicted), and the
    files written."""

    film: Path
    start: np.ndarray
    end: np.ndarray
    values: dict[str, np.ndarray]
    reasons: list[str]
    models: list[CurveModel]
    window: float
    hop: float
    group: str = ""
    csv: Path | None = None
    png: Path | None = None
    html: Path | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extraction_seconds: float = 0.0
    truth: list[tuple[float, float, dict[str, float]]] | None = None  # known labels (demo films), drawn dashed

    @property
    def targets(self) -> list[str]:
        return list(self.values)

    @property
    def failed(self) -> list[tuple[float, float, str]]:
        return [(float(self.start[i]), float(self.end[i]), r) for i, r in enumerate(self.reasons) if r]

    def provenance_lines(self) -> list[str]:
        return [m.describe() for m in self.models]

    def title(self) -> str:
        who = "; ".join(f"{m.experiment} trained on {m.dataset}" for m in self.models)
        return f"{self.film.name}: {who}"


def film_curve(
    film: str | Path,
    models: Sequence[CurveModel],
    *,
    store: str | Path,
    out_dir: str | Path,
    window: float = 5.0,
    hop: float | None = None,
    smooth: float | None = None,
    workers: int = 1,
    chunk_rows: int = 32,
    batch_size: int = 8,
    device: str = "cpu",
    weights_dir: Path | None = None,
    on_planned: Callable[[Any, list[str], str], None] | None = None,
    on_progress: Callable[[Any], None] | None = None,
    truth: list[tuple[float, float, dict[str, float]]] | None = None,
) -> FilmCurve:
    """Extract, predict and write the curve of ``film`` (see the module's docstring).

    ``truth``: known labels as ``(start, end, {target: value})`` spans (a
    film joined from labelled clips), drawn as dashed steps in the plot.

    ``on_planned(plan, skipped, backend)`` and ``on_progress(unit_result)``
    are :func:`aanbench.extraction.extract_dataset`'s callbacks (one unit
    is a chunk of ``chunk_rows`` windows)."""
    import time

    from aanbench.extraction import extract_dataset
    from aanbench.plugin_manager import get_plugins
    from aanbench.predict import predict_group
    from aanbench.store import FeatureStore

    film = Path(film)
    if not film.is_file():
        raise AanbenchError(f"{film}: no such film (a media file is expected)")
    hop = float(hop if hop is not None else window)
    window = float(window)
    if smooth is not None and not (smooth > 0 and math.isfinite(smooth)):
        raise AanbenchError(f"--smooth must be positive seconds, not {smooth!r}")
    plugins = get_plugins()
    ds = film_dataset(film, window, hop)
    todo = _features_to_extract(models, Path(store), ds, plugins)
    t0 = time.perf_counter()
    if todo:
        extract_dataset(ds, film, Path(store), todo, workers=workers, chunk_rows=chunk_rows, batch_size=batch_size,
                        device=device, weights_dir=weights_dir, on_planned=on_planned, on_progress=on_progress)
    seconds = time.perf_counter() - t0
    group = FeatureStore(store, mode="r").open_group(ds.name, ds.segmentation)
    table = group.item_table()
    n = len(table)
    row_of = {sid: i for i, sid in enumerate(table["id"])}
    values: dict[str, np.ndarray] = {}
    reasons = [""] * n
    notes: list[str] = []
    for m in models:
        payload = m.payload
        spec = payload.samples
        if not spec.is_rows:
            payload = payload.with_samples(SequenceSpec(spec.length, 1, spec.scope, spec.label, "pad"))
            notes.append(f"{m.path or m.experiment}: sequences of {spec.length} windows, one per window "
                         "(the film's first window repeated in front)")
        preds = predict_group(payload, group, plugins)
        notes.extend(preds.notes)
        for t in preds.targets:
            col = np.full(n, np.nan, dtype=np.float32)
            for j, sid in enumerate(preds.ids):
                i = row_of.get(sid)
                if i is None:
                    continue
                col[i] = preds.values[t][j]
                if preds.reasons[j] and preds.reasons[j] not in reasons[i]:
                    reasons[i] = f"{reasons[i]}; {preds.reasons[j]}" if reasons[i] else preds.reasons[j]
            values[t] = col
    for i in range(n):
        if not reasons[i] and any(not np.isfinite(v[i]) for v in values.values()):
            reasons[i] = "no prediction"
    res = FilmCurve(film=film, start=table["start"].to_numpy(np.float64), end=table["end"].to_numpy(np.float64),
                    values=values, reasons=reasons, models=list(models), window=window, hop=hop, group=group.path,
                    warnings=demo_warnings(models), notes=list(dict.fromkeys(notes)), extraction_seconds=seconds,
                    truth=truth)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res.csv = write_curve_csv(res, out / f"{film.name}.curve.csv")
    res.png = plot_curve(res, out / f"{film.name}.curve.png", smooth=smooth)
    res.html = write_curve_html(res, out / f"{film.name}.curve.html", res.png)
    return res


# --------------------------------------------------------------------------
# Outputs


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
                        *(number_cell(res.values[t][i]) for t in res.targets), res.reasons[i]])
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


# --------------------------------------------------------------------------
# Films from clips (tests, benchmarks, the demo)


def write_film(path: str | Path, sources: Iterable[str | Path], *, fps: float = 25.0, rate: int = 16000,
               size: tuple[int, int] | None = None, crf: int = 23,
               spans: list[tuple[float, float]] | None = None) -> Path:
    """Join media files into one MP4 (H.264 + AAC mono), decoding and encoding
    them one after another, so memory does not grow with the film's length.

    Every source must have video and audio; frames are re-timed at ``fps``
    (a source at another rate is not resampled: its frames are taken one
    by one) and scaled to ``size`` (width, height; default: the first
    source's); audio is resampled to mono ``rate`` Hz. ``spans``, when
    given, gets each source's ``(start, end)`` in the film (seconds).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".part")
    n_frames = 0
    n_samples = 0
    pending = np.zeros(0, np.float32)
    AAC = 1024
    with av.open(str(tmp), mode="w", format="mp4") as out:
        vs = None
        as_ = out.add_stream("aac", rate=rate)
        as_.layout = "mono"
        as_.thread_count = 1

        def push_audio(block: np.ndarray) -> None:
            nonlocal n_samples
            af = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="fltp", layout="mono")
            af.sample_rate = rate
            af.pts = n_samples
            af.time_base = Fraction(1, rate)
            n_samples += block.size
            for pkt in as_.encode(af):
                out.mux(pkt)

        for src in sources:
            first_frame = n_frames
            with av.open(str(src)) as inp:
                if not inp.streams.video or not inp.streams.audio:
                    raise AanbenchError(f"{src}: a film source needs video and audio")
                for frame in inp.decode(inp.streams.video[0]):
                    if vs is None:
                        w, h = size or (frame.width, frame.height)
                        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                        vs.width, vs.height = w - w % 2, h - h % 2
                        vs.pix_fmt = "yuv420p"
                        vs.thread_count = 1
                        vs.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
                    img = frame.to_ndarray(format="rgb24", width=vs.width, height=vs.height)
                    vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                    vf.pts = n_frames
                    n_frames += 1
                    for pkt in vs.encode(vf):
                        out.mux(pkt)
            with av.open(str(src)) as inp:
                rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
                chunks = [pending]
                for frame in inp.decode(inp.streams.audio[0]):
                    chunks.extend(rf.to_ndarray().reshape(-1) for rf in rs.resample(frame))
                chunks.extend(rf.to_ndarray().reshape(-1) for rf in rs.resample(None))
                sig = np.concatenate(chunks).astype(np.float32)
                # keep audio aligned with the video: this source's audio lasts as long as its frames
                target = int(round(n_frames / fps * rate)) - n_samples
                sig = sig[:target] if sig.size >= target else np.pad(sig, (0, target - sig.size))
                whole = (sig.size // AAC) * AAC
                for off in range(0, whole, AAC):
                    push_audio(np.ascontiguousarray(sig[off:off + AAC]))
                pending = sig[whole:]
            if spans is not None:
                spans.append((first_frame / fps, n_frames / fps))
        if vs is None:
            raise AanbenchError("write_film: no sources")
        if pending.size:
            push_audio(np.ascontiguousarray(pending))
        for pkt in vs.encode(None):
            out.mux(pkt)
        for pkt in as_.encode(None):
            out.mux(pkt)
    tmp.replace(path)
    return path


def demo_film(data: str | Path, out: str | Path, *, movies: Sequence[str] | None = None,
              split: str = "test") -> tuple[Path, list[tuple[float, float, dict[str, float]]]]:
    """Join the clips of the generated demo dataset in ``data`` (its
    ``split`` movies, or ``movies``) into one film ``out``; returns the film
    and its true labels per clip: ``(start, end, {valence, arousal})``."""
    from aanbench.plugin_manager import get_plugins

    items = get_plugins().dataset("demo").items(Path(data))
    chosen = [it for it in items if (it.group in movies if movies else it.split == split)]
    if not chosen:
        raise AanbenchError(f"{data}: no demo clips for {'movies ' + ', '.join(movies) if movies else split}")
    spans: list[tuple[float, float]] = []
    film = write_film(out, [it.path for it in chosen], spans=spans)
    return film, [(round(s, 3), round(e, 3), dict(it.labels)) for (s, e), it in zip(spans, chosen)]


def demo_curve(workdir: str | Path, store: str | Path, *, data: str | Path | None = None,
               experiment: str = "ridge", window: float = 4.0,
               registry: Path | None = None, on_progress: Callable[[Any], None] | None = None) -> FilmCurve:
    """For ``aanbench demo``'s last step: train ``experiment`` on the demo's
    training movies (from the demo ``store``), join the test movies' clips
    into one film and draw its curve into ``workdir/curve/``. Demo clips
    last 4 s, so the default 4 s windows are the clips and the CSV can be
    compared with the clips' labels (``workdir/curve/truth.csv``)."""
    from aanbench.modelfile import load_any, save_bundle
    from aanbench.plugin_manager import get_plugins
    from aanbench.registry import load_registry
    from aanbench.runner import train_bundle
    from aanbench.store import FeatureStore

    workdir = Path(workdir)
    data = Path(data) if data is not None else workdir / "data"
    out = workdir / "curve"
    out.mkdir(parents=True, exist_ok=True)
    plugins = get_plugins()
    ds = plugins.dataset("demo")
    bundle = out / f"demo-{experiment}.pt"
    if not bundle.is_file():
        exp = load_registry(registry).experiment(experiment, "demo")
        group = FeatureStore(store, mode="r").open_group(ds.name, ds.segmentation)
        save_bundle(bundle, train_bundle(exp, ds, group, plugins))
    film, truth = demo_film(data, out / "demo-test-movies.mp4")
    with open(out / "truth.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["start", "end", "valence", "arousal"])
        for s, e_, lab in truth:
            w.writerow([f"{s:g}", f"{e_:g}", f"{lab['valence']:.6g}", f"{lab['arousal']:.6g}"])
    return film_curve(film, [CurveModel(load_any(bundle), str(bundle))], store=Path(store).with_name(
        Path(store).name + "-curve"), out_dir=out, window=window, hop=window, smooth=3 * window,
        on_progress=on_progress, truth=truth)
