"""``aanbench extract``, and the extraction progress bar other commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from aanbench.cli._common import (
    app,
    command,
    complete_extractors,
    console,
    dataset_argument,
    echo_json,
    item_progress,
    option_option,
    print_interrupted,
)
from aanbench.contracts import Dataset
from aanbench.workflows import extract, extract_summary, resolve_dataset
from aanbench.workflows.extract import chunks_computed, idle_cpus_hint


def print_plan(out: Any, dataset: str, plan: Any, skipped: list[str], backend_name: str) -> None:
    """The extraction's plan, once known: extractors skipped, items, chunks to compute."""
    if skipped:
        out.print(f"[yellow]skipping extractors without their weights:[/] {', '.join(skipped)} "
                  "(see `aanbench weights`)")
    done_already = sum(plan.skipped_chunks.values())
    out.print(
        f"{dataset}: {len(plan.job.items)} items, {plan.group.n_chunks} chunks of {plan.group.chunk_rows}; "
        f"extractors {', '.join(plan.job.extractors)}; {len(plan.units)} chunks to compute"
        + (f" ({done_already} extractor-chunks already done)" if done_already else "")
        + f"; backend {backend_name}", highlight=False)
    for key, changes in plan.kept_as_made.items():
        out.print(f"[yellow]note:[/] {key} is complete and was made by other versions ({'; '.join(changes)}): "
                  "read as it is; extract into a new store to compute it with these", highlight=False)
    hint = idle_cpus_hint(plan, backend_name)
    if hint:
        out.print(f"[dim]{hint}[/]", highlight=False)


def extract_with_progress(dataset: Dataset, root: Path, store: Path, extractors: Any, *, quiet: bool = False,
                          **settings: Any):
    """:func:`aanbench.workflows.extract` with a progress bar; an interrupt
    (Ctrl-C) prints how many chunks were saved and exits with status 130."""
    with item_progress("[bold]extract[/]", "items", quiet=quiet, rate=True) as prog:
        task = prog.add_task("extract", total=None, rate="")

        def on_planned(plan, skipped: list[str], backend_name: str) -> None:
            prog.update(task, total=plan.n_items_todo)
            if not quiet:
                print_plan(prog.console, dataset.name, plan, skipped, backend_name)

        def on_progress(res) -> None:
            prog.advance(task, res.unit.n_items)
            el = prog.tasks[0].elapsed or 0
            done = prog.tasks[0].completed
            prog.update(task, rate=f"{done / el:.1f} items/s" if el > 0 else "")

        try:
            return extract(dataset, root, store, extractors, on_planned=on_planned, on_progress=on_progress,
                           **settings)
        except KeyboardInterrupt as exc:  # ExtractionInterrupted, or Ctrl-C before the run's handler is set
            prog.stop()
            print_interrupted(exc)
            raise typer.Exit(130) from None


@command(app, "extract")
def extract_cmd(
    dataset: str = dataset_argument("Dataset name (see `aanbench datasets`)."),
    root: Path = typer.Option(..., "--root", help="Your copy of the dataset (official layout), or a folder for `files`."),
    store: Path = typer.Option(..., "--store", help="Feature store directory (Zarr v3; created if missing)."),
    extractors: Optional[str] = typer.Option(None, "--extractors", "-e", autocompletion=complete_extractors,
                                             help="Comma-separated extractor names. Default: every installed extractor whose weights are present."),
    backend: str = typer.Option("local", "--backend", help="Where work runs: local (this machine) or ray."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1, help="Parallel workers: processes (default 1), or with --backend ray actors per pool (default: as many as the cluster takes, one per CPU and one per GPU share)."),
    chunk_rows: Optional[int] = typer.Option(None, "--chunk-rows", help="Items per chunk, the unit of work and of resume (fixed when a store group is created). Default: 32, or, with several workers, fewer so that every worker gets a chunk (items / workers, rounded up)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Items per extractor batch."),
    device: str = typer.Option("cpu", "--device", help="Torch device for neural extractors: cpu, cuda, cuda:1 ..."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Folder of pretrained weight files (default $AANBENCH_WEIGHTS or ~/.cache/aanbench/weights)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Recompute chunks that hold failed items."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray: join this cluster ('auto' or host:port) instead of starting a local one."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="Ray: GPU share each GPU extractor worker asks for."),
    option: Optional[list[str]] = option_option("Dataset option KEY=VALUE (see the dataset's card)."),
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
    ds = resolve_dataset(dataset, option)
    outcome = extract_with_progress(ds, root, store, extractors, quiet=as_json, backend=backend, workers=workers,
                                    chunk_rows=chunk_rows, batch_size=batch_size, device=device,
                                    weights_dir=weights_dir, retry_failed=retry_failed, address=address,
                                    gpus_per_worker=gpus_per_worker)
    if as_json:
        echo_json(extract_summary(outcome), indent=2)
    else:
        print_extract_summary(outcome)
    if outcome.failed or outcome.report.unit_errors:
        raise typer.Exit(1)


def print_extract_summary(outcome: Any) -> None:
    """The summary table and failures."""
    report, failed, plan = outcome.report, outcome.failed, outcome.plan
    n = plan.group.n_items
    computed = chunks_computed(plan)
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
