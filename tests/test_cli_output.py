"""Output to a pipe or file is never wrapped (whatever $COLUMNS says), so a
verdict or an identifier a user copies is never split; a terminal still gets
output laid out at its width."""

from __future__ import annotations

import io
import tomllib

from aanbench.output import PIPE_RULE_WIDTH, make_console
from conftest import REPO, run_aanbench

LONG = "/tmp/" + "/".join(f"a-rather-long-folder-name-{i}" for i in range(8)) + "/copy"


def test_pipe_lines_are_never_wrapped() -> None:
    buf = io.StringIO()
    c = make_console(file=buf)
    c.print(f"NOT OK: eimt16 at {LONG}")
    assert buf.getvalue() == f"NOT OK: eimt16 at {LONG}\n"


def test_terminal_output_still_wraps_at_its_width() -> None:
    buf = io.StringIO()
    c = make_console(file=buf, force_terminal=True, width=40, color_system=None)
    c.print(f"NOT OK: eimt16 at {LONG}")
    lines = buf.getvalue().splitlines()
    assert len(lines) > 1 and all(len(line) <= 40 for line in lines)


def test_pipe_rules_have_a_fixed_width() -> None:
    buf = io.StringIO()
    make_console(file=buf).rule("step")
    [line] = buf.getvalue().splitlines()
    assert len(line) == PIPE_RULE_WIDTH and "step" in line


def test_experiments_piped_at_40_columns_keep_rows_whole() -> None:
    r = run_aanbench("experiments", env={"COLUMNS": "40"})
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("│")}
    assert "feature-aan-video" in rows, r.stdout
    # one row per experiment, its description whole on the same line
    assert "Ridge regression on the concatenated standardised features (alpha chosen on validation)" in rows["ridge"]


def test_sha256_and_paths_whole_in_piped_weights_listing(tmp_path) -> None:
    wdir = tmp_path / ("weights-" + "x" * 60)
    r = run_aanbench("weights", "--weights-dir", wdir, env={"COLUMNS": "40"})
    with open(REPO / "registry.toml", "rb") as f:
        shas = {w["sha256"] for w in tomllib.load(f)["weights"].values()}
    for sha in shas:
        assert sha in r.stdout, r.stdout
    assert str(wdir) in r.stdout
