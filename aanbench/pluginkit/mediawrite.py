"""Writing real media files with PyAV (H.264 video + AAC audio in MP4).

Used by the demo dataset and by test fixtures that must look like the
official datasets' files.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_FRAME = 1024  # samples per AAC frame


def write_clip(
    path: str | Path,
    frames: np.ndarray | None,
    fps: float,
    audio: np.ndarray | None = None,
    rate: int = 16000,
    crf: int = 23,
    layout: str = "mono",
    faststart: bool = False,
    audio_bit_rate: int | None = None,
    rotation: int = 0,
) -> Path:
    """Write ``frames`` (``uint8 (T, H, W, 3)`` RGB, even H and W) at ``fps``
    and ``audio`` (``float32`` in [-1, 1]: ``(n,)`` mono, or
    ``(channels, n)`` in the channel order of ``layout``, e.g. ``"stereo"``,
    ``"5.1"``) at ``rate`` Hz.

    Either may be ``None`` (a video-only or audio-only file). Single-threaded
    encoding without x264's macroblock tree, so the same arrays give the same
    file with one FFmpeg build. ``audio_bit_rate``: AAC bits per second for
    all channels together (FFmpeg's default when ``None``). ``faststart``: the index (``moov`` box)
    before the media data, as files made for streaming have it; by default
    it follows the data. ``rotation``: counter-clockwise degrees by which the
    stream's display matrix tells a player to turn the frames (as a phone
    records footage shot upright); the frames are stored as given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format="mp4", options=options) as out:
        vs = as_ = None
        if frames is not None:
            t, h, w, _ = frames.shape
            vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vs.width, vs.height = w, h
            vs.pix_fmt = "yuv420p"
            vs.thread_count = 1
            # mbtree off: with it, x264 re-encoding the same frames in one process
            # gave different streams (measured); without it the output repeats.
            vs.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
            if rotation:
                vs.set_display_rotation(rotation)
        if audio is not None:
            as_ = out.add_stream("aac", rate=rate)
            as_.layout = layout
            as_.thread_count = 1
            if audio_bit_rate:
                as_.bit_rate = int(audio_bit_rate)
        if vs is not None:
            for i in range(frames.shape[0]):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
                vf.pts = i
                for pkt in vs.encode(vf):
                    out.mux(pkt)
            for pkt in vs.encode(None):
                out.mux(pkt)
        if as_ is not None:
            sig = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
            sig = sig.reshape(1, -1) if sig.ndim == 1 else sig
            if sig.shape[0] != as_.layout.nb_channels:
                raise ValueError(f"audio has {sig.shape[0]} channels, layout {layout!r} has {as_.layout.nb_channels}")
            for off in range(0, sig.shape[1], AUDIO_FRAME):
                block = np.ascontiguousarray(sig[:, off : off + AUDIO_FRAME])
                af = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
                af.sample_rate = rate
                af.pts = off
                af.time_base = Fraction(1, rate)
                for pkt in as_.encode(af):
                    out.mux(pkt)
            for pkt in as_.encode(None):
                out.mux(pkt)
    return path


def remux_faststart(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` (MP4) to ``dst`` with its index (``moov``) before the
    data, packets unchanged: a file that stays readable when cut short, as a
    truncated download or copy is."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for pkt in inp.demux():
            if pkt.dts is None:  # the demuxer's flush packets
                continue
            pkt.stream = streams[pkt.stream.index]
            out.mux(pkt)
    return Path(dst)


def write_song_with_cover(path: str | Path, audio: np.ndarray, rate: int, cover: np.ndarray) -> Path:
    """An MP3 of mono ``audio`` (``float32`` in [-1, 1]) with ``cover``
    (``uint8 (H, W, 3)`` RGB, even H and W) as its album cover: a JPEG
    picture stream with the ``attached_pic`` disposition, as music files
    carry their cover art."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.asarray(audio, dtype=np.float32).reshape(1, -1)
    with av.open(str(path), mode="w", format="mp3") as out:
        a = out.add_stream("libmp3lame", rate=rate)
        a.layout = "mono"
        v = out.add_stream("mjpeg")
        v.width, v.height, v.pix_fmt = cover.shape[1], cover.shape[0], "yuvj420p"
        v.disposition = av.stream.Disposition.attached_pic
        for packet in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(cover), format="rgb24")):
            out.mux(packet)
        for packet in v.encode(None):
            out.mux(packet)
        step = a.frame_size or 1152
        for k in range(0, x.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, k:k + step]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, k
            for packet in a.encode(frame):
                out.mux(packet)
        for packet in a.encode(None):
            out.mux(packet)
    return path
