"""Ctrl-C during `aanbench extract`, as a user presses it: SIGINT to the
whole process group of a real extraction (real decoding, openSMILE, Zarr) at
several points. Each run ends with exit 130 and the message, or completes;
a rerun of the same command then gives a store equal, value for value, to an
uninterrupted run's (a row computed while an interrupt was pending and
stored as ok would survive the resume and differ)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import AANBENCH, default_sigint, run_cli
from aanbench.store import FeatureStore

EXTRACTORS = "emobase2010,affect"
N_CLIPS = 6  # one chunk each: 12 done markers over the two arrays
MESSAGE = "chunks saved; run the same command to resume"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path]:
    """A 6-clip demo dataset (4-s clips; emobase2010 takes about as long as
    the audio lasts) and an uninterrupted reference store."""
    work = tmp_path_factory.mktemp("interrupt")
    data = work / "data"
    r = run_cli("datasets", "make-demo", data, "--clips", str(N_CLIPS))
    assert r.returncode == 0, r.stderr
    ref = work / "ref"
    r = run_cli(*_args(data, ref))
    assert r.returncode == 0, r.stdout + r.stderr
    return data, ref


def _args(data: Path, store: Path, *extra: str) -> list[str]:
    return ["extract", "demo", "--root", str(data), "--store", str(store), "-e", EXTRACTORS, "--chunk-rows", "1",
            *extra]


def _done_chunks(store: Path) -> int:
    """Chunks marked done in the store: packed, or staged by a run in progress."""
    try:
        g = FeatureStore(store, mode="r").open_group("demo")
        return sum(int(g.feature(k).done().sum()) for k in g.feature_keys())
    except Exception:  # not there yet, or being created
        return 0


def _interrupt(cmd: list[str], when, *, group: bool = True, timeout: float = 300,
               started: list | None = None) -> subprocess.CompletedProcess:
    """Start ``cmd``, wait until ``when(stdout_lines)`` is true (or the run
    ends), send SIGINT (to the process group, as a terminal's Ctrl-C, or to
    the main process only) and return the finished process's output."""
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=default_sigint)
    if started is not None:
        started.append(proc)
    lines: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True),
               threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)]
    for t in readers:
        t.start()
    deadline = time.time() + timeout
    while not when(lines) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is None:
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
    proc.wait(timeout=timeout)
    for t in readers:
        t.join(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(lines), "".join(err))


def _planned(lines: list[str]) -> bool:
    """This run has printed its plan ("demo: 16 items, ...")."""
    return any(line.startswith("demo: ") for line in list(lines))


pytestmark = pytest.mark.slow


def _assert_same_store(ref: Path, store: Path) -> None:
    a = FeatureStore(ref, mode="r").open_group("demo")
    b = FeatureStore(store, mode="r").open_group("demo")
    assert a.item_ids() == b.item_ids()
    assert a.feature_keys() == b.feature_keys() and len(a.feature_keys()) == 2
    for key in a.feature_keys():
        fa, fb = a.feature(key), b.feature(key)
        np.testing.assert_array_equal(fa.read(), fb.read(), err_msg=key)
        np.testing.assert_array_equal(fa.ok(), fb.ok(), err_msg=key)
        np.testing.assert_array_equal(fa.errors(), fb.errors(), err_msg=key)
        assert fb.ok().all() and fb.done().all(), key


def _check_interrupted_run(r: subprocess.CompletedProcess) -> None:
    assert "Exception ignored" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode == 130:
        assert "interrupted: " in r.stderr and MESSAGE in r.stderr, r.stderr
    else:  # the signal came after the work was done
        assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])


@pytest.mark.parametrize("point", ["while planning", "while loading", "after 1 chunk", "after 7 chunks"])
def test_ctrl_c_then_resume_equals_uninterrupted(demo, tmp_path: Path, point: str) -> None:
    data, ref = demo
    store = tmp_path / "store"
    cmd = [*AANBENCH, *_args(data, store)]
    if point == "while planning":
        when = lambda lines: store.is_dir()  # noqa: E731 - the store is made before the plan
    elif point == "while loading":
        when = _planned  # planned; extractors loading, first chunk next
    else:
        k = int(point.split()[1])
        when = lambda lines: _done_chunks(store) >= k  # noqa: E731
    r = _interrupt(cmd, when)
    _check_interrupted_run(r)
    saved = _done_chunks(store)
    if r.returncode == 130:
        assert saved < 2 * N_CLIPS, "interrupted, yet every chunk of both arrays is done"
    again = run_cli(*_args(data, store))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    _assert_same_store(ref, store)


def test_repeated_ctrl_c_at_many_points_never_stores_a_wrong_row(demo, tmp_path: Path) -> None:
    """Interrupt the same store again and again, a little later into each
    run, then finish it: the result equals the uninterrupted store."""
    data, ref = demo
    store = tmp_path / "store"
    cmd = [*AANBENCH, *_args(data, store)]
    codes = []
    for delay in (0.1, 0.6, 1.5, 3.0):
        t_planned: list[float] = []

        def when(lines: list[str]) -> bool:
            if not _planned(lines):
                return False
            if not t_planned:
                t_planned.append(time.time())
            return time.time() - t_planned[0] >= delay

        before = _done_chunks(store)
        r = _interrupt(cmd, when)
        _check_interrupted_run(r)
        codes.append(r.returncode)
        assert _done_chunks(store) >= before  # finished chunks are kept
    assert 130 in codes, codes
    again = run_cli(*_args(data, store))
    assert again.returncode == 0, again.stderr[-2000:]
    _assert_same_store(ref, store)


@pytest.mark.parametrize("group", [True, False], ids=["ctrl-c to the group", "sigint to the driver only"])
def test_ctrl_c_with_two_workers(demo, tmp_path: Path, group: bool) -> None:
    data, ref = demo
    store = tmp_path / "store"
    cmd = [*AANBENCH, *_args(data, store, "--workers", "2")]
    r = _interrupt(cmd, lambda lines: _done_chunks(store) >= 1, group=group)
    _check_interrupted_run(r)
    again = run_cli(*_args(data, store))
    assert again.returncode == 0, again.stderr[-2000:]
    _assert_same_store(ref, store)


@pytest.mark.ray
def test_ctrl_c_with_ray_backend(demo, tmp_path: Path) -> None:
    """Ctrl-C to the whole process group of `extract --backend ray` (a real
    local Ray instance, whose processes get the SIGINT too): exit 130 with
    the message, no Ray process left behind, and the same command resumes to
    the uninterrupted store."""
    data, ref = demo
    store = tmp_path / "store"
    cmd = [*AANBENCH, *_args(data, store, "--backend", "ray", "--workers", "2")]
    started: list[subprocess.Popen] = []
    running: list[str] = []  # the instance's processes just before the Ctrl-C

    def when(lines: list[str]) -> bool:
        if _done_chunks(store) < 1:
            return False
        running.extend(_ray_processes(started[0].pid))
        return True

    r = _interrupt(cmd, when, started=started)
    _check_interrupted_run(r)
    assert r.returncode == 130, (r.returncode, r.stderr[-2000:])  # 12 chunks of >= 1 s each: still running
    assert any("raylet" in p for p in running), running  # the run's own Ray instance was found by its session
    deadline = time.time() + 20  # processes that got the SIGINT may take a moment to exit
    while (left := _ray_processes(started[0].pid)) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes left behind: {left}"
    again = run_cli(*_args(data, store))
    assert again.returncode == 0, again.stderr[-2000:]
    _assert_same_store(ref, store)


def _ray_processes(driver_pid: int) -> list[str]:
    """The command lines of the processes of the Ray instance a driver
    process started (raylet, GCS, monitors: their ``--session-dir`` is
    Ray's ``session_<date>_<driver pid>``; its workers are the raylet's
    children and go with it). Other Ray instances on the machine (other
    tests, other users) are not counted."""
    out = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout
    tag = re.compile(rf"/session_[0-9_-]+_{driver_pid}(\b|/)")
    return [line[:160] for line in out.splitlines() if tag.search(line)]
