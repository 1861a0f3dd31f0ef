"""The local backend: this machine, in-process with one worker, a spawn
process pool with more. Each worker loads the extractors once and writes
whole chunks itself (see :mod:`aanbench.extraction`)."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Sequence

from aanbench.extraction import ExtractionJob, LoadedExtractors, UnitResult, WorkUnit, execute_unit

_WORKER: LoadedExtractors | None = None


def _pool_init(job: ExtractionJob, threads: int) -> None:
    global _WORKER
    _WORKER = LoadedExtractors(job)
    # torch is imported only by extractors that need it; size its pool if so
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, threads))


def _pool_run(job: ExtractionJob, unit: WorkUnit) -> UnitResult:
    assert _WORKER is not None
    try:
        return execute_unit(job, unit, _WORKER)
    except Exception as exc:
        return UnitResult(unit=unit, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


class LocalBackend:
    """This machine: in-process with one worker, a spawn process pool with more."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))

    def run(self, job: ExtractionJob, units: Sequence[WorkUnit], on_result: Callable[[UnitResult], None]) -> None:
        if not units:
            return
        if self.workers == 1:
            loaded = LoadedExtractors(job)
            for u in units:
                try:
                    res = execute_unit(job, u, loaded)
                except Exception as exc:
                    res = UnitResult(unit=u, error=f"{type(exc).__name__}: {exc}")
                on_result(res)
            return
        import concurrent.futures as cf
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // self.workers)
        with cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                    initializer=_pool_init, initargs=(job, threads)) as pool:
            futures = [pool.submit(_pool_run, job, u) for u in units]
            for fut in cf.as_completed(futures):
                on_result(fut.result())
