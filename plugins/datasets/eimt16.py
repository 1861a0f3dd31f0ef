"""MediaEval 2016 Emotional Impact of Movies, global subtask (EIMT16),
read from the user's own copy of LIRIS-ACCEDE and the MediaEval 2016 test set.

Training: the 9,800 Discrete LIRIS-ACCEDE excerpts ``ACCEDE00000.mp4`` ...
``ACCEDE09799.mp4``, labels ``valenceValue`` / ``arousalValue`` from
``ACCEDEranking.txt`` (tab-separated, one header line), source movie of
each excerpt from ``ACCEDEdescription.xml`` (``<media><name>`` and
``<movie>``). Test: the 1,200 excerpts ``MEDIAEVAL16_00000.mp4`` ...
``MEDIAEVAL16_01199.mp4``, labels from ``MEDIAEVAL16-Global_prediction.txt``
(no header, three tab-separated columns name / valence / arousal, lines
ended by a bare CR, no final newline). All files are found anywhere below
the root given (users unzip into varied trees). See ``datasets/eimt16.md``.

Two registered variants:

- ``eimt16``: one item per excerpt, id = file stem (``ACCEDE00000``),
  window = the whole file.
- ``eimt16-temporal`` (``segmentation="temporal4"``): each excerpt split into
  4 equal non-overlapping sub-segments ``[k d/4, (k+1) d/4)`` (d = the file's
  duration), ids ``ACCEDE00000#0`` ... ``#3``, each carrying the excerpt's
  labels, group and split. Its declared windows (:attr:`Eimt16.windows`)
  group them back per excerpt for the temporal models: the 4 sub-segments
  of one file, labelled by their (shared) label; the engine
  (:mod:`aanbench.samples`) builds them and names each after its excerpt.

The excerpts are independent (different films, one label each; all test
excerpts share one group): both variants declare
:attr:`Eimt16.independent_excerpts`, so no sequence model's window ever
spans two excerpts, at training or test; a window scope wider than one
file is refused. Sequence models (``temporal-aan``, ``lstm``, ``bilstm``)
run on ``eimt16-temporal``, over the 4 sub-segments of one excerpt.

Labels are kept exactly as the files give them (no clipping); values
outside the nominal range 1–5 are reported by ``aanbench datasets check``.
"""

from __future__ import annotations

import math
import re
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import av

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Dataset, Item, SequenceSpec
from aanbench.pluginkit.datacheck import (
    DatasetCheck,
    FileIndex,
    build_check,
    parse_bool,
    require_root,
    unknown_option,
)

RANKING_FILE = "ACCEDEranking.txt"
DESCRIPTION_FILE = "ACCEDEdescription.xml"
SETS_FILE = "ACCEDEsets.txt"
TEST_LABELS_FILE = "MEDIAEVAL16-Global_prediction.txt"

OFFICIAL_TRAIN = 9800
OFFICIAL_TEST = 1200
TRAIN_RE = re.compile(r"^ACCEDE(\d{5})$", re.IGNORECASE)
TEST_RE = re.compile(r"^MEDIAEVAL16_(\d{5})$", re.IGNORECASE)

SEGMENTATIONS = {"default": 1, "temporal4": 4}
TEST_GROUP = "test"


def official_train_names() -> list[str]:
    return [f"ACCEDE{i:05d}" for i in range(OFFICIAL_TRAIN)]


def official_test_names() -> list[str]:
    return [f"MEDIAEVAL16_{i:05d}" for i in range(OFFICIAL_TEST)]


# --------------------------------------------------------------------------
# Parsing the annotation files


@dataclass(frozen=True)
class LabelRow:
    stem: str
    valence: float
    arousal: float
    line: int


def _text(path: Path) -> str:
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


def _fields(line: str) -> list[str]:
    parts = line.split("\t")
    if len(parts) < 3:
        parts = line.split()
    return [p.strip() for p in parts]


def _stem(name: str) -> str:
    name = name.strip().strip('"')
    return name[:-4] if name.lower().endswith(".mp4") else name


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return math.nan


def parse_ranking(path: Path) -> tuple[list[LabelRow], list[str]]:
    """``ACCEDEranking.txt`` -> (rows, problems). Columns are found by the
    header (``name``, ``valenceValue``, ``arousalValue``); without a header
    the documented positions (2nd, 5th, 6th) are used. Any line ending."""
    rows: list[LabelRow] = []
    problems: list[str] = []
    lines = _text(path).splitlines()
    col_name, col_v, col_a = 1, 4, 5
    start = 0
    if lines:
        head = [h.lower() for h in _fields(lines[0])]
        if "name" in head and "valencevalue" in head and "arousalvalue" in head:
            col_name, col_v, col_a = head.index("name"), head.index("valencevalue"), head.index("arousalvalue")
            start = 1
        elif lines[0].strip() and math.isnan(_float(_fields(lines[0])[0])):
            problems.append(f"{path.name}: unexpected header {lines[0].strip()[:80]!r}; using the documented column positions")
            start = 1
    need = max(col_name, col_v, col_a) + 1
    for no, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        f = _fields(line)
        if len(f) < need:
            problems.append(f"{path.name} line {no}: {len(f)} columns, expected at least {need}")
            continue
        rows.append(LabelRow(_stem(f[col_name]), _float(f[col_v]), _float(f[col_a]), no))
    return rows, problems


def parse_test_labels(path: Path) -> tuple[list[LabelRow], list[str]]:
    """``MEDIAEVAL16-Global_prediction.txt`` -> (rows, problems): no header,
    name / valence / arousal, tab-separated; lines may end with CR, LF or
    CRLF and the last may have no ending."""
    rows: list[LabelRow] = []
    problems: list[str] = []
    for no, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        f = _fields(line)
        if len(f) < 3:
            problems.append(f"{path.name} line {no}: {len(f)} columns, expected 3 (name, valence, arousal)")
            continue
        v, a = _float(f[1]), _float(f[2])
        if no == 1 and math.isnan(v) and math.isnan(a):
            problems.append(f"{path.name}: first line looks like a header ({line.strip()[:60]!r}); skipped")
            continue
        rows.append(LabelRow(_stem(f[0]), v, a, no))
    return rows, problems


def parse_description(path: Path) -> tuple[dict[str, str], list[str]]:
    """``ACCEDEdescription.xml`` (or a similar description of test excerpts)
    -> ({excerpt stem: source movie stem}, problems). Each ``<media>`` has
    ``<name>`` (the excerpt file) and ``<movie>`` (the source movie file)."""
    problems: list[str] = []
    out: dict[str, str] = {}
    raw = path.read_bytes()
    try:
        root = ET.fromstring(raw)
        for media in root.iter("media"):
            name = (media.findtext("name") or "").strip()
            movie = (media.findtext("movie") or "").strip()
            if name:
                out[_stem(name)] = _stem(movie)
    except ET.ParseError as exc:
        # tolerate an XML file with unescaped characters: read the tags directly
        problems.append(f"{path.name}: not well-formed XML ({exc}); read tag by tag")
        text = raw.decode("utf-8", errors="replace")
        for block in re.findall(r"<media>(.*?)</media>", text, flags=re.S):
            n = re.search(r"<name>(.*?)</name>", block, flags=re.S)
            m = re.search(r"<movie>(.*?)</movie>", block, flags=re.S)
            if n:
                out[_stem(n.group(1))] = _stem(m.group(1)) if m else ""
    return out, problems


# --------------------------------------------------------------------------
# Durations (for the temporal segmentation)

_durations: dict[tuple[str, int, int], float] = {}


def _duration(path: Path) -> float:
    """Container duration in seconds (0.0 if unknown or unreadable); cached
    by path, size and modification time."""
    from aanbench.media import media_duration

    try:
        st = path.stat()
    except OSError:
        return 0.0
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _durations:
        try:
            with av.open(str(path)) as c:
                _durations[key] = media_duration(c)
        except Exception:
            _durations[key] = 0.0
    return _durations[key]


# --------------------------------------------------------------------------
# The copy on disk


@dataclass
class Layout:
    """Where the files of one EIMT16 copy were found."""

    root: Path
    index: FileIndex
    ranking: Path | None
    description: Path | None
    test_labels: Path | None
    sets: Path | None
    notes: list[str]
    warnings: list[str]

    @classmethod
    def find(cls, root: Path) -> "Layout":
        index = FileIndex(root)
        notes: list[str] = []
        warnings: list[str] = []

        def pick(name: str) -> Path | None:
            found = index.find(name)
            if not found:
                return None
            notes.append(f"{name}: {index.rel(found[0])}")
            if len(found) > 1:
                others = ", ".join(index.rel(p) for p in found[1:4])
                same = all(p.read_bytes() == found[0].read_bytes() for p in found[1:])
                msg = f"{name} found {len(found)} times; using {index.rel(found[0])} (also: {others})"
                (notes if same else warnings).append(msg + ("" if same else " and the copies differ"))
            return found[0]

        return cls(root, index, pick(RANKING_FILE), pick(DESCRIPTION_FILE), pick(TEST_LABELS_FILE),
                   pick(SETS_FILE), notes, warnings)

    def video(self, stem: str) -> Path | None:
        return self.index.first(stem + ".mp4")

    def duplicates(self, stem: str) -> list[Path]:
        return self.index.find(stem + ".mp4")

    def media_dir(self, stems: Sequence[str]) -> Path:
        """The folder where most of these excerpts live (for the path of a
        missing one, so its failure names the place it was expected)."""
        counts: dict[Path, int] = {}
        for s in stems[:200]:
            p = self.video(s)
            if p is not None:
                counts[p.parent] = counts.get(p.parent, 0) + 1
        if counts:
            return max(counts, key=lambda d: (counts[d], -len(d.parts)))
        return self.root / "data"

    def test_description(self) -> dict[str, str]:
        """Source movies of test excerpts, if any description XML in the copy
        names MEDIAEVAL16 excerpts (none is documented; see the card)."""
        out: dict[str, str] = {}
        for lname in self.index.names():
            if lname.endswith(".xml") and "description" in lname and lname != DESCRIPTION_FILE.lower():
                for p in self.index.find(lname):
                    try:
                        mapping, _ = parse_description(p)
                    except OSError:
                        continue
                    out.update({k: v for k, v in mapping.items() if TEST_RE.match(k) and v})
        return out


# --------------------------------------------------------------------------
# The dataset


class Eimt16(Dataset):
    """MediaEval 2016 EIMT global subtask: 9,800 training excerpts (Discrete
    LIRIS-ACCEDE), 1,200 test excerpts; fixed train/test protocol."""

    version = "1"
    targets = ("valence", "arousal")
    label_range = {"valence": (1.0, 5.0), "arousal": (1.0, 5.0)}
    protocol = "fixed"
    card = "datasets/eimt16.md"
    independent_excerpts = True  # a window never spans two excerpts (files)
    options_allowed = ("segmentation", "official_counts")

    def __init__(self, segmentation: str = "default", official_counts: bool = True) -> None:
        if segmentation not in SEGMENTATIONS:
            raise AanbenchError(
                f"eimt16: unknown segmentation {segmentation!r} (known: {', '.join(SEGMENTATIONS)})"
            )
        self.segmentation = segmentation
        self.parts = SEGMENTATIONS[segmentation]
        self.official_counts = bool(official_counts)
        self.name = "eimt16" if segmentation == "default" else "eimt16-temporal"
        # paper (temporal AttendAffectNet): the sub-segments of one excerpt, in time order
        self.windows = (None if self.parts == 1 else
                        SequenceSpec(length=self.parts, stride=self.parts, scope="file", label="mean", start="drop"))
        # paper: 64 frames per excerpt, 16 per temporal sub-segment
        self.video_frames = 64 if self.parts == 1 else 16
        if self.parts == 1:
            self.description = ("MediaEval 2016 EIMT global subtask (LIRIS-ACCEDE): 9,800 train / 1,200 test "
                                "excerpts, valence and arousal 1-5")
        else:
            self.description = (f"EIMT16, each excerpt split into {self.parts} equal sub-segments "
                                "carrying its labels (for the temporal models)")

    # ------------------------------------------------------------ options
    def config(self) -> dict[str, Any]:
        """The options that make this dataset what it is (for provenance)."""
        return {"segmentation": self.segmentation, "official_counts": self.official_counts}

    def configure(self, **options: Any) -> "Eimt16":
        """A copy with ``options`` applied (values may be strings, as from
        ``--option key=value``). Keys: ``segmentation`` (``default`` |
        ``temporal4``), ``official_counts`` (true: a check expects the
        official 9,800 + 1,200 excerpts; false: exactly those the annotation
        files list, for a subset)."""
        cfg = self.config()
        for key, value in options.items():
            if key not in self.options_allowed:
                raise unknown_option(self.name, key, self.options_allowed)
            cfg[key] = parse_bool(key, value) if key == "official_counts" else str(value)
        return Eimt16(**cfg)

    # -------------------------------------------------------------- items
    def items(self, root: Path) -> list[Item]:
        """Training items (split ``train``, ordered by name), then test items
        (split ``test``). Missing videos keep their item, with the path where
        the file was expected; their extraction fails with "file not found"."""
        layout = Layout.find(require_root(root))
        missing = [n for n, p in ((RANKING_FILE, layout.ranking), (DESCRIPTION_FILE, layout.description),
                                  (TEST_LABELS_FILE, layout.test_labels)) if p is None]
        if missing:
            raise AanbenchError(
                f"eimt16: {', '.join(missing)} not found below {layout.root}; "
                f"run `aanbench datasets check eimt16 --root {layout.root}` for the full report "
                f"(see datasets/eimt16.md for the expected layout)"
            )
        excerpts, _, _ = self._excerpts(layout)
        return self._expand(excerpts)

    def _excerpts(self, layout: Layout) -> tuple[list[Item], list[str], list[str]]:
        """One item per excerpt (whole file) + (errors, warnings)."""
        errors: list[str] = []
        warnings: list[str] = []
        train_rows, p1 = parse_ranking(layout.ranking) if layout.ranking else ([], [])
        test_rows, p2 = parse_test_labels(layout.test_labels) if layout.test_labels else ([], [])
        movies, p3 = parse_description(layout.description) if layout.description else ({}, [])
        warnings += p1 + p2 + p3
        test_movies = layout.test_description()

        out: list[Item] = []
        for rows, split, pattern in ((train_rows, "train", TRAIN_RE), (test_rows, "test", TEST_RE)):
            seen: set[str] = set()
            rows = sorted(rows, key=lambda r: r.stem.upper())
            stems = [r.stem for r in rows]
            fallback_dir = layout.media_dir(stems)
            for r in rows:
                if not pattern.match(r.stem):
                    warnings.append(f"{split} label file line {r.line}: unexpected excerpt name {r.stem!r}")
                if r.stem in seen:
                    errors.append(f"{r.stem} is labelled twice in the {split} label file (line {r.line})")
                    continue
                seen.add(r.stem)
                if split == "train":
                    group = movies.get(r.stem, "")
                    if layout.description is not None and not group:
                        errors.append(f"{r.stem} has no <movie> in {DESCRIPTION_FILE}")
                else:
                    group = test_movies.get(r.stem, TEST_GROUP)
                path = layout.video(r.stem) or fallback_dir / f"{r.stem}.mp4"
                out.append(Item(id=r.stem, path=path, labels={"valence": r.valence, "arousal": r.arousal},
                                group=group, split=split))
        return out, errors, warnings

    def _expand(self, excerpts: list[Item]) -> list[Item]:
        if self.parts == 1:
            return excerpts
        paths = [it.path for it in excerpts]
        with ThreadPoolExecutor(max_workers=8) as pool:
            durations = list(pool.map(lambda p: _duration(p) if p is not None else 0.0, paths))
        out: list[Item] = []
        for it, d in zip(excerpts, durations):
            for k in range(self.parts):
                # unknown duration (missing or unreadable file): open window,
                # the extraction records the file's own failure
                start = k * d / self.parts if d > 0 else None
                end = (k + 1) * d / self.parts if d > 0 else None
                out.append(Item(id=f"{it.id}#{k}", path=it.path, start=start, end=end, labels=it.labels,
                                group=it.group, split=it.split))
        return out

    # -------------------------------------------------------------- check
    def make_fixture(self, root: Path, seed: int = 0):
        """A small generated copy in the official layout (``aanbench datasets make-fixture``)."""
        from aanbench_plugins.datasets.fixtures import make_fixture

        return make_fixture("eimt16", root, seed=seed)

    def check(self, root: Path) -> DatasetCheck:
        """Counts found against expected, missing and unreadable files,
        label ranges and the checksum manifest (see :mod:`aanbench.pluginkit.datacheck`)."""
        started = time.perf_counter()
        layout = Layout.find(require_root(root))
        excerpts, errors, warnings = self._excerpts(layout)
        warnings = layout.warnings + warnings
        notes = list(layout.notes)
        if layout.sets is None:
            notes.append(f"{SETS_FILE} not found (optional: LIRIS-ACCEDE's own split, not used by EIMT16)")

        annotation = [(RANKING_FILE, layout.ranking), (DESCRIPTION_FILE, layout.description),
                      (TEST_LABELS_FILE, layout.test_labels)]
        missing = [f"{name} (annotation file)" for name, p in annotation if p is None]

        train_listed = [it.id for it in excerpts if it.split == "train"]
        test_listed = [it.id for it in excerpts if it.split == "test"]
        if self.official_counts:
            train_expected, test_expected = official_train_names(), official_test_names()
            for listed, official, fname in ((train_listed, train_expected, RANKING_FILE),
                                            (test_listed, test_expected, TEST_LABELS_FILE)):
                if dict(annotation)[fname] is None:
                    continue
                unlisted = sorted(set(official) - set(listed))
                if unlisted:
                    errors.append(f"{fname} has no labels for {len(unlisted)} of the {len(official):,} "
                                  f"official excerpts (first: {', '.join(unlisted[:5])})")
        else:
            train_expected, test_expected = train_listed, test_listed
            notes.append("official_counts=false: expecting exactly the excerpts the annotation files list")

        found_train = [s for s in train_expected if layout.video(s) is not None]
        found_test = [s for s in test_expected if layout.video(s) is not None]
        missing += [f"{s}.mp4 (training excerpt)" for s in train_expected if layout.video(s) is None]
        missing += [f"{s}.mp4 (test excerpt)" for s in test_expected if layout.video(s) is None]

        # excerpts on disk that no label file mentions
        listed = set(train_listed) | set(test_listed)
        extra = sorted({_stem(n) for n in layout.index.names()
                        if n.endswith(".mp4") and (TRAIN_RE.match(_stem(n)) or TEST_RE.match(_stem(n)))}
                       - {s.lower() for s in listed})
        if extra:
            warnings.append(f"{len(extra)} excerpt files are in no label file (first: {', '.join(extra[:5])})")
        for stem in [*found_train, *found_test]:
            dups = layout.duplicates(stem)
            if len(dups) > 1:
                warnings.append(f"{stem}.mp4 found {len(dups)} times; using {layout.index.rel(dups[0])}")

        media = [layout.video(s) for s in [*found_train, *found_test]]
        expected = {
            "annotation files": 3,
            "training excerpts (ACCEDE*.mp4)": len(train_expected),
            "training labels": len(train_expected),
            "test excerpts (MEDIAEVAL16_*.mp4)": len(test_expected),
            "test labels": len(test_expected),
        }
        found = {
            "annotation files": sum(p is not None for _, p in annotation),
            "training excerpts (ACCEDE*.mp4)": len(found_train),
            "training labels": len(set(train_listed) & set(train_expected)),
            "test excerpts (MEDIAEVAL16_*.mp4)": len(found_test),
            "test labels": len(set(test_listed) & set(test_expected)),
        }
        hints = [
            "Unzip LIRIS-ACCEDE-data.zip, LIRIS-ACCEDE-annotations.zip and the MediaEval 2016 global test "
            "data and annotations anywhere below the root; folder names do not matter, file names do.",
            "A missing or unreadable excerpt: extract it again from its zip (or download that zip again).",
            "A file changed since the manifest: restore it, or delete the manifest to accept the new copy.",
            "See datasets/eimt16.md for the expected files and counts.",
        ]
        return build_check(
            dataset=self.name, manifest_key="eimt16", root=layout.root, items=excerpts,
            label_range=self.label_range, targets=self.targets, expected=expected, found=found,
            missing=missing, media=[p for p in media if p is not None],
            other_files=[p for _, p in annotation if p is not None] + ([layout.sets] if layout.sets else []),
            errors=errors, warnings=warnings, notes=notes, hints=hints,
            extra_media_check=self._media_problem, started=started,
        )

    def _media_problem(self, probe) -> tuple[str, str] | None:
        if self.parts > 1 and probe.duration <= 0:
            return "error", f"duration unknown: cannot split into {self.parts} sub-segments"
        return None


@hookimpl
def aanbench_datasets():
    return [Eimt16(), Eimt16(segmentation="temporal4")]
