"""The ``extract`` workflow: a dataset's features into the feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from aanbench.contracts import AanbenchError, Dataset
from aanbench.workflows._shared import extractor_names, resolve_dataset


def extract(
    dataset: str | Dataset,
    root: str | Path,
    store: str | Path,
    extractors: str | Sequence[str] | None = None,
    *,
    options: Sequence[str] | Mapping[str, Any] | None = None,
    backend: str = "local",
    workers: int | None = None,
    chunk_rows: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    weights_dir: str | Path | None = None,
    retry_failed: bool = False,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    on_planned: Callable[[Any, list[str], str], None] | None = None,
    on_progress: Callable[[Any], None] | None = None,
):
    """Extract ``dataset``'s items below ``root`` into ``store``: an
    :class:`aanbench.extraction.ExtractionOutcome` (``report``, ``failed``
    ``(item_id, extractor, reason)``, ``plan``, ``skipped_extractors``).

    ``extractors``: names (a list or ``"a,b"``), None for every installed
    extractor whose weights are present. ``workers``: processes (default 1)
    or, with ``backend="ray"``, actors per pool (default: as many as the
    cluster takes, one per CPU and one per GPU share). ``address`` and
    ``gpus_per_worker`` are options of ``backend="ray"``. The callbacks are
    :func:`aanbench.extraction.extract_dataset`'s: ``on_planned(plan,
    skipped_extractors, backend_name)`` once, ``on_progress(unit_result)``
    per chunk. Ctrl-C raises :class:`aanbench.extraction.ExtractionInterrupted`
    (the chunks written stay; the same call resumes)."""
    from aanbench.extraction import extract_dataset

    ds = resolve_dataset(dataset, options)
    backend_options: dict[str, Any] = {}
    if backend == "ray":
        backend_options = {"address": address, "gpus_per_worker": gpus_per_worker}
    elif address or gpus_per_worker:
        raise AanbenchError("--address and --gpus-per-worker are options of --backend ray")
    if workers is None and backend != "ray":
        workers = 1
    return extract_dataset(ds, Path(root), Path(store), extractor_names(extractors), backend=backend,
                           workers=workers, chunk_rows=chunk_rows, batch_size=batch_size, device=device,
                           weights_dir=Path(weights_dir) if weights_dir is not None else None,
                           retry_failed=retry_failed, backend_options=backend_options, on_planned=on_planned,
                           on_progress=on_progress)


def extract_summary(outcome: Any) -> dict[str, Any]:
    """The JSON summary of an extraction (``aanbench extract --json``): per
    array items ok / failed, chunks computed and already done; the failures."""
    report, failed, plan = outcome.report, outcome.failed, outcome.plan
    n = plan.group.n_items
    computed = chunks_computed(plan)
    arrays = []
    for name in report.extractors:
        nf = sum(1 for f in failed if f[1] == name)
        arrays.append({"extractor": name, "key": plan.job.keys[name], "items": n, "ok": n - nf, "failed": nf,
                       "chunks_computed": computed.get(name, 0),
                       "chunks_already_done": report.skipped_chunks.get(name, 0)})
    return {"store": str(plan.job.store_root), "group": plan.group.path, "dataset": report.dataset,
            "seconds": round(report.seconds, 3), "arrays": arrays, "chunks_failed": list(report.unit_errors),
            "failures": [{"item_id": i, "extractor": e, "reason": r} for i, e, r in failed]}


def chunks_computed(plan: Any) -> dict[str, int]:
    """Chunks computed by this run, per extractor."""
    computed: dict[str, int] = {}
    for u in plan.units:
        for e in u.extractors:
            computed[e] = computed.get(e, 0) + 1
    return computed


def idle_cpus_hint(plan: Any, backend: str) -> str | None:
    """A line for the plan when the local backend's one worker leaves CPUs
    idle on several chunks (how to use them), else None."""
    from aanbench.backends.local import LocalBackend
    from aanbench.cpus import usable_cpus

    if backend != LocalBackend(1).label or len(plan.units) < 2 or usable_cpus() < 2:
        return None
    return f"one chunk at a time on 1 of {usable_cpus()} CPUs: `-j N` extracts N at once (the same features)"
