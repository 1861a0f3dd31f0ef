"""``demo``: a synthetic movie-emotion dataset generated from a seed.

``make_demo(out_dir, seed, clips)`` writes real MP4 files (H.264 video,
AAC audio) of short clips whose valence and arousal are known functions of
what is seen and heard, plus Gaussian noise, so that the whole benchmark
runs end to end without a download. The dataset card
(``datasets/demo.md``) gives the recipe, the layout and the label formulas.

Each clip (4 s, 25 fps, 160x120, 16 kHz mono) shows coloured shapes moving
over a panning background pattern, with hard cuts to a new layout and
colouring; under it plays a chord progression (in A major or A minor) of
sine partials with drum pulses at a tempo.  Hidden factors, drawn
independently per clip:

* arousal rises with motion speed, cut count, loudness and tempo;
* valence rises with brightness, warm hue and major (against minor) harmony.

Clips are grouped into "movies" (10 x 12 for the default 120 clips); each
movie has its own visual style (shape kinds and size, background stripes,
saturation, shape tint) and sound (timbre, drum sound and level), but the
label functions are the same for all.  The last movies are the fixed test
split.

Every random number comes from ``numpy.random.default_rng`` seeded from
``(seed, kind, index)``, so the same seed gives byte-identical
``labels.csv``/``factors.csv`` and identical decoded frames.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Dataset, Item

GENERATOR_VERSION = "2"  # 2: luma without BLAS (the same clips on every CPU kind, issue 26)

# ----------------------------------------------------------------- format
FPS = 25
WIDTH = 160
HEIGHT = 120
SECONDS = 4.0
AUDIO_RATE = 16000
N_FRAMES = int(round(FPS * SECONDS))  # 100
N_SAMPLES = int(round(AUDIO_RATE * SECONDS))  # 64000
CLIPS_PER_MOVIE = 12
MAX_MOVIES = 10
TEST_FRACTION = 0.2

# ------------------------------------------------------- factor ranges
SPEED_PX = (0.3, 4.0)  # shape speed, pixels per frame (at 160x120)
MAX_CUTS = 7  # hard cuts per clip: round(MAX_CUTS * u) in 0..7
MIN_SHOT_FRAMES = 7  # 0.28 s: every shot spans at least two 8 fps samples
LOUDNESS_DB = (-36.0, -12.0)  # RMS of the mixed audio, dBFS
TEMPO_BPM = (60.0, 180.0)
ROOT_HZ = 220.0  # every clip is in A (major or minor), so the mode is audible in the spectrum
BRIGHTNESS_V = (0.12, 0.80)  # mean HSV value of the clip
HUE_DEG = (210.0, 30.0)  # warmth 0 -> 210 deg (azure), 1 -> 30 deg (orange), via green
SHOT_HUE_SWING = 12.0  # shots alternate hue +/- this (deg) around the clip hue
SHOT_SAT_SWING = 0.13  # ... and saturation +/- this (0.26 apart: always another 1/4-wide bin)
SHAPE_CONTRAST = 0.12  # |luma_shape - luma_background| (Rec. 601 luma, 0..1)
SHAPE_EDGE_PX = 75.0  # shapes per shot x mean radius, the same for every movie (motion ~ speed alike)
PATTERN_SLOPE = 0.0005  # stripe amplitude / period (V per px), the same for every movie

# ----------------------------------------------------------- labels
AROUSAL_WEIGHTS = {"speed": 0.35, "cuts": 0.25, "loudness": 0.25, "tempo": 0.15}
VALENCE_WEIGHTS = {"brightness": 0.40, "warmth": 0.30, "mode": 0.30}
LABEL_SCALE = 0.45
NOISE_SD = 0.12

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601
SHAPES = ("circle", "square", "diamond", "ring", "plus", "ellipse")

FACTOR_COLUMNS = (
    "clip_id", "movie",
    "speed_u", "speed_px_per_frame",
    "cuts", "cut_rate_per_s",
    "loudness_u", "loudness_dbfs",
    "tempo_u", "tempo_bpm",
    "brightness_u", "brightness_v",
    "warmth_u", "hue_deg",
    "mode",
    "arousal_noise", "valence_noise",
)
LABEL_COLUMNS = ("clip_id", "file", "movie", "split", "valence", "arousal")

ProgressFn = Callable[[int, int], None]


# ======================================================================
# recipe


@dataclass(frozen=True)
class MovieStyle:
    """What makes one movie look and sound unlike the others (not the labels)."""

    movie: str
    split: str
    shape_kinds: tuple[str, ...]
    n_shapes: int  # shapes per shot: round(SHAPE_EDGE_PX / mean radius)
    shape_radius: tuple[float, float]  # px
    saturation: float  # base saturation of the background
    shape_hue_offset: float  # deg, shapes' hue relative to the background
    pattern_amp: float  # V amplitude of the background stripes
    pattern_period: float  # px
    pattern_pan: float  # background pan speed relative to the shapes
    harmonics: int  # sine partials per note
    rolloff: float  # amplitude ratio between successive partials
    click: float  # share of the click in the drum hit (the rest: a kick)
    drum_level: float  # drum energy relative to the chords


def _movie_layout(clips: int) -> tuple[list[int], int]:
    """Clips per movie and number of test movies for ``clips`` clips."""
    per = CLIPS_PER_MOVIE if clips >= 2 * CLIPS_PER_MOVIE else CLIPS_PER_MOVIE // 2
    n_movies = min(MAX_MOVIES, max(2, clips // per))
    sizes = [len(a) for a in np.array_split(np.arange(clips), n_movies)]
    n_test = max(1, int(round(TEST_FRACTION * n_movies)))
    return sizes, n_test


def _movie_style(seed: int, m: int, split: str) -> MovieStyle:
    rng = np.random.default_rng([seed, 1, m])
    n_kinds = int(rng.integers(1, 3))
    kinds = tuple(str(k) for k in rng.choice(SHAPES, size=n_kinds, replace=False))
    r_lo = float(rng.uniform(9.0, 14.0))
    r_span = float(rng.uniform(3.0, 8.0))
    period = float(rng.uniform(45.0, 100.0))
    return MovieStyle(
        movie=f"m{m + 1:02d}",
        split=split,
        shape_kinds=kinds,
        n_shapes=max(2, int(round(SHAPE_EDGE_PX / (r_lo + 0.5 * r_span)))),
        shape_radius=(round(r_lo, 4), round(r_lo + r_span, 4)),
        saturation=round(float(rng.uniform(0.45, 0.72)), 4),
        shape_hue_offset=round(float(rng.uniform(-15.0, 15.0)), 4),
        pattern_amp=round(PATTERN_SLOPE * period, 4),
        pattern_period=round(period, 4),
        pattern_pan=round(float(rng.uniform(0.5, 0.7)), 4),
        harmonics=int(rng.integers(3, 6)),
        rolloff=round(float(rng.uniform(0.4, 0.65)), 4),
        click=round(float(rng.uniform(0.25, 0.6)), 4),
        drum_level=round(float(rng.uniform(0.9, 1.2)), 4),
    )


def demo_recipe(seed: int = 0, clips: int = 120) -> dict[str, Any]:
    """The JSON-able recipe that ``make_demo`` writes as ``demo.json``.

    Two calls with the same arguments return equal dicts; ``make_demo``
    compares it with an existing ``demo.json`` to decide whether a folder
    already holds this dataset.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise AanbenchError(f"demo seed must be a non-negative integer, got {seed!r}")
    if isinstance(clips, bool) or not isinstance(clips, numbers.Integral) or clips < 4:
        raise AanbenchError(f"demo needs at least 4 clips (2 movies of 2), got {clips!r}")
    seed, clips = int(seed), int(clips)
    sizes, n_test = _movie_layout(clips)
    n_movies = len(sizes)
    movies = []
    for m, size in enumerate(sizes):
        split = "test" if m >= n_movies - n_test else "train"
        style = _movie_style(seed, m, split)
        ids = [f"{style.movie}_c{j + 1:03d}" for j in range(size)]
        d = asdict(style)
        d["clips"] = ids
        movies.append(d)
    return {
        "dataset": "demo",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "clips": clips,
        "split": {
            "train": [m["movie"] for m in movies if m["split"] == "train"],
            "test": [m["movie"] for m in movies if m["split"] == "test"],
        },
        "parameters": {
            "fps": FPS, "width": WIDTH, "height": HEIGHT, "seconds": SECONDS,
            "audio_rate": AUDIO_RATE, "video_codec": "h264 (libx264, crf 23, yuv420p)",
            "audio_codec": "aac mono",
            "speed_px_per_frame": list(SPEED_PX), "max_cuts": MAX_CUTS, "min_shot_frames": MIN_SHOT_FRAMES,
            "loudness_dbfs": list(LOUDNESS_DB), "tempo_bpm": list(TEMPO_BPM), "root_hz": ROOT_HZ,
            "brightness_v": list(BRIGHTNESS_V), "hue_deg": list(HUE_DEG),
            "shot_hue_swing_deg": SHOT_HUE_SWING, "shot_sat_swing": SHOT_SAT_SWING,
            "shape_contrast": SHAPE_CONTRAST, "shape_edge_px": SHAPE_EDGE_PX, "pattern_slope": PATTERN_SLOPE,
            "arousal_weights": AROUSAL_WEIGHTS, "valence_weights": VALENCE_WEIGHTS,
            "label_scale": LABEL_SCALE, "noise_sd": NOISE_SD,
        },
        "movies": movies,
    }


# ======================================================================
# one clip


@dataclass(frozen=True)
class ClipFactors:
    """The hidden generating factors of one clip (before audio is mixed)."""

    speed_u: float
    cuts_u: float
    loudness_u: float
    tempo_u: float
    brightness_u: float
    warmth_u: float
    major: bool
    arousal_noise: float
    valence_noise: float

    @property
    def speed(self) -> float:
        return SPEED_PX[0] + (SPEED_PX[1] - SPEED_PX[0]) * self.speed_u

    @property
    def cuts(self) -> int:
        return int(round(MAX_CUTS * self.cuts_u))

    @property
    def tempo(self) -> float:
        return TEMPO_BPM[0] + (TEMPO_BPM[1] - TEMPO_BPM[0]) * self.tempo_u

    @property
    def brightness(self) -> float:
        return BRIGHTNESS_V[0] + (BRIGHTNESS_V[1] - BRIGHTNESS_V[0]) * self.brightness_u

    @property
    def hue(self) -> float:
        return HUE_DEG[0] + (HUE_DEG[1] - HUE_DEG[0]) * self.warmth_u

    @property
    def target_db(self) -> float:
        return LOUDNESS_DB[0] + (LOUDNESS_DB[1] - LOUDNESS_DB[0]) * self.loudness_u


def _clip_rngs(seed: int, index: int) -> list[np.random.Generator]:
    """Independent streams for factors, video, audio of clip ``index``."""
    ss = np.random.SeedSequence([seed, 0, index])
    return [np.random.default_rng(s) for s in ss.spawn(3)]


def _draw_factors(rng: np.random.Generator) -> ClipFactors:
    u = rng.random(6)
    major = bool(rng.random() < 0.5)
    noise = rng.normal(0.0, NOISE_SD, size=2)
    return ClipFactors(
        speed_u=float(u[0]), cuts_u=float(u[1]), loudness_u=float(u[2]), tempo_u=float(u[3]),
        brightness_u=float(u[4]), warmth_u=float(u[5]), major=major,
        arousal_noise=float(noise[0]), valence_noise=float(noise[1]),
    )


def _z(u: float) -> float:
    """Standardise a uniform [0, 1] value (mean 0, sd 1)."""
    return math.sqrt(3.0) * (2.0 * u - 1.0)


def label_values(factors: dict[str, float]) -> tuple[float, float]:
    """``(valence, arousal)`` from the realised factors (keys of ``factors.csv``:
    ``speed_u, cuts, loudness_u, tempo_u, brightness_u, warmth_u, mode,
    arousal_noise, valence_noise``); see the card for the formula."""
    a_terms = {
        "speed": _z(factors["speed_u"]),
        "cuts": _z(factors["cuts"] / MAX_CUTS),
        "loudness": _z(factors["loudness_u"]),
        "tempo": _z(factors["tempo_u"]),
    }
    v_terms = {
        "brightness": _z(factors["brightness_u"]),
        "warmth": _z(factors["warmth_u"]),
        "mode": 1.0 if factors["mode"] == "major" else -1.0,
    }

    def combine(weights: dict[str, float], terms: dict[str, float]) -> float:
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return sum(weights[k] * terms[k] for k in weights) / norm

    arousal = LABEL_SCALE * combine(AROUSAL_WEIGHTS, a_terms) + factors["arousal_noise"]
    valence = LABEL_SCALE * combine(VALENCE_WEIGHTS, v_terms) + factors["valence_noise"]
    return float(np.clip(valence, -1.0, 1.0)), float(np.clip(arousal, -1.0, 1.0))


# ------------------------------------------------------------- video


def _shot_bounds(rng: np.random.Generator, cuts: int) -> list[tuple[int, int]]:
    """``cuts + 1`` shots as ``[start, end)`` frame ranges, each at least
    ``MIN_SHOT_FRAMES`` long."""
    free = N_FRAMES - (cuts + 1) * MIN_SHOT_FRAMES
    share = rng.dirichlet(np.ones(cuts + 1)) * free
    lengths = MIN_SHOT_FRAMES + np.floor(share).astype(int)
    lengths[-1] += N_FRAMES - int(lengths.sum())
    ends = np.cumsum(lengths)
    starts = ends - lengths
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def _shape_mask(kind: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a shape of radius ``r`` px; ``dx`` is ``(T, 1, W)`` and
    ``dy`` ``(T, H, 1)`` (offsets from the centre), broadcast to ``(T, H, W)``."""
    if kind == "circle":
        return (dx * dx) + (dy * dy) < r * r
    if kind == "square":
        return (np.abs(dx) < 0.85 * r) & (np.abs(dy) < 0.85 * r)
    if kind == "diamond":
        return np.abs(dx) + np.abs(dy) < 1.2 * r
    if kind == "ring":
        d2 = (dx * dx) + (dy * dy)
        return (d2 < r * r) & (d2 > (0.55 * r) ** 2)
    if kind == "plus":
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax < 0.35 * r) & (ay < r)) | ((ay < 0.35 * r) & (ax < r))
    if kind == "ellipse":
        return (dx * dx) / (r * r) + (dy * dy) / (0.49 * r * r) < 1.0
    raise ValueError(kind)


def hsv_unit_rgb(h: float, s: float) -> np.ndarray:
    """RGB (``float32 (3,)`` in [0, 1]) of hue ``h`` degrees, saturation ``s``
    and value 1; RGB at value ``v`` is ``v`` times this (hexcone HSV)."""
    h6 = (h % 360.0) / 60.0
    x = 1.0 - abs(h6 % 2.0 - 1.0)
    sector = int(h6) % 6
    base = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][sector]
    return np.array([1.0 - s + s * c for c in base], dtype=np.float32)


def unit_luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of RGB ``(..., 3)`` in float32: three products, two sums,
    the same bits on every CPU. Not ``rgb @ LUMA``: BLAS picks its dot-product
    kernel by CPU kind (OpenBLAS SkylakeX vs Haswell), whose last bits moved
    a few pixels of 5 of the 120 demo clips between machines (issue 26)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    return (rgb[..., 0] * LUMA[0] + rgb[..., 1] * LUMA[1]) + rgb[..., 2] * LUMA[2]


def render_frames(f: ClipFactors, style: MovieStyle, rng: np.random.Generator) -> np.ndarray:
    """The clip's frames, ``uint8 (N_FRAMES, HEIGHT, WIDTH, 3)`` RGB.

    The clip's mean HSV value equals ``f.brightness``; the background hue
    alternates ``+/- SHOT_HUE_SWING`` around ``f.hue`` from shot to shot (and
    saturation ``+/- SHOT_SAT_SWING``), so each cut changes the colour
    histogram, while every shot has the same mean luma (a cut changes
    colour, not light); shapes differ from the background under them by
    ``SHAPE_CONTRAST`` in luma (lighter on dark clips, darker on bright ones),
    move at ``f.speed`` px/frame (x0.8..1.2 each, wrapping round the frame),
    and the background stripes pan at ``style.pattern_pan`` times that.
    """
    xs = np.arange(WIDTH, dtype=np.float32)[None, None, :]
    ys = np.arange(HEIGHT, dtype=np.float32)[None, :, None]
    out = np.empty((N_FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    lighter = f.brightness < 0.5  # shapes lighter than the background on dark clips
    dy = SHAPE_CONTRAST if lighter else -SHAPE_CONTRAST
    shots = _shot_bounds(rng, f.cuts)
    # background colour of each shot; mean V per shot chosen so that
    # V_k * luma_k is the same for all shots and the clip's mean V is f.brightness
    swings = [sign * (1.0 if k % 2 == 0 else -1.0) for k in range(len(shots))]
    bg = [(f.hue + w * SHOT_HUE_SWING, style.saturation + w * SHOT_SAT_SWING) for w in swings]
    bg_luma = [float(unit_luma(hsv_unit_rgb(h, s_))) for h, s_ in bg]
    level = f.brightness * N_FRAMES / sum((b - a) / y for (a, b), y in zip(shots, bg_luma))
    for k, (a, b) in enumerate(shots):
        n = b - a
        t = np.arange(n, dtype=np.float32)[:, None, None]
        hue, sat = bg[k]
        shot_v = level / bg_luma[k]
        # background: stripes of value, panning across the frame
        theta = rng.uniform(0.0, 2 * math.pi)
        phase = rng.uniform(0.0, style.pattern_period)
        proj = xs * math.cos(theta) + ys * math.sin(theta) - style.pattern_pan * f.speed * t + phase
        val = (style.pattern_amp * np.sin(proj * np.float32(2 * math.pi / style.pattern_period))).astype(np.float32)
        # shapes: index map (0 = background, j = shape j), later shapes on top
        idx = np.zeros((n, HEIGHT, WIDTH), dtype=np.uint8)
        colours = [hsv_unit_rgb(hue, sat)]
        for j in range(1, style.n_shapes + 1):
            kind = str(rng.choice(style.shape_kinds))
            r = float(rng.uniform(*style.shape_radius))
            x0, y0 = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
            ang = rng.uniform(0.0, 2 * math.pi)
            v = f.speed * rng.uniform(0.8, 1.2)
            cx = np.mod(x0 + v * math.cos(ang) * t, WIDTH + 2 * r) - r
            cy = np.mod(y0 + v * math.sin(ang) * t, HEIGHT + 2 * r) - r
            mask = _shape_mask(kind, xs - cx, ys - cy, r)
            np.copyto(idx, np.uint8(j), where=mask)
            colours.append(hsv_unit_rgb(hue + style.shape_hue_offset + rng.uniform(-8.0, 8.0), sat))
        table = np.stack(colours)  # (n_shapes + 1, 3) unit-value colours
        # shape j's value: V_j = (V_bg * Y_0 + dy) / Y_j (Y: luma of the unit colour),
        # then a constant c added to V_bg so that the shot's mean V is shot_v
        luma = unit_luma(table)
        ratio = np.take(luma[0] / luma, idx)
        offset = np.take(np.float32(dy) / luma, idx)
        offset[idx == 0] = 0.0
        val *= ratio
        val += offset
        c = (shot_v - float(val.mean(dtype=np.float64))) / float(ratio.mean(dtype=np.float64))
        val += np.float32(c) * ratio
        np.clip(val, 0.0, 1.0, out=val)
        val *= np.float32(255.0)
        for c in range(3):
            chan = np.take(table[:, c], idx)
            chan *= val
            chan += np.float32(0.5)  # round half up (all values >= 0)
            out[a:b, :, :, c] = chan  # float -> uint8 truncates
    return out


# ------------------------------------------------------------- audio


def synth_audio(f: ClipFactors, style: MovieStyle, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The clip's sound, ``float32 (N_SAMPLES,)`` mono at ``AUDIO_RATE`` Hz,
    and its realised RMS level in dBFS.

    A chord progression I-IV-V-I (major) or i-iv-v-i (minor), one chord per
    second, each note a sum of ``style.harmonics`` sine partials; drum pulses
    at ``f.tempo`` BPM; the mix scaled to ``f.target_db`` dBFS RMS (and down
    when its peak would pass 0.99).
    """
    sr = AUDIO_RATE
    t = np.arange(N_SAMPLES, dtype=np.float64) / sr
    third = 4 if f.major else 3
    root = ROOT_HZ
    pad = np.zeros(N_SAMPLES)
    chord_len = sr  # one chord per second
    fade = int(0.02 * sr)
    env = np.ones(chord_len)
    env[:fade] = np.linspace(0.0, 1.0, fade)
    env[-3 * fade:] = np.linspace(1.0, 0.0, 3 * fade)
    for k, degree in enumerate((0, 5, 7, 0)):
        seg = slice(k * chord_len, (k + 1) * chord_len)
        tt = t[seg]
        chord = np.zeros(chord_len)
        for interval in (0, third, 7):
            f0 = root * 2 ** ((degree + interval) / 12.0)
            for h in range(1, style.harmonics + 1):
                chord += style.rolloff ** (h - 1) * np.sin(2 * math.pi * f0 * h * tt + rng.uniform(0, 2 * math.pi))
        pad[seg] = chord * env
    pad /= np.sqrt(np.mean(pad**2)) + 1e-12

    # one drum hit, 0.25 s
    n_hit = int(0.25 * sr)
    th = np.arange(n_hit) / sr
    kick = np.sin(2 * math.pi * np.cumsum(50.0 + 90.0 * np.exp(-th / 0.03)) / sr) * np.exp(-th / 0.12)
    click = np.diff(rng.normal(size=n_hit + 1)) * np.exp(-th / 0.012)
    kick /= np.sqrt(np.sum(kick**2) / sr)
    click /= np.sqrt(np.sum(click**2) / sr)
    hit = (1.0 - style.click) * kick + style.click * click
    hit = hit / np.sqrt(np.sum(hit**2) / sr)  # unit energy per hit (per second)
    drums = np.zeros(N_SAMPLES + n_hit)
    period = 60.0 / f.tempo
    for onset in np.arange(rng.uniform(0.0, period), SECONDS, period):
        i = int(round(onset * sr))
        drums[i : i + n_hit] += hit
    drums = drums[:N_SAMPLES]
    mix = pad + style.drum_level * drums

    mix *= 10 ** (f.target_db / 20.0) / np.sqrt(np.mean(mix**2))
    peak = float(np.max(np.abs(mix)))
    if peak > 0.99:
        mix *= 0.99 / peak
    rms_db = 20.0 * math.log10(float(np.sqrt(np.mean(mix**2))))
    return mix.astype(np.float32), rms_db


# ------------------------------------------------------------- clip rows


def _fmt(x: float, digits: int = 6) -> str:
    s = f"{x:.{digits}f}"
    return "0." + "0" * digits if s == "-0." + "0" * digits else s


def _factor_row(clip_id: str, movie: str, f: ClipFactors, rms_db: float) -> dict[str, str]:
    loud_u = (rms_db - LOUDNESS_DB[0]) / (LOUDNESS_DB[1] - LOUDNESS_DB[0])
    return {
        "clip_id": clip_id,
        "movie": movie,
        "speed_u": _fmt(f.speed_u),
        "speed_px_per_frame": _fmt(f.speed, 4),
        "cuts": str(f.cuts),
        "cut_rate_per_s": _fmt(f.cuts / SECONDS, 4),
        "loudness_u": _fmt(min(1.0, max(0.0, loud_u))),
        "loudness_dbfs": _fmt(rms_db, 4),
        "tempo_u": _fmt(f.tempo_u),
        "tempo_bpm": _fmt(f.tempo, 4),
        "brightness_u": _fmt(f.brightness_u),
        "brightness_v": _fmt(f.brightness, 4),
        "warmth_u": _fmt(f.warmth_u),
        "hue_deg": _fmt(f.hue, 4),
        "mode": "major" if f.major else "minor",
        "arousal_noise": _fmt(f.arousal_noise),
        "valence_noise": _fmt(f.valence_noise),
    }


def _parsed_factors(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(row[k]) for k in (
        "speed_u", "loudness_u", "tempo_u", "brightness_u", "warmth_u", "arousal_noise", "valence_noise")}
    out["cuts"] = int(row["cuts"])
    out["mode"] = row["mode"]
    return out


# ======================================================================
# one clip, end to end


@dataclass
class DemoClip:
    """One generated clip: ``frames`` ``uint8 (100, 120, 160, 3)`` RGB at 25 fps
    (``None`` when not rendered), ``audio`` ``float32 (64000,)`` mono at
    16 kHz, its ``factors.csv`` row and its labels."""

    clip_id: str
    movie: str
    split: str
    frames: np.ndarray | None
    audio: np.ndarray
    factors: dict[str, str]
    valence: float
    arousal: float

    def label_row(self) -> dict[str, str]:
        return {"clip_id": self.clip_id, "file": f"clips/{self.clip_id}.mp4", "movie": self.movie,
                "split": self.split, "valence": _fmt(self.valence), "arousal": _fmt(self.arousal)}


def _clip_ids(recipe: dict[str, Any]) -> list[str]:
    return [cid for m in recipe["movies"] for cid in m["clips"]]


def _style(movie: dict[str, Any]) -> MovieStyle:
    return MovieStyle(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in movie.items() if k != "clips"})


def render_clip(recipe: dict[str, Any], index: int, video: bool = True) -> DemoClip:
    """Clip ``index`` (0-based, in ``labels.csv`` order) of ``recipe`` (from
    :func:`demo_recipe`), before encoding. Its random numbers come from
    ``(recipe seed, index)`` alone; ``video=False`` skips drawing the frames
    (the audio, factors and labels are the same either way)."""
    start = 0
    for movie in recipe["movies"]:
        if index < start + len(movie["clips"]):
            break
        start += len(movie["clips"])
    else:
        raise IndexError(f"clip index {index} outside 0..{start - 1}")
    style = _style(movie)
    cid = movie["clips"][index - start]
    rng_f, rng_v, rng_a = _clip_rngs(int(recipe["seed"]), index)
    f = _draw_factors(rng_f)
    audio, rms_db = synth_audio(f, style, rng_a)
    frow = _factor_row(cid, style.movie, f, rms_db)
    valence, arousal = label_values(_parsed_factors(frow))
    frames = render_frames(f, style, rng_v) if video else None
    return DemoClip(cid, style.movie, style.split, frames, audio, frow, valence, arousal)


# ======================================================================
# make_demo


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def _csv_text(columns: tuple[str, ...], rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _recipe_text(recipe: dict[str, Any]) -> str:
    return json.dumps(recipe, indent=2, sort_keys=True) + "\n"


def _complete(out_dir: Path, recipe: dict[str, Any]) -> bool:
    if not ((out_dir / "labels.csv").is_file() and (out_dir / "factors.csv").is_file()):
        return False
    for cid in _clip_ids(recipe):
        p = out_dir / "clips" / f"{cid}.mp4"
        if not p.is_file() or p.stat().st_size == 0:
            return False
    return True


def _write_demo_clip(recipe: dict[str, Any], index: int, clip_dir: str, write: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Clip ``index`` of ``recipe``: encoded into ``clip_dir`` when ``write``
    (through a hidden ``.part`` file, renamed when complete); returns its
    factor row and label row. A pool worker's task in :func:`make_demo`."""
    clip = render_clip(recipe, index, video=write)
    if write:
        from aanbench.pluginkit.mediawrite import write_clip

        target = Path(clip_dir) / f"{clip.clip_id}.mp4"
        tmp = Path(clip_dir) / f".{clip.clip_id}.mp4.part"
        write_clip(tmp, clip.frames, FPS, clip.audio, AUDIO_RATE)
        os.replace(tmp, target)
    return clip.factors, clip.label_row()


def make_demo(
    out_dir: Path,
    seed: int = 0,
    clips: int = 120,
    progress: ProgressFn | None = None,
    workers: int = 1,
) -> Path:
    """Generate the demo dataset in ``out_dir`` and return ``out_dir``.

    Writes ``demo.json`` (the recipe, first), ``clips/<clip_id>.mp4`` (each
    written to a hidden ``.part`` file and renamed, so a killed run leaves no
    half file), then ``labels.csv`` and ``factors.csv``.

    Idempotent: when ``demo.json`` holds the same recipe and every file is
    present, nothing is done; when it holds the same recipe but files are
    missing (a killed run), only the missing clips are made. A different
    recipe, or a non-empty folder without ``demo.json``, raises
    :class:`AanbenchError`. ``progress(done, total)`` is called after each clip.
    ``workers``: processes that draw and encode the missing clips (spawned
    when more than one); each clip's random numbers depend on its index
    alone and the encoder is deterministic, so the files are the same with
    any number.
    """
    out_dir = Path(out_dir)
    recipe = demo_recipe(seed, clips)
    clips = recipe["clips"]
    recipe_file = out_dir / "demo.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise AanbenchError(f"demo folder is a file: {out_dir}")
    if recipe_file.is_file():
        try:
            existing = json.loads(recipe_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AanbenchError(f"cannot read the demo recipe {recipe_file}: {exc}") from None
        if existing != json.loads(_recipe_text(recipe)):
            old = {k: existing.get(k) for k in ("generator_version", "seed", "clips")} if isinstance(existing, dict) else {}
            new = {k: recipe[k] for k in ("generator_version", "seed", "clips")}
            raise AanbenchError(
                f"{out_dir} holds a different demo ({old}); asked for {new}: "
                "choose another folder or delete this one"
            )
        if _complete(out_dir, recipe):
            if progress is not None:
                progress(clips, clips)
            return out_dir
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise AanbenchError(f"{out_dir} is not empty and holds no demo.json: refusing to write the demo there")

    clip_dir = out_dir / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    if not recipe_file.is_file():
        _write_text_atomic(recipe_file, _recipe_text(recipe))
    for stale in clip_dir.glob(".*.mp4.part"):  # left by a killed run of ours
        stale.unlink()

    ids = _clip_ids(recipe)
    missing = [not ((clip_dir / f"{cid}.mp4").is_file() and (clip_dir / f"{cid}.mp4").stat().st_size > 0)
               for cid in ids]
    rows: list[tuple[dict[str, str], dict[str, str]] | None] = [None] * len(ids)
    workers = max(1, min(int(workers), sum(missing)))
    if workers == 1:
        for index in range(len(ids)):
            rows[index] = _write_demo_clip(recipe, index, str(clip_dir), missing[index])
            if progress is not None:
                progress(index + 1, clips)
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        try:
            futures = {pool.submit(_write_demo_clip, recipe, i, str(clip_dir), True): i
                       for i in range(len(ids)) if missing[i]}
            done = 0
            for i in range(len(ids)):  # the clips already there: their rows, here
                if not missing[i]:
                    rows[i] = _write_demo_clip(recipe, i, str(clip_dir), False)
                    done += 1
            for fut in cf.as_completed(futures):
                rows[futures[fut]] = fut.result()
                done += 1
                if progress is not None:
                    progress(done, clips)
        finally:  # on an error or Ctrl-C nothing queued starts; a half clip stays a .part file
            pool.shutdown(wait=True, cancel_futures=True)
    factor_rows = [r[0] for r in rows if r is not None]
    label_rows = [r[1] for r in rows if r is not None]
    _write_text_atomic(out_dir / "factors.csv", _csv_text(FACTOR_COLUMNS, factor_rows))
    _write_text_atomic(out_dir / "labels.csv", _csv_text(LABEL_COLUMNS, label_rows))
    return out_dir


# ======================================================================
# the Dataset plugin


class DemoDataset(Dataset):
    """The generated demo: ``items(root)`` reads ``root/labels.csv``."""

    name = "demo"
    version = "1"
    description = (
        "Synthetic clips made from a seed (aanbench datasets make-demo): valence and arousal are known "
        "functions of motion, cuts, loudness, tempo, brightness, hue and harmony, plus noise; "
        "by default 120 clips in 10 movies; scored leave-one-movie-out (--protocol fixed: 8 train / 2 test movies)"
    )
    label_range = {"valence": (-1.0, 1.0), "arousal": (-1.0, 1.0)}
    protocol = "leave-one-group-out"  # run, benchmark and demo alike; `train` keeps the 2 test movies out
    card = "datasets/demo.md"

    def items(self, root: Path) -> list[Item]:
        """One :class:`Item` per row of ``root/labels.csv``, in file order:
        id = clip_id, path = root/file (whole clip), labels valence and
        arousal, group = movie, split = train/test."""
        root = Path(root)
        path = root / "labels.csv"
        if not path.is_file():
            raise AanbenchError(
                f"no labels.csv in {root}: make the demo there with `aanbench datasets make-demo {root}`"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AanbenchError(f"cannot read {path}: {exc}") from None
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise AanbenchError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(LABEL_COLUMNS)})")
        items: list[Item] = []
        seen: set[str] = set()
        for row in reader:
            line = reader.line_num
            if None in row or any(row[c] is None for c in LABEL_COLUMNS):
                raise AanbenchError(f"{path} line {line}: expected {len(reader.fieldnames or [])} fields")
            cid = row["clip_id"].strip()
            if not cid:
                raise AanbenchError(f"{path} line {line}: empty clip_id")
            if cid in seen:
                raise AanbenchError(f"{path} line {line}: duplicate clip_id {cid!r}")
            seen.add(cid)
            if not row["file"].strip():
                raise AanbenchError(f"{path} line {line}: empty file for {cid!r}")
            if row["split"] not in ("train", "test"):
                raise AanbenchError(f"{path} line {line}: split must be train or test, got {row['split']!r}")
            labels = {}
            for target in ("valence", "arousal"):
                try:
                    value = float(row[target])
                except ValueError:
                    raise AanbenchError(f"{path} line {line}: {target} {row[target]!r} is not a number") from None
                lo, hi = self.label_range[target]
                if not (lo <= value <= hi):  # also rejects nan
                    raise AanbenchError(f"{path} line {line}: {target} {value} outside [{lo:g}, {hi:g}]")
                labels[target] = value
            items.append(Item(
                id=cid, path=root / row["file"].strip(), labels=labels,
                group=row["movie"].strip(), split=row["split"],
            ))
        if not items:
            raise AanbenchError(f"{path}: no clips listed")
        return items

    def generate(self, root: Path, seed: int = 0, clips: int = 120, progress: ProgressFn | None = None,
                 workers: int = 1) -> Path:
        """Make the dataset in ``root`` (see :func:`make_demo`; ``workers``
        processes); returns ``root``."""
        return make_demo(root, seed=seed, clips=clips, progress=progress, workers=workers)


@hookimpl
def aanbench_datasets():
    return [DemoDataset()]


@hookimpl
def aanbench_commands(cli):
    import typer

    # CliGroups.command turns an AanbenchError into a one-line message and exit 2
    register = cli.command(cli.datasets, "make-demo") if hasattr(cli, "command") else cli.datasets.command("make-demo")

    @register
    def make_demo_command(
        directory: Path = typer.Argument(..., help="folder to write the demo into (created if missing)"),
        seed: int = typer.Option(0, "--seed", help="random seed; the same seed gives the same dataset"),
        clips: int = typer.Option(120, "--clips", help="number of clips (at least 4)"),
        workers: int = typer.Option(1, "--workers", "-j", min=1, metavar="N",
                                    help="processes drawing and encoding clips (the same files with any N)"),
    ) -> None:
        """Generate the synthetic demo dataset (real MP4 clips with known labels)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("making demo clips"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        task = None

        def tick(done: int, total: int) -> None:
            nonlocal task
            if task is None:  # started on the first clip, after the folder was checked
                bar.start()
                task = bar.add_task("demo", total=total)
            bar.update(task, completed=done, total=total)

        try:
            out = make_demo(directory, seed=seed, clips=clips, progress=tick, workers=workers)
        finally:
            bar.stop()
        typer.echo(f"demo dataset ({clips} clips, seed {seed}) in {out}")
