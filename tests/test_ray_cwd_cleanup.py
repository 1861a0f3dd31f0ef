"""``--backend ray`` from any working directory, and no Ray process left
behind when the driver dies (issue 25, item 8), on a real local Ray
instance (no mocks).

- From a folder holding a directory named ``aanbench`` (here a package whose
  import fails), the Ray workers used to import that one: ``ray.init`` puts
  the driver's working directory first on every worker's ``sys.path``.
- A SIGKILLed driver used to leave Ray's two agent processes for about a
  minute; the instance's watchdog now ends every process of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from smalldemo import small_demo  # noqa: E402,F401  (fixture)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# -P: the driver itself does not put its working directory on sys.path (as
# the installed `aanbench` script); the workers are what is tested.
DRIVER = [sys.executable, "-P", "-m", "aanbench"]


def _marked(mark: str) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose environment holds ``mark``."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if mark.encode() not in f.read():
                    continue
            with open(f"/proc/{d}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":  # a zombie: already dead, waiting for its reaper
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                found.append((int(d), f.read().replace(b"\0", b" ").decode(errors="replace")))
        except (OSError, IndexError):
            pass
    return found


def test_ray_runs_from_a_folder_holding_a_directory_named_aanbench(small_demo, tmp_path: Path) -> None:  # noqa: F811
    cwd = tmp_path / "work"
    (cwd / "aanbench").mkdir(parents=True)
    (cwd / "aanbench" / "__init__.py").write_text('raise ImportError("the aanbench folder of the working directory")\n')
    out = tmp_path / "res.json"
    r = subprocess.run([*DRIVER, "run", "ridge", "demo", "--store", str(small_demo["store"]), "--out", str(out),
                        "--backend", "ray", "--workers", "1"], cwd=cwd, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, COLUMNS="200"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "working directory" not in r.stderr
    doc = json.loads(out.read_text())
    assert doc["experiment"] == "ridge" and doc["predictions"]
    assert os.path.isdir(cwd / "aanbench")  # nothing of the user's folder touched


def test_a_killed_driver_leaves_no_ray_process_behind(small_demo, tmp_path: Path) -> None:  # noqa: F811
    registry = tmp_path / "reg.toml"
    registry.write_text('[experiments.long-aan]\nextends = "feature-aan"\ndatasets.demo.max_epochs = 1000000\n'
                        'datasets.demo.patience = 1000000\n')
    mark = f"{os.getpid()}-{time.time_ns()}"
    env = dict(os.environ, COLUMNS="200", AANBENCH_TEST_RAY_KILL=mark)
    proc = subprocess.Popen([*DRIVER, "run", "long-aan", "demo", "--store", str(small_demo["store"]),
                             "--registry", str(registry), "--out", str(tmp_path / "r"), "--backend", "ray"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not any("_fit_unit" in cmd for _, cmd in _marked(mark)):  # a Ray worker is fitting
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "no Ray task started"
            time.sleep(0.5)
        before = _marked(mark)
        assert any("DashboardAgent" in c or "dashboard_agent" in c or "RuntimeEnvAgent" in c or "runtime_env" in c
                   for _, c in before), before  # the agents that used to stay
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: no Ctrl-C, no cleanup of its own
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Ray's agents used to outlive a killed driver by about a minute; the watchdog ends them within seconds
    deadline = time.monotonic() + 20
    left = _marked(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _marked(mark)
    assert left == [], left
