"""The threads of a stack's CPU first layer (:class:`Threads`) and their
default number (:func:`default_threads`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from aanbench.cpus import usable_cpus


class Threads:
    """The CPU first layer's threads while a stack trains
    (``train_batched(threads=n)``): the calling thread and ``n - 1`` workers."""

    def __init__(self, n: int = 1) -> None:
        self.n = max(1, int(n))
        self.pool = ThreadPoolExecutor(self.n - 1, thread_name_prefix="aanbench-stem") if self.n > 1 else None

    def share(self, work: Callable[[Sequence[tuple[int, int]]], None], runs: list[tuple[int, int]]) -> None:
        """``work(runs)``, or ``work`` on consecutive shares of the runs at once,
        one share per thread. Each run's products are the same single-threaded
        calls either way (torch releases the interpreter lock inside them), so
        the numbers do not depend on the number of threads, only the wall
        time does."""
        n = min(self.n, len(runs))
        if self.pool is None or n < 2:
            work(runs)
            return
        cut = [round(i * len(runs) / n) for i in range(n + 1)]
        futures = [self.pool.submit(work, runs[cut[i]:cut[i + 1]]) for i in range(1, n)]
        work(runs[: cut[1]])
        for f in futures:
            f.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def default_threads() -> int:
    """The default threads of a stack's first layer (see :func:`train_batched`):
    the CPUs this process may run on (:func:`aanbench.cpus.usable_cpus`)."""
    return usable_cpus()
