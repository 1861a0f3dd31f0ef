"""Extraction, the driver: plan the work as chunks and run it on a backend.

The planner knows nothing of where work runs: :func:`plan_extraction` lists
the chunks still to compute as an :class:`~aanbench.extraction_job.ExtractionJob`
and its :class:`~aanbench.extraction_job.WorkUnit` list; :func:`run_plan` hands
them to a backend (:mod:`aanbench.backends`), which runs
:func:`~aanbench.extraction_job.execute_unit` for each wherever it likes.
The job protocol (and how interrupts and errors Python could not raise are
handled) lives in :mod:`aanbench.extraction_job`, which the backends import;
this module imports the backends, never the reverse. Its names are
re-exported here for callers of the driver.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from aanbench.contracts import AanbenchError, Extractor, Item
from aanbench.extraction_job import (  # noqa: F401  (re-exported: the job protocol, for callers of the driver)
    LIBRARIES,
    Backend,
    ExtractionInterrupted,
    ExtractionJob,
    ItemFailure,
    LoadedExtractors,
    UnitResult,
    WorkUnit,
    apply_sampling,
    check_interrupt,
    execute_unit,
    feature_key,
    frames_for_dataset,
    install_worker_interrupts,
    interrupt_guard,
    interrupt_requested,
    library_versions,
    provenance_for,
    record_unit_failure,
    request_interrupt,
)
from aanbench.store import DatasetGroup, FeatureStore


@dataclass
class Plan:
    group: DatasetGroup
    job: ExtractionJob
    units: list[WorkUnit]
    skipped_chunks: dict[str, int]  # extractor -> chunks already done
    # complete arrays made by other versions, read as they are: key -> what differs ("aanbench-decoder 2 -> 3")
    kept_as_made: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_items_todo(self) -> int:
        return sum(u.n_items for u in self.units)


def provenance_changes_in(group: Any, names: Sequence[str], plugins: Any, *,
                          video_frames: int | None = None) -> dict[str, list[str]]:
    """For each installed extractor of ``names`` whose array
    (``name@version``) ``group`` holds: what differs between the provenance
    it was made with and the one an extraction by this installation would
    write (the libraries, the decoder's revision, the config, the declared
    weights), as :meth:`aanbench.store.FeatureArray.provenance_changes`
    words it. Arrays that match are left out, and names not installed.
    ``video_frames``: the dataset's frames per item, as
    :func:`plan_extraction` applies them."""
    keys = set(group.feature_keys())
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        if name not in plugins.extractors:
            continue
        ex = plugins.extractors[name]
        ex = apply_sampling(ex, frames_for_dataset(ex, video_frames))
        key = feature_key(ex)
        if key not in keys:
            continue
        changes = group.feature(key).provenance_changes(provenance_for(ex, {}))
        if changes:
            out[key] = changes
    return out


def plan_extraction(
    store: FeatureStore,
    dataset: str,
    items: Sequence[Item],
    extractors: Sequence[Extractor],
    weight_paths: dict[str, dict[str, Path]],
    *,
    segmentation: str = "default",
    chunk_rows: int,
    weights_dir: str,
    device: str = "cpu",
    batch_size: int = 8,
    targets: Sequence[str] = (),
    dataset_version: str = "",
    retry_failed: bool = False,
    plugin_versions: dict[str, str] | None = None,
    dataset_config: dict[str, Any] | None = None,
    video_frames: int | None = None,
) -> Plan:
    """Create/open the store arrays (checking provenance) and list the chunks to compute.

    ``video_frames``: the dataset's frames per item, applied to video
    extractors that can resample (see :func:`frames_for_dataset`)."""
    sampling = {ex.name: frames_for_dataset(ex, video_frames) for ex in extractors}
    sampling = {k: v for k, v in sampling.items() if v}
    extractors = [apply_sampling(ex, sampling.get(ex.name)) for ex in extractors]
    group = store.ensure_group(dataset, items, segmentation=segmentation, chunk_rows=chunk_rows,
                               targets=targets, dataset_version=dataset_version, dataset_config=dataset_config)
    todo: dict[int, list[str]] = {}
    skipped: dict[str, int] = {}
    keys: dict[str, str] = {}
    stored = set(group.feature_keys())
    kept: dict[str, list[str]] = {}
    for ex in extractors:
        key = feature_key(ex)
        keys[ex.name] = key
        prov = provenance_for(ex, weight_paths.get(ex.name, {}), (plugin_versions or {}).get(ex.name, ""))
        if key in stored and not retry_failed:
            existing = group.feature(key)
            done = existing.done()
            if done.all():  # complete: nothing is written into it, so nothing is mixed (it may have been made by
                skipped[ex.name] = int(done.sum())  # other library versions: adding an extractor still works)
                changes = existing.provenance_changes(prov)
                if changes:
                    kept[key] = changes
                continue
        arr = group.create_feature(key, ex.dim, prov)
        done = arr.done()
        if retry_failed:
            ok = arr.ok()
            for c in range(group.n_chunks):
                if done[c] and not ok[group.chunk_slice(c)].all():
                    done[c] = False
        skipped[ex.name] = int(done.sum())
        for c in np.flatnonzero(~done):
            todo.setdefault(int(c), []).append(ex.name)
    units = []
    for c in sorted(todo):
        rows = group.chunk_slice(c)
        units.append(WorkUnit(c, rows.start, rows.stop, tuple(todo[c])))
    job = ExtractionJob(
        store_root=str(store.root), group_path=group.path, items=list(items),
        extractors=[ex.name for ex in extractors], keys=keys, weights_dir=str(weights_dir),
        device=device, batch_size=batch_size, sampling=sampling,
    )
    return Plan(group=group, job=job, units=units, skipped_chunks=skipped, kept_as_made=kept)



@dataclass
class ExtractionReport:
    dataset: str
    group_path: str
    extractors: list[str]
    units_run: int = 0
    units_failed: int = 0
    items_ok: dict[str, int] = field(default_factory=dict)
    skipped_chunks: dict[str, int] = field(default_factory=dict)
    failures: list[ItemFailure] = field(default_factory=list)
    unit_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def any_failed(self) -> bool:
        return bool(self.failures or self.unit_errors)


def run_plan(plan: Plan, backend: Backend, on_progress: Callable[[UnitResult], None] | None = None) -> ExtractionReport:
    """Run a plan on a backend under the group's writer lock.

    Raises :class:`ExtractionInterrupted` (with the number of chunks this run
    saved) on an interrupt; with a backend whose ``handles_interrupts`` is
    true, SIGINT is handled as :func:`interrupt_guard` says."""
    t0 = time.perf_counter()
    rep = ExtractionReport(dataset=plan.group.attrs.get("dataset", ""), group_path=plan.group.path,
                           extractors=list(plan.job.extractors), skipped_chunks=dict(plan.skipped_chunks))

    def on_result(res: UnitResult) -> None:
        rep.units_run += 1
        if res.error:
            rep.units_failed += 1
            first = res.error.strip().splitlines()[0]
            rep.unit_errors.append(f"chunk {res.unit.chunk} (items {res.unit.start}-{res.unit.stop - 1}): {first}")
            record_unit_failure(plan.job, res.unit, f"chunk failed: {first}")
        for n, k in res.ok.items():
            rep.items_ok[n] = rep.items_ok.get(n, 0) + k
        rep.failures.extend(res.failures)
        if on_progress:
            on_progress(res)

    def saved() -> int:
        return rep.units_run - rep.units_failed

    guard = interrupt_guard() if getattr(backend, "handles_interrupts", False) else _no_guard()
    with guard, plan.group.writer_lock():
        try:
            check_interrupt()
            backend.run(plan.job, plan.units, on_result)
            check_interrupt()
        except KeyboardInterrupt:  # ours, or a second Ctrl-C, or a backend without the guard
            raise ExtractionInterrupted(saved()) from None
    rep.seconds = time.perf_counter() - t0
    return rep


def default_chunk_rows(n_items: int, workers: int | None) -> int:
    """Items per chunk when none is asked for: ``DEFAULT_CHUNK_ROWS`` (32),
    or, with several workers, fewer where that would leave some without a
    chunk (a chunk is the unit of work: 9 films with 2 workers make chunks
    of 5, not one chunk of 9 that one worker extracts while the other waits)."""
    from aanbench.store import DEFAULT_CHUNK_ROWS

    if not workers or int(workers) <= 1:
        return DEFAULT_CHUNK_ROWS
    return max(1, min(DEFAULT_CHUNK_ROWS, math.ceil(max(1, int(n_items)) / int(workers))))


@contextmanager
def _no_guard() -> Iterator[None]:
    yield


# --------------------------------------------------------------------------
# The whole job, for the CLI, `curve`, `demo` and notebooks


def select_extractors(
    names: Sequence[str] | None, weights_folder: Path
) -> tuple[list[Extractor], dict[str, dict[str, Path]], list[str]]:
    """The extractors to run and their verified weight paths.

    ``names`` given: exactly those, and a missing or wrong weight file is an
    error naming the file, its SHA-256 and where to get it. ``None``: every
    installed extractor whose weights are present, except alternative
    recipes of a network (``by_default = False``, e.g. ``i3d-kinetics``),
    which run only when named; the others are returned as skipped (third
    value)."""
    from aanbench.plugin_manager import get_plugins
    from aanbench.weights import resolve

    plugins = get_plugins()
    paths: dict[str, dict[str, Path]] = {}
    if names:
        exs = [plugins.extractor(n) for n in names]
        for ex in exs:
            paths[ex.name] = resolve(ex, weights_folder)  # raises with the file, SHA-256 and where to put it
        return exs, paths, []
    exs, skipped = [], []
    for ex in sorted(plugins.extractors.values(), key=lambda e: e.name):
        if not getattr(ex, "by_default", True):
            continue
        try:
            paths[ex.name] = resolve(ex, weights_folder)
            exs.append(ex)
        except AanbenchError:
            skipped.append(ex.name)
    if not exs:
        raise AanbenchError("no extractor is usable (all need weights that are missing; see `aanbench weights`)")
    return exs, paths, skipped


@dataclass
class ExtractionOutcome:
    """What :func:`extract_dataset` did: the run's report, the plan, and every
    row of the selected extractors that is not ok in the store (this run's
    failures and earlier ones), as ``(item_id, extractor, reason)``."""

    report: ExtractionReport
    plan: Plan
    failed: list[tuple[str, str, str]]
    skipped_extractors: list[str]


def extract_dataset(
    dataset: Any,
    root: Path,
    store_path: Path,
    extractors: Sequence[str] | None = None,
    *,
    backend: str = "local",
    workers: int = 1,
    chunk_rows: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    weights_dir: Path | None = None,
    retry_failed: bool = False,
    backend_options: dict[str, Any] | None = None,
    on_planned: Callable[[Plan, list[str], str], None] | None = None,
    on_progress: Callable[[UnitResult], None] | None = None,
) -> ExtractionOutcome:
    """Extract ``dataset``'s items below ``root`` into the store at ``store_path``.

    ``extractors``: names, or ``None`` for every extractor whose weights are
    present. Resumes: chunks already done are not recomputed.
    ``on_planned(plan, skipped_extractors, backend_label)`` (its name, and
    for Ray its workers) is called once the
    work is known, ``on_progress(unit_result)`` once per finished chunk.
    ``chunk_rows``: items per chunk when the store group is created (fixed
    after); ``None``: :func:`default_chunk_rows`.

    Ctrl-C (SIGINT) stops the run at the next item: the chunk in flight is
    discarded and :class:`ExtractionInterrupted` says how many chunks this
    run saved; the same call resumes (see :func:`interrupt_guard`)."""
    from aanbench.backends import get_backend

    be = get_backend(backend, workers=workers, **(backend_options or {}))
    with interrupt_guard() if getattr(be, "handles_interrupts", False) else _no_guard():
        try:
            return _extract_dataset(dataset, root, store_path, extractors, be, chunk_rows=chunk_rows, batch_size=batch_size, device=device,
                                    weights_dir=weights_dir, retry_failed=retry_failed,
                                    on_planned=on_planned, on_progress=on_progress)
        except ExtractionInterrupted:
            raise
        except KeyboardInterrupt:  # before the work started (loading, planning)
            raise ExtractionInterrupted(0) from None


def _extract_dataset(dataset: Any, root: Path, store_path: Path, extractors: Sequence[str] | None, be: Any, *,
                     chunk_rows: int | None, batch_size: int, device: str, weights_dir: Path | None,
                     retry_failed: bool, on_planned: Callable[[Plan, list[str], str], None] | None,
                     on_progress: Callable[[UnitResult], None] | None) -> ExtractionOutcome:
    from aanbench.plugin_manager import get_plugins
    from aanbench.weights import weights_dir as wdir

    folder = wdir(weights_dir)
    exs, paths, skipped = select_extractors(extractors, folder)
    items = dataset.items(Path(root))
    prepare = getattr(be, "prepare", None)
    if prepare is not None:  # Ray: start the cluster and load the workers while the driver plans
        prepare(exs, weights_dir=str(folder), device=device, batch_size=batch_size,
                video_frames=getattr(dataset, "video_frames", None))
    if chunk_rows is None:  # after prepare: a Ray backend sized by its cluster knows its workers then
        chunk_rows = default_chunk_rows(len(items), getattr(be, "resolved_workers", None) or getattr(be, "workers", None))
    try:
        store = FeatureStore(store_path)
        plugins = get_plugins()
        plan = plan_extraction(
            store, dataset.name, items, exs, paths, segmentation=dataset.segmentation, chunk_rows=chunk_rows,
            weights_dir=str(folder), device=device, batch_size=batch_size, targets=dataset.targets,
            dataset_version=dataset.version, retry_failed=retry_failed, dataset_config=dataset.config(),
            plugin_versions={e.name: plugins.version_of("extractor", e.name) for e in exs},
            video_frames=getattr(dataset, "video_frames", None),
        )
        if on_planned:
            on_planned(plan, skipped, getattr(be, "label", be.name))
        check_interrupt()
        report = run_plan(plan, be, on_progress)
    except BaseException:
        close = getattr(be, "close", None)  # what prepare() started, if run() never came
        if close is not None:
            close()
        raise
    group = store.open_group(dataset.name, dataset.segmentation)
    ids = group.item_ids()
    failed: list[tuple[str, str, str]] = []
    for ex in exs:
        arr = group.feature(plan.job.keys[ex.name])
        ok, errs = arr.ok(), arr.errors()
        for i in np.flatnonzero(~ok):
            failed.append((ids[i], ex.name, str(errs[i]) or "not computed"))
    return ExtractionOutcome(report=report, plan=plan, failed=failed, skipped_extractors=skipped)
