"""The local backend: this machine, in-process with one worker, a spawn
process pool with more. Each worker loads the extractors once and writes
whole chunks itself (see :mod:`aanbench.extraction_job`).

Interrupts: the driver runs under :func:`aanbench.extraction_job.interrupt_guard`
(``handles_interrupts``). Pool workers handle SIGINT the same way (the
terminal sends it to every process of the group) and also watch an event the
driver sets, so an interrupt sent to the driver alone reaches them too; a
worker discards its chunk in flight and reports it as interrupted, queued
chunks are cancelled, and chunks finished before are reported as usual.

A :class:`WorkerPool` starts the worker processes before the work is known
(``curve`` starts it while it loads the model, so the workers' imports
overlap the driver's): each worker loads a job's extractors when its first
unit of that job arrives, and keeps them for the next job that runs the
same extractors (the next film of a batch).
"""

from __future__ import annotations

import importlib
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
_WORKER_KEY: tuple | None = None  # the extractors _WORKER loaded (a WorkerPool's worker)
_THREADS = 1  # a WorkerPool worker's torch threads
POLL_S = 0.2  # how often the driver looks at the interrupt flag while waiting for workers


def _pool_init(job: ExtractionJob, threads: int, stop: Any = None) -> None:
    global _WORKER, _WORKER_KEY
    install_worker_interrupts(stop)  # before loading: an interrupt while loading is seen by the first unit
    _WORKER, _WORKER_KEY = LoadedExtractors(job), _extractors_key(job)
    # torch is imported only by extractors that need it; size its pool if so
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, threads))


def _pool_warm(threads: int, stop: Any, preload: tuple[str, ...]) -> None:
    """A :class:`WorkerPool` worker's start: the interrupt handling, then
    ``preload`` imported (``"module"``, or ``"module:function"`` called), so
    the first unit finds them loaded; a preload that fails is left to the
    unit that needs it, which reports it."""
    global _THREADS
    install_worker_interrupts(stop)
    _THREADS = threads
    for name in preload:
        mod, _, func = name.partition(":")
        try:
            m = importlib.import_module(mod)
            if func:
                getattr(m, func)()
        except Exception:
            pass


def _pool_ready() -> int:
    return os.getpid()


def _extractors_key(job: ExtractionJob) -> tuple:
    return (tuple(job.extractors), job.weights_dir, job.device, job.batch_size, repr(sorted(job.sampling.items())))


def _worker_for(job: ExtractionJob) -> LoadedExtractors:
    """This worker's extractors for ``job``: loaded at pool start
    (:func:`_pool_init`), or on the first unit of a job (a :class:`WorkerPool`),
    reused for a later job with the same extractors (its group reopened)."""
    global _WORKER, _WORKER_KEY
    key = _extractors_key(job)
    if _WORKER is not None and _WORKER_KEY == key:
        if _WORKER._job is not job and (_WORKER._job.store_root, _WORKER._job.group_path) != (job.store_root, job.group_path):
            _WORKER._group = None
        _WORKER._job = job
        return _WORKER
    _WORKER, _WORKER_KEY = LoadedExtractors(job), key
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, _THREADS))
    return _WORKER


def _pool_run(job: ExtractionJob, unit: WorkUnit) -> UnitResult:
    try:
        worker = _worker_for(job)
    except ExtractionInterrupted:
        return UnitResult(unit=unit, interrupted=True)
    except Exception as exc:
        return UnitResult(unit=unit, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
    try:
        return execute_unit(job, unit, worker)
    except ExtractionInterrupted:
        return UnitResult(unit=unit, interrupted=True)
    except Exception as exc:
        return UnitResult(unit=unit, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


class LocalBackend:
    """This machine: in-process with one worker, a spawn process pool with more."""

    name = "local"
    handles_interrupts = True

    def __init__(self, workers: int = 1, pool: "WorkerPool | None" = None) -> None:
        """``pool``: run on these already started workers (with ``workers``
        of 2 or more; the pool stays open, its owner closes it)."""
        self.workers = max(1, int(workers))
        self.pool = pool

    @property
    def label(self) -> str:
        """``local`` with its workers (the plan's line)."""
        return f"local ({self.workers} worker{'s' if self.workers != 1 else ''})"

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
        if self.pool is not None:
            self.pool.stop.clear()  # a pool that served an interrupted run before
            self._run_on(self.pool.executor, self.pool.stop, job, units, on_result)
            return
        import concurrent.futures as cf
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        with cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_pool_init,
                                    initargs=(job, threads, stop)) as pool:
            self._run_on(pool, stop, job, units, on_result)

    def _run_on(self, pool: Any, stop: Any, job: ExtractionJob, units: Sequence[WorkUnit],
                on_result: Callable[[UnitResult], None]) -> None:
        import concurrent.futures as cf

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


class WorkerPool:
    """``workers`` spawned extraction worker processes, started now, before
    the work is known (see the module's docstring); each imports
    ``preload`` (module names, or ``"module:function"`` to call) while the
    driver does something else. Give it to :class:`LocalBackend` (``pool=``,
    or ``backend_options={"pool": pool}``) for any number of runs; close it
    when done (:meth:`close`, or use it as a context manager), and after an
    interrupted run (its workers keep the interrupt)."""

    def __init__(self, workers: int, preload: Sequence[str] = ()) -> None:
        import concurrent.futures as cf
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.workers = max(1, int(workers))
        self.stop = ctx.Event()
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        self.executor = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_pool_warm,
                                               initargs=(threads, self.stop, tuple(preload)))
        # a spawn pool starts a process per task submitted while none is idle: one each, now
        self._started = [self.executor.submit(_pool_ready) for _ in range(self.workers)]

    def close(self) -> None:
        """Stop the workers. Call it when no run is in progress (a run
        returns only once its units have ended): a worker still starting
        (importing ``preload``) is terminated rather than waited for."""
        procs = list(getattr(self.executor, "_processes", {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=10)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
