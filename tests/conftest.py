"""Shared test helpers: real clips written with PyAV, and the CLI runners:
``run_cli`` (in this process: no interpreter, torch or plugin start-up, the
default) and ``run_aanbench`` (a fresh process, for tests where that is the
point: plugin discovery, entry points, signals, Ray drivers that must die)."""

from __future__ import annotations

import json
import os
import subprocess
import signal
import sys
from pathlib import Path

from typing import Any, Callable

import numpy as np
import pytest
from filelock import FileLock
from typer.testing import CliRunner

from aanbench.pluginkit.mediawrite import write_clip

REPO = Path(__file__).resolve().parents[1]
AANBENCH = [sys.executable, "-m", "aanbench"]

# Ray starts its workers at nice 15 (its worker_niceness). On a machine the
# test run already keeps busy (one pytest-xdist worker per CPU), the Ray
# tests' workers then get CPU only when nothing else wants it, and the Ray
# group, which runs one test after the other on one xdist worker, waited
# minutes (a 41-s test took 361 s). The tests' Ray instances (started here
# or by a driver this run starts, which inherit the variable) run their
# workers at the tests' own priority; aanbench itself leaves Ray's default.
os.environ.setdefault("RAY_worker_niceness", "0")


def make_clip(path: Path, *, level: int = 100, seconds: float = 2.0, fps: int = 10, size=(48, 64),
              audio: bool = True, tone_hz: float = 440.0, amp: float = 0.3, rate: int = 16000) -> Path:
    """A small real MP4: frames of a constant colour ``level`` with a moving
    bright square, and (optionally) a sine tone."""
    n = int(round(seconds * fps))
    h, w = size
    frames = np.full((n, h, w, 3), level, dtype=np.uint8)
    for i in range(n):
        x = (i * 3) % (w - 8)
        frames[i, 10:18, x : x + 8] = 255
    sig = None
    if audio:
        t = np.arange(int(seconds * rate)) / rate
        sig = (amp * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    return write_clip(path, frames, fps, sig, rate)


def shared_build(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]) -> Path:
    """A folder ``name`` made once per test run by ``build(folder)`` and
    shared by every test that asks for it, in this process and in the other
    pytest-xdist workers (``make test`` runs several): the first caller
    builds it under a file lock while the others wait, later callers find it.
    A build that fails leaves no ``done`` mark, so the next caller retries
    and fails as loudly."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, shared by the workers
    folder = root / "shared" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".done").is_file():
            folder.mkdir(exist_ok=True)
            build(folder)
            (folder / ".done").write_text("")
    return folder


def save_result(folder: Path, r: subprocess.CompletedProcess) -> None:
    """Keep a command's exit code and output in ``folder`` (for a
    :func:`shared_build` that other tests and workers read back with
    :func:`saved_result`)."""
    (folder / "stdout.txt").write_text(r.stdout)
    (folder / "stderr.txt").write_text(r.stderr)
    (folder / "returncode").write_text(str(r.returncode))


def saved_result(folder: Path) -> dict:
    """``{"returncode", "stdout", "stderr"}`` kept by :func:`save_result`."""
    return {"returncode": int((folder / "returncode").read_text()),
            "stdout": (folder / "stdout.txt").read_text(), "stderr": (folder / "stderr.txt").read_text()}


#: pytest 9.2 ignores the node-id suffix by which xdist 3.8 applies these
#: groups (pytest-xdist issue 1386), so pyproject.toml pins pytest below 9.2;
#: tests/test_suite_groups.py fails if an upgrade breaks them again.
#: Tests that share one expensive thing run on one xdist worker, one after
#: the other (``--dist loadgroup``): the full demo's two tests share one run
#: ("full-demo", by their marks); every Ray test is in "ray" (the instances
#: would compete for the cores and some tests look for Ray processes left
#: behind); any other test in its module's group (module fixtures built once).
#:
#: The seconds each group took in a whole run (tests/group_seconds.py remakes
#: the file); a group not listed counts 1 s per test and SLOW_SECONDS per slow one.
GROUP_SECONDS: dict[str, float] = json.loads((Path(__file__).with_name("group_seconds.json")).read_text())
SLOW_SECONDS = 10.0


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's ``--dist loadgroup``: a test keeps an
    explicit ``xdist_group``; a Ray test joins "ray"; any other test its
    module's group.

    The order is the one in which xdist hands the groups out when its own
    reordering (by number of tests) is off, as `make test` runs it
    (``--no-loadscope-reorder``): the longest groups first (GROUP_SECONDS),
    so that the workers end together rather than one waiting on a long
    group started last. A group's tests keep their collection order."""
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        if mark is None:
            group = "ray" if item.get_closest_marker("ray") else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))
            item.stash[_GROUP] = group
        else:
            item.stash[_GROUP] = mark.args[0] if mark.args else mark.kwargs.get("name", "default")
    estimate: dict[str, float] = {}
    for item in items:
        g = item.stash[_GROUP]
        estimate[g] = estimate.get(g, 0.0) + (SLOW_SECONDS if item.get_closest_marker("slow") else 1.0)
    seconds = {g: GROUP_SECONDS.get(g, e) for g, e in estimate.items()}
    items.sort(key=lambda it: (-seconds[it.stash[_GROUP]], it.stash[_GROUP]))  # stable within a group


_GROUP = pytest.StashKey[str]()


@pytest.fixture
def clip():
    return make_clip


@pytest.fixture
def cli():
    """Invoke the CLI in-process; returns the click Result."""
    from aanbench.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


def default_sigint() -> None:
    """``preexec_fn`` of a child that is to get Ctrl-C as a program run in a
    terminal does: SIGINT back to its default action. A test run started in
    the background (``nohup make test &``, some CI runners) has SIGINT
    ignored, and an ignored signal stays ignored in every child, so Python
    there would never raise KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_aanbench(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process (fresh plugin discovery); ``env``
    values replace this process's (``None``: the variable left out)."""
    e = dict(os.environ)
    e.setdefault("COLUMNS", "200")
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return subprocess.run([*AANBENCH, *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout)


#: Variables read once per process (plugin discovery, the import path): a
#: run that sets them needs a fresh process (run_aanbench).
_PROCESS_WIDE_ENV = ("AANBENCH_PLUGINS", "AANBENCH_DISABLE_PLUGINS", "PYTHONPATH")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in this process as ``python -m aanbench`` runs it
    (``aanbench.cli.main``: its exit codes, its messages for errors raised
    outside a command) and return what :func:`run_aanbench` returns:
    ``returncode``, and ``stdout`` and ``stderr`` apart.

    What a run may change in this process is put back afterwards: the
    environment (``--debug`` sets a variable), ``sys.argv``, the working
    directory, the SIGINT/SIGTERM handlers and torch's thread count. The
    plugins are the ones this process loaded once, so a test of plugin
    discovery uses run_aanbench."""
    from click.testing import CliRunner as ClickRunner

    from aanbench.cli import main

    if env and any(k in env for k in _PROCESS_WIDE_ENV):
        raise ValueError(f"{_PROCESS_WIDE_ENV} are read once per process: use run_aanbench")
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    code: int = 0
    with ClickRunner().isolation(env={"COLUMNS": "200", **{k: str(v) for k, v in (env or {}).items()}}) as (out, err, _):
        sys.argv = ["aanbench", *map(str, args)]
        try:
            main()
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # sys.exit("message"), as the interpreter does it
                sys.stderr.write(f"{exc.code}\n")
                code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.argv = saved_argv
            os.chdir(saved_cwd)
            for s, handler in saved_signals.items():
                signal.signal(s, handler)
            if threads is not None:
                torch.set_num_threads(threads)
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    os.environ.clear()
    os.environ.update(saved_env)
    return subprocess.CompletedProcess(["aanbench", *map(str, args)], code, stdout, stderr)


def store_json(store: Path) -> dict:
    r = run_cli("store", "info", store, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
