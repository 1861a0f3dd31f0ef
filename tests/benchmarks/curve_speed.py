"""How fast `aanbench curve` draws the curve of a 58-s 640x360 film with a
demo bundle (issue 27 item 8: goal 8x real time on two quiet cores), and
where the time goes, in one run.

Usage (from the repository root)::

    .venv/bin/python tests/benchmarks/curve_speed.py [--work DIR] [--model BUNDLE]
        [--workers N] [--seconds 58] [--window 5] [--reference-store STORE]

Steps:

1. the film: ``--seconds`` s of 640x360 video at 24 fps (moving shapes over
   noise) with 16 kHz AAC (chords and noise), written by
   :func:`aanbench.pluginkit.mediawrite.write_clip` in pieces joined by
   :func:`aanbench.filmwrite.write_film` (memory stays small);
2. the model: ``--model``, else a ridge bundle trained on a small generated
   demo dataset on logmel, affect and emobase2010 (the weight-free
   extractors; made once in ``--work``);
3. ``aanbench curve`` in a fresh process on a fresh store (wall seconds,
   film seconds per wall second, CPU seconds of all its processes), then
   again on the same store (a rerun);
4. with ``--reference-store``: the fresh store's feature arrays (values,
   ok flags, errors) compared with that store's for the same film and
   windows, bit for bit (e.g. a store made by another version of the code,
   or with ``--workers 1``);
5. the breakdown, in this process with one worker: the film's windows
   decoded once (seconds), each extractor on every window (seconds), the
   floor that emobase2010 alone sets on the usable CPUs (its seconds over
   the CPUs: no schedule beats it without changing its values), and for
   the curve command what is neither (start-up, torch, model, plots).

Prints the machine's load average before and after: the numbers are only
comparable on a quiet machine (the CPU seconds vary less with load).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REGISTRY = """
[feature_sets]
speed = ["logmel", "affect", "emobase2010"]

[experiments.speed-ridge]
model = "ridge"
description = "ridge on the weight-free features (curve speed benchmark)"
features = "speed"
"""


def aanbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aanbench", *map(str, args)], capture_output=True, text=True)


def make_film(path: Path, seconds: float, size=(360, 640), fps: int = 24, rate: int = 16000) -> Path:
    from aanbench.filmwrite import write_film
    from aanbench.pluginkit.mediawrite import write_clip

    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    h, w = size
    pieces = []
    n_pieces = max(1, int(np.ceil(seconds / 10.0)))
    for k in range(n_pieces):
        sec = seconds / n_pieces
        n = int(round(sec * fps))
        yy, xx = np.mgrid[0:h, 0:w]
        frames = np.empty((n, h, w, 3), np.uint8)
        base = rng.integers(0, 40, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        for i in range(n):
            t = (k * n + i) / fps
            f = base + np.uint8(60 + 50 * np.sin(t / 3 + k))
            cx, cy = int((w - 80) * (0.5 + 0.45 * np.sin(t * 0.7))), int((h - 80) * (0.5 + 0.4 * np.cos(t * 0.5)))
            f[cy:cy + 80, cx:cx + 80] = (230, 180 - 10 * k, 40 + 20 * k)
            f[(yy + i * 2) % 97 < 3] = 200
            frames[i] = f
        tt = np.arange(int(round(sec * rate))) / rate
        audio = sum(0.12 * np.sin(2 * np.pi * f0 * (1 + 0.01 * k) * tt) for f0 in (220, 277, 330))
        audio = (audio + 0.03 * rng.standard_normal(tt.size)).astype(np.float32)
        pieces.append(write_clip(path.parent / f".piece{k}.mp4", frames, fps, audio, rate))
        del frames
    write_film(path, pieces, fps=fps, rate=rate)
    for p in pieces:
        p.unlink()
    return path


def make_bundle(work: Path) -> Path:
    bundle = work / "speed-ridge.pt"
    if bundle.is_file():
        return bundle
    (work / "registry.toml").write_text(REGISTRY)
    for args in (("datasets", "make-demo", work / "demo", "--clips", 24),
                 ("extract", "demo", "--root", work / "demo", "--store", work / "demo-store", "-e",
                  "logmel,affect,emobase2010"),
                 ("train", "speed-ridge", "demo", "--store", work / "demo-store", "--out", bundle,
                  "--registry", work / "registry.toml")):
        r = aanbench(*args)
        if r.returncode != 0:
            sys.exit(f"aanbench {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    return bundle


def breakdown(film: Path, bundle: Path, window: float) -> list[tuple[str, float]]:
    """Seconds to decode the windows once, then each extractor on every window (one worker)."""
    from aanbench.contracts import LoadContext, MediaRequest
    from aanbench.curve import load_models
    from aanbench.filmdecode import close_reader, decode_item
    from aanbench.plugin_manager import get_plugins
    from aanbench.workflows.curve import film_dataset, model_streams

    models = load_models([bundle])
    plugins = get_plugins()
    ds = film_dataset(film, window, window, model_streams(models, plugins))
    items = ds.items(film)
    names = list(dict.fromkeys(n for m in models for n in m.payload.features))
    exs = [plugins.extractor(n) for n in names]
    for ex in exs:
        ex.load(LoadContext(device="cpu", weights={}, batch_size=8))
    reqs: list[MediaRequest] = list({id(ex.needs): ex.needs for ex in exs}.values())
    t = time.perf_counter()
    media = [decode_item(it, reqs) for it in items]
    out = [("decode (all windows, once)", time.perf_counter() - t)]
    close_reader()
    for ex in exs:
        t = time.perf_counter()
        for m in media:
            ex.extract([m])
        out.append((f"extract {ex.name}", time.perf_counter() - t))
    return out


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def compare_stores(store: Path, reference: Path) -> tuple[int, list[str]]:
    """(arrays compared, names of those that differ) between the curve
    groups of two stores: every feature array's data, ok and error."""
    import zarr

    def arrays(root: Path) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        files = zarr.open_group(str(root), mode="r")["files"]
        for gname, g in files.members():
            for fname, f in g["features"].members():
                for part in ("data", "ok", "error"):
                    out[f"{gname}/{fname}/{part}"] = f[part][...]
        return out

    a, b = arrays(store), arrays(reference)
    common = sorted(set(a) & set(b))
    differ = [k for k in common if not (a[k].shape == b[k].shape and (
        np.array_equal(a[k], b[k], equal_nan=True) if a[k].dtype.kind == "f" else np.array_equal(a[k], b[k])))]
    differ += [f"{k} (only in one store)" for k in sorted(set(a) ^ set(b))]
    return len(common), differ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=None, help="folder for the film, demo bundle and stores (kept)")
    ap.add_argument("--model", type=Path, default=None, help="model bundle (default: a demo ridge bundle, made once)")
    ap.add_argument("--workers", type=int, default=None, help="curve --workers (default: curve's own default)")
    ap.add_argument("--seconds", type=float, default=58.0)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--reference-store", type=Path, default=None,
                    help="a store holding this film's curve features: the fresh store's are compared with it bit for bit")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="aanbench-curve-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    from aanbench.cpus import usable_cpus

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; usable CPUs {usable_cpus()}")
    t = time.perf_counter()
    film = make_film(work / "film.mp4", args.seconds)
    print(f"film {film} ({args.seconds:g} s, 640x360): {time.perf_counter() - t:.1f} s to make (or found)")
    bundle = args.model or make_bundle(work)
    store = work / f"store-{int(time.time())}"
    cmd = ["curve", film, "--model", bundle, "--window", args.window, "--store", store, "--out", work / "curves"]
    if args.workers is not None:
        cmd += ["--workers", args.workers]
    rows = []
    for label in ("curve, fresh store", "curve, rerun on the same store"):
        t, c = time.perf_counter(), children_cpu()
        r = aanbench(*cmd)
        wall, cpu = time.perf_counter() - t, children_cpu() - c
        if r.returncode != 0:
            sys.exit(f"curve failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        rows.append((label, wall))
        print(f"{label}: {wall:.2f} s wall = {args.seconds / wall:.2f} film seconds per wall second "
              f"({cpu:.2f} CPU s in all its processes)")
    if args.reference_store is not None:
        n, differ = compare_stores(store, args.reference_store)
        print(f"features against {args.reference_store}: {n - len(differ)} of {n} arrays bit-identical"
              + ("" if not differ else "; DIFFERENT: " + ", ".join(differ)))
    parts = breakdown(film, bundle, args.window)
    t_import = time.perf_counter()
    aanbench("--help")
    startup = time.perf_counter() - t_import
    t_import = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    torch_s = time.perf_counter() - t_import
    print("breakdown (one worker, in-process; curve's own run shares these across its workers):")
    for name, sec in parts + [("start-up (aanbench --help)", startup), ("import torch (to load the model)", torch_s)]:
        print(f"  {name:36s} {sec:7.2f} s")
    print(f"  {'rerun: start-up, store, model, plots':36s} {rows[1][1]:7.2f} s (no extraction)")
    emo = dict(parts).get("extract emobase2010")
    if emo:
        n = args.workers or usable_cpus()
        print(f"floor set by emobase2010 alone on {n} CPUs: {emo / n:.2f} s = {args.seconds * n / emo:.2f} film seconds "
              "per wall second (its openSMILE settings are the authors'; its values must not change)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
