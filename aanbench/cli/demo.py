"""``aanbench demo``: everything on the generated demo dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from aanbench.cli._common import app, command, console, fit_progress, item_progress, print_interrupted
from aanbench.cli.extract import print_extract_summary, print_plan
from aanbench.cli.run import BenchmarkBars, print_results
from aanbench.workflows import DemoEvents, demo


class DemoBars(BenchmarkBars, DemoEvents):
    """The demo's rules, bars and printed results. When the runs train
    several at a time (:meth:`training`), one bar counts the runs done and
    names those in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.bar: Any = None
        self.bar_task: Any = None
        self.rate = False
        self.pooled = False
        self.curve_beside = False
        self.to_train = 0
        self.in_flight: list[str] = []

    def _bar(self, title: str, unit: str, total: int | None = None, remaining: bool = False,
             rate: bool = False) -> None:
        self._end_bar()
        self.rate = rate
        self.bar = item_progress(title, unit, remaining=remaining, rate=rate)
        self.bar.start()
        self.bar_task = self.bar.add_task(unit, total=total, rate="")

    def _end_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def step(self, number: int, title: str) -> None:
        self._end_bar()
        if number == 4:
            self._stop()  # the training's bar
            self.pooled = False
        console.rule(f"[bold]{number}. {title}")
        if number == 2:
            self._bar("[bold]extract[/]", "items", remaining=True, rate=True)
        elif number == 5 and not self.curve_beside:
            self._bar("[bold]curve[/]", "windows")

    def generating(self, done: int, total: int) -> None:
        if self.bar is None:
            self._bar("[bold]generate[/]", "clips", total=total)
        self.bar.update(self.bar_task, completed=done, total=total)

    def generated(self, data: Path) -> None:
        self._end_bar()
        console.print(f"demo dataset: {data}")

    def extract_planned(self, plan: Any, skipped: list[str], backend: str) -> None:
        self.bar.update(self.bar_task, total=plan.n_items_todo)
        print_plan(self.bar.console, "demo", plan, skipped, backend)  # the demo dataset's name

    def store_replaced(self, reason: str, moved: list[tuple[Path, Path]]) -> None:
        self.bar.console.print(f"[yellow]the demo's features were computed by other versions ({reason})[/]: "
                               "extracting and training again; "
                               + ", ".join(f"{a.name} moved to {b.name}" for a, b in moved), highlight=False)

    def extract_progress(self, unit: Any) -> None:
        self.bar.advance(self.bar_task, unit.unit.n_items)
        task = self.bar.tasks[0]
        el = task.elapsed or 0
        self.bar.update(self.bar_task, rate=f"{task.completed / el:.1f} items/s" if el > 0 else "")

    def extracted(self, outcome: Any) -> None:
        self._end_bar()
        print_extract_summary(outcome)

    def benchmarked(self, result: Any) -> None:
        console.print(result.leaderboard.read_text(), markup=False, highlight=False, soft_wrap=True)
        console.print(f"wrote {result.leaderboard} and {result.figure}")

    def curve_progress(self, unit: Any) -> None:
        self.bar.advance(self.bar_task, unit.unit.n_items)

    def training(self, experiments: int, at_a_time: int) -> None:
        self.pooled = self.curve_beside = True
        self.to_train = experiments
        console.print(f"training {at_a_time} runs at a time (one process each); the curve of step 5 is drawn "
                      "meanwhile in the same processes", highlight=False)

    def resumed(self, run: Any) -> None:
        super().resumed(run)
        self.to_train = max(0, self.to_train - 1)

    def _pool_bar(self) -> None:
        if self.prog is None:
            self.prog = fit_progress("[bold]train[/]", unit="runs")
            self.prog.start()
            self.task = self.prog.add_task("fit", total=self.to_train or None, what="")
        self.prog.update(self.task, what=", ".join(self.in_flight))

    def started(self, experiment: str | None, seed: int | None) -> None:
        if not self.pooled:
            return super().started(experiment, seed)
        self.in_flight.append(f"{experiment} seed {seed}")
        self._pool_bar()

    def progress(self, done: int, total: int, what: str) -> None:
        if not self.pooled:
            super().progress(done, total, what)

    def _done(self, experiment: str, seed: Any) -> None:
        name = f"{experiment} seed {seed}"
        if name in self.in_flight:
            self.in_flight.remove(name)
        self._pool_bar()
        self.prog.advance(self.task, 1)

    def finished(self, run: Any) -> None:
        if not self.pooled:
            return super().finished(run)
        self._done(run.experiment, run.seed)
        self._note(run.experiment, "ran", str(run.seed))
        print_results(run)

    def failed(self, failure: Any) -> None:
        if not self.pooled:
            return super().failed(failure)
        self._done(failure.experiment, failure.seed)
        per_run, self.per_run = self.per_run, False  # the bar stays up: other runs go on
        super().failed(failure)
        self.per_run = per_run

    def ended(self) -> None:
        if not self.pooled:
            super().ended()  # one run, one bar

    def close(self) -> None:
        self._end_bar()
        self._stop()


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def print_timings(timings: list[tuple[str, float]], cpu: float | None = None) -> None:
    """The demo's last words: a table of its steps and their wall seconds
    (indented rows: parts of the step above, or work beside it; not in the
    total), with the CPU seconds of the demo's processes (``cpu``) and the
    load average, which say how quiet the machine was: on N quiet cores the
    wall time cannot be below CPU / N."""
    from rich.table import Table

    total = sum(sec for name, sec in timings if not name.startswith(" "))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    used = f", {cpu:.0f} CPU-s" if cpu is not None else ""
    t = Table(title=f"where the time went: {total:.1f} s{used} (load average {load})", title_justify="left")
    t.add_column("step")
    t.add_column("seconds", justify="right")
    for name, sec in timings:
        sub = name.startswith(" ")
        t.add_row(f"[dim]{name}[/]" if sub else name, f"[dim]{sec:.1f}[/]" if sub else f"{sec:.1f}")
    console.print(t, highlight=False)


@command(app, "demo")
def demo_cmd(
    workdir: Path = typer.Option(Path(".aanbench-demo"), "--workdir", help="Where the demo data, store and results go."),
    leaderboard: Path = typer.Option(Path("leaderboards/demo.md"), "--leaderboard", help="Leaderboard markdown to write."),
    clips: int = typer.Option(120, "--clips", help="Number of demo clips to generate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated dataset."),
    workers: int = typer.Option(min(4, os.cpu_count() or 1), "--workers", "-j", min=1,
                                help="Processes for each step: clips, extraction, training (runs at a time, each "
                                     "whole in one process; the same numbers with any N) with the curve beside it "
                                     "(default: the machine's cores, at most 4).", metavar="N"),
    rerun: bool = typer.Option(False, "--rerun", help="Train every experiment, and the curve's model, again, even "
                               "those whose results are in WORKDIR/results with the same configuration (by default "
                               "they are read, not retrained). Data and features are reused either way."),
) -> None:
    """Everything on the generated demo dataset: make the clips, extract the
    weight-free features, then `aanbench benchmark demo` with leave-one-movie-out
    (every registry experiment with demo settings: Feature AttendAffectNet and the
    baselines), which writes the leaderboard; last, the emotion curve of the
    test movies joined into one film, from a model trained on the other movies
    (WORKDIR/curve/*.curve.png, .csv, .html). Idempotent: a second run reuses
    data, features and results (--rerun trains again; features made by
    other library versions, after an upgrade, are moved aside to
    WORKDIR/store.previous and extracted and trained again). Ends with a table of
    where the time went."""
    bars = DemoBars()
    cpu0 = _cpu_seconds()
    try:
        res = demo(workdir, leaderboard, clips=clips, seed=seed, workers=workers, rerun=rerun, events=bars)
    except KeyboardInterrupt as exc:
        from aanbench.workflows import ExtractionInterrupted

        bars.close()
        if not isinstance(exc, ExtractionInterrupted):
            raise
        print_interrupted(exc)
        raise typer.Exit(130) from None
    finally:
        bars.close()
    for path in (res.curve.png, res.curve.html, res.curve.csv):
        console.print(f"wrote {path}")
    if res.timings:
        print_timings(res.timings, _cpu_seconds() - cpu0)
    if res.failed:
        raise typer.Exit(1)
