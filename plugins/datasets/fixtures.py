"""Writers of small fixture trees in the official layouts of EIMT16
(LIRIS-ACCEDE + MediaEval 2016 test set) and extended COGNIMUSE, with real
MP4 files (H.264 + AAC through :func:`aanbench.pluginkit.mediawrite.write_clip`).

Never the real data: the clips are tiny (64x48, 10 fps, 16 kHz mono audio)
and the labels are generated from a seed. What the layouts follow, and
which details are assumptions, is written in ``datasets/eimt16.md`` and
``datasets/cognimuse.md``.

Public: :func:`write_eimt16_fixture`, :func:`write_cognimuse_fixture` (the
tests' writers, also importable as ``write_eimt16`` / ``write_cognimuse``)
and :func:`make_fixture`, what ``aanbench datasets make-fixture
eimt16|cognimuse DIR`` runs, so users can try the real commands on the
official layouts before they have the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from aanbench.pluginkit.mediawrite import write_clip

FPS = 10
WIDTH, HEIGHT = 64, 48
RATE = 16000


def tiny_clip(path: Path, seconds: float, seed: int, fps: int = FPS, audio: bool = True) -> Path:
    """A real MP4 of ``seconds`` s: a coloured background with a moving bar
    (colour and speed from ``seed``) and a tone (frequency from ``seed``)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    base = rng.integers(30, 220, size=3).astype(np.uint8)
    frames = np.empty((n, HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames[:] = base
    speed = int(rng.integers(1, 6))
    for i in range(n):
        x = (i * speed) % (WIDTH - 8)
        frames[i, :, x : x + 8] = 255 - base
    sound = None
    if audio:
        t = np.arange(int(round(seconds * RATE))) / RATE
        sound = (0.3 * np.sin(2 * np.pi * float(rng.uniform(200, 900)) * t)).astype(np.float32)
    return write_clip(path, frames, fps, sound, rate=RATE)


# --------------------------------------------------------------------------
# EIMT16


@dataclass
class Eimt16Fixture:
    """What :func:`write_eimt16` wrote. Labels and groups by excerpt stem."""

    root: Path
    train: list[str]
    test: list[str]
    labels: dict[str, tuple[float, float]]  # stem -> (valence, arousal)
    groups: dict[str, str]  # training stem -> source movie (stem)
    video: dict[str, Path]  # stem -> where its clip was written (absent: not written)
    ranking: Path
    description: Path
    sets: Path
    test_labels: Path
    data_dir: Path
    test_dir: Path
    missing: list[str] = field(default_factory=list)
    out_of_range: list[tuple[str, str, float]] = field(default_factory=list)
    seconds: float = 2.0


def write_eimt16(
    root: Path,
    *,
    n_train: int = 12,
    n_test: int = 4,
    movies: Sequence[str] = ("20_Mississippi", "Big_Buck_Bunny", "Sintel"),
    missing: Sequence[str] = (),
    out_of_range: Sequence[tuple[str, str, float]] = (),
    seconds: float = 2.0,
    seed: int = 0,
) -> Eimt16Fixture:
    """Write an EIMT16 copy as users unzip it:

    - ``LIRIS-ACCEDE-data/LIRIS-ACCEDE-data/data/ACCEDE00000.mp4`` ... and
      ``.../LIRIS-ACCEDE-data/ACCEDEdescription.xml`` (doubled folder, as
      unzip tools produce);
    - ``LIRIS-ACCEDE-annotations/LIRIS-ACCEDE-annotations/annotations/``
      ``ACCEDEranking.txt`` (tab-separated, header) and ``ACCEDEsets.txt``;
    - ``MEDIAEVAL16-Global/MEDIAEVAL16_00000.mp4`` ... beside the label file
      ``MEDIAEVAL16-Global/annotations/MEDIAEVAL16-Global_prediction.txt``
      (no header, name / valence / arousal, lines ended by a bare CR, no
      final newline).

    ``missing``: stems whose clip is not written. ``out_of_range``:
    ``(stem, target, value)`` labels written outside 1-5.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    train = [f"ACCEDE{i:05d}" for i in range(n_train)]
    test = [f"MEDIAEVAL16_{i:05d}" for i in range(n_test)]
    labels: dict[str, tuple[float, float]] = {}
    for s in train:
        labels[s] = (round(float(rng.uniform(1.3, 3.6)), 9), round(float(rng.uniform(1.3, 4.5)), 9))
    for s in test:
        labels[s] = (round(float(rng.uniform(1.3, 3.6)), 6), round(float(rng.uniform(2.0, 4.9)), 6))
    for stem, target, value in out_of_range:
        v, a = labels[stem]
        labels[stem] = (value, a) if target == "valence" else (v, value)
    groups = {s: movies[i * len(movies) // len(train)] for i, s in enumerate(train)}

    data_parent = root / "LIRIS-ACCEDE-data" / "LIRIS-ACCEDE-data"
    data_dir = data_parent / "data"
    ann_dir = root / "LIRIS-ACCEDE-annotations" / "LIRIS-ACCEDE-annotations" / "annotations"
    test_dir = root / "MEDIAEVAL16-Global"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (test_dir / "annotations").mkdir(parents=True, exist_ok=True)

    video: dict[str, Path] = {}
    for i, s in enumerate(train + test):
        if s in missing:
            continue
        folder = data_dir if s.startswith("ACCEDE") else test_dir
        video[s] = tiny_clip(folder / f"{s}.mp4", seconds, seed * 1000 + i)

    # ACCEDEranking.txt: ranks 0 = lowest value
    v_rank = {s: r for r, s in enumerate(sorted(train, key=lambda x: labels[x][0]))}
    a_rank = {s: r for r, s in enumerate(sorted(train, key=lambda x: labels[x][1]))}
    lines = ["id\tname\tvalenceRank\tarousalRank\tvalenceValue\tarousalValue\tvalenceVariance\tarousalVariance"]
    for i, s in enumerate(train):
        v, a = labels[s]
        lines.append(f"{i}\t{s}.mp4\t{v_rank[s]}\t{a_rank[s]}\t{v}\t{a}\t{0.1 + 0.001 * i}\t{0.12 + 0.001 * i}")
    ranking = ann_dir / "ACCEDEranking.txt"
    ranking.write_bytes(("\n".join(lines) + "\n").encode())

    sets = ann_dir / "ACCEDEsets.txt"
    sets.write_bytes(("\n".join(["id\tname\tset"] + [f"{i}\t{s}.mp4\t{i % 3}" for i, s in enumerate(train)])
                      + "\n").encode())

    media = []
    for i, s in enumerate(train):
        media.append(
            "  <media>\n"
            f"    <id>{i}</id>\n"
            f"    <name>{s}.mp4</name>\n"
            f"    <license>{groups[s].replace('_', ' ')} shared under Creative Commons Attribution-NonCommercial "
            f"3.0 Unported licence at http://vimeo.com/{20043857 + i} &amp; elsewhere</license>\n"
            f"    <movie>{groups[s]}.mp4</movie>\n"
            f"    <start>{833 + 300 * i}</start>\n"
            f"    <end>{1094 + 300 * i}</end>\n"
            "  </media>\n"
        )
    description = data_parent / "ACCEDEdescription.xml"
    description.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<ACCEDEdescription>\n' + "".join(media)
                           + "</ACCEDEdescription>\n", encoding="utf-8")

    test_labels = test_dir / "annotations" / "MEDIAEVAL16-Global_prediction.txt"
    rows = [f"{s}.mp4\t{labels[s][0]}\t{labels[s][1]}" for s in test]
    test_labels.write_bytes("\r".join(rows).encode())  # bare CR, no final newline

    return Eimt16Fixture(root, train, test, labels, groups, video, ranking, description, sets, test_labels,
                         data_dir, test_dir, list(missing), list(out_of_range), seconds)


# --------------------------------------------------------------------------
# COGNIMUSE

COGNIMUSE_TOKENS = {
    "ABE": "AmericanBeauty", "BMI": "BeautifulMind", "CHI": "Chicago", "CRA": "Crash",
    "DEP": "TheDeparted", "FNE": "FindingNemo", "GLA": "Gladiator", "LOR": "LOTRReturn",
    "MDB": "MDB", "NCO": "NoCountry", "RAT": "Ratatouille", "SIL": "ShakespeareInLove",
}
COGNIMUSE_YEARS = {
    "ABE": 2000, "BMI": 2002, "CHI": 2003, "CRA": 2006, "DEP": 2007, "FNE": 2004, "GLA": 2001,
    "LOR": 2004, "MDB": 2005, "NCO": 2008, "RAT": 2008, "SIL": 1999,
}


@dataclass
class CognimuseFixture:
    """What :func:`write_cognimuse` wrote: stream values by (movie, stream
    name) as ``float64 (n_frames, 2)`` (valence, arousal), and videos."""

    root: Path
    movies: list[str]
    streams: dict[tuple[str, str], np.ndarray]
    stream_files: dict[tuple[str, str], Path]
    video: dict[str, Path]
    seconds: float


def default_stream(code: str, name: str, n: int, seed: int) -> np.ndarray:
    """Smooth-ish values in [-0.95, 0.95] for one stream, from a seed."""
    rng = np.random.default_rng([seed, sum(map(ord, code)), sum(map(ord, name))])
    t = np.arange(n) * 0.04
    v = 0.6 * np.sin(2 * np.pi * t / float(rng.uniform(7, 20)) + rng.uniform(0, 6)) + rng.normal(0, 0.05, n)
    a = 0.6 * np.cos(2 * np.pi * t / float(rng.uniform(5, 15)) + rng.uniform(0, 6)) + rng.normal(0, 0.05, n)
    return np.clip(np.stack([v, a], axis=1), -0.95, 0.95)


def write_dat(path: Path, values: np.ndarray) -> np.ndarray:
    """One stream file: ``time valence arousal`` per 40-ms frame, spaces,
    six decimals. Returns the values as written (``float64 (n, 2)``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = [(f"{v:.6f}", f"{a:.6f}") for v, a in values]
    lines = [f"{i * 0.04:.2f} {v} {a}" for i, (v, a) in enumerate(text)]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return np.array([[float(v), float(a)] for v, a in text], dtype=np.float64).reshape(-1, 2)


def write_cognimuse(
    root: Path,
    *,
    movies: Sequence[str] = tuple(sorted(COGNIMUSE_TOKENS)),
    seconds: float = 32.0,
    layout: str = "official",
    intended: Sequence[str] = ("intended_1", "intended_2", "intended_3"),
    experienced: Sequence[str] = ("subj1_1", "subj1_2", "subj2_1"),
    frames_short: dict[str, int] | None = None,
    values: dict[tuple[str, str], np.ndarray] | None = None,
    missing_video: Sequence[str] = (),
    video_seconds: dict[str, float] | None = None,
    audio: bool = True,
    seed: int = 0,
) -> CognimuseFixture:
    """Write a COGNIMUSE copy.

    ``layout="official"``: ``COGNIMUSEdatabase/Emotion Annotation/intended/``
    ``intended_<k>_<Token>.dat`` and ``.../experienced/subj<N>_<i>_<Token>.dat``,
    videos ``Data/<year><CODE>/<CODE>.mp4``. ``layout="per-movie"``:
    ``<CODE>/emotion/intended_<k>.dat`` (and ``subj..``) and
    ``<CODE>/video.mp4``.

    Each stream has ``seconds / 0.04`` frames, minus ``frames_short[name]``
    for the named streams (streams of slightly different length);
    ``values[(code, name)]`` replaces a stream's generated values.
    ``audio=False`` writes video-only clips (AAC encoding is the slow part:
    about 1 s per 30 s of audio).
    """
    root = Path(root)
    n = int(round(seconds / 0.04))
    streams: dict[tuple[str, str], np.ndarray] = {}
    files: dict[tuple[str, str], Path] = {}
    video: dict[str, Path] = {}
    for mi, code in enumerate(movies):
        token = COGNIMUSE_TOKENS[code]
        for name in [*intended, *experienced]:
            kind = "intended" if name.startswith("intended") else "experienced"
            if values and (code, name) in values:
                arr = np.asarray(values[(code, name)], dtype=np.float64)
            else:
                arr = default_stream(code, name, n - (frames_short or {}).get(name, 0), seed)
            if layout == "official":
                path = root / "COGNIMUSEdatabase" / "Emotion Annotation" / kind / f"{name}_{token}.dat"
            else:
                path = root / code / "emotion" / f"{name}.dat"
            streams[(code, name)] = write_dat(path, arr)
            files[(code, name)] = path
        if code in missing_video:
            continue
        vs = (video_seconds or {}).get(code, seconds)
        if layout == "official":
            vpath = root / "Data" / f"{COGNIMUSE_YEARS[code]}{code}" / f"{code}.mp4"
        else:
            vpath = root / code / "video.mp4"
        video[code] = tiny_clip(vpath, vs, seed * 100 + mi, audio=audio)
    return CognimuseFixture(root, list(movies), streams, files, video, seconds)


# --------------------------------------------------------------------------
# Public names and `aanbench datasets make-fixture`

write_eimt16_fixture = write_eimt16
write_cognimuse_fixture = write_cognimuse

FIXTURE_NOTE = "AANBENCH-FIXTURE.txt"


@dataclass
class MadeFixture:
    """What :func:`make_fixture` wrote: the dataset, the root, the number of
    media files and annotation files, and the commands to try on it."""

    dataset: str
    root: Path
    n_videos: int
    n_annotation_files: int
    options: list[str]  # `--option key=value` the dataset needs for this copy
    try_next: list[str]  # commands, ready to print
    written: Eimt16Fixture | CognimuseFixture


def make_fixture(dataset: str, root: str | Path, *, seed: int = 0) -> MadeFixture:
    """Write a small generated copy of ``dataset`` (``eimt16`` or
    ``cognimuse``) in its official layout into ``root`` (created; it must be
    empty or absent, so a fixture never mixes with real data), with a note
    file saying it is generated. EIMT16: 12 training + 4 test excerpts of
    2 s from 3 source movies; COGNIMUSE: the 12 movies, 32 s each, with
    their annotation streams (about 20 s to write on two busy cores).

    Raises :class:`~aanbench.contracts.AanbenchError` for another dataset
    name or a folder that is not empty.
    """
    from aanbench.contracts import AanbenchError

    writers = {"eimt16": write_eimt16_fixture, "cognimuse": write_cognimuse_fixture}
    if dataset not in writers:
        raise AanbenchError(f"no fixture for dataset {dataset!r}; fixtures exist for {', '.join(sorted(writers))}")
    root = Path(root).expanduser()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AanbenchError(f"{root}: {'not a folder' if not root.is_dir() else 'not empty'}; "
                            "make-fixture writes into a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    written = writers[dataset](root, seed=seed)
    store = root.parent / f"{root.name}-store"
    if dataset == "eimt16":
        options = ["official_counts=false"]
        n_videos = len(written.video)
        n_labels = len([written.ranking, written.sets, written.description, written.test_labels])
    else:
        options = []
        n_videos, n_labels = len(written.video), len(written.stream_files)
    opt = "".join(f" --option {o}" for o in options)
    try_next = [
        f"aanbench datasets check {dataset} --root {root}{opt}",
        f"aanbench extract {dataset} --root {root}{opt} --store {store} --extractors affect,emobase2010,logmel",
        f"aanbench run mean {dataset}{opt} --store {store} --out {root.parent / (root.name + '-results')}",
        f"aanbench benchmark {dataset}{opt} --store {store} --out {root.parent / (root.name + '-results')} "
        f"--features weightfree-both --leaderboard {root.parent / (root.name + '-leaderboard.md')}",
    ]
    (root / FIXTURE_NOTE).write_text(
        f"A small GENERATED copy of {dataset} in its official layout, written by aanbench "
        f"(aanbench_plugins.datasets.fixtures.make_fixture, seed {seed}).\n"
        "Not the real data: tiny clips (64x48, 10 fps, a moving bar and a tone) and random labels.\n"
        "Use it to try aanbench's commands on the official layout, e.g.:\n"
        + "".join(f"  {c}\n" for c in try_next)
        + (f"Every command on this copy (extract, run, train, benchmark) takes{opt}: it is a subset.\n"
           if options else ""), encoding="utf-8")
    return MadeFixture(dataset, root, n_videos, n_labels, options, try_next, written)
