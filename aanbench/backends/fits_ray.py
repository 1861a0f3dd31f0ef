"""``aanbench run|benchmark --backend ray``: the fits of runs as Ray tasks
(:class:`RayFits`, the ``ray`` fit backend; :mod:`aanbench.backends.fits_local` is the local one).

The driver (this process) does what the local path does around the fits:
it plans each run (:func:`aanbench.runner.plan_run`, reading the features
from the store), lists its fits (:func:`aanbench.runner.fit_requests`), and,
once a run's fits are back, predicts its test samples, evaluates and builds
the results document (:func:`aanbench.runner.results_doc`). Only the fits
run on Ray, cut into tasks as the local path trains them, so that a task
gives the numbers the local run gives:

- batched training (the default for models with ``torch_fit``): one task per
  stack, the requests :func:`aanbench.runner.batch_stacks` groups (what
  :func:`aanbench.batched.group_jobs` stacks for one experiment and seed;
  dropout draws depend on a stack's composition, so a stack is never split);
- ``sequential`` (``--sequential``), or a model without batched training
  (ridge, SVR, ...): one task per fit (:func:`aanbench.runner.fit_target`).

Features travel once: each stored array (by store key, shared by every run
of a benchmark that uses it) is put into Ray's object store once and tasks
take its reference; on one node a task's arrays are read-only views of the
shared memory, never copies. A task gets its run's plan without the feature
values, the dataset plugin or the store (labels only), and sends back each
fit as plain data: the model's :meth:`~aanbench.contracts.Model.state`
(restored on the driver with its spec's ``restore``), the standardiser's
mean and std, the fit report and the fitting / validation samples.

A task runs with the driver's torch thread count and the driver's BLAS /
OpenMP thread limits (threadpoolctl, for the libraries loaded in the driver
when the task was submitted): thread counts can change float results.
Torch training itself always runs on one thread (:mod:`aanbench.training`,
:mod:`aanbench.batched`).

Where Ray runs is :func:`aanbench.backends.ray.connect`'s choice, as for
extraction: a local instance sized to this machine (its object store large
enough for the features, sized from the store's metadata), or the cluster
at ``address``. Ray is started first; each run's tasks are submitted as soon
as it is planned, so that Ray's workers start and fit while the driver
plans the next runs. ``workers`` caps how many tasks are in flight at once. Whatever happens (Ctrl-C included),
the tasks still running are cancelled and a local instance started here is
shut down.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from aanbench.contracts import AanbenchError, Dataset
from aanbench.plugin_manager import Plugins
from aanbench.registry import ExperimentConfig
from aanbench.runner import (
    Fitted,
    FitRequest,
    RunPlan,
    Standardizer,
    batch_stacks,
    batchable,
    fit_requests,
    fit_target,
    fit_targets,
    plan_run,
    results_doc,
    run_folds,
)
from aanbench.store import DatasetGroup

# Room in a local instance's object store beyond the feature arrays (plans,
# returned states), in MB.
OBJECT_STORE_MARGIN_MB = 128


@dataclass
class StoredLabels:
    """What a task needs of the store group: the labels of each target
    (``float32 (n_items,)``), and its path for messages."""

    path: str
    by_target: dict[str, np.ndarray]

    def labels(self, target: str) -> np.ndarray:
        return self.by_target[target]


def _threads() -> dict[str, Any]:
    """The driver's thread settings a task copies: torch's intra-op threads,
    and the largest thread count of each loaded BLAS / OpenMP library."""
    import torch

    limits: dict[str, int] = {}
    try:
        from threadpoolctl import threadpool_info

        for lib in threadpool_info():
            api = lib.get("user_api")
            if api in ("blas", "openmp"):
                limits[api] = max(limits.get(api, 1), int(lib.get("num_threads") or 1))
    except ImportError:  # scikit-learn brings threadpoolctl; without it, libraries keep their threads
        pass
    from aanbench import __version__

    return {"torch": int(torch.get_num_threads()), "limits": limits, "aanbench": __version__}


def _fit_unit(plan: RunPlan, value_refs: list[Any], requests: list[tuple[str, np.ndarray, int]], batched: bool,
              threads: dict[str, Any]) -> list[dict[str, Any]]:
    """The Ray task: ``requests`` fit as the local path fits them (one batched
    stack, or one fit), returned as plain data."""
    import ray
    import torch

    from aanbench import __version__

    if threads.get("aanbench") not in (None, __version__):
        import socket

        raise AanbenchError(f"on node {socket.gethostname()}: aanbench {__version__} is installed, the driver runs "
                            f"{threads['aanbench']}; every Ray node needs the driver's aanbench (see docs/ray.md)")
    values = ray.get(list(value_refs))
    plan = replace(plan, feats=replace(plan.feats, values=list(values)))
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads["torch"])))
    try:
        with contextlib.ExitStack() as stack:
            if threads.get("limits"):
                from threadpoolctl import threadpool_limits

                stack.enter_context(threadpool_limits(limits=dict(threads["limits"])))
            stack.enter_context(warnings.catch_warnings())
            # the shared feature arrays are read-only views of the object store; nothing writes them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            fits = fit_targets(plan, requests) if batched else [fit_target(plan, *r) for r in requests]
    finally:
        torch.set_num_threads(before)
    return [{"state": f.model.state(), "mean": f.scaler.mean, "std": f.scaler.std, "report": f.report,
             "fit_idx": f.fit_idx, "val_idx": f.val_idx} for f in fits]


@dataclass
class _Run:
    """One run (experiment x seed) in flight."""

    index: int
    exp: ExperimentConfig
    seed: int | None
    t0: float = 0.0
    plan: RunPlan | None = None
    folds: list[Any] = field(default_factory=list)
    requests: list[FitRequest] = field(default_factory=list)
    units: list[list[int]] = field(default_factory=list)
    batched: bool = False
    fitted: dict[tuple[str, int], Fitted] = field(default_factory=dict)
    waiting: int = 0
    error: BaseException | None = None
    finished: bool = False

    @property
    def label(self) -> str:
        seed = self.plan.seed if self.plan is not None else self.seed
        return f"{self.exp.name} seed {seed}"


def _cause(exc: BaseException) -> BaseException:
    """The task's own exception inside Ray's wrapper (an :class:`AanbenchError`
    keeps its one-line message)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def fit_runs_on_ray(
    runs: Sequence[tuple[ExperimentConfig, int | None]],
    dataset: Dataset,
    group: DatasetGroup,
    plugins: Plugins,
    *,
    address: str | None = None,
    workers: int | None = None,
    sequential: bool = False,
    save_models: Path | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    on_result: Callable[[int, dict[str, Any] | BaseException], None] | None = None,
) -> list[dict[str, Any] | BaseException]:
    """Run each ``(experiment, seed)`` of ``runs`` (seed None: the
    experiment's own) on ``group`` with its fits on Ray; returns, in the order
    of ``runs``, each run's results document (as
    :func:`aanbench.runner.run_experiment` gives it) or the exception that
    stopped it (planning, a fit, or evaluation). ``on_progress(done, total,
    what)`` is called as fits come back; ``on_result(i, doc_or_exception)``
    as each run finishes, in completion order. ``workers``: most tasks in
    flight at once (None: all, Ray schedules them on the cluster's CPUs)."""
    if workers is not None and int(workers) < 1:
        raise AanbenchError(f"--workers must be at least 1, not {workers}")
    items = [_Run(i, exp, seed) for i, (exp, seed) in enumerate(runs)]
    results: list[dict[str, Any] | BaseException | None] = [None] * len(items)

    def finish(run: _Run, outcome: dict[str, Any] | BaseException) -> None:
        run.finished = True
        run.plan, run.fitted = None, {}
        results[run.index] = outcome
        if on_result:
            on_result(run.index, outcome)

    import ray

    from aanbench.backends.ray import DEFAULT_OBJECT_STORE_MB, _env_number, connect
    from aanbench.backends.ray import shutdown as ray_shutdown

    # Ray first (its start-up, then the workers' imports, overlap the planning of
    # the runs): a local object store sized for the features the runs name
    need_mb = _feature_bytes([exp for exp, _ in runs], group, plugins) / 2**20 + OBJECT_STORE_MARGIN_MB
    owned = connect(address, object_store_mb=int(max(need_mb, _env_number("AANBENCH_RAY_OBJECT_STORE_MB",
                                                                            DEFAULT_OBJECT_STORE_MB))))
    pending: dict[Any, tuple[_Run, list[int]]] = {}
    try:
        remote = ray.remote(num_cpus=1)(_fit_unit)
        threads = _threads()
        arrays: dict[str, np.ndarray] = {}  # store key -> the one copy every plan shares
        refs: dict[str, Any] = {}  # store key -> that copy in the object store
        queue: list[tuple[_Run, list[int], Any, list[Any]]] = []
        cap = None if workers is None else int(workers)
        progress = {"done": 0, "total": 0}

        def submit() -> None:
            while queue and (cap is None or len(pending) < cap):
                run, unit, plan_ref, value_refs = queue.pop(0)
                if run.finished:  # a failed run's remaining fits are not started
                    continue
                reqs = [run.requests[i].args for i in unit]
                pending[remote.remote(plan_ref, value_refs, reqs, run.batched, threads)] = (run, unit)

        def collect(timeout: float | None) -> None:
            """Take in the tasks that are done (waiting up to ``timeout`` for one)."""
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if ready:  # and whatever else is done by now
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in ready:
                run, unit = pending.pop(ref)
                try:
                    got = ray.get(ref)
                except (ray.exceptions.RayError, AanbenchError) as exc:
                    progress["done"] += len(unit)
                    if not run.finished:
                        finish(run, _cause(exc))
                    if on_progress:
                        on_progress(progress["done"], progress["total"], f"{run.label}: failed")
                    continue
                if run.finished:
                    progress["done"] += len(unit)
                    continue
                assert run.plan is not None
                for i, fit in zip(unit, got):
                    req = run.requests[i]
                    progress["done"] += 1
                    run.fitted[req.key] = Fitted(run.plan.spec.restore(fit["state"]),
                                                 Standardizer(list(fit["mean"]), list(fit["std"])),
                                                 fit["report"], fit["fit_idx"], fit["val_idx"])
                    if on_progress:
                        on_progress(progress["done"], progress["total"],
                                    f"{run.label}: {req.target} / {run.folds[req.fold].name}")
                run.waiting -= 1
                if run.waiting == 0:
                    _finish_run(run, finish, save_models)
            submit()

        for run in items:
            run.t0 = time.perf_counter()
            try:  # what run_experiment does before its fits; its AanbenchErrors fail this run only
                plan = plan_run(run.exp, dataset, group, plugins, run.seed, threads=1)  # a task trains on one CPU
                values = [arrays.setdefault(k, v) for k, v in zip(_value_keys(plan.feats), plan.feats.values)]
                run.plan = replace(plan, feats=replace(plan.feats, values=values))
                run.folds = run_folds(run.plan)
                run.requests = fit_requests(run.plan, run.folds)
                run.batched = not sequential and batchable(run.plan)
                run.units = (batch_stacks(run.plan, [r.args for r in run.requests]) if run.batched
                             else [[i] for i in range(len(run.requests))])
            except AanbenchError as exc:
                finish(run, exc)
                continue
            if not run.requests:  # no usable fit: evaluated as the local path evaluates it
                _finish_run(run, finish, save_models)
                continue
            for k, a in zip(_value_keys(run.plan.feats), run.plan.feats.values):
                if k not in refs:
                    refs[k] = ray.put(a)
            labels = StoredLabels(run.plan.group.path, {t: run.plan.group.labels(t) for t in run.plan.targets})
            light = replace(run.plan, dataset=None, group=labels, protocol=None,
                            feats=replace(run.plan.feats, values=[], oks=[], errors=[], provenance=[]))
            plan_ref = ray.put(light)
            value_refs = [refs[k] for k in _value_keys(run.plan.feats)]
            queue.extend((run, unit, plan_ref, value_refs) for unit in run.units)
            run.waiting = len(run.units)
            progress["total"] += len(run.requests)
            submit()
            collect(timeout=0)
        while pending:
            collect(timeout=None)
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if owned:
            ray_shutdown()
    for run in items:  # not reached normally: every run ends with a document or an error
        if not run.finished:
            finish(run, AanbenchError(f"{run.label}: fits did not come back from Ray"))
    return results  # type: ignore[return-value]


def _value_keys(feats: Any) -> list[str]:
    """A name per array of ``feats.values`` to share them by: the store keys,
    or, for a model that reads no features (one ``(n, 0)`` array and no keys,
    :func:`aanbench.features.no_features`), a name of its row count."""
    if len(feats.keys) == len(feats.values):
        return list(feats.keys)
    return [f"(no features: {len(v)} rows)" for v in feats.values]


def _feature_bytes(exps: Sequence[ExperimentConfig], group: DatasetGroup, plugins: Plugins) -> int:
    """Bytes of the distinct stored arrays the experiments read (``float32
    (n_items, dim)`` each), from the store's metadata; a feature that does not
    resolve counts nothing (its run fails when planned)."""
    dims: dict[str, int] = {}
    for exp in exps:
        for name in exp.features:
            installed = plugins.extractors.get(name)
            with contextlib.suppress(AanbenchError):
                arr = group.resolve_feature(name, installed.version if installed else None)
                dims[arr.key] = int(arr.dim)
    return sum(dims.values()) * int(group.n_items) * 4


def _finish_run(run: _Run, finish: Callable[[_Run, Any], None], save_models: Path | None) -> None:
    assert run.plan is not None
    try:
        doc = results_doc(run.plan, run.folds, run.fitted, t0=run.t0, save_models=save_models)
    except AanbenchError as exc:
        finish(run, exc)
        return
    finish(run, doc)


class RayFits:
    """Fits on Ray (:func:`fit_runs_on_ray`): the ``ray`` choice of
    :func:`aanbench.workflows.fit_backend`. Same numbers as :class:`LocalFits`
    on the CPU; fits run on one thread each, on the cluster's CPU workers."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        if workers is not None and int(workers) < 1:
            raise AanbenchError(f"--workers must be at least 1, not {workers}")
        self.address = address or None
        self.workers = workers

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
        on_result: Callable[[int, dict[str, Any] | BaseException], None] | None = None,
    ) -> list[dict[str, Any] | BaseException]:
        """Every run's fits submitted at once (``on_start`` is not called: one
        progress over all fits); see :func:`fit_runs_on_ray`."""
        return fit_runs_on_ray(runs, dataset, group, plugins, address=self.address, workers=self.workers,
                               sequential=sequential, save_models=save_models, on_progress=on_progress,
                               on_result=on_result)
