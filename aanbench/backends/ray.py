"""``aanbench extract --backend ray``: the planner's chunks on Ray actors.

Importing this module registers the backend as ``ray`` (see
:func:`aanbench.backends.get_backend`).

Where Ray runs
    With no address a new local Ray instance is started, sized to this
    machine (``ray.init(address="local", num_cpus=<cores>)``, no dashboard,
    a small object store), and shut down at the end of the run. With an
    address (``auto`` or ``host:port``) the driver joins that cluster and
    leaves it running: only its own actors are removed. If Ray is already
    initialised in this process (a notebook), that session is used and left
    as it is. ``ray.init`` runs from the folder holding the ``aanbench``
    package (see :func:`_package_cwd`: a directory named ``aanbench`` in the
    user's working directory is never imported by the workers). A local
    instance has a watchdog process (:func:`_watch_local_instance`) that
    ends every process of it when the driver exits or is killed.

Start-up
    :meth:`RayBackend.prepare` (called by
    :func:`aanbench.extraction.extract_dataset` once the extractors are
    chosen) starts Ray and creates the actors; they load their extractors
    while the driver plans, and :meth:`RayBackend.run` hands them the job. A
    local instance is started without the autoscaler's monitor and the
    dashboard's API server (see :func:`_lean_local_instance`;
    ``AANBENCH_RAY_FULL_START=1`` starts them).
    Actors stay loaded for the whole run: every extractor of a pool is
    loaded once per actor, and each chunk is decoded once for all of them.

Actors
    A unit's extractors are split into two groups: *GPU* extractors
    (``Extractor.uses_gpu`` while ``job.device`` is a ``cuda`` device) and
    *CPU* extractors (everything else: openSMILE, the weight-free ones, a
    neural extractor on ``--device cpu``). Each group gets its own pool of
    long-lived actors that load the group's extractors once, in
    ``__init__`` (:class:`aanbench.extraction_job.LoadedExtractors`), and then
    execute whole units with :func:`aanbench.extraction_job.execute_unit`, which
    decodes each item once for the group's extractors and writes the
    chunk's rows, then its done markers. GPU actors ask Ray for
    ``gpus_per_worker`` GPUs (1 when not given); CPU actors hold none. When
    every extractor is CPU-only (the usual case) there is one pool and a
    chunk is decoded once; with both kinds a chunk is decoded once per pool,
    so that GPUs are never held while openSMILE runs. The two parts of a
    chunk write disjoint arrays; the driver reports the chunk once, when
    both parts are back.

Faults
    When an actor dies (killed, segfault, OOM killer, node lost) the driver
    first reads the store: the unit's arrays whose done marker is set were
    written whole before the death and are kept as they are (reported from
    the store, never recomputed). The rest of the unit goes to a fresh
    actor, at most ``max_retries`` times (2 by default, environment
    ``AANBENCH_RAY_RETRIES``); after that it is reported with ``error`` set,
    so :func:`aanbench.extraction.run_plan` records it as failed and not
    done, and a rerun computes it. A Python exception inside a unit is not
    retried (it is deterministic): it fails the unit, as on the local
    backend. An array whose actor died mid-write has no done marker and is
    written again, whole.

Environment knobs (all optional)
    ``AANBENCH_RAY_RETRIES`` (int, default 2), ``AANBENCH_RAY_START_TIMEOUT``
    (seconds a pool with queued chunks may have no actor up, loading
    included, default 300),
    ``AANBENCH_RAY_OBJECT_STORE_MB`` (object store of a local instance,
    default 256), ``AANBENCH_RAY_WATCHDOG`` (``0``: no watchdog), ``AANBENCH_RAY_RUNTIME_ENV`` (JSON merged into the actors'
    ``runtime_env``, e.g. ``{"py_executable": "/opt/venv/bin/python"}``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from aanbench.contracts import AanbenchError
from aanbench.extraction_job import (
    ExtractionJob,
    ItemFailure,
    LoadedExtractors,
    UnitResult,
    WorkUnit,
    execute_unit,
    feature_key,
)
from aanbench.store import FeatureStore

try:
    import ray
    import ray.exceptions as rex
except ImportError as _exc:  # pragma: no cover - ray is a declared dependency
    raise ImportError(f"the ray backend needs the `ray` package ({_exc})") from None

log = logging.getLogger("aanbench.backends.ray")

CPU = "cpu"
GPU = "gpu"
DEFAULT_RETRIES = 2
DEFAULT_START_TIMEOUT_S = 300.0
DEFAULT_OBJECT_STORE_MB = 256
ACTOR_CLASS_NAME = "AanbenchUnitWorker"  # process title of a busy actor: "ray::AanbenchUnitWorker.run"


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise AanbenchError(f"environment {name}={raw!r} is not a number") from None


def _machine_cpus() -> int:
    """CPUs this process may use: its affinity mask, and a container's CPU
    quota where Ray can read one (cgroups)."""
    from aanbench.cpus import usable_cpus

    n = usable_cpus()
    try:
        from ray._private.utils import get_num_cpus  # cgroup-aware; a private helper of Ray

        n = min(n, int(get_num_cpus(override_docker_cpu_warning=True)) or n)
    except Exception:
        pass
    return max(1, n)


def connect(address: str | None = None, object_store_mb: int | None = None) -> bool:
    """Start a local Ray instance (no ``address``; lean start, see
    :func:`_lean_local_instance`; its object store ``object_store_mb``, default
    ``AANBENCH_RAY_OBJECT_STORE_MB``) or join the cluster at ``address``
    (``auto``, ``host:port``, ``ray://...``; probed first so a dead address
    fails fast). True when the caller started Ray here and must call
    ``ray.shutdown``; False when Ray was already initialised in this process.
    Shared by the extraction backend and :mod:`aanbench.backends.fits_ray`."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home (and no network here)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        RayBackend._probe(address)
    try:
        if address:
            with _package_cwd():
                ray.init(address=address, **kwargs)
        else:
            mb = int(object_store_mb or _env_number("AANBENCH_RAY_OBJECT_STORE_MB", DEFAULT_OBJECT_STORE_MB))
            with _lean_local_instance(), _package_cwd(), _quiet_token_notice():
                ray.init(address="local", num_cpus=_machine_cpus(), include_dashboard=False,
                         object_store_memory=max(80, mb) << 20, **kwargs)
        if not address:
            _watch_local_instance()
    except (ConnectionError, rex.RayError, ValueError, RuntimeError, OSError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        hint = ""
        if isinstance(exc, rex.AuthenticationError) or "auth" in str(exc).lower():
            hint = (" (Ray token authentication: the driver needs the cluster's token in ~/.ray/auth_token, "
                    "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN; see docs/ray.md)")
        raise AanbenchError(f"could not start or join {where}: {exc}{hint}") from None
    return True


# --------------------------------------------------------------------------
# The actor


class _Attached:
    """Loaded extractors bound to a run's job: what :func:`execute_unit` needs
    (``extractors`` and the store group the job names)."""

    def __init__(self, extractors: dict[str, Any], job: ExtractionJob) -> None:
        self.extractors = extractors
        self._job = job
        self._group = None

    def group(self):
        if self._group is None:
            self._group = FeatureStore(self._job.store_root).open_group(*self._job.group_path.split("/", 1))
        return self._group



class AanbenchUnitWorker:
    """One Ray actor: loads its extractors once and executes whole units.

    ``names`` are the extractors this actor computes (one pool's group);
    ``threads`` bounds torch/BLAS threads to the CPUs Ray gave the actor.
    """

    def __init__(self, job: ExtractionJob, names: Sequence[str], threads: int, device: str | None = None,
                 check_store: bool = True) -> None:
        t0 = time.perf_counter()
        self.threads = max(1, int(threads))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(self.threads)
        self.device = device
        if device is not None and device != job.device:
            job = replace(job, device=device)
        self.job = job
        if check_store:  # an actor started before the plan gets its job (and the check) in attach()
            self._check_store(job)
        self.loaded: Any = LoadedExtractors(job, list(names))
        self._set_torch_threads()
        self.init_s = time.perf_counter() - t0

    @staticmethod
    def _check_store(job: ExtractionJob) -> None:
        # The store must be the driver's (a shared filesystem on a cluster):
        # opening it read-only here fails clearly instead of creating a new one.
        try:
            FeatureStore(job.store_root, mode="r").open_group(*job.group_path.split("/", 1))
        except AanbenchError as exc:
            import socket

            raise AanbenchError(f"on node {socket.gethostname()}: {exc} (the store must be on a filesystem "
                                "that every Ray node mounts at the same path; see docs/ray.md)") from None

    def attach(self, job: ExtractionJob) -> dict[str, Any]:
        """Take the run's job (items, store, keys) after loading the extractors
        from a job template (:meth:`RayBackend.prepare`); returns :meth:`ready`."""
        if self.device is not None and self.device != job.device:
            job = replace(job, device=self.device)
        self._check_store(job)
        self.job = job
        self.loaded = _Attached(self.loaded.extractors, job)
        return self.ready()

    def _set_torch_threads(self) -> None:
        import sys

        torch = sys.modules.get("torch")  # only if an extractor brought it in: importing it costs seconds
        if torch is not None:
            torch.set_num_threads(self.threads)

    def ready(self) -> dict[str, Any]:
        """Who this actor is and what it loaded (checked by the driver)."""
        import socket

        from aanbench import __version__

        return {
            "pid": os.getpid(),
            "node": socket.gethostname(),
            "aanbench": __version__,
            "keys": {n: feature_key(ex) for n, ex in self.loaded.extractors.items()},
            "init_s": self.init_s,  # loading the extractors (imports included)
        }

    def run(self, unit: WorkUnit) -> tuple[UnitResult, float]:
        """Compute and write one unit; exceptions become ``UnitResult.error``.

        Returns the result and the CPU seconds this process spent on it (all
        threads), which against ``UnitResult.seconds`` shows CPU contention."""
        c0 = time.process_time()
        try:
            res = execute_unit(self.job, unit, self.loaded)
        except Exception as exc:
            res = UnitResult(unit=unit, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        self._set_torch_threads()  # an extractor may import torch lazily on first use
        return res, time.process_time() - c0


_RemoteWorker = ray.remote(max_restarts=0, max_task_retries=0)(AanbenchUnitWorker)


# --------------------------------------------------------------------------
# Driver-side bookkeeping


@dataclass
class _Slot:
    """One actor as the driver sees it."""

    pool: str
    handle: Any
    state: str = "starting"  # starting -> idle <-> busy; dead
    part: "_Part | None" = None
    info: dict[str, Any] = field(default_factory=dict)
    sent: float = 0.0  # perf_counter when the current unit was submitted


@dataclass
class _Part:
    """The share of one planner unit that one pool computes."""

    unit: WorkUnit  # the pool's extractors that are still to compute
    pool: str
    parent: "_Chunk"
    attempts: int = 0  # actors that died while holding it
    full: WorkUnit | None = None  # the pool's share as planned
    written: UnitResult | None = None  # arrays a lost worker had finished (read back from the store)


@dataclass
class _Chunk:
    unit: WorkUnit
    results: dict[str, UnitResult] = field(default_factory=dict)
    n_parts: int = 0


@dataclass
class _Pool:
    name: str
    extractors: tuple[str, ...]
    size: int
    cpus: float
    gpus: float
    threads: int
    device: str  # what the pool's extractors load on
    queue: deque = field(default_factory=deque)
    failed_starts: int = 0  # consecutive actor creations that failed
    started_any: bool = False
    starved_since: float | None = None  # work queued but no actor up since then


def _merge(chunk: _Chunk) -> UnitResult:
    """One UnitResult for a planner unit from its pool parts.

    When a part failed, the result's ``unit`` lists only the failed part's
    extractors, so ``run_plan`` marks only those arrays' rows as failed."""
    parts = list(chunk.results.values())
    if len(parts) == 1 and parts[0].unit == chunk.unit:
        return parts[0]
    ok: dict[str, int] = {}
    failures: list[ItemFailure] = []
    failed_names: list[str] = []
    errors: list[str] = []
    for r in parts:
        ok.update(r.ok)
        failures.extend(r.failures)
        if r.error:
            failed_names.extend(r.unit.extractors)
            errors.append(f"[{', '.join(r.unit.extractors)}] {r.error}")
    unit = chunk.unit
    if failed_names:
        unit = WorkUnit(unit.chunk, unit.start, unit.stop, tuple(n for n in unit.extractors if n in failed_names))
    return UnitResult(unit=unit, ok=ok, failures=failures, seconds=sum(r.seconds for r in parts),
                      decode_seconds=sum(r.decode_seconds for r in parts),
                      error="\n".join(errors) if errors else None)


def cluster_workers(resources: dict[str, float], cpus_per_worker: float | None = None,
                    neural: bool = False) -> int:
    """Actors per pool that a cluster with ``resources`` (``ray.cluster_resources()``)
    takes: one per CPU (``cpus_per_worker`` CPUs each when given), no more than
    its ``memory`` (what Ray offers tasks and actors) holds at
    :data:`aanbench.cpus.WORKER_MEMORY` each (``neural``: an extractor with
    weight files runs), at least 1."""
    from aanbench.cpus import WORKER_MEMORY

    per = float(cpus_per_worker) if cpus_per_worker else 1.0
    n = max(1, int(math.floor(float(resources.get("CPU", 0.0)) / per + 1e-9)))
    memory = float(resources.get("memory", 0.0))
    if memory > 0:
        n = min(n, max(1, int(memory // WORKER_MEMORY["neural" if neural else "weightfree"])))
    return n


class RayBackend:
    """Runs extraction units on Ray actors (see the module docstring).

    ``workers``: actors per pool (CPU pool, and GPU pool when a GPU extractor
    runs on ``cuda``; the GPU pool is capped by the cluster's GPUs); ``None``:
    as many as the cluster takes, one per CPU (``cpus_per_worker`` each when
    given) and one per GPU share, no more than the memory Ray offers actors
    holds (:data:`aanbench.cpus.WORKER_MEMORY` each), known once Ray is up
    (``resolved_workers``).
    ``address``: ``None`` starts a local instance; ``auto`` or ``host:port``
    joins a running cluster. ``gpus_per_worker``: GPUs each GPU actor asks
    for (fractions share a card; 0 means 1). ``cpus_per_worker``: CPUs each
    actor asks for (default: the cluster's CPUs divided among all actors,
    at most one node's). ``max_retries``: fresh actors a unit may get after
    the one holding it died.

    After :meth:`run`, ``stats`` holds what was measured (seconds since the
    start of :meth:`prepare` when it was called, else of ``run``, unless said
    otherwise): ``prepared`` (actors were started by :meth:`prepare`),
    ``run_called_s`` (when the plan was ready and ``run`` began; prepared
    runs only), ``actors_attached`` (prepared actors that ran the job),
    ``submit_s`` (actors requested), ``connect_s`` (``ray.init``),
    ``first_actor_ready_s`` / ``all_actors_ready_s``, ``actor_init_s`` (per
    actor, loading its extractors), ``run_s`` (last unit reported),
    ``shutdown_s``, ``wall_s``; totals over units: ``unit_seconds`` (wall
    inside the actors), ``unit_cpu_seconds`` (their CPU time),
    ``decode_seconds``, ``roundtrip_s`` (submit to result, so
    ``roundtrip_s - unit_seconds`` is Ray's overhead); counts: ``units``,
    ``actors_started``, ``actors_lost``, ``retries``; and ``pools``.
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = 1,
        address: str | None = None,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float | None = None,
        max_retries: int | None = None,
        start_timeout: float | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        self.workers = None if workers is None else max(1, int(workers))
        self.resolved_workers: int | None = self.workers  # the largest pool, once planned
        self.address = address or None
        self.gpus_per_worker = float(gpus_per_worker or 0.0)
        if self.gpus_per_worker < 0:
            raise AanbenchError(f"--gpus-per-worker must be >= 0, not {gpus_per_worker}")
        self.cpus_per_worker = cpus_per_worker
        self.max_retries = int(max_retries if max_retries is not None
                               else _env_number("AANBENCH_RAY_RETRIES", DEFAULT_RETRIES))
        self.start_timeout = float(start_timeout if start_timeout is not None
                                   else _env_number("AANBENCH_RAY_START_TIMEOUT", DEFAULT_START_TIMEOUT_S))
        self.runtime_env = dict(runtime_env or {})
        extra = os.environ.get("AANBENCH_RAY_RUNTIME_ENV", "").strip()
        if extra:
            try:
                self.runtime_env.update(json.loads(extra))
            except ValueError as exc:
                raise AanbenchError(f"AANBENCH_RAY_RUNTIME_ENV is not JSON: {exc}") from None
        # Measured by the last run (seconds unless named otherwise).
        self.stats: dict[str, Any] = {}
        self._prepared: _Prepared | None = None

    @property
    def label(self) -> str:
        """``ray`` with its workers per pool once known (the plan's line)."""
        n = self.resolved_workers
        return f"ray ({n} worker{'s' if n != 1 else ''} per pool)" if n else "ray"

    # ----------------------------------------------------------- Ray session
    def _connect(self) -> bool:
        """Start or join Ray; True when this run must call ``ray.shutdown``."""
        return connect(self.address)

    @staticmethod
    def _probe(address: str, timeout: float = 10.0) -> None:
        """Fail fast when nothing listens at the cluster address (``ray.init``
        would retry for minutes)."""
        import socket

        if address.startswith("ray://"):
            return
        try:
            from ray._private.services import canonicalize_bootstrap_address

            resolved = canonicalize_bootstrap_address(address)
        except ConnectionError as exc:
            raise AanbenchError(f"no Ray cluster found for --address {address}: {exc}") from None
        except Exception:  # a private helper of Ray: if it changed, let ray.init decide
            return
        if not resolved or ":" not in resolved:
            return
        host, _, port = resolved.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except (OSError, ValueError) as exc:
            raise AanbenchError(
                f"no Ray cluster answers at {resolved} (from --address {address}): {exc}; "
                "start one with `ray start --head` (see docs/ray.md)"
            ) from None

    # -------------------------------------------------------------- planning
    def _pools(self, job: ExtractionJob, units: Sequence[WorkUnit] | None) -> dict[str, _Pool]:
        from aanbench.plugin_manager import get_plugins

        plugins = get_plugins()
        on_cuda = str(job.device).startswith("cuda")
        group_of = {n: (GPU if on_cuda and plugins.extractor(n).uses_gpu else CPU) for n in job.extractors}
        wanted = {g: tuple(n for n in job.extractors if group_of[n] == g) for g in (GPU, CPU)}
        resources = ray.cluster_resources()
        share = self.gpus_per_worker or 1.0
        limit = self.workers
        if limit is None:  # as many as the cluster takes
            neural = any(getattr(plugins.extractor(n), "weights", ()) for n in job.extractors)
            limit = cluster_workers(resources, self.cpus_per_worker, neural)
        if units is None:  # not planned yet (prepare): as if every chunk needs every extractor
            n_parts = {g: (limit if wanted[g] else 0) for g in (GPU, CPU)}
        else:
            n_parts = {g: sum(1 for u in units if any(group_of[n] == g for n in u.extractors)) for g in (GPU, CPU)}
        sizes: dict[str, int] = {}
        if n_parts[GPU]:
            have = float(resources.get("GPU", 0.0))
            if have < share:
                raise AanbenchError(
                    f"extractors {', '.join(wanted[GPU])} run on {job.device}, each worker asking for {share:g} GPU, "
                    f"but the Ray cluster has {have:g} GPU; use --device cpu, or a cluster with GPUs"
                )
            sizes[GPU] = max(1, min(limit, n_parts[GPU], int(math.floor(have / share + 1e-9))))
        if n_parts[CPU]:
            sizes[CPU] = max(1, min(limit, n_parts[CPU]))
        if units is None:
            self.resolved_workers = max(sizes.values(), default=limit)
        total_cpus = float(resources.get("CPU", 0.0))
        if self.cpus_per_worker is not None:
            cpus = float(self.cpus_per_worker)
        else:
            node_cpus = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
            cpus = total_cpus / max(1, sum(sizes.values()))
            if node_cpus:
                cpus = min(cpus, max(node_cpus))
            cpus = math.floor(cpus * 100) / 100
        if cpus <= 0:
            raise AanbenchError(f"the Ray cluster offers {total_cpus:g} CPUs: no room for extraction workers")
        pools = {}
        for g, size in sizes.items():
            # Ray gives a GPU actor its own CUDA_VISIBLE_DEVICES: its card is
            # always "cuda" (index 0) there, whatever index --device named. CPU
            # actors load on the CPU even when the job names a cuda device.
            device = "cuda" if g == GPU else ("cpu" if on_cuda else job.device)
            pools[g] = _Pool(name=g, extractors=wanted[g], size=size, cpus=cpus,
                             gpus=share if g == GPU else 0.0, threads=max(1, int(cpus)), device=device)
        return pools

    # --------------------------------------------------------------- prepare
    def prepare(self, extractors: Sequence[Any], *, weights_dir: str | Path, device: str = "cpu",
                batch_size: int = 8, video_frames: int | None = None) -> None:
        """Start (or join) Ray and create the actors before the plan exists.

        Called by :func:`aanbench.extraction.extract_dataset` right after the
        extractors are chosen: ``ray.init`` runs, and the actors load their
        extractors in the background while the driver lists the items and
        plans. :meth:`run` then hands them the job (:meth:`AanbenchUnitWorker.attach`);
        if the plan's job does not match what they loaded, or it has nothing
        to do, they are dropped. Optional: :meth:`run` alone does everything.
        Call :meth:`close` if :meth:`run` will not be called."""
        self.close()
        from aanbench.extraction_job import apply_sampling, frames_for_dataset

        t0 = time.perf_counter()
        sampling = {ex.name: s for ex in extractors if (s := frames_for_dataset(ex, video_frames))}
        template = ExtractionJob(
            store_root="", group_path="", items=[], extractors=[ex.name for ex in extractors],
            keys={ex.name: feature_key(apply_sampling(ex, sampling.get(ex.name))) for ex in extractors},
            weights_dir=os.path.abspath(str(weights_dir)), device=device, batch_size=batch_size, sampling=sampling)
        owned = self._connect()
        prep = _Prepared(template=template, t0=t0, owned=owned, connect_s=time.perf_counter() - t0)
        self._prepared = prep
        try:
            prep.pools = self._pools(template, None)  # e.g. refuses GPU extractors on a cluster without GPUs
            template_ref = ray.put(template)
            for pool in prep.pools.values():
                for _ in range(pool.size):
                    handle = self._new_actor(pool, template_ref, check_store=False)
                    prep.slots[handle] = _Slot(pool.name, handle)
        except BaseException:
            self.close()
            raise
        prep.submit_s = time.perf_counter() - t0

    def close(self) -> None:
        """Drop actors made by :meth:`prepare` that no run used (and the local
        Ray instance it started)."""
        prep, self._prepared = getattr(self, "_prepared", None), None
        if prep is None:
            return
        for slot in prep.slots.values():
            with contextlib.suppress(Exception):
                ray.kill(slot.handle, no_restart=True)
        if prep.owned and ray.is_initialized():
            shutdown()

    def _new_actor(self, pool: "_Pool", job_ref: Any, check_store: bool = True) -> Any:
        opts: dict[str, Any] = {"num_cpus": pool.cpus}
        if self.runtime_env:
            opts["runtime_env"] = self.runtime_env
        if pool.gpus:
            opts["num_gpus"] = pool.gpus
        return _RemoteWorker.options(**opts).remote(job_ref, pool.extractors, pool.threads, pool.device,
                                                    check_store)

    # ------------------------------------------------------------------- run
    def run(self, job: ExtractionJob, units: Sequence[WorkUnit], on_result: Callable[[UnitResult], None]) -> None:
        """Execute ``units`` on actors; ``on_result`` is called in this process
        once per unit, in completion order."""
        self.stats = {"units": 0, "unit_seconds": 0.0, "decode_seconds": 0.0, "retries": 0, "actors_lost": 0,
                      "actors_started": 0, "actors_attached": 0, "roundtrip_s": 0.0, "unit_cpu_seconds": 0.0}
        prep, self._prepared = getattr(self, "_prepared", None), None
        if not units:
            if prep is not None:
                self._prepared = prep
                self.close()
            return
        if prep is not None:
            t0, owned = prep.t0, prep.owned
            self.stats.update(connect_s=prep.connect_s, prepared=True, run_called_s=time.perf_counter() - t0)
            slots: dict[Any, _Slot] = prep.slots
        else:
            t0 = time.perf_counter()
            owned = self._connect()
            self.stats["connect_s"] = time.perf_counter() - t0
            slots = {}
        try:
            self._run(job, units, on_result, slots, t0, prep)
        finally:
            for slot in slots.values():
                if slot.state != "dead":
                    try:
                        ray.kill(slot.handle, no_restart=True)
                    except Exception:  # already gone
                        pass
            t1 = time.perf_counter()
            if owned:
                shutdown()
            self.stats["shutdown_s"] = time.perf_counter() - t1
            self.stats["wall_s"] = time.perf_counter() - t0

    def _run(self, job: ExtractionJob, units: Sequence[WorkUnit], on_result: Callable[[UnitResult], None],
             slots: dict[Any, _Slot], t0: float, prep: "_Prepared | None" = None) -> None:
        job = _absolute(job)
        self._job = job
        pools = self._pools(job, units)
        if prep is not None and not _fits(prep, job, pools):
            log.info("the plan differs from what the Ray workers loaded; starting fresh ones")
            for slot in slots.values():
                with contextlib.suppress(Exception):
                    ray.kill(slot.handle, no_restart=True)
            slots.clear()
            prep = None
        if prep is not None:  # the prepared actors' resources, so replacements match them
            for g, pool in pools.items():
                pool.cpus, pool.threads = prep.pools[g].cpus, prep.pools[g].threads
        self.stats["pools"] = {g: {"actors": p.size, "cpus": p.cpus, "gpus": p.gpus, "threads": p.threads,
                                   "device": p.device, "extractors": list(p.extractors)} for g, p in pools.items()}
        for u in units:
            chunk = _Chunk(u)
            for g, pool in pools.items():
                names = tuple(n for n in u.extractors if n in pool.extractors)
                if names:
                    share = WorkUnit(u.chunk, u.start, u.stop, names)
                    pool.queue.append(_Part(share, g, chunk, full=share))
                    chunk.n_parts += 1
        job_ref = ray.put(job)
        pending: dict[Any, tuple[str, _Slot]] = {}  # ObjectRef -> ("ready" | "run", slot)

        def start_actor(pool: _Pool) -> None:
            handle = self._new_actor(pool, job_ref)
            slot = _Slot(pool.name, handle)
            slots[handle] = slot
            pending[handle.ready.remote()] = ("ready", slot)
            self.stats["actors_started"] += 1

        def live(pool: _Pool) -> list[_Slot]:
            return [s for s in slots.values() if s.pool == pool.name and s.state != "dead"]

        def finish_part(part: _Part, res: UnitResult) -> None:
            if part.written is not None:  # arrays finished by a worker that died before reporting
                w = part.written
                res = UnitResult(unit=res.unit if res.error else (part.full or res.unit), ok={**w.ok, **res.ok},
                                 failures=[*w.failures, *res.failures], seconds=res.seconds,
                                 decode_seconds=res.decode_seconds, error=res.error)
            chunk = part.parent
            chunk.results[part.pool] = res
            self.stats["unit_seconds"] += res.seconds
            self.stats["decode_seconds"] += res.decode_seconds
            if len(chunk.results) == chunk.n_parts:
                self.stats["units"] += 1
                on_result(_merge(chunk))

        def fail_queue(pool: _Pool, reason: str) -> None:
            while pool.queue:
                part = pool.queue.popleft()
                finish_part(part, UnitResult(unit=part.unit, error=reason))

        def dispatch() -> None:
            for slot in slots.values():
                pool = pools[slot.pool]
                if slot.state == "idle" and pool.queue:
                    part = pool.queue.popleft()
                    slot.state, slot.part, slot.sent = "busy", part, time.perf_counter()
                    pending[slot.handle.run.remote(part.unit)] = ("run", slot)

        if prep is not None:
            for pool in pools.values():
                mine = [s for s in slots.values() if s.pool == pool.name]
                for slot in mine[pool.size:]:  # fewer chunks than prepared actors
                    slot.state = "dead"
                    with contextlib.suppress(Exception):
                        ray.kill(slot.handle, no_restart=True)
                for slot in mine[: pool.size]:
                    pending[slot.handle.attach.remote(job_ref)] = ("ready", slot)
                    self.stats["actors_started"] += 1
                    self.stats["actors_attached"] = self.stats.get("actors_attached", 0) + 1
                for _ in range(pool.size - len(mine)):
                    start_actor(pool)
            self.stats["submit_s"] = prep.submit_s
        else:
            for pool in pools.values():
                for _ in range(pool.size):
                    start_actor(pool)
            self.stats["submit_s"] = time.perf_counter() - t0

        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            self._check_starved(pools, live, fail_queue)
            if not done:
                if not any(p.queue for p in pools.values()) and all(s.state != "busy" for s in slots.values()):
                    break  # only actors that never came up are left
                continue
            ref = done[0]
            kind, slot = pending.pop(ref)
            pool = pools[slot.pool]
            try:
                value = ray.get(ref)
            except rex.RayTaskError as exc:
                if kind == "run":
                    # run() catches Exception, so this is a BaseException raised in
                    # the unit (SystemExit, KeyboardInterrupt): fail it, keep the actor.
                    part, slot.part, slot.state = slot.part, None, "idle"
                    assert part is not None
                    finish_part(part, UnitResult(unit=part.unit, error=f"{type(exc).__name__}: {exc}"[:2000]))
                else:
                    self._lose(slot, exc, pool, fail_queue, finish_part, start_actor, live)
                dispatch()
                continue
            except rex.RayError as exc:  # the actor died, or could not be created
                self._lose(slot, exc, pool, fail_queue, finish_part, start_actor, live)
                dispatch()
                continue
            if kind == "ready":
                self._check_ready(job, slot, value)
                slot.state, slot.info = "idle", value
                pool.started_any, pool.failed_starts = True, 0
                self.stats.setdefault("first_actor_ready_s", time.perf_counter() - t0)
                self.stats.setdefault("actor_init_s", []).append(round(float(value.get("init_s", 0.0)), 3))
                self.stats["all_actors_ready_s"] = time.perf_counter() - t0
            else:
                part, slot.part, slot.state = slot.part, None, "idle"
                assert part is not None
                self.stats["roundtrip_s"] += time.perf_counter() - slot.sent
                res, cpu_s = value
                self.stats["unit_cpu_seconds"] += cpu_s
                finish_part(part, res)
            dispatch()
            if not any(p.queue for p in pools.values()) and all(s.state != "busy" for s in slots.values()):
                break
        for pool in pools.values():  # defensive: nothing may be left unreported
            fail_queue(pool, "no Ray worker was left to compute this chunk")
        self.stats["run_s"] = time.perf_counter() - t0

    def _check_starved(self, pools: dict[str, _Pool], live, fail_queue) -> None:
        """A pool with queued work and no actor up for ``start_timeout`` seconds
        (the cluster has no room for it, or a node went away) stops waiting."""
        now = time.perf_counter()
        for pool in pools.values():
            if not pool.queue or any(s.state in ("idle", "busy") for s in live(pool)):
                pool.starved_since = None
                continue
            if pool.starved_since is None:
                pool.starved_since = now
                continue
            if now - pool.starved_since <= self.start_timeout:
                continue
            have = ray.cluster_resources()
            msg = (f"no Ray worker for {', '.join(pool.extractors)} could start within {self.start_timeout:g} s "
                   f"(each asks for {pool.cpus:g} CPU, {pool.gpus:g} GPU; the cluster has {have.get('CPU', 0):g} CPU, "
                   f"{have.get('GPU', 0):g} GPU); lower --workers or --gpus-per-worker, or add nodes")
            if not pool.started_any:
                raise AanbenchError(msg)
            log.warning("%s; the remaining chunks are recorded as failed", msg)
            fail_queue(pool, msg)

    def _lose(self, slot: _Slot, exc: BaseException, pool: _Pool, fail_queue, finish_part, start_actor, live) -> None:
        """An actor is gone (or never came up): retry or fail its unit, replace it."""
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        was_starting = slot.state == "starting"
        slot.state = "dead"
        self.stats["actors_lost"] += 1
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:
            pass
        if was_starting:
            pool.failed_starts += 1
            detail = _creation_error(exc)
            if not pool.started_any and pool.failed_starts >= pool.size:
                # Not one worker of this pool could load its extractors: a
                # configuration error, raised as the local backend would.
                raise AanbenchError(f"Ray workers for {', '.join(pool.extractors)} failed to start: {detail}")
            log.warning("a Ray worker for %s failed to start: %s", ", ".join(pool.extractors), detail)
            reason = detail
        part, slot.part = slot.part, None
        if part is not None:
            # The worker may have died after writing some (or all) of the
            # chunk's arrays: keep those as written, never compute them again.
            back = self._read_back(part.unit)
            if back is not None and back.ok:
                if part.written is not None:
                    back = UnitResult(unit=back.unit, ok={**part.written.ok, **back.ok},
                                      failures=[*part.written.failures, *back.failures])
                part.written = back
                rest = tuple(n for n in part.unit.extractors if n not in back.ok)
                log.warning("chunk %d: worker pid %s lost after writing %s; kept as written", part.unit.chunk,
                            slot.info.get("pid", "?"), ", ".join(back.ok))
                if not rest:
                    finish_part(part, UnitResult(unit=part.unit))
                    part = None
                else:
                    part.unit = WorkUnit(part.unit.chunk, part.unit.start, part.unit.stop, rest)
        if part is not None:
            part.attempts += 1
            if part.attempts > self.max_retries:
                log.warning("chunk %d (%s): worker lost %d times, giving up: %s", part.unit.chunk,
                            ", ".join(part.unit.extractors), part.attempts, reason)
                finish_part(part, UnitResult(
                    unit=part.unit,
                    error=f"Ray worker lost {part.attempts} times while computing this chunk "
                          f"({type(exc).__name__}: {reason})",
                ))
            else:
                self.stats["retries"] += 1
                log.warning("chunk %d (%s): worker pid %s lost (%s); retrying on a new worker (%d/%d)",
                            part.unit.chunk, ", ".join(part.unit.extractors), slot.info.get("pid", "?"),
                            type(exc).__name__, part.attempts, self.max_retries)
                pool.queue.appendleft(part)
        if pool.queue and len(live(pool)) < pool.size:
            if pool.failed_starts <= self.max_retries:
                start_actor(pool)
            elif not live(pool):
                fail_queue(pool, f"Ray workers for {', '.join(pool.extractors)} keep failing to start: {reason}")

    def _read_back(self, unit: WorkUnit) -> UnitResult | None:
        """What the store holds for ``unit``'s arrays whose done marker is set
        (``ok`` lists those arrays); None if the driver cannot read the store."""
        job = self._job
        try:
            group = FeatureStore(job.store_root).open_group(*job.group_path.split("/", 1))
            rows = slice(unit.start, unit.stop)
            res = UnitResult(unit=unit)
            for n in unit.extractors:
                arr = group.feature(job.keys[n])
                if not bool(arr.done()[unit.chunk]):  # staged chunks included
                    continue
                ok = arr.ok()[rows]
                errors = arr.errors()[rows]
                res.ok[n] = int(ok.sum())
                for i in np.flatnonzero(~ok):
                    res.failures.append(ItemFailure(job.items[unit.start + int(i)].id, n, str(errors[i])))
            return res
        except Exception as exc:  # e.g. a store the driver cannot see: retrying is still correct
            log.warning("cannot read back chunk %d from the store (%s); recomputing it", unit.chunk, exc)
            return None

    @staticmethod
    def _check_ready(job: ExtractionJob, slot: _Slot, info: dict[str, Any]) -> None:
        from aanbench import __version__

        if info.get("aanbench") != __version__:
            raise AanbenchError(
                f"the Ray worker on {info.get('node')} runs aanbench {info.get('aanbench')}, "
                f"the driver {__version__}: install the same version on every node"
            )
        for name, key in info.get("keys", {}).items():
            if job.keys.get(name) != key:
                raise AanbenchError(
                    f"the Ray worker on {info.get('node')} has extractor {key}, the driver planned "
                    f"{job.keys.get(name)}: install the same plugins on every node"
                )


@dataclass
class _Prepared:
    """Ray session and actors started by :meth:`RayBackend.prepare`."""

    template: ExtractionJob
    t0: float
    owned: bool
    connect_s: float
    pools: dict[str, _Pool] = field(default_factory=dict)
    slots: dict[Any, _Slot] = field(default_factory=dict)
    submit_s: float = 0.0


def _fits(prep: _Prepared, job: ExtractionJob, pools: dict[str, _Pool]) -> bool:
    """Whether the prepared actors loaded what ``job`` needs, split as ``pools`` wants."""
    t = prep.template
    if (t.keys != job.keys or sorted(t.extractors) != sorted(job.extractors) or t.sampling != job.sampling
            or t.device != job.device or t.batch_size != job.batch_size
            or t.weights_dir != os.path.abspath(job.weights_dir)):
        return False
    for g, pool in pools.items():
        have = prep.pools.get(g)
        if have is None or have.gpus != pool.gpus or have.device != pool.device:
            return False
        if not set(pool.extractors) <= set(have.extractors):
            return False
    return True


def shutdown() -> None:
    """``ray.shutdown`` of the instance :func:`connect` started, then the end
    of its watchdog (which removes any of its processes still there)."""
    try:
        ray.shutdown()
    finally:
        _release_watchdog()


# The watchdog of a local instance (see _watch_local_instance): a separate
# process reading a pipe from this driver; at end of file (the driver closed
# it, or died, even by SIGKILL) it ends every process of the instance still
# alive. Standard library only, run with ``python -I`` (no working directory
# on sys.path). argv: the instance's own processes (gcs, raylet, ...); their
# descendants (agents, workers) are noted every 2 s with their start times
# (a reused pid is never signalled).
_WATCHDOG = r"""
import os, select, signal, sys, time
roots = {int(a) for a in sys.argv[1:]}
seen = {}
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[1]), rest[19]
    except (OSError, IndexError, ValueError):
        return None
def note():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = stat(int(d))
            if st:
                kids.setdefault(st[0], []).append((int(d), st[1]))
    todo = [p for p in roots]
    for p in roots:
        st = stat(p)
        if st and p not in seen:
            seen[p] = st[1]
    while todo:
        for c, start in kids.get(todo.pop(), []):
            if c not in seen and c != os.getpid():
                seen[c] = start
                todo.append(c)
def alive():
    return [p for p, start in seen.items() if (st := stat(p)) and st[1] == start]
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    note()
    r, _, _ = select.select([sys.stdin], [], [], 2.0)
    if r and not os.read(sys.stdin.fileno(), 4096):
        break
for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
    pids = alive()
    for p in pids:
        try:
            os.kill(p, sig)
        except OSError:
            pass
    end = time.monotonic() + wait
    while alive() and time.monotonic() < end:
        time.sleep(0.1)
"""

_watchdog: Any = None


def _watch_local_instance() -> None:
    """Start the watchdog of the local instance this driver just started, so
    that its processes never outlive the driver (killed or not): Ray's
    agents otherwise stay about a minute after a SIGKILLed driver.
    Nothing when Ray's process table is not where this Ray version keeps it,
    or ``AANBENCH_RAY_WATCHDOG=0``."""
    import subprocess
    import sys

    global _watchdog
    if os.environ.get("AANBENCH_RAY_WATCHDOG", "").strip() == "0" or not os.path.isdir("/proc"):
        return
    _release_watchdog()
    try:
        from ray._private import worker as _worker

        node = _worker._global_node
        roots = [info.process.pid for infos in node.all_processes.values() for info in infos
                 if getattr(info, "process", None) is not None]
    except Exception:  # a private table of Ray: if it moved, Ray's own cleanup only
        return
    if not roots:
        return
    _watchdog = subprocess.Popen([sys.executable, "-I", "-c", _WATCHDOG, *map(str, roots)], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                 close_fds=True)


def _release_watchdog() -> None:
    """Close the watchdog's pipe (it then ends what is left of the instance
    and exits) and wait for it."""
    global _watchdog
    w, _watchdog = _watchdog, None
    if w is None:
        return
    with contextlib.suppress(Exception):
        w.stdin.close()
    try:
        w.wait(timeout=10)
    except Exception:  # pragma: no cover - it always ends within 4 s of end of file
        with contextlib.suppress(Exception):
            w.kill()


@contextlib.contextmanager
def _package_cwd():
    """Run ``ray.init`` from the folder that holds the ``aanbench`` package
    this driver imported. ``ray.init`` puts the driver's working directory
    at the front of every worker's ``sys.path`` (and a local instance's
    workers start in it): from a folder that holds a directory named
    ``aanbench`` (a checkout's parent, a data folder) the workers imported
    that instead (``ImportError ... (unknown location)``). From the
    package's own folder they import the driver's code. Paths handed to
    workers are absolute (:func:`_absolute`), so their working directory
    is not used otherwise. The driver's directory is restored at once."""
    import aanbench

    home = Path(aanbench.__file__).resolve().parent.parent
    try:
        old = os.getcwd()
        os.chdir(home)
    except OSError:  # pragma: no cover - an unreadable install folder: Ray as usual
        yield
        return
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _quiet_token_notice():
    """Ray's timestamped WARNING that it turned token authentication on for a
    new local instance (its default, which aanbench keeps: docs/ray.md) is
    left out of the output; any other message of that logger still shows."""
    class _NotTheNotice(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Token authentication is enabled" not in record.getMessage()

    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    quiet = _NotTheNotice()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


@contextlib.contextmanager
def _lean_local_instance():
    """``ray.init`` of a local instance without two head processes it does not
    need: the autoscaler's monitor (a fixed one-node instance has nothing to
    scale; it also waits out a one-second grace period at ``ray.shutdown``)
    and the dashboard's API server (``include_dashboard=False`` still starts
    it, and ``ray.init`` waits for it; without it Ray runs as when the
    dashboard's dependencies are missing). Measured on this 2-core machine:
    about 1 s less start-up and 1 s less shutdown. Uses private hooks of Ray
    (``Node.start_monitor``, ``Node.start_api_server``); if they are not
    there, or ``AANBENCH_RAY_FULL_START=1``, Ray starts as usual."""
    try:
        from ray._private.node import Node
    except Exception:  # pragma: no cover - Ray moved it
        yield
        return
    names = [n for n in ("start_monitor", "start_api_server") if callable(getattr(Node, n, None))]
    if os.environ.get("AANBENCH_RAY_FULL_START", "").strip() == "1":
        names = []
    saved = {n: getattr(Node, n) for n in names}
    for n in names:
        setattr(Node, n, lambda self, *a, **k: None)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(Node, n, f)


def _absolute(job: ExtractionJob) -> ExtractionJob:
    """The job with the store, weights folder and media paths made absolute
    (against the driver's working directory), as workers elsewhere need them."""
    items = [it if it.path is None or Path(it.path).is_absolute() else replace(it, path=Path(it.path).absolute())
             for it in job.items]
    return replace(job, store_root=os.path.abspath(job.store_root), weights_dir=os.path.abspath(job.weights_dir),
                   items=items)


def _creation_error(exc: BaseException) -> str:
    """The useful line of an actor-creation failure (the user's exception)."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ":" in ln and not ln.startswith(("File ", "^", "ray::")):
            head, _, rest = ln.partition(": ")
            if head.endswith("AanbenchError"):  # our own message says it all
                return rest[:500]
            return ln[:500]
    return (lines[0] if lines else type(exc).__name__)[:500]


