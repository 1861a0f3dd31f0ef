"""``aanbench run|benchmark --backend ray`` on a real local Ray instance (no
mocks): the fits run as Ray tasks and the results files hold the local run's
numbers, value for value (predictions, pooled and per-fold metrics, each
fit's epochs, best epoch and validation loss); a benchmark writes the local
benchmark's results and leaderboard and reports a failed experiment while
the others go on; `--address` joins a running cluster (and leaves it
running) with the same numbers; clear errors for the options; Ctrl-C leaves no Ray
process behind.

The demo is tests/smalldemo.py's (36 real clips, 3 movies); the experiments
are left-one-movie-out (3 folds x 2 targets) so that a run has several fits.
Where a driver's own start and end are not the point, the runs go in this
process to one instance the module starts (``cluster``); one run, the
``--address`` driver and the Ctrl-C test are fresh processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import AANBENCH, default_sigint, run_aanbench, run_cli  # noqa: E402
from smalldemo import small_demo  # noqa: E402,F401  (fixture)

pytestmark = pytest.mark.ray

REGISTRY = """
[experiments.quick-aan]
extends = "feature-aan"
protocol = "leave-one-group-out"
datasets.demo.max_epochs = 6
datasets.demo.patience = 3
datasets.demo.lr = { valence = 0.005, arousal = 0.002 }  # two stacks: one per target

[experiments.ridge-logo]
extends = "ridge"
protocol = "leave-one-group-out"

[experiments.bad-param]
extends = "ridge"
description = "a parameter ridge does not take: refused when the run is planned"
params.no_such = 1

[experiments.bad-forest]
extends = "random-forest"
description = "scikit-learn refuses min_samples_leaf = 0 when the forest is fit (in a Ray task)"
datasets.demo.n_estimators = 3
datasets.demo.min_samples_leaf = 0

[experiments.long-aan]
extends = "feature-aan"
datasets.demo.max_epochs = 1000000
datasets.demo.patience = 1000000
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run-ray") / "registry.toml"
    path.write_text(REGISTRY)
    return path


@pytest.fixture(scope="module")
def cluster() -> str:
    """One local Ray instance, started in this test process, for the tests
    whose point is the numbers and not a driver's own start and end (a fresh
    driver process starting its own instance pays Ray's start and its
    workers' imports each time): ``run_cli`` calls join it (aanbench uses
    the Ray this process already holds and leaves it running), fresh
    processes join it by ``--address``. The "ridge" case of
    test_run_on_ray_gives_the_local_results and the Ctrl-C test still start
    their own instance in a fresh driver, as a user's command does."""
    assert not ray.is_initialized()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 << 20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _same_results(got: dict, want: dict) -> None:
    """Two results documents of one experiment and seed hold the same numbers
    (fit times aside)."""
    assert got["predictions"] == want["predictions"]
    assert len(want["predictions"]) > 0
    assert got["targets"].keys() == want["targets"].keys()
    for t, w in want["targets"].items():
        g = got["targets"][t]
        assert g["metrics"] == w["metrics"], t
        assert g["folds"] == w["folds"], t
        assert g.get("per_group") == w.get("per_group"), t

        def fits(doc_fits):
            return [{k: v for k, v in f.items() if k != "seconds"} for f in doc_fits]

        assert fits(g["fits"]) == fits(w["fits"]), t
    assert got["config_fingerprint"] == want["config_fingerprint"]


@pytest.mark.parametrize("experiment, extra, own", [("quick-aan", [], False), ("quick-aan", ["--sequential"], False),
                                                    ("ridge-logo", [], True)],
                         ids=["batched", "sequential", "ridge"])
@pytest.mark.slow
def test_run_on_ray_gives_the_local_results(small_demo, registry, request, tmp_path, experiment, extra,  # noqa: F811
                                            own):
    common = [experiment, "demo", "--store", small_demo["store"], "--registry", registry, "--json", *extra]
    local = run_cli("run", *common, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    if own:  # a fresh driver that starts its own instance and must end it (and Ray's processes) when it ends
        # RAY_AUTH_MODE left out as in a user's shell (Ray sets it in this process when the module's
        # instance starts): Ray then picks token authentication itself, and its notice is not shown
        on_ray = run_aanbench("run", *common, "--out", tmp_path / "ray", "--backend", "ray", "--workers", "2",
                              env={"RAY_AUTH_MODE": None})
        assert "Token authentication is enabled" not in on_ray.stderr, on_ray.stderr[-2000:]
    else:  # in this process, on the module's instance (see `cluster`)
        request.getfixturevalue("cluster")
        on_ray = run_cli("run", *common, "--out", tmp_path / "ray", "--backend", "ray", "--workers", "2")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    want = json.loads(Path(json.loads(local.stdout)["results"]).read_text())
    got = json.loads(Path(json.loads(on_ray.stdout)["results"]).read_text())
    assert want["protocol"] == "leave-one-group-out"
    assert sum(len(t["fits"]) for t in want["targets"].values()) == 6  # 3 folds x 2 targets
    _same_results(got, want)
    assert got["command"].endswith("--backend ray --workers 2")


@pytest.mark.slow
def test_run_joins_a_running_cluster_by_address_and_leaves_it_running(small_demo, registry, cluster,  # noqa: F811
                                                                      tmp_path):
    """``--address``: the fits go to a cluster that is already running (here
    the module's, which this test process holds and whose workers run this
    checkout's code), which the command leaves running; the numbers are the
    local run's."""
    from ray._private.state import jobs  # the cluster's record of its drivers (Ray 2.60, pinned)

    common = ["quick-aan", "demo", "--store", small_demo["store"], "--registry", registry, "--json"]
    local = run_cli("run", *common, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    before = {j["JobID"] for j in jobs()}
    # a fresh process: this driver must leave the cluster that this test process holds
    joined = run_aanbench("run", *common, "--out", tmp_path / "ray", "--backend", "ray", "--address", cluster)
    assert joined.returncode == 0, joined.stderr[-3000:]

    @ray.remote
    def ping() -> int:
        return 7

    assert ray.get(ping.remote(), timeout=60) == 7  # the cluster still serves after the driver left
    drivers = [j for j in jobs() if j["JobID"] not in before]
    assert len(drivers) == 1 and drivers[0]["IsDead"], drivers  # aanbench's driver joined, then left
    assert drivers[0].get("DriverPid") != os.getpid()
    want = json.loads(Path(json.loads(local.stdout)["results"]).read_text())
    got = json.loads(Path(json.loads(joined.stdout)["results"]).read_text())
    _same_results(got, want)


@pytest.mark.slow
def test_benchmark_on_ray_writes_the_local_results_and_goes_on_after_failures(small_demo, registry,  # noqa: F811
                                                                             cluster, tmp_path):
    common = ["benchmark", "demo", "--store", small_demo["store"], "--registry", registry, "--seeds", "0,1",
              "--protocol", "leave-one-group-out"]
    # bad-param is refused when planned; bad-forest fails inside its fits (scikit-learn refuses a parameter):
    # both fail their runs only, locally as on Ray
    local = run_cli(*common, "--experiments", "quick-aan,ridge,mean,bad-param,bad-forest",
                    "--out", tmp_path / "local", "--leaderboard", tmp_path / "lb-local" / "demo.md")
    assert local.returncode == 1, local.stdout[-3000:] + local.stderr[-3000:]
    local_out = re.sub(r"\s+", " ", local.stdout)
    assert re.search(r"failed bad-forest \(seed 1\): .*min_samples_leaf", local_out), local_out[-3000:]
    assert "6 runs, 0 resumed, 4 skipped or failed" in local_out
    on_ray = run_cli(*common, "--experiments", "quick-aan,ridge,mean,bad-param,bad-forest",  # on the module's Ray
                     "--out", tmp_path / "ray", "--leaderboard", tmp_path / "lb-ray" / "demo.md",
                     "--backend", "ray", "--workers", "2")
    assert on_ray.returncode == 1, on_ray.stdout[-3000:] + on_ray.stderr[-3000:]
    out = re.sub(r"\s+", " ", on_ray.stdout)
    assert re.search(r"failed bad-param \(seed 0\): \S*registry.toml: experiments.bad-param: model 'ridge' has no "
                     r"parameter 'no_such'", out), out[-3000:]
    assert re.search(r"failed bad-forest \(seed 1\): .*min_samples_leaf", out), out[-3000:]
    assert "6 runs, 0 resumed, 4 skipped or failed" in out, out[-2000:] + on_ray.stderr[-3000:]
    want = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.json"))
    got = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.json"))
    assert got == want and len(want) == 6  # quick-aan, ridge, mean x seeds 0, 1
    for rel in want:
        _same_results(json.loads((tmp_path / "ray" / rel).read_text()),
                      json.loads((tmp_path / "local" / rel).read_text()))

    def tables(md: Path) -> list[str]:  # the leaderboard without its command line and figure name
        return [ln for ln in md.read_text().splitlines() if ln.startswith("|")]

    assert tables(tmp_path / "lb-ray" / "demo.md") == tables(tmp_path / "lb-local" / "demo.md")
    assert len(tables(tmp_path / "lb-local" / "demo.md")) >= 8


def test_ray_options_are_checked(small_demo, registry, tmp_path):  # noqa: F811
    base = ["ridge-logo", "demo", "--store", small_demo["store"], "--registry", registry, "--out", tmp_path]
    r = run_cli("run", *base, "--address", "auto")
    assert r.returncode == 2 and "--address and --workers are options of --backend ray" in r.stderr, r.stderr
    r = run_cli("benchmark", "demo", "--store", small_demo["store"], "--out", tmp_path, "--workers", "2")
    assert r.returncode == 2 and "--address and --workers are options of --backend ray" in r.stderr, r.stderr
    r = run_cli("run", *base, "--backend", "ray", "--workers", "0")
    assert r.returncode == 2 and "--workers must be at least 1, not 0" in r.stderr, r.stderr
    r = run_cli("run", *base, "--backend", "spark")
    assert r.returncode == 2 and "unknown backend 'spark' (known: local, ray)" in r.stderr, r.stderr
    # a fresh process: this driver tries to join a cluster (nothing listens on port 1)
    r = run_aanbench("run", *base, "--backend", "ray", "--address", "127.0.0.1:1")
    assert r.returncode == 2, r.stderr
    assert re.search(r"no Ray cluster answers at \S+:1 \(from --address 127\.0\.0\.1:1\)",
                     re.sub(r"\s+", " ", r.stderr)), r.stderr
    assert not list(tmp_path.rglob("*.json"))


def _marked(mark: str) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose environment holds ``mark``
    (what the run started inherits it: the driver, Ray's head processes and
    workers)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if mark.encode() not in f.read():
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                found.append((int(d), f.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_ctrl_c_leaves_no_ray_process_behind(small_demo, registry, tmp_path):  # noqa: F811
    mark = f"AANBENCH_TEST_RUN_RAY={os.getpid()}-{time.time_ns()}"
    env = dict(os.environ, COLUMNS="200", AANBENCH_TEST_RUN_RAY=mark.split("=", 1)[1])
    proc = subprocess.Popen([*AANBENCH, "run", "long-aan", "demo", "--store", str(small_demo["store"]),
                             "--registry", str(registry), "--out", str(tmp_path), "--backend", "ray"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 180
        while not any("_fit_unit" in cmd for _, cmd in _marked(mark)):  # a Ray worker is fitting
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "no Ray task started"
            time.sleep(0.5)
        assert len(_marked(mark)) > 2
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
        out = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    left = _marked(mark)
    deadline = time.monotonic() + 15
    while left and time.monotonic() < deadline:  # processes on their way out
        time.sleep(0.5)
        left = _marked(mark)
    assert left == [], left
    assert not list(tmp_path.rglob("*.json"))
