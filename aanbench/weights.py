"""Pretrained weight files: where they are looked for, and their check.

aanbench never downloads weights. The user places each file in the weights
folder: ``--weights-dir``, else ``$AANBENCH_WEIGHTS``, else
``~/.cache/aanbench/weights``. Every file is verified by its full SHA-256
before any work starts, and :func:`add_file` places a downloaded file there
after checking it against the files that installed extractors declare.

The SHA-256 values are those of the official files (see each extractor's
``WeightFile.source`` and the ``[weights."<file>"]`` tables of
``registry.toml``); a file whose bytes differ is never used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from aanbench.contracts import AanbenchError, Extractor, WeightFile

ENV_VAR = "AANBENCH_WEIGHTS"
DEFAULT_DIR = "~/.cache/aanbench/weights"

# (resolved path, size, mtime_ns) -> sha256 hex; hashing 300 MB takes ~1 s,
# so one process hashes a file once unless it changes.
_hash_memo: dict[tuple[str, int, int], str] = {}


def weights_dir(explicit: str | Path | None = None) -> Path:
    """The weights folder: ``explicit``, else ``$AANBENCH_WEIGHTS``, else
    ``~/.cache/aanbench/weights``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_DIR).expanduser()


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (memoised per path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key in _hash_memo:
        return _hash_memo[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    digest = h.hexdigest()
    _hash_memo[key] = digest
    return digest


def status(wf: WeightFile, folder: Path) -> str:
    """``present``, ``missing`` or ``hash mismatch``."""
    path = Path(folder) / wf.filename
    if not path.is_file():
        return "missing"
    return "present" if sha256_of(path) == wf.sha256.lower() else "hash mismatch"


def resolve(extractor: Extractor, folder: Path) -> dict[str, Path]:
    """Verified paths of an extractor's weight files, by file name.

    Raises :class:`AanbenchError` naming the file, its expected SHA-256,
    where to put it and where to get it, when one is missing or differs.
    """
    folder = Path(folder)
    out: dict[str, Path] = {}
    for wf in extractor.weights:
        path = folder / wf.filename
        st = status(wf, folder)
        if st != "present":
            what = "is missing" if st == "missing" else f"has SHA-256 {sha256_of(path)}, not the expected one"
            raise AanbenchError(
                f"extractor {extractor.name!r}: weight file {wf.filename} {what}.\n"
                f"  expected SHA-256: {wf.sha256}\n"
                f"  put it at:        {path}  (weights folder: --weights-dir, ${ENV_VAR})\n"
                f"  get it from:      {wf.source}\n"
                f"  then:             aanbench weights add <downloaded file> --weights-dir {folder}"
            )
        out[wf.filename] = path
    return out


# ---------------------------------------------------------------------------
# Listing and placing files


@dataclass(frozen=True)
class Requirement:
    """One weight file that one installed extractor needs."""

    extractor: str
    file: WeightFile


def requirements(extractors: Mapping[str, Extractor] | Iterable[Extractor]) -> list[Requirement]:
    """Every weight file required by ``extractors`` (a name -> extractor
    mapping or an iterable), once per file, sorted by extractor name then
    file name. A file several extractors share (one network under two
    preprocessing recipes, e.g. ``i3d`` and ``i3d-kinetics``) is one
    requirement whose ``extractor`` lists them, comma-separated."""
    items = extractors.values() if isinstance(extractors, Mapping) else extractors
    users: dict[tuple[str, str], list[str]] = {}
    files: dict[tuple[str, str], WeightFile] = {}
    for ex in items:
        for wf in ex.weights:
            key = (wf.filename, wf.sha256)
            files.setdefault(key, wf)
            if ex.name not in users.setdefault(key, []):
                users[key].append(ex.name)
    out = [Requirement(", ".join(sorted(names)), files[key]) for key, names in users.items()]
    return sorted(out, key=lambda r: (r.extractor, r.file.filename))


def status_rows(reqs: Iterable[Requirement], folder: Path) -> list[dict[str, str]]:
    """One JSON-able row per requirement: extractor, file, sha256, path,
    status (``present`` / ``missing`` / ``hash mismatch``), source."""
    folder = Path(folder)
    rows = []
    for r in reqs:
        rows.append(
            {
                "extractor": r.extractor,
                "file": r.file.filename,
                "sha256": r.file.sha256,
                "path": str(folder / r.file.filename),
                "status": status(r.file, folder),
                "source": r.file.source,
            }
        )
    return rows


@dataclass(frozen=True)
class Placed:
    """What :func:`add_file` did: the destination, the matched file and
    whether it copied (``False``: an identical file was already there)."""

    path: Path
    file: WeightFile
    extractors: tuple[str, ...]
    copied: bool


def add_file(src: Path, folder: Path, reqs: Iterable[Requirement]) -> Placed:
    """Verify ``src`` against the known weight files and copy it into
    ``folder`` under its official name.

    The file is matched by its SHA-256, so a download saved under another
    name (``flownets_EPE1.951.pth.tar``) still lands as the official name.
    Raises :class:`AanbenchError` when ``src`` is not a file, or its
    SHA-256 matches no known file (naming the expected SHA-256 when its
    name is a known file's name). The copy is written to a temporary file
    in ``folder`` and renamed, so a half-written file never carries the
    official name.
    """
    src = Path(src).expanduser()
    folder = Path(folder)
    if not src.is_file():
        raise AanbenchError(f"not a file: {src}")
    reqs = list(reqs)
    digest = sha256_of(src)
    matches = [r for r in reqs if r.file.sha256.lower() == digest]
    if not matches:
        same_name = [r for r in reqs if r.file.filename == src.name]
        if same_name:
            wf = same_name[0].file
            raise AanbenchError(
                f"{src} has SHA-256 {digest},\n"
                f"  but {wf.filename} (extractor {same_name[0].extractor!r}) must have SHA-256 {wf.sha256}.\n"
                f"  The file differs from the official one (incomplete download or another release);\n"
                f"  get it from: {wf.source}"
            )
        known = ", ".join(sorted({r.file.filename for r in reqs})) or "none (no installed extractor needs weights)"
        raise AanbenchError(
            f"{src} (SHA-256 {digest}) is not a known weight file.\n"
            f"  known files: {known}\n"
            f"  see `aanbench weights` for each file's expected SHA-256 and source"
        )
    wf = matches[0].file
    names = tuple(sorted({r.extractor for r in matches}))
    dest = folder / wf.filename
    if dest.is_file() and sha256_of(dest) == digest:
        return Placed(dest, wf, names, copied=False)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{wf.filename}.", suffix=".part", dir=folder)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if sha256_of(Path(tmp)) != digest:  # the source changed while copying
            raise AanbenchError(f"{src} changed while it was being copied; try again")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Placed(dest, wf, names, copied=True)


# ---------------------------------------------------------------------------
# Every missing file at once; a folder of downloads


def require(reqs: Iterable[Requirement], folder: Path, needed_by: str = "this command") -> dict[str, Path]:
    """Verified paths of every file in ``reqs``, by file name.

    Unlike :func:`resolve` (one extractor, first problem), this checks all
    files first and raises one :class:`AanbenchError` naming **each** file
    that is missing or differs: its extractor and description, expected
    SHA-256, where to put it, where to get it, and the ``weights add``
    command that places a folder of downloads.
    """
    folder = Path(folder)
    reqs = list(reqs)
    rows = status_rows(reqs, folder)
    bad = [(r, row) for r, row in zip(reqs, rows) if row["status"] != "present"]
    if bad:
        lines = [f"{needed_by} needs {len(bad)} pretrained weight file{'s' if len(bad) != 1 else ''} "
                 f"that {'are' if len(bad) != 1 else 'is'} not in the weights folder {folder} "
                 f"(--weights-dir, ${ENV_VAR}):"]
        for r, row in bad:
            what = ("missing" if row["status"] == "missing"
                    else f"has SHA-256 {sha256_of(Path(row['path']))}, not the expected one")
            lines += [f"  {r.file.filename} (extractor {r.extractor}"
                      + (f": {r.file.description}" if r.file.description else "") + f"): {what}",
                      f"    expected SHA-256: {r.file.sha256}",
                      f"    put it at:        {row['path']}",
                      f"    get it from:      {r.file.source}"]
        lines.append(f"Download {'them into one folder' if len(bad) != 1 else 'it'}, then: aanbench weights add "
                     f"<{'folder' if len(bad) != 1 else 'file'}> --weights-dir {folder}")
        raise AanbenchError("\n".join(lines))
    return {r.file.filename: folder / r.file.filename for r in reqs}


@dataclass(frozen=True)
class FolderAdded:
    """What :func:`add_folder` did: the files placed (or found already in
    place) and the files left where they were, each with its reason."""

    placed: tuple[tuple[Path, Placed], ...]  # (source file, what add_file did)
    skipped: tuple[tuple[Path, str], ...]  # (source file, reason)

    @property
    def refused(self) -> tuple[tuple[Path, str], ...]:
        """Files named like a known weight file whose bytes differ (a broken
        or other download): the ones a user must look at."""
        return tuple((p, why) for p, why in self.skipped if why.startswith("differs"))


def add_folder(src_dir: Path, folder: Path, reqs: Iterable[Requirement]) -> FolderAdded:
    """Place every known weight file found in ``src_dir`` (a folder of
    downloads, searched recursively; hidden files and ``*.part`` skipped)
    into ``folder`` with :func:`add_file`.

    Files are matched by SHA-256 (every file is read once, so point it at
    the folder of these downloads, not a whole Downloads folder of films),
    so any download name works. Other files
    are skipped with their reason (``not a known weight file``, or
    ``differs from <name>`` when a file bears a known file's name but other
    bytes). Raises :class:`AanbenchError` when ``src_dir`` is not a folder
    or is ``folder`` itself.
    """
    src_dir = Path(src_dir).expanduser()
    folder = Path(folder).expanduser()
    if not src_dir.is_dir():
        raise AanbenchError(f"not a folder: {src_dir}")
    if folder.exists() and src_dir.resolve() == folder.resolve():
        raise AanbenchError(f"{src_dir} is the weights folder itself; give the folder the downloads are in")
    reqs = list(reqs)
    by_name = {r.file.filename: r for r in reqs}
    placed: list[tuple[Path, Placed]] = []
    skipped: list[tuple[Path, str]] = []
    files = sorted(p for p in src_dir.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src_dir).parts)
                   and not p.name.endswith(".part"))
    for p in files:
        digest = sha256_of(p)
        if not any(r.file.sha256.lower() == digest for r in reqs):
            known = by_name.get(p.name)
            skipped.append((p, f"differs from {known.file.filename}: SHA-256 {digest}, expected {known.file.sha256}"
                            if known else "not a known weight file"))
            continue
        placed.append((p, add_file(p, folder, reqs)))
    return FolderAdded(tuple(placed), tuple(skipped))
