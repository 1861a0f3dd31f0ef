"""What every command module shares: the consoles, the Typer apps, the
``command`` decorator (expected errors: one message, exit 2), shell
completion of names, plain metavars, help strings and the progress bars."""

from __future__ import annotations

import functools
import shlex
import sys
from typing import Any, Callable

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperArgument, TyperGroup, TyperOption

from aanbench.contracts import AanbenchError
from aanbench.output import debug_enabled, describe, make_console, print_traceback

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

DATASET_HELP = "Dataset name, as `aanbench datasets` lists it."
REGISTRY_HELP = ("Your own experiments file (TOML), added to the built-in registry; "
                 "default $AANBENCH_REGISTRY.")
SEQUENTIAL_HELP = ("Train one model at a time. By default the models that support it (feature-aan, temporal-aan, "
                   "...) train all their folds and targets together in one batched stack: same seed, same "
                   "numbers for each path; the two paths agree within the bootstrap interval, not bit for bit.")
DEVICE_HELP = ("Torch device for training and predicting with torch models (feature-aan, temporal-aan, ...): cpu "
               "(default), cuda or cuda:N; other models run on the CPU. GPU numbers differ from CPU numbers in "
               "the last bits; the same seed on the same GPU gives the same numbers.")
THREADS_HELP = ("CPU threads for the first layer of the batched models' stack (feature-aan, temporal-aan, ...; "
                "where most of their arithmetic is). Default: every CPU this process may use. Each product "
                "still runs on one thread, so any N gives the same numbers; --threads 1 leaves the other "
                "cores to other work.")
RAY_FIT_BACKEND_HELP = ("Where the fits run: local (this process) or ray (Ray tasks, one per batched stack or per "
                        "fit, on a local Ray instance or the cluster at --address; same numbers as local).")
RAY_FIT_ADDRESS_HELP = "Ray: join this cluster ('auto' or host:port) instead of starting a local one."
RAY_FIT_WORKERS_HELP = "Ray: most fits running at once (default: as many as the cluster's CPUs take)."


# ---------------------------------------------------------------- completion


def _plugins():
    from aanbench.workflows import plugins

    return plugins()


def complete_datasets(incomplete: str) -> list[str]:
    try:
        return sorted(n for n in _plugins().datasets if n.startswith(incomplete))
    except Exception:  # completion must never fail loudly
        return []


def complete_experiments(ctx: typer.Context, incomplete: str) -> list[str]:
    from aanbench.workflows import registry

    try:
        return sorted(n for n in registry(ctx.params.get("registry")).experiments if n.startswith(incomplete))
    except Exception:
        return []


def complete_extractors(incomplete: str) -> list[str]:
    done, _, last = incomplete.rpartition(",")
    try:
        names = sorted(_plugins().extractors)
    except Exception:
        return []
    prefix = done + "," if done else ""
    return [prefix + n for n in names if n.startswith(last) and n not in done.split(",")]


def dataset_argument(help: str = DATASET_HELP) -> Any:
    return typer.Argument(..., help=help, autocompletion=complete_datasets)


def experiment_argument() -> Any:
    return typer.Argument(..., autocompletion=complete_experiments,
                          help="Experiment name: built-in or from your --registry file (see `aanbench experiments`).")


def option_option(help: str = "Dataset option KEY=VALUE.") -> Any:
    return typer.Option(None, "--option", "-o", help=help, metavar="KEY=VALUE")


# ---------------------------------------------------------------- plain metavars

# Metavars a user reads in --help: what to type, not the Python type (`--store STORE`,
# `--workers N`, `--option KEY=VALUE`, usage `aanbench run EXPERIMENT DATASET`).
# An option or argument that sets its own metavar (``metavar=``) keeps it; the
# others (plugin commands' too) get one from these names or their annotation.
METAVARS = {"option": "KEY=VALUE", "root": "DIR", "weights_dir": "DIR", "workdir": "DIR", "save_models": "DIR",
            "out": "PATH", "results": "PATH", "registry": "FILE", "leaderboard": "FILE", "extractors": "NAMES",
            "address": "ADDRESS", "device": "DEVICE"}


def _metavar(param: TyperOption) -> str | None:
    desc = param.type_descriptor
    if param.is_flag or param.count or desc.is_choice:
        return None
    name = param.name or ""
    if name in METAVARS:
        return METAVARS[name]
    if desc.annotation is int:
        return "N"
    if desc.annotation is float:
        return "NUMBER"
    return name.upper()


class PlainArgument(TyperArgument):
    """An argument shown by its name only. Typer's plain help (no Rich
    markup) adds the Python type (``DATASET <str>``) and braces in the usage
    line (``{DATASET}``), with no public switch to turn them off."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the metavar already names it

    def _usage_display_name(self) -> str:
        return self.display_name_raw if self.required else f"[{self.display_name_raw}]"


def plain_params(cmd: Any) -> None:
    """Plain metavars for every parameter of ``cmd`` and its sub-commands
    (plugin commands included)."""
    for p in cmd.params:
        if type(p) is TyperArgument:
            p.__class__ = PlainArgument  # same fields; only the two displays above differ
            if p.metavar is None:
                p.metavar = (p.name or "").upper()
        elif type(p) is TyperOption and p.metavar is None:
            p.metavar = _metavar(p)
    for sub in getattr(cmd, "commands", {}).values():
        plain_params(sub)


class PlainGroup(TyperGroup):
    """The root command group (``cls=``): plain metavars for every command it resolves."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            plain_params(cmd)
        return cmd


# ---------------------------------------------------------------- apps

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=True, rich_markup_mode=None, cls=PlainGroup,
                  context_settings={"help_option_names": ["-h", "--help"]})
store_app = typer.Typer(help="Inspect and fill feature stores.", no_args_is_help=True)
models_app = typer.Typer(help="Model files and named models: list the shipped ones, convert published checkpoints, "
                              "inspect.", no_args_is_help=True)
datasets_app = typer.Typer(help="List datasets (no subcommand), make the demo or a fixture, check a copy.",
                           invoke_without_command=True)
app.add_typer(store_app, name="store")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")


def command(target: typer.Typer, name: str | None = None, **kw: Any) -> Callable:
    """Register a command whose expected errors become a message and exit 2."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
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

        target.command(name, **kw)(wrapper)
        return wrapper

    return deco


def invocation() -> str:
    """The command line as typed, for results files and leaderboards."""
    return "aanbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""


def echo_json(doc: Any, indent: int = 1) -> None:
    import json

    typer.echo(json.dumps(doc, indent=indent, default=str))


# ---------------------------------------------------------------- progress bars


def fit_progress(title: str, *, quiet: bool = False, to_stderr: bool = False, unit: str | None = None) -> Progress:
    """A bar of fits done: ``title``, then what was fitted last (``{task.fields[what]}``)."""
    cols: list[Any] = [TextColumn(f"{title} {{task.fields[what]}}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        cols.append(TextColumn(unit))
    cols.append(TimeElapsedColumn())
    return Progress(*cols, console=err_console if to_stderr else console, disable=quiet)


def item_progress(title: str, unit: str, *, quiet: bool = False, to_stderr: bool = False, remaining: bool = True,
                  rate: bool = False) -> Progress:
    """A bar of items (clips, windows, items) done, with elapsed (and remaining) time."""
    cols: list[Any] = [TextColumn(title), BarColumn(), MofNCompleteColumn(), TextColumn(unit)]
    if rate:
        cols.append(TextColumn("{task.fields[rate]}"))
    cols.append(TimeElapsedColumn())
    if remaining:
        cols.append(TimeRemainingColumn())
    return Progress(*cols, console=err_console if to_stderr else console, disable=quiet, transient=False)


def fit_text(fit: dict[str, Any]) -> str:
    """A trained target's fit in words: its samples, and its best epoch where
    it trained in epochs (a closed-form model, such as ridge, has none)."""
    text = f"{fit.get('n_fit')} fit / {fit.get('n_val')} validation samples"
    epochs = int(fit.get("epochs") or 0)
    return text + (f", best epoch {fit.get('best_epoch')} of {epochs}" if epochs > 0 else " (fitted without epochs)")


def print_interrupted(exc: BaseException) -> None:
    """An extraction stopped by Ctrl-C: how many chunks were saved."""
    from aanbench.workflows import ExtractionInterrupted

    err_console.print(str(exc) if isinstance(exc, ExtractionInterrupted) else str(ExtractionInterrupted(0)),
                      highlight=False, soft_wrap=True)




class LazyBar:
    """A fit bar (:func:`fit_progress`) drawn from its first update on, so an
    error before any fit (a missing store group, say) prints no empty bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def update(self, done: int, total: int, what: str) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("fit", total=None, what="")
        self.progress.update(self.task, completed=done, total=total, what=what)

    def __enter__(self) -> "LazyBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.task is not None:
            self.progress.stop()
