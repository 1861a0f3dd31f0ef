"""The ``benchmark`` workflow: every registry experiment whose features are
in the store, for every seed, then the leaderboard of these runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from aanbench.contracts import AanbenchError, Dataset
from aanbench.diagnostics import describe
from aanbench.workflows._shared import plugins as get_plugins, registry as load_registry, resolve_dataset
from aanbench.workflows.fits import fit_backend, one_blas_thread
from aanbench.workflows.run import ExperimentRun


@dataclass
class RunFailure:
    """A run that failed: its experiment, seed, the reason and the exception."""

    experiment: str
    seed: int | None
    reason: str
    error: BaseException | None = None


@dataclass
class BenchmarkResult:
    """What :func:`benchmark` did: the leaderboard (markdown and figure), the
    runs written, the experiments skipped (with the reason) and the runs
    that failed."""

    leaderboard: Path
    figure: Path
    runs: list[ExperimentRun]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failures: list[RunFailure] = field(default_factory=list)

    @property
    def docs(self) -> list[dict[str, Any]]:
        return [r.doc for r in self.runs]

    @property
    def problems(self) -> list[tuple[str, str]]:
        """``(experiment, reason)`` of every skipped experiment, then of every
        failed run (reason ``failed: ...``)."""
        return list(self.skipped) + [(f.experiment, f"failed: {f.reason}") for f in self.failures]

    @property
    def failed(self) -> bool:
        return bool(self.failures)


class BenchmarkEvents:
    """What :func:`benchmark` reports as it goes; every method does nothing
    here: override those you need (the CLI draws its progress bars with them)."""

    def skipped(self, experiment: str, reason: str) -> None:
        """``experiment`` is not run (its model plugin or features are missing)."""

    def started(self, experiment: str | None, seed: int | None) -> None:
        """A run begins (local fits); ``(None, None)``: every run begins at once (Ray)."""

    def progress(self, done: int, total: int, what: str) -> None:
        """Fits done of ``total`` of the run (local) or of every run (Ray)."""

    def finished(self, run: ExperimentRun) -> None:
        """A run's results file is written."""

    def failed(self, failure: RunFailure) -> None:
        """A run failed; the others go on."""

    def ended(self) -> None:
        """The run begun at the last :meth:`started` is over (written or failed)."""


def benchmark_experiments(ds: Dataset, store: str | Path, *, registry: str | Path | None = None,
                          only: Sequence[str] | None = None) -> tuple[list[Any], list[tuple[str, str]]]:
    """The registry experiments a benchmark of ``ds`` runs, resolved for it
    (``datasets.<name>`` settings applied), and ``(experiment, reason)`` for
    those it skips: model plugin not installed, or features not in the store.
    Every registry experiment is a candidate; one whose features (as resolved
    for the dataset) are not in the store is skipped."""
    from aanbench.store import FeatureStore

    reg = load_registry(registry)
    plugins = get_plugins()
    unknown = sorted(set(only or []) - set(reg.experiments))
    if unknown:
        raise AanbenchError(f"--experiments: no experiment {', '.join(unknown)} (see `aanbench experiments`)")
    group = FeatureStore(Path(store), mode="r").open_group(ds.name, ds.segmentation)
    run, skipped = [], []
    for name in sorted(reg.experiments):
        if only and name not in only:
            continue
        exp = reg.experiment(name, ds.name)
        if exp.model not in plugins.models:
            skipped.append((name, f"model plugin {exp.model!r} is not installed"))
            continue
        missing = []
        for f in exp.features:
            installed = plugins.extractors.get(f)
            try:
                group.resolve_feature(f, installed.version if installed else None)
            except AanbenchError:
                missing.append(f)
        if missing:
            skipped.append((name, f"features not in {store}: {', '.join(missing)} (feature set {exp.feature_set})"))
            continue
        run.append(exp)
    return run, skipped


def benchmark(
    dataset: str | Dataset,
    store: str | Path,
    out: str | Path,
    leaderboard: str | Path | None = None,
    *,
    seeds: Sequence[int] | None = None,
    experiments: Sequence[str] | None = None,
    protocol: str | None = None,
    group: str | None = None,
    registry: str | Path | None = None,
    options: Sequence[str] | Mapping[str, Any] | None = None,
    sequential: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    backend: str | Any = "local",
    address: str | None = None,
    workers: int | None = None,
    command: str = "",
    events: BenchmarkEvents | None = None,
    skip_damaged: bool = False,
) -> BenchmarkResult:
    """Run every experiment :func:`benchmark_experiments` finds (or only
    ``experiments``), for each of ``seeds`` (default: the experiment's own),
    write each results file under ``out`` and the leaderboard of these runs
    (``leaderboard``, default ``leaderboards/<dataset>.md``; the figure
    beside it). ``protocol`` overrides every experiment's. ``backend``: where
    the fits run (``local``, or ``ray`` with ``address`` / ``workers``: every
    run submitted at once), or a fit backend object. A run that fails is
    reported and the others go on; nothing ran at all is an error. Damaged
    stored rows refuse the benchmark unless ``skip_damaged`` (see :func:`run`)."""
    from aanbench.leaderboard import write_leaderboard
    from aanbench.protocols import get_protocol
    from aanbench.runner import write_results
    from aanbench.store import FeatureStore

    ev = events or BenchmarkEvents()
    fits = backend if not isinstance(backend, str) else fit_backend(
        backend, address=address, workers=workers, device=device, threads=threads)
    ds = resolve_dataset(dataset, options)
    if protocol is not None:
        get_protocol(protocol)  # a clear error for an unknown name, before any work
    exps, skipped = benchmark_experiments(ds, store, registry=registry, only=experiments)
    for name, why in skipped:
        ev.skipped(name, why)
    grp = FeatureStore(Path(store), mode="r").open_group(ds.name, ds.segmentation)
    grp.check_dataset_config(ds.config())
    from aanbench.workflows.store import refuse_damaged

    damage = refuse_damaged(grp, exps, skip_damaged)
    runs = [(e, seed) for e in (replace(e, protocol=protocol) if protocol is not None else e for e in exps)
            for seed in seeds or [e.seed]]
    written: list[ExperimentRun | None] = [None] * len(runs)
    failures: list[RunFailure] = []
    per_run = fits.name != "ray"

    def on_start(i: int) -> None:
        ev.started(runs[i][0].name, runs[i][1])

    def on_result(i: int, got: Any) -> None:
        exp, seed = runs[i]
        if isinstance(got, BaseException):
            why = str(got) if isinstance(got, AanbenchError) else describe(got)
            failure = RunFailure(exp.name, seed, why, got)
            failures.append(failure)
            ev.failed(failure)
        else:
            got.command = command
            used = {f.get("key") for f in got.features or []}
            if any(d["array"] in used for d in damage):
                got.extra["skipped_damaged"] = [d for d in damage if d["array"] in used]
            written[i] = ExperimentRun(got, write_results(got, Path(out)))
            ev.finished(written[i])
        if per_run:
            ev.ended()

    if runs:
        if not per_run:
            ev.started(None, None)
        try:
            with one_blas_thread():
                fits.run(runs, ds, grp, get_plugins(), sequential=sequential, on_start=on_start,
                         on_progress=ev.progress, on_result=on_result)
        finally:
            if not per_run:
                ev.ended()
    done = [r for r in written if r is not None]
    if not done:
        why = "; ".join(f"{n}: {r}" for n, r in skipped + [(f.experiment, f"failed: {f.reason}") for f in failures])
        raise AanbenchError(f"benchmark {ds.name}: nothing ran ({why or 'the registry has no experiments'})")
    lb = Path(leaderboard) if leaderboard is not None else Path("leaderboards") / f"{ds.name}.md"
    md, fig = write_leaderboard(ds.name, [r.doc for r in done], lb, group=group, command=command)
    return BenchmarkResult(md, fig, done, skipped, failures)
