"""``aanbench extract --backend ray`` on a real local Ray instance (no mocks).

A module fixture generates a 16-clip demo dataset (real H.264/AAC files)
and extracts it with the local backend as the reference store. The Ray runs
go through the CLI and must give the same store value for value (the
weight-free extractors are deterministic). Two tests kill a busy Ray
worker process (SIGKILL) once the first chunk is done: with retries the run
completes; with retries off the chunk is recorded as failed (not done) and a
rerun completes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from aanbench.backends.ray import ACTOR_CLASS_NAME, RayBackend, _Chunk, _merge, cluster_workers  # noqa: E402
from aanbench.cli import app  # noqa: E402
from aanbench.contracts import AanbenchError, Item  # noqa: E402
from aanbench.extraction import ExtractionJob, UnitResult, WorkUnit  # noqa: E402
from aanbench.store import FeatureStore  # noqa: E402

pytestmark = pytest.mark.ray

EXTRACTORS = "affect,logmel"
N_CLIPS = 16
CHUNK_ROWS = 2  # 8 chunks: work is left when the first one is done


def _extract(root: Path, store: Path, *extra: str):
    args = ["extract", "demo", "--root", str(root), "--store", str(store), "--extractors", EXTRACTORS,
            "--chunk-rows", str(CHUNK_ROWS), *extra]
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _arrays(store: Path) -> dict[str, dict[str, object]]:
    g = FeatureStore(store, mode="r").open_group("demo")
    out = {}
    for key in g.feature_keys():
        a = g.feature(key)
        out[key] = {"data": a.read(), "ok": a.ok(), "error": [str(e) for e in a.errors()], "done": a.done()}
    return out


def _assert_same_store(got: Path, want: Path) -> None:
    a, b = _arrays(got), _arrays(want)
    assert sorted(a) == sorted(b) == ["affect@2", "logmel@1"]
    for key in b:
        assert a[key]["data"].shape == b[key]["data"].shape
        assert np.isfinite(a[key]["data"]).all(), key
        assert np.array_equal(a[key]["data"], b[key]["data"]), f"{key}: values differ from the local backend"
        assert a[key]["ok"].all() and b[key]["ok"].all()
        assert a[key]["error"] == b[key]["error"]
        assert a[key]["done"].all() and b[key]["done"].all()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    """The demo dataset and the local backend's store of it."""
    from aanbench_plugins.datasets.demo import make_demo

    base = tmp_path_factory.mktemp("ray")
    root = make_demo(base / "demo", seed=3, clips=N_CLIPS)
    ref = base / "local-store"
    res = _extract(root, ref, "--backend", "local")
    assert res.exit_code == 0, res.output
    return {"root": root, "ref": ref, "base": base}


# ------------------------------------------------------------------ helpers


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _busy_workers() -> list[int]:
    """PIDs of our Ray actors (descendants of this process) inside ``run``."""
    kids = _children()
    todo, found = [os.getpid()], []
    while todo:
        pid = todo.pop()
        for c in kids.get(pid, []):
            todo.append(c)
            try:
                with open(f"/proc/{c}/cmdline", "rb") as f:
                    title = f.read().split(b"\0", 1)[0]
            except OSError:
                continue
            if title == f"ray::{ACTOR_CLASS_NAME}.run".encode():
                found.append(c)
    return found


class _Killer(threading.Thread):
    """SIGKILL the busy worker shortly after the first chunk is complete.

    With one worker, the first chunk's last done marker (logmel is written
    last) means the worker has moved on to the next chunk; 50 ms later it is
    well inside it (a chunk of two clips takes a few hundred ms)."""

    def __init__(self, store: Path) -> None:
        super().__init__(daemon=True)
        self.done_dir = store / "demo" / "default" / "features" / "logmel@1" / "staging" / "done"
        self.killed: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.done_dir.is_dir() and any(p.name.startswith("c.") for p in self.done_dir.iterdir()):
                time.sleep(0.05)
                busy = _busy_workers()
                if busy:
                    os.kill(busy[0], signal.SIGKILL)
                    self.killed = busy[0]
                    return
            time.sleep(0.01)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the tests that need the worker processes."""
    assert not ray.is_initialized()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # num_gpus=1 declares a logical GPU (Ray does not check there is one): the
    # pool planning test uses it; the extraction tests never ask for it.
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=256 << 20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# -------------------------------------------------------------------- tests


def test_default_workers_are_what_the_cluster_takes_in_cpus_and_memory() -> None:
    """Without --workers: one actor per CPU, as many as the memory Ray
    offers actors holds (600 MiB each weight-free, 3 GiB with a neural
    extractor), at least one."""
    gib = float(1 << 30)
    assert cluster_workers({"CPU": 16.0, "memory": 64 * gib}) == 16
    assert cluster_workers({"CPU": 16.0, "memory": 64 * gib}, neural=True) == 16  # 21 would fit
    assert cluster_workers({"CPU": 16.0, "memory": 16 * gib}, neural=True) == 5  # 16 GiB // 3 GiB
    assert cluster_workers({"CPU": 16.0, "memory": 3 * gib}) == 5  # 3 GiB // 600 MiB
    assert cluster_workers({"CPU": 16.0, "memory": 64 * gib}, cpus_per_worker=4) == 4
    assert cluster_workers({"CPU": 2.0}) == 2  # no memory figure: the CPUs alone
    assert cluster_workers({"CPU": 0.5, "memory": 1.0}) == 1


@pytest.mark.slow
def test_cli_ray_starts_a_local_instance_and_matches_local_backend(demo, tmp_path) -> None:
    assert not ray.is_initialized(), "this test must start its own instance"
    store = tmp_path / "ray-store"
    res = _extract(demo["root"], store, "--backend", "ray")  # no --workers: one actor per CPU of the instance
    assert res.exit_code == 0, res.output
    from aanbench.backends.ray import _machine_cpus

    n = _machine_cpus()
    assert f"backend ray ({n} worker{'s' if n != 1 else ''} per pool)" in res.output, res.output
    assert not ray.is_initialized(), "the instance the run started must be shut down"
    _assert_same_store(store, demo["ref"])
    # a rerun finds everything done and computes nothing
    again = _extract(demo["root"], store, "--backend", "ray", "--workers", "2")
    assert again.exit_code == 0, again.output
    assert "0 chunks to compute" in again.output
    _assert_same_store(store, demo["ref"])


@pytest.mark.slow
def test_a_plan_that_fails_after_prepare_leaves_no_ray_running(demo, tmp_path) -> None:
    """extract_dataset starts Ray before planning; a plan that fails must shut it down."""
    from aanbench.extraction import extract_dataset
    from aanbench.plugin_manager import get_plugins

    assert not ray.is_initialized()
    not_a_store = tmp_path / "occupied"
    not_a_store.mkdir()
    (not_a_store / "notes.txt").write_text("not a feature store")
    with pytest.raises(AanbenchError, match="not a feature store"):
        extract_dataset(get_plugins().dataset("demo"), demo["root"], not_a_store, ["affect"], backend="ray",
                        workers=1, chunk_rows=CHUNK_ROWS)
    assert not ray.is_initialized(), "the instance prepare() started must be shut down"


def test_prepare_refusing_gpu_extractors_leaves_no_ray_running(tmp_path) -> None:
    from aanbench.plugin_manager import get_plugins

    assert not ray.is_initialized()
    backend = RayBackend(workers=1)
    with pytest.raises(AanbenchError, match="run on cuda.*the Ray cluster has 0 GPU"):
        backend.prepare([get_plugins().extractor("resnet50")], weights_dir=str(tmp_path), device="cuda")
    assert not ray.is_initialized(), "the instance prepare() started must be shut down"


def _plan_demo(demo, store: Path, names: list[str]):
    from aanbench.extraction import plan_extraction
    from aanbench.plugin_manager import get_plugins
    from aanbench.weights import weights_dir

    plugins = get_plugins()
    ds = plugins.dataset("demo")
    exs = [plugins.extractor(n) for n in names]
    plan = plan_extraction(FeatureStore(store), ds.name, ds.items(demo["root"]), exs, {},
                           segmentation=ds.segmentation, chunk_rows=CHUNK_ROWS, weights_dir=str(weights_dir(None)),
                           targets=ds.targets, dataset_version=ds.version, dataset_config=ds.config(),
                           plugin_versions={e.name: plugins.version_of("extractor", e.name) for e in exs},
                           video_frames=getattr(ds, "video_frames", None))
    return plan, exs


@pytest.mark.parametrize("prepared_names", [EXTRACTORS.split(","), ["affect"]], ids=["same", "other"])
def test_prepared_actors_take_the_planned_job(demo, ray_session, tmp_path, prepared_names) -> None:
    """Actors created before the plan (loading while the driver plans) run it
    when they loaded what it needs; otherwise fresh ones do. Same store either way."""
    from aanbench.extraction import run_plan
    from aanbench.plugin_manager import get_plugins
    from aanbench.weights import weights_dir

    store = tmp_path / "prepared"
    backend = RayBackend(workers=2)
    plugins = get_plugins()
    backend.prepare([plugins.extractor(n) for n in prepared_names], weights_dir=str(weights_dir(None)))
    plan, _ = _plan_demo(demo, store, EXTRACTORS.split(","))
    report = run_plan(plan, backend)
    assert report.units_failed == 0 and not report.failures
    assert backend.stats["prepared"] is True and backend.stats["actors_lost"] == 0
    # same: the two prepared actors were attached; other: they were dropped and two new ones started
    assert backend.stats["actors_started"] == 2
    assert backend.stats["actors_attached"] == (2 if prepared_names == EXTRACTORS.split(",") else 0)
    assert len(backend.stats["actor_init_s"]) == 2
    _assert_same_store(store, demo["ref"])
    assert ray.is_initialized()  # joined, not owned: left running


def test_killed_worker_has_its_chunk_retried(demo, ray_session, tmp_path, caplog) -> None:
    store = tmp_path / "killed"
    killer = _Killer(store)
    killer.start()
    with caplog.at_level("WARNING", logger="aanbench.backends.ray"):
        res = _extract(demo["root"], store, "--backend", "ray", "--workers", "1")
    killer.stop.set()
    killer.join()
    assert killer.killed is not None, "no busy worker was found to kill"
    assert res.exit_code == 0, res.output
    assert any("retrying on a new worker" in r.getMessage() for r in caplog.records), caplog.text
    _assert_same_store(store, demo["ref"])
    assert ray.is_initialized(), "a session the run did not start must be left running"


@pytest.mark.slow
def test_chunk_failing_past_retries_is_recorded_and_a_rerun_completes(demo, ray_session, tmp_path,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("AANBENCH_RAY_RETRIES", "0")
    store = tmp_path / "failed"
    killer = _Killer(store)
    killer.start()
    res = _extract(demo["root"], store, "--backend", "ray", "--workers", "1")
    killer.stop.set()
    killer.join()
    assert killer.killed is not None
    assert res.exit_code == 1, res.output
    assert "chunks that failed" in res.output
    arrays = _arrays(store)
    for key in ("affect@2", "logmel@1"):
        done = arrays[key]["done"]
        assert done.sum() == len(done) - 1, f"{key}: exactly the killed chunk must be not done ({done})"
        bad = int(np.flatnonzero(~done)[0])
        rows = slice(bad * CHUNK_ROWS, (bad + 1) * CHUNK_ROWS)
        assert not arrays[key]["ok"][rows].any()
        assert all("Ray worker lost 1 times" in e for e in arrays[key]["error"][rows.start:rows.stop])
        others = np.ones(len(arrays[key]["ok"]), bool)
        others[rows] = False
        assert arrays[key]["ok"][others].all()
    before = _arrays(store)
    monkeypatch.delenv("AANBENCH_RAY_RETRIES")
    again = _extract(demo["root"], store, "--backend", "ray", "--workers", "2")
    assert again.exit_code == 0, again.output
    assert "1 chunks to compute" in again.output
    _assert_same_store(store, demo["ref"])
    after = _arrays(store)
    for key in before:  # chunks done in the first run were not rewritten with other values
        keep = np.repeat(before[key]["done"], CHUNK_ROWS)[: len(before[key]["ok"])]
        assert np.array_equal(after[key]["data"][keep], before[key]["data"][keep])


@pytest.mark.slow
def test_joins_a_running_cluster_by_address_and_leaves_it_running(demo, ray_session, tmp_path) -> None:
    store = tmp_path / "joined"
    # a fresh process: a driver of its own, which joins this test's cluster and leaves it
    cmd = [sys.executable, "-m", "aanbench", "extract", "demo", "--root", str(demo["root"]), "--store", str(store),
           "--extractors", EXTRACTORS, "--chunk-rows", str(CHUNK_ROWS), "--backend", "ray", "--workers", "2",
           "--address", ray_session]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_same_store(store, demo["ref"])

    @ray.remote
    def ping() -> int:
        return 7

    assert ray.get(ping.remote(), timeout=60) == 7  # the cluster still serves after the driver left


def _mixed_job(tmp_path: Path, device: str) -> ExtractionJob:
    return ExtractionJob(store_root=str(tmp_path / "s"), group_path="demo/default",
                         items=[Item(str(i), None) for i in range(8)], extractors=["resnet50", "affect", "logmel"],
                         keys={"resnet50": "resnet50@1", "affect": "affect@2", "logmel": "logmel@1"},
                         weights_dir=str(tmp_path), device=device)


def test_gpu_extractors_get_a_gpu_pool_and_cpu_extractors_hold_no_gpu(ray_session, tmp_path) -> None:
    units = [WorkUnit(c, 2 * c, 2 * c + 2, ("resnet50", "affect", "logmel")) for c in range(4)]
    pools = RayBackend(workers=2)._pools(_mixed_job(tmp_path, "cuda:1"), units)
    assert set(pools) == {"gpu", "cpu"}
    gpu, cpu = pools["gpu"], pools["cpu"]
    assert gpu.extractors == ("resnet50",) and cpu.extractors == ("affect", "logmel")
    assert gpu.gpus == 1.0 and cpu.gpus == 0.0
    assert gpu.size == 1  # capped by the one GPU of the instance; --workers 2 asked for more
    assert cpu.size == 2
    assert gpu.device == "cuda" and cpu.device == "cpu"  # Ray's CUDA_VISIBLE_DEVICES makes the card index 0
    assert gpu.cpus == cpu.cpus == pytest.approx(2 / 3, abs=0.01)  # 2 CPUs over 3 actors
    half = RayBackend(workers=2, gpus_per_worker=0.5)._pools(_mixed_job(tmp_path, "cuda"), units)
    assert half["gpu"].size == 2 and half["gpu"].gpus == 0.5
    on_cpu = RayBackend(workers=2)._pools(_mixed_job(tmp_path, "cpu"), units)
    assert set(on_cpu) == {"cpu"} and on_cpu["cpu"].extractors == ("resnet50", "affect", "logmel")
    assert on_cpu["cpu"].gpus == 0.0 and on_cpu["cpu"].cpus == 1.0 and on_cpu["cpu"].threads == 1


def test_gpu_extractor_asking_for_more_gpus_than_the_cluster_has_is_refused(ray_session, tmp_path) -> None:
    results: list[UnitResult] = []
    with pytest.raises(AanbenchError, match="asking for 2 GPU, but the Ray cluster has 1 GPU"):
        RayBackend(workers=1, gpus_per_worker=2).run(_mixed_job(tmp_path, "cuda"),
                                                    [WorkUnit(0, 0, 2, ("resnet50", "affect"))], results.append)
    assert results == []


def test_merge_reports_only_the_failed_pool_as_failed() -> None:
    unit = WorkUnit(3, 6, 8, ("resnet50", "affect", "logmel"))
    chunk = _Chunk(unit, n_parts=2)
    chunk.results["gpu"] = UnitResult(unit=WorkUnit(3, 6, 8, ("resnet50",)), error="Ray worker lost 3 times")
    chunk.results["cpu"] = UnitResult(unit=WorkUnit(3, 6, 8, ("affect", "logmel")), ok={"affect": 2, "logmel": 2},
                                      seconds=1.5, decode_seconds=0.5)
    res = _merge(chunk)
    assert res.unit == WorkUnit(3, 6, 8, ("resnet50",))  # run_plan marks only resnet50's rows failed
    assert res.unit.n_items == 2
    assert res.ok == {"affect": 2, "logmel": 2}
    assert "resnet50" in res.error and "lost 3 times" in res.error
    chunk.results["gpu"] = UnitResult(unit=WorkUnit(3, 6, 8, ("resnet50",)), ok={"resnet50": 2}, seconds=2.0)
    res = _merge(chunk)
    assert res.error is None and res.unit == unit
    assert res.ok == {"resnet50": 2, "affect": 2, "logmel": 2} and res.seconds == pytest.approx(3.5)


def test_unreachable_cluster_address_is_refused_before_ray_init() -> None:
    # ray.init would retry for minutes; the probe answers at once
    with pytest.raises(AanbenchError, match="no Ray cluster answers"):
        RayBackend._probe("127.0.0.1:1", timeout=5.0)  # nothing listens on port 1


def test_workers_that_cannot_see_the_store_fail_the_run_clearly(ray_session, tmp_path) -> None:
    # what a node without the shared filesystem sees: no store at the path
    job = ExtractionJob(store_root=str(tmp_path / "not-mounted"), group_path="demo/default",
                        items=[Item("a", None)], extractors=["affect"], keys={"affect": "affect@2"},
                        weights_dir=str(tmp_path))
    results: list[UnitResult] = []
    with pytest.raises(AanbenchError, match="failed to start: on node .*not an aanbench feature store.*every Ray node mounts"):
        RayBackend(workers=2, max_retries=1).run(job, [WorkUnit(0, 0, 1, ("affect",))], results.append)
    assert results == []
    assert not (tmp_path / "not-mounted").exists(), "a worker must not create a store of its own"
    assert ray.is_initialized()


@pytest.mark.slow
def test_workers_the_cluster_cannot_place_fail_after_the_start_timeout(ray_session, tmp_path) -> None:
    job = ExtractionJob(store_root=str(tmp_path / "s"), group_path="demo/default", items=[Item("a", None)],
                        extractors=["affect"], keys={"affect": "affect@2"}, weights_dir=str(tmp_path))
    backend = RayBackend(workers=1, cpus_per_worker=64, start_timeout=2.0)  # the instance has 2 CPUs
    with pytest.raises(AanbenchError, match=r"could start within 2 s \(each asks for 64 CPU"):
        backend.run(job, [WorkUnit(0, 0, 1, ("affect",))], lambda res: None)
    assert backend.stats["actors_started"] == 1 and backend.stats["units"] == 0
