"""Remake ``tests/group_seconds.json``: the seconds each xdist group of the
suite took (tests/conftest.py orders the groups by them, longest first, so
that the workers end together). From a JUnit XML report of a whole run:

    make test PYTEST_ARGS=--junitxml=/tmp/suite.xml
    .venv/bin/python tests/group_seconds.py /tmp/suite.xml > tests/group_seconds.json

The numbers only order the groups; stale or missing ones cost time, never
correctness (a group not listed is estimated from its tests, see conftest)."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET


def main(path: str) -> None:
    seconds: dict[str, float] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        group = name.rsplit("@", 1)[1] if "@" in name.rsplit("]", 1)[-1] else None
        if group is None:  # no group suffix: the module (classname is its dotted path)
            group = case.get("classname", "").replace(".", "/") + ".py"
        seconds[group] = seconds.get(group, 0.0) + float(case.get("time", 0.0))
    print(json.dumps({g: round(s, 1) for g, s in sorted(seconds.items(), key=lambda kv: -kv[1])}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
