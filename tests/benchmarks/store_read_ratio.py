"""Whole-array reads through the feature store against ``np.load`` of the same bytes.

Usage (from the repository root)::

    .venv/bin/python tests/benchmarks/store_read_ratio.py [--items 11000] [--dims 2048,1024,1024,128,1582]

Builds an EIMT16-sized group (11,000 items; the paper's five extractors,
5,806 float32 per item, 249 MB) in a temporary folder the way an extraction
does: 32-row work chunks written one by one (``FeatureArray.write_chunk``)
under the group's writer lock, which packs them when the "run" ends. The same
matrices are saved with ``np.save``. Then, with the page cache warm for both,
it times reading every matrix (a) with ``np.load``, (b) through
``FeatureStore`` as the runner does (``resolve_feature(...).read()`` and
``ok()`` per array), (c) with ``DatasetGroup.read_features`` (arrays read
concurrently), (d) with plain ``zarr`` (``open_group(...)[...][:]``), and
prints the best and the median of ``--repeat`` rounds (read in turn) and
the ratios store/np.load. It also prints the group's file count and disk size.

The data are random normal float32 (they do not compress; nor do real
features much, see the note), so no compressor is used in the store.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def build(work: Path, n: int, dims: list[int], chunk_rows: int) -> tuple[list[str], list[Path]]:
    from aanbench.contracts import Item
    from aanbench.store import FeatureStore

    rng = np.random.default_rng(0)
    items = [Item(id=f"item{i:05d}", path=None, group=f"film{i % 30}", split="train", labels={"valence": 0.0}) for i in range(n)]
    store = FeatureStore(work / "store")
    g = store.ensure_group("bench", items, chunk_rows=chunk_rows, targets=["valence"])
    keys, npys = [], []
    with g.writer_lock():
        for j, d in enumerate(dims):
            key = f"feat{j}@1"
            m = rng.standard_normal((n, d), dtype=np.float32)
            arr = g.create_feature(key, d, {"extractor": f"feat{j}", "version": "1", "dim": d})
            for c in range(g.n_chunks):
                rows = g.chunk_slice(c)
                arr.write_chunk(c, rows, m[rows], np.ones(rows.stop - rows.start, bool), [""] * (rows.stop - rows.start))
            npy = work / f"{key}.npy"
            np.save(npy, m)
            keys.append(key)
            npys.append(npy)
        t = time.perf_counter()
    print(f"packing the staged chunks when the run ended: {time.perf_counter() - t:.2f} s")
    return keys, npys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=11000)
    ap.add_argument("--dims", default="2048,1024,1024,128,1582")
    ap.add_argument("--chunk-rows", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    dims = [int(x) for x in args.dims.split(",")]
    from aanbench.store import FeatureStore

    work = Path(tempfile.mkdtemp(prefix="aanbench-store-read-"))
    try:
        t = time.perf_counter()
        keys, npys = build(work, args.items, dims, args.chunk_rows)
        print(f"built {args.items} x {sum(dims)} float32 in {len(dims)} arrays "
              f"({args.items * sum(dims) * 4 / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s "
              f"(chunk by chunk, then packed)")
        gdir = work / "store" / "bench" / "default"
        files = [p for p in gdir.rglob("*") if p.is_file()]
        print(f"group files: {len(files)} ({sum(p.stat().st_size for p in files) / 1e6:.0f} MB on disk); "
              f"in features/: {sum(1 for p in files if 'features' in p.parts)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import zarr

        def np_load():
            return [np.load(p) for p in npys]

        def store_runner():  # as aanbench.runner.load_features reads
            g = FeatureStore(work / "store", mode="r").open_group("bench")
            out = []
            for k in keys:
                a = g.resolve_feature(k)
                out.append(a.read())
                a.ok()
            return out

        def store_concurrent():
            return FeatureStore(work / "store", mode="r").open_group("bench").read_features(keys)

        def plain_zarr():
            g = zarr.open_group(str(gdir / "features"), mode="r")
            return [g[f"{k}/data"][:] for k in keys]

        ref = np_load()
        for f in (store_runner, store_concurrent, plain_zarr):  # same values, and warm caches
            got = f()
            assert all(np.array_equal(a, b) for a, b in zip(ref, got)), f.__name__
        fns = {"np.load": np_load, "store (runner path)": store_runner, "store read_features": store_concurrent,
               "plain zarr": plain_zarr}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeat):
            for name, f in fns.items():
                t = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        print(f"load average {os.getloadavg()[0]:.2f}; {args.repeat} rounds, best and median (s):")
        for k in times:
            print(f"  {k:<22}best {best[k]:.3f}  median {med[k]:.3f}")
        print("(best of N is timeit's convention: the round least disturbed by other processes)")
        for k in ("store (runner path)", "store read_features", "plain zarr"):
            print(f"ratio {k} / np.load: {best[k] / best['np.load']:.2f}x best of {args.repeat}, "
                  f"{med[k] / med['np.load']:.2f}x median")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
