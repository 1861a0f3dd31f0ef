"""``aanbench weights``: which pretrained files the installed extractors
need, where they are looked for, and whether they are there; ``aanbench
weights add FILE|FOLDER`` verifies a downloaded file (or every file in a
folder of downloads) and puts it in place.

Mounted by the main CLI (:mod:`aanbench.cli`) as ``app.add_typer(weights_app, name="weights")``.
Exit codes: 0 done; 2 a refused file (unknown, or its SHA-256 differs; for a
folder: a file named like a weight file whose bytes differ, or no weight file
in it) or, with ``--check``, a required file missing or different.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from aanbench.output import make_console
from rich.markup import escape
from rich.table import Table

from aanbench.contracts import AanbenchError
from aanbench.workflows.weights import ENV_VAR, add_weight_file, add_weight_folder, weight_status

weights_app = typer.Typer(
    help="Pretrained weight files: list what is needed and its status; add a downloaded file.",
    no_args_is_help=False,
    add_completion=False,
)

_STYLE = {"present": "green", "missing": "yellow", "hash mismatch": "bold red"}

WeightsDirOpt = typer.Option(
    None, "--weights-dir", help=f"Weights folder (default: ${ENV_VAR}, else ~/.cache/aanbench/weights)."
)


def _fail(message: str) -> None:
    make_console(stderr=True).print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@weights_app.callback(invoke_without_command=True)
def weights_status(
    ctx: typer.Context,
    weights_dir_opt: Optional[Path] = WeightsDirOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    check: bool = typer.Option(False, "--check", help="Exit 2 when a required file is missing or differs."),
) -> None:
    """Show every weight file required by the installed extractors: expected
    SHA-256, where it is looked for, and its status (present / missing /
    hash mismatch)."""
    if ctx.invoked_subcommand is not None:
        return
    folder, rows = weight_status(weights_dir_opt)
    if as_json:
        typer.echo(json.dumps({"weights_dir": str(folder), "files": rows}, indent=2))
    else:
        console = make_console()
        table = Table(title=f"Weight files (folder: {folder})", show_lines=False)
        for col in ("extractor", "file", "expected SHA-256", "looked for at", "status"):
            table.add_column(col, overflow="fold")
        for r in rows:
            st = r["status"]
            table.add_row(escape(r["extractor"]), escape(r["file"]), r["sha256"], escape(r["path"]),
                          f"[{_STYLE.get(st, 'default')}]{st}[/]")
        console.print(table)
        if not rows:
            console.print("No installed extractor needs weight files.")
        todo = [r for r in rows if r["status"] != "present"]
        if todo:
            console.print("\nTo add a file, download it on a connected machine, then run "
                          "[bold]aanbench weights add FILE[/]. Sources:", highlight=False)
            for r in todo:
                console.print(f"  {r['file']}: {r['source']}", markup=False, highlight=False, soft_wrap=True)
    if check and any(r["status"] != "present" for r in rows):
        raise typer.Exit(2)


@weights_app.command("add")
def weights_add(
    file: Path = typer.Argument(..., help="A downloaded weight file, or a folder of downloads (any names).",
                                metavar="FILE|FOLDER"),
    weights_dir_opt: Optional[Path] = WeightsDirOpt,
) -> None:
    """Verify a downloaded file's SHA-256 against the known weight files and copy it
    into the weights folder under its official name. A folder: every file in it
    (searched recursively) is checked the same way, each placed or skipped with
    its reason. Unknown or differing files are refused (exit 2); a folder exits 2
    when a file named like a weight file differs or when no weight file is in it.

    \b
    Examples:
      aanbench weights add ~/Downloads/resnet50-0676ba61.pth
      aanbench weights add ~/Downloads/aanbench-weights/"""
    if file.is_dir():
        try:
            got = add_weight_folder(file, weights_dir_opt)
        except AanbenchError as exc:
            _fail(str(exc))
            return
        for src, placed in got.placed:
            verb = "copied to" if placed.copied else "already present at"
            typer.echo(f"placed {src}: {placed.file.filename} (for {', '.join(placed.extractors)}) {verb} "
                       f"{placed.path}")
        for src, why in got.skipped:
            typer.echo(f"skipped {src}: {why}")
        if got.refused or not got.placed:
            _fail(f"{len(got.refused)} file(s) refused (named like a weight file, other bytes: a broken or other "
                  "download)" if got.refused else f"no known weight file in {file} (see `aanbench weights`)")
        return
    try:
        placed = add_weight_file(file, weights_dir_opt)
    except AanbenchError as exc:
        _fail(str(exc))
        return
    users = ", ".join(placed.extractors)
    verb = "copied to" if placed.copied else "already present at"
    typer.echo(f"{placed.file.filename} (SHA-256 {placed.file.sha256}, for {users}): {verb} {placed.path}")
