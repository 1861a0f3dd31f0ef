"""Safe names: experiments, feature sets and datasets become folder and file
names (``--out``/<dataset>/<experiment>/seedN.json), so they are plain
(letters, digits, ``.``, ``_``, ``-``, not starting with ``.``), and every
path written under an output folder is checked to stay in it."""

from __future__ import annotations

import re
from pathlib import Path

from aanbench.contracts import AanbenchError

SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
NAME_RULE = "letters, digits, '.', '_' and '-', not starting with '.'"


class UnsafeNameError(AanbenchError):
    """A name that cannot be a plain file name, or a path that leaves its folder (exit 2)."""


def check_name(kind: str, name: object, where: str = "") -> str:
    """``name`` when it is a safe ``kind`` name (``experiment``, ``feature set``,
    ``dataset``); else :class:`UnsafeNameError` saying where and what is allowed."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or len(name) > 200:
        prefix = f"{where}: " if where else ""
        raise UnsafeNameError(f"{prefix}{kind} name {name!r} is not allowed (use {NAME_RULE}, at most 200 characters)")
    return name


def inside(folder: str | Path, path: str | Path) -> Path:
    """``path`` when it resolves to a place inside ``folder`` (links followed);
    else :class:`UnsafeNameError` naming both."""
    base = Path(folder).resolve()
    target = Path(path).resolve()
    if target != base and base not in target.parents:
        raise UnsafeNameError(f"{path}: resolves to {target}, outside the output folder {base}; nothing written")
    return Path(path)
