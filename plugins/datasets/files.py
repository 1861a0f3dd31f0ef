"""``files``: any folder of media files (or one file), unlabelled, for
extraction, prediction and emotion curves. Card: ``datasets/files.md``.

Without options every file below the root whose extension is a common
video or audio container becomes one item (the whole file); item ids are
the paths relative to the root, so they are unique and stable.

With ``-o window=SECONDS`` (and ``-o hop=SECONDS``, default: the window)
each file is cut into windows ``[k hop, k hop + window)``; each window is
one item ``<file>@<start>-<end>`` whose group is the file, with start and
end in the store's item table. The last partial window is kept when it is
at least half a window long; a file shorter than one window is one window,
the whole of it (see :func:`aanbench.filmdecode.film_windows`).
A file whose duration cannot be read stays one whole-file item, so its
failure is recorded with its reason. Windowed items go to the store
segmentation ``window<W>-hop<H>`` (``-o segmentation=NAME`` names another).

``-o streams=video`` (``audio``, ``video+audio``): the windows are planned on
the duration that every one of these streams covers (the shortest of them,
:func:`aanbench.filmdecode.probe_duration`), so a film whose audio outlasts
its video by a fraction of a second gets no window past its last frame
when video is needed. Without it, the file's duration (its longest stream).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Dataset, Item, ItemError

MEDIA_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wav", ".mp3", ".flac", ".ogg", ".m4a"}
OPTIONS = ("window", "hop", "segmentation", "streams")
STREAMS = ("video", "audio")


def _seconds(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise AanbenchError(f"files: option {name} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise AanbenchError(f"files: option {name} must be positive seconds, not {value!r}")
    return x


def _streams(value: Any) -> tuple[str, ...]:
    """``video``, ``audio``, ``video+audio`` (or a sequence of them) as a tuple in STREAMS order."""
    parts = value if isinstance(value, (list, tuple)) else str(value).replace(",", "+").split("+")
    names = {str(p).strip() for p in parts if str(p).strip()}
    unknown = sorted(names - set(STREAMS))
    if unknown:
        raise AanbenchError(f"files: option streams takes video, audio or video+audio, not {value!r}")
    return tuple(k for k in STREAMS if k in names)


def _label(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


class FilesDataset(Dataset):
    name = "files"
    description = "Any folder of media files (unlabelled): one item per file, or per window with -o window=S"
    targets = ()
    protocol = "none"
    card = "datasets/files.md"
    media_suffixes = frozenset(MEDIA_SUFFIXES)  # what a folder's media files end with

    streams: tuple[str, ...] = ()

    def __init__(self, window: float | None = None, hop: float | None = None, segmentation: str | None = None,
                 streams: tuple[str, ...] = ()) -> None:
        self.window = window
        self.streams = tuple(streams)
        self.hop = hop if hop is not None else window
        if segmentation is not None:
            self.segmentation = segmentation
        elif window is not None:
            self.segmentation = f"window{_label(window)}-hop{_label(self.hop)}"  # type: ignore[arg-type]

    def configure(self, **options: Any) -> "FilesDataset":
        """A copy with ``window``/``hop`` (seconds) and ``segmentation`` (store group name)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise AanbenchError(f"files: unknown option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
        window = _seconds("window", options["window"]) if options.get("window") is not None else self.window
        hop = _seconds("hop", options["hop"]) if options.get("hop") is not None else None
        if hop is not None and window is None:
            raise AanbenchError("files: option hop needs a window (-o window=SECONDS)")
        seg = options.get("segmentation")
        if seg is not None:
            seg = str(seg).strip()
            if not seg or "/" in seg or seg.startswith("."):
                raise AanbenchError(f"files: segmentation must be a plain name, not {options['segmentation']!r}")
        streams = _streams(options["streams"]) if options.get("streams") is not None else self.streams
        out = copy.copy(self)
        FilesDataset.__init__(out, window, hop if hop is not None else (self.hop if window == self.window else None),
                              seg, streams)
        return out

    def config(self) -> dict[str, Any]:
        if self.window is None:
            return {}
        cfg: dict[str, Any] = {"window": self.window, "hop": self.hop}
        if self.streams:
            cfg["streams"] = "+".join(self.streams)
        return cfg

    def _files(self, root: Path) -> tuple[Path, list[Path]]:
        from aanbench.pluginkit.datacheck import require_root

        root = Path(root).expanduser()
        if root.is_file():  # one film
            return root.parent, [root]
        root = require_root(root)  # "does not exist" and "not a directory" told apart
        # a broken symbolic link is listed too: it becomes a failed item with its reason, not a silent gap
        files = sorted(p for p in root.rglob("*")
                       if (p.is_file() or (p.is_symlink() and not p.exists())) and p.suffix.lower() in MEDIA_SUFFIXES)
        if not files:
            raise AanbenchError(f"{root}: no media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
        return root, files

    def items(self, root: Path) -> list[Item]:
        base, files = self._files(root)
        if self.window is None:
            return [Item(id=str(p.relative_to(base)), path=p) for p in files]
        from aanbench.filmdecode import film_windows, probe_duration, window_id

        out: list[Item] = []
        for p in files:
            fid = str(p.relative_to(base))
            try:
                duration = probe_duration(p, self.streams)
            except ItemError:
                duration = 0.0
            windows = film_windows(duration, self.window, self.hop) if duration > 0 else []  # type: ignore[arg-type]
            if not windows:  # unreadable (or empty): one item, whose failure says why
                out.append(Item(id=fid, path=p, group=fid))
                continue
            out.extend(Item(id=window_id(fid, s, e), path=p, start=s, end=e, group=fid) for s, e in windows)
        return out


@hookimpl
def aanbench_datasets():
    return [FilesDataset()]
