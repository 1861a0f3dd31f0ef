"""The `files` dataset's windows and the one-pass decoding of a film's windows."""

from __future__ import annotations

import os
from pathlib import Path

import av

import numpy as np
import pytest

from aanbench.contracts import AanbenchError, ItemError, MediaRequest
from aanbench.filmdecode import close_reader, decode_item, film_windows, probe_duration
from aanbench.media import decode_media
from aanbench.pluginkit.mediawrite import remux_faststart, write_clip
from aanbench.plugin_manager import get_plugins

FPS = 25
RATE = 16000


def _film(path: Path, seconds: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    # each second has its own flat colour plus a moving bar: frames differ over time
    frames = np.zeros((n, 64, 80, 3), np.uint8)
    colours = rng.integers(0, 255, size=(int(np.ceil(seconds)) + 1, 3))
    for i in range(n):
        frames[i] = colours[i // FPS]
        x = (i * 3) % 80
        frames[i, :, x : x + 4] = 255
    t = np.arange(int(seconds * RATE)) / RATE
    audio = (0.3 * np.sin(2 * np.pi * (220 + 40 * np.floor(t)) * t)).astype(np.float32)
    return write_clip(path, frames, FPS, audio, RATE)


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    return _film(tmp_path_factory.mktemp("film") / "film.mp4", 23.0)


def test_windows_cover_the_film_and_keep_a_tail_of_at_least_half_a_window():
    assert film_windows(23.0, 5, 5) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23.0)]
    assert film_windows(22.0, 5, 5) == [(0, 5), (5, 10), (10, 15), (15, 20)]  # 2 s tail < 2.5 s: dropped
    assert film_windows(22.5, 5, 5)[-1] == (20, 22.5)  # exactly half a window: kept
    assert film_windows(12.0, 5, 2.5) == [(0, 5), (2.5, 7.5), (5, 10), (7.5, 12.0)]
    assert film_windows(2.0, 5, 5) == [(0, 2.0)]  # shorter than a window: one window, the whole film
    assert film_windows(0.04, 5, 2.5) == [(0, 0.04)] and film_windows(0.0, 5, 5) == []
    with pytest.raises(AanbenchError):
        film_windows(10, 0, 5)


def test_files_window_option_makes_one_item_per_window(film, tmp_path):
    ds = get_plugins().dataset("files").configure(window="5", hop="5")
    items = ds.items(film.parent)
    assert [it.id for it in items] == ["film.mp4@0-5", "film.mp4@5-10", "film.mp4@10-15", "film.mp4@15-20",
                                       "film.mp4@20-23"]
    assert [(it.start, it.end) for it in items] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23.0)]
    assert {it.group for it in items} == {"film.mp4"}
    assert ds.segmentation == "window5-hop5" and ds.config() == {"window": 5.0, "hop": 5.0}
    # a single file as the root works too
    assert [it.id for it in ds.items(film)] == [it.id for it in items]
    # without options: one whole-file item, as before
    plain = get_plugins().dataset("files").items(film.parent)
    assert [(it.id, it.start, it.end) for it in plain] == [("film.mp4", None, None)]
    with pytest.raises(AanbenchError, match="unknown option"):
        get_plugins().dataset("files").configure(windows=5)
    with pytest.raises(AanbenchError, match="positive"):
        get_plugins().dataset("files").configure(window=-1)


def test_unreadable_file_stays_one_item_that_fails_with_its_reason(film, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a film at all" * 100)
    with pytest.raises(ItemError):
        probe_duration(bad)
    ds = get_plugins().dataset("files").configure(window=5)
    items = ds.items(bad)
    assert [(it.id, it.start, it.end) for it in items] == [("broken.mp4", None, None)]


def _straight_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        out = [rf.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0]) for rf in rs.resample(f)]
        out += [rf.to_ndarray().reshape(-1) for rf in rs.resample(None)]
    return np.concatenate(out)


def test_sequential_windows_equal_per_window_decoding(film):
    ds = get_plugins().dataset("files").configure(window=5, hop=5)
    items = ds.items(film)
    reqs = [MediaRequest(fps=8.0, short_side=32), MediaRequest(frames=4, short_side=48, crop=48),
            MediaRequest(audio_rate=RATE)]
    close_reader()
    seq = [decode_item(it, reqs) for it in items]
    full = _straight_audio(film)
    for it, m in zip(items, seq):
        ref = decode_media(it, reqs)
        for key, frames in ref.video.items():
            assert np.array_equal(m.video[key], frames), (it.id, key)  # the same frames, bit for bit
        a = m.audio[RATE]
        assert a.shape == ref.audio[RATE].shape
        # the audio is the straight decode's slice (decode_media's seek adds AAC restart glitches)
        s0 = int(round(it.start * RATE))
        expect = full[s0 : s0 + a.size]
        assert np.array_equal(a[: expect.size], expect)


def test_sequential_reader_reads_forward_without_reopening(film, monkeypatch):
    import aanbench.filmdecode as fd

    items = get_plugins().dataset("files").configure(window=5, hop=5).items(film)
    opened = []
    real_open = fd._open
    monkeypatch.setattr(fd, "_open", lambda p: opened.append(p) or real_open(p))  # counts real opens
    reqs = [MediaRequest(fps=8.0, short_side=32), MediaRequest(audio_rate=RATE)]
    close_reader()
    for it in items:
        decode_item(it, reqs)
    assert len(opened) == 1  # one open for the whole film
    back = decode_item(items[1], reqs)  # going back seeks in the open file
    ref = decode_media(items[1], reqs)
    assert np.array_equal(back.video[reqs[0].video_key()], ref.video[reqs[0].video_key()])
    assert len(opened) == 1
    close_reader()


def test_truncated_film_fails_only_the_windows_after_its_data(tmp_path):
    # a film written with its index first (faststart), then cut: readable, data ends early
    src = _film(tmp_path / "whole.mp4", 20.0)
    fast = remux_faststart(src, tmp_path / "fast.mp4")
    cut = tmp_path / "cut.mp4"
    data = fast.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.55)])
    items = get_plugins().dataset("files").configure(window=5).items(cut)
    assert len(items) == 4  # the header still says 20 s
    reqs = [MediaRequest(fps=8.0, short_side=32), MediaRequest(audio_rate=RATE)]
    close_reader()
    ok, failed = [], []
    for it in items:
        try:
            decode_item(it, reqs)
            ok.append(it.id)
        except ItemError as exc:
            failed.append((it.id, str(exc)))
    assert ok and failed, (ok, failed)
    assert ok[0] == "cut.mp4@0-5"
    assert all("media ends at" in why for _, why in failed), failed


def test_overlapping_windows_seek_back_in_the_open_file(film, monkeypatch):
    import aanbench.filmdecode as fd

    ds = get_plugins().dataset("files").configure(window=5, hop=2.5)
    items = ds.items(film)
    assert [it.id for it in items][:3] == ["film.mp4@0-5", "film.mp4@2.5-7.5", "film.mp4@5-10"]
    assert ds.segmentation == "window5-hop2.5"
    reqs = [MediaRequest(fps=8.0, short_side=32), MediaRequest(audio_rate=RATE)]
    opened = []
    real_open = fd._open
    monkeypatch.setattr(fd, "_open", lambda p: opened.append(p) or real_open(p))  # counts real opens
    close_reader()
    seq = [decode_item(it, reqs) for it in items]
    assert len(opened) == 1
    full = _straight_audio(film)
    for it, m in zip(items, seq):
        ref = decode_media(it, reqs)
        for key, frames in ref.video.items():
            assert np.array_equal(m.video[key], frames), (it.id, key)
        a = m.audio[RATE]
        s0 = int(round(it.start * RATE))
        expect = full[s0 : s0 + a.size]
        # after a seek the AAC decoder restarts: allow its glitch within the 1 s pre-roll only
        assert np.abs(a[: expect.size] - expect).max() < 1e-4, it.id
    close_reader()


def _longer_audio(path: Path, video_s: float, audio_s: float) -> Path:
    frames = np.zeros((int(round(video_s * FPS)), 64, 80, 3), np.uint8)
    frames[:, :, :40] = 200
    t = np.arange(int(round(audio_s * RATE))) / RATE
    return write_clip(path, frames, FPS, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), RATE)


def test_streams_option_plans_windows_on_what_every_stream_covers(tmp_path):
    """Audio outlasting video by 0.35 s (as in many real films): with the
    video needed, no window runs past the last frame; each window decodes."""
    from aanbench.filmdecode import stream_durations

    film = _longer_audio(tmp_path / "f.mp4", 5.0, 5.35)
    lengths = stream_durations(film)
    assert lengths["video"] == pytest.approx(5.0, abs=0.01) and lengths["audio"] == pytest.approx(5.35, abs=0.01)
    files = get_plugins().dataset("files")
    plain = files.configure(window=2)
    both = files.configure(window=2, streams="video+audio")
    audio = files.configure(window=2, streams="audio")
    assert [(it.start, it.end) for it in plain.items(film)][-1] == (4.0, 5.35)  # the container's length
    assert [(it.start, it.end) for it in both.items(film)] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
    assert [(it.start, it.end) for it in audio.items(film)][-1] == (4.0, 5.35)
    assert both.config() == {"window": 2.0, "hop": 2.0, "streams": "video+audio"}
    req = MediaRequest(frames=4, short_side=32, audio_rate=RATE)
    close_reader()
    media = [decode_item(it, [req]) for it in both.items(film)]
    assert media[-1].frames_for(req).shape[0] == 4 and media[-1].audio_for(req).size == RATE
    close_reader()
    with pytest.raises(ItemError, match="media ends at"):  # what the container's length gave before
        for it in plain.items(film):
            decode_item(it, [req])
    close_reader()
    with pytest.raises(AanbenchError, match="streams"):
        files.configure(window=2, streams="subtitles")


def test_stream_lengths_without_header_durations_come_from_the_packets(tmp_path):
    """Matroska keeps no per-stream duration: the packets give it."""
    from aanbench.filmdecode import stream_durations

    src = _longer_audio(tmp_path / "f.mp4", 4.0, 4.35)
    mkv = tmp_path / "f.mkv"
    with av.open(str(src)) as inp, av.open(str(mkv), "w", format="matroska") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    with av.open(str(mkv)) as c:
        assert all(s.duration is None for s in c.streams)  # nothing in the header
    lengths = stream_durations(mkv)  # on the file's clock: Matroska shifts both by the AAC priming (64 ms)
    assert 4.0 <= lengths["video"] <= 4.1 and lengths["audio"] - lengths["video"] == pytest.approx(0.35, abs=0.01)
    assert probe_duration(mkv, ["video", "audio"]) == pytest.approx(lengths["video"])

    # read once per process; a file written again (another length) is read again
    from aanbench import filmdecode

    demuxed = []
    real = filmdecode._packet_ends
    try:
        filmdecode._packet_ends = lambda *a, **k: demuxed.append(1) or real(*a, **k)
        assert stream_durations(mkv) == lengths and probe_duration(mkv, ["video", "audio"]) == pytest.approx(lengths["video"])
        assert demuxed == []
        mkv.write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])  # cut: its packets end earlier
        os.utime(mkv, ns=(1, 1))
        assert stream_durations(mkv)["video"] < lengths["video"] - 1 and demuxed == [1]
    finally:
        filmdecode._packet_ends = real


def test_cover_art_is_not_footage(tmp_path):
    """An MP3's album cover is a one-picture video stream (FFmpeg's
    attached_pic): not a video stream to window, decode or check."""
    from aanbench.filmdecode import stream_durations
    from aanbench.pluginkit.datacheck import probe_media
    from aanbench.pluginkit.mediawrite import write_song_with_cover

    t = np.arange(RATE * 6) / RATE
    song = write_song_with_cover(tmp_path / "song.mp3", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), RATE,
                                 np.full((64, 80, 3), 120, np.uint8))
    with av.open(str(song)) as c:
        assert [s.type for s in c.streams] == ["audio", "video"]  # the picture is there
    assert set(stream_durations(song)) == {"audio"}
    req = MediaRequest(frames=4, short_side=32, audio_rate=RATE)
    whole = get_plugins().dataset("files").items(song)
    windows = get_plugins().dataset("files").configure(window=2).items(song)
    for decode in (lambda it: decode_media(it, [req]), lambda it: decode_item(it, [req])):
        for item in (whole[0], windows[0]):
            with pytest.raises(ItemError, match="no video stream .its only picture is a still, the cover art."):
                decode(item)
            close_reader()
    audio_only = MediaRequest(audio_rate=RATE)
    assert decode_item(windows[0], [audio_only]).audio_for(audio_only).size == 2 * RATE
    close_reader()
    probe = probe_media(song, need_video=True)
    assert probe.error == "no video stream" and probe.has_audio
