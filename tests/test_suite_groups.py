"""`make test` runs the suite on pytest-xdist workers with ``--dist loadgroup``
and relies on its groups (tests/conftest.py): the Ray tests one after the
other on one worker, the full demo's two tests on one worker, a module's
tests (and so its module-scoped fixtures) on one worker.

pytest 9.2 silently broke those groups (pytest-xdist issue 1386: xdist marks
a group by rewriting the item's node id, which pytest 9.2 no longer reads),
and tests were then handed out one by one. Nothing failed: the suite only got
slower, and the shared fixtures were built on two workers. This test runs a
small suite the way `make test` does, with groups added in a
``pytest_collection_modifyitems`` hook as tests/conftest.py adds them, and
fails when the groups are not applied, so an upgrade that breaks them is seen.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

CONFTEST = '''
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
'''

MODULE = '''
import pytest

@pytest.mark.parametrize("i", range(6))
def test_one(i):
    pass
'''


def test_loadgroup_keeps_a_module_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
         "-p", "no:benchmark", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    workers: dict[str, set[str]] = {}
    for m in re.finditer(r"\[(gw\d+)\].*? (test_[ab]\.py)::test_one", r.stdout):
        workers.setdefault(m.group(2), set()).add(m.group(1))
    assert set(workers) == {"test_a.py", "test_b.py"}, r.stdout
    split = {mod: sorted(w) for mod, w in workers.items() if len(w) > 1}
    assert not split, (
        f"--dist loadgroup spread one group over several workers {split}: the installed pytest and "
        f"pytest-xdist do not apply xdist_group (see this module's docstring; pyproject.toml pins pytest)\n{r.stdout}"
    )
