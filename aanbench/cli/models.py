"""``aanbench predict``, ``aanbench models list`` and ``aanbench models info``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from aanbench.cli._common import (app, command, complete_datasets, console, echo_json, err_console, fit_text,
                                  models_app)
from aanbench.workflows import model_info, named_models, predict

MODEL_HELP = ("Model bundle (`aanbench train`), a single-target model file (`run --save-models`, "
              "`models import-aan`), or a named model (`aanbench models list`, e.g. aan-cognimuse).")


def complete_models(incomplete: str) -> list[str]:
    try:
        return [m["name"] for m in named_models() if m["name"].startswith(incomplete)]
    except Exception:  # completion must never fail loudly
        return []


@command(app, "predict")
def predict_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP, metavar="MODEL", autocompletion=complete_models),
    store: Path = typer.Option(..., "--store", help="Feature store."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset (store group) whose stored features to use.",
                                autocompletion=complete_datasets),
    out: Path = typer.Option(..., "--out", help="CSV to write: item_id,start,end,<targets>[,<target>_label...,split,group],reason."),
    segmentation: Optional[str] = typer.Option(None, "--segmentation", help="Store segmentation group (default: the dataset's, else 'default')."),
    with_labels: bool = typer.Option(False, "--with-labels", help="Also write each sample's label (<target>_label), split and group (movie) where the store holds them, so the CSV can be scored."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Apply a model to the features stored for a dataset, rebuilding the windows
    it was trained with: one CSV row per sample, item_id,start,end (seconds; empty =
    the file's beginning/end), one column per target, and a reason for samples left
    out (a row without valid features: empty prediction). Exit 1 when any was left out.
    A model trained on the generated demo gets a warning, as in `curve`, and so
    does each target with predictions outside its training labels' range (the
    model is extrapolating).

    \b
    Examples:
      aanbench predict demo-ridge.pt --store feats --dataset demo --out p.csv --with-labels
      aanbench predict aan-cognimuse --store feats --dataset cognimuse --out p.csv"""
    got = predict(model, store, dataset, out, segmentation=segmentation, with_labels=with_labels)
    preds, summary = got.predictions, got.summary()
    for w in got.warnings:
        err_console.print(f"[bold yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
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


@command(models_app, "list")
def models_list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """The named models shipped with aanbench (use the name wherever a model file
    goes: `predict`, `curve --model`, `models info`): what each predicts, from which
    features, trained on what, its label range, licence and attribution. They
    need the extractors' pretrained weight files (`aanbench weights`)."""
    rows = named_models()
    if as_json:
        echo_json(rows)
        return
    t = Table(title="named models (details below; --json for scripts)")
    for c in ("name", "predicts", "features", "trained on", "label range", "licence"):
        t.add_column(c, no_wrap=c in ("name", "label range"))
    for r in rows:
        lo, hi = r["label_range"]
        t.add_row(r["name"], ", ".join(r["predicts"]), ", ".join(r["features"]),
                  f"{r['dataset']} ({r['protocol']})", f"{lo:g} to {hi:g}", r["licence"])
    console.print(t, highlight=False)
    for r in rows:
        lo, hi = r["label_range"]
        console.print(f"\n{r['name']}: {r['summary']}\n  training data: {r['training_data']}\n"
                      f"  labels: {lo:g} to {hi:g}, {r['label_units']}\n  attribution: {r['attribution']}\n"
                      f"  licence: {r['licence']} ({r['licence_file']})", highlight=False, soft_wrap=True,
                      markup=False)
    console.print("\nThey need the extractors' weight files: `aanbench weights` lists them, "
                  "`aanbench weights add FOLDER` places a folder of downloads.", highlight=False, soft_wrap=True,
                  markup=False)


@command(models_app, "info")
def models_info_cmd(
    file: str = typer.Argument(..., help="Model bundle, model file or named model (`aanbench models list`).",
                               metavar="MODEL", autocompletion=complete_models),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """What a model file or named model predicts, from which features and windows,
    trained on what (a named model: also its training data, label range, licence)."""
    info = model_info(file)
    if as_json:
        echo_json(info)
        return
    t = Table(title=f"{info['file']}", show_header=False)
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
            f" ({_trained_samples(info)} samples, group {info['dataset'].get('group')})"
            if info["dataset"].get("group") else "")),
        ("seed", str(info["seed"])),
    ]
    for k, v in info["fits"].items():
        rows.append((f"fit {k}", fit_text(v)))
    for k in ("source_file", "source_sha256", "converted_by"):
        if k in info["provenance"]:
            rows.append((k, str(info["provenance"][k])))
    named = info.get("named")
    if named:
        lo, hi = named["label_range"]
        rows += [("named model", f"{named['name']}: {named['summary']}"),
                 ("training data", named["training_data"]),
                 ("label range", f"{lo:g} to {hi:g} ({named['label_units']})"),
                 ("licence", f"{named['licence']} ({named['licence_file']})"),
                 ("attribution", named["attribution"])]
    for r in rows:
        t.add_row(*r)
    console.print(t, soft_wrap=True)


def _trained_samples(info: dict[str, Any]) -> str:
    """``96 of its 120`` (the protocol's training pool: fit and validation
    samples, the most any target used) where the fits say, else the dataset's samples."""
    n = info["dataset"].get("n_samples")
    used = [int(f.get("n_fit") or 0) + int(f.get("n_val") or 0) for f in (info.get("fits") or {}).values()]
    if used and n is not None and max(used) < int(n):
        return f"{max(used)} of its {n}"
    return str(n)
