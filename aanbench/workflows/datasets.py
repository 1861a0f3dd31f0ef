"""Checking a user's copy of a dataset (``aanbench datasets check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def check_dataset(ds: Any, root: str | Path, as_json: bool, console: Any) -> int:
    """Check the copy of ``ds`` at ``root`` (files found against expected,
    unreadable files, labels out of range, changes since the last check),
    printing to ``console``; returns the exit code (1 when incomplete)."""
    from aanbench.pluginkit.datacheck import run_check

    return run_check(ds, root, as_json, console)
