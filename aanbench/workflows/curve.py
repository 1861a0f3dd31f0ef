"""The ``curve`` workflow: the emotion curve of a film, window by window.

Steps: a folder means every media file below it (:func:`media_files`); a
file that is not media, or lacks a stream the models need, is refused
(:func:`film_problem`: alone, an error;
in a batch, a result with ``error`` and no files). Each film is cut into
windows by the ``files`` dataset (``window``, ``hop`` seconds) over the
duration that every stream the models' extractors need covers
(:func:`model_streams`; the last partial window is kept when at least half
a window long); the weight files of the extractors whose features the
store lacks are checked before any work (:func:`check_curve_weights`); the
features are extracted for those windows into the store (one group per
film, ``files/<segmentation>``, so a rerun reuses and resumes it; windows
are decoded in one pass, see :mod:`aanbench.filmdecode`; by default with
every usable CPU, :func:`default_workers`); every target of every model is
predicted. Sequence models get windows of the length, scope and labelling
their bundle's sample spec says, with a stride of one window and the film's
first window repeated in front (``start = pad``), so every window has a
prediction. The training labels' range per target
(:func:`aanbench.curve.label_scale`) is the plots' scale. Then per film
(:mod:`aanbench.curve_output`):

* ``<film>.curve.csv``: comment lines (``#``) naming the film, the models'
  experiment, training dataset, features and seed, each target's scale,
  then ``start,end,<targets>,outside_range,reason`` (seconds; empty values
  and a reason for windows that failed);
* ``<film>.curve.png``: the targets over time (window centres) on the
  training label range, values outside it marked, an optional centred
  moving average (``smooth`` seconds) that never bridges a failed window,
  and the valence-arousal plane with the path coloured by time; warnings
  and the scale under it;
* ``<film>.curve.html``: one self-contained page: the film in an HTML5
  player (linked by relative path), the curves drawn in the page (hover,
  click to seek, a cursor following playback), the scale, provenance, the
  PNG (base64) and the values.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from aanbench.contracts import AanbenchError, SequenceSpec
from aanbench.cpus import WORKER_MEMORY  # bytes one extraction worker may use, measured high
from aanbench.curve import (CurveModel, FilmCurve, ModelsLoading, demo_warnings, label_scale, load_models,  # noqa: F401
                            peek_models, start_loading)  # re-exported for the command line
from aanbench.curve_output import plot_curve, write_curve_csv, write_curve_html
from aanbench.filmwrite import write_film


def media_files(paths: Sequence[str | Path]) -> list[Path]:
    """The films ``paths`` name: a file is itself (whatever its name; whether
    it is media is checked by :func:`film_problem`), a folder every file
    below it whose extension is a media container's (as the ``files``
    dataset lists them), sorted. A path that does not exist, or a folder
    without media files, is an :class:`AanbenchError`."""
    MEDIA_SUFFIXES = set(getattr(_files_plugin(), "media_suffixes", ()))
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES)
            if not found:
                raise AanbenchError(f"{p}: a folder without media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise AanbenchError(f"{p}: no such film (a media file or a folder of them is expected)")
    return list(dict.fromkeys(out))


def film_problem(film: Path, streams: Sequence[str] = ()) -> str:
    """Why ``film`` is not a film the models can draw (``''`` when it is): it
    cannot be opened as media, it has neither a video nor an audio stream,
    or it lacks a kind of stream of ``streams`` (what the models' features
    are extracted from, :func:`model_streams`: every window would fail)."""
    from aanbench.contracts import ItemError
    from aanbench.filmdecode import stream_durations
    from aanbench.media import COVER_ART_ONLY

    try:
        lengths = stream_durations(film)
    except ItemError as exc:
        return str(exc)
    if not lengths:
        return f"no video or audio stream: {film}"
    missing = [k for k in streams if k not in lengths]
    if missing:
        cover = f" ({COVER_ART_ONLY})" if "video" in missing and _has_cover_art(film) else ""
        return (f"no {' or '.join(missing)} stream, which the model's features need; the file has "
                f"{' and '.join(sorted(lengths))} only{cover}: {film}")
    return ""


def _has_cover_art(film: Path) -> bool:
    import av

    from aanbench.media import is_cover_art

    try:
        with av.open(str(film)) as c:
            return any(is_cover_art(s) for s in c.streams.video)
    except Exception:  # noqa: BLE001 - only a detail of a message
        return False


def check_curve_request(films: Sequence[str | Path], window: float, hop: float | None) -> None:
    """What :func:`curve` checks before any work: positive ``window`` /
    ``hop``, no two films of one name (their files would overwrite each
    other; folders are expanded first, :func:`media_files`)."""
    if window <= 0 or (hop is not None and hop <= 0):
        raise AanbenchError("--window and --hop must be positive seconds")
    names: dict[str, Path] = {}
    for film in media_files(films):
        if film.name in names and names[film.name] != film:
            raise AanbenchError(f"{names[film.name]} and {film} have the same name, so their curves would overwrite "
                                "each other: draw them with separate --out folders")
        names[film.name] = film


def curve(
    films: Sequence[str | Path],
    models: Sequence[CurveModel | str | Path] | ModelsLoading,
    *,
    store: str | Path,
    out_dir: str | Path,
    window: float = 5.0,
    hop: float | None = None,
    smooth: float | None = None,
    workers: int | None = None,
    device: str = "cpu",
    weights_dir: Path | None = None,
    on_film: Callable[[Path], None] | None = None,
    on_curve: Callable[[FilmCurve], None] | None = None,
    on_planned: Callable[[Any, list[str], str], None] | None = None,
    on_progress: Callable[[Any], None] | None = None,
    pool: Any = None,
) -> list[FilmCurve]:
    """The curve of each of ``films`` (files, or folders meaning every media
    file below them, :func:`media_files`; :func:`film_curve`) drawn with
    ``models`` (loaded :class:`CurveModel` or model file paths, or
    :class:`aanbench.curve.ModelsLoading`: the first film's features are
    extracted on the models' headers while they load), after
    :func:`check_curve_request`. ``on_film(film)`` before each film,
    ``on_curve(result)`` after it; ``on_planned`` / ``on_progress`` as in
    :func:`film_curve`. ``pool``: extraction workers already started
    (:func:`start_curve_workers`), used for every film.

    A file that is not media, or lacks a kind of stream the models'
    features are extracted from (:func:`film_problem`): when it is the only
    film asked for, an :class:`AanbenchError`; in a batch, a result with
    ``error`` set and no files, and the other films go on."""
    check_curve_request(films, window, hop)
    loading = models if isinstance(models, ModelsLoading) else None
    if loading is not None:
        models = list(loading.headers)
    elif any(not isinstance(m, CurveModel) for m in models):
        models = [m for m in models if isinstance(m, CurveModel)] + load_models(
            [m for m in models if not isinstance(m, CurveModel)])
    paths = media_files(films)
    check_curve_weights(paths, models, store=store, window=window, hop=hop, weights_dir=weights_dir)
    streams = model_streams(models)
    out = []
    for film in paths:
        if on_film is not None:
            on_film(film)
        why = film_problem(film, streams)
        if why and len(paths) == 1:
            raise AanbenchError(f"{film}: not a film the models can draw ({why}); nothing written")
        if why:
            if loading is not None:
                models, loading = loading.result(), None
            res = FilmCurve(film=film, start=np.zeros(0), end=np.zeros(0), values={}, reasons=[],
                            models=list(models), window=float(window), hop=float(hop or window), error=why)
        else:
            res = film_curve(film, models, store=store, out_dir=out_dir, window=window, hop=hop, smooth=smooth,
                             workers=workers, device=device, weights_dir=weights_dir, on_planned=on_planned,
                             on_progress=on_progress, pool=pool, loading=loading)
            if loading is not None:
                models, loading = loading.result(), None
        out.append(res)
        if on_curve is not None:
            on_curve(res)
    return out


def check_curve_weights(films: Sequence[Path], models: Sequence[CurveModel], *, store: str | Path, window: float,
                        hop: float | None, weights_dir: Path | None = None) -> None:
    """Before any work: the weight files of the extractors whose features the
    store still lacks for some of ``films`` must be in the weights folder;
    otherwise one :class:`AanbenchError` naming each missing file, its
    SHA-256, where to put it and where to get it
    (:func:`aanbench.named_models.check_weights`)."""
    from aanbench.named_models import check_weights
    from aanbench.plugin_manager import get_plugins

    plugins = get_plugins()
    streams = model_streams(models, plugins)
    hop_ = float(hop if hop is not None else window)
    todo: list[str] = []
    for film in films:
        if film_problem(film, streams):
            continue
        ds = film_dataset(film, float(window), hop_, streams)
        todo.extend(n for n in _features_to_extract(models, Path(store), ds, plugins, ds.items(film)) if n not in todo)
    if todo:
        who = ", ".join(m.path or m.experiment for m in models)
        check_weights(todo, weights_dir=weights_dir, plugins=plugins, needed_by=f"curve with {who}")


def _available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable``), ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None




def default_workers(features: Sequence[str], n_windows: int, plugins: Any = None) -> int:
    """Extraction workers for ``n_windows`` windows of the extractors
    ``features``: every usable CPU (:func:`aanbench.cpus.usable_cpus`), no
    more than there are windows, and no more than the available memory holds
    (:data:`WORKER_MEMORY` per worker: more for extractors with weight files)."""
    from aanbench.cpus import usable_cpus

    if plugins is None:
        from aanbench.plugin_manager import get_plugins

        plugins = get_plugins()
    neural = any(getattr(plugins.extractors.get(n), "weights", ()) for n in features)
    per = WORKER_MEMORY["neural" if neural else "weightfree"]
    n = min(usable_cpus(), max(1, n_windows))
    avail = _available_memory()
    if avail is not None:
        n = min(n, max(1, avail // per))
    return max(1, n)


def start_curve_workers(workers: int | None = None, *, films: Sequence[str | Path] = (), store: str | Path | None = None,
                        window: float = 5.0, hop: float | None = None, models: Sequence[str | Path] = ()) -> Any:
    """Extraction workers started now, before the model is loaded, so that
    their start (a fresh Python importing the extraction code and openSMILE,
    about 1 CPU-s each) runs beside the driver's (the model file needs torch,
    about 2 CPU-s): a :class:`aanbench.backends.local.WorkerPool` of
    ``workers`` (default: every usable CPU that the available memory holds
    at :data:`WORKER_MEMORY` ``["weightfree"]`` each), or ``None`` for fewer
    than 2. Pass it to :func:`curve` (``pool=``) and close it after.

    ``None`` too when ``models`` (the ``--model`` arguments) are not all
    model files whose headers read well (:func:`aanbench.curve.peek_models`:
    a named model, whose extractors need weight files and torch anyway, or
    a file that will likely fail to load: no workers to wait for), and when
    every one of ``films`` already has a complete group of
    windows in ``store`` (:func:`_looks_extracted`: a rerun extracts
    nothing, and workers started for nothing would slow it); should the
    model need more, :func:`film_curve` starts workers as usual. Fewer
    windows, or extractors with weight files (more memory each), use fewer
    of the pool's workers."""
    from aanbench.backends.local import WorkerPool
    from aanbench.cpus import usable_cpus

    if models and peek_models(models) is None:
        return None
    if films and store is not None and _looks_extracted(films, Path(store), window, hop):
        return None
    n = workers
    if n is None:
        n = usable_cpus()
        avail = _available_memory()
        if avail is not None:
            n = min(n, max(1, avail // WORKER_MEMORY["weightfree"]))
    if int(n) < 2:
        return None
    return WorkerPool(int(n), preload=CURVE_PRELOAD)


def _looks_extracted(films: Sequence[str | Path], store: Path, window: float, hop: float | None) -> bool:
    """Whether each film has, in ``store``, a group of its windows (for any
    of the streams a model may need) whose every feature array is done: a
    guess made before the model is loaded, for :func:`start_curve_workers`
    only (a wrong guess costs time, never a result)."""
    from aanbench.store import FeatureStore

    if not (store / "zarr.json").exists():
        return False
    try:
        paths = media_files(films)
        fs = FeatureStore(store, mode="r")
    except AanbenchError:
        return False
    hop_ = float(hop if hop is not None else window)
    for film in paths:
        for streams in (("video", "audio"), ("audio",), ("video",)):
            try:
                group = fs.open_group("files", film_segmentation(film, float(window), hop_, streams))
                keys = group.feature_keys()
                if keys and all(group.feature(k).done().all() for k in keys):
                    break
            except (AanbenchError, OSError, ValueError, KeyError):
                continue
        else:
            return False
    return True


CURVE_PRELOAD = ("aanbench.extraction_job", "aanbench.filmdecode", "aanbench.plugin_manager:get_plugins", "opensmile")


def _warm_plotting() -> Any:
    """A thread that imports matplotlib and draws a throw-away figure (fonts,
    text layout, the PNG writer: about 1 CPU-s the first time in a process)
    while the workers extract, so the curve's own PNG, drawn after them,
    does not pay it. Join it before plotting (matplotlib is not thread-safe)."""
    import threading

    def warm() -> None:
        try:
            import io

            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.collections import LineCollection  # noqa: F401

            fig, ax = plt.subplots(figsize=(2, 2))
            ax.plot([0, 1], [0, 1], marker="o")
            ax.set_title("warm-up")
            fig.tight_layout()
            fig.savefig(io.BytesIO(), format="png", dpi=30)
            plt.close(fig)
        except Exception:  # the real plot reports any problem
            pass

    t = threading.Thread(target=warm, name="aanbench-plot-warmup", daemon=True)
    t.start()
    return t


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> content digest, per process


def film_digest(film: Path) -> str:
    """The first 8 hex digits of SHA-256 over ``film``'s bytes (about 1.4 GB/s
    here; kept per process while the file's size and time are unchanged);
    that of no bytes where the file cannot be read."""
    film = Path(film)
    try:
        st = film.stat()
    except OSError:
        return hashlib.sha256(b"").hexdigest()[:8]
    key = (str(film.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        try:
            with open(film, "rb") as f:
                _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()[:8]
        except OSError:
            return hashlib.sha256(b"").hexdigest()[:8]
    return _DIGESTS[key]


def film_segmentation(film: Path, window: float, hop: float, streams: Sequence[str] = ()) -> str:
    """Store segmentation of ``film``'s windows: ``curve-<stem>-<hash of its
    content>[-<streams>]-w<window>-h<hop>`` (one group per film, windowing
    and streams planned on, ``v``/``a``/``va``). The content, not the path:
    a film moved or copied elsewhere finds its features, and a film replaced
    by another under the same name (of any size) gets a new group."""
    film = Path(film)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", film.stem)[:40] or "film"
    digest = film_digest(film)

    def lab(x: float) -> str:
        return f"{x:.3f}".rstrip("0").rstrip(".")

    tag = "".join(k[0] for k in streams)
    return f"curve-{stem}-{digest}{'-' + tag if tag else ''}-w{lab(window)}-h{lab(hop)}"


def _files_plugin():
    from aanbench.plugin_manager import get_plugins

    plugins = get_plugins()
    if "files" not in plugins.datasets:
        raise AanbenchError("curve needs the `files` dataset plugin, which is not installed (see `aanbench plugins`)")
    return plugins.dataset("files")


def film_dataset(film: Path, window: float, hop: float, streams: Sequence[str] = ()):
    """The ``files`` dataset configured for ``film``'s windows, planned on
    the duration every one of ``streams`` (``video``, ``audio``: what the
    models' extractors need, :func:`model_streams`) covers."""
    opts: dict[str, Any] = {"window": window, "hop": hop,
                            "segmentation": film_segmentation(film, window, hop, streams)}
    if streams:
        opts["streams"] = "+".join(streams)
    return _files_plugin().configure(**opts)


def model_streams(models: Sequence[CurveModel], plugins: Any = None) -> tuple[str, ...]:
    """The streams (``video``, ``audio``) the extractors of ``models``'
    features decode (an extractor that is not installed counts for none:
    its features can only come from the store)."""
    if plugins is None:
        from aanbench.plugin_manager import get_plugins

        plugins = get_plugins()
    kinds: set[str] = set()
    for m in models:
        for n in m.payload.features:
            ex = plugins.extractors.get(n)
            needs = getattr(ex, "needs", None)
            if needs is None:
                continue
            if needs.wants_video:
                kinds.add("video")
            if needs.wants_audio:
                kinds.add("audio")
    return tuple(k for k in ("video", "audio") if k in kinds)


def _replace_what_this_version_would_not_make(models: Sequence[CurveModel], store: Path, ds,
                                              items: Sequence[Any], plugins) -> list[str]:
    """Remove from the curve's store what this installation would not have
    made for a film whose windows are ``items``, so that it is extracted again rather than read as it
    was (complete) or refused (half done: the store never mixes versions):
    the film's whole group where it holds other windows than are planned now
    (after an upgrade that plans windows otherwise, e.g. a film shorter than
    a window, once one whole-file item without times, now ``[0, duration)``),
    else each array made by other versions of aanbench, its decoder, the
    libraries, the config or the weights. The store is a cache of what the
    film gives: nothing in it is lost that cannot be computed again. Returns
    the notes that say so."""
    group = _film_group(store, ds, mode="a")
    if group is None:
        return []
    if not _holds_windows(group, items):
        group.store.drop_group(ds.name, ds.segmentation)
        return [f"the store held other windows for this film ({group.n_items} stored, {len(items)} planned now, "
                "by another version of aanbench); extracted again"]
    stale = _stale_features(models, group, ds, plugins)
    for key in stale:
        group.drop_feature(key)
    return [f"{key}: the features the store held for this film were made by other versions "
            f"({', '.join(changes)}); extracted again" for key, changes in stale.items()]


def _holds_windows(group: Any, items: Sequence[Any]) -> bool:
    """Whether the film's ``group`` was made for exactly these windows."""
    from aanbench.store import items_fingerprint

    return group.attrs.get("items_sha256") == items_fingerprint(items)


def _stale_features(models: Sequence[CurveModel], group: Any, ds, plugins) -> dict[str, list[str]]:
    """``{key: what changed}`` for the film's arrays that this installation
    would not have made (:func:`aanbench.extraction.provenance_changes_in`)."""
    from aanbench.extraction import provenance_changes_in

    return provenance_changes_in(group, [n for m in models for n in m.payload.features], plugins,
                                 video_frames=getattr(ds, "video_frames", None))


def _film_group(store: Path, ds, mode: str = "r") -> Any:
    """The film's group in ``store``, or None where there is none."""
    from aanbench.store import FeatureStore

    if not (Path(store) / "zarr.json").exists():
        return None
    try:
        return FeatureStore(store, mode=mode).open_group(ds.name, ds.segmentation)
    except AanbenchError:
        return None


def _features_to_extract(models: Sequence[CurveModel], store: Path, ds, plugins, items: Sequence[Any]) -> list[str]:
    """Extractor names whose arrays for this film are missing, not done or
    made by other versions (:func:`_stale_features`), all of them where the
    film's group holds other windows (:func:`_replace_what_this_version_would_not_make`);
    features already complete in the store need no extractor, nor its weights."""
    names: list[str] = []
    for m in models:
        for n in m.payload.features:
            if n not in names:
                names.append(n)
    group = _film_group(store, ds)
    if group is None or not _holds_windows(group, items):
        return names
    keys = set(group.feature_keys())
    stale = _stale_features(models, group, ds, plugins)
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
        if not cand or cand[0] in stale or not group.feature(cand[0]).done().all():
            todo.append(n)
    return todo


def film_curve(
    film: str | Path,
    models: Sequence[CurveModel],
    *,
    store: str | Path,
    out_dir: str | Path,
    window: float = 5.0,
    hop: float | None = None,
    smooth: float | None = None,
    workers: int | None = None,
    chunk_rows: int = 32,
    batch_size: int = 8,
    device: str = "cpu",
    weights_dir: Path | None = None,
    on_planned: Callable[[Any, list[str], str], None] | None = None,
    on_progress: Callable[[Any], None] | None = None,
    truth: list[tuple[float, float, dict[str, float]]] | None = None,
    pool: Any = None,
    loading: ModelsLoading | None = None,
) -> FilmCurve:
    """Extract, predict and write the curve of ``film`` (see the module's docstring).

    ``truth``: known labels as ``(start, end, {target: value})`` spans (a
    film joined from labelled clips), drawn as dashed steps in the plot.

    ``on_planned(plan, skipped, backend)`` and ``on_progress(unit_result)``
    are :func:`aanbench.extraction.extract_dataset`'s callbacks (one unit
    is a chunk of ``chunk_rows`` windows, fewer when ``workers`` share
    the film). ``workers``: extraction workers, by default
    :func:`default_workers` (every usable CPU, memory permitting), no more
    than ``pool`` has (workers already started, :func:`start_curve_workers`;
    else they are started here). ``loading``: the models still loading
    (``models`` are then their headers, :func:`aanbench.curve.peek_model`):
    the features are extracted meanwhile, then the loaded models are
    checked against the store (anything the headers missed is extracted)
    and predict. A model that fails to load stops the extraction at the
    next finished chunk (the chunks saved stay in the store) with its
    error."""
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
    why = film_problem(film, model_streams(models, plugins))
    if why:
        raise AanbenchError(f"{film}: not a film the models can draw ({why}); nothing written")

    def extract(ms: Sequence[Any], workers: int | None) -> tuple[tuple[str, ...], Any, int | None]:
        """Extract what the store lacks for ``ms``; (streams, dataset, workers)."""
        streams = model_streams(ms, plugins)
        ds = film_dataset(film, window, hop, streams)
        items = ds.items(film)  # the film's windows, planned once
        notes.extend(_replace_what_this_version_would_not_make(ms, Path(store), ds, items, plugins))
        todo = _features_to_extract(ms, Path(store), ds, plugins, items)
        if not todo:
            return streams, ds, workers
        n_windows = len(items)
        if workers is None:
            workers = default_workers(todo, n_windows, plugins)
        workers = max(1, int(workers))
        if pool is not None:
            workers = min(workers, pool.workers)
        rows = max(1, min(chunk_rows, math.ceil(n_windows / workers)))
        warm: list[Any] = []

        def planned(plan: Any, skipped: list[str], backend: str) -> None:
            # once the work is planned (Python, under this process's interpreter lock), the
            # model loads and matplotlib warms up while the workers extract
            if loading is not None:
                loading.start()
            if workers > 1 and plan.units:
                warm.append(_warm_plotting())
            if on_planned is not None:
                on_planned(plan, skipped, backend)

        def progress(unit: Any) -> None:
            if loading is not None:  # a model file that failed to load stops the extraction now
                loading.check()
            if on_progress is not None:
                on_progress(unit)

        try:
            extract_dataset(ds, film, Path(store), todo, workers=workers, chunk_rows=rows, batch_size=batch_size,
                            device=device, weights_dir=weights_dir, on_planned=planned, on_progress=progress,
                            backend_options={"pool": pool} if pool is not None and workers > 1 else None)
        finally:
            for thread in warm:
                thread.join()
        return streams, ds, workers

    notes: list[str] = []
    t0 = time.perf_counter()
    streams, ds, used = extract(models, workers)
    if loading is not None:  # the headers served the extraction; the models now predict
        models = loading.result()
        streams, ds, _ = extract(models, used)  # nothing to do unless a header misled
    seconds = time.perf_counter() - t0
    if len(streams) > 1:
        from aanbench.filmdecode import stream_durations

        lengths = stream_durations(film)
        if len(set(round(lengths.get(k, 0.0), 2) for k in streams)) > 1:
            notes.append("the windows cover the " + f"{min(lengths.get(k, 0.0) for k in streams):.2f} s that every "
                         "stream the model needs covers (" + ", ".join(f"{k} {lengths.get(k, 0.0):.2f} s"
                                                                      for k in streams) + ")")
    group = FeatureStore(store, mode="r").open_group(ds.name, ds.segmentation)
    table = group.item_table()
    n = len(table)
    row_of = {sid: i for i, sid in enumerate(table["id"])}
    values: dict[str, np.ndarray] = {}
    reasons = [""] * n
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
                    truth=truth, scale=label_scale(models, plugins))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res.csv = write_curve_csv(res, out / f"{film.name}.curve.csv")
    res.png = plot_curve(res, out / f"{film.name}.curve.png", smooth=smooth)
    res.html = write_curve_html(res, out / f"{film.name}.curve.html", res.png)
    return res


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
               registry: Path | None = None, on_progress: Callable[[Any], None] | None = None,
               workers: int | None = None, retrain: bool = False) -> FilmCurve:
    """For ``aanbench demo``'s last step: train ``experiment`` on the demo's
    training movies (from the demo ``store``; a bundle already in
    ``workdir/curve/`` is reused unless ``retrain``), join the test movies'
    clips into one film and draw its curve into ``workdir/curve/`` (the
    film's features in the store beside ``store``, ``<store>-curve``,
    extracted by ``workers`` processes, default
    :func:`default_workers`). Demo clips last 4 s, so the default 4 s
    windows are the clips and the CSV can be compared with the clips'
    labels (``workdir/curve/truth.csv``)."""
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
    if retrain or not bundle.is_file():
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
        workers=workers, on_progress=on_progress, truth=truth)
