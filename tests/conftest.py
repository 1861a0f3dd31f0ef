"""Shared test helpers: real clips written with PyAV, and the CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aanbench.pluginkit.mediawrite import write_clip

REPO = Path(__file__).resolve().parents[1]
AANBENCH = [sys.executable, "-m", "aanbench"]


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
    """Run the CLI in a fresh process (fresh plugin discovery)."""
    e = dict(os.environ)
    e.setdefault("COLUMNS", "200")
    if env:
        e.update(env)
    return subprocess.run([*AANBENCH, *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout)


def store_json(store: Path) -> dict:
    r = run_aanbench("store", "info", store, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
