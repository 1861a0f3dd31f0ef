"""Machine-wide CPU seconds per test, for finding where the suite's time goes.

``time make test`` counts only the processes pytest waits for: Ray's daemons
(raylet, GCS, its agents) detach and are left out. This pytest plugin reads
the whole machine's busy time from ``/proc/stat`` (Linux) around each test
(setup, call and teardown), so run it on an otherwise quiet machine, one test
at a time, and append one JSON line per test to ``$CPUPROF_OUT`` (default
``cpuprof.jsonl``)::

    PYTHONPATH=tests CPUPROF_OUT=/tmp/cpu.jsonl .venv/bin/python -m pytest -q -p cpuprof -p no:xdist
    python3 -c "import json; r=[json.loads(l) for l in open('/tmp/cpu.jsonl')]; \\
        [print(x['cpu'], x['id']) for x in sorted(r, key=lambda x: -x['cpu'])[:20]]"

A shared fixture is charged to the first test that builds it."""

from __future__ import annotations

import json
import os
import time

import pytest

_HZ = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        fields = f.readline().split()  # cpu user nice system idle iowait irq softirq ...
    return (int(fields[1]) + int(fields[2]) + int(fields[3]) + int(fields[6]) + int(fields[7])) / _HZ


_OUT = open(os.environ.get("CPUPROF_OUT", "cpuprof.jsonl"), "a")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    b0, t0 = _busy_seconds(), time.time()
    yield
    _OUT.write(json.dumps({"id": item.nodeid, "cpu": round(_busy_seconds() - b0, 2),
                           "wall": round(time.time() - t0, 2)}) + "\n")
    _OUT.flush()
