"""The ``aanbench`` program's entry point: imports the CLI (typer, rich,
numpy and the plugin machinery: a second or so) under a Ctrl-C handler, so
that an interrupt while the program starts ends it as an interrupt later
does (exit 130, one line), not with a Python traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from aanbench.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while starting; nothing was done\n")
        sys.exit(130)
    cli_main()
