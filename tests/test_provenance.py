"""aanbench.provenance: the environment record made where numbers are made,
and the comparison a leaderboard uses to say that it mixes environments."""

from __future__ import annotations

import copy
import importlib.metadata as md
import json

import pytest

from aanbench import provenance


@pytest.fixture(scope="module")
def record() -> dict:
    return provenance.environment()


def test_record_is_json_and_names_the_installed_versions(record):
    assert json.loads(json.dumps(record)) == record
    for dist in ("torch", "numpy", "scipy", "scikit-learn", "av", "pillow", "opensmile", "zarr", "pandas"):
        assert record["packages"][dist] == md.version(dist), dist
    assert set(record["packages"]) == set(provenance.NUMERIC_PACKAGES)


def test_ffmpeg_libraries_are_pyav_s(record):
    import av

    libs = record["ffmpeg"]["libraries"]
    assert libs["libavcodec"] == ".".join(map(str, av.library_versions["libavcodec"]))
    assert "libswscale" in libs and "libswresample" in libs  # the scaler and resampler that touch every frame/sample


def test_cpu_kind_comes_from_cpuinfo(record):
    cpu = record["cpu"]
    assert cpu["model"]
    assert set(cpu["flags"]) <= set(provenance.KERNEL_FLAGS)
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    flags = set(next(line for line in text.splitlines() if line.startswith(("flags", "Features"))).split(":")[1].split())
    assert set(cpu["flags"]) == flags & set(provenance.KERNEL_FLAGS)
    assert cpu["model"] in text


def test_thread_counts_are_those_in_force(monkeypatch):
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    try:
        torch.set_num_threads(1)
        with threadpool_limits(1):
            rec = provenance.environment()
    finally:
        torch.set_num_threads(before)
    assert rec["threads"]["torch_intra_op"] == 1
    assert rec["threads"]["env"]["OMP_NUM_THREADS"] == "3"
    pools = rec["threads"]["pools"]
    assert pools and all(p["num_threads"] == 1 for p in pools)
    blas = [p for p in pools if p["user_api"] == "blas"]
    assert blas, "numpy's BLAS is loaded, threadpoolctl must see it"
    after = provenance.environment()
    assert after["threads"]["torch_intra_op"] == before
    # the counts in force are recorded but do not make two runs' environments differ (aanbench sets them
    # itself per kind of model); a thread variable the user set does
    assert provenance.fingerprint(after) == provenance.fingerprint(rec)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert provenance.fingerprint(provenance.environment()) != provenance.fingerprint(rec)


def test_cuda_device_without_a_gpu_is_recorded_not_raised():
    import torch

    if torch.cuda.is_available():
        rec = provenance.environment("cuda")
        assert rec["device"]["gpu"] == torch.cuda.get_device_name()
    else:
        rec = provenance.environment("cuda:0")
        assert rec["device"]["kind"] == "cuda" and "error" in rec["device"]


def test_same_records_do_not_mix(record):
    other = copy.deepcopy(record)
    assert provenance.differences([record, other, record]) == {}
    assert provenance.mixed_note([record, other]) is None
    assert provenance.fingerprint(record) == provenance.fingerprint(other)
    # what cannot change numbers does not count
    other["platform"]["release"] = "0.0-other"
    other["threads"]["usable_cpus"] = 64
    other["cpu"]["logical_cpus"] = 64
    assert provenance.differences([record, other]) == {}
    assert provenance.fingerprint(record) == provenance.fingerprint(other)


def test_differences_name_the_field_values_and_counts(record):
    older = copy.deepcopy(record)
    older["packages"]["pillow"] = "12.3.0"
    older["cpu"]["model"] = "Intel Xeon"
    older["cpu"]["flags"] = ["avx", "avx2", "fma"]
    older["threads"]["torch_intra_op"] = 16
    diffs = provenance.differences([record, record, older])
    assert diffs["Pillow"] == {record["packages"]["pillow"]: 2, "12.3.0": 1}
    assert diffs["CPU"] == {record["cpu"]["model"]: 2, "Intel Xeon": 1}
    assert diffs["CPU flags"]["avx avx2 fma"] == 1
    assert "torch intra op threads" not in diffs  # recorded, informational (aanbench sets it per model kind)
    assert "numpy" not in diffs
    note = provenance.mixed_note([record, record, older])
    assert note.startswith("This board mixes environments: ")
    assert f"Pillow {record['packages']['pillow']} (2 runs), 12.3.0 (1 run)" in note
    assert provenance.fingerprint(older) != provenance.fingerprint(record)


def test_unrecorded_environments_are_counted(record):
    diffs = provenance.differences([record, None, {}])
    assert diffs == {"environment": {"recorded": 1, "not recorded": 2}}
    assert provenance.differences([None, None]) == {}
    assert provenance.fingerprint(None) == ""
    assert "environment not recorded" == provenance.summary(None)


def test_summary_names_libraries_and_cpu(record):
    line = provenance.summary(record)
    assert f"numpy {record['packages']['numpy']}" in line
    assert f"Pillow {record['packages']['pillow']}" in line
    assert record["cpu"]["model"] in line
    assert line.endswith(f"[env {provenance.fingerprint(record)}]")


def test_header_line_names_one_environment_or_the_mix(record):
    one = provenance.header_line([record, copy.deepcopy(record)])
    assert one == "Environment: " + provenance.summary(record)
    other = copy.deepcopy(record)
    other["packages"]["numpy"] = "1.26.4"
    mixed = provenance.header_line([record, other])
    assert mixed.startswith("This board mixes environments: numpy ")
    assert provenance.header_line([None, None]) == "Environment: environment not recorded"
