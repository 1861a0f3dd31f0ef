"""Through the CLI, on a small real demo store: bad settings and unsafe names
in a user's registry exit 2 with one line naming the file, the experiment,
the key, the value and what is allowed, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_aanbench
from smalldemo import small_demo  # noqa: F401  (fixture)


@pytest.mark.parametrize("body,expect", [
    ('[experiments.bad]\nextends = "ridge"\nparams.alphas = []\n',
     "experiments.bad: alphas = []: empty; allowed: a non-empty list of numbers > 0"),
    ('[experiments.bad]\nextends = "feature-aan"\nparams.max_epochs = -5\n',
     "experiments.bad: max_epochs = -5: out of range; allowed: an integer >= 1"),
    ('[experiments.bad]\nextends = "feature-aan"\ndatasets.demo.batch_size = 0\n',
     "experiments.bad: batch_size = 0: out of range; allowed: an integer >= 1"),
    ('[experiments."../../../escaped-exp"]\nextends = "ridge"\n',
     "experiments.../../../escaped-exp: experiment name '../../../escaped-exp' is not allowed"),
])
def test_bad_settings_exit_2_with_one_line_and_nothing_written(tmp_path: Path, small_demo, body: str,  # noqa: F811
                                                              expect: str) -> None:
    reg = tmp_path / "mine.toml"
    reg.write_text(body)
    name = "../../../escaped-exp" if "escaped" in body else "bad"
    out = tmp_path / "deep" / "er" / "results"
    r = run_aanbench("run", name, "demo", "--registry", reg, "--store", small_demo["store"], "--out", out)
    assert r.returncode == 2, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert str(reg) in err and expect in err, err
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3  # one message (wrapped)
    assert not out.exists() and not list(tmp_path.rglob("*.json"))
