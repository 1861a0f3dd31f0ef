"""Published numbers load from the packaged data files and render as their
own leaderboard section, with n/a where a number is undefined."""

from __future__ import annotations

from pathlib import Path

import pytest

from aanbench import reported
from aanbench.reported import RAW_INPUTS_NOTE, load_reported, reported_markdown

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_folder_and_the_packaged_files_are_the_same():
    assert (REPO / "leaderboards" / "reported" / "eimt16.csv").read_text() == \
        (REPO / "aanbench" / "data" / "reported" / "eimt16.csv").read_text()


@pytest.mark.parametrize("dataset,n,row,values", [
    ("cognimuse", 7, "Feature AAN, video+audio", (0.124, 0.630, 0.178, 0.572)),
    ("eimt16", 17, "Yi, Wang & Li (AFRN)", (0.542, 0.522, 0.193, 0.468)),
    # Tongji-MIC-Lab/UMFN README, Table 2 (source/Fig3.png): UMFN's own row and MMLGAN as it cites it
    ("eimt16", 17, "UMFN (Yi, Wang, Tang)", (0.464, 0.523, 0.176, 0.503)),
    ("eimt16", 17, "MMLGAN (Ou, Chen, Wu)", (1.077, 0.491, 0.194, 0.445)),
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


def test_twins_of_raw_fed_rows_say_that_aanbench_standardises():
    md = reported_markdown("eimt16", ran={"feature-aan"})
    for dataset in ("eimt16", "cognimuse"):
        df = load_reported(dataset)
        aan = df[df.method.str.contains("AAN")]
        assert len(aan) == 6 and set(aan.inputs) == {"raw"} and (aan.twin != "").all()
    line = next(x for x in md.splitlines() if x.startswith("| Feature AAN, video+audio "))
    assert f"re-run here as `feature-aan` ({RAW_INPUTS_NOTE})" in line and "`standardize = false`" in line
    other = next(x for x in md.splitlines() if x.startswith("| Temporal AAN, audio "))
    assert f"aanbench experiment `temporal-aan-audio` ({RAW_INPUTS_NOTE})" in other
    mean = next(x for x in md.splitlines() if x.startswith("| Training-mean predictor "))
    assert RAW_INPUTS_NOTE not in mean  # no features: nothing to standardise


def test_notes_say_what_is_and_is_not_verified():
    cog = load_reported("cognimuse")
    siv = cog[cog.method.str.startswith("Sivaprasad")].iloc[0]
    assert "protocol not verified" in siv.protocol and siv.note.startswith("protocol not verified")
    assert "7 movies" not in siv.protocol + siv.note
    eim = load_reported("eimt16").set_index("method")
    assert "linear L2-loss SVR with Yi & Wang's C values on aanbench's standardised features, not their baseline" \
        in eim.loc["Yi & Wang 2019", "note"]
    umfn = eim.loc["UMFN (Yi, Wang, Tang)"]
    assert "no validation split" in umfn.note and "17 (arousal) / 46 (valence) epochs" in umfn.note
    assert "as cited in UMFN" in eim.loc["MMLGAN (Ou, Chen, Wu)", "citation"]
    assert "not verified" in eim.loc["MMLGAN (Ou, Chen, Wu)", "note"]
    assert "not AFRN" in eim.loc["Yi, Wang & Li (AFRN)", "note"]
    md = reported_markdown("eimt16")
    assert "| UMFN (Yi, Wang, Tang) | 0.176 | 0.503 | 0.464 | 0.523 |" in md  # valence first


def test_registry_descriptions_match_the_notes():
    from aanbench.registry import load_registry

    reg = load_registry()
    assert "on aanbench's standardised features" in reg.experiment("svr-linear", "eimt16").description
    lstm = reg.experiment("lstm", "eimt16-temporal").description
    assert "regressor" in lstm and "classifier" in lstm and "predecessor" not in lstm


def test_an_unknown_inputs_value_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "x.csv"
    text = (REPO / "aanbench" / "data" / "reported" / "cognimuse.csv").read_text()
    bad.write_text(text.replace(",feature-aan,raw,", ",feature-aan,scaled,"))
    monkeypatch.setattr(reported, "reported_path", lambda dataset: bad)
    with pytest.raises(ValueError, match=r"x.csv: column inputs: 'scaled'"):
        load_reported("cognimuse")
