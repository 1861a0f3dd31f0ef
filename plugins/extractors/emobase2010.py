"""``emobase2010``: openSMILE's emobase2010 set (1,582 functionals) as the
AttendAffectNet authors computed it: low-level descriptors framed at 320 ms
with a 40 ms step, functionals on 320 ms windows with a 40 ms step,
averaged over the windows of an item.

The config, ``emobase2010_320_40.conf`` beside this module (package data),
is aanbench's own, written from the settings of the authors'
``emobase2010_320_40.conf`` (``MariusBange/Vimotion``
``Model/OpenSMILE/emobase2010_320_40.conf``; see
``shared/design/AUTHORS_PIPELINE.md``). Against the stock emobase2010 set it
frames both LLD framers at 320 ms / 40 ms (stock: 60/10 and 25/10 ms), runs
the functionals on fixed 320 ms / 40 ms windows (stock: the whole input),
and keeps emobase2010's ``Extremes.norm = segment``, so the 152 maxPos /
minPos features are positions within the window, in [0, 1]. The opensmile
wheel ships no emobase2010 config; its ``IS10_paraling_compat.conf`` has
the same 1,582 functionals but ``Extremes.norm = frame`` (positions in frame
units), the stock 60/10 and 25/10 ms LLD framing and several explicit
settings the authors' file leaves at openSMILE's defaults; version 1 of
this extractor used it with only the functionals windowed.

Per item: one openSMILE call on the whole window (16 kHz mono), giving
``(n_windows, 1582)`` (one row per 320 ms window, as the authors' CSV); the
output row is the mean over windows (float64 accumulation, stored as
float32), as the authors' script averages the CSV's rows. The last
feature, the turn duration, is 0.32 s in every window. A 5.00-s segment
gives 110 windows with the opensmile wheel (openSMILE 3): 118 LLD frames,
less the pitch smoother's one-frame look-ahead, less 7 for the 8-frame
window. The authors' published sample implies 105 windows per segment
(its onset count is a multiple of 1/105), which this pipeline gives for
4.80 s of audio: their segments' audio was 0.2 s shorter, or their
openSMILE (2.x) dropped 0.2 s more at the end of input; which one cannot be
told without their audio or binary.

Cost: openSMILE resamples each 320 ms frame's 8,192-point spectrum to
11 kHz for the LPC / line spectral pairs with a direct transform, so an item
takes about as long as it lasts on one core (about 5 s for 5 s; 95% of it in
that resampling). The settings are the authors', so it stays.

Edge cases, as measured with opensmile 2.6.0 (openSMILE 3):

* Audio shorter than one 320 ms window raises ``ItemError("audio too short")``.
  The first complete window needs about 0.6 s (one 320 ms frame, then eight
  40 ms steps of frames for the 320 ms functionals window, plus the pitch
  smoother's look-ahead); shorter audio yields no window, reported the same way.
* All-zero (silent) audio gives finite numbers (openSMILE floors its logs);
  any non-finite output would be raised as an ``ItemError``, never stored.
* ``opensmile`` converts float audio to int16 by ``x * 32768`` without
  clipping, so a sample of exactly +1.0 wraps to -32768; we clip to
  ``[-1, 32767/32768]`` first.

Licence: the ``opensmile`` package carries audEERING's research licence
(non-commercial use) beside its MIT metadata.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Extractor, ItemError, LoadContext, Media, MediaRequest

RATE = 16000
WINDOW_S = 0.32
HOP_S = 0.04
DIM = 1582
CONFIG = Path(__file__).resolve().with_name("emobase2010_320_40.conf")
AUTHORS_CONFIG = "MariusBange/Vimotion Model/OpenSMILE/emobase2010_320_40.conf"


def config_sha256() -> str:
    """SHA-256 of the packaged config (recorded in the provenance)."""
    try:
        return hashlib.sha256(CONFIG.read_bytes()).hexdigest()
    except OSError as exc:
        raise AanbenchError(f"emobase2010: cannot read its openSMILE config {CONFIG} ({exc.strerror}); "
                            "reinstall aanbench") from None


def _opensmile_version() -> str:
    import opensmile

    return str(getattr(opensmile, "__version__", "unknown"))


class Emobase2010(Extractor):
    """openSMILE emobase2010 functionals with the authors' settings (LLD
    frames and functionals windows of 320 ms, 40 ms step), averaged to
    ``float32 (1582,)`` per item."""

    name = "emobase2010"
    version = "2"  # 1: the wheel's IS10 config with only the functionals windowed
    modality = "audio"
    dim = DIM
    needs = MediaRequest(audio_rate=RATE)
    description = (
        "openSMILE emobase2010 (1582 functionals) as the AttendAffectNet authors ran it: LLD frames and "
        "functionals windows of 320 ms with a 40 ms step, positions relative to the window, averaged over windows"
    )
    deterministic = True

    def __init__(self) -> None:
        self._smile: Any = None

    def __getstate__(self) -> dict[str, Any]:  # the openSMILE handle does not travel
        state = self.__dict__.copy()
        state["_smile"] = None
        return state

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(
            {
                "opensmile_version": _opensmile_version(),
                "config": CONFIG.name,
                "config_sha256": config_sha256(),
                "settings_from": AUTHORS_CONFIG,
                "feature_level": "func",
                "lld_frame_s": WINDOW_S,
                "lld_step_s": HOP_S,
                "window_s": WINDOW_S,
                "hop_s": HOP_S,
                "extremes_norm": "segment",
                "pooling": "mean over windows",
                "input_clip": [-1.0, 32767 / 32768],
            }
        )
        return cfg

    def load(self, ctx: LoadContext | None = None) -> None:
        import opensmile

        config_sha256()  # a missing or unreadable config fails here, clearly
        smile = opensmile.Smile(feature_set=str(CONFIG), feature_level="func", num_workers=1)
        n = len(smile.feature_names)
        if n != DIM:
            raise AanbenchError(f"emobase2010: openSMILE config {CONFIG} gives {n} features, expected {DIM}")
        self._smile = smile

    def windows(self, media: Media) -> np.ndarray:
        """``float64 (n_windows, 1582)``: one row per 320 ms window (the
        authors' CSV rows), before averaging; raises :class:`ItemError`."""
        if self._smile is None:
            self.load()
        audio = _audio_of(media, RATE)
        seconds = audio.size / RATE
        if audio.size < int(round(WINDOW_S * RATE)):
            raise ItemError(f"audio too short: {seconds:.3f} s < one {WINDOW_S * 1000:.0f} ms window")
        x = np.clip(audio, -1.0, 32767 / 32768).astype(np.float32, copy=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # opensmile warns "Segment too short"; checked below
            frames = self._smile.process_signal(x, RATE).to_numpy()
        if frames.ndim != 2 or frames.shape[1] != DIM:
            raise ItemError(f"openSMILE returned shape {frames.shape}, expected (n, {DIM})")
        if frames.shape[0] == 0 or np.isnan(frames).all():
            raise ItemError(
                f"audio too short: {seconds:.3f} s gives no complete {WINDOW_S * 1000:.0f} ms window in openSMILE "
                "(it needs about 0.6 s: a 320 ms frame, then a 320 ms window of 40 ms steps)"
            )
        if not np.isfinite(frames).all():
            raise ItemError(f"openSMILE produced {int((~np.isfinite(frames)).sum())} non-finite values")
        return frames.astype(np.float64)

    def feature_names(self) -> list[str]:
        """openSMILE's names of the 1,582 features, in output order."""
        if self._smile is None:
            self.load()
        return list(self._smile.feature_names)

    def extract_one(self, media: Media) -> np.ndarray:
        """``float32 (1582,)`` for one item: the mean of :meth:`windows`."""
        return self.windows(media).mean(axis=0).astype(np.float32)

    def extract(self, batch: Sequence[Media]) -> np.ndarray:
        """``float32 (len(batch), 1582)``; one openSMILE call per item."""
        out = np.empty((len(batch), DIM), dtype=np.float32)
        for i, media in enumerate(batch):
            out[i] = self.extract_one(media)
        return out


def _audio_of(media: Media, rate: int) -> np.ndarray:
    """The item's mono audio at ``rate`` as a 1-D float32 array, or ItemError."""
    if rate not in media.audio:
        raise ItemError("no audio stream")
    audio = np.asarray(media.audio[rate], dtype=np.float32).reshape(-1)
    if not np.isfinite(audio).all():
        raise ItemError("audio contains non-finite samples")
    return audio


@hookimpl
def aanbench_extractors() -> list[Extractor]:
    return [Emobase2010()]
