"""Rows that must not be stored as valid: truncated media (both MP4
layouts), streams that end early, multichannel audio (stereo and 5.1, AAC
and PCM), broken links and unreadable files. Real encoded media throughout
(PyAV writes it, decode_media and the CLI read it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import AANBENCH, run_cli
from aanbench.contracts import Item, ItemError, MediaRequest
from aanbench.media import PAD_TOLERANCE_S, decode_media, mp4_truncation
from aanbench.pluginkit.mediawrite import write_clip

RATE = 16000
FPS = 10
AUDIO = MediaRequest(audio_rate=RATE)
VIDEO = MediaRequest(frames=8)


def _signal(seconds: float, lead_in: float = 0.0, seed: int = 0) -> np.ndarray:
    """A voice-like test signal: a vibrato tone, amplitude-modulated, plus a little noise."""
    t = np.arange(int(round(seconds * RATE))) / RATE
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.2 * np.sin(2 * np.pi * 0.5 * t))) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    x = x + 0.02 * rng.standard_normal(t.size)
    x[: int(lead_in * RATE)] = 0.0
    return x.astype(np.float32)


def _frames(seconds: float) -> np.ndarray:
    n = int(round(seconds * FPS))
    f = np.zeros((n, 48, 64, 3), dtype=np.uint8)
    for i in range(n):
        f[i] = (i * 5) % 256  # each frame its own grey level, so a repeated frame is visible
    return f


def _clip(path: Path, video_s: float | None = 5.0, audio_s: float | None = 5.0, faststart: bool = False) -> Path:
    return write_clip(path, _frames(video_s) if video_s else None, FPS,
                      _signal(audio_s) if audio_s else None, RATE, faststart=faststart)


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


# ---------------------------------------------------------------- truncation


def test_truncated_mp4_with_index_first_fails_instead_of_padding(tmp_path: Path) -> None:
    """Index (moov) before the data: the truncated file still opens and claims
    its full 5 s; the window past the truncation fails for audio and video,
    a window before it decodes as in the whole file."""
    full = _clip(tmp_path / "full.mp4", faststart=True)
    cut = _truncate(full, tmp_path / "cut.mp4", 0.4)
    with av.open(str(cut)) as c:
        assert c.duration == 5_000_000  # the container still says 5 s
    for req in (AUDIO, VIDEO):
        with pytest.raises(ItemError) as err:
            decode_media(Item("cut", cut), [req])
        msg = str(err.value)
        assert msg.startswith("media ends at ") and "s of a 5.00 s window (truncated" in msg, msg
        ends = float(msg.split()[3])
        assert 0.5 < ends < 3.0, msg
        assert msg.count(str(cut)) == 1 and "Errno" not in msg
    # before the truncation point nothing is lost
    a = decode_media(Item("cut", cut, 0.0, 1.0), [AUDIO, VIDEO])
    b = decode_media(Item("full", full, 0.0, 1.0), [AUDIO, VIDEO])
    np.testing.assert_array_equal(a.audio[RATE], b.audio[RATE])
    np.testing.assert_array_equal(a.frames_for(VIDEO), b.frames_for(VIDEO))


def test_truncated_mp4_with_index_last_is_named_truncated(tmp_path: Path) -> None:
    full = _clip(tmp_path / "full.mp4")
    with av.open(str(full)) as c:
        assert c.duration == 5_000_000
    assert mp4_truncation(full) is None
    cut = _truncate(full, tmp_path / "cut.mp4", 0.6)
    with pytest.raises(ItemError) as err:
        decode_media(Item("cut", cut), [AUDIO, VIDEO])
    msg = str(err.value)
    assert msg.startswith("truncated: the file ends at byte ") and "inside its 'mdat' box" in msg, msg
    assert msg.count(str(cut)) == 1 and "Errno" not in msg


@pytest.mark.parametrize("short", ["audio", "video"])
def test_stream_ending_early_padded_only_within_tolerance(tmp_path: Path, short: str) -> None:
    """One stream of an intact file ends before the other (and so before the
    container's duration): filled within PAD_TOLERANCE_S of the window's end,
    refused beyond it."""
    small = 0.1  # below the tolerance
    big = 0.8  # above it
    assert small < PAD_TOLERANCE_S < big
    kw = {"video_s": 5.0, "audio_s": 5.0}
    ok_clip = _clip(tmp_path / "ok.mp4", **{**kw, f"{short}_s": 5.0 - small})
    bad_clip = _clip(tmp_path / "bad.mp4", **{**kw, f"{short}_s": 5.0 - big})
    req = AUDIO if short == "audio" else MediaRequest(fps=FPS)
    media = decode_media(Item("ok", ok_clip, 0.0, 5.0), [req])
    if short == "audio":
        a = media.audio[RATE]
        assert a.size == 5 * RATE
        tail = a[-int(0.05 * RATE):]  # the last 50 ms lie beyond the stream: zeros
        assert np.all(tail == 0.0) and np.abs(a[: 4 * RATE]).max() > 0.1
    else:
        frames = media.frames_for(req)
        assert frames.shape[0] == 50
        np.testing.assert_array_equal(frames[-1], frames[-2])  # the last frame stays on screen
    with pytest.raises(ItemError, match=r"^media ends at 4\.\d\d s of a 5\.00 s window \(truncated\?\)"):
        decode_media(Item("bad", bad_clip, 0.0, 5.0), [req])
    # a window wholly within the shorter stream is fine
    decode_media(Item("bad", bad_clip, 1.0, 4.0), [req])


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("short", ["audio", "video"])
def test_whole_file_reads_each_stream_to_the_end_its_container_declares(tmp_path: Path, short: str,
                                                                      suffix: str) -> None:
    """A whole file (an item without a window, as the `files` dataset makes)
    whose one stream ends 0.8 s before the other, as a film's audio often
    outlasts its video: each stream is read to the end the container
    declares for it (MP4: the stream's duration; Matroska: its DURATION
    tag), not refused as truncated; the longer stream is read whole."""
    video_s, audio_s = (5.0, 4.2) if short == "audio" else (4.2, 5.0)
    clip = _clip(tmp_path / f"film{suffix}", video_s=video_s, audio_s=audio_s)
    req = MediaRequest(fps=FPS, audio_rate=RATE)
    media = decode_media(Item("film", clip), [req])
    a, frames = media.audio[RATE], media.frames_for(req)
    assert abs(a.size / RATE - audio_s) < 0.05 and abs(frames.shape[0] / FPS - video_s) < 0.15, (a.size, frames.shape)
    # the same as a window over each stream alone
    np.testing.assert_array_equal(frames, decode_media(Item("v", clip, 0.0, video_s), [MediaRequest(fps=FPS)])
                                  .frames_for(MediaRequest(fps=FPS))[: frames.shape[0]])
    np.testing.assert_array_equal(a[: int(4.0 * RATE)], decode_media(Item("a", clip, 0.0, 4.0), [AUDIO]).audio[RATE])
    # a window of the file (a dataset's segment) still needs every stream to its end
    with pytest.raises(ItemError, match=r"^media ends at 4\.\d\d s of a 5\.00 s window"):
        decode_media(Item("segment", clip, 0.0, 5.0), [req])


def test_window_message_gives_the_position_in_the_window(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "c.mp4", video_s=6.0, audio_s=3.6)
    with pytest.raises(ItemError, match=r"^media ends at 1\.6\d s of a 2\.00 s window from 2\.00 s \(truncated\?\)"):
        decode_media(Item("c", clip, 2.0, 4.0), [AUDIO])


# ---------------------------------------------------------------- channels


def _write_wav(path: Path, channels: np.ndarray, layout: str) -> Path:
    """Uncompressed 16-bit PCM: the channel mean is then exact."""
    with av.open(str(path), "w", format="wav") as out:
        s = out.add_stream("pcm_s16le", rate=RATE)
        s.layout = layout
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels, dtype=np.float32), format="fltp", layout=layout)
        fr.sample_rate = RATE
        fr.pts = 0
        fr.time_base = Fraction(1, RATE)
        for pk in s.encode(fr):
            out.mux(pk)
        for pk in s.encode(None):
            out.mux(pk)
    return path


@pytest.fixture(scope="module")
def audio_extractors():
    from aanbench.plugin_manager import get_plugins

    exs = [get_plugins().extractor(n) for n in ("logmel", "emobase2010")]
    for e in exs:
        e.load(None)
    return exs


def _features(path: Path, exs) -> dict[str, np.ndarray]:
    media = decode_media(Item(path.name, path), [e.needs for e in exs])
    return {e.name: e.extract([media])[0] for e in exs}


@pytest.mark.slow
def test_pcm_stereo_and_5_1_with_equal_channels_give_the_mono_features(tmp_path: Path, audio_extractors) -> None:
    x = _signal(3.0)
    mono = _write_wav(tmp_path / "mono.wav", x[None], "mono")
    stereo = _write_wav(tmp_path / "stereo.wav", np.repeat(x[None], 2, 0), "stereo")
    surround = _write_wav(tmp_path / "51.wav", np.repeat(x[None], 6, 0), "5.1")
    ref = decode_media(Item("m", mono), [AUDIO]).audio[RATE]
    for f in (stereo, surround):
        np.testing.assert_array_equal(decode_media(Item("s", f), [AUDIO]).audio[RATE], ref)
    want = _features(mono, audio_extractors)
    for f in (stereo, surround):
        got = _features(f, audio_extractors)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{f.name} {name}")


def test_channel_mean_leaves_out_lfe(tmp_path: Path) -> None:
    x = _signal(1.0)
    other = (0.5 * np.sin(2 * np.pi * 50 * np.arange(x.size) / RATE)).astype(np.float32)
    # 5.1 order: FL FR FC LFE BL BR; the LFE channel carries something else
    surround = _write_wav(tmp_path / "51.wav", np.stack([x, x, x, other, x, x]), "5.1")
    mono = _write_wav(tmp_path / "mono.wav", x[None], "mono")
    np.testing.assert_array_equal(decode_media(Item("s", surround), [AUDIO]).audio[RATE],
                                  decode_media(Item("m", mono), [AUDIO]).audio[RATE])
    # and different channels average
    stereo = _write_wav(tmp_path / "lr.wav", np.stack([x, np.zeros_like(x)]), "stereo")
    half = decode_media(Item("h", stereo), [AUDIO]).audio[RATE]
    np.testing.assert_array_equal(half, decode_media(Item("m", mono), [AUDIO]).audio[RATE] / 2)


@pytest.mark.slow
def test_aac_stereo_and_5_1_with_equal_channels_match_mono(tmp_path: Path, audio_extractors) -> None:
    """AAC is lossy and codes a mono and a multichannel file differently, so
    equality holds to the codec's noise: the decoded signals differ by under
    3% of their RMS (measured 1.4% stereo, under 1% 5.1) (libswresample's downmix gave 1.41x and 3.4x), level and
    spectrum features (logmel) agree to 1%, emobase2010's loudness to 1%."""
    x = _signal(4.0, lead_in=0.25)  # the encoder's first frames differ by layout: start in silence
    clips = {}
    for layout, n in (("mono", 1), ("stereo", 2), ("5.1", 6)):
        audio = x if n == 1 else np.repeat(x[None], n, 0)
        clips[layout] = write_clip(tmp_path / f"{n}.mp4", None, FPS, audio, RATE, layout=layout,
                                   audio_bit_rate=96000 * n)
    with av.open(str(clips["5.1"])) as c:
        assert c.streams.audio[0].codec_context.name == "aac" and c.streams.audio[0].channels == 6
    ref = decode_media(Item("m", clips["mono"]), [AUDIO]).audio[RATE]
    rms = float(np.sqrt(np.mean(ref**2)))
    want = _features(clips["mono"], audio_extractors)
    names = audio_extractors[1].feature_names()
    loud = names.index("pcm_loudness_sma_amean")
    for layout in ("stereo", "5.1"):
        got = decode_media(Item(layout, clips[layout]), [AUDIO]).audio[RATE]
        assert got.shape == ref.shape
        diff = float(np.sqrt(np.mean((got - ref) ** 2)))
        assert diff < 0.03 * rms, (layout, diff / rms)
        feats = _features(clips[layout], audio_extractors)
        np.testing.assert_allclose(feats["logmel"], want["logmel"], rtol=1e-2, atol=1e-2, err_msg=layout)
        assert feats["emobase2010"][loud] == pytest.approx(want["emobase2010"][loud], rel=1e-2), layout


# ---------------------------------------------------------------- a batch with bad files


def _bad_folder(tmp_path: Path) -> Path:
    d = tmp_path / "media"
    for i in range(3):
        write_clip(d / f"good{i}.mp4", _frames(3.0), FPS, _signal(3.0, seed=i), RATE)
    full_first = _clip(tmp_path / "ff.mp4", faststart=True)
    full_last = _clip(tmp_path / "fl.mp4")
    _truncate(full_first, d / "cut_index_first.mp4", 0.4)
    _truncate(full_last, d / "cut_index_last.mp4", 0.6)
    os.symlink(d / "gone.mp4", d / "dangling.mp4")
    (d / "notes.mp4").write_text("not a video\n" * 20)
    return d


def test_batch_reports_truncated_dangling_and_non_media_and_goes_on(tmp_path: Path) -> None:
    media = _bad_folder(tmp_path)
    store = tmp_path / "store"
    r = run_cli("extract", "files", "--root", media, "--store", store, "-e", "affect,logmel",
                "--chunk-rows", "2", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    arrays = {a["extractor"]: a for a in doc["arrays"]}
    assert all(a["items"] == 7 and a["ok"] == 3 and a["failed"] == 4 for a in arrays.values()), arrays
    reasons: dict[str, set[str]] = {}
    for f in doc["failures"]:
        reasons.setdefault(f["item_id"], set()).add(f["reason"])
    assert set(reasons) == {"cut_index_first.mp4", "cut_index_last.mp4", "dangling.mp4", "notes.mp4"}
    for first in reasons["cut_index_first.mp4"]:  # video and audio may end at different times
        assert first.startswith("media ends at ") and "of a 5.00 s window (truncated" in first
    (last,) = reasons["cut_index_last.mp4"]
    assert last.startswith("truncated: the file ends at byte ")
    (dangling,) = reasons["dangling.mp4"]
    assert dangling.startswith("broken symbolic link (its target ") and "gone.mp4 does not exist" in dangling
    (notes,) = reasons["notes.mp4"]
    assert notes.startswith("not a media file (")
    for item, rs in reasons.items():
        for reason in rs:
            assert "Errno" not in reason and reason.count(item) == 1, reason


def _no_read_runner() -> list[str] | None:
    """A prefix that runs a command without the power to read a mode-000
    file: none needed for an ordinary user; for root, setpriv dropping
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH; None when neither works."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_unreadable_file_is_a_failed_item_saying_permission_denied(tmp_path: Path) -> None:
    prefix = _no_read_runner()
    if prefix is None:
        pytest.skip("running as root without setpriv: a mode-000 file stays readable, so no real denial to test")
    media = tmp_path / "media"
    write_clip(media / "good.mp4", _frames(2.0), FPS, _signal(2.0), RATE)
    locked = write_clip(media / "locked.mp4", _frames(2.0), FPS, _signal(2.0), RATE)
    locked.chmod(0)
    try:
        store = tmp_path / "store"
        # a fresh process: it runs without the power to read the mode-000 file
        r = subprocess.run([*prefix, *AANBENCH, "extract", "files", "--root", str(media), "--store", str(store),
                            "-e", "logmel", "--json"], capture_output=True, text=True,
                           env=dict(os.environ, COLUMNS="200"), timeout=300)
        assert r.returncode == 1, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert [(f["item_id"], f["reason"]) for f in doc["failures"]] == [
            ("locked.mp4", f"permission denied (cannot read the file): {locked}")]
        assert doc["arrays"][0]["ok"] == 1
    finally:
        locked.chmod(0o644)


# ---------------------------------------------------------------- errors Python cannot raise


class _CallbackExtractor:
    """An extractor whose work runs through a real C library callback (libc's
    qsort calling a Python comparator through ctypes), as openSMILE's sink
    does; ``fail_with`` is raised inside the callback for the item whose
    audio starts with ``fail_on``."""

    name = "callback"
    dim = 2

    def __init__(self, fail_with: type[BaseException] | None, fail_on: float = -1.0) -> None:
        self.fail_with = fail_with
        self.fail_on = fail_on

    def extract(self, batch):
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        cmp_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double))
        out = []
        for m in batch:
            x = m.audio[RATE]
            fail = self.fail_with is not None and float(x[0]) == self.fail_on

            def compare(a, b):
                if fail:
                    raise self.fail_with("raised inside the callback")
                return (a[0] > b[0]) - (a[0] < b[0])

            arr = (ctypes.c_double * 4)(*[float(v) for v in x[:4]])
            libc.qsort(arr, 4, ctypes.sizeof(ctypes.c_double), cmp_t(compare))
            out.append([arr[0], arr[3]])  # min and max, if the sort was not cut short
        return np.asarray(out, dtype=np.float32)


def _items(values: list[float]):
    from aanbench.contracts import Media

    return [Media(item=Item(f"i{k}", None), duration=1.0,
                  audio={RATE: np.array([v, 3.0, -2.0, 1.0], dtype=np.float32)}) for k, v in enumerate(values)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Python's report, passed on
def test_error_inside_a_c_callback_fails_that_item_only() -> None:
    from aanbench.extraction_job import _catch_unraisable, _run_extractor

    ex = _CallbackExtractor(ValueError, fail_on=7.0)
    with _catch_unraisable() as seen:
        values, reasons = _run_extractor(ex, _items([5.0, 7.0, 9.0]), batch_size=3, unraisable=seen)
    assert reasons[0] == reasons[2] == ""
    assert reasons[1] == ("RuntimeError: error inside callback that Python could not raise: "
                          "ValueError: raised inside the callback")
    np.testing.assert_array_equal(values[[0, 2]], [[-2.0, 5.0], [-2.0, 9.0]])
    assert np.isnan(values[1]).all()


def test_interrupt_inside_a_c_callback_stops_the_chunk() -> None:
    from aanbench.extraction_job import ExtractionInterrupted, _INTERRUPT, _catch_unraisable, _run_extractor

    ex = _CallbackExtractor(KeyboardInterrupt, fail_on=7.0)
    try:
        with _catch_unraisable() as seen, pytest.raises(ExtractionInterrupted):
            _run_extractor(ex, _items([5.0, 7.0, 9.0]), batch_size=1, unraisable=seen)
        assert seen.errors and set(seen.errors) == {"KeyboardInterrupt: raised inside the callback"}
    finally:
        _INTERRUPT.requested = False


def test_a_plugin_bug_is_reported_with_its_file_and_line():
    """An unexpected exception in an extractor (not an ItemError) is a bug
    in that plugin: the item's reason names the exception and where it was
    raised, so the report points at the code to fix."""
    from aanbench.contracts import ItemError
    from aanbench.extraction_job import _reason

    def buggy_extract():
        return {}["missing key"]

    try:
        buggy_extract()
    except KeyError as exc:
        reason = _reason(exc)
    assert reason.startswith("KeyError: 'missing key' (at ")
    assert "test_extract_robust.py:" in reason and "buggy_extract" in reason
    assert _reason(ItemError("not a media file: x.txt")) == "not a media file: x.txt"
