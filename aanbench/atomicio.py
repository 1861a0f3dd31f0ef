"""Atomic, unique file writes: a reader sees the old file or the new one,
never a mix, and two writers of the same file never share a temporary file.

Each write goes to a temporary file with a unique name in the destination's
folder (same file system, so the final :func:`os.replace` is atomic), is
flushed to disk (``fsync``), then renamed over the destination. A writer
that fails (disk full, Ctrl-C) removes its temporary file; one killed
outright leaves a ``.<name>.<random>.tmp`` that no reader takes for the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from aanbench.contracts import AanbenchError


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, overwrite: bool = True,
                encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a unique temporary file beside ``path`` for writing (``"w"`` text
    or ``"wb"`` bytes); when the block ends without an error it is fsynced and
    renamed over ``path``. ``overwrite=False``: refuse (:class:`AanbenchError`)
    when ``path`` exists, before anything is written and again at the rename
    (then the new file is not put in place)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), not {mode!r}")
    path = Path(path)
    if not overwrite and path.exists():
        raise AanbenchError(f"{path}: exists; not overwritten (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _place(tmp, path, overwrite)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Put the finished temporary file ``tmp`` at ``path``: replace it, or
    (``overwrite=False``) refuse an existing one; then fsync the folder."""
    if overwrite:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)  # fails if it appeared meanwhile: never clobbers
        except FileExistsError:
            raise AanbenchError(f"{path}: exists; not overwritten (use --force to replace it)") from None
        os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", overwrite=overwrite) as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True) -> Path:
    with atomic_open(path, "wb", overwrite=overwrite) as f:
        f.write(data)
    return Path(path)


def write_with(path: str | Path, writer: Callable[[Path], None], *, overwrite: bool = True) -> Path:
    """Atomically put in place a file made by ``writer(tmp_path)`` (for
    libraries that write to a path themselves: ``np.save``, matplotlib's
    ``savefig``, ``torch.save``). ``tmp_path`` keeps ``path``'s suffix so
    such libraries pick the same format."""
    path = Path(path)
    if not overwrite and path.exists():
        raise AanbenchError(f"{path}: exists; not overwritten (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _place(tmp, path, overwrite)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
