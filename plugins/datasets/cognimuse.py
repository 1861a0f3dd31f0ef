"""Extended COGNIMUSE (12 movie clips of about 30 minutes, 25 fps), read
from the user's own copy of the annotations and of the movie clips.

Annotations: continuous valence and arousal in [-1, 1], one row per 40 ms
video frame, three whitespace-separated columns ``time valence arousal``.
Two streams are distributed: "intended" (one expert, up to three passes,
``intended_<k>_<Movie>.dat``; what the AttendAffectNet paper uses) and
"experienced" (seven viewers, most twice, ``subj<N>_<iter>_<Movie>.dat``).
``<Movie>`` is the movie's token in the distribution (``BeautifulMind``,
``LOTRReturn``, ...; :data:`TOKENS`) or its three-letter code. A per-movie
folder layout (``BMI/emotion/intended_1.dat``) is read too. Files are found
anywhere below the root. See ``datasets/cognimuse.md`` for what is verified
and what is assumed.

Items: non-overlapping 5-second segments of each movie, id
``<CODE>_<kkkk>`` (segment index, 4 digits), window ``[5k, 5k+5)`` s of the
movie's video file, labels = mean over the segment's 125 frames of the
chosen stream (several passes / viewers: the frame-wise mean of the streams
after truncating them to the shortest). The final partial segment is
dropped. ``group`` = movie code, ``split`` = "" (protocol
leave-one-group-out over the 12 movies).

Options (constructor arguments, or ``configure(key=value)`` as the CLI's
``--option key=value``): ``annotation`` (``intended`` | ``experienced``),
``streams`` (``mean`` or a comma list such as ``intended_1``),
``movies`` (``all`` or a comma list of codes), ``segment_seconds`` (5).

Temporal models read windows of 5 consecutive segments of one movie
(stride 1, labelled by the last segment; :attr:`Cognimuse.windows`); the
items (and so the features) are the same 5-s segments, and the engine
(:mod:`aanbench.samples`) builds the windows. Windows are not a dataset
option: an experiment may override them without touching the store.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Dataset, Item, SequenceSpec
from aanbench.pluginkit.datacheck import (
    MEDIA_EXTENSIONS,
    DatasetCheck,
    FileIndex,
    LabelProblem,
    build_check,
    require_root,
    unknown_option,
)

ORIGINAL = ("BMI", "CHI", "CRA", "DEP", "FNE", "GLA", "LOR")
EXTENSION = ("ABE", "MDB", "NCO", "RAT", "SIL")
MOVIES: tuple[str, ...] = tuple(sorted(ORIGINAL + EXTENSION))

# Movie tokens used in the distributed annotation file names -> codes.
TOKENS = {
    "BeautifulMind": "BMI",
    "Chicago": "CHI",
    "Crash": "CRA",
    "TheDeparted": "DEP",
    "FindingNemo": "FNE",
    "Gladiator": "GLA",
    "LOTRReturn": "LOR",
    "AmericanBeauty": "ABE",
    "MDB": "MDB",
    "NoCountry": "NCO",
    "Ratatouille": "RAT",
    "ShakespeareInLove": "SIL",
}
TITLES = {
    "ABE": "American Beauty", "BMI": "A Beautiful Mind", "CHI": "Chicago", "CRA": "Crash",
    "DEP": "The Departed", "FNE": "Finding Nemo", "GLA": "Gladiator",
    "LOR": "The Lord of the Rings: The Return of the King", "MDB": "Million Dollar Baby",
    "NCO": "No Country for Old Men", "RAT": "Ratatouille", "SIL": "Shakespeare in Love",
}
FRAME_SECONDS = 0.04  # one annotation row per 25-fps video frame
KINDS = ("intended", "experienced")
_TOKEN_TO_CODE = {k.lower(): v for k, v in TOKENS.items()} | {c.lower(): c for c in MOVIES}
_CODE_TO_TOKEN = {v: k for k, v in TOKENS.items()}

INTENDED_RE = re.compile(r"^intended_(\d+)(?:_(.+))?\.dat$", re.IGNORECASE)
EXPERIENCED_RE = re.compile(r"^subj(\d+)_(\d+)(?:_(.+))?\.dat$", re.IGNORECASE)
YEAR_CODE_RE = re.compile(r"^(?:\d{4})?([A-Za-z]+)$")


def movie_code(name: str) -> str | None:
    """The movie code for a token (``LOTRReturn``), a code (``lor``) or a
    folder name with a year (``2004LOR``); ``None`` if it is none of them."""
    key = name.strip().lower()
    if key in _TOKEN_TO_CODE:
        return _TOKEN_TO_CODE[key]
    m = YEAR_CODE_RE.match(name.strip())
    if m and m.group(1).lower() in _TOKEN_TO_CODE:
        return _TOKEN_TO_CODE[m.group(1).lower()]
    return None


def _code_from_dirs(path: Path, root: Path) -> str | None:
    """The movie named by the nearest folder between ``path`` and ``root``
    (the root's own name is not used)."""
    for parent in path.parents:
        if parent == root:
            break
        code = movie_code(parent.name)
        if code:
            return code
    return None


# --------------------------------------------------------------------------
# Annotation streams


@dataclass(frozen=True)
class StreamFile:
    """One annotation stream file: its kind, name (``intended_1``,
    ``subj3_2``), movie code and path."""

    kind: str
    name: str
    movie: str
    path: Path


@dataclass
class Stream:
    """A parsed stream: ``values`` is ``float64 (n_frames, 2)`` (valence,
    arousal), ``times`` the first column (seconds)."""

    file: StreamFile
    times: np.ndarray
    values: np.ndarray


def parse_dat(path: Path) -> tuple[np.ndarray, list[str]]:
    """A ``.dat`` stream -> (``float64 (n, 3)`` time / valence / arousal,
    problems). Whitespace-separated; any line ending; blank lines skipped;
    a non-numeric first line is taken as a header."""
    rows: list[list[float]] = []
    problems: list[str] = []
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    for no, line in enumerate(text.splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        try:
            vals = [float(p) for p in parts[:3]]
        except ValueError:
            if not rows and no == 1:
                problems.append(f"{path.name}: first line is not numeric ({line.strip()[:60]!r}); taken as a header")
                continue
            problems.append(f"{path.name} line {no}: not numeric ({line.strip()[:60]!r})")
            continue
        if len(parts) < 3:
            problems.append(f"{path.name} line {no}: {len(parts)} columns, expected 3 (time valence arousal)")
            continue
        rows.append(vals)
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return arr, problems


def find_streams(index: FileIndex) -> tuple[list[StreamFile], list[str]]:
    """Every annotation stream file below the index's root, and the ``.dat``
    files that look like streams but name no known movie."""
    out: list[StreamFile] = []
    unplaced: list[str] = []
    for lname in index.names():
        if not lname.endswith(".dat"):
            continue
        for path in index.find(lname):
            m = INTENDED_RE.match(path.name)
            if m:
                kind, name, token = "intended", f"intended_{int(m.group(1))}", m.group(2)
            else:
                m = EXPERIENCED_RE.match(path.name)
                if not m:
                    continue
                kind, name, token = "experienced", f"subj{int(m.group(1))}_{int(m.group(2))}", m.group(3)
            code = movie_code(token) if token else _code_from_dirs(path, index.root)
            if code is None:
                unplaced.append(index.rel(path))
                continue
            out.append(StreamFile(kind, name, code, path))
    out.sort(key=lambda s: (s.movie, s.kind, s.name, len(s.path.parts), str(s.path)))
    return out, sorted(unplaced)


def find_video(index: FileIndex, code: str) -> list[Path]:
    """Candidate video files of movie ``code``, preferred first: a file named
    after the code or the token (``BMI.avi``, ``BeautifulMind.mp4``), then
    any video in a folder named after it (``2002BMI/``, ``BMI/video.mp4``)."""
    token = _CODE_TO_TOKEN.get(code, code)
    by_name: list[Path] = []
    by_dir: list[Path] = []
    for lname in index.names():
        if not lname.endswith(MEDIA_EXTENSIONS):
            continue
        stem = lname.rsplit(".", 1)[0]
        for p in index.find(lname):
            if stem in (code.lower(), token.lower()):
                by_name.append(p)
            elif _code_from_dirs(p, index.root) == code:
                by_dir.append(p)
    key = lambda p: (len(p.parts), str(p))  # noqa: E731
    return sorted(by_name, key=key) + sorted(by_dir, key=key)


# --------------------------------------------------------------------------
# The dataset


@dataclass
class MovieLabels:
    """One movie's chosen streams and its segment labels."""

    code: str
    streams: list[Stream]
    n_frames: int  # after truncation to the shortest stream
    labels: np.ndarray  # float64 (n_segments, 2): valence, arousal
    notes: list[str] = field(default_factory=list)


class Cognimuse(Dataset):
    """Extended COGNIMUSE: 12 movies, 5-s segments, leave-one-movie-out."""

    name = "cognimuse"
    version = "1"
    targets = ("valence", "arousal")
    label_range = {"valence": (-1.0, 1.0), "arousal": (-1.0, 1.0)}
    protocol = "leave-one-group-out"
    card = "datasets/cognimuse.md"
    options_allowed = ("annotation", "streams", "movies", "segment_seconds")
    # paper: 5 consecutive 5-s segments of one movie, stride 1, labelled by the last
    windows = SequenceSpec(length=5, stride=1, scope="group", label="last", start="drop")

    def __init__(self, annotation: str = "intended", streams: str | Sequence[str] = "mean",
                 movies: str | Sequence[str] = "all", segment_seconds: float = 5.0) -> None:
        if annotation not in KINDS:
            raise AanbenchError(f"cognimuse: annotation must be one of {', '.join(KINDS)}, not {annotation!r}")
        self.annotation = annotation
        self.streams = self._parse_streams(streams)
        self.movies = self._parse_movies(movies)
        seg = float(segment_seconds)
        frames = seg / FRAME_SECONDS
        if seg <= 0 or abs(frames - round(frames)) > 1e-6:
            raise AanbenchError(f"cognimuse: segment_seconds must be a positive multiple of 0.04, not {segment_seconds!r}")
        self.segment_seconds = seg
        self.frames_per_segment = int(round(frames))
        # paper: every frame of a 5-s segment at 25 fps (125)
        self.video_frames = int(round(seg * 25))
        self.segmentation = "default" if seg == 5.0 else f"{seg:g}s"
        self.description = (f"extended COGNIMUSE: 12 movies, {seg:g}-s segments, {annotation} valence/arousal "
                            f"in [-1, 1] ({'mean of streams' if self.streams == ('mean',) else ', '.join(self.streams)})")

    def _parse_streams(self, streams: str | Sequence[str]) -> tuple[str, ...]:
        names = [s.strip().lower() for s in (streams.split(",") if isinstance(streams, str) else streams)]
        names = [n for n in names if n]
        if not names or names == ["mean"]:
            return ("mean",)
        pattern = r"^intended_\d+$" if self.annotation == "intended" else r"^subj\d+_\d+$"
        bad = [n for n in names if not re.match(pattern, n)]
        if bad:
            example = "intended_1" if self.annotation == "intended" else "subj1_1"
            raise AanbenchError(f"cognimuse: stream(s) {', '.join(bad)} are not {self.annotation} streams "
                                f"(use 'mean' or names like {example})")
        return tuple(sorted(set(names)))

    @staticmethod
    def _parse_movies(movies: str | Sequence[str]) -> tuple[str, ...]:
        names = [m.strip() for m in (movies.split(",") if isinstance(movies, str) else movies)]
        names = [n for n in names if n]
        if not names or [n.lower() for n in names] == ["all"]:
            return MOVIES
        codes = []
        for n in names:
            c = movie_code(n)
            if c is None:
                raise AanbenchError(f"cognimuse: unknown movie {n!r} (codes: {', '.join(MOVIES)})")
            codes.append(c)
        return tuple(sorted(set(codes)))

    # ------------------------------------------------------------ options
    def config(self) -> dict[str, Any]:
        """The options that make this dataset what it is (for provenance:
        the labels depend on ``annotation`` and ``streams``)."""
        return {
            "annotation": self.annotation,
            "streams": ",".join(self.streams),
            "movies": ",".join(self.movies) if self.movies != MOVIES else "all",
            "segment_seconds": self.segment_seconds,
        }

    def configure(self, **options: Any) -> "Cognimuse":
        """A copy with ``options`` applied (string values accepted, as from
        ``--option key=value``); unknown keys raise :class:`AanbenchError`."""
        cfg = self.config()
        for key, value in options.items():
            if key not in self.options_allowed:
                raise unknown_option(self.name, key, self.options_allowed)
            if key == "segment_seconds":
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise AanbenchError(f"option segment_seconds={value!r}: expected a number of seconds") from None
            cfg[key] = value
        if "annotation" in options and "streams" not in options:
            cfg["streams"] = "mean"  # stream names belong to one kind
        return Cognimuse(**cfg)

    # ------------------------------------------------------------- labels
    def _load(self, index: FileIndex) -> tuple[dict[str, MovieLabels], list[str], list[str], list[str]]:
        """({code: MovieLabels}, missing, errors, warnings) for the chosen movies."""
        files, unplaced = find_streams(index)
        missing: list[str] = []
        errors: list[str] = []
        warnings: list[str] = [f"{p}: an annotation stream of no known movie (ignored)" for p in unplaced]
        out: dict[str, MovieLabels] = {}
        for code in self.movies:
            chosen: dict[str, StreamFile] = {}
            for sf in files:
                if sf.movie == code and sf.kind == self.annotation and sf.name not in chosen:
                    if self.streams == ("mean",) or sf.name in self.streams:
                        chosen[sf.name] = sf
            dup = [sf for sf in files if sf.movie == code and sf.kind == self.annotation
                   and sf.name in chosen and sf.path != chosen[sf.name].path]
            for sf in dup:
                if sf.path.read_bytes() != chosen[sf.name].path.read_bytes():
                    warnings.append(f"{code}: two different files for stream {sf.name}; using "
                                    f"{index.rel(chosen[sf.name].path)}, not {index.rel(sf.path)}")
            if not chosen:
                token = _CODE_TO_TOKEN.get(code, code)
                pattern = f"intended_<k>_{token}.dat" if self.annotation == "intended" else f"subj<N>_<i>_{token}.dat"
                missing.append(f"{code} ({TITLES[code]}): no {self.annotation} annotation ({pattern})")
                continue
            if self.streams != ("mean",):
                absent = [s for s in self.streams if s not in chosen]
                if absent:
                    missing.append(f"{code}: stream(s) {', '.join(absent)} not found")
                    continue
            streams: list[Stream] = []
            bad = False
            for name in sorted(chosen, key=_stream_sort_key):
                sf = chosen[name]
                arr, problems = parse_dat(sf.path)
                hard = [p for p in problems if "taken as a header" not in p]
                warnings += [f"{index.rel(sf.path)}: {p}" for p in problems if p not in hard]
                if hard or len(arr) == 0:
                    errors += [f"{index.rel(sf.path)}: {p}" for p in hard] or [f"{index.rel(sf.path)}: no rows"]
                    bad = True
                    continue
                streams.append(Stream(sf, arr[:, 0], arr[:, 1:3]))
            if bad:
                continue
            lengths = [len(s.values) for s in streams]
            n = min(lengths)
            mean = np.mean(np.stack([s.values[:n] for s in streams]), axis=0)  # (n, 2)
            n_seg = n // self.frames_per_segment
            labels = mean[: n_seg * self.frames_per_segment].reshape(n_seg, self.frames_per_segment, 2).mean(axis=1)
            notes = []
            if len(set(lengths)) > 1:
                notes.append(f"{code}: streams of {min(lengths)}-{max(lengths)} frames truncated to {n}")
            out[code] = MovieLabels(code, streams, n, labels, notes)
        return out, missing, errors, warnings

    # -------------------------------------------------------------- items
    def items(self, root: Path) -> list[Item]:
        """The 5-s segments of every chosen movie, in movie-code order then
        time. Raises :class:`AanbenchError` when a chosen movie has no
        usable annotation (restrict with the ``movies`` option); a movie
        whose video is not found keeps its items with ``path=None``."""
        index = FileIndex(require_root(root))
        movies, missing, errors, _ = self._load(index)
        if missing or errors:
            problems = missing + errors
            raise AanbenchError(
                f"cognimuse: {len(problems)} problem(s) below {index.root}: {'; '.join(problems[:4])}"
                f"{' ...' if len(problems) > 4 else ''}. Run `aanbench datasets check cognimuse --root "
                f"{index.root}` for the full report, or choose movies with --option movies=BMI,CHI,..."
            )
        out: list[Item] = []
        for code in self.movies:
            ml = movies[code]
            videos = find_video(index, code)
            path = videos[0] if videos else None
            for k in range(len(ml.labels)):
                out.append(Item(
                    id=f"{code}_{k:04d}", path=path,
                    start=k * self.segment_seconds, end=(k + 1) * self.segment_seconds,
                    labels={"valence": float(ml.labels[k, 0]), "arousal": float(ml.labels[k, 1])},
                    group=code, split="",
                ))
        return out

    # -------------------------------------------------------------- check
    def make_fixture(self, root: Path, seed: int = 0):
        """A small generated copy in the official layout (``aanbench datasets make-fixture``)."""
        from aanbench_plugins.datasets.fixtures import make_fixture

        return make_fixture("cognimuse", root, seed=seed)

    def check(self, root: Path) -> DatasetCheck:
        """Movies with annotations and with a video, against the chosen
        movies; unreadable videos; videos shorter than their annotations;
        frame values and segment labels outside [-1, 1]; the manifest."""
        started = time.perf_counter()
        index = FileIndex(require_root(root))
        movies, missing, errors, warnings = self._load(index)
        notes = [f"annotation stream: {self.annotation} ({', '.join(self.streams)}), "
                 f"{self.segment_seconds:g}-s segments, final partial segment dropped"]
        items: list[Item] = []
        media: list[Path] = []
        covered: dict[Path, float] = {}
        frame_problems: list[LabelProblem] = []
        for code in self.movies:
            videos = find_video(index, code)
            if not videos:
                token = _CODE_TO_TOKEN.get(code, code)
                missing.append(f"{code} ({TITLES[code]}): no video file (looked for {code}.* or {token}.* "
                               f"with a video extension, or a video in a folder named {code} or <year>{code})")
            else:
                media.append(videos[0])
                if len(videos) > 1:
                    warnings.append(f"{code}: {len(videos)} candidate videos; using {index.rel(videos[0])}")
            ml = movies.get(code)
            if ml is None:
                continue
            notes += ml.notes
            used = ", ".join(s.file.name for s in ml.streams)
            notes.append(f"{code}: {len(ml.streams)} stream(s) ({used}), {ml.n_frames} frames "
                         f"= {ml.n_frames * FRAME_SECONDS:.2f} s, {len(ml.labels)} segments"
                         + (f", video {index.rel(videos[0])}" if videos else ""))
            for s in ml.streams:
                if len(s.times) > 2:
                    step = float(np.median(np.diff(s.times)))
                    if abs(step - FRAME_SECONDS) > 0.002:
                        warnings.append(f"{index.rel(s.file.path)}: time column steps by {step:g} s, "
                                        f"expected {FRAME_SECONDS} s (rows are read as consecutive 40-ms frames)")
                for j, target in enumerate(self.targets):
                    col = s.values[:, j]
                    off = np.flatnonzero(~np.isfinite(col) | (col < -1.0) | (col > 1.0))
                    if len(off):
                        r = int(off[0])
                        frame_problems.append(LabelProblem(
                            f"{index.rel(s.file.path)} frame {r} (and {len(off) - 1} more)" if len(off) > 1
                            else f"{index.rel(s.file.path)} frame {r}", target, float(col[r]), -1.0, 1.0))
            if videos:
                covered[videos[0].resolve()] = len(ml.labels) * self.segment_seconds
            for k in range(len(ml.labels)):
                items.append(Item(id=f"{code}_{k:04d}", path=videos[0] if videos else None,
                                  labels={"valence": float(ml.labels[k, 0]), "arousal": float(ml.labels[k, 1])},
                                  group=code))

        def against_annotations(probe) -> tuple[str, str] | None:
            need = covered.get(Path(probe.path).resolve())
            if need is None or probe.duration <= 0:
                return None
            if probe.duration + 0.5 < need:
                return "error", (f"video lasts {probe.duration:.2f} s but the annotations cover {need:.2f} s "
                                 f"of segments: is it the clip the annotations describe?")
            if probe.duration > need + self.segment_seconds + 2.0:
                return "warning", (f"video lasts {probe.duration:.1f} s, annotated segments cover {need:.1f} s: "
                                   f"the loader assumes annotation frame 0 is the first frame of the file")
            return None

        n = len(self.movies)
        expected = {"movies with annotations": n, "movies with a video": n}
        found = {"movies with annotations": len(movies), "movies with a video": len(media)}
        hints = [
            "Annotations: unzip the COGNIMUSE database archive anywhere below the root (the folder "
            "'Emotion Annotation' with intended/ and experienced/).",
            "Videos are not distributed with the annotations: place each movie's annotated 30-minute clip "
            "below the root as <CODE>.<ext> (e.g. BMI.mp4) or in a folder named <CODE> or <year><CODE>.",
            "To run on fewer movies, pass --option movies=BMI,CHI,...; see datasets/cognimuse.md.",
        ]
        stream_files = [s.file.path for ml in movies.values() for s in ml.streams]
        check = build_check(
            dataset=self.name, manifest_key="cognimuse", root=index.root, items=items,
            label_range=self.label_range, targets=self.targets, expected=expected, found=found,
            missing=missing, media=media, other_files=stream_files, errors=errors, warnings=warnings,
            notes=notes, hints=hints, need_audio=False, extra_media_check=against_annotations, started=started,
        )
        check.label_problems = frame_problems + check.label_problems
        return check


def _stream_sort_key(name: str) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name))


@hookimpl
def aanbench_datasets():
    return [Cognimuse()]
