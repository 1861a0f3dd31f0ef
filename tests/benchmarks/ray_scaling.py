"""Scaling of ``--backend ray`` from 1 to 2 workers on CPU-bound extraction.

Usage (from the repository root)::

    .venv/bin/python tests/benchmarks/ray_scaling.py [--clips 48] [--extractors affect,logmel,emobase2010]

Generates a demo dataset of real clips in a temporary folder, then

1. profiles one in-process pass (local backend code path) to split a unit's
   time into decode, per-extractor compute and store writes;
2. runs the Ray backend with 1 and then 2 workers, each starting its own
   local Ray instance (as ``aanbench extract --backend ray`` does), into a
   fresh store each, and checks both stores hold the same values;
3. prints where the wall time went (Ray start, actor start = extractor
   loading, work phase, shutdown) and two ratios of 1-worker time over
   2-worker time: end to end, and for the work phase alone (first actor
   ready to last chunk reported).

All times are seconds of wall clock (``time.perf_counter``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_EXTRACTORS = "affect,logmel,emobase2010"


def make_dataset(folder: Path, clips: int, seed: int = 0) -> Path:
    """The demo dataset (``clips`` 4-second H.264/AAC clips) in ``folder``."""
    from aanbench_plugins.datasets.demo import make_demo

    return make_demo(folder, seed=seed, clips=clips)


def _plan(root: Path, store: Path, extractors: Sequence[str], chunk_rows: int):
    from aanbench.extraction import plan_extraction
    from aanbench.plugin_manager import get_plugins
    from aanbench.store import FeatureStore
    from aanbench.weights import weights_dir

    plugins = get_plugins()
    ds = plugins.dataset("demo")
    items = ds.items(root)
    exs = [plugins.extractor(n) for n in extractors]
    # the same arguments as `aanbench extract` (aanbench.extraction.extract_dataset)
    return plan_extraction(FeatureStore(store), ds.name, items, exs, {}, segmentation=ds.segmentation,
                           chunk_rows=chunk_rows, weights_dir=str(weights_dir(None)), targets=ds.targets,
                           dataset_version=ds.version, dataset_config=ds.config(),
                           plugin_versions={e.name: plugins.version_of("extractor", e.name) for e in exs},
                           video_frames=getattr(ds, "video_frames", None))


def profile_local(root: Path, store: Path, extractors: Sequence[str], chunk_rows: int) -> dict[str, Any]:
    """One in-process pass, timed by stage: decode, each extractor, writes.

    Uses the library's own pieces (``decode_media``, ``Extractor.extract``,
    ``FeatureArray.write_chunk``) in the order :func:`execute_unit` uses them.
    """
    from aanbench.extraction import LoadedExtractors
    from aanbench.media import decode_media

    plan = _plan(root, store, extractors, chunk_rows)
    t = time.perf_counter()
    loaded = LoadedExtractors(plan.job)
    out: dict[str, Any] = {"load_s": time.perf_counter() - t, "decode_s": 0.0, "write_s": 0.0,
                           "extract_s": {n: 0.0 for n in extractors}}
    group = loaded.group()
    for u in plan.units:
        items = plan.job.items[u.start:u.stop]
        t = time.perf_counter()
        medias = [decode_media(it, [loaded.extractors[n].needs for n in u.extractors]) for it in items]
        out["decode_s"] += time.perf_counter() - t
        for n in u.extractors:
            ex = loaded.extractors[n]
            t = time.perf_counter()
            rows = np.concatenate([np.asarray(ex.extract(medias[b:b + plan.job.batch_size]), np.float32)
                                   for b in range(0, len(medias), plan.job.batch_size)])
            out["extract_s"][n] += time.perf_counter() - t
            t = time.perf_counter()
            group.feature(plan.job.keys[n]).write_chunk(u.chunk, slice(u.start, u.stop), rows,
                                                        np.ones(len(rows), bool), [""] * len(rows))
            out["write_s"] += time.perf_counter() - t
    out["items"] = len(plan.job.items)
    out["units"] = len(plan.units)
    return out


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def run_ray(root: Path, store: Path, extractors: Sequence[str], chunk_rows: int, workers: int) -> dict[str, Any]:
    """One ``--backend ray`` run (own local Ray instance); the backend's stats plus wall time.

    ``machine_busy_cores`` is the machine's average number of busy cores over
    the run (all processes, ours and others'); ``loadavg_1min`` is taken at
    the end. Together with the workers' CPU time they show how much CPU the
    run could get on a shared machine."""
    from aanbench.backends.ray import RayBackend
    from aanbench.extraction import run_plan

    b0, n0 = _cpu_ticks()
    t = time.perf_counter()
    plan = _plan(root, store, extractors, chunk_rows)
    plan_s = time.perf_counter() - t
    backend = RayBackend(workers=workers)
    report = run_plan(plan, backend)
    stats = dict(backend.stats)
    stats.update(plan_s=plan_s, wall_total_s=time.perf_counter() - t, items=plan.n_items_todo,
                 unit_errors=len(report.unit_errors), item_failures=len(report.failures))
    b1, n1 = _cpu_ticks()
    cores = os.cpu_count() or 1
    stats["machine_busy_cores"] = cores * (b1 - b0) / max(1, n1 - n0)
    stats["loadavg_1min"] = os.getloadavg()[0]
    stats["work_s"] = stats["run_s"] - stats["first_actor_ready_s"]
    stats["actor_start_s"] = stats["first_actor_ready_s"] - stats["submit_s"]
    # Ray's share of the work phase: round trip of a unit minus its compute time
    stats["ray_overhead_per_unit_s"] = (stats["roundtrip_s"] - stats["unit_seconds"]) / max(1, stats["units"])
    stats["busy_fraction"] = stats["unit_seconds"] / max(1e-9, workers * stats["work_s"])
    # cores the workers actually got during the work phase (CPU time / wall)
    stats["worker_cores"] = stats["unit_cpu_seconds"] / max(1e-9, stats["work_s"])
    return stats


def same_values(a: Path, b: Path) -> bool:
    from aanbench.store import FeatureStore

    ga, gb = FeatureStore(a, "r").open_group("demo"), FeatureStore(b, "r").open_group("demo")
    if ga.feature_keys() != gb.feature_keys():
        return False
    return all(np.array_equal(ga.feature(k).read(), gb.feature(k).read(), equal_nan=True)
               and bool(ga.feature(k).done().all()) for k in ga.feature_keys())


def scaling(root: Path, work: Path, extractors: Sequence[str], chunk_rows: int = 4,
            profile: bool = True) -> dict[str, Any]:
    """Profile, then 1 and 2 Ray workers; returns every number measured."""
    res: dict[str, Any] = {"extractors": list(extractors), "chunk_rows": chunk_rows}
    if profile:
        res["local_profile"] = profile_local(root, work / "profile", extractors, chunk_rows)
    for w in (1, 2):
        res[f"ray_{w}"] = run_ray(root, work / f"ray{w}", extractors, chunk_rows, w)
    res["same_values"] = same_values(work / "ray1", work / "ray2")
    one, two = res["ray_1"], res["ray_2"]
    res["ratio_end_to_end"] = one["wall_total_s"] / two["wall_total_s"]
    res["ratio_work_phase"] = one["work_s"] / two["work_s"]
    return res


def _print(res: dict[str, Any]) -> None:
    p = res.get("local_profile")
    if p:
        n = p["items"]
        print(f"in-process profile, {n} items in {p['units']} chunks (seconds, and ms per item):")
        print(f"  extractor loading (imports included) {p['load_s']:.2f}")
        print(f"  decode      {p['decode_s']:.2f}  ({1000 * p['decode_s'] / n:.0f} ms/item)")
        for k, v in p["extract_s"].items():
            print(f"  {k:<12}{v:.2f}  ({1000 * v / n:.0f} ms/item)")
        print(f"  writes      {p['write_s']:.2f}  ({1000 * p['write_s'] / n:.0f} ms/item)")
    rows = [("ray start (ray.init)", "connect_s"), ("actor start (load extractors)", "actor_start_s"),
            ("work phase", "work_s"), ("  compute inside units (sum over workers)", "unit_seconds"),
            ("    of which decode", "decode_seconds"), ("    CPU time of the workers", "unit_cpu_seconds"), ("  Ray overhead per unit", "ray_overhead_per_unit_s"),
            ("  workers busy (fraction)", "busy_fraction"), ("shutdown", "shutdown_s"),
            ("end to end (plan + run)", "wall_total_s"),
            ("  cores the workers got (CPU time / work phase)", "worker_cores"),
            ("machine: busy cores over the run (all processes)", "machine_busy_cores"),
            ("machine: load average at the end", "loadavg_1min")]
    print(f"\n{'':50}{'1 worker':>10}{'2 workers':>11}")
    for label, key in rows:
        print(f"{label:50}{res['ray_1'][key]:>10.3f}{res['ray_2'][key]:>11.3f}")
    print(f"\nsame values with 1 and 2 workers: {res['same_values']}")
    print(f"ratio 1 worker / 2 workers, work phase: {res['ratio_work_phase']:.2f}x")
    print(f"ratio 1 worker / 2 workers, end to end: {res['ratio_end_to_end']:.2f}x")
    for w in (1, 2):
        print(f"actor start-up inside __init__ (loading extractors, imports included), {w} worker(s): "
              f"{', '.join(f'{x:.2f}' for x in res[f'ray_{w}'].get('actor_init_s', []))} s")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=48, help="demo clips (4 s each)")
    ap.add_argument("--extractors", default=DEFAULT_EXTRACTORS)
    ap.add_argument("--chunk-rows", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = ap.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="aanbench-ray-scaling-"))
    try:
        t = time.perf_counter()
        root = make_dataset(work / "demo", args.clips)
        print(f"demo dataset: {args.clips} clips in {time.perf_counter() - t:.1f} s")
        for sub in ("profile", "ray1", "ray2"):
            shutil.rmtree(work / sub, ignore_errors=True)
        res = scaling(root, work, [e.strip() for e in args.extractors.split(",") if e.strip()], args.chunk_rows)
        _print(res)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
