"""Checking a user's copy of a dataset: what is there, what is missing,
what cannot be read, which labels are out of range, and whether the files
changed since the first check.

A dataset plugin builds a :class:`DatasetCheck` in its ``check(root)``
method, usually through :func:`build_check`, which does the generic work:

- every media file is opened with PyAV, its streams are listed and its first
  video frame is decoded (cheap; catches truncated and corrupt files);
- every label is compared with the dataset's nominal range;
- a SHA-256 manifest of the dataset's files is written on the first check
  (``<root>/.aanbench-manifest.json`` when the root is writable, else
  ``~/.cache/aanbench/manifests/<dataset>-<hash of root>.json``) and compared
  on later checks: changed, missing, new and moved files are listed.

:func:`render_check` prints the report for a person, :func:`to_json` gives
the same as a JSON-able dict, and :func:`run_check` is what
``aanbench datasets check NAME --root PATH [--json]`` does (exit status 0
when the copy is complete and sound, 1 otherwise).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import av

from aanbench.contracts import AanbenchError, Item

MANIFEST_NAME = ".aanbench-manifest.json"
MANIFEST_FORMAT = 1
MEDIA_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv", ".flv")

# Lists longer than this are cut in the human report (the JSON has them all).
SHOW_AT_MOST = 15


# --------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class UnreadableFile:
    """A media file that exists but cannot be used, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class LabelProblem:
    """A label that is missing, not a number, or outside the nominal range."""

    item_id: str
    target: str
    value: float | None  # None when the label is absent
    low: float
    high: float

    def describe(self) -> str:
        if self.value is None:
            return f"{self.item_id}: {self.target} is missing"
        if not math.isfinite(self.value):
            return f"{self.item_id}: {self.target} is {self.value} (not a number)"
        return f"{self.item_id}: {self.target} = {self.value:g}, outside [{self.low:g}, {self.high:g}]"


@dataclass
class ManifestStatus:
    """Outcome of the checksum manifest comparison.

    ``state``: ``"written"`` (first check: manifest created), ``"unchanged"``,
    ``"changed"`` (some file's SHA-256 differs from the manifest's),
    ``"updated"`` (only new files, now added), ``"unwritable"`` (no place to
    keep one; ``note`` says why) or ``"skipped"``.
    Paths are relative to the dataset root.
    """

    state: str
    path: str = ""
    files: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (was, now)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.changed


@dataclass
class DatasetCheck:
    """What a dataset check found.

    ``expected`` and ``found`` map the same keys (e.g. ``"training excerpts"``)
    to counts. ``missing`` names expected files that were not found;
    ``errors`` are other problems that make the copy unusable as it is;
    ``warnings`` and ``notes`` do not affect :attr:`ok`.
    """

    dataset: str
    root: str
    expected: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unreadable: list[UnreadableFile] = field(default_factory=list)
    label_problems: list[LabelProblem] = field(default_factory=list)
    manifest: ManifestStatus = field(default_factory=lambda: ManifestStatus("skipped"))
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def counts_ok(self) -> bool:
        return all(self.found.get(k, 0) == v for k, v in self.expected.items())

    @property
    def ok(self) -> bool:
        """Complete and sound: every expected file found and readable, every
        label in range, no file changed since the manifest, no error."""
        return (
            self.counts_ok
            and not self.missing
            and not self.unreadable
            and not self.label_problems
            and not self.errors
            and self.manifest.ok
        )


def _json_float(x: float | None) -> float | str | None:
    if x is None:
        return None
    return float(x) if math.isfinite(x) else str(x)


def to_json(check: DatasetCheck) -> dict[str, Any]:
    """The check as a JSON-able dict (every list in full)."""
    m = check.manifest
    return {
        "dataset": check.dataset,
        "root": check.root,
        "ok": check.ok,
        "expected": dict(check.expected),
        "found": dict(check.found),
        "missing": list(check.missing),
        "unreadable": [{"path": u.path, "reason": u.reason} for u in check.unreadable],
        "label_problems": [
            {"item_id": p.item_id, "target": p.target, "value": _json_float(p.value), "range": [p.low, p.high]}
            for p in check.label_problems
        ],
        "manifest": {
            "state": m.state,
            "path": m.path,
            "files": m.files,
            "changed": list(m.changed),
            "missing": list(m.missing),
            "new": list(m.new),
            "moved": [list(x) for x in m.moved],
            "note": m.note,
        },
        "errors": list(check.errors),
        "warnings": list(check.warnings),
        "notes": list(check.notes),
        "hints": list(check.hints),
        "seconds": round(check.seconds, 3),
    }


# --------------------------------------------------------------------------
# Rendering


def _cut(lines: Sequence[str], limit: int = SHOW_AT_MOST) -> list[str]:
    lines = list(lines)
    if len(lines) <= limit:
        return lines
    return lines[:limit] + [f"... and {len(lines) - limit} more (the full list is in --json)"]


def render_check(check: DatasetCheck, console) -> None:
    """Print ``check`` for a person on a rich ``console``."""
    from rich.markup import escape
    from rich.table import Table

    verdict = "[bold green]OK[/]" if check.ok else "[bold red]NOT OK[/]"
    # The verdict leads, so a long path wrapping in a narrow terminal never splits it.
    console.print(f"{verdict}: [bold]{escape(check.dataset)}[/] at {escape(check.root)}")

    if check.expected:
        table = Table(show_edge=False, pad_edge=False)
        table.add_column("what")
        table.add_column("expected", justify="right")
        table.add_column("found", justify="right")
        table.add_column("")
        for key, exp in check.expected.items():
            got = check.found.get(key, 0)
            mark = "[green]ok[/]" if got == exp else f"[red]{exp - got} missing[/]" if got < exp else "[yellow]extra[/]"
            table.add_row(escape(key), f"{exp:,}", f"{got:,}", mark)
        console.print(table)

    def section(title: str, lines: Sequence[str], style: str) -> None:
        if not lines:
            return
        console.print(f"[{style}]{escape(title)} ({len(lines)}):[/]")
        for line in _cut(lines):
            console.print(f"  {escape(line)}", soft_wrap=True)

    section("Errors", check.errors, "bold red")
    section("Missing", check.missing, "bold red")
    section("Unreadable", [f"{u.path}: {u.reason}" for u in check.unreadable], "bold red")
    section("Label problems", [p.describe() for p in check.label_problems], "bold red")

    m = check.manifest
    where = f" ({escape(m.path)})" if m.path else ""
    state_style = "green" if m.state in ("unchanged", "written", "updated") else "red" if m.state == "changed" else "yellow"
    console.print(f"Checksum manifest: [{state_style}]{m.state}[/], {m.files:,} files{where}")
    if m.note:
        console.print(f"  {escape(m.note)}", soft_wrap=True)
    section("Changed since the manifest was written", m.changed, "bold red")
    section("In the manifest but gone", m.missing, "red")
    section("New since the manifest (now added)", m.new, "yellow")
    section("Moved", [f"{a} -> {b}" for a, b in m.moved], "yellow")

    section("Warnings", check.warnings, "yellow")
    section("Notes", check.notes, "dim")
    if not check.ok and check.hints:
        section("What to do", check.hints, "bold")
    console.print(f"[dim]checked in {check.seconds:.1f} s[/]")


def run_check(dataset, root: str | Path, json_out: bool, console) -> int:
    """Check ``dataset``'s copy at ``root``, print the report (or JSON on
    stdout when ``json_out``) and return the exit status: 0 when the copy
    is complete and sound, 1 otherwise. Expected errors (root missing, a
    dataset without a check) raise :class:`AanbenchError` (exit 2)."""
    check_fn = getattr(dataset, "check", None)
    if check_fn is None:
        raise AanbenchError(f"dataset {getattr(dataset, 'name', dataset)!r} has no check")
    if json_out:
        result = check_fn(Path(root))
        console.file.write(json.dumps(to_json(result), indent=2) + "\n")
        console.file.flush()
    else:
        with console.status(f"checking {getattr(dataset, 'name', '')} at {root} ..."):
            result = check_fn(Path(root))
        render_check(result, console)
    return 0 if result.ok else 1


# --------------------------------------------------------------------------
# Finding files


def require_root(root: str | Path) -> Path:
    """``root`` as a resolved directory, or :class:`AanbenchError`."""
    p = Path(root).expanduser()
    if not p.exists():
        raise AanbenchError(f"dataset root does not exist: {p}")
    if not p.is_dir():
        raise AanbenchError(f"dataset root is not a directory: {p}")
    return p.resolve()


class FileIndex:
    """Every file below a root, by lower-cased file name.

    Hidden directories (``.git``, ``.cache``) are skipped; symbolic links to
    directories are followed once (loops are cut).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_name: dict[str, list[Path]] = {}
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):
                    continue
                self.by_name.setdefault(name.lower(), []).append(Path(dirpath) / name)
        for paths in self.by_name.values():
            paths.sort(key=_path_preference)

    def find(self, name: str) -> list[Path]:
        """All files called ``name`` (case-insensitive), preferred first:
        shallowest, then alphabetical."""
        return self.by_name.get(name.lower(), [])

    def first(self, name: str) -> Path | None:
        found = self.find(name)
        return found[0] if found else None

    def names(self) -> Iterable[str]:
        return self.by_name.keys()

    def all_paths(self) -> Iterable[Path]:
        for paths in self.by_name.values():
            yield from paths

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def _path_preference(p: Path) -> tuple[int, str]:
    return (len(p.parts), str(p))


# --------------------------------------------------------------------------
# Media probing


@dataclass(frozen=True)
class MediaProbe:
    """What opening a media file told us."""

    path: str
    error: str | None = None  # the file cannot be used
    warning: str | None = None  # usable, but something is off (e.g. no audio)
    duration: float = 0.0  # seconds, 0.0 when unknown
    has_video: bool = False
    has_audio: bool = False


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def probe_media(path: str | Path, need_video: bool = True, need_audio: bool = False) -> MediaProbe:
    """Open ``path`` with PyAV, list its streams and decode its first video
    frame. Never raises: problems come back in ``error`` / ``warning``."""
    from aanbench.media import media_duration, video_streams

    p = Path(path)
    sp = str(p)
    if not p.exists():
        return MediaProbe(sp, error="file not found")
    if p.is_dir():
        return MediaProbe(sp, error="is a directory, not a media file")
    if p.stat().st_size == 0:
        return MediaProbe(sp, error="empty file (0 bytes)")
    try:
        container = av.open(sp)
    except Exception as exc:  # PyAV raises several error types for bad data
        return MediaProbe(sp, error=f"cannot open ({_short(exc)})")
    try:
        has_video = bool(video_streams(container))  # a song's cover art is not footage
        has_audio = bool(container.streams.audio)
        duration = media_duration(container)
        if need_video and not has_video:
            return MediaProbe(sp, error="no video stream", duration=duration, has_audio=has_audio)
        if need_audio and not has_audio:
            return MediaProbe(sp, error="no audio stream", duration=duration, has_video=has_video)
        if has_video:
            got = False
            try:
                for _frame in container.decode(video_streams(container)[0]):
                    got = True
                    break
            except Exception as exc:
                return MediaProbe(sp, error=f"cannot decode video ({_short(exc)})", duration=duration,
                                  has_video=True, has_audio=has_audio)
            if not got:
                return MediaProbe(sp, error="no decodable video frame", duration=duration,
                                  has_video=True, has_audio=has_audio)
        warning = None
        if not has_audio:
            warning = "no audio stream (audio extractors will fail on it)"
        elif duration <= 0:
            warning = "duration unknown"
        return MediaProbe(sp, warning=warning, duration=duration, has_video=has_video, has_audio=has_audio)
    except Exception as exc:
        return MediaProbe(sp, error=f"cannot read streams ({_short(exc)})")
    finally:
        container.close()


def probe_many(paths: Sequence[Path], need_video: bool = True, need_audio: bool = False,
               workers: int | None = None) -> list[MediaProbe]:
    """:func:`probe_media` over ``paths`` (threads), in the order given."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    if len(paths) < 4 or workers <= 1:
        return [probe_media(p, need_video, need_audio) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: probe_media(p, need_video, need_audio), paths))


# --------------------------------------------------------------------------
# Labels


def label_problems(items: Iterable[Item], label_range: Mapping[str, tuple[float, float]],
                   targets: Sequence[str]) -> list[LabelProblem]:
    """Labels that are absent, not finite, or outside ``label_range``.

    Items that share a source label (sub-segments of one excerpt: ids
    ``<parent>#<k>``) are reported once, under the parent id.
    """
    out: list[LabelProblem] = []
    seen: set[tuple[str, str]] = set()
    for it in items:
        base = it.id.split("#", 1)[0]
        for t in targets:
            if (base, t) in seen:
                continue
            lo, hi = label_range.get(t, (-math.inf, math.inf))
            v = it.labels.get(t)
            bad = v is None or not math.isfinite(float(v)) or not (lo <= float(v) <= hi)
            if bad:
                seen.add((base, t))
                out.append(LabelProblem(base, t, None if v is None else float(v), float(lo), float(hi)))
    return out


# --------------------------------------------------------------------------
# Checksum manifest


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def cache_manifest_path(dataset_key: str, root: Path) -> Path:
    """Where the manifest goes when the root is not writable."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "aanbench" / "manifests" / f"{dataset_key}-{digest}.json"


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _hash_files(root: Path, files: Sequence[Path], workers: int | None = None) -> dict[str, dict[str, Any]]:
    workers = workers or min(8, (os.cpu_count() or 2) * 2)

    def one(p: Path) -> tuple[str, dict[str, Any]]:
        rel = p.relative_to(root).as_posix()
        return rel, {"sha256": sha256_file(p), "size": p.stat().st_size}

    if len(files) < 4:
        return dict(one(p) for p in files)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(one, files))


def compare_manifest(dataset_key: str, root: Path, files: Sequence[Path]) -> ManifestStatus:
    """Hash ``files`` (all below ``root``) and compare them with the stored
    manifest for ``dataset_key``; write the manifest on the first check and
    add new files on later ones. A changed file keeps its original hash in
    the manifest, so it is reported until the manifest is deleted."""
    root = root.resolve()
    files = sorted({Path(f).resolve() for f in files})
    current = _hash_files(root, files)

    in_root = root / MANIFEST_NAME
    cached = cache_manifest_path(dataset_key, root)
    stored_at: Path | None = None
    doc: dict | None = None
    for candidate in (in_root, cached):
        data = _read_json(candidate) if candidate.is_file() else None
        if data is not None and dataset_key in data.get("datasets", {}):
            stored_at, doc = candidate, data
            break

    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if doc is None:
        entry = {"created": now, "updated": now, "files": current}
        where, note = _store_manifest(dataset_key, entry, in_root, cached)
        if where is None:
            return ManifestStatus("unwritable", files=len(current), note=note)
        return ManifestStatus("written", path=str(where), files=len(current), note=note)

    entry = doc["datasets"][dataset_key]
    old: dict[str, dict[str, Any]] = entry.get("files", {})
    changed = sorted(k for k in current if k in old and old[k].get("sha256") != current[k]["sha256"])
    # gone: no longer on disk (a file outside this check's scope is not gone)
    gone = sorted(k for k in old if k not in current and not (root / k).exists())
    new = sorted(k for k in current if k not in old)
    # a file that moved inside the root keeps its hash
    by_hash_gone = {old[k]["sha256"]: k for k in gone}
    moved = []
    for k in list(new):
        was = by_hash_gone.pop(current[k]["sha256"], None)
        if was is not None:
            moved.append((was, k))
            new.remove(k)
            gone.remove(was)
    status = ManifestStatus("changed" if changed else "unchanged", path=str(stored_at), files=len(old),
                            changed=changed, missing=gone, new=new, moved=moved)
    if new or moved:
        files_out = dict(old)
        for k in new:
            files_out[k] = current[k]
        for was, now_k in moved:
            files_out[now_k] = files_out.pop(was)
        entry = dict(entry, files=files_out, updated=now)
        doc["datasets"][dataset_key] = entry
        try:
            _write_json_atomic(stored_at, doc)  # type: ignore[arg-type]
            status.files = len(files_out)
            if status.state == "unchanged":
                status.state = "updated"
        except OSError as exc:
            status.note = f"could not update the manifest ({_short(exc)})"
    return status


def _store_manifest(dataset_key: str, entry: dict, in_root: Path, cached: Path) -> tuple[Path | None, str]:
    reasons = []
    for target in (in_root, cached):
        doc = _read_json(target) if target.is_file() else None
        if doc is None or not isinstance(doc.get("datasets"), dict):
            doc = {"aanbench_manifest": MANIFEST_FORMAT, "datasets": {}}
        doc["datasets"][dataset_key] = entry
        try:
            _write_json_atomic(target, doc)
            note = "" if target == in_root else f"the root is not writable ({reasons[0]}); kept in the cache"
            return target, note
        except OSError as exc:
            reasons.append(_short(exc))
    return None, "no manifest written: " + "; ".join(reasons)


# --------------------------------------------------------------------------
# Putting it together


def build_check(
    *,
    dataset: str,
    manifest_key: str,
    root: Path,
    items: Sequence[Item],
    label_range: Mapping[str, tuple[float, float]],
    targets: Sequence[str],
    expected: Mapping[str, int],
    found: Mapping[str, int],
    missing: Sequence[str] = (),
    media: Sequence[Path] = (),
    other_files: Sequence[Path] = (),
    errors: Sequence[str] = (),
    warnings: Sequence[str] = (),
    notes: Sequence[str] = (),
    hints: Sequence[str] = (),
    need_audio: bool = False,
    extra_media_check: Callable[[MediaProbe], tuple[str, str] | None] | None = None,
    started: float | None = None,
) -> DatasetCheck:
    """The generic part of a dataset check.

    ``media`` are the media files found (each is probed), ``other_files``
    the annotation files; both go into the manifest. ``extra_media_check``
    may return ``("error" | "warning", message)`` for a probed file (e.g.
    too short for its annotations).
    """
    started = time.perf_counter() if started is None else started
    check = DatasetCheck(
        dataset=dataset,
        root=str(root),
        expected=dict(expected),
        found=dict(found),
        missing=list(missing),
        errors=list(errors),
        warnings=list(warnings),
        notes=list(notes),
        hints=list(hints),
    )
    for pr in probe_many(list(media), need_video=True, need_audio=need_audio):
        rel = _rel(root, pr.path)
        if pr.error:
            check.unreadable.append(UnreadableFile(rel, pr.error))
            continue
        if pr.warning:
            check.warnings.append(f"{rel}: {pr.warning}")
        if extra_media_check is not None:
            verdict = extra_media_check(pr)
            if verdict:
                level, message = verdict
                (check.errors if level == "error" else check.warnings).append(f"{rel}: {message}")
    check.label_problems = label_problems(items, label_range, targets)
    check.manifest = compare_manifest(manifest_key, root, [*other_files, *media])
    check.seconds = time.perf_counter() - started
    return check


def _rel(root: Path, path: str) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def parse_bool(key: str, value: Any) -> bool:
    """An option value as a bool (``true/false/yes/no/1/0``)."""
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise AanbenchError(f"option {key}={value!r}: expected true or false")


def unknown_option(dataset: str, key: str, allowed: Iterable[str]) -> AanbenchError:
    return AanbenchError(
        f"dataset {dataset!r} has no option {key!r} (allowed: {', '.join(sorted(allowed))})"
    )
