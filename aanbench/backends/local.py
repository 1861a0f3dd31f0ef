"""The local backend: this machine, in-process with one worker, a spawn
process pool with more. Each worker loads the extractors once and writes
whole chunks itself (see :mod:`aanbench.extraction_job`).

Interrupts: the driver runs under :func:`aanbench.extraction_job.interrupt_guard`
(``handles_interrupts``). Pool workers handle SIGINT the same way (the
terminal sends it to every process of the group) and also watch an event the
driver sets, so an interrupt sent to the driver alone reaches them too; a
worker discards its chunk in flight and reports it as interrupted, queued
chunks are cancelled, and chunks finished before are reported as usual.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable, Sequence

from aanbench.extraction_job import (
    ExtractionInterrupted,
    ExtractionJob,
    LoadedExtractors,
    UnitResult,
    WorkUnit,
    check_interrupt,
    execute_unit,
    install_worker_interrupts,
    interrupt_requested,
    request_interrupt,
)

_WORKER: LoadedExtractors | None = None
POLL_S = 0.2  # how often the driver looks at the interrupt flag while waiting for workers


def _pool_init(job: ExtractionJob, threads: int, stop: Any = None) -> None:
    global _WORKER
    install_worker_interrupts(stop)  # before loading: an interrupt while loading is seen by the first unit
    _WORKER = LoadedExtractors(job)
    # torch is imported only by extractors that need it; size its pool if so
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, threads))


def _pool_run(job: ExtractionJob, unit: WorkUnit) -> UnitResult:
    assert _WORKER is not None
    try:
        return execute_unit(job, unit, _WORKER)
    except ExtractionInterrupted:
        return UnitResult(unit=unit, interrupted=True)
    except Exception as exc:
        return UnitResult(unit=unit, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


class LocalBackend:
    """This machine: in-process with one worker, a spawn process pool with more."""

    name = "local"
    handles_interrupts = True

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))

    def run(self, job: ExtractionJob, units: Sequence[WorkUnit], on_result: Callable[[UnitResult], None]) -> None:
        """Runs ``units``; on an interrupt, returns early (after reporting the
        chunks finished) with the interrupt still pending, or raises
        :class:`aanbench.extraction_job.ExtractionInterrupted`."""
        if not units:
            return
        if self.workers == 1:
            loaded = LoadedExtractors(job)
            for u in units:
                check_interrupt()
                try:
                    res = execute_unit(job, u, loaded)
                except Exception as exc:
                    res = UnitResult(unit=u, error=f"{type(exc).__name__}: {exc}")
                on_result(res)
            return
        import concurrent.futures as cf
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        with cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_pool_init,
                                    initargs=(job, threads, stop)) as pool:
            pending = {pool.submit(_pool_run, job, u) for u in units}
            try:
                while pending:
                    done, pending = cf.wait(pending, timeout=POLL_S, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        self._report(fut.result(), on_result)
                    if interrupt_requested():
                        break
            finally:
                if pending:  # interrupted (or the driver failed): stop the workers at their next item
                    stop.set()
                    for fut in pending:
                        fut.cancel()
                    for fut in cf.as_completed([f for f in pending if not f.cancelled()]):
                        try:
                            self._report(fut.result(), on_result)
                        except Exception:
                            pass

    @staticmethod
    def _report(res: UnitResult, on_result: Callable[[UnitResult], None]) -> None:
        if res.interrupted:  # a worker saw the interrupt first
            request_interrupt()
            return
        on_result(res)
