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


def make_fixture(dataset: str, root: str | Path, *, seed: int = 0) -> Any:
    """A small generated copy of ``dataset`` in its official layout in
    ``root`` (new or empty), for trying the real commands without the data:
    what the dataset plugin's ``make_fixture(root, seed)`` writes (EIMT16 and
    COGNIMUSE offer it: the tests' writers); its ``try_next`` lists the
    commands to try."""
    from aanbench.contracts import AanbenchError
    from aanbench.workflows._shared import plugins

    datasets = plugins().datasets
    offer = sorted(n for n, d in datasets.items() if callable(getattr(d, "make_fixture", None)))
    ds = datasets.get(dataset)
    if ds is None or not callable(getattr(ds, "make_fixture", None)):
        raise AanbenchError(f"no fixture for dataset {dataset!r}; fixtures exist for {', '.join(offer) or 'none'}")
    return ds.make_fixture(Path(root), seed=seed)
