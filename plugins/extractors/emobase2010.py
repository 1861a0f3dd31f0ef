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

Per item: one openSMILE run on the whole window (16 kHz mono; one
openSMILE instance per worker, reset between items, :class:`SmileRunner`), giving
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
11 kHz for the LPC / line spectral pairs with a direct (not fast) inverse
transform, so an item takes about 0.29 CPU-s per second of audio on this
project's 2-core machine (a 4-s clip 1.0 CPU-s, 20 s 5.7 CPU-s), 85% of it
in that transform (``smileDsp_irdft``, by ``perf record``; measured
2026-12-07). The settings are the authors', so it stays: in the demo it is
most of the extraction (139.5 of 148 CPU-s for 120 four-second clips).

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
        config_sha256()  # a missing or unreadable config fails here, clearly
        smile = SmileRunner(CONFIG)
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
        frames = self._smile.frames(x, RATE)
        if frames.ndim != 2 or frames.shape[1] != DIM:
            raise ItemError(f"openSMILE returned shape {frames.shape}, expected (n, {DIM})")
        if frames.shape[0] == 0 or np.isnan(frames).all():  # Smile.process_signal gave one NaN row here
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


class SmileRunner:
    """openSMILE on one config, run through the ``opensmile`` wheel's C
    library with the calls ``opensmile.Smile.process_signal`` makes for one
    mono signal (same options, same int16 conversion, same sink), so the
    frames are identical (tests/test_curve_speed.py compares them), minus
    two costs that are not openSMILE's computation:

    * ``opensmile.Smile()`` scans every installed package's file list
      (audobject's class key, about 0.5 CPU-s per process);
    * ``process_signal`` initialises openSMILE (parses the config, builds
      the components) for every signal: here one instance is initialised
      once and reset between signals (openSMILE's own ``reset``: "you may
      call run again without the need to call initialize first"), about
      0.1 CPU-s less per signal. After a run that did not end normally the
      instance is freed and the next signal gets a fresh one.
    """

    def __init__(self, config: Path, level: str = "func") -> None:
        import opensmile
        from opensmile.core.config import config as smile_config

        self._cfg = smile_config
        self.config_path = str(Path(config).resolve())
        root = Path(opensmile.__file__).resolve().parent / "core" / smile_config.CONFIG_ROOT
        self._options = {  # as Smile._options() and Smile._extract() set them
            "sink": str(root / smile_config.EXTERNAL_OUTPUT_SINGLE_CONFIG),
            "sinkLevel": level,
            "bufferModeRbConf": str(root / "shared/BufferModeRb.conf.inc"),
            "frameModeFunctionalsConf": str(root / "shared/FrameModeFunctionals.conf.inc"),
            "source": str(root / smile_config.EXTERNAL_INPUT_CONFIG),
        }
        self._smile: Any = None
        self._rate: int | None = None
        self._ended = False
        smile = self._new(RATE)
        sink = smile_config.EXTERNAL_OUTPUT_COMPONENT
        self.feature_names = [smile.external_sink_get_element_name(sink, i)
                              for i in range(smile.external_sink_get_num_elements(sink))]

    def _new(self, rate: int) -> Any:
        from opensmile.core.lib import OpenSMILE

        self.close()
        smile = OpenSMILE()
        try:
            smile.initialize(config_file=self.config_path, options={**self._options, "sampleRate": rate, "nBits": 16},
                             loglevel=2, log_file=None, debug=False)
        except BaseException:
            smile.free()
            raise
        self._smile, self._rate, self._ended = smile, rate, False
        return smile

    def frames(self, signal: np.ndarray, rate: int) -> np.ndarray:
        """``(n_frames, n_features)`` float32 for a mono float32 signal in
        [-1, 1) (``(0, n_features)`` when openSMILE gives no frame)."""
        if self._smile is not None and self._rate == rate and self._ended:
            self._smile.reset()
            self._ended = False
        elif self._smile is None or self._rate != rate or self._ended:
            self._new(rate)
        smile, cfg = self._smile, self._cfg
        rows: list[np.ndarray] = []
        x = np.asarray(signal, dtype=np.float32).reshape(-1).copy()
        x *= 32768  # as Smile._extract: float32 times 32768, then truncated to int16
        try:
            smile.external_sink_set_callback_ex(cfg.EXTERNAL_OUTPUT_COMPONENT, lambda data, meta: rows.append(data.copy()))
            smile.external_audio_source_write_data(cfg.EXTERNAL_SOURCE_COMPONENT, bytes(x.astype(np.int16)))
            smile.external_audio_source_set_eoi(cfg.EXTERNAL_SOURCE_COMPONENT)
            smile.run()
        except BaseException:
            self.close()  # its state is unknown: the next signal gets a fresh instance
            raise
        self._ended = True
        if not rows:
            return np.zeros((0, len(self.feature_names)), dtype=np.float32)
        return np.vstack(rows)

    def close(self) -> None:
        if self._smile is not None:
            self._smile.free()
            self._smile = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


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
