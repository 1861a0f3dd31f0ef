"""Ctrl-C while `aanbench` starts (its imports: typer, rich, numpy, PyAV,
the plugins) or inside a command without a handler of its own ends the
program as an interrupt should: exit 130 and one line, no Python traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import AANBENCH, default_sigint


def _loaded(pid: int, lib: str) -> bool:
    try:
        return lib in Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # gone
        return False


def test_ctrl_c_while_starting_exits_130_without_traceback() -> None:
    # numpy's C extension is mapped while the CLI module imports (it is not
    # imported before aanbench.entry's handler is in place): the SIGINT lands
    # in the start-up imports, or at the latest in the command that follows
    proc = subprocess.Popen([*AANBENCH, "plugins"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)
    deadline = time.time() + 60
    while not _loaded(proc.pid, "_multiarray_umath") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "aanbench plugins ended before numpy was loaded"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("interrupted"), err
