"""``logmel``: log-mel statistics, loudness and onset/tempo descriptors of the
audio (134 dims). Weight-free, numpy only, deterministic.

Input: mono float32 audio at 16 kHz in [-1, 1], at least 25 ms + 10 ms.

Analysis: frames of 400 samples (25 ms) every 160 samples (10 ms), no
padding, so ``n = 1 + (len - 400) // 160`` frames; periodic Hann window,
512-point FFT; power ``|X|^2 / (sum w)^2`` (a full-scale sine has peak bin
power 0.25); 64 triangular mel filters (HTK mel scale
``2595 log10(1 + f/700)``, 60–7800 Hz, peak 1, centres equally spaced in
mel, weights interpolated on the FFT bin frequencies); ``L = ln(mel + 1e-10)``
(silence gives ln 1e-10 = -23.03).

Output, in this order (``FEATURE_NAMES``):

*   0–63  ``logmel_mean_k``  mean over frames of ``L[:, k]`` (natural log of power)
*  64–127 ``logmel_std_k``   std over frames of ``L[:, k]``
*  128    ``rms_db_mean``    mean over frames of ``20 log10(max(rms, 1e-5))`` (dBFS;
                             rms of the unwindowed 25 ms frame; silence gives -100)
*  129    ``rms_db_std``     std over frames of that level
*  130    ``onset_mean``     mean over frame pairs of the onset strength
                             ``o_t = mean_k max(0, C[t, k] - C[t-1, k])``, the spectral
                             flux of the compressed mel spectrogram
                             ``C = ln(1 + 1e4 * mel)`` (log compression after Mueller,
                             *Fundamentals of Music Processing*, sec. 6.1: unlike ``L``
                             it does not amplify the tiny frame-to-frame ripple of
                             leakage sidelobes that a steady tone produces)
*  131    ``onset_std``      std of ``o_t``
*  132    ``tempo_bpm``      ``60 / (lag * 0.01 s)`` for the lag in 25..150 frames
                             (240..40 BPM), and at most half the envelope's length,
                             that maximises ``r(lag)``, the unbiased autocorrelation of
                             the mean-removed ``o_t`` divided by ``var(o) + 0.01^2``
*  133    ``pulse_clarity``  ``r`` at the chosen lag: about 1 for a strict, strong
                             pulse; near 0 for none. The ``0.01^2`` term keeps a
                             near-constant envelope (steady tone) from scoring as a
                             clear pulse, and lowers the score of very quiet pulses.

``tempo_bpm`` is the argmax even when ``pulse_clarity`` is near 0 (then it
means little; octave errors are possible, as with any autocorrelation tempo).
Both are 0 when the onset envelope is exactly constant (e.g. digital silence)
or too short for the smallest lag (audio under about 0.53 s). Audio shorter
than two frames (560 samples) raises ``ItemError``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import Extractor, ItemError, Media, MediaRequest

RATE = 16000
WIN = 400
HOP = 160
NFFT = 512
N_MELS = 64
FMIN = 60.0
FMAX = 7800.0
LOG_EPS = 1e-10
ONSET_GAMMA = 1e4
CLARITY_FLOOR = 0.01
RMS_FLOOR = 1e-5
BPM_MIN = 40.0
BPM_MAX = 240.0
BLOCK = 4096  # frames per STFT block (bounds memory on long items)

FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"logmel_mean_{k:02d}" for k in range(N_MELS))
    + tuple(f"logmel_std_{k:02d}" for k in range(N_MELS))
    + ("rms_db_mean", "rms_db_std", "onset_mean", "onset_std", "tempo_bpm", "pulse_clarity")
)
DIM = len(FEATURE_NAMES)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = NFFT, rate: int = RATE, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """Triangular mel filters, ``float64 (n_fft // 2 + 1, n_mels)``, peak 1."""
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    lo, centre, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lo[None, :]) / (centre - lo)[None, :]
    down = (hi[None, :] - freqs[:, None]) / (hi - centre)[None, :]
    return np.maximum(0.0, np.minimum(up, down))


_FB = mel_filterbank()
_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)  # periodic Hann
_POWER_NORM = 1.0 / (_WINDOW.sum() ** 2)


def log_mel(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(L, C, rms_db)`` of mono 16 kHz ``audio`` (len >= 400): log-mel
    ``L = ln(mel + 1e-10)`` and compressed mel ``C = ln(1 + 1e4 mel)``, each
    ``float64 (n_frames, 64)``, and the frame level in dBFS ``float64 (n_frames,)``."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP]
    n = frames.shape[0]
    logmel = np.empty((n, N_MELS))
    compressed = np.empty((n, N_MELS))
    rms = np.empty(n)
    for b0 in range(0, n, BLOCK):
        fr = frames[b0 : b0 + BLOCK]
        rms[b0 : b0 + fr.shape[0]] = np.sqrt(np.mean(fr * fr, axis=1))
        spec = np.fft.rfft(fr * _WINDOW, n=NFFT, axis=1)
        power = (spec.real**2 + spec.imag**2) * _POWER_NORM
        mel = power @ _FB
        logmel[b0 : b0 + fr.shape[0]] = np.log(mel + LOG_EPS)
        compressed[b0 : b0 + fr.shape[0]] = np.log1p(ONSET_GAMMA * mel)
    rms_db = 20.0 * np.log10(np.maximum(rms, RMS_FLOOR))
    return logmel, compressed, rms_db


def tempo(onset: np.ndarray, hop_s: float = HOP / RATE) -> tuple[float, float]:
    """``(bpm, clarity)`` from an onset envelope sampled every ``hop_s`` s
    (unbiased autocorrelation over ``var + CLARITY_FLOOR^2``; ``(0, 0)`` when undefined)."""
    e = np.asarray(onset, dtype=np.float64) - np.mean(onset)
    n = e.size
    energy = float(np.dot(e, e))
    lag_min = int(round(60.0 / BPM_MAX / hop_s))
    lag_max = min(int(round(60.0 / BPM_MIN / hop_s)), n // 2)
    if n == 0 or energy == 0.0 or lag_max < lag_min:
        return 0.0, 0.0
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(e, n=size)
    ac = np.fft.irfft(f.real**2 + f.imag**2, n=size)[:n]
    lags = np.arange(lag_min, lag_max + 1)
    r = (ac[lags] / (n - lags)) / (energy / n + CLARITY_FLOOR**2)
    best = int(np.argmax(r))
    return 60.0 / (lags[best] * hop_s), float(r[best])


def logmel_stats(audio: np.ndarray) -> np.ndarray:
    """The 134 descriptors of mono 16 kHz ``audio``, ``float32 (134,)``."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    need = WIN + HOP
    if x.size < need:
        raise ItemError(f"audio too short: {x.size / RATE:.3f} s < {need / RATE:.3f} s (two 25 ms frames)")
    logmel, compressed, rms_db = log_mel(x)
    onset = np.maximum(0.0, np.diff(compressed, axis=0)).mean(axis=1)
    bpm, clarity = tempo(onset)
    out = np.concatenate(
        [
            logmel.mean(axis=0),
            logmel.std(axis=0),
            [rms_db.mean(), rms_db.std(), onset.mean(), onset.std(), bpm, clarity],
        ]
    )
    return out.astype(np.float32)


class LogmelStats(Extractor):
    """Log-mel band statistics plus loudness and onset/tempo, ``float32 (134,)``."""

    name = "logmel"
    version = "1"
    modality = "audio"
    dim = DIM
    needs = MediaRequest(audio_rate=RATE)
    description = (
        "64-band log-mel mean and std over 25 ms frames (10 ms hop), RMS level, "
        "spectral-flux onset strength and autocorrelation tempo"
    )
    deterministic = True

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(
            {
                "rate": RATE,
                "win": WIN,
                "hop": HOP,
                "n_fft": NFFT,
                "window": "periodic hann",
                "n_mels": N_MELS,
                "fmin": FMIN,
                "fmax": FMAX,
                "mel_scale": "htk",
                "log": f"ln(power/(sum w)^2 @ mel + {LOG_EPS:g})",
                "rms_floor": RMS_FLOOR,
                "onset": f"mean_k max(0, diff ln(1 + {ONSET_GAMMA:g} mel))",
                "clarity_floor": CLARITY_FLOOR,
                "bpm_range": [BPM_MIN, BPM_MAX],
                "features": list(FEATURE_NAMES),
            }
        )
        return cfg

    def extract(self, batch: Sequence[Media]) -> np.ndarray:
        """``float32 (len(batch), 134)``."""
        out = np.empty((len(batch), DIM), dtype=np.float32)
        for i, media in enumerate(batch):
            if RATE not in media.audio:
                raise ItemError("no audio stream")
            audio = np.asarray(media.audio_for(self.needs), dtype=np.float32)
            if not np.isfinite(audio).all():
                raise ItemError("audio contains non-finite samples")
            out[i] = logmel_stats(audio)
        return out


@hookimpl
def aanbench_extractors() -> list[Extractor]:
    return [LogmelStats()]
