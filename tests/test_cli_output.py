"""Output to a pipe or file is never wrapped (whatever $COLUMNS says), so a
verdict or an identifier a user copies is never split; a terminal still gets
output laid out at its width."""

from __future__ import annotations

import io
import tomllib

from aanbench.output import PIPE_RULE_WIDTH, make_console
from conftest import REPO, run_cli

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
    r = run_cli("experiments", env={"COLUMNS": "40"})
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("│")}
    assert "feature-aan-video" in rows, r.stdout
    # one row per experiment, its description whole on the same line
    assert "Ridge regression on the concatenated standardised features (alpha chosen on validation)" in rows["ridge"]


def test_sha256_and_paths_whole_in_piped_weights_listing(tmp_path) -> None:
    wdir = tmp_path / ("weights-" + "x" * 60)
    r = run_cli("weights", "--weights-dir", wdir, env={"COLUMNS": "40"})
    with open(REPO / "registry.toml", "rb") as f:
        shas = {w["sha256"] for w in tomllib.load(f)["weights"].values()}
    for sha in shas:
        assert sha in r.stdout, r.stdout
    assert str(wdir) in r.stdout


# ---------------------------------------------------------------- --help and completion


def _command_paths() -> list[tuple[str, ...]]:
    import typer.main

    from aanbench.cli import app

    out: list[tuple[str, ...]] = []

    def walk(cmd, path: tuple[str, ...]) -> None:
        out.append(path)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, path + (name,))

    walk(typer.main.get_command(app), ())
    return out


def test_every_help_names_metavars_without_python_types(cli) -> None:
    paths = _command_paths()
    assert ("store", "info") in paths and ("datasets", "check") in paths and ("run",) in paths
    for path in paths:
        r = cli(*path, "--help")
        assert r.exit_code == 0, (path, r.output)
        for python_type in ("<str>", "<int>", "<float>", "<path>", "<bool>", "list[", "{"):
            assert python_type not in r.output, (path, python_type, r.output)
    r = cli("extract", "--help")
    assert "extract [OPTIONS] DATASET\n" in r.output
    for shown in ("--store STORE", "--workers N", "--option KEY=VALUE", "--gpus-per-worker NUMBER", "--root DIR"):
        assert shown in r.output, shown


def test_root_help_keeps_the_typical_session_one_command_a_line(cli) -> None:
    r = cli("--help")
    lines = [ln.strip() for ln in r.output.splitlines()]
    for cmd in ("aanbench extract eimt16 --root ~/data/LIRIS-ACCEDE --store feats",
                "aanbench run feature-aan eimt16 --store feats --out results",
                "aanbench leaderboard eimt16 --results results --out leaderboards/eimt16.md"):
        assert cmd in lines, r.output
    assert "--install-completion" in r.output and "--show-completion" in r.output


def test_shell_completion_of_commands_datasets_and_experiments() -> None:
    def complete(words: str, cword: int) -> list[str]:
        r = run_cli(env={"_AANBENCH_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert complete("aanbench ex", 1) == ["extract", "experiments"]
    assert complete("aanbench run feature-aan ei", 3) == ["eimt16", "eimt16-temporal"]
    assert "feature-aan-video" in complete("aanbench run feature-aan-", 2)
    assert complete("aanbench extract demo -e affect,emo", 4) == ["affect,emobase2010"]


# ---------------------------------------------------------------- errors a user hit


def _plugin_code() -> None:
    raise ValueError("bad shape from my extractor")  # the line the error must name


def test_unexpected_exception_names_file_and_line(monkeypatch) -> None:
    import inspect

    import typer
    from typer.testing import CliRunner

    from aanbench.cli import command
    from aanbench.output import DEBUG_ENV

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    app = typer.Typer()

    @command(app, "boom")
    def boom() -> None:
        _plugin_code()

    @command(app, "fine")
    def fine() -> None:
        pass

    line = inspect.getsourcelines(_plugin_code)[1] + 1
    r = CliRunner().invoke(app, ["boom"])
    assert r.exit_code == 1
    assert f"ValueError: bad shape from my extractor (at {__file__}:{line} in _plugin_code)" in r.output, r.output
    assert "--debug" in r.output and "Traceback" not in r.output
    monkeypatch.setenv(DEBUG_ENV, "1")
    r = CliRunner().invoke(app, ["boom"])
    assert r.exit_code == 1 and "Traceback (most recent call last)" in r.output and f'line {line}, in _plugin_code' in r.output


def test_debug_flag_prints_the_traceback_of_an_error(tmp_path) -> None:
    args = ("run", "ridge", "files", "--store", tmp_path / "s", "--out", tmp_path / "r")
    r = run_cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "dataset 'files' is unlabelled: nothing to train; use `aanbench predict" in r.stderr, r.stderr
    r = run_cli("--debug", *args)
    assert r.returncode == 2 and "Traceback (most recent call last)" in r.stderr and "require_labelled" in r.stderr


def test_a_root_that_does_not_exist_is_called_so(tmp_path) -> None:
    gone = tmp_path / "nonexistent"
    for dataset in ("files", "eimt16", "cognimuse"):
        r = run_cli("extract", dataset, "--root", gone, "--store", tmp_path / "s")
        assert r.returncode == 2 and f"dataset root does not exist: {gone}" in r.stderr, (dataset, r.stderr)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())
