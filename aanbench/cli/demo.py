"""``aanbench demo``: everything on the generated demo dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from aanbench.cli._common import app, command, console, item_progress, print_interrupted
from aanbench.cli.extract import print_extract_summary, print_plan
from aanbench.cli.run import BenchmarkBars
from aanbench.workflows import DemoEvents, demo


class DemoBars(BenchmarkBars, DemoEvents):
    """The demo's rules, bars and printed results."""

    def __init__(self) -> None:
        super().__init__()
        self.bar: Any = None
        self.bar_task: Any = None
        self.rate = False

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
        console.rule(f"[bold]{number}. {title}")
        if number == 2:
            self._bar("[bold]extract[/]", "items", remaining=True, rate=True)
        elif number == 5:
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

    def ended(self) -> None:
        super().ended()

    def close(self) -> None:
        self._end_bar()
        super().ended()


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
    bars = DemoBars()
    try:
        res = demo(workdir, leaderboard, clips=clips, seed=seed, workers=workers, events=bars)
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
        total = sum(sec for name, sec in res.timings if not name.startswith(" "))
        console.print(f"where the time went ({total:.1f} s; load average "
                      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}):", highlight=False)
        for name, sec in res.timings:
            console.print(f"  {name:48s} {sec:7.1f} s", highlight=False)
    if res.failed:
        raise typer.Exit(1)
