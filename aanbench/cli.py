"""The ``aanbench`` command line.

Exit status: 0 success; 1 the batch finished but some items failed (or a
dataset copy is incomplete); 2 usage or configuration errors. Expected errors
print one message, never a traceback.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from aanbench import __version__
from aanbench.contracts import AanbenchError, Dataset

from rich.markup import escape

from aanbench.output import DEBUG_ENV, debug_enabled, describe, make_console, print_traceback

console = make_console()  # wraps for a terminal only: a pipe or file gets whole lines (aanbench/output.py)
err_console = make_console(stderr=True)

HELP = """\
aanbench: a plugin-based multimodal feature store and benchmark suite for the
emotions movies evoke (valence and arousal), after AttendAffectNet.

Typical session (`aanbench demo` does it all on a generated dataset):

\b
  aanbench datasets check eimt16 --root ~/data/LIRIS-ACCEDE
  aanbench extract eimt16 --root ~/data/LIRIS-ACCEDE --store feats
  aanbench run feature-aan eimt16 --store feats --out results
  aanbench leaderboard eimt16 --results results --out leaderboards/eimt16.md

\b
Extractors, datasets and models are plugins (entry-point group `aanbench`);
`aanbench plugins` lists them.
"""

# Metavars a user reads in --help: what to type, not the Python type (`--store STORE`,
# `--workers N`, `--option KEY=VALUE`, usage `aanbench run EXPERIMENT DATASET`).
# An option or argument that sets its own metavar keeps it.
METAVARS = {"option": "KEY=VALUE", "root": "DIR", "weights_dir": "DIR", "workdir": "DIR", "save_models": "DIR",
            "out": "PATH", "results": "PATH", "registry": "FILE", "leaderboard": "FILE", "extractors": "NAMES",
            "address": "ADDRESS", "device": "DEVICE"}


def _metavar(param: Any) -> str | None:
    desc = getattr(param, "type_descriptor", None)
    if desc is None or getattr(param, "is_flag", False) or getattr(param, "count", False) or desc.is_choice:
        return None
    name = param.name or ""
    if name in METAVARS:
        return METAVARS[name]
    ann = desc.annotation
    if ann is int:
        return "N"
    if ann is float:
        return "NUMBER"
    return name.upper()


def _complete_datasets(ctx: Any, param: Any, incomplete: str) -> list[str]:
    try:
        return sorted(n for n in _plugins().datasets if n.startswith(incomplete))
    except Exception:  # completion must never fail loudly
        return []


def _complete_experiments(ctx: Any, param: Any, incomplete: str) -> list[str]:
    try:
        return sorted(n for n in _registry(ctx.params.get("registry")).experiments if n.startswith(incomplete))
    except Exception:
        return []


def _complete_extractors(ctx: Any, param: Any, incomplete: str) -> list[str]:
    done, _, last = incomplete.rpartition(",")
    try:
        names = sorted(_plugins().extractors)
    except Exception:
        return []
    prefix = done + "," if done else ""
    return [prefix + n for n in names if n.startswith(last) and n not in done.split(",")]


COMPLETERS = {"dataset": _complete_datasets, "experiment": _complete_experiments, "extractors": _complete_extractors}


def _plain_metavars(cmd: Any) -> None:
    """Give every Typer option and argument of ``cmd`` (and of its sub-commands)
    a plain metavar (arguments show only their name, without a type), and
    shell completion of dataset, experiment and extractor names."""
    from typer.core import TyperArgument, TyperOption

    if getattr(cmd, "_aanbench_metavars", False):
        return
    cmd._aanbench_metavars = True
    for p in getattr(cmd, "params", []):
        if type(p) is TyperArgument:
            p.__class__ = _PlainArgument
            if p.metavar is None:
                p.metavar = (p.name or "").upper()
        elif type(p) is TyperOption and p.metavar is None:
            p.metavar = _metavar(p)
        if p.name in COMPLETERS and getattr(p, "_custom_shell_complete", None) is None:
            p._custom_shell_complete = COMPLETERS[p.name]
    for sub in getattr(cmd, "commands", {}).values():
        _plain_metavars(sub)


from typer.core import TyperArgument as _TyperArgument, TyperGroup as _TyperGroup  # noqa: E402


class _PlainArgument(_TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the metavar already names it

    def _usage_display_name(self) -> str:
        return self.display_name_raw if self.required else f"[{self.display_name_raw}]"


class _Group(_TyperGroup):
    """The root command group: plain metavars for every command it resolves,
    plugin commands included."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _plain_metavars(cmd)
        return cmd


app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=True, rich_markup_mode=None, cls=_Group,
                  context_settings={"help_option_names": ["-h", "--help"]})
store_app = typer.Typer(help="Inspect and fill feature stores.", no_args_is_help=True)
models_app = typer.Typer(help="Model files: convert published checkpoints, inspect.", no_args_is_help=True)
datasets_app = typer.Typer(help="List datasets (no subcommand), make the demo, check a copy.", invoke_without_command=True)
app.add_typer(store_app, name="store")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")


@dataclass
class CliGroups:
    """Handed to the ``aanbench_commands`` hook: the Typer apps plugins may extend."""

    root: typer.Typer
    store: typer.Typer
    models: typer.Typer
    datasets: typer.Typer

    def command(self, target: typer.Typer, name: str | None = None, **kw: Any) -> Callable:
        """Like ``target.command(name)``, but an :class:`AanbenchError` raised by
        the command prints one message and exits with its code (2)."""
        return command(target, name, **kw)


_running_command: contextvars.ContextVar[str] = contextvars.ContextVar("aanbench_command", default="")


def command(target: typer.Typer, name: str | None = None, **kw: Any) -> Callable:
    """Register a command whose expected errors become a message and exit 2."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _running_command.set(name or fn.__name__)
            try:
                return fn(*args, **kwargs)
            except AanbenchError as exc:
                if debug_enabled():
                    print_traceback(exc, err_console)
                err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except KeyboardInterrupt:  # Ctrl-C where a command has no handler of its own: files already written stay
                err_console.print("interrupted", highlight=False)
                raise typer.Exit(130) from None
            except Exception as exc:  # a bug, often in a plugin: say where; --debug for the traceback
                if debug_enabled():
                    print_traceback(exc, err_console)
                    hint = ""
                else:
                    hint = " (rerun with `aanbench --debug ...` for the full traceback)"
                err_console.print(f"[bold red]error:[/] {escape(describe(exc))}{hint}", highlight=False, markup=True,
                                  soft_wrap=True)
                raise typer.Exit(1) from None
            finally:
                _running_command.reset(token)

        target.command(name, **kw)(wrapper)
        return wrapper

    return deco


def _plugins():
    from aanbench.plugin_manager import get_plugins

    return get_plugins()


def _registry(path: Optional[Path] = None):
    from aanbench.registry import load_registry

    return load_registry(path)


def _invocation() -> str:
    """The command line as typed, for results files and leaderboards."""
    return "aanbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""


def _parse_options(options: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for o in options or []:
        if "=" not in o:
            raise AanbenchError(f"--option expects KEY=VALUE, got {o!r}")
        k, v = o.split("=", 1)
        out[k.strip()] = v.strip()
    return out


DATASET_HELP = "Dataset name, as `aanbench datasets` lists it."


TRAINING_COMMANDS = ("run", "train")


def _dataset(name: str, options: list[str] | None = None) -> Dataset:
    """The dataset plugin ``name``, configured with ``--option KEY=VALUE``s;
    one a command that trains (run, train) cannot use is refused here."""
    ds = _plugins().dataset(name)
    opts = _parse_options(options)
    if opts:
        configure = getattr(ds, "configure", None)
        if configure is None:
            raise AanbenchError(f"dataset {name!r} takes no options (got {', '.join(opts)})")
        ds = configure(**opts)
    if _running_command.get() in TRAINING_COMMANDS:
        from aanbench.registry import require_labelled

        require_labelled(ds)
    return ds


# ---------------------------------------------------------------------------- plugins


@command(app, "plugins")
def plugins_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List every plugin: kind, name, version, origin (built-in or distribution).

    A plugin that failed to import is listed with its error; the rest work.
    """
    rows = _plugins().rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    t = Table(title="aanbench plugins")
    for c in ("kind", "name", "version", "origin", "plugin"):
        t.add_column(c)
    for r in sorted(rows, key=lambda r: (r["kind"] == "error", r["kind"], r["name"])):
        if r["kind"] == "error":
            t.add_row("[red]error[/]", r["name"], r["version"], r["origin"], f"[red]{r['error']}[/]")
        else:
            t.add_row(r["kind"], r["name"], r["version"], r["origin"], r["plugin"])
    console.print(t)


# ---------------------------------------------------------------------------- datasets


@datasets_app.callback()
def datasets_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the installed datasets (name, protocol, targets, description)."""
    if ctx.invoked_subcommand is not None:
        return
    ds = _plugins().datasets
    rows = [{"name": d.name, "version": d.version, "protocol": d.protocol, "targets": list(d.targets),
             "description": d.description, "card": d.card} for d in ds.values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    t = Table(title="aanbench datasets")
    for c in ("name", "protocol", "targets", "description"):
        t.add_column(c, no_wrap=c == "name")
    for r in sorted(rows, key=lambda r: r["name"]):
        t.add_row(r["name"], r["protocol"], ", ".join(r["targets"]), r["description"])
    console.print(t)


@command(datasets_app, "check")
def datasets_check(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    root: Path = typer.Option(..., "--root", help="Your copy of the dataset, in its official layout."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Dataset option KEY=VALUE."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Check a copy of a dataset: files found against expected, unreadable files,
    labels out of range, changes since the last check. Exit 1 when incomplete."""
    ds = _dataset(dataset, option)
    if not hasattr(ds, "check"):
        raise AanbenchError(f"dataset {dataset!r} offers no check")
    from aanbench.pluginkit.datacheck import run_check

    raise typer.Exit(run_check(ds, root, as_json, console))


# ---------------------------------------------------------------------------- extract


def do_extract(
    dataset: Dataset,
    root: Path,
    store_path: Path,
    extractors: Optional[str],
    *,
    quiet: bool = False,
    **options: Any,
):
    """:func:`aanbench.extraction.extract_dataset` with a progress bar; returns
    (report, failures in store, plan). An interrupt (Ctrl-C) prints how many
    chunks were saved and exits with status 130."""
    from aanbench.extraction import ExtractionInterrupted, extract_dataset

    names = [n.strip() for n in extractors.split(",") if n.strip()] if extractors else None
    with Progress(TextColumn("[bold]extract[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("items"),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=quiet, transient=False) as prog:
        task = prog.add_task("extract", total=None, rate="")

        def on_planned(plan, skipped: list[str], backend_name: str) -> None:
            prog.update(task, total=plan.n_items_todo)
            if quiet:
                return
            if skipped:
                prog.console.print(f"[yellow]skipping extractors without their weights:[/] {', '.join(skipped)} "
                                   "(see `aanbench weights`)")
            done_already = sum(plan.skipped_chunks.values())
            prog.console.print(
                f"{dataset.name}: {len(plan.job.items)} items, {plan.group.n_chunks} chunks of {plan.group.chunk_rows}; "
                f"extractors {', '.join(plan.job.extractors)}; {len(plan.units)} chunks to compute"
                + (f" ({done_already} extractor-chunks already done)" if done_already else "")
                + f"; backend {backend_name}", highlight=False)

        def on_progress(res) -> None:
            prog.advance(task, res.unit.n_items)
            el = prog.tasks[0].elapsed or 0
            done = prog.tasks[0].completed
            prog.update(task, rate=f"{done / el:.1f} items/s" if el > 0 else "")

        try:
            out = extract_dataset(dataset, root, store_path, names, on_planned=on_planned, on_progress=on_progress,
                                  **options)
        except KeyboardInterrupt as exc:  # ExtractionInterrupted, or Ctrl-C before the run's handler is set
            prog.stop()
            err_console.print(str(exc) if isinstance(exc, ExtractionInterrupted) else str(ExtractionInterrupted(0)),
                              highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
    return out.report, out.failed, out.plan


@command(app, "extract")
def extract_cmd(
    dataset: str = typer.Argument(..., help="Dataset name (see `aanbench datasets`)."),
    root: Path = typer.Option(..., "--root", help="Your copy of the dataset (official layout), or a folder for `files`."),
    store: Path = typer.Option(..., "--store", help="Feature store directory (Zarr v3; created if missing)."),
    extractors: Optional[str] = typer.Option(None, "--extractors", "-e",
                                             help="Comma-separated extractor names. Default: every installed extractor whose weights are present."),
    backend: str = typer.Option("local", "--backend", help="Where work runs: local (this machine) or ray."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel workers (processes or Ray actors)."),
    chunk_rows: int = typer.Option(32, "--chunk-rows", help="Items per chunk, the unit of work and of resume (fixed when a store group is created)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Items per extractor batch."),
    device: str = typer.Option("cpu", "--device", help="Torch device for neural extractors: cpu, cuda, cuda:1 ..."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Folder of pretrained weight files (default $AANBENCH_WEIGHTS or ~/.cache/aanbench/weights)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Recompute chunks that hold failed items."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray: join this cluster ('auto' or host:port) instead of starting a local one."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="Ray: GPU share each GPU extractor worker asks for."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Dataset option KEY=VALUE (see the dataset's card)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout (no progress bar)."),
) -> None:
    """Extract features for every item of a dataset into the feature store.

    Work is done in chunks; a chunk is written whole, then marked done, so an
    interrupted run resumes where it stopped. Ctrl-C stops at the next item,
    discards the chunk in progress and exits with status 130; run the same
    command to resume. Items that fail (corrupt or truncated file, broken
    link, permission denied, no audio stream, ...) are recorded with their
    reason and the batch goes on; the exit status is 1 when any item failed.

    \b
    Examples:
      aanbench extract demo --root .aanbench-demo/data --store feats -e affect,emobase2010
      aanbench extract eimt16 --root ~/data/LIRIS-ACCEDE --store feats --device cuda
      aanbench extract cognimuse --root ~/data/COGNIMUSE --store feats -o annotation=experienced
      aanbench extract files --root ~/trailers --store feats --backend ray --workers 4
    """
    ds = _dataset(dataset, option)
    opts: dict[str, Any] = {}
    if backend == "ray":
        opts = {"address": address, "gpus_per_worker": gpus_per_worker}
    elif address or gpus_per_worker:
        raise AanbenchError("--address and --gpus-per-worker are options of --backend ray")
    report, failed, plan = do_extract(ds, root, store, extractors, quiet=as_json, backend=backend, workers=workers,
                                      chunk_rows=chunk_rows, batch_size=batch_size, device=device,
                                      weights_dir=weights_dir, retry_failed=retry_failed, backend_options=opts)
    _print_extract_summary(report, failed, plan, as_json=as_json)
    if failed or report.unit_errors:
        raise typer.Exit(1)


def _print_extract_summary(report, failed, plan, as_json: bool = False) -> None:
    """The summary table and failures, or (``as_json``) one JSON document on stdout."""
    n = plan.group.n_items
    computed: dict[str, int] = {}
    for u in plan.units:
        for e in u.extractors:
            computed[e] = computed.get(e, 0) + 1
    if as_json:
        arrays = []
        for name in report.extractors:
            nf = sum(1 for f in failed if f[1] == name)
            arrays.append({"extractor": name, "key": plan.job.keys[name], "items": n, "ok": n - nf, "failed": nf,
                           "chunks_computed": computed.get(name, 0),
                           "chunks_already_done": report.skipped_chunks.get(name, 0)})
        doc = {"store": str(plan.job.store_root), "group": plan.group.path, "dataset": report.dataset,
               "seconds": round(report.seconds, 3), "arrays": arrays, "chunks_failed": list(report.unit_errors),
               "failures": [{"item_id": i, "extractor": e, "reason": r} for i, e, r in failed]}
        typer.echo(json.dumps(doc, indent=2))
        return
    t = Table(title=f"{plan.group.path}: extraction summary ({report.seconds:.1f} s)")
    for c in ("extractor", "array", "ok", "failed", "chunks computed", "chunks already done"):
        t.add_column(c)
    for name in report.extractors:
        nf = sum(1 for f in failed if f[1] == name)
        t.add_row(name, plan.job.keys[name], str(n - nf), str(nf), str(computed.get(name, 0)),
                  str(report.skipped_chunks.get(name, 0)))
    console.print(t)
    if report.unit_errors:
        console.print("[red]chunks that failed (not marked done; rerun to retry):[/]")
        for e in report.unit_errors:
            console.print(f"  {e}", highlight=False)
    if failed:
        console.print(f"[red]{len(failed)} item failures[/] (item, extractor, reason):")
        for item_id, ex, reason in failed[:50]:
            console.print(f"  {item_id}  {ex}  {reason}", highlight=False, soft_wrap=True)
        if len(failed) > 50:
            console.print(f"  ... and {len(failed) - 50} more: `aanbench store info {plan.job.store_root}`")


# ---------------------------------------------------------------------------- store


def store_summary(store_path: Path) -> list[dict[str, Any]]:
    from aanbench.store import FeatureStore

    st = FeatureStore(store_path, mode="r")
    out = []
    for gp in st.group_paths():
        g = st.open_group(*gp.split("/", 1))
        ids = g.item_ids()
        arrays = []
        for key in g.feature_keys():
            a = g.feature(key)
            done, ok, errs = a.done(), a.ok(), a.errors()
            rows_done = sum(g.chunk_slice(c).stop - g.chunk_slice(c).start for c in range(len(done)) if done[c])
            prov = a.provenance
            arrays.append({
                "key": key, "extractor": a.name, "version": a.version, "shape": list(a.data.shape),
                "items_done": int(rows_done), "items_ok": int(ok.sum()),
                "chunks_done": int(done.sum()), "chunks": int(len(done)),
                "source": prov.get("source", ""),
                "failures": [{"item_id": ids[i], "reason": str(errs[i])} for i in range(len(ok)) if not ok[i] and errs[i]],
            })
        out.append({"group": gp, "dataset": g.attrs.get("dataset"), "segmentation": g.attrs.get("segmentation"),
                    "n_items": g.n_items, "chunk_rows": g.chunk_rows, "targets": g.targets(), "arrays": arrays})
    return out


@command(store_app, "info")
def store_info(
    store: Path = typer.Argument(..., help="Feature store directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout, for scripts."),
) -> None:
    """Per array: dataset, extractor, shape, items done, and the failures (item id, reason)."""
    info = store_summary(store)
    if as_json:
        typer.echo(json.dumps({"store": str(store), "groups": info}, indent=1))
        return
    if not info:
        console.print(f"{store}: empty store")
    for g in info:
        t = Table(title=f"{g['group']}  ({g['n_items']} items, chunks of {g['chunk_rows']}, labels: {', '.join(g['targets']) or 'none'})")
        for c in ("array", "shape", "items done", "ok", "failed", "source"):
            t.add_column(c, no_wrap=c == "array")
        for a in g["arrays"]:
            t.add_row(a["key"], "x".join(map(str, a["shape"])), f"{a['items_done']}/{g['n_items']}", str(a["items_ok"]),
                      str(len(a["failures"])), a["source"])
        console.print(t)
        for a in g["arrays"]:
            for f in a["failures"][:20]:
                console.print(f"  [red]{a['key']}[/] {f['item_id']}: {f['reason']}", highlight=False, soft_wrap=True)
            if len(a["failures"]) > 20:
                console.print(f"  ... {len(a['failures']) - 20} more (use --json)")


@command(store_app, "import-h5")
def store_import_h5(
    file: Path = typer.Argument(..., help="HDF5 file holding an (n_items, dim) matrix."),
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP + " The rows belong to it."),
    extractor: str = typer.Option(..., "--extractor", help="Extractor name the features stand for (e.g. resnet50)."),
    key: str = typer.Option("default", "--key", help="HDF5 dataset inside the file."),
    segmentation: str = typer.Option("default", "--segmentation", help="Store segmentation group."),
) -> None:
    """Import an external feature matrix as an extractor's array (item ids = row numbers
    unless the store group already exists, in which case the row count must match)."""
    import h5py
    import numpy as np

    from aanbench.contracts import Item
    from aanbench.store import FeatureStore
    from aanbench.weights import sha256_of

    if not file.is_file():
        raise AanbenchError(f"{file}: no such file")
    try:
        with h5py.File(file, "r") as f:
            if key not in f:
                raise AanbenchError(f"{file}: no dataset {key!r} (has {', '.join(f.keys()) or 'none'})")
            values = np.asarray(f[key][...], dtype=np.float32)
    except OSError as exc:
        raise AanbenchError(f"{file}: not a readable HDF5 file ({exc})") from None
    if values.ndim != 2:
        raise AanbenchError(f"{file}:{key}: expected an (n_items, dim) matrix, got shape {values.shape}")
    st = FeatureStore(store)
    try:
        group = st.open_group(dataset, segmentation)
    except AanbenchError:
        items = [Item(id=str(i), path=None) for i in range(values.shape[0])]
        group = st.ensure_group(dataset, items, segmentation=segmentation, chunk_rows=max(1, min(32, len(items))))
    digest = sha256_of(file)
    prov = {"extractor": extractor, "version": "imported", "dim": int(values.shape[1]), "config": {"hdf5_key": key},
            "weights": {}, "libraries": {}, "source": {"file": file.name, "sha256": digest}}
    arr = group.import_rows(f"{extractor}@imported", values, prov)
    console.print(f"imported {values.shape[0]}x{values.shape[1]} from {file.name} (sha256 {digest[:12]}…) "
                  f"as {group.path}/features/{arr.key}")


@command(store_app, "export")
def store_export(
    store: Path = typer.Argument(..., help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP),
    out: Path = typer.Option(..., "--out", help="File to write: .parquet, .csv or .h5 (the suffix picks the format)."),
    extractors: Optional[str] = typer.Option(None, "--extractors", "-e",
                                             help="Comma-separated extractor names (or NAME@VERSION). Default: every stored array."),
    segmentation: str = typer.Option("default", "--segmentation", help="Store segmentation group."),
    fmt: Optional[str] = typer.Option(None, "--format", help="parquet, csv or hdf5, when the suffix does not say.",
                                      metavar="FORMAT"),
    valid_only: bool = typer.Option(False, "--valid-only", help="Only the rows valid for every extractor."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON, for scripts."),
) -> None:
    """Export a store group's features, item table and labels for other tools.

    Parquet and CSV: one row per item (id, group, split, path, start, end,
    labels, then NAME_0, NAME_1, ... per extractor; NaN where an item
    failed). HDF5: items/, labels/, features/NAME@VERSION and ok/NAME@VERSION
    datasets (re-importable with `aanbench store import-h5 --key`).
    The same from Python: `aanbench.api.open_features`.
    """
    from aanbench.api import export_features, export_format, open_features

    export_format(out, fmt)  # a wrong suffix fails before any reading
    feats = open_features(store, dataset, extractors, segmentation=segmentation)
    path, kind, rows = export_features(feats, out, fmt, valid_only=valid_only)
    if as_json:
        typer.echo(json.dumps({"path": str(path), "format": kind, "group": feats.group, "rows": rows,
                               "arrays": {feats.keys[n]: int(a.shape[1]) for n, a in feats.arrays.items()}}, indent=1))
        return
    dims = ", ".join(f"{feats.keys[n]} ({a.shape[1]})" for n, a in feats.arrays.items())
    console.print(f"wrote {rows} rows of {feats.group} to {path} ({kind}): {dims}", highlight=False)


# ---------------------------------------------------------------------------- run / leaderboard


REGISTRY_HELP = ("Your own experiments file (TOML), added to the built-in registry; "
                 "default $AANBENCH_REGISTRY.")
SEQUENTIAL_HELP = ("Train one model at a time. By default the models that support it (feature-aan, temporal-aan, "
                   "...) train all their folds and targets together in one batched stack: same seed, same "
                   "numbers for each path; the two paths agree within the bootstrap interval, not bit for bit.")
DEVICE_HELP = ("Torch device for training and predicting with torch models (feature-aan, temporal-aan, ...): cpu "
               "(default), cuda or cuda:N; other models run on the CPU. GPU numbers differ from CPU numbers in "
               "the last bits; the same seed on the same GPU gives the same numbers.")


def _check_device(device: str) -> str:
    """``--device`` checked before any work (e.g. cuda where torch has none)."""
    from aanbench.runner import check_device

    return check_device(device)


THREADS_HELP = ("CPU threads for the first layer of the batched models' stack (feature-aan, temporal-aan, ...; "
                "where most of their arithmetic is). Default: every CPU this process may use. Each product "
                "still runs on one thread, so any N gives the same numbers; --threads 1 leaves the other "
                "cores to other work.")


def _no_threads_on_ray(threads: Optional[int], ray: Optional[dict[str, Any]]) -> None:
    """``--threads`` is for the local backend; refused with ``--backend ray``
    (each Ray task trains on one thread) rather than ignored."""
    if ray is not None and threads is not None and threads != 1:
        raise AanbenchError(f"--threads {threads} is not available with --backend ray (each Ray task trains on one "
                            "CPU thread; give Ray more --workers instead)")


def _no_device_on_ray(device: str, ray: Optional[dict[str, Any]]) -> None:
    """Ray fits run on the cluster's CPU workers: a GPU ``--device`` with
    ``--backend ray`` is refused before any work rather than ignored."""
    if ray is not None and device != "cpu":
        raise AanbenchError(f"--device {device} is not available with --backend ray (Ray fits run on CPU workers); "
                            "train on the GPU with the local backend")


@command(app, "experiments")
def experiments_cmd(
    registry: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP, metavar="FILE"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """List the named experiments (the built-in registry plus your own file),
    their model, feature set and where each is defined."""
    reg = _registry(registry)
    rows = []
    for name, e in sorted(reg.experiments.items()):
        rows.append({"name": name, "model": e["model"], "feature_set": e["features"],
                     "features": list(reg.feature_sets[e["features"]]),
                     "datasets": sorted(e.get("datasets", {})), "description": e.get("description", ""),
                     "extends": reg.parents.get(name), "origin": reg.origin(name)})
    if as_json:
        typer.echo(json.dumps({"files": [str(p) for p in reg.files], "experiments": rows}, indent=1))
        return
    t = Table(title="experiments (" + " + ".join(map(str, reg.files)) + ")")
    for c in ("experiment", "model", "features", "datasets with settings", "origin", "description"):
        t.add_column(c, no_wrap=c in ("experiment", "model", "features"))  # names are copied: never cut
    for r in rows:
        t.add_row(r["name"], r["model"], r["feature_set"], ", ".join(r["datasets"]), r["origin"], r["description"],
                  style=None if r["origin"] == "built-in" else "cyan")
    console.print(t, highlight=False)


RAY_FIT_BACKEND_HELP = ("Where the fits run: local (this process) or ray (Ray tasks, one per batched stack or per "
                        "fit, on a local Ray instance or the cluster at --address; same numbers as local).")
RAY_FIT_ADDRESS_HELP = "Ray: join this cluster ('auto' or host:port) instead of starting a local one."
RAY_FIT_WORKERS_HELP = "Ray: most fits running at once (default: as many as the cluster's CPUs take)."


def do_run(experiment: str, dataset: Dataset, store: Path, out: Path, *, seed: Optional[int] = None,
           registry: Optional[Path] = None, save_models: Optional[Path] = None, quiet: bool = False,
           sequential: bool = False, device: str = "cpu", ray: Optional[dict[str, Any]] = None,
           threads: Optional[int] = None):
    """Run ``experiment`` on the stored features of ``dataset`` and write its
    results file (``out/<dataset>/<experiment>/seed<N>.json``); returns (doc, path).
    ``ray``: the fits run on Ray (:func:`aanbench.fitray.fit_runs_on_ray`
    with these options: ``address``, ``workers``)."""
    from aanbench.runner import run_experiment, write_results
    from aanbench.store import FeatureStore

    reg = _registry(registry)
    exp = reg.experiment(experiment, dataset.name)
    group = FeatureStore(store, mode="r").open_group(dataset.name, dataset.segmentation)
    group.check_dataset_config(dataset.config())
    with Progress(TextColumn(f"[bold]{experiment}[/] {{task.fields[what]}}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console if quiet else console, disable=quiet) as prog:
        task = prog.add_task("fit", total=None, what="")

        def on_fit(target: str, fold: str, done: int, total: int) -> None:
            prog.update(task, completed=done, total=total, what=f"{target} / {fold}")

        if ray is not None:
            from aanbench.fitray import fit_runs_on_ray

            [doc] = fit_runs_on_ray([(exp, seed)], dataset, group, _plugins(), sequential=sequential,
                                    save_models=save_models, on_progress=lambda done, total, what: prog.update(
                                        task, completed=done, total=total, what=what.split(": ", 1)[-1]), **ray)
            if isinstance(doc, BaseException):
                raise doc
        else:
            doc = run_experiment(exp, dataset, group, _plugins(), seed=seed, save_models=save_models, on_fit=on_fit,
                                 sequential=sequential, device=device, threads=threads)
    doc.command = _invocation()
    path = write_results(doc, out)
    return doc, path


def _results_summary(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    return {"results": str(path), "experiment": doc["experiment"], "dataset": doc["dataset"], "seed": doc["seed"],
            "protocol": doc["protocol"], "feature_set": doc["feature_set"], "samples": doc.get("samples"),
            "metrics": {t: v["metrics"] for t, v in doc["targets"].items()}}


def _print_results(doc: dict[str, Any], path: Path) -> None:
    t = Table(title=f"{doc['experiment']} on {doc['dataset']} ({doc['protocol']}, features {doc['feature_set']})")
    for c in ("target", "MSE", "Pearson r", "CCC", "n"):
        t.add_column(c)
    for target, v in doc["targets"].items():
        m = v["metrics"]
        t.add_row(target, *(f"{m[k]:.{d}f}" if m.get(k) is not None and m[k] == m[k] else "n/a"  # NaN: r undefined
                            for k, d in (("mse", 4), ("pearson_r", 3), ("ccc", 3))), str(m["n"]))
    console.print(t)
    console.print(f"results: {path}", highlight=False, soft_wrap=True)


@command(app, "run")
def run_cmd(
    experiment: str = typer.Argument(..., help="Experiment name: built-in or from your --registry file (see `aanbench experiments`)."),
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    store: Path = typer.Option(..., "--store", help="Feature store holding the dataset's features."),
    out: Path = typer.Option(..., "--out", help="Results directory (each run goes to DATASET/EXPERIMENT/seedN.json) or a .json file."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset copy: extract the experiment's missing features first."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the experiment's seed."),
    registry: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP, metavar="FILE"),
    save_models: Optional[Path] = typer.Option(None, "--save-models", help="Also save each trained model (one aanbench model file per target and fold) here."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Dataset option KEY=VALUE."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (results file, metrics) on stdout."),
    sequential: bool = typer.Option(False, "--sequential", help=SEQUENTIAL_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP, metavar="cpu|cuda|cuda:N"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, show_default=False, help=THREADS_HELP),
    backend: str = typer.Option("local", "--backend", help=RAY_FIT_BACKEND_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=RAY_FIT_ADDRESS_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help=RAY_FIT_WORKERS_HELP),
) -> None:
    """Train and evaluate an experiment with the dataset's protocol; write a results
    file (config, provenance, per-sample predictions with start/end, metrics) and
    print a table. A second seed, or a changed configuration, goes beside the
    first results file, never over it.

    \b
    Examples:
      aanbench run feature-aan eimt16 --store feats --out results
      aanbench run ridge cognimuse --store feats --out results      # leave-one-movie-out
      aanbench run feature-aan demo --store feats --out results --root .aanbench-demo/data --save-models models
      aanbench run feature-aan cognimuse --store feats --out results --backend ray --workers 4
    """
    device = _check_device(device)
    from aanbench.fitray import ray_runs_setting

    ray = ray_runs_setting(backend, address, workers)
    _no_device_on_ray(device, ray)
    _no_threads_on_ray(threads, ray)
    ds = _dataset(dataset, option)
    if root is not None:
        exp = _registry(registry).experiment(experiment, ds.name)
        _, failed, _ = do_extract(ds, root, store, ",".join(exp.features), quiet=as_json)
        if failed and not as_json:
            console.print(f"[yellow]{len(failed)} item failures during extraction; those items are left out[/]")
    doc, path = do_run(experiment, ds, store, out, seed=seed, registry=registry, save_models=save_models,
                       quiet=as_json, sequential=sequential, device=device, ray=ray, threads=threads)
    if as_json:
        typer.echo(json.dumps(_results_summary(doc, path), indent=1))
        return
    _print_results(doc, path)


# ---------------------------------------------------------------------------- train


@command(app, "train")
def train_cmd(
    experiment: str = typer.Argument(..., help="Experiment name: built-in or from your --registry file (see `aanbench experiments`)."),
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    store: Path = typer.Option(..., "--store", help="Feature store holding the dataset's features."),
    out: Path = typer.Option(..., "--out", help="Model bundle to write (e.g. model.pt)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the experiment's seed."),
    registry: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP, metavar="FILE"),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Dataset option KEY=VALUE."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    sequential: bool = typer.Option(False, "--sequential", help=SEQUENTIAL_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP, metavar="cpu|cuda|cuda:N"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, show_default=False, help=THREADS_HELP),
) -> None:
    """Fit an experiment on all of a dataset's training samples (validation carved
    from them as in `run`), for every target, and write one model bundle: the
    models, feature names and store keys, standardisers, windows, experiment,
    dataset and provenance, seed. Apply it with `aanbench predict`.

    \b
    Example:
      aanbench train feature-aan demo --store feats --out demo-aan.pt
      aanbench predict demo-aan.pt --store feats --dataset demo --out predictions.csv
    """
    from aanbench.modelfile import save_bundle
    from aanbench.runner import train_bundle
    from aanbench.store import FeatureStore

    device = _check_device(device)
    ds = _dataset(dataset, option)
    exp = _registry(registry).experiment(experiment, ds.name)
    group = FeatureStore(store, mode="r").open_group(ds.name, ds.segmentation)
    group.check_dataset_config(ds.config())
    with Progress(TextColumn(f"[bold]train {experiment}[/] {{task.fields[what]}}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=err_console if as_json else console,
                  disable=as_json) as prog:
        task = prog.add_task("fit", total=None, what="")
        payload = train_bundle(exp, ds, group, _plugins(), seed=seed, sequential=sequential, device=device,
                               threads=threads,
                               on_fit=lambda t, done, total: prog.update(task, completed=done, total=total, what=t))
    payload.command = _invocation()
    path = save_bundle(out, payload)
    summary = {"bundle": str(path), "experiment": exp.name, "dataset": ds.name, "model": payload.model,
               "targets": list(payload.targets), "features": payload.feature_keys,
               "windows": payload.samples.to_dict(), "seed": payload.seed,
               "fits": {t: v.fit for t, v in payload.targets.items()}}
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    for t, v in payload.targets.items():
        f = v.fit
        console.print(f"{t}: fit on {f['n_fit']} samples, validation {f['n_val']}, best epoch {f['best_epoch']}",
                      highlight=False)
    console.print(f"model bundle: {path}", highlight=False, soft_wrap=True)


@command(app, "leaderboard")
def leaderboard_cmd(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    results: list[Path] = typer.Option(..., "--results", help="Results directory or files (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Markdown file to write; the figure goes beside it (.png)."),
    group: Optional[str] = typer.Option(None, "--group", help="Group (movie) to plot; default: every test movie (the first 12)."),
) -> None:
    """Write a leaderboard (one table per target, ranked by MSE, rows the data cannot
    tell from the best marked; published numbers for EIMT16 and COGNIMUSE in their
    own section) and a figure of predicted against true values per test movie,
    from results files."""
    from aanbench.leaderboard import write_leaderboard
    from aanbench.runner import read_results

    docs = read_results(list(results), dataset)
    if not docs:
        raise AanbenchError(f"no results for dataset {dataset!r} in {', '.join(map(str, results))}")
    md, fig = write_leaderboard(dataset, docs, out, group=group, command=_invocation())
    console.print(md.read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {md} and {fig}")


# ---------------------------------------------------------------------------- benchmark


def _parse_seeds(text: Optional[str]) -> Optional[list[int]]:
    if text is None or not text.strip():
        return None
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise AanbenchError(f"--seeds: expected integers separated by commas (e.g. 0,1,2), got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise AanbenchError(f"--seeds: expected distinct integers, got {text!r}")
    return seeds


def _one_blas_thread() -> Any:
    """BLAS on one thread while a benchmark fits its small models: on a shared
    2-core machine a threaded SVD of a 108 x 1739 matrix took 33 times longer
    (4.9 s against 0.15 s for seven) than on one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it, BLAS keeps its threads
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def benchmark_experiments(ds: Dataset, store: Path, *, registry: Optional[Path] = None,
                          only: Optional[list[str]] = None) -> tuple[list[Any], list[tuple[str, str]]]:
    """The registry experiments a benchmark of ``ds`` runs, resolved for it
    (``datasets.<name>`` settings applied), and ``(experiment, reason)`` for
    those it skips: model plugin not installed, or features not in the store.
    Every registry experiment is a candidate; one whose features (as resolved
    for the dataset) are not in the store is skipped."""
    from aanbench.store import FeatureStore

    reg = _registry(registry)
    plugins = _plugins()
    unknown = sorted(set(only or []) - set(reg.experiments))
    if unknown:
        raise AanbenchError(f"--experiments: no experiment {', '.join(unknown)} (see `aanbench experiments`)")
    group = FeatureStore(store, mode="r").open_group(ds.name, ds.segmentation)
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


def do_benchmark(ds: Dataset, store: Path, out: Path, leaderboard: Path, *, seeds: Optional[list[int]] = None,
                 registry: Optional[Path] = None, only: Optional[list[str]] = None, protocol: Optional[str] = None,
                 group: Optional[str] = None, command: str = "",
                 sequential: bool = False, device: str = "cpu",
                 ray: Optional[dict[str, Any]] = None,
                 threads: Optional[int] = None) -> tuple[Path, Path, list[dict[str, Any]], list]:
    """Run every experiment :func:`benchmark_experiments` finds, for each seed
    (default: the experiment's own), write the results files and the
    leaderboard of these runs. ``protocol`` overrides every experiment's.
    ``ray``: every run's fits are submitted to Ray at once
    (:func:`_benchmark_on_ray`). Returns (markdown, figure, results
    documents, [(experiment, reason)] skipped or failed)."""
    from dataclasses import replace

    from aanbench.leaderboard import write_leaderboard
    from aanbench.protocols import get_protocol
    from aanbench.runner import run_experiment, write_results
    from aanbench.store import FeatureStore

    if protocol is not None:
        get_protocol(protocol)  # a clear error for an unknown name, before any work
    exps, skipped = benchmark_experiments(ds, store, registry=registry, only=only)
    for name, why in skipped:
        console.print(f"[yellow]skip[/] {name}: {why}", highlight=False, soft_wrap=True)
    grp = FeatureStore(store, mode="r").open_group(ds.name, ds.segmentation)
    grp.check_dataset_config(ds.config())
    plugins = _plugins()
    docs, failed = [], []
    if ray is not None:
        runs = [(e, seed) for e in (replace(e, protocol=protocol) if protocol is not None else e for e in exps)
                for seed in seeds or [e.seed]]
        docs, failed = _benchmark_on_ray(runs, ds, grp, plugins, out, command=command, sequential=sequential,
                                         **ray)
        exps = []  # done on Ray
    for exp in exps:
        if protocol is not None:
            exp = replace(exp, protocol=protocol)
        for seed in seeds or [exp.seed]:
            with Progress(TextColumn(f"[bold]{exp.name}[/] seed {seed} {{task.fields[what]}}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=console) as prog:
                task = prog.add_task("fit", total=None, what="")

                def on_fit(target: str, fold: str, done: int, total: int) -> None:
                    prog.update(task, completed=done, total=total, what=f"{target} / {fold}")

                try:
                    with _one_blas_thread():
                        doc = run_experiment(exp, ds, grp, plugins, seed=seed, on_fit=on_fit, sequential=sequential,
                                             device=device, threads=threads)
                except Exception as exc:  # a clear error, or a bug in a model plugin: this run fails, the others go on
                    why = str(exc) if isinstance(exc, AanbenchError) else describe(exc)
                    if debug_enabled():
                        print_traceback(exc, err_console)
                    failed.append((exp.name, f"failed: {why}"))
                    console.print(f"[red]failed[/] {exp.name} (seed {seed}): {escape(why)}", highlight=False,
                                  soft_wrap=True)
                    continue
            doc.command = command
            path = write_results(doc, out)
            _print_results(doc, path)
            docs.append(doc)
    if not docs:
        why = "; ".join(f"{n}: {r}" for n, r in skipped + failed) or "the registry has no experiments"
        raise AanbenchError(f"benchmark {ds.name}: nothing ran ({why})")
    md, fig = write_leaderboard(ds.name, docs, leaderboard, group=group, command=command)
    return md, fig, docs, skipped + failed


def _benchmark_on_ray(runs: list[tuple[Any, int]], ds: Dataset, grp: Any, plugins: Any, out: Path, *, command: str,
                      sequential: bool, address: Optional[str], workers: Optional[int]) -> tuple[list, list]:
    """:func:`do_benchmark`'s runs with every fit submitted to Ray at once: one
    progress bar over all fits; each run's results file written (and its
    table printed) as soon as its fits are back; a failed run is reported and
    the others go on. Returns (documents in the order of ``runs``, failures)."""
    from aanbench.fitray import fit_runs_on_ray
    from aanbench.runner import write_results

    failed: list[tuple[str, str]] = []
    with Progress(TextColumn("[bold]benchmark[/] on ray {task.fields[what]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("fits"), TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task("fit", total=None, what="")

        def on_result(i: int, got: Any) -> None:
            exp, seed = runs[i]
            if isinstance(got, BaseException):
                why = str(got) if isinstance(got, AanbenchError) else describe(got)
                failed.append((exp.name, f"failed: {why}"))
                console.print(f"[red]failed[/] {exp.name} (seed {seed}): {escape(why)}", highlight=False,
                              soft_wrap=True)
                return
            got.command = command
            _print_results(got, write_results(got, out))

        with _one_blas_thread():
            outcomes = fit_runs_on_ray(runs, ds, grp, plugins, address=address, workers=workers,
                                       sequential=sequential, on_result=on_result,
                                       on_progress=lambda done, total, what: prog.update(
                                           task, completed=done, total=total, what=what))
    return [d for d in outcomes if not isinstance(d, BaseException)], failed


@command(app, "benchmark")
def benchmark_cmd(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    store: Path = typer.Option(..., "--store", help="Feature store holding the dataset's features."),
    out: Path = typer.Option(..., "--out", help="Results directory (each run goes to DATASET/EXPERIMENT/seedN.json)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds to run, e.g. 0,1,2 (default: each experiment's own seed)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset copy: extract the experiments' missing features first (those that cannot be extracted are skipped)."),
    leaderboard: Optional[Path] = typer.Option(None, "--leaderboard", help="Leaderboard markdown to write (default: leaderboards/DATASET.md); the figure goes beside it."),
    experiments: Optional[str] = typer.Option(None, "--experiments", help="Only these experiments (comma-separated)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Override every experiment's protocol (fixed, leave-one-group-out)."),
    group: Optional[str] = typer.Option(None, "--group", help="Group (movie) to plot; default: every test movie (the first 12)."),
    registry: Optional[Path] = typer.Option(None, "--registry", help=REGISTRY_HELP, metavar="FILE"),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Dataset option KEY=VALUE."),
    sequential: bool = typer.Option(False, "--sequential", help=SEQUENTIAL_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP, metavar="cpu|cuda|cuda:N"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, show_default=False, help=THREADS_HELP),
    backend: str = typer.Option("local", "--backend", help=RAY_FIT_BACKEND_HELP + " With ray, every experiment x "
                                "seed is submitted at once."),
    address: Optional[str] = typer.Option(None, "--address", help=RAY_FIT_ADDRESS_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help=RAY_FIT_WORKERS_HELP),
) -> None:
    """Run every registry experiment whose features are in the store (each resolved
    for DATASET: its datasets.DATASET settings applied), skipping with the reason
    those whose features or model plugin are missing, for every seed; then write
    the leaderboard of these runs. Exit 1 when an experiment failed.

    \b
    Examples:
      aanbench benchmark eimt16 --store feats --out results --seeds 0,1,2
      aanbench benchmark demo --store .aanbench-demo/store --out results --protocol leave-one-group-out
      aanbench benchmark cognimuse --store feats --out results --seeds 0,1,2 --backend ray --workers 8
    """
    device = _check_device(device)
    from aanbench.fitray import ray_runs_setting

    ray = ray_runs_setting(backend, address, workers)
    _no_device_on_ray(device, ray)
    _no_threads_on_ray(threads, ray)
    ds = _dataset(dataset, option)
    only = [e.strip() for e in experiments.split(",") if e.strip()] if experiments else None
    seed_list = _parse_seeds(seeds)
    if root is not None:
        reg = _registry(registry)
        names = sorted({f for n in reg.experiments if not only or n in only
                        for f in reg.experiment(n, ds.name).features})
        for name in names:
            try:
                _, failed_items, _ = do_extract(ds, root, store, name)
            except AanbenchError as exc:
                console.print(f"[yellow]not extracted[/] {name}: {exc}", highlight=False, soft_wrap=True)
                continue
            if failed_items:
                console.print(f"[yellow]{len(failed_items)} item failures for {name}; those items are left out[/]")
    lb = leaderboard or Path("leaderboards") / f"{ds.name}.md"
    md, fig, docs, problems = do_benchmark(ds, store, out, lb, seeds=seed_list, registry=registry, only=only,
                                           protocol=protocol, group=group, command=_invocation(),
                                           sequential=sequential, device=device, ray=ray, threads=threads)
    console.print(md.read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {md} and {fig}: {len(docs)} runs, {len(problems)} skipped or failed")
    if any(why.startswith("failed:") for _, why in problems):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- predict


@command(app, "predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="Model bundle (`aanbench train`), or a single-target model file (`run --save-models`, `models import-aan`)."),
    store: Path = typer.Option(..., "--store", help="Feature store."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset (store group) whose stored features to use."),
    out: Path = typer.Option(..., "--out", help="CSV to write: item_id,start,end,<targets>,reason."),
    segmentation: Optional[str] = typer.Option(None, "--segmentation", help="Store segmentation group (default: the dataset's, else 'default')."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Apply a model to the features stored for a dataset, rebuilding the windows
    it was trained with: one CSV row per sample, item_id,start,end (seconds; empty =
    the file's beginning/end), one column per target, and a reason for samples left
    out (a row without valid features: empty prediction). Exit 1 when any was left out."""
    from aanbench.modelfile import load_any
    from aanbench.predict import predict_group
    from aanbench.store import FeatureStore

    payload = load_any(model)
    plugins = _plugins()
    seg = segmentation or (plugins.datasets[dataset].segmentation if dataset in plugins.datasets else "default")
    group = FeatureStore(store, mode="r").open_group(dataset, seg)
    preds = predict_group(payload, group, plugins)
    path = preds.write_csv(out)
    summary = {"predictions": str(path), "model": str(model), **preds.summary()}
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        for note in preds.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        console.print(f"{summary['predicted']}/{summary['samples']} samples predicted "
                      f"({', '.join(preds.targets)}) -> {path}", highlight=False, soft_wrap=True)
        if preds.n_left_out:
            console.print(f"[red]{preds.n_left_out} left out[/] (reason column), first: "
                          f"{next(r for r in preds.reasons if r)}", highlight=False, soft_wrap=True)
    if preds.n_left_out:
        raise typer.Exit(1)


@command(app, "curve")
def curve_cmd(
    films: list[Path] = typer.Argument(..., metavar="FILM...", help="Film files (any format PyAV reads)."),
    model: list[Path] = typer.Option(..., "--model", metavar="BUNDLE", help="Model bundle (`aanbench train`) or model file (`run --save-models`, `models import-aan`); repeat for one file per target."),
    window: float = typer.Option(5.0, "--window", metavar="SECONDS", help="Window length."),
    hop: Optional[float] = typer.Option(None, "--hop", metavar="SECONDS", help="Step between window starts (default: the window)."),
    store: Path = typer.Option(Path(".aanbench-curve/store"), "--store", help="Feature store for the films' windows (reused and resumed)."),
    out: Path = typer.Option(Path("."), "--out", metavar="DIR", help="Folder for <film>.curve.csv, .png and .html."),
    smooth: Optional[float] = typer.Option(None, "--smooth", metavar="SECONDS", help="Also draw a centred moving average over this many seconds."),
    workers: int = typer.Option(1, "--workers", "-j", help="Extraction workers."),
    device: str = typer.Option("cpu", "--device", help="Torch device for neural extractors."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Folder of pretrained weight files."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """The emotion curve of a film: valence and arousal window by window.

    Cuts each film into windows (the last partial window is kept when at least
    half a window long), extracts the model's features for them into the store,
    predicts every target the model has and writes <film>.curve.csv
    (start,end,<targets>,reason), <film>.curve.png (the targets over time and the
    valence-arousal plane) and <film>.curve.html (one self-contained page). Exit 1
    when some windows failed (listed with their reason), 2 on configuration errors.

    \b
    Example:
      aanbench train ridge demo --store feats --out demo-ridge.pt
      aanbench curve film.mp4 --model demo-ridge.pt --window 5 --smooth 30 --out curves
    """
    from aanbench.curve import DEMO_WARNING, film_curve, load_models

    if window <= 0 or (hop is not None and hop <= 0):
        raise AanbenchError("--window and --hop must be positive seconds")
    names: dict[str, Path] = {}
    for film in films:
        if film.name in names and names[film.name] != film:
            raise AanbenchError(f"{names[film.name]} and {film} have the same name, so their curves would overwrite "
                                "each other: draw them with separate --out folders")
        names[film.name] = film
    models = load_models(model)
    if any(m.dataset == "demo" for m in models):
        err_console.print(f"[bold yellow]warning:[/] {DEMO_WARNING}", highlight=False, soft_wrap=True)
    summaries, any_failed = [], False
    for film in films:
        with Progress(TextColumn(f"[bold]curve[/] {film.name}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("windows"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=err_console if as_json else console, disable=as_json) as prog:
            task = prog.add_task("windows", total=None)
            try:
                res = film_curve(film, models, store=store, out_dir=out, window=window, hop=hop, smooth=smooth,
                                 workers=workers, device=device, weights_dir=weights_dir,
                                 on_planned=lambda plan, skipped, be: prog.update(task, total=plan.n_items_todo),
                                 on_progress=lambda r: prog.advance(task, r.unit.n_items))
            except KeyboardInterrupt as exc:  # Ctrl-C: the chunks saved are kept; the same command resumes
                from aanbench.extraction import ExtractionInterrupted

                prog.stop()
                err_console.print(str(exc) if isinstance(exc, ExtractionInterrupted) else
                                  str(ExtractionInterrupted(0)), highlight=False, soft_wrap=True)
                raise typer.Exit(130) from None
        failed = res.failed
        any_failed |= bool(failed)
        summaries.append({"film": str(film), "windows": len(res.reasons), "failed": len(failed),
                          "targets": res.targets, "csv": str(res.csv), "png": str(res.png), "html": str(res.html),
                          "store_group": res.group, "failures": [list(f) for f in failed]})
        if as_json:
            continue
        for note in res.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        console.print(f"{film.name}: {len(res.reasons) - len(failed)}/{len(res.reasons)} windows of {window:g} s "
                      f"({', '.join(res.targets)}) -> {res.csv}, {res.png}, {res.html}", highlight=False,
                      soft_wrap=True)
        if failed:
            console.print(f"[red]{len(failed)} windows failed[/] (start-end s: reason):")
            for s, e, why in failed[:50]:
                console.print(f"  {s:g}-{e:g}: {why}", highlight=False, soft_wrap=True)
            if len(failed) > 50:
                console.print(f"  ... and {len(failed) - 50} more (reason column of {res.csv})", highlight=False)
    if as_json:
        typer.echo(json.dumps(summaries, indent=1))
    if any_failed:
        raise typer.Exit(1)


@command(models_app, "info")
def models_info_cmd(
    file: Path = typer.Argument(..., help="Model bundle or model file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """What a model file predicts, from which features and windows, trained on what."""
    from aanbench.modelfile import load_any

    p = load_any(file)
    info = {
        "file": str(file), "format": p.source_format, "model": p.model,
        "model_version": p.model_version, "input": p.input,
        "targets": list(p.targets), "features": list(p.features),
        "feature_keys": list(p.feature_keys), "dims": list(p.dims),
        "windows": p.samples.to_dict(), "experiment": p.experiment, "dataset": p.dataset,
        "seed": p.seed, "standardised": {t: v.standardize is not None for t, v in p.targets.items()},
        "fits": {t: v.fit for t, v in p.targets.items() if v.fit},
        "provenance": p.provenance,
    }
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
        return
    t = Table(title=f"{file}", show_header=False)
    t.add_column("field")
    t.add_column("value")
    w = info["windows"]
    feats = info["feature_keys"] or info["features"]
    rows = [
        ("format", info["format"]),
        ("model", f"{info['model']} (version {info['model_version'] or '?'}, takes {info['input']})"),
        ("predicts", ", ".join(info["targets"])),
        ("features", ", ".join(f"{k} ({d})" for k, d in zip(feats, info["dims"])) if info["dims"] else ", ".join(feats)),
        ("windows", "single rows" if int(w.get("length", 1)) == 1 else
         f"{w['length']} rows, stride {w['stride']}, within one {w['scope']}, labelled by {w['label']}, "
         f"start: {w['start']}"),
        ("standardised", ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in info["standardised"].items())),
        ("experiment", str(info["experiment"].get("name") or "?")),
        ("trained on", str(info["dataset"].get("name") or "?") + (
            f" ({info['dataset'].get('n_samples')} samples, group {info['dataset'].get('group')})"
            if info["dataset"].get("group") else "")),
        ("seed", str(info["seed"])),
    ]
    for k, v in info["fits"].items():
        rows.append((f"fit {k}", f"{v['n_fit']} fit / {v['n_val']} validation samples, best epoch {v['best_epoch']}"))
    for k in ("source_file", "source_sha256", "converted_by"):
        if k in info["provenance"]:
            rows.append((k, str(info["provenance"][k])))
    for r in rows:
        t.add_row(*r)
    console.print(t, soft_wrap=True)


# ---------------------------------------------------------------------------- demo


def _demo_prerequisites(generate: Any, experiments: list[str], workdir: Path, leaderboard: Path) -> list[str]:
    """Everything `demo` needs, checked before the clips are made: the
    registry and its demo experiments, their model and extractor plugins
    (weight-free), and writable output folders. Returns the extractor names;
    raises one error listing every problem."""
    problems: list[str] = []
    if generate is None:
        problems.append("the demo dataset plugin cannot generate its data")
    plugins = _plugins()
    features: set[str] = set()
    try:
        reg = _registry()
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


DEMO_PROTOCOL = "leave-one-group-out"  # every movie tests once: 120 predictions from 10 movies by default


@command(app, "demo")
def demo_cmd(
    workdir: Path = typer.Option(Path(".aanbench-demo"), "--workdir", help="Where the demo data, store and results go."),
    leaderboard: Path = typer.Option(Path("leaderboards/demo.md"), "--leaderboard", help="Leaderboard markdown to write."),
    clips: int = typer.Option(120, "--clips", help="Number of demo clips to generate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated dataset."),
    workers: int = typer.Option(min(4, os.cpu_count() or 1), "--workers", "-j",
                                help="Extraction workers (default: the machine's cores, at most 4).", metavar="N"),
) -> None:
    """Everything on the generated demo dataset: make the clips, extract the
    weight-free features, then `aanbench benchmark demo` with leave-one-movie-out
    (every registry experiment with demo settings: Feature AttendAffectNet and the
    baselines), which writes the leaderboard; last, the emotion curve of the
    test movies joined into one film, from a model trained on the other movies
    (WORKDIR/curve/*.curve.png, .csv, .html). Idempotent: a second run reuses
    data and features."""
    ds = _plugins().dataset("demo")
    generate = getattr(ds, "generate", None)
    try:
        reg = _registry()
        experiments = sorted(n for n, e in reg.experiments.items() if "demo" in e.get("datasets", {}))
    except AanbenchError:
        experiments = []  # _demo_prerequisites reports the registry's problem
    features = _demo_prerequisites(generate, experiments, workdir, leaderboard)  # before any work
    data = workdir / "data"
    console.rule("[bold]1. demo dataset")
    with Progress(TextColumn("[bold]generate[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("clips"),
                  TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task("generate", total=clips)
        generate(data, seed=seed, clips=clips, progress=lambda done, total: prog.update(task, completed=done, total=total))
    console.print(f"demo dataset: {data}")
    console.rule("[bold]2. extract features")
    store = workdir / "store"
    report, failed, plan = do_extract(ds, data, store, ",".join(features), workers=workers, chunk_rows=16)
    _print_extract_summary(report, failed, plan)
    console.rule(f"[bold]3. benchmark: {len(experiments)} experiments, leave-one-movie-out")
    results = workdir / "results"
    cmd = "aanbench demo" + ("" if workdir == Path(".aanbench-demo") else f" --workdir {workdir}")
    md, fig, docs, problems = do_benchmark(ds, store, results, leaderboard, protocol=DEMO_PROTOCOL, command=cmd)
    console.rule("[bold]4. leaderboard")
    console.print(md.read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {md} and {fig}")
    console.rule("[bold]5. emotion curve of the test movies, joined into one film")
    from aanbench.curve import demo_curve

    with Progress(TextColumn("[bold]curve[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("windows"),
                  TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task("curve", total=None)
        fc = demo_curve(workdir, store, data=data, on_progress=lambda r: prog.advance(task, r.unit.n_items))
    for path in (fc.png, fc.html, fc.csv):
        console.print(f"wrote {path}")
    if failed or fc.failed or any(why.startswith("failed:") for _, why in problems):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- wiring


def _version_cb(value: bool) -> None:
    if value:
        typer.echo(f"aanbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version_cb, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug",
                               help=f"On an error, print the full traceback (file and line; also ${DEBUG_ENV}=1)."),
) -> None:
    """aanbench"""
    if debug:
        os.environ[DEBUG_ENV] = "1"  # worker processes inherit it


def _mount_optional() -> None:
    try:
        from aanbench.cli_weights import weights_app

        app.add_typer(weights_app, name="weights")
    except ImportError:
        pass
    groups = CliGroups(root=app, store=store_app, models=models_app, datasets=datasets_app)
    try:
        _plugins().pm.hook.aanbench_commands(cli=groups)
    except AanbenchError as exc:
        err_console.print(f"[red]error:[/] {exc}")


_mount_optional()


def main() -> None:
    try:
        app(prog_name="aanbench")  # the same name (and completion variable) for `python -m aanbench`
    except AanbenchError as exc:  # raised outside a command (e.g. while loading)
        if debug_enabled():
            print_traceback(exc, err_console)
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
