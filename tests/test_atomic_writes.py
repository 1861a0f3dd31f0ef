"""Atomic, unique writes of results files, leaderboards and exports; results
files that do not parse are skipped with a warning; names and paths that
would leave ``--out`` are refused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aanbench import atomicio
from aanbench.contracts import AanbenchError
from aanbench.names import UnsafeNameError, check_name
from aanbench.runner import RESULTS_FORMAT, read_results, results_path, write_results

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from aanbench.runner import RESULTS_FORMAT, write_results
    out, who = Path(sys.argv[1]), sys.argv[2]
    for i in range(300):
        doc = {"format": RESULTS_FORMAT, "experiment": "ridge", "model": "ridge", "dataset": "demo",
               "protocol": "fixed", "targets": {}, "seed": 0, "writer": who, "i": i, "payload": [who * 50] * 40}
        write_results(doc, out)
""")


def _doc(**kw) -> dict:
    return {"format": RESULTS_FORMAT, "experiment": "ridge", "model": "ridge", "dataset": "demo",
            "protocol": "fixed", "targets": {}, "seed": 0, **kw}


def test_two_processes_writing_the_same_results_file_300_times_leave_a_valid_file(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "results"
    procs = [subprocess.Popen([sys.executable, str(script), str(out), who], stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    folder = out / "demo" / "ridge"
    assert sorted(p.name for p in folder.iterdir()) == ["seed0.json"]  # no temporary files left
    doc = json.loads((folder / "seed0.json").read_text())
    assert doc["i"] == 299 and doc["writer"] in ("a", "b") and doc["payload"] == [doc["writer"] * 50] * 40


def test_a_results_file_that_does_not_parse_is_skipped_with_a_warning(tmp_path: Path) -> None:
    good = write_results(_doc(), tmp_path)
    bad = tmp_path / "demo" / "ridge" / "seed1.json"
    bad.write_text('{"format": "aanbench.res')
    with pytest.warns(UserWarning, match=f"{bad}: not a readable results file, skipped"):
        docs = read_results([tmp_path])
    assert [d["_file"] for d in docs] == [str(good)]


@pytest.mark.parametrize("name", ["../../escaped-exp", "..", ".hidden", "a/b", "", "x y", "a\\b"])
def test_unsafe_names_are_refused_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(UnsafeNameError, match="name .* is not allowed") as err:
        write_results(_doc(experiment=name), out)
    assert err.value.exit_code == 2
    with pytest.raises(UnsafeNameError):
        write_results(_doc(dataset=name), out)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the folder


def test_safe_names_pass_and_links_out_of_the_folder_are_refused(tmp_path: Path) -> None:
    for ok in ("feature-aan", "temporal_aan.v2", "_x", "A1"):
        assert check_name("experiment", ok) == ok
    out = tmp_path / "out"
    (out / "demo").mkdir(parents=True)
    (out / "demo" / "ridge").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafeNameError, match="outside the output folder"):
        results_path(out, "ridge", "demo", 0)


def test_atomic_write_refuses_to_overwrite_when_told(tmp_path: Path) -> None:
    p = atomicio.write_text(tmp_path / "a.md", "one")
    atomicio.write_text(p, "two")
    assert p.read_text() == "two"
    with pytest.raises(AanbenchError, match="exists; not overwritten"):
        atomicio.write_text(p, "three", overwrite=False)
    with pytest.raises(AanbenchError, match="exists; not overwritten"):
        atomicio.write_with(p, lambda t: t.write_text("four"), overwrite=False)
    assert p.read_text() == "two" and sorted(x.name for x in tmp_path.iterdir()) == ["a.md"]
    # a writer that fails leaves the old file and no temporary file
    with pytest.raises(RuntimeError):
        with atomicio.atomic_open(p) as f:
            f.write("partial")
            raise RuntimeError("disk full")
    assert p.read_text() == "two" and sorted(x.name for x in tmp_path.iterdir()) == ["a.md"]
