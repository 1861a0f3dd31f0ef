"""Media decoding with PyAV: each item is decoded once for every extractor
of a run.

``decode_media(item, requests)`` reads the item's ``[start, end)`` window
and serves every request at once: frames sampled at the requested times
(``uint8 (T, H, W, 3)`` RGB, resized with PIL's antialiased bilinear and
centre-cropped as torchvision does) and audio
as mono ``float32`` at each requested rate. Problems that belong to the
item (missing file, zero bytes, corrupt data, no audio stream, window
outside the file) raise :class:`aanbench.contracts.ItemError` with a
readable reason.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from aanbench.contracts import Item, ItemError, Media, MediaRequest

# How far a window may run past the end of the file (containers round
# their durations) before the item is refused.
END_TOLERANCE_S = 0.5


def sample_times(request: MediaRequest, start: float, duration: float) -> np.ndarray:
    """Times (seconds) at which ``request`` samples frames in ``[start, start+duration)``.

    ``frames=T``: the centres of T equal bins. ``fps=F``: ``start + (i + 0.5) / F``.
    """
    n = request.frame_count(duration)
    if n <= 0:
        return np.zeros(0)
    if request.frames > 0:
        step = duration / n
    else:
        step = 1.0 / float(request.fps)  # type: ignore[arg-type]
    return start + (np.arange(n) + 0.5) * step


def _open(path: Path | None):
    if path is None:
        raise ItemError("item has no media file")
    p = Path(path)
    if not p.exists():
        raise ItemError(f"file not found: {p}")
    if p.is_dir():
        raise ItemError(f"is a directory, not a media file: {p}")
    if p.stat().st_size == 0:
        raise ItemError(f"empty file (0 bytes): {p}")
    try:
        return av.open(str(p))
    except Exception as exc:  # PyAV raises several error types for bad data
        raise ItemError(f"cannot open media ({_short(exc)}): {p}") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def media_duration(container) -> float:
    """Duration of the container in seconds (0.0 if unknown)."""
    if container.duration is not None:
        return float(container.duration) / 1_000_000.0
    best = 0.0
    for s in container.streams:
        if s.duration is not None and s.time_base is not None:
            best = max(best, float(s.duration * s.time_base))
    return best


def decode_media(item: Item, requests: Sequence[MediaRequest]) -> Media:
    """Decode ``item``'s window once for all ``requests``."""
    container = _open(item.path)
    try:
        duration = media_duration(container)
        start = float(item.start or 0.0)
        end = float(item.end) if item.end is not None else duration
        if duration > 0 and end > duration + END_TOLERANCE_S:
            raise ItemError(f"window [{start:.2f}, {end:.2f}) s ends after the file's end ({duration:.2f} s): {item.path}")
        if duration > 0:
            end = min(end, duration)
        if end <= start:
            raise ItemError(f"empty window [{start:.2f}, {end:.2f}) s (file lasts {duration:.2f} s): {item.path}")
        media = Media(item=item, duration=end - start)

        video_reqs = {r.video_key(): r for r in requests if r.wants_video}
        audio_rates = sorted({r.audio_rate for r in requests if r.wants_audio})  # type: ignore[type-var]
        try:
            if video_reqs:
                if not container.streams.video:
                    raise ItemError(f"no video stream: {item.path}")
                _decode_video(container, media, list(video_reqs.values()), start, end)
            for rate in audio_rates:
                if not container.streams.audio:
                    raise ItemError(f"no audio stream: {item.path}")
                media.audio[rate] = _decode_audio(container, rate, start, end, item.path)
        except ItemError:
            raise
        except Exception as exc:
            raise ItemError(f"cannot decode ({_short(exc)}): {item.path}") from None
        return media
    finally:
        container.close()


def _target_size(w: int, h: int, short_side: int | None) -> tuple[int, int]:
    """Output ``(width, height)`` with the shorter side ``short_side``, the
    longer side truncated as torchvision's ``Resize(int)`` computes it."""
    if not short_side:
        return w, h
    if w <= h:
        return short_side, max(1, int(short_side * h / w))
    return max(1, int(short_side * w / h)), short_side


def _resized_rgb(frame, size: tuple[int, int]) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB of ``frame`` at ``size`` (width, height).

    Colour conversion at the native size, then PIL's antialiased bilinear
    resize: what ``torchvision.transforms.Resize`` does to a PIL image and
    what the AttendAffectNet authors' scripts used. swscale's bilinear
    (``frame.to_ndarray(width=..., height=...)``) differs from it by 1-3/255
    on average when shrinking, so it is not used for resizing.
    """
    if (frame.width, frame.height) == tuple(size):
        return frame.to_ndarray(format="rgb24")
    from PIL import Image

    img = frame.to_image()  # RGB at the native size
    return np.asarray(img.resize(tuple(size), Image.BILINEAR))


def _centre_crop(img: np.ndarray, crop: int | None) -> np.ndarray:
    """Centre ``crop`` x ``crop`` with torchvision's ``center_crop`` offsets."""
    if not crop:
        return img
    h, w = img.shape[:2]
    if h < crop or w < crop:
        raise ItemError(f"frame {w}x{h} is smaller than the crop {crop}")
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return img[top : top + crop, left : left + crop]


def _decode_video(container, media: Media, reqs: list[MediaRequest], start: float, end: float) -> None:
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    native_fps = float(stream.average_rate) if stream.average_rate else None
    media.native_fps = native_fps
    duration = end - start

    # (time, request index, slot) for every frame any request wants, in time order.
    wanted: list[tuple[float, int, int]] = []
    for ri, req in enumerate(reqs):
        for slot, t in enumerate(sample_times(req, start, duration)):
            wanted.append((float(t), ri, slot))
    wanted.sort()
    out: list[list[np.ndarray | None]] = [[None] * req.frame_count(duration) for req in reqs]
    cache: dict[tuple[int, tuple[int, int]], np.ndarray] = {}

    def take(frame, frame_no: int, ri: int, slot: int) -> None:
        req = reqs[ri]
        size = _target_size(frame.width, frame.height, req.short_side)
        key = (frame_no, size)
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[key] = _resized_rgb(frame, size)
        out[ri][slot] = _centre_crop(cache[key], req.crop)

    # Always seek: another stream of this container may have been read already.
    container.seek(int(max(0.0, start - 1.0) / stream.time_base), stream=stream, backward=True, any_frame=False)
    wi = 0
    prev = None
    prev_no = -1
    frame_no = 0
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        t = float(frame.pts * stream.time_base)
        # every wanted time before this frame's time is shown by the previous frame
        while wi < len(wanted) and wanted[wi][0] < t:
            if prev is not None:
                take(prev, prev_no, wanted[wi][1], wanted[wi][2])
            else:
                take(frame, frame_no, wanted[wi][1], wanted[wi][2])
            wi += 1
        prev, prev_no = frame, frame_no
        frame_no += 1
        if wi >= len(wanted):
            break
    if prev is None:
        raise ItemError(f"no decodable video frames in [{start:.2f}, {end:.2f}) s: {media.item.path}")
    while wi < len(wanted):  # times after the last frame: the last frame is still on screen
        take(prev, prev_no, wanted[wi][1], wanted[wi][2])
        wi += 1
    for req, frames in zip(reqs, out):
        media.video[req.video_key()] = np.stack(frames).astype(np.uint8, copy=False)


def _decode_audio(container, rate: int, start: float, end: float, path) -> np.ndarray:
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    # Always seek: decoding the video stream has consumed the packets.
    container.seek(int(max(0.0, start - 1.0) / stream.time_base), stream=stream, backward=True)
    chunks: list[np.ndarray] = []
    first_time: float | None = None
    for frame in container.decode(stream):
        if first_time is None:
            first_time = float(frame.pts * stream.time_base) if frame.pts is not None else 0.0
        for rf in resampler.resample(frame):
            chunks.append(rf.to_ndarray().reshape(-1))
        if frame.pts is not None and float(frame.pts * stream.time_base) >= end:
            break
    for rf in resampler.resample(None):
        chunks.append(rf.to_ndarray().reshape(-1))
    if not chunks:
        raise ItemError(f"no decodable audio in [{start:.2f}, {end:.2f}) s: {path}")
    signal = np.concatenate(chunks).astype(np.float32, copy=False)
    t0 = first_time or 0.0
    i0 = max(0, int(round((start - t0) * rate)))
    i1 = int(round((end - t0) * rate))
    piece = signal[i0:i1]
    want = int(round((end - start) * rate))
    if piece.size < want:  # the stream ends a little before the container says
        piece = np.pad(piece, (0, want - piece.size))
    return np.ascontiguousarray(piece[:want])
