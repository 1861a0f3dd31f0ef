"""Media decoding with PyAV: each item is decoded once for every extractor
of a run.

``decode_media(item, requests)`` reads the item's ``[start, end)`` window
and serves every request at once: frames sampled at the requested times
(``uint8 (T, H, W, 3)`` RGB, resized with PIL's antialiased bilinear and
centre-cropped as torchvision does) and audio as mono ``float32`` at each
requested rate. Problems that belong to the item raise
:class:`aanbench.contracts.ItemError` with a readable reason and the path
once: missing file, broken symbolic link, permission denied, not a regular
file, zero bytes, not a media file, truncated file, corrupt data, no audio
or video stream, window outside the file.

Audio channels
    Mono is the mean of the full-range channels, as the official VGGish
    input code averages channels (``np.mean`` over channels). Low-frequency
    effects channels (LFE) are left out of the mean: encoders band-limit
    them (FFmpeg's AAC encoder keeps about 1% of a 440 Hz tone's level), so
    with them a 5.1 film's dialogue would be scaled by 5/6. (Not
    libswresample's mono downmix: it sums, giving sqrt(2) x the channel mean
    for stereo and about 3.4 x for 5.1, which clips loud films.)

Where a stream ends early
    A container may say it lasts longer than a stream's data does (streams
    of one file end a few milliseconds apart; a truncated file's index still
    claims the full duration). Within ``PAD_TOLERANCE_S`` (0.25 s) of the
    window's end the gap is filled (audio with zeros, video by the last frame,
    still on screen); a larger gap fails the item: "media ends at 1.60 s of a
    5.00 s window (truncated?)". Data FFmpeg cannot decode at the end of a
    stream (the partial last packet of a truncated file) counts as its end.
    Audio that starts after the window's start is aligned with zeros before
    it (what a player gives).
"""

from __future__ import annotations

import math
import os
import stat
import struct
from pathlib import Path
from typing import Any, Sequence

import av
import numpy as np

from aanbench.contracts import Item, ItemError, Media, MediaRequest

# How far a window may run past the end of the file (containers round
# their durations) before the item is refused.
END_TOLERANCE_S = 0.5
# The largest gap between where a stream's data ends and the window's end
# that is filled (audio zeros, video's last frame); beyond it the item fails.
PAD_TOLERANCE_S = 0.25
# Revision of what this module returns for the same file; part of every
# array's provenance ("libraries"), so a store is never filled by two.
# 2: channel mean instead of libswresample's downmix; truncation limits.
# 3: frames turned upright by the stream's display matrix (phone footage).
DECODER_VERSION = "3"
LFE_CHANNELS = frozenset({"LFE", "LFE2", "LFE3"})


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


def is_cover_art(stream) -> bool:
    """Whether ``stream`` is a still picture attached to the file (the cover
    art of an MP3, M4A or Matroska file: FFmpeg's ``attached_pic``
    disposition), not footage: one picture, no time."""
    try:
        return bool(int(stream.disposition) & int(av.stream.Disposition.attached_pic))
    except (AttributeError, TypeError, ValueError):
        return False


def video_streams(container) -> list:
    """The container's video streams that are footage (cover art left out,
    :func:`is_cover_art`): a song with its album cover has none. Cover art
    follows the footage in the files FFmpeg reads (MP4 ``covr``, Matroska
    attachments), so leaving it out changes no row of a file with footage;
    a file whose only picture is its cover now has no video stream, where
    its windows failed as truncated."""
    return [s for s in container.streams.video if not is_cover_art(s)]


COVER_ART_ONLY = "its only picture is a still, the cover art"


def no_video_reason(container) -> str:
    """``no video stream``, saying when the file's only picture is its cover art."""
    if container.streams.video:
        return f"no video stream ({COVER_ART_ONLY})"
    return "no video stream"


def _open(path: Path | None):
    if path is None:
        raise ItemError("item has no media file")
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise ItemError(f"broken symbolic link (its target {os.readlink(p)} does not exist): {p}") from None
        raise ItemError(f"file not found: {p}") from None
    except PermissionError:
        raise ItemError(f"permission denied (a folder on the path cannot be searched): {p}") from None
    except OSError as exc:
        raise ItemError(f"cannot read the file ({_os_reason(exc)}): {p}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ItemError(f"is a directory, not a media file: {p}")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block, a device never end
        raise ItemError(f"not a regular file (a pipe, socket or device), not a media file: {p}")
    if st.st_size == 0:
        raise ItemError(f"empty file (0 bytes): {p}")
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except PermissionError:
        raise ItemError(f"permission denied (cannot read the file): {p}") from None
    except OSError as exc:
        raise ItemError(f"cannot read the file ({_os_reason(exc)}): {p}") from None
    try:
        return av.open(str(p))
    except PermissionError:
        raise ItemError(f"permission denied (cannot read the file): {p}") from None
    except Exception as exc:  # PyAV raises several error types for bad data
        why = mp4_truncation(p) or (f"not a media file ({_short(exc)})" if len(head) else _short(exc))
        raise ItemError(f"{why}: {p}") from None


def _os_reason(exc: OSError) -> str:
    """An OSError's words, without its errno number or the path."""
    return (exc.strerror or type(exc).__name__).lower()


def _short(exc: BaseException) -> str:
    """A decoding error in words: FFmpeg's message without the errno number,
    the path or the C function's name."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:200]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


MP4_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"pdin", b"moof", b"mfra",
                       b"meta", b"styp", b"sidx", b"prft", b"emsg"})


def mp4_truncation(path: Path) -> str | None:
    """If ``path`` is an MP4/MOV whose top-level boxes run past the end of
    the file, or that lacks its index box (``moov``), or (after an ``ftyp``
    box) holds no valid box where one should start, a sentence saying so;
    otherwise ``None``. Reads only the box headers."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            off = 0
            seen: list[bytes] = []
            while off + 8 <= size:
                f.seek(off)
                hdr = f.read(16)
                box_size, kind = struct.unpack(">I4s", hdr[:8])
                if kind not in MP4_BOXES:
                    if seen and seen[0] == b"ftyp":  # FFmpeg refused it, and it starts as an MP4 does
                        return f"corrupt MP4: no valid box at byte {off:,}"
                    return None  # not MP4 at all: no verdict
                if box_size == 1:
                    if len(hdr) < 16:
                        break
                    box_size = struct.unpack(">Q", hdr[8:16])[0]
                elif box_size == 0:  # extends to the end of the file
                    box_size = size - off
                if box_size < 8:
                    return None
                seen.append(kind)
                if off + box_size > size:
                    return (f"truncated: the file ends at byte {size:,} inside its '{kind.decode()}' box, "
                            f"which runs to byte {off + box_size:,}")
                off += box_size
    except OSError:
        return None
    if seen and seen[0] in (b"ftyp", b"moov", b"mdat") and b"moov" not in seen and b"moof" not in seen:
        return "truncated or incomplete MP4: its index, the 'moov' box, is missing"
    return None


def media_duration(container) -> float:
    """Duration of the container in seconds (0.0 if unknown)."""
    if container.duration is not None:
        return float(container.duration) / 1_000_000.0
    best = 0.0
    for s in container.streams:
        if s.duration is not None and s.time_base is not None:
            best = max(best, float(s.duration * s.time_base))
    return best


def declared_end(stream) -> float | None:
    """Where the container says ``stream`` ends, in seconds from the file's
    start: its start time plus its duration (MP4 and most containers), or
    Matroska/WebM's per-stream ``DURATION`` tag; ``None`` when it says
    nothing. A file cut short keeps the end its header declared, so this
    never hides a truncation."""
    tb = stream.time_base
    if stream.duration is not None and tb is not None:
        return float(((stream.start_time or 0) + stream.duration) * tb)
    tag = (stream.metadata or {}).get("DURATION")
    if isinstance(tag, str):
        try:
            h, m, sec = tag.strip().split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
    return None


def _whole_file_ends(container, start: float, end: float) -> dict[str, float]:
    """For an item that is the whole file: the streams that the container
    declares to end before the file does (by more than PAD_TOLERANCE_S, as
    a film's audio often outlasts its video), each with its own end, so
    that each is read to where it ends rather than failed as truncated.
    Every other stream is read to the file's end, as before (their rows are
    unchanged: only items that failed now succeed, hence no new
    DECODER_VERSION)."""
    ends = {}
    for kind, streams in (("video", video_streams(container)), ("audio", list(container.streams.audio))):
        if streams:
            d = declared_end(streams[0])
            if d is not None and start < d < end - PAD_TOLERANCE_S:
                ends[kind] = d
    return ends


def decode_media(item: Item, requests: Sequence[MediaRequest]) -> Media:
    """Decode ``item``'s window once for all ``requests`` (an item without an
    end is the whole file: each stream to its declared end, see
    :func:`_whole_file_ends`)."""
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
        own = _whole_file_ends(container, start, end) if item.end is None else {}

        video_reqs = {r.video_key(): r for r in requests if r.wants_video}
        audio_rates = sorted({r.audio_rate for r in requests if r.wants_audio})  # type: ignore[type-var]
        try:
            if video_reqs:
                if not video_streams(container):
                    raise ItemError(f"{no_video_reason(container)}: {item.path}")
                _decode_video(container, media, list(video_reqs.values()), start, own.get("video", end))
            for rate in audio_rates:
                if not container.streams.audio:
                    raise ItemError(f"no audio stream: {item.path}")
                media.audio[rate] = _decode_audio(container, rate, start, own.get("audio", end), item.path)
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


def display_transform(frame) -> tuple[bool, bool, bool]:
    """How a player turns ``frame`` to show it, from the display matrix of
    its stream (phones store footage shot upright or upside down in the
    sensor's orientation and record the turn there; FFmpeg's ``ffmpeg`` and
    browsers apply it, PyAV's ``to_ndarray`` does not): ``(transpose,
    flip_rows, flip_columns)``, applied in that order to the stored picture
    (``(False, False, False)`` without a matrix). Any right-angle turn, with or
    without a mirror, is one of these eight; any other matrix (a tilt, a
    scale) is refused rather than ignored.

    FFmpeg's matrix ``[a b u; c d v; x y w]`` maps a stored pixel ``(p, q)``
    (column, row) to ``(a p + c q, b p + d q)`` on screen."""
    import av.sidedata.sidedata as sdmod

    matrix = None
    for sd in getattr(frame, "side_data", ()) or ():
        if sd.type == sdmod.Type.DISPLAYMATRIX:
            matrix = struct.unpack("<9i", bytes(sd)[:36])
            break
    if matrix is None:
        return (False, False, False)
    a, b, c, d = (v / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    signs = [round(v) for v in (a, b, c, d)]
    if any(abs(v - r) > 0.02 for v, r in zip((a, b, c, d), signs)) or sorted(map(abs, signs)) != [0, 0, 1, 1] \
            or (signs[0] == 0) != (signs[3] == 0):
        raise ItemError(f"the video's display matrix turns it by {float(getattr(frame, 'rotation', 0) or 0):g} "
                        "degrees or scales it; aanbench applies right-angle turns and mirrors only "
                        "(re-encode the video upright)")
    if signs[0] == 0:  # (p, q) -> (c q, b p): rows and columns swap
        return (True, signs[1] < 0, signs[2] < 0)
    return (False, signs[3] < 0, signs[0] < 0)


def _resized_rgb(frame, size: tuple[int, int], turn: tuple[bool, bool, bool]) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB of ``frame`` as a player shows it (``turn``:
    its :func:`display_transform`) at ``size`` (width, height).

    Colour conversion at the native size, the turn, then PIL's antialiased
    bilinear resize: what ``torchvision.transforms.Resize`` does to a PIL
    image of the upright frame and what the AttendAffectNet authors' scripts
    used. swscale's bilinear (``frame.to_ndarray(width=..., height=...)``)
    differs from it by 1-3/255 on average when shrinking, so it is not used
    for resizing.
    """
    transpose, flip_rows, flip_columns = turn
    if not (transpose or flip_rows or flip_columns) and (frame.width, frame.height) == tuple(size):
        return frame.to_ndarray(format="rgb24")
    from PIL import Image

    img = frame.to_image()  # RGB at the native size
    for do, op in ((transpose, Image.Transpose.TRANSPOSE), (flip_rows, Image.Transpose.FLIP_TOP_BOTTOM),
                   (flip_columns, Image.Transpose.FLIP_LEFT_RIGHT)):
        if do:
            img = img.transpose(op)
    if img.size != tuple(size):
        img = img.resize(tuple(size), Image.BILINEAR)
    return np.asarray(img)


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


def cached_crop(cache: dict[tuple[int, tuple[int, int]], np.ndarray], frame: Any, frame_no: int,
                req: MediaRequest) -> np.ndarray:
    """Decoded ``frame`` (number ``frame_no``) as ``req`` wants it: resized to
    its short side, then centre-cropped. The resized RGB is kept in ``cache``
    by (frame number, size), so requests sharing a size resize once; the
    cache is emptied when it holds more than 8. Sizes are those of the
    frame as a player shows it (:func:`display_transform`, read once here)."""
    turn = display_transform(frame)
    shown = (frame.height, frame.width) if turn[0] else (frame.width, frame.height)
    size = _target_size(*shown, req.short_side)
    key = (frame_no, size)
    if key not in cache:
        if len(cache) > 8:
            cache.clear()
        cache[key] = _resized_rgb(frame, size, turn)
    return _centre_crop(cache[key], req.crop)


def wanted_frames(reqs: Sequence[MediaRequest], start: float, duration: float) -> list[tuple[float, int, int]]:
    """``(time, request index, slot)`` for every frame any request wants from
    ``[start, start + duration)``, in time order."""
    wanted = [(float(t), ri, slot) for ri, req in enumerate(reqs)
              for slot, t in enumerate(sample_times(req, start, duration))]
    wanted.sort()
    return wanted


def _decode_video(container, media: Media, reqs: list[MediaRequest], start: float, end: float) -> None:
    stream = video_streams(container)[0]
    stream.thread_type = "SLICE"
    native_fps = float(stream.average_rate) if stream.average_rate else None
    media.native_fps = native_fps
    duration = end - start

    wanted = wanted_frames(reqs, start, duration)
    out: list[list[np.ndarray | None]] = [[None] * req.frame_count(duration) for req in reqs]
    cache: dict[tuple[int, tuple[int, int]], np.ndarray] = {}

    def take(frame, frame_no: int, ri: int, slot: int) -> None:
        out[ri][slot] = cached_crop(cache, frame, frame_no, reqs[ri])

    # Always seek: another stream of this container may have been read already.
    container.seek(int(max(0.0, start - 1.0) / stream.time_base), stream=stream, backward=True, any_frame=False)
    tb = float(stream.time_base)
    frame_s = 1.0 / native_fps if native_fps else 0.0
    wi = 0
    prev = None
    prev_no = -1
    frame_no = 0
    reached = -math.inf  # the time up to which the stream has data (s)
    broken: Exception | None = None
    decoding = True
    try:
        for packet in container.demux(stream):
            if not decoding:  # every wanted frame is served: only check that the data goes on
                if packet.pts is not None:
                    reached = max(reached, (packet.pts + (packet.duration or 0)) * tb)
                if reached >= end - PAD_TOLERANCE_S:
                    break
                continue
            for frame in packet.decode():
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
                reached = max(reached, t + (frame.duration * tb if frame.duration else frame_s))
                if wi >= len(wanted):
                    decoding = False
                    break
            if not decoding and reached >= end - PAD_TOLERANCE_S:
                break
    except av.error.FFmpegError as exc:  # undecodable data (a truncated file's last packet): the stream ends here
        broken = exc
    if prev is None:
        why = f"cannot decode video ({_short(broken)})" if broken else "no decodable video frames"
        raise ItemError(f"{why} in [{start:.2f}, {end:.2f}) s: {media.item.path}")
    if end - reached > PAD_TOLERANCE_S:
        raise ItemError(_ends_early(reached, start, end, media.item.path, broken))
    while wi < len(wanted):  # times after the last frame, within the tolerance: the last frame is still on screen
        take(prev, prev_no, wanted[wi][1], wanted[wi][2])
        wi += 1
    for req, frames in zip(reqs, out):
        media.video[req.video_key()] = np.stack(frames).astype(np.uint8, copy=False)


def _ends_early(reached: float, start: float, end: float, path, broken: Exception | None) -> str:
    """The reason for an item whose stream's data ends before its window does."""
    hint = (mp4_truncation(Path(path)) if path is not None else None) or "truncated?"
    if broken is not None:
        hint += f"; then undecodable data: {_short(broken)}"
    at = f" from {start:.2f} s" if start > 0 else ""
    return f"media ends at {max(0.0, reached - start):.2f} s of a {end - start:.2f} s window{at} ({hint}): {path}"


def _channel_mean(frame) -> np.ndarray:
    """Mono ``float32 (n,)`` of a planar float frame: the mean of its
    full-range channels (see the module's docstring)."""
    planes = frame.to_ndarray()  # (channels, n) for a planar format
    if planes.ndim == 1 or planes.shape[0] == 1:
        return planes.reshape(-1)
    names = [c.name for c in frame.layout.channels]
    keep = [i for i, n in enumerate(names) if n not in LFE_CHANNELS] if len(names) == planes.shape[0] else []
    return planes[keep or slice(None)].mean(axis=0, dtype=np.float64).astype(np.float32)


def _decode_audio(container, rate: int, start: float, end: float, path) -> np.ndarray:
    """``float32 (round((end - start) * rate),)`` mono samples of ``[start, end)``."""
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="fltp", layout=None, rate=rate)  # keeps the channels; mean below
    # Always seek: decoding the video stream has consumed the packets.
    container.seek(int(max(0.0, start - 1.0) / stream.time_base), stream=stream, backward=True)
    chunks: list[np.ndarray] = []
    first_time: float | None = None
    broken: Exception | None = None
    try:
        for frame in container.decode(stream):
            if first_time is None:
                first_time = float(frame.pts * stream.time_base) if frame.pts is not None else 0.0
            for rf in resampler.resample(frame):
                chunks.append(_channel_mean(rf))
            if frame.pts is not None and float(frame.pts * stream.time_base) >= end:
                break
    except av.error.FFmpegError as exc:  # undecodable data (a truncated file's last packet): the stream ends here
        broken = exc
    for rf in resampler.resample(None):
        chunks.append(_channel_mean(rf))
    if not chunks:
        why = f"cannot decode audio ({_short(broken)})" if broken else "no decodable audio"
        raise ItemError(f"{why} in [{start:.2f}, {end:.2f}) s: {path}")
    signal = np.concatenate(chunks).astype(np.float32, copy=False)
    t0 = first_time or 0.0
    reached = t0 + signal.size / rate
    if end - reached > PAD_TOLERANCE_S:
        raise ItemError(_ends_early(reached, start, end, path, broken))
    lead = int(round((t0 - start) * rate))
    if lead > 0:  # the stream starts after the window does: silence before it, as a player gives
        signal = np.concatenate([np.zeros(lead, dtype=np.float32), signal])
        t0 -= lead / rate
    i0 = max(0, int(round((start - t0) * rate)))
    i1 = int(round((end - t0) * rate))
    piece = signal[i0:i1]
    want = int(round((end - start) * rate))
    if piece.size < want:  # the stream ends within PAD_TOLERANCE_S of the window's end
        piece = np.pad(piece, (0, want - piece.size))
    return np.ascontiguousarray(piece[:want])
