"""``aanbench curve``: the emotion curve of a film."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import typer

from aanbench.cli._common import app, command, console, echo_json, err_console, item_progress, print_interrupted
from aanbench.workflows import DEMO_WARNING, check_curve_request, curve, load_models
from aanbench.workflows.curve import peek_models, start_curve_workers, start_loading


@command(app, "curve")
def curve_cmd(
    films: list[Path] = typer.Argument(..., metavar="FILM...", help="Film files (any format PyAV reads), or folders: every media file in them."),
    model: list[str] = typer.Option(..., "--model", "-m", metavar="FILE|NAME", help="Model bundle (`aanbench train`), model file (`run --save-models`, `models import-aan`) or named model (`aanbench models list`, e.g. aan-cognimuse); repeat for one per target."),
    window: float = typer.Option(5.0, "--window", metavar="SECONDS", help="Window length."),
    hop: Optional[float] = typer.Option(None, "--hop", metavar="SECONDS", help="Step between window starts (default: the window)."),
    store: Path = typer.Option(Path(".aanbench-curve/store"), "--store", help="Feature store for the films' windows (reused and resumed; features made by other versions are extracted again)."),
    out: Path = typer.Option(Path("."), "--out", metavar="DIR", help="Folder for <film>.curve.csv, .png and .html."),
    smooth: Optional[float] = typer.Option(None, "--smooth", metavar="SECONDS", help="Also draw a centred moving average over this many seconds."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Extraction workers (default: every usable CPU, as many as the windows and the available memory allow)."),
    device: str = typer.Option("cpu", "--device", help="Torch device for neural extractors."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Folder of pretrained weight files."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """The emotion curve of a film: valence and arousal window by window.

    Cuts each film into windows over the duration that every stream the model
    needs covers (the last partial window is kept when at least half a window
    long; a film shorter than a window is one window), extracts the model's features for them into the store, predicts every
    target the model has and writes <film>.curve.csv
    (start,end,<targets>,outside_range,reason), <film>.curve.png (the targets over
    time on the training labels' scale, and the valence-arousal plane) and
    <film>.curve.html (one self-contained page that plays the film, linked by
    relative path, beside its curves). A folder means every media file in it.
    Exit 1 when some windows failed or some file of a batch is not media or
    lacks a stream the model needs, e.g. a song for a model with video
    features (listed with their reason), 2 on configuration errors (a single
    such file, missing weight files, a model file that cannot predict: each named;
    a model file is checked before the extraction, or, while extraction workers
    already run, as soon as a chunk of windows is done once it has loaded).

    \b
    Example:
      aanbench weights                   # the four extractor files to download
      aanbench weights add resnet50-0676ba61.pth   # each of them, verified
      aanbench curve film.mp4 --model aan-cognimuse --smooth 30 --out curves
      aanbench train ridge demo --store feats --out demo-ridge.pt
      aanbench curve films/ --model demo-ridge.pt --window 5 --out curves
    """
    check_curve_request(films, window, hop)
    # extraction workers start while the model loads
    pool = start_curve_workers(workers, films=films, store=store, window=window, hop=hop, models=model)
    try:
        _curve(films, model, window, hop, store, out, smooth, workers, device, weights_dir, as_json, pool)
    finally:
        if pool is not None:
            pool.close()


def _curve(films: list[Path], model: list[str], window: float, hop: Optional[float], store: Path, out: Path,
           smooth: Optional[float], workers: Optional[int], device: str, weights_dir: Optional[Path], as_json: bool,
           pool: Any) -> None:
    # with workers started, the features are extracted on the model files' headers while torch loads the models
    loading = start_loading(model, peek_models(model)) if pool is not None else None
    models: Any = loading if loading is not None else load_models(model)
    if any(m.dataset == "demo" for m in (loading.headers if loading is not None else models)):
        err_console.print(f"[bold yellow]warning:[/] {DEMO_WARNING}", highlight=False, soft_wrap=True)
    state: dict[str, Any] = {"prog": None, "task": None}

    def stop() -> None:
        if state["prog"] is not None:
            state["prog"].stop()
            state["prog"] = None

    def on_film(film: Path) -> None:
        prog = item_progress(f"[bold]curve[/] {film.name}", "windows", quiet=as_json, to_stderr=as_json)
        prog.start()
        state["prog"], state["task"] = prog, prog.add_task("windows", total=None)

    def on_planned(plan: Any, skipped: list[str], backend: str) -> None:
        state["prog"].update(state["task"], total=plan.n_items_todo)

    def on_progress(res: Any) -> None:
        state["prog"].advance(state["task"], res.unit.n_items)

    def on_curve(res: Any) -> None:
        stop()
        if as_json:
            return
        if res.error:
            console.print(f"[red]{res.film}: not a film[/] ({res.error}); nothing written", highlight=False,
                          soft_wrap=True)
            return
        failed = res.failed
        for note in res.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        console.print(f"{res.film.name}: {len(res.reasons) - len(failed)}/{len(res.reasons)} windows of {window:g} s "
                      f"({', '.join(res.targets)}) -> {res.csv}, {res.png}, {res.html}", highlight=False,
                      soft_wrap=True)
        for t in res.targets:
            n_out = int(res.outside(t).sum())
            if n_out:
                console.print(f"[yellow]warning:[/] {res.scale.extrapolating(t, n_out, len(res.reasons))} "
                              f"(outside_range column)", highlight=False, soft_wrap=True)
        if failed:
            console.print(f"[red]{len(failed)} windows failed[/] (start-end s: reason):")
            for s, e, why in failed[:50]:
                span = f"{s:g}-{e:g}" if math.isfinite(s) and math.isfinite(e) else "the whole film"
                console.print(f"  {span}: {why}", highlight=False, soft_wrap=True)
            if len(failed) > 50:
                console.print(f"  ... and {len(failed) - 50} more (reason column of {res.csv})", highlight=False)

    try:
        results = curve(films, models, store=store, out_dir=out, window=window, hop=hop, smooth=smooth,
                        workers=workers, device=device, weights_dir=weights_dir, on_film=on_film, on_curve=on_curve,
                        on_planned=on_planned, on_progress=on_progress, pool=pool)
    except KeyboardInterrupt as exc:  # Ctrl-C: the chunks saved are kept; the same command resumes
        stop()
        print_interrupted(exc)
        raise typer.Exit(130) from None
    finally:
        stop()
    if as_json:
        echo_json([{"film": str(res.film), "error": res.error or None, "windows": len(res.reasons),
                    "failed": len(res.failed), "targets": res.targets,
                    "csv": str(res.csv) if res.csv else None, "png": str(res.png) if res.png else None,
                    "html": str(res.html) if res.html else None, "store_group": res.group,
                    "outside_range": {t: int(res.outside(t).sum()) for t in res.targets},
                    "failures": [list(f) for f in res.failed]} for res in results])
    refused = [res for res in results if res.error]
    if refused and not as_json:
        console.print(f"[red]{len(refused)} of {len(results)} files are not films[/] (no curve written):")
        for res in refused:
            console.print(f"  {res.film}: {res.error}", highlight=False, soft_wrap=True)
    if any(res.failed or res.error for res in results):
        raise typer.Exit(1)
