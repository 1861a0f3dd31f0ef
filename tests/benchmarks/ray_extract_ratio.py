"""``aanbench extract demo --backend ray``: 2 workers against 1, end to end.

Usage (from the repository root)::

    .venv/bin/python tests/benchmarks/ray_extract_ratio.py [--clips 120] [--repeat 1] [--root DIR]

Generates the demo dataset (``--clips`` real H.264/AAC clips, as ``aanbench
demo`` does; or uses ``--root``), then extracts the demo's features (those of
its experiments: affect, emobase2010, logmel) with ``--chunk-rows 16`` (the
demo's) on Ray with 1 and with 2 workers, each run in a fresh Python process
into a fresh store, each starting and stopping its own local Ray instance,
as ``aanbench extract demo --backend ray --workers N`` does. ``--repeat``
alternates 1 and 2 workers that many times.

"End to end" is the wall time of the child process from its start to its
exit: Python and aanbench imports, planning, Ray start, actor start
(extractor loading), the work, Ray shutdown, packing the store. The child
also reports where its time went (the backend's ``stats``). Both stores
must hold the same values. The machine's busy cores over each run (all
processes, from /proc/stat) and the load average are printed: this machine
is shared, and a 2-worker run needs both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

EXTRACTORS = ["affect", "emobase2010", "logmel"]  # the demo experiments' features
CHUNK_ROWS = 16  # aanbench demo's


def _cpu_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def child(root: Path, store: Path, workers: int, t_start: float) -> None:
    """One extraction, as `aanbench extract` runs it; prints its stats as JSON."""
    t_imported = time.time()
    from aanbench.backends import register_backend
    from aanbench.backends.ray import RayBackend
    from aanbench.extraction import extract_dataset
    from aanbench.plugin_manager import get_plugins

    t_imported = time.time()
    made: list[RayBackend] = []

    def factory(**options: Any) -> RayBackend:
        made.append(RayBackend(**options))
        return made[-1]

    register_backend("ray-measured", factory)
    marks: dict[str, float] = {}
    ds = get_plugins().dataset("demo")
    t0 = time.time()
    out = extract_dataset(ds, root, store, EXTRACTORS, backend="ray-measured", workers=workers,
                          chunk_rows=CHUNK_ROWS,
                          on_planned=lambda *a: marks.setdefault("planned", time.time()))
    t1 = time.time()
    stats = dict(made[0].stats)
    stats.pop("pools", None)
    print(json.dumps({
        "imports_s": t_imported - t_start, "plan_s": marks["planned"] - t0, "extract_dataset_s": t1 - t0,
        "backend": stats, "units_failed": out.report.units_failed, "failed_rows": len(out.failed),
        "items": len(out.plan.job.items),
    }))


def run_one(root: Path, store: Path, workers: int) -> dict[str, Any]:
    shutil.rmtree(store, ignore_errors=True)
    b0, n0 = _cpu_ticks()
    t = time.time()
    proc = subprocess.run([sys.executable, __file__, "--child", str(workers), "--root", str(root), "--store", str(store),
                           "--t-start", repr(t)], capture_output=True, text=True,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    wall = time.time() - t
    b1, n1 = _cpu_ticks()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    res["busy_cores"] = (os.cpu_count() or 1) * (b1 - b0) / max(1, n1 - n0)
    res["loadavg_1min_end"] = os.getloadavg()[0]
    return res


def same_values(a: Path, b: Path) -> bool:
    from aanbench.store import FeatureStore

    ga, gb = FeatureStore(a, "r").open_group("demo"), FeatureStore(b, "r").open_group("demo")
    return ga.feature_keys() == gb.feature_keys() and all(
        np.array_equal(ga.feature(k).read(), gb.feature(k).read(), equal_nan=True) and ga.feature(k).done().all()
        and gb.feature(k).done().all() for k in ga.feature_keys())


ROWS = [
    ("python + aanbench imports", lambda r: r["imports_s"]),
    ("extract_dataset start -> plan ready (incl. Ray start)", lambda r: r["plan_s"]),
    ("backend: Ray start (ray.init)", lambda r: r["backend"].get("connect_s", 0)),
    ("backend: actors submitted (then the driver plans)", lambda r: r["backend"].get("submit_s", 0)),
    ("backend: run() called (plan done)", lambda r: r["backend"].get("run_called_s", 0)),
    ("backend: first actor ready", lambda r: r["backend"].get("first_actor_ready_s", 0)),
    ("backend: all actors ready", lambda r: r["backend"].get("all_actors_ready_s", 0)),
    ("backend: actor loading inside __init__ (max)", lambda r: max(r["backend"].get("actor_init_s", [0]))),
    ("backend: last chunk reported", lambda r: r["backend"].get("run_s", 0)),
    ("backend: work phase (first ready -> last chunk)",
     lambda r: r["backend"].get("run_s", 0) - r["backend"].get("first_actor_ready_s", 0)),
    ("  compute inside units (sum over workers)", lambda r: r["backend"].get("unit_seconds", 0)),
    ("  CPU time of the workers in units", lambda r: r["backend"].get("unit_cpu_seconds", 0)),
    ("backend: Ray shutdown", lambda r: r["backend"].get("shutdown_s", 0)),
    ("backend: total (run)", lambda r: r["backend"].get("wall_s", 0)),
    ("extract_dataset (plan + run + pack + summary)", lambda r: r["extract_dataset_s"]),
    ("END TO END (process wall)", lambda r: r["wall_s"]),
    ("machine busy cores over the run (all processes)", lambda r: r["busy_cores"]),
    ("load average (1 min) at the end", lambda r: r["loadavg_1min_end"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--root", type=Path, default=None, help="an existing demo dataset (default: generate one)")
    ap.add_argument("--repeat", type=int, default=1, help="pairs of runs (1 worker, 2 workers)")
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--t-start", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.root, args.store, args.child, args.t_start)
        return 0
    work = Path(tempfile.mkdtemp(prefix="aanbench-ray-ratio-"))
    try:
        root = args.root
        if root is None:
            from aanbench_plugins.datasets.demo import make_demo

            t = time.time()
            root = make_demo(work / "demo", seed=0, clips=args.clips)
            print(f"demo dataset: {args.clips} clips in {time.time() - t:.1f} s")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for _ in range(args.repeat):
            for w in (1, 2):
                runs[w].append(run_one(root, work / f"store{w}", w))
                print(f"  {w} worker(s): {runs[w][-1]['wall_s']:.1f} s end to end "
                      f"(busy cores {runs[w][-1]['busy_cores']:.2f})", flush=True)
        ok = same_values(work / "store1", work / "store2")
        for w in (1, 2):
            if any(r["units_failed"] or r["failed_rows"] for r in runs[w]):
                print(f"WARNING: failures in the {w}-worker run: {runs[w]}")
        print(f"\nseconds (median over {args.repeat} run(s) each; backend times from its start: prepare(), called "
              "by extract_dataset before planning)")
        print(f"{'':52}{'1 worker':>10}{'2 workers':>11}")
        for label, f in ROWS:
            print(f"{label:52}{statistics.median(f(r) for r in runs[1]):>10.2f}"
                  f"{statistics.median(f(r) for r in runs[2]):>11.2f}")
        one = statistics.median(r["wall_s"] for r in runs[1])
        two = statistics.median(r["wall_s"] for r in runs[2])
        work = dict(ROWS)["backend: work phase (first ready -> last chunk)"]
        w1 = statistics.median(work(r) for r in runs[1])
        w2 = statistics.median(work(r) for r in runs[2])
        print(f"\nsame values with 1 and 2 workers: {ok}")
        print(f"ratio 1 worker / 2 workers, work phase: {w1 / w2:.2f}x")
        print(f"ratio 1 worker / 2 workers, end to end: {one / two:.2f}x")
        if args.json:
            args.json.write_text(json.dumps({"runs": runs, "ratio_end_to_end": one / two}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
