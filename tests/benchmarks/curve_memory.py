"""Peak memory and speed of extracting a film's windows (what `aanbench curve`
does) for a short and a long film: memory must not grow with the film.

Usage (from the repository root)::

    .venv/bin/python tests/benchmarks/curve_memory.py [--minutes 2,20] [--window 5]
        [--extractors affect,emobase2010,logmel] [--whole-file]

Generates 24 demo clips (4 s, 160x120, 25 fps, 16 kHz AAC), joins them
cyclically into films of the given lengths (``aanbench.filmwrite.write_film``,
streaming), then for each film runs, in a fresh subprocess, the extraction
of its ``--window`` s windows (``files`` with ``window``/``hop``, chunks of
32 windows, local backend, one worker) into a fresh store, and prints

* peak resident memory of that process (``ru_maxrss``) after loading the
  extractors and at the end, in MiB;
* seconds of extraction per minute of film;
* the ratio of the longest film's peak memory to the shortest's, and
  whether it is within 1.2.

``--whole-file`` also extracts the shortest film as one whole-file item
(no windows), for contrast (openSMILE's memory grows with an item's length).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from aanbench.extraction import extract_dataset, select_extractors
from aanbench.plugin_manager import get_plugins

film, store, extractors, window = sys.argv[1], sys.argv[2], sys.argv[3].split(","), float(sys.argv[4])
ds = get_plugins().dataset("files")
if window > 0:
    ds = ds.configure(window=window, hop=window)
# load the extractors once before measuring, so the baseline includes their libraries
from aanbench.weights import weights_dir
exs, _, _ = select_extractors(extractors, weights_dir(None))
for ex in exs:
    ex.load(None)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
out = extract_dataset(ds, Path(film), Path(store), extractors, chunk_rows=32)
sec = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"baseline_mib": base, "peak_mib": peak, "seconds": sec, "items": len(out.plan.job.items),
                  "failed": len(out.failed)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", default="2,20")
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--extractors", default="affect,emobase2010,logmel")
    ap.add_argument("--whole-file", action="store_true")
    args = ap.parse_args()
    minutes = [float(m) for m in args.minutes.split(",")]

    from aanbench.filmwrite import write_film
    from aanbench_plugins.datasets.demo import make_demo

    with tempfile.TemporaryDirectory(prefix="aanbench-curve-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        data = make_demo(tmp / "demo", seed=0, clips=24)
        clips = sorted((data / "clips").glob("*.mp4"))
        print(f"demo clips: {len(clips)} in {time.perf_counter() - t:.1f} s", flush=True)
        rows = []
        for m in minutes:
            n = int(round(m * 60 / 4.0))
            t = time.perf_counter()
            film = write_film(tmp / f"film-{m:g}min.mp4", (clips[i % len(clips)] for i in range(n)))
            print(f"film {m:g} min ({n} clips joined, {film.stat().st_size / 2**20:.1f} MiB) written in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
            runs = [(f"{m:g} min, {args.window:g} s windows", args.window)]
            if args.whole_file and m == minutes[0]:
                runs.append((f"{m:g} min, whole file as one item", 0.0))
            for label, window in runs:
                store = tmp / f"store-{m:g}-{window:g}"
                r = subprocess.run([sys.executable, "-c", CHILD, str(film), str(store), args.extractors,
                                    str(window)], capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stdout, r.stderr, file=sys.stderr)
                    raise SystemExit(f"extraction of {film} failed")
                res = json.loads(r.stdout.strip().splitlines()[-1])
                res.update(label=label, minutes=m, window=window)
                rows.append(res)
                print(f"{label}: {res['items']} items ({res['failed']} failed), peak {res['peak_mib']:.0f} MiB "
                      f"(after loading {res['baseline_mib']:.0f} MiB), {res['seconds'] / m:.1f} s per minute "
                      f"of film", flush=True)
        win = [r for r in rows if r["window"] > 0]
        short, long_ = win[0], win[-1]
        ratio = long_["peak_mib"] / short["peak_mib"]
        print()
        print(f"extractors: {args.extractors}; window {args.window:g} s")
        print(f"peak memory {long_['minutes']:g} min / {short['minutes']:g} min film: "
              f"{long_['peak_mib']:.0f} / {short['peak_mib']:.0f} MiB = {ratio:.3f} "
              f"({'within' if ratio <= 1.2 else 'NOT within'} 1.2)")
        print("seconds per minute of film: " + ", ".join(f"{r['minutes']:g} min: {r['seconds'] / r['minutes']:.1f}"
                                                          for r in win))


if __name__ == "__main__":
    main()
