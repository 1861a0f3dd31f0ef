"""What made a number: the environment a result was computed in.

:func:`environment` returns a JSON-able record of everything outside
aanbench's own code that can change a result's digits: the versions of the
numeric libraries (torch, numpy, scipy, scikit-learn, PyAV and the FFmpeg
libraries it bundles, Pillow, openSMILE, Zarr, pandas), the thread counts
(torch's intra- and inter-op pools, the OMP/MKL/OpenBLAS variables, and the
thread pools that threadpoolctl finds loaded, with the BLAS kernel family
OpenBLAS chose for this CPU), the device, and the CPU kind (model name and
the instruction-set flags that select BLAS and torch kernels, e.g. avx512f).

:func:`differences` compares several such records (e.g. one per results file
of a leaderboard) and lists what differs among the fields that can change
numbers; :func:`mixed_note` turns that into one line for a leaderboard's
header, and :func:`header_line` gives that line or, for one environment,
``Environment: <summary>``. :func:`fingerprint` is a short hash of those fields: equal
fingerprints, same environment as far as numbers go.

The record is made where the numbers are made (in the process that trains,
predicts or extracts), so the thread counts are the ones in force there.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import sys
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

FORMAT = 1

#: Distributions whose version can change a result's digits (distribution name -> label).
NUMERIC_PACKAGES: dict[str, str] = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "scipy": "scipy",
    "scikit-learn": "scikit-learn",
    "av": "PyAV",
    "pillow": "Pillow",
    "opensmile": "opensmile",
    "audresample": "audresample",
    "zarr": "zarr",
    "numcodecs": "numcodecs",
    "pandas": "pandas",
    "threadpoolctl": "threadpoolctl",
}

#: Environment variables that set thread counts of OpenMP, MKL, OpenBLAS and friends.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "MKL_CBWR")

#: CPU flags that select different BLAS / torch / FFmpeg kernels (reduction
#: order, fused multiply-add), hence can change the last bits.
KERNEL_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
                "asimd", "sve", "sve2")  # the last three: Arm


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _cpu() -> dict[str, Any]:
    """Model name, vendor and kernel-selecting flags, from /proc/cpuinfo where
    there is one (Linux), else what :mod:`platform` says."""
    model, vendor, flags = platform.processor() or "", "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if key in ("model name", "cpu model") and not model:
                    model = value
                elif key == "vendor_id" and not vendor:
                    vendor = value
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
                if line.strip() == "" and model and flags:
                    break  # the first processor's block is enough
    except OSError:
        pass
    return {
        "model": model or platform.machine(),
        "vendor": vendor,
        "machine": platform.machine(),
        "flags": sorted(f for f in KERNEL_FLAGS if f in flags),
        "logical_cpus": os.cpu_count(),
    }


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _threadpools() -> list[dict[str, Any]] | None:
    """threadpoolctl's view of the native thread pools loaded in this process
    (None where threadpoolctl is not installed). The file path is left out
    (it names the install folder, not the environment)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    out = []
    for lib in threadpool_info():
        out.append({k: lib.get(k) for k in ("user_api", "internal_api", "prefix", "version", "num_threads",
                                            "threading_layer", "architecture") if k in lib})
    return sorted(out, key=lambda d: (str(d.get("internal_api")), str(d.get("prefix"))))


def _ffmpeg() -> dict[str, Any] | None:
    """The FFmpeg libraries PyAV is linked against (it bundles its own build)."""
    try:
        import av
    except ImportError:
        return None
    libs = {name: ".".join(str(x) for x in v) for name, v in sorted(getattr(av, "library_versions", {}).items())}
    return {"version": str(getattr(av, "ffmpeg_version_info", "")), "libraries": libs}


def _torch(device: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """torch's build and threads, and the device record."""
    dev: dict[str, Any] = {"name": device, "kind": device.split(":", 1)[0]}
    if _version("torch") is None:
        return None, dev
    import torch

    info: dict[str, Any] = {
        "cuda": torch.version.cuda,
        "cpu_capability": _call(lambda: torch.backends.cpu.get_cpu_capability()),
        "mkldnn": _call(lambda: bool(torch.backends.mkldnn.is_available())),
        "deterministic_algorithms": _call(lambda: bool(torch.are_deterministic_algorithms_enabled())),
    }
    if dev["kind"] == "cuda":
        try:
            index = torch.device(device).index
            index = torch.cuda.current_device() if index is None else index
            props = torch.cuda.get_device_properties(index)
            dev.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                        "cudnn": _call(lambda: torch.backends.cudnn.version()),
                        "tf32_matmul": _call(lambda: bool(torch.backends.cuda.matmul.allow_tf32)),
                        "tf32_cudnn": _call(lambda: bool(torch.backends.cudnn.allow_tf32))})
        except Exception as exc:  # no driver, bad index: say so rather than fail the result
            dev["error"] = f"{type(exc).__name__}: {exc}"
    return info, dev


def _call(fn: Any) -> Any:
    try:
        return fn()
    except Exception:
        return None


def environment(device: str = "cpu") -> dict[str, Any]:
    """A JSON-able record of what can change numbers in this process:
    ``packages`` (version or None per :data:`NUMERIC_PACKAGES`), ``ffmpeg``
    (PyAV's FFmpeg libraries), ``torch`` (its CUDA build, CPU kernel level),
    ``threads`` (torch intra-/inter-op, the thread variables that are set,
    the loaded native pools with OpenBLAS's kernel family), ``device``
    (``device`` as given, with the GPU's name and capability for cuda) and
    ``cpu`` (model, vendor, kernel-selecting flags). ``python`` and
    ``platform`` say which interpreter and OS."""
    torch_info, dev = _torch(device)
    threads: dict[str, Any] = {
        "usable_cpus": _usable_cpus(),
        "env": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "pools": _threadpools(),
    }
    if torch_info is not None:
        import torch

        threads["torch_intra_op"] = int(torch.get_num_threads())
        threads["torch_inter_op"] = int(torch.get_num_interop_threads())
    libc = platform.libc_ver()
    return {
        "format": FORMAT,
        "python": platform.python_version(),
        "platform": {"system": platform.system(), "release": platform.release(), "libc": " ".join(libc).strip()},
        "packages": {name: _version(name) for name in NUMERIC_PACKAGES},
        "ffmpeg": _ffmpeg(),
        "torch": torch_info,
        "threads": threads,
        "device": dev,
        "cpu": _cpu(),
    }


# --------------------------------------------------------------------------- comparing records


def numeric_fields(record: Mapping[str, Any]) -> dict[str, str]:
    """The fields of an :func:`environment` record that can change numbers,
    flattened to ``label -> value`` (strings): package versions, FFmpeg
    libraries, torch's CUDA build and CPU kernel level, the thread variables
    the user set (OMP/MKL/OpenBLAS), the BLAS kernel family, the device and
    the CPU kind. Fields that are informational only are left out: OS
    release, logical and usable CPU counts, and the thread counts in force
    (torch's pools and the BLAS/OpenMP pools). aanbench sets those itself, per
    kind of model within one run (one BLAS thread around classical fits, every
    CPU for a batched stack's first layer), and its numbers are the same for
    any count (tests/test_batched.py checks the stack bit for bit over thread
    counts; issue 26 measured 0 of 240 predictions changed between one and two
    threads): comparing them would call one machine's runs "mixed"."""
    out: dict[str, str] = {"python": str(record.get("python"))}
    for name, version in (record.get("packages") or {}).items():
        out[NUMERIC_PACKAGES.get(name, name)] = str(version) if version is not None else "not installed"
    ff = record.get("ffmpeg") or {}
    for lib, version in (ff.get("libraries") or {}).items():
        out[f"FFmpeg {lib}"] = str(version)
    tinfo = record.get("torch") or {}
    for key in ("cuda", "cpu_capability", "deterministic_algorithms"):
        if key in tinfo:
            out[f"torch {key.replace('_', ' ')}"] = str(tinfo[key])
    th = record.get("threads") or {}
    for var, value in sorted((th.get("env") or {}).items()):
        out[var] = str(value)
    for pool in th.get("pools") or []:  # two libraries of one name (numpy's and scipy's OpenBLAS): both values,
        name = f"{pool.get('internal_api')} ({pool.get('prefix')})"  # sorted, whatever order they were loaded in
        for key, field in (("version", "version"), ("kernels", "architecture")):
            if pool.get(field):
                seen = set(out[f"{name} {key}"].split(", ")) if f"{name} {key}" in out else set()
                out[f"{name} {key}"] = ", ".join(sorted(seen | {str(pool.get(field))}))
    dev = record.get("device") or {}
    out["device"] = str(dev.get("gpu") or dev.get("name") or "")
    for key in ("capability", "cudnn", "tf32_matmul", "tf32_cudnn"):
        if key in dev:
            out[f"device {key}"] = str(dev[key])
    cpu = record.get("cpu") or {}
    out["CPU"] = str(cpu.get("model", ""))
    out["CPU flags"] = " ".join(cpu.get("flags") or []) or "none"
    return out


def fingerprint(record: Mapping[str, Any] | None) -> str:
    """12 hex digits of the SHA-256 of :func:`numeric_fields` (``""`` for no
    record): two records with the same fingerprint agree on everything that
    can change numbers."""
    if not record:
        return ""
    text = json.dumps(numeric_fields(record), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def differences(records: Sequence[Mapping[str, Any] | None]) -> dict[str, dict[str, int]]:
    """For each numeric field (see :func:`numeric_fields`) that is not the same
    in every record: ``{value: number of records}``. Records that are None
    or empty (results made before environments were recorded) count as one
    field ``"environment"`` with the value ``"not recorded"`` beside
    ``"recorded"``. ``{}``: the records agree (or there are fewer than two)."""
    recorded = [numeric_fields(r) for r in records if r]
    missing = sum(1 for r in records if not r)
    out: dict[str, dict[str, int]] = {}
    if missing and recorded:
        out["environment"] = {"recorded": len(recorded), "not recorded": missing}
    keys: list[str] = []
    for fields in recorded:
        keys.extend(k for k in fields if k not in keys)
    for key in keys:
        counts = Counter(fields.get(key, "absent") for fields in recorded)
        if len(counts) > 1:
            out[key] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def describe(diffs: Mapping[str, Mapping[str, int]], unit: str = "run") -> list[str]:
    """One line per differing field: ``"numpy 2.4.6 (12 runs), 2.3.5 (3 runs)"``."""
    def plural(n: int) -> str:
        return f"{n} {unit}" + ("" if n == 1 else "s")

    return [f"{key} " + ", ".join(f"{value} ({plural(n)})" for value, n in counts.items())
            for key, counts in diffs.items()]


def mixed_note(records: Iterable[Mapping[str, Any] | None], unit: str = "run") -> str | None:
    """The leaderboard header line when ``records`` (one per results file)
    differ in anything that can change numbers, else None:
    ``"This board mixes environments: numpy 2.4.6 (12 runs), 2.3.5 (3 runs); CPU ..."``."""
    lines = describe(differences(list(records)), unit)
    if not lines:
        return None
    return "This board mixes environments: " + "; ".join(lines) + "."


def summary(record: Mapping[str, Any] | None) -> str:
    """One short line naming an environment (for a leaderboard that does not
    mix them): the numeric libraries, FFmpeg, device and CPU kind."""
    if not record:
        return "environment not recorded"
    pk = record.get("packages") or {}
    names = ("torch", "numpy", "scipy", "scikit-learn", "av", "pillow", "opensmile", "zarr", "pandas")
    libs = ", ".join(f"{NUMERIC_PACKAGES[n]} {pk[n]}" for n in names if pk.get(n))
    ff = (record.get("ffmpeg") or {}).get("version")
    dev = record.get("device") or {}
    cpu = record.get("cpu") or {}
    flags = " ".join(f for f in cpu.get("flags") or [] if f.startswith(("avx", "amx", "sve")))
    th = record.get("threads") or {}
    parts = [f"Python {record.get('python')}", libs]
    if ff:
        parts.append(f"FFmpeg {ff}")
    parts.append(f"device {dev.get('gpu') or dev.get('name')}")
    parts.append(f"CPU {cpu.get('model')}" + (f" ({flags})" if flags else ""))
    if "torch_intra_op" in th:
        parts.append(f"torch threads {th['torch_intra_op']}")
    return "; ".join(p for p in parts if p) + f" [env {fingerprint(record)}]"


def header_line(records: Sequence[Mapping[str, Any] | None], unit: str = "run") -> str:
    """The environment line of a leaderboard made from ``records`` (one per
    results file): :func:`mixed_note` where they differ in anything that can
    change numbers, else ``"Environment: "`` and the :func:`summary` of the
    one environment (``"Environment: not recorded"`` where none is)."""
    records = list(records)
    note = mixed_note(records, unit)
    if note:
        return note
    first = next((r for r in records if r), None)
    return "Environment: " + summary(first)


if __name__ == "__main__":  # python -m aanbench.provenance: this process's record
    json.dump(environment(sys.argv[1] if len(sys.argv) > 1 else "cpu"), sys.stdout, indent=2)
    sys.stdout.write("\n")
