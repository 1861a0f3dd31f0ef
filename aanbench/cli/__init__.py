"""The ``aanbench`` command line: parses, calls :mod:`aanbench.workflows`,
prints and draws progress; one module per command group.

Exit status: 0 success; 1 the batch finished but some items failed (or a
dataset copy is incomplete); 2 usage or configuration errors. Expected errors
print one message, never a traceback.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import typer
from rich.markup import escape

from aanbench import __version__
from aanbench.cli._common import app, command, datasets_app, err_console, models_app, store_app
from aanbench.contracts import AanbenchError
from aanbench.output import DEBUG_ENV, debug_enabled, print_traceback

# the command modules register their commands on import, in the order --help lists them
from aanbench.cli import datasets as _datasets  # noqa: E402,F401  (plugins, datasets)
from aanbench.cli import extract as _extract  # noqa: E402,F401
from aanbench.cli import store as _store  # noqa: E402,F401
from aanbench.cli import run as _run  # noqa: E402,F401  (experiments, run, train, leaderboard, benchmark)
from aanbench.cli import models as _models  # noqa: E402,F401  (predict, models info)
from aanbench.cli import curve as _curve  # noqa: E402,F401
from aanbench.cli import demo as _demo  # noqa: E402,F401

__all__ = ["CliGroups", "app", "command", "main"]


@dataclass
class CliGroups:
    """Handed to the ``aanbench_commands`` hook: the Typer apps plugins may extend."""

    root: typer.Typer
    store: typer.Typer
    models: typer.Typer
    datasets: typer.Typer

    def command(self, target: typer.Typer, name: str | None = None, **kw: Any) -> Callable:
        """Like ``target.command(name)``, but an :class:`AanbenchError` raised by
        the command prints one message and exits with its code (2)."""
        return command(target, name, **kw)


def _version_cb(value: bool) -> None:
    if value:
        typer.echo(f"aanbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version_cb, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug",
                               help=f"On an error, print the full traceback (file and line; also ${DEBUG_ENV}=1)."),
) -> None:
    """aanbench"""
    if debug:
        os.environ[DEBUG_ENV] = "1"  # worker processes inherit it


def _mount_optional() -> None:
    try:
        from aanbench.cli.weights import weights_app

        app.add_typer(weights_app, name="weights")
    except ImportError:
        pass
    groups = CliGroups(root=app, store=store_app, models=models_app, datasets=datasets_app)
    from aanbench.workflows import plugins

    try:
        plugins().pm.hook.aanbench_commands(cli=groups)
    except AanbenchError as exc:
        err_console.print(f"[red]error:[/] {exc}")


_mount_optional()


def main() -> None:
    try:
        app(prog_name="aanbench")  # the same name (and completion variable) for `python -m aanbench`
    except AanbenchError as exc:  # raised outside a command (e.g. while loading)
        if debug_enabled():
            print_traceback(exc, err_console)
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
