"""Fits in a pool of worker processes on this machine: each run (experiment
x seed) trained whole in one worker by :func:`aanbench.runner.run_experiment`,
as :class:`aanbench.backends.fits_local.LocalFits` trains it, several runs at
once. ``aanbench demo`` uses it to keep two cores busy while it trains its
experiments; ``benchmark`` takes it as a fit backend object.

Same numbers as the local path: a worker trains with BLAS on one thread
(as :func:`aanbench.workflows.fits.one_blas_thread` sets it for local
fits); torch training itself runs on one thread (:mod:`aanbench.training`,
:mod:`aanbench.batched`) and a batched stack's first layer gives the same
numbers with any thread count (here 1). Torch's other work (predicting,
standardising) gets the worker's share of the CPUs (``torch_threads``,
default the usable CPUs divided among the workers, at least 1) so that the
workers do not crowd each other's cores; on the demo's 20 experiments the
predictions were identical, bit for bit, to local fits' with the driver's
two threads (and with two threads per worker). Runs are independent (each
seeds its own generators), so their order and placement change nothing.

Workers are spawned (not forked: a fork of a process whose OpenMP pool has
started can hang), open the feature store read-only themselves and send
back the results document; the driver writes the results files. A worker
ignores SIGINT: on Ctrl-C the driver cancels the queued runs and ends the
workers (the runs in flight are lost; those finished were reported).

Besides the runs, :meth:`ProcessFits.submit` runs any other job (a picklable
function) in the same pool, e.g. the demo's curve beside its training; a
running job holds a worker as a run does.
"""

from __future__ import annotations

import concurrent.futures as cf
import signal
from pathlib import Path
from typing import Any, Callable, Sequence

from aanbench.contracts import Dataset
from aanbench.plugin_manager import Plugins
from aanbench.registry import ExperimentConfig
from aanbench.store import DatasetGroup

POLL_S = 0.2  # how often the driver looks for finished work while waiting


def _worker_init(torch_threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver ends the pool on Ctrl-C
    import torch

    torch.set_num_threads(max(1, int(torch_threads)))


def _fit_run(exp: ExperimentConfig, seed: int | None, dataset: Dataset, store_root: str, device: str,
             sequential: bool, save_models: Path | None) -> Any:
    """The worker's task: one run, as :class:`LocalFits` trains it."""
    from aanbench.plugin_manager import get_plugins
    from aanbench.runner import run_experiment
    from aanbench.store import FeatureStore

    group = FeatureStore(store_root, mode="r").open_group(dataset.name, dataset.segmentation)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it, BLAS keeps its threads (as for local fits)
        return run_experiment(exp, dataset, group, get_plugins(), seed=seed, save_models=save_models,
                              sequential=sequential, device=device, threads=1)
    with threadpool_limits(1):
        return run_experiment(exp, dataset, group, get_plugins(), seed=seed, save_models=save_models,
                              sequential=sequential, device=device, threads=1)


class ProcessFits:
    """Runs in ``workers`` spawned processes, each run whole in one of them.

    ``priority(experiment)``: runs start in decreasing priority (e.g. the
    expected seconds, longest first, so that a long run does not start
    last); by default in the order given. ``torch_threads``: torch's
    threads in each worker (default: the usable CPUs divided among the
    workers, at least 1). Use as a context manager to keep
    the pool between :meth:`run` and jobs given to :meth:`submit`; without
    one, :meth:`run` makes a pool for its runs and closes it."""

    name = "processes"

    def __init__(self, workers: int = 2, device: str = "cpu",
                 priority: Callable[[ExperimentConfig], float] | None = None,
                 torch_threads: int | None = None) -> None:
        self.workers = max(1, int(workers))
        self.device = device
        self.priority = priority
        self.torch_threads = torch_threads
        self._pool: cf.ProcessPoolExecutor | None = None
        self._jobs: set[cf.Future] = set()  # submitted side jobs not yet done

    def _open(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            from aanbench.cpus import usable_cpus

            threads = self.torch_threads or max(1, usable_cpus() // self.workers)
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                                initializer=_worker_init, initargs=(threads,))
        return self._pool

    def close(self, cancel: bool = False) -> None:
        """Wait for the pool's work and end it; ``cancel``: drop what is
        queued and end the workers now (Ctrl-C)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if cancel:
            for p in list(getattr(pool, "_processes", {}).values()):  # the workers ignore SIGINT
                p.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
        else:
            pool.shutdown(wait=True)

    def __enter__(self) -> "ProcessFits":
        self._open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(cancel=exc_type is not None)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> cf.Future:
        """Run ``fn(*args, **kwargs)`` (picklable) in the pool; it holds a
        worker until done, so :meth:`run` starts one run fewer meanwhile."""
        fut = self._open().submit(fn, *args, **kwargs)
        self._jobs.add(fut)
        return fut

    def run(
        self,
        runs: Sequence[tuple[ExperimentConfig, int | None]],
        dataset: Dataset,
        group: DatasetGroup,
        plugins: Plugins,
        *,
        sequential: bool = False,
        save_models: Path | None = None,
        on_start: Callable[[int], None] | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """As :meth:`aanbench.backends.fits_local.LocalFits.run`, runs in the
        workers: ``on_start(i)`` as run ``i`` is handed to a worker (at most
        as many runs in flight as workers free of other jobs, at least one),
        ``on_result(i, doc_or_exception)`` as it ends, in completion order;
        ``on_progress(1, 1, "done")`` then (a worker's fits are not
        followed one by one). Returns the documents in the order of ``runs``."""
        own = self._pool is None
        pool = self._open()
        store_root = str(group.store.root)
        order = list(range(len(runs)))
        if self.priority is not None:
            order.sort(key=lambda i: -float(self.priority(runs[i][0])))  # stable: ties keep the given order
        out: list[Any] = [None] * len(runs)
        running: dict[cf.Future, int] = {}
        queue = list(order)
        clean = False
        try:
            while queue or running:
                self._jobs = {f for f in self._jobs if not f.done()}
                while queue and len(running) < max(1, self.workers - len(self._jobs)):
                    i = queue.pop(0)
                    exp, seed = runs[i]
                    if on_start is not None:
                        on_start(i)
                    running[pool.submit(_fit_run, exp, seed, dataset, store_root, self.device, sequential,
                                        save_models)] = i
                done, _ = cf.wait(list(running), timeout=POLL_S, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    try:
                        got = fut.result()
                    except Exception as exc:  # a clear error, or a bug in a model plugin: this run fails, the others go on
                        got = exc
                    out[i] = got
                    if on_progress is not None:
                        on_progress(1, 1, "done")
                    if on_result is not None:
                        on_result(i, got)
            clean = True
        finally:
            if not clean:  # Ctrl-C or a failing callback: nothing queued starts, the workers end now
                self.close(cancel=True)
            elif own:
                self.close()
        return out
