"""The weight-free extractors: emobase2010 (real openSMILE), affect (video
descriptors) and logmel (audio statistics), on synthetic media and on a real
clip decoded with PyAV."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from aanbench.contracts import Item, ItemError, Media, MediaRequest
from aanbench_plugins.extractors import affect as affect_mod
from aanbench_plugins.extractors import logmel as logmel_mod
from aanbench_plugins.extractors.affect import FEATURES, AffectDescriptors, affect_descriptors, rgb_to_hsv
from aanbench_plugins.extractors.emobase2010 import Emobase2010
from aanbench_plugins.extractors.logmel import FEATURE_NAMES, LogmelStats, logmel_stats, mel_filterbank

SR = 16000


# ---------------------------------------------------------------- helpers
def audio_media(audio: np.ndarray, item_id: str = "a") -> Media:
    audio = np.asarray(audio, dtype=np.float32)
    return Media(item=Item(item_id, None), duration=audio.size / SR, audio={SR: audio})


def video_media(frames: np.ndarray, item_id: str = "v") -> Media:
    req = AffectDescriptors.needs
    return Media(item=Item(item_id, None), duration=frames.shape[0] / 8.0, video={req.video_key(): frames})


def tone(seconds: float = 4.0, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def click_track(bpm: float, seconds: float = 4.0, amp: float = 0.5) -> np.ndarray:
    n = int(seconds * SR)
    x = np.zeros(n + SR, dtype=np.float64)
    burst = amp * np.sin(2 * np.pi * 1000 * np.arange(800) / SR) * np.exp(-np.arange(800) / 200)
    for s in range(0, n, int(SR * 60 / bpm)):
        x[s : s + 800] += burst
    return x[:n].astype(np.float32)


def square_frames(t: int = 32, h: int = 64, w: int = 96, speed: int = 0, value: int = 220) -> np.ndarray:
    """A bright 16x16 square on a dark grey background, moving ``speed`` px/frame."""
    frames = np.full((t, h, w, 3), 40, dtype=np.uint8)
    for i in range(t):
        x0 = (8 + i * speed) % (w - 16)
        frames[i, 24:40, x0 : x0 + 16] = value
    return frames


def solid_frames(rgb: tuple[int, int, int], t: int = 32, h: int = 64, w: int = 96) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (t, h, w, 3)).copy()


def feat(vec: np.ndarray, name: str) -> float:
    return float(vec[FEATURES.index(name)])


def lm(vec: np.ndarray, name: str) -> float:
    return float(vec[FEATURE_NAMES.index(name)])


@pytest.fixture(scope="module")
def emobase() -> Emobase2010:
    e = Emobase2010()
    e.load(None)
    return e


# ---------------------------------------------------------------- emobase2010
def test_emobase2010_shape_loudness_and_finiteness(emobase: Emobase2010) -> None:
    noise = np.random.default_rng(0).normal(0, 0.1, 4 * SR).astype(np.float32)
    silence = np.zeros(4 * SR, dtype=np.float32)
    out = emobase.extract([audio_media(tone()), audio_media(noise), audio_media(silence)])
    assert out.shape == (3, 1582) and out.dtype == np.float32
    assert np.isfinite(out).all()  # silence included
    names = emobase.feature_names()
    assert len(names) == 1582
    loud = names.index("pcm_loudness_sma_amean")
    assert out[0, loud] > out[2, loud] + 0.1
    assert out[1, loud] > out[2, loud] + 0.1
    # a tone and noise differ in many functionals, not just loudness
    assert np.count_nonzero(np.abs(out[0] - out[1]) > 1e-3) > 500


def test_emobase2010_deterministic(emobase: Emobase2010) -> None:
    x = np.random.default_rng(1).normal(0, 0.2, 2 * SR).astype(np.float32)
    a = emobase.extract([audio_media(x)])
    b = Emobase2010().extract([audio_media(x.copy())])  # a second instance loads lazily
    assert np.array_equal(a, b)


def test_emobase2010_pickles_for_workers(emobase: Emobase2010) -> None:
    import pickle

    clone = pickle.loads(pickle.dumps(emobase))  # the openSMILE handle is dropped, reloaded on use
    assert clone._smile is None
    x = tone(1.0, freq=500.0)
    assert np.array_equal(clone.extract([audio_media(x)]), emobase.extract([audio_media(x)]))


def test_emobase2010_clips_full_scale_instead_of_wrapping(emobase: Emobase2010) -> None:
    # openSMILE's int16 conversion would turn +1.0 into -32768; we clip first.
    sq = np.sign(np.sin(2 * np.pi * 100 * np.arange(SR) / SR)).astype(np.float32)
    sq[sq == 0] = 1.0
    a = emobase.extract([audio_media(sq)])
    b = emobase.extract([audio_media(np.clip(sq, -1.0, 32767 / 32768))])
    assert np.array_equal(a, b)


@pytest.mark.parametrize("seconds", [0.0, 0.2, 0.35])
def test_emobase2010_too_short(emobase: Emobase2010, seconds: float) -> None:
    x = np.random.default_rng(2).normal(0, 0.1, int(seconds * SR)).astype(np.float32)
    with pytest.raises(ItemError, match="audio too short"):
        emobase.extract([audio_media(x)])


def test_emobase2010_no_audio_and_bad_samples(emobase: Emobase2010) -> None:
    with pytest.raises(ItemError, match="no audio stream"):
        emobase.extract([Media(item=Item("x", None), duration=1.0)])
    bad = tone(1.0)
    bad[100] = np.nan
    with pytest.raises(ItemError, match="non-finite"):
        emobase.extract([audio_media(bad)])


# (windows, config and provenance of emobase2010: tests/test_emobase2010.py)


# ---------------------------------------------------------------- affect
def test_affect_shape_and_names() -> None:
    ex = AffectDescriptors()
    out = ex.extract([video_media(square_frames()), video_media(solid_frames((200, 30, 30)))])
    assert out.shape == (2, ex.dim) and out.dtype == np.float32 and ex.dim == len(FEATURES) == 23
    assert np.isfinite(out).all()
    cfg = ex.config()
    assert cfg["features"] == list(FEATURES)
    assert cfg["needs"]["fps"] == 8.0 and cfg["needs"]["short_side"] == 64
    assert cfg["cut_threshold"] == affect_mod.CUT_THRESHOLD


def test_affect_motion() -> None:
    static = affect_descriptors(square_frames(speed=0))
    moving = affect_descriptors(square_frames(speed=3))
    assert feat(static, "motion_mean") == 0.0 and feat(static, "motion_active") == 0.0
    assert feat(moving, "motion_mean") > 0.01
    # 3 px/frame of a 16 px square: about 2 * 3 * 16 of 64 * 96 pixels change
    assert feat(moving, "motion_active") == pytest.approx(96 / (64 * 96), rel=0.3)
    assert feat(moving, "motion_max") >= feat(moving, "motion_mean")
    # a moving square is motion, not a cut
    assert feat(moving, "cut_rate") == 0.0 and feat(static, "cut_rate") == 0.0


def test_affect_cuts() -> None:
    flashing = np.where((np.arange(32) % 2 == 0)[:, None, None, None], 255, 0).astype(np.uint8)
    flashing = np.broadcast_to(flashing, (32, 64, 96, 3)).copy()
    static = solid_frames((128, 128, 128))
    f, s = affect_descriptors(flashing), affect_descriptors(static)
    # 31 consecutive pairs, every one a cut, over 32 / 8 = 4 s
    assert feat(f, "cut_rate") == pytest.approx(31 / 4.0)
    assert feat(s, "cut_rate") == 0.0
    assert feat(f, "hist_diff_mean") == pytest.approx(1.0)
    assert feat(f, "luma_flicker") > 0.4 and feat(s, "luma_flicker") == 0.0
    # two shots, one cut
    two = np.concatenate([solid_frames((200, 40, 40), t=16), solid_frames((30, 60, 200), t=16)])
    assert feat(affect_descriptors(two), "cut_rate") == pytest.approx(1 / 4.0)


def test_affect_brightness_and_colour() -> None:
    bright = affect_descriptors(solid_frames((230, 230, 230)))
    dark = affect_descriptors(solid_frames((20, 20, 20)))
    assert feat(bright, "brightness") > feat(dark, "brightness")
    assert feat(bright, "luma_mean") > feat(dark, "luma_mean")
    assert feat(bright, "bright_fraction") == 1.0 and feat(dark, "dark_fraction") == 1.0
    red = affect_descriptors(solid_frames((220, 30, 20)))
    blue = affect_descriptors(solid_frames((20, 40, 220)))
    grey = affect_descriptors(solid_frames((120, 120, 120)))
    assert feat(red, "saturation_mean") > 0.8 and feat(grey, "saturation_mean") == 0.0
    assert feat(red, "colour_energy") > feat(grey, "colour_energy")
    assert feat(red, "colourfulness") > feat(grey, "colourfulness")
    assert feat(red, "warm_fraction") == 1.0 and feat(red, "cool_fraction") == 0.0
    assert feat(blue, "cool_fraction") == 1.0 and feat(blue, "warm_fraction") == 0.0
    assert feat(red, "hue_concentration") == pytest.approx(1.0, abs=1e-6)
    assert feat(red, "hue_cos") > 0.95  # red is near 0 degrees
    assert feat(grey, "chromatic_fraction") == 0.0 and feat(grey, "hue_concentration") == 0.0
    half = solid_frames((220, 30, 20))
    half[:, :, 48:] = (20, 40, 220)
    mixed = affect_descriptors(half)
    assert feat(mixed, "warm_fraction") == pytest.approx(0.5)
    assert feat(mixed, "hue_concentration") < 0.6


def test_rgb_to_hsv_matches_colorsys() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (500, 3)).astype(np.float64) / 255.0
    rgb[:5] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 1, 0], [1, 0, 1]]
    h, s, v = rgb_to_hsv(rgb)
    ref = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    np.testing.assert_allclose(h, ref[:, 0] * 360.0, atol=1e-9)
    np.testing.assert_allclose(s, ref[:, 1], atol=1e-12)
    np.testing.assert_allclose(v, ref[:, 2], atol=1e-12)


def test_affect_blocks_give_same_answer(monkeypatch) -> None:
    """Processing in blocks of frames must not change the result (pairs across blocks)."""
    frames = np.random.default_rng(4).integers(0, 256, (70, 32, 48, 3), dtype=np.uint8)
    frames[35:] = frames[35:] // 4  # a cut inside the second block boundary region
    small = affect_descriptors(frames)  # BLOCK = 32: three blocks
    monkeypatch.setattr(affect_mod, "BLOCK", 1000)
    whole = affect_descriptors(frames)
    np.testing.assert_allclose(small, whole, rtol=1e-5, atol=1e-6)


def test_affect_deterministic_and_errors() -> None:
    ex = AffectDescriptors()
    frames = np.random.default_rng(5).integers(0, 256, (20, 64, 96, 3), dtype=np.uint8)
    assert np.array_equal(ex.extract([video_media(frames)]), ex.extract([video_media(frames.copy())]))
    with pytest.raises(ItemError, match="video too short"):
        ex.extract([video_media(frames[:1])])
    with pytest.raises(ItemError, match="no video stream"):
        ex.extract([Media(item=Item("x", None), duration=1.0)])


# ---------------------------------------------------------------- logmel
def test_logmel_shape_loudness_and_silence() -> None:
    ex = LogmelStats()
    out = ex.extract([audio_media(tone()), audio_media(np.zeros(4 * SR))])
    assert out.shape == (2, 134) and out.dtype == np.float32 and ex.dim == len(FEATURE_NAMES) == 134
    assert np.isfinite(out).all()
    t, s = out
    assert lm(t, "rms_db_mean") > lm(s, "rms_db_mean") + 50
    assert lm(s, "rms_db_mean") == pytest.approx(-100.0)
    assert lm(t, "rms_db_mean") == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.1)
    assert (t[:64] > s[:64]).all()
    assert lm(s, "tempo_bpm") == 0.0 and lm(s, "pulse_clarity") == 0.0
    assert ex.config()["needs"]["audio_rate"] == SR


def test_logmel_filterbank() -> None:
    fb = mel_filterbank()
    assert fb.shape == (257, 64)
    assert (fb >= 0).all() and fb.max() <= 1.0
    assert (fb.sum(axis=0) > 0).all()  # no empty band
    peaks = fb.argmax(axis=0)
    assert (np.diff(peaks) >= 0).all()  # bands ordered by frequency


def test_logmel_band_of_a_tone() -> None:
    v = logmel_stats(tone(freq=1000.0))
    freqs = np.arange(257) * SR / 512
    band = int(np.argmax(v[:64]))
    fb = mel_filterbank()
    assert fb[np.argmin(np.abs(freqs - 1000.0)), band] > 0.5


@pytest.mark.parametrize("bpm", [90.0, 120.0, 150.0])
def test_logmel_tempo_of_click_track(bpm: float) -> None:
    v = logmel_stats(click_track(bpm))
    assert lm(v, "tempo_bpm") == pytest.approx(bpm, rel=0.03)
    assert lm(v, "pulse_clarity") > 0.5
    steady = logmel_stats(tone(freq=440.0))
    assert lm(steady, "pulse_clarity") < 0.05
    assert lm(v, "onset_mean") > 10 * lm(steady, "onset_mean")


def test_logmel_blocks_give_same_answer(monkeypatch) -> None:
    x = np.random.default_rng(6).normal(0, 0.1, 3 * SR).astype(np.float32)
    whole = logmel_stats(x)
    monkeypatch.setattr(logmel_mod, "BLOCK", 37)
    np.testing.assert_allclose(logmel_stats(x), whole, rtol=1e-6, atol=1e-6)


def test_logmel_deterministic_and_errors() -> None:
    ex = LogmelStats()
    x = np.random.default_rng(7).normal(0, 0.1, SR).astype(np.float32)
    assert np.array_equal(ex.extract([audio_media(x)]), ex.extract([audio_media(x.copy())]))
    with pytest.raises(ItemError, match="audio too short"):
        ex.extract([audio_media(x[:559])])
    assert ex.extract([audio_media(x[:560])]).shape == (1, 134)
    with pytest.raises(ItemError, match="no audio stream"):
        ex.extract([Media(item=Item("x", None), duration=1.0)])


# ---------------------------------------------------------------- plugins and real media
def test_registered_through_entry_points(monkeypatch) -> None:
    from aanbench.plugin_manager import Plugins

    monkeypatch.setenv("AANBENCH_PLUGINS", "emobase2010,affect,logmel")
    monkeypatch.delenv("AANBENCH_DISABLE_PLUGINS", raising=False)
    p = Plugins()
    p.load_entry_points()
    assert [r.error for r in p.records] == [None, None, None]
    got = {name: (x.modality, x.dim, x.deterministic, bool(x.weights)) for name, x in p.extractors.items()}
    assert got == {
        "emobase2010": ("audio", 1582, True, False),
        "affect": ("video", 23, True, False),
        "logmel": ("audio", 134, True, False),
    }


def _write_real_clip(tmp_path):
    from aanbench.pluginkit.mediawrite import write_clip

    fps, seconds = 24, 3
    frames = square_frames(t=fps * seconds, h=72, w=128, speed=2)
    audio = tone(seconds, freq=330.0, amp=0.3)
    return write_clip(tmp_path / "clip.mp4", frames, fps, audio, rate=SR), frames, fps


def _check_rows(rows: dict[str, np.ndarray]) -> None:
    assert rows["emobase2010"].shape == (1, 1582)
    assert rows["affect"].shape == (1, 23)
    assert rows["logmel"].shape == (1, 134)
    for r in rows.values():
        assert r.dtype == np.float32 and np.isfinite(r).all()
    a = rows["affect"][0]
    assert feat(a, "motion_mean") > 0.0 and feat(a, "cut_rate") == 0.0
    assert lm(rows["logmel"][0], "rms_db_mean") == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=1.5)


def test_real_clip_decoded_with_pyav(tmp_path, emobase: Emobase2010) -> None:
    """H.264 + AAC written with PyAV, decoded with decode_media (video and audio
    in separate calls), through all three extractors."""
    from aanbench.media import decode_media

    clip, frames, fps = _write_real_clip(tmp_path)
    extractors = [emobase, AffectDescriptors(), LogmelStats()]
    video = decode_media(Item("clip", clip), [AffectDescriptors.needs])
    audio = decode_media(Item("clip", clip), [LogmelStats.needs])
    assert video.frames_for(AffectDescriptors.needs).shape == (24, 64, 113, 3)  # long side truncated, as torchvision
    assert audio.audio_for(LogmelStats.needs).shape == (3 * SR,)
    _check_rows({e.name: e.extract([video if e.modality == "video" else audio]) for e in extractors})

    # a video-only file: the decoder or the extractor says "no audio stream"
    from aanbench.pluginkit.mediawrite import write_clip

    silent_clip = write_clip(tmp_path / "video_only.mp4", frames[:24], fps, None)
    with pytest.raises(ItemError, match="no audio stream"):
        decode_media(Item("v", silent_clip), [LogmelStats.needs])
    video_only = decode_media(Item("v", silent_clip), [AffectDescriptors.needs])
    for e in (emobase, LogmelStats()):
        with pytest.raises(ItemError, match="no audio stream"):
            e.extract([video_only])


def test_real_clip_one_decode_for_all_extractors(tmp_path, emobase: Emobase2010) -> None:
    """As a run does it: one decode_media call serving all three extractors."""
    from aanbench.media import decode_media

    clip, _, _ = _write_real_clip(tmp_path)
    extractors = [emobase, AffectDescriptors(), LogmelStats()]
    media = decode_media(Item("clip", clip), [e.needs for e in extractors])
    _check_rows({e.name: e.extract([media]) for e in extractors})
