"""What an error says, without Rich: the one-line description of an
unexpected exception and the ``--debug`` switch. The workflows (no Typer,
no Rich) and the CLI's consoles (:mod:`aanbench.output`) share them."""

from __future__ import annotations

DEBUG_ENV = "AANBENCH_DEBUG"


def debug_enabled() -> bool:
    """True under ``aanbench --debug`` (or ``$AANBENCH_DEBUG=1``): errors then
    come with their full traceback. An environment variable, so worker
    processes started by the run see it too."""
    import os

    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def where(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame that raised ``exc``
    (the plugin's own code, when a plugin raised), or ``""``."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename}:{f.lineno} in {f.name}"


def describe(exc: BaseException) -> str:
    """One line for an unexpected exception: type, message and where it was raised."""
    loc = where(exc)
    return f"{type(exc).__name__}: {exc}" + (f" (at {loc})" if loc else "")
