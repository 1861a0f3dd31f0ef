"""The extraction job protocol: what a backend runs, wherever it runs.

An :class:`ExtractionJob` (everything a worker needs, picklable) and its
:class:`WorkUnit` chunks go to a :class:`Backend`, which runs
:func:`execute_unit` for each wherever it likes (this process, a process
pool, Ray actors) and reports each :class:`UnitResult` back through a
callback. Each unit is written to the store by the worker that computed it,
whole, then marked done.

This module is what the backends (:mod:`aanbench.backends`) import; the
driver that plans the chunks and picks a backend is :mod:`aanbench.extraction`,
which imports the backends (never the other way round).


Interrupts (Ctrl-C, SIGINT) and errors Python could not raise
    While :func:`extract_dataset` or :func:`run_plan` runs in the main
    thread with a backend that declares ``handles_interrupts``, SIGINT only
    sets a flag (:func:`interrupt_guard`). :func:`execute_unit` checks it
    before each item, after each extractor batch and before writing each
    array's chunk; when set, the chunk in flight is discarded (nothing of it
    is written) and :class:`ExtractionInterrupted` is raised at that chunk
    boundary. Chunks written before stay done, so the same command resumes.
    A second SIGINT raises ``KeyboardInterrupt`` at once (the flag is
    already set, so nothing computed after the first is written as done).

    An exception raised where Python cannot propagate it (inside a C
    library's callback into Python, such as openSMILE's ctypes sink; Python
    prints "Exception ignored on calling ctypes callback function") is
    caught by a ``sys.unraisablehook`` installed while a unit runs: the
    extractor call that saw it does not count as a result (the batch is
    retried item by item, and an item that sees one again fails with the
    error as its reason); a ``KeyboardInterrupt`` seen there is an interrupt.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from aanbench import __version__
from aanbench.contracts import Extractor, Item, ItemError, LoadContext, Media
from aanbench.filmdecode import decode_item  # a film's windows in one pass; whole files via decode_media
from aanbench.store import DatasetGroup, FeatureStore


LIBRARIES = ("numpy", "torch", "torchvision", "av", "opensmile", "scipy")


def library_versions() -> dict[str, str]:
    """Versions of what computes features: aanbench, its decoder's revision
    (:data:`aanbench.media.DECODER_VERSION`) and the libraries."""
    from aanbench.media import DECODER_VERSION

    out = {"aanbench": __version__, "aanbench-decoder": DECODER_VERSION}
    for lib in LIBRARIES:
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    return out


def feature_key(ex: Extractor) -> str:
    return f"{ex.name}@{ex.version}"


def provenance_for(ex: Extractor, weight_paths: dict[str, Path], plugin_version: str = "") -> dict[str, Any]:
    """What made an array: compared before any write into an existing array."""
    return {
        "extractor": ex.name,
        "version": ex.version,
        "dim": int(ex.dim),
        "modality": ex.modality,
        "config": ex.config(),
        "weights": {wf.filename: wf.sha256 for wf in ex.weights},
        "libraries": library_versions(),
        "source": "extracted",
        "plugin_version": plugin_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@dataclass(frozen=True)
class WorkUnit:
    """One chunk of rows and the extractors that still need it."""

    chunk: int
    start: int
    stop: int
    extractors: tuple[str, ...]

    @property
    def n_items(self) -> int:
        return self.stop - self.start


@dataclass
class ExtractionJob:
    """Everything a worker needs to execute units (picklable)."""

    store_root: str
    group_path: str
    items: list[Item]
    extractors: list[str]  # extractor names
    keys: dict[str, str]  # extractor name -> feature key in the store
    weights_dir: str
    device: str = "cpu"
    batch_size: int = 8
    # per extractor: keyword arguments of its ``with_sampling`` (the dataset's frames per item)
    sampling: dict[str, dict[str, Any]] = field(default_factory=dict)


def frames_for_dataset(ex: Extractor, video_frames: int | None) -> dict[str, Any]:
    """Sampling override for a video extractor that can change its frame count
    (``with_sampling``): the dataset's frames per item (paper: 64 per EIMT16
    excerpt, 125 per 5-s COGNIMUSE segment, 16 per temporal sub-segment)."""
    if video_frames and ex.modality == "video" and hasattr(ex, "with_sampling"):
        return {"frames": int(video_frames)}
    return {}


def apply_sampling(ex: Extractor, sampling: dict[str, Any] | None) -> Extractor:
    return ex.with_sampling(**sampling) if sampling else ex  # type: ignore[attr-defined]


@dataclass
class ItemFailure:
    item_id: str
    extractor: str
    reason: str


@dataclass
class UnitResult:
    unit: WorkUnit
    ok: dict[str, int] = field(default_factory=dict)  # extractor -> rows ok
    failures: list[ItemFailure] = field(default_factory=list)
    seconds: float = 0.0
    decode_seconds: float = 0.0
    extractor_seconds: dict[str, float] = field(default_factory=dict)  # extractor -> seconds computing this chunk
    error: str | None = None  # the whole unit failed (not written as done)
    interrupted: bool = False  # discarded because of an interrupt (not written as done)


# --------------------------------------------------------------------------
# Interrupts


class ExtractionInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, SIGINT). Chunks written before it are
    kept and marked done; the chunk in flight was discarded. ``saved``: the
    chunks this run wrote whole. A subclass of ``KeyboardInterrupt``, so no
    ``except Exception`` takes it for an item's failure."""

    def __init__(self, saved: int = 0) -> None:
        super().__init__(f"interrupted: {saved} chunks saved; run the same command to resume")
        self.saved = saved


class _InterruptState:
    requested = False  # an interrupt is pending in this process
    owner: str | None = None  # "guard" (a driver's handler) or "worker" (a pool worker's handler)
    shared: Any = None  # a multiprocessing Event the driver sets (pool workers)


_INTERRUPT = _InterruptState()
INTERRUPT_NOTICE = (b"\ninterrupt: stopping before the next item; the chunk in progress is discarded "
                    b"(Ctrl-C again to stop at once)\n")


def interrupt_requested() -> bool:
    """Whether an interrupt is pending in this process (or its driver)."""
    if _INTERRUPT.requested:
        return True
    ev = _INTERRUPT.shared
    if ev is not None and ev.is_set():
        _INTERRUPT.requested = True
    return _INTERRUPT.requested


def request_interrupt() -> None:
    """Ask the run in this process to stop at the next chunk boundary."""
    _INTERRUPT.requested = True


def check_interrupt() -> None:
    """Raise :class:`ExtractionInterrupted` if an interrupt is pending."""
    if interrupt_requested():
        raise ExtractionInterrupted()


@contextmanager
def interrupt_guard(announce: bool = True) -> Iterator[None]:
    """For the duration, SIGINT sets the interrupt flag instead of raising
    ``KeyboardInterrupt`` wherever the main thread happens to be (possibly
    inside a C library's callback, where Python ignores it); a second SIGINT
    raises ``KeyboardInterrupt``. The previous handler is restored and the
    flag cleared on exit. Nested guards, and guards outside the main thread
    (where Python cannot set signal handlers), change nothing."""
    if _INTERRUPT.owner is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        if _INTERRUPT.requested:
            raise KeyboardInterrupt
        _INTERRUPT.requested = True
        if announce:
            try:
                os.write(2, INTERRUPT_NOTICE)  # not sys.stderr: the handler may run inside its write
            except OSError:
                pass

    _INTERRUPT.requested = False
    _INTERRUPT.owner = "guard"
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        _INTERRUPT.owner = None
        _INTERRUPT.requested = False


def install_worker_interrupts(shared: Any = None) -> None:
    """In a pool worker process: SIGINT (the terminal sends it to the whole
    process group) only sets the flag, and ``shared`` (a multiprocessing
    Event the driver sets) is checked with it. Lasts for the process."""
    _INTERRUPT.owner = "worker"
    _INTERRUPT.shared = shared
    _INTERRUPT.requested = False
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda signum, frame: request_interrupt())


class _Unraisable:
    """Exceptions Python reported through ``sys.unraisablehook`` while a unit ran."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __len__(self) -> int:
        return len(self.errors)


@contextmanager
def _catch_unraisable() -> Iterator[_Unraisable]:
    seen = _Unraisable()
    previous = sys.unraisablehook

    def hook(u: Any) -> None:
        exc_type = u.exc_type or type(u.exc_value)
        seen.errors.append(f"{exc_type.__name__}: {u.exc_value}".strip().rstrip(":"))
        if issubclass(exc_type, KeyboardInterrupt):
            request_interrupt()  # an interrupt Python could not raise where it landed
        else:
            previous(u)

    sys.unraisablehook = hook
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


# --------------------------------------------------------------------------
# Workers


class LoadedExtractors:
    """Extractors loaded once per worker (a process, or a Ray actor)."""

    def __init__(self, job: ExtractionJob, names: Sequence[str] | None = None) -> None:
        from aanbench.plugin_manager import get_plugins
        from aanbench.weights import resolve

        plugins = get_plugins()
        self.extractors: dict[str, Extractor] = {}
        for name in names or job.extractors:
            ex = apply_sampling(plugins.extractor(name), job.sampling.get(name))
            ctx = LoadContext(device=job.device, weights=resolve(ex, Path(job.weights_dir)), batch_size=job.batch_size)
            ex.load(ctx)
            self.extractors[name] = ex
        self._group: DatasetGroup | None = None
        self._job = job

    def group(self) -> DatasetGroup:
        if self._group is None:
            self._group = FeatureStore(self._job.store_root).open_group(*self._job.group_path.split("/", 1))
        return self._group


def _reason(exc: BaseException) -> str:
    """An item's failure reason: an :class:`ItemError`'s message as is; any
    other exception (a plugin bug) with its type and the file:line it came
    from, so the report points at the code to fix."""
    if isinstance(exc, ItemError):
        return str(exc)
    from aanbench.output import where

    text = f"{type(exc).__name__}: {exc}"
    loc = where(exc)
    # where the engine itself raised (a wrapped error, e.g. from a C callback),
    # its own line helps nobody; a plugin's file:line does
    engine = str(Path(__file__).resolve().parent)
    if loc and not loc.startswith(engine):
        text += f" (at {loc})"
    return text[:500]


def _decode_for(item: Item, extractors: dict[str, Extractor]) -> tuple[dict[str, Media], dict[str, str]]:
    """Decode once for all extractors; if that fails, decode per extractor so
    (say) a file without audio still gets its video features."""
    requests = [ex.needs for ex in extractors.values()]
    try:
        media = decode_item(item, requests)
        return {n: media for n in extractors}, {}
    except ItemError as exc:
        if len(extractors) == 1:
            return {}, {n: str(exc) for n in extractors}
    out: dict[str, Media] = {}
    errs: dict[str, str] = {}
    for name, ex in extractors.items():
        try:
            out[name] = decode_item(item, [ex.needs])
        except ItemError as exc:
            errs[name] = str(exc)
    return out, errs


def _run_extractor(ex: Extractor, medias: list[Media], batch_size: int,
                   unraisable: _Unraisable | None = None) -> tuple[np.ndarray, list[str]]:
    """Rows for ``medias`` (NaN where failed) and a reason per row ('' if ok).
    A failing batch is retried item by item so one bad clip fails alone. A
    call during which Python reported an exception it could not raise (see
    the module's docstring) counts as failed; an interrupt raises
    :class:`ExtractionInterrupted`."""
    n = len(medias)
    out = np.full((n, ex.dim), np.nan, dtype=np.float32)
    reasons = [""] * n
    seen = unraisable if unraisable is not None else _Unraisable()

    def call(batch: list[Media]) -> np.ndarray:
        check_interrupt()
        before = len(seen)
        values = ex.extract(batch)
        check_interrupt()  # also set by a KeyboardInterrupt that landed in a callback
        if len(seen) > before:
            raise RuntimeError(f"error inside {ex.name} that Python could not raise: {seen.errors[before]}")
        arr = np.asarray(values, dtype=np.float32)
        if arr.shape != (len(batch), ex.dim):
            raise RuntimeError(f"extractor {ex.name} returned shape {arr.shape}, expected {(len(batch), ex.dim)}")
        return arr

    for b0 in range(0, n, max(1, batch_size)):
        batch = medias[b0 : b0 + batch_size]
        try:
            out[b0 : b0 + len(batch)] = call(batch)
        except Exception:
            for i, m in enumerate(batch):
                try:
                    out[b0 + i] = call([m])[0]
                except Exception as exc:
                    out[b0 + i] = np.nan
                    reasons[b0 + i] = _reason(exc)
    for i in range(n):
        if not reasons[i] and not np.isfinite(out[i]).all():
            reasons[i] = f"extractor {ex.name} produced non-finite values"
            out[i] = np.nan
    return out, reasons


def execute_unit(job: ExtractionJob, unit: WorkUnit, loaded: LoadedExtractors) -> UnitResult:
    """Compute one chunk for its extractors and write it (data, then done).

    Raises :class:`ExtractionInterrupted` when an interrupt is pending before
    an array's chunk is written; that array's chunk is then not written at
    all (arrays written before it keep their done chunk)."""
    if _INTERRUPT.owner is None:
        _INTERRUPT.requested = False  # no handler here (e.g. a Ray actor): a unit's own interrupt ends with it
    with _catch_unraisable() as unraisable:
        return _execute_unit(job, unit, loaded, unraisable)


def _execute_unit(job: ExtractionJob, unit: WorkUnit, loaded: LoadedExtractors, unraisable: _Unraisable) -> UnitResult:
    t0 = time.perf_counter()
    check_interrupt()
    res = UnitResult(unit=unit)
    exs = {n: loaded.extractors[n] for n in unit.extractors}
    items = job.items[unit.start : unit.stop]
    per_ex_media: dict[str, list[tuple[int, Media]]] = {n: [] for n in exs}
    reasons: dict[str, list[str]] = {n: [""] * len(items) for n in exs}
    td = time.perf_counter()
    for i, item in enumerate(items):
        check_interrupt()
        medias, errs = _decode_for(item, exs)
        for n in exs:
            if n in medias:
                per_ex_media[n].append((i, medias[n]))
            else:
                reasons[n][i] = errs.get(n, "not decoded")
    res.decode_seconds = time.perf_counter() - td
    group = loaded.group()
    rows = slice(unit.start, unit.stop)
    for n, ex in exs.items():
        values = np.full((len(items), ex.dim), np.nan, dtype=np.float32)
        idx = [i for i, _ in per_ex_media[n]]
        if idx:
            te = time.perf_counter()
            got, why = _run_extractor(ex, [m for _, m in per_ex_media[n]], job.batch_size, unraisable)
            res.extractor_seconds[n] = time.perf_counter() - te
            values[idx] = got
            for j, i in enumerate(idx):
                reasons[n][i] = why[j]
        ok = np.array([r == "" for r in reasons[n]], dtype=bool)
        check_interrupt()  # the commit point: nothing computed while an interrupt was pending is written
        group.feature(job.keys[n]).write_chunk(unit.chunk, rows, values, ok, reasons[n])
        res.ok[n] = int(ok.sum())
        for i, r in enumerate(reasons[n]):
            if r:
                res.failures.append(ItemFailure(items[i].id, n, r))
    res.seconds = time.perf_counter() - t0
    return res


def record_unit_failure(job: ExtractionJob, unit: WorkUnit, reason: str) -> None:
    """Mark a unit that could not be computed (it stays not-done, so a rerun retries it)."""
    group = FeatureStore(job.store_root).open_group(*job.group_path.split("/", 1))
    for n in unit.extractors:
        arr = group.feature(job.keys[n])
        if arr.done()[unit.chunk]:  # the worker finished this array's chunk before it was lost
            continue
        arr.mark_chunk_failed(slice(unit.start, unit.stop), reason)


# --------------------------------------------------------------------------
# Backends (implementations live in aanbench.backends)


class Backend(Protocol):
    """Runs units somewhere and calls ``on_result`` once per unit, in the driver."""

    name: str

    def run(self, job: ExtractionJob, units: Sequence[WorkUnit], on_result: Callable[[UnitResult], None]) -> None:
        ...
