"""A film cut into windows, decoded in one pass in time order.

``film_windows(duration, window, hop)`` lists the ``[start, end)`` windows
of a film; ``probe_duration(path)`` reads its length. :func:`decode_item`
is what extraction calls for every item: an item that is a window of a
file (``start``/``end`` set) is served by a :class:`FilmReader` that keeps
the file open and reads forward, so the consecutive windows of a film
cost one pass through the file, not one open and seek per window. A
window that starts before the previous one ended (overlapping windows,
``hop < window``) seeks back in the open file; another file opens it;
a whole-file item is decoded by :func:`aanbench.media.decode_media`.

Memory: the reader holds the current window's sampled frames and audio,
the last decoded frame, and what the container interleaves ahead of it
(typically well under a second), whatever the film's length; before its
first window inside a film, also the compressed video packets since the
last keyframe (one group of pictures) and up to 8 s of audio.

The numbers are those of :func:`aanbench.media.decode_media`: a frame wanted
at time ``t`` is the last frame shown at or before ``t`` (the first frame
if none), resized and cropped the same way; audio is the same slice
``[round((start - t0) * rate), round((end - t0) * rate))`` of the
resampled stream's channel mean, ``t0`` being the first decoded audio
frame's time (zeros before a stream that starts late, and after one that
ends within ``PAD_TOLERANCE_S`` of the window's end). Read straight
through, the audio is exactly that of one decode of the whole file
(``decode_media`` restarts the AAC decoder after its seek, which changes
a few samples). A reader whose first window lies inside the film (a worker
given the second half of the windows) also decodes the audio from the
file's start, and the video from the keyframe a seek would land on, so
its windows are those of one reader from the start, whatever the number
of workers (:meth:`FilmReader._start`); after a seek back (overlapping
windows) the audio can differ in the way ``decode_media``'s does.

A truncated or damaged file: a window whose data ends more than
``PAD_TOLERANCE_S`` before its end (or lies after the last data that could
be decoded) raises :class:`~aanbench.contracts.ItemError` with
``decode_media``'s reason ("media ends at 1.60 s of a 5.00 s window ...");
the windows before keep their features. A packet FFmpeg cannot decode in
the middle of a film is skipped (the windows around it are served from the
data that follows).
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from aanbench.contracts import AanbenchError, Item, ItemError, Media, MediaRequest
from aanbench.media import (END_TOLERANCE_S, PAD_TOLERANCE_S, _channel_mean, _ends_early, _open, _short,
                            cached_crop, decode_media, is_cover_art, media_duration, no_video_reason, video_streams,
                            wanted_frames)

# --------------------------------------------------------------------------
# Windows


def _fmt_seconds(x: float) -> str:
    """``5`` for 5.0, ``57.32`` for 57.32 (at most 3 decimals)."""
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def window_id(file_id: str, start: float, end: float) -> str:
    """``<file>@<start>-<end>`` (seconds, at most 3 decimals)."""
    return f"{file_id}@{_fmt_seconds(start)}-{_fmt_seconds(end)}"


def film_windows(duration: float, window: float, hop: float) -> list[tuple[float, float]]:
    """``[start, end)`` windows (seconds) of a film lasting ``duration`` s.

    Windows start at ``0, hop, 2 hop, ...`` and last ``window`` s while they
    fit. When the last full window ends before the film does, one more
    window ``[k hop, duration)`` covers the tail if it is at least half a
    window long (a shorter tail is dropped). A film shorter than one window
    is one window, the whole of it: ``[0, duration)`` (none when the
    duration is 0). Times are rounded to 1 ms.
    """
    if not (window > 0 and hop > 0) or not (math.isfinite(window) and math.isfinite(hop)):
        raise AanbenchError(f"window and hop must be positive seconds, not window={window!r}, hop={hop!r}")
    duration = round(float(duration), 3)
    out: list[tuple[float, float]] = []
    k = 0
    while round(k * hop + window, 3) <= duration + 1e-9:
        s = round(k * hop, 3)
        out.append((s, round(s + window, 3)))
        k += 1
    last_end = out[-1][1] if out else 0.0
    s = round(k * hop, 3)
    if last_end < duration and s < duration and (duration - s >= window / 2.0 - 1e-9 or not out):
        out.append((s, duration))
    return out


STREAM_KINDS = ("video", "audio")


_DURATIONS: dict[tuple[str, int, int], dict[str, float]] = {}  # (path, size, mtime): stream_durations


def stream_durations(path: Path) -> dict[str, float]:
    """How long each kind of stream of the file lasts (``{"video": s,
    "audio": s}``, the end of its last data on the streams' own clock, the
    one windows are cut on; the longest stream of a kind), from the streams' headers, else from their last packets (one
    demux pass, no decoding). A kind the file lacks is absent; raises
    :class:`ItemError` for a file that cannot be opened. Kept per process
    for a file of the same path, size and modification time (a film without
    per-stream durations in its header, such as Matroska, is read to its end
    to find them, and `curve` asks several times)."""
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _DURATIONS:
        return dict(_DURATIONS[key])
    out = _stream_durations(path)
    if key is not None:
        if len(_DURATIONS) >= 256:
            _DURATIONS.clear()
        _DURATIONS[key] = dict(out)
    return out


def _stream_durations(path: Path) -> dict[str, float]:
    container = _open(path)
    try:
        out: dict[str, float] = {}
        unknown: dict[int, str] = {}
        for s in container.streams:
            if s.type not in STREAM_KINDS or is_cover_art(s):
                continue
            if s.duration is not None and s.time_base is not None and s.duration > 0:
                end = float(((s.start_time or 0) + s.duration) * s.time_base)
                out[s.type] = max(out.get(s.type, 0.0), end)
            else:
                unknown[s.index] = s.type
        if unknown:  # e.g. Matroska/WebM: no per-stream duration in the header
            last = _packet_ends(container, set(unknown))
            for idx, kind in unknown.items():
                if idx in last:
                    out[kind] = max(out.get(kind, 0.0), last[idx])
        return out
    except ItemError:
        raise
    except Exception as exc:
        raise ItemError(f"cannot read media ({_short(exc)}): {path}") from None
    finally:
        container.close()


def probe_duration(path: Path, streams: Sequence[str] | None = None) -> float:
    """The file's duration in seconds from its header, else from the last
    packet's time; raises :class:`ItemError` for a file that cannot be opened.

    ``streams`` (``"video"``, ``"audio"``): the duration that every one of
    these streams covers, i.e. the shortest of their durations
    (:func:`stream_durations`), never more than the file's; a stream kind
    the file lacks or whose length is unknown is left out (decoding reports
    a missing stream). A film whose audio outlasts its video by a fraction of
    a second is thus windowed on its video's length when video is needed."""
    d_all = _container_duration(path)
    wanted = [k for k in (streams or ()) if k in STREAM_KINDS]
    if not wanted:
        return d_all
    lengths = stream_durations(path)
    covered = [lengths[k] for k in wanted if lengths.get(k, 0.0) > 0]
    if not covered:
        return d_all
    return min([min(covered)] + ([d_all] if d_all > 0 else []))


def _container_duration(path: Path) -> float:
    container = _open(path)
    try:
        d = media_duration(container)
        if d > 0:
            return d
        return max(_packet_ends(container).values(), default=0.0)
    except ItemError:
        raise
    except Exception as exc:
        raise ItemError(f"cannot read media ({_short(exc)}): {path}") from None
    finally:
        container.close()


def _packet_ends(container, streams: set[int] | None = None) -> dict[int, float]:
    """Per stream index (of ``streams``, default every stream), the end of
    its last timed packet in seconds (``pts + duration``), from one demux
    pass without decoding; streams without a timed packet are absent."""
    last: dict[int, float] = {}
    for packet in container.demux():
        idx = packet.stream.index
        if (streams is None or idx in streams) and packet.pts is not None and packet.time_base is not None:
            t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            last[idx] = max(last.get(idx, 0.0), t)
    return last


# --------------------------------------------------------------------------
# Sequential reader


class FilmReader:
    """One open media file read forward, window after window.

    ``read(item, requests)`` serves an item whose ``start`` is not before
    the previous item's ``end`` (:meth:`can_serve`); the first read
    demuxes from the file's start and decodes from where it must
    (:meth:`_start`).
    """

    def __init__(self, path: Path, requests: Sequence[MediaRequest]) -> None:
        self.path = Path(path)
        st = os.stat(self.path) if self.path.exists() else None
        self.identity = (st.st_size, st.st_mtime_ns) if st else None
        self.requests_key = _requests_key(requests)
        self.container = _open(self.path)
        self.duration = media_duration(self.container)
        footage = video_streams(self.container)
        self.vstream = footage[0] if footage else None
        self.astream = self.container.streams.audio[0] if self.container.streams.audio else None
        if self.vstream is not None:
            self.vstream.thread_type = "SLICE"
        self.native_fps = float(self.vstream.average_rate) if self.vstream is not None and self.vstream.average_rate else None
        self.rates = sorted({r.audio_rate for r in requests if r.wants_audio})  # type: ignore[type-var]
        self.want_video = any(r.wants_video for r in requests) and self.vstream is not None
        self.want_audio = bool(self.rates) and self.astream is not None
        self.position: float | None = None  # end of the last window served
        self._packets = None
        self.eof = False
        self.error: str | None = None  # why decoding stopped early
        # video: frames decoded but not yet passed, the last passed frame
        self._frames: deque = deque()  # (time, frame_no, frame)
        self._prev: tuple[float, int, object] | None = None
        self._frame_no = 0
        self.last_video_time: float | None = None
        self.video_reached: float | None = None  # end of the last decoded frame's display (s)
        self.broken: Exception | None = None  # the last undecodable data
        # audio: per rate, a resampler and a buffer of samples from index ``base``
        self._resamplers = {r: av.AudioResampler(format="fltp", layout=None, rate=r) for r in self.rates}  # mean below
        self._audio: dict[int, list[np.ndarray]] = {r: [] for r in self.rates}
        self._audio_base: dict[int, int] = {r: 0 for r in self.rates}
        self._audio_len: dict[int, int] = {r: 0 for r in self.rates}
        self._t0: float | None = None  # time of the first decoded audio frame
        self.last_audio_time: float | None = None
        # a first read inside the file (see _start): video packets held until decoding must begin
        self._rewound = False
        self._video_from: float | None = None
        self._held: list = []
        self._audio_from: float | None = None

    # ------------------------------------------------------------ state
    def close(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass

    def same_file(self, item: Item, requests: Sequence[MediaRequest]) -> bool:
        """``item`` is in this (unchanged) file and asks for the same media."""
        if item.path is None or Path(item.path) != self.path or _requests_key(requests) != self.requests_key:
            return False
        st = os.stat(self.path) if self.path.exists() else None
        return st is not None and (st.st_size, st.st_mtime_ns) == self.identity

    def can_serve(self, item: Item, requests: Sequence[MediaRequest]) -> bool:
        """``item`` continues where the previous window ended (or later)."""
        if not self.same_file(item, requests):
            return False
        start = float(item.start or 0.0)
        return self.position is None or start >= self.position - 1e-6

    def rewind(self) -> None:
        """Forget the read position (the next read seeks, in the open file):
        for windows that overlap (hop < window) or come out of order."""
        self.position = None
        self._packets = None
        self.eof = False
        self.error = None
        self.broken = None
        self.video_reached = None
        self.last_audio_time = None
        self._frames.clear()
        self._prev = None
        self._resamplers = {r: av.AudioResampler(format="fltp", layout=None, rate=r) for r in self.rates}
        self._audio = {r: [] for r in self.rates}
        self._audio_base = {r: 0 for r in self.rates}
        self._audio_len = {r: 0 for r in self.rates}
        self._t0 = None
        self._rewound = True
        self._video_from, self._held, self._audio_from = None, [], None
        if self.vstream is not None and self.want_video:
            self.vstream.codec_context.flush_buffers()
        if self.astream is not None and self.want_audio:
            self.astream.codec_context.flush_buffers()

    def _start(self, start: float) -> None:
        """Position the reader for its first window (``start`` s).

        After :meth:`rewind` (overlapping windows): a seek to the keyframe
        before ``start - 1`` s. Otherwise the file is read from its
        beginning, so the audio is decoded exactly as by a reader that began
        at 0 (an AAC decoder that starts after a seek, or after the joins of
        a film made of clips, gives other samples for a while; decoding the
        audio from 0 costs about 0.01 CPU-s per minute of 16 kHz mono):
        windows read by several workers, each from its first window on, are
        those of one straight read. Video packets before ``start - 1`` s are
        demuxed, not decoded: the packets from the last keyframe at or before
        that time on are held and decoded once the demuxer passes it (where
        the seek would have begun decoding), and audio before ``start - 1``
        s is dropped as it comes."""
        streams = [s for s, want in ((self.vstream, self.want_video), (self.astream, self.want_audio)) if want]
        if self._rewound:
            self.container.seek(int(max(0.0, start - 1.0) * av.time_base), backward=True, any_frame=False)
        elif start > 1.0:
            self._video_from = start - 1.0 if (self.want_video and self.vstream is not None) else None
            self._audio_from = start - 1.0
        self._packets = self.container.demux(*streams) if streams else iter(())

    def _next_packet(self):
        """The next packet to decode: while video is held (:meth:`_start`),
        video packets before the hold's end are kept back, then replayed in
        order."""
        while True:
            packet = next(self._packets)  # type: ignore[arg-type]
            if self._video_from is None or packet.stream is not self.vstream:
                return packet
            ts = packet.pts if packet.pts is not None else packet.dts
            t = float(ts * packet.time_base) if ts is not None and packet.time_base is not None else None
            if t is not None and t <= self._video_from:
                if packet.is_keyframe:
                    self._held = [packet]  # decoding would begin here
                elif self._held:
                    self._held.append(packet)
                continue  # (before the first keyframe: nothing decodable, dropped)
            held, self._held, self._video_from = self._held, [], None
            self._packets = _chain(held, [packet], self._packets)
            return next(self._packets)

    def _pump(self) -> bool:
        """Decode one more packet; False at the end of the data."""
        if self.eof:
            return False
        try:
            packet = self._next_packet()
        except StopIteration:
            if self._held:  # the data ended before the hold did: decode what was held
                held, self._held, self._video_from = self._held, [], None
                self._packets = iter(held)
                return True
            self._finish()
            return False
        except Exception as exc:
            self.error, self.broken = _short(exc), exc
            self._finish()
            return False
        try:
            frames = packet.decode()
        except Exception as exc:  # a damaged packet: note it and go on with the next
            self.error, self.broken = _short(exc), exc
            return True
        for frame in frames:
            if packet.stream is self.vstream:
                if frame.pts is None:
                    continue
                t = float(frame.pts * self.vstream.time_base)
                self._frames.append((t, self._frame_no, frame))
                self._frame_no += 1
                self.last_video_time = t
                dur = (float(frame.duration * self.vstream.time_base) if frame.duration
                       else (1.0 / self.native_fps if self.native_fps else 0.0))
                self.video_reached = max(self.video_reached or t, t + dur)
            else:
                self._add_audio(frame)
        return True

    def _finish(self) -> None:
        self.eof = True
        for rate, rs in self._resamplers.items():
            try:
                for rf in rs.resample(None):
                    self._append(rate, _channel_mean(rf))
            except Exception:
                pass

    def _add_audio(self, frame) -> None:
        if self._t0 is None:
            self._t0 = float(frame.pts * self.astream.time_base) if frame.pts is not None else 0.0
        if frame.pts is not None:
            self.last_audio_time = float((frame.pts + frame.samples) * self.astream.time_base)
        for rate, rs in self._resamplers.items():
            for rf in rs.resample(frame):
                self._append(rate, _channel_mean(rf))

    def _append(self, rate: int, samples: np.ndarray) -> None:
        self._audio[rate].append(samples.astype(np.float32, copy=False))
        self._audio_len[rate] += samples.size
        if self._audio_from is not None and self._t0 is not None and self._audio_len[rate] > 8 * rate:
            # before the first window (a read that began at the file's start, _start): keep what it may need
            drop = int((self._audio_from - self._t0) * rate) - self._audio_base[rate]
            if drop > 0:
                buf = np.concatenate(self._audio[rate])
                drop = min(drop, buf.size)
                rest = buf[drop:]
                self._audio[rate] = [rest] if rest.size else []
                self._audio_base[rate] += drop
                self._audio_len[rate] = int(rest.size)

    # ------------------------------------------------------------ serving
    def read(self, item: Item, requests: Sequence[MediaRequest]) -> Media:
        start = float(item.start or 0.0)
        end = float(item.end) if item.end is not None else self.duration
        if self.duration > 0 and end > self.duration + END_TOLERANCE_S:
            raise ItemError(f"window [{start:.2f}, {end:.2f}) s ends after the file's end ({self.duration:.2f} s): {item.path}")
        if self.duration > 0:
            end = min(end, self.duration)
        if end <= start:
            raise ItemError(f"empty window [{start:.2f}, {end:.2f}) s (file lasts {self.duration:.2f} s): {item.path}")
        if self._packets is None:
            self._start(start)
        self.position = end
        media = Media(item=item, duration=end - start, native_fps=self.native_fps)
        wants_video = [r for r in requests if r.wants_video]
        if wants_video:
            if self.vstream is None:
                raise ItemError(f"{no_video_reason(self.container)}: {item.path}")
            self._video(media, list({r.video_key(): r for r in wants_video}.values()), start, end)
        for rate in sorted({r.audio_rate for r in requests if r.wants_audio}):  # type: ignore[type-var]
            if self.astream is None:
                raise ItemError(f"no audio stream: {item.path}")
            media.audio[rate] = self._slice_audio(rate, start, end, item.path)
        return media

    def _data_ends(self, reached: float | None, start: float, end: float, path) -> None:
        """Fail the window when the stream's data ends more than ``PAD_TOLERANCE_S`` before its end."""
        if reached is None or end - reached > PAD_TOLERANCE_S:
            raise ItemError(_ends_early(start if reached is None else reached, start, end, path, self.broken))

    def _video(self, media: Media, reqs: list[MediaRequest], start: float, end: float) -> None:
        duration = end - start
        wanted = wanted_frames(reqs, start, duration)
        out: list[list[np.ndarray | None]] = [[None] * req.frame_count(duration) for req in reqs]
        cache: dict[tuple[int, tuple[int, int]], np.ndarray] = {}
        for t, ri, slot in wanted:
            # pass every frame shown at or before t
            while True:
                if not self._frames and not self._pump():
                    break
                if not self._frames:
                    continue
                if self._frames[0][0] <= t:
                    self._prev = self._frames.popleft()
                else:
                    break
            chosen = self._prev if self._prev is not None else (self._frames[0] if self._frames else None)
            if chosen is None:
                self._data_ends(self.video_reached, start, end, media.item.path)
                raise ItemError(f"no decodable video frames in [{start:.2f}, {end:.2f}) s: {media.item.path}")
            _, no, frame = chosen
            out[ri][slot] = cached_crop(cache, frame, no, reqs[ri])
        if self.eof:
            self._data_ends(self.video_reached, start, end, media.item.path)
        for req, frames in zip(reqs, out):
            media.video[req.video_key()] = np.stack(frames).astype(np.uint8, copy=False)

    def _slice_audio(self, rate: int, start: float, end: float, path) -> np.ndarray:
        while self._t0 is None and self._pump():
            pass
        if self._t0 is None:
            self._data_ends(self.last_audio_time, start, end, path)
            raise ItemError(f"no decodable audio in [{start:.2f}, {end:.2f}) s: {path}")
        i0 = max(0, int(round((start - self._t0) * rate)))
        i1 = int(round((end - self._t0) * rate))
        while self._audio_base[rate] + self._audio_len[rate] < i1 and self._pump():
            pass
        if self.eof:
            self._data_ends(self._t0 + (self._audio_base[rate] + self._audio_len[rate]) / rate, start, end, path)
        buf = np.concatenate(self._audio[rate]) if self._audio[rate] else np.zeros(0, np.float32)
        base = self._audio_base[rate]
        lead = int(round((self._t0 - start) * rate))  # the stream starts after the window: silence before it
        piece = buf[max(0, i0 - base): max(0, i1 - base)]
        if lead > 0:
            piece = np.concatenate([np.zeros(lead, np.float32), piece])
        want = int(round((end - start) * rate))
        if piece.size < want:  # the stream ends within PAD_TOLERANCE_S of the window's end
            piece = np.pad(piece, (0, want - piece.size))
        piece = np.ascontiguousarray(piece[:want])
        # keep only what a later window may still need (from this window's end)
        keep_from = max(base, i1)
        rest = buf[keep_from - base:]
        self._audio[rate] = [rest] if rest.size else []
        self._audio_base[rate] = keep_from
        self._audio_len[rate] = int(rest.size)
        return piece


def _chain(*parts):
    for part in parts:
        yield from part


def _requests_key(requests: Sequence[MediaRequest]) -> tuple:
    return tuple(sorted({(r.frames, r.fps, r.short_side, r.crop, r.audio_rate) for r in requests},
                        key=repr))


_LOCAL = threading.local()


def decode_item(item: Item, requests: Sequence[MediaRequest]) -> Media:
    """Decode ``item`` for ``requests``: a window (``start`` or ``end`` set)
    through this thread's :class:`FilmReader` (reading on from the previous
    window of the same file when it can), a whole file with
    :func:`aanbench.media.decode_media`."""
    if item.start is None and item.end is None:
        return decode_media(item, requests)
    reader: FilmReader | None = getattr(_LOCAL, "reader", None)
    if reader is not None and not reader.can_serve(item, requests) and reader.same_file(item, requests) \
            and not reader.eof:
        reader.rewind()  # overlapping windows: seek back in the open file
    if reader is None or not reader.can_serve(item, requests):
        close_reader()
        if item.path is None:
            raise ItemError("item has no media file")
        reader = FilmReader(Path(item.path), requests)
        _LOCAL.reader = reader
    try:
        return reader.read(item, requests)
    except ItemError:
        raise
    except Exception as exc:
        close_reader()  # its state is unknown: the next window starts afresh
        raise ItemError(f"cannot decode ({_short(exc)}): {item.path}") from None


def close_reader() -> None:
    """Close this thread's open film, if any."""
    reader = getattr(_LOCAL, "reader", None)
    if reader is not None:
        reader.close()
        _LOCAL.reader = None
