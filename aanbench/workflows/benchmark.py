"""The ``benchmark`` workflow: every registry experiment whose features are
in the store, for every seed, then the leaderboard of these runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from aanbench.contracts import AanbenchError, Dataset
from aanbench.diagnostics import describe
from aanbench.workflows._shared import (
    check_feature_set,
    check_protocol,
    configure_experiment,
    plugins as get_plugins,
    registry as load_registry,
    resolve_dataset,
)
from aanbench.workflows.fits import fit_backend, one_blas_thread
from aanbench.workflows.run import ExperimentRun, check_format, default_leaderboard, missing_features


class Skip(tuple):
    """``(experiment, reason)`` of an experiment a benchmark does not run,
    with ``missing``: the extractors whose features the store lacks (empty
    when the reason is another, e.g. a model plugin not installed)."""

    missing: tuple[str, ...]
    short: str  # the reason in a few words, for a table

    def __new__(cls, experiment: str, reason: str, missing: Sequence[str] = (), short: str | None = None) -> "Skip":
        self = super().__new__(cls, (experiment, reason))
        self.missing = tuple(missing)
        self.short = short or reason.split(": ")[0]
        return self

    @property
    def experiment(self) -> str:
        return self[0]

    @property
    def reason(self) -> str:
        return self[1]


class NothingRan(AanbenchError):
    """A benchmark that ran nothing (every experiment skipped or failed):
    its message is a few short lines (:func:`nothing_ran`); ``skipped`` and
    ``failures`` say which and why."""

    def __init__(self, message: str, skipped: Sequence[Any] = (), failures: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.skipped = list(skipped)
        self.failures = list(failures)


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
    skipped: list[tuple[str, str]] = field(default_factory=list)  # Skip objects
    failures: list[RunFailure] = field(default_factory=list)
    resumed: list[ExperimentRun] = field(default_factory=list)  # of `runs`: found on disk, not retrained

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

    def resumed(self, run: ExperimentRun) -> None:
        """A run's results file is already there with the same configuration
        fingerprint: it is read, not retrained (``rerun=False``)."""

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
                          only: Sequence[str] | None = None, features: str | None = None,
                          protocol: str | None = None) -> tuple[list[Any], list[Skip]]:
    """The registry experiments a benchmark of ``ds`` runs, resolved for it
    (``datasets.<name>`` settings applied; on the feature set ``features``
    and with ``protocol`` when given), and a :class:`Skip` for each it
    skips: model plugin not installed, settings the dataset cannot take (a
    sequence model where the dataset declares no windows: EIMT16's temporal
    experiments run on ``eimt16-temporal``), or features not in the store (a
    model that reads no features, such as ``mean``, runs on any store).
    Every registry experiment is a candidate."""
    from aanbench.runner import resolve_settings
    from aanbench.store import FeatureStore

    reg = load_registry(registry)
    plugins = get_plugins()
    check_feature_set(features, reg)
    check_protocol(protocol)
    unknown = sorted(set(only or []) - set(reg.experiments))
    if unknown:
        raise AanbenchError(f"--experiments: no experiment {', '.join(unknown)} (see `aanbench experiments`)")
    group = FeatureStore(Path(store), mode="r").open_group(ds.name, ds.segmentation)
    run: list[Any] = []
    skipped: list[Skip] = []
    for name in sorted(reg.experiments):
        if only and name not in only:
            continue
        try:  # a single-modality experiment on a --features set without its modality
            exp = configure_experiment(reg.experiment(name, ds.name), reg, features=features, protocol=protocol,
                                       installed=plugins)
        except AanbenchError as exc:
            skipped.append(Skip(name, str(exc)))
            continue
        if exp.model not in plugins.models:
            skipped.append(Skip(name, f"model plugin {exp.model!r} is not installed"))
            continue
        try:  # e.g. a sequence model on a dataset that declares no windows
            resolve_settings(exp, plugins.models[exp.model], ds)
        except AanbenchError as exc:
            skipped.append(Skip(name, str(exc)))
            continue
        missing = missing_features(exp, group)
        if missing:
            skipped.append(Skip(name, f"features not in {store}: {', '.join(missing)} (feature set {exp.feature_set})",
                                missing))
            continue
        run.append(exp)
    return run, skipped


def existing_run(exp: Any, seed: int | None, ds: Dataset, group: Any, out: str | Path,
                 plugins: Any = None) -> ExperimentRun | None:
    """The results file of ``exp`` with ``seed`` under ``out`` when one is
    there with the configuration fingerprint this run would have
    (:func:`aanbench.runner.config_fingerprint`: model, dataset options and
    items, features, protocol, windows, parameters, and the stored rows left
    out as damaged: a run without them never stands for one with them, nor
    the other way round); else None. Planning
    reads the features but trains nothing; a run that cannot be planned is
    not found (running it reports why)."""
    import json

    from aanbench.runner import plan_run, planned_fingerprint, recorded_fingerprint, results_path
    from aanbench.results import RunResult

    if not results_path(Path(out), exp.name, ds.name, seed if seed is not None else exp.seed).is_file():
        return None  # no results for this seed at all: nothing to plan (a fingerprinted file sits beside this one)
    try:
        plan = plan_run(exp, ds, group, plugins or get_plugins(), seed, threads=1)
    except AanbenchError:
        return None
    fp = planned_fingerprint(plan)
    path = results_path(Path(out), exp.name, ds.name, plan.seed, fp)
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        doc = RunResult.from_payload(payload, str(path))
    except (OSError, ValueError, AanbenchError):
        return None  # damaged or of another kind: run again (the new file replaces it only if it is ours)
    if (doc.config_fingerprint != fp or recorded_fingerprint(doc) != fp  # a file of --skip-damaged written before
            or doc.experiment != exp.name or doc.seed != plan.seed):  # the fingerprint covered it: recomputed
        return None
    doc.file = str(path)
    return ExperimentRun(doc, path)


def benchmark(
    dataset: str | Dataset,
    store: str | Path,
    out: str | Path,
    leaderboard: str | Path | None = None,
    *,
    seeds: Sequence[int] | None = None,
    experiments: Sequence[str] | None = None,
    protocol: str | None = None,
    features: str | None = None,
    rerun: bool = False,
    fmt: str = "md",
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
    in ``fmt`` (``md``, ``csv`` or ``json``; ``leaderboard``, default
    ``leaderboards/<dataset>.<fmt>``; the figure beside it). ``protocol``
    overrides every experiment's (default: each experiment's own, else the
    dataset's); ``features`` runs every experiment on that feature set of
    the registry. Resumes: an experiment x seed whose results file is
    already under ``out`` with the same configuration fingerprint is read,
    not retrained (``events.resumed``), unless ``rerun``. ``backend``: where
    the fits run (``local``, or ``ray`` with ``address`` / ``workers``: every
    run submitted at once), or a fit backend object. A run that fails is
    reported and the others go on; nothing ran at all is an error. Damaged
    stored rows refuse the benchmark unless ``skip_damaged`` (see :func:`run`)."""
    from aanbench.leaderboard import write_leaderboard
    from aanbench.runner import write_results
    from aanbench.store import FeatureStore

    ev = events or BenchmarkEvents()
    check_format(fmt)
    check_protocol(protocol)  # a clear error for an unknown name, before any work
    fits = backend if not isinstance(backend, str) else fit_backend(
        backend, address=address, workers=workers, device=device, threads=threads)
    ds = resolve_dataset(dataset, options)
    exps, skipped = benchmark_experiments(ds, store, registry=registry, only=experiments, features=features,
                                          protocol=protocol)
    for sk in skipped:
        ev.skipped(sk[0], sk[1])
    grp = FeatureStore(Path(store), mode="r").open_group(ds.name, ds.segmentation)
    grp.check_dataset_config(ds.config())
    from aanbench.workflows.store import refuse_damaged

    refuse_damaged(grp, exps, skip_damaged)
    plugins = get_plugins()
    wanted = [(e, seed) for e in exps for seed in seeds or [e.seed]]
    resumed: list[ExperimentRun] = []
    runs = []
    for exp, seed in wanted:
        found = None if rerun else existing_run(exp, seed, ds, grp, out, plugins)
        if found is not None:
            resumed.append(found)
            ev.resumed(found)
        else:
            runs.append((exp, seed))
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
            got.command = command  # damaged rows left out: in got.skipped_damaged (and its fingerprint)
            written[i] = ExperimentRun(got, write_results(got, Path(out)))
            ev.finished(written[i])
        if per_run:
            ev.ended()

    if runs:
        if not per_run:
            ev.started(None, None)
        try:
            with one_blas_thread():
                fits.run(runs, ds, grp, plugins, sequential=sequential, on_start=on_start,
                         on_progress=ev.progress, on_result=on_result)
        finally:
            if not per_run:
                ev.ended()
    done = resumed + [r for r in written if r is not None]
    if not done:
        raise NothingRan(nothing_ran(ds.name, skipped, failures), skipped, failures)
    lb = Path(leaderboard) if leaderboard is not None else default_leaderboard(ds.name, fmt)
    md, fig = write_leaderboard(ds.name, [r.doc for r in done], lb, group=group, command=command, fmt=fmt)
    return BenchmarkResult(md, fig, done, list(skipped), failures, resumed)


def nothing_ran(dataset: str, skipped: Sequence[tuple[str, str]], failures: Sequence[RunFailure]) -> str:
    """The error of a benchmark that ran nothing, in a few short lines: the
    missing extractors and how many experiments each stopped, the other
    skips and the failures."""
    lines = [f"benchmark {dataset}: nothing ran"]
    by_missing: dict[tuple[str, ...], list[str]] = {}
    for sk in skipped:
        missing = getattr(sk, "missing", ())
        if missing:
            by_missing.setdefault(tuple(missing), []).append(sk[0])
        else:
            lines.append(f"  {sk[0]}: {sk[1]}")
    for missing, names in by_missing.items():
        lines.append(f"  {len(names)} {'experiment needs' if len(names) == 1 else 'experiments need'} features "
                     f"not in the store: {', '.join(missing)}")
    for f in failures:
        lines.append(f"  {f.experiment} (seed {f.seed}) failed: {f.reason}")
    if by_missing:
        lines.append("  extract them (`aanbench extract`), or run the experiments on other features, e.g. "
                     "--features weightfree-both")
    if len(lines) == 1:
        lines.append("  the registry has no experiments")
    return "\n".join(lines)
