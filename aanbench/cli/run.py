"""``aanbench experiments``, ``run``, ``train``, ``leaderboard`` and ``benchmark``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from aanbench.cli._common import (
    DEVICE_HELP,
    RAY_FIT_ADDRESS_HELP,
    RAY_FIT_BACKEND_HELP,
    RAY_FIT_WORKERS_HELP,
    REGISTRY_HELP,
    SEQUENTIAL_HELP,
    THREADS_HELP,
    app,
    command,
    console,
    dataset_argument,
    echo_json,
    err_console,
    LazyBar,
    experiment_argument,
    fit_progress,
    fit_text,
    invocation,
    option_option,
)
from aanbench.cli.extract import extract_with_progress
from aanbench.contracts import AanbenchError
from aanbench.output import debug_enabled, print_traceback
from aanbench.workflows import (
    BenchmarkEvents,
    ExperimentRun,
    NothingRan,
    RunFailure,
    benchmark,
    check_device,
    check_format,
    experiment_settings,
    fit_backend,
    leaderboard,
    needed_features,
    registry as load_registry,
    resolve_dataset,
    resolve_experiment,
    run,
    train,
)

FEATURES_HELP = ("Run on this feature set of the registry instead of the experiment's (any set `aanbench "
                 "experiments` lists, e.g. weightfree-both: no weight files needed); a video-only or audio-only "
                 "experiment takes the set's features of its modality (weightfree-both: weightfree-video for "
                 "feature-aan-video). Results and leaderboard rows record the set used.")
PROTOCOL_HELP = ("Evaluation protocol: fixed (the dataset's train/test split) or leave-one-group-out (every "
                 "movie tests once). Default: the experiment's, else the dataset's (`aanbench datasets` lists "
                 "it), the same for run, benchmark and demo; results and leaderboards name it.")
FORMAT_HELP = "Leaderboard format: md (markdown), csv or json (every number the markdown shows)."


SKIP_DAMAGED_HELP = ("Score without the stored rows whose bytes are damaged (checksum mismatch; recorded in the "
                     "results as skipped_damaged and in their configuration fingerprint, so a benchmark never "
                     "resumes a clean run from them nor the reverse; leaderboards mark such rows with †). Without "
                     "it such rows refuse the run (exit 2).")


@command(app, "experiments")
def experiments_cmd(
    registry: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP, metavar="FILE"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    show: Optional[str] = typer.Option(None, "--show", metavar="NAME",
                                       help="Print the settings experiment NAME runs with on --dataset and where each came from."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="With --show: the dataset whose settings to resolve."),
) -> None:
    """List the named experiments (the built-in registry plus your own file),
    their model, feature set and where each is defined. With --show NAME
    --dataset D: every setting NAME runs with on D and the registry section
    it came from (most specific first: NAME's datasets.D, NAME's params,
    then the same of the experiment it extends)."""
    if show is not None or dataset is not None:
        if show is None or dataset is None:
            raise AanbenchError("--show NAME and --dataset D go together")
        got = experiment_settings(show, dataset, registry)
        if as_json:
            echo_json(got)
            return
        t = Table(title=f"{show} on {dataset}" + (f" (extends {' -> '.join(got['extends'])})" if got["extends"] else ""))
        for c in ("setting", "value", "from"):
            t.add_column(c, no_wrap=c == "setting")
        for k, s in got["settings"].items():
            t.add_row(k, escape(json.dumps(s["value"]) if not isinstance(s["value"], str) else s["value"]),
                      escape(s["source"]))
        console.print(t, highlight=False)
        return
    reg = load_registry(registry)
    rows = []
    for name, e in sorted(reg.experiments.items()):
        rows.append({"name": name, "model": e["model"], "feature_set": e["features"],
                     "features": list(reg.feature_sets[e["features"]]),
                     "datasets": sorted(e.get("datasets", {})), "description": e.get("description", ""),
                     "extends": reg.parents.get(name), "origin": reg.origin(name)})
    if as_json:
        echo_json({"files": [str(p) for p in reg.files], "experiments": rows})
        return
    t = Table(title="experiments (" + " + ".join(map(str, reg.files)) + ")")
    for c in ("experiment", "model", "features", "datasets with settings", "origin", "description"):
        t.add_column(c, no_wrap=c in ("experiment", "model", "features"))  # names are copied: never cut
    for r in rows:
        t.add_row(r["name"], r["model"], r["feature_set"], ", ".join(r["datasets"]), r["origin"], r["description"],
                  style=None if r["origin"] == "built-in" else "cyan")
    console.print(t, highlight=False)


def print_results(res: ExperimentRun) -> None:
    doc = res.doc
    t = Table(title=f"{doc['experiment']} on {doc['dataset']} ({doc['protocol']}, features {doc['feature_set']})")
    for c in ("target", "MSE", "Pearson r", "CCC", "n"):
        t.add_column(c)
    for target, m in res.metrics.items():
        t.add_row(target, *(f"{m[k]:.{d}f}" if m.get(k) is not None and m[k] == m[k] else "n/a"  # NaN: r undefined
                            for k, d in (("mse", 4), ("pearson_r", 3), ("ccc", 3))), str(m["n"]))
    console.print(t)
    console.print(f"results: {res.path}", highlight=False, soft_wrap=True)


def warn_skipped(skipped: Any) -> None:
    """One warning line (stderr) per store array whose damaged rows were left out."""
    for d in skipped or []:
        err_console.print(f"warning: {d['rows']} damaged row(s) of {d['array']} left out (--skip-damaged)",
                          highlight=False, markup=False, soft_wrap=True)


@command(app, "run")
def run_cmd(
    experiment: str = experiment_argument(),
    dataset: str = dataset_argument(),
    store: Path = typer.Option(..., "--store", help="Feature store holding the dataset's features."),
    out: Path = typer.Option(..., "--out", help="Results directory (each run goes to DATASET/EXPERIMENT/seedN.json) or a .json file."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset copy: extract the experiment's missing features first."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the experiment's seed."),
    features: Optional[str] = typer.Option(None, "--features", help=FEATURES_HELP, metavar="SET"),
    protocol: Optional[str] = typer.Option(None, "--protocol", help=PROTOCOL_HELP, metavar="PROTOCOL"),
    registry: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP, metavar="FILE"),
    save_models: Optional[Path] = typer.Option(None, "--save-models", help="Also save each trained model (one aanbench model file per target and fold) here."),
    option: Optional[list[str]] = option_option(),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (results file, metrics) on stdout."),
    sequential: bool = typer.Option(False, "--sequential", help=SEQUENTIAL_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP, metavar="cpu|cuda|cuda:N"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, show_default=False, help=THREADS_HELP),
    backend: str = typer.Option("local", "--backend", help=RAY_FIT_BACKEND_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=RAY_FIT_ADDRESS_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help=RAY_FIT_WORKERS_HELP),
    skip_damaged: bool = typer.Option(False, "--skip-damaged", help=SKIP_DAMAGED_HELP),
) -> None:
    """Train and evaluate an experiment with the dataset's protocol (or --protocol);
    write a results file (config, provenance, per-sample predictions with start/end,
    metrics) and print a table. A second seed, or a changed configuration, goes
    beside the first results file, never over it. `mean` reads no features: it runs
    on any store with labels.

    \b
    Examples:
      aanbench run feature-aan eimt16 --store feats --out results
      aanbench run ridge cognimuse --store feats --out results      # leave-one-movie-out
      aanbench run ridge eimt16 --store feats --out results --features weightfree-both
      aanbench run mean eimt16 --store feats --out results          # no features needed
      aanbench run feature-aan demo --store feats --out results --root .aanbench-demo/data --save-models models
      aanbench run feature-aan cognimuse --store feats --out results --backend ray --workers 4
    """
    device = check_device(device)
    fits = fit_backend(backend, address=address, workers=workers, device=device, threads=threads)
    ds = resolve_dataset(dataset, option, labelled=True)
    exp = resolve_experiment(experiment, ds, registry=registry, features=features, protocol=protocol)
    if root is not None and needed_features(exp):
        failed = extract_with_progress(ds, root, store, needed_features(exp), quiet=as_json).failed
        if failed and not as_json:
            console.print(f"[yellow]{len(failed)} item failures during extraction; those items are left out[/]")
    with LazyBar(fit_progress(f"[bold]{experiment}[/]", quiet=as_json, to_stderr=as_json)) as bar:
        res = run(experiment, ds, store, out, seed=seed, registry=registry, features=features, protocol=protocol,
                  save_models=save_models, sequential=sequential, backend=fits, command=invocation(),
                  skip_damaged=skip_damaged,
                  on_progress=lambda done, total, what: bar.update(done, total, what.split(": ", 1)[-1]))
    warn_skipped(res.doc.skipped_damaged)
    if as_json:
        echo_json(res.summary())
        return
    print_results(res)


@command(app, "train")
def train_cmd(
    experiment: str = experiment_argument(),
    dataset: str = dataset_argument(),
    store: Path = typer.Option(..., "--store", help="Feature store holding the dataset's features."),
    out: Path = typer.Option(..., "--out", help="Model bundle to write (e.g. model.pt)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the experiment's seed."),
    features: Optional[str] = typer.Option(None, "--features", help=FEATURES_HELP, metavar="SET"),
    protocol: Optional[str] = typer.Option(
        None, "--protocol", metavar="PROTOCOL",
        help="Which samples the model trains on: fixed (the train split) or leave-one-group-out (every movie "
             "but items the dataset marks test). Default: the experiment's, else the dataset's, as in `run`."),
    registry: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP, metavar="FILE"),
    option: Optional[list[str]] = option_option(),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    sequential: bool = typer.Option(False, "--sequential", help=SEQUENTIAL_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP, metavar="cpu|cuda|cuda:N"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, show_default=False, help=THREADS_HELP),
    skip_damaged: bool = typer.Option(
        False, "--skip-damaged",
        help="Train without the stored rows whose bytes are damaged (checksum mismatch; recorded in the bundle "
             "as skipped_damaged). Without it such rows refuse the training (exit 2)."),
) -> None:
    """Fit an experiment on all of a dataset's training samples (the protocol's
    training pool; validation carved from them as in `run`), for every target, and
    write one model bundle: the models, feature names and store keys,
    standardisers, windows, experiment, dataset and provenance, seed. Apply it
    with `aanbench predict`. Stored rows whose bytes are damaged (`aanbench store
    verify`) refuse the training, as in `run`, unless --skip-damaged.

    \b
    Example:
      aanbench train feature-aan demo --store feats --out demo-aan.pt
      aanbench predict demo-aan.pt --store feats --dataset demo --out predictions.csv
    """
    device = check_device(device)
    ds = resolve_dataset(dataset, option, labelled=True)
    with LazyBar(fit_progress(f"[bold]train {experiment}[/]", quiet=as_json, to_stderr=as_json)) as bar:
        got = train(experiment, ds, store, out, seed=seed, registry=registry, features=features, protocol=protocol,
                    sequential=sequential, device=device, skip_damaged=skip_damaged,
                    threads=threads, command=invocation(), on_progress=bar.update)
    warn_skipped(got.skipped_damaged)
    if as_json:
        echo_json(got.summary())
        return
    for t, v in got.payload.targets.items():
        f = v.fit
        console.print(f"{t}: {fit_text(f)}", highlight=False)
    console.print(f"model bundle: {got.path}", highlight=False, soft_wrap=True)


@command(app, "leaderboard")
def leaderboard_cmd(
    dataset: str = dataset_argument(),
    results: list[Path] = typer.Option(..., "--results", help="Results directory or files (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="File to write (default: leaderboards/DATASET.FORMAT); the figure goes beside it (.png)."),
    fmt: str = typer.Option("md", "--format", help=FORMAT_HELP, metavar="md|csv|json"),
    group: Optional[str] = typer.Option(None, "--group", help="Group (movie) to plot; default: every test movie (the first 12)."),
) -> None:
    """Write a leaderboard (one section per protocol, one table per target, ranked by
    MSE, rows the data cannot tell from the best marked; published numbers for
    EIMT16 and COGNIMUSE in their own section) as markdown, CSV or JSON, and a
    figure of predicted against true values per test movie, from results files."""
    md, fig = leaderboard(dataset, results, out, group=group, command=invocation(), fmt=check_format(fmt))
    console.print(md.read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {md} and {fig}")


# ---------------------------------------------------------------------------- benchmark


def parse_seeds(text: Optional[str]) -> Optional[list[int]]:
    if text is None or not text.strip():
        return None
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise AanbenchError(f"--seeds: expected integers separated by commas (e.g. 0,1,2), got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise AanbenchError(f"--seeds: expected distinct integers, got {text!r}")
    return seeds


class BenchmarkBars(BenchmarkEvents):
    """The benchmark's progress: one bar per run (local fits), or one over
    every fit (Ray); each run's table as its results file is written; a
    line for each run found on disk (resumed); and at the end
    (:meth:`summary`) one short table of what ran, was resumed, failed or
    was skipped (with the missing extractors)."""

    def __init__(self) -> None:
        self.prog: Any = None
        self.task: Any = None
        self.per_run = True
        self.rows: dict[str, dict[str, list[str]]] = {}  # experiment -> status -> seeds / reasons

    def _note(self, experiment: str, status: str, what: str) -> None:
        self.rows.setdefault(experiment, {}).setdefault(status, []).append(what)

    def skipped(self, experiment: str, reason: str) -> None:
        self._note(experiment, "skipped", reason)

    def resumed(self, run: ExperimentRun) -> None:
        self._note(run.experiment, "resumed", str(run.seed))
        console.print(f"[cyan]resumed[/] {run.experiment} seed {run.seed}: same configuration in {run.path}, not "
                      "retrained", highlight=False, soft_wrap=True)

    def started(self, experiment: str | None, seed: int | None) -> None:
        self.per_run = experiment is not None
        title = f"[bold]{experiment}[/] seed {seed}" if self.per_run else "[bold]benchmark[/] on ray"
        self.prog = fit_progress(title, unit=None if self.per_run else "fits")
        self.prog.start()
        self.task = self.prog.add_task("fit", total=None, what="")

    def progress(self, done: int, total: int, what: str) -> None:
        if self.prog is not None:
            self.prog.update(self.task, completed=done, total=total, what=what)

    def _stop(self) -> None:
        if self.prog is not None:
            self.prog.stop()
            self.prog = None

    def finished(self, run: ExperimentRun) -> None:
        if self.per_run:
            self._stop()
        self._note(run.experiment, "ran", str(run.seed))
        print_results(run)

    def failed(self, failure: RunFailure) -> None:
        if self.per_run:
            self._stop()
        self._note(failure.experiment, "failed", f"seed {failure.seed}")
        if debug_enabled() and failure.error is not None:
            print_traceback(failure.error, err_console)
        console.print(f"[red]failed[/] {failure.experiment} (seed {failure.seed}): {escape(failure.reason)}",
                      highlight=False, soft_wrap=True)

    def ended(self) -> None:
        self._stop()

    def summary(self, store: Path, skips: list[Any]) -> None:
        """One row per experiment: ran / resumed (seeds) / failed, or skipped
        and why (the extractors whose features are not in ``store``)."""
        missing = {sk[0]: getattr(sk, "missing", ()) for sk in skips}
        short = {sk[0]: getattr(sk, "short", sk[1]) for sk in skips}
        t = Table(title=f"benchmark: {sum(1 for r in self.rows.values() if 'ran' in r or 'resumed' in r)} of "
                        f"{len(self.rows)} experiments ran", title_justify="left")
        for c in ("experiment", "status", "seeds or reason"):
            t.add_column(c, no_wrap=c == "experiment")
        for name in sorted(self.rows):
            r = self.rows[name]
            if "skipped" in r:
                why = (f"features not in {store}: {', '.join(missing[name])}" if missing.get(name)
                       else short.get(name) or "; ".join(r["skipped"]))
                t.add_row(name, "[yellow]skipped[/]", why)
                continue
            for status, style in (("ran", "green"), ("resumed", "cyan"), ("failed", "red")):
                if status in r:
                    t.add_row(name, f"[{style}]{status}[/]", ", ".join(r[status]))
        console.print(t, highlight=False, soft_wrap=True)


@command(app, "benchmark")
def benchmark_cmd(
    dataset: str = dataset_argument(),
    store: Path = typer.Option(..., "--store", help="Feature store holding the dataset's features."),
    out: Path = typer.Option(..., "--out", help="Results directory (each run goes to DATASET/EXPERIMENT/seedN.json)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds to run, e.g. 0,1,2 (default: each experiment's own seed)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset copy: extract the experiments' missing features first (those that cannot be extracted are skipped)."),
    leaderboard: Optional[Path] = typer.Option(None, "--leaderboard", help="Leaderboard file to write (default: leaderboards/DATASET.FORMAT); the figure goes beside it."),
    fmt: str = typer.Option("md", "--format", help=FORMAT_HELP, metavar="md|csv|json"),
    experiments: Optional[str] = typer.Option(None, "--experiments", help="Only these experiments (comma-separated)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", metavar="PROTOCOL",
                                           help="Override every experiment's protocol (fixed, leave-one-group-out). "
                                                "Default: each experiment's, else the dataset's, as for run and demo."),
    features: Optional[str] = typer.Option(None, "--features", metavar="SET",
                                           help="Run every experiment on this feature set of the registry (e.g. "
                                                "weightfree-both on a store without the paper's neural features); "
                                                "video-only and audio-only experiments take its features of their "
                                                "modality, and are skipped where it has none."),
    rerun: bool = typer.Option(False, "--rerun", help="Train every run again, even those whose results file is "
                               "already in --out with the same configuration (by default they are read, not "
                               "retrained: a benchmark stopped by Ctrl-C continues where it stopped)."),
    group: Optional[str] = typer.Option(None, "--group", help="Group (movie) to plot; default: every test movie (the first 12)."),
    registry: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP, metavar="FILE"),
    option: Optional[list[str]] = option_option(),
    sequential: bool = typer.Option(False, "--sequential", help=SEQUENTIAL_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP, metavar="cpu|cuda|cuda:N"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, show_default=False, help=THREADS_HELP),
    backend: str = typer.Option("local", "--backend", help=RAY_FIT_BACKEND_HELP + " With ray, every experiment x "
                                "seed is submitted at once."),
    address: Optional[str] = typer.Option(None, "--address", help=RAY_FIT_ADDRESS_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help=RAY_FIT_WORKERS_HELP),
    skip_damaged: bool = typer.Option(False, "--skip-damaged", help=SKIP_DAMAGED_HELP),
) -> None:
    """Run every registry experiment whose features are in the store (each resolved
    for DATASET: its datasets.DATASET settings applied), skipping those whose
    features or model plugin are missing, for every seed; then write the
    leaderboard of these runs and a short table of what ran, was resumed, failed
    or was skipped (and for which missing extractor). Resumes: an experiment x
    seed whose results file is in --out with the same configuration is not
    retrained (--rerun forces). Exit 1 when an experiment failed.

    \b
    Examples:
      aanbench benchmark eimt16 --store feats --out results --seeds 0,1,2
      aanbench benchmark eimt16 --store feats --out results --features weightfree-both
      aanbench benchmark demo --store .aanbench-demo/store --out results --format json
      aanbench benchmark cognimuse --store feats --out results --seeds 0,1,2 --backend ray --workers 8
    """
    check_format(fmt)
    device = check_device(device)
    fits = fit_backend(backend, address=address, workers=workers, device=device, threads=threads)
    ds = resolve_dataset(dataset, option)
    only = [e.strip() for e in experiments.split(",") if e.strip()] if experiments else None
    seed_list = parse_seeds(seeds)
    reg = load_registry(registry)
    for n in sorted(reg.experiments):  # every name checked (--features, --protocol) before any work
        if not only or n in only:
            resolve_experiment(n, ds, registry=registry, features=features, protocol=protocol)
    if root is not None:
        names = sorted({f for n in reg.experiments if not only or n in only
                        for f in needed_features(resolve_experiment(n, ds, registry=registry, features=features))})
        for name in names:
            try:
                failed_items = extract_with_progress(ds, root, store, [name]).failed
            except AanbenchError as exc:
                console.print(f"[yellow]not extracted[/] {name}: {exc}", highlight=False, soft_wrap=True)
                continue
            if failed_items:
                console.print(f"[yellow]{len(failed_items)} item failures for {name}; those items are left out[/]")
    bars = BenchmarkBars()
    try:
        res = benchmark(ds, store, out, leaderboard, seeds=seed_list, experiments=only, protocol=protocol,
                        features=features, rerun=rerun, fmt=fmt, group=group, registry=registry,
                        sequential=sequential, backend=fits, command=invocation(), events=bars,
                        skip_damaged=skip_damaged)
    except NothingRan as exc:
        bars.ended()
        bars.summary(store, exc.skipped)
        raise
    finally:
        bars.ended()
    console.print(res.leaderboard.read_text(), markup=False, highlight=False, soft_wrap=True)
    bars.summary(store, res.skipped)
    n_new = len(res.runs) - len(res.resumed)
    console.print(f"wrote {res.leaderboard} and {res.figure}: {n_new} run{'' if n_new == 1 else 's'}, "
                  f"{len(res.resumed)} resumed" + (" (--rerun trains them again)" if res.resumed else "")
                  + f", {len(res.problems)} skipped or failed", highlight=False, soft_wrap=True)
    if res.failed:
        raise typer.Exit(1)
