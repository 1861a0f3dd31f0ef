"""``aanbench benchmark demo --backend ray --workers 2`` against the local
benchmark, end to end.

Usage (from the repository root)::

    .venv/bin/python tests/benchmarks/ray_fit_ratio.py [--work DIR] [--seeds 0,1]
        [--experiments a,b,...] [--protocol leave-one-group-out]

Builds (or reuses, in ``--work``) the small generated demo of the tests
(``tests/smalldemo.py``: 36 real clips of 3 movies, the weight-free features
affect, emobase2010 and logmel), then runs the same benchmark twice, each in
a fresh process: locally, and with ``--backend ray --workers 2`` (a local Ray
instance the run starts and stops). "End to end" is each child's wall time
from start to exit: imports, planning and feature reads, Ray start-up and
shutdown, the fits, evaluation, results files and leaderboard. Both must
write the same numbers (every results file's predictions and metrics are
compared). The load average and the machine's busy cores over each run
(all processes, from /proc/stat) are printed: this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from smalldemo import build  # noqa: E402  (the tests' demo: real clips, real extraction)

from conftest import AANBENCH  # noqa: E402


def _cpu_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _timed(args: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds, busy cores (all processes) and the finished child."""
    busy0, all0 = _cpu_ticks()
    t0 = time.perf_counter()
    proc = subprocess.run([*AANBENCH, *args], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"))
    wall = time.perf_counter() - t0
    busy1, all1 = _cpu_ticks()
    cores = (busy1 - busy0) / max(1, all1 - all0) * (os.cpu_count() or 1)
    if proc.returncode not in (0, 1):  # 1: an experiment failed (reported in the output)
        sys.exit(f"aanbench {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return wall, cores, proc


def _numbers(results: Path) -> dict[str, object]:
    out = {}
    for f in sorted(results.rglob("*.json")):
        d = json.loads(f.read_text())
        out[str(f.relative_to(results))] = (d["predictions"], {t: v["metrics"] for t, v in d["targets"].items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=None, help="Folder for the demo (kept and reused).")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--experiments", default=None, help="Default: every registry experiment the store allows.")
    ap.add_argument("--protocol", default="leave-one-group-out")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="ray-fit-ratio-"))
    demo = build(work)
    common = ["benchmark", "demo", "--store", str(demo["store"]), "--seeds", a.seeds, "--protocol", a.protocol]
    if a.experiments:
        common += ["--experiments", a.experiments]
    runs = {}
    for name, extra in (("local", []), ("ray", ["--backend", "ray", "--workers", str(a.workers)])):
        out = work / f"results-{name}-{time.time_ns()}"
        load = os.getloadavg()[0]
        wall, cores, proc = _timed([*common, "--out", str(out), "--leaderboard", str(out / "lb" / "demo.md"), *extra])
        summary = [ln for ln in proc.stdout.splitlines() if ln.startswith("wrote ")]
        runs[name] = (wall, out)
        print(f"{name:5s}: {wall:7.2f} s end to end, {cores:.2f} busy cores, load average before {load:.2f}; "
              f"{summary[-1] if summary else ''}", flush=True)
    same = _numbers(runs["local"][1] / "demo") == _numbers(runs["ray"][1] / "demo")
    n = len(_numbers(runs["local"][1] / "demo"))
    print(f"same numbers in all {n} results files: {'yes' if same else 'NO'}")
    print(f"ratio local / ray --workers {a.workers}: {runs['local'][0] / runs['ray'][0]:.2f}x "
          f"(>1: Ray faster; {os.cpu_count()} cores, load average now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
