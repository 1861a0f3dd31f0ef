"""The AttendAffectNet authors' published artefacts, vendored in the
repository (``tests/data/attendaffectnet/``, MIT licence, see its README and
LICENSE): six legacy checkpoints, five sample feature files, a test vector.

``AANBENCH_REFERENCE`` may point at another copy of the same files (same
layout); either way every file is checked against ``SHA256SUMS`` and a
missing or different file is an error, never a skip.

Run as a script to regenerate the shipped named-model bundles from the
vendored checkpoints (through the safe converter)::

    PYTHONPATH=. python tests/reference.py --write-models [DIR]
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

VENDORED = Path(__file__).resolve().parent / "data" / "attendaffectnet"
ENV_VAR = "AANBENCH_REFERENCE"
SUMS = VENDORED / "SHA256SUMS"


def reference_dir() -> Path:
    """The reference folder (``$AANBENCH_REFERENCE`` or the vendored copy),
    every file listed in the vendored ``SHA256SUMS`` present with its
    SHA-256. Raises :class:`FileNotFoundError` naming each missing or
    differing file."""
    root = Path(os.environ.get(ENV_VAR) or VENDORED).expanduser()
    if not SUMS.is_file():
        raise FileNotFoundError(f"{SUMS} is missing: the vendored AttendAffectNet reference files are incomplete "
                                "(restore tests/data/attendaffectnet/ from git)")
    problems = []
    for line in SUMS.read_text().splitlines():
        if not line.strip():
            continue
        digest, rel = line.split(maxsplit=1)
        path = root / rel.strip().removeprefix("./")
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{path}: SHA-256 differs from {digest}")
    if problems:
        src = f"${ENV_VAR}={os.environ[ENV_VAR]}" if os.environ.get(ENV_VAR) else "the vendored copy"
        raise FileNotFoundError(f"AttendAffectNet reference files ({src}) are missing or changed:\n  "
                                + "\n  ".join(problems))
    return root


def convert_named(name: str, checkpoints: Path | None = None) -> dict[str, Any]:
    """A fresh conversion of the named model ``name``'s source checkpoints
    (the safe converter, then :func:`aanbench.named_models.bundle_from_model_files`)."""
    from aanbench.named_models import bundle_from_model_files, get_model
    from aanbench.pluginkit.legacy_pickle import load_legacy
    from aanbench_plugins.commands._aan_legacy_convert import checkpoint_to_payload

    nm = get_model(name)
    checkpoints = checkpoints or reference_dir() / "trained_models"
    payloads = [checkpoint_to_payload(load_legacy(checkpoints / nm.sources[t]), t) for t in nm.predicts]
    return bundle_from_model_files(payloads, nm)


def write_models(out_dir: Path | None = None) -> list[Path]:
    """Write every named model's bundle (default: the package's data folder)."""
    from aanbench.modelfile import save_bundle
    from aanbench.named_models import MODELS_DIR, list_models

    out_dir = Path(out_dir or MODELS_DIR)
    return [save_bundle(out_dir / nm.file, convert_named(nm.name)) for nm in list_models()]


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write-models"]:
        sys.exit(__doc__)
    for p in write_models(Path(sys.argv[2]) if len(sys.argv) > 2 else None):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
