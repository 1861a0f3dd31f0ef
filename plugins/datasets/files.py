"""``files``: any folder of media files, unlabelled, for extraction and prediction.

Every file below the root whose extension is a common video or audio
container becomes one item (the whole file); item ids are the paths
relative to the root, so they are unique and stable.
"""

from __future__ import annotations

from pathlib import Path

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Dataset, Item

MEDIA_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wav", ".mp3", ".flac", ".ogg", ".m4a"}


class FilesDataset(Dataset):
    name = "files"
    description = "Any folder of media files (unlabelled): one item per file"
    targets = ()
    protocol = "none"

    def items(self, root: Path) -> list[Item]:
        from aanbench.pluginkit.datacheck import require_root

        root = require_root(root)  # "does not exist" and "not a directory" told apart
        # a broken symbolic link is listed too: it becomes a failed item with its reason, not a silent gap
        files = sorted(p for p in root.rglob("*")
                       if (p.is_file() or (p.is_symlink() and not p.exists())) and p.suffix.lower() in MEDIA_SUFFIXES)
        if not files:
            raise AanbenchError(f"{root}: no media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
        return [Item(id=str(p.relative_to(root)), path=p) for p in files]


@hookimpl
def aanbench_datasets():
    return [FilesDataset()]
