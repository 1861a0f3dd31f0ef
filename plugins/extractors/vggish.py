"""VGGish (AudioSet) audio embeddings, as in AttendAffectNet section III-B.

Log-mel front end, exactly as Google's ``vggish_input`` / ``mel_features``
(re-written here in NumPy, float64):

- 16 kHz mono float audio in [-1, 1] (the decoder resamples and mixes down);
- frames of 400 samples (25 ms) every 160 samples (10 ms), no centring, no
  padding, incomplete frames at the end dropped; a periodic Hann window
  ``0.5 - 0.5 cos(2 pi n / 400)``; magnitude of a 512-point real FFT
  (257 bins);
- 64 triangular mel bands between 125 and 7500 Hz on the HTK mel scale
  ``1127 ln(1 + f / 700)``, triangles linear in mel, DC bin weight zero;
- ``log(mel + 0.01)``;
- non-overlapping patches of 96 frames x 64 bands (0.96 s); an incomplete
  patch at the end is dropped, as in the original.

Network: the VGG-like VGGish (four conv blocks, 3 fully connected layers
4096-4096-128, each followed by ReLU), flattening the last conv block in
TensorFlow's (height, width, channel) order, as the PyTorch port
harritaylor/torchvggish does. The feature is the 128-d output after the
final ReLU (so non-negative), without the PCA / whitening and 8-bit
quantisation of the released AudioSet embeddings, averaged over patches.

Short items: the original gives no patch for audio shorter than 15,600
samples (0.975 s: 96 frames of 25 ms every 10 ms). An item with at least
half that (7,800 samples, 0.4875 s) is padded with silence at the end to
one full patch; a shorter one raises :class:`ItemError`.

Weights: harritaylor/torchvggish ``vggish-10086976.pth`` (keys
``features.N.*`` / ``embeddings.N.*``). A state dict with the other common
layout, ``features_network.N.*`` / ``embedding_network.N.*`` with the same
layer numbers, is renamed and loaded the same way (strictly).

Importing this module does not import torch (every CLI call loads all
plugins): the network ``VGGishNet`` lives in
:mod:`aanbench_plugins.extractors._vggish_net`, imported when the extractor loads. The log-mel front end is NumPy, here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import ItemError, Media, MediaRequest, WeightFile
from aanbench_plugins.extractors._neural import NeuralExtractor

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS = WeightFile(
    filename="vggish-10086976.pth",
    sha256="10086976245803799d9194e9a73d9b6c1549c71d1b80106f5cade5608a561f4b",
    source="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    description="VGGish (AudioSet), converted by harritaylor/torchvggish; 288,567,937 bytes",
)

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512  # 2 ** ceil(log2(400))
MEL_BANDS = 64
MEL_LOW_HZ = 125.0
MEL_HIGH_HZ = 7500.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96  # 0.96 s
MIN_PATCH_SAMPLES = WINDOW + (PATCH_FRAMES - 1) * HOP  # 15,600: one whole patch
MIN_ITEM_SAMPLES = MIN_PATCH_SAMPLES // 2  # shorter items are refused, longer ones padded


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def periodic_hann(n: int) -> np.ndarray:
    """``0.5 - 0.5 cos(2 pi k / n)``, k = 0..n-1 (a full period, not np.hanning)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi / n * np.arange(n))


@lru_cache(maxsize=4)
def mel_matrix(
    bands: int = MEL_BANDS,
    fft_bins: int = FFT // 2 + 1,
    rate: int = SAMPLE_RATE,
    low: float = MEL_LOW_HZ,
    high: float = MEL_HIGH_HZ,
) -> np.ndarray:
    """``float64 (fft_bins, bands)`` triangular weights, linear in HTK mel;
    row 0 (DC) is zero."""
    bins_mel = hz_to_mel(np.linspace(0.0, rate / 2.0, fft_bins))
    edges = np.linspace(float(hz_to_mel(low)), float(hz_to_mel(high)), bands + 2)
    w = np.empty((fft_bins, bands))
    for i in range(bands):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        rise = (bins_mel - lo) / (mid - lo)
        fall = (hi - bins_mel) / (hi - mid)
        w[:, i] = np.maximum(0.0, np.minimum(rise, fall))
    w[0, :] = 0.0
    w.setflags(write=False)
    return w


def stft_magnitude(signal: np.ndarray) -> np.ndarray:
    """``float64 (n_frames, 257)``: |rfft_512(hann * frame)| of 400-sample
    frames every 160 samples (no padding; 0 frames if under 400 samples)."""
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if x.size < WINDOW:
        return np.zeros((0, FFT // 2 + 1))
    n = 1 + (x.size - WINDOW) // HOP
    frames = np.lib.stride_tricks.as_strided(x, shape=(n, WINDOW), strides=(x.strides[0] * HOP, x.strides[0]))
    return np.abs(np.fft.rfft(frames * periodic_hann(WINDOW), FFT))


def log_mel(signal: np.ndarray) -> np.ndarray:
    """``float64 (n_frames, 64)``: ``log(mel + 0.01)`` of 16 kHz audio."""
    return np.log(stft_magnitude(signal) @ mel_matrix() + LOG_OFFSET)


def examples(signal: np.ndarray) -> np.ndarray:
    """``float32 (n_patches, 96, 64)`` non-overlapping log-mel patches of
    16 kHz mono audio; a trailing incomplete patch is dropped."""
    lm = log_mel(signal)
    n = lm.shape[0] // PATCH_FRAMES
    return lm[: n * PATCH_FRAMES].reshape(n, PATCH_FRAMES, MEL_BANDS).astype(np.float32)


_RENAMES = (("features_network.", "features."), ("embedding_network.", "embeddings."))


def canonical_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``features_network.N`` / ``embedding_network.N`` keys to
    ``features.N`` / ``embeddings.N``; other keys are kept as they are."""
    out = {}
    for k, v in state.items():
        for old, new in _RENAMES:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


class VGGishExtractor(NeuralExtractor):
    name = "vggish"
    version = "1"
    modality = "audio"
    dim = 128
    description = "VGGish (AudioSet) 128-d embeddings (no PCA, no quantisation), averaged over 0.96-s patches"
    weight_file = WEIGHTS
    # log-mel patches per pass; on a 2-core CPU 16 ran faster than 64 and 3x faster than 1
    max_inputs_per_pass = {"cpu": 16, "cuda": 1024}

    def __init__(self, frames: int = 0, fps: float | None = None) -> None:  # noqa: ARG002 - audio only
        self.frames = 0
        self.fps = None
        self.needs = MediaRequest(audio_rate=SAMPLE_RATE)
        self.weights = (self.weight_file,)
        self.net = None
        self._device = None  # torch.device("cpu") until load() picks one (see NeuralExtractor.device)
        self.batch_size = 8

    def with_sampling(self, frames: int = 0, fps: float | None = None) -> "VGGishExtractor":
        return self  # audio: frame sampling does not apply

    def preprocessing(self) -> dict[str, Any]:
        return {"window": WINDOW, "hop": HOP, "fft": FFT, "window_fn": "periodic hann", "mel_bands": MEL_BANDS,
                "mel_hz": [MEL_LOW_HZ, MEL_HIGH_HZ], "mel_scale": "htk", "log_offset": LOG_OFFSET,
                "patch_frames": PATCH_FRAMES, "short_items": f"padded to one patch if >= {MIN_ITEM_SAMPLES} samples",
                "pca": False, "pool": "mean over patches"}

    def build(self) -> nn.Module:
        from aanbench_plugins.extractors._vggish_net import VGGishNet

        return VGGishNet()

    def state_dict_from(self, obj: Any, net: nn.Module) -> Mapping[str, torch.Tensor]:
        if isinstance(obj, Mapping) and "state_dict" in obj and not any(str(k).startswith("features") for k in obj):
            obj = obj["state_dict"]
        return canonical_keys(obj) if isinstance(obj, Mapping) else obj

    def item_examples(self, media: Media) -> np.ndarray:
        """The item's log-mel patches ``float32 (n, 96, 64)`` (see module doc
        for short items)."""
        audio = np.asarray(media.audio_for(self.needs), dtype=np.float64).reshape(-1)
        if audio.size < MIN_ITEM_SAMPLES:
            raise ItemError(
                f"{self.name}: item {media.item.id} has {audio.size / SAMPLE_RATE:.3f} s of audio; "
                f"at least {MIN_ITEM_SAMPLES / SAMPLE_RATE:.4f} s is needed (one patch is 0.96 s)"
            )
        if audio.size < MIN_PATCH_SAMPLES:
            audio = np.pad(audio, (0, MIN_PATCH_SAMPLES - audio.size))
        return examples(audio)

    def extract_group(self, group: Sequence[Media]) -> np.ndarray:
        import torch

        from aanbench_plugins.extractors._torch_util import mean_by_item, run_in_passes

        net = self._require_loaded()
        ex = [self.item_examples(m) for m in group]
        counts = [e.shape[0] for e in ex]
        x = torch.from_numpy(np.concatenate(ex)).unsqueeze(1)  # (n, 1, 96, 64)
        per = run_in_passes(x.shape[0], lambda sl, dev: x[sl].to(dev), net, self.per_pass(), self.device)
        return mean_by_item(per, counts)


@hookimpl
def aanbench_extractors():
    return [VGGishExtractor()]
