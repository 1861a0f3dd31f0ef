"""``aanbench store``: info, verify, import-h5, export."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from aanbench.cli._common import DATASET_HELP, command, complete_datasets, complete_extractors, console, echo_json, store_app
from aanbench.contracts import AanbenchError
from aanbench.workflows import import_h5, store_summary, verify_store


@command(store_app, "info")
def store_info(
    store: Path = typer.Argument(..., help="Feature store directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout, for scripts."),
) -> None:
    """Per array: dataset, extractor, shape, items done, and the failures (item id, reason)."""
    info = store_summary(store)
    if as_json:
        echo_json({"store": str(store), "groups": info})
        return
    if not info:
        console.print(f"{store}: empty store")
    for g in info:
        t = Table(title=f"{g['group']}  ({g['n_items']} items, chunks of {g['chunk_rows']}, labels: {', '.join(g['targets']) or 'none'})")
        for c in ("array", "shape", "items done", "ok", "failed", "source"):
            t.add_column(c, no_wrap=c == "array")
        for a in g["arrays"]:
            t.add_row(a["key"], "x".join(map(str, a["shape"])), f"{a['items_done']}/{g['n_items']}", str(a["items_ok"]),
                      str(len(a["failures"])), a["source"])
        console.print(t)
        for a in g["arrays"]:
            for f in a["failures"][:20]:
                console.print(f"  [red]{a['key']}[/] {f['item_id']}: {f['reason']}", highlight=False, soft_wrap=True)
            if len(a["failures"]) > 20:
                console.print(f"  ... {len(a['failures']) - 20} more (use --json)")


@command(store_app, "verify")
def store_verify(
    store: Path = typer.Argument(..., help="Feature store directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout, for scripts."),
) -> None:
    """Read every array and check it: metadata against the data (shape, dtype,
    row count), every chunk against its CRC32C checksum, shard files against
    their size and index. Prints one line per problem (the file and the rows
    it damages). Exit 0 when nothing is wrong, 1 otherwise. Writes nothing."""
    rep = verify_store(store)
    if as_json:
        echo_json({"store": str(store), "ok": rep.ok, "groups": rep.groups, "arrays": rep.arrays, "rows": rep.rows,
                   "damaged_rows": rep.damaged_rows, "problems": rep.problems, "unchecked": rep.unchecked})
    else:
        for line in rep.lines():
            console.print(line, highlight=False, soft_wrap=True, markup=False)
    if not rep.ok:
        raise typer.Exit(1)


@command(store_app, "import-h5")
def store_import_h5(
    file: Path = typer.Argument(..., help="HDF5 file holding an (n_items, dim) matrix."),
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP + " The rows belong to it.",
                                autocompletion=complete_datasets),
    extractor: str = typer.Option(..., "--extractor", help="Extractor name the features stand for (e.g. resnet50)."),
    key: str = typer.Option("default", "--key", help="HDF5 dataset inside the file."),
    segmentation: str = typer.Option("default", "--segmentation", help="Store segmentation group."),
) -> None:
    """Import an external feature matrix as an extractor's array (item ids = row numbers
    unless the store group already exists, in which case the row count must match)."""
    got = import_h5(file, store, dataset, extractor, key=key, segmentation=segmentation)
    console.print(f"imported {got.rows}x{got.dim} from {got.file.name} (sha256 {got.sha256[:12]}…) "
                  f"as {got.group}/features/{got.key}")


@command(store_app, "export")
def store_export(
    store: Path = typer.Argument(..., help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP, autocompletion=complete_datasets),
    out: Path = typer.Option(..., "--out", help="File to write: .parquet, .csv or .h5 (the suffix picks the format)."),
    extractors: Optional[str] = typer.Option(None, "--extractors", "-e", autocompletion=complete_extractors,
                                             help="Comma-separated extractor names (or NAME@VERSION). Default: every stored array."),
    segmentation: str = typer.Option("default", "--segmentation", help="Store segmentation group."),
    fmt: Optional[str] = typer.Option(None, "--format", help="parquet, csv or hdf5, when the suffix does not say.",
                                      metavar="FORMAT"),
    valid_only: bool = typer.Option(False, "--valid-only", help="Only the rows valid for every extractor."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists (without it an existing file is refused, exit 2)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON, for scripts."),
) -> None:
    """Export a store group's features, item table and labels for other tools.

    Parquet and CSV: one row per item (id, group, split, path, start, end,
    labels, then NAME_0, NAME_1, ... per extractor; NaN where an item
    failed). HDF5: items/, labels/, features/NAME@VERSION and ok/NAME@VERSION
    datasets (re-importable with `aanbench store import-h5 --key`).
    An existing OUT is refused unless --force; the file is written under a
    temporary name and renamed, so a crash never leaves half a file.
    The same from Python: `aanbench.api.open_features`.
    """
    from aanbench.api import export_features, export_format, open_features

    export_format(out, fmt)  # a wrong suffix fails before any reading
    if out.exists() and not force:  # before any reading, too
        raise AanbenchError(f"{out}: exists; not overwritten (use --force to replace it)")
    feats = open_features(store, dataset, extractors, segmentation=segmentation)
    path, kind, rows = export_features(feats, out, fmt, valid_only=valid_only, overwrite=force)
    if as_json:
        echo_json({"path": str(path), "format": kind, "group": feats.group, "rows": rows,
                   "arrays": {feats.keys[n]: int(a.shape[1]) for n, a in feats.arrays.items()}})
        return
    dims = ", ".join(f"{feats.keys[n]} ({a.shape[1]})" for n, a in feats.arrays.items())
    console.print(f"wrote {rows} rows of {feats.group} to {path} ({kind}): {dims}", highlight=False)
