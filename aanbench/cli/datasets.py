"""``aanbench plugins``, ``aanbench datasets`` and ``datasets check``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from aanbench.cli._common import app, command, console, dataset_argument, datasets_app, echo_json, option_option
from aanbench.contracts import AanbenchError
from aanbench.workflows import plugins, resolve_dataset


@command(app, "plugins")
def plugins_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List every plugin: kind, name, version, origin (built-in or distribution).

    A plugin that failed to import is listed with its error; the rest work.
    """
    rows = plugins().rows()
    if as_json:
        echo_json(rows)
        return
    t = Table(title="aanbench plugins")
    for c in ("kind", "name", "version", "origin", "plugin"):
        t.add_column(c)
    for r in sorted(rows, key=lambda r: (r["kind"] == "error", r["kind"], r["name"])):
        if r["kind"] == "error":
            t.add_row("[red]error[/]", r["name"], r["version"], r["origin"], f"[red]{r['error']}[/]")
        else:
            t.add_row(r["kind"], r["name"], r["version"], r["origin"], r["plugin"])
    console.print(t)


@datasets_app.callback()
def datasets_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the installed datasets (name, protocol, targets, description)."""
    if ctx.invoked_subcommand is not None:
        return
    ds = plugins().datasets
    rows = [{"name": d.name, "version": d.version, "protocol": d.protocol, "targets": list(d.targets),
             "description": d.description, "card": d.card} for d in ds.values()]
    if as_json:
        echo_json(rows)
        return
    t = Table(title="aanbench datasets")
    for c in ("name", "protocol", "targets", "description"):
        t.add_column(c, no_wrap=c == "name")
    for r in sorted(rows, key=lambda r: r["name"]):
        t.add_row(r["name"], r["protocol"], ", ".join(r["targets"]), r["description"])
    console.print(t)


@command(datasets_app, "check")
def datasets_check(
    dataset: str = dataset_argument(),
    root: Path = typer.Option(..., "--root", help="Your copy of the dataset, in its official layout."),
    option: Optional[list[str]] = option_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Check a copy of a dataset: files found against expected, unreadable files,
    labels out of range, changes since the last check. Exit 1 when incomplete."""
    ds = resolve_dataset(dataset, option)
    if not hasattr(ds, "check"):
        raise AanbenchError(f"dataset {dataset!r} offers no check")
    from aanbench.workflows import check_dataset

    raise typer.Exit(check_dataset(ds, root, as_json, console))


@command(datasets_app, "make-fixture")
def datasets_make_fixture(
    dataset: str = typer.Argument(..., help="eimt16 or cognimuse.", metavar="DATASET"),
    directory: Path = typer.Argument(..., help="Folder to write into (new or empty).", metavar="DIR"),
    seed: int = typer.Option(0, "--seed", help="Random seed of the clips and labels; the same seed gives the same copy."),
) -> None:
    """Write a small GENERATED copy of EIMT16 or COGNIMUSE in its official layout
    (tiny real clips, random labels, a note file saying so), to try the real
    commands before you have the data. Prints the commands to try next.

    \b
    Example:
      aanbench datasets make-fixture eimt16 eimt16-fixture
    """
    from aanbench.workflows.datasets import make_fixture

    made = make_fixture(dataset, directory, seed=seed)
    console.print(f"wrote a generated {made.dataset} copy ({made.n_videos} clips, {made.n_annotation_files} "
                  f"annotation files) in the official layout: {made.root}", highlight=False, soft_wrap=True)
    console.print("It is not the real data: its numbers mean nothing. Try:", highlight=False)
    for c in made.try_next:
        console.print(f"  {c}", highlight=False, soft_wrap=True, markup=False)
