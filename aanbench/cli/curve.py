"""``aanbench curve``: the emotion curve of a film."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from aanbench.cli._common import app, command, console, echo_json, err_console, item_progress, print_interrupted
from aanbench.workflows import DEMO_WARNING, check_curve_request, curve, load_models


@command(app, "curve")
def curve_cmd(
    films: list[Path] = typer.Argument(..., metavar="FILM...", help="Film files (any format PyAV reads)."),
    model: list[Path] = typer.Option(..., "--model", metavar="BUNDLE", help="Model bundle (`aanbench train`) or model file (`run --save-models`, `models import-aan`); repeat for one file per target."),
    window: float = typer.Option(5.0, "--window", metavar="SECONDS", help="Window length."),
    hop: Optional[float] = typer.Option(None, "--hop", metavar="SECONDS", help="Step between window starts (default: the window)."),
    store: Path = typer.Option(Path(".aanbench-curve/store"), "--store", help="Feature store for the films' windows (reused and resumed)."),
    out: Path = typer.Option(Path("."), "--out", metavar="DIR", help="Folder for <film>.curve.csv, .png and .html."),
    smooth: Optional[float] = typer.Option(None, "--smooth", metavar="SECONDS", help="Also draw a centred moving average over this many seconds."),
    workers: int = typer.Option(1, "--workers", "-j", help="Extraction workers."),
    device: str = typer.Option("cpu", "--device", help="Torch device for neural extractors."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Folder of pretrained weight files."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """The emotion curve of a film: valence and arousal window by window.

    Cuts each film into windows (the last partial window is kept when at least
    half a window long), extracts the model's features for them into the store,
    predicts every target the model has and writes <film>.curve.csv
    (start,end,<targets>,reason), <film>.curve.png (the targets over time and the
    valence-arousal plane) and <film>.curve.html (one self-contained page). Exit 1
    when some windows failed (listed with their reason), 2 on configuration errors.

    \b
    Example:
      aanbench train ridge demo --store feats --out demo-ridge.pt
      aanbench curve film.mp4 --model demo-ridge.pt --window 5 --smooth 30 --out curves
    """
    check_curve_request(films, window, hop)
    models = load_models(model)
    if any(m.dataset == "demo" for m in models):
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
        failed = res.failed
        for note in res.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        console.print(f"{res.film.name}: {len(res.reasons) - len(failed)}/{len(res.reasons)} windows of {window:g} s "
                      f"({', '.join(res.targets)}) -> {res.csv}, {res.png}, {res.html}", highlight=False,
                      soft_wrap=True)
        if failed:
            console.print(f"[red]{len(failed)} windows failed[/] (start-end s: reason):")
            for s, e, why in failed[:50]:
                console.print(f"  {s:g}-{e:g}: {why}", highlight=False, soft_wrap=True)
            if len(failed) > 50:
                console.print(f"  ... and {len(failed) - 50} more (reason column of {res.csv})", highlight=False)

    try:
        results = curve(films, models, store=store, out_dir=out, window=window, hop=hop, smooth=smooth,
                        workers=workers, device=device, weights_dir=weights_dir, on_film=on_film, on_curve=on_curve,
                        on_planned=on_planned, on_progress=on_progress)
    except KeyboardInterrupt as exc:  # Ctrl-C: the chunks saved are kept; the same command resumes
        stop()
        print_interrupted(exc)
        raise typer.Exit(130) from None
    finally:
        stop()
    if as_json:
        echo_json([{"film": str(res.film), "windows": len(res.reasons), "failed": len(res.failed),
                    "targets": res.targets, "csv": str(res.csv), "png": str(res.png), "html": str(res.html),
                    "store_group": res.group, "failures": [list(f) for f in res.failed]} for res in results])
    if any(res.failed for res in results):
        raise typer.Exit(1)
