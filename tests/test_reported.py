"""Published numbers load from the packaged data files and render as their
own leaderboard section, with n/a where a number is undefined."""

from __future__ import annotations

from pathlib import Path

import pytest

from aanbench.reported import load_reported, reported_markdown

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_folder_and_the_packaged_files_are_the_same():
    assert (REPO / "leaderboards" / "reported" / "eimt16.csv").read_text() == \
        (REPO / "aanbench" / "data" / "reported" / "eimt16.csv").read_text()


@pytest.mark.parametrize("dataset,n,row,values", [
    ("cognimuse", 7, "Feature AAN, video+audio", (0.124, 0.630, 0.178, 0.572)),
    ("eimt16", 15, "Yi, Wang & Li (AFRN)", (0.542, 0.522, 0.193, 0.468)),
])
def test_numbers_as_published(dataset, n, row, values):
    df = load_reported(dataset)
    assert len(df) == n
    r = df[df.method == row].iloc[0]
    assert (r.arousal_mse, r.arousal_pcc, r.valence_mse, r.valence_pcc) == pytest.approx(values)


def test_markdown_section_marks_twins_and_undefined_r():
    md = reported_markdown("eimt16", ran={"feature-aan"})
    assert md.startswith("## Reported, not re-run")
    line = next(x for x in md.splitlines() if x.startswith("| Feature AAN, video+audio "))
    assert "| 0.467 | 0.185 |" not in line  # valence first: MSE 0.185, r 0.467
    assert "| 0.185 | 0.467 | 0.742 | 0.503 |" in line and "re-run here as `feature-aan`" in line
    mean = next(x for x in md.splitlines() if x.startswith("| Training-mean predictor "))
    assert "| 0.237 | n/a | 1.496 | n/a |" in mean
    assert "test-set MSE" in md  # AFRN's checkpoint selection is disclosed
    assert reported_markdown("demo") == "" and load_reported("demo") is None
