"""Consoles for the command line: wrapped for a terminal, never for a pipe.

Output a person reads in a terminal is laid out at the terminal's width.
Output that goes to a pipe or a file (``aanbench ... | grep``, ``> log``,
a test runner capturing it) is read by programs and copied from: there a
line is never wrapped, so a verdict ("NOT OK") or an identifier (an
experiment name, a SHA-256, a path) is never split, and tables take the
width their cells need. ``COLUMNS`` then does not matter.

Whether the output is a terminal is decided at each print, not when the
console is made, so one module-level console serves the CLI, the test
runner's captured output and a redirected run alike.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleDimensions

#: Width a pipe or file is laid out at: wide enough for any table we print,
#: so cells are never folded. Plain lines are not wrapped at all.
PIPE_WIDTH = 4096
#: Width of horizontal rules in a pipe or file.
PIPE_RULE_WIDTH = 80


class OutputConsole(Console):
    """A rich :class:`~rich.console.Console` that wraps only for a terminal."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if kw.get("width") is None:
            # rich fixes the width from $COLUMNS here; decide at each print
            # instead (a terminal still honours $COLUMNS, see Console.size).
            self._width = None

    @property
    def size(self) -> ConsoleDimensions:  # type: ignore[override]
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, self._height or 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def print(self, *objects: Any, **kw: Any) -> None:  # type: ignore[override]
        if kw.get("soft_wrap") is None and not self.is_terminal:
            kw["soft_wrap"] = True
        super().print(*objects, **kw)

    def rule(self, title: Any = "", **kw: Any) -> None:  # type: ignore[override]
        if self._width is None and not self.is_terminal:
            from rich.rule import Rule

            super().print(Rule(title=title, **kw), width=PIPE_RULE_WIDTH)
            return
        super().rule(title, **kw)


def make_console(*, stderr: bool = False, **kw: Any) -> OutputConsole:
    """The console every command prints through (``stderr=True`` for errors)."""
    return OutputConsole(stderr=stderr, **kw)


# ---------------------------------------------------------------- errors

from aanbench.diagnostics import DEBUG_ENV, debug_enabled, describe, where  # noqa: E402,F401  (one place, no Rich there)


def print_traceback(exc: BaseException, console: Console) -> None:
    """The full traceback of ``exc`` (with its causes), plain text."""
    import traceback

    console.print("".join(traceback.format_exception(exc)).rstrip(), markup=False, highlight=False, soft_wrap=True)
