"""The ``demo`` workflow: everything on the generated demo dataset, in five
steps: make the clips, extract the weight-free features, benchmark every
registry experiment with demo settings (leave-one-movie-out), the
leaderboard, and the emotion curve of the test movies joined into one film."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aanbench.contracts import AanbenchError
from aanbench.store import ProvenanceMismatch
from aanbench.workflows._shared import plugins as get_plugins, registry as load_registry
from aanbench.workflows.benchmark import BenchmarkEvents, BenchmarkResult, benchmark
from aanbench.workflows.curve import demo_curve
from aanbench.workflows.extract import extract

DEMO_PROTOCOL = "leave-one-group-out"  # every movie tests once: 120 predictions from 10 movies by default
DEFAULT_WORKDIR = Path(".aanbench-demo")


class DemoEvents(BenchmarkEvents):
    """What :func:`demo` reports as it goes (every method does nothing here;
    the benchmark's events are :class:`BenchmarkEvents`')."""

    def step(self, number: int, title: str) -> None:
        """Step ``number`` (1 to 5) begins."""

    def generating(self, done: int, total: int) -> None:
        """Clips made of ``total``."""

    def generated(self, data: Path) -> None:
        """The demo dataset is in ``data``."""

    def extract_planned(self, plan: Any, skipped: list[str], backend: str) -> None:
        """:func:`aanbench.extraction.extract_dataset`'s ``on_planned``."""

    def store_replaced(self, reason: str, moved: list[tuple[Path, Path]]) -> None:
        """The demo's stores were made by other versions of the libraries
        (``reason``: what changed) and moved aside (``(store, new place)``): extracted again,
        every experiment and the curve's model trained again."""

    def extract_progress(self, unit: Any) -> None:
        """A chunk of items is extracted."""

    def extracted(self, outcome: Any) -> None:
        """The features are in the store (an ``ExtractionOutcome``)."""

    def benchmarked(self, result: BenchmarkResult) -> None:
        """The benchmark and its leaderboard are written."""

    def curve_progress(self, unit: Any) -> None:
        """A chunk of the film's windows is extracted (only when the curve is
        drawn after the training, in this process)."""

    def training(self, experiments: int, at_a_time: int) -> None:
        """Step 3 trains up to ``at_a_time`` runs at once (of ``experiments``
        experiments, some perhaps resumed): the benchmark's ``started``
        events then overlap, each run's ``finished`` (or ``failed``)
        follows its own ``started``."""


@dataclass
class DemoResult:
    """Where the demo put things and what each step gave."""

    data: Path
    store: Path
    extraction: Any
    benchmark: BenchmarkResult
    curve: Any
    timings: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds): where the time went

    @property
    def failed(self) -> bool:
        """Some items, a run or some curve windows failed (the demo exits 1)."""
        return bool(self.extraction.failed or self.curve.failed or self.benchmark.failed)


def demo_experiments(registry: Path | None = None) -> list[str]:
    """The registry experiments with demo settings."""
    reg = load_registry(registry)
    return sorted(n for n, e in reg.experiments.items() if "demo" in e.get("datasets", {}))


def demo_prerequisites(generate: Any, experiments: list[str], workdir: Path, leaderboard: Path) -> list[str]:
    """Everything `demo` needs, checked before the clips are made: the
    registry and its demo experiments, their model and extractor plugins
    (weight-free), and writable output folders. Returns the extractor names;
    raises one error listing every problem."""
    problems: list[str] = []
    if generate is None:
        problems.append("the demo dataset plugin cannot generate its data")
    plugins = get_plugins()
    features: set[str] = set()
    try:
        reg = load_registry()
    except AanbenchError as exc:
        reg = None
        problems.append(str(exc))
    for e in experiments if reg is not None else []:
        try:
            exp = reg.experiment(e, "demo")
        except AanbenchError as exc:
            problems.append(str(exc))
            continue
        if exp.model not in plugins.models:
            problems.append(f"experiment {e}: model plugin {exp.model!r} is not installed (see `aanbench plugins`)")
        features.update(exp.features)
    for name in sorted(features):
        ex = plugins.extractors.get(name)
        if ex is None:
            problems.append(f"extractor {name!r} is not installed or failed to load (see `aanbench plugins`)")
        elif getattr(ex, "weights", ()):
            problems.append(f"extractor {name!r} needs weight files; the demo uses weight-free extractors only")
    for folder in (workdir, leaderboard.parent):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".aanbench-write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            problems.append(f"{folder}: cannot write here ({exc.strerror or exc}); use --workdir / --leaderboard")
    if problems:
        raise AanbenchError("demo cannot start:\n  " + "\n  ".join(problems))
    return sorted(features)


class _Timed(BenchmarkEvents):
    """Passes the benchmark's events on to ``inner`` and notes when the runs ended (the boards follow)."""

    def __init__(self, inner: BenchmarkEvents) -> None:
        self.inner = inner
        self.runs_ended: float | None = None

    def skipped(self, experiment: str, reason: str) -> None:
        self.inner.skipped(experiment, reason)

    def resumed(self, run: Any) -> None:
        self.inner.resumed(run)

    def started(self, experiment: str | None, seed: int | None) -> None:
        self.inner.started(experiment, seed)

    def progress(self, done: int, total: int, what: str) -> None:
        self.inner.progress(done, total, what)

    def finished(self, run: Any) -> None:
        self.inner.finished(run)

    def failed(self, failure: Any) -> None:
        self.inner.failed(failure)

    def ended(self) -> None:
        self.runs_ended = time.perf_counter()
        self.inner.ended()


def run_priority(plugins: Any, results: Path, experiments: list[str]) -> Callable[[Any], float]:
    """The order the demo starts its runs in (:class:`ProcessFits`'
    ``priority``): longest first, so that a long run does not start last
    and leave a worker idle. The seconds of each experiment's previous run
    when every one of ``experiments`` has a results file under ``results``,
    else a rough rank: sequence models trained one fit at a time (lstm,
    bilstm), then the other sequence models, then the rest."""
    import json

    seconds: dict[str, float] = {}
    for f in sorted(Path(results).glob("demo/*/seed*.json")):
        try:
            d = json.loads(f.read_text())
            seconds[str(d["experiment"])] = max(seconds.get(str(d["experiment"]), 0.0), float(d["seconds"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if experiments and all(n in seconds for n in experiments):
        return lambda exp: seconds.get(exp.name, 0.0)

    def rank(exp: Any) -> float:
        spec = plugins.models.get(exp.model)
        if getattr(spec, "input", "rows") != "sequences":
            return 0.0
        return 1.0 if getattr(spec, "stackable", False) else 2.0

    return rank


def _run_seconds(run: Any) -> float:
    """A run's own seconds, as its results document records them."""
    doc = run.doc
    sec = doc.get("seconds") if isinstance(doc, dict) else getattr(doc, "seconds", None)
    return float(sec or 0.0)


def _curve_beside(workdir: Path, store: Path, data: Path, rerun: bool) -> tuple[Any, float]:
    """The demo's curve as a job of the training pool (one extraction
    worker: the pool's other worker trains meanwhile); returns the curve and
    its wall seconds."""
    t = time.perf_counter()
    fc = demo_curve(workdir, store, data=data, workers=1, retrain=rerun)
    return fc, time.perf_counter() - t


def extract_demo_store(ds: Any, data: Path, store: Path, features: list[str], *, workers: int = 1,
                       on_planned: Callable[..., None] | None = None,
                       on_progress: Callable[[Any], None] | None = None,
                       on_replaced: Callable[[str, list], None] | None = None) -> tuple[Any, tuple[str, list] | None]:
    """The demo's features in ``store`` (chunks of 16 clips). A store made by
    other versions of the libraries (after an upgrade: the store refuses to
    mix them) is the demo's own cache: it is moved aside to
    ``store.previous``, with the curve's ``store-curve``, and extracted
    again. Returns the extraction's outcome and, where the store was
    replaced, ``(what changed, [(store, moved to), ...])``, also given to
    ``on_replaced`` before the extraction starts again."""
    def run() -> Any:
        return extract(ds, data, store, features, workers=workers, chunk_rows=16, on_planned=on_planned,
                       on_progress=on_progress)

    def replace(changes: str) -> tuple[str, list]:
        replaced = (changes, _move_aside([store, store.with_name(store.name + "-curve")]))
        if on_replaced is not None:
            on_replaced(*replaced)
        return replaced

    stale = _stale_arrays(ds, store, features)  # complete arrays are read, not written: extract() would not refuse
    if stale:
        replaced = replace(", ".join(stale))
        return run(), replaced
    try:
        return run(), None
    except ProvenanceMismatch as exc:  # an array half done by other versions
        replaced = replace(", ".join(exc.changes) or str(exc))
        return run(), replaced


def _stale_arrays(ds: Any, store: Path, features: list[str]) -> list[str]:
    """What differs (``aanbench-decoder 2 -> 3``, ...) between the demo
    store's arrays of ``features`` and what this installation would write."""
    from aanbench.extraction import provenance_changes_in
    from aanbench.plugin_manager import get_plugins
    from aanbench.store import FeatureStore

    if not (Path(store) / "zarr.json").is_file():
        return []
    try:
        group = FeatureStore(store, mode="r").open_group(ds.name, ds.segmentation)
    except AanbenchError:
        return []
    changes = provenance_changes_in(group, features, get_plugins(), video_frames=getattr(ds, "video_frames", None))
    return list(dict.fromkeys(c for per in changes.values() for c in per))


def _move_aside(stores: list[Path]) -> list[tuple[Path, Path]]:
    """Rename each existing store ``S`` to ``S.previous`` (replacing an older
    one there); ``(S, S.previous)`` for each moved."""
    moved = []
    for s in stores:
        if s.exists():
            old = s.with_name(s.name + ".previous")
            if old.exists():
                shutil.rmtree(old)
            s.rename(old)
            moved.append((s, old))
    return moved


def demo(workdir: str | Path = DEFAULT_WORKDIR, leaderboard: str | Path = Path("leaderboards/demo.md"), *,
         clips: int = 120, seed: int = 0, workers: int = 1, rerun: bool = False,
         events: DemoEvents | None = None) -> DemoResult:
    """The five steps of ``aanbench demo`` (see the module's docstring) in
    ``workdir`` (``data/``, ``store/``, ``results/``, ``curve/``); the
    leaderboard goes to ``leaderboard``. Every prerequisite is checked
    first. Idempotent: a second call reuses data, features and the results
    of runs whose configuration is unchanged (``rerun``: train every
    experiment, and the curve's model, again). A store made by other
    versions of the libraries (after an upgrade; the store refuses to mix
    them) is moved aside to ``store.previous`` with the curve's, and the
    demo extracts and trains again.

    ``workers``: processes for each step. With more than one, the clips
    are made and the features extracted by that many processes, the
    experiments are trained that many at a time (:class:`ProcessFits`: each
    run whole in one worker, the same numbers as one after another), and the
    curve (step 5) is drawn in the same pool beside the training; its
    result is collected after the leaderboard.

    ``DemoResult.timings``: the wall seconds of each step (clips,
    extraction, training, boards, curve) and, indented (not part of the
    total), the decoding and each extractor's compute seconds summed over
    workers, the longest runs, and the curve's own seconds when drawn
    beside the training."""
    ev = events or DemoEvents()
    workdir, leaderboard = Path(workdir), Path(leaderboard)
    workers = max(1, int(workers))
    plugins = get_plugins()
    ds = plugins.dataset("demo")
    generate = getattr(ds, "generate", None)
    try:
        experiments = demo_experiments()
    except AanbenchError:
        experiments = []  # demo_prerequisites reports the registry's problem
    features = demo_prerequisites(generate, experiments, workdir, leaderboard)  # before any work
    data = workdir / "data"
    timings: list[tuple[str, float]] = []
    procs = f"{workers} worker{'s' if workers != 1 else ''}"
    t = time.perf_counter()
    ev.step(1, "demo dataset")
    generate(data, seed=seed, clips=clips, progress=ev.generating, workers=workers)
    ev.generated(data)
    timings.append((f"clips ({procs})", time.perf_counter() - t))
    ev.step(2, "extract features")
    store = workdir / "store"
    decode, per_ex = [0.0], {n: 0.0 for n in features}

    def on_unit(unit: Any) -> None:
        decode[0] += getattr(unit, "decode_seconds", 0.0)
        for n, sec in getattr(unit, "extractor_seconds", {}).items():
            per_ex[n] = per_ex.get(n, 0.0) + sec
        ev.extract_progress(unit)

    t = time.perf_counter()
    outcome, replaced = extract_demo_store(ds, data, store, features, workers=workers, on_planned=ev.extract_planned,
                                           on_progress=on_unit, on_replaced=ev.store_replaced)
    if replaced is not None:
        rerun = True  # results are reused by configuration, not by feature values: train on the new ones
    ev.extracted(outcome)
    timings.append((f"extraction ({procs})", time.perf_counter() - t))
    timings.append(("  decoding (summed over workers)", decode[0]))
    timings.extend((f"  {n} (summed over workers)", sec) for n, sec in per_ex.items())
    side = workers > 1
    ev.step(3, f"benchmark: {len(experiments)} experiments, leave-one-movie-out"
               + (f", {workers} at a time" if side else ""))
    cmd = "aanbench demo" + ("" if workdir == DEFAULT_WORKDIR else f" --workdir {workdir}")
    timed = _Timed(ev)
    results = workdir / "results"
    with contextlib.ExitStack() as stack:
        if side:
            from aanbench.backends.fits_processes import ProcessFits

            fits: Any = stack.enter_context(ProcessFits(workers, priority=run_priority(plugins, results,
                                                                                       experiments)))
            ev.training(len(experiments), workers)
            curve_job = fits.submit(_curve_beside, workdir, store, data, rerun)  # starts first: it holds one worker
        else:
            fits = "local"
        t = time.perf_counter()
        bench = benchmark(ds, store, results, leaderboard, protocol=DEMO_PROTOCOL, command=cmd, rerun=rerun,
                          events=timed, backend=fits)
        t_end = time.perf_counter()
        t_runs = timed.runs_ended if timed.runs_ended is not None else t_end
        resumed = {id(r) for r in bench.resumed}
        ran = [r for r in bench.runs if id(r) not in resumed]
        timings.append((f"training ({len(ran)} of {len(experiments)} experiments"
                        + (f", {workers} at a time" if side else "") + ")", t_runs - t))
        for r in sorted(ran, key=lambda r: -_run_seconds(r))[:3]:  # the longest runs, each in one process
            timings.append((f"  {r.experiment} (its own seconds)", _run_seconds(r)))
        timings.append(("boards", t_end - t_runs))
        ev.step(4, "leaderboard")
        ev.benchmarked(bench)
        ev.step(5, "emotion curve of the test movies, joined into one film")
        t = time.perf_counter()
        if side:
            fc, own = curve_job.result()
            timings.append(("curve (waiting for it after the boards)", time.perf_counter() - t))
            timings.append(("  the curve, drawn beside the training", own))  # bundle, film, extraction, plots
        else:
            fc = demo_curve(workdir, store, data=data, retrain=rerun, on_progress=ev.curve_progress)
            timings.append(("curve (bundle, film, extraction, plots)", time.perf_counter() - t))
    return DemoResult(data, store, outcome, bench, fc, timings)
