"""How many CPUs this process may use: one helper for everything that sizes
work by the CPU count (the batched trainer's first-layer threads, the local
Ray instance of :mod:`aanbench.backends.ray`). A leaf module: it imports only
the standard library, so any layer may use it."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (``os.cpu_count()``
    where the platform has none), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: Bytes one extraction worker (a process or a Ray actor) may use, measured
#: high: weight-free extractors, or extractors with weight files (torch and
#: a network). Sizes default worker counts by the memory there is.
WORKER_MEMORY = {"weightfree": 600 << 20, "neural": 3 << 30}
