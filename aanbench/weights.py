"""Pretrained weight files: where they are looked for, and their check.

aanbench never downloads weights. The user places each file in the weights
folder: ``--weights-dir``, else ``$AANBENCH_WEIGHTS``, else
``~/.cache/aanbench/weights``. Every file is verified by SHA-256 before any
work starts.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from aanbench.contracts import AanbenchError, Extractor, WeightFile


def weights_dir(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("AANBENCH_WEIGHTS")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/aanbench/weights").expanduser()


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def status(wf: WeightFile, folder: Path) -> str:
    """``present``, ``missing`` or ``hash mismatch``."""
    path = folder / wf.filename
    if not path.is_file():
        return "missing"
    return "present" if sha256_of(path) == wf.sha256 else "hash mismatch"


def resolve(extractor: Extractor, folder: Path) -> dict[str, Path]:
    """Verified paths of an extractor's weight files, by file name.

    Raises :class:`AanbenchError` naming the file, its expected SHA-256,
    where to put it and where to get it, when one is missing or differs.
    """
    out: dict[str, Path] = {}
    for wf in extractor.weights:
        path = folder / wf.filename
        st = status(wf, folder)
        if st != "present":
            what = "is missing" if st == "missing" else f"has SHA-256 {sha256_of(path)}, not the expected one"
            raise AanbenchError(
                f"extractor {extractor.name!r}: weight file {wf.filename} {what}.\n"
                f"  expected SHA-256: {wf.sha256}\n"
                f"  put it at:        {path}  (weights folder: --weights-dir, $AANBENCH_WEIGHTS)\n"
                f"  get it from:      {wf.source}\n"
                f"  then check with:  aanbench weights"
            )
        out[wf.filename] = path
    return out
