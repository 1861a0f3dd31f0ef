"""``aanbench predict`` and ``aanbench models info``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from aanbench.cli._common import app, command, complete_datasets, console, echo_json, models_app
from aanbench.workflows import model_info, predict


@command(app, "predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="Model bundle (`aanbench train`), or a single-target model file (`run --save-models`, `models import-aan`)."),
    store: Path = typer.Option(..., "--store", help="Feature store."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset (store group) whose stored features to use.",
                                autocompletion=complete_datasets),
    out: Path = typer.Option(..., "--out", help="CSV to write: item_id,start,end,<targets>,reason."),
    segmentation: Optional[str] = typer.Option(None, "--segmentation", help="Store segmentation group (default: the dataset's, else 'default')."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Apply a model to the features stored for a dataset, rebuilding the windows
    it was trained with: one CSV row per sample, item_id,start,end (seconds; empty =
    the file's beginning/end), one column per target, and a reason for samples left
    out (a row without valid features: empty prediction). Exit 1 when any was left out."""
    got = predict(model, store, dataset, out, segmentation=segmentation)
    preds, summary = got.predictions, got.summary()
    if as_json:
        echo_json(summary)
    else:
        for note in preds.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        console.print(f"{summary['predicted']}/{summary['samples']} samples predicted "
                      f"({', '.join(preds.targets)}) -> {got.path}", highlight=False, soft_wrap=True)
        if got.n_left_out:
            console.print(f"[red]{got.n_left_out} left out[/] (reason column), first: "
                          f"{next(r for r in preds.reasons if r)}", highlight=False, soft_wrap=True)
            damaged = [r for r in preds.reasons if "checksum mismatch in " in r]
            if damaged:  # stored bytes that failed their check: name the files
                files = sorted({r.split("checksum mismatch in ", 1)[1].rstrip(")") for r in damaged})
                console.print(f"[red]{len(damaged)} of them on damaged stored rows[/] (checksum mismatch in "
                              f"{', '.join(files)}); `aanbench store verify {store}` lists them",
                              highlight=False, soft_wrap=True)
    if got.n_left_out:
        raise typer.Exit(1)


@command(models_app, "info")
def models_info_cmd(
    file: Path = typer.Argument(..., help="Model bundle or model file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """What a model file predicts, from which features and windows, trained on what."""
    info = model_info(file)
    if as_json:
        echo_json(info)
        return
    t = Table(title=f"{file}", show_header=False)
    t.add_column("field")
    t.add_column("value")
    w = info["windows"]
    feats = info["feature_keys"] or info["features"]
    rows = [
        ("format", info["format"]),
        ("model", f"{info['model']} (version {info['model_version'] or '?'}, takes {info['input']})"),
        ("predicts", ", ".join(info["targets"])),
        ("features", ", ".join(f"{k} ({d})" for k, d in zip(feats, info["dims"])) if info["dims"] else ", ".join(feats)),
        ("windows", "single rows" if int(w.get("length", 1)) == 1 else
         f"{w['length']} rows, stride {w['stride']}, within one {w['scope']}, labelled by {w['label']}, "
         f"start: {w['start']}"),
        ("standardised", ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in info["standardised"].items())),
        ("experiment", str(info["experiment"].get("name") or "?")),
        ("trained on", str(info["dataset"].get("name") or "?") + (
            f" ({info['dataset'].get('n_samples')} samples, group {info['dataset'].get('group')})"
            if info["dataset"].get("group") else "")),
        ("seed", str(info["seed"])),
    ]
    for k, v in info["fits"].items():
        rows.append((f"fit {k}", f"{v['n_fit']} fit / {v['n_val']} validation samples, best epoch {v['best_epoch']}"))
    for k in ("source_file", "source_sha256", "converted_by"):
        if k in info["provenance"]:
            rows.append((k, str(info["provenance"][k])))
    for r in rows:
        t.add_row(*r)
    console.print(t, soft_wrap=True)
