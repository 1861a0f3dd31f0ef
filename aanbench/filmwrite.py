"""Films from clips: join media files into one MP4 with PyAV (tests,
benchmarks and ``aanbench demo``'s emotion curve of the test movies)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from aanbench.contracts import AanbenchError


def write_film(path: str | Path, sources: Iterable[str | Path], *, fps: float = 25.0, rate: int = 16000,
               size: tuple[int, int] | None = None, crf: int = 23,
               spans: list[tuple[float, float]] | None = None) -> Path:
    """Join media files into one MP4 (H.264 + AAC mono), decoding and encoding
    them one after another, so memory does not grow with the film's length.

    Every source must have video and audio; frames are re-timed at ``fps``
    (a source at another rate is not resampled: its frames are taken one
    by one) and scaled to ``size`` (width, height; default: the first
    source's); audio is resampled to mono ``rate`` Hz. ``spans``, when
    given, gets each source's ``(start, end)`` in the film (seconds).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".part")
    n_frames = 0
    n_samples = 0
    pending = np.zeros(0, np.float32)
    AAC = 1024
    with av.open(str(tmp), mode="w", format="mp4") as out:
        vs = None
        as_ = out.add_stream("aac", rate=rate)
        as_.layout = "mono"
        as_.thread_count = 1

        def push_audio(block: np.ndarray) -> None:
            nonlocal n_samples
            af = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="fltp", layout="mono")
            af.sample_rate = rate
            af.pts = n_samples
            af.time_base = Fraction(1, rate)
            n_samples += block.size
            for pkt in as_.encode(af):
                out.mux(pkt)

        for src in sources:
            first_frame = n_frames
            with av.open(str(src)) as inp:
                if not inp.streams.video or not inp.streams.audio:
                    raise AanbenchError(f"{src}: a film source needs video and audio")
                for frame in inp.decode(inp.streams.video[0]):
                    if vs is None:
                        w, h = size or (frame.width, frame.height)
                        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                        vs.width, vs.height = w - w % 2, h - h % 2
                        vs.pix_fmt = "yuv420p"
                        vs.thread_count = 1
                        vs.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
                    img = frame.to_ndarray(format="rgb24", width=vs.width, height=vs.height)
                    vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                    vf.pts = n_frames
                    n_frames += 1
                    for pkt in vs.encode(vf):
                        out.mux(pkt)
            with av.open(str(src)) as inp:
                rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
                chunks = [pending]
                for frame in inp.decode(inp.streams.audio[0]):
                    chunks.extend(rf.to_ndarray().reshape(-1) for rf in rs.resample(frame))
                chunks.extend(rf.to_ndarray().reshape(-1) for rf in rs.resample(None))
                sig = np.concatenate(chunks).astype(np.float32)
                # keep audio aligned with the video: this source's audio lasts as long as its frames
                target = int(round(n_frames / fps * rate)) - n_samples
                sig = sig[:target] if sig.size >= target else np.pad(sig, (0, target - sig.size))
                whole = (sig.size // AAC) * AAC
                for off in range(0, whole, AAC):
                    push_audio(np.ascontiguousarray(sig[off:off + AAC]))
                pending = sig[whole:]
            if spans is not None:
                spans.append((first_frame / fps, n_frames / fps))
        if vs is None:
            raise AanbenchError("write_film: no sources")
        if pending.size:
            push_audio(np.ascontiguousarray(pending))
        for pkt in vs.encode(None):
            out.mux(pkt)
        for pkt in as_.encode(None):
            out.mux(pkt)
    tmp.replace(path)
    return path
