"""Pretrained weight files, for ``aanbench weights``: what the installed
extractors need, its status in a weights folder, and adding a download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aanbench.weights import ENV_VAR, add_file, add_folder, requirements, status_rows, weights_dir

__all__ = ["ENV_VAR", "add_weight_file", "add_weight_folder", "installed_weight_requirements", "weight_status",
           "weights_dir"]


def installed_weight_requirements() -> Any:
    """The weight files every installed extractor declares (:func:`aanbench.weights.requirements`)."""
    from aanbench.plugin_manager import get_plugins

    return requirements(get_plugins().extractors)


def weight_status(folder: str | Path | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """The weights folder (``folder``, else ``$AANBENCH_WEIGHTS``, else the
    default) and one row per required file: extractor, file, sha256, path,
    status (present / missing / hash mismatch), source."""
    where = weights_dir(folder)
    return where, status_rows(installed_weight_requirements(), where)


def add_weight_file(file: str | Path, folder: str | Path | None = None) -> Any:
    """Verify ``file`` against the known weight files and place it in the
    weights folder under its official name (:func:`aanbench.weights.add_file`)."""
    return add_file(Path(file), weights_dir(folder), installed_weight_requirements())


def add_weight_folder(src: str | Path, folder: str | Path | None = None) -> Any:
    """Place every known weight file found in the folder of downloads
    ``src`` (any names; matched by SHA-256) into the weights folder
    (:func:`aanbench.weights.add_folder`: what was placed, what was skipped
    and why)."""
    return add_folder(Path(src), weights_dir(folder), installed_weight_requirements())
